/*
 * dadc-loadgen: load generator for a running dadc-server, over the client
 * library. Measures, in this order:
 *
 *   1. single-image Predict at 1, 16 and 64 connections (one request in
 *      flight per connection, all connections in one poll loop):
 *      predictions/s and p50/p99 latency;
 *   2. images/s through batch Predict calls;
 *   3. the time from the flag that completes a round's quota of fooling
 *      examples to the ModelPromoted event (on a fresh store this round
 *      trains on about ten examples, as in the walkthrough);
 *   4. acknowledged flags/s through a pipelined batch Flag;
 *   5. single-image Predict p99 while a (manual) round trains.
 *
 * and prints each figure beside the target from the project's issue with
 * the ratio (> 1 means the target is met). It writes into the server's
 * store: run it against a scratch server (bench/run_server_bench.sh).
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "dadc_client.h"
#include "idx.h"

#define LG_MAX_CONNS 64
#define LG_FLAGS 20000

typedef struct lg_opts {
    const char *server;
    const char *mnist_dir;
    double seconds;          /* per load phase */
    unsigned batch;          /* images per batch Predict request */
    unsigned batch_conns;
    unsigned batch_depth;    /* batch requests in flight per connection */
    bool skip_rounds;
} lg_opts_t;

/* Latencies of one phase, in milliseconds. */
typedef struct lg_lat {
    double *ms;
    size_t n;
    size_t cap;
} lg_lat_t;

/* The result of one load phase. */
typedef struct lg_result {
    double seconds;
    size_t requests;
    size_t images;
    size_t errors;
    double p50_ms;
    double p99_ms;
    double cpu_share;        /* loadgen CPU time / wall time */
    bool stopped_by_event;
} lg_result_t;

typedef struct lg_conn {
    dadc_client_t *c;
    unsigned inflight;
    int64_t sent_ns[64];     /* send time by id % 64 */
} lg_conn_t;

typedef struct lg {
    lg_opts_t o;
    mnist_t mnist;
    lg_conn_t conns[LG_MAX_CONNS];
    dadc_client_t *watch;    /* subscribed to events */
    size_t next_image;
} lg_t;

/* A load phase: what to send and when to stop. */
typedef struct lg_phase {
    int nconn;
    unsigned images;          /* per request */
    unsigned depth;           /* requests in flight per connection */
    double seconds;
    bool until_round_end;     /* stop at the RoundFinished event */
} lg_phase_t;

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* CPU seconds this process has used so far. */
static double cpu_seconds(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static void lg_die(const char *fmt, const char *arg)
{
    fprintf(stderr, "dadc-loadgen: ");
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    exit(1);
}

static void lat_add(lg_lat_t *l, double ms)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 65536;
        double *p = realloc(l->ms, cap * sizeof(*p));

        if (p == NULL)
            lg_die("%s", "out of memory");
        l->ms = p;
        l->cap = cap;
    }
    l->ms[l->n++] = ms;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static double lat_quantile(lg_lat_t *l, double q)
{
    if (l->n == 0)
        return 0;
    return l->ms[(size_t)(q * (double)(l->n - 1))];
}

/* ------------------------------------------------------------------ */
/* Connections                                                         */

static dadc_client_t *lg_connect(const lg_t *lg, const char *annotator)
{
    dadc_client_t *c;
    dadc_error_t err;

    dadc_error_clear(&err);
    if (dadc_client_connect(&c, lg->o.server, 10000, &err) != 0)
        lg_die("%s", dadc_error_message(&err));
    if (dadc_client_hello(c, "dadc-loadgen", annotator, NULL) != 0)
        lg_die("hello: %s", dadc_client_last_error(c));
    dadc_client_set_timeout(c, 60000);
    return c;
}

static void lg_connect_all(lg_t *lg)
{
    int i;

    for (i = 0; i < LG_MAX_CONNS; i++)
        lg->conns[i].c = lg_connect(lg, "loadgen");
    lg->watch = lg_connect(lg, "loadgen-watch");
    if (dadc_client_subscribe(lg->watch) != 0)
        lg_die("subscribe: %s", dadc_client_last_error(lg->watch));
}

/* ------------------------------------------------------------------ */
/* The load loop                                                       */

static int lg_send_predict(lg_t *lg, lg_conn_t *k, unsigned images)
{
    Dadc__Request req = DADC__REQUEST__INIT;
    Dadc__PredictRequest pr = DADC__PREDICT_REQUEST__INIT;
    ProtobufCBinaryData img[4096];
    uint64_t id;
    unsigned i;
    int rc;

    for (i = 0; i < images; i++) {
        img[i].len = DADC_IMAGE_BYTES;
        img[i].data = lg->mnist.test_images.data +
                      lg->next_image * DADC_IMAGE_BYTES;
        lg->next_image = (lg->next_image + 1) % lg->mnist.test_images.count;
    }
    pr.n_images = images;
    pr.images = img;
    req.call_case = DADC__REQUEST__CALL_PREDICT;
    req.predict = &pr;
    rc = dadc_client_send_async(k->c, &req, &id);
    if (rc != 0)
        return rc;
    k->sent_ns[id % 64] = now_ns();
    k->inflight++;
    return 0;
}

/* Take every arrived answer on k; send the next while sending. */
static void lg_drain(lg_t *lg, lg_conn_t *k, const lg_phase_t *ph,
                     bool sending, lg_lat_t *lat, lg_result_t *res)
{
    Dadc__ServerMessage *m;

    while (dadc_client_queued(k->c) > 0 &&
           dadc_client_recv(k->c, 0, &m) == 0) {
        const Dadc__Response *r = m->response;

        if (r != NULL) {
            int64_t t = now_ns() - k->sent_ns[r->id % 64];

            k->inflight--;
            if (r->status != NULL && r->status->code != 0) {
                res->errors++;
            } else {
                res->requests++;
                res->images += ph->images;
                lat_add(lat, (double)t / 1e6);
            }
            if (sending && lg_send_predict(lg, k, ph->images) != 0)
                res->errors++;
        }
        dadc__server_message__free_unpacked(m, NULL);
    }
}

/* Whether the watch connection has seen the end of a round. */
static bool lg_watch_round_end(lg_t *lg)
{
    Dadc__Event *ev;
    bool end = false;

    while (dadc_client_next_event(lg->watch, 0, &ev) == 0) {
        if (ev->kind_case == DADC__EVENT__KIND_ROUND_FINISHED)
            end = true;
        dadc__event__free_unpacked(ev, NULL);
    }
    return end;
}

static void lg_poll_once(lg_t *lg, const lg_phase_t *ph, bool sending,
                         lg_lat_t *lat, lg_result_t *res)
{
    struct pollfd pfd[LG_MAX_CONNS];
    int i;

    for (i = 0; i < ph->nconn; i++)
        pfd[i] = (struct pollfd){dadc_client_fd(lg->conns[i].c),
                                 dadc_client_poll_events(lg->conns[i].c),
                                 0};
    if (poll(pfd, (nfds_t)ph->nconn, 20) <= 0)
        return;
    for (i = 0; i < ph->nconn; i++) {
        lg_conn_t *k = &lg->conns[i];

        if (pfd[i].revents == 0)
            continue;
        if (dadc_client_process(k->c, pfd[i].revents) != 0)
            lg_die("connection lost: %s", dadc_client_last_error(k->c));
        lg_drain(lg, k, ph, sending, lat, res);
    }
}

static void lg_run(lg_t *lg, const lg_phase_t *ph, lg_result_t *res)
{
    lg_lat_t lat = {0};
    int64_t start, end, stop;
    double cpu0 = cpu_seconds();
    unsigned d;
    int i;

    memset(res, 0, sizeof(*res));
    start = now_ns();
    end = start + (int64_t)(ph->seconds * 1e9);
    for (i = 0; i < ph->nconn; i++)
        for (d = 0; d < ph->depth; d++)
            if (lg_send_predict(lg, &lg->conns[i], ph->images) != 0)
                lg_die("send: %s", dadc_client_last_error(lg->conns[i].c));
    while (now_ns() < end) {
        lg_poll_once(lg, ph, true, &lat, res);
        if (ph->until_round_end && lg_watch_round_end(lg)) {
            res->stopped_by_event = true;
            break;
        }
    }
    stop = now_ns();
    res->seconds = (double)(stop - start) / 1e9;
    res->cpu_share = (cpu_seconds() - cpu0) / res->seconds;

    /* let the requests still in flight finish, uncounted */
    {
        lg_result_t ignore = {0};
        lg_lat_t ignore_lat = {0};
        int busy = 1;

        while (busy && now_ns() - stop < 30000000000LL) {
            lg_poll_once(lg, ph, false, &ignore_lat, &ignore);
            for (busy = 0, i = 0; i < ph->nconn; i++)
                busy |= lg->conns[i].inflight > 0;
        }
        free(ignore_lat.ms);
    }
    qsort(lat.ms, lat.n, sizeof(double), cmp_double);
    res->p50_ms = lat_quantile(&lat, 0.50);
    res->p99_ms = lat_quantile(&lat, 0.99);
    free(lat.ms);
}

/* ------------------------------------------------------------------ */
/* Rounds                                                              */

/* Wait (up to limit_s) until no round is running. */
static void lg_wait_rounds_idle(lg_t *lg, double limit_s)
{
    int64_t end = now_ns() + (int64_t)(limit_s * 1e9);
    dadc_client_t *c = lg->conns[0].c;

    while (now_ns() < end) {
        Dadc__StatsResponse *s;
        bool running;

        if (dadc_client_stats(c, &s) != 0)
            lg_die("stats: %s", dadc_client_last_error(c));
        running = s->round_running;
        dadc__stats_response__free_unpacked(s, NULL);
        if (!running)
            break;
        nanosleep(&(struct timespec){0, 100000000}, NULL);
    }
    lg_watch_round_end(lg);
}

/*
 * Images the current model gets wrong with their true labels, to flag
 * as real fooling examples; topped up with right images given a label
 * the model will not say when there are too few. Returns the count.
 */
static size_t lg_fooling_set(lg_t *lg, uint8_t *images, uint8_t *labels,
                             size_t want)
{
    const idx_file_t *ti = &lg->mnist.test_images;
    dadc_prediction_t *p = calloc(ti->count, sizeof(*p));
    size_t i, n = 0;

    if (p == NULL ||
        dadc_client_predict(lg->conns[0].c, ti->data, ti->count, 0, p) != 0)
        lg_die("predict: %s", dadc_client_last_error(lg->conns[0].c));
    for (i = 0; i < ti->count && n < want; i++) {
        if (p[i].digit == lg->mnist.test_labels.data[i])
            continue;
        memcpy(images + n * DADC_IMAGE_BYTES,
               ti->data + i * DADC_IMAGE_BYTES, DADC_IMAGE_BYTES);
        labels[n++] = lg->mnist.test_labels.data[i];
    }
    for (i = 0; n < want; i++) {
        memcpy(images + n * DADC_IMAGE_BYTES,
               ti->data + i * DADC_IMAGE_BYTES, DADC_IMAGE_BYTES);
        labels[n++] = (uint8_t)((p[i].digit + 1) % 10);
    }
    free(p);
    return n;
}

/*
 * Flag fooling examples one at a time until one starts a round; then
 * the seconds from that flag to the ModelPromoted event (negative when
 * the candidate was rejected or nothing came).
 */
static double lg_round_latency(lg_t *lg, bool *rejected, size_t *flags)
{
    enum { WANT = 200 };
    uint8_t *images = malloc(WANT * DADC_IMAGE_BYTES), labels[WANT];
    dadc_client_t *c = lg->conns[0].c;
    int64_t t0 = 0, end;
    size_t i;

    if (images == NULL)
        lg_die("%s", "out of memory");
    lg_wait_rounds_idle(lg, 120);
    lg_fooling_set(lg, images, labels, WANT);
    *rejected = false;
    for (i = 0; i < WANT && t0 == 0; i++) {
        dadc_flag_summary_t s;
        int64_t t = now_ns();

        if (dadc_client_flag(c, images + i * DADC_IMAGE_BYTES, &labels[i],
                             1, NULL, &s, NULL, NULL) != 0)
            lg_die("flag: %s", dadc_client_last_error(c));
        if (s.round_started)
            t0 = t;
    }
    *flags = i;
    free(images);
    if (t0 == 0)
        return -1;
    end = now_ns() + 120000000000LL;
    while (now_ns() < end) {
        Dadc__Event *ev;
        int kind;

        if (dadc_client_next_event(lg->watch, 1000, &ev) != 0)
            continue;
        kind = ev->kind_case;
        if (kind == DADC__EVENT__KIND_ROUND_FINISHED && ev->round_finished &&
            ev->round_finished->info && !ev->round_finished->info->promoted)
            *rejected = true;
        dadc__event__free_unpacked(ev, NULL);
        if (kind == DADC__EVENT__KIND_MODEL_PROMOTED)
            return (double)(now_ns() - t0) / 1e9;
        if (*rejected)
            return -(double)(now_ns() - t0) / 1e9;
    }
    return -1;
}

/* ------------------------------------------------------------------ */
/* Report                                                              */

/* One line: figure, ours, the target and the ratio (> 1: met). */
static void lg_line(const char *what, double ours, const char *unit,
                    double target, bool higher_better)
{
    double ratio = 0;

    if (target > 0 && ours > 0)
        ratio = higher_better ? ours / target : target / ours;
    if (target > 0)
        printf("%-44s %11.2f %-4s %s%-9.2f %6.2fx %s\n", what, ours, unit,
               higher_better ? ">= " : "<= ", target, ratio,
               ratio >= 1 ? "met" : "MISSED");
    else
        printf("%-44s %11.2f %-4s %-12s %7s\n", what, ours, unit, "-", "-");
}

static void lg_phase_predict(lg_t *lg, int nconn, lg_result_t *res)
{
    lg_phase_t ph = {nconn, 1, 1, lg->o.seconds, false};

    lg_run(lg, &ph, res);
    fprintf(stderr, "predict x%d: %zu requests, %zu errors; the load "
            "generator used %.0f%% of a core\n", nconn, res->requests,
            res->errors, 100 * res->cpu_share);
}

/*
 * Acknowledged flags/s through one pipelined batch Flag. The images are
 * MNIST training images the current model gets right, so none of them
 * fools it and no round starts to compete for the cores.
 */
static double lg_phase_flags(lg_t *lg)
{
    const idx_file_t *tr = &lg->mnist.train_images;
    dadc_client_t *c = lg->conns[1].c;
    dadc_prediction_t *p = calloc(tr->count, sizeof(*p));
    uint8_t *images = malloc((size_t)LG_FLAGS * DADC_IMAGE_BYTES);
    uint8_t *labels = malloc(LG_FLAGS);
    dadc_flag_summary_t s;
    size_t i, n = 0;
    int64_t t0;
    double secs;

    if (p == NULL || images == NULL || labels == NULL)
        lg_die("%s", "out of memory");
    if (dadc_client_predict(c, tr->data, tr->count, 0, p) != 0)
        lg_die("predict: %s", dadc_client_last_error(c));
    for (i = 0; i < tr->count && n < LG_FLAGS; i++) {
        if (p[i].digit != lg->mnist.train_labels.data[i])
            continue;
        memcpy(images + n * DADC_IMAGE_BYTES,
               tr->data + i * DADC_IMAGE_BYTES, DADC_IMAGE_BYTES);
        labels[n++] = lg->mnist.train_labels.data[i];
    }
    t0 = now_ns();
    if (dadc_client_flag(c, images, labels, n, NULL, &s, NULL, NULL) != 0)
        fprintf(stderr, "flag batch: %s\n", dadc_client_last_error(c));
    secs = (double)(now_ns() - t0) / 1e9;
    fprintf(stderr, "flags: %zu acknowledged (%zu fooled) in %.2f s\n",
            s.acknowledged, s.fooled, secs);
    free(p);
    free(images);
    free(labels);
    return (double)s.acknowledged / secs;
}

static void lg_report_predict(const char *label, int nconn,
                              const lg_result_t *r, bool targets)
{
    char what[96];

    snprintf(what, sizeof(what), "%s predictions/s, %d conn", label, nconn);
    lg_line(what, (double)r->requests / r->seconds, "/s",
            targets ? 20000 : 0, true);
    snprintf(what, sizeof(what), "%s predict p50, %d conn", label, nconn);
    lg_line(what, r->p50_ms, "ms", 0, false);
    snprintf(what, sizeof(what), "%s predict p99, %d conn", label, nconn);
    lg_line(what, r->p99_ms, "ms", targets ? 5 : 0, false);
}

static void lg_usage(void)
{
    printf("usage: dadc-loadgen [--server HOST:PORT] [--mnist DIR]\n"
           "         [--seconds S] [--batch N] [--batch-conns N]\n"
           "         [--batch-depth N] [--skip-rounds]\n\n"
           "Load a running dadc-server (it writes examples: use a "
           "scratch\nserver) and print each figure beside its target.\n");
}

static void lg_parse(lg_opts_t *o, int argc, char **argv)
{
    static const struct option longs[] = {
        {"server", required_argument, NULL, 's'},
        {"mnist", required_argument, NULL, 'm'},
        {"seconds", required_argument, NULL, 't'},
        {"batch", required_argument, NULL, 'b'},
        {"batch-conns", required_argument, NULL, 'c'},
        {"batch-depth", required_argument, NULL, 'd'},
        {"skip-rounds", no_argument, NULL, 'r'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int k;

    while ((k = getopt_long(argc, argv, "s:m:t:b:c:d:rh", longs, NULL)) !=
           -1) {
        switch (k) {
        case 's': o->server = optarg; break;
        case 'm': o->mnist_dir = optarg; break;
        case 't': o->seconds = atof(optarg); break;
        case 'b': o->batch = (unsigned)atoi(optarg); break;
        case 'c': o->batch_conns = (unsigned)atoi(optarg); break;
        case 'd': o->batch_depth = (unsigned)atoi(optarg); break;
        case 'r': o->skip_rounds = true; break;
        case 'h': lg_usage(); exit(0);
        default: lg_usage(); exit(2);
        }
    }
    if (o->seconds <= 0 || o->batch < 1 || o->batch > 4096 ||
        o->batch_conns < 1 || o->batch_conns > LG_MAX_CONNS ||
        o->batch_depth < 1 || o->batch_depth > 32)
        lg_die("%s", "bad option value (try --help)");
}

int main(int argc, char **argv)
{
    lg_t lg = {0};
    lg_result_t r1, r16, r64, rb, rr;
    dadc_error_t err;
    double flags_s, promote_s = -1;
    bool rejected = false;
    size_t round_flags = 0;
    double load[1];

    signal(SIGPIPE, SIG_IGN);
    if (getloadavg(load, 1) != 1)
        load[0] = -1;
    lg.o = (lg_opts_t){dadc_client_default_server(), getenv("DADC_MNIST_DIR"),
                       3.0, 256, 2, 4, false};
    if (lg.o.mnist_dir == NULL)
        lg.o.mnist_dir = "dadc-data/mnist";
    lg_parse(&lg.o, argc, argv);
    dadc_error_clear(&err);
    if (mnist_load(lg.o.mnist_dir, &lg.mnist, &err) != 0)
        lg_die("%s", dadc_error_message(&err));
    lg_connect_all(&lg);

    lg_phase_predict(&lg, 1, &r1);
    lg_phase_predict(&lg, 16, &r16);
    lg_phase_predict(&lg, 64, &r64);
    lg_run(&lg, &(lg_phase_t){(int)lg.o.batch_conns, lg.o.batch,
                              lg.o.batch_depth, lg.o.seconds, false}, &rb);
    fprintf(stderr, "batch predict: %zu images in %.2f s; the load "
            "generator used %.0f%% of a core\n", rb.images, rb.seconds,
            100 * rb.cpu_share);
    if (!lg.o.skip_rounds)
        promote_s = lg_round_latency(&lg, &rejected, &round_flags);
    flags_s = lg_phase_flags(&lg);
    if (!lg.o.skip_rounds) {
        lg_wait_rounds_idle(&lg, 120);
        if (dadc_client_train(lg.conns[0].c, NULL) != 0)
            lg_die("train: %s", dadc_client_last_error(lg.conns[0].c));
        lg_run(&lg, &(lg_phase_t){16, 1, 1, 120, true}, &rr);
    }

    printf("\ndadc-loadgen against %s (ratio > 1: target met); load "
           "average %.2f on %ld cores when it started\n", lg.o.server,
           load[0], sysconf(_SC_NPROCESSORS_ONLN));
    printf("%-44s %16s %-12s %7s\n", "figure", "ours", "target", "ratio");
    lg_report_predict("single-image", 1, &r1, false);
    lg_report_predict("single-image", 16, &r16, false);
    lg_report_predict("single-image", 64, &r64, true);
    lg_line("batch Predict images/s", (double)rb.images / rb.seconds, "/s",
            60000, true);
    lg_line("acknowledged flags/s (batch Flag)", flags_s, "/s", 20000,
            true);
    if (!lg.o.skip_rounds) {
        if (promote_s > 0)
            lg_line("10 fooling flags -> model promoted", promote_s, "s", 1,
                    false);
        else
            printf("10 fooling flags -> promoted: %s after %.2f s "
                   "(%zu flags)\n", rejected ? "candidate REJECTED" :
                   "no promotion", -promote_s, round_flags);
        lg_line("predict p99 while a round trains (16 conn)", rr.p99_ms,
                "ms", 10, false);
        printf("  (%zu predictions over %.2f s of training%s)\n",
               rr.requests, rr.seconds,
               rr.stopped_by_event ? "" : "; the round did not finish");
    }
    for (int i = 0; i < LG_MAX_CONNS; i++)
        dadc_client_close(lg.conns[i].c);
    dadc_client_close(lg.watch);
    mnist_free(&lg.mnist);
    return 0;
}
