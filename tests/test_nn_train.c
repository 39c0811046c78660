/*
 * Training on the real MNIST files: a short run reaches a stated test
 * accuracy (a smaller run under the sanitizers, which slow the engine
 * down tenfold), runs repeat exactly for a seed, progress is reported,
 * cancelling stops, and bad input is refused.
 */
#include "idx.h"
#include "nn.h"
#include "test_util.h"

#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif

#ifdef SANITIZED
#define TRAIN_IMAGES 3000
#define TEST_IMAGES 1000
#define MIN_ACCURACY 0.75
#define REPEAT_IMAGES 256
#define LR 0.05
#else
#define TRAIN_IMAGES 60000
#define TEST_IMAGES 10000
#define MIN_ACCURACY 0.96
#define REPEAT_IMAGES 1000
#define LR 0.01
#endif

static mnist_t d;

typedef struct progress_log {
    int calls;
    int last_epoch;
    size_t last_seen;
    int ordered;
} progress_log_t;

static void progress_cb(const nn_train_progress_t *p, void *user)
{
    progress_log_t *log = user;

    log->calls++;
    if (p->epoch < log->last_epoch ||
        (p->epoch == log->last_epoch && p->seen <= log->last_seen) ||
        p->seen > p->total || !(p->loss > 0) || !(p->images_per_s > 0))
        log->ordered = 0;
    log->last_epoch = p->epoch;
    log->last_seen = p->seen;
}

/* One epoch over TRAIN_IMAGES: the stated accuracy on the test set. */
static void test_short_run_accuracy(void)
{
    nn_model_t *m;
    nn_train_opts_t o;
    nn_train_result_t r;
    nn_eval_t ev;
    dadc_error_t err;
    progress_log_t log = {0, 0, 0, 1};
    size_t sum = 0;

    CHECK_EQ(nn_model_create_reference(&m), 0);
    nn_model_init(m, 1);
    nn_train_opts_default(&o);
    o.epochs = 1;
    o.lr = LR;
    o.momentum = 0.9;
    o.progress_cb = progress_cb;
    o.user = &log;
    CHECK_EQ(nn_train(m, d.train_images.data, d.train_labels.data,
                      TRAIN_IMAGES, &o, &r, &err),
             0);
    CHECK_EQ(r.epochs_done, 1);
    CHECK(log.ordered);
    CHECK_INT(log.calls, >=, TRAIN_IMAGES / 1024);
    CHECK_EQ(log.last_seen, TRAIN_IMAGES);

    CHECK_EQ(nn_evaluate(m, d.test_images.data, d.test_labels.data,
                         TEST_IMAGES, &ev),
             0);
    printf("  %d images, 1 epoch, %.1f s (%.0f images/s): test accuracy "
           "%.2f%% on %d, loss %.4f\n",
           TRAIN_IMAGES, r.seconds, r.images_per_s, 100 * ev.accuracy,
           TEST_IMAGES, ev.loss);
    CHECK(ev.accuracy >= MIN_ACCURACY);
    CHECK_EQ(ev.examples, TEST_IMAGES);
    for (int y = 0; y < NN_CLASSES; y++)
        for (int p = 0; p < NN_CLASSES; p++)
            sum += ev.confusion[y][p];
    CHECK_EQ(sum, TEST_IMAGES);
    nn_model_free(m);
}

/* The same seed and data give the same weights, bit for bit. */
static void test_repeatable(void)
{
    nn_model_t *a, *b;
    nn_train_opts_t o;
    nn_train_result_t r;

    nn_train_opts_default(&o);
    o.epochs = 2;
    o.seed = 77;
    CHECK_EQ(nn_model_create_reference(&a), 0);
    CHECK_EQ(nn_model_create_reference(&b), 0);
    nn_model_init(a, 77);
    nn_model_init(b, 77);
    CHECK_EQ(nn_train(a, d.train_images.data, d.train_labels.data,
                      REPEAT_IMAGES, &o, &r, NULL),
             0);
    CHECK_EQ(nn_train(b, d.train_images.data, d.train_labels.data,
                      REPEAT_IMAGES, &o, &r, NULL),
             0);
    CHECK(memcmp(nn_model_params(a), nn_model_params(b),
                 nn_model_nparams(a) * 4) == 0);

    /* another seed: other shuffles and dropout masks */
    o.seed = 78;
    nn_model_init(b, 77);
    CHECK_EQ(nn_train(b, d.train_images.data, d.train_labels.data,
                      REPEAT_IMAGES, &o, &r, NULL),
             0);
    CHECK(memcmp(nn_model_params(a), nn_model_params(b),
                 nn_model_nparams(a) * 4) != 0);
    nn_model_free(a);
    nn_model_free(b);
}

static void cancel_cb(const nn_train_progress_t *p, void *user)
{
    (void)p;
    *(volatile int *)user = 1;
}

static void test_cancel_and_bad_input(void)
{
    nn_model_t *m;
    nn_train_opts_t o;
    nn_train_result_t r;
    dadc_error_t err;
    volatile int cancel = 0;
    uint8_t labels[64];

    CHECK_EQ(nn_model_create_reference(&m), 0);
    nn_model_init(m, 1);
    nn_train_opts_default(&o);
    o.progress_cb = cancel_cb;
    o.user = (void *)&cancel;
    o.cancel = &cancel;
    CHECK_EQ(nn_train(m, d.train_images.data, d.train_labels.data, 2048, &o,
                      &r, &err),
             DADC_ECANCELED);
    CHECK_EQ(r.epochs_done, 0);

    nn_train_opts_default(&o);
    memcpy(labels, d.train_labels.data, 64);
    labels[10] = 12;
    CHECK_EQ(nn_train(m, d.train_images.data, labels, 64, &o, &r, &err),
             DADC_ERANGE);
    CHECK_CONTAINS(err.msg, "image 10");
    o.batch = 0;
    CHECK_EQ(nn_train(m, d.train_images.data, labels, 64, &o, &r, &err),
             DADC_ERANGE);
    nn_train_opts_default(&o);
    CHECK_EQ(nn_train(m, d.train_images.data, labels, 0, &o, &r, &err),
             DADC_EEMPTY);
    nn_model_free(m);
}

int main(void)
{
    const char *dir;
    dadc_error_t err;

    test_init("test_nn_train", 600);
    dir = test_mnist_dir();
    CHECK(dir != NULL);
    CHECK_EQ(mnist_load(dir, &d, &err), 0);
    TEST_RUN(test_short_run_accuracy);
    TEST_RUN(test_repeatable);
    TEST_RUN(test_cancel_and_bad_input);
    mnist_free(&d);
    return test_finish();
}
