/*
 * Predict and Flag, batched per loop iteration.
 *
 * Requests are queued as they are decoded. The check callback, which runs
 * once per iteration after all I/O of that iteration, calls batch_run:
 * every Predict waiting for the same model version goes through one
 * nn_predict call, answered right there (or, for a batch too large to
 * run on the loop without delaying everyone else, from the thread pool).
 * Every Flag waiting goes, together, to one job on the thread pool that
 * makes the server's own predictions by the version current when the job
 * starts and commits all the examples in one transaction; each Flag is
 * answered only after that commit. While one commit runs, new flags wait
 * and form the next one, so a burst of flags costs few fsyncs.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "log.h"
#include "server.h"

/* Images predicted on the loop thread at most; larger batches go to the
 * thread pool. About a millisecond of the loop's time at the engine's
 * target speed. */
#define BATCH_ON_LOOP_MAX 64

struct flag_job {
    uv_work_t req;
    server_t *s;
    model_ref_t *model;       /* the version that predicts; referenced */
    pending_t *items;         /* the Flag requests of this commit */
    store_example_t *ex;      /* one per item, in request order */
    size_t n;
    int rc;
    dadc_error_t err;
};

static void list_append(pending_list_t *l, pending_t *p)
{
    p->next = NULL;
    *l->tail = p;
    l->tail = &p->next;
    l->count++;
}

static pending_t *list_take(pending_list_t *l)
{
    pending_t *head = l->head;

    l->head = NULL;
    l->tail = &l->head;
    l->count = 0;
    return head;
}

void pending_free(pending_t *p)
{
    server_t *s = p->conn->srv;
    bool was_full = server_input_full(s);

    s->pending_in -= p->bytes;
    if (was_full && !server_input_full(s))
        server_input_resume(s);
    if (p->req != NULL)
        dadc__request__free_unpacked(p->req, NULL);
    model_unref(p->model);
    conn_unref(p->conn);
    free(p);
}

/* Count what a queued request holds; past max_pending_in every
 * connection stops reading until enough is answered. */
static void batch_hold(server_t *s, pending_t *p, size_t images)
{
    p->bytes = images * NN_IMAGE_PIXELS;
    s->pending_in += p->bytes;
}

void batch_queue_predict(server_t *s, pending_t *p)
{
    batch_hold(s, p, p->req->predict->n_images);
    list_append(&s->predicts, p);
    server_wake(s);
}

void batch_queue_flag(server_t *s, pending_t *p)
{
    batch_hold(s, p, p->req->flag->n_items);
    list_append(&s->flags, p);
    server_wake(s);
}

bool batch_busy(const server_t *s)
{
    return s->predicts.count > 0 || s->flags.count > 0 ||
           s->flag_job != NULL ||
           s->predict_jobs > 0;
}

/* Run images (n of them) through m in one call. */
static int batch_infer(server_t *s, model_ref_t *m, const uint8_t *images,
                       size_t n, float *probs)
{
    int rc;

    if (m->ctx == NULL) {
        size_t max = s->cfg.max_predict_batch;
        rc = nn_ctx_create(&m->ctx, m->model,
                           (int)(max < BATCH_ON_LOOP_MAX ? max
                                                         : BATCH_ON_LOOP_MAX));
        if (rc != 0)
            return rc;
    }
    return nn_predict(m->ctx, m->model, images, n, probs);
}

static void predict_reply(pending_t *p, const float *probs)
{
    const Dadc__PredictRequest *pr = p->req->predict;
    Dadc__Response resp = DADC__RESPONSE__INIT;
    Dadc__PredictResponse out = DADC__PREDICT_RESPONSE__INIT;
    Dadc__Prediction *preds = calloc(pr->n_images, sizeof(*preds));
    Dadc__Prediction **ptrs = calloc(pr->n_images, sizeof(*ptrs));

    if (preds == NULL || ptrs == NULL) {
        handlers_reply_status(p->conn, p->req->id,
                              DADC__STATUS_CODE__RESOURCE_EXHAUSTED,
                              "out of memory");
        goto out;
    }
    for (size_t i = 0; i < pr->n_images; i++) {
        dadc__prediction__init(&preds[i]);
        preds[i].digit = (uint32_t)nn_argmax(probs + i * NN_CLASSES);
        preds[i].n_probabilities = NN_CLASSES;
        preds[i].probabilities = (float *)probs + i * NN_CLASSES;
        ptrs[i] = &preds[i];
    }
    out.model_version = p->model->version;
    out.n_predictions = pr->n_images;
    out.predictions = ptrs;
    resp.result_case = DADC__RESPONSE__RESULT_PREDICT;
    resp.predict = &out;
    handlers_reply_ok(p->conn, &resp, p->req->id);
out:
    free(preds);
    free(ptrs);
}

/* Gather the images of requests into one buffer; returns NULL on no
 * memory. images_of gives a request's images. */
static uint8_t *batch_gather_predict(pending_t *group, size_t n)
{
    uint8_t *images = malloc(n * NN_IMAGE_PIXELS), *dst = images;

    if (images == NULL)
        return NULL;
    for (pending_t *p = group; p != NULL; p = p->next) {
        const Dadc__PredictRequest *pr = p->req->predict;
        for (size_t i = 0; i < pr->n_images; i++) {
            memcpy(dst, pr->images[i].data, NN_IMAGE_PIXELS);
            dst += NN_IMAGE_PIXELS;
        }
    }
    return images;
}

/* Answer every request of group from probs (or with the error rc), and
 * free them. */
static void predict_group_reply(pending_t *group, const float *probs,
                                int rc)
{
    size_t off = 0;

    for (pending_t *p = group, *next; p != NULL; p = next) {
        next = p->next;
        if (rc != 0)
            handlers_reply_status(p->conn, p->req->id,
                                  DADC__STATUS_CODE__INTERNAL,
                                  "prediction failed: %s",
                                  dadc_strerror(rc));
        else
            predict_reply(p, probs + off * NN_CLASSES);
        off += p->req->predict->n_images;
        pending_free(p);
    }
}

/* A large batch runs on the thread pool with its own scratch, so the
 * loop keeps answering small requests meanwhile. The model is held by
 * the group's references and never changes. */
typedef struct predict_job {
    uv_work_t req;
    server_t *s;
    pending_t *group;
    model_ref_t *model;
    uint8_t *images;
    float *probs;
    size_t n;
    int rc;
} predict_job_t;

static void predict_work_cb(uv_work_t *req)
{
    predict_job_t *job = req->data;
    size_t max = job->s->cfg.max_predict_batch;
    nn_ctx_t *ctx = NULL;

    job->rc = nn_ctx_create(&ctx, job->model->model,
                            (int)(job->n < max ? job->n : max));
    if (job->rc == 0)
        job->rc = nn_predict(ctx, job->model->model, job->images, job->n,
                             job->probs);
    nn_ctx_free(ctx);
}

static void predict_after_cb(uv_work_t *req, int status)
{
    predict_job_t *job = req->data;
    server_t *s = job->s;

    (void)status;
    s->predict_jobs--;
    if (job->rc != 0)
        LOG(LOG_WARNING, "predict", "model version %u failed on %zu "
            "images: %s", job->model->version, job->n,
            dadc_strerror(job->rc));
    predict_group_reply(job->group, job->probs, job->rc);
    free(job->images);
    free(job->probs);
    free(job);
    server_maybe_finish(s);
}

/* One nn_predict for every request in group (all for model m): on the
 * loop for small batches, on the thread pool for large ones. */
static void batch_predict_group(server_t *s, pending_t *group, size_t n)
{
    model_ref_t *m = group->model;
    uint8_t *images = batch_gather_predict(group, n);
    float *probs = malloc(n * NN_CLASSES * sizeof(float));
    predict_job_t *job = NULL;
    int rc = -ENOMEM;

    if (images != NULL && probs != NULL && n > BATCH_ON_LOOP_MAX)
        job = calloc(1, sizeof(*job));
    if (job != NULL) {
        *job = (predict_job_t){.s = s, .group = group, .model = m,
                               .images = images, .probs = probs, .n = n};
        job->req.data = job;
        s->predict_jobs++;
        uv_queue_work(s->loop, &job->req, predict_work_cb,
                      predict_after_cb);
        return;
    }

    if (images != NULL && probs != NULL)
        rc = batch_infer(s, m, images, n, probs);
    if (rc != 0)
        LOG(LOG_WARNING, "predict", "model version %u failed on %zu "
            "images: %s", m->version, n, dadc_strerror(rc));
    predict_group_reply(group, probs, rc);
    free(images);
    free(probs);
}

/* Answer every queued Predict, one model call per version. */
static void batch_predicts(server_t *s)
{
    pending_t *todo = list_take(&s->predicts);

    while (todo != NULL) {
        model_ref_t *m = todo->model;
        pending_t *group = NULL, **gtail = &group;
        pending_t *rest = NULL, **rtail = &rest;
        size_t n = 0;

        /* Split off the requests for m, keeping their order. */
        for (pending_t *p = todo, *next; p != NULL; p = next) {
            next = p->next;
            p->next = NULL;
            if (p->model == m) {
                *gtail = p;
                gtail = &p->next;
                n += p->req->predict->n_images;
            } else {
                *rtail = p;
                rtail = &p->next;
            }
        }
        todo = rest;
        batch_predict_group(s, group, n);
    }
}

/* On the pool: the server's own predictions by the job's model, then
 * one transaction for all of the examples. */
static int flag_job_predict(flag_job_t *job)
{
    size_t max = job->s->cfg.max_predict_batch;
    uint8_t *images = malloc(job->n * NN_IMAGE_PIXELS);
    float *probs = malloc(job->n * NN_CLASSES * sizeof(float));
    nn_ctx_t *ctx = NULL;
    int rc = -ENOMEM;

    if (images != NULL && probs != NULL)
        rc = nn_ctx_create(&ctx, job->model->model,
                           (int)(job->n < max ? job->n : max));
    if (rc == 0) {
        for (size_t i = 0; i < job->n; i++)
            memcpy(images + i * NN_IMAGE_PIXELS, job->ex[i].image,
                   NN_IMAGE_PIXELS);
        rc = nn_predict(ctx, job->model->model, images, job->n, probs);
    }
    for (size_t i = 0; rc == 0 && i < job->n; i++) {
        job->ex[i].predicted = (uint8_t)nn_argmax(probs + i * NN_CLASSES);
        job->ex[i].model_version = job->model->version;
    }
    nn_ctx_free(ctx);
    free(images);
    free(probs);
    return rc;
}

static void flag_work_cb(uv_work_t *req)
{
    flag_job_t *job = req->data;

    job->rc = flag_job_predict(job);
    if (job->rc != 0) {
        dadc_error_set(&job->err, job->rc, "prediction failed: %s",
                       dadc_strerror(job->rc));
        return;
    }
    job->rc = store_examples_put(job->s->store, job->ex, job->n, &job->err);
}

static void flag_reply(server_t *s, pending_t *p, const store_example_t *ex,
                       bool round_started)
{
    size_t k = p->req->flag->n_items;
    Dadc__Response resp = DADC__RESPONSE__INIT;
    Dadc__FlagResponse out = DADC__FLAG_RESPONSE__INIT;
    Dadc__FlagResult *res = calloc(k, sizeof(*res));
    Dadc__FlagResult **ptrs = calloc(k, sizeof(*ptrs));

    if (res == NULL || ptrs == NULL) {
        handlers_reply_status(p->conn, p->req->id,
                              DADC__STATUS_CODE__RESOURCE_EXHAUSTED,
                              "stored, but out of memory for the answer");
        goto out;
    }
    for (size_t i = 0; i < k; i++) {
        dadc__flag_result__init(&res[i]);
        res[i].example_id = ex[i].id;
        res[i].predicted = ex[i].predicted;
        res[i].fooled = ex[i].fooled;
        res[i].heldout = ex[i].heldout;
        ptrs[i] = &res[i];
    }
    out.model_version = k > 0 ? ex[0].model_version : 0;
    out.n_results = k;
    out.results = ptrs;
    out.pending_fooled = rounds_pending_fooled(s);
    out.round_threshold = s->cfg.round_threshold;
    out.round_started = round_started;
    resp.result_case = DADC__RESPONSE__RESULT_FLAG;
    resp.flag = &out;
    handlers_reply_ok(p->conn, &resp, p->req->id);
out:
    free(res);
    free(ptrs);
}

static void batch_flags_commit(server_t *s);

static void flag_after_cb(uv_work_t *req, int status)
{
    flag_job_t *job = req->data;
    server_t *s = job->s;
    bool started = false;
    size_t off = 0;

    (void)status;
    s->flag_job = NULL;
    if (job->rc == 0) {
        for (size_t i = 0; i < job->n; i++)
            stats_add(s->stats, &job->ex[i]);
        started = rounds_maybe_start(s);
    } else {
        LOG(LOG_ERROR, "store", "storing %zu flagged examples failed: %s",
            job->n, dadc_error_message(&job->err));
    }

    for (pending_t *p = job->items, *next; p != NULL; p = next) {
        next = p->next;
        if (job->rc != 0)
            handlers_reply_status(p->conn, p->req->id,
                                  DADC__STATUS_CODE__INTERNAL,
                                  "storing the examples failed (the "
                                  "server log has the details)");
        else
            flag_reply(s, p, job->ex + off, started);
        off += p->req->flag->n_items;
        pending_free(p);
    }
    free(job->ex);
    model_unref(job->model);
    free(job);
    batch_flags_commit(s);
    server_maybe_finish(s);
}

/* Copy the waiting flags into store records for one commit. */
static int flag_job_fill(flag_job_t *job, pending_t *items, size_t n)
{
    size_t off = 0;

    job->ex = calloc(n, sizeof(*job->ex));
    if (job->ex == NULL)
        return -ENOMEM;
    job->n = n;
    job->items = items;
    for (pending_t *p = items; p != NULL; p = p->next) {
        const Dadc__FlagRequest *fr = p->req->flag;
        for (size_t i = 0; i < fr->n_items; i++, off++) {
            store_example_t *e = &job->ex[off];
            memcpy(e->image, fr->items[i]->image.data, STORE_IMAGE_BYTES);
            e->label = (uint8_t)fr->items[i]->label;
            memcpy(e->annotator, p->annotator, sizeof(e->annotator));
        }
    }
    return 0;
}

/* Start committing the waiting flags unless a commit is running. */
static void batch_flags_commit(server_t *s)
{
    flag_job_t *job;
    size_t n = 0;
    pending_t *items;

    if (s->flag_job != NULL || s->flags.count == 0 || s->current == NULL)
        return;
    for (pending_t *p = s->flags.head; p != NULL; p = p->next)
        n += p->req->flag->n_items;
    job = calloc(1, sizeof(*job));
    if (job == NULL)
        return;
    job->s = s;
    job->model = model_ref(s->current);
    items = list_take(&s->flags);
    if (flag_job_fill(job, items, n) != 0) {
        job->rc = dadc_error_set(&job->err, -ENOMEM, "out of memory");
        job->req.data = job;
        flag_after_cb(&job->req, 0);
        return;
    }
    job->req.data = job;
    s->flag_job = job;
    uv_queue_work(s->loop, &job->req, flag_work_cb, flag_after_cb);
}

void batch_run(server_t *s)
{
    if (s->predicts.count > 0)
        batch_predicts(s);
    batch_flags_commit(s);
}
