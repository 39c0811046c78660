/*
 * Drawings to MNIST images, and the image files clients read and write.
 *
 * A drawing is any size of 8-bit grayscale. MNIST digits are white ink on
 * black, 20x20 inside a 28x28 frame, centred by centre of mass; this
 * module makes any drawing look like that, the way MNIST itself was made.
 */
#ifndef DADC_IMAGE_H
#define DADC_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "dadc_error.h"

#define IMAGE_MAX_SIDE 16384  /* larger files are refused */
#define IMAGE_MAX_FILE_BYTES ((size_t)1 << 30)  /* image_load's limit */
#define IMAGE_INK_MIN_CONTRAST 24  /* fainter marks are not ink */

/* An 8-bit grayscale picture; pixels owned by whoever made it. */
typedef struct image {
    int width;
    int height;
    uint8_t *pixels;   /* width * height bytes, row-major */
} image_t;

/*
 * Make a 28x28 MNIST-style image (0 background, 255 ink) from a drawing.
 * Polarity is detected: a drawing whose border is mostly light is taken
 * as dark ink on light paper and inverted. The border's median is the
 * paper and its median deviation the paper's noise: values within seven
 * such deviations of the paper count as paper, and the range from there
 * to the strongest ink is stretched to 0..255 (a drawing whose strongest
 * mark stands out by less than IMAGE_INK_MIN_CONTRAST levels is empty).
 * Then: crop to the ink's bounding box, scale so the longer side is
 * 20 px keeping the aspect ratio (area-averaging, so thin strokes stay
 * anti-aliased), and paste into 28x28 with the centre of mass at pixel
 * (14, 14), as in MNIST (the shift is rounded; what falls off is cut).
 * pixels is width * height bytes, row-major; out gets 784 bytes.
 * Returns 0, DADC_EEMPTY when there is no ink, DADC_ERANGE for a side
 * outside 1..IMAGE_MAX_SIDE or NULL pixels, or -ENOMEM.
 */
int image_to_mnist(const uint8_t *pixels, int width, int height,
                   uint8_t out[784], dadc_error_t *err);

/*
 * Read a PNG (any bit depth or colour type; converted to gray, alpha
 * composited onto white) or a PGM (P2 or P5, maxval up to 65535),
 * told apart by their first bytes. Refuses truncated or malformed files
 * and sides over IMAGE_MAX_SIDE with a message. The caller frees
 * img->pixels with free().
 * Codes: -errno (cannot open/read), DADC_ETRUNC (file ends early),
 * DADC_EFORMAT (not PNG/PGM, corrupt data, bytes after a PGM's data),
 * DADC_ELIMIT (a side over IMAGE_MAX_SIDE, checked before allocating the
 * pixels, or a file over IMAGE_MAX_FILE_BYTES), DADC_ERANGE (a zero side
 * or maxval, a PGM sample over maxval). On failure *img is zeroed.
 */
int image_load(const char *path, image_t *img, dadc_error_t *err);

/* The same from memory (name is used in messages). */
int image_decode(const uint8_t *buf, size_t len, const char *name,
                 image_t *img, dadc_error_t *err);

/*
 * Write 8-bit gray PNG / binary PGM (maxval 255), through a temporary
 * file renamed over path. Returns 0, DADC_ERANGE for a side outside
 * 1..IMAGE_MAX_SIDE, or -errno.
 */
int image_save_png(const char *path, const uint8_t *pixels, int width,
                   int height, dadc_error_t *err);
int image_save_pgm(const char *path, const uint8_t *pixels, int width,
                   int height, dadc_error_t *err);

/*
 * Encode an 8-bit gray PNG into a malloc'd buffer (*buf, *len; the caller
 * frees). Returns 0, DADC_ERANGE for a bad size or -ENOMEM.
 */
int image_encode_png(const uint8_t *pixels, int width, int height,
                     uint8_t **buf, size_t *len, dadc_error_t *err);

#endif
