/*
 * Speed measurements of the model engine (see nn_bench.h).
 */
#include "nn_bench.h"
#include "nn_internal.h"

#include <string.h>
#include <time.h>

#define BENCH_BATCH 64
#define BENCH_WARMUP 10

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void nn_model_flops(const nn_model_t *m, double *forward, double *train)
{
    double fwd = 0.0, first = -1.0;

    for (int i = 0; i < m->nlayers; i++) {
        const nn_shape_t *o = &m->out_shape[i];
        double f;

        if (m->w_count[i] == 0)
            continue;
        /* a multiply-add per weight per output position */
        f = 2.0 * (double)m->w_count[i] *
            (m->layers[i].kind == NN_CONV2D ? (double)o->h * o->w : 1.0);
        fwd += f;
        if (first < 0)
            first = f;
    }

    /* backward: weight gradients cost a forward, input gradients another,
     * except below the first layer with weights */
    *forward = fwd;
    *train = 3.0 * fwd - (first > 0 ? first : 0.0);
}

static int bench_train(nn_model_t *m, const uint8_t *img,
                       const uint8_t *lab, size_t n, int steps,
                       nn_bench_t *b)
{
    nn_train_opts_t o;
    nn_trainer_t *t;
    size_t batches = n / BENCH_BATCH;
    double t0 = 0.0;
    int rc;

    nn_train_opts_default(&o);
    o.batch = BENCH_BATCH;
    o.lr = 0.01;
    o.momentum = 0.5;
    rc = nn_trainer_create(&t, m, &o, 0);
    if (rc < 0)
        return rc;
    for (int s = 0; s < steps + BENCH_WARMUP; s++) {
        size_t at = (size_t)s % batches * BENCH_BATCH;

        if (s == BENCH_WARMUP)
            t0 = now_s();
        rc = nn_trainer_step(t, img + at * NN_IMAGE_PIXELS, lab + at,
                             BENCH_BATCH, NULL);
        if (rc < 0)
            break;
    }
    b->train_images_per_s = (double)steps * BENCH_BATCH / (now_s() - t0);
    b->train_gflops = b->train_images_per_s * b->flop_train * 1e-9;
    nn_trainer_free(t);
    return rc;
}

static int bench_single(const nn_model_t *m, const uint8_t *img, size_t n,
                        int reps, nn_bench_t *b)
{
    nn_ctx_t *ctx;
    float probs[NN_CLASSES];
    double t0 = 0.0;
    int rc = nn_ctx_create(&ctx, m, 1);

    if (rc < 0)
        return rc;
    for (int r = 0; r < reps + BENCH_WARMUP; r++) {
        if (r == BENCH_WARMUP)
            t0 = now_s();
        nn_predict(ctx, m, img + (size_t)r % n * NN_IMAGE_PIXELS, 1, probs);
    }
    b->single_us = (now_s() - t0) / reps * 1e6;
    b->single_gflops = b->flop_forward / (b->single_us * 1e-6) * 1e-9;
    nn_ctx_free(ctx);
    return 0;
}

int nn_bench_run(nn_model_t *m, const uint8_t *train_images,
                 const uint8_t *train_labels, size_t n_train,
                 const uint8_t *test_images, const uint8_t *test_labels,
                 size_t n_test, int train_steps, int single_reps,
                 nn_bench_t *out)
{
    nn_eval_t ev;
    int rc;

    memset(out, 0, sizeof(*out));
    if (n_train < BENCH_BATCH || n_test == 0 || train_steps < 1 ||
        single_reps < 1)
        return DADC_ERANGE;
    out->threads = nn_default_threads();
    out->batch = BENCH_BATCH;
    nn_model_flops(m, &out->flop_forward, &out->flop_train);
    rc = bench_train(m, train_images, train_labels, n_train, train_steps,
                     out);
    if (rc < 0)
        return rc;

    out->eval_images = n_test;
    out->eval_s = 1e30;
    for (int r = 0; r < 3; r++) {
        double t0 = now_s();

        rc = nn_evaluate(m, test_images, test_labels, n_test, &ev);
        if (rc < 0)
            return rc;
        if (now_s() - t0 < out->eval_s)
            out->eval_s = now_s() - t0;
    }
    out->eval_gflops = (double)n_test * out->flop_forward / out->eval_s *
                       1e-9;
    return bench_single(m, test_images, n_test, single_reps, out);
}
