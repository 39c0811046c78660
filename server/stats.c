#include "stats.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct stats_annotator {
    char name[STORE_ANNOTATOR_MAX];
    stats_counts_t counts;
} stats_annotator_t;

typedef struct stats_round {
    uint32_t round;
    stats_counts_t counts;
} stats_round_t;

struct stats {
    stats_counts_t overall;
    stats_counts_t digits[10];
    /* both kept sorted (by name, by round) for lookups and listing */
    stats_annotator_t *annotators;
    size_t nannotators;
    size_t cap_annotators;
    stats_round_t *rounds;
    size_t nrounds;
    size_t cap_rounds;
};

int stats_create(stats_t **out)
{
    *out = calloc(1, sizeof(**out));
    return *out != NULL ? 0 : -ENOMEM;
}

static void stats_reset(stats_t *st)
{
    free(st->annotators);
    free(st->rounds);
    memset(st, 0, sizeof(*st));
}

void stats_free(stats_t *st)
{
    if (st == NULL)
        return;
    stats_reset(st);
    free(st);
}

static void counts_add(stats_counts_t *c, const store_example_t *ex)
{
    c->submitted++;
    c->fooled += ex->fooled;
    c->heldout += ex->heldout;
    c->train_fooled += ex->fooled && !ex->heldout;
}

/* Index of the first annotator whose name is >= name. */
static size_t annotator_lower(const stats_t *st, const char *name)
{
    size_t lo = 0, hi = st->nannotators;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (strcmp(st->annotators[mid].name, name) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static size_t round_lower(const stats_t *st, uint32_t r)
{
    size_t lo = 0, hi = st->nrounds;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (st->rounds[mid].round < r)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Make room for one more element of size sz in *arr. */
static int grow(void **arr, size_t n, size_t *cap, size_t sz)
{
    void *p;
    size_t ncap;

    if (n < *cap)
        return 0;
    ncap = *cap ? *cap * 2 : 16;
    p = realloc(*arr, ncap * sz);
    if (p == NULL)
        return -ENOMEM;
    *arr = p;
    *cap = ncap;
    return 0;
}

static stats_counts_t *annotator_slot(stats_t *st, const char *name)
{
    size_t i = annotator_lower(st, name);
    stats_annotator_t *a;

    if (i < st->nannotators && strcmp(st->annotators[i].name, name) == 0)
        return &st->annotators[i].counts;
    if (grow((void **)&st->annotators, st->nannotators,
             &st->cap_annotators, sizeof(*a)) != 0)
        return NULL;
    a = &st->annotators[i];
    memmove(a + 1, a, (st->nannotators - i) * sizeof(*a));
    memset(a, 0, sizeof(*a));
    snprintf(a->name, sizeof(a->name), "%s", name);
    st->nannotators++;
    return &a->counts;
}

static stats_counts_t *round_slot(stats_t *st, uint32_t r)
{
    size_t i = round_lower(st, r);
    stats_round_t *rs;

    if (i < st->nrounds && st->rounds[i].round == r)
        return &st->rounds[i].counts;
    if (grow((void **)&st->rounds, st->nrounds, &st->cap_rounds,
             sizeof(*rs)) != 0)
        return NULL;
    rs = &st->rounds[i];
    memmove(rs + 1, rs, (st->nrounds - i) * sizeof(*rs));
    memset(rs, 0, sizeof(*rs));
    rs->round = r;
    st->nrounds++;
    return &rs->counts;
}

int stats_add(stats_t *st, const store_example_t *ex)
{
    stats_counts_t *c;
    int rc = 0;

    counts_add(&st->overall, ex);
    if (ex->label < 10)
        counts_add(&st->digits[ex->label], ex);

    c = annotator_slot(st, ex->annotator);
    if (c != NULL)
        counts_add(c, ex);
    else
        rc = -ENOMEM;
    c = round_slot(st, ex->round);
    if (c != NULL)
        counts_add(c, ex);
    else
        rc = -ENOMEM;
    return rc;
}

static int stats_scan_cb(const store_example_t *ex, void *user)
{
    return stats_add(user, ex);
}

int stats_rebuild(stats_t *st, store_t *s, dadc_error_t *err)
{
    int rc;

    stats_reset(st);
    rc = store_examples_scan(s, stats_scan_cb, st, err);
    if (rc != 0)
        stats_reset(st);
    return rc;
}

double stats_error_rate(const stats_counts_t *c)
{
    if (c == NULL || c->submitted == 0)
        return 0.0;
    return (double)c->fooled / (double)c->submitted;
}

const stats_counts_t *stats_overall(const stats_t *st)
{
    return &st->overall;
}

const stats_counts_t *stats_digit(const stats_t *st, int digit)
{
    if (digit < 0 || digit > 9)
        return NULL;
    return &st->digits[digit];
}

size_t stats_annotator_count(const stats_t *st)
{
    return st->nannotators;
}

const stats_counts_t *stats_annotator_at(const stats_t *st, size_t i,
                                         const char **name)
{
    if (i >= st->nannotators)
        return NULL;
    if (name != NULL)
        *name = st->annotators[i].name;
    return &st->annotators[i].counts;
}

const stats_counts_t *stats_annotator_find(const stats_t *st,
                                           const char *name)
{
    size_t i = annotator_lower(st, name);

    if (i < st->nannotators && strcmp(st->annotators[i].name, name) == 0)
        return &st->annotators[i].counts;
    return NULL;
}

size_t stats_round_count(const stats_t *st)
{
    return st->nrounds;
}

const stats_counts_t *stats_round_at(const stats_t *st, size_t i,
                                     uint32_t *round)
{
    if (i >= st->nrounds)
        return NULL;
    if (round != NULL)
        *round = st->rounds[i].round;
    return &st->rounds[i].counts;
}

const stats_counts_t *stats_round_find(const stats_t *st, uint32_t r)
{
    size_t i = round_lower(st, r);

    if (i < st->nrounds && st->rounds[i].round == r)
        return &st->rounds[i].counts;
    return NULL;
}
