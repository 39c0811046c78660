/*
 * Layer kernels of the model engine. See nn_layers.h for the contracts
 * and layouts; each fast path has a plain-loop `_ref` twin.
 */
#include "nn_layers.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#define NN_MEAN 0.1307f
#define NN_STD 0.3081f

void nn_input_forward(float *out, const uint8_t *in, size_t n)
{
    /* (x/255 - mean)/std computed in the same order PyTorch's
     * ToTensor + Normalize does, so inputs match to the last bit. */
    float lut[256];

    for (int v = 0; v < 256; v++)
        lut[v] = ((float)v / 255.0f - NN_MEAN) / NN_STD;
    for (size_t i = 0; i < n * 784; i++)
        out[i] = lut[in[i]];
}

/* ------------------------------------------------------------------ */
/* conv2d */

/* col (C*k*k, N*Ho*Wo) from in (C, N, H, W). */
static void conv_im2col(float *col, const float *in, int n, int c, int h,
                        int wd, int k)
{
    int ho = h - k + 1, wo = wd - k + 1;
    size_t plane = (size_t)h * wd;

    for (int ci = 0; ci < c; ci++) {
        for (int ky = 0; ky < k; ky++) {
            for (int kx = 0; kx < k; kx++) {
                for (int ni = 0; ni < n; ni++) {
                    const float *src =
                        in + ((size_t)ci * n + ni) * plane + ky * wd + kx;

                    for (int oy = 0; oy < ho; oy++) {
                        memcpy(col, src + (size_t)oy * wd,
                               sizeof(float) * wo);
                        col += wo;
                    }
                }
            }
        }
    }
}

/* din (C, N, H, W) = sum of dcol (C*k*k, N*Ho*Wo) back over the windows. */
static void conv_col2im(float *din, const float *dcol, int n, int c, int h,
                        int wd, int k)
{
    int ho = h - k + 1, wo = wd - k + 1;
    size_t plane = (size_t)h * wd;

    memset(din, 0, sizeof(float) * plane * n * c);
    for (int ci = 0; ci < c; ci++) {
        for (int ky = 0; ky < k; ky++) {
            for (int kx = 0; kx < k; kx++) {
                for (int ni = 0; ni < n; ni++) {
                    float *dst =
                        din + ((size_t)ci * n + ni) * plane + ky * wd + kx;

                    for (int oy = 0; oy < ho; oy++) {
                        float *d = dst + (size_t)oy * wd;

                        for (int ox = 0; ox < wo; ox++)
                            d[ox] += dcol[ox];
                        dcol += wo;
                    }
                }
            }
        }
    }
}

void nn_conv2d_forward(float *out, float *col, const float *in,
                       const float *w, const float *b, int n, int c, int h,
                       int wd, int oc, int k)
{
    int ckk = c * k * k;
    int cols = n * (h - k + 1) * (wd - k + 1);

    conv_im2col(col, in, n, c, h, wd, k);

    /* out (OC, cols) = b broadcast, then += w (OC, ckk) x col (ckk, cols) */
    for (int o = 0; o < oc; o++) {
        float *row = out + (size_t)o * cols;

        for (int j = 0; j < cols; j++)
            row[j] = b[o];
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, oc, cols, ckk,
                1.0f, w, ckk, col, cols, 1.0f, out, cols);
}

void nn_conv2d_forward_ref(float *out, const float *in, const float *w,
                           const float *b, int n, int c, int h, int wd,
                           int oc, int k)
{
    int ho = h - k + 1, wo = wd - k + 1;

    for (int o = 0; o < oc; o++)
        for (int ni = 0; ni < n; ni++)
            for (int y = 0; y < ho; y++)
                for (int x = 0; x < wo; x++) {
                    double s = b[o];

                    for (int ci = 0; ci < c; ci++)
                        for (int ky = 0; ky < k; ky++)
                            for (int kx = 0; kx < k; kx++)
                                s += (double)w[((o * c + ci) * k + ky) * k +
                                               kx] *
                                     in[(((size_t)ci * n + ni) * h + y +
                                         ky) * wd + x + kx];
                    out[(((size_t)o * n + ni) * ho + y) * wo + x] = (float)s;
                }
}

void nn_conv2d_backward(float *din, float *dw, float *db, float *dcol,
                        const float *dout, const float *col,
                        const float *w, int n, int c, int h, int wd, int oc,
                        int k)
{
    int ckk = c * k * k;
    int cols = n * (h - k + 1) * (wd - k + 1);

    /* db += row sums of dout (OC, cols) */
    for (int o = 0; o < oc; o++) {
        const float *row = dout + (size_t)o * cols;
        float s = 0.0f;

        for (int j = 0; j < cols; j++)
            s += row[j];
        db[o] += s;
    }

    /* dw (OC, ckk) += dout (OC, cols) x col^T (cols, ckk) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, oc, ckk, cols,
                1.0f, dout, cols, col, cols, 1.0f, dw, ckk);
    if (din == NULL)
        return;

    /* dcol (ckk, cols) = w^T (ckk, OC) x dout (OC, cols), then col2im */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ckk, cols, oc,
                1.0f, w, ckk, dout, cols, 0.0f, dcol, cols);
    conv_col2im(din, dcol, n, c, h, wd, k);
}

void nn_conv2d_backward_ref(float *din, float *dw, float *db,
                            const float *dout, const float *in,
                            const float *w, int n, int c, int h, int wd,
                            int oc, int k)
{
    int ho = h - k + 1, wo = wd - k + 1;

    if (din != NULL)
        memset(din, 0, sizeof(float) * (size_t)c * n * h * wd);
    for (int o = 0; o < oc; o++)
        for (int ni = 0; ni < n; ni++)
            for (int y = 0; y < ho; y++)
                for (int x = 0; x < wo; x++) {
                    float g = dout[(((size_t)o * n + ni) * ho + y) * wo + x];

                    db[o] += g;
                    for (int ci = 0; ci < c; ci++)
                        for (int ky = 0; ky < k; ky++)
                            for (int kx = 0; kx < k; kx++) {
                                size_t wi = ((o * c + ci) * k + ky) * k + kx;
                                size_t ii = (((size_t)ci * n + ni) * h + y +
                                             ky) * wd + x + kx;

                                dw[wi] += g * in[ii];
                                if (din != NULL)
                                    din[ii] += g * w[wi];
                            }
                }
}

/* ------------------------------------------------------------------ */
/* maxpool2d */

void nn_maxpool2d_forward(float *out, uint8_t *arg, const float *in,
                          int planes, int h, int w, int k)
{
    int ho = h / k, wo = w / k;

    for (int p = 0; p < planes; p++) {
        const float *src = in + (size_t)p * h * w;

        for (int y = 0; y < ho; y++)
            for (int x = 0; x < wo; x++) {
                const float *win = src + (size_t)y * k * w + x * k;
                float best = win[0];
                int at = 0;

                for (int dy = 0; dy < k; dy++)
                    for (int dx = 0; dx < k; dx++) {
                        float v = win[dy * w + dx];

                        if (v > best || isnan(v)) {
                            best = v;
                            at = dy * k + dx;
                        }
                    }
                *out++ = best;
                if (arg != NULL)
                    *arg++ = (uint8_t)at;
            }
    }
}

void nn_maxpool2d_relu_forward(float *out, uint8_t *arg, const float *in,
                               int planes, int h, int w, int k)
{
    size_t n = (size_t)planes * (h / k) * (w / k);

    nn_maxpool2d_forward(out, arg, in, planes, h, w, k);
    for (size_t i = 0; i < n; i++) {
        if (!(out[i] > 0.0f)) {
            out[i] = 0.0f;
            if (arg != NULL)
                arg[i] = 255;
        }
    }
}

void nn_maxpool2d_backward(float *din, const float *dout, const uint8_t *arg,
                           int planes, int h, int w, int k)
{
    int ho = h / k, wo = w / k;

    memset(din, 0, sizeof(float) * (size_t)planes * h * w);
    for (int p = 0; p < planes; p++) {
        float *dst = din + (size_t)p * h * w;

        for (int y = 0; y < ho; y++)
            for (int x = 0; x < wo; x++) {
                int at = *arg++;
                float g = *dout++;

                if (at == 255)
                    continue;
                dst[(y * k + at / k) * w + x * k + at % k] += g;
            }
    }
}

/* ------------------------------------------------------------------ */
/* relu, dropout */

void nn_relu_forward(float *out, const float *in, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = in[i] > 0.0f ? in[i] : 0.0f;
}

void nn_relu_backward(float *din, const float *dout, const float *out,
                      size_t n)
{
    for (size_t i = 0; i < n; i++)
        din[i] = out[i] > 0.0f ? dout[i] : 0.0f;
}

void nn_dropout_forward(float *out, const float *in, const float *mask,
                        size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = in[i] * mask[i];
}

void nn_dropout_backward(float *din, const float *dout, const float *mask,
                         size_t n)
{
    for (size_t i = 0; i < n; i++)
        din[i] = dout[i] * mask[i];
}

void nn_dropout2d_forward(float *out, const float *in, const float *mask,
                          int planes, int plane_size)
{
    for (int p = 0; p < planes; p++)
        for (int i = 0; i < plane_size; i++) {
            size_t j = (size_t)p * plane_size + i;

            out[j] = in[j] * mask[p];
        }
}

void nn_dropout2d_backward(float *din, const float *dout, const float *mask,
                           int planes, int plane_size)
{
    nn_dropout2d_forward(din, dout, mask, planes, plane_size);
}

/* ------------------------------------------------------------------ */
/* flatten */

void nn_flatten_forward(float *out, const float *in, int n, int c, int hw)
{
    for (int ci = 0; ci < c; ci++)
        for (int ni = 0; ni < n; ni++)
            memcpy(out + ((size_t)ni * c + ci) * hw,
                   in + ((size_t)ci * n + ni) * hw, sizeof(float) * hw);
}

void nn_flatten_backward(float *din, const float *dout, int n, int c,
                         int hw)
{
    for (int ci = 0; ci < c; ci++)
        for (int ni = 0; ni < n; ni++)
            memcpy(din + ((size_t)ci * n + ni) * hw,
                   dout + ((size_t)ni * c + ci) * hw, sizeof(float) * hw);
}

/* ------------------------------------------------------------------ */
/* linear */

void nn_linear_forward(float *out, const float *in, const float *w,
                       const float *b, int n, int in_f, int out_f)
{
    for (int i = 0; i < n; i++)
        memcpy(out + (size_t)i * out_f, b, sizeof(float) * out_f);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out_f, in_f,
                1.0f, in, in_f, w, in_f, 1.0f, out, out_f);
}

void nn_linear_forward_ref(float *out, const float *in, const float *w,
                           const float *b, int n, int in_f, int out_f)
{
    for (int i = 0; i < n; i++)
        for (int o = 0; o < out_f; o++) {
            double s = b[o];

            for (int j = 0; j < in_f; j++)
                s += (double)in[(size_t)i * in_f + j] *
                     w[(size_t)o * in_f + j];
            out[(size_t)i * out_f + o] = (float)s;
        }
}

void nn_linear_backward(float *din, float *dw, float *db, const float *dout,
                        const float *in, const float *w, int n, int in_f,
                        int out_f)
{
    for (int i = 0; i < n; i++)
        for (int o = 0; o < out_f; o++)
            db[o] += dout[(size_t)i * out_f + o];

    /* dw (OUT, IN) += dout^T (OUT, N) x in (N, IN) */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out_f, in_f, n,
                1.0f, dout, out_f, in, in_f, 1.0f, dw, in_f);

    /* din (N, IN) = dout (N, OUT) x w (OUT, IN) */
    if (din != NULL)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, in_f,
                    out_f, 1.0f, dout, out_f, w, in_f, 0.0f, din, in_f);
}

void nn_linear_backward_ref(float *din, float *dw, float *db,
                            const float *dout, const float *in,
                            const float *w, int n, int in_f, int out_f)
{
    if (din != NULL)
        memset(din, 0, sizeof(float) * (size_t)n * in_f);
    for (int i = 0; i < n; i++)
        for (int o = 0; o < out_f; o++) {
            float g = dout[(size_t)i * out_f + o];

            db[o] += g;
            for (int j = 0; j < in_f; j++) {
                dw[(size_t)o * in_f + j] += g * in[(size_t)i * in_f + j];
                if (din != NULL)
                    din[(size_t)i * in_f + j] += g * w[(size_t)o * in_f + j];
            }
        }
}

/* ------------------------------------------------------------------ */
/* log_softmax, NLL */

void nn_logsoftmax_forward(float *out, const float *in, int n, int c)
{
    for (int i = 0; i < n; i++) {
        const float *x = in + (size_t)i * c;
        float *y = out + (size_t)i * c;
        float mx = x[0];
        double s = 0.0;

        for (int j = 1; j < c; j++)
            mx = x[j] > mx ? x[j] : mx;
        for (int j = 0; j < c; j++)
            s += exp((double)(x[j] - mx));

        float lse = mx + (float)log(s);

        for (int j = 0; j < c; j++)
            y[j] = x[j] - lse;
    }
}

void nn_logsoftmax_backward(float *din, const float *dout, const float *out,
                            int n, int c)
{
    for (int i = 0; i < n; i++) {
        const float *g = dout + (size_t)i * c;
        const float *y = out + (size_t)i * c;
        float *d = din + (size_t)i * c;
        float s = 0.0f;

        for (int j = 0; j < c; j++)
            s += g[j];
        for (int j = 0; j < c; j++)
            d[j] = g[j] - expf(y[j]) * s;
    }
}

double nn_nll_forward(const float *logp, const uint8_t *labels, int n,
                      int c)
{
    double s = 0.0;

    for (int i = 0; i < n; i++)
        s -= logp[(size_t)i * c + labels[i]];
    return s;
}

void nn_nll_backward(float *dlogp, const uint8_t *labels, int n, int c,
                     float scale)
{
    memset(dlogp, 0, sizeof(float) * (size_t)n * c);
    for (int i = 0; i < n; i++)
        dlogp[(size_t)i * c + labels[i]] = -scale;
}
