/*
 * The model engine's insides, shared by its source files and its tests
 * (not part of the public API in nn.h).
 *
 * Layouts. Spatial activations are kept channel-major over the batch,
 * (C, N, H, W), so one convolution over a whole batch is one large matrix
 * product (the batch becomes the long side of the GEMM). Flattened
 * activations are (N, F) as in PyTorch; flatten turns (C, N, H, W) into
 * (N, C*H*W) with PyTorch's element order.
 */
#ifndef DADC_NN_INTERNAL_H
#define DADC_NN_INTERNAL_H

#include <stdint.h>

#include "nn.h"

/* Shape of one image's activation: spatial (c, h, w) or flat (c). */
typedef struct nn_shape {
    int c;
    int h;
    int w;
    int flat;
} nn_shape_t;

struct nn_model {
    int nlayers;
    nn_layer_spec_t layers[NN_MAX_LAYERS];
    nn_shape_t in_shape[NN_MAX_LAYERS];
    nn_shape_t out_shape[NN_MAX_LAYERS];
    size_t w_off[NN_MAX_LAYERS];   /* weights of conv2d / linear */
    size_t w_count[NN_MAX_LAYERS];
    size_t b_off[NN_MAX_LAYERS];   /* biases */
    size_t b_count[NN_MAX_LAYERS];
    size_t nparams;
    float *params;                 /* all parameters, one allocation */
};

/* Scratch for one thread running forward (and backward) on a batch. */
struct nn_ctx {
    int max_batch;
    int training;                  /* backward buffers present */
    int nlayers;
    int last_dropout;              /* the last forward applied dropout */
    float *act[NN_MAX_LAYERS + 1]; /* act[0]: input; act[i+1]: layer i */
    float *grad[NN_MAX_LAYERS + 1];/* gradients of the same, training */
    float *col[NN_MAX_LAYERS];     /* im2col of each conv2d's input */
    float *dcol;                   /* gradient of a col, training */
    float *mask[NN_MAX_LAYERS];    /* dropout scale factors, training */
    float *dparams;                /* parameter gradients, training */
    void *mem;                     /* the one allocation behind these */
};

size_t nn_shape_size(const nn_shape_t *s);

/* Context for training (with backward buffers) or inference. */
int nn_ctx_create_ex(nn_ctx_t **out, const nn_model_t *m, int max_batch,
                     int training);

/*
 * Forward n images (n <= ctx->max_batch) through m. With dropout set,
 * dropout layers draw their masks from a generator seeded by
 * (seed, first + i) for image i, so the masks do not depend on how a batch
 * is split across threads. Returns the (n, NN_CLASSES) log-probabilities
 * (inside ctx).
 */
const float *nn_forward(nn_ctx_t *ctx, const nn_model_t *m,
                        const uint8_t *images, int n, int dropout,
                        uint64_t seed, uint64_t first);

/*
 * Backward after nn_forward on the same ctx: the gradient of
 * sum_i NLL(image i) * scale is added into ctx->dparams. Returns the sum
 * of the n NLL losses (unscaled).
 */
double nn_backward(nn_ctx_t *ctx, const nn_model_t *m,
                   const uint8_t *labels, int n, float scale);

/* Small deterministic generator (splitmix64 seeding xoshiro256**). */
typedef struct nn_rng {
    uint64_t s[4];
} nn_rng_t;

void nn_rng_seed(nn_rng_t *r, uint64_t seed);
uint64_t nn_rng_next(nn_rng_t *r);
/* Uniform in [0, 1) with 24 bits. */
float nn_rng_uniform(nn_rng_t *r);

/* Use one BLAS thread: the engine splits work across threads itself. */
void nn_blas_single_thread(void);

#define NN_MAX_THREADS 8

/* Number of worker threads the engine uses by default (cores, max 8). */
int nn_default_threads(void);

/* Run fn(i, arg) for i in [0, n) on up to n threads; i = 0 runs on the
 * calling thread. Returns 0 or a negative code if threads could not be
 * started (then everything ran on the caller, in order). */
int nn_parallel(int n, void (*fn)(int i, void *arg), void *arg);

#endif
