/*
 * Model files in the safetensors format: an 8-byte little-endian header
 * length, a JSON header naming each tensor's dtype, shape and byte range,
 * then the raw tensor data. Everything read is checked before use: the
 * file comes from outside.
 */
#include "nn_internal.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_MAX_HEADER ((uint64_t)16 << 20)
#define ST_MAX_TENSORS 1024
#define ST_MAX_FILE ((off_t)1 << 30)

/* ------------------------------------------------------------------ */
/* Metadata */

int nn_meta_set(nn_meta_t *meta, const char *key, const char *value)
{
    nn_meta_item_t *it = NULL;

    if (strlen(key) >= sizeof(it->key) || strlen(value) >= sizeof(it->value))
        return DADC_ELIMIT;
    for (int i = 0; i < meta->count; i++)
        if (strcmp(meta->items[i].key, key) == 0)
            it = &meta->items[i];
    if (it == NULL) {
        if (meta->count >= NN_META_MAX)
            return DADC_ELIMIT;
        it = &meta->items[meta->count++];
    }
    snprintf(it->key, sizeof(it->key), "%s", key);
    snprintf(it->value, sizeof(it->value), "%s", value);
    return 0;
}

const char *nn_meta_get(const nn_meta_t *meta, const char *key)
{
    for (int i = 0; i < meta->count; i++)
        if (strcmp(meta->items[i].key, key) == 0)
            return meta->items[i].value;
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Writing */

/* Add "name": {dtype, shape, data_offsets} for one tensor. */
static int header_add_tensor(cJSON *h, const char *layer, const char *part,
                             const int *shape, int ndim, size_t begin,
                             size_t end)
{
    char name[NN_NAME_MAX + 16];
    cJSON *t = cJSON_CreateObject(), *sh, *off;

    if (t == NULL)
        return -ENOMEM;
    snprintf(name, sizeof(name), "%s.%s", layer, part);
    cJSON_AddItemToObject(h, name, t);
    if (cJSON_AddStringToObject(t, "dtype", "F32") == NULL ||
        (sh = cJSON_AddArrayToObject(t, "shape")) == NULL ||
        (off = cJSON_AddArrayToObject(t, "data_offsets")) == NULL)
        return -ENOMEM;
    for (int i = 0; i < ndim; i++)
        cJSON_AddItemToArray(sh, cJSON_CreateNumber(shape[i]));
    cJSON_AddItemToArray(off, cJSON_CreateNumber((double)begin));
    cJSON_AddItemToArray(off, cJSON_CreateNumber((double)end));
    return 0;
}

static int header_add_meta(cJSON *h, const nn_model_t *m,
                           const nn_meta_t *meta)
{
    cJSON *md = cJSON_AddObjectToObject(h, "__metadata__");
    char *layers = nn_layers_to_json(m->layers, m->nlayers);

    if (md == NULL || layers == NULL) {
        free(layers);
        return -ENOMEM;
    }
    cJSON_AddStringToObject(md, "layers", layers);
    free(layers);
    for (int i = 0; meta != NULL && i < meta->count; i++)
        if (strcmp(meta->items[i].key, "layers") != 0)
            cJSON_AddStringToObject(md, meta->items[i].key,
                                    meta->items[i].value);
    return 0;
}

static char *header_build(const nn_model_t *m, const nn_meta_t *meta)
{
    cJSON *h = cJSON_CreateObject();
    char *s = NULL;

    if (h == NULL || header_add_meta(h, m, meta) < 0)
        goto done;
    for (int i = 0; i < m->nlayers; i++) {
        const nn_layer_spec_t *l = &m->layers[i];
        int ws[4] = {l->out, l->in, l->k, l->k};
        int nd = l->kind == NN_CONV2D ? 4 : 2;
        size_t wo = m->w_off[i] * 4, bo = m->b_off[i] * 4;

        if (m->w_count[i] == 0)
            continue;
        if (header_add_tensor(h, l->name, "weight", ws, nd, wo,
                              wo + m->w_count[i] * 4) < 0 ||
            header_add_tensor(h, l->name, "bias", &l->out, 1, bo,
                              bo + m->b_count[i] * 4) < 0)
            goto done;
    }
    s = cJSON_PrintUnformatted(h);

done:
    cJSON_Delete(h);
    return s;
}

static void put_f32le(uint8_t *p, float v)
{
    uint32_t u;

    memcpy(&u, &v, 4);
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(u >> (8 * i));
}

static float get_f32le(const uint8_t *p)
{
    uint32_t u = 0;
    float v;

    for (int i = 0; i < 4; i++)
        u |= (uint32_t)p[i] << (8 * i);
    memcpy(&v, &u, 4);
    return v;
}

int nn_model_to_safetensors(const nn_model_t *m, const nn_meta_t *meta,
                            uint8_t **buf, size_t *len)
{
    char *json = header_build(m, meta);
    size_t hlen, total;
    uint8_t *b;

    *buf = NULL;
    *len = 0;
    if (json == NULL)
        return -ENOMEM;

    /* the header is padded with spaces so the data starts 8-aligned */
    hlen = (strlen(json) + 7) / 8 * 8;
    total = 8 + hlen + m->nparams * 4;
    b = malloc(total);
    if (b == NULL) {
        free(json);
        return -ENOMEM;
    }
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    memset(b + 8, ' ', hlen);
    memcpy(b + 8, json, strlen(json));
    free(json);
    for (size_t j = 0; j < m->nparams; j++)
        put_f32le(b + 8 + hlen + 4 * j, m->params[j]);
    *buf = b;
    *len = total;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Reading */

typedef struct st_entry {
    const char *name;
    const char *dtype;
    int ndim;
    int64_t shape[8];
    uint64_t begin;
    uint64_t end;
    int used;
} st_entry_t;

/* A JSON number that is a whole number in [0, max]. */
static int json_uint(const cJSON *v, double max, uint64_t *out)
{
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > max ||
        v->valuedouble != floor(v->valuedouble))
        return -1;
    *out = (uint64_t)v->valuedouble;
    return 0;
}

static int entry_parse(const cJSON *t, uint64_t data_len, st_entry_t *e,
                       dadc_error_t *err)
{
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(t, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(t, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(t, "data_offsets");
    const cJSON *v;
    uint64_t u;

    e->name = t->string;
    if (!cJSON_IsObject(t) || !cJSON_IsString(dt) || !cJSON_IsArray(sh) ||
        !cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 ||
        cJSON_GetArraySize(sh) > 8)
        return dadc_error_set(err, DADC_EFORMAT,
                              "tensor '%.64s': needs dtype, shape (up to 8 "
                              "sizes) and two data_offsets",
                              t->string);
    e->dtype = dt->valuestring;
    e->ndim = 0;
    cJSON_ArrayForEach(v, sh)
    {
        if (json_uint(v, 1e15, &u) < 0)
            return dadc_error_set(err, DADC_EFORMAT,
                                  "tensor '%.64s': shape holds a value that "
                                  "is not a size",
                                  t->string);
        e->shape[e->ndim++] = (int64_t)u;
    }
    if (json_uint(cJSON_GetArrayItem(off, 0), 9e15, &e->begin) < 0 ||
        json_uint(cJSON_GetArrayItem(off, 1), 9e15, &e->end) < 0 ||
        e->begin > e->end || e->end > data_len)
        return dadc_error_set(err, DADC_EFORMAT,
                              "tensor '%.64s': data_offsets out of range "
                              "(data is %llu bytes)",
                              t->string, (unsigned long long)data_len);
    return 0;
}

static int entry_cmp(const void *a, const void *b)
{
    const st_entry_t *x = a, *y = b;

    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* Parse every tensor entry of the header and check for overlaps. */
static int entries_parse(const cJSON *h, uint64_t data_len, st_entry_t *es,
                         int *count, dadc_error_t *err)
{
    const cJSON *t;
    st_entry_t *sorted;
    int n = 0, rc;

    cJSON_ArrayForEach(t, h)
    {
        if (strcmp(t->string, "__metadata__") == 0)
            continue;
        if (n == ST_MAX_TENSORS)
            return dadc_error_set(err, DADC_ELIMIT,
                                  "more than %d tensors", ST_MAX_TENSORS);
        rc = entry_parse(t, data_len, &es[n], err);
        if (rc < 0)
            return rc;
        n++;
    }
    sorted = malloc(sizeof(*es) * (n ? n : 1));
    if (sorted == NULL)
        return dadc_error_set(err, -ENOMEM, "out of memory");
    memcpy(sorted, es, sizeof(*es) * n);
    qsort(sorted, n, sizeof(*sorted), entry_cmp);
    rc = 0;
    for (int i = 1; i < n && rc == 0; i++)
        if (sorted[i].begin < sorted[i - 1].end)
            rc = dadc_error_set(err, DADC_EFORMAT,
                                "tensors '%.64s' and '%.64s' overlap",
                                sorted[i - 1].name, sorted[i].name);
    free(sorted);
    *count = n;
    return rc;
}

static int meta_parse(const cJSON *h, nn_layer_spec_t *layers, int *nlayers,
                      nn_meta_t *meta, dadc_error_t *err)
{
    const cJSON *md = cJSON_GetObjectItemCaseSensitive(h, "__metadata__");
    const cJSON *v;

    *nlayers = 0;
    if (md == NULL)
        return 0;
    if (!cJSON_IsObject(md))
        return dadc_error_set(err, DADC_EFORMAT,
                              "__metadata__ is not an object");
    cJSON_ArrayForEach(v, md)
    {
        if (!cJSON_IsString(v))
            return dadc_error_set(err, DADC_EFORMAT,
                                  "__metadata__ '%.64s' is not a string",
                                  v->string);
        if (strcmp(v->string, "layers") == 0) {
            int rc = nn_layers_from_json(v->valuestring, layers,
                                         NN_MAX_LAYERS, nlayers, err);

            if (rc < 0)
                return rc;
        }

        /* metadata that does not fit is informational and skipped */
        if (meta != NULL)
            nn_meta_set(meta, v->string, v->valuestring);
    }
    return 0;
}

static st_entry_t *entry_find(st_entry_t *es, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(es[i].name, name) == 0)
            return &es[i];
    return NULL;
}

static void shape_text(char *out, size_t size, const int64_t *s, int nd)
{
    size_t at = 0;

    at += snprintf(out + at, size - at, "[");
    for (int i = 0; i < nd && at < size; i++)
        at += snprintf(out + at, size - at, "%s%lld", i ? "," : "",
                       (long long)s[i]);
    if (at < size)
        snprintf(out + at, size - at, "]");
}

/* Check one tensor the model needs and copy its data in. */
static int tensor_take(nn_model_t *m, st_entry_t *es, int n,
                       const char *name, const int64_t *shape, int nd,
                       float *dst, const uint8_t *data, dadc_error_t *err)
{
    st_entry_t *e = entry_find(es, n, name);
    size_t count = 1;
    char want[96], got[96];

    (void)m;
    if (e == NULL)
        return dadc_error_set(err, DADC_ENOTFOUND, "missing tensor '%s'",
                              name);
    e->used = 1;
    if (strcmp(e->dtype, "F32") != 0)
        return dadc_error_set(err, DADC_EDTYPE,
                              "tensor '%s': dtype %.16s, only F32 is "
                              "supported",
                              name, e->dtype);
    for (int i = 0; i < nd; i++)
        count *= (size_t)shape[i];
    if (e->ndim != nd || memcmp(e->shape, shape, sizeof(*shape) * nd)) {
        shape_text(want, sizeof(want), shape, nd);
        shape_text(got, sizeof(got), e->shape, e->ndim);
        return dadc_error_set(err, DADC_ESHAPE,
                              "tensor '%s': shape %s, the layer list needs "
                              "%s",
                              name, got, want);
    }
    if (e->end - e->begin != count * 4)
        return dadc_error_set(err, DADC_EFORMAT,
                              "tensor '%s': data_offsets span %llu bytes, "
                              "its shape needs %zu",
                              name, (unsigned long long)(e->end - e->begin),
                              count * 4);
    for (size_t j = 0; j < count; j++) {
        dst[j] = get_f32le(data + e->begin + 4 * j);
        if (!isfinite(dst[j]))
            return dadc_error_set(err, DADC_ERANGE,
                                  "tensor '%s': holds NaN or infinity",
                                  name);
    }
    return 0;
}

static int tensors_take(nn_model_t *m, st_entry_t *es, int n,
                        const uint8_t *data, dadc_error_t *err)
{
    char name[NN_NAME_MAX + 16];
    int rc;

    for (int i = 0; i < m->nlayers; i++) {
        const nn_layer_spec_t *l = &m->layers[i];
        int64_t ws[4] = {l->out, l->in, l->k, l->k}, bs[1] = {l->out};

        if (m->w_count[i] == 0)
            continue;
        snprintf(name, sizeof(name), "%s.weight", l->name);
        rc = tensor_take(m, es, n, name, ws, l->kind == NN_CONV2D ? 4 : 2,
                         m->params + m->w_off[i], data, err);
        if (rc < 0)
            return rc;
        snprintf(name, sizeof(name), "%s.bias", l->name);
        rc = tensor_take(m, es, n, name, bs, 1, m->params + m->b_off[i],
                         data, err);
        if (rc < 0)
            return rc;
    }
    for (int i = 0; i < n; i++)
        if (!es[i].used)
            return dadc_error_set(err, DADC_EFORMAT,
                                  "unexpected tensor '%.64s' (not in the "
                                  "layer list)",
                                  es[i].name);
    return 0;
}

static int header_open(const uint8_t *buf, size_t len, cJSON **out,
                       uint64_t *hlen, dadc_error_t *err)
{
    uint64_t h = 0;

    if (len < 8)
        return dadc_error_set(err, DADC_ETRUNC,
                              "%zu bytes: too short for a safetensors "
                              "header length",
                              len);
    for (int i = 0; i < 8; i++)
        h |= (uint64_t)buf[i] << (8 * i);
    if (h > len - 8)
        return dadc_error_set(err, DADC_ETRUNC,
                              "header length %llu runs past the end of the "
                              "%zu-byte file",
                              (unsigned long long)h, len);
    if (h > ST_MAX_HEADER)
        return dadc_error_set(err, DADC_ELIMIT,
                              "header of %llu bytes is over the %llu limit",
                              (unsigned long long)h,
                              (unsigned long long)ST_MAX_HEADER);
    *out = cJSON_ParseWithLength((const char *)buf + 8, (size_t)h);
    if (!cJSON_IsObject(*out)) {
        cJSON_Delete(*out);
        *out = NULL;
        return dadc_error_set(err, DADC_EFORMAT,
                              "header is not a JSON object");
    }
    *hlen = h;
    return 0;
}

int nn_model_from_safetensors(const uint8_t *buf, size_t len,
                              nn_model_t **out, nn_meta_t *meta_out,
                              dadc_error_t *err)
{
    nn_layer_spec_t layers[NN_MAX_LAYERS];
    st_entry_t *es = NULL;
    cJSON *h = NULL;
    nn_model_t *m = NULL;
    uint64_t hlen = 0;
    int nlayers, n = 0, rc;

    *out = NULL;
    if (meta_out != NULL)
        memset(meta_out, 0, sizeof(*meta_out));
    rc = header_open(buf, len, &h, &hlen, err);
    if (rc < 0)
        return rc;
    rc = meta_parse(h, layers, &nlayers, meta_out, err);
    if (rc < 0)
        goto fail_header;
    rc = nlayers ? nn_model_create(&m, layers, nlayers, err)
                 : nn_model_create(&m, nn_reference_layers,
                                   nn_reference_nlayers, err);
    if (rc < 0)
        goto fail_header;

    es = calloc(ST_MAX_TENSORS, sizeof(*es));
    if (es == NULL) {
        rc = dadc_error_set(err, -ENOMEM, "out of memory");
        goto fail_model;
    }
    rc = entries_parse(h, len - 8 - hlen, es, &n, err);
    if (rc < 0)
        goto fail_model;
    rc = tensors_take(m, es, n, buf + 8 + hlen, err);
    if (rc < 0)
        goto fail_model;
    free(es);
    cJSON_Delete(h);
    *out = m;
    return 0;

fail_model:
    free(es);
    nn_model_free(m);
fail_header:
    cJSON_Delete(h);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Files */

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);

        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int nn_model_save(const nn_model_t *m, const nn_meta_t *meta,
                  const char *path, dadc_error_t *err)
{
    char tmp[4096];
    uint8_t *buf;
    size_t len;
    int fd, rc;

    if (snprintf(tmp, sizeof(tmp), "%s.tmpXXXXXX", path) >= (int)sizeof(tmp))
        return dadc_error_set(err, DADC_ELIMIT, "%s: path too long", path);
    rc = nn_model_to_safetensors(m, meta, &buf, &len);
    if (rc < 0)
        return dadc_error_set(err, rc, "%s: out of memory", path);
    fd = mkstemp(tmp);
    if (fd < 0) {
        rc = dadc_error_set(err, -errno, "%s: %s", tmp, strerror(errno));
        goto fail_open;
    }
    rc = write_all(fd, buf, len);
    if (rc == 0 && fsync(fd) < 0)
        rc = -errno;
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) < 0)
        rc = -errno;
    if (rc < 0) {
        dadc_error_set(err, rc, "%s: %s", path, strerror(-rc));
        unlink(tmp);
    }

fail_open:
    free(buf);
    return rc;
}

static int read_file(const char *path, uint8_t **buf, size_t *len,
                     dadc_error_t *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    size_t at = 0;
    int rc = 0;

    if (fd < 0)
        return dadc_error_set(err, -errno, "%s: %s", path, strerror(errno));
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
        st.st_size > ST_MAX_FILE) {
        close(fd);
        return dadc_error_set(err, DADC_EFORMAT,
                              "%s: not a regular file of at most 1 GiB",
                              path);
    }
    *len = (size_t)st.st_size;
    *buf = malloc(*len ? *len : 1);
    if (*buf == NULL) {
        close(fd);
        return dadc_error_set(err, -ENOMEM, "%s: out of memory", path);
    }
    while (at < *len) {
        ssize_t r = read(fd, *buf + at, *len - at);

        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            rc = dadc_error_set(err, r < 0 ? -errno : DADC_ETRUNC,
                                "%s: read failed", path);
            break;
        }
        at += (size_t)r;
    }
    close(fd);
    if (rc < 0)
        free(*buf);
    return rc;
}

int nn_model_load(const char *path, nn_model_t **out, nn_meta_t *meta_out,
                  dadc_error_t *err)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc;

    *out = NULL;
    rc = read_file(path, &buf, &len, err);
    if (rc < 0)
        return rc;
    rc = nn_model_from_safetensors(buf, len, out, meta_out, err);
    free(buf);
    if (rc < 0 && err != NULL) {
        char msg[DADC_ERROR_MSG_MAX];

        snprintf(msg, sizeof(msg), "%s", err->msg);
        dadc_error_set(err, rc, "%.100s: %s", path, msg);
    }
    return rc;
}
