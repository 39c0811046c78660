/*
 * The drawing client's network side: one thread that owns the
 * connection to dadc-server (through the shared client library), so
 * that nothing the server does, or fails to do, ever blocks drawing.
 *
 * The UI thread hands work over (the latest image to predict, flags,
 * requests for figures) and takes results back as net_msg_t from a
 * queue; after queueing a result the thread pushes an SDL user event so
 * the UI wakes up. Connection state is read as a snapshot.
 *
 * The thread connects, says Hello with the annotator's name,
 * subscribes to events, and on any failure closes the connection and
 * tries again after a backoff that doubles from 0.5 s up to 10 s.
 *
 * Flags go into a pending list (pending.h) before anything is sent and
 * leave it only once the server has acknowledged them, so a flag made
 * while the server is away is delivered when it comes back, even after
 * a restart of this program.
 */
#ifndef DADC_DRAW_NET_H
#define DADC_DRAW_NET_H

#include <stdbool.h>
#include <stdint.h>

#include "dadc_error.h"
#include "pending.h"

typedef struct net net_t;

typedef enum net_state {
    NET_DISCONNECTED,   /* waiting for the next attempt */
    NET_CONNECTING,
    NET_CONNECTED,      /* Hello answered */
} net_state_t;

/* A snapshot of the connection, for the status bar. */
typedef struct net_status {
    net_state_t state;
    char server[128];
    char error[160];          /* why the last attempt or call failed */
    int retry_in_ms;          /* NET_DISCONNECTED: until the next try */
    uint32_t model_version;   /* 0 until known */
    uint32_t pending_fooled;  /* fooling examples since the last round */
    uint32_t round_threshold; /* 0 until known */
    bool figures_known;       /* my_* below came from the server */
    uint64_t my_submitted;    /* this annotator's examples */
    uint64_t my_fooled;
    int flags_waiting;        /* flags not acknowledged yet */
} net_status_t;

typedef enum net_msg_kind {
    NET_MSG_PREDICTION,
    NET_MSG_FLAG,
    NET_MSG_FIGURES,
    NET_MSG_NOTICE,
} net_msg_kind_t;

/* One model version, for the dashboard. */
typedef struct net_model_point {
    uint32_t version;
    uint32_t round;
    double mnist_accuracy;
    double adversarial_accuracy;
    bool promoted;
    bool current;
} net_model_point_t;

#define NET_MAX_MODELS 512   /* the dashboard shows the latest ones */

typedef struct net_msg {
    net_msg_kind_t kind;

    /* NET_MSG_PREDICTION: the answer for the image sent with seq */
    unsigned seq;
    uint32_t digit;
    float probabilities[10];
    uint32_t model_version;   /* also NET_MSG_FLAG */

    /* NET_MSG_FLAG: a flag the server stored */
    int label;
    uint32_t predicted;
    bool fooled;
    bool round_started;

    /* NET_MSG_FIGURES: from Stats */
    uint64_t digit_submitted[10];
    uint64_t digit_fooled[10];
    int model_count;
    net_model_point_t models[NET_MAX_MODELS];

    /* NET_MSG_NOTICE: a line for the status bar (events, failures) */
    char text[200];
    bool event;               /* it reports one of the server's events */
} net_msg_t;

typedef struct net_config {
    const char *server;        /* "host:port" */
    const char *annotator;     /* Hello's annotator name */
    const char *pending_path;  /* NULL: flags kept in memory only */
    uint32_t wake_event;       /* SDL event type pushed on news */
} net_config_t;

/*
 * Load the pending flags and start the thread. Returns 0, or the code
 * with a message in err (a malformed pending file: DADC_EFORMAT, and
 * the file is left as it is). *out is freed by net_stop.
 */
int net_start(net_t **out, const net_config_t *cfg, dadc_error_t *err);

/*
 * Stop the thread (cancelling a call in progress), close the
 * connection and free everything. Pending flags stay in their file.
 */
void net_stop(net_t *n);

/*
 * Ask for a prediction of image (784 bytes) tagged seq. Replaces any
 * request not yet sent: only the latest drawing matters.
 */
void net_predict(net_t *n, const uint8_t image[784], unsigned seq);

/*
 * Flag image with label (0-9): kept in the pending list (and its file)
 * until the server acknowledges it. Returns 0, or when the pending file
 * could not be written the code and message (the flag is still kept in
 * memory and will be sent).
 */
int net_flag(net_t *n, const uint8_t image[784], int label,
             dadc_error_t *err);

/* Ask for fresh figures (Stats) for the dashboard and status bar. */
void net_figures_request(net_t *n);

/* Take the oldest result (true) or find none (false). */
bool net_poll(net_t *n, net_msg_t *out);

/* Copy the connection state. */
void net_status_get(net_t *n, net_status_t *out);

#endif
