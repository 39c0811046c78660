/*
 * Layer kernels of the model engine. See nn_layers.h for the contracts
 * and layouts; each fast path has a plain-loop `_ref` twin.
 */
#include "nn_layers.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define NN_AVX2 1
#endif

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

/* Sum of n floats; split over several accumulators so it vectorises. */
static float sum_floats(const float *x, size_t n)
{
    float acc[16] = {0};
    size_t i = 0;

    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++)
            acc[j] += x[i + j];
    for (; i < n; i++)
        acc[0] += x[i];
    for (int j = 1; j < 16; j++)
        acc[0] += acc[j];
    return acc[0];
}

/* memcpy of a few floats without the call; the compiler vectorises it. */
static inline void copy_floats(float *restrict dst,
                               const float *restrict src, int n)
{
    for (int i = 0; i < n; i++)
        dst[i] = src[i];
}

/* Rows of 8 floats (8 wide outputs, as in the second convolution):
 * gather ho rows at stride wd into dst / add them back. */
static inline void row8_copy(float *restrict dst, const float *restrict src,
                             int ho, int wd)
{
#ifdef NN_AVX2
    for (int oy = 0; oy < ho; oy++)
        _mm256_storeu_ps(dst + 8 * oy,
                         _mm256_loadu_ps(src + (size_t)oy * wd));
#else
    for (int oy = 0; oy < ho; oy++)
        copy_floats(dst + 8 * oy, src + (size_t)oy * wd, 8);
#endif
}

static inline void row8_add(float *restrict dst, const float *restrict src,
                            int ho, int wd)
{
#ifdef NN_AVX2
    for (int oy = 0; oy < ho; oy++) {
        float *d = dst + (size_t)oy * wd;

        _mm256_storeu_ps(d, _mm256_add_ps(_mm256_loadu_ps(d),
                                          _mm256_loadu_ps(src + 8 * oy)));
    }
#else
    for (int oy = 0; oy < ho; oy++)
        for (int x = 0; x < 8; x++)
            dst[(size_t)oy * wd + x] += src[8 * oy + x];
#endif
}

/* col (C*k*k, (n1-n0)*Ho*Wo) from images [n0, n1) of in (C, N, H, W). */
static void conv_im2col(float *col, const float *in, int n, int n0, int n1,
                        int c, int h, int wd, int k)
{
    int ho = h - k + 1, wo = wd - k + 1;
    size_t plane = (size_t)h * wd;

    for (int ci = 0; ci < c; ci++) {
        for (int ky = 0; ky < k; ky++) {
            for (int kx = 0; kx < k; kx++) {
                for (int ni = n0; ni < n1; ni++) {
                    const float *src =
                        in + ((size_t)ci * n + ni) * plane + ky * wd + kx;

                    if (wo == 8) {
                        row8_copy(col, src, ho, wd);
                        col += 8 * ho;
                        continue;
                    }
                    for (int oy = 0; oy < ho; oy++) {
                        copy_floats(col, src + (size_t)oy * wd, wo);
                        col += wo;
                    }
                }
            }
        }
    }
}

/* Images [n0, n1) of din (C, N, H, W) = dcol (C*k*k, (n1-n0)*Ho*Wo)
 * summed back over the windows. */
static void conv_col2im(float *din, const float *dcol, int n, int n0,
                        int n1, int c, int h, int wd, int k)
{
    int ho = h - k + 1, wo = wd - k + 1;
    size_t plane = (size_t)h * wd;

    for (int ci = 0; ci < c; ci++)
        memset(din + ((size_t)ci * n + n0) * plane, 0,
               sizeof(float) * plane * (n1 - n0));
    for (int ci = 0; ci < c; ci++) {
        for (int ky = 0; ky < k; ky++) {
            for (int kx = 0; kx < k; kx++) {
                for (int ni = n0; ni < n1; ni++) {
                    float *dst =
                        din + ((size_t)ci * n + ni) * plane + ky * wd + kx;

                    if (wo == 8) {
                        row8_add(dst, dcol, ho, wd);
                        dcol += 8 * ho;
                        continue;
                    }
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

#ifdef NN_AVX2
/*
 * Direct kernels for a one-channel 5x5 convolution of 28x28 images (the
 * first layer): each output row is three 8-float vectors, so a block of
 * G output channels keeps 3*G accumulators in registers and every input
 * vector loaded feeds G fused multiply-adds. Faster than im2col+GEMM
 * here, where the GEMM would be only 25 deep.
 */
#define C1_SIDE 28
#define C1_OUT 24

static inline __attribute__((always_inline)) void
conv1_block(float *out, const float *src, const float *w, const float *b,
            int o0, int n, int ni, int y, const int G)
{
    __m256 acc[4][3];

    for (int j = 0; j < G; j++)
        for (int v = 0; v < 3; v++)
            acc[j][v] = _mm256_broadcast_ss(&b[o0 + j]);
    for (int ky = 0; ky < 5; ky++) {
        const float *row = src + (y + ky) * C1_SIDE;

        for (int kx = 0; kx < 5; kx++) {
            __m256 x0 = _mm256_loadu_ps(row + kx);
            __m256 x1 = _mm256_loadu_ps(row + kx + 8);
            __m256 x2 = _mm256_loadu_ps(row + kx + 16);

            for (int j = 0; j < G; j++) {
                __m256 wv = _mm256_broadcast_ss(&w[(o0 + j) * 25 + ky * 5 +
                                                   kx]);

                acc[j][0] = _mm256_fmadd_ps(wv, x0, acc[j][0]);
                acc[j][1] = _mm256_fmadd_ps(wv, x1, acc[j][1]);
                acc[j][2] = _mm256_fmadd_ps(wv, x2, acc[j][2]);
            }
        }
    }
    for (int j = 0; j < G; j++) {
        float *dst = out + ((size_t)(o0 + j) * n + ni) * C1_OUT * C1_OUT +
                     y * C1_OUT;

        for (int v = 0; v < 3; v++)
            _mm256_storeu_ps(dst + 8 * v, acc[j][v]);
    }
}

static void conv1_forward_avx2(float *out, const float *in, const float *w,
                               const float *b, int n, int oc)
{
    for (int ni = 0; ni < n; ni++) {
        const float *src = in + (size_t)ni * C1_SIDE * C1_SIDE;

        for (int y = 0; y < C1_OUT; y++) {
            int o = 0;

            for (; o + 4 <= oc; o += 4)
                conv1_block(out, src, w, b, o, n, ni, y, 4);
            for (; o + 2 <= oc; o += 2)
                conv1_block(out, src, w, b, o, n, ni, y, 2);
            for (; o < oc; o++)
                conv1_block(out, src, w, b, o, n, ni, y, 1);
        }
    }
}

static float hsum256(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v),
                          _mm256_extractf128_ps(v, 1));

    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

/* dw of output channels o0..o0+G-1 over images [n0, n1). */
static inline __attribute__((always_inline)) void
conv1_dw_block(float *dw, const float *dout, const float *in, int o0, int n,
               int n0, int n1, const int G)
{
    for (int ky = 0; ky < 5; ky++)
        for (int kx = 0; kx < 5; kx++) {
            __m256 acc[5];

            for (int j = 0; j < G; j++)
                acc[j] = _mm256_setzero_ps();
            for (int ni = n0; ni < n1; ni++) {
                const float *src = in + (size_t)ni * C1_SIDE * C1_SIDE +
                                   ky * C1_SIDE + kx;

                for (int y = 0; y < C1_OUT; y++) {
                    __m256 x0 = _mm256_loadu_ps(src + y * C1_SIDE);
                    __m256 x1 = _mm256_loadu_ps(src + y * C1_SIDE + 8);
                    __m256 x2 = _mm256_loadu_ps(src + y * C1_SIDE + 16);

                    for (int j = 0; j < G; j++) {
                        const float *d = dout + ((size_t)(o0 + j) * n + ni) *
                                                    C1_OUT * C1_OUT +
                                         y * C1_OUT;

                        acc[j] = _mm256_fmadd_ps(_mm256_loadu_ps(d), x0,
                                                 acc[j]);
                        acc[j] = _mm256_fmadd_ps(_mm256_loadu_ps(d + 8), x1,
                                                 acc[j]);
                        acc[j] = _mm256_fmadd_ps(_mm256_loadu_ps(d + 16), x2,
                                                 acc[j]);
                    }
                }
            }
            for (int j = 0; j < G; j++)
                dw[(o0 + j) * 25 + ky * 5 + kx] += hsum256(acc[j]);
        }
}

static void conv1_dw_avx2(float *dw, const float *dout, const float *in,
                          int n, int oc)
{
    /* a few images at a time, so their output gradients stay in cache
     * across the 25 kernel positions */
    for (int n0 = 0; n0 < n; n0 += 4) {
        int n1 = n0 + 4 < n ? n0 + 4 : n;
        int o = 0;

        for (; o + 5 <= oc; o += 5)
            conv1_dw_block(dw, dout, in, o, n, n0, n1, 5);
        for (; o < oc; o++)
            conv1_dw_block(dw, dout, in, o, n, n0, n1, 1);
    }
}

/*
 * Direct kernel for convolutions whose output rows are exactly 8 wide
 * (the second layer: 12x12 -> 8x8): a block of R output rows x G output
 * channels keeps R*G accumulators in registers (at most 10, so with the
 * inputs and the weight everything fits the 16 vector registers); each
 * input vector loaded feeds G multiply-adds and each broadcast weight R.
 */
#define C8_R 2
#define C8_G 5

static inline __attribute__((always_inline)) void
conv8_block(float *out, const float *in, const float *w, const float *b,
            int n, int ni, int c, int h, int wd, int k, int o0, int y0,
            const int G)
{
    __m256 acc[C8_G][C8_R];
    int ckk = c * k * k;

    for (int j = 0; j < G; j++)
        for (int r = 0; r < C8_R; r++)
            acc[j][r] = _mm256_broadcast_ss(&b[o0 + j]);
    for (int ci = 0; ci < c; ci++) {
        const float *plane = in + ((size_t)ci * n + ni) * h * wd;

        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                const float *src = plane + (size_t)(y0 + ky) * wd + kx;
                const float *wk = w + (size_t)o0 * ckk + (ci * k + ky) * k +
                                  kx;
                __m256 x[C8_R];

                for (int r = 0; r < C8_R; r++)
                    x[r] = _mm256_loadu_ps(src + (size_t)r * wd);
                for (int j = 0; j < G; j++) {
                    __m256 wv = _mm256_broadcast_ss(wk + (size_t)j * ckk);

                    for (int r = 0; r < C8_R; r++)
                        acc[j][r] = _mm256_fmadd_ps(wv, x[r], acc[j][r]);
                }
            }
    }
    for (int j = 0; j < G; j++) {
        float *dst = out + (((size_t)(o0 + j) * n + ni) * 8 + y0) * 8;

        for (int r = 0; r < C8_R; r++)
            _mm256_storeu_ps(dst + 8 * r, acc[j][r]);
    }
}

/*
 * Input gradient of a convolution with 8x8 outputs, computed directly
 * (a transposed convolution) with 8 images in the 8 lanes of a vector:
 * every input position sums dout x w over the output channels and the
 * kernel positions that reach it, so no col matrix is written or read
 * and nothing is computed for the zero border that im2col's gradient
 * would scatter. The group's dout is transposed to (OC, P, P, 8), P = 8
 * + 2(k-1), inside a zero border, and the weights to (OC, k, k, C), so
 * every load is contiguous. A block of G input channels x R neighbouring
 * positions in a row shares each weight broadcast and each dout load;
 * the border's zeros let both positions run over the union of their
 * kernel columns.
 */
#define C8D_G 5

static inline __attribute__((always_inline)) void
conv8_din_block(float *tmp, const float *dt, const float *wt, int c,
                int ci0, int oc, int k, int y, int x, const int G,
                const int R)
{
    __m256 acc[C8D_G][2];
    int p = 8 + 2 * (k - 1);
    int ky0 = y > 7 ? y - 7 : 0, ky1 = y < k - 1 ? y : k - 1;
    int kx0 = x > 7 ? x - 7 : 0;
    int kx1 = x + R - 1 < k - 1 ? x + R - 1 : k - 1;

    for (int j = 0; j < G; j++)
        for (int r = 0; r < R; r++)
            acc[j][r] = _mm256_setzero_ps();
    for (int o = 0; o < oc; o++)
        for (int ky = ky0; ky <= ky1; ky++)
            for (int kx = kx0; kx <= kx1; kx++) {
                const float *src =
                    dt + (((size_t)o * p + y - ky + k - 1) * p + x - kx +
                          k - 1) * 8;
                const float *wr = wt + ((size_t)(o * k + ky) * k + kx) * c +
                                  ci0;
                __m256 d[2];

                for (int r = 0; r < R; r++)
                    d[r] = _mm256_loadu_ps(src + 8 * r);
                for (int j = 0; j < G; j++) {
                    __m256 wv = _mm256_broadcast_ss(wr + j);

                    for (int r = 0; r < R; r++)
                        acc[j][r] = _mm256_fmadd_ps(wv, d[r], acc[j][r]);
                }
            }
    for (int j = 0; j < G; j++)
        for (int r = 0; r < R; r++)
            _mm256_storeu_ps(tmp + 8 * (j * R + r), acc[j][r]);
}

/* Positions (y, x .. x+R-1), channels ci .. ci+G-1 of images
 * [n0, n0 + nl) of din, G and R as the block above. */
static void conv8_din_store(float *din, const float *tmp, int n, int n0,
                            int nl, int ci, int g, int r, int h, int wd,
                            int y, int x)
{
    for (int j = 0; j < g; j++)
        for (int q = 0; q < r; q++)
            for (int l = 0; l < nl; l++)
                din[(((size_t)(ci + j) * n + n0 + l) * h + y) * wd + x + q] =
                    tmp[8 * (j * r + q) + l];
}

/* Images [n0, n0 + nl) of din from the transposed dt and wt. */
static void conv8_din_group(float *din, const float *dt, const float *wt,
                            int n, int n0, int nl, int c, int h, int wd,
                            int oc, int k)
{
    float tmp[8 * 2 * C8D_G];

    for (int y = 0; y < h; y++)
        for (int x = 0; x < wd; x += 2) {
            int r = wd - x >= 2 ? 2 : 1;

            for (int ci = 0; ci < c;) {
                int g = c - ci >= C8D_G ? C8D_G : 1;

                if (g == C8D_G && r == 2)
                    conv8_din_block(tmp, dt, wt, c, ci, oc, k, y, x,
                                    C8D_G, 2);
                else if (r == 2)
                    conv8_din_block(tmp, dt, wt, c, ci, oc, k, y, x, 1, 2);
                else
                    conv8_din_block(tmp, dt, wt, c, ci, oc, k, y, x, 1, 1);
                if (r == 1)
                    g = 1;
                conv8_din_store(din, tmp, n, n0, nl, ci, g, r, h, wd, y, x);
                ci += g;
            }
        }
}

/* Scratch floats conv8_din_avx2 needs. */
static size_t conv8_din_scratch(int c, int oc, int k)
{
    size_t p = 8 + 2 * (size_t)(k - 1);

    return (size_t)oc * p * p * 8 + (size_t)oc * k * k * c;
}

/* The group's dout into the interior of dt (oc, p, p, 8); lanes past
 * nl images are zero. */
static void conv8_din_transpose(float *dt, const float *dout, int n,
                                int n0, int nl, int oc, int k)
{
    int p = 8 + 2 * (k - 1);

    for (int o = 0; o < oc; o++)
        for (int y = 0; y < 8; y++)
            for (int x = 0; x < 8; x++) {
                float *d = dt + (((size_t)o * p + y + k - 1) * p + x + k -
                                 1) * 8;

                for (int l = 0; l < 8; l++)
                    d[l] = l < nl ? dout[((size_t)o * n + n0 + l) * 64 +
                                         y * 8 + x]
                                  : 0.0f;
            }
}

/* din (C, N, H, W) of an 8x8-output convolution; scratch holds
 * conv8_din_scratch() floats. */
static void conv8_din_avx2(float *din, float *scratch, const float *dout,
                           const float *w, int n, int c, int h, int wd,
                           int oc, int k)
{
    size_t p = 8 + 2 * (size_t)(k - 1), kk = (size_t)k * k;
    float *dt = scratch, *wt = scratch + (size_t)oc * p * p * 8;

    for (int o = 0; o < oc; o++)
        for (int ci = 0; ci < c; ci++)
            for (size_t q = 0; q < kk; q++)
                wt[(o * kk + q) * c + ci] = w[((size_t)o * c + ci) * kk + q];
    memset(dt, 0, sizeof(float) * (size_t)oc * p * p * 8);
    for (int n0 = 0; n0 < n; n0 += 8) {
        int nl = n - n0 < 8 ? n - n0 : 8;

        conv8_din_transpose(dt, dout, n, n0, nl, oc, k);
        conv8_din_group(din, dt, wt, n, n0, nl, c, h, wd, oc, k);
    }
}

/*
 * Weight gradient of a 5x5 convolution with 8x8 outputs, directly: for
 * one input channel and kernel row, a block of G output channels keeps
 * G x 5 accumulators (one per kernel column), each output-gradient row
 * loaded feeds 5 multiply-adds and each input row vector G. The lanes
 * are summed once per block of images.
 */
#define C8W_G 2
#define C8W_IMAGES 16

static inline __attribute__((always_inline)) void
conv8_dw_block(float *dw, const float *dout, const float *in, int n, int n0,
               int n1, int c, int h, int wd, int o0, int ci, int ky,
               const int G)
{
    __m256 acc[C8W_G][5];

    for (int j = 0; j < G; j++)
        for (int kx = 0; kx < 5; kx++)
            acc[j][kx] = _mm256_setzero_ps();
    for (int ni = n0; ni < n1; ni++) {
        const float *src = in + (((size_t)ci * n + ni) * h + ky) * wd;

        for (int oy = 0; oy < 8; oy++) {
            __m256 x[5];

            for (int kx = 0; kx < 5; kx++)
                x[kx] = _mm256_loadu_ps(src + (size_t)oy * wd + kx);
            for (int j = 0; j < G; j++) {
                __m256 d = _mm256_loadu_ps(
                    dout + ((size_t)(o0 + j) * n + ni) * 64 + oy * 8);

                for (int kx = 0; kx < 5; kx++)
                    acc[j][kx] = _mm256_fmadd_ps(d, x[kx], acc[j][kx]);
            }
        }
    }
    for (int j = 0; j < G; j++)
        for (int kx = 0; kx < 5; kx++)
            dw[(((size_t)(o0 + j) * c + ci) * 5 + ky) * 5 + kx] +=
                hsum256(acc[j][kx]);
}

/* dw (OC, C, 5, 5) += the weight gradient of an 8x8-output 5x5
 * convolution. */
static void conv8_dw_avx2(float *dw, const float *dout, const float *in,
                          int n, int c, int h, int wd, int oc)
{
    for (int n0 = 0; n0 < n; n0 += C8W_IMAGES) {
        int n1 = n0 + C8W_IMAGES < n ? n0 + C8W_IMAGES : n;

        for (int ci = 0; ci < c; ci++)
            for (int ky = 0; ky < 5; ky++) {
                int o = 0;

                for (; o + C8W_G <= oc; o += C8W_G)
                    conv8_dw_block(dw, dout, in, n, n0, n1, c, h, wd, o, ci,
                                   ky, C8W_G);
                for (; o < oc; o++)
                    conv8_dw_block(dw, dout, in, n, n0, n1, c, h, wd, o, ci,
                                   ky, 1);
            }
    }
}

/* The kernel above over all images; needs an 8x8 output. */
static void conv8_forward_avx2(float *out, const float *in, const float *w,
                               const float *b, int n, int c, int h, int wd,
                               int oc, int k)
{
    for (int ni = 0; ni < n; ni++)
        for (int y0 = 0; y0 < 8; y0 += C8_R) {
            int o = 0;

            for (; o + C8_G <= oc; o += C8_G)
                conv8_block(out, in, w, b, n, ni, c, h, wd, k, o, y0, C8_G);
            for (; o < oc; o++)
                conv8_block(out, in, w, b, n, ni, c, h, wd, k, o, y0, 1);
        }
}
#endif

/*
 * Which direct kernel computes this convolution's forward pass, if any:
 * 1 for the one-channel 28x28 5x5 case, 8 for 8x8 outputs, else 0. The
 * direct forwards do not fill col; backward fills it block by block.
 */
static int conv_direct(int c, int h, int wd, int k)
{
#ifdef NN_AVX2
    if (c == 1 && k == 5 && h == C1_SIDE && wd == C1_SIDE)
        return 1;
    if (h - k + 1 == 8 && wd - k + 1 == 8)
        return 8;
#else
    (void)c, (void)h, (void)wd, (void)k;
#endif
    return 0;
}

/*
 * Images per im2col block: the convolutions run a block at a time so
 * that the block's col matrix (and its gradient) stays in the L2 cache
 * between being written and being multiplied.
 */
static int conv_block(int ckk, int howo)
{
    int nb = 65536 / (ckk * howo);

    return nb < 1 ? 1 : nb;
}

void nn_conv2d_forward(float *out, float *col, const float *in,
                       const float *w, const float *b, int n, int c, int h,
                       int wd, int oc, int k)
{
    int ckk = c * k * k, howo = (h - k + 1) * (wd - k + 1);
    int cols = n * howo, nb = conv_block(ckk, howo);

#ifdef NN_AVX2
    if (conv_direct(c, h, wd, k) == 1) {
        conv1_forward_avx2(out, in, w, b, n, oc);
        return;
    }
#endif
#ifdef NN_AVX2
    if (conv_direct(c, h, wd, k) == 8) {
        conv8_forward_avx2(out, in, w, b, n, c, h, wd, oc, k);
        return;
    }
#endif
    for (int o = 0; o < oc; o++) {
        float *row = out + (size_t)o * cols;

        for (int j = 0; j < cols; j++)
            row[j] = b[o];
    }

    /* per block: out[:, block] += w (OC, ckk) x colb (ckk, block) */
    for (int n0 = 0; n0 < n; n0 += nb) {
        int n1 = n0 + nb < n ? n0 + nb : n, bc = (n1 - n0) * howo;
        float *colb = col + (size_t)ckk * n0 * howo;

        conv_im2col(colb, in, n, n0, n1, c, h, wd, k);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, oc, bc, ckk,
                    1.0f, w, ckk, colb, bc, 1.0f, out + (size_t)n0 * howo,
                    cols);
    }
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

/*
 * The im2col+GEMM backward, a block of images at a time: dw when
 * want_dw, din (through dcol and col2im) when din is not NULL.
 */
static void conv_backward_gemm(float *din, float *dw, float *dcol,
                               float *col, const float *dout,
                               const float *in, const float *w, int n,
                               int c, int h, int wd, int oc, int k,
                               int want_dw)
{
    int ckk = c * k * k, howo = (h - k + 1) * (wd - k + 1);
    int cols = n * howo, nb = conv_block(ckk, howo);

    for (int n0 = 0; n0 < n; n0 += nb) {
        int n1 = n0 + nb < n ? n0 + nb : n, bc = (n1 - n0) * howo;
        const float *doutb = dout + (size_t)n0 * howo;
        float *colb = col + (size_t)ckk * n0 * howo;

        /* a direct forward left col empty: fill this block now */
        if (conv_direct(c, h, wd, k) && want_dw) {
            colb = col;
            conv_im2col(colb, in, n, n0, n1, c, h, wd, k);
        }

        /* dw (OC, ckk) += doutb (OC, block) x colb^T (block, ckk) */
        if (want_dw)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, oc, ckk,
                        bc, 1.0f, doutb, cols, colb, bc, 1.0f, dw, ckk);
        if (din == NULL)
            continue;

        /* dcol (ckk, block) = w^T (ckk, OC) x doutb, then col2im */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ckk, bc, oc,
                    1.0f, w, ckk, doutb, cols, 0.0f, dcol, bc);
        conv_col2im(din, dcol, n, n0, n1, c, h, wd, k);
    }
}

void nn_conv2d_backward(float *din, float *dw, float *db, float *dcol,
                        float *col, const float *dout, const float *in,
                        const float *w, int n, int c, int h, int wd, int oc,
                        int k)
{
    size_t cols = (size_t)n * (h - k + 1) * (wd - k + 1);
    int direct = conv_direct(c, h, wd, k), din_direct = 0, dw_direct = 0;

    for (int o = 0; o < oc; o++)
        db[o] += sum_floats(dout + (size_t)o * cols, cols);

#ifdef NN_AVX2
    if (direct == 1 && din == NULL) {
        conv1_dw_avx2(dw, dout, in, n, oc);
        return;
    }
    /* dcol doubles as the direct input gradient's scratch */
    din_direct = din != NULL && direct == 8 &&
                 conv8_din_scratch(c, oc, k) <= (size_t)c * k * k * cols;
    dw_direct = direct == 8 && k == 5;
#endif
    if (!dw_direct || (din != NULL && !din_direct))
        conv_backward_gemm(din_direct ? NULL : din, dw, dcol, col, dout, in,
                           w, n, c, h, wd, oc, k, !dw_direct);
#ifdef NN_AVX2
    if (dw_direct)
        conv8_dw_avx2(dw, dout, in, n, c, h, wd, oc);
    if (din_direct)
        conv8_din_avx2(din, dcol, dout, w, n, c, h, wd, oc, k);
#endif
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

#ifdef NN_AVX2
/* Maxima of four 2x2 windows from two rows of 8 inputs; relu of them
 * into rout too unless it is NULL. */
static inline void maxpool2_four(float *out, float *rout, const float *r0,
                                 const float *r1)
{
    const __m256i even = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    __m256 v = _mm256_max_ps(_mm256_loadu_ps(r0), _mm256_loadu_ps(r1));
    __m256 m = _mm256_max_ps(v, _mm256_permute_ps(v, 0xb1));
    __m128 q = _mm256_castps256_ps128(_mm256_permutevar8x32_ps(m, even));

    _mm_storeu_ps(out, q);
    if (rout != NULL)
        _mm_storeu_ps(rout, _mm_max_ps(q, _mm_setzero_ps()));
}
#endif

/* Window 2x2: plain maxima, four windows to a vector; relu(max) into
 * rout too unless it is NULL. */
static void maxpool2_fast(float *out, float *rout, const float *in,
                          int planes, int h, int w)
{
    int ho = h / 2, wo = w / 2;

    for (int p = 0; p < planes; p++) {
        const float *src = in + (size_t)p * h * w;

        for (int y = 0; y < ho; y++) {
            const float *r0 = src + (size_t)2 * y * w, *r1 = r0 + w;
            int x0 = 0;

#ifdef NN_AVX2
            for (; x0 + 4 <= wo; x0 += 4)
                maxpool2_four(out + x0, rout ? rout + x0 : NULL,
                              r0 + 2 * x0, r1 + 2 * x0);
#endif
            for (int x = x0; x < wo; x++) {
                float a = r0[2 * x] > r0[2 * x + 1] ? r0[2 * x]
                                                    : r0[2 * x + 1];
                float b = r1[2 * x] > r1[2 * x + 1] ? r1[2 * x]
                                                    : r1[2 * x + 1];

                out[x] = a > b ? a : b;
            }
            for (int x = x0; rout != NULL && x < wo; x++)
                rout[x] = out[x] > 0.0f ? out[x] : 0.0f;
            out += wo;
            rout = rout != NULL ? rout + wo : NULL;
        }
    }
}

void nn_maxpool2d_forward_ref(float *out, const float *in, int planes,
                              int h, int w, int k)
{
    int ho = h / k, wo = w / k;

    for (int p = 0; p < planes; p++) {
        const float *src = in + (size_t)p * h * w;

        for (int y = 0; y < ho; y++)
            for (int x = 0; x < wo; x++) {
                const float *win = src + (size_t)y * k * w + x * k;
                float best = win[0];

                for (int dy = 0; dy < k; dy++)
                    for (int dx = 0; dx < k; dx++)
                        if (win[dy * w + dx] > best ||
                            isnan(win[dy * w + dx]))
                            best = win[dy * w + dx];
                *out++ = best;
            }
    }
}

void nn_maxpool2d_forward(float *out, const float *in, int planes, int h,
                          int w, int k)
{
    /* the fast path ignores NaN, which finite parameters never produce */
    if (k == 2)
        maxpool2_fast(out, NULL, in, planes, h, w);
    else
        nn_maxpool2d_forward_ref(out, in, planes, h, w, k);
}

/* Window 2x2: the gradient goes to the first input equal to the maximum,
 * chosen without branches (which winner is random, so branches would
 * mispredict half the time). One output's window, scalar. */
static inline void maxpool2_backward_one(float *d0, float *d1,
                                         const float *r0, const float *r1,
                                         float m, float g)
{
    int e0 = r0[0] == m;
    int e1 = !e0 & (r0[1] == m);
    int e2 = !(e0 | e1) & (r1[0] == m);
    int e3 = !(e0 | e1 | e2);

    d0[0] = e0 ? g : 0.0f;
    d0[1] = e1 ? g : 0.0f;
    d1[0] = e2 ? g : 0.0f;
    d1[1] = e3 ? g : 0.0f;
}

#ifdef NN_AVX2
/* Four windows at once: lanes hold (even, odd) column pairs. */
static inline void maxpool2_backward_four(float *d0, float *d1,
                                          const float *r0, const float *r1,
                                          const float *m, const float *g,
                                          int relu)
{
    const __m256i dup = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
    const __m256 even = _mm256_castsi256_ps(
        _mm256_setr_epi32(-1, 0, -1, 0, -1, 0, -1, 0));
    __m256 m2 = _mm256_permutevar8x32_ps(
        _mm256_castps128_ps256(_mm_loadu_ps(m)), dup);
    __m256 g2 = _mm256_permutevar8x32_ps(
        _mm256_castps128_ps256(_mm_loadu_ps(g)), dup);
    __m256 eq0 = _mm256_cmp_ps(_mm256_loadu_ps(r0), m2, _CMP_EQ_OQ);
    __m256 eq1 = _mm256_cmp_ps(_mm256_loadu_ps(r1), m2, _CMP_EQ_OQ);
    __m256 sw0 = _mm256_permute_ps(eq0, 0xb1); /* partner lane */
    __m256 sw1 = _mm256_permute_ps(eq1, 0xb1);
    __m256 any0 = _mm256_or_ps(eq0, sw0);
    __m256 ones = _mm256_castsi256_ps(_mm256_set1_epi32(-1));

    if (relu)
        g2 = _mm256_and_ps(g2, _mm256_cmp_ps(m2, _mm256_setzero_ps(),
                                             _CMP_GT_OQ));

    /* row 0: even lane if equal; odd lane if equal and even was not */
    __m256 f0 = _mm256_and_ps(
        eq0, _mm256_or_ps(even, _mm256_andnot_ps(sw0, ones)));
    /* row 1, only if row 0 had none: even lane if equal; odd lane if
     * the even one was not (it must be the maximum then) */
    __m256 f1 = _mm256_andnot_ps(
        any0, _mm256_or_ps(_mm256_and_ps(even, eq1),
                           _mm256_andnot_ps(_mm256_or_ps(even, sw1), ones)));

    _mm256_storeu_ps(d0, _mm256_and_ps(f0, g2));
    _mm256_storeu_ps(d1, _mm256_and_ps(f1, g2));
}
#endif

/* With relu set, out is relu(max) and an output's gradient passes only
 * where it is positive (a window whose max is not positive gets zeros,
 * whichever input the comparison picks). */
static void maxpool2_backward_fast(float *din, const float *dout,
                                   const float *out, const float *in,
                                   int planes, int h, int w, int relu)
{
    int ho = h / 2, wo = w / 2;

    for (int p = 0; p < planes; p++) {
        const float *src = in + (size_t)p * h * w;
        float *dst = din + (size_t)p * h * w;

        for (int y = 0; y < ho; y++) {
            const float *r0 = src + (size_t)2 * y * w, *r1 = r0 + w;
            float *d0 = dst + (size_t)2 * y * w, *d1 = d0 + w;
            int x = 0;

#ifdef NN_AVX2
            for (; x + 4 <= wo; x += 4)
                maxpool2_backward_four(d0 + 2 * x, d1 + 2 * x, r0 + 2 * x,
                                       r1 + 2 * x, out + x, dout + x, relu);
#endif
            for (; x < wo; x++)
                maxpool2_backward_one(d0 + 2 * x, d1 + 2 * x, r0 + 2 * x,
                                      r1 + 2 * x, out[x],
                                      !relu || out[x] > 0.0f ? dout[x]
                                                             : 0.0f);
            out += wo;
            dout += wo;
        }
    }
}

/*
 * Plain-loop max-pool backward: each window's gradient goes to its first
 * maximum. With relu, windows whose maximum is not positive (the relu
 * after the pool zeroed them) pass nothing back.
 */
static void maxpool_backward_loops(float *din, const float *dout,
                                   const float *out, const float *in,
                                   int planes, int h, int w, int k,
                                   int relu)
{
    int ho = h / k, wo = w / k;

    memset(din, 0, sizeof(float) * (size_t)planes * h * w);
    for (int p = 0; p < planes; p++) {
        const float *src = in + (size_t)p * h * w;
        float *dst = din + (size_t)p * h * w;

        for (int y = 0; y < ho; y++)
            for (int x = 0; x < wo; x++) {
                float m = *out++, g = *dout++;
                int done = relu && !(m > 0.0f);

                for (int dy = 0; dy < k && !done; dy++)
                    for (int dx = 0; dx < k && !done; dx++) {
                        size_t at = (size_t)(y * k + dy) * w + x * k + dx;

                        if (src[at] == m || (isnan(m) && isnan(src[at]))) {
                            dst[at] += g;
                            done = 1;
                        }
                    }
            }
    }
}

void nn_maxpool2d_backward_ref(float *din, const float *dout,
                               const float *out, const float *in,
                               int planes, int h, int w, int k)
{
    maxpool_backward_loops(din, dout, out, in, planes, h, w, k, 0);
}

void nn_maxpool2d_backward(float *din, const float *dout, const float *out,
                           const float *in, int planes, int h, int w, int k)
{
    if (k == 2 && h % 2 == 0 && w % 2 == 0)
        maxpool2_backward_fast(din, dout, out, in, planes, h, w, 0);
    else
        nn_maxpool2d_backward_ref(din, dout, out, in, planes, h, w, k);
}

/* ------------------------------------------------------------------ */
/* maxpool2d followed by relu, in one pass */

void nn_maxpool2d_relu_forward(float *pool, float *out, const float *in,
                               int planes, int h, int w, int k)
{
    size_t n = (size_t)planes * (h / k) * (w / k);

    if (k != 2) {
        nn_maxpool2d_forward_ref(pool, in, planes, h, w, k);
        nn_relu_forward(out, pool, n);
        return;
    }
    maxpool2_fast(pool, out, in, planes, h, w);
}

void nn_maxpool2d_relu_forward_ref(float *pool, float *out, const float *in,
                                   int planes, int h, int w, int k)
{
    nn_maxpool2d_forward_ref(pool, in, planes, h, w, k);
    nn_relu_forward(out, pool, (size_t)planes * (h / k) * (w / k));
}

void nn_maxpool2d_relu_backward(float *din, const float *dout,
                                const float *out, const float *in,
                                int planes, int h, int w, int k)
{
    if (k == 2 && h % 2 == 0 && w % 2 == 0)
        maxpool2_backward_fast(din, dout, out, in, planes, h, w, 1);
    else
        nn_maxpool2d_relu_backward_ref(din, dout, out, in, planes, h, w,
                                       k);
}

void nn_maxpool2d_relu_backward_ref(float *din, const float *dout,
                                    const float *out, const float *in,
                                    int planes, int h, int w, int k)
{
    maxpool_backward_loops(din, dout, out, in, planes, h, w, k, 1);
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
