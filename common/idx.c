#include "idx.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fileio.h"

#define IDX_TYPE_UBYTE 0x08
#define IDX_FILE_MAX ((size_t)1 << 34)  /* 16 GiB: far above MNIST */

static uint32_t idx_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
           ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static void idx_be32_put(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Describe dims as "60000 x 28 x 28" for messages. */
static void idx_dims_format(const uint32_t *dims, int ndim, char *s,
                            size_t n)
{
    size_t used = 0;

    s[0] = '\0';
    for (int i = 0; i < ndim && used < n; i++) {
        int w = snprintf(s + used, n - used, "%s%u", i ? " x " : "",
                         (unsigned)dims[i]);

        if (w < 0)
            break;
        used += (size_t)w;
    }
}

/*
 * Check the magic and the sizes, and fill the shape fields of out (not
 * data). *header_len gets the header's size, *data_len the data bytes
 * the header announces.
 */
static int idx_header_parse(const uint8_t *buf, size_t len,
                            const char *name, idx_file_t *out,
                            size_t *header_len, size_t *data_len,
                            dadc_error_t *err)
{
    char shape[64];
    int ndim;

    if (len < 4)
        return dadc_error_set(err, DADC_ETRUNC,
                              "%s: truncated: %zu bytes, too short for "
                              "the IDX magic", name, len);
    if (buf[0] != 0 || buf[1] != 0)
        return dadc_error_set(err, DADC_EFORMAT,
                              "%s: bad magic %02x %02x %02x %02x: not an "
                              "IDX file", name, buf[0], buf[1], buf[2],
                              buf[3]);
    if (buf[2] != IDX_TYPE_UBYTE)
        return dadc_error_set(err, DADC_EDTYPE,
                              "%s: data type 0x%02x is not unsigned byte "
                              "(0x08)", name, buf[2]);
    ndim = buf[3];
    if (ndim < 1 || ndim > IDX_MAX_DIMS)
        return dadc_error_set(err, DADC_EFORMAT,
                              "%s: %d dimensions (1 to %d supported)", name,
                              ndim, IDX_MAX_DIMS);
    if (len < 4 + 4 * (size_t)ndim)
        return dadc_error_set(err, DADC_ETRUNC,
                              "%s: truncated: header needs %d bytes, file "
                              "has %zu", name, 4 + 4 * ndim, len);

    memset(out, 0, sizeof(*out));
    out->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        out->dims[i] = idx_be32(buf + 4 + 4 * i);
    out->count = out->dims[0];
    out->item_size = 1;
    idx_dims_format(out->dims, ndim, shape, sizeof(shape));
    for (int i = 1; i < ndim; i++) {
        if (__builtin_mul_overflow(out->item_size, (size_t)out->dims[i],
                                   &out->item_size))
            return dadc_error_set(err, DADC_ELIMIT,
                                  "%s: sizes %s overflow", name, shape);
    }
    if (__builtin_mul_overflow(out->count, out->item_size, data_len))
        return dadc_error_set(err, DADC_ELIMIT, "%s: sizes %s overflow",
                              name, shape);
    *header_len = 4 + 4 * (size_t)ndim;
    return 0;
}

/* Compare the data the header announces with what is there. */
static int idx_length_check(const idx_file_t *f, size_t have, size_t want,
                            const char *name, dadc_error_t *err)
{
    if (have < want)
        return dadc_error_set(err, DADC_ETRUNC,
                              "%s: truncated: header says %zu items of %zu "
                              "bytes, file has %zu bytes of data", name,
                              f->count, f->item_size, have);
    if (have > want)
        return dadc_error_set(err, DADC_EFORMAT,
                              "%s: %zu bytes of data after the %zu the "
                              "header describes (%zu items of %zu bytes)",
                              name, have - want, want, f->count,
                              f->item_size);
    return 0;
}

int idx_parse(const uint8_t *buf, size_t len, const char *name,
              idx_file_t *out, dadc_error_t *err)
{
    size_t hlen = 0, dlen = 0;
    int rc;

    memset(out, 0, sizeof(*out));
    rc = idx_header_parse(buf, len, name, out, &hlen, &dlen, err);
    if (rc < 0)
        return rc;
    rc = idx_length_check(out, len - hlen, dlen, name, err);
    if (rc < 0)
        return rc;

    /* malloc(0) may return NULL; keep data non-NULL for empty files. */
    out->data = malloc(dlen ? dlen : 1);
    if (out->data == NULL)
        return dadc_error_set(err, -ENOMEM, "%s: out of memory for %zu "
                              "bytes", name, dlen);
    if (dlen > 0)
        memcpy(out->data, buf + hlen, dlen);
    return 0;
}

int idx_load(const char *path, idx_file_t *out, dadc_error_t *err)
{
    uint8_t *buf, *data;
    size_t len, hlen = 0, dlen = 0;
    int rc;

    memset(out, 0, sizeof(*out));
    rc = dadc_file_read(path, IDX_FILE_MAX, &buf, &len, err);
    if (rc < 0)
        return rc;
    rc = idx_header_parse(buf, len, path, out, &hlen, &dlen, err);
    if (rc < 0)
        goto fail_check;
    rc = idx_length_check(out, len - hlen, dlen, path, err);
    if (rc < 0)
        goto fail_check;

    /* Reuse the read buffer: slide the data over the header. */
    memmove(buf, buf + hlen, dlen);
    data = realloc(buf, dlen ? dlen : 1);
    out->data = data ? data : buf;
    return 0;

fail_check:
    free(buf);
    memset(out, 0, sizeof(*out));
    return rc;
}

void idx_free(idx_file_t *f)
{
    if (f == NULL)
        return;
    free(f->data);
    memset(f, 0, sizeof(*f));
}

int idx_save(const char *path, const uint8_t *data, size_t count,
             const uint32_t *dims, int ndim, dadc_error_t *err)
{
    uint8_t header[4 + 4 * IDX_MAX_DIMS];
    dadc_file_part_t parts[2];
    size_t total = count;

    if (ndim < 1 || ndim > IDX_MAX_DIMS)
        return dadc_error_set(err, DADC_ERANGE,
                              "%s: %d dimensions (1 to %d supported)", path,
                              ndim, IDX_MAX_DIMS);
    if (count > UINT32_MAX)
        return dadc_error_set(err, DADC_ERANGE,
                              "%s: %zu items do not fit an IDX header",
                              path, count);
    for (int i = 1; i < ndim; i++) {
        if (__builtin_mul_overflow(total, (size_t)dims[i], &total))
            return dadc_error_set(err, DADC_ELIMIT, "%s: sizes overflow",
                                  path);
    }
    if (total > 0 && data == NULL)
        return dadc_error_set(err, DADC_ERANGE, "%s: no data", path);

    header[0] = 0;
    header[1] = 0;
    header[2] = IDX_TYPE_UBYTE;
    header[3] = (uint8_t)ndim;
    idx_be32_put(header + 4, (uint32_t)count);
    for (int i = 1; i < ndim; i++)
        idx_be32_put(header + 4 + 4 * i, dims[i]);
    parts[0].data = header;
    parts[0].len = 4 + 4 * (size_t)ndim;
    parts[1].data = data;
    parts[1].len = total;
    return dadc_file_write_atomic(path, parts, 2, err);
}

int idx_check_images(const idx_file_t *f, const char *name,
                     dadc_error_t *err)
{
    char shape[64];

    if (f->ndim == 3 && f->dims[1] == 28 && f->dims[2] == 28)
        return 0;
    idx_dims_format(f->dims, f->ndim, shape, sizeof(shape));
    return dadc_error_set(err, DADC_ESHAPE,
                          "%s: images are %s, not N x 28 x 28", name,
                          shape);
}

int idx_check_labels(const idx_file_t *f, size_t count, const char *name,
                     dadc_error_t *err)
{
    if (f->ndim != 1)
        return dadc_error_set(err, DADC_ESHAPE,
                              "%s: labels have %d dimensions, not 1", name,
                              f->ndim);
    if (f->count != count)
        return dadc_error_set(err, DADC_ESHAPE,
                              "%s: %zu labels for %zu images", name,
                              f->count, count);
    for (size_t i = 0; i < f->count; i++) {
        if (f->data[i] > 9)
            return dadc_error_set(err, DADC_ERANGE,
                                  "%s: label %u at item %zu is not a "
                                  "digit 0..9", name, f->data[i], i);
    }
    return 0;
}

/* Load one images file and its labels file from dir, checked. */
static int mnist_pair_load(const char *dir, const char *images_name,
                           const char *labels_name, idx_file_t *images,
                           idx_file_t *labels, dadc_error_t *err)
{
    char path[4096];
    int rc;

    snprintf(path, sizeof(path), "%s/%s", dir, images_name);
    rc = idx_load(path, images, err);
    if (rc < 0)
        return rc;
    rc = idx_check_images(images, path, err);
    if (rc < 0)
        goto fail_images;

    snprintf(path, sizeof(path), "%s/%s", dir, labels_name);
    rc = idx_load(path, labels, err);
    if (rc < 0)
        goto fail_images;
    rc = idx_check_labels(labels, images->count, path, err);
    if (rc < 0)
        goto fail_labels;
    return 0;

fail_labels:
    idx_free(labels);
fail_images:
    idx_free(images);
    return rc;
}

int mnist_load(const char *dir, mnist_t *out, dadc_error_t *err)
{
    int rc;

    memset(out, 0, sizeof(*out));
    rc = mnist_pair_load(dir, "train-images-idx3-ubyte",
                         "train-labels-idx1-ubyte", &out->train_images,
                         &out->train_labels, err);
    if (rc < 0)
        return rc;
    rc = mnist_pair_load(dir, "t10k-images-idx3-ubyte",
                         "t10k-labels-idx1-ubyte", &out->test_images,
                         &out->test_labels, err);
    if (rc < 0) {
        mnist_free(out);
        return rc;
    }
    return 0;
}

void mnist_free(mnist_t *m)
{
    if (m == NULL)
        return;
    idx_free(&m->train_images);
    idx_free(&m->train_labels);
    idx_free(&m->test_images);
    idx_free(&m->test_labels);
}
