/*
 * Speed measurements of the model engine, shared by `dadc-model bench`
 * and bench/bench_model.
 */
#ifndef DADC_NN_BENCH_H
#define DADC_NN_BENCH_H

#include <stddef.h>
#include <stdint.h>

#include "nn.h"

typedef struct nn_bench {
    int threads;              /* engine threads used */
    int batch;                /* training batch */
    double train_images_per_s;
    double train_gflops;      /* GFLOP/s reached while training */
    size_t eval_images;
    double eval_s;            /* best time to evaluate eval_images */
    double eval_gflops;
    double single_us;         /* mean latency of one-image nn_predict */
    double single_gflops;
    double flop_forward;      /* FLOP of one image forward */
    double flop_train;        /* FLOP of one image forward + backward */
} nn_bench_t;

/* FLOP of one image forward, and forward + backward, through m. */
void nn_model_flops(const nn_model_t *m, double *forward, double *train);

/*
 * Measure m (its parameters are trained on, so pass a scratch copy):
 * train_steps SGD steps of batch 64 (lr 0.01, momentum 0.5) on the
 * training images, evaluation of the n_test test images (best of 3),
 * and single_reps one-image predictions. Returns 0 or a negative code.
 */
int nn_bench_run(nn_model_t *m, const uint8_t *train_images,
                 const uint8_t *train_labels, size_t n_train,
                 const uint8_t *test_images, const uint8_t *test_labels,
                 size_t n_test, int train_steps, int single_reps,
                 nn_bench_t *out);

#endif
