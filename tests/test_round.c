/*
 * A DADC round on the real MNIST files and a real store: the fooling
 * examples are training images a freshly trained base model gets wrong.
 * The round must learn the flagged ones, keep MNIST accuracy and be
 * promoted; the gate must reject a candidate with a margin nobody can
 * meet and a sabotaged one; cancelling stops it.
 */
#include "test_util.h"

#include <sys/stat.h>
#include <time.h>

#include "idx.h"
#include "nn.h"
#include "round.h"
#include "store.h"

#define NWRONG 64
#define BASE_IMAGES 15000
#define WRONG_CHUNK 1000

/* Under the sanitizers the engine is many times slower: evaluate on the
 * first 1,000 MNIST test images there, on all 10,000 otherwise. */
#if defined(__SANITIZE_ADDRESS__)
#define TEST_IMAGES 1000
#else
#define TEST_IMAGES 10000
#endif

static mnist_t mnist;
/* mnist with the test set cut to TEST_IMAGES; shares its memory */
static mnist_t view;
static nn_model_t *base;
static double base_accuracy;
/* training images the base model gets wrong, with its predictions */
static size_t wrong_idx[NWRONG];
static uint8_t wrong_pred[NWRONG];
static size_t nwrong;

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* One epoch of base training on part of the training set (cheap under
 * the sanitizers): a weaker model than the server's, with plenty of
 * the other training images wrong to flag. */
static void base_train(void)
{
    nn_train_opts_t o;
    nn_train_result_t tr;
    nn_eval_t ev;
    dadc_error_t err = { 0 };

    CHECK_EQ(nn_model_create_reference(&base), 0);
    nn_model_init(base, 1);
    nn_train_opts_default(&o);
    o.epochs = 1;
    o.batch = 64;
    o.lr = 0.05;
    o.momentum = 0.9;
    o.lr_gamma = 1.0;
    o.weight_decay = 0.0;
    o.seed = 1;
    CHECK_EQ(nn_train(base, mnist.train_images.data,
                      mnist.train_labels.data, BASE_IMAGES, &o, &tr, &err),
             0);
    CHECK_EQ(nn_evaluate(base, view.test_images.data,
                         view.test_labels.data, view.test_images.count,
                         &ev), 0);
    base_accuracy = ev.accuracy;
    CHECK_INT(base_accuracy * 1000, >, 900);
}

/* Look for wrong answers chunk by chunk, from the images the base was
 * not trained on. */
static void base_find_wrong(void)
{
    size_t n = mnist.train_images.count;
    float *probs = malloc(WRONG_CHUNK * NN_CLASSES * sizeof(float));
    nn_ctx_t *ctx = NULL;

    CHECK(probs != NULL);
    CHECK_EQ(nn_ctx_create(&ctx, base, 256), 0);
    for (size_t at = BASE_IMAGES; at < n && nwrong < NWRONG;
         at += WRONG_CHUNK) {
        size_t k = n - at < WRONG_CHUNK ? n - at : WRONG_CHUNK;

        CHECK_EQ(nn_predict(ctx, base, mnist.train_images.data + at * 784,
                            k, probs), 0);
        for (size_t i = 0; i < k && nwrong < NWRONG; i++) {
            int p = nn_argmax(probs + i * NN_CLASSES);

            if (p != mnist.train_labels.data[at + i]) {
                wrong_idx[nwrong] = at + i;
                wrong_pred[nwrong++] = (uint8_t)p;
            }
        }
    }
    nn_ctx_free(ctx);
    free(probs);
    CHECK_EQ(nwrong, NWRONG);
}

static void example_from_wrong(store_example_t *ex, size_t k)
{
    memset(ex, 0, sizeof(*ex));
    memcpy(ex->image, mnist.train_images.data + wrong_idx[k] * 784, 784);
    ex->label = mnist.train_labels.data[wrong_idx[k]];
    ex->predicted = wrong_pred[k];
    ex->model_version = 1;
    snprintf(ex->annotator, sizeof(ex->annotator), "tester");
}

/* A store holding the base as version 1. */
static store_t *store_with_base(const char *name)
{
    const char *dir = test_path(name);
    Dadc__ModelInfo info = DADC__MODEL_INFO__INIT;
    store_t *s = NULL;
    uint8_t *st = NULL;
    size_t len = 0;
    uint32_t v = 0;

    CHECK_EQ(mkdir(dir, 0755), 0);
    CHECK_EQ(store_open(&s, dir, NULL, NULL), 0);
    CHECK_EQ(nn_model_to_safetensors(base, NULL, &st, &len), 0);
    info.promoted = true;
    info.mnist_test_accuracy = base_accuracy;
    CHECK_EQ(store_model_add(s, &info, st, len, NULL, true, &v, NULL), 0);
    CHECK_EQ(v, 1);
    free(st);
    return s;
}

/* Flag wrong examples one by one from *next until `train` of them are
 * training (non-held-out) examples. */
static void flag_until(store_t *s, size_t *next, size_t train)
{
    store_example_t ex;
    size_t got = 0;

    while (got < train) {
        CHECK(*next < nwrong);
        example_from_wrong(&ex, (*next)++);
        CHECK_EQ(store_examples_put(s, &ex, 1, NULL), 0);
        CHECK(ex.fooled);
        got += !ex.heldout;
    }
}

static void input_init(round_input_t *in, const round_data_t *data)
{
    memset(in, 0, sizeof(*in));
    in->current = base;
    in->current_version = 1;
    in->current_mnist_accuracy = base_accuracy;
    in->mnist = &view;
    in->data = data;
    round_opts_default(&in->opts);
}

/* How many of set's images m classifies correctly. */
static size_t count_correct(const nn_model_t *m, const round_set_t *set)
{
    nn_eval_t ev;

    CHECK_EQ(nn_evaluate(m, set->images, set->labels, set->n, &ev), 0);
    return ev.correct;
}

static void second_round(store_t *s, size_t *next, const nn_model_t *cur,
                         double cur_accuracy)
{
    round_data_t data;
    round_input_t in;
    round_result_t res;
    uint32_t r = 0;

    flag_until(s, next, 10);
    CHECK_EQ(store_round_begin(s, "flags", 2, 0, &r, NULL), 0);
    CHECK_EQ(r, 2);
    CHECK_EQ(round_data_load(s, r, &data, NULL), 0);
    CHECK_EQ(data.train.n, 20);
    CHECK_EQ(data.ngroups, 2);
    input_init(&in, &data);
    in.current = cur;
    in.current_version = 2;
    in.current_mnist_accuracy = cur_accuracy;
    CHECK_EQ(round_run(&in, &res, NULL), 0);
    printf("second round: MNIST %.2f%% -> %.2f%%, flags learned %zu/20\n",
           cur_accuracy * 100, res.mnist_accuracy * 100,
           count_correct(res.candidate, &data.train));
    CHECK_INT(count_correct(res.candidate, &data.train), >=, 16);
    CHECK(res.promoted);
    /* 20 fooling flags shown 24 times: replay grows to 3 x 480 */
    CHECK_EQ(res.train_examples, 20);
    CHECK_EQ(res.replay_examples, 1440);
    CHECK_EQ(res.nfigures, 5);
    CHECK_STR(res.figures[4].set, "round-2");
    CHECK_EQ(res.figures[4].round, 2);
    round_result_free(&res);
    round_data_free(&data);
}

static void test_round_learns_flagged(void)
{
    store_t *s = store_with_base("learn");
    round_data_t data;
    round_input_t in;
    round_result_t res;
    round_records_t rec;
    Dadc__RoundInfo *begun = NULL, *ri = NULL;
    Dadc__ModelInfo *mi = NULL;
    nn_model_t *loaded = NULL;
    size_t next = 0;
    uint32_t r = 0, v = 0;
    double t0;
    dadc_error_t err = { 0 };

    flag_until(s, &next, 10);
    CHECK_EQ(store_round_begin(s, "flags", 1, 0, &r, NULL), 0);
    CHECK_EQ(round_data_load(s, r, &data, NULL), 0);
    CHECK_EQ(data.train.n, 10);
    CHECK_EQ(data.train.n + data.heldout.n, next);
    CHECK_EQ(count_correct(base, &data.train), 0);

    input_init(&in, &data);
    t0 = now_s();
    if (round_run(&in, &res, &err) != 0)
        test_fail(__FILE__, __LINE__, "round: %s",
                  dadc_error_message(&err));
    printf("round: %.3f s (train %.3f s, eval %.3f s), MNIST %.2f%% -> "
           "%.2f%%, flagged learned %zu/10\n", now_s() - t0,
           res.train_seconds, res.eval_seconds, base_accuracy * 100,
           res.mnist_accuracy * 100, count_correct(res.candidate,
                                                   &data.train));
    CHECK_INT(count_correct(res.candidate, &data.train), >=, 8);
    CHECK(res.promoted);
    CHECK(res.mnist_accuracy >= base_accuracy - 0.003);
    CHECK_CONTAINS(res.reason, "promoted");
    CHECK_EQ(res.train_examples, 10);
    CHECK_EQ(res.replay_examples, in.opts.replay);
    CHECK_STR(res.figures[0].set, "mnist-test");
    CHECK_EQ(res.figures[0].examples, TEST_IMAGES);
    CHECK_STR(res.figures[3].set, "round-1");

    /* the store keeps it as version 2, current, with its round */
    CHECK_EQ(store_round_get(s, r, &begun, NULL), 0);
    CHECK_EQ(round_records_fill(&res, &in, begun, &rec), 0);
    CHECK_EQ(store_model_add(s, &rec.model, res.safetensors,
                             res.safetensors_len, &rec.round, res.promoted,
                             &v, NULL), 0);
    CHECK_EQ(v, 2);
    CHECK_EQ(store_model_get(s, 2, &mi, NULL), 0);
    CHECK(mi->current && mi->promoted);
    CHECK_EQ(mi->parent_version, 1);
    CHECK_EQ(mi->n_figures, res.nfigures);
    CHECK_CONTAINS(mi->layers, "conv2d");
    CHECK_EQ(store_round_get(s, r, &ri, NULL), 0);
    CHECK(!ri->running && ri->promoted);
    CHECK_EQ(ri->candidate_version, 2);
    CHECK_STR(ri->trigger, "flags");
    CHECK_STR(ri->reason, res.reason);

    /* the stored weights are the candidate */
    CHECK_EQ(nn_model_from_safetensors(res.safetensors, res.safetensors_len,
                                       &loaded, NULL, NULL), 0);
    CHECK_EQ(count_correct(loaded, &data.train),
             count_correct(res.candidate, &data.train));

    /* a second round trains on both rounds' flags and keeps the first */
    second_round(s, &next, res.candidate, res.mnist_accuracy);

    nn_model_free(loaded);
    dadc__model_info__free_unpacked(mi, NULL);
    dadc__round_info__free_unpacked(ri, NULL);
    dadc__round_info__free_unpacked(begun, NULL);
    round_records_free(&rec);
    round_result_free(&res);
    round_data_free(&data);
    store_close(s);
}

static void run_rejected(round_input_t *in, store_t *s, uint32_t r)
{
    round_result_t res;
    round_records_t rec;
    Dadc__ModelInfo *mi = NULL;
    store_counters_t c;
    uint32_t v = 0;

    CHECK_EQ(round_run(in, &res, NULL), 0);
    CHECK(!res.promoted);
    CHECK_CONTAINS(res.reason, "rejected");
    CHECK_EQ(round_records_fill(&res, in, NULL, &rec), 0);
    CHECK_EQ(store_model_add(s, &rec.model, res.safetensors,
                             res.safetensors_len, &rec.round, res.promoted,
                             &v, NULL), 0);
    CHECK_EQ(store_counters_get(s, &c, NULL), 0);
    CHECK_EQ(c.current_version, 1);
    CHECK_EQ(c.latest_version, v);
    CHECK_EQ(store_model_get(s, v, &mi, NULL), 0);
    CHECK(!mi->promoted && !mi->current);
    CHECK_EQ(rec.round.round, r);
    dadc__model_info__free_unpacked(mi, NULL);
    round_records_free(&rec);
    round_result_free(&res);
}

static void test_gate_rejects(void)
{
    store_t *s = store_with_base("reject");
    round_data_t data;
    round_input_t in;
    round_result_t res;
    Dadc__RoundInfo *ri = NULL;
    size_t next = 20;
    uint32_t r = 0;

    flag_until(s, &next, 10);
    CHECK_EQ(store_round_begin(s, "manual", 1, 0, &r, NULL), 0);
    CHECK_EQ(round_data_load(s, r, &data, NULL), 0);
    input_init(&in, &data);
    in.opts.epochs = 1;
    in.opts.replay = 200;
    in.opts.margin = -100.0;  /* would need +100 points */
    run_rejected(&in, s, r);
    CHECK_EQ(store_round_get(s, r, &ri, NULL), 0);
    CHECK(!ri->promoted);
    CHECK_CONTAINS(ri->reason, "more than");
    dadc__round_info__free_unpacked(ri, NULL);

    /* a sabotaged candidate: a learning rate that wrecks it */
    CHECK_EQ(store_round_begin(s, "manual", 1, 0, &r, NULL), 0);
    round_data_free(&data);
    CHECK_EQ(round_data_load(s, r, &data, NULL), 0);
    input_init(&in, &data);
    in.opts.epochs = 1;
    in.opts.replay = 200;
    in.opts.lr = 50.0;
    in.opts.momentum = 0.9;
    run_rejected(&in, s, r);

    /* cancelled before it starts: nothing comes out */
    input_init(&in, &data);
    {
        volatile int cancel = 1;

        in.cancel = &cancel;
        CHECK_EQ(round_run(&in, &res, NULL), DADC_ECANCELED);
        CHECK(res.candidate == NULL && res.safetensors == NULL);
    }
    input_init(&in, &data);
    in.opts.epochs = 0;
    CHECK_EQ(round_run(&in, &res, NULL), DADC_ERANGE);
    round_data_free(&data);
    store_close(s);
}

static void test_deterministic(void)
{
    store_t *s = store_with_base("again");
    round_data_t data;
    round_input_t in;
    round_result_t a, b;
    size_t next = 30;
    uint32_t r = 0;

    flag_until(s, &next, 5);
    CHECK_EQ(store_round_begin(s, "manual", 1, 0, &r, NULL), 0);
    CHECK_EQ(round_data_load(s, r, &data, NULL), 0);
    input_init(&in, &data);
    in.opts.epochs = 1;
    in.opts.replay = 200;
    CHECK_EQ(round_run(&in, &a, NULL), 0);
    CHECK_EQ(round_run(&in, &b, NULL), 0);
    CHECK_EQ(a.safetensors_len, b.safetensors_len);
    CHECK_EQ(memcmp(a.safetensors, b.safetensors, a.safetensors_len), 0);
    CHECK_EQ(a.figures[0].correct, b.figures[0].correct);
    round_result_free(&a);
    round_result_free(&b);
    round_data_free(&data);
    store_close(s);
}

static void test_data_by_round(void)
{
    store_t *s = store_with_base("data");
    round_data_t data;
    size_t next = 40, n1, n2;
    uint32_t r = 0;

    flag_until(s, &next, 3);
    n1 = next - 40;
    CHECK_EQ(store_round_begin(s, "manual", 1, 0, &r, NULL), 0);
    CHECK_EQ(store_round_fail(s, r, "test", NULL), 0);
    flag_until(s, &next, 4);
    n2 = next - 40 - n1;
    CHECK_EQ(store_round_begin(s, "manual", 1, 0, &r, NULL), 0);
    CHECK_EQ(r, 2);
    flag_until(s, &next, 2);  /* round 3's, left out of round 2 */

    CHECK_EQ(round_data_load(s, 2, &data, NULL), 0);
    CHECK_EQ(data.train.n, 7);
    CHECK_EQ(data.train.n + data.heldout.n, n1 + n2);
    CHECK_EQ(data.ngroups, 2);
    CHECK_EQ(data.groups[0].n, n1);
    CHECK_EQ(data.groups[1].n, n2);
    CHECK_STR(data.groups[1].name, "round-2");
    for (size_t i = 0; i < data.train.n; i++)
        CHECK_EQ(data.train.fooled[i], 1);
    round_data_free(&data);
    store_close(s);
}

int main(void)
{
    const char *dir;
    dadc_error_t err = { 0 };

    test_init("test_round", 900);
    dir = test_mnist_dir();
    if (dir == NULL) {
        fprintf(stderr, "test_round: MNIST files missing\n");
        return 1;
    }
    if (mnist_load(dir, &mnist, &err) != 0) {
        fprintf(stderr, "test_round: %s\n", dadc_error_message(&err));
        return 1;
    }
    view = mnist;
    view.test_images.count = TEST_IMAGES;
    view.test_labels.count = TEST_IMAGES;
    base_train();
    base_find_wrong();
    TEST_RUN(test_round_learns_flagged);
    TEST_RUN(test_gate_rejects);
    TEST_RUN(test_deterministic);
    TEST_RUN(test_data_by_round);
    nn_model_free(base);
    mnist_free(&mnist);
    return test_finish();
}
