/*
 * The convenience calls of the client library: Hello, the pipelined
 * batch calls (Predict, Flag) and the one-request calls. Built on the
 * low-level send/wait of dadc_client.c. See dadc_client.h.
 */
#include "dadc_client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dadc_client_internal.h"
#include "frame.h"

/* Bytes a request needs besides its images (id, oneof header, ...). */
#define REQUEST_OVERHEAD 64
/* Encoded size of one image in a PredictRequest / one FlagItem. */
#define PREDICT_ITEM_BYTES (DADC_IMAGE_BYTES + 3)
#define FLAG_ITEM_BYTES (DADC_IMAGE_BYTES + 3 + 2 + 3)
#define DEFAULT_CLIENT_NAME "libdadc"

/* ------------------------------------------------------------------ */
/* Hello                                                               */

static void info_from_hello(dadc_server_info_t *info,
                            const Dadc__HelloResponse *h)
{
    memset(info, 0, sizeof(*info));
    info->protocol_version = h->protocol_version;
    snprintf(info->server_version, sizeof(info->server_version), "%s",
             h->server_version != NULL ? h->server_version : "");
    info->current_model_version = h->current_model_version;
    info->max_frame_bytes = h->max_frame_bytes;
    if (info->max_frame_bytes == 0)
        info->max_frame_bytes = FRAME_DEFAULT_MAX;
    info->max_inflight = h->max_inflight ? h->max_inflight : 1;
    info->round_threshold = h->round_threshold;
    info->pending_fooled = h->pending_fooled;
}

int dadc_client_hello(dadc_client_t *c, const char *client_name,
                      const char *annotator, dadc_server_info_t *info)
{
    Dadc__Request req = DADC__REQUEST__INIT;
    Dadc__HelloRequest hello = DADC__HELLO_REQUEST__INIT;
    Dadc__Response *resp;
    dadc_server_info_t got;
    int rc;

    hello.protocol_version = DADC__PROTOCOL_VERSION__PROTOCOL_VERSION_CURRENT;
    hello.client_name = (char *)(client_name ? client_name
                                             : DEFAULT_CLIENT_NAME);
    hello.annotator = (char *)(annotator ? annotator : "");
    req.call_case = DADC__REQUEST__CALL_HELLO;
    req.hello = &hello;
    rc = dadc_client_call(c, &req, &resp);
    if (rc != 0)
        return rc;
    if (resp->result_case != DADC__RESPONSE__RESULT_HELLO ||
        resp->hello == NULL) {
        dadc__response__free_unpacked(resp, NULL);
        return dadc_client_fail(c, DADC_EPROTO, "%s: Hello answered "
                                "without a Hello result",
                                dadc_client_address(c));
    }
    info_from_hello(&got, resp->hello);
    dadc__response__free_unpacked(resp, NULL);
    dadc_client_info_set(c, &got);
    if (info != NULL)
        *info = got;
    return 0;
}

static int ensure_hello(dadc_client_t *c)
{
    if (dadc_client_server_info(c) != NULL)
        return 0;
    return dadc_client_hello(c, NULL, NULL, NULL);
}

/* ------------------------------------------------------------------ */
/* Pipelined batches                                                   */

/*
 * A batch call: n items cut into chunks of at most per_frame, at most
 * window chunks in flight. The callbacks build and send one chunk, take
 * a chunk's OK response, and mark a chunk's items failed.
 */
typedef struct batch {
    dadc_client_t *c;
    size_t n;
    size_t per_frame;
    unsigned window;
    int (*send_chunk)(struct batch *b, size_t first, size_t count,
                      uint64_t *id);
    int (*take_chunk)(struct batch *b, size_t first, size_t count,
                      const Dadc__Response *resp);
    void (*fail_chunk)(struct batch *b, size_t first, size_t count,
                       int code);
    dadc_progress_cb progress;
    void *user;
    void *ctx;
    bool stop_on_status;  /* a non-OK chunk ends the batch */
} batch_t;

typedef struct batch_slot {
    uint64_t id;
    size_t first;
    size_t count;
} batch_slot_t;

/* Items per frame: what fits in the server's frame limit. */
static size_t batch_per_frame(dadc_client_t *c, size_t item_bytes)
{
    const dadc_server_info_t *info = dadc_client_server_info(c);
    size_t limit = info->max_frame_bytes, fit, want;

    fit = limit > REQUEST_OVERHEAD + item_bytes
              ? (limit - REQUEST_OVERHEAD) / item_bytes
              : 1;
    want = dadc_client_batch_images_get(c);
    return want < fit ? want : fit;
}

static unsigned batch_window(dadc_client_t *c)
{
    const dadc_server_info_t *info = dadc_client_server_info(c);
    unsigned w = dadc_client_window_get(c);

    return info->max_inflight < w ? info->max_inflight : w;
}

/* Wait for the oldest slot's answer and hand it to the callbacks. */
static int batch_collect(batch_t *b, const batch_slot_t *s, int *first_err)
{
    Dadc__Response *resp = NULL;
    int rc;

    rc = dadc_client_wait(b->c, s->id, dadc_client_timeout_get(b->c),
                          &resp);
    if (rc == 0)
        rc = b->take_chunk(b, s->first, s->count, resp);
    if (resp != NULL)
        dadc__response__free_unpacked(resp, NULL);
    if (rc != 0) {
        b->fail_chunk(b, s->first, s->count, rc);
        if (*first_err == 0)
            *first_err = rc;
    }
    if (rc == DADC_ESTATUS && !b->stop_on_status)
        return 0;
    return rc;
}

/* Mark everything from slot index i on and every unsent item failed. */
static void batch_abandon(batch_t *b, batch_slot_t *slots, size_t head,
                          size_t inflight, size_t next, int code)
{
    size_t k;

    for (k = 0; k < inflight; k++) {
        const batch_slot_t *s = &slots[(head + k) % b->window];

        b->fail_chunk(b, s->first, s->count, code);
    }
    if (next < b->n)
        b->fail_chunk(b, next, b->n - next, code);
}

static int batch_run(batch_t *b)
{
    batch_slot_t *slots = calloc(b->window, sizeof(*slots));
    size_t next = 0, done = 0, head = 0, inflight = 0;
    int rc = 0, first_err = 0;

    if (slots == NULL)
        return dadc_client_fail(b->c, -ENOMEM, "out of memory");
    while (rc == 0 && (next < b->n || inflight > 0)) {
        /* fill the window */
        while (next < b->n && inflight < b->window) {
            batch_slot_t *s = &slots[(head + inflight) % b->window];

            s->first = next;
            s->count = b->n - next < b->per_frame ? b->n - next
                                                  : b->per_frame;
            rc = b->send_chunk(b, s->first, s->count, &s->id);
            if (rc != 0)
                break;
            next += s->count;
            inflight++;
        }
        if (rc != 0 || inflight == 0)
            break;

        /* take the oldest answer */
        rc = batch_collect(b, &slots[head], &first_err);
        done += slots[head].count;
        head = (head + 1) % b->window;
        inflight--;
        if (rc == 0 && b->progress != NULL &&
            b->progress(done, b->n, b->user) != 0)
            rc = dadc_client_fail(b->c, DADC_ECANCELED, "cancelled");
    }
    if (rc != 0) {
        batch_abandon(b, slots, head, inflight, next, rc);
        if (first_err == 0)
            first_err = rc;
    }
    free(slots);
    return first_err;
}

/* ------------------------------------------------------------------ */
/* Predict                                                             */

typedef struct predict_ctx {
    const uint8_t *images;
    uint32_t model_version;
    dadc_prediction_t *out;
} predict_ctx_t;

static int predict_send_chunk(batch_t *b, size_t first, size_t count,
                              uint64_t *id)
{
    predict_ctx_t *p = b->ctx;
    Dadc__Request req = DADC__REQUEST__INIT;
    Dadc__PredictRequest pr = DADC__PREDICT_REQUEST__INIT;
    ProtobufCBinaryData *imgs = malloc(count * sizeof(*imgs));
    size_t i;
    int rc;

    if (imgs == NULL)
        return dadc_client_fail(b->c, -ENOMEM, "out of memory");
    for (i = 0; i < count; i++) {
        imgs[i].len = DADC_IMAGE_BYTES;
        imgs[i].data = (uint8_t *)p->images +
                       (first + i) * DADC_IMAGE_BYTES;
    }
    pr.n_images = count;
    pr.images = imgs;
    pr.model_version = p->model_version;
    req.call_case = DADC__REQUEST__CALL_PREDICT;
    req.predict = &pr;
    rc = dadc_client_send_async(b->c, &req, id);
    free(imgs);
    return rc;
}

static int predict_take_chunk(batch_t *b, size_t first, size_t count,
                              const Dadc__Response *resp)
{
    predict_ctx_t *p = b->ctx;
    const Dadc__PredictResponse *pr = resp->predict;
    size_t i;

    if (resp->result_case != DADC__RESPONSE__RESULT_PREDICT || pr == NULL ||
        pr->n_predictions != count)
        return dadc_client_fail(b->c, DADC_EPROTO, "%s: Predict answer "
                                "does not match the request",
                                dadc_client_address(b->c));
    for (i = 0; i < count; i++) {
        const Dadc__Prediction *src = pr->predictions[i];
        dadc_prediction_t *dst = &p->out[first + i];

        if (src == NULL || src->n_probabilities != DADC_DIGITS ||
            src->digit >= DADC_DIGITS)
            return dadc_client_fail(b->c, DADC_EPROTO, "%s: malformed "
                                    "prediction", dadc_client_address(b->c));
        dst->digit = src->digit;
        memcpy(dst->probabilities, src->probabilities,
               sizeof(dst->probabilities));
        dst->model_version = pr->model_version;
    }
    return 0;
}

static void predict_fail_chunk(batch_t *b, size_t first, size_t count,
                               int code)
{
    (void)b;
    (void)first;
    (void)count;
    (void)code;
}

int dadc_client_predict(dadc_client_t *c, const uint8_t *images, size_t n,
                        uint32_t model_version, dadc_prediction_t *out)
{
    predict_ctx_t p = {images, model_version, out};
    batch_t b = {0};
    int rc;

    if (n == 0)
        return dadc_client_fail(c, DADC_ERANGE, "no images to predict");
    rc = ensure_hello(c);
    if (rc != 0)
        return rc;
    b.c = c;
    b.n = n;
    b.per_frame = batch_per_frame(c, PREDICT_ITEM_BYTES);
    b.window = batch_window(c);
    b.send_chunk = predict_send_chunk;
    b.take_chunk = predict_take_chunk;
    b.fail_chunk = predict_fail_chunk;
    b.ctx = &p;
    b.stop_on_status = true;
    return batch_run(&b);
}

/* ------------------------------------------------------------------ */
/* Flag                                                                */

typedef struct flag_ctx {
    const uint8_t *images;
    const uint8_t *labels;
    dadc_flag_result_t *results;
    dadc_flag_summary_t *summary;
} flag_ctx_t;

static int flag_send_chunk(batch_t *b, size_t first, size_t count,
                           uint64_t *id)
{
    flag_ctx_t *f = b->ctx;
    Dadc__Request req = DADC__REQUEST__INIT;
    Dadc__FlagRequest fr = DADC__FLAG_REQUEST__INIT;
    Dadc__FlagItem *items = malloc(count * sizeof(*items));
    Dadc__FlagItem **ptrs = malloc(count * sizeof(*ptrs));
    size_t i;
    int rc;

    if (items == NULL || ptrs == NULL) {
        rc = dadc_client_fail(b->c, -ENOMEM, "out of memory");
        goto out;
    }
    for (i = 0; i < count; i++) {
        dadc__flag_item__init(&items[i]);
        items[i].image.len = DADC_IMAGE_BYTES;
        items[i].image.data = (uint8_t *)f->images +
                              (first + i) * DADC_IMAGE_BYTES;
        items[i].label = f->labels[first + i];
        ptrs[i] = &items[i];
    }
    fr.n_items = count;
    fr.items = ptrs;
    req.call_case = DADC__REQUEST__CALL_FLAG;
    req.flag = &fr;
    rc = dadc_client_send_async(b->c, &req, id);

out:
    free(items);
    free(ptrs);
    return rc;
}

static int flag_take_chunk(batch_t *b, size_t first, size_t count,
                           const Dadc__Response *resp)
{
    flag_ctx_t *f = b->ctx;
    const Dadc__FlagResponse *fr = resp->flag;
    size_t i;

    if (resp->result_case != DADC__RESPONSE__RESULT_FLAG || fr == NULL ||
        fr->n_results != count)
        return dadc_client_fail(b->c, DADC_EPROTO, "%s: Flag answer does "
                                "not match the request",
                                dadc_client_address(b->c));
    for (i = 0; i < count; i++) {
        const Dadc__FlagResult *src = fr->results[i];

        if (src == NULL)
            return dadc_client_fail(b->c, DADC_EPROTO, "%s: malformed "
                                    "flag result",
                                    dadc_client_address(b->c));
        f->summary->fooled += src->fooled ? 1 : 0;
        if (f->results == NULL)
            continue;
        f->results[first + i] = (dadc_flag_result_t){
            0, src->example_id, src->predicted, src->fooled, src->heldout};
    }
    f->summary->acknowledged += count;
    f->summary->model_version = fr->model_version;
    f->summary->pending_fooled = fr->pending_fooled;
    f->summary->round_threshold = fr->round_threshold;
    f->summary->round_started |= fr->round_started;
    return 0;
}

static void flag_fail_chunk(batch_t *b, size_t first, size_t count,
                            int code)
{
    flag_ctx_t *f = b->ctx;
    size_t i;

    f->summary->failed += count;
    if (f->results == NULL)
        return;
    for (i = 0; i < count; i++)
        f->results[first + i] = (dadc_flag_result_t){code, 0, 0, 0, 0};
}

static int flag_check_labels(dadc_client_t *c, const uint8_t *labels,
                             size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (labels[i] > 9)
            return dadc_client_fail(c, DADC_ERANGE, "label %u of item %zu "
                                    "is not a digit", labels[i], i);
    return 0;
}

int dadc_client_flag(dadc_client_t *c, const uint8_t *images,
                     const uint8_t *labels, size_t n,
                     dadc_flag_result_t *results,
                     dadc_flag_summary_t *summary,
                     dadc_progress_cb progress, void *user)
{
    dadc_flag_summary_t local;
    flag_ctx_t f = {images, labels, results, summary ? summary : &local};
    batch_t b = {0};
    int rc;

    memset(f.summary, 0, sizeof(*f.summary));
    if (n == 0)
        return dadc_client_fail(c, DADC_ERANGE, "no images to flag");
    rc = flag_check_labels(c, labels, n);
    if (rc == 0)
        rc = ensure_hello(c);
    if (rc != 0) {
        b.ctx = &f;
        flag_fail_chunk(&b, 0, n, rc);
        return rc;
    }
    b.c = c;
    b.n = n;
    b.per_frame = batch_per_frame(c, FLAG_ITEM_BYTES);
    b.window = batch_window(c);
    b.send_chunk = flag_send_chunk;
    b.take_chunk = flag_take_chunk;
    b.fail_chunk = flag_fail_chunk;
    b.progress = progress;
    b.user = user;
    b.ctx = &f;
    return batch_run(&b);
}

/* ------------------------------------------------------------------ */
/* One-request calls                                                   */

/*
 * Send req, wait for its answer and check it carries result kind want.
 * On success the caller owns *resp.
 */
static int simple_call(dadc_client_t *c, Dadc__Request *req,
                       Dadc__Response__ResultCase want,
                       Dadc__Response **resp)
{
    int rc = ensure_hello(c);

    if (rc != 0)
        return rc;
    rc = dadc_client_call(c, req, resp);
    if (rc != 0)
        return rc;
    if (want == DADC__RESPONSE__RESULT_SUBSCRIBE)
        return 0;
    if ((*resp)->result_case != want || (*resp)->stats == NULL) {
        dadc__response__free_unpacked(*resp, NULL);
        *resp = NULL;
        return dadc_client_fail(c, DADC_EPROTO, "%s: answer of the wrong "
                                "kind", dadc_client_address(c));
    }
    return 0;
}

/*
 * Detach the result (a union member, so any arm's pointer is the same)
 * from the response and free the response.
 */
static void *take_result(Dadc__Response *resp)
{
    void *r = resp->stats;

    resp->stats = NULL;
    resp->result_case = DADC__RESPONSE__RESULT__NOT_SET;
    dadc__response__free_unpacked(resp, NULL);
    return r;
}

int dadc_client_stats(dadc_client_t *c, Dadc__StatsResponse **out)
{
    Dadc__Request req = DADC__REQUEST__INIT;
    Dadc__StatsRequest sr = DADC__STATS_REQUEST__INIT;
    Dadc__Response *resp;
    int rc;

    *out = NULL;
    req.call_case = DADC__REQUEST__CALL_STATS;
    req.stats = &sr;
    rc = simple_call(c, &req, DADC__RESPONSE__RESULT_STATS, &resp);
    if (rc == 0)
        *out = take_result(resp);
    return rc;
}

int dadc_client_list_models(dadc_client_t *c,
                            Dadc__ListModelsResponse **out)
{
    Dadc__Request req = DADC__REQUEST__INIT;
    Dadc__ListModelsRequest lr = DADC__LIST_MODELS_REQUEST__INIT;
    Dadc__Response *resp;
    int rc;

    *out = NULL;
    req.call_case = DADC__REQUEST__CALL_LIST_MODELS;
    req.list_models = &lr;
    rc = simple_call(c, &req, DADC__RESPONSE__RESULT_LIST_MODELS, &resp);
    if (rc == 0)
        *out = take_result(resp);
    return rc;
}

int dadc_client_get_model(dadc_client_t *c, uint32_t version,
                          Dadc__GetModelResponse **out)
{
    Dadc__Request req = DADC__REQUEST__INIT;
    Dadc__GetModelRequest gr = DADC__GET_MODEL_REQUEST__INIT;
    Dadc__Response *resp;
    int rc;

    *out = NULL;
    gr.version = version;
    req.call_case = DADC__REQUEST__CALL_GET_MODEL;
    req.get_model = &gr;
    rc = simple_call(c, &req, DADC__RESPONSE__RESULT_GET_MODEL, &resp);
    if (rc == 0)
        *out = take_result(resp);
    return rc;
}

int dadc_client_list_examples(dadc_client_t *c, uint64_t after_id,
                              uint32_t limit, bool include_images,
                              Dadc__ListExamplesResponse **out)
{
    Dadc__Request req = DADC__REQUEST__INIT;
    Dadc__ListExamplesRequest lr = DADC__LIST_EXAMPLES_REQUEST__INIT;
    Dadc__Response *resp;
    int rc;

    *out = NULL;
    lr.after_id = after_id;
    lr.limit = limit;
    lr.include_images = include_images;
    req.call_case = DADC__REQUEST__CALL_LIST_EXAMPLES;
    req.list_examples = &lr;
    rc = simple_call(c, &req, DADC__RESPONSE__RESULT_LIST_EXAMPLES, &resp);
    if (rc == 0)
        *out = take_result(resp);
    return rc;
}

int dadc_client_train(dadc_client_t *c, uint32_t *round)
{
    Dadc__Request req = DADC__REQUEST__INIT;
    Dadc__TrainRequest tr = DADC__TRAIN_REQUEST__INIT;
    Dadc__Response *resp;
    int rc;

    req.call_case = DADC__REQUEST__CALL_TRAIN;
    req.train = &tr;
    rc = simple_call(c, &req, DADC__RESPONSE__RESULT_TRAIN, &resp);
    if (rc != 0)
        return rc;
    if (round != NULL)
        *round = resp->train->round;
    dadc__response__free_unpacked(resp, NULL);
    return 0;
}

int dadc_client_rollback(dadc_client_t *c, uint32_t version,
                         uint32_t *previous, uint32_t *current)
{
    Dadc__Request req = DADC__REQUEST__INIT;
    Dadc__RollbackRequest rr = DADC__ROLLBACK_REQUEST__INIT;
    Dadc__Response *resp;
    int rc;

    rr.version = version;
    req.call_case = DADC__REQUEST__CALL_ROLLBACK;
    req.rollback = &rr;
    rc = simple_call(c, &req, DADC__RESPONSE__RESULT_ROLLBACK, &resp);
    if (rc != 0)
        return rc;
    if (previous != NULL)
        *previous = resp->rollback->previous_version;
    if (current != NULL)
        *current = resp->rollback->current_version;
    dadc__response__free_unpacked(resp, NULL);
    return 0;
}

int dadc_client_subscribe(dadc_client_t *c)
{
    Dadc__Request req = DADC__REQUEST__INIT;
    Dadc__SubscribeRequest sr = DADC__SUBSCRIBE_REQUEST__INIT;
    Dadc__Response *resp;
    int rc;

    req.call_case = DADC__REQUEST__CALL_SUBSCRIBE;
    req.subscribe = &sr;
    rc = simple_call(c, &req, DADC__RESPONSE__RESULT_SUBSCRIBE, &resp);
    if (rc == 0)
        dadc__response__free_unpacked(resp, NULL);
    return rc;
}
