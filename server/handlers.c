/*
 * Request dispatch and the calls answered at once. Predict and Flag are
 * validated here and queued for batch.c.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "log.h"
#include "server.h"

#ifndef DADC_VERSION
#define DADC_VERSION "0.1.0"
#endif

#define PROTOCOL_CURRENT DADC__PROTOCOL_VERSION__PROTOCOL_VERSION_CURRENT
#define LIST_EXAMPLES_DEFAULT 100
#define LIST_EXAMPLES_MAX 1000

/* Answer with an OK status and the result already set in resp. */
void handlers_reply_ok(conn_t *c, Dadc__Response *resp, uint64_t id)
{
    Dadc__Status st = DADC__STATUS__INIT;

    st.message = "";
    resp->id = id;
    resp->status = &st;
    conn_send_response(c, resp, true);
}

void handlers_reply_status(conn_t *c, uint64_t id, Dadc__StatusCode code,
                           const char *fmt, ...)
{
    Dadc__Response resp = DADC__RESPONSE__INIT;
    Dadc__Status st = DADC__STATUS__INIT;
    char msg[DADC_ERROR_MSG_MAX + 64];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    st.code = code;
    st.message = msg;
    resp.id = id;
    resp.status = &st;
    conn_send_response(c, &resp, true);
}

/* A store failure as the answer: NOT_FOUND stays NOT_FOUND. The
 * messages of the caller's own mistakes (no such version, a bad label,
 * a round still running) are worded for clients; other failures are the
 * server's, logged in full and answered without internals. */
static void reply_error(conn_t *c, uint64_t id, int rc,
                        const dadc_error_t *err)
{
    Dadc__StatusCode code = DADC__STATUS_CODE__INTERNAL;

    if (rc == DADC_ENOTFOUND)
        code = DADC__STATUS_CODE__NOT_FOUND;
    else if (rc == DADC_ERANGE)
        code = DADC__STATUS_CODE__INVALID_ARGUMENT;
    else if (rc == DADC_EBUSY)
        code = DADC__STATUS_CODE__FAILED_PRECONDITION;
    if (code != DADC__STATUS_CODE__INTERNAL) {
        handlers_reply_status(c, id, code, "%s", dadc_error_message(err));
        return;
    }
    LOG(LOG_WARNING, c->name, "request %llu failed: %s",
        (unsigned long long)id, dadc_error_message(err));
    handlers_reply_status(c, id, code, "internal error in the server "
                          "(its log has the details)");
}

/* UNAVAILABLE for a call that needs the serving model before there is
 * one. */
static void reply_no_model(const server_t *s, conn_t *c, uint64_t id)
{
    handlers_reply_status(c, id, DADC__STATUS_CODE__UNAVAILABLE,
                          s->base_training ? "base model training; "
                          "try again later" : "no model loaded");
}

static void handle_hello(server_t *s, conn_t *c, const Dadc__Request *req)
{
    const Dadc__HelloRequest *h = req->hello;
    Dadc__Response resp = DADC__RESPONSE__INIT;
    Dadc__HelloResponse out = DADC__HELLO_RESPONSE__INIT;

    if (h->protocol_version > PROTOCOL_CURRENT) {
        handlers_reply_status(c, req->id,
                              DADC__STATUS_CODE__FAILED_PRECONDITION,
                              "protocol version %u is not supported; this "
                              "server speaks %d", h->protocol_version,
                              PROTOCOL_CURRENT);
        return;
    }
    snprintf(c->annotator, sizeof(c->annotator), "%s",
             h->annotator != NULL ? h->annotator : "");
    c->hello_done = true;
    if (log_level_current >= LOG_DEBUG) {
        char name[65], who[STORE_ANNOTATOR_MAX];
        LOG(LOG_DEBUG, c->name, "hello from \"%s\", annotator \"%s\"",
            log_clean(h->client_name, name, sizeof(name)),
            log_clean(c->annotator, who, sizeof(who)));
    }

    out.protocol_version = PROTOCOL_CURRENT;
    out.server_version = DADC_VERSION;
    out.current_model_version = s->current ? s->current->version : 0;
    out.max_frame_bytes = s->cfg.max_frame;
    out.max_inflight = s->cfg.max_inflight;
    out.round_threshold = s->cfg.round_threshold;
    out.pending_fooled = rounds_pending_fooled(s);
    resp.result_case = DADC__RESPONSE__RESULT_HELLO;
    resp.hello = &out;
    handlers_reply_ok(c, &resp, req->id);
}

/* Check that every image is 784 bytes; answers INVALID_ARGUMENT if not. */
static bool images_valid(conn_t *c, uint64_t id, const char *what,
                         size_t i, size_t len)
{
    if (len == NN_IMAGE_PIXELS)
        return true;
    handlers_reply_status(c, id, DADC__STATUS_CODE__INVALID_ARGUMENT,
                          "%s %zu has %zu bytes; expected %d (28x28)",
                          what, i, len, NN_IMAGE_PIXELS);
    return false;
}

static pending_t *pending_new(conn_t *c, Dadc__Request *req)
{
    pending_t *p = calloc(1, sizeof(*p));

    if (p == NULL)
        return NULL;
    p->conn = c;
    conn_ref(c);
    p->req = req;
    return p;
}

/* Returns whether req was taken over. */
static bool handle_predict(server_t *s, conn_t *c, Dadc__Request *req)
{
    const Dadc__PredictRequest *pr = req->predict;
    model_ref_t *model;
    dadc_error_t err;
    pending_t *p;
    int rc;

    if (pr->n_images == 0) {
        handlers_reply_status(c, req->id,
                              DADC__STATUS_CODE__INVALID_ARGUMENT,
                              "Predict needs at least one image");
        return false;
    }
    for (size_t i = 0; i < pr->n_images; i++) {
        if (!images_valid(c, req->id, "image", i, pr->images[i].len))
            return false;
    }
    rc = models_get(s, pr->model_version, &model, &err);
    if (rc != 0) {
        reply_error(c, req->id, rc, &err);
        return false;
    }
    p = pending_new(c, req);
    if (p == NULL) {
        model_unref(model);
        handlers_reply_status(c, req->id,
                              DADC__STATUS_CODE__RESOURCE_EXHAUSTED,
                              "out of memory");
        return false;
    }
    p->model = model;
    batch_queue_predict(s, p);
    return true;
}

static bool handle_flag(server_t *s, conn_t *c, Dadc__Request *req)
{
    const Dadc__FlagRequest *fr = req->flag;
    pending_t *p;

    (void)s;
    if (fr->n_items == 0) {
        handlers_reply_status(c, req->id,
                              DADC__STATUS_CODE__INVALID_ARGUMENT,
                              "Flag needs at least one item");
        return false;
    }
    for (size_t i = 0; i < fr->n_items; i++) {
        if (!images_valid(c, req->id, "item", i, fr->items[i]->image.len))
            return false;
        if (fr->items[i]->label > 9) {
            handlers_reply_status(c, req->id,
                                  DADC__STATUS_CODE__INVALID_ARGUMENT,
                                  "item %zu has label %u; expected 0..9",
                                  i, fr->items[i]->label);
            return false;
        }
    }
    p = pending_new(c, req);
    if (p == NULL) {
        handlers_reply_status(c, req->id,
                              DADC__STATUS_CODE__RESOURCE_EXHAUSTED,
                              "out of memory");
        return false;
    }
    snprintf(p->annotator, sizeof(p->annotator), "%s", c->annotator);
    batch_queue_flag(s, p);
    return true;
}

static void counts_fill(Dadc__CountFigures *out, const stats_counts_t *in)
{
    dadc__count_figures__init(out);
    if (in == NULL)
        return;
    out->submitted = in->submitted;
    out->fooled = in->fooled;
    out->error_rate = stats_error_rate(in);
}

/* Everything a StatsResponse points to, freed in one place. */
typedef struct stats_parts {
    Dadc__CountFigures overall;
    Dadc__CountFigures digit_counts[NN_CLASSES];
    Dadc__DigitFigures digits[NN_CLASSES];
    Dadc__DigitFigures *digitp[NN_CLASSES];
    Dadc__CountFigures *ann_counts;
    Dadc__AnnotatorFigures *ann;
    Dadc__AnnotatorFigures **annp;
    Dadc__CountFigures *round_counts;
    Dadc__RoundFigures *rounds;
    Dadc__RoundFigures **roundp;
    Dadc__RoundInfo **infos;
    size_t ninfos;
    Dadc__ModelInfo **models;
    size_t nmodels;
} stats_parts_t;

static void stats_parts_free(stats_parts_t *p)
{
    free(p->ann_counts);
    free(p->ann);
    free(p->annp);
    free(p->round_counts);
    free(p->rounds);
    free(p->roundp);
    if (p->infos != NULL)
        store_rounds_free(p->infos, p->ninfos);
    if (p->models != NULL)
        store_models_free(p->models, p->nmodels);
}

static void stats_fill_digits(server_t *s, stats_parts_t *p,
                              Dadc__StatsResponse *out)
{
    for (int d = 0; d < NN_CLASSES; d++) {
        dadc__digit_figures__init(&p->digits[d]);
        counts_fill(&p->digit_counts[d], stats_digit(s->stats, d));
        p->digits[d].digit = (uint32_t)d;
        p->digits[d].counts = &p->digit_counts[d];
        p->digitp[d] = &p->digits[d];
    }
    out->n_per_digit = NN_CLASSES;
    out->per_digit = p->digitp;
}

static int stats_fill_annotators(server_t *s, stats_parts_t *p,
                                 Dadc__StatsResponse *out)
{
    size_t n = stats_annotator_count(s->stats);

    p->ann_counts = calloc(n + 1, sizeof(*p->ann_counts));
    p->ann = calloc(n + 1, sizeof(*p->ann));
    p->annp = calloc(n + 1, sizeof(*p->annp));
    if (p->ann_counts == NULL || p->ann == NULL || p->annp == NULL)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const char *name = "";
        const stats_counts_t *sc = stats_annotator_at(s->stats, i, &name);

        dadc__annotator_figures__init(&p->ann[i]);
        counts_fill(&p->ann_counts[i], sc);
        p->ann[i].annotator = (char *)name;
        p->ann[i].counts = &p->ann_counts[i];
        p->annp[i] = &p->ann[i];
    }
    out->n_per_annotator = n;
    out->per_annotator = p->annp;
    return 0;
}

static int round_figures_cmp(const void *a, const void *b)
{
    const Dadc__RoundFigures *x = *(Dadc__RoundFigures *const *)a;
    const Dadc__RoundFigures *y = *(Dadc__RoundFigures *const *)b;

    return x->round < y->round ? -1 : x->round > y->round;
}

/* Rounds with examples (from the aggregates) and rounds with a record
 * (from the store), merged in round order. */
static int stats_fill_rounds(server_t *s, stats_parts_t *p,
                             Dadc__StatsResponse *out, dadc_error_t *err)
{
    size_t n = stats_round_count(s->stats), total;
    int rc = store_rounds_list(s->store, &p->infos, &p->ninfos, err);

    if (rc != 0)
        return rc;
    total = n + p->ninfos;
    p->round_counts = calloc(total + 1, sizeof(*p->round_counts));
    p->rounds = calloc(total + 1, sizeof(*p->rounds));
    p->roundp = calloc(total + 1, sizeof(*p->roundp));
    if (p->round_counts == NULL || p->rounds == NULL || p->roundp == NULL)
        return dadc_error_set(err, -ENOMEM, "out of memory");
    for (size_t i = 0; i < total; i++) {
        uint32_t r = 0;
        const stats_counts_t *sc = NULL;

        if (i < n)
            sc = stats_round_at(s->stats, i, &r);
        else if (stats_round_find(s->stats, p->infos[i - n]->round) == NULL)
            r = p->infos[i - n]->round;
        else
            continue;
        dadc__round_figures__init(&p->rounds[out->n_per_round]);
        counts_fill(&p->round_counts[out->n_per_round], sc);
        p->rounds[out->n_per_round].round = r;
        p->rounds[out->n_per_round].counts =
            &p->round_counts[out->n_per_round];
        for (size_t k = 0; k < p->ninfos; k++) {
            if (p->infos[k]->round == r)
                p->rounds[out->n_per_round].info = p->infos[k];
        }
        p->roundp[out->n_per_round] = &p->rounds[out->n_per_round];
        out->n_per_round++;
    }
    qsort(p->roundp, out->n_per_round, sizeof(*p->roundp),
          round_figures_cmp);
    out->per_round = p->roundp;
    return 0;
}

static void handle_stats(server_t *s, conn_t *c, const Dadc__Request *req)
{
    Dadc__Response resp = DADC__RESPONSE__INIT;
    Dadc__StatsResponse out = DADC__STATS_RESPONSE__INIT;
    stats_parts_t parts;
    dadc_error_t err;
    int rc;

    memset(&parts, 0, sizeof(parts));
    dadc_error_clear(&err);
    counts_fill(&parts.overall, stats_overall(s->stats));
    out.overall = &parts.overall;
    out.heldout_examples = stats_overall(s->stats)->heldout;
    stats_fill_digits(s, &parts, &out);
    rc = stats_fill_annotators(s, &parts, &out);
    if (rc != 0)
        rc = dadc_error_set(&err, -ENOMEM, "out of memory");
    if (rc == 0)
        rc = stats_fill_rounds(s, &parts, &out, &err);
    if (rc == 0)
        rc = store_models_list(s->store, &parts.models, &parts.nmodels,
                               &err);
    if (rc != 0) {
        reply_error(c, req->id, rc, &err);
        stats_parts_free(&parts);
        return;
    }

    out.n_models = parts.nmodels;
    out.models = parts.models;
    out.current_model_version = s->current ? s->current->version : 0;
    out.pending_fooled = rounds_pending_fooled(s);
    out.round_threshold = s->cfg.round_threshold;
    out.round_running = s->round_job != NULL;
    out.connections = s->nconns;
    resp.result_case = DADC__RESPONSE__RESULT_STATS;
    resp.stats = &out;
    handlers_reply_ok(c, &resp, req->id);
    stats_parts_free(&parts);
}

static void handle_list_models(server_t *s, conn_t *c,
                               const Dadc__Request *req)
{
    Dadc__Response resp = DADC__RESPONSE__INIT;
    Dadc__ListModelsResponse out = DADC__LIST_MODELS_RESPONSE__INIT;
    Dadc__ModelInfo **models = NULL;
    size_t n = 0;
    dadc_error_t err;
    int rc;

    rc = store_models_list(s->store, &models, &n, &err);
    if (rc != 0) {
        reply_error(c, req->id, rc, &err);
        return;
    }
    out.n_models = n;
    out.models = models;
    out.current_model_version = s->current ? s->current->version : 0;
    resp.result_case = DADC__RESPONSE__RESULT_LIST_MODELS;
    resp.list_models = &out;
    handlers_reply_ok(c, &resp, req->id);
    store_models_free(models, n);
}

static void handle_get_model(server_t *s, conn_t *c,
                             const Dadc__Request *req)
{
    Dadc__Response resp = DADC__RESPONSE__INIT;
    Dadc__GetModelResponse out = DADC__GET_MODEL_RESPONSE__INIT;
    Dadc__ModelInfo *info = NULL;
    uint32_t version = req->get_model->version;
    uint8_t *st = NULL;
    size_t len = 0;
    dadc_error_t err;
    int rc;

    if (version == 0 && s->current == NULL) {
        reply_no_model(s, c, req->id);
        return;
    }
    if (version == 0)
        version = s->current->version;
    rc = store_model_get(s->store, version, &info, &err);
    if (rc == 0)
        rc = store_weights_get(s->store, version, &st, &len, &err);
    if (rc != 0) {
        reply_error(c, req->id, rc, &err);
        goto out;
    }
    out.info = info;
    out.safetensors.data = st;
    out.safetensors.len = len;
    resp.result_case = DADC__RESPONSE__RESULT_GET_MODEL;
    resp.get_model = &out;
    handlers_reply_ok(c, &resp, req->id);
out:
    if (info != NULL)
        dadc__model_info__free_unpacked(info, NULL);
    free(st);
}

static void handle_train(server_t *s, conn_t *c, const Dadc__Request *req)
{
    Dadc__Response resp = DADC__RESPONSE__INIT;
    Dadc__TrainResponse out = DADC__TRAIN_RESPONSE__INIT;
    dadc_error_t err;
    uint32_t round = 0;
    int rc;

    if (s->round_job != NULL) {
        handlers_reply_status(c, req->id,
                              DADC__STATUS_CODE__FAILED_PRECONDITION,
                              "round %u is running; call Train again "
                              "after it finishes", s->round_running);
        return;
    }
    rc = rounds_start(s, "manual", &round, &err);
    if (rc != 0) {
        reply_error(c, req->id, rc, &err);
        return;
    }
    out.round = round;
    resp.result_case = DADC__RESPONSE__RESULT_TRAIN;
    resp.train = &out;
    handlers_reply_ok(c, &resp, req->id);
}

static void handle_rollback(server_t *s, conn_t *c, const Dadc__Request *req)
{
    Dadc__Response resp = DADC__RESPONSE__INIT;
    Dadc__RollbackResponse out = DADC__ROLLBACK_RESPONSE__INIT;
    uint32_t version = req->rollback->version, previous = 0;
    model_ref_t *model = NULL;
    dadc_error_t err;
    int rc;

    if (version == 0) {
        handlers_reply_status(c, req->id,
                              DADC__STATUS_CODE__INVALID_ARGUMENT,
                              "Rollback needs a version");
        return;
    }
    if (s->round_job != NULL) {
        handlers_reply_status(c, req->id,
                              DADC__STATUS_CODE__FAILED_PRECONDITION,
                              "round %u is running; roll back after it "
                              "finishes", s->round_running);
        return;
    }

    /* Load the weights first: the pointer moves only to a version that
     * can serve. */
    rc = models_get(s, version, &model, &err);
    if (rc == 0)
        rc = store_rollback(s->store, version, &previous, &err);
    if (rc != 0) {
        if (model != NULL)
            model_unref(model);
        reply_error(c, req->id, rc, &err);
        return;
    }
    models_set_current(s, model);
    LOG(LOG_INFO, "server", "rollback: version %u is current (was %u)",
        version, previous);
    out.previous_version = previous;
    out.current_version = version;
    resp.result_case = DADC__RESPONSE__RESULT_ROLLBACK;
    resp.rollback = &out;
    handlers_reply_ok(c, &resp, req->id);
    events_rolled_back(s, version, previous);
}

/* Store examples as protobuf Examples pointing into ex. */
static int examples_fill(const store_example_t *ex, size_t n, bool images,
                         Dadc__Example **msgs, Dadc__Example ***ptrs)
{
    *msgs = calloc(n + 1, sizeof(**msgs));
    *ptrs = calloc(n + 1, sizeof(**ptrs));
    if (*msgs == NULL || *ptrs == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        Dadc__Example *m = &(*msgs)[i];

        dadc__example__init(m);
        m->id = ex[i].id;
        if (images) {
            m->image.data = (uint8_t *)ex[i].image;
            m->image.len = STORE_IMAGE_BYTES;
        }
        m->label = ex[i].label;
        m->predicted = ex[i].predicted;
        m->model_version = ex[i].model_version;
        m->fooled = ex[i].fooled;
        m->heldout = ex[i].heldout;
        m->created_unix_ms = ex[i].created_ms;
        m->annotator = (char *)ex[i].annotator;
        m->round = ex[i].round;
        (*ptrs)[i] = m;
    }
    return 0;
}

static void handle_list_examples(server_t *s, conn_t *c,
                                 const Dadc__Request *req)
{
    const Dadc__ListExamplesRequest *lr = req->list_examples;
    Dadc__Response resp = DADC__RESPONSE__INIT;
    Dadc__ListExamplesResponse out = DADC__LIST_EXAMPLES_RESPONSE__INIT;
    size_t limit = lr->limit == 0 ? LIST_EXAMPLES_DEFAULT : lr->limit;
    store_example_t *ex;
    Dadc__Example *msgs = NULL, **ptrs = NULL;
    size_t n = 0;
    dadc_error_t err;
    int rc;

    if (limit > LIST_EXAMPLES_MAX)
        limit = LIST_EXAMPLES_MAX;
    ex = malloc(limit * sizeof(*ex));
    if (ex == NULL) {
        handlers_reply_status(c, req->id,
                              DADC__STATUS_CODE__RESOURCE_EXHAUSTED,
                              "out of memory");
        return;
    }
    rc = store_examples_list(s->store, lr->after_id, limit, ex, &n,
                             &out.next_after_id, &out.total, &err);
    if (rc == 0 && examples_fill(ex, n, lr->include_images, &msgs,
                                 &ptrs) != 0)
        rc = dadc_error_set(&err, -ENOMEM, "out of memory");
    if (rc != 0) {
        reply_error(c, req->id, rc, &err);
        goto out;
    }
    out.n_examples = n;
    out.examples = ptrs;
    resp.result_case = DADC__RESPONSE__RESULT_LIST_EXAMPLES;
    resp.list_examples = &out;
    handlers_reply_ok(c, &resp, req->id);
out:
    free(msgs);
    free(ptrs);
    free(ex);
}

static void handle_subscribe(conn_t *c, const Dadc__Request *req)
{
    Dadc__Response resp = DADC__RESPONSE__INIT;
    Dadc__SubscribeResponse out = DADC__SUBSCRIBE_RESPONSE__INIT;

    c->subscribed = true;
    resp.result_case = DADC__RESPONSE__RESULT_SUBSCRIBE;
    resp.subscribe = &out;
    handlers_reply_ok(c, &resp, req->id);
}

/* Calls that need a serving model wait for the base model. */
static bool needs_model(Dadc__Request__CallCase call)
{
    return call == DADC__REQUEST__CALL_PREDICT ||
           call == DADC__REQUEST__CALL_FLAG ||
           call == DADC__REQUEST__CALL_TRAIN ||
           call == DADC__REQUEST__CALL_ROLLBACK;
}

/* The synchronous calls. */
static void dispatch_sync(server_t *s, conn_t *c, const Dadc__Request *req)
{
    switch (req->call_case) {
    case DADC__REQUEST__CALL_HELLO:
        handle_hello(s, c, req);
        break;
    case DADC__REQUEST__CALL_STATS:
        handle_stats(s, c, req);
        break;
    case DADC__REQUEST__CALL_LIST_MODELS:
        handle_list_models(s, c, req);
        break;
    case DADC__REQUEST__CALL_GET_MODEL:
        handle_get_model(s, c, req);
        break;
    case DADC__REQUEST__CALL_TRAIN:
        handle_train(s, c, req);
        break;
    case DADC__REQUEST__CALL_ROLLBACK:
        handle_rollback(s, c, req);
        break;
    case DADC__REQUEST__CALL_LIST_EXAMPLES:
        handle_list_examples(s, c, req);
        break;
    case DADC__REQUEST__CALL_SUBSCRIBE:
        handle_subscribe(c, req);
        break;
    default:
        handlers_reply_status(c, req->id,
                              DADC__STATUS_CODE__UNIMPLEMENTED,
                              "unknown call (a newer protocol?)");
        break;
    }
}

void handlers_dispatch(server_t *s, conn_t *c, Dadc__Request *req)
{
    bool taken = false;

    if (needs_model(req->call_case) && !s->ready) {
        reply_no_model(s, c, req->id);
    } else if (req->call_case == DADC__REQUEST__CALL_PREDICT) {
        taken = handle_predict(s, c, req);
    } else if (req->call_case == DADC__REQUEST__CALL_FLAG) {
        taken = handle_flag(s, c, req);
    } else {
        dispatch_sync(s, c, req);
    }
    if (!taken)
        dadc__request__free_unpacked(req, NULL);
}
