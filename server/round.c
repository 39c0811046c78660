#include "round.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define IMG STORE_IMAGE_BYTES

void round_opts_default(round_opts_t *o)
{
    o->replay = 1000;
    o->replay_ratio = 3.0;
    o->max_replay = 6000;
    o->fooled_repeat = 24;
    o->other_repeat = 2;
    o->max_adversarial = 4000;
    o->max_shown = 2000;
    o->epochs = 3;
    o->batch = 32;
    o->lr = 0.01;
    o->momentum = 0.5;
    o->margin = 0.3;
    o->seed = 20261203;
}

static double round_clock(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int64_t round_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* splitmix64: a small seeded generator for the replay sample. */
static uint64_t round_rand(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* ------------------------------------------------------------------ */
/* Loading a round's data from the store */

static void set_free(round_set_t *set)
{
    free(set->images);
    free(set->labels);
    free(set->fooled);
    set->images = set->labels = set->fooled = NULL;
    set->n = 0;
}

/* Append one example to set, growing its arrays by doubling. */
static int set_push(round_set_t *set, size_t *cap, const store_example_t *ex)
{
    if (set->n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 64;
        uint8_t *im = realloc(set->images, ncap * IMG);
        uint8_t *lb, *fo;

        if (im == NULL)
            return -ENOMEM;
        set->images = im;
        lb = realloc(set->labels, ncap);
        if (lb == NULL)
            return -ENOMEM;
        set->labels = lb;
        fo = realloc(set->fooled, ncap);
        if (fo == NULL)
            return -ENOMEM;
        set->fooled = fo;
        *cap = ncap;
    }
    memcpy(set->images + set->n * IMG, ex->image, IMG);
    set->labels[set->n] = ex->label;
    set->fooled[set->n] = ex->fooled;
    set->n++;
    return 0;
}

typedef struct load_ctx {
    round_data_t *d;
    size_t cap_train;
    size_t cap_heldout;
    size_t *cap_groups;   /* one per round 1..d->round */
} load_ctx_t;

static int round_load_cb(const store_example_t *ex, void *user)
{
    load_ctx_t *lc = user;
    round_data_t *d = lc->d;
    int rc;

    /* stored after this round began: a later round's data */
    if (ex->round > d->round || ex->round == 0)
        return 0;
    if (ex->heldout)
        rc = set_push(&d->heldout, &lc->cap_heldout, ex);
    else
        rc = set_push(&d->train, &lc->cap_train, ex);
    if (rc != 0)
        return rc;
    return set_push(&d->groups[ex->round - 1],
                    &lc->cap_groups[ex->round - 1], ex);
}

/* Drop the rounds without examples, keeping round order. */
static void round_groups_compact(round_data_t *d)
{
    size_t k = 0;

    for (size_t i = 0; i < d->ngroups; i++) {
        if (d->groups[i].n == 0)
            continue;
        d->groups[k++] = d->groups[i];
    }
    d->ngroups = k;
}

int round_data_load(store_t *s, uint32_t r, round_data_t *out,
                    dadc_error_t *err)
{
    load_ctx_t lc = { out, 0, 0, NULL };
    int rc;

    memset(out, 0, sizeof(*out));
    out->round = r;
    snprintf(out->train.name, sizeof(out->train.name),
             "adversarial-train");
    snprintf(out->heldout.name, sizeof(out->heldout.name),
             "adversarial-heldout");
    out->groups = calloc(r ? r : 1, sizeof(*out->groups));
    lc.cap_groups = calloc(r ? r : 1, sizeof(*lc.cap_groups));
    if (out->groups == NULL || lc.cap_groups == NULL) {
        free(lc.cap_groups);
        return dadc_error_set(err, -ENOMEM, "round: out of memory");
    }
    out->ngroups = r;
    for (uint32_t i = 0; i < r; i++) {
        out->groups[i].round = i + 1;
        snprintf(out->groups[i].name, sizeof(out->groups[i].name),
                 "round-%u", i + 1);
    }

    rc = store_examples_scan(s, round_load_cb, &lc, err);
    free(lc.cap_groups);
    if (rc == -ENOMEM)
        dadc_error_set(err, rc, "round: out of memory loading examples");
    round_groups_compact(out);
    return rc;
}

void round_data_free(round_data_t *d)
{
    if (d == NULL)
        return;
    set_free(&d->train);
    set_free(&d->heldout);
    for (size_t i = 0; i < d->ngroups; i++)
        set_free(&d->groups[i]);
    free(d->groups);
    memset(d, 0, sizeof(*d));
}

/* ------------------------------------------------------------------ */
/* The training mix */

typedef struct round_mix {
    size_t n;
    uint8_t *images;
    uint8_t *labels;
    size_t adv_first;     /* first adversarial example used */
    size_t adversarial;   /* distinct adversarial examples used */
    size_t replay;        /* MNIST images replayed */
    int fooled_repeat;    /* repeats after scaling to max_shown */
    int other_repeat;
} round_mix_t;

static void mix_copy(round_mix_t *mix, size_t *k, const uint8_t *image,
                     uint8_t label, int times)
{
    for (int t = 0; t < times; t++) {
        memcpy(mix->images + *k * IMG, image, IMG);
        mix->labels[*k] = label;
        (*k)++;
    }
}

static int repeat_scale(int repeat, double scale)
{
    int r = (int)((double)repeat * scale);

    return repeat > 0 && r < 1 ? 1 : r;
}

/* How many of each kind of image an epoch shows (see round_opts_t). */
static void round_mix_plan(const round_input_t *in, round_mix_t *mix)
{
    const round_opts_t *o = &in->opts;
    const round_set_t *tr = &in->data->train;
    size_t fooled = 0, shown;
    double want;

    mix->adversarial = tr->n < o->max_adversarial ? tr->n
                                                  : o->max_adversarial;
    mix->adv_first = tr->n - mix->adversarial;
    for (size_t i = mix->adv_first; i < tr->n; i++)
        fooled += tr->fooled != NULL && tr->fooled[i];

    mix->fooled_repeat = o->fooled_repeat;
    mix->other_repeat = o->other_repeat;
    shown = fooled * (size_t)o->fooled_repeat +
            (mix->adversarial - fooled) * (size_t)o->other_repeat;
    if (shown > o->max_shown) {
        double scale = (double)o->max_shown / (double)shown;

        mix->fooled_repeat = repeat_scale(o->fooled_repeat, scale);
        mix->other_repeat = repeat_scale(o->other_repeat, scale);
        shown = fooled * (size_t)mix->fooled_repeat +
                (mix->adversarial - fooled) * (size_t)mix->other_repeat;
    }

    want = o->replay_ratio * (double)shown;
    mix->replay = want > (double)o->max_replay ? o->max_replay
                                               : (size_t)want;
    if (mix->replay < o->replay)
        mix->replay = o->replay;
    if (in->mnist->train_images.count == 0)
        mix->replay = 0;
    mix->n = mix->replay + shown;
}

/*
 * The images one epoch goes through: the replayed MNIST training images
 * drawn with the seed (with replacement), then the adversarial examples
 * used, each repeated by whether it fooled. nn_train shuffles them.
 */
static int round_mix_build(const round_input_t *in, round_mix_t *mix)
{
    const round_set_t *tr = &in->data->train;
    const mnist_t *mn = in->mnist;
    uint64_t state = in->opts.seed ^ ((uint64_t)in->data->round << 32);
    size_t k = 0;

    memset(mix, 0, sizeof(*mix));
    round_mix_plan(in, mix);
    if (mix->n == 0)
        return 0;
    mix->images = malloc(mix->n * IMG);
    mix->labels = malloc(mix->n);
    if (mix->images == NULL || mix->labels == NULL)
        return -ENOMEM;

    for (size_t i = 0; i < mix->replay; i++) {
        size_t j = round_rand(&state) % mn->train_images.count;

        mix_copy(mix, &k, mn->train_images.data + j * IMG,
                 mn->train_labels.data[j], 1);
    }
    for (size_t i = mix->adv_first; i < tr->n; i++)
        mix_copy(mix, &k, tr->images + i * IMG, tr->labels[i],
                 tr->fooled && tr->fooled[i] ? mix->fooled_repeat
                                             : mix->other_repeat);
    mix->n = k;
    return 0;
}

static void round_mix_free(round_mix_t *mix)
{
    free(mix->images);
    free(mix->labels);
}

/* ------------------------------------------------------------------ */
/* Evaluation */

static int round_eval(const nn_model_t *m, const char *name, uint32_t round,
                      const uint8_t *images, const uint8_t *labels,
                      size_t n, round_figure_t *fig)
{
    nn_eval_t ev;
    int rc;

    memset(fig, 0, sizeof(*fig));
    snprintf(fig->set, sizeof(fig->set), "%s", name);
    fig->round = round;
    fig->examples = (uint32_t)n;
    if (n == 0)
        return 0;
    rc = nn_evaluate(m, images, labels, n, &ev);
    if (rc != 0)
        return rc;
    fig->correct = (uint32_t)ev.correct;
    fig->accuracy = ev.accuracy;
    return 0;
}

static bool round_canceled(const round_input_t *in)
{
    return in->cancel != NULL && *in->cancel != 0;
}

/* Every figure of the candidate: MNIST test, held-out, train, rounds. */
static int round_eval_candidate(const round_input_t *in,
                                round_result_t *out)
{
    const round_data_t *d = in->data;
    const mnist_t *mn = in->mnist;
    round_figure_t *f;
    int rc;

    out->figures = calloc(3 + d->ngroups, sizeof(*out->figures));
    if (out->figures == NULL)
        return -ENOMEM;
    f = out->figures;
    rc = round_eval(out->candidate, "mnist-test", 0, mn->test_images.data,
                    mn->test_labels.data, mn->test_images.count, &f[0]);
    if (rc == 0)
        rc = round_eval(out->candidate, d->heldout.name, 0,
                        d->heldout.images, d->heldout.labels,
                        d->heldout.n, &f[1]);
    if (rc == 0)
        rc = round_eval(out->candidate, d->train.name, 0, d->train.images,
                        d->train.labels, d->train.n, &f[2]);
    out->nfigures = 3;
    for (size_t i = 0; rc == 0 && i < d->ngroups; i++) {
        const round_set_t *g = &d->groups[i];

        if (round_canceled(in))
            return DADC_ECANCELED;
        rc = round_eval(out->candidate, g->name, g->round, g->images,
                        g->labels, g->n, &f[3 + i]);
        out->nfigures++;
    }
    out->mnist_accuracy = f[0].accuracy;
    out->heldout_accuracy = f[1].accuracy;
    return rc;
}

/* The current model's figures the gate and the reason compare with. */
static int round_eval_base(const round_input_t *in, round_result_t *out)
{
    const round_set_t *h = &in->data->heldout;
    round_figure_t fig;
    int rc;

    out->base_mnist_accuracy = in->current_mnist_accuracy;
    if (in->current_mnist_accuracy < 0) {
        rc = round_eval(in->current, "mnist-test", 0,
                        in->mnist->test_images.data,
                        in->mnist->test_labels.data,
                        in->mnist->test_images.count, &fig);
        if (rc != 0)
            return rc;
        out->base_mnist_accuracy = fig.accuracy;
    }
    rc = round_eval(in->current, h->name, 0, h->images, h->labels, h->n,
                    &fig);
    out->base_heldout_accuracy = fig.accuracy;
    return rc;
}

/* Promotion: MNIST accuracy no more than margin points below. */
static void round_gate(const round_input_t *in, round_result_t *out)
{
    double floor = out->base_mnist_accuracy - in->opts.margin / 100.0;
    int len;

    out->promoted = out->mnist_accuracy >= floor;
    len = snprintf(out->reason, sizeof(out->reason),
                   "%s: MNIST test %.2f%% vs %.2f%% for version %u "
                   "(%s the allowed %.2f-point drop)",
                   out->promoted ? "promoted" : "rejected",
                   out->mnist_accuracy * 100.0,
                   out->base_mnist_accuracy * 100.0, in->current_version,
                   out->promoted ? "within" : "more than", in->opts.margin);
    if (in->data->heldout.n > 0 && len > 0 &&
        (size_t)len < sizeof(out->reason))
        snprintf(out->reason + len, sizeof(out->reason) - (size_t)len,
                 "; held-out adversarial %.1f%% -> %.1f%% (%zu examples)",
                 out->base_heldout_accuracy * 100.0,
                 out->heldout_accuracy * 100.0, in->data->heldout.n);
}

static int round_check_input(const round_input_t *in, dadc_error_t *err)
{
    const round_opts_t *o = &in->opts;

    if (in->current == NULL || in->mnist == NULL || in->data == NULL)
        return dadc_error_set(err, DADC_ERANGE,
                              "round: model, MNIST and data are needed");
    if (o->epochs < 1 || o->batch < 1 || o->fooled_repeat < 0 ||
        o->other_repeat < 0 || !(o->lr > 0.0) ||
        !(o->replay_ratio >= 0.0 && o->replay_ratio <= 1000.0) ||
        !(o->momentum >= 0.0 && o->momentum < 1.0))
        return dadc_error_set(err, DADC_ERANGE,
                              "round: bad options (epochs %d, batch %d, "
                              "lr %g, momentum %g)", o->epochs, o->batch,
                              o->lr, o->momentum);
    if (in->mnist->train_images.item_size != IMG ||
        in->mnist->test_images.item_size != IMG)
        return dadc_error_set(err, DADC_ESHAPE,
                              "round: MNIST images are not 28x28");
    return 0;
}

static int round_train(const round_input_t *in, round_result_t *out,
                       dadc_error_t *err)
{
    round_mix_t mix;
    nn_train_opts_t to;
    nn_train_result_t tr;
    int rc;

    rc = round_mix_build(in, &mix);
    if (rc != 0)
        goto done;
    out->train_examples = (uint32_t)mix.adversarial;
    out->replay_examples = (uint32_t)mix.replay;
    nn_train_opts_default(&to);
    to.epochs = in->opts.epochs;
    to.batch = in->opts.batch;
    to.lr = in->opts.lr;
    to.momentum = in->opts.momentum;
    to.lr_gamma = 1.0;
    to.weight_decay = 0.0;
    to.seed = in->opts.seed + in->data->round;
    to.cancel = in->cancel;
    if (mix.n > 0)
        rc = nn_train(out->candidate, mix.images, mix.labels, mix.n, &to,
                      &tr, err);

done:
    round_mix_free(&mix);
    return rc;
}

static int round_serialise(const round_input_t *in, round_result_t *out)
{
    nn_meta_t meta;
    char buf[64];

    meta.count = 0;
    snprintf(buf, sizeof(buf), "%u", in->data->round);
    nn_meta_set(&meta, "round", buf);
    snprintf(buf, sizeof(buf), "%u", in->current_version);
    nn_meta_set(&meta, "parent_version", buf);
    snprintf(buf, sizeof(buf), "%.4f", out->mnist_accuracy);
    nn_meta_set(&meta, "accuracy", buf);
    snprintf(buf, sizeof(buf), "%u adversarial + %u MNIST replay",
             out->train_examples, out->replay_examples);
    nn_meta_set(&meta, "data", buf);
    snprintf(buf, sizeof(buf), "%d", in->opts.epochs);
    nn_meta_set(&meta, "epochs", buf);
    return nn_model_to_safetensors(out->candidate, &meta, &out->safetensors,
                                   &out->safetensors_len);
}

int round_run(const round_input_t *in, round_result_t *out,
              dadc_error_t *err)
{
    double t0 = round_clock(), t1;
    int rc;

    memset(out, 0, sizeof(*out));
    rc = round_check_input(in, err);
    if (rc != 0)
        return rc;
    out->candidate = nn_model_clone(in->current);
    if (out->candidate == NULL)
        return dadc_error_set(err, -ENOMEM, "round: out of memory");

    rc = round_train(in, out, err);
    t1 = round_clock();
    out->train_seconds = t1 - t0;
    if (rc == 0 && round_canceled(in))
        rc = DADC_ECANCELED;
    if (rc == 0)
        rc = round_eval_base(in, out);
    if (rc == 0)
        rc = round_eval_candidate(in, out);
    if (rc == 0 && round_canceled(in))
        rc = DADC_ECANCELED;
    if (rc == 0) {
        round_gate(in, out);
        rc = round_serialise(in, out);
    }
    out->eval_seconds = round_clock() - t1;
    if (rc != 0) {
        round_result_free(out);
        if (rc == DADC_ECANCELED)
            return dadc_error_set(err, rc, "round: cancelled");
        if (err != NULL && err->code == 0)
            dadc_error_set(err, rc, "round: %s", dadc_strerror(rc));
    }
    return rc;
}

void round_result_free(round_result_t *r)
{
    if (r == NULL)
        return;
    nn_model_free(r->candidate);
    free(r->safetensors);
    free(r->figures);
    memset(r, 0, sizeof(*r));
}

/* ------------------------------------------------------------------ */
/* Records for the store */

int round_records_fill(const round_result_t *res, const round_input_t *in,
                       const Dadc__RoundInfo *begun, round_records_t *rec)
{
    const nn_layer_spec_t *layers;
    int nlayers = 0;

    memset(rec, 0, sizeof(*rec));
    rec->figs = calloc(res->nfigures + 1, sizeof(*rec->figs));
    rec->figp = calloc(res->nfigures + 1, sizeof(*rec->figp));
    layers = nn_model_layers(res->candidate, &nlayers);
    rec->layers_json = nn_layers_to_json(layers, nlayers);
    if (rec->figs == NULL || rec->figp == NULL || rec->layers_json == NULL) {
        round_records_free(rec);
        return -ENOMEM;
    }
    for (size_t i = 0; i < res->nfigures; i++) {
        dadc__eval_figures__init(&rec->figs[i]);
        rec->figs[i].set = (char *)res->figures[i].set;
        rec->figs[i].examples = res->figures[i].examples;
        rec->figs[i].correct = res->figures[i].correct;
        rec->figs[i].accuracy = res->figures[i].accuracy;
        rec->figp[i] = &rec->figs[i];
    }

    dadc__model_info__init(&rec->model);
    rec->model.parent_version = in->current_version;
    rec->model.round = in->data->round;
    rec->model.promoted = res->promoted;
    rec->model.created_unix_ms = round_now_ms();
    rec->model.mnist_test_accuracy = res->mnist_accuracy;
    rec->model.adversarial_accuracy = res->heldout_accuracy;
    rec->model.n_figures = res->nfigures;
    rec->model.figures = rec->figp;
    rec->model.layers = rec->layers_json;

    dadc__round_info__init(&rec->round);
    snprintf(rec->trigger, sizeof(rec->trigger), "%s",
             begun != NULL && begun->trigger ? begun->trigger : "");
    rec->round.round = in->data->round;
    rec->round.started_unix_ms = begun != NULL ? begun->started_unix_ms : 0;
    rec->round.finished_unix_ms = rec->model.created_unix_ms;
    rec->round.trigger = rec->trigger;
    rec->round.train_examples = res->train_examples;
    rec->round.replay_examples = res->replay_examples;
    rec->round.base_version = in->current_version;
    rec->round.promoted = res->promoted;
    rec->round.reason = (char *)res->reason;
    rec->round.n_figures = res->nfigures;
    rec->round.figures = rec->figp;
    return 0;
}

void round_records_free(round_records_t *rec)
{
    if (rec == NULL)
        return;
    free(rec->figs);
    free(rec->figp);
    free(rec->layers_json);
    memset(rec, 0, sizeof(*rec));
}
