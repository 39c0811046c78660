/*
 * Stats aggregates: counted as examples arrive, and rebuilt from a real
 * store with the same figures.
 */
#include "test_util.h"

#include <sys/stat.h>

#include "stats.h"
#include "store.h"

static void example_make(store_example_t *ex, int label, int predicted,
                         const char *who)
{
    memset(ex, 0, sizeof(*ex));
    ex->image[100] = 255;
    ex->label = (uint8_t)label;
    ex->predicted = (uint8_t)predicted;
    ex->model_version = 1;
    snprintf(ex->annotator, sizeof(ex->annotator), "%s", who);
}

static void check_same_counts(const stats_counts_t *a,
                              const stats_counts_t *b)
{
    CHECK(a != NULL && b != NULL);
    CHECK_EQ(a->submitted, b->submitted);
    CHECK_EQ(a->fooled, b->fooled);
    CHECK_EQ(a->heldout, b->heldout);
    CHECK_EQ(a->train_fooled, b->train_fooled);
}

static void test_counts(void)
{
    stats_t *st = NULL;
    store_example_t ex;
    const stats_counts_t *c;
    const char *name = NULL;
    uint32_t r = 0;

    CHECK_EQ(stats_create(&st), 0);
    CHECK_EQ(stats_error_rate(stats_overall(st)), 0);
    example_make(&ex, 3, 5, "zoe");
    ex.fooled = true;
    ex.round = 2;
    CHECK_EQ(stats_add(st, &ex), 0);
    example_make(&ex, 3, 3, "adam");
    ex.round = 1;
    ex.heldout = true;
    CHECK_EQ(stats_add(st, &ex), 0);
    example_make(&ex, 7, 1, "zoe");
    ex.fooled = true;
    ex.heldout = true;
    ex.round = 2;
    CHECK_EQ(stats_add(st, &ex), 0);

    c = stats_overall(st);
    CHECK_EQ(c->submitted, 3);
    CHECK_EQ(c->fooled, 2);
    CHECK_EQ(c->heldout, 2);
    CHECK_EQ(c->train_fooled, 1);
    CHECK_NEAR(stats_error_rate(c), 2.0 / 3.0, 1e-12);
    CHECK_EQ(stats_digit(st, 3)->submitted, 2);
    CHECK_EQ(stats_digit(st, 3)->fooled, 1);
    CHECK_EQ(stats_digit(st, 7)->fooled, 1);
    CHECK_EQ(stats_digit(st, 0)->submitted, 0);
    CHECK(stats_digit(st, 10) == NULL);
    CHECK(stats_digit(st, -1) == NULL);

    CHECK_EQ(stats_annotator_count(st), 2);
    c = stats_annotator_at(st, 0, &name);
    CHECK_STR(name, "adam");
    CHECK_EQ(c->submitted, 1);
    c = stats_annotator_at(st, 1, &name);
    CHECK_STR(name, "zoe");
    CHECK_EQ(c->fooled, 2);
    CHECK(stats_annotator_at(st, 2, &name) == NULL);
    CHECK(stats_annotator_find(st, "nobody") == NULL);

    CHECK_EQ(stats_round_count(st), 2);
    c = stats_round_at(st, 0, &r);
    CHECK_EQ(r, 1);
    CHECK_EQ(c->submitted, 1);
    c = stats_round_at(st, 1, &r);
    CHECK_EQ(r, 2);
    CHECK_EQ(c->train_fooled, 1);
    CHECK(stats_round_find(st, 3) == NULL);
    stats_free(st);
}

static void test_many_annotators(void)
{
    stats_t *st = NULL;
    store_example_t ex;
    const char *name = NULL, *prev = "";
    char who[32];

    CHECK_EQ(stats_create(&st), 0);
    for (int i = 0; i < 500; i++) {
        snprintf(who, sizeof(who), "a%03d", (i * 37) % 250);
        example_make(&ex, i % 10, (i * 7) % 10, who);
        ex.fooled = ex.label != ex.predicted;
        ex.round = (uint32_t)(i % 13) + 1;
        CHECK_EQ(stats_add(st, &ex), 0);
    }
    CHECK_EQ(stats_annotator_count(st), 250);
    for (size_t i = 0; i < 250; i++) {
        CHECK_EQ(stats_annotator_at(st, i, &name)->submitted, 2);
        CHECK_INT(strcmp(prev, name), <, 0);
        prev = name;
    }
    CHECK_EQ(stats_round_count(st), 13);
    stats_free(st);
}

static void test_rebuild_matches_incremental(void)
{
    const char *dir = test_path("store");
    store_t *s = NULL;
    stats_t *live = NULL, *built = NULL;
    store_example_t ex[60];
    const char *name;
    uint32_t r;

    CHECK_EQ(mkdir(dir, 0755), 0);
    CHECK_EQ(store_open(&s, dir, NULL, NULL), 0);
    CHECK_EQ(stats_create(&live), 0);
    for (int batch = 0; batch < 3; batch++) {
        for (int i = 0; i < 60; i++)
            example_make(&ex[i], i % 10, (i * (batch + 1)) % 10,
                         i % 3 ? "ann" : "ben");
        CHECK_EQ(store_examples_put(s, ex, 60, NULL), 0);
        for (int i = 0; i < 60; i++)
            CHECK_EQ(stats_add(live, &ex[i]), 0);
        CHECK_EQ(store_round_begin(s, "manual", 0, 0, &r, NULL), 0);
        CHECK_EQ(store_round_fail(s, r, "test", NULL), 0);
    }

    CHECK_EQ(stats_create(&built), 0);
    CHECK_EQ(stats_rebuild(built, s, NULL), 0);
    check_same_counts(stats_overall(live), stats_overall(built));
    CHECK_EQ(stats_overall(built)->submitted, 180);
    for (int d = 0; d < 10; d++)
        check_same_counts(stats_digit(live, d), stats_digit(built, d));
    CHECK_EQ(stats_annotator_count(built), 2);
    check_same_counts(stats_annotator_find(live, "ben"),
                      stats_annotator_find(built, "ben"));
    CHECK(stats_annotator_at(built, 0, &name) != NULL);
    CHECK_STR(name, "ann");
    CHECK_EQ(stats_round_count(built), 3);
    for (uint32_t k = 1; k <= 3; k++)
        check_same_counts(stats_round_find(live, k),
                          stats_round_find(built, k));
    /* rebuilding again starts from zero */
    CHECK_EQ(stats_rebuild(built, s, NULL), 0);
    CHECK_EQ(stats_overall(built)->submitted, 180);

    stats_free(live);
    stats_free(built);
    store_close(s);
}

int main(void)
{
    test_init("test_stats", 60);
    TEST_RUN(test_counts);
    TEST_RUN(test_many_annotators);
    TEST_RUN(test_rebuild_matches_incremental);
    return test_finish();
}
