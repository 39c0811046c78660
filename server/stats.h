/*
 * In-memory aggregates for the Stats call: counts of submitted and
 * fooling examples overall, per digit (the true label), per annotator and
 * per round (the round an example was collected in). Built from the store
 * with one scan at startup, then kept up to date as examples are added.
 *
 * The figures are plain structs; the server converts them to
 * dadc.StatsResponse (CountFigures etc.) itself. Not thread-safe: use one
 * stats_t from one thread (the loop thread).
 */
#ifndef DADC_STATS_H
#define DADC_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "dadc_error.h"
#include "store.h"

typedef struct stats_counts {
    uint64_t submitted;
    uint64_t fooled;
    uint64_t heldout;        /* of submitted, in the held-out split */
    uint64_t train_fooled;   /* fooled and not held out: what triggers a
                              * round */
} stats_counts_t;

typedef struct stats stats_t;

/* An empty set of aggregates. Returns 0 or -ENOMEM. Free with
 * stats_free. */
int stats_create(stats_t **out);
void stats_free(stats_t *st);

/*
 * Reset st and count every example in s in one scan. Returns 0, or a
 * code from store_examples_scan, or -ENOMEM (st is then empty).
 */
int stats_rebuild(stats_t *st, store_t *s, dadc_error_t *err);

/*
 * Count one stored example (after store_examples_put returned 0).
 * Returns 0 or -ENOMEM (a new annotator or round could not be added;
 * the overall and per-digit counts are still updated).
 */
int stats_add(stats_t *st, const store_example_t *ex);

/* fooled / submitted, 0 when nothing was submitted. */
double stats_error_rate(const stats_counts_t *c);

/* Overall counts; valid until the next stats_* call that changes st. */
const stats_counts_t *stats_overall(const stats_t *st);

/* Counts for true label digit (0..9), or NULL when out of range. */
const stats_counts_t *stats_digit(const stats_t *st, int digit);

/* Number of distinct annotators ("" is one of them when used). */
size_t stats_annotator_count(const stats_t *st);

/*
 * The i-th annotator in name order (0 <= i < count): its name (valid
 * until st changes) and counts. Returns NULL when i is out of range.
 */
const stats_counts_t *stats_annotator_at(const stats_t *st, size_t i,
                                         const char **name);

/* Counts for one annotator name, or NULL if it has no examples. */
const stats_counts_t *stats_annotator_find(const stats_t *st,
                                           const char *name);

/* Number of rounds with examples. */
size_t stats_round_count(const stats_t *st);

/*
 * The i-th round with examples, in increasing round order: *round gets
 * its number. Returns NULL when i is out of range.
 */
const stats_counts_t *stats_round_at(const stats_t *st, size_t i,
                                     uint32_t *round);

/* Counts for round r; NULL when it has no examples. The round still
 * collecting gives the pending fooled count as train_fooled. */
const stats_counts_t *stats_round_find(const stats_t *st, uint32_t r);

#endif
