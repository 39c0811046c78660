/*
 * The serving model and a few older versions kept loaded for Predict
 * calls that name one. Models are shared by reference: the server holds
 * the current one, the cache holds recent others, a running round holds
 * the one it fine-tunes, each queued Predict the one it asked for. All
 * on the loop thread; a worker only reads a model it holds a reference
 * to, and models never change once loaded.
 */
#include <errno.h>
#include <stdlib.h>

#include "log.h"
#include "server.h"

#define MODELS_CACHE_MAX 4

model_ref_t *models_wrap(nn_model_t *m, uint32_t version, double acc)
{
    model_ref_t *r = calloc(1, sizeof(*r));

    if (r == NULL)
        return NULL;
    r->model = m;
    r->version = version;
    r->mnist_accuracy = acc;
    r->refs = 1;
    return r;
}

model_ref_t *model_ref(model_ref_t *r)
{
    r->refs++;
    return r;
}

void model_unref(model_ref_t *r)
{
    if (r == NULL || --r->refs > 0)
        return;
    nn_ctx_free(r->ctx);
    nn_model_free(r->model);
    free(r);
}

void models_set_current(server_t *s, model_ref_t *r)
{
    model_ref_t *old = s->current;

    s->current = r;
    model_unref(old);
}

/* Read a version's weights and figures from the store. */
static int models_load(server_t *s, uint32_t version, model_ref_t **out,
                       dadc_error_t *err)
{
    Dadc__ModelInfo *info = NULL;
    nn_model_t *m = NULL;
    uint8_t *st = NULL;
    size_t len = 0;
    double acc = -1;
    int rc;

    rc = store_model_get(s->store, version, &info, err);
    if (rc != 0)
        return rc;
    acc = info->mnist_test_accuracy > 0 ? info->mnist_test_accuracy : -1;
    dadc__model_info__free_unpacked(info, NULL);

    rc = store_weights_get(s->store, version, &st, &len, err);
    if (rc == 0)
        rc = nn_model_from_safetensors(st, len, &m, NULL, err);
    free(st);
    if (rc != 0)
        return rc;
    *out = models_wrap(m, version, acc);
    if (*out == NULL) {
        nn_model_free(m);
        return dadc_error_set(err, -ENOMEM, "out of memory");
    }
    return 0;
}

/* Keep r in the cache, dropping the least recently used beyond the
 * limit. */
static void models_cache_add(server_t *s, model_ref_t *r)
{
    model_ref_t **p, **oldest = NULL;
    int n = 0;

    r->next = s->cache;
    s->cache = model_ref(r);
    for (p = &s->cache; *p != NULL; p = &(*p)->next) {
        n++;
        if (oldest == NULL || (*p)->last_used_ms < (*oldest)->last_used_ms)
            oldest = p;
    }
    if (n > MODELS_CACHE_MAX && oldest != NULL) {
        model_ref_t *victim = *oldest;
        *oldest = victim->next;
        model_unref(victim);
    }
}

int models_get(server_t *s, uint32_t version, model_ref_t **out,
               dadc_error_t *err)
{
    uint64_t now = uv_now(s->loop);
    int rc;

    if (s->current != NULL &&
        (version == 0 || version == s->current->version)) {
        *out = model_ref(s->current);
        return 0;
    }
    if (version == 0)
        return dadc_error_set(err, DADC_ENOTFOUND, "no model loaded");
    for (model_ref_t *r = s->cache; r != NULL; r = r->next) {
        if (r->version == version) {
            r->last_used_ms = now;
            *out = model_ref(r);
            return 0;
        }
    }

    rc = models_load(s, version, out, err);
    if (rc == DADC_ENOTFOUND)
        return dadc_error_set(err, rc, "no model version %u", version);
    if (rc != 0)
        return rc;
    (*out)->last_used_ms = now;
    models_cache_add(s, *out);
    LOG(LOG_DEBUG, "models", "version %u loaded for Predict", version);
    return 0;
}

int models_load_current(server_t *s, dadc_error_t *err)
{
    store_counters_t ctr;
    model_ref_t *r;
    int rc;

    rc = store_counters_get(s->store, &ctr, err);
    if (rc != 0)
        return rc;
    if (ctr.current_version == 0)
        return dadc_error_set(err, DADC_ENOTFOUND, "the store has no "
                              "current model");
    rc = models_load(s, ctr.current_version, &r, err);
    if (rc != 0)
        return rc;
    models_set_current(s, r);
    return 0;
}

void models_free(server_t *s)
{
    while (s->cache != NULL) {
        model_ref_t *r = s->cache;
        s->cache = r->next;
        model_unref(r);
    }
    models_set_current(s, NULL);
}
