/*
 * Many annotators at once: 50 clients, each on its own thread and
 * connection, flag at the same moment (pipelined batches). Every flag
 * the server acknowledged is stored exactly once, with its annotator.
 */
#include <pthread.h>

#include "e2e_util.h"
#include "test_util.h"

#define CLIENTS 50
#define PER_CLIENT 40

typedef struct annotator {
    int index;
    const e2e_server_t *srv;
    pthread_barrier_t *start;
    dadc_flag_result_t res[PER_CLIENT];
    dadc_flag_summary_t sum;
    int rc;
} annotator_t;

static void *annotator_main(void *arg)
{
    annotator_t *a = arg;
    const mnist_t *m = e2e_mnist();
    size_t first = (size_t)a->index * PER_CLIENT;
    dadc_client_t *c;
    char name[32];

    snprintf(name, sizeof(name), "annotator-%02d", a->index);
    c = e2e_connect(a->srv, name);
    /* 4 requests of 10 images, all in flight at once */
    dadc_client_set_batch_images(c, 10);
    pthread_barrier_wait(a->start);
    a->rc = dadc_client_flag(c, m->test_images.data + first * 784,
                             m->test_labels.data + first, PER_CLIENT,
                             a->res, &a->sum, NULL, NULL);
    dadc_client_close(c);
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

static void check_annotators(dadc_client_t *c)
{
    Dadc__StatsResponse *s;
    size_t i, ours = 0;

    CHECK_EQ(dadc_client_stats(c, &s), 0);
    CHECK_EQ(s->overall->submitted, CLIENTS * PER_CLIENT);
    for (i = 0; i < s->n_per_annotator; i++) {
        if (strncmp(s->per_annotator[i]->annotator, "annotator-", 10) != 0)
            continue;
        CHECK_EQ(s->per_annotator[i]->counts->submitted, PER_CLIENT);
        ours++;
    }
    CHECK_EQ(ours, CLIENTS);
    dadc__stats_response__free_unpacked(s, NULL);
}

static void test_fifty_clients(void)
{
    static const char *const extra[] = {"--round-threshold", "1000000",
                                        NULL};
    static annotator_t a[CLIENTS];
    pthread_barrier_t start;
    pthread_t t[CLIENTS];
    e2e_server_t srv;
    uint64_t acked[CLIENTS * PER_CLIENT], *ids;
    dadc_client_t *c;
    size_t n_acked = 0, n, i, k;

    e2e_server_start(&srv, test_path("data"), extra);
    e2e_mnist();
    pthread_barrier_init(&start, NULL, CLIENTS);
    for (k = 0; k < CLIENTS; k++) {
        a[k].index = (int)k;
        a[k].srv = &srv;
        a[k].start = &start;
        CHECK_EQ(pthread_create(&t[k], NULL, annotator_main, &a[k]), 0);
    }
    for (k = 0; k < CLIENTS; k++)
        pthread_join(t[k], NULL);
    pthread_barrier_destroy(&start);

    for (k = 0; k < CLIENTS; k++) {
        CHECK_EQ(a[k].rc, 0);
        CHECK_EQ(a[k].sum.acknowledged, PER_CLIENT);
        for (i = 0; i < PER_CLIENT; i++) {
            CHECK_EQ(a[k].res[i].status, 0);
            acked[n_acked++] = a[k].res[i].example_id;
        }
    }

    /* every acknowledged id once, and nothing else */
    qsort(acked, n_acked, sizeof(acked[0]), cmp_u64);
    for (i = 1; i < n_acked; i++)
        CHECK(acked[i] != acked[i - 1]);
    c = e2e_connect(&srv, "checker");
    ids = e2e_list_example_ids(c, &n);
    CHECK_EQ(n, n_acked);
    for (i = 0; i < n; i++)
        CHECK_EQ(ids[i], acked[i]);
    free(ids);
    check_annotators(c);
    dadc_client_close(c);
    e2e_server_stop(&srv);
}

int main(void)
{
    test_init("test_e2e_concurrent", 600);
    TEST_RUN(test_fifty_clients);
    return test_finish();
}
