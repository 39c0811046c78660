/*
 * bench_round: how long one DADC round takes with a handful of fooling
 * flags, against the 1 s target (10 flags -> new model promoted).
 *
 *   bench_round [--model FILE] [--mnist DIR] [--flags N] [--repeat K]
 *
 * The fooling examples are MNIST training images the model gets wrong.
 * Without --model a base model is trained for one epoch first (not
 * timed). Prints the median round time, its training and evaluation
 * parts, the target and the ratio. Exit codes: 0 done, 1 a failure,
 * 2 a usage error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "idx.h"
#include "nn.h"
#include "round.h"

#define TARGET_S 1.0
#define REPEAT_MAX 20

typedef struct bench_args {
    const char *model;
    const char *mnist;
    int flags;
    int repeat;
} bench_args_t;

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double cpu_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int usage(const char *msg)
{
    fprintf(stderr, "bench_round: %s\ntry 'bench_round --help'\n", msg);
    return 2;
}

static int args_parse(int argc, char **argv, bench_args_t *a)
{
    a->model = NULL;
    a->mnist = getenv("DADC_MNIST_DIR");
    if (a->mnist == NULL)
        a->mnist = "dadc-data/mnist";
    a->flags = 10;
    a->repeat = 5;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;

        if (strcmp(argv[i], "--help") == 0) {
            printf("usage: bench_round [--model FILE] [--mnist DIR] "
                   "[--flags N] [--repeat K]\n");
            exit(0);
        }
        if (v == NULL)
            return usage("an option needs a value");
        if (strcmp(argv[i], "--model") == 0)
            a->model = v;
        else if (strcmp(argv[i], "--mnist") == 0)
            a->mnist = v;
        else if (strcmp(argv[i], "--flags") == 0)
            a->flags = atoi(v);
        else if (strcmp(argv[i], "--repeat") == 0)
            a->repeat = atoi(v);
        else
            return usage("unknown option");
        i++;
    }
    if (a->flags < 1 || a->flags > 1000 || a->repeat < 1 ||
        a->repeat > REPEAT_MAX)
        return usage("--flags 1..1000, --repeat 1..20");
    return 0;
}

static int model_get(const bench_args_t *a, const mnist_t *mn,
                     nn_model_t **m, dadc_error_t *err)
{
    nn_train_opts_t o;
    nn_train_result_t tr;
    int rc;

    if (a->model != NULL)
        return nn_model_load(a->model, m, NULL, err);
    rc = nn_model_create_reference(m);
    if (rc != 0)
        return rc;
    nn_model_init(*m, 1);
    nn_train_opts_default(&o);
    o.epochs = 1;
    fprintf(stderr, "bench_round: no --model, training a base for one "
            "epoch\n");
    return nn_train(*m, mn->train_images.data, mn->train_labels.data,
                    mn->train_images.count, &o, &tr, err);
}

/* The first n training images m gets wrong, as the round's data. */
static int flags_make(const nn_model_t *m, const mnist_t *mn, int n,
                      round_data_t *d)
{
    size_t count = mn->train_images.count;
    float probs[NN_CLASSES];
    nn_ctx_t *ctx = NULL;

    memset(d, 0, sizeof(*d));
    d->round = 1;
    d->train.images = malloc((size_t)n * NN_IMAGE_PIXELS);
    d->train.labels = malloc((size_t)n);
    d->train.fooled = malloc((size_t)n);
    if (d->train.images == NULL || d->train.labels == NULL ||
        d->train.fooled == NULL || nn_ctx_create(&ctx, m, 1) != 0)
        return -1;
    for (size_t i = 0; i < count && d->train.n < (size_t)n; i++) {
        const uint8_t *img = mn->train_images.data + i * NN_IMAGE_PIXELS;

        if (nn_predict(ctx, m, img, 1, probs) != 0)
            break;
        if (nn_argmax(probs) == mn->train_labels.data[i])
            continue;
        memcpy(d->train.images + d->train.n * NN_IMAGE_PIXELS, img,
               NN_IMAGE_PIXELS);
        d->train.labels[d->train.n] = mn->train_labels.data[i];
        d->train.fooled[d->train.n++] = 1;
    }
    nn_ctx_free(ctx);
    return d->train.n == (size_t)n ? 0 : -1;
}

static double base_accuracy(const nn_model_t *m, const mnist_t *mn)
{
    nn_eval_t ev;

    if (nn_evaluate(m, mn->test_images.data, mn->test_labels.data,
                    mn->test_images.count, &ev) != 0)
        return -1.0;
    printf("model: MNIST test accuracy %.2f%%\n", ev.accuracy * 100.0);
    return ev.accuracy;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

static int bench_run(const round_input_t *in, int repeat)
{
    double total[REPEAT_MAX], train[REPEAT_MAX], eval[REPEAT_MAX];
    double cpu[REPEAT_MAX];
    round_result_t res;
    dadc_error_t err = { 0 };
    int promoted = 0;

    for (int k = 0; k < repeat; k++) {
        double t0 = now_s(), c0 = cpu_s();

        if (round_run(in, &res, &err) != 0) {
            fprintf(stderr, "bench_round: %s\n", dadc_error_message(&err));
            return 1;
        }
        total[k] = now_s() - t0;
        cpu[k] = cpu_s() - c0;
        train[k] = res.train_seconds;
        eval[k] = res.eval_seconds;
        promoted += res.promoted;
        round_result_free(&res);
    }
    qsort(total, (size_t)repeat, sizeof(double), cmp_double);
    qsort(train, (size_t)repeat, sizeof(double), cmp_double);
    qsort(eval, (size_t)repeat, sizeof(double), cmp_double);
    qsort(cpu, (size_t)repeat, sizeof(double), cmp_double);
    printf("round, %u flags (median of %d): %.3f s (train %.3f s, "
           "eval %.3f s; %.3f CPU-s), promoted %d/%d\n",
           (unsigned)in->data->train.n, repeat, total[repeat / 2],
           train[repeat / 2], eval[repeat / 2], cpu[repeat / 2], promoted,
           repeat);
    printf("target: %.3f s   ratio target/ours: %.2f\n", TARGET_S,
           TARGET_S / total[repeat / 2]);
    return 0;
}

int main(int argc, char **argv)
{
    bench_args_t a;
    mnist_t mn;
    nn_model_t *m = NULL;
    round_data_t data;
    round_input_t in;
    dadc_error_t err = { 0 };
    int rc;

    rc = args_parse(argc, argv, &a);
    if (rc != 0)
        return rc;
    if (mnist_load(a.mnist, &mn, &err) != 0 ||
        model_get(&a, &mn, &m, &err) != 0) {
        fprintf(stderr, "bench_round: %s\n", dadc_error_message(&err));
        return 1;
    }
    if (flags_make(m, &mn, a.flags, &data) != 0) {
        fprintf(stderr, "bench_round: not enough misclassified images\n");
        return 1;
    }

    memset(&in, 0, sizeof(in));
    in.current = m;
    in.current_version = 1;
    /* the server knows it from the version's record */
    in.current_mnist_accuracy = base_accuracy(m, &mn);
    in.mnist = &mn;
    in.data = &data;
    round_opts_default(&in.opts);
    rc = bench_run(&in, a.repeat);

    round_data_free(&data);
    nn_model_free(m);
    mnist_free(&mn);
    return rc;
}
