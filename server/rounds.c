/*
 * The model's life: the base model on an empty store, and rounds.
 *
 * Both run on the libuv thread pool. The worker gets what it needs up
 * front (the MNIST arrays, which never change; a reference to the
 * serving model, which is only read; the store, whose read calls are
 * thread-safe) and touches nothing else. The after-work callback, on the
 * loop thread, writes the result to the store in one transaction, swaps
 * the serving model when promoted, and tells subscribers.
 *
 * One round at a time: Train while one runs is refused with
 * FAILED_PRECONDITION (nothing is queued); flags that pile up meanwhile
 * start the next round as soon as this one ends.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "round.h"
#include "server.h"

#define BASE_SEED 1

typedef struct base_job {
    uv_work_t req;
    server_t *s;
    nn_model_t *model;
    nn_train_opts_t opts;
    nn_train_result_t res;
    nn_eval_t eval;
    uint8_t *st;              /* the model as safetensors */
    size_t st_len;
    size_t images;            /* training images used */
    int rc;
    int logged_quarter;
    dadc_error_t err;
} base_job_t;

struct round_job {
    uv_work_t req;
    server_t *s;
    uint32_t round;
    model_ref_t *base;        /* the version fine-tuned; referenced */
    round_data_t data;
    round_input_t in;
    round_result_t res;
    int rc;
    dadc_error_t err;
};

uint32_t rounds_pending_fooled(const server_t *s)
{
    const stats_counts_t *c;

    if (s->stats == NULL)
        return 0;
    c = stats_round_find(s->stats, s->collecting_round);
    return c != NULL ? (uint32_t)c->train_fooled : 0;
}

/* The facts a new version's ModelInfo carries for a base model. */
static int base_store(server_t *s, nn_model_t *m, const uint8_t *st,
                      size_t st_len, double acc, uint32_t *version,
                      dadc_error_t *err)
{
    Dadc__ModelInfo info = DADC__MODEL_INFO__INIT;
    Dadc__EvalFigures fig = DADC__EVAL_FIGURES__INIT;
    Dadc__EvalFigures *figp = &fig;
    const nn_layer_spec_t *layers;
    int nlayers, rc;
    char *json;

    layers = nn_model_layers(m, &nlayers);
    json = nn_layers_to_json(layers, nlayers);
    if (json == NULL)
        return dadc_error_set(err, -ENOMEM, "out of memory");
    fig.set = "mnist-test";
    fig.examples = (uint32_t)s->mnist.test_images.count;
    fig.correct = (uint32_t)(acc * fig.examples + 0.5);
    fig.accuracy = acc;
    info.promoted = true;
    info.created_unix_ms = server_unix_ms();
    info.mnist_test_accuracy = acc;
    info.n_figures = 1;
    info.figures = &figp;
    info.layers = json;
    rc = store_model_add(s->store, &info, st, st_len, NULL, true, version,
                         err);
    free(json);
    return rc;
}

/* Store m as the first version and serve it. Takes m over. */
static int base_install(server_t *s, nn_model_t *m, const uint8_t *st,
                        size_t st_len, double acc, dadc_error_t *err)
{
    model_ref_t *r;
    uint32_t version = 0;
    int rc = base_store(s, m, st, st_len, acc, &version, err);

    if (rc != 0) {
        nn_model_free(m);
        return rc;
    }
    r = models_wrap(m, version, acc);
    if (r == NULL) {
        nn_model_free(m);
        return dadc_error_set(err, -ENOMEM, "out of memory");
    }
    models_set_current(s, r);
    LOG(LOG_INFO, "server", "base model stored as version %u (MNIST test "
        "%.2f%%)", version, acc * 100);
    server_ready(s);
    return 0;
}

/* --init-model: load, measure on the MNIST test set, store as v1. */
static int base_from_file(server_t *s, dadc_error_t *err)
{
    nn_model_t *m = NULL;
    nn_eval_t ev;
    uint8_t *st = NULL;
    size_t len = 0;
    int rc;

    rc = nn_model_load(s->cfg.init_model, &m, NULL, err);
    if (rc != 0)
        return rc;
    rc = nn_evaluate(m, s->mnist.test_images.data,
                     s->mnist.test_labels.data, s->mnist.test_images.count,
                     &ev);
    if (rc == 0)
        rc = nn_model_to_safetensors(m, NULL, &st, &len);
    if (rc != 0) {
        nn_model_free(m);
        return dadc_error_set(err, rc, "%s: %s", s->cfg.init_model,
                              dadc_strerror(rc));
    }
    LOG(LOG_INFO, "server", "initial model %s: MNIST test %.2f%%",
        s->cfg.init_model, ev.accuracy * 100);
    rc = base_install(s, m, st, len, ev.accuracy, err);
    free(st);
    return rc;
}

static void base_progress_cb(const nn_train_progress_t *p, void *user)
{
    base_job_t *job = user;
    int quarter = (int)(4 * p->seen / (p->total ? p->total : 1));
    int mark = (p->epoch - 1) * 4 + quarter;

    if (quarter == 0 || mark <= job->logged_quarter)
        return;
    job->logged_quarter = mark;
    LOG(LOG_INFO, "base", "epoch %d/%d: %zu/%zu images, loss %.4f, "
        "%.0f images/s, lr %.4g", p->epoch, p->epochs, p->seen, p->total,
        p->loss, p->images_per_s, p->lr);
}

static void base_work_cb(uv_work_t *req)
{
    base_job_t *job = req->data;
    const mnist_t *mn = &job->s->mnist;

    job->rc = nn_model_create_reference(&job->model);
    if (job->rc != 0)
        return;
    nn_model_init(job->model, BASE_SEED);
    job->rc = nn_train(job->model, mn->train_images.data,
                       mn->train_labels.data, job->images, &job->opts,
                       &job->res, &job->err);
    if (job->rc == 0)
        job->rc = nn_evaluate(job->model, mn->test_images.data,
                              mn->test_labels.data,
                              mn->test_images.count, &job->eval);
    if (job->rc == 0)
        job->rc = nn_model_to_safetensors(job->model, NULL, &job->st,
                                          &job->st_len);
}

static void base_after_cb(uv_work_t *req, int status)
{
    base_job_t *job = req->data;
    server_t *s = job->s;
    dadc_error_t err;

    (void)status;
    s->base_job = false;
    s->base_training = false;
    if (job->rc == DADC_ECANCELED) {
        LOG(LOG_INFO, "base", "base training cancelled; nothing stored");
    } else if (job->rc != 0) {
        LOG(LOG_ERROR, "base", "base training failed: %s",
            job->err.code ? dadc_error_message(&job->err)
                          : dadc_strerror(job->rc));
        s->exit_code = 1;
        server_stop(s, "base training failed");
    } else {
        LOG(LOG_INFO, "base", "trained %d epochs in %.1f s (%.0f images/s), "
            "loss %.4f, MNIST test %.2f%%", job->res.epochs_done,
            job->res.seconds, job->res.images_per_s, job->res.final_loss,
            job->eval.accuracy * 100);
        if (base_install(s, job->model, job->st, job->st_len,
                         job->eval.accuracy, &err) != 0) {
            LOG(LOG_ERROR, "base", "storing the base model failed: %s",
                dadc_error_message(&err));
            s->exit_code = 1;
            server_stop(s, "store failed");
        }
        job->model = NULL;
    }
    nn_model_free(job->model);
    free(job->st);
    free(job);
    server_maybe_finish(s);
}

static int base_train_start(server_t *s, dadc_error_t *err)
{
    base_job_t *job = calloc(1, sizeof(*job));

    if (job == NULL)
        return dadc_error_set(err, -ENOMEM, "out of memory");
    job->s = s;
    job->req.data = job;
    nn_train_opts_default(&job->opts);
    if (s->cfg.base_epochs > 0)
        job->opts.epochs = (int)s->cfg.base_epochs;
    job->opts.seed = BASE_SEED;
    job->opts.progress_cb = base_progress_cb;
    job->opts.user = job;
    job->opts.cancel = &s->cancel;
    job->images = s->mnist.train_images.count;
    if (s->cfg.base_images > 0 && s->cfg.base_images < job->images)
        job->images = s->cfg.base_images;
    s->base_job = true;
    s->base_training = true;
    LOG(LOG_INFO, "base", "empty store: training the base model on %zu "
        "MNIST images, %d epochs; Predict and Flag answer UNAVAILABLE "
        "until it is stored", job->images, job->opts.epochs);
    uv_queue_work(s->loop, &job->req, base_work_cb, base_after_cb);
    return 0;
}

int rounds_init(server_t *s, dadc_error_t *err)
{
    store_counters_t ctr;
    int rc = store_counters_get(s->store, &ctr, err);

    if (rc != 0)
        return rc;
    if (ctr.current_version != 0) {
        rc = models_load_current(s, err);
        if (rc != 0)
            return rc;
        LOG(LOG_INFO, "server", "model version %u loaded (MNIST test "
            "%.2f%%)", s->current->version,
            s->current->mnist_accuracy * 100);
        server_ready(s);
        return 0;
    }
    if (s->cfg.init_model[0] != '\0')
        return base_from_file(s, err);
    return base_train_start(s, err);
}

static void round_work_cb(uv_work_t *req)
{
    round_job_t *job = req->data;

    job->rc = round_data_load(job->s->store, job->round, &job->data,
                              &job->err);
    if (job->rc == 0)
        job->rc = round_run(&job->in, &job->res, &job->err);
}

/* Figures a log line and an event carry, read back from the store. */
static void round_announce(server_t *s, uint32_t round)
{
    Dadc__RoundInfo *info = NULL;
    dadc_error_t err;

    if (store_round_get(s->store, round, &info, &err) != 0) {
        LOG(LOG_WARNING, "round", "round %u: cannot read its record: %s",
            round, dadc_error_message(&err));
        return;
    }
    events_round_finished(s, info);
    dadc__round_info__free_unpacked(info, NULL);
}

/* Serve the candidate that was just stored as version v. */
static void round_promote(server_t *s, round_job_t *job, uint32_t v)
{
    model_ref_t *r = models_wrap(job->res.candidate, v,
                                 job->res.mnist_accuracy);
    uint32_t prev = s->current != NULL ? s->current->version : 0;
    Dadc__ModelInfo *info = NULL;
    dadc_error_t err;

    if (r == NULL) {
        LOG(LOG_ERROR, "round", "no memory to serve version %u; restart "
            "the server to serve it", v);
        return;
    }
    job->res.candidate = NULL;
    models_set_current(s, r);
    LOG(LOG_INFO, "round", "version %u promoted (was %u)", v, prev);
    if (store_model_get(s->store, v, &info, &err) == 0) {
        events_model_promoted(s, v, prev, info);
        dadc__model_info__free_unpacked(info, NULL);
    }
}

/* Store the candidate and the round record in one transaction. */
static int round_store(server_t *s, round_job_t *job, uint32_t *v,
                       dadc_error_t *err)
{
    Dadc__RoundInfo *begun = NULL;
    round_records_t rec;
    int rc;

    rc = store_round_get(s->store, job->round, &begun, err);
    if (rc != 0)
        return rc;
    rc = round_records_fill(&job->res, &job->in, begun, &rec);
    dadc__round_info__free_unpacked(begun, NULL);
    if (rc != 0)
        return dadc_error_set(err, rc, "out of memory");
    rc = store_model_add(s->store, &rec.model, job->res.safetensors,
                         job->res.safetensors_len, &rec.round,
                         job->res.promoted, v, err);
    round_records_free(&rec);
    return rc;
}

static void round_finish(server_t *s, round_job_t *job)
{
    const round_result_t *res = &job->res;
    dadc_error_t err;
    uint32_t v = 0;

    if (round_store(s, job, &v, &err) != 0) {
        LOG(LOG_ERROR, "round", "round %u: storing the candidate failed: "
            "%s", job->round, dadc_error_message(&err));
        store_round_fail(s->store, job->round, "storing the candidate "
                         "failed", &err);
        round_announce(s, job->round);
        return;
    }
    LOG(LOG_INFO, "round", "round %u finished: version %u %s; MNIST test "
        "%.2f%% (base %.2f%%), held-out adversarial %.1f%% (base %.1f%%); "
        "%u adversarial + %u replayed examples; trained %.2f s, evaluated "
        "%.2f s", job->round, v, res->promoted ? "promoted" : "kept",
        res->mnist_accuracy * 100, res->base_mnist_accuracy * 100,
        res->heldout_accuracy * 100, res->base_heldout_accuracy * 100,
        res->train_examples, res->replay_examples, res->train_seconds,
        res->eval_seconds);
    LOG(LOG_INFO, "round", "round %u: %s", job->round, res->reason);
    round_announce(s, job->round);
    if (res->promoted)
        round_promote(s, job, v);
}

static void round_after_cb(uv_work_t *req, int status)
{
    round_job_t *job = req->data;
    server_t *s = job->s;
    dadc_error_t err;
    char reason[ROUND_REASON_MAX];

    (void)status;
    s->round_job = NULL;
    s->round_running = 0;
    if (job->rc == 0) {
        round_finish(s, job);
    } else {
        if (job->rc == DADC_ECANCELED)
            snprintf(reason, sizeof(reason), "cancelled: the server was "
                     "stopping");
        else
            snprintf(reason, sizeof(reason), "failed: %s",
                     job->err.code ? dadc_error_message(&job->err)
                                   : dadc_strerror(job->rc));
        LOG(job->rc == DADC_ECANCELED ? LOG_INFO : LOG_ERROR, "round",
            "round %u %s", job->round, reason);
        if (store_round_fail(s->store, job->round, reason, &err) != 0)
            LOG(LOG_ERROR, "round", "round %u: recording the failure: %s",
                job->round, dadc_error_message(&err));
        round_announce(s, job->round);
    }

    round_result_free(&job->res);
    round_data_free(&job->data);
    model_unref(job->base);
    free(job);
    rounds_maybe_start(s);
    server_maybe_finish(s);
}

/* Non-held-out examples collected up to now: what the round trains on. */
static uint32_t rounds_train_examples(const server_t *s)
{
    uint64_t n = 0;

    for (size_t i = 0; i < stats_round_count(s->stats); i++) {
        uint32_t r;
        const stats_counts_t *c = stats_round_at(s->stats, i, &r);
        n += c->submitted - c->heldout;
    }
    return (uint32_t)n;
}

static void round_job_input(server_t *s, round_job_t *job)
{
    round_opts_t *o = &job->in.opts;

    round_opts_default(o);
    o->replay = s->cfg.replay_size;
    o->epochs = (int)s->cfg.round_epochs;
    o->lr = s->cfg.round_lr;
    o->margin = s->cfg.round_margin;
    job->in.current = job->base->model;
    job->in.current_version = job->base->version;
    job->in.current_mnist_accuracy = job->base->mnist_accuracy;
    job->in.mnist = &s->mnist;
    job->in.data = &job->data;
    job->in.cancel = &s->cancel;
}

int rounds_start(server_t *s, const char *trigger, uint32_t *round,
                 dadc_error_t *err)
{
    round_job_t *job;
    uint32_t r = 0, train;
    int rc;

    if (s->round_job != NULL)
        return dadc_error_set(err, DADC_EBUSY, "round %u is running",
                              s->round_running);
    if (s->current == NULL || s->stopping)
        return dadc_error_set(err, DADC_EBUSY, "the server is not serving");
    job = calloc(1, sizeof(*job));
    if (job == NULL)
        return dadc_error_set(err, -ENOMEM, "out of memory");
    rc = store_round_begin(s->store, trigger, s->current->version, 0, &r,
                           err);
    if (rc != 0) {
        free(job);
        return rc;
    }

    job->s = s;
    job->req.data = job;
    job->round = r;
    job->base = model_ref(s->current);
    round_job_input(s, job);
    s->collecting_round = r + 1;
    s->round_job = job;
    s->round_running = r;
    uv_queue_work(s->loop, &job->req, round_work_cb, round_after_cb);
    LOG(LOG_INFO, "round", "round %u started (%s): fine-tuning version %u",
        r, trigger, job->base->version);
    train = rounds_train_examples(s);
    if (train > job->in.opts.max_adversarial)
        train = (uint32_t)job->in.opts.max_adversarial;
    events_round_started(s, r, job->base->version, trigger, train);
    if (round != NULL)
        *round = r;
    return 0;
}

bool rounds_maybe_start(server_t *s)
{
    dadc_error_t err;
    uint32_t pending = rounds_pending_fooled(s);

    if (s->round_job != NULL || s->current == NULL || s->stopping ||
        pending < s->cfg.round_threshold)
        return false;
    if (rounds_start(s, "flags", NULL, &err) != 0) {
        LOG(LOG_ERROR, "round", "cannot start a round: %s",
            dadc_error_message(&err));
        return false;
    }
    return true;
}
