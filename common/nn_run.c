/*
 * Running a model: scratch contexts, the forward and backward passes over
 * the layer list, prediction and evaluation.
 */
#include "nn_internal.h"
#include "nn_layers.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NN_ALIGN 64
#define NN_EVAL_CHUNK 128

/* Bytes for `count` items of `size`, rounded up to the alignment. */
static size_t aligned(size_t count, size_t size)
{
    return (count * size + NN_ALIGN - 1) / NN_ALIGN * NN_ALIGN;
}

static size_t conv_col_size(const nn_model_t *m, int i, int n)
{
    const nn_layer_spec_t *l = &m->layers[i];
    const nn_shape_t *o = &m->out_shape[i];

    return (size_t)l->in * l->k * l->k * n * o->h * o->w;
}

/*
 * Lay the context's buffers out in one block starting at base (NULL to
 * measure). Returns the bytes needed.
 */
static size_t ctx_layout(nn_ctx_t *c, const nn_model_t *m, char *base)
{
    size_t at = 0, n = (size_t)c->max_batch, colmax = 0;

#define CARVE(ptr, count, type)                                            \
    do {                                                                   \
        (ptr) = base ? (type *)(base + at) : NULL;                         \
        at += aligned((count), sizeof(type));                              \
    } while (0)

    CARVE(c->act[0], n * NN_IMAGE_PIXELS, float);
    for (int i = 0; i < m->nlayers; i++) {
        size_t sz = n * nn_shape_size(&m->out_shape[i]);
        int kind = m->layers[i].kind;

        CARVE(c->act[i + 1], sz, float);
        if (kind == NN_CONV2D && c->training)
            CARVE(c->col[i], conv_col_size(m, i, c->max_batch), float);
        if (kind == NN_CONV2D && conv_col_size(m, i, c->max_batch) > colmax)
            colmax = conv_col_size(m, i, c->max_batch);
        if (!c->training)
            continue;
        CARVE(c->grad[i + 1], sz, float);
        if (kind == NN_DROPOUT)
            CARVE(c->mask[i], sz, float);
        if (kind == NN_DROPOUT2D)
            CARVE(c->mask[i], n * m->in_shape[i].c, float);
    }
    if (c->training) {
        CARVE(c->grad[0], n * NN_IMAGE_PIXELS, float);
        CARVE(c->dcol, colmax, float);
        CARVE(c->dparams, m->nparams, float);
    } else {
        /* inference: the convolutions share one im2col buffer */
        float *shared;

        CARVE(shared, colmax, float);
        for (int i = 0; i < m->nlayers; i++)
            c->col[i] = m->layers[i].kind == NN_CONV2D ? shared : NULL;
    }
#undef CARVE
    return at;
}

int nn_ctx_create_ex(nn_ctx_t **out, const nn_model_t *m, int max_batch,
                     int training)
{
    nn_ctx_t *c;
    size_t bytes;

    *out = NULL;
    if (max_batch < 1 || max_batch > 65536)
        return DADC_ERANGE;
    nn_blas_single_thread();
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -ENOMEM;
    c->max_batch = max_batch;
    c->training = training;
    c->nlayers = m->nlayers;
    bytes = ctx_layout(c, m, NULL);
    c->mem = aligned_alloc(NN_ALIGN, bytes);
    if (c->mem == NULL) {
        free(c);
        return -ENOMEM;
    }
    ctx_layout(c, m, c->mem);
    *out = c;
    return 0;
}

int nn_ctx_create(nn_ctx_t **out, const nn_model_t *m, int max_batch)
{
    return nn_ctx_create_ex(out, m, max_batch, 0);
}

void nn_ctx_free(nn_ctx_t *ctx)
{
    if (ctx == NULL)
        return;
    free(ctx->mem);
    free(ctx);
}

/* ------------------------------------------------------------------ */
/* Forward */

/* Masks of dropout layer i for images [first, first + n). */
static void dropout_masks(nn_ctx_t *c, const nn_model_t *m, int i, int n,
                          uint64_t seed, uint64_t first)
{
    const nn_layer_spec_t *l = &m->layers[i];
    const nn_shape_t *s = &m->in_shape[i];
    float keep = 1.0f / (1.0f - l->p);
    size_t per = l->kind == NN_DROPOUT2D ? 1 : (size_t)s->h * s->w;

    for (int ni = 0; ni < n; ni++) {
        nn_rng_t r;

        nn_rng_seed(&r, seed ^ ((first + ni) * 0x9e3779b97f4a7c15ULL) ^
                            ((uint64_t)i << 56));
        for (int ci = 0; ci < s->c; ci++) {
            /* mask index: (C, N, per) for spatial, (N, C) for flat */
            size_t base = s->flat ? (size_t)ni * s->c + ci
                                  : ((size_t)ci * n + ni) * per;

            for (size_t j = 0; j < per; j++)
                c->mask[i][base + j] =
                    nn_rng_uniform(&r) < l->p ? 0.0f : keep;
        }
    }
}

static void forward_layer(nn_ctx_t *c, const nn_model_t *m, int i, int n,
                          int dropout)
{
    const nn_layer_spec_t *l = &m->layers[i];
    const nn_shape_t *s = &m->in_shape[i];
    const float *in = c->act[i];
    float *out = c->act[i + 1];
    size_t total = n * nn_shape_size(s);
    const float *w = m->params + m->w_off[i];
    const float *b = m->params + m->b_off[i];

    switch (l->kind) {
    case NN_CONV2D:
        nn_conv2d_forward(out, c->col[i], in, w, b, n, s->c, s->h, s->w,
                          l->out, l->k);
        break;
    case NN_MAXPOOL2D:
        nn_maxpool2d_forward(out, in, s->c * n, s->h, s->w, l->k);
        break;
    case NN_RELU:
        nn_relu_forward(out, in, total);
        break;
    case NN_DROPOUT2D:
    case NN_DROPOUT:
        if (!dropout || l->p == 0.0f)
            memcpy(out, in, sizeof(float) * total);
        else if (l->kind == NN_DROPOUT)
            nn_dropout_forward(out, in, c->mask[i], total);
        else
            nn_dropout2d_forward(out, in, c->mask[i], s->c * n,
                                 s->h * s->w);
        break;
    case NN_FLATTEN:
        nn_flatten_forward(out, in, n, s->c, s->h * s->w);
        break;
    case NN_LINEAR:
        nn_linear_forward(out, in, w, b, n, l->in, l->out);
        break;
    case NN_LOGSOFTMAX:
        nn_logsoftmax_forward(out, in, n, s->c);
        break;
    }
}

/* Layer i is a max-pool followed by a relu: the two run as one pass. */
static int pool_relu_at(const nn_model_t *m, int i)
{
    return i >= 0 && i + 1 < m->nlayers &&
           m->layers[i].kind == NN_MAXPOOL2D &&
           m->layers[i + 1].kind == NN_RELU;
}

static void forward_pool_relu(nn_ctx_t *c, const nn_model_t *m, int i,
                              int n)
{
    const nn_shape_t *s = &m->in_shape[i];

    nn_maxpool2d_relu_forward(c->act[i + 1], c->act[i + 2], c->act[i],
                              s->c * n, s->h, s->w, m->layers[i].k);
}

const float *nn_forward(nn_ctx_t *ctx, const nn_model_t *m,
                        const uint8_t *images, int n, int dropout,
                        uint64_t seed, uint64_t first)
{
    /* dropout needs the mask buffers of a training context */
    dropout = dropout && ctx->training;
    nn_input_forward(ctx->act[0], images, (size_t)n);
    for (int i = 0; i < m->nlayers; i++) {
        int kind = m->layers[i].kind;

        if (dropout && (kind == NN_DROPOUT || kind == NN_DROPOUT2D) &&
            m->layers[i].p > 0.0f)
            dropout_masks(ctx, m, i, n, seed, first);
        if (pool_relu_at(m, i))
            forward_pool_relu(ctx, m, i++, n);
        else
            forward_layer(ctx, m, i, n, dropout);
    }
    ctx->last_dropout = dropout;
    return ctx->act[m->nlayers];
}

/* ------------------------------------------------------------------ */
/* Backward */

static void backward_layer(nn_ctx_t *c, const nn_model_t *m, int i, int n,
                           int need_din)
{
    const nn_layer_spec_t *l = &m->layers[i];
    const nn_shape_t *s = &m->in_shape[i];
    float *din = need_din ? c->grad[i] : NULL;
    const float *dout = c->grad[i + 1];
    size_t total = n * nn_shape_size(s);
    const float *w = m->params + m->w_off[i];
    float *dw = c->dparams + m->w_off[i];
    float *db = c->dparams + m->b_off[i];

    if (din == NULL && m->w_count[i] == 0)
        return;
    switch (l->kind) {
    case NN_CONV2D:
        nn_conv2d_backward(din, dw, db, c->dcol, c->col[i], dout, c->act[i],
                           w, n, s->c, s->h, s->w, l->out, l->k);
        break;
    case NN_MAXPOOL2D:
        nn_maxpool2d_backward(din, dout, c->act[i + 1], c->act[i], s->c * n,
                              s->h, s->w, l->k);
        break;
    case NN_RELU:
        nn_relu_backward(din, dout, c->act[i + 1], total);
        break;
    case NN_DROPOUT2D:
    case NN_DROPOUT:
        if (!c->last_dropout || l->p == 0.0f)
            memcpy(din, dout, sizeof(float) * total);
        else if (l->kind == NN_DROPOUT)
            nn_dropout_backward(din, dout, c->mask[i], total);
        else
            nn_dropout2d_backward(din, dout, c->mask[i], s->c * n,
                                  s->h * s->w);
        break;
    case NN_FLATTEN:
        nn_flatten_backward(din, dout, n, s->c, s->h * s->w);
        break;
    case NN_LINEAR:
        nn_linear_backward(din, dw, db, dout, c->act[i], w, n, l->in,
                           l->out);
        break;
    case NN_LOGSOFTMAX:
        nn_logsoftmax_backward(din, dout, c->act[i + 1], n, s->c);
        break;
    }
}

double nn_backward(nn_ctx_t *ctx, const nn_model_t *m,
                   const uint8_t *labels, int n, float scale)
{
    int nl = m->nlayers, first_param = nl;
    const float *logp = ctx->act[nl];
    double loss = nn_nll_forward(logp, labels, n, NN_CLASSES);

    for (int i = 0; i < nl; i++)
        if (m->w_count[i] > 0 && i < first_param)
            first_param = i;

    /* input gradients are only needed above the first layer with
     * parameters */
    nn_nll_backward(ctx->grad[nl], labels, n, NN_CLASSES, scale);
    for (int i = nl - 1; i >= 0; i--) {
        if (!pool_relu_at(m, i - 1)) {
            backward_layer(ctx, m, i, n, i > first_param);
            continue;
        }

        /* relu i after max-pool i - 1: one pass from the relu's output
         * gradient to the pool's input gradient */
        const nn_shape_t *s = &m->in_shape[i - 1];

        if (i - 1 > first_param)
            nn_maxpool2d_relu_backward(ctx->grad[i - 1], ctx->grad[i + 1],
                                       ctx->act[i + 1], ctx->act[i - 1],
                                       s->c * n, s->h, s->w,
                                       m->layers[i - 1].k);
        i--;
    }
    return loss;
}

/* ------------------------------------------------------------------ */
/* Prediction and evaluation */

int nn_argmax(const float *probs)
{
    int best = 0;

    for (int j = 1; j < NN_CLASSES; j++)
        if (probs[j] > probs[best])
            best = j;
    return best;
}

int nn_predict(nn_ctx_t *ctx, const nn_model_t *m, const uint8_t *images,
               size_t n, float *probs)
{
    if (ctx->nlayers != m->nlayers)
        return DADC_ESHAPE;
    for (size_t at = 0; at < n; at += (size_t)ctx->max_batch) {
        size_t k = n - at < (size_t)ctx->max_batch ? n - at
                                                   : (size_t)ctx->max_batch;
        const float *logp = nn_forward(ctx, m, images + at * NN_IMAGE_PIXELS,
                                       (int)k, 0, 0, 0);

        for (size_t j = 0; j < k * NN_CLASSES; j++)
            probs[at * NN_CLASSES + j] = expf(logp[j]);
    }
    return 0;
}

typedef struct eval_job {
    const nn_model_t *m;
    const uint8_t *images;
    const uint8_t *labels;
    size_t n;
    int threads;
    nn_eval_t part[NN_MAX_THREADS];
    int rc[NN_MAX_THREADS];
} eval_job_t;

static void eval_part(nn_eval_t *e, const float *logp, const uint8_t *labels,
                      size_t k)
{
    for (size_t j = 0; j < k; j++) {
        int y = labels[j], p = nn_argmax(logp + j * NN_CLASSES);

        e->per_digit_total[y]++;
        e->per_digit_correct[y] += p == y;
        e->correct += p == y;
        e->confusion[y][p]++;
        e->loss -= logp[j * NN_CLASSES + y];
    }
    e->examples += k;
}

static void eval_worker_cb(int t, void *arg)
{
    eval_job_t *job = arg;
    size_t lo = job->n * t / job->threads;
    size_t hi = job->n * (t + 1) / job->threads;
    nn_ctx_t *ctx;

    job->rc[t] = nn_ctx_create(&ctx, job->m, NN_EVAL_CHUNK);
    if (job->rc[t] < 0)
        return;
    for (size_t at = lo; at < hi; at += NN_EVAL_CHUNK) {
        size_t k = hi - at < NN_EVAL_CHUNK ? hi - at : NN_EVAL_CHUNK;
        const float *logp =
            nn_forward(ctx, job->m, job->images + at * NN_IMAGE_PIXELS,
                       (int)k, 0, 0, 0);

        eval_part(&job->part[t], logp, job->labels + at, k);
    }
    nn_ctx_free(ctx);
}

static void eval_merge(nn_eval_t *out, const nn_eval_t *p)
{
    out->examples += p->examples;
    out->correct += p->correct;
    out->loss += p->loss;
    for (int y = 0; y < NN_CLASSES; y++) {
        out->per_digit_total[y] += p->per_digit_total[y];
        out->per_digit_correct[y] += p->per_digit_correct[y];
        for (int k = 0; k < NN_CLASSES; k++)
            out->confusion[y][k] += p->confusion[y][k];
    }
}

int nn_evaluate(const nn_model_t *m, const uint8_t *images,
                const uint8_t *labels, size_t n, nn_eval_t *out)
{
    eval_job_t *job = calloc(1, sizeof(*job));
    int rc = 0;

    memset(out, 0, sizeof(*out));
    if (job == NULL)
        return -ENOMEM;
    for (size_t j = 0; j < n; j++)
        if (labels[j] >= NN_CLASSES) {
            free(job);
            return DADC_ERANGE;
        }
    nn_blas_single_thread();
    job->m = m;
    job->images = images;
    job->labels = labels;
    job->n = n;
    job->threads = nn_default_threads();
    if ((size_t)job->threads > n / 64 + 1)
        job->threads = (int)(n / 64 + 1);
    nn_parallel(job->threads, eval_worker_cb, job);

    for (int t = 0; t < job->threads; t++) {
        if (job->rc[t] < 0)
            rc = job->rc[t];
        eval_merge(out, &job->part[t]);
    }
    out->accuracy = n ? (double)out->correct / (double)n : 0.0;
    out->loss = n ? out->loss / (double)n : 0.0;
    free(job);
    return rc;
}
