/*
 * IDX files, the format MNIST ships in: a 4-byte magic (0, 0, type,
 * ndim), ndim big-endian uint32 sizes, then the data. Only unsigned-byte
 * data (type 0x08) is supported, which is what MNIST uses.
 */
#ifndef DADC_IDX_H
#define DADC_IDX_H

#include <stddef.h>
#include <stdint.h>

#include "dadc_error.h"

#define IDX_MAX_DIMS 4

typedef struct idx_file {
    int ndim;
    uint32_t dims[IDX_MAX_DIMS];
    size_t count;      /* dims[0]: number of items */
    size_t item_size;  /* product of dims[1..]: bytes per item */
    uint8_t *data;     /* count * item_size bytes, owned */
} idx_file_t;

/*
 * Read an IDX file. Refuses, with a message naming the file and the
 * problem, a bad magic, a type other than unsigned byte, zero or more
 * than IDX_MAX_DIMS dimensions, sizes whose product overflows, and data
 * shorter or longer than the header says. Returns 0 or a negative code;
 * on success the caller frees with idx_free.
 * Codes: -errno (cannot open/read), DADC_ETRUNC (shorter than the header
 * or the data it announces), DADC_EFORMAT (bad magic, bad number of
 * dimensions, data past the end), DADC_EDTYPE (not unsigned byte),
 * DADC_ELIMIT (sizes overflow). On failure *out is zeroed.
 */
int idx_load(const char *path, idx_file_t *out, dadc_error_t *err);

/* The same from memory (name is used in messages). */
int idx_parse(const uint8_t *buf, size_t len, const char *name,
              idx_file_t *out, dadc_error_t *err);

void idx_free(idx_file_t *f);

/*
 * Write count items of unsigned bytes with the given dims (dims[0] is
 * ignored and replaced by count). Written to a temporary file and
 * renamed. Returns 0 or a negative code.
 */
int idx_save(const char *path, const uint8_t *data, size_t count,
             const uint32_t *dims, int ndim, dadc_error_t *err);

/*
 * Check that f holds N x 28 x 28 images. Returns 0 or DADC_ESHAPE with a
 * message naming name and the shape found.
 */
int idx_check_images(const idx_file_t *f, const char *name,
                     dadc_error_t *err);

/*
 * Check that f holds count labels (one dimension), each 0..9. Returns 0,
 * DADC_ESHAPE (wrong dimensions or count) or DADC_ERANGE (a label that
 * is not a digit), with a message naming name.
 */
int idx_check_labels(const idx_file_t *f, size_t count, const char *name,
                     dadc_error_t *err);

/* The four MNIST files of a directory, checked to fit together. */
typedef struct mnist {
    idx_file_t train_images;  /* 60000 x 28 x 28 */
    idx_file_t train_labels;  /* 60000, values 0..9 */
    idx_file_t test_images;   /* 10000 x 28 x 28 */
    idx_file_t test_labels;   /* 10000 */
} mnist_t;

/*
 * Load train-images-idx3-ubyte, train-labels-idx1-ubyte,
 * t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte from dir. Checks
 * 28x28 images, label counts equal to image counts and labels 0..9.
 * Returns 0 or a negative code; free with mnist_free.
 */
int mnist_load(const char *dir, mnist_t *out, dadc_error_t *err);
void mnist_free(mnist_t *m);

#endif
