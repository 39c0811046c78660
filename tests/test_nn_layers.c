/*
 * The model engine's layers: every backward against finite differences,
 * every fast path against its plain-loop reference, dropout's semantics,
 * whole-network gradients, layer lists as data.
 */
#include "nn.h"
#include "nn_internal.h"
#include "nn_layers.h"
#include "test_util.h"

#include <stdint.h>

static uint64_t rng_state = 12345;

static float frand(void)
{
    /* uniform in [-1, 1) from a fixed-seed LCG */
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((rng_state >> 40) * (1.0 / 8388608.0) - 1.0);
}

static float *rand_buf(size_t n)
{
    float *p = malloc(sizeof(float) * (n ? n : 1));

    CHECK(p != NULL);
    for (size_t i = 0; i < n; i++)
        p[i] = frand();
    return p;
}

static double dot(const float *a, const float *b, size_t n)
{
    double s = 0.0;

    for (size_t i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

static double max_rel(const float *a, const float *b, size_t n)
{
    double num = 0.0, den = 1e-30;

    for (size_t i = 0; i < n; i++) {
        num = fmax(num, fabs((double)a[i] - b[i]));
        den = fmax(den, fabs((double)b[i]));
    }
    return num / den;
}

/* ------------------------------------------------------------------ */
/* conv2d */

typedef struct conv_case {
    int n, c, h, w, oc, k;
} conv_case_t;

/* L = sum(g * conv(x; w, b)); finite differences of L in x and w. */
static double conv_loss(const conv_case_t *cc, const float *x,
                        const float *w, const float *b, const float *g)
{
    int ho = cc->h - cc->k + 1, wo = cc->w - cc->k + 1;
    size_t no = (size_t)cc->oc * cc->n * ho * wo;
    float *out = malloc(sizeof(float) * no);
    double l;

    nn_conv2d_forward_ref(out, x, w, b, cc->n, cc->c, cc->h, cc->w, cc->oc,
                          cc->k);
    l = dot(out, g, no);
    free(out);
    return l;
}

/* Central difference of conv_loss in v[i]; the loss is linear in every
 * parameter, so a large step is exact and keeps rounding small. */
static double conv_fd(const conv_case_t *cc, float *x, float *w, float *b,
                      const float *g, float *v, size_t i)
{
    float keep = v[i];
    double lp, lm;

    v[i] = keep + 0.25f;
    lp = conv_loss(cc, x, w, b, g);
    v[i] = keep - 0.25f;
    lm = conv_loss(cc, x, w, b, g);
    v[i] = keep;
    return (lp - lm) / 0.5;
}

static void conv_check(const conv_case_t *cc, int need_din)
{
    int ho = cc->h - cc->k + 1, wo = cc->w - cc->k + 1;
    size_t nx = (size_t)cc->c * cc->n * cc->h * cc->w;
    size_t nw = (size_t)cc->oc * cc->c * cc->k * cc->k;
    size_t no = (size_t)cc->oc * cc->n * ho * wo;
    size_t ncol = (size_t)cc->c * cc->k * cc->k * cc->n * ho * wo;
    float *x = rand_buf(nx), *w = rand_buf(nw), *b = rand_buf(cc->oc);
    float *g = rand_buf(no), *out = rand_buf(no), *ref = rand_buf(no);
    float *col = rand_buf(ncol), *dcol = rand_buf(ncol);
    float *dx = rand_buf(nx), *dw = calloc(nw, 4), *db = calloc(cc->oc, 4);
    float *rdx = rand_buf(nx), *rdw = calloc(nw, 4), *rdb = calloc(cc->oc, 4);

    /* fast forward equals the plain loops */
    nn_conv2d_forward(out, col, x, w, b, cc->n, cc->c, cc->h, cc->w, cc->oc,
                      cc->k);
    nn_conv2d_forward_ref(ref, x, w, b, cc->n, cc->c, cc->h, cc->w, cc->oc,
                          cc->k);
    CHECK(max_rel(out, ref, no) < 1e-5);

    /* fast backward equals the plain loops */
    nn_conv2d_backward(need_din ? dx : NULL, dw, db, dcol, col, g, x, w,
                       cc->n, cc->c, cc->h, cc->w, cc->oc, cc->k);
    nn_conv2d_backward_ref(need_din ? rdx : NULL, rdw, rdb, g, x, w, cc->n,
                           cc->c, cc->h, cc->w, cc->oc, cc->k);
    CHECK(max_rel(dw, rdw, nw) < 1e-5);
    CHECK(max_rel(db, rdb, cc->oc) < 1e-5);
    if (need_din)
        CHECK(max_rel(dx, rdx, nx) < 1e-5);

    /* and both equal finite differences */
    for (size_t i = 0; i < nw; i += 1 + nw / 64)
        CHECK_NEAR(dw[i], conv_fd(cc, x, w, b, g, w, i),
                   1e-3 * (1 + fabs(dw[i])));
    for (int o = 0; o < cc->oc; o++)
        CHECK_NEAR(db[o], conv_fd(cc, x, w, b, g, b, o),
                   1e-3 * (1 + fabs(db[o])));
    for (size_t i = 0; need_din && i < nx; i += 1 + nx / 64)
        CHECK_NEAR(dx[i], conv_fd(cc, x, w, b, g, x, i),
                   1e-3 * (1 + fabs(dx[i])));

    free(x), free(w), free(b), free(g), free(out), free(ref), free(col);
    free(dcol), free(dx), free(dw), free(db), free(rdx), free(rdw);
    free(rdb);
}

static void test_conv2d(void)
{
    conv_case_t small = {3, 3, 9, 8, 4, 3};
    conv_case_t second = {5, 10, 12, 12, 20, 5}; /* 8-wide rows */
    conv_case_t first = {3, 1, 28, 28, 10, 5};   /* direct kernels */
    /* direct input gradient: a full group of 8 images and a partial
     * one; channel blocks of 5 and single channels */
    conv_case_t groups = {11, 10, 12, 12, 20, 5};
    conv_case_t odd = {9, 7, 11, 11, 6, 4};
    /* too few images for the direct input gradient's scratch in dcol:
     * direct weight gradient, GEMM input gradient */
    conv_case_t two = {2, 10, 12, 12, 20, 5};

    conv_check(&small, 1);
    conv_check(&small, 0);
    conv_check(&second, 1);
    conv_check(&groups, 1);
    conv_check(&odd, 1);
    conv_check(&two, 1);
    conv_check(&two, 0);
    conv_check(&first, 0);
    conv_check(&first, 1);
}

/* ------------------------------------------------------------------ */
/* linear */

static void test_linear(void)
{
    int n = 5, in = 17, out = 6;
    float *x = rand_buf((size_t)n * in), *w = rand_buf((size_t)out * in);
    float *b = rand_buf(out), *g = rand_buf((size_t)n * out);
    float *y = rand_buf((size_t)n * out), *yr = rand_buf((size_t)n * out);
    float *dx = rand_buf((size_t)n * in), *rdx = rand_buf((size_t)n * in);
    float *dw = calloc((size_t)out * in, 4);
    float *rdw = calloc((size_t)out * in, 4);
    float *db = calloc(out, 4), *rdb = calloc(out, 4);

    nn_linear_forward(y, x, w, b, n, in, out);
    nn_linear_forward_ref(yr, x, w, b, n, in, out);
    CHECK(max_rel(y, yr, (size_t)n * out) < 1e-5);
    nn_linear_backward(dx, dw, db, g, x, w, n, in, out);
    nn_linear_backward_ref(rdx, rdw, rdb, g, x, w, n, in, out);
    CHECK(max_rel(dx, rdx, (size_t)n * in) < 1e-5);
    CHECK(max_rel(dw, rdw, (size_t)out * in) < 1e-5);
    CHECK(max_rel(db, rdb, out) < 1e-5);

    /* finite differences of sum(g * y) in every input and weight */
    for (int i = 0; i < n * in; i++) {
        float keep = x[i];
        double lp, lm;

        x[i] = keep + 0.25f;
        nn_linear_forward_ref(yr, x, w, b, n, in, out);
        lp = dot(yr, g, (size_t)n * out);
        x[i] = keep - 0.25f;
        nn_linear_forward_ref(yr, x, w, b, n, in, out);
        lm = dot(yr, g, (size_t)n * out);
        x[i] = keep;
        CHECK_NEAR(dx[i], (lp - lm) / 0.5, 1e-4 * (1 + fabs(dx[i])));
    }
    for (int i = 0; i < out * in; i++) {
        float keep = w[i];
        double lp, lm;

        w[i] = keep + 0.25f;
        nn_linear_forward_ref(yr, x, w, b, n, in, out);
        lp = dot(yr, g, (size_t)n * out);
        w[i] = keep - 0.25f;
        nn_linear_forward_ref(yr, x, w, b, n, in, out);
        lm = dot(yr, g, (size_t)n * out);
        w[i] = keep;
        CHECK_NEAR(dw[i], (lp - lm) / 0.5, 1e-4 * (1 + fabs(dw[i])));
    }
    free(x), free(w), free(b), free(g), free(y), free(yr), free(dx);
    free(rdx), free(dw), free(rdw), free(db), free(rdb);
}

/* ------------------------------------------------------------------ */
/* max-pool, relu, flatten */

static void test_maxpool2d(void)
{
    int planes = 6, h = 8, w = 8, ho = 4, wo = 4;
    size_t ni = (size_t)planes * h * w, no = (size_t)planes * ho * wo;
    float *x = rand_buf(ni), *y = rand_buf(no), *yr = rand_buf(no);
    float *g = rand_buf(no), *dx = rand_buf(ni), *rdx = rand_buf(ni);
    float *yp = rand_buf(no);

    x[0] = x[1] = 2.0f; /* a tie: the first in row order wins */
    x[w + 2] = x[w + 3] = 3.0f; /* a tie in a window's second row */
    nn_maxpool2d_forward(y, x, planes, h, w, 2);
    nn_maxpool2d_forward_ref(yr, x, planes, h, w, 2);
    CHECK(max_rel(y, yr, no) == 0.0);
    nn_maxpool2d_backward(dx, g, y, x, planes, h, w, 2);
    nn_maxpool2d_backward_ref(rdx, g, y, x, planes, h, w, 2);
    CHECK(max_rel(dx, rdx, ni) == 0.0);
    CHECK(dx[0] == g[0]);
    CHECK(dx[1] == 0.0f);
    CHECK(dx[w + 2] == g[1]);
    CHECK(dx[w + 3] == 0.0f);

    /* finite differences away from ties (random inputs differ by far
     * more than the step) */
    for (size_t i = 2; i < ni; i++) {
        float keep = x[i];

        if (i == (size_t)w + 2 || i == (size_t)w + 3)
            continue;
        double lp, lm;

        x[i] = keep + 1e-3f;
        nn_maxpool2d_forward_ref(yp, x, planes, h, w, 2);
        lp = dot(yp, g, no);
        x[i] = keep - 1e-3f;
        nn_maxpool2d_forward_ref(yp, x, planes, h, w, 2);
        lm = dot(yp, g, no);
        x[i] = keep;
        CHECK_NEAR(dx[i], (lp - lm) / 2e-3, 2e-3);
    }

    /* odd sizes floor, as in PyTorch, through the general path */
    nn_maxpool2d_forward(y, x, 1, 5, 5, 2);
    CHECK(y[0] == fmaxf(fmaxf(x[0], x[1]), fmaxf(x[5], x[6])));
    free(x), free(y), free(yr), free(g), free(dx), free(rdx), free(yp);
}

/* max-pool then relu in one pass equals the two layers one by one */
static void test_maxpool2d_relu(void)
{
    int planes = 6, h = 8, w = 8, ho = 4, wo = 4;
    size_t ni = (size_t)planes * h * w, no = (size_t)planes * ho * wo;
    float *x = rand_buf(ni), *pool = rand_buf(no), *out = rand_buf(no);
    float *rpool = rand_buf(no), *rout = rand_buf(no), *g = rand_buf(no);
    float *gr = rand_buf(no), *dx = rand_buf(ni), *rdx = rand_buf(ni);
    float *fdx = rand_buf(ni);

    x[0] = x[1] = 2.0f;         /* a tie: the first in row order wins */
    x[w + 2] = x[w + 3] = 3.0f; /* a tie in a window's second row */
    x[4] = x[5] = x[w + 4] = x[w + 5] = -1.0f; /* negative window */
    x[6] = x[7] = x[w + 6] = x[w + 7] = 0.0f;  /* all-zero window */
    for (int k = 2; k <= 3; k++) {
        int pl = k == 2 ? planes : 2;
        size_t nq = (size_t)pl * (h / k) * (w / k);

        nn_maxpool2d_relu_forward(pool, out, x, pl, h, w, k);
        nn_maxpool2d_forward_ref(rpool, x, pl, h, w, k);
        nn_relu_forward(rout, rpool, nq);
        CHECK(max_rel(pool, rpool, nq) == 0.0);
        CHECK(max_rel(out, rout, nq) == 0.0);

        nn_maxpool2d_relu_backward(fdx, g, out, x, pl, h, w, k);
        nn_maxpool2d_relu_backward_ref(dx, g, out, x, pl, h, w, k);
        nn_relu_backward(gr, g, rout, nq);
        nn_maxpool2d_backward_ref(rdx, gr, rpool, x, pl, h, w, k);
        CHECK(max_rel(fdx, rdx, (size_t)pl * h * w) == 0.0);
        CHECK(max_rel(dx, rdx, (size_t)pl * h * w) == 0.0);
        if (k != 2)
            continue;
        CHECK(fdx[0] == g[0] && fdx[1] == 0.0f);
        CHECK(fdx[4] == 0.0f && fdx[w + 5] == 0.0f && fdx[6] == 0.0f);
    }
    free(x), free(pool), free(out), free(rpool), free(rout), free(g);
    free(gr), free(dx), free(rdx), free(fdx);
}

static void test_relu_flatten(void)
{
    float x[8] = {-1, 2, -3, 4, 0.5f, -0.5f, 7, -8}, y[8], g[8], dx[8];
    float back[8];

    nn_relu_forward(y, x, 8);
    for (int i = 0; i < 8; i++) {
        g[i] = (float)(i + 1);
        CHECK(y[i] == (x[i] > 0 ? x[i] : 0));
    }
    nn_relu_backward(dx, g, y, 8);
    for (int i = 0; i < 8; i++)
        CHECK(dx[i] == (x[i] > 0 ? g[i] : 0));

    /* (C=2, N=2, 2) -> (N=2, 4): image 1's channel 0 follows image 0 */
    nn_flatten_forward(y, x, 2, 2, 2);
    CHECK(y[0] == x[0] && y[1] == x[1] && y[2] == x[4] && y[3] == x[5]);
    CHECK(y[4] == x[2] && y[5] == x[3] && y[6] == x[6] && y[7] == x[7]);
    nn_flatten_backward(back, y, 2, 2, 2);
    CHECK(memcmp(back, x, sizeof(x)) == 0);
}

static void test_logsoftmax_nll(void)
{
    int n = 3, c = NN_CLASSES;
    float *x = rand_buf((size_t)n * c), y[30], yp[30], dl[30], dx[30];
    uint8_t labels[3] = {2, 9, 0};

    nn_logsoftmax_forward(y, x, n, c);
    for (int i = 0; i < n; i++) {
        double s = 0.0;

        for (int j = 0; j < c; j++)
            s += exp(y[i * c + j]);
        CHECK_NEAR(s, 1.0, 1e-6);
    }
    nn_nll_backward(dl, labels, n, c, 1.0f / n);
    nn_logsoftmax_backward(dx, dl, y, n, c);
    for (int i = 0; i < n * c; i++) {
        float keep = x[i];
        double lp, lm;

        x[i] = keep + 1e-2f;
        nn_logsoftmax_forward(yp, x, n, c);
        lp = nn_nll_forward(yp, labels, n, c) / n;
        x[i] = keep - 1e-2f;
        nn_logsoftmax_forward(yp, x, n, c);
        lm = nn_nll_forward(yp, labels, n, c) / n;
        x[i] = keep;
        CHECK_NEAR(dx[i], (lp - lm) / 2e-2, 1e-4);
    }
    free(x);
}

/* ------------------------------------------------------------------ */
/* dropout, through a model's forward pass */

static void test_dropout(void)
{
    nn_layer_spec_t layers[] = {
        {NN_CONV2D, "conv", 1, 4, 1, 0},
        {NN_DROPOUT2D, "d2", 0, 0, 0, 0.5f},
        {NN_FLATTEN, "flat", 0, 0, 0, 0},
        {NN_DROPOUT, "d1", 0, 0, 0, 0.25f},
        {NN_LINEAR, "fc", 3136, 10, 0, 0},
        {NN_LOGSOFTMAX, "out", 0, 0, 0, 0},
    };
    int n = 64, zero_planes = 0, zero = 0, total = 0;
    nn_model_t *m;
    nn_ctx_t *c;
    uint8_t *img = malloc((size_t)n * 784);
    float first[10];

    CHECK_EQ(nn_model_create(&m, layers, 6, NULL), 0);
    nn_model_init(m, 1);
    m->params[0] = 1.0f; /* conv channel 0 passes the input through */
    m->params[4] = 0.0f;
    CHECK_EQ(nn_ctx_create_ex(&c, m, n, 1), 0);
    for (int i = 0; i < n * 784; i++)
        img[i] = (uint8_t)(i * 7);

    /* dropout2d: each (channel, image) plane all kept x2 or all zero */
    nn_forward(c, m, img, n, 1, 99, 0);
    for (int p = 0; p < 4 * n; p++) {
        const float *in = c->act[1] + (size_t)p * 784;
        const float *out = c->act[2] + (size_t)p * 784;
        int zeros = 0;

        for (int j = 0; j < 784; j++) {
            zeros += out[j] == 0.0f;
            CHECK(out[j] == 0.0f || out[j] == 2.0f * in[j]);
        }
        CHECK(zeros == 784 || zeros < 50);
        zero_planes += zeros == 784;
    }
    CHECK_INT(zero_planes, >, 4 * n * 35 / 100);
    CHECK_INT(zero_planes, <, 4 * n * 65 / 100);

    /* dropout p=0.25: kept values scaled by 1/(1-p) */
    for (size_t j = 0; j < (size_t)n * 3136; j++) {
        float in = c->act[3][j], out = c->act[4][j];

        if (in == 0.0f)
            continue;
        total++;
        zero += out == 0.0f;
        CHECK(out == 0.0f || fabsf(out - in / 0.75f) <= 1e-6f * fabsf(in));
    }
    CHECK_INT(zero, >, total / 5);
    CHECK_INT(zero, <, total * 3 / 10);

    /* same seed, same masks; off when not training */
    memcpy(first, nn_forward(c, m, img, n, 1, 99, 0), sizeof(first));
    CHECK(memcmp(first, nn_forward(c, m, img, n, 1, 99, 0), 40) == 0);
    CHECK(memcmp(first, nn_forward(c, m, img, n, 1, 98, 0), 40) != 0);
    nn_forward(c, m, img, n, 0, 99, 0);
    CHECK(memcmp(c->act[2], c->act[1], sizeof(float) * 784 * 4 * n) == 0);

    nn_ctx_free(c);
    nn_model_free(m);
    free(img);
}

/* ------------------------------------------------------------------ */
/* whole network */

/* Mean loss of the reference model on a batch, dropout on (fixed seed). */
static double net_loss(nn_ctx_t *c, nn_model_t *m, const uint8_t *img,
                       const uint8_t *lab, int n)
{
    const float *logp = nn_forward(c, m, img, n, 1, 5, 0);

    return nn_nll_forward(logp, lab, n, NN_CLASSES) / n;
}

static void test_network_gradients(void)
{
    int n = 4, good = 0, checked = 0;
    nn_model_t *m;
    nn_ctx_t *c;
    uint8_t img[4 * 784], lab[4] = {3, 1, 4, 1};
    float *grad;

    CHECK_EQ(nn_model_create_reference(&m), 0);
    nn_model_init(m, 11);
    CHECK_EQ(nn_ctx_create_ex(&c, m, n, 1), 0);
    for (int i = 0; i < n * 784; i++)
        img[i] = (uint8_t)((i * 37 + i / 28 * 11) % 256);

    memset(c->dparams, 0, sizeof(float) * m->nparams);
    net_loss(c, m, img, lab, n);
    nn_backward(c, m, lab, n, 1.0f / n);
    grad = malloc(sizeof(float) * m->nparams);
    memcpy(grad, c->dparams, sizeof(float) * m->nparams);

    /* a spread of parameters from every tensor; the ReLU and max-pool
     * kinks make a few float differences land off, so most must agree */
    for (size_t i = 0; i < m->nparams; i += 97) {
        float keep = m->params[i];
        double lp, lm, num;

        m->params[i] = keep + 1e-2f;
        lp = net_loss(c, m, img, lab, n);
        m->params[i] = keep - 1e-2f;
        lm = net_loss(c, m, img, lab, n);
        m->params[i] = keep;
        num = (lp - lm) / 2e-2;
        checked++;
        good += fabs(num - grad[i]) <= 2e-3 + 0.05 * fabs(grad[i]);
    }
    printf("  %d/%d parameters agree with finite differences\n", good,
           checked);
    CHECK_INT(good, >=, checked * 97 / 100);
    free(grad);
    nn_ctx_free(c);
    nn_model_free(m);
}

/* ------------------------------------------------------------------ */
/* layer lists as data */

static void test_layer_lists(void)
{
    nn_layer_spec_t other[] = {
        {NN_CONV2D, "c", 1, 4, 3, 0},   {NN_RELU, "r", 0, 0, 0, 0},
        {NN_MAXPOOL2D, "p", 0, 0, 3, 0}, {NN_FLATTEN, "f", 0, 0, 0, 0},
        {NN_LINEAR, "fc", 256, 10, 0, 0}, {NN_LOGSOFTMAX, "o", 0, 0, 0, 0},
    };
    nn_layer_spec_t back[NN_MAX_LAYERS], bad[6];
    nn_model_t *m, *m2;
    nn_ctx_t *c;
    dadc_error_t err;
    uint8_t img[2 * 784] = {0};
    float probs[20];
    char *json;
    int nl;

    /* another list of these layer kinds runs and survives a round trip */
    CHECK_EQ(nn_model_create(&m, other, 6, &err), 0);
    nn_model_init(m, 2);
    CHECK_EQ(nn_model_nparams(m), 4 * 9 + 4 + 256 * 10 + 10);
    CHECK_EQ(nn_ctx_create(&c, m, 2), 0);
    CHECK_EQ(nn_predict(c, m, img, 2, probs), 0);
    CHECK_NEAR(probs[0] + probs[1] + probs[2] + probs[3] + probs[4] +
                   probs[5] + probs[6] + probs[7] + probs[8] + probs[9],
               1.0, 1e-5);
    json = nn_layers_to_json(other, 6);
    CHECK_CONTAINS(json, "\"kind\":\"maxpool2d\"");
    CHECK_EQ(nn_layers_from_json(json, back, NN_MAX_LAYERS, &nl, &err), 0);
    CHECK_EQ(nl, 6);
    CHECK_EQ(nn_model_create(&m2, back, nl, &err), 0);
    CHECK_EQ(nn_model_nparams(m2), nn_model_nparams(m));
    free(json);
    nn_model_free(m2);
    nn_ctx_free(c);
    nn_model_free(m);

    /* shapes that do not chain are refused with a message */
    memcpy(bad, other, sizeof(bad));
    bad[4].in = 320;
    CHECK_EQ(nn_model_create(&m, bad, 6, &err), DADC_ESHAPE);
    CHECK_CONTAINS(err.msg, "256 features");
    memcpy(bad, other, sizeof(bad));
    bad[5].kind = NN_RELU;
    CHECK(nn_model_create(&m, bad, 6, &err) < 0);
    CHECK_EQ(nn_layers_from_json("[{\"kind\":\"conv3d\"}]", back,
                                 NN_MAX_LAYERS, &nl, &err),
             DADC_EFORMAT);
    CHECK_CONTAINS(err.msg, "unknown kind");
    CHECK_EQ(nn_layers_from_json("[{\"kind\":\"linear\",\"in\":-3}]", back,
                                 NN_MAX_LAYERS, &nl, &err),
             DADC_EFORMAT);
    CHECK(nn_layers_from_json("{", back, NN_MAX_LAYERS, &nl, &err) < 0);
}

static void test_init_like_pytorch(void)
{
    nn_model_t *a, *b;
    const float *p;
    float bound1 = 1.0f / 5.0f, bound3 = 1.0f / sqrtf(320.0f), mx = 0;

    CHECK_EQ(nn_model_create_reference(&a), 0);
    CHECK_EQ(nn_model_create_reference(&b), 0);
    CHECK_EQ(nn_model_nparams(a), 21840);
    nn_model_init(a, 42);
    nn_model_init(b, 42);
    CHECK(memcmp(nn_model_params(a), nn_model_params(b), 21840 * 4) == 0);
    nn_model_init(b, 43);
    CHECK(memcmp(nn_model_params(a), nn_model_params(b), 21840 * 4) != 0);

    /* conv1: fan_in 25, so U(-0.2, 0.2), reaching close to the bound */
    p = nn_model_params_const(a);
    for (int i = 0; i < 260; i++) {
        CHECK(fabsf(p[i]) <= bound1);
        mx = fmaxf(mx, fabsf(p[i]));
    }
    CHECK(mx > 0.9f * bound1);

    /* fc1 weights and biases: fan_in 320 */
    for (int i = 5280; i < 5280 + 16050; i++)
        CHECK(fabsf(p[i]) <= bound3);
    nn_model_free(a);
    nn_model_free(b);
}

int main(void)
{
    test_init("test_nn_layers", 300);
    TEST_RUN(test_conv2d);
    TEST_RUN(test_linear);
    TEST_RUN(test_maxpool2d);
    TEST_RUN(test_maxpool2d_relu);
    TEST_RUN(test_relu_flatten);
    TEST_RUN(test_logsoftmax_nll);
    TEST_RUN(test_dropout);
    TEST_RUN(test_network_gradients);
    TEST_RUN(test_layer_lists);
    TEST_RUN(test_init_like_pytorch);
    return test_finish();
}
