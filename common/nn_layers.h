/*
 * The layers of the model engine, each a _forward/_backward pair.
 *
 * Argument order: outputs, saved state, inputs, parameters, sizes.
 * Inputs are const. Gradient buffers start with `d`. Backward functions
 * ADD into parameter gradients (dw, db), which the caller zeroes once per
 * step, and OVERWRITE the input gradient (din). Spatial tensors are
 * (C, N, H, W): channel-major over the batch (see nn_internal.h).
 *
 * Every fast path (BLAS, vectorised) has a plain-loop `_ref` twin beside
 * it computing the same thing the obvious way; tests compare the two.
 */
#ifndef DADC_NN_LAYERS_H
#define DADC_NN_LAYERS_H

#include <stddef.h>
#include <stdint.h>

/* Normalise uint8 images: in (N, 784) -> out (1, N, 28, 28). */
void nn_input_forward(float *out, const uint8_t *in, size_t n);

/*
 * conv2d, stride 1, no padding, kernel k x k.
 * in (C, N, H, W); w (OC, C, k, k); b (OC); out (OC, N, H-k+1, W-k+1).
 * col (C*k*k, N*Ho*Wo) receives the im2col matrix, which backward reuses.
 */
void nn_conv2d_forward(float *out, float *col, const float *in,
                       const float *w, const float *b, int n, int c, int h,
                       int wd, int oc, int k);
void nn_conv2d_forward_ref(float *out, const float *in, const float *w,
                           const float *b, int n, int c, int h, int wd,
                           int oc, int k);
/*
 * dout (OC, N, Ho, Wo); col as forward left it (forward may skip it on
 * a direct path, then backward fills it when it needs it); in the
 * forward's input; dcol scratch (C*k*k, N*Ho*Wo). dw (OC, C, k, k) and
 * db (OC) accumulate; din (C, N, H, W) is written unless it is NULL
 * (first layer: no input gradient needed).
 */
void nn_conv2d_backward(float *din, float *dw, float *db, float *dcol,
                        float *col, const float *dout, const float *in,
                        const float *w, int n, int c, int h, int wd, int oc,
                        int k);
void nn_conv2d_backward_ref(float *din, float *dw, float *db,
                            const float *dout, const float *in,
                            const float *w, int n, int c, int h, int wd,
                            int oc, int k);

/*
 * maxpool2d, window k x k, stride k (sizes floored as in PyTorch).
 * in (C, N, H, W) -> out (C, N, H/k, W/k). Backward sends each output's
 * gradient to the first input of its window (row order) equal to the
 * maximum, as PyTorch does; it needs the forward's in and out.
 * din (C, N, H, W) is written.
 */
void nn_maxpool2d_forward(float *out, const float *in, int planes, int h,
                          int w, int k);
void nn_maxpool2d_forward_ref(float *out, const float *in, int planes,
                              int h, int w, int k);
void nn_maxpool2d_backward(float *din, const float *dout, const float *out,
                           const float *in, int planes, int h, int w, int k);
void nn_maxpool2d_backward_ref(float *din, const float *dout,
                               const float *out, const float *in,
                               int planes, int h, int w, int k);

/*
 * maxpool2d then relu, in one pass: pool receives the max-pool's output,
 * out = relu(pool). Backward takes out (the relu's output) in place of
 * the pool's: the gradient of out goes, where out > 0, to the first
 * input of the window equal to it; din (C, N, H, W) is written. Same
 * as the two layers' backward one after the other.
 */
void nn_maxpool2d_relu_forward(float *pool, float *out, const float *in,
                               int planes, int h, int w, int k);
void nn_maxpool2d_relu_forward_ref(float *pool, float *out, const float *in,
                                   int planes, int h, int w, int k);
void nn_maxpool2d_relu_backward(float *din, const float *dout,
                                const float *out, const float *in,
                                int planes, int h, int w, int k);
void nn_maxpool2d_relu_backward_ref(float *din, const float *dout,
                                    const float *out, const float *in,
                                    int planes, int h, int w, int k);

/* relu over n values; backward uses the output: din = dout * (out > 0). */
void nn_relu_forward(float *out, const float *in, size_t n);
void nn_relu_backward(float *din, const float *dout, const float *out,
                      size_t n);

/*
 * Dropout: out = in * mask, where mask holds 0 or 1/(1-p). The mask is
 * made by the caller (nn_dropout_mask); backward: din = dout * mask.
 * dropout2d uses one mask value per (channel, image) of a (C, N, H, W)
 * tensor; dropout one per value.
 */
void nn_dropout_forward(float *out, const float *in, const float *mask,
                        size_t n);
void nn_dropout_backward(float *din, const float *dout, const float *mask,
                         size_t n);
void nn_dropout2d_forward(float *out, const float *in, const float *mask,
                          int planes, int plane_size);
void nn_dropout2d_backward(float *din, const float *dout, const float *mask,
                           int planes, int plane_size);

/* flatten: in (C, N, H, W) -> out (N, C*H*W) in PyTorch's order. */
void nn_flatten_forward(float *out, const float *in, int n, int c, int hw);
void nn_flatten_backward(float *din, const float *dout, int n, int c,
                         int hw);

/*
 * linear: in (N, IN); w (OUT, IN); b (OUT); out (N, OUT) = in w^T + b.
 * Backward: dw (OUT, IN) and db (OUT) accumulate, din (N, IN) written
 * unless NULL.
 */
void nn_linear_forward(float *out, const float *in, const float *w,
                       const float *b, int n, int in_f, int out_f);
void nn_linear_forward_ref(float *out, const float *in, const float *w,
                           const float *b, int n, int in_f, int out_f);
void nn_linear_backward(float *din, float *dw, float *db, const float *dout,
                        const float *in, const float *w, int n, int in_f,
                        int out_f);
void nn_linear_backward_ref(float *din, float *dw, float *db,
                            const float *dout, const float *in,
                            const float *w, int n, int in_f, int out_f);

/* log_softmax over rows: in (N, C) -> out (N, C). Backward uses out:
 * din = dout - softmax * sum(dout). */
void nn_logsoftmax_forward(float *out, const float *in, int n, int c);
void nn_logsoftmax_backward(float *din, const float *dout, const float *out,
                            int n, int c);

/* NLL loss: returns sum over rows of -logp[i, label[i]]; backward writes
 * dlogp = -scale at each label, 0 elsewhere. */
double nn_nll_forward(const float *logp, const uint8_t *labels, int n,
                      int c);
void nn_nll_backward(float *dlogp, const uint8_t *labels, int n, int c,
                     float scale);

#endif
