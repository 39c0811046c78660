/*
 * One DADC round: fine-tune a copy of the serving model on the examples
 * annotators flagged, mixed with replayed MNIST training images so it
 * does not forget, evaluate the candidate, and decide whether it may
 * replace the serving model.
 *
 * round_run is a pure function of its inputs, meant for a libuv worker
 * thread: it reads the inputs (never writes them), touches no store and
 * no server state, allocates its own results, and prints nothing. The
 * current model is only read (cloned), so the loop thread may keep
 * predicting with it meanwhile.
 *
 * What a round trains on: every labelled, non-held-out example collected
 * up to and including this round, not only the new ones. Each flagged
 * example is a correct (image, label) pair, so old ones stay valid
 * training data and training on all of them keeps earlier rounds
 * learned. Fooling examples are repeated (fooled_repeat) and the others
 * less (other_repeat); when there are more than max_adversarial the most
 * recent ones are used. Held-out examples are never trained on.
 *
 * So that many flags do not crowd out what the model knows, the MNIST
 * replay grows with the adversarial images (replay_ratio times as many,
 * up to max_replay), and the repeats shrink once an epoch would show
 * more than max_shown adversarial images.
 *
 * Typical use by the server:
 *   loop:    store_round_begin(store, ..., &r)
 *   worker:  round_data_load(store, r, &data); round_run(&in, &res)
 *   loop:    round_records_fill(&res, &rec);
 *            store_model_add(store, &rec.model, res.safetensors, ...,
 *                            &rec.round, res.promoted, &v, &err)
 *            round_result_free(&res); round_data_free(&data)
 */
#ifndef DADC_ROUND_H
#define DADC_ROUND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dadc.pb-c.h"
#include "dadc_error.h"
#include "idx.h"
#include "nn.h"
#include "store.h"

#define ROUND_SET_NAME_MAX 32
#define ROUND_REASON_MAX 256

/* A set of labelled 28x28 images, owned by whoever filled it. */
typedef struct round_set {
    char name[ROUND_SET_NAME_MAX]; /* "adversarial-heldout", "round-3" */
    uint32_t round;                /* for per-round sets, else 0 */
    size_t n;
    uint8_t *images;               /* n * 784 */
    uint8_t *labels;               /* n */
    uint8_t *fooled;               /* n flags (0/1); may be NULL */
} round_set_t;

/* What a round reads from the store: copies, owned by this struct. */
typedef struct round_data {
    uint32_t round;          /* the round being run */
    round_set_t train;       /* non-held-out examples of rounds <= round,
                              * in id order, fooled filled */
    round_set_t heldout;     /* held-out examples of every round */
    size_t ngroups;
    round_set_t *groups;     /* one per round 1..round that has examples:
                              * all of that round's examples, named
                              * "round-<r>" */
} round_data_t;

/*
 * Read the data for round r (see store.h on rounds) in one pass over the
 * examples. Safe on a worker thread while the loop thread writes: it
 * uses only store read calls, and examples stored after
 * store_round_begin(r) belong to later rounds and are left out.
 * Returns 0, DADC_EFORMAT, DADC_ESTORE or -ENOMEM; free with
 * round_data_free (also after a failure).
 */
int round_data_load(store_t *s, uint32_t r, round_data_t *out,
                    dadc_error_t *err);
void round_data_free(round_data_t *d);

typedef struct round_opts {
    size_t replay;           /* fewest MNIST training images replayed,
                              * 1000 */
    double replay_ratio;     /* replay at least this many times the
                              * adversarial images an epoch shows, 3 */
    size_t max_replay;       /* most MNIST images replayed, 6000 */
    int fooled_repeat;       /* times each fooling example is shown per
                              * epoch, 24 */
    int other_repeat;        /* times each non-fooling example, 2 */
    size_t max_adversarial;  /* most recent examples used, 4000 */
    size_t max_shown;        /* adversarial images an epoch shows at
                              * most, 2000: the repeats are scaled down
                              * (never below once) to fit */
    int epochs;              /* 3 */
    int batch;               /* 32 */
    double lr;               /* 0.01 */
    double momentum;         /* 0.5 */
    double margin;           /* points of MNIST test accuracy the
                              * candidate may lose, 0.3 */
    uint64_t seed;           /* replay sampling, shuffling, dropout; the
                              * round number is mixed in */
} round_opts_t;

/* Fill o with the defaults above. */
void round_opts_default(round_opts_t *o);

typedef struct round_input {
    const nn_model_t *current;   /* the serving model; only read */
    uint32_t current_version;
    /* The current model's MNIST test accuracy (0..1) when known (it is
     * in its ModelInfo), else a negative value and round_run measures
     * it. */
    double current_mnist_accuracy;
    const mnist_t *mnist;        /* train set for replay, test set */
    const round_data_t *data;
    round_opts_t opts;
    const volatile int *cancel;  /* non-zero stops the round; may be NULL */
} round_input_t;

typedef struct round_figure {
    char set[ROUND_SET_NAME_MAX]; /* "mnist-test", "adversarial-heldout",
                                   * "adversarial-train", "round-<r>" */
    uint32_t round;               /* for "round-<r>", else 0 */
    uint32_t examples;
    uint32_t correct;
    double accuracy;              /* correct / examples; 0 if none */
} round_figure_t;

typedef struct round_result {
    nn_model_t *candidate;    /* the fine-tuned model; owned */
    uint8_t *safetensors;     /* candidate serialised, layers and round
                               * facts in its metadata; owned */
    size_t safetensors_len;
    bool promoted;            /* passed the gate */
    char reason[ROUND_REASON_MAX]; /* human-readable, e.g. "promoted:
                               * MNIST test 98.91% vs 99.02% (margin
                               * 0.30 points); held-out adversarial
                               * 40.0% -> 80.0%" */
    double base_mnist_accuracy;
    double mnist_accuracy;        /* candidate, MNIST test */
    double base_heldout_accuracy; /* current model on held-out split */
    double heldout_accuracy;      /* candidate on held-out split; 0 if
                                   * the split is empty */
    size_t nfigures;
    round_figure_t *figures;  /* candidate's figures; owned */
    uint32_t train_examples;  /* distinct adversarial examples used */
    uint32_t replay_examples;
    double train_seconds;
    double eval_seconds;
} round_result_t;

/*
 * Run the round: clone in->current, train the clone on the adversarial
 * training set (repeated as the options say) mixed with opts.replay
 * MNIST training images sampled with the seed, evaluate it on the MNIST
 * test set, the held-out split, the training set and each group, and
 * apply the gate: promoted when candidate MNIST accuracy >= current
 * accuracy - margin/100. An empty training set is allowed (the round
 * then only replays MNIST). Deterministic for given inputs and seed.
 *
 * Returns 0 with *out filled (free with round_result_free), or, with
 * *out empty:
 *   DADC_ECANCELED  *cancel became non-zero
 *   DADC_ERANGE     bad options (epochs < 1, batch < 1, ...)
 *   DADC_ESHAPE     an input set with the wrong image size
 *   other codes from the engine, -ENOMEM
 */
int round_run(const round_input_t *in, round_result_t *out,
              dadc_error_t *err);
void round_result_free(round_result_t *r);

/*
 * The records the store keeps for a finished round, as protobuf messages
 * pointing into res and rec (valid while both live; nothing to free):
 * model (ModelInfo: parent = current_version, round, promoted, figures,
 * accuracies, layers, created now) and round (RoundInfo: round, trigger
 * and started from begun, base/candidate versions, promoted, reason,
 * figures, counts, finished now). Pass them to store_model_add, which
 * fills the version numbers.
 */
typedef struct round_records {
    Dadc__ModelInfo model;
    Dadc__RoundInfo round;
    Dadc__EvalFigures *figs;      /* backing storage */
    Dadc__EvalFigures **figp;
    char *layers_json;
    char trigger[16];
} round_records_t;

/*
 * Fill rec for res. begun is the RoundInfo of the running round (from
 * store_round_get; trigger and started are copied). Returns 0 or
 * -ENOMEM; release with round_records_free.
 */
int round_records_fill(const round_result_t *res, const round_input_t *in,
                       const Dadc__RoundInfo *begun, round_records_t *rec);
void round_records_free(round_records_t *rec);

#endif
