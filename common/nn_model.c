/*
 * Models: the layer list, its shape checks, the parameter allocation,
 * PyTorch's default initialisation, and the layer list as JSON.
 */
#include "nn_internal.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Refuse layer lists whose tensors would be absurdly large. */
#define NN_MAX_PARAMS ((size_t)64 << 20)
#define NN_MAX_ACT ((size_t)1 << 22)
#define NN_MAX_DIM 65536

const nn_layer_spec_t nn_reference_layers[] = {
    {NN_CONV2D, "conv1", 1, 10, 5, 0.0f},
    {NN_MAXPOOL2D, "pool1", 0, 0, 2, 0.0f},
    {NN_RELU, "relu1", 0, 0, 0, 0.0f},
    {NN_CONV2D, "conv2", 10, 20, 5, 0.0f},
    {NN_DROPOUT2D, "drop2", 0, 0, 0, 0.5f},
    {NN_MAXPOOL2D, "pool2", 0, 0, 2, 0.0f},
    {NN_RELU, "relu2", 0, 0, 0, 0.0f},
    {NN_FLATTEN, "flat", 0, 0, 0, 0.0f},
    {NN_LINEAR, "fc1", 320, 50, 0, 0.0f},
    {NN_RELU, "relu3", 0, 0, 0, 0.0f},
    {NN_DROPOUT, "drop3", 0, 0, 0, 0.5f},
    {NN_LINEAR, "fc2", 50, 10, 0, 0.0f},
    {NN_LOGSOFTMAX, "out", 0, 0, 0, 0.0f},
};
const int nn_reference_nlayers =
    (int)(sizeof(nn_reference_layers) / sizeof(nn_reference_layers[0]));

static const char *const kind_names[] = {
    [NN_CONV2D] = "conv2d",   [NN_MAXPOOL2D] = "maxpool2d",
    [NN_RELU] = "relu",       [NN_DROPOUT2D] = "dropout2d",
    [NN_DROPOUT] = "dropout", [NN_FLATTEN] = "flatten",
    [NN_LINEAR] = "linear",   [NN_LOGSOFTMAX] = "log_softmax",
};
#define NN_NKINDS ((int)(sizeof(kind_names) / sizeof(kind_names[0])))

size_t nn_shape_size(const nn_shape_t *s)
{
    return s->flat ? (size_t)s->c : (size_t)s->c * s->h * s->w;
}

/* ------------------------------------------------------------------ */
/* Shape checks */

static int check_spatial(const nn_layer_spec_t *l, int i,
                         const nn_shape_t *s, dadc_error_t *err)
{
    if (s->flat)
        return dadc_error_set(err, DADC_ESHAPE,
                              "layer %d (%s): needs a (C, H, W) input but "
                              "follows a flatten",
                              i, l->name);
    return 0;
}

static int shape_conv2d(const nn_layer_spec_t *l, int i, nn_shape_t *s,
                        dadc_error_t *err)
{
    if (check_spatial(l, i, s, err) < 0)
        return err ? err->code : DADC_ESHAPE;
    if (l->in != s->c)
        return dadc_error_set(err, DADC_ESHAPE,
                              "layer %d (%s): in=%d but the input has %d "
                              "channels",
                              i, l->name, l->in, s->c);
    if (l->out < 1 || l->out > NN_MAX_DIM || l->k < 1 || l->k > s->h ||
        l->k > s->w)
        return dadc_error_set(err, DADC_ERANGE,
                              "layer %d (%s): out=%d k=%d out of range for "
                              "a %dx%d input",
                              i, l->name, l->out, l->k, s->h, s->w);
    s->c = l->out;
    s->h -= l->k - 1;
    s->w -= l->k - 1;
    return 0;
}

static int shape_maxpool2d(const nn_layer_spec_t *l, int i, nn_shape_t *s,
                           dadc_error_t *err)
{
    if (check_spatial(l, i, s, err) < 0)
        return err ? err->code : DADC_ESHAPE;
    if (l->k < 1 || l->k > 15 || l->k > s->h || l->k > s->w)
        return dadc_error_set(err, DADC_ERANGE,
                              "layer %d (%s): window %d out of range "
                              "(1..15, at most the %dx%d input)",
                              i, l->name, l->k, s->h, s->w);
    s->h /= l->k;
    s->w /= l->k;
    return 0;
}

static int shape_linear(const nn_layer_spec_t *l, int i, nn_shape_t *s,
                        dadc_error_t *err)
{
    if (!s->flat)
        return dadc_error_set(err, DADC_ESHAPE,
                              "layer %d (%s): linear needs a flatten "
                              "before it",
                              i, l->name);
    if (l->in != s->c)
        return dadc_error_set(err, DADC_ESHAPE,
                              "layer %d (%s): in=%d but %d features come "
                              "in",
                              i, l->name, l->in, s->c);
    if (l->out < 1 || l->out > NN_MAX_DIM)
        return dadc_error_set(err, DADC_ERANGE,
                              "layer %d (%s): out=%d out of range", i,
                              l->name, l->out);
    s->c = l->out;
    return 0;
}

/* Advance shape s through layer i, checking that it fits. */
static int shape_step(const nn_layer_spec_t *l, int i, int nlayers,
                      nn_shape_t *s, dadc_error_t *err)
{
    switch (l->kind) {
    case NN_CONV2D:
        return shape_conv2d(l, i, s, err);
    case NN_MAXPOOL2D:
        return shape_maxpool2d(l, i, s, err);
    case NN_RELU:
        return 0;
    case NN_DROPOUT2D:
    case NN_DROPOUT:
        if (l->kind == NN_DROPOUT2D && check_spatial(l, i, s, err) < 0)
            return DADC_ESHAPE;
        if (!(l->p >= 0.0f && l->p < 1.0f))
            return dadc_error_set(err, DADC_ERANGE,
                                  "layer %d (%s): p=%g not in [0, 1)", i,
                                  l->name, (double)l->p);
        return 0;
    case NN_FLATTEN:
        if (check_spatial(l, i, s, err) < 0)
            return DADC_ESHAPE;
        s->c = s->c * s->h * s->w;
        s->h = s->w = 1;
        s->flat = 1;
        return 0;
    case NN_LINEAR:
        return shape_linear(l, i, s, err);
    case NN_LOGSOFTMAX:
        if (i != nlayers - 1 || !s->flat || s->c != NN_CLASSES)
            return dadc_error_set(err, DADC_ESHAPE,
                                  "layer %d (%s): log_softmax must be last, "
                                  "over %d features",
                                  i, l->name, NN_CLASSES);
        return 0;
    }
    return dadc_error_set(err, DADC_EFORMAT, "layer %d: unknown kind %d", i,
                          (int)l->kind);
}

static int check_name(const nn_model_t *m, int i, dadc_error_t *err)
{
    const nn_layer_spec_t *l = &m->layers[i];

    if (memchr(l->name, '\0', NN_NAME_MAX) == NULL || l->name[0] == '\0')
        return dadc_error_set(err, DADC_EFORMAT,
                              "layer %d: missing or overlong name", i);
    for (int j = 0; j < i; j++)
        if (m->w_count[j] > 0 && strcmp(m->layers[j].name, l->name) == 0)
            return dadc_error_set(err, DADC_EFORMAT,
                                  "layer %d: name '%s' used twice", i,
                                  l->name);
    return 0;
}

/* Fill shapes and parameter offsets of m from its layer list. */
static int model_plan(nn_model_t *m, dadc_error_t *err)
{
    nn_shape_t s = {1, NN_IMAGE_SIDE, NN_IMAGE_SIDE, 0};
    size_t off = 0;

    for (int i = 0; i < m->nlayers; i++) {
        const nn_layer_spec_t *l = &m->layers[i];
        int rc;

        m->in_shape[i] = s;
        rc = shape_step(l, i, m->nlayers, &s, err);
        if (rc < 0)
            return rc;
        if (nn_shape_size(&s) > NN_MAX_ACT)
            return dadc_error_set(err, DADC_ELIMIT,
                                  "layer %d (%s): activation too large", i,
                                  l->name);
        m->out_shape[i] = s;
        if (l->kind == NN_CONV2D || l->kind == NN_LINEAR) {
            size_t k2 = l->kind == NN_CONV2D ? (size_t)l->k * l->k : 1;

            m->w_off[i] = off;
            m->w_count[i] = (size_t)l->out * l->in * k2;
            m->b_off[i] = off + m->w_count[i];
            m->b_count[i] = (size_t)l->out;
            off += m->w_count[i] + m->b_count[i];
            if (off > NN_MAX_PARAMS)
                return dadc_error_set(err, DADC_ELIMIT,
                                      "layer %d (%s): too many parameters",
                                      i, l->name);
            rc = check_name(m, i, err);
            if (rc < 0)
                return rc;
        }
    }
    if (m->nlayers == 0 || m->layers[m->nlayers - 1].kind != NN_LOGSOFTMAX)
        return dadc_error_set(err, DADC_ESHAPE,
                              "the layer list must end in log_softmax");
    m->nparams = off;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Lifetime */

int nn_model_create(nn_model_t **out, const nn_layer_spec_t *layers,
                    int nlayers, dadc_error_t *err)
{
    nn_model_t *m;
    int rc;

    *out = NULL;
    if (nlayers < 1 || nlayers > NN_MAX_LAYERS)
        return dadc_error_set(err, DADC_ERANGE,
                              "%d layers (allowed 1..%d)", nlayers,
                              NN_MAX_LAYERS);
    m = calloc(1, sizeof(*m));
    if (m == NULL)
        return dadc_error_set(err, -ENOMEM, "out of memory");
    m->nlayers = nlayers;
    memcpy(m->layers, layers, sizeof(*layers) * nlayers);
    rc = model_plan(m, err);
    if (rc < 0)
        goto fail_plan;

    m->params = calloc(m->nparams ? m->nparams : 1, sizeof(float));
    if (m->params == NULL) {
        rc = dadc_error_set(err, -ENOMEM, "out of memory");
        goto fail_plan;
    }
    *out = m;
    return 0;

fail_plan:
    free(m);
    return rc;
}

int nn_model_create_reference(nn_model_t **out)
{
    return nn_model_create(out, nn_reference_layers, nn_reference_nlayers,
                           NULL);
}

void nn_model_free(nn_model_t *m)
{
    if (m == NULL)
        return;
    free(m->params);
    free(m);
}

nn_model_t *nn_model_clone(const nn_model_t *m)
{
    nn_model_t *c = malloc(sizeof(*c));

    if (c == NULL)
        return NULL;
    *c = *m;
    c->params = malloc(sizeof(float) * (m->nparams ? m->nparams : 1));
    if (c->params == NULL) {
        free(c);
        return NULL;
    }
    memcpy(c->params, m->params, sizeof(float) * m->nparams);
    return c;
}

const nn_layer_spec_t *nn_model_layers(const nn_model_t *m, int *nlayers)
{
    if (nlayers != NULL)
        *nlayers = m->nlayers;
    return m->layers;
}

size_t nn_model_nparams(const nn_model_t *m)
{
    return m->nparams;
}

float *nn_model_params(nn_model_t *m)
{
    return m->params;
}

const float *nn_model_params_const(const nn_model_t *m)
{
    return m->params;
}

/* ------------------------------------------------------------------ */
/* Initialisation */

void nn_rng_seed(nn_rng_t *r, uint64_t seed)
{
    /* splitmix64 spreads the seed over the four words */
    for (int i = 0; i < 4; i++) {
        uint64_t z = (seed += 0x9e3779b97f4a7c15ULL);

        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        r->s[i] = z ^ (z >> 31);
    }
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t nn_rng_next(nn_rng_t *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;

    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float nn_rng_uniform(nn_rng_t *r)
{
    return (float)(nn_rng_next(r) >> 40) * (1.0f / 16777216.0f);
}

void nn_model_init(nn_model_t *m, uint64_t seed)
{
    nn_rng_t r;

    nn_rng_seed(&r, seed);
    for (int i = 0; i < m->nlayers; i++) {
        const nn_layer_spec_t *l = &m->layers[i];

        if (m->w_count[i] == 0)
            continue;

        /* kaiming_uniform(a=sqrt(5)): gain sqrt(2/(1+5)), bound
         * gain*sqrt(3/fan_in) = 1/sqrt(fan_in); the bias uses the same */
        size_t fan_in = m->w_count[i] / (size_t)l->out;
        float bound = 1.0f / sqrtf((float)fan_in);
        float *w = m->params + m->w_off[i];
        float *b = m->params + m->b_off[i];

        for (size_t j = 0; j < m->w_count[i]; j++)
            w[j] = (2.0f * nn_rng_uniform(&r) - 1.0f) * bound;
        for (size_t j = 0; j < m->b_count[i]; j++)
            b[j] = (2.0f * nn_rng_uniform(&r) - 1.0f) * bound;
    }
}

/* ------------------------------------------------------------------ */
/* Layer list as JSON */

static cJSON *layer_to_json(const nn_layer_spec_t *l)
{
    cJSON *o = cJSON_CreateObject();

    if (o == NULL)
        return NULL;
    cJSON_AddStringToObject(o, "kind", kind_names[l->kind]);
    cJSON_AddStringToObject(o, "name", l->name);
    if (l->kind == NN_CONV2D || l->kind == NN_LINEAR) {
        cJSON_AddNumberToObject(o, "in", l->in);
        cJSON_AddNumberToObject(o, "out", l->out);
    }
    if (l->kind == NN_CONV2D || l->kind == NN_MAXPOOL2D)
        cJSON_AddNumberToObject(o, "k", l->k);
    if (l->kind == NN_DROPOUT || l->kind == NN_DROPOUT2D)
        cJSON_AddNumberToObject(o, "p", l->p);
    return o;
}

char *nn_layers_to_json(const nn_layer_spec_t *layers, int nlayers)
{
    cJSON *arr = cJSON_CreateArray();
    char *s;

    if (arr == NULL)
        return NULL;
    for (int i = 0; i < nlayers; i++) {
        cJSON *o;

        if ((int)layers[i].kind < 0 || (int)layers[i].kind >= NN_NKINDS)
            goto fail;
        o = layer_to_json(&layers[i]);
        if (o == NULL)
            goto fail;
        cJSON_AddItemToArray(arr, o);
    }
    s = cJSON_PrintUnformatted(arr);
    cJSON_Delete(arr);
    return s;

fail:
    cJSON_Delete(arr);
    return NULL;
}

/* An integer field 1..NN_MAX_DIM of layer i. */
static int json_int(const cJSON *o, const char *key, int i, int *out,
                    dadc_error_t *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) ||
        v->valuedouble < 1 || v->valuedouble > NN_MAX_DIM)
        return dadc_error_set(err, DADC_EFORMAT,
                              "layer %d: \"%s\" missing or not an integer "
                              "in 1..%d",
                              i, key, NN_MAX_DIM);
    *out = (int)v->valuedouble;
    return 0;
}

static int json_kind(const cJSON *o, int i, nn_layer_spec_t *l,
                     dadc_error_t *err)
{
    const cJSON *kind = cJSON_GetObjectItemCaseSensitive(o, "kind");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(o, "name");

    if (!cJSON_IsString(kind))
        return dadc_error_set(err, DADC_EFORMAT,
                              "layer %d: \"kind\" missing", i);
    for (int k = 0; k < NN_NKINDS; k++)
        if (strcmp(kind->valuestring, kind_names[k]) == 0)
            l->kind = (nn_layer_kind_t)k;
    if (strcmp(kind->valuestring, kind_names[l->kind]) != 0)
        return dadc_error_set(err, DADC_EFORMAT,
                              "layer %d: unknown kind \"%.40s\"", i,
                              kind->valuestring);
    if (name != NULL && !cJSON_IsString(name))
        return dadc_error_set(err, DADC_EFORMAT,
                              "layer %d: \"name\" is not a string", i);
    if (name != NULL && strlen(name->valuestring) >= NN_NAME_MAX)
        return dadc_error_set(err, DADC_EFORMAT,
                              "layer %d: name longer than %d bytes", i,
                              NN_NAME_MAX - 1);
    snprintf(l->name, sizeof(l->name), "%s",
             name ? name->valuestring : kind_names[l->kind]);
    return 0;
}

static int layer_from_json(const cJSON *o, int i, nn_layer_spec_t *l,
                           dadc_error_t *err)
{
    int rc;

    memset(l, 0, sizeof(*l));
    if (!cJSON_IsObject(o))
        return dadc_error_set(err, DADC_EFORMAT,
                              "layer %d: not an object", i);
    rc = json_kind(o, i, l, err);
    if (rc < 0)
        return rc;
    if (l->kind == NN_CONV2D || l->kind == NN_LINEAR) {
        if ((rc = json_int(o, "in", i, &l->in, err)) < 0 ||
            (rc = json_int(o, "out", i, &l->out, err)) < 0)
            return rc;
    }
    if (l->kind == NN_CONV2D || l->kind == NN_MAXPOOL2D) {
        if ((rc = json_int(o, "k", i, &l->k, err)) < 0)
            return rc;
    }
    if (l->kind == NN_DROPOUT || l->kind == NN_DROPOUT2D) {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "p");

        if (!cJSON_IsNumber(p) || !(p->valuedouble >= 0.0) ||
            !(p->valuedouble < 1.0))
            return dadc_error_set(err, DADC_EFORMAT,
                                  "layer %d: \"p\" missing or not in [0, 1)",
                                  i);
        l->p = (float)p->valuedouble;
    }
    return 0;
}

int nn_layers_from_json(const char *json, nn_layer_spec_t *layers,
                        int max_layers, int *nlayers, dadc_error_t *err)
{
    cJSON *arr = cJSON_Parse(json);
    int n, rc = 0;

    *nlayers = 0;
    if (!cJSON_IsArray(arr)) {
        rc = dadc_error_set(err, DADC_EFORMAT,
                            "layer list: not a JSON array");
        goto done;
    }
    n = cJSON_GetArraySize(arr);
    if (n < 1 || n > max_layers || n > NN_MAX_LAYERS) {
        rc = dadc_error_set(err, DADC_ERANGE,
                            "layer list: %d layers (allowed 1..%d)", n,
                            max_layers < NN_MAX_LAYERS ? max_layers
                                                       : NN_MAX_LAYERS);
        goto done;
    }
    for (int i = 0; i < n; i++) {
        rc = layer_from_json(cJSON_GetArrayItem(arr, i), i, &layers[i], err);
        if (rc < 0)
            goto done;
    }
    *nlayers = n;

done:
    cJSON_Delete(arr);
    return rc;
}
