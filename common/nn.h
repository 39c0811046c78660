/*
 * The model engine: a small convolutional network for 28x28 digits, its
 * training loop, evaluation and model files.
 *
 * A model is a list of layers (data, not code) plus one allocation of
 * parameters. The reference list is the digit CNN:
 *
 *   conv1  conv2d 1->10, 5x5       (N,1,28,28)  -> (N,10,24,24)
 *   pool1  maxpool2d 2             (N,10,24,24) -> (N,10,12,12)
 *   relu1  relu
 *   conv2  conv2d 10->20, 5x5      (N,10,12,12) -> (N,20,8,8)
 *   drop2  dropout2d p=0.5         (channel dropout, training only)
 *   pool2  maxpool2d 2             (N,20,8,8)   -> (N,20,4,4)
 *   relu2  relu
 *   flat   flatten                 (N,20,4,4)   -> (N,320)
 *   fc1    linear 320->50
 *   relu3  relu
 *   drop3  dropout p=0.5           (training only)
 *   fc2    linear 50->10
 *   out    log_softmax             (N,10) log-probabilities
 *
 * Inputs are uint8 MNIST images (0 background, 255 ink), normalised inside
 * the engine as (x/255 - 0.1307)/0.3081.
 *
 * Threading: a model's parameters are only read by nn_predict and
 * nn_evaluate, so any number of threads may run inference on one model at
 * once, each with its own nn_ctx_t. nn_train writes the parameters and
 * must be the only user of that model while it runs.
 */
#ifndef DADC_NN_H
#define DADC_NN_H

#include <stddef.h>
#include <stdint.h>

#include "dadc_error.h"

#define NN_IMAGE_SIDE 28
#define NN_IMAGE_PIXELS (NN_IMAGE_SIDE * NN_IMAGE_SIDE)
#define NN_CLASSES 10
#define NN_MAX_LAYERS 32
#define NN_NAME_MAX 32

typedef enum nn_layer_kind {
    NN_CONV2D,     /* in, out channels; k x k kernel, stride 1, no pad */
    NN_MAXPOOL2D,  /* k x k window, stride k */
    NN_RELU,
    NN_DROPOUT2D,  /* zeroes whole channels with probability p */
    NN_DROPOUT,    /* zeroes single values with probability p */
    NN_FLATTEN,
    NN_LINEAR,     /* in -> out features */
    NN_LOGSOFTMAX, /* must be last */
} nn_layer_kind_t;

typedef struct nn_layer_spec {
    nn_layer_kind_t kind;
    char name[NN_NAME_MAX]; /* state_dict prefix for layers with weights */
    int in;                 /* conv2d: in channels; linear: in features */
    int out;                /* conv2d: out channels; linear: out features */
    int k;                  /* conv2d: kernel side; maxpool2d: window side */
    float p;                /* dropout probability */
} nn_layer_spec_t;

/* The reference layer list above and its length. */
extern const nn_layer_spec_t nn_reference_layers[];
extern const int nn_reference_nlayers;

typedef struct nn_model nn_model_t;

/*
 * Create a model for 1x28x28 inputs from a layer list. Checks that the
 * shapes chain (e.g. a linear layer's `in` equals the flattened size
 * before it) and that the list ends in log_softmax over NN_CLASSES.
 * Parameters are zero until nn_model_init or a load.
 * Returns 0, DADC_ESHAPE / DADC_ERANGE with a message, or -ENOMEM.
 * The caller owns *out and frees it with nn_model_free.
 */
int nn_model_create(nn_model_t **out, const nn_layer_spec_t *layers,
                    int nlayers, dadc_error_t *err);

/* nn_model_create with the reference layer list. */
int nn_model_create_reference(nn_model_t **out);

void nn_model_free(nn_model_t *m);

/*
 * Initialise parameters as PyTorch does by default (weights kaiming-
 * uniform with a=sqrt(5), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as
 * well, biases U(-1/sqrt(fan_in), 1/sqrt(fan_in))), drawn from a
 * generator seeded with seed: the same seed gives the same weights.
 */
void nn_model_init(nn_model_t *m, uint64_t seed);

/* A deep copy of m (layers and parameters). Returns NULL on no memory. */
nn_model_t *nn_model_clone(const nn_model_t *m);

/* The layer list; valid while m lives. */
const nn_layer_spec_t *nn_model_layers(const nn_model_t *m, int *nlayers);

/* Number of float parameters. */
size_t nn_model_nparams(const nn_model_t *m);

/*
 * The parameters: nn_model_nparams floats, laid out as the state_dict
 * lists them (for each layer with weights: weight, then bias, in layer
 * order; each row-major in PyTorch's shape). Valid while m lives.
 */
float *nn_model_params(nn_model_t *m);
const float *nn_model_params_const(const nn_model_t *m);

/*
 * The layer list as a JSON array, e.g.
 *   [{"kind":"conv2d","name":"conv1","in":1,"out":10,"k":5}, ...]
 * and back. The string is malloc'd; the caller frees it.
 */
char *nn_layers_to_json(const nn_layer_spec_t *layers, int nlayers);
int nn_layers_from_json(const char *json, nn_layer_spec_t *layers,
                        int max_layers, int *nlayers, dadc_error_t *err);

/* ------------------------------------------------------------------ */
/* Inference */

typedef struct nn_ctx nn_ctx_t;

/*
 * Scratch memory for running m on up to max_batch images at once. A
 * context belongs to one thread at a time; it may be reused with any
 * model of the same layer list. Returns 0 or -ENOMEM.
 */
int nn_ctx_create(nn_ctx_t **out, const nn_model_t *m, int max_batch);
void nn_ctx_free(nn_ctx_t *ctx);

/*
 * Class probabilities for n images (n * 784 bytes) into probs
 * (n * NN_CLASSES floats, each row summing to 1). Larger n than the
 * context's max_batch is processed in chunks. Dropout is off.
 * Returns 0 or a negative code.
 */
int nn_predict(nn_ctx_t *ctx, const nn_model_t *m, const uint8_t *images,
               size_t n, float *probs);

/* Index of the largest of NN_CLASSES values. */
int nn_argmax(const float *probs);

typedef struct nn_eval {
    size_t examples;
    size_t correct;
    double accuracy;                      /* correct / examples */
    size_t per_digit_total[NN_CLASSES];
    size_t per_digit_correct[NN_CLASSES];
    size_t confusion[NN_CLASSES][NN_CLASSES]; /* [true][predicted] */
    double loss;                          /* mean NLL */
} nn_eval_t;

/*
 * Evaluate m on n labelled images. Uses its own scratch; threads may be
 * 0 (engine default). Returns 0 or a negative code.
 */
int nn_evaluate(const nn_model_t *m, const uint8_t *images,
                const uint8_t *labels, size_t n, nn_eval_t *out);

/* ------------------------------------------------------------------ */
/* Training */

typedef struct nn_train_progress {
    int epoch;          /* 1-based */
    int epochs;
    size_t seen;        /* images seen in this epoch so far */
    size_t total;       /* images in an epoch */
    double loss;        /* running mean loss in this epoch */
    double images_per_s;
    double lr;
} nn_train_progress_t;

typedef struct nn_train_opts {
    int epochs;
    int batch;            /* default 64 */
    double lr;            /* initial learning rate */
    double momentum;      /* SGD momentum as in torch.optim.SGD */
    double lr_gamma;      /* lr multiplied by this after each epoch; 1 = off */
    double weight_decay;  /* L2, as in torch.optim.SGD; 0 = off */
    uint64_t seed;        /* shuffling and dropout */
    /* Called on the training thread every few hundred images and at the
     * end of each epoch; may be NULL. */
    void (*progress_cb)(const nn_train_progress_t *p, void *user);
    void *user;
    /* Training stops early with DADC_ECANCELED when *cancel becomes
     * non-zero; may be NULL. */
    const volatile int *cancel;
} nn_train_opts_t;

/* Defaults for the base model (reach >= 99.0% on MNIST test). */
void nn_train_opts_default(nn_train_opts_t *o);

typedef struct nn_train_result {
    int epochs_done;
    double final_loss;    /* mean loss of the last epoch */
    double seconds;
    double images_per_s;
} nn_train_result_t;

/*
 * Train m in place with SGD on n labelled images (each 784 bytes),
 * shuffled each epoch by the seeded generator. Deterministic for a given
 * seed and data. Returns 0, DADC_ECANCELED, or a negative code.
 */
int nn_train(nn_model_t *m, const uint8_t *images, const uint8_t *labels,
             size_t n, const nn_train_opts_t *o, nn_train_result_t *res,
             dadc_error_t *err);

/*
 * A trainer: step-by-step SGD on a model, for callers that bring their
 * own batches (nn_train is built on it). Uses o->batch (the largest
 * batch a step may take), lr, momentum, weight_decay and seed; threads
 * 0 means the engine default. The trainer writes m's parameters; m must
 * outlive it. Momentum buffers start empty as in torch.optim.SGD.
 * Returns 0, DADC_ERANGE or -ENOMEM.
 */
typedef struct nn_trainer nn_trainer_t;

int nn_trainer_create(nn_trainer_t **out, nn_model_t *m,
                      const nn_train_opts_t *o, int threads);
void nn_trainer_free(nn_trainer_t *t);

/* Dropout on (default) or off for the following steps. */
void nn_trainer_set_dropout(nn_trainer_t *t, int on);
/* The learning rate for the following steps. */
void nn_trainer_set_lr(nn_trainer_t *t, double lr);

/*
 * One SGD step on n (1..batch) labelled images: forward, mean NLL loss
 * into *loss (may be NULL), backward, update. Returns 0 or DADC_ERANGE
 * (bad n or a label over 9).
 */
int nn_trainer_step(nn_trainer_t *t, const uint8_t *images,
                    const uint8_t *labels, int n, double *loss);

/* Gradients of the last step's mean loss (before the update), laid out
 * as the parameters. Valid until the next step. */
const float *nn_trainer_grads(const nn_trainer_t *t);

/* ------------------------------------------------------------------ */
/* Model files (safetensors)
 *
 * Tensors are F32 little-endian with the names and shapes of the PyTorch
 * module's state_dict (conv1.weight [10,1,5,5], conv1.bias [10], ...).
 * __metadata__ holds "layers" (the JSON layer list) and any other string
 * pairs the caller gives (epochs, accuracy, data, seed, seconds, ...).
 */

typedef struct nn_meta_item {
    char key[64];
    char value[1024];
} nn_meta_item_t;

#define NN_META_MAX 32

typedef struct nn_meta {
    int count;
    nn_meta_item_t items[NN_META_MAX];
} nn_meta_t;

/* Set (or replace) key in meta. Returns 0 or DADC_ELIMIT. */
int nn_meta_set(nn_meta_t *meta, const char *key, const char *value);
/* The value of key, or NULL. */
const char *nn_meta_get(const nn_meta_t *meta, const char *key);

/*
 * Serialise m with meta (may be NULL) into a malloc'd buffer *buf of
 * *len bytes. Returns 0 or -ENOMEM.
 */
int nn_model_to_safetensors(const nn_model_t *m, const nn_meta_t *meta,
                            uint8_t **buf, size_t *len);

/*
 * Parse a safetensors buffer. The layer list comes from the "layers"
 * metadata entry when present, else the reference list. Refuses, with a
 * message naming the problem, a header length past the end, bad JSON,
 * out-of-range or overlapping offsets, a dtype other than F32, a wrong
 * shape, and a missing tensor. meta_out may be NULL.
 */
int nn_model_from_safetensors(const uint8_t *buf, size_t len,
                              nn_model_t **out, nn_meta_t *meta_out,
                              dadc_error_t *err);

/* The same, through files. Writing goes through a temporary file and a
 * rename, so a crash never leaves a half-written model at path. */
int nn_model_save(const nn_model_t *m, const nn_meta_t *meta,
                  const char *path, dadc_error_t *err);
int nn_model_load(const char *path, nn_model_t **out, nn_meta_t *meta_out,
                  dadc_error_t *err);

#endif
