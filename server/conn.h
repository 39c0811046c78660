/*
 * One client connection: reading frames under the limits, writing
 * answers, and closing.
 *
 * Reading: bytes land in the server's shared 64 KiB scratch buffer when
 * the connection holds no partial frame, else in the connection's own
 * buffer, which is sized to the frame being received only after its
 * length prefix passed the limit check. Whole frames are decoded and
 * dispatched in order; reading stops while max_inflight requests await
 * their answers and resumes as they drain.
 *
 * Closing: a peer that breaks the protocol gets one error answer (id 0),
 * then its connection is half-closed and further input is discarded
 * until it closes its side or SERVER_LINGER_MS pass, so the answer is
 * not lost to a reset. The conn_t is freed once its handle's close
 * callback has run and no queued work holds a reference.
 */
#ifndef DADC_SERVER_CONN_H
#define DADC_SERVER_CONN_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "dadc.pb-c.h"
#include "server.h"

struct conn {
    uv_tcp_t tcp;             /* first: the handle's data is the conn */
    server_t *srv;
    conn_t *prev, *next;      /* in srv->conns */
    conn_t *resume_next;      /* in srv->resume */
    uint64_t id;
    char name[96];            /* "conn 7 127.0.0.1:40112", for logs */

    uint8_t *in;              /* buffered input: a partial frame, or */
    size_t in_len, in_cap;    /* whole frames waiting while paused */
    uint64_t frame_started_ms; /* a partial frame began; 0: none */
    uint64_t last_active_ms;
    uint64_t linger_until_ms;

    uint32_t inflight;        /* requests dispatched, not yet answered */
    int refs;                 /* queued work holding this conn */
    bool reading;
    bool hello_done;
    bool subscribed;
    bool rejected;            /* told "server full" */
    bool lingering;           /* error answered, waiting to close */
    bool draining;            /* peer or server done: close when quiet */
    bool closing;             /* uv_close called */
    bool closed;              /* close callback ran */
    bool resume_queued;
    char annotator[STORE_ANNOTATOR_MAX];
    uv_shutdown_t shutdown_req;
};

/* Accept a pending connection from the listener and start serving it
 * (or tell it "server full"). Logs and returns on failure. */
void conn_accept(server_t *s);

/* Send a response (marks the request answered when counted). The
 * connection may be closing, in which case nothing is sent. */
void conn_send_response(conn_t *c, Dadc__Response *resp, bool counted);

/* Send a pushed event. */
void conn_send_event(conn_t *c, Dadc__Event *ev);

/* Answer id 0 with code and message, then close after a short linger. */
void conn_fail(conn_t *c, Dadc__StatusCode code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Close now; why is logged at debug. */
void conn_close(conn_t *c, const char *why);

/* Take / drop a reference for queued work. */
void conn_ref(conn_t *c);
void conn_unref(conn_t *c);

/* Queue c to read again if nothing else holds it back. */
void conn_allow_reading(conn_t *c);

/* Process buffered frames and restart reading if the in-flight count
 * allows it (from the check callback). */
void conn_resume(conn_t *c);

/* Deadlines: called by the sweep timer with the loop's time. */
void conn_sweep(conn_t *c, uint64_t now);

/* Shutdown: stop reading; close once nothing is in flight. */
void conn_stop(conn_t *c);

#endif
