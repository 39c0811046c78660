/*
 * The server: one libuv loop owning the listener, the connections, the
 * serving model, the store and the round in progress.
 *
 * Everything in server_t is touched only on the loop thread. Work for
 * the thread pool (base training, rounds, flag commits, large Predict
 * batches) gets copies or immutable snapshots (models are never changed
 * once loaded, and are held by reference), and only its after-work
 * callback, back on the loop thread, changes server state. The store is
 * the exception that proves the rule: its calls are thread-safe
 * (store.h), so workers read it and a flag commit writes it.
 *
 * Subsystems, one file each:
 *   server.c    listener, accept, the connection limit, the sweep timer
 *               (deadlines), signals and graceful shutdown
 *   conn.c      one connection: framing, limits, writes, closing
 *   handlers.c  request dispatch and the synchronous calls
 *   batch.c     Predict and Flag: batched per loop iteration
 *   models.c    the serving model and loaded older versions
 *   rounds.c    base training and rounds on the thread pool
 *   events.c    Subscribe and pushed events
 */
#ifndef DADC_SERVER_SERVER_H
#define DADC_SERVER_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "config.h"
#include "dadc.pb-c.h"
#include "idx.h"
#include "nn.h"
#include "stats.h"
#include "store.h"

#define SERVER_READ_CHUNK (64 * 1024)
#define SERVER_LINGER_MS 2000     /* after an error answer, before close */
#define SERVER_MAX_REJECTED 64    /* "server full" answers lingering;
                                   * the rest are answered and closed at
                                   * once */
#define SERVER_STOP_GRACE_MS 10000 /* shutdown: then close regardless */

typedef struct conn conn_t;
typedef struct server server_t;

/* A loaded model version; shared by reference. */
typedef struct model_ref {
    uint32_t version;
    nn_model_t *model;
    nn_ctx_t *ctx;            /* loop-thread scratch for this model */
    double mnist_accuracy;    /* from its ModelInfo, 0..1; <0 unknown */
    int refs;                 /* holders: the server, rounds, the cache */
    uint64_t last_used_ms;
    struct model_ref *next;   /* in the cache list */
} model_ref_t;

/* A Predict or Flag request waiting for this iteration's batch. */
typedef struct pending {
    struct pending *next;
    conn_t *conn;             /* holds a reference */
    Dadc__Request *req;       /* owned */
    model_ref_t *model;       /* Predict: the version asked for */
    size_t bytes;             /* image bytes held, in srv->pending_in */
    char annotator[STORE_ANNOTATOR_MAX];
} pending_t;

typedef struct pending_list {
    pending_t *head;
    pending_t **tail;
    size_t count;
} pending_list_t;

typedef struct flag_job flag_job_t;
typedef struct round_job round_job_t;

struct server {
    uv_loop_t *loop;
    server_config_t cfg;
    int exit_code;

    uv_tcp_t listener;
    bool listening;
    int port;                 /* the bound port */
    bool handles_open;        /* signals, sweep, check, idle */
    uv_signal_t sig_int;
    uv_signal_t sig_term;
    uv_timer_t sweep;
    uv_check_t batch_check;
    uv_idle_t batch_idle;     /* keeps poll from blocking while work waits */
    bool idle_active;

    /* Connections, newest first; rejected ones are in the list too. */
    conn_t *conns;
    uint32_t nconns;          /* served connections */
    uint32_t nrejected;       /* "server full" ones still closing */
    uint64_t next_conn_id;
    conn_t *resume;           /* connections whose reading may resume */
    uint8_t scratch[SERVER_READ_CHUNK];
    uint64_t emfile_last_ms;

    /* Shutdown: stop accepting, finish in-flight work, then close. */
    bool stopping;
    uint64_t stop_started_ms;
    volatile int cancel;      /* read by worker threads */

    /* Store and data. */
    store_t *store;
    stats_t *stats;
    mnist_t mnist;
    bool mnist_loaded;
    uint32_t collecting_round;

    /* Models: the serving one and a small cache of others. */
    model_ref_t *current;     /* NULL until the base model exists */
    model_ref_t *cache;
    bool base_training;
    bool ready;               /* serving: a current model is loaded */

    /* Predict and Flag queues, drained in the check callback. */
    pending_list_t predicts;
    pending_list_t flags;     /* waiting for the next commit */
    flag_job_t *flag_job;     /* commit in progress, or NULL */
    unsigned predict_jobs;    /* large Predict batches on the pool */
    uint64_t pending_in;      /* image bytes of queued Predict and Flag */

    /* Rounds: one at a time. */
    round_job_t *round_job;   /* running, or NULL */
    uint32_t round_running;   /* its number, or 0 */
    bool base_job;            /* base model training on the pool */
};

/* ---- server.c ---- */

/*
 * Set up the loop's handles, open the store, load MNIST, start listening,
 * and load the current model (or store --init-model, or start base
 * training on the pool: rounds_init). On failure everything opened is
 * being closed: call server_run anyway, which then returns 1. Returns 0
 * or a negative code with a message in err.
 */
int server_init(server_t *s, uv_loop_t *loop, const server_config_t *cfg,
                dadc_error_t *err);

/* Run the loop until shutdown; then release everything. Returns the
 * process exit code. */
int server_run(server_t *s);

/* Begin a graceful shutdown (also what SIGINT/SIGTERM do). */
void server_stop(server_t *s, const char *why);

/* Called when the server becomes ready to serve (model loaded): writes
 * the port file. */
void server_ready(server_t *s);

/* Keep the loop from blocking in poll until the next check callback. */
void server_wake(server_t *s);

/* Whether queued requests hold so much memory that no connection may
 * read more until some are answered. */
bool server_input_full(const server_t *s);

/* Let every connection paused by server_input_full read again. */
void server_input_resume(server_t *s);

/* Close what is left once nothing is in flight (during shutdown). */
void server_maybe_finish(server_t *s);

/* Milliseconds since the Unix epoch. */
int64_t server_unix_ms(void);

/* ---- handlers.c ---- */

/*
 * Handle one decoded request from conn (takes ownership of req): answer
 * synchronous calls at once, queue Predict and Flag.
 */
void handlers_dispatch(server_t *s, conn_t *c, Dadc__Request *req);

/* Send resp (result set by the caller) with an OK status for id. */
void handlers_reply_ok(conn_t *c, Dadc__Response *resp, uint64_t id);

/* Send a response with a status only (no result) for request id. */
void handlers_reply_status(conn_t *c, uint64_t id, Dadc__StatusCode code,
                           const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- batch.c ---- */

void batch_queue_predict(server_t *s, pending_t *p);
void batch_queue_flag(server_t *s, pending_t *p);
/* Run the queued work: called from the check callback. */
void batch_run(server_t *s);
/* Whether anything is queued or committing. */
bool batch_busy(const server_t *s);
/* Free a pending item, dropping its connection reference. */
void pending_free(pending_t *p);

/* ---- models.c ---- */

/*
 * The model for version (0: the current one), with a reference the
 * caller drops with model_unref. Loads it from the store on a cache
 * miss. Returns 0, DADC_ENOTFOUND, or another code with a message.
 */
int models_get(server_t *s, uint32_t version, model_ref_t **out,
               dadc_error_t *err);
/* A new reference wrapping m (taken over) for version. NULL: no memory. */
model_ref_t *models_wrap(nn_model_t *m, uint32_t version, double acc);
model_ref_t *model_ref(model_ref_t *r);
void model_unref(model_ref_t *r);
/* Make r (reference taken over) the serving model. */
void models_set_current(server_t *s, model_ref_t *r);
/* Load the current version from the store. Returns 0 or a code. */
int models_load_current(server_t *s, dadc_error_t *err);
/* Drop the cache and the current model. */
void models_free(server_t *s);

/* ---- rounds.c ---- */

/* Start the base model (init file or training) when the store has none,
 * else load the current one. Returns 0 or a code with a message. */
int rounds_init(server_t *s, dadc_error_t *err);
/*
 * Begin a round (trigger "flags" or "manual"). Returns 0 and *round,
 * DADC_EBUSY when one runs, or another code with a message.
 */
int rounds_start(server_t *s, const char *trigger, uint32_t *round,
                 dadc_error_t *err);
/* Start a round when enough fooling examples are pending. Returns
 * whether one started. */
bool rounds_maybe_start(server_t *s);
/* Fooling training examples since the last round began. */
uint32_t rounds_pending_fooled(const server_t *s);

/* ---- events.c ---- */

/* Push ev to every subscribed connection. ev is not kept. */
void events_broadcast(server_t *s, Dadc__Event *ev);
void events_round_started(server_t *s, uint32_t round, uint32_t base,
                          const char *trigger, uint32_t train_examples);
void events_round_finished(server_t *s, const Dadc__RoundInfo *info);
void events_model_promoted(server_t *s, uint32_t version, uint32_t prev,
                           const Dadc__ModelInfo *info);
void events_rolled_back(server_t *s, uint32_t version, uint32_t prev);

#endif
