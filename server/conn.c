#include "conn.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "frame.h"
#include "log.h"

typedef struct conn_write {
    uv_write_t req;
    size_t len;
    uint8_t data[];
} conn_write_t;

static void conn_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void conn_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *b);

static uint32_t conn_frame_limit(const conn_t *c)
{
    return c->hello_done ? c->srv->cfg.max_frame
                         : c->srv->cfg.max_frame_pre_hello;
}

static bool conn_paused(const conn_t *c)
{
    return c->inflight >= c->srv->cfg.max_inflight ||
           server_input_full(c->srv);
}

static size_t conn_queued_out(const conn_t *c)
{
    return uv_stream_get_write_queue_size((const uv_stream_t *)&c->tcp);
}

static void conn_start_reading(conn_t *c)
{
    int rc;

    if (c->reading || c->closing)
        return;
    rc = uv_read_start((uv_stream_t *)&c->tcp, conn_alloc_cb, conn_read_cb);
    if (rc != 0) {
        conn_close(c, uv_strerror(rc));
        return;
    }
    c->reading = true;
}

static void conn_stop_reading(conn_t *c)
{
    if (!c->reading)
        return;
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = false;
}

/* Drop the input buffer (after an error, or once a big frame is done). */
static void conn_input_free(conn_t *c)
{
    free(c->in);
    c->in = NULL;
    c->in_len = 0;
    c->in_cap = 0;
    c->frame_started_ms = 0;
}

static void conn_close_cb(uv_handle_t *h)
{
    conn_t *c = h->data;
    server_t *s = c->srv;

    c->closed = true;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    for (conn_t **p = &s->resume; *p != NULL; p = &(*p)->resume_next) {
        if (*p == c) {
            *p = c->resume_next;
            break;
        }
    }
    if (c->rejected)
        s->nrejected--;
    else
        s->nconns--;
    conn_input_free(c);
    if (c->refs == 0)
        free(c);
    server_maybe_finish(s);
}

void conn_close(conn_t *c, const char *why)
{
    if (c->closing)
        return;
    c->closing = true;
    LOG(LOG_DEBUG, c->name, "closed: %s", why);
    conn_stop_reading(c);
    uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
}

void conn_ref(conn_t *c)
{
    c->refs++;
}

void conn_unref(conn_t *c)
{
    if (--c->refs == 0 && c->closed)
        free(c);
}

/* Close a draining connection once every answer is out. */
static void conn_maybe_close(conn_t *c)
{
    if (c->draining && !c->closing && c->inflight == 0 &&
        conn_queued_out(c) == 0)
        conn_close(c, c->srv->stopping ? "server stopping"
                                        : "peer finished");
}

static void conn_write_cb(uv_write_t *req, int status)
{
    conn_write_t *w = (conn_write_t *)req;
    conn_t *c = req->handle->data;

    free(w);
    if (status < 0 && status != UV_ECANCELED) {
        conn_close(c, uv_strerror(status));
        return;
    }
    if (!c->closing)
        conn_maybe_close(c);
}

/* Frame and queue one message; drops the peer that stopped reading. */
static void conn_write_message(conn_t *c, const Dadc__ServerMessage *msg)
{
    size_t len = dadc__server_message__get_packed_size(msg);
    conn_write_t *w;
    uv_buf_t buf;
    int rc;

    if (c->closing)
        return;
    w = malloc(sizeof(*w) + FRAME_HEADER_BYTES + len);
    if (w == NULL) {
        LOG(LOG_WARNING, c->name, "no memory for a %zu-byte answer", len);
        conn_close(c, "out of memory");
        return;
    }
    w->len = FRAME_HEADER_BYTES + len;
    frame_header_encode(w->data, (uint32_t)len);
    dadc__server_message__pack(msg, w->data + FRAME_HEADER_BYTES);

    buf = uv_buf_init((char *)w->data, (unsigned)w->len);
    rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, conn_write_cb);
    if (rc != 0) {
        free(w);
        conn_close(c, uv_strerror(rc));
        return;
    }
    if (conn_queued_out(c) > c->srv->cfg.max_pending_out) {
        LOG(LOG_DEBUG, c->name, "dropped: %zu bytes of answers unread "
            "(limit %llu)", conn_queued_out(c),
            (unsigned long long)c->srv->cfg.max_pending_out);
        conn_close(c, "peer stopped reading");
    }
}

/* Put c on the server's list of connections to resume. */
static void conn_queue_resume(conn_t *c)
{
    if (c->resume_queued || c->closing)
        return;
    c->resume_queued = true;
    c->resume_next = c->srv->resume;
    c->srv->resume = c;
    server_wake(c->srv);
}

void conn_allow_reading(conn_t *c)
{
    if (!c->reading && !c->closing && !c->lingering && !c->draining &&
        !conn_paused(c))
        conn_queue_resume(c);
}

void conn_send_response(conn_t *c, Dadc__Response *resp, bool counted)
{
    Dadc__ServerMessage msg = DADC__SERVER_MESSAGE__INIT;

    msg.kind_case = DADC__SERVER_MESSAGE__KIND_RESPONSE;
    msg.response = resp;
    if (!c->lingering)
        conn_write_message(c, &msg);
    if (!counted)
        return;

    /* An answer is activity too: the idle clock starts after the last
     * one, not at the last byte the client sent. */
    c->inflight--;
    c->last_active_ms = uv_now(c->srv->loop);
    if (c->draining)
        conn_maybe_close(c);
    else
        conn_allow_reading(c);
}

void conn_send_event(conn_t *c, Dadc__Event *ev)
{
    Dadc__ServerMessage msg = DADC__SERVER_MESSAGE__INIT;

    if (c->lingering || c->closing)
        return;
    msg.kind_case = DADC__SERVER_MESSAGE__KIND_EVENT;
    msg.event = ev;
    conn_write_message(c, &msg);
}

static void conn_shutdown_cb(uv_shutdown_t *req, int status)
{
    (void)req;
    (void)status;
    /* Nothing to do: the linger ends at the peer's EOF or the deadline. */
}

void conn_fail(conn_t *c, Dadc__StatusCode code, const char *fmt, ...)
{
    Dadc__Response resp = DADC__RESPONSE__INIT;
    Dadc__Status status = DADC__STATUS__INIT;
    char msg[256];
    va_list ap;

    if (c->closing || c->lingering)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    LOG(LOG_DEBUG, c->name, "protocol error: %s", msg);

    status.code = code;
    status.message = msg;
    resp.status = &status;
    conn_send_response(c, &resp, false);
    if (c->closing)
        return;

    /* Half-close and discard input for a while, so the answer reaches a
     * peer that is still sending instead of being lost to a reset. */
    c->lingering = true;
    c->linger_until_ms = uv_now(c->srv->loop) + SERVER_LINGER_MS;
    conn_input_free(c);
    if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp,
                    conn_shutdown_cb) != 0) {
        conn_close(c, "shutdown failed");
        return;
    }
    conn_start_reading(c);
}

/* Decode one frame's body and dispatch it. Returns 0, or -1 when the
 * connection failed. */
static int conn_frame(conn_t *c, const uint8_t *body, uint32_t len)
{
    Dadc__Request *req = dadc__request__unpack(NULL, len, body);
    char sample[96];

    if (req == NULL) {
        LOG(LOG_DEBUG, c->name, "undecodable frame: %s",
            log_sample(body, len, sample, sizeof(sample)));
        conn_fail(c, DADC__STATUS_CODE__INVALID_ARGUMENT,
                  "malformed frame: %u bytes that are not a dadc.Request",
                  len);
        return -1;
    }
    if (req->call_case == DADC__REQUEST__CALL__NOT_SET &&
        req->base.n_unknown_fields == 0) {
        dadc__request__free_unpacked(req, NULL);
        conn_fail(c, DADC__STATUS_CODE__INVALID_ARGUMENT,
                  "malformed frame: a Request naming no call");
        return -1;
    }
    c->inflight++;
    handlers_dispatch(c->srv, c, req);
    return 0;
}

/* Decode and dispatch the whole frames at the start of data, as far as
 * the in-flight limit allows. Returns the bytes used, or -1 when the
 * connection failed. */
static ssize_t conn_process(conn_t *c, const uint8_t *data, size_t len)
{
    size_t off = 0;

    while (len - off >= FRAME_HEADER_BYTES && !conn_paused(c) &&
           !c->closing && !c->lingering && !c->draining) {
        uint32_t flen = frame_header_decode(data + off);
        uint32_t limit = conn_frame_limit(c);

        if (flen > limit) {
            conn_fail(c, DADC__STATUS_CODE__RESOURCE_EXHAUSTED,
                      "frame of %u bytes is over the limit of %u bytes%s",
                      flen, limit, c->hello_done ? "" : " before Hello");
            return -1;
        }
        if (len - off - FRAME_HEADER_BYTES < flen)
            break;
        if (conn_frame(c, data + off + FRAME_HEADER_BYTES, flen) != 0)
            return -1;
        off += FRAME_HEADER_BYTES + flen;
    }
    if (c->closing || c->lingering)
        return -1;
    return (ssize_t)off;
}

/* Room for n bytes in c->in. Returns 0 or -1 (no memory). */
static int conn_input_reserve(conn_t *c, size_t n)
{
    uint8_t *p;

    if (n <= c->in_cap)
        return 0;
    p = realloc(c->in, n);
    if (p == NULL)
        return -1;
    c->in = p;
    c->in_cap = n;
    return 0;
}

/* After processing: keep the deadline of a partial frame, pause or not. */
static void conn_after_input(conn_t *c, bool progressed)
{
    uint64_t now = uv_now(c->srv->loop);

    if (c->in_len == 0 || conn_paused(c) || c->draining)
        c->frame_started_ms = 0;
    else if (c->frame_started_ms == 0 || progressed)
        c->frame_started_ms = now;
    if (c->in_len == 0 && c->in_cap > SERVER_READ_CHUNK)
        conn_input_free(c);
    if (conn_paused(c))
        conn_stop_reading(c);
}

/* Bytes that arrived in the shared scratch buffer. */
static void conn_read_scratch(conn_t *c, size_t n)
{
    const uint8_t *data = c->srv->scratch;
    ssize_t used = conn_process(c, data, n);
    size_t rest;

    if (used < 0)
        return;
    rest = n - (size_t)used;
    if (rest > 0) {
        if (conn_input_reserve(c, rest) != 0) {
            conn_close(c, "out of memory");
            return;
        }
        memcpy(c->in, data + used, rest);
        c->in_len = rest;
    }
    conn_after_input(c, used > 0);
}

/* Bytes that arrived in (or wait in) the connection's own buffer. */
static void conn_read_buffered(conn_t *c)
{
    ssize_t used = conn_process(c, c->in, c->in_len);

    if (used < 0)
        return;
    if (used > 0) {
        memmove(c->in, c->in + used, c->in_len - (size_t)used);
        c->in_len -= (size_t)used;
    }
    conn_after_input(c, used > 0);
}

static void conn_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn_t *c = h->data;
    size_t want = FRAME_HEADER_BYTES;

    (void)suggested;
    if (c->in_len == 0 || c->lingering) {
        *buf = uv_buf_init((char *)c->srv->scratch, SERVER_READ_CHUNK);
        return;
    }

    /* A partial frame is buffered: read the rest of its header, then the
     * rest of its body, whose size passed the limit check already. The
     * buffer grows with what has arrived (doubling), not with what the
     * header announces, so idle peers announcing big frames cost little
     * memory. */
    if (c->in_len >= FRAME_HEADER_BYTES) {
        uint32_t flen = frame_header_decode(c->in);
        uint32_t limit = conn_frame_limit(c);
        size_t step = c->in_len * 2 > SERVER_READ_CHUNK ? c->in_len * 2
                                                        : SERVER_READ_CHUNK;
        want = FRAME_HEADER_BYTES + (size_t)(flen < limit ? flen : limit);
        if (want > step)
            want = step;
    }
    if (want <= c->in_len)
        want = c->in_len + SERVER_READ_CHUNK;
    if (conn_input_reserve(c, want) != 0) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    *buf = uv_buf_init((char *)c->in + c->in_len,
                       (unsigned)(want - c->in_len));
}

/* The peer closed its side or the read failed. */
static void conn_read_end(conn_t *c, ssize_t nread)
{
    if (nread != UV_EOF) {
        conn_close(c, uv_strerror((int)nread));
        return;
    }
    if (c->lingering) {
        conn_close(c, "peer closed after the error answer");
        return;
    }
    if (c->in_len > 0 && !conn_paused(c))
        LOG(LOG_DEBUG, c->name, "peer closed mid-frame (%zu bytes of a "
            "frame received)", c->in_len);

    /* A peer may half-close after its last request: answer, then close. */
    c->draining = true;
    conn_stop_reading(c);
    conn_input_free(c);
    conn_maybe_close(c);
}

static void conn_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
    conn_t *c = st->data;

    if (nread == 0)
        return;
    if (nread < 0) {
        conn_read_end(c, nread);
        return;
    }
    c->last_active_ms = uv_now(c->srv->loop);
    if (c->lingering)
        return;
    if (b->base == (char *)c->srv->scratch) {
        conn_read_scratch(c, (size_t)nread);
        return;
    }
    c->in_len += (size_t)nread;
    conn_read_buffered(c);
}

void conn_resume(conn_t *c)
{
    c->resume_queued = false;
    if (c->closing || c->lingering || c->draining)
        return;
    if (c->in_len > 0)
        conn_read_buffered(c);
    if (!c->closing && !c->lingering && !conn_paused(c))
        conn_start_reading(c);
}

void conn_sweep(conn_t *c, uint64_t now)
{
    const server_config_t *cfg = &c->srv->cfg;

    if (c->closing)
        return;
    if (c->lingering) {
        if (now >= c->linger_until_ms)
            conn_close(c, "linger over");
        return;
    }
    if (c->srv->stopping &&
        now - c->srv->stop_started_ms >= SERVER_STOP_GRACE_MS) {
        conn_close(c, "answers not taken before shutdown");
        return;
    }
    if (c->frame_started_ms != 0 &&
        now - c->frame_started_ms >= cfg->frame_timeout_ms) {
        conn_fail(c, DADC__STATUS_CODE__DEADLINE_EXCEEDED,
                  "frame not completed within %.1f s (%zu bytes received)",
                  (double)cfg->frame_timeout_ms / 1000.0, c->in_len);
        return;
    }
    /* Requests the server has not read or parsed yet (it paused reading
     * under load) are not the client's silence. */
    if (!c->subscribed && c->inflight == 0 && !c->draining &&
        c->in_len == 0 && !conn_paused(c) &&
        now - c->last_active_ms >= cfg->idle_timeout_ms)
        conn_close(c, "idle");
}

void conn_stop(conn_t *c)
{
    if (c->closing)
        return;
    c->draining = true;
    conn_stop_reading(c);
    if (c->lingering)
        return;
    conn_maybe_close(c);
}

/* "conn 7 127.0.0.1:40112" */
static void conn_set_name(conn_t *c)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    char host[64] = "?";
    int port = 0;

    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET6) {
            const struct sockaddr_in6 *a = (const void *)&ss;
            uv_ip6_name(a, host, sizeof(host));
            port = ntohs(a->sin6_port);
        } else {
            const struct sockaddr_in *a = (const void *)&ss;
            uv_ip4_name(a, host, sizeof(host));
            port = ntohs(a->sin_port);
        }
    }
    snprintf(c->name, sizeof(c->name), "conn %llu %s:%d",
             (unsigned long long)c->id, host, port);
}

static void conn_free_cb(uv_handle_t *h)
{
    free(h->data);
}

/*
 * "server full" for a connection past the lingering ones: the small
 * answer goes straight to the socket with one non-blocking write (it
 * fits any send buffer), input already sent is discarded so the close
 * is a FIN rather than a reset, and the connection closes at once. No
 * queue, timer or buffer stays behind, however many arrive.
 */
static void conn_reject_now(conn_t *c)
{
    Dadc__ServerMessage msg = DADC__SERVER_MESSAGE__INIT;
    Dadc__Response resp = DADC__RESPONSE__INIT;
    Dadc__Status status = DADC__STATUS__INIT;
    uint8_t buf[256];
    char text[64];
    uv_os_fd_t fd;
    size_t len;

    snprintf(text, sizeof(text), "server full: %u connections",
             c->srv->cfg.max_connections);
    status.code = DADC__STATUS_CODE__UNAVAILABLE;
    status.message = text;
    resp.status = &status;
    msg.kind_case = DADC__SERVER_MESSAGE__KIND_RESPONSE;
    msg.response = &resp;
    len = dadc__server_message__get_packed_size(&msg);
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0 &&
        FRAME_HEADER_BYTES + len <= sizeof(buf)) {
        frame_header_encode(buf, (uint32_t)len);
        dadc__server_message__pack(&msg, buf + FRAME_HEADER_BYTES);
        if (write(fd, buf, FRAME_HEADER_BYTES + len) < 0)
            LOG(LOG_DEBUG, c->name, "server full answer not sent: %s",
                strerror(errno));
        while (read(fd, c->srv->scratch, SERVER_READ_CHUNK) > 0)
            continue;
        shutdown(fd, SHUT_WR);
    }
    conn_close(c, "server full");
}

void conn_accept(server_t *s)
{
    conn_t *c = calloc(1, sizeof(*c));

    if (c == NULL) {
        LOG(LOG_WARNING, "server", "no memory for a new connection");
        return;
    }
    c->srv = s;
    c->id = ++s->next_conn_id;
    uv_tcp_init(s->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept((uv_stream_t *)&s->listener, (uv_stream_t *)&c->tcp)) {
        uv_close((uv_handle_t *)&c->tcp, conn_free_cb);
        return;
    }

    c->next = s->conns;
    if (s->conns != NULL)
        s->conns->prev = c;
    s->conns = c;
    conn_set_name(c);
    uv_tcp_nodelay(&c->tcp, 1);
    c->last_active_ms = uv_now(s->loop);

    if (s->nconns >= s->cfg.max_connections) {
        c->rejected = true;
        s->nrejected++;
        if (s->nrejected > SERVER_MAX_REJECTED) {
            conn_reject_now(c);
            return;
        }
        conn_fail(c, DADC__STATUS_CODE__UNAVAILABLE,
                  "server full: %u connections", s->cfg.max_connections);
        return;
    }
    s->nconns++;
    LOG(LOG_DEBUG, c->name, "connected (%u connections)", s->nconns);
    conn_start_reading(c);
}
