#include "net.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <SDL.h>

#include "dadc_client.h"

#define NET_CLIENT_NAME "dadc-draw/0.1"
#define NET_CONNECT_TIMEOUT_MS 3000
#define NET_CALL_TIMEOUT_MS 5000
#define NET_BACKOFF_MIN_MS 500
#define NET_BACKOFF_MAX_MS 10000
#define NET_FIGURES_EVERY_MS 15000
#define NET_FLAG_RETRY_MS 2000     /* also for a failed prediction */
#define NET_QUEUE_MAX 256

typedef struct net_node {
    struct net_node *next;
    net_msg_t msg;
} net_node_t;

struct net {
    pthread_t thread;
    pthread_mutex_t lock;
    int wake[2];             /* self-pipe: the UI pokes the thread */
    bool stop;
    char *server;
    char *annotator;
    uint32_t wake_event;

    /* Everything below is guarded by lock. */
    dadc_client_t *client;   /* for dadc_client_cancel from net_stop */
    pending_t pending;
    bool predict_due;
    int64_t predict_retry_at;  /* after a failed attempt */
    unsigned predict_seq;
    uint8_t predict_image[784];
    bool figures_due;
    net_status_t status;
    int64_t retry_at_ms;
    net_node_t *head;
    net_node_t *tail;
    int queued;
};

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void net_poke(net_t *n)
{
    char b = 1;

    if (write(n->wake[1], &b, 1) < 0) {
        /* the pipe is full: the thread is awake already */
    }
}

static void wake_drain(net_t *n)
{
    char buf[64];

    while (read(n->wake[0], buf, sizeof(buf)) > 0) {
    }
}

static bool net_stopping(net_t *n)
{
    bool stop;

    pthread_mutex_lock(&n->lock);
    stop = n->stop;
    pthread_mutex_unlock(&n->lock);
    return stop;
}

/* Queue a result for the UI and wake it. Takes ownership of node. */
static void msg_post(net_t *n, net_node_t *node)
{
    SDL_Event ev;

    node->next = NULL;
    pthread_mutex_lock(&n->lock);
    if (n->queued >= NET_QUEUE_MAX) {
        /* The UI is not draining: forget the oldest result, which an
         * unread newer one supersedes anyway. */
        net_node_t *old = n->head;

        n->head = old->next;
        if (n->head == NULL)
            n->tail = NULL;
        free(old);
        n->queued--;
    }
    if (n->tail != NULL)
        n->tail->next = node;
    else
        n->head = node;
    n->tail = node;
    n->queued++;
    pthread_mutex_unlock(&n->lock);

    SDL_zero(ev);
    ev.type = n->wake_event;
    SDL_PushEvent(&ev);
}

static net_node_t *node_new(net_msg_kind_t kind)
{
    net_node_t *node = calloc(1, sizeof(*node));

    if (node != NULL)
        node->msg.kind = kind;
    return node;
}

static void notice_vpost(net_t *n, bool event, const char *fmt, va_list ap)
{
    net_node_t *node = node_new(NET_MSG_NOTICE);

    if (node == NULL)
        return;
    vsnprintf(node->msg.text, sizeof(node->msg.text), fmt, ap);
    node->msg.event = event;
    msg_post(n, node);
}

/* A line for the status bar about our own trouble. */
static void notice_post(net_t *n, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void notice_post(net_t *n, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    notice_vpost(n, false, fmt, ap);
    va_end(ap);
}

/* A line for the status bar about one of the server's events. */
static void event_post(net_t *n, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void event_post(net_t *n, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    notice_vpost(n, true, fmt, ap);
    va_end(ap);
}

static void status_error_set(net_t *n, const char *msg)
{
    pthread_mutex_lock(&n->lock);
    snprintf(n->status.error, sizeof(n->status.error), "%s", msg);
    pthread_mutex_unlock(&n->lock);
}

/* Connect, say Hello and subscribe. Returns 0 or a negative code. */
static int session_open(net_t *n, dadc_client_t **out)
{
    dadc_server_info_t info;
    dadc_client_t *c = NULL;
    dadc_error_t err;
    int rc;

    dadc_error_clear(&err);
    rc = dadc_client_connect(&c, n->server, NET_CONNECT_TIMEOUT_MS, &err);
    if (rc != 0) {
        status_error_set(n, dadc_error_message(&err));
        return rc;
    }
    pthread_mutex_lock(&n->lock);
    n->client = c;
    pthread_mutex_unlock(&n->lock);

    dadc_client_set_timeout(c, NET_CALL_TIMEOUT_MS);
    rc = dadc_client_hello(c, NET_CLIENT_NAME, n->annotator, &info);
    if (rc == 0)
        rc = dadc_client_subscribe(c);
    if (rc != 0) {
        status_error_set(n, dadc_client_last_error(c));
        return rc;
    }

    pthread_mutex_lock(&n->lock);
    n->status.state = NET_CONNECTED;
    n->status.error[0] = '\0';
    n->status.model_version = info.current_model_version;
    n->status.round_threshold = info.round_threshold;
    n->status.pending_fooled = info.pending_fooled;
    n->figures_due = true;
    n->predict_retry_at = 0;
    pthread_mutex_unlock(&n->lock);
    *out = c;
    return 0;
}

static void session_close(net_t *n, dadc_client_t *c)
{
    pthread_mutex_lock(&n->lock);
    n->client = NULL;
    pthread_mutex_unlock(&n->lock);
    dadc_client_close(c);
}

/* A failure after which this connection cannot be used any more. */
static bool rc_fatal(int rc)
{
    return rc != 0 && rc != DADC_ESTATUS && rc != DADC_ETIMEDOUT &&
           rc != DADC_ERANGE && rc != DADC_ELIMIT;
}

static void model_changed(net_t *n, uint32_t version)
{
    pthread_mutex_lock(&n->lock);
    n->status.model_version = version;
    n->figures_due = true;
    pthread_mutex_unlock(&n->lock);
}

static void event_handle(net_t *n, const Dadc__Event *ev)
{
    switch (ev->kind_case) {
    case DADC__EVENT__KIND_ROUND_STARTED:
        event_post(n, "Round %u: retraining on %u examples",
                    ev->round_started->round,
                    ev->round_started->train_examples);
        break;
    case DADC__EVENT__KIND_ROUND_FINISHED:
        if (ev->round_finished->info != NULL &&
            !ev->round_finished->info->promoted)
            event_post(n, "Round %u: v%u not promoted",
                        ev->round_finished->info->round,
                        ev->round_finished->info->candidate_version);
        model_changed(n, n->status.model_version);
        break;
    case DADC__EVENT__KIND_MODEL_PROMOTED:
        model_changed(n, ev->model_promoted->version);
        event_post(n, "New model v%u promoted",
                    ev->model_promoted->version);
        break;
    case DADC__EVENT__KIND_MODEL_ROLLED_BACK:
        model_changed(n, ev->model_rolled_back->version);
        event_post(n, "Rolled back to model v%u",
                    ev->model_rolled_back->version);
        break;
    default:
        break;
    }
}

/* Hand out every event that has arrived. */
static int events_drain(net_t *n, dadc_client_t *c)
{
    Dadc__Event *ev;
    int rc;

    while ((rc = dadc_client_next_event(c, 0, &ev)) == 0) {
        event_handle(n, ev);
        dadc__event__free_unpacked(ev, NULL);
    }
    return rc == DADC_ETIMEDOUT ? 0 : rc;
}

/*
 * Ask again later (on this connection after a pause, or on the next
 * one) unless the UI has asked about a newer drawing meanwhile: the
 * drawing on screen must get its answer in the end.
 */
static void predict_requeue(net_t *n, const uint8_t *image, unsigned seq)
{
    pthread_mutex_lock(&n->lock);
    if (!n->predict_due) {
        memcpy(n->predict_image, image, sizeof(n->predict_image));
        n->predict_seq = seq;
        n->predict_due = true;
        n->predict_retry_at = now_ms() + NET_FLAG_RETRY_MS;
    }
    pthread_mutex_unlock(&n->lock);
}

static int work_predict(net_t *n, dadc_client_t *c, const uint8_t *image,
                        unsigned seq)
{
    dadc_prediction_t p;
    net_node_t *node;
    int rc = dadc_client_predict(c, image, 1, 0, &p);

    if (rc != 0) {
        if (!rc_fatal(rc))
            notice_post(n, "Prediction failed: %s",
                        dadc_client_last_error(c));
        predict_requeue(n, image, seq);
        return rc;
    }
    node = node_new(NET_MSG_PREDICTION);
    if (node == NULL)
        return 0;
    node->msg.seq = seq;
    node->msg.digit = p.digit;
    node->msg.model_version = p.model_version;
    memcpy(node->msg.probabilities, p.probabilities,
           sizeof(p.probabilities));
    msg_post(n, node);
    return 0;
}

/* The server stored the oldest pending flag: drop it, tell the UI. */
static void flag_done(net_t *n, int label, const dadc_flag_result_t *res,
                      const dadc_flag_summary_t *sum)
{
    net_node_t *node = node_new(NET_MSG_FLAG);
    dadc_error_t err;
    int rc;

    pthread_mutex_lock(&n->lock);
    rc = pending_drop(&n->pending, 1, &err);
    n->status.flags_waiting = n->pending.count;
    n->status.my_submitted++;
    n->status.my_fooled += res->fooled;
    n->status.model_version = sum->model_version;
    n->status.pending_fooled = sum->pending_fooled;
    n->status.round_threshold = sum->round_threshold;
    n->figures_due = true;
    pthread_mutex_unlock(&n->lock);
    if (rc != 0)
        notice_post(n, "Pending file: %s", dadc_error_message(&err));

    if (node == NULL)
        return;
    node->msg.label = label;
    node->msg.predicted = res->predicted;
    node->msg.fooled = res->fooled;
    node->msg.model_version = sum->model_version;
    node->msg.round_started = sum->round_started;
    msg_post(n, node);
}

static int work_flag(net_t *n, dadc_client_t *c, const pending_flag_t *f)
{
    dadc_flag_result_t res;
    dadc_flag_summary_t sum;
    int rc = dadc_client_flag(c, f->image, &f->label, 1, &res, &sum, NULL,
                              NULL);

    if (rc == 0 && res.status == 0) {
        flag_done(n, f->label, &res, &sum);
        return 0;
    }
    if (rc == 0)
        rc = res.status;
    if (!rc_fatal(rc))
        notice_post(n, "Flag not stored yet (%s); will retry",
                    dadc_client_last_error(c));
    return rc;
}

static void figures_models_copy(net_msg_t *m, const Dadc__StatsResponse *s)
{
    size_t first = s->n_models > NET_MAX_MODELS
                       ? s->n_models - NET_MAX_MODELS : 0;

    for (size_t i = first; i < s->n_models; i++) {
        const Dadc__ModelInfo *mi = s->models[i];
        net_model_point_t *p = &m->models[m->model_count++];

        p->version = mi->version;
        p->round = mi->round;
        p->mnist_accuracy = mi->mnist_test_accuracy;
        p->adversarial_accuracy = mi->adversarial_accuracy;
        p->promoted = mi->promoted;
        p->current = mi->current;
    }
}

static void figures_mine_copy(net_t *n, const Dadc__StatsResponse *s)
{
    pthread_mutex_lock(&n->lock);
    n->status.model_version = s->current_model_version;
    n->status.pending_fooled = s->pending_fooled;
    n->status.round_threshold = s->round_threshold;
    n->status.figures_known = true;
    n->status.my_submitted = 0;
    n->status.my_fooled = 0;
    for (size_t i = 0; i < s->n_per_annotator; i++) {
        const Dadc__AnnotatorFigures *a = s->per_annotator[i];

        if (a->annotator != NULL && a->counts != NULL &&
            strcmp(a->annotator, n->annotator) == 0) {
            n->status.my_submitted = a->counts->submitted;
            n->status.my_fooled = a->counts->fooled;
        }
    }
    pthread_mutex_unlock(&n->lock);
}

static int work_figures(net_t *n, dadc_client_t *c)
{
    Dadc__StatsResponse *s = NULL;
    net_node_t *node;
    int rc = dadc_client_stats(c, &s);

    if (rc != 0)
        return rc;
    figures_mine_copy(n, s);
    node = node_new(NET_MSG_FIGURES);
    if (node != NULL) {
        for (size_t i = 0; i < s->n_per_digit; i++) {
            const Dadc__DigitFigures *d = s->per_digit[i];

            if (d->digit < 10 && d->counts != NULL) {
                node->msg.digit_submitted[d->digit] = d->counts->submitted;
                node->msg.digit_fooled[d->digit] = d->counts->fooled;
            }
        }
        figures_models_copy(&node->msg, s);
        msg_post(n, node);
    }
    dadc__stats_response__free_unpacked(s, NULL);
    return 0;
}

/* What the UI asked for, taken under the lock. */
typedef struct net_work {
    bool predict;
    unsigned seq;
    uint8_t image[784];
    bool flag;
    pending_flag_t flag_item;
    bool figures;
} net_work_t;

static void work_take(net_t *n, net_work_t *w, int64_t flag_retry_at)
{
    pthread_mutex_lock(&n->lock);
    w->predict = n->predict_due && now_ms() >= n->predict_retry_at;
    if (w->predict) {
        w->seq = n->predict_seq;
        memcpy(w->image, n->predict_image, sizeof(w->image));
        n->predict_due = false;
    }
    w->flag = n->pending.count > 0 && now_ms() >= flag_retry_at;
    if (w->flag)
        w->flag_item = n->pending.items[0];
    w->figures = n->figures_due;
    n->figures_due = false;
    pthread_mutex_unlock(&n->lock);
}

/* Sleep until the UI pokes, the server sends something, or ms pass. */
static int session_idle(net_t *n, dadc_client_t *c, int ms)
{
    struct pollfd fds[2] = {
        {.fd = n->wake[0], .events = POLLIN},
        {.fd = dadc_client_fd(c), .events = dadc_client_poll_events(c)},
    };

    if (poll(fds, 2, ms) < 0 && errno != EINTR)
        return -errno;
    if (fds[0].revents)
        wake_drain(n);
    if (fds[1].revents)
        return dadc_client_process(c, fds[1].revents);
    return 0;
}

/* Serve the UI on an open connection until it breaks or we stop. */
static void session_run(net_t *n, dadc_client_t *c)
{
    int64_t figures_at = now_ms() + NET_FIGURES_EVERY_MS;
    int64_t flag_retry_at = 0;
    net_work_t w;
    int rc = 0;

    while (!rc_fatal(rc) && !net_stopping(n)) {
        work_take(n, &w, flag_retry_at);
        if (w.predict)
            rc = work_predict(n, c, w.image, w.seq);
        if (w.flag && !rc_fatal(rc)) {
            rc = work_flag(n, c, &w.flag_item);
            flag_retry_at = rc ? now_ms() + NET_FLAG_RETRY_MS : 0;
        }
        if ((w.figures || now_ms() >= figures_at) && !rc_fatal(rc)) {
            rc = work_figures(n, c);
            figures_at = now_ms() + NET_FIGURES_EVERY_MS;
        }
        if (!rc_fatal(rc))
            rc = events_drain(n, c);
        if (!rc_fatal(rc) && !w.predict && !w.flag && !w.figures)
            rc = session_idle(n, c, 1000);
    }
    if (rc_fatal(rc) && rc != DADC_ECANCELED)
        status_error_set(n, dadc_client_last_error(c));
}

static void state_set(net_t *n, net_state_t state, int64_t retry_at)
{
    pthread_mutex_lock(&n->lock);
    n->status.state = state;
    n->retry_at_ms = retry_at;
    pthread_mutex_unlock(&n->lock);
}

/* Wait out the backoff; a poke (new work) does not cut it short. */
static void backoff_sleep(net_t *n, int64_t until)
{
    int64_t left;

    while (!net_stopping(n) && (left = until - now_ms()) > 0) {
        struct pollfd fd = {.fd = n->wake[0], .events = POLLIN};

        if (poll(&fd, 1, (int)left) > 0)
            wake_drain(n);
    }
}

static void *net_thread(void *arg)
{
    net_t *n = arg;
    int backoff = NET_BACKOFF_MIN_MS;

    while (!net_stopping(n)) {
        dadc_client_t *c = NULL;
        int64_t until;

        state_set(n, NET_CONNECTING, 0);
        if (session_open(n, &c) == 0) {
            backoff = NET_BACKOFF_MIN_MS;
            session_run(n, c);
        }
        pthread_mutex_lock(&n->lock);
        c = n->client;
        pthread_mutex_unlock(&n->lock);
        if (c != NULL)
            session_close(n, c);
        if (net_stopping(n))
            break;

        until = now_ms() + backoff;
        state_set(n, NET_DISCONNECTED, until);
        backoff_sleep(n, until);
        backoff = backoff * 2 > NET_BACKOFF_MAX_MS ? NET_BACKOFF_MAX_MS
                                                    : backoff * 2;
    }
    return NULL;
}

static int pipe_make(int fds[2])
{
    if (pipe(fds) != 0)
        return -errno;
    for (int i = 0; i < 2; i++) {
        fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
        fcntl(fds[i], F_SETFD, FD_CLOEXEC);
    }
    return 0;
}

static void net_free(net_t *n)
{
    while (n->head != NULL) {
        net_node_t *next = n->head->next;

        free(n->head);
        n->head = next;
    }
    pending_close(&n->pending);
    close(n->wake[0]);
    close(n->wake[1]);
    pthread_mutex_destroy(&n->lock);
    free(n->server);
    free(n->annotator);
    free(n);
}

int net_start(net_t **out, const net_config_t *cfg, dadc_error_t *err)
{
    net_t *n = calloc(1, sizeof(*n));
    int rc;

    if (n == NULL)
        return dadc_error_set(err, -ENOMEM, "out of memory");
    pthread_mutex_init(&n->lock, NULL);
    n->wake[0] = n->wake[1] = -1;
    n->server = strdup(cfg->server);
    n->annotator = strdup(cfg->annotator ? cfg->annotator : "");
    n->wake_event = cfg->wake_event;
    snprintf(n->status.server, sizeof(n->status.server), "%s",
             cfg->server);
    if (n->server == NULL || n->annotator == NULL) {
        rc = dadc_error_set(err, -ENOMEM, "out of memory");
        goto fail_alloc;
    }
    rc = pending_open(&n->pending, cfg->pending_path, err);
    if (rc != 0)
        goto fail_alloc;
    n->status.flags_waiting = n->pending.count;

    rc = pipe_make(n->wake);
    if (rc == 0)
        rc = -pthread_create(&n->thread, NULL, net_thread, n);
    if (rc != 0) {
        dadc_error_set(err, rc, "cannot start the network thread: %s",
                       strerror(-rc));
        goto fail_alloc;
    }
    *out = n;
    return 0;

fail_alloc:
    net_free(n);
    return rc;
}

void net_stop(net_t *n)
{
    if (n == NULL)
        return;
    pthread_mutex_lock(&n->lock);
    n->stop = true;
    if (n->client != NULL)
        dadc_client_cancel(n->client);
    pthread_mutex_unlock(&n->lock);
    net_poke(n);
    pthread_join(n->thread, NULL);
    net_free(n);
}

void net_predict(net_t *n, const uint8_t image[784], unsigned seq)
{
    pthread_mutex_lock(&n->lock);
    memcpy(n->predict_image, image, sizeof(n->predict_image));
    n->predict_seq = seq;
    n->predict_due = true;
    n->predict_retry_at = 0;
    pthread_mutex_unlock(&n->lock);
    net_poke(n);
}

int net_flag(net_t *n, const uint8_t image[784], int label,
             dadc_error_t *err)
{
    int rc;

    pthread_mutex_lock(&n->lock);
    rc = pending_push(&n->pending, image, label, err);
    n->status.flags_waiting = n->pending.count;
    pthread_mutex_unlock(&n->lock);
    net_poke(n);
    return rc;
}

void net_figures_request(net_t *n)
{
    pthread_mutex_lock(&n->lock);
    n->figures_due = true;
    pthread_mutex_unlock(&n->lock);
    net_poke(n);
}

bool net_poll(net_t *n, net_msg_t *out)
{
    net_node_t *node;

    pthread_mutex_lock(&n->lock);
    node = n->head;
    if (node != NULL) {
        n->head = node->next;
        if (n->head == NULL)
            n->tail = NULL;
        n->queued--;
    }
    pthread_mutex_unlock(&n->lock);
    if (node == NULL)
        return false;
    *out = node->msg;
    free(node);
    return true;
}

void net_status_get(net_t *n, net_status_t *out)
{
    int64_t left;

    pthread_mutex_lock(&n->lock);
    *out = n->status;
    left = n->retry_at_ms - now_ms();
    pthread_mutex_unlock(&n->lock);
    out->retry_in_ms = left > 0 ? (int)left : 0;
}
