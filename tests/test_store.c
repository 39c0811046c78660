/*
 * The LMDB store, on a real environment in a temporary directory:
 * batches, reopening, map growth, versions and rounds written
 * atomically, rollback, the held-out split, a writer killed with
 * SIGKILL, and foreign or damaged data refused cleanly.
 */
#include "test_util.h"

#include <errno.h>
#include <lmdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "store.h"

static const char *fresh_dir(const char *name)
{
    const char *dir = test_path(name);

    CHECK_EQ(mkdir(dir, 0755), 0);
    return dir;
}

static store_t *open_ok(const char *dir, size_t map_bytes)
{
    store_opts_t o;
    store_t *s = NULL;
    dadc_error_t err = { 0 };
    int rc;

    store_opts_default(&o);
    o.map_bytes = map_bytes;
    rc = store_open(&s, dir, &o, &err);
    if (rc != 0)
        test_fail(__FILE__, __LINE__, "store_open %s: %s", dir,
                  dadc_error_message(&err));
    return s;
}

/* A deterministic example: image pattern from seed, label, prediction. */
static void example_make(store_example_t *ex, uint32_t seed, int label,
                         int predicted, const char *who)
{
    memset(ex, 0, sizeof(*ex));
    for (int i = 0; i < STORE_IMAGE_BYTES; i++)
        ex->image[i] = (uint8_t)((seed * 31u + (uint32_t)i * 7u) & 0xff);
    ex->label = (uint8_t)label;
    ex->predicted = (uint8_t)predicted;
    ex->model_version = 1;
    snprintf(ex->annotator, sizeof(ex->annotator), "%s", who);
}

static void put_batch(store_t *s, uint32_t seed0, size_t n)
{
    store_example_t *ex = calloc(n, sizeof(*ex));
    dadc_error_t err = { 0 };

    CHECK(ex != NULL);
    for (size_t i = 0; i < n; i++)
        example_make(&ex[i], seed0 + (uint32_t)i, (int)(i % 10),
                     (int)((i * 3) % 10), "ann");
    if (store_examples_put(s, ex, n, &err) != 0)
        test_fail(__FILE__, __LINE__, "put: %s", dadc_error_message(&err));
    free(ex);
}

static void test_batch_put_reopen(void)
{
    const char *dir = fresh_dir("batch");
    store_t *s = open_ok(dir, 0);
    store_example_t ex[100], got, page[40];
    store_counters_t c;
    uint64_t next = 0, total = 0;
    size_t n = 0;

    for (int i = 0; i < 100; i++)
        example_make(&ex[i], (uint32_t)i, i % 10, (i % 3) ? i % 10 : 0,
                     i < 50 ? "alice" : "bob");
    CHECK_EQ(store_examples_put(s, ex, 100, NULL), 0);
    for (int i = 0; i < 100; i++) {
        CHECK_EQ(ex[i].id, i + 1);
        CHECK_EQ(ex[i].round, 1);
        CHECK_EQ(ex[i].fooled, ex[i].label != ex[i].predicted);
        CHECK(ex[i].created_ms > 0);
    }
    store_close(s);

    s = open_ok(dir, 0);
    CHECK_EQ(store_counters_get(s, &c, NULL), 0);
    CHECK_EQ(c.examples, 100);
    CHECK_EQ(c.last_example_id, 100);
    CHECK_EQ(c.collecting_round, 1);
    CHECK_EQ(store_example_get(s, 57, &got, NULL), 0);
    CHECK_EQ(memcmp(got.image, ex[56].image, STORE_IMAGE_BYTES), 0);
    CHECK_EQ(got.label, ex[56].label);
    CHECK_EQ(got.predicted, ex[56].predicted);
    CHECK_EQ(got.heldout, ex[56].heldout);
    CHECK_EQ(got.created_ms, ex[56].created_ms);
    CHECK_STR(got.annotator, "bob");
    CHECK_EQ(store_example_get(s, 101, &got, NULL), DADC_ENOTFOUND);

    /* a long name is cut whole characters at a time: 31 two-byte
     * characters fit in 63 bytes, the cut lands inside the 32nd */
    example_make(&got, 1, 1, 1, "");
    for (int i = 0; i < STORE_ANNOTATOR_MAX; i += 2)
        memcpy(got.annotator + i, "\xc3\xa9", 2);
    CHECK_EQ(store_examples_put(s, &got, 1, NULL), 0);
    CHECK_EQ(strlen(got.annotator), 62);
    CHECK_EQ(store_example_get(s, got.id, &got, NULL), 0);
    CHECK_EQ(strlen(got.annotator), 62);

    /* pages: 40 + 40 + 20 */
    CHECK_EQ(store_examples_list(s, 0, 40, page, &n, &next, &total, NULL),
             0);
    CHECK_EQ(n, 40);
    CHECK_EQ(next, 40);
    CHECK_EQ(total, 101);
    CHECK_EQ(store_examples_list(s, 80, 40, page, &n, &next, NULL, NULL),
             0);
    CHECK_EQ(n, 21);
    CHECK_EQ(page[0].id, 81);
    CHECK_EQ(next, 0);
    store_close(s);
}

static void test_map_growth(void)
{
    const char *dir = fresh_dir("grow");
    store_t *s = open_ok(dir, 64 * 1024);
    store_counters_t c;
    store_example_t got;

    /* 64 KiB holds about 60 examples; write 6,000 of them, one batch
     * alone needing far more than the initial map. */
    for (int b = 0; b < 20; b++)
        put_batch(s, (uint32_t)b * 200, 200);
    put_batch(s, 100000, 2000);
    CHECK_EQ(store_counters_get(s, &c, NULL), 0);
    CHECK_EQ(c.examples, 6000);
    CHECK(c.map_bytes >= (size_t)6000 * 805);
    store_close(s);

    s = open_ok(dir, 64 * 1024);
    CHECK_EQ(store_counters_get(s, &c, NULL), 0);
    CHECK_EQ(c.examples, 6000);
    CHECK_EQ(store_example_get(s, 6000, &got, NULL), 0);
    CHECK_EQ(store_example_get(s, 1, &got, NULL), 0);
    store_close(s);
}

typedef struct reader_arg {
    store_t *s;
    atomic_int stop;
    int reads;
    int failures;
} reader_arg_t;

/* Read pages and counters until told to stop; every page must be
 * consistent (consecutive ids from 1). */
static void *reader_thread(void *p)
{
    reader_arg_t *ra = p;
    static store_example_t page[64];
    store_counters_t c;
    size_t n = 0;

    while (!atomic_load(&ra->stop)) {
        if (store_counters_get(ra->s, &c, NULL) != 0 ||
            store_examples_list(ra->s, 0, 64, page, &n, NULL, NULL,
                                NULL) != 0)
            ra->failures++;
        for (size_t i = 0; i < n; i++)
            if (page[i].id != i + 1)
                ra->failures++;
        ra->reads++;
    }
    return NULL;
}

static void test_growth_with_readers(void)
{
    const char *dir = fresh_dir("readers");
    store_t *s = open_ok(dir, 64 * 1024);
    reader_arg_t ra = { .s = s };
    store_counters_t c;
    pthread_t th;

    CHECK_EQ(pthread_create(&th, NULL, reader_thread, &ra), 0);
    for (int b = 0; b < 40; b++)
        put_batch(s, (uint32_t)b * 100, 100);
    atomic_store(&ra.stop, 1);
    CHECK_EQ(pthread_join(th, NULL), 0);
    CHECK_EQ(ra.failures, 0);
    CHECK_INT(ra.reads, >, 0);
    CHECK_EQ(store_counters_get(s, &c, NULL), 0);
    CHECK_EQ(c.examples, 4000);
    CHECK(c.map_bytes > 64 * 1024);
    store_close(s);
}

static uint32_t add_model(store_t *s, uint8_t fill, size_t len,
                          const Dadc__RoundInfo *round, bool current,
                          dadc_error_t *err)
{
    Dadc__ModelInfo info = DADC__MODEL_INFO__INIT;
    uint8_t *w = malloc(len);
    uint32_t v = 0;
    int rc;

    CHECK(w != NULL);
    memset(w, fill, len);
    info.promoted = current;
    info.mnist_test_accuracy = 0.99;
    info.layers = "[]";
    info.round = round != NULL ? round->round : 0;
    rc = store_model_add(s, &info, w, len, round, current, &v, err);
    free(w);
    return rc == 0 ? v : 0;
}

static void check_weights(store_t *s, uint32_t v, uint8_t fill, size_t len)
{
    uint8_t *buf = NULL;
    size_t n = 0;

    CHECK_EQ(store_weights_get(s, v, &buf, &n, NULL), 0);
    CHECK_EQ(n, len);
    for (size_t i = 0; i < n; i++)
        CHECK_EQ(buf[i], fill);
    free(buf);
}

static void test_versions_and_rounds(void)
{
    const char *dir = fresh_dir("versions");
    store_t *s = open_ok(dir, 0);
    Dadc__RoundInfo round = DADC__ROUND_INFO__INIT, *ri = NULL;
    Dadc__ModelInfo *mi = NULL, **models = NULL;
    store_counters_t c;
    uint32_t r = 0, prev = 0;
    uint8_t *w = NULL;
    size_t n = 0;
    dadc_error_t err = { 0 };

    CHECK_EQ(add_model(s, 1, 1000, NULL, true, NULL), 1);
    put_batch(s, 0, 10);
    CHECK_EQ(store_round_begin(s, "flags", 1, 0, &r, NULL), 0);
    CHECK_EQ(r, 1);
    CHECK_EQ(store_round_begin(s, "manual", 1, 0, &r, &err),
             DADC_EBUSY);

    /* a promoted candidate: version, round record and pointer together */
    round.round = 1;
    round.promoted = true;
    round.reason = "promoted: test";
    CHECK_EQ(add_model(s, 2, 2000, &round, true, NULL), 2);
    CHECK_EQ(store_round_get(s, 1, &ri, NULL), 0);
    CHECK(!ri->running);
    CHECK_EQ(ri->candidate_version, 2);
    CHECK_STR(ri->reason, "promoted: test");
    CHECK_STR(ri->trigger, "flags");
    dadc__round_info__free_unpacked(ri, NULL);

    /* a finished round cannot be finished again: nothing is written */
    CHECK_EQ(add_model(s, 3, 3000, &round, true, &err), 0);
    CHECK_EQ(err.code, DADC_ERANGE);
    CHECK_EQ(store_counters_get(s, &c, NULL), 0);
    CHECK_EQ(c.latest_version, 2);
    CHECK_EQ(c.current_version, 2);
    CHECK_EQ(store_weights_get(s, 3, &w, &n, NULL), DADC_ENOTFOUND);
    CHECK(w == NULL);

    /* a rejected candidate is kept but does not serve */
    CHECK_EQ(store_round_begin(s, "manual", 2, 0, &r, NULL), 0);
    CHECK_EQ(r, 2);
    round.round = 2;
    round.promoted = false;
    round.reason = "rejected: test";
    CHECK_EQ(add_model(s, 3, 3000, &round, false, NULL), 3);
    store_close(s);

    s = open_ok(dir, 0);
    CHECK_EQ(store_counters_get(s, &c, NULL), 0);
    CHECK_EQ(c.current_version, 2);
    CHECK_EQ(c.latest_version, 3);
    CHECK_EQ(c.collecting_round, 3);
    check_weights(s, 1, 1, 1000);
    check_weights(s, 2, 2, 2000);
    check_weights(s, 3, 3, 3000);
    CHECK_EQ(store_model_get(s, 2, &mi, NULL), 0);
    CHECK(mi->current);
    CHECK_EQ(mi->size_bytes, 2000);
    CHECK_EQ(mi->round, 1);
    dadc__model_info__free_unpacked(mi, NULL);
    CHECK_EQ(store_models_list(s, &models, &n, NULL), 0);
    CHECK_EQ(n, 3);
    CHECK(!models[0]->current && models[1]->current && !models[2]->current);
    CHECK(!models[2]->promoted);
    store_models_free(models, n);

    /* rollback moves only the pointer */
    CHECK_EQ(store_rollback(s, 1, &prev, NULL), 0);
    CHECK_EQ(prev, 2);
    CHECK_EQ(store_rollback(s, 42, NULL, &err), DADC_ENOTFOUND);
    CHECK_CONTAINS(err.msg, "42");
    store_close(s);
    s = open_ok(dir, 0);
    CHECK_EQ(store_counters_get(s, &c, NULL), 0);
    CHECK_EQ(c.current_version, 1);
    check_weights(s, 2, 2, 2000);
    store_close(s);
}

static void test_round_fail_and_interrupted(void)
{
    const char *dir = fresh_dir("rounds");
    store_t *s = open_ok(dir, 0);
    Dadc__RoundInfo **rounds = NULL;
    store_example_t ex;
    uint32_t r = 0;
    size_t n = 0;

    CHECK_EQ(add_model(s, 1, 100, NULL, true, NULL), 1);
    CHECK_EQ(store_round_begin(s, "manual", 1, 0, &r, NULL), 0);
    CHECK_EQ(store_round_fail(s, r, "cancelled", NULL), 0);
    CHECK_EQ(store_round_fail(s, 9, "x", NULL), DADC_ENOTFOUND);
    CHECK_EQ(store_round_begin(s, "flags", 1, 0, &r, NULL), 0);
    CHECK_EQ(r, 2);
    example_make(&ex, 1, 3, 5, "");
    CHECK_EQ(store_examples_put(s, &ex, 1, NULL), 0);
    CHECK_EQ(ex.round, 3);
    store_close(s);  /* round 2 left running, as by a crash */

    s = open_ok(dir, 0);
    CHECK_EQ(store_rounds_list(s, &rounds, &n, NULL), 0);
    CHECK_EQ(n, 2);
    CHECK(!rounds[0]->running);
    CHECK_STR(rounds[0]->reason, "cancelled");
    CHECK(!rounds[1]->running);
    CHECK_CONTAINS(rounds[1]->reason, "interrupted");
    store_rounds_free(rounds, n);
    CHECK_EQ(store_round_begin(s, "manual", 1, 0, &r, NULL), 0);
    CHECK_EQ(r, 3);
    store_close(s);
}

static void test_heldout_share(void)
{
    const char *dir = fresh_dir("heldout");
    store_t *s = open_ok(dir, 0);
    static store_example_t page[10000];
    bool flags[10001];
    size_t n = 0, held = 0;

    put_batch(s, 0, 10000);
    CHECK_EQ(store_examples_list(s, 0, 10000, page, &n, NULL, NULL, NULL),
             0);
    CHECK_EQ(n, 10000);
    for (size_t i = 0; i < n; i++) {
        flags[page[i].id] = page[i].heldout;
        held += page[i].heldout;
        CHECK_EQ(page[i].heldout, store_heldout_pick(page[i].id, 0.2));
    }
    /* binomial(10000, 0.2): sd 40, so +-200 is five sd */
    CHECK_INT(held, >, 1800);
    CHECK_INT(held, <, 2200);
    store_close(s);

    /* another share in the options moves no stored example */
    {
        store_opts_t o;
        store_opts_default(&o);
        o.heldout_share = 0.5;
        CHECK_EQ(store_open(&s, dir, &o, NULL), 0);
    }
    CHECK_EQ(store_examples_list(s, 0, 10000, page, &n, NULL, NULL, NULL),
             0);
    for (size_t i = 0; i < n; i++)
        CHECK_EQ(page[i].heldout, flags[page[i].id]);
    store_close(s);
}

/* Child: write batches until killed, acknowledging each committed one
 * with its last id on fd. */
static void writer_child(const char *dir, int fd)
{
    store_t *s = NULL;
    store_example_t ex[20];
    uint8_t w[4096];

    if (store_open(&s, dir, NULL, NULL) != 0)
        _exit(2);
    memset(w, 7, sizeof(w));
    for (uint32_t b = 0;; b++) {
        for (int i = 0; i < 20; i++)
            example_make(&ex[i], b * 20 + (uint32_t)i + 1, i % 10, 0, "k");
        if (store_examples_put(s, ex, 20, NULL) != 0)
            _exit(3);
        if (b % 10 == 0) {
            Dadc__ModelInfo info = DADC__MODEL_INFO__INIT;

            if (store_model_add(s, &info, w, sizeof(w), NULL, true, NULL,
                                NULL) != 0)
                _exit(4);
        }
        if (write(fd, &ex[19].id, sizeof(ex[19].id)) != sizeof(uint64_t))
            _exit(5);
    }
}

static void test_sigkill_keeps_committed(void)
{
    const char *dir = fresh_dir("kill");
    int fds[2], status = 0;
    uint64_t id = 0, acked = 0, acks = 0;
    store_example_t got, want;
    store_counters_t c;
    store_t *s;
    pid_t pid;

    CHECK_EQ(pipe(fds), 0);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        writer_child(dir, fds[1]);
    }
    close(fds[1]);

    /* let it commit a good number of batches, then kill it mid-stream */
    while (acks < 150 && read(fds[0], &id, sizeof(id)) == sizeof(id)) {
        acked = id;
        acks++;
    }
    CHECK_EQ(acks, 150);
    CHECK_EQ(kill(pid, SIGKILL), 0);
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    CHECK(WIFSIGNALED(status));
    while (read(fds[0], &id, sizeof(id)) == sizeof(id))
        acked = id;
    close(fds[0]);

    s = open_ok(dir, 0);
    CHECK_EQ(store_counters_get(s, &c, NULL), 0);
    CHECK_INT(c.examples, >=, acked);
    CHECK_EQ(c.examples, c.last_example_id);
    CHECK_EQ(c.examples % 20, 0);
    CHECK_INT(c.latest_version, >=, 15);
    CHECK_EQ(c.current_version, c.latest_version);
    for (uint64_t i = 1; i <= c.examples; i++) {
        CHECK_EQ(store_example_get(s, i, &got, NULL), 0);
        example_make(&want, (uint32_t)i, (int)((i - 1) % 20 % 10), 0,
                     "k");
        CHECK_EQ(memcmp(got.image, want.image, STORE_IMAGE_BYTES), 0);
        CHECK_EQ(got.label, want.label);
    }
    store_close(s);
}

/* One open store per directory: a second open, in this process or
 * another, is refused naming the holder's pid, and the lock goes with
 * the holder, even one killed with SIGKILL. */
static void test_exclusive_lock(void)
{
    const char *dir = fresh_dir("locked");
    dadc_error_t err = { 0 };
    store_t *s = open_ok(dir, 0), *t = NULL;
    int fds[2], status = 0;
    char want[128], ok = 0;
    pid_t pid;

    CHECK_EQ(store_open(&t, dir, NULL, &err), -EBUSY);
    CHECK(t == NULL);
    snprintf(want, sizeof(want), "%s is in use by another server (pid %ld)",
             dir, (long)getpid());
    CHECK_CONTAINS(err.msg, want);
    store_close(s);

    CHECK_EQ(pipe(fds), 0);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        if (store_open(&s, dir, NULL, NULL) != 0 ||
            write(fds[1], "y", 1) != 1)
            _exit(2);
        for (;;)
            pause();
    }
    close(fds[1]);
    CHECK_EQ(read(fds[0], &ok, 1), 1);
    close(fds[0]);
    CHECK_EQ(store_open(&t, dir, NULL, &err), -EBUSY);
    snprintf(want, sizeof(want), "(pid %ld)", (long)pid);
    CHECK_CONTAINS(err.msg, want);

    CHECK_EQ(kill(pid, SIGKILL), 0);
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    CHECK(WIFSIGNALED(status));
    s = open_ok(dir, 0);
    store_close(s);
}

/* Write raw LMDB data into dir, as another program would. */
static void raw_put(const char *dir, const char *db, const void *key,
                    size_t klen, const void *val, size_t vlen)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_val k = { klen, (void *)key }, d = { vlen, (void *)val };

    CHECK_EQ(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 8);
    CHECK_EQ(mdb_env_open(env, dir, 0, 0644), 0);
    CHECK_EQ(mdb_txn_begin(env, NULL, 0, &txn), 0);
    CHECK_EQ(mdb_dbi_open(txn, db, db ? MDB_CREATE : 0, &dbi), 0);
    CHECK_EQ(mdb_put(txn, dbi, &k, &d, 0), 0);
    CHECK_EQ(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

static void check_refused(const char *dir, const char *needle)
{
    store_t *s = NULL;
    dadc_error_t err = { 0 };

    CHECK_EQ(store_open(&s, dir, NULL, &err), DADC_EFORMAT);
    CHECK(s == NULL);
    CHECK_CONTAINS(err.msg, needle);
}

static void test_foreign_data_refused(void)
{
    const char *dir;
    uint8_t junk[65536];
    store_opts_t o;
    store_t *s = NULL;
    dadc_error_t err = { 0 };

    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (uint8_t)(i * 131u + 17u);
    dir = fresh_dir("junkfile");
    test_write_file(test_path("junkfile/data.mdb"), junk, sizeof(junk));
    check_refused(dir, "not");

    dir = fresh_dir("foreign");
    raw_put(dir, NULL, "hello", 5, "world", 5);
    check_refused(dir, "not a DADC store");

    dir = fresh_dir("foreign-meta");
    raw_put(dir, "meta", "colour", 6, "blue", 4);
    check_refused(dir, "schema");

    dir = fresh_dir("newer");
    raw_put(dir, "meta", "schema", 6, "\x07\0\0\0", 4);
    check_refused(dir, "schema version 7");

    /* a real store cut short, as by a bad copy */
    dir = fresh_dir("truncated");
    s = open_ok(dir, 0);
    put_batch(s, 0, 500);
    store_close(s);
    s = NULL;
    CHECK_EQ(truncate(test_path("truncated/data.mdb"), 3 * 4096), 0);
    CHECK_EQ(store_open(&s, dir, NULL, &err), DADC_ETRUNC);
    CHECK_CONTAINS(err.msg, "truncated");

    CHECK_EQ(store_open(&s, test_path("absent"), NULL, &err), -ENOENT);
    CHECK_CONTAINS(err.msg, "absent");
    store_opts_default(&o);
    o.heldout_share = 1.5;
    CHECK_EQ(store_open(&s, test_path("foreign"), &o, &err), DADC_ERANGE);
}

static void test_damaged_records(void)
{
    const char *dir = fresh_dir("damaged");
    store_t *s = open_ok(dir, 0);
    store_example_t got, page[10];
    Dadc__ModelInfo **models = NULL, *mi = NULL;
    uint8_t key[8] = { 0, 0, 0, 0, 0, 0, 0, 3 };
    uint8_t vkey[4] = { 0, 0, 0, 2 };
    dadc_error_t err = { 0 };
    size_t n = 0;

    put_batch(s, 0, 5);
    CHECK_EQ(add_model(s, 1, 100, NULL, true, NULL), 1);
    store_close(s);
    raw_put(dir, "examples", key, 8, "garbage", 7);
    raw_put(dir, "models", vkey, 4, "\xff\xff\xff", 3);

    s = open_ok(dir, 0);
    CHECK_EQ(store_example_get(s, 2, &got, NULL), 0);
    CHECK_EQ(store_example_get(s, 3, &got, &err), DADC_EFORMAT);
    CHECK_CONTAINS(err.msg, "record 3");
    CHECK_EQ(store_examples_list(s, 0, 10, page, &n, NULL, NULL, &err),
             DADC_EFORMAT);
    CHECK_EQ(n, 2);
    CHECK_EQ(store_model_get(s, 2, &mi, &err), DADC_EFORMAT);
    CHECK(mi == NULL);
    CHECK_EQ(store_models_list(s, &models, &n, &err), DADC_EFORMAT);
    CHECK(models == NULL);
    store_close(s);
}

int main(void)
{
    test_init("test_store", 240);
    TEST_RUN(test_batch_put_reopen);
    TEST_RUN(test_map_growth);
    TEST_RUN(test_growth_with_readers);
    TEST_RUN(test_versions_and_rounds);
    TEST_RUN(test_round_fail_and_interrupted);
    TEST_RUN(test_heldout_share);
    TEST_RUN(test_sigkill_keeps_committed);
    TEST_RUN(test_exclusive_lock);
    TEST_RUN(test_foreign_data_refused);
    TEST_RUN(test_damaged_records);
    return test_finish();
}
