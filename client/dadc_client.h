/*
 * The DADC client library: a connection to dadc-server speaking the wire
 * protocol of proto/dadc.proto over TCP, shared by the `dadc` CLI, the
 * drawing client and the load generator.
 *
 * Threading. A dadc_client_t is thread-compatible, not thread-safe: one
 * thread uses a given client at a time (one client per thread is the
 * usual pattern; a GUI runs its client on its own network thread). The
 * only call another thread may make is dadc_client_cancel(). The library
 * keeps no global state and prints nothing.
 *
 * Two ways to drive it:
 *
 *  - Blocking, for scripts and network threads: every call waits at most
 *    the client's timeout (dadc_client_set_timeout, 10 s by default, or
 *    the timeout_ms argument where there is one) and returns
 *    DADC_ETIMEDOUT when it passes. Convenience calls (predict, flag,
 *    stats, ...) send their request(s), wait for the matching
 *    response(s) and return plain results.
 *
 *  - Non-blocking, for an event loop: dadc_client_send_async() queues a
 *    request without waiting, dadc_client_fd() and
 *    dadc_client_poll_events() say what to poll for,
 *    dadc_client_process() does the I/O the socket is ready for without
 *    blocking, and dadc_client_recv(c, 0, ...) hands out the messages
 *    that have arrived.
 *
 * Messages. Requests and responses are the protobuf-c structures
 * generated from proto/dadc.proto (dadc.pb-c.h). The client assigns
 * every request id itself (ids start at 1 and increase). Events pushed by
 * the server (after Subscribe) are queued while the client waits for a
 * response, and handed out by dadc_client_next_event() or
 * dadc_client_recv(); a response whose id nobody waits for any more
 * (because its wait timed out) is dropped when it arrives.
 *
 * Errors. Every call returns 0 or a negative code (common/dadc_error.h):
 *   DADC_ESTATUS    the server answered with a non-OK status; its gRPC
 *                   code and message are in dadc_client_last_status() and
 *                   dadc_client_last_status_message()
 *   DADC_ETIMEDOUT  the deadline passed (the connection stays usable)
 *   DADC_ECLOSED    the connection is closed or broken; every later call
 *                   on this client returns DADC_ECLOSED (connect again)
 *   DADC_EPROTO     the server sent a malformed or oversized frame; the
 *                   client closes the connection (later calls: ECLOSED)
 *   DADC_ELIMIT     a request would exceed the server's frame limit, or a
 *                   local queue limit was reached
 *   DADC_ERANGE     a bad argument (label over 9, empty batch, ...)
 *   DADC_ECANCELED  dadc_client_cancel() was called
 *   -ENOMEM, -errno from the system (connect refused, ...)
 * dadc_client_last_error() gives a one-line message for the last failure
 * of any kind, e.g. "server: INVALID_ARGUMENT: image 3 has 100 bytes".
 */
#ifndef DADC_CLIENT_H
#define DADC_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dadc.pb-c.h"
#include "dadc_error.h"

#define DADC_CLIENT_DEFAULT_SERVER "127.0.0.1:7070"
#define DADC_CLIENT_DEFAULT_TIMEOUT_MS 10000
#define DADC_IMAGE_BYTES 784
#define DADC_DIGITS 10

/*
 * Largest frame the client accepts from a server (a GetModel or a page of
 * ListExamples with images can be large). A larger length prefix is a
 * protocol error; memory grows with the bytes actually received, never
 * from the prefix alone.
 */
#define DADC_CLIENT_MAX_RECV_FRAME (64u * 1024 * 1024)

/* Messages that may wait in the client's queue (responses + events). */
#define DADC_CLIENT_MAX_QUEUED 4096

typedef struct dadc_client dadc_client_t;

/* What the server said in its Hello response. */
typedef struct dadc_server_info {
    uint32_t protocol_version;
    char server_version[64];
    uint32_t current_model_version;
    uint32_t max_frame_bytes;    /* frames we send must not exceed this */
    uint32_t max_inflight;       /* requests in flight per connection */
    uint32_t round_threshold;    /* fooling examples that start a round */
    uint32_t pending_fooled;     /* fooling examples since the last round */
} dadc_server_info_t;

/* One image's prediction. */
typedef struct dadc_prediction {
    uint32_t digit;
    float probabilities[DADC_DIGITS];
    uint32_t model_version;      /* the version that answered */
} dadc_prediction_t;

/* What happened to one flagged example. */
typedef struct dadc_flag_result {
    int status;          /* 0: stored; else the negative code for the
                            request that carried it (never sent, server
                            error, connection lost) */
    uint64_t example_id;
    uint32_t predicted;  /* the server's prediction when it was stored */
    bool fooled;         /* predicted != label */
    bool heldout;        /* in the held-out adversarial split */
} dadc_flag_result_t;

/* Totals over a flag batch, from the server's responses. */
typedef struct dadc_flag_summary {
    size_t acknowledged;         /* items the server stored */
    size_t failed;               /* items with a non-zero status */
    size_t fooled;               /* acknowledged items that fooled it */
    uint32_t model_version;      /* from the last response */
    uint32_t pending_fooled;     /* from the last response */
    uint32_t round_threshold;
    bool round_started;          /* some response said a round started */
} dadc_flag_summary_t;

/*
 * Progress of a batch call: done of total items answered so far. Called
 * after each response. Return 0 to go on, non-zero to stop (the call then
 * waits for the requests already sent, marks unsent items DADC_ECANCELED
 * and returns DADC_ECANCELED).
 */
typedef int (*dadc_progress_cb)(size_t done, size_t total, void *user);

/* ------------------------------------------------------------------ */
/* Connection                                                          */

/*
 * The server address to use when the user gave none: $DADC_SERVER when
 * set and not empty, else DADC_CLIENT_DEFAULT_SERVER. Static storage or
 * the environment's; never NULL.
 */
const char *dadc_client_default_server(void);

/*
 * Split "host:port" (or "[v6addr]:port") into host (NUL-terminated, at
 * most host_size bytes with the NUL) and port. Returns 0 or DADC_ERANGE
 * with a message in err.
 */
int dadc_client_parse_address(const char *address, char *host,
                              size_t host_size, uint16_t *port,
                              dadc_error_t *err);

/*
 * Connect to address ("host:port"; NULL means
 * dadc_client_default_server()) within timeout_ms (<= 0: the default
 * timeout). Resolves names with getaddrinfo and tries each address. On
 * success *out is a new client (free with dadc_client_close) that has
 * not said Hello yet. Returns 0, DADC_ERANGE (bad address),
 * DADC_ETIMEDOUT, or a negative errno (-ECONNREFUSED, ...), with a
 * message naming the address in err.
 */
int dadc_client_connect(dadc_client_t **out, const char *address,
                        int timeout_ms, dadc_error_t *err);

/*
 * Close the connection and free the client and every queued message.
 * NULL is allowed. Messages already handed out stay valid (the caller
 * owns them).
 */
void dadc_client_close(dadc_client_t *c);

/* Timeout of every blocking call that has no timeout argument (ms, > 0). */
void dadc_client_set_timeout(dadc_client_t *c, int timeout_ms);

/*
 * Requests in flight at once in batch calls (predict, flag): at most the
 * server's max_inflight from Hello, and at most 32 unless set here
 * (1..1024). Images per request frame in batch calls: at most what fits
 * under the server's frame limit; default 1024 (1..65536).
 */
void dadc_client_set_window(dadc_client_t *c, unsigned window);
void dadc_client_set_batch_images(dadc_client_t *c, unsigned images);

/*
 * Make the blocking call running in another thread (and every later
 * call) return DADC_ECANCELED as soon as possible. The only function
 * that may be called from another thread; async-signal-safe.
 */
void dadc_client_cancel(dadc_client_t *c);

/* The address given to connect, e.g. "127.0.0.1:7070". */
const char *dadc_client_address(const dadc_client_t *c);

/* True until the connection has been closed or broken. */
bool dadc_client_is_open(const dadc_client_t *c);

/* ------------------------------------------------------------------ */
/* Errors                                                              */

/* A one-line message about the last failure; "" when none yet. */
const char *dadc_client_last_error(const dadc_client_t *c);

/*
 * The gRPC status code (DADC__STATUS_CODE__*) of the last non-OK
 * response, or 0 (OK) when the last failure was not the server's.
 */
int dadc_client_last_status(const dadc_client_t *c);

/* The server's message with that status; "" when none. */
const char *dadc_client_last_status_message(const dadc_client_t *c);

/* gRPC's name for a status code, e.g. "NOT_FOUND"; never NULL. */
const char *dadc_status_name(int code);

/*
 * s (text from the server: names, reasons, messages) made safe to print
 * on a terminal: control bytes, bytes that are not valid UTF-8, and the
 * Unicode controls (C1, bidirectional overrides, line and paragraph
 * separators) become \xNN per byte, a backslash becomes \\; printable
 * ASCII and other valid UTF-8 stay as they are. NULL gives "". Returns
 * a new string the caller frees, or NULL when out of memory.
 */
char *dadc_text_escape(const char *s);

/* ------------------------------------------------------------------ */
/* Hello                                                               */

/*
 * Say Hello: client_name (e.g. "dadc/0.1"; NULL gives "libdadc") and
 * annotator (the person, used in the server's per-annotator figures;
 * NULL or "" for none). Until Hello is answered the server accepts only
 * small frames; every convenience call below says Hello itself (with
 * client name "libdadc" and no annotator) when it has not been said.
 * On success the server's answer is kept (dadc_client_server_info) and
 * copied to *info when info is not NULL.
 */
int dadc_client_hello(dadc_client_t *c, const char *client_name,
                      const char *annotator, dadc_server_info_t *info);

/*
 * The server's Hello answer, or NULL before Hello. The
 * current_model_version and pending_fooled fields are updated from later
 * Predict/Flag responses and events.
 */
const dadc_server_info_t *dadc_client_server_info(const dadc_client_t *c);

/* ------------------------------------------------------------------ */
/* Low level: requests and server messages                             */

/*
 * Send req (its id is overwritten with the next id; the id is also
 * stored in *id when id is not NULL), waiting until the whole frame is
 * written or the timeout passes. Incoming frames read meanwhile are
 * queued. The caller keeps ownership of req. Returns 0, DADC_ELIMIT when
 * the encoded request exceeds the server's frame limit (nothing is sent),
 * DADC_ETIMEDOUT (the connection is then closed: a half-written frame
 * cannot be taken back), DADC_ECLOSED.
 */
int dadc_client_send(dadc_client_t *c, Dadc__Request *req, uint64_t *id);

/*
 * The same without waiting: the frame is queued and as much of it
 * written as the socket takes now; dadc_client_process() writes the
 * rest. Returns 0, DADC_ELIMIT, DADC_ECLOSED, -ENOMEM.
 */
int dadc_client_send_async(dadc_client_t *c, Dadc__Request *req,
                           uint64_t *id);

/*
 * The next server message in arrival order (a response to any
 * outstanding request, or an event), waiting up to timeout_ms (0: only
 * what has already arrived; < 0: no limit). The caller owns *msg and
 * frees it with dadc__server_message__free_unpacked(*msg, NULL).
 * Responses are handed out whatever their status. Returns 0,
 * DADC_ETIMEDOUT, DADC_ECLOSED, DADC_EPROTO, DADC_ECANCELED.
 */
int dadc_client_recv(dadc_client_t *c, int timeout_ms,
                     Dadc__ServerMessage **msg);

/*
 * Wait for the response to request id, queueing whatever else arrives.
 * The caller owns *resp (free with dadc__response__free_unpacked(*resp,
 * NULL)). A non-OK status returns DADC_ESTATUS, records the status and
 * still hands out *resp. If the wait times out the id is forgotten and
 * its response dropped when it comes. Returns 0, DADC_ESTATUS,
 * DADC_ETIMEDOUT, DADC_ECLOSED, DADC_EPROTO, DADC_ECANCELED.
 */
int dadc_client_wait(dadc_client_t *c, uint64_t id, int timeout_ms,
                     Dadc__Response **resp);

/*
 * Send req and wait for its response (dadc_client_send then
 * dadc_client_wait with the client's timeout). Unlike wait, a non-OK
 * status frees the response and sets *resp to NULL.
 * Returns as dadc_client_send and dadc_client_wait.
 */
int dadc_client_call(dadc_client_t *c, Dadc__Request *req,
                     Dadc__Response **resp);

/*
 * For an event loop: the socket to poll, and the poll events it needs
 * now (POLLIN always; POLLOUT too while queued bytes wait to be written).
 * dadc_client_fd returns -1 once the connection is closed.
 */
int dadc_client_fd(const dadc_client_t *c);
short dadc_client_poll_events(const dadc_client_t *c);

/*
 * Do the I/O the socket is ready for, without blocking: write queued
 * bytes, read what has arrived and queue the complete messages for
 * dadc_client_recv. revents is what poll reported (0 means try both).
 * Returns 0, DADC_ECLOSED, DADC_EPROTO.
 */
int dadc_client_process(dadc_client_t *c, short revents);

/* Requests sent whose responses have not arrived yet. */
size_t dadc_client_outstanding(const dadc_client_t *c);

/*
 * Messages that have arrived and wait to be handed out (responses and
 * events), without doing any I/O.
 */
size_t dadc_client_queued(const dadc_client_t *c);

/* ------------------------------------------------------------------ */
/* Convenience calls (blocking, with the client's timeout per response) */

/*
 * Predict n 28x28 images (images holds n * 784 bytes, 0 background, 255
 * ink) with model_version (0: the current one). Large inputs are split
 * into frames under the server's limit and pipelined within the window.
 * out[i] receives image i's prediction. Returns 0 or the first error;
 * on error out's contents are unspecified.
 */
int dadc_client_predict(dadc_client_t *c, const uint8_t *images, size_t n,
                        uint32_t model_version, dadc_prediction_t *out);

/*
 * Flag n images with their true labels (0..9): stored by the server as
 * examples with its own prediction. Split and pipelined like predict,
 * with progress (may be NULL) called after each response. results
 * (n entries, may be NULL) receives each item's outcome; summary (may be
 * NULL) the totals. Items are processed in order and every item gets a
 * status, so a caller can resend exactly those that were not stored.
 * Returns 0 when every item was stored, else the first error
 * (DADC_ESTATUS, DADC_ECLOSED, ...), DADC_ERANGE without sending anything
 * for a label over 9.
 */
int dadc_client_flag(dadc_client_t *c, const uint8_t *images,
                     const uint8_t *labels, size_t n,
                     dadc_flag_result_t *results,
                     dadc_flag_summary_t *summary,
                     dadc_progress_cb progress, void *user);

/*
 * Stats, ListModels, GetModel (version 0: current), ListExamples (one
 * page: after_id 0 for the first; limit 0 lets the server choose). On
 * success the caller owns *out and frees it with the matching
 * dadc__*_response__free_unpacked(*out, NULL).
 */
int dadc_client_stats(dadc_client_t *c, Dadc__StatsResponse **out);
int dadc_client_list_models(dadc_client_t *c,
                            Dadc__ListModelsResponse **out);
int dadc_client_get_model(dadc_client_t *c, uint32_t version,
                          Dadc__GetModelResponse **out);
int dadc_client_list_examples(dadc_client_t *c, uint64_t after_id,
                              uint32_t limit, bool include_images,
                              Dadc__ListExamplesResponse **out);

/* Start a round now; *round (may be NULL) receives its number. */
int dadc_client_train(dadc_client_t *c, uint32_t *round);

/*
 * Make version current. previous and current (may be NULL) receive the
 * versions before and after.
 */
int dadc_client_rollback(dadc_client_t *c, uint32_t version,
                         uint32_t *previous, uint32_t *current);

/* Ask for events on this connection (round started/finished, ...). */
int dadc_client_subscribe(dadc_client_t *c);

/*
 * The next pushed event, waiting up to timeout_ms (0: only queued ones;
 * < 0: no limit). Responses arriving meanwhile stay queued for their
 * waiters. The caller owns *ev (dadc__event__free_unpacked(*ev, NULL)).
 * Returns 0, DADC_ETIMEDOUT, DADC_ECLOSED, DADC_EPROTO, DADC_ECANCELED.
 */
int dadc_client_next_event(dadc_client_t *c, int timeout_ms,
                           Dadc__Event **ev);

#endif
