#include "server.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>

#include "conn.h"
#include "log.h"

#define SERVER_BACKLOG 1024
#define SERVER_FD_RESERVE 64      /* fds beyond connections: store, files */

int64_t server_unix_ms(void)
{
    struct timeval tv;

    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static void server_idle_cb(uv_idle_t *h)
{
    (void)h;
}

void server_wake(server_t *s)
{
    if (s->idle_active || uv_is_closing((uv_handle_t *)&s->batch_idle))
        return;
    /* An active idle handle makes the loop poll without blocking, so the
     * check callback runs again right away. */
    s->idle_active = true;
    uv_idle_start(&s->batch_idle, server_idle_cb);
}

/* Runs once per loop iteration, after I/O: everything read in this
 * iteration is queued by now, so this is where batches form. */
static void server_check_cb(uv_check_t *h)
{
    server_t *s = h->data;

    while (s->resume != NULL) {
        conn_t *c = s->resume;
        s->resume = c->resume_next;
        conn_resume(c);
    }
    batch_run(s);
    if (s->resume == NULL && s->predicts.count == 0 &&
        (s->flags.count == 0 || s->flag_job != NULL) && s->idle_active) {
        uv_idle_stop(&s->batch_idle);
        s->idle_active = false;
    }
    server_maybe_finish(s);
}

static void server_sweep_cb(uv_timer_t *h)
{
    server_t *s = h->data;
    uint64_t now = uv_now(s->loop);

    for (conn_t *c = s->conns, *next; c != NULL; c = next) {
        next = c->next;
        conn_sweep(c, now);
    }
}

static void server_connection_cb(uv_stream_t *listener, int status)
{
    server_t *s = listener->data;
    uint64_t now;

    if (status == 0) {
        conn_accept(s);
        return;
    }

    /* libuv keeps a reserve descriptor: on EMFILE it closes it, accepts
     * and closes the pending connection, and reopens it, so the listener
     * never spins on a connection it cannot take. Say so at most once a
     * second. */
    now = uv_now(s->loop);
    if (now - s->emfile_last_ms >= 1000 || s->emfile_last_ms == 0) {
        s->emfile_last_ms = now;
        LOG(LOG_WARNING, "server", "accept failed: %s (%u connections)",
            uv_strerror(status), s->nconns);
    }
}

/* Raise the soft limit on descriptors to what the connection limit
 * needs, as far as the hard limit allows. */
static void server_raise_fd_limit(const server_t *s)
{
    struct rlimit rl;
    rlim_t want = (rlim_t)s->cfg.max_connections + SERVER_MAX_REJECTED +
                  SERVER_FD_RESERVE;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want)
        return;
    rl.rlim_cur = want < rl.rlim_max ? want : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < want)
        LOG(LOG_WARNING, "server", "file descriptor limit %llu is below "
            "the %llu that %u connections need",
            (unsigned long long)rl.rlim_cur, (unsigned long long)want,
            s->cfg.max_connections);
}

/* HOST:PORT or [V6]:PORT into an address; names go through the
 * resolver. */
static int server_parse_listen(const char *spec, struct sockaddr_storage *ss,
                               dadc_error_t *err)
{
    char host[256];
    const char *colon = strrchr(spec, ':');
    const char *h = host;
    struct addrinfo hints, *res = NULL;
    size_t hlen;
    int rc;

    if (colon == NULL || colon[1] == '\0' || colon == spec)
        return dadc_error_set(err, DADC_ERANGE, "listen: '%s' is not "
                              "HOST:PORT", spec);
    hlen = (size_t)(colon - spec);
    if (hlen >= sizeof(host))
        return dadc_error_set(err, DADC_ERANGE, "listen: host too long");
    memcpy(host, spec, hlen);
    host[hlen] = '\0';
    if (host[0] == '[' && hlen >= 2 && host[hlen - 1] == ']') {
        host[hlen - 1] = '\0';
        h = host + 1;
    }

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    rc = getaddrinfo(strcmp(h, "*") == 0 ? NULL : h, colon + 1, &hints,
                     &res);
    if (rc != 0)
        return dadc_error_set(err, DADC_ERANGE, "listen: '%s': %s", spec,
                              gai_strerror(rc));
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

/* The bound address as "HOST:PORT" and its port. */
static int server_bound(server_t *s, char *name, size_t size)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss), port;
    char host[64] = "?";

    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&ss, &len);
    if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)&ss;
        uv_ip6_name(a, host, sizeof(host));
        port = ntohs(a->sin6_port);
        snprintf(name, size, "[%s]:%d", host, port);
    } else {
        const struct sockaddr_in *a = (const void *)&ss;
        uv_ip4_name(a, host, sizeof(host));
        port = ntohs(a->sin_port);
        snprintf(name, size, "%s:%d", host, port);
    }
    return port;
}

static int server_listen(server_t *s, const struct sockaddr_storage *ss,
                         dadc_error_t *err)
{
    char name[128];
    int rc;

    uv_tcp_init(s->loop, &s->listener);
    s->listener.data = s;
    s->listening = true;
    rc = uv_tcp_bind(&s->listener, (const struct sockaddr *)ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&s->listener, SERVER_BACKLOG,
                       server_connection_cb);
    if (rc != 0)
        return dadc_error_set(err, rc, "listen on %s: %s", s->cfg.listen,
                              uv_strerror(rc));
    s->port = server_bound(s, name, sizeof(name));
    LOG(LOG_INFO, "server", "listening on %s (max %u connections, frames "
        "up to %u bytes)", name, s->cfg.max_connections, s->cfg.max_frame);
    return 0;
}

/* mkdir -p for the data directory. */
static int server_mkdirs(const char *dir, dadc_error_t *err)
{
    char path[CONFIG_PATH_MAX];
    size_t len = strlen(dir);

    if (len == 0 || len >= sizeof(path))
        return dadc_error_set(err, DADC_ERANGE, "data-dir: bad path");
    memcpy(path, dir, len + 1);
    for (char *p = path + 1; ; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;
        *p = '\0';
        if (mkdir(path, 0755) != 0 && errno != EEXIST)
            return dadc_error_set(err, -errno, "%s: %s", path,
                                  strerror(errno));
        *p = c;
        if (c == '\0')
            break;
    }
    return 0;
}

static int server_open_store(server_t *s, dadc_error_t *err)
{
    store_opts_t o;
    store_counters_t ctr;
    int rc;

    rc = server_mkdirs(s->cfg.data_dir, err);
    if (rc != 0)
        return rc;
    store_opts_default(&o);
    o.map_bytes = (size_t)s->cfg.map_size;
    o.heldout_share = s->cfg.heldout_percent / 100.0;
    rc = store_open(&s->store, s->cfg.data_dir, &o, err);
    if (rc != 0)
        return rc;
    rc = stats_create(&s->stats);
    if (rc != 0)
        return dadc_error_set(err, rc, "no memory for the statistics");
    rc = stats_rebuild(s->stats, s->store, err);
    if (rc != 0)
        return rc;
    rc = store_counters_get(s->store, &ctr, err);
    if (rc != 0)
        return rc;
    s->collecting_round = ctr.collecting_round;
    LOG(LOG_INFO, "store", "opened %s: %llu examples, %u versions, "
        "current %u, round %u collecting", s->cfg.data_dir,
        (unsigned long long)ctr.examples, ctr.latest_version,
        ctr.current_version, ctr.collecting_round);
    return 0;
}

static int server_load_mnist(server_t *s, dadc_error_t *err)
{
    int rc = mnist_load(s->cfg.mnist_dir, &s->mnist, err);

    if (rc != 0)
        return rc;
    s->mnist_loaded = true;
    LOG(LOG_INFO, "server", "MNIST loaded from %s: %zu training, %zu test "
        "images", s->cfg.mnist_dir, s->mnist.train_images.count,
        s->mnist.test_images.count);
    return 0;
}

static void server_signal_cb(uv_signal_t *h, int signum)
{
    server_t *s = h->data;

    server_stop(s, signum == SIGINT ? "SIGINT" : "SIGTERM");
}

/* The loop's own handles: signals, the deadline sweep, the batch step. */
static void server_init_handles(server_t *s)
{
    uint64_t every = s->cfg.frame_timeout_ms;

    if (s->cfg.idle_timeout_ms < every)
        every = s->cfg.idle_timeout_ms;
    if (SERVER_LINGER_MS < every)
        every = SERVER_LINGER_MS;
    every /= 4;
    every = every < 10 ? 10 : every > 1000 ? 1000 : every;

    uv_signal_init(s->loop, &s->sig_int);
    uv_signal_init(s->loop, &s->sig_term);
    s->sig_int.data = s->sig_term.data = s;
    uv_signal_start(&s->sig_int, server_signal_cb, SIGINT);
    uv_signal_start(&s->sig_term, server_signal_cb, SIGTERM);
    uv_timer_init(s->loop, &s->sweep);
    s->sweep.data = s;
    uv_timer_start(&s->sweep, server_sweep_cb, every, every);
    uv_check_init(s->loop, &s->batch_check);
    s->batch_check.data = s;
    uv_check_start(&s->batch_check, server_check_cb);
    uv_idle_init(s->loop, &s->batch_idle);
    s->batch_idle.data = s;
    s->handles_open = true;
}

int server_init(server_t *s, uv_loop_t *loop, const server_config_t *cfg,
                dadc_error_t *err)
{
    struct sockaddr_storage addr;
    int rc;

    s->loop = loop;
    s->cfg = *cfg;
    s->predicts.tail = &s->predicts.head;
    s->flags.tail = &s->flags.head;
    server_raise_fd_limit(s);
    server_init_handles(s);

    rc = server_parse_listen(s->cfg.listen, &addr, err);
    if (rc == 0)
        rc = server_open_store(s, err);
    if (rc == 0)
        rc = server_load_mnist(s, err);
    if (rc == 0)
        rc = server_listen(s, &addr, err);
    if (rc == 0)
        rc = rounds_init(s, err);
    if (rc != 0) {
        /* Nothing was served yet: close what is open, quietly. */
        s->exit_code = 1;
        s->stopping = true;
        s->cancel = 1;
        if (s->listening)
            uv_close((uv_handle_t *)&s->listener, NULL);
        s->listening = false;
        server_maybe_finish(s);
    }
    return rc;
}

void server_ready(server_t *s)
{
    char tmp[CONFIG_PATH_MAX + 8];
    FILE *f;

    s->ready = true;

    /* Written only now, so a script that waits for the file finds a
     * server that answers Predict; and before the log line, so a reader
     * of the log finds the file. */
    if (s->cfg.port_file[0] != '\0') {
        int bad;

        snprintf(tmp, sizeof(tmp), "%s.tmp", s->cfg.port_file);
        f = fopen(tmp, "w");
        bad = f == NULL;
        if (f != NULL) {
            bad = fprintf(f, "%d\n", s->port) < 0;
            bad |= fclose(f) != 0;
        }
        if (bad || rename(tmp, s->cfg.port_file) != 0)
            LOG(LOG_ERROR, "server", "cannot write port file %s: %s",
                s->cfg.port_file, strerror(errno));
    }
    LOG(LOG_INFO, "server", "ready: serving model version %u on port %d",
        s->current->version, s->port);
}

void server_stop(server_t *s, const char *why)
{
    if (s->stopping) {
        LOG(LOG_WARNING, "server", "%s again: closing every connection "
            "now", why);
        for (conn_t *c = s->conns; c != NULL; c = c->next)
            conn_close(c, "server stopping");
        return;
    }
    s->stopping = true;
    s->stop_started_ms = uv_now(s->loop);
    s->cancel = 1;
    LOG(LOG_INFO, "server", "stopping (%s): finishing in-flight work", why);
    if (s->listening) {
        uv_close((uv_handle_t *)&s->listener, NULL);
        s->listening = false;
    }
    for (conn_t *c = s->conns; c != NULL; c = c->next)
        conn_stop(c);
    server_wake(s);
}

bool server_input_full(const server_t *s)
{
    return s->pending_in >= s->cfg.max_pending_in;
}

void server_input_resume(server_t *s)
{
    LOG(LOG_DEBUG, "server", "queued requests below %llu bytes of images "
        "again: reading resumes",
        (unsigned long long)s->cfg.max_pending_in);
    for (conn_t *c = s->conns; c != NULL; c = c->next)
        conn_allow_reading(c);
}

void server_maybe_finish(server_t *s)
{
    if (!s->stopping || !s->handles_open)
        return;
    if (s->conns != NULL || batch_busy(s) || s->round_job != NULL ||
        s->base_job)
        return;

    /* Nothing left in flight: close the loop's own handles so uv_run
     * returns. */
    s->handles_open = false;
    uv_close((uv_handle_t *)&s->sig_int, NULL);
    uv_close((uv_handle_t *)&s->sig_term, NULL);
    uv_close((uv_handle_t *)&s->sweep, NULL);
    uv_close((uv_handle_t *)&s->batch_check, NULL);
    uv_close((uv_handle_t *)&s->batch_idle, NULL);
}

int server_run(server_t *s)
{
    uv_run(s->loop, UV_RUN_DEFAULT);

    models_free(s);
    stats_free(s->stats);
    s->stats = NULL;
    store_close(s->store);
    s->store = NULL;
    if (s->mnist_loaded)
        mnist_free(&s->mnist);
    s->mnist_loaded = false;
    if (s->exit_code == 0)
        LOG(LOG_INFO, "server", "stopped; store closed");
    return s->exit_code;
}
