/*
 * Durability end to end: the server is killed with SIGKILL (no chance to
 * clean up) and restarted on the same data dir. Everything acknowledged
 * before the kill is still there: examples, versions and their bytes,
 * the current-version pointer after a rollback, per-annotator counts;
 * and while flags are streaming in, every flag answered OK before the
 * kill survives it.
 */
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include "e2e_util.h"
#include "test_util.h"

static const char *const extra[] = {
    "--round-threshold", "1000000", "--round-margin", "100",
    "--replay-size", "1000", "--round-epochs", "1", NULL};

/* What the server knows, to compare before and after a restart. */
typedef struct snapshot {
    uint64_t *ids;
    size_t n_ids;
    Dadc__ListModelsResponse *models;
    Dadc__GetModelResponse *v2;
    uint64_t submitted;
    uint64_t bob;
} snapshot_t;

static void snapshot_take(dadc_client_t *c, snapshot_t *s)
{
    Dadc__StatsResponse *st;
    size_t i;

    s->ids = e2e_list_example_ids(c, &s->n_ids);
    CHECK_EQ(dadc_client_list_models(c, &s->models), 0);
    CHECK_EQ(dadc_client_get_model(c, 2, &s->v2), 0);
    CHECK_EQ(dadc_client_stats(c, &st), 0);
    s->submitted = st->overall->submitted;
    s->bob = 0;
    for (i = 0; i < st->n_per_annotator; i++)
        if (strcmp(st->per_annotator[i]->annotator, "bob") == 0)
            s->bob = st->per_annotator[i]->counts->submitted;
    dadc__stats_response__free_unpacked(st, NULL);
}

static void snapshot_free(snapshot_t *s)
{
    free(s->ids);
    dadc__list_models_response__free_unpacked(s->models, NULL);
    dadc__get_model_response__free_unpacked(s->v2, NULL);
}

static void snapshot_compare(const snapshot_t *a, const snapshot_t *b)
{
    size_t i;

    CHECK_EQ(a->n_ids, b->n_ids);
    for (i = 0; i < a->n_ids; i++)
        CHECK_EQ(a->ids[i], b->ids[i]);
    CHECK_EQ(a->models->current_model_version,
             b->models->current_model_version);
    CHECK_EQ(a->models->n_models, b->models->n_models);
    for (i = 0; i < a->models->n_models; i++) {
        const Dadc__ModelInfo *x = a->models->models[i];
        const Dadc__ModelInfo *y = b->models->models[i];

        CHECK_EQ(x->version, y->version);
        CHECK_EQ(x->promoted, y->promoted);
        CHECK_EQ(x->parent_version, y->parent_version);
        CHECK_NEAR(x->mnist_test_accuracy, y->mnist_test_accuracy, 0);
    }
    CHECK_EQ(a->v2->safetensors.len, b->v2->safetensors.len);
    CHECK(memcmp(a->v2->safetensors.data, b->v2->safetensors.data,
                 a->v2->safetensors.len) == 0);
    CHECK_EQ(a->submitted, b->submitted);
    CHECK_EQ(a->bob, b->bob);
}

static void wait_promoted(dadc_client_t *sub)
{
    for (;;) {
        Dadc__Event *ev;
        int kind;

        CHECK_EQ(dadc_client_next_event(sub, 900000, &ev), 0);
        kind = ev->kind_case;
        dadc__event__free_unpacked(ev, NULL);
        if (kind == DADC__EVENT__KIND_MODEL_PROMOTED)
            return;
    }
}

static void test_kill_restart(void)
{
    const mnist_t *m = e2e_mnist();
    e2e_server_t srv;
    dadc_client_t *c, *sub;
    dadc_flag_result_t *res = calloc(500, sizeof(*res));
    dadc_flag_summary_t sum;
    snapshot_t before, after;
    char png[600];
    size_t i;

    e2e_server_start(&srv, test_path("data"), extra);
    c = e2e_connect(&srv, "alice");
    sub = e2e_connect(&srv, "watcher");
    CHECK_EQ(dadc_client_subscribe(sub), 0);
    CHECK_EQ(dadc_client_flag(c, m->test_images.data, m->test_labels.data,
                              500, res, &sum, NULL, NULL), 0);
    CHECK_EQ(sum.acknowledged, 500);
    snprintf(png, sizeof(png), "%s", test_path("d.png"));
    e2e_write_test_png(png, 3);
    for (i = 0; i < 3; i++)
        CHECK_EQ(e2e_cli(&srv, NULL, NULL, "--name", "bob", "flag",
                         "--label", "0", png, NULL), 0);

    /* a manual round makes version 2; then go back to 1 */
    CHECK_EQ(e2e_cli(&srv, NULL, NULL, "train", NULL), 0);
    wait_promoted(sub);
    CHECK_EQ(e2e_cli(&srv, NULL, NULL, "rollback", "1", NULL), 0);
    snapshot_take(c, &before);
    CHECK_EQ(before.n_ids, 503);
    for (i = 0; i < 500; i++)
        CHECK_EQ(before.ids[i], res[i].example_id);
    dadc_client_close(c);
    dadc_client_close(sub);

    e2e_server_kill(&srv);
    e2e_server_start(&srv, test_path("data"), extra);
    c = e2e_connect(&srv, "alice");
    snapshot_take(c, &after);
    snapshot_compare(&before, &after);
    CHECK_EQ(after.models->current_model_version, 1);
    CHECK_EQ(after.bob, 3);
    snapshot_free(&before);
    snapshot_free(&after);
    dadc_client_close(c);
    e2e_server_stop(&srv);
    free(res);
}

/* A flagging thread: records the ids the server acknowledged. */
typedef struct flagger {
    const e2e_server_t *srv;
    unsigned batch;
    uint64_t ids[20000];
    size_t n;
} flagger_t;

static void *flagger_main(void *arg)
{
    flagger_t *f = arg;
    const mnist_t *m = e2e_mnist();
    dadc_client_t *c = e2e_connect(f->srv, "flagger");
    dadc_flag_result_t res[64];
    size_t at = 0;

    for (;;) {
        size_t i;

        at = (at + f->batch) % (m->test_images.count - f->batch);
        if (dadc_client_flag(c, m->test_images.data + at * 784,
                             m->test_labels.data + at, f->batch, res, NULL,
                             NULL, NULL) != 0)
            break;
        for (i = 0; i < f->batch && f->n < 20000; i++)
            f->ids[f->n++] = res[i].example_id;
    }
    dadc_client_close(c);
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

static void test_kill_during_flags(void)
{
    static flagger_t f[2];
    e2e_server_t srv;
    pthread_t t[2];
    dadc_client_t *c;
    uint64_t *ids;
    size_t n, i, k;

    e2e_server_start(&srv, test_path("storm"), extra);
    for (k = 0; k < 2; k++) {
        f[k].srv = &srv;
        f[k].batch = k == 0 ? 1 : 50;
        CHECK_EQ(pthread_create(&t[k], NULL, flagger_main, &f[k]), 0);
    }
    usleep(1500000);
    e2e_server_kill(&srv);
    for (k = 0; k < 2; k++)
        pthread_join(t[k], NULL);
    CHECK_INT(f[0].n, >, 0);
    CHECK_INT(f[1].n, >, 0);

    e2e_server_start(&srv, test_path("storm"), extra);
    c = e2e_connect(&srv, "checker");
    ids = e2e_list_example_ids(c, &n);
    CHECK_INT(n, >=, f[0].n + f[1].n);
    for (k = 0; k < 2; k++)
        for (i = 0; i < f[k].n; i++)
            CHECK(bsearch(&f[k].ids[i], ids, n, sizeof(*ids), cmp_u64));
    free(ids);
    dadc_client_close(c);
    e2e_server_stop(&srv);
}

int main(void)
{
    test_init("test_e2e_restart", 1700);
    TEST_RUN(test_kill_restart);
    TEST_RUN(test_kill_during_flags);
    return test_finish();
}
