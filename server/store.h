/*
 * The server's store: one LMDB environment in the data directory holding
 * every flagged example, every model version with its weights, every
 * round, and the counters that tie them together.
 *
 * Named databases inside the environment:
 *
 *   meta      short string keys -> values: "schema" (the format version),
 *             "current" (u32, the version serving), "next_version",
 *             "next_example", "collecting_round"
 *   examples  u64 big-endian id -> example record (see store_example_t)
 *   models    u32 big-endian version -> packed dadc.ModelInfo
 *   weights   u32 big-endian version -> the model's safetensors bytes
 *   rounds    u32 big-endian round -> packed dadc.RoundInfo
 *
 * Durability: every write function returns only after its transaction
 * has committed (LMDB's default full sync), so a caller may acknowledge
 * the write once the call returns 0. After kill -9 or a power cut the
 * store reopens with exactly the committed transactions.
 *
 * Size: the map grows by itself. When a write fills it, the transaction
 * is aborted, the map is doubled and the whole transaction is retried, so
 * no write fails for lack of map space (only for lack of disk).
 *
 * Threads: a store may be used from several threads at once. Read calls
 * (every function not documented as a write) may run on any thread,
 * including libuv worker threads, at the same time as writes on another
 * thread; each runs in its own short read transaction and sees one
 * consistent committed state. Write calls are serialised. Growing the map
 * waits until no read call is in progress in this process. No callback is
 * ever called with a transaction that outlives the call.
 *
 * Versions, once written, never change: their weights and figures are
 * immutable. Only the "current" pointer moves (a new promoted version,
 * or store_rollback).
 *
 * Records use protobuf (dadc.ModelInfo, dadc.RoundInfo from
 * proto/dadc.proto) for models and rounds and a fixed little-endian
 * layout with a format byte for examples. A record that does not parse
 * is reported as DADC_EFORMAT naming the database and key; it never
 * crashes the reader.
 */
#ifndef DADC_STORE_H
#define DADC_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dadc.pb-c.h"
#include "dadc_error.h"

#define STORE_IMAGE_BYTES 784
#define STORE_ANNOTATOR_MAX 64    /* including the terminating NUL */
#define STORE_SCHEMA_VERSION 1
#define STORE_DEFAULT_MAP_BYTES ((size_t)64 << 20)
#define STORE_DEFAULT_HELDOUT_SHARE 0.2

typedef struct store store_t;

typedef struct store_opts {
    /* Initial map size in bytes; 0 means STORE_DEFAULT_MAP_BYTES. An
     * existing environment keeps its own size when that is larger. */
    size_t map_bytes;
    /* Share of new examples put in the held-out split, 0.0 .. 1.0.
     * Decided per example from a BLAKE2b hash of its id when it is
     * stored and recorded in it, so changing the share later moves no
     * existing example. */
    double heldout_share;
} store_opts_t;

/* Fill o with the defaults (64 MiB map, 20% held out). */
void store_opts_default(store_opts_t *o);

/*
 * One flagged example. For store_examples_put the caller fills image,
 * label, predicted, model_version, annotator and optionally created_ms;
 * the store fills the rest.
 */
typedef struct store_example {
    uint64_t id;              /* assigned by the store, from 1 upwards */
    uint8_t image[STORE_IMAGE_BYTES]; /* 28x28, 0 background, 255 ink */
    uint8_t label;            /* the true digit the annotator gave, 0..9 */
    uint8_t predicted;        /* the server's prediction when stored */
    bool fooled;              /* set by the store: predicted != label */
    bool heldout;             /* set by the store: in the held-out split */
    uint32_t model_version;   /* the version that made the prediction */
    uint32_t round;           /* set by the store: the round collecting
                               * when it was stored (see store_round_begin).
                               * Rounds train on every earlier example, so
                               * this round is also the first to train on
                               * it (dadc.Example.round) once it has
                               * finished with a candidate */
    int64_t created_ms;       /* Unix ms; 0 on put means "now" */
    char annotator[STORE_ANNOTATOR_MAX]; /* NUL-terminated, may be "" */
} store_example_t;

/* The counters, read in one transaction. */
typedef struct store_counters {
    uint32_t current_version;   /* 0 while the store has no model */
    uint32_t latest_version;    /* highest version written, or 0 */
    uint32_t collecting_round;  /* round that new examples belong to, >= 1 */
    uint32_t latest_round;      /* highest round begun, or 0 */
    uint64_t examples;          /* number of examples stored */
    uint64_t last_example_id;   /* highest id assigned, or 0 */
    size_t map_bytes;           /* current map size */
} store_counters_t;

/*
 * Open (creating when absent) the store in directory dir, which must
 * exist. opts may be NULL for the defaults. A round left running by a
 * process that died is closed here with running = false and reason
 * "interrupted: the server stopped before the round finished".
 *
 * Returns 0 and *out, or:
 *   DADC_EFORMAT  dir holds an LMDB environment that is not a DADC store
 *                 (foreign databases, wrong or missing schema), or files
 *                 that are not LMDB at all
 *   DADC_ETRUNC   data.mdb is shorter than its own meta page says
 *   DADC_ERANGE   a bad option (heldout_share outside 0..1)
 *   DADC_ESTORE   another LMDB failure (message names the call)
 *   -EBUSY        another open store (in this or another process) holds
 *                 the exclusive lock on DIR/lock; the message names the
 *                 holder's pid. The lock lasts until store_close or the
 *                 holder's death.
 *   -errno        a system error (e.g. -ENOENT, -EACCES for dir)
 * The caller owns *out and closes it with store_close.
 */
int store_open(store_t **out, const char *dir, const store_opts_t *opts,
               dadc_error_t *err);

/* Close the store; all committed data is on disk. s may be NULL. No
 * other call on s may be in progress. */
void store_close(store_t *s);

/* Read the counters. Returns 0, DADC_ESTORE or DADC_EFORMAT. */
int store_counters_get(store_t *s, store_counters_t *out, dadc_error_t *err);

/* ------------------------------------------------------------------ */
/* Examples */

/*
 * Write. Store n examples (n >= 1) in ONE transaction and return after
 * it committed. For each, in ex[i]: assigns id (consecutive, increasing),
 * sets fooled, heldout and round, and created_ms when it was 0.
 * annotator is cut to STORE_ANNOTATOR_MAX - 1 bytes if it is longer
 * (or not terminated), at a UTF-8 character boundary.
 *
 * Returns 0, or (nothing stored, ex[] ids not meaningful):
 *   DADC_ERANGE   a label or prediction above 9
 *   DADC_ESTORE   LMDB failed (message names the call)
 *   -ENOMEM
 */
int store_examples_put(store_t *s, store_example_t *ex, size_t n,
                       dadc_error_t *err);

/* Read one example. Returns 0, DADC_ENOTFOUND, DADC_EFORMAT, DADC_ESTORE. */
int store_example_get(store_t *s, uint64_t id, store_example_t *out,
                      dadc_error_t *err);

/*
 * A page of examples in id order: those with id > after_id, at most
 * limit of them, into out[] (room for limit). *n gets the number
 * written, *next_after_id the last id of the page when more examples
 * follow it, else 0; either pointer of total/next may be NULL, *total
 * gets the number of examples stored. Returns 0, DADC_EFORMAT (a bad
 * record; the page stops before it), DADC_ESTORE.
 */
int store_examples_list(store_t *s, uint64_t after_id, size_t limit,
                        store_example_t *out, size_t *n,
                        uint64_t *next_after_id, uint64_t *total,
                        dadc_error_t *err);

/*
 * Call cb for every example in id order, in one read transaction. ex is
 * valid only during the call. A non-zero return from cb stops the scan
 * and is returned. Returns 0, cb's code, DADC_EFORMAT, DADC_ESTORE.
 * cb must not call write functions of the same store.
 */
typedef int (*store_example_cb)(const store_example_t *ex, void *user);
int store_examples_scan(store_t *s, store_example_cb cb, void *user,
                        dadc_error_t *err);

/* ------------------------------------------------------------------ */
/* Model versions */

/*
 * Write. Add a new model version in ONE transaction: its ModelInfo, its
 * safetensors bytes (st, st_len > 0, copied), the round record when
 * round is not NULL (stored under round->round, with running = false and
 * candidate_version set to the new version), and, when make_current, the
 * current pointer. A crash at any moment leaves either all of it or none
 * of it, so the previous version keeps serving.
 *
 * info is read, not kept: the store writes it with version = the next
 * version number, size_bytes = st_len and current = false (current is
 * never stored; readers fill it from the pointer). Its other fields
 * (parent_version, round, promoted, created_unix_ms, accuracies, figures,
 * layers) are the caller's. *version_out gets the new version (may be
 * NULL). The store does not look inside st.
 *
 * round, when given, must name a round begun with store_round_begin and
 * still running; its empty trigger, zero started_unix_ms, base_version
 * and finished_unix_ms are filled from the begun record and the clock.
 *
 * Returns 0, or with nothing written:
 *   DADC_ERANGE     st_len 0, or the round has already finished
 *   DADC_ENOTFOUND  no such round
 *   DADC_ESTORE, -ENOMEM
 */
int store_model_add(store_t *s, const Dadc__ModelInfo *info,
                    const uint8_t *st, size_t st_len,
                    const Dadc__RoundInfo *round, bool make_current,
                    uint32_t *version_out, dadc_error_t *err);

/*
 * Read a version's ModelInfo, with current set when it is the current
 * version. The caller frees *out with dadc__model_info__free_unpacked(
 * *out, NULL). Returns 0, DADC_ENOTFOUND, DADC_EFORMAT, DADC_ESTORE.
 */
int store_model_get(store_t *s, uint32_t version, Dadc__ModelInfo **out,
                    dadc_error_t *err);

/*
 * Every version's ModelInfo in version order (current flagged). *out is
 * a malloc'd array of *n pointers; free with store_models_free. Returns
 * 0, DADC_EFORMAT, DADC_ESTORE, -ENOMEM.
 */
int store_models_list(store_t *s, Dadc__ModelInfo ***out, size_t *n,
                      dadc_error_t *err);
void store_models_free(Dadc__ModelInfo **models, size_t n);

/*
 * A copy of a version's safetensors bytes in *buf (malloc'd, caller
 * frees) of *len bytes. Returns 0, DADC_ENOTFOUND, DADC_ESTORE, -ENOMEM.
 */
int store_weights_get(store_t *s, uint32_t version, uint8_t **buf,
                      size_t *len, dadc_error_t *err);

/*
 * Write. Make an existing version current (it may be older or newer
 * than the current one, promoted or not). *previous gets the version
 * that was current (may be NULL). Returns 0, DADC_ENOTFOUND (no such
 * version), DADC_ESTORE.
 */
int store_rollback(store_t *s, uint32_t version, uint32_t *previous,
                   dadc_error_t *err);

/* ------------------------------------------------------------------ */
/* Rounds
 *
 * Examples are stored with the "collecting" round, which starts at 1.
 * store_round_begin records round r = collecting (running = true) and
 * moves collecting to r + 1 in one transaction, so every example stored
 * before the call belongs to round <= r and every later one to a later
 * round: the round's data is exactly the examples with round <= r, and
 * can be read at any later time (round_data_load in round.h).
 */

/*
 * Write. Begin a round. trigger is "flags" or "manual" (copied),
 * base_version the version it fine-tunes, started_ms Unix ms (0: now).
 * *round_out gets the round number. Returns 0, DADC_EBUSY (a round is
 * still running: begun and neither finished with store_model_add nor
 * ended with store_round_fail), DADC_ESTORE.
 */
int store_round_begin(store_t *s, const char *trigger,
                      uint32_t base_version, int64_t started_ms,
                      uint32_t *round_out, dadc_error_t *err);

/*
 * Write. End a running round without a candidate (it failed or was
 * cancelled): running = false, promoted = false, finished now, reason
 * copied. Its examples stay and are trained on by a later round.
 * Returns 0, DADC_ENOTFOUND, DADC_ESTORE.
 */
int store_round_fail(store_t *s, uint32_t round, const char *reason,
                     dadc_error_t *err);

/*
 * Read a round's record. Free *out with dadc__round_info__free_unpacked
 * (*out, NULL). Returns 0, DADC_ENOTFOUND, DADC_EFORMAT, DADC_ESTORE.
 */
int store_round_get(store_t *s, uint32_t round, Dadc__RoundInfo **out,
                    dadc_error_t *err);

/* Every round's record in round order; free with store_rounds_free. */
int store_rounds_list(store_t *s, Dadc__RoundInfo ***out, size_t *n,
                      dadc_error_t *err);
void store_rounds_free(Dadc__RoundInfo **rounds, size_t n);

/* Whether the example with this id falls in the held-out split for the
 * given share (pure function of id and share; what put uses). */
bool store_heldout_pick(uint64_t id, double share);

#endif
