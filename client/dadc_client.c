/*
 * The DADC client library: framing, request ids, a queue of arrived
 * messages, and the pipelined batch calls. See dadc_client.h.
 *
 * The socket is always non-blocking. Blocking calls are loops around
 * poll() with a deadline: each turn writes what it can of the send
 * buffer, reads what has arrived into the receive buffer, cuts complete
 * frames out of it and queues the decoded messages, then checks whether
 * what the caller waits for is in the queue. Reading while writing means
 * a large request never deadlocks against answers the server is sending
 * back at the same time.
 */
#include "dadc_client.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "dadc_client_internal.h"
#include "frame.h"

#define RX_CHUNK (64 * 1024)
#define MAX_WINDOW 1024
#define MAX_BATCH_IMAGES 65536
#define DEFAULT_WINDOW 32
#define DEFAULT_BATCH_IMAGES 1024

typedef struct msg_node {
    Dadc__ServerMessage *msg;
    struct msg_node *next;
} msg_node_t;

struct dadc_client {
    int fd;
    int cancel_pipe[2];
    volatile sig_atomic_t canceled;
    char address[272];
    int timeout_ms;
    unsigned window;
    unsigned batch_images;
    uint64_t next_id;

    /* ids sent whose responses have not arrived */
    uint64_t *outstanding;
    size_t n_outstanding;
    size_t cap_outstanding;

    /* bytes to send: tx[tx_off .. tx_len) */
    uint8_t *tx;
    size_t tx_off;
    size_t tx_len;
    size_t tx_cap;

    /* bytes received and not yet cut into frames */
    uint8_t *rx;
    size_t rx_len;
    size_t rx_cap;

    /* decoded messages in arrival order */
    msg_node_t *head;
    msg_node_t *tail;
    size_t queued;

    bool hello_done;
    dadc_server_info_t info;

    char last_error[DADC_ERROR_MSG_MAX + 128];
    int last_status;
    char status_msg[DADC_ERROR_MSG_MAX];
};

/* What a blocking loop waits for. */
typedef enum wait_kind {
    WAIT_SENT,       /* the send buffer is empty */
    WAIT_ANY,        /* any queued message */
    WAIT_RESPONSE,   /* the response with a given id (or id 0) */
    WAIT_EVENT,      /* a queued event */
} wait_kind_t;

static const char *const status_names[] = {
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
    "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
};

const char *dadc_status_name(int code)
{
    if (code >= 0 &&
        code < (int)(sizeof(status_names) / sizeof(status_names[0])))
        return status_names[code];
    return "UNKNOWN_STATUS";
}

/* ------------------------------------------------------------------ */
/* Text for terminals                                                  */

/*
 * Length of the valid UTF-8 sequence of two to four bytes at p (no
 * overlong forms, surrogates or values over U+10FFFF), its value in
 * *cp; 0 when p does not start one.
 */
static size_t utf8_sequence(const unsigned char *p, uint32_t *cp)
{
    size_t n, i;
    uint32_t v;

    if (p[0] >= 0xc2 && p[0] <= 0xdf) {
        n = 2;
        v = p[0] & 0x1f;
    } else if (p[0] >= 0xe0 && p[0] <= 0xef) {
        n = 3;
        v = p[0] & 0x0f;
    } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
        n = 4;
        v = p[0] & 0x07;
    } else {
        return 0;
    }
    for (i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        v = v << 6 | (p[i] & 0x3f);
    }
    if ((n == 3 && v < 0x800) || (n == 4 && v < 0x10000) ||
        (v >= 0xd800 && v <= 0xdfff) || v > 0x10ffff)
        return 0;
    *cp = v;
    return n;
}

/* Unicode characters that steer a terminal or the text's direction. */
static bool text_unicode_control(uint32_t cp)
{
    return (cp >= 0x80 && cp <= 0x9f) || cp == 0x061c ||
           (cp >= 0x200e && cp <= 0x200f) ||
           (cp >= 0x2028 && cp <= 0x202e) ||
           (cp >= 0x2066 && cp <= 0x2069);
}

char *dadc_text_escape(const char *s)
{
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    size_t len = strlen((const char *)p), o = 0;
    char *out = malloc(4 * len + 1);

    if (out == NULL)
        return NULL;
    while (*p != '\0') {
        uint32_t cp = 0;
        size_t n = *p >= 0x80 ? utf8_sequence(p, &cp) : 0;

        if (n > 0 && !text_unicode_control(cp)) {
            memcpy(out + o, p, n);
            o += n;
            p += n;
        } else if (*p == '\\') {
            memcpy(out + o, "\\\\", 2);
            o += 2;
            p++;
        } else if (*p >= 0x20 && *p < 0x7f) {
            out[o++] = (char)*p++;
        } else {
            o += (size_t)snprintf(out + o, 5, "\\x%02x", *p++);
        }
    }
    out[o] = '\0';
    return out;
}

/* ------------------------------------------------------------------ */
/* Errors                                                              */

int dadc_client_fail(dadc_client_t *c, int code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(c->last_error, sizeof(c->last_error), fmt, ap);
    va_end(ap);
    c->last_status = 0;
    c->status_msg[0] = '\0';
    return code;
}

#define client_fail dadc_client_fail

/* Record a non-OK status from the server; returns DADC_ESTATUS. */
static int client_status_fail(dadc_client_t *c, const Dadc__Status *st)
{
    int code = st != NULL ? (int)st->code : DADC__STATUS_CODE__UNKNOWN;
    const char *msg = st != NULL && st->message != NULL ? st->message : "";

    snprintf(c->status_msg, sizeof(c->status_msg), "%s", msg);
    if (msg[0] != '\0')
        snprintf(c->last_error, sizeof(c->last_error), "%s (%s)", msg,
                 dadc_status_name(code));
    else
        snprintf(c->last_error, sizeof(c->last_error),
                 "server answered %s", dadc_status_name(code));
    c->last_status = code == 0 ? DADC__STATUS_CODE__UNKNOWN : code;
    return DADC_ESTATUS;
}

const char *dadc_client_last_error(const dadc_client_t *c)
{
    return c->last_error;
}

int dadc_client_last_status(const dadc_client_t *c)
{
    return c->last_status;
}

const char *dadc_client_last_status_message(const dadc_client_t *c)
{
    return c->status_msg;
}

/* ------------------------------------------------------------------ */
/* Time                                                                */

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The deadline for timeout_ms (< 0: none, returned as -1). */
static int64_t deadline_after(int timeout_ms)
{
    return timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
}

/* Milliseconds left until deadline for poll(): -1 none, 0 passed. */
static int deadline_left(int64_t deadline)
{
    int64_t left;

    if (deadline < 0)
        return -1;
    left = deadline - now_ms();
    if (left <= 0)
        return 0;
    return left > 1000000 ? 1000000 : (int)left;
}

/* ------------------------------------------------------------------ */
/* Addresses and connecting                                            */

const char *dadc_client_default_server(void)
{
    const char *env = getenv("DADC_SERVER");

    if (env != NULL && env[0] != '\0')
        return env;
    return DADC_CLIENT_DEFAULT_SERVER;
}

static int parse_port(const char *s, uint16_t *port)
{
    char *end;
    long v;

    if (s[0] < '0' || s[0] > '9')
        return -1;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < 1 || v > 65535)
        return -1;
    *port = (uint16_t)v;
    return 0;
}

int dadc_client_parse_address(const char *address, char *host,
                              size_t host_size, uint16_t *port,
                              dadc_error_t *err)
{
    const char *colon, *hs = address;
    size_t hlen;

    if (address == NULL || address[0] == '\0')
        return dadc_error_set(err, DADC_ERANGE, "empty server address");
    if (address[0] == '[') {
        const char *close = strchr(address, ']');

        if (close == NULL || close[1] != ':')
            goto bad;
        hs = address + 1;
        hlen = (size_t)(close - hs);
        colon = close + 1;
    } else {
        colon = strrchr(address, ':');
        if (colon == NULL)
            goto bad;
        hlen = (size_t)(colon - address);
    }
    if (hlen == 0 || hlen >= host_size || parse_port(colon + 1, port) != 0)
        goto bad;
    memcpy(host, hs, hlen);
    host[hlen] = '\0';
    return 0;

bad:
    return dadc_error_set(err, DADC_ERANGE,
                          "bad server address '%s' (want HOST:PORT)",
                          address);
}

/* Wait for a non-blocking connect on fd to finish. Returns 0 or -errno. */
static int connect_wait(int fd, int64_t deadline)
{
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int soerr = 0, r;
    socklen_t len = sizeof(soerr);

    do {
        r = poll(&p, 1, deadline_left(deadline));
    } while (r < 0 && errno == EINTR);
    if (r < 0)
        return -errno;
    if (r == 0)
        return DADC_ETIMEDOUT;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
        return -errno;
    return soerr == 0 ? 0 : -soerr;
}

/* Connect to one resolved address. Returns the fd or a negative code. */
static int connect_one(const struct addrinfo *ai, int64_t deadline)
{
    int one = 1, fd, rc;

    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK |
                SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0)
        return -errno;
    rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
    if (rc < 0 && errno != EINPROGRESS)
        rc = -errno;
    else if (rc < 0)
        rc = connect_wait(fd, deadline);
    if (rc != 0) {
        close(fd);
        return rc;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

/* Resolve host:port and connect to the first address that answers. */
static int connect_address(const char *host, uint16_t port, int timeout_ms,
                           dadc_error_t *err)
{
    struct addrinfo hints = {0}, *res = NULL, *ai;
    char portstr[8];
    int64_t deadline = deadline_after(timeout_ms);
    int rc, fd = DADC_ECLOSED;

    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(portstr, sizeof(portstr), "%u", (unsigned)port);
    rc = getaddrinfo(host, portstr, &hints, &res);
    if (rc != 0)
        return dadc_error_set(err, -EHOSTUNREACH, "%s:%u: %s", host,
                              (unsigned)port, gai_strerror(rc));
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        fd = connect_one(ai, deadline);
        if (fd >= 0 || fd == DADC_ETIMEDOUT)
            break;
    }
    freeaddrinfo(res);
    if (fd < 0)
        return dadc_error_set(err, fd, "cannot connect to %s:%u: %s", host,
                              (unsigned)port, dadc_strerror(fd));
    return fd;
}

static dadc_client_t *client_new(void)
{
    dadc_client_t *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NULL;
    c->fd = -1;
    c->cancel_pipe[0] = c->cancel_pipe[1] = -1;
    if (pipe2(c->cancel_pipe, O_NONBLOCK | O_CLOEXEC) < 0) {
        free(c);
        return NULL;
    }
    c->timeout_ms = DADC_CLIENT_DEFAULT_TIMEOUT_MS;
    c->window = DEFAULT_WINDOW;
    c->batch_images = DEFAULT_BATCH_IMAGES;
    c->next_id = 1;
    c->info.max_frame_bytes = FRAME_PRE_HELLO_MAX;
    c->info.max_inflight = DEFAULT_WINDOW;
    return c;
}

int dadc_client_connect(dadc_client_t **out, const char *address,
                        int timeout_ms, dadc_error_t *err)
{
    char host[256];
    uint16_t port;
    dadc_client_t *c;
    int rc;

    *out = NULL;
    if (address == NULL)
        address = dadc_client_default_server();
    rc = dadc_client_parse_address(address, host, sizeof(host), &port,
                                   err);
    if (rc != 0)
        return rc;
    c = client_new();
    if (c == NULL)
        return dadc_error_set(err, -ENOMEM, "out of memory");
    snprintf(c->address, sizeof(c->address), "%s", address);
    if (timeout_ms <= 0)
        timeout_ms = DADC_CLIENT_DEFAULT_TIMEOUT_MS;
    rc = connect_address(host, port, timeout_ms, err);
    if (rc < 0) {
        dadc_client_close(c);
        return rc;
    }
    c->fd = rc;
    *out = c;
    return 0;
}

static void queue_clear(dadc_client_t *c)
{
    msg_node_t *n = c->head, *next;

    for (; n != NULL; n = next) {
        next = n->next;
        dadc__server_message__free_unpacked(n->msg, NULL);
        free(n);
    }
    c->head = c->tail = NULL;
    c->queued = 0;
}

/* Close the socket (the client object stays, answering ECLOSED). */
static void client_shutdown(dadc_client_t *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->tx_off = c->tx_len = 0;
    c->rx_len = 0;
    c->n_outstanding = 0;
}

void dadc_client_close(dadc_client_t *c)
{
    if (c == NULL)
        return;
    client_shutdown(c);
    queue_clear(c);
    if (c->cancel_pipe[0] >= 0)
        close(c->cancel_pipe[0]);
    if (c->cancel_pipe[1] >= 0)
        close(c->cancel_pipe[1]);
    free(c->outstanding);
    free(c->tx);
    free(c->rx);
    free(c);
}

void dadc_client_set_timeout(dadc_client_t *c, int timeout_ms)
{
    if (timeout_ms > 0)
        c->timeout_ms = timeout_ms;
}

void dadc_client_set_window(dadc_client_t *c, unsigned window)
{
    if (window >= 1 && window <= MAX_WINDOW)
        c->window = window;
}

void dadc_client_set_batch_images(dadc_client_t *c, unsigned images)
{
    if (images >= 1 && images <= MAX_BATCH_IMAGES)
        c->batch_images = images;
}

void dadc_client_cancel(dadc_client_t *c)
{
    c->canceled = 1;
    if (write(c->cancel_pipe[1], "x", 1) < 0) {
        /* the pipe is full: a wake-up is already pending */
    }
}

const char *dadc_client_address(const dadc_client_t *c)
{
    return c->address;
}

bool dadc_client_is_open(const dadc_client_t *c)
{
    return c->fd >= 0;
}

int dadc_client_fd(const dadc_client_t *c)
{
    return c->fd;
}

short dadc_client_poll_events(const dadc_client_t *c)
{
    return (short)(POLLIN | (c->tx_len > c->tx_off ? POLLOUT : 0));
}

size_t dadc_client_outstanding(const dadc_client_t *c)
{
    return c->n_outstanding;
}

size_t dadc_client_queued(const dadc_client_t *c)
{
    return c->queued;
}

const dadc_server_info_t *dadc_client_server_info(const dadc_client_t *c)
{
    return c->hello_done ? &c->info : NULL;
}

void dadc_client_info_set(dadc_client_t *c, const dadc_server_info_t *info)
{
    c->info = *info;
    c->hello_done = true;
}

unsigned dadc_client_window_get(const dadc_client_t *c)
{
    return c->window;
}

unsigned dadc_client_batch_images_get(const dadc_client_t *c)
{
    return c->batch_images;
}

int dadc_client_timeout_get(const dadc_client_t *c)
{
    return c->timeout_ms;
}

/* ------------------------------------------------------------------ */
/* Outstanding ids                                                     */

static int outstanding_add(dadc_client_t *c, uint64_t id)
{
    if (c->n_outstanding == c->cap_outstanding) {
        size_t cap = c->cap_outstanding ? c->cap_outstanding * 2 : 64;
        uint64_t *p = realloc(c->outstanding, cap * sizeof(*p));

        if (p == NULL)
            return -ENOMEM;
        c->outstanding = p;
        c->cap_outstanding = cap;
    }
    c->outstanding[c->n_outstanding++] = id;
    return 0;
}

/* Remove id; returns whether it was there. */
static bool outstanding_remove(dadc_client_t *c, uint64_t id)
{
    size_t i;

    for (i = 0; i < c->n_outstanding; i++) {
        if (c->outstanding[i] == id) {
            c->outstanding[i] = c->outstanding[--c->n_outstanding];
            return true;
        }
    }
    return false;
}

/* ------------------------------------------------------------------ */
/* The message queue                                                   */

static void queue_push(dadc_client_t *c, msg_node_t *n)
{
    n->next = NULL;
    if (c->tail != NULL)
        c->tail->next = n;
    else
        c->head = n;
    c->tail = n;
    c->queued++;
}

/* Unlink n, whose predecessor is prev (NULL for the head). */
static Dadc__ServerMessage *queue_unlink(dadc_client_t *c, msg_node_t *prev,
                                         msg_node_t *n)
{
    Dadc__ServerMessage *m = n->msg;

    if (prev != NULL)
        prev->next = n->next;
    else
        c->head = n->next;
    if (c->tail == n)
        c->tail = prev;
    c->queued--;
    free(n);
    return m;
}

static bool msg_is_event(const Dadc__ServerMessage *m)
{
    return m->kind_case == DADC__SERVER_MESSAGE__KIND_EVENT;
}

/*
 * The first queued message that matches: an event (want_event), or the
 * response with id (or an id-0 response, which answers every waiter:
 * the server could not attribute a frame and is closing). Unlinked and
 * returned, or NULL.
 */
static Dadc__ServerMessage *queue_take(dadc_client_t *c, bool want_event,
                                       uint64_t id)
{
    msg_node_t *prev = NULL, *n;

    for (n = c->head; n != NULL; prev = n, n = n->next) {
        const Dadc__ServerMessage *m = n->msg;

        if (want_event ? msg_is_event(m)
                       : !msg_is_event(m) &&
                             (m->response->id == id ||
                              m->response->id == 0))
            return queue_unlink(c, prev, n);
    }
    return NULL;
}

static bool queue_has_event(const dadc_client_t *c)
{
    const msg_node_t *n;

    for (n = c->head; n != NULL; n = n->next)
        if (msg_is_event(n->msg))
            return true;
    return false;
}

static bool queue_has_response(const dadc_client_t *c, uint64_t id)
{
    const msg_node_t *n;

    for (n = c->head; n != NULL; n = n->next)
        if (!msg_is_event(n->msg) &&
            (n->msg->response->id == id || n->msg->response->id == 0))
            return true;
    return false;
}

/* Drop the oldest queued event (the queue is full of them). */
static void queue_drop_event(dadc_client_t *c)
{
    msg_node_t *prev = NULL, *n;

    for (n = c->head; n != NULL; prev = n, n = n->next) {
        if (msg_is_event(n->msg)) {
            dadc__server_message__free_unpacked(queue_unlink(c, prev, n),
                                                NULL);
            return;
        }
    }
}

/* ------------------------------------------------------------------ */
/* Incoming messages                                                   */

/* Keep the server facts we cache up to date from what passes by. */
static void info_note_response(dadc_client_t *c, const Dadc__Response *r)
{
    if (r->status != NULL && r->status->code != DADC__STATUS_CODE__OK)
        return;
    if (r->result_case == DADC__RESPONSE__RESULT_PREDICT &&
        r->predict != NULL)
        c->info.current_model_version = r->predict->model_version;
    else if (r->result_case == DADC__RESPONSE__RESULT_FLAG &&
             r->flag != NULL)
        c->info.pending_fooled = r->flag->pending_fooled;
    else if (r->result_case == DADC__RESPONSE__RESULT_ROLLBACK &&
             r->rollback != NULL)
        c->info.current_model_version = r->rollback->current_version;
}

static void info_note_event(dadc_client_t *c, const Dadc__Event *e)
{
    if (e->kind_case == DADC__EVENT__KIND_MODEL_PROMOTED &&
        e->model_promoted != NULL) {
        c->info.current_model_version = e->model_promoted->version;
        c->info.pending_fooled = 0;
    } else if (e->kind_case == DADC__EVENT__KIND_MODEL_ROLLED_BACK &&
               e->model_rolled_back != NULL) {
        c->info.current_model_version = e->model_rolled_back->version;
    } else if (e->kind_case == DADC__EVENT__KIND_ROUND_STARTED) {
        c->info.pending_fooled = 0;
    }
}

/*
 * Decide what to do with a decoded message: queue it, or drop a response
 * nobody waits for. Takes ownership of m. Returns 0 or a negative code.
 */
static int client_route(dadc_client_t *c, Dadc__ServerMessage *m)
{
    msg_node_t *n;

    if (m->kind_case == DADC__SERVER_MESSAGE__KIND_RESPONSE &&
        m->response != NULL) {
        uint64_t id = m->response->id;

        if (id != 0 && !outstanding_remove(c, id)) {
            dadc__server_message__free_unpacked(m, NULL);
            return 0;
        }
        info_note_response(c, m->response);
    } else if (m->kind_case == DADC__SERVER_MESSAGE__KIND_EVENT &&
               m->event != NULL) {
        info_note_event(c, m->event);
        if (c->queued >= DADC_CLIENT_MAX_QUEUED)
            queue_drop_event(c);
    } else {
        dadc__server_message__free_unpacked(m, NULL);
        return client_fail(c, DADC_EPROTO,
                           "%s: server sent a message of no known kind",
                           c->address);
    }
    n = malloc(sizeof(*n));
    if (n == NULL) {
        dadc__server_message__free_unpacked(m, NULL);
        return client_fail(c, -ENOMEM, "out of memory");
    }
    n->msg = m;
    queue_push(c, n);
    return 0;
}

/* Cut the complete frames out of the receive buffer. */
static int client_parse_frames(dadc_client_t *c)
{
    size_t off = 0;
    int rc = 0;

    while (rc == 0 && c->rx_len - off >= FRAME_HEADER_BYTES) {
        uint32_t len = frame_header_decode(c->rx + off);
        Dadc__ServerMessage *m;

        if (len > DADC_CLIENT_MAX_RECV_FRAME) {
            rc = client_fail(c, DADC_EPROTO,
                             "%s: server frame of %u bytes is over the "
                             "limit of %u", c->address, len,
                             DADC_CLIENT_MAX_RECV_FRAME);
            break;
        }
        if (c->rx_len - off - FRAME_HEADER_BYTES < len)
            break;
        m = dadc__server_message__unpack(NULL, len,
                                         c->rx + off + FRAME_HEADER_BYTES);
        if (m == NULL) {
            rc = client_fail(c, DADC_EPROTO, "%s: malformed server frame "
                             "(%u bytes)", c->address, len);
            break;
        }
        off += FRAME_HEADER_BYTES + (size_t)len;
        rc = client_route(c, m);
    }
    if (off > 0) {
        memmove(c->rx, c->rx + off, c->rx_len - off);
        c->rx_len -= off;
    }
    return rc;
}

/* Read what the socket has. Returns 0 or a negative code. */
static int client_read(dadc_client_t *c)
{
    for (;;) {
        ssize_t n;

        if (c->rx_cap - c->rx_len < RX_CHUNK) {
            size_t cap = c->rx_cap ? c->rx_cap * 2 : 2 * RX_CHUNK;
            uint8_t *p = realloc(c->rx, cap);

            if (p == NULL)
                return client_fail(c, -ENOMEM, "out of memory");
            c->rx = p;
            c->rx_cap = cap;
        }
        n = recv(c->fd, c->rx + c->rx_len, c->rx_cap - c->rx_len, 0);
        if (n > 0) {
            int rc;

            c->rx_len += (size_t)n;
            rc = client_parse_frames(c);
            if (rc != 0 || (size_t)n < RX_CHUNK)
                return rc;
            continue;
        }
        if (n == 0)
            return client_fail(c, DADC_ECLOSED, "%s: server closed the "
                               "connection", c->address);
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        return client_fail(c, DADC_ECLOSED, "%s: %s", c->address,
                           strerror(errno));
    }
}

/* Write what the socket takes of the send buffer. */
static int client_write(dadc_client_t *c)
{
    while (c->tx_off < c->tx_len) {
        ssize_t n = send(c->fd, c->tx + c->tx_off, c->tx_len - c->tx_off,
                         MSG_NOSIGNAL);

        if (n >= 0) {
            c->tx_off += (size_t)n;
            continue;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        return client_fail(c, DADC_ECLOSED, "%s: %s", c->address,
                           strerror(errno));
    }
    c->tx_off = c->tx_len = 0;
    return 0;
}

int dadc_client_process(dadc_client_t *c, short revents)
{
    int rc = 0;

    if (c->fd < 0)
        return DADC_ECLOSED;
    if (revents == 0 || (revents & POLLOUT))
        rc = client_write(c);
    if (rc == 0 && (revents == 0 || (revents & (POLLIN | POLLHUP |
                                                POLLERR))))
        rc = client_read(c);
    if (rc == DADC_ECLOSED || rc == DADC_EPROTO)
        client_shutdown(c);
    return rc;
}

/* ------------------------------------------------------------------ */
/* The blocking loop                                                   */

static bool wait_done(const dadc_client_t *c, wait_kind_t kind,
                      uint64_t id)
{
    switch (kind) {
    case WAIT_SENT:
        return c->tx_len == c->tx_off;
    case WAIT_ANY:
        return c->head != NULL;
    case WAIT_RESPONSE:
        return queue_has_response(c, id);
    case WAIT_EVENT:
        return queue_has_event(c);
    }
    return true;
}

/* Empty the cancel pipe after a wake-up. */
static void cancel_drain(dadc_client_t *c)
{
    char buf[16];

    while (read(c->cancel_pipe[0], buf, sizeof(buf)) > 0) {
    }
}

/*
 * Do I/O until what kind names is there or the deadline passes. Already
 * queued messages count even when the connection has since closed.
 */
static int client_wait_for(dadc_client_t *c, wait_kind_t kind, uint64_t id,
                           int64_t deadline)
{
    for (;;) {
        struct pollfd p[2];
        int r, rc;

        if (c->canceled)
            return client_fail(c, DADC_ECANCELED, "cancelled");
        if (wait_done(c, kind, id))
            return 0;
        if (c->fd < 0)
            return client_fail(c, DADC_ECLOSED, "%s: connection closed",
                               c->address);
        p[0] = (struct pollfd){c->fd, dadc_client_poll_events(c), 0};
        p[1] = (struct pollfd){c->cancel_pipe[0], POLLIN, 0};
        r = poll(p, 2, deadline_left(deadline));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return client_fail(c, -errno, "poll: %s", strerror(errno));
        if (p[1].revents)
            cancel_drain(c);
        if (r == 0 && !wait_done(c, kind, id))
            return client_fail(c, DADC_ETIMEDOUT, "%s: timed out waiting "
                               "for the server", c->address);
        if (p[0].revents) {
            rc = dadc_client_process(c, p[0].revents);
            if (rc != 0 && !wait_done(c, kind, id))
                return rc;
        }
    }
}

/* ------------------------------------------------------------------ */
/* Sending                                                             */

static int tx_reserve(dadc_client_t *c, size_t need)
{
    size_t cap;
    uint8_t *p;

    if (c->tx_off > 0 && c->tx_off == c->tx_len)
        c->tx_off = c->tx_len = 0;
    if (c->tx_cap - c->tx_len >= need)
        return 0;
    if (c->tx_off > 0) {
        memmove(c->tx, c->tx + c->tx_off, c->tx_len - c->tx_off);
        c->tx_len -= c->tx_off;
        c->tx_off = 0;
        if (c->tx_cap - c->tx_len >= need)
            return 0;
    }
    cap = c->tx_cap ? c->tx_cap : 4096;
    while (cap - c->tx_len < need)
        cap *= 2;
    p = realloc(c->tx, cap);
    if (p == NULL)
        return -ENOMEM;
    c->tx = p;
    c->tx_cap = cap;
    return 0;
}

/* Encode req with a fresh id into the send buffer. */
static int client_enqueue(dadc_client_t *c, Dadc__Request *req,
                          uint64_t *id)
{
    size_t len;
    uint32_t limit = c->info.max_frame_bytes;

    if (c->canceled)
        return client_fail(c, DADC_ECANCELED, "cancelled");
    if (c->fd < 0)
        return client_fail(c, DADC_ECLOSED, "%s: connection closed",
                           c->address);
    req->id = c->next_id++;
    len = dadc__request__get_packed_size(req);
    if (limit == 0)
        limit = FRAME_PRE_HELLO_MAX;
    if (len > limit)
        return client_fail(c, DADC_ELIMIT, "request of %zu bytes is over "
                           "the server's frame limit of %u", len, limit);
    if (tx_reserve(c, FRAME_HEADER_BYTES + len) != 0 ||
        outstanding_add(c, req->id) != 0)
        return client_fail(c, -ENOMEM, "out of memory");
    frame_header_encode(c->tx + c->tx_len, (uint32_t)len);
    dadc__request__pack(req, c->tx + c->tx_len + FRAME_HEADER_BYTES);
    c->tx_len += FRAME_HEADER_BYTES + len;
    if (id != NULL)
        *id = req->id;
    return 0;
}

int dadc_client_send_async(dadc_client_t *c, Dadc__Request *req,
                           uint64_t *id)
{
    int rc = client_enqueue(c, req, id);

    if (rc != 0)
        return rc;
    rc = client_write(c);
    if (rc != 0)
        client_shutdown(c);
    return rc;
}

int dadc_client_send(dadc_client_t *c, Dadc__Request *req, uint64_t *id)
{
    int rc = client_enqueue(c, req, id);

    if (rc != 0)
        return rc;
    rc = client_wait_for(c, WAIT_SENT, 0, deadline_after(c->timeout_ms));
    if (rc == DADC_ETIMEDOUT)
        client_shutdown(c);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Receiving                                                           */

int dadc_client_recv(dadc_client_t *c, int timeout_ms,
                     Dadc__ServerMessage **msg)
{
    int rc;

    *msg = NULL;
    if (c->head == NULL && c->fd >= 0 && timeout_ms == 0) {
        rc = dadc_client_process(c, 0);
        if (rc != 0 && c->head == NULL)
            return rc;
    }
    if (timeout_ms == 0 && c->head == NULL)
        return c->fd < 0 ? DADC_ECLOSED : DADC_ETIMEDOUT;
    rc = client_wait_for(c, WAIT_ANY, 0, deadline_after(timeout_ms));
    if (rc != 0)
        return rc;
    *msg = queue_unlink(c, NULL, c->head);
    return 0;
}

/* Detach the response from its envelope and free the envelope. */
static Dadc__Response *msg_take_response(Dadc__ServerMessage *m)
{
    Dadc__Response *r = m->response;

    m->response = NULL;
    m->kind_case = DADC__SERVER_MESSAGE__KIND__NOT_SET;
    dadc__server_message__free_unpacked(m, NULL);
    return r;
}

/* Stop waiting for id: its response is dropped if it comes later. */
static void client_forget(dadc_client_t *c, uint64_t id)
{
    Dadc__ServerMessage *m;

    outstanding_remove(c, id);
    while ((m = queue_take(c, false, id)) != NULL) {
        if (m->response->id == 0) {
            /* an id-0 answer belongs to no one in particular: keep it */
            msg_node_t *n = malloc(sizeof(*n));

            if (n == NULL) {
                dadc__server_message__free_unpacked(m, NULL);
                return;
            }
            n->msg = m;
            n->next = c->head;
            c->head = n;
            if (c->tail == NULL)
                c->tail = n;
            c->queued++;
            return;
        }
        dadc__server_message__free_unpacked(m, NULL);
    }
}

int dadc_client_wait(dadc_client_t *c, uint64_t id, int timeout_ms,
                     Dadc__Response **resp)
{
    Dadc__Response *r;
    int rc;

    *resp = NULL;
    rc = client_wait_for(c, WAIT_RESPONSE, id, deadline_after(timeout_ms));
    if (rc != 0) {
        if (rc == DADC_ETIMEDOUT || rc == DADC_ECANCELED)
            client_forget(c, id);
        return rc;
    }
    r = msg_take_response(queue_take(c, false, id));
    *resp = r;
    if (r->status != NULL && r->status->code != DADC__STATUS_CODE__OK)
        return client_status_fail(c, r->status);
    if (r->id == 0)
        return client_status_fail(c, r->status);
    return 0;
}

int dadc_client_call(dadc_client_t *c, Dadc__Request *req,
                     Dadc__Response **resp)
{
    uint64_t id = 0;
    int rc;

    *resp = NULL;
    rc = dadc_client_send(c, req, &id);
    if (rc != 0)
        return rc;
    rc = dadc_client_wait(c, id, c->timeout_ms, resp);
    if (rc != 0 && *resp != NULL) {
        dadc__response__free_unpacked(*resp, NULL);
        *resp = NULL;
    }
    return rc;
}

int dadc_client_next_event(dadc_client_t *c, int timeout_ms,
                           Dadc__Event **ev)
{
    Dadc__ServerMessage *m;
    int rc;

    *ev = NULL;
    if (timeout_ms == 0 && !queue_has_event(c)) {
        if (c->fd < 0)
            return DADC_ECLOSED;
        rc = dadc_client_process(c, 0);
        if (rc != 0 && !queue_has_event(c))
            return rc;
        if (!queue_has_event(c))
            return DADC_ETIMEDOUT;
    }
    rc = client_wait_for(c, WAIT_EVENT, 0, deadline_after(timeout_ms));
    if (rc != 0)
        return rc;
    m = queue_take(c, true, 0);
    *ev = m->event;
    m->event = NULL;
    m->kind_case = DADC__SERVER_MESSAGE__KIND__NOT_SET;
    dadc__server_message__free_unpacked(m, NULL);
    return 0;
}
