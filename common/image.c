#include "image.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <png.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fileio.h"

#define MNIST_SIDE 28
#define MNIST_BOX 20           /* the longer side of the digit itself */
#define MNIST_CENTRE 14.0      /* where MNIST has its centre of mass */
#define PNG_CHUNK_MAX (8u << 20)
#define IMAGE_PAPER_SPREADS 7  /* paper noise: median deviations */

/* ------------------------------------------------------------------ */
/* Drawing to MNIST                                                    */
/* ------------------------------------------------------------------ */

/* The ink's bounding box in the drawing. */
typedef struct image_box {
    int x0, y0;     /* top-left, inclusive */
    int width;
    int height;
} image_box_t;

/*
 * Box-filter weights along one axis, from n source pixels to m output
 * pixels: output i averages source pixels first[i] .. first[i]+count[i]-1
 * with weights weight[offset[i] ...], which sum to 1.
 */
typedef struct image_axis {
    int first[MNIST_BOX];
    int count[MNIST_BOX];
    int offset[MNIST_BOX];
    float *weight;
} image_axis_t;

/* Median of a 256-bin histogram holding total counts. */
static int image_hist_median(const size_t hist[256], size_t total)
{
    size_t seen = 0;
    int v;

    for (v = 0; v < 255; v++) {
        seen += hist[v];
        if (2 * seen >= total)
            break;
    }
    return v;
}

/*
 * The paper, from the drawing's border: its median gray value, and the
 * median distance from it (how noisy the paper is). Both ignore ink
 * that touches less than half of the border.
 */
static void image_paper_estimate(const uint8_t *pixels, int w, int h,
                                 int *median, int *spread)
{
    size_t hist[256] = {0}, dev[256] = {0};
    size_t total = 0;

    for (int x = 0; x < w; x++) {
        hist[pixels[x]]++;
        hist[pixels[(size_t)(h - 1) * w + x]]++;
    }
    for (int y = 0; y < h; y++) {
        hist[pixels[(size_t)y * w]]++;
        hist[pixels[(size_t)y * w + w - 1]]++;
    }
    for (int v = 0; v < 256; v++)
        total += hist[v];
    *median = image_hist_median(hist, total);

    for (int v = 0; v < 256; v++)
        dev[abs(v - *median)] += hist[v];
    *spread = image_hist_median(dev, total);
}

/*
 * Build the table mapping a drawing's gray values to ink (0 none, 255
 * full). The border tells the paper: light paper means dark ink, so
 * values are inverted. Everything within IMAGE_PAPER_SPREADS times the
 * paper's noise of its level is paper; from there, the range up to the
 * strongest ink is stretched to 0..255, as MNIST digits all reach full
 * intensity. DADC_EEMPTY when no pixel stands out from the paper by at
 * least IMAGE_INK_MIN_CONTRAST levels.
 */
static int image_ink_lut(const uint8_t *pixels, int w, int h,
                         uint8_t lut[256])
{
    bool present[256] = {false};
    size_t n = (size_t)w * h;
    int median, spread, paper, top = 0;
    bool invert;

    image_paper_estimate(pixels, w, h, &median, &spread);
    invert = median > 127;
    paper = invert ? 255 - median : median;
    paper += IMAGE_PAPER_SPREADS * spread;
    for (size_t i = 0; i < n; i++)
        present[pixels[i]] = true;
    for (int v = 0; v < 256; v++) {
        int ink = invert ? 255 - v : v;

        if (present[v] && ink > top)
            top = ink;
    }
    if (top - paper < IMAGE_INK_MIN_CONTRAST)
        return DADC_EEMPTY;

    for (int v = 0; v < 256; v++) {
        int ink = invert ? 255 - v : v;

        lut[v] = ink <= paper ? 0
                 : (uint8_t)(((ink - paper) * 255 + (top - paper) / 2) /
                             (top - paper));
    }
    return 0;
}

/* Bounding box of pixels with ink; DADC_EEMPTY when there are none. */
static int image_ink_box(const uint8_t *pixels, int w, int h,
                         const uint8_t lut[256], image_box_t *box)
{
    int x0 = w, x1 = -1, y0 = h, y1 = -1;

    for (int y = 0; y < h; y++) {
        const uint8_t *row = pixels + (size_t)y * w;

        for (int x = 0; x < w; x++) {
            if (lut[row[x]] == 0)
                continue;
            if (x < x0)
                x0 = x;
            if (x > x1)
                x1 = x;
            if (y < y0)
                y0 = y;
            y1 = y;
        }
    }
    if (x1 < 0)
        return DADC_EEMPTY;
    box->x0 = x0;
    box->y0 = y0;
    box->width = x1 - x0 + 1;
    box->height = y1 - y0 + 1;
    return 0;
}

/*
 * Exact area weights: in units of 1/m source pixels, output i spans
 * [i*n, (i+1)*n) and source pixel j spans [j*m, (j+1)*m). The same code
 * covers shrinking (several sources per output) and enlarging (one or
 * two sources per output).
 */
static int image_axis_init(image_axis_t *ax, int n, int m)
{
    int used = 0;

    ax->weight = malloc(((size_t)n + (size_t)m) * sizeof(float));
    if (ax->weight == NULL)
        return -ENOMEM;
    for (int i = 0; i < m; i++) {
        int64_t lo = (int64_t)i * n, hi = (int64_t)(i + 1) * n;
        int first = (int)(lo / m), last = (int)((hi - 1) / m);

        ax->first[i] = first;
        ax->count[i] = last - first + 1;
        ax->offset[i] = used;
        for (int j = first; j <= last; j++) {
            int64_t a = lo > (int64_t)j * m ? lo : (int64_t)j * m;
            int64_t b = hi < (int64_t)(j + 1) * m ? hi : (int64_t)(j + 1) * m;

            ax->weight[used++] = (float)((double)(b - a) / (double)n);
        }
    }
    return 0;
}

/*
 * Scale the ink inside box to out (oh x ow, row-major, 0..255 floats):
 * first along rows into a (box height x ow) buffer, then down columns.
 */
static int image_box_scale(const uint8_t *pixels, int w,
                           const uint8_t lut[256], const image_box_t *box,
                           float *out, int ow, int oh)
{
    image_axis_t ax = {0}, ay = {0};
    float *tmp;
    int rc = -ENOMEM;

    tmp = malloc((size_t)box->height * ow * sizeof(float));
    if (tmp == NULL)
        return -ENOMEM;
    if (image_axis_init(&ax, box->width, ow) < 0)
        goto fail_x;
    if (image_axis_init(&ay, box->height, oh) < 0)
        goto fail_y;

    for (int y = 0; y < box->height; y++) {
        const uint8_t *row = pixels + (size_t)(box->y0 + y) * w + box->x0;

        for (int i = 0; i < ow; i++) {
            const float *wt = ax.weight + ax.offset[i];
            float sum = 0.0f;

            for (int k = 0; k < ax.count[i]; k++)
                sum += wt[k] * lut[row[ax.first[i] + k]];
            tmp[(size_t)y * ow + i] = sum;
        }
    }
    for (int j = 0; j < oh; j++) {
        const float *wt = ay.weight + ay.offset[j];

        for (int i = 0; i < ow; i++) {
            float sum = 0.0f;

            for (int k = 0; k < ay.count[j]; k++)
                sum += wt[k] * tmp[(size_t)(ay.first[j] + k) * ow + i];
            out[j * ow + i] = sum;
        }
    }
    rc = 0;

    free(ay.weight);
fail_y:
    free(ax.weight);
fail_x:
    free(tmp);
    return rc;
}

/*
 * Paste the scaled digit (oh x ow) into the 28x28 frame so that its
 * centre of mass lands on pixel (14, 14), the shift rounded to whole
 * pixels; whatever falls outside the frame is cut off.
 */
static int image_paste_centred(const float *digit, int ow, int oh,
                               uint8_t out[784])
{
    double mass = 0.0, mx = 0.0, my = 0.0;
    int dx, dy, any = 0;

    for (int j = 0; j < oh; j++) {
        for (int i = 0; i < ow; i++) {
            double v = digit[j * ow + i];

            mass += v;
            mx += v * i;
            my += v * j;
        }
    }
    if (mass <= 0.0)
        return DADC_EEMPTY;
    dx = (int)lround(MNIST_CENTRE - mx / mass);
    dy = (int)lround(MNIST_CENTRE - my / mass);

    memset(out, 0, 784);
    for (int j = 0; j < oh; j++) {
        for (int i = 0; i < ow; i++) {
            int x = i + dx, y = j + dy;
            long v = lroundf(digit[j * ow + i]);

            if (x < 0 || x >= MNIST_SIDE || y < 0 || y >= MNIST_SIDE)
                continue;
            out[y * MNIST_SIDE + x] = (uint8_t)(v > 255 ? 255 : v);
            any |= out[y * MNIST_SIDE + x];
        }
    }
    return any ? 0 : DADC_EEMPTY;
}

int image_to_mnist(const uint8_t *pixels, int width, int height,
                   uint8_t out[784], dadc_error_t *err)
{
    float digit[MNIST_BOX * MNIST_BOX];
    uint8_t lut[256];
    image_box_t box;
    int ow, oh, longer, rc;

    if (pixels == NULL || width < 1 || height < 1 ||
        width > IMAGE_MAX_SIDE || height > IMAGE_MAX_SIDE)
        return dadc_error_set(err, DADC_ERANGE,
                              "drawing of %dx%d: sides must be 1..%d",
                              width, height, IMAGE_MAX_SIDE);

    if (image_ink_lut(pixels, width, height, lut) < 0 ||
        image_ink_box(pixels, width, height, lut, &box) < 0)
        return dadc_error_set(err, DADC_EEMPTY, "the drawing is empty: no "
                              "ink stands out from the paper");

    /* The longer side becomes 20 px, the other keeps the aspect. */
    longer = box.width > box.height ? box.width : box.height;
    ow = (int)lround((double)box.width * MNIST_BOX / longer);
    oh = (int)lround((double)box.height * MNIST_BOX / longer);
    ow = ow < 1 ? 1 : ow;
    oh = oh < 1 ? 1 : oh;
    rc = image_box_scale(pixels, width, lut, &box, digit, ow, oh);
    if (rc < 0)
        return dadc_error_set(err, rc, "out of memory scaling a %dx%d "
                              "drawing", width, height);

    if (image_paste_centred(digit, ow, oh, out) < 0)
        return dadc_error_set(err, DADC_EEMPTY,
                              "the drawing's ink is too faint or small to "
                              "show at 28x28");
    return 0;
}

/* ------------------------------------------------------------------ */
/* PNG                                                                 */
/* ------------------------------------------------------------------ */

static const uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n',
                                     0x1a, '\n'};

/*
 * Everything a libpng run needs, kept in the caller's frame so that it
 * holds valid values after libpng longjmps out of an error.
 */
typedef struct png_job {
    png_structp png;
    png_infop info;
    int code;               /* DADC_* code for the error being raised */
    char msg[160];
    const uint8_t *in;      /* decoding: the file */
    size_t in_len;
    size_t in_pos;
    uint8_t *raw;           /* decoding: rows as libpng gives them */
    png_bytep *rows;
    uint8_t *out;           /* encoding: the growing output */
    size_t out_len;
    size_t out_cap;
} png_job_t;

static void png_error_cb(png_structp png, png_const_charp msg)
{
    png_job_t *job = png_get_error_ptr(png);

    snprintf(job->msg, sizeof(job->msg), "%s", msg);
    png_longjmp(png, 1);
}

static void png_warning_cb(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

static void png_read_cb(png_structp png, png_bytep data, size_t n)
{
    png_job_t *job = png_get_io_ptr(png);

    if (job->in_len - job->in_pos < n) {
        job->code = DADC_ETRUNC;
        png_error(png, "truncated: the file ends inside a chunk");
    }
    memcpy(data, job->in + job->in_pos, n);
    job->in_pos += n;
}

static uint32_t png_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
           ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

/* Ask libpng for 8-bit gray, or gray + alpha, whatever the file holds. */
static void png_transforms_set(png_structp png, png_infop info)
{
    int depth = png_get_bit_depth(png, info);
    int ctype = png_get_color_type(png, info);

    if (ctype == PNG_COLOR_TYPE_PALETTE)
        png_set_palette_to_rgb(png);
    if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8)
        png_set_expand_gray_1_2_4_to_8(png);
    if (png_get_valid(png, info, PNG_INFO_tRNS))
        png_set_tRNS_to_alpha(png);
    if (depth == 16)
        png_set_scale_16(png);
    if (ctype & PNG_COLOR_MASK_COLOR)
        png_set_rgb_to_gray_fixed(png, 1, -1, -1);
    png_set_interlace_handling(png);
}

/*
 * The libpng part of decoding, with its setjmp. Every value that must
 * survive a longjmp lives in *job; the caller frees what it holds.
 * Returns 0 or a negative code with job->msg set.
 */
static int png_job_decode(png_job_t *job, int *channels)
{
    png_uint_32 w, h;
    size_t rowbytes;

    job->code = DADC_EFORMAT;
    if (setjmp(png_jmpbuf(job->png)))
        return job->code;

    png_set_user_limits(job->png, IMAGE_MAX_SIDE, IMAGE_MAX_SIDE);
    png_set_chunk_malloc_max(job->png, PNG_CHUNK_MAX);
    png_read_info(job->png, job->info);
    png_transforms_set(job->png, job->info);
    png_read_update_info(job->png, job->info);

    w = png_get_image_width(job->png, job->info);
    h = png_get_image_height(job->png, job->info);
    *channels = png_get_channels(job->png, job->info);
    rowbytes = png_get_rowbytes(job->png, job->info);
    if ((*channels != 1 && *channels != 2) ||
        rowbytes != (size_t)w * (size_t)*channels)
        png_error(job->png, "unexpected pixel layout after conversion");

    job->raw = malloc(rowbytes * h);
    job->rows = malloc(h * sizeof(*job->rows));
    if (job->raw == NULL || job->rows == NULL) {
        job->code = -ENOMEM;
        png_error(job->png, "out of memory");
    }
    for (png_uint_32 y = 0; y < h; y++)
        job->rows[y] = job->raw + (size_t)y * rowbytes;
    png_read_image(job->png, job->rows);
    png_read_end(job->png, NULL);
    return 0;
}

/* Gray + alpha to gray, composited onto white paper, in place. */
static void png_alpha_flatten(uint8_t *px, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned g = px[2 * i], a = px[2 * i + 1];

        px[i] = (uint8_t)((g * a + 255 * (255 - a) + 127) / 255);
    }
}

/* Refuse oversized images from the IHDR fields, before libpng runs. */
static int png_size_check(const uint8_t *buf, size_t len, const char *name,
                          dadc_error_t *err)
{
    uint32_t w, h;

    if (len < 24 || memcmp(buf + 12, "IHDR", 4) != 0)
        return 0;  /* libpng gives the precise complaint */
    w = png_be32(buf + 16);
    h = png_be32(buf + 20);
    if (w > IMAGE_MAX_SIDE || h > IMAGE_MAX_SIDE)
        return dadc_error_set(err, DADC_ELIMIT,
                              "%s: PNG is %" PRIu32 "x%" PRIu32 "; sides "
                              "over %d are refused", name, w, h,
                              IMAGE_MAX_SIDE);
    return 0;
}

/* A chunk type for messages: its four letters, '?' for other bytes. */
static void png_type_name(const uint8_t *p, char name[5])
{
    for (int i = 0; i < 4; i++) {
        bool letter = (p[i] >= 'A' && p[i] <= 'Z') ||
                      (p[i] >= 'a' && p[i] <= 'z');

        name[i] = letter ? (char)p[i] : '?';
    }
    name[4] = '\0';
}

/*
 * Walk the chunk list up to IEND before libpng runs, refusing any chunk
 * whose length field is over 2^31 - 1 or runs past the end of the
 * buffer: libpng allocates (and zeroes) what a chunk's length says
 * before it finds out the data is not there. An incomplete chunk header
 * at the end is left to libpng, which calls it truncated.
 */
static int png_chunks_check(const uint8_t *buf, size_t len,
                            const char *name, dadc_error_t *err)
{
    size_t pos = 8;
    char type[5];

    while (len - pos >= 8) {
        uint32_t n = png_be32(buf + pos);

        png_type_name(buf + pos + 4, type);
        if (n > 0x7fffffffu)
            return dadc_error_set(err, DADC_EFORMAT, "%s: bad PNG: the %s "
                                  "chunk's length %" PRIu32 " is over "
                                  "2^31 - 1", name, type, n);
        if (len - pos - 8 < (size_t)n + 4)
            return dadc_error_set(err, DADC_ETRUNC, "%s: bad PNG: "
                                  "truncated: the %s chunk says %" PRIu32
                                  " bytes, the file has %zu left", name,
                                  type, n, len - pos - 8);
        if (memcmp(buf + pos + 4, "IEND", 4) == 0)
            break;
        pos += 12 + (size_t)n;
    }
    return 0;
}

static int image_png_decode(const uint8_t *buf, size_t len,
                            const char *name, image_t *img,
                            dadc_error_t *err)
{
    png_job_t job = {0};
    int channels = 0, rc;

    rc = png_size_check(buf, len, name, err);
    if (rc == 0)
        rc = png_chunks_check(buf, len, name, err);
    if (rc < 0)
        return rc;
    job.in = buf;
    job.in_len = len;
    job.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &job,
                                     png_error_cb, png_warning_cb);
    if (job.png == NULL)
        return dadc_error_set(err, -ENOMEM, "%s: out of memory", name);
    job.info = png_create_info_struct(job.png);
    if (job.info == NULL) {
        rc = dadc_error_set(err, -ENOMEM, "%s: out of memory", name);
        goto done;
    }
    png_set_read_fn(job.png, &job, png_read_cb);

    rc = png_job_decode(&job, &channels);
    if (rc < 0) {
        dadc_error_set(err, rc, "%s: bad PNG: %s", name, job.msg);
        goto done;
    }
    img->width = (int)png_get_image_width(job.png, job.info);
    img->height = (int)png_get_image_height(job.png, job.info);
    if (channels == 2)
        png_alpha_flatten(job.raw, (size_t)img->width * img->height);
    img->pixels = job.raw;
    job.raw = NULL;

done:
    png_destroy_read_struct(&job.png, job.info ? &job.info : NULL, NULL);
    free(job.rows);
    free(job.raw);
    return rc;
}

static void png_write_cb(png_structp png, png_bytep data, size_t n)
{
    png_job_t *job = png_get_io_ptr(png);

    if (job->out_cap - job->out_len < n) {
        size_t cap = job->out_cap ? job->out_cap : 4096;
        uint8_t *nbuf;

        while (cap - job->out_len < n)
            cap *= 2;
        nbuf = realloc(job->out, cap);
        if (nbuf == NULL) {
            job->code = -ENOMEM;
            png_error(png, "out of memory");
        }
        job->out = nbuf;
        job->out_cap = cap;
    }
    memcpy(job->out + job->out_len, data, n);
    job->out_len += n;
}

static void png_flush_cb(png_structp png)
{
    (void)png;
}

/* The libpng part of encoding, with its setjmp (see png_job_decode). */
static int png_job_encode(png_job_t *job, const uint8_t *pixels, int w,
                          int h)
{
    job->code = DADC_EFORMAT;
    if (setjmp(png_jmpbuf(job->png)))
        return job->code;

    png_set_write_fn(job->png, job, png_write_cb, png_flush_cb);
    png_set_IHDR(job->png, job->info, (png_uint_32)w, (png_uint_32)h, 8,
                 PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(job->png, job->info);
    for (int y = 0; y < h; y++)
        png_write_row(job->png, pixels + (size_t)y * w);
    png_write_end(job->png, NULL);
    return 0;
}

static int image_size_check(int width, int height, const char *what,
                            dadc_error_t *err)
{
    if (width < 1 || height < 1 || width > IMAGE_MAX_SIDE ||
        height > IMAGE_MAX_SIDE)
        return dadc_error_set(err, DADC_ERANGE,
                              "%s: image of %dx%d: sides must be 1..%d",
                              what, width, height, IMAGE_MAX_SIDE);
    return 0;
}

int image_encode_png(const uint8_t *pixels, int width, int height,
                     uint8_t **buf, size_t *len, dadc_error_t *err)
{
    png_job_t job = {0};
    int rc;

    *buf = NULL;
    *len = 0;
    rc = image_size_check(width, height, "PNG", err);
    if (rc < 0)
        return rc;
    job.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &job,
                                      png_error_cb, png_warning_cb);
    if (job.png == NULL)
        return dadc_error_set(err, -ENOMEM, "PNG: out of memory");
    job.info = png_create_info_struct(job.png);
    if (job.info == NULL) {
        rc = dadc_error_set(err, -ENOMEM, "PNG: out of memory");
        goto done;
    }

    rc = png_job_encode(&job, pixels, width, height);
    if (rc < 0) {
        dadc_error_set(err, rc, "PNG: cannot encode: %s", job.msg);
        goto done;
    }
    *buf = job.out;
    *len = job.out_len;
    job.out = NULL;

done:
    png_destroy_write_struct(&job.png, job.info ? &job.info : NULL);
    free(job.out);
    return rc;
}

/* ------------------------------------------------------------------ */
/* PGM                                                                 */
/* ------------------------------------------------------------------ */

typedef struct pgm_reader {
    const uint8_t *buf;
    size_t len;
    size_t pos;
    const char *name;
} pgm_reader_t;

static bool pgm_is_space(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' ||
           c == '\r';
}

/* Skip whitespace and comments (header only); returns how much. */
static size_t pgm_skip(pgm_reader_t *r, bool comments)
{
    size_t start = r->pos;

    while (r->pos < r->len) {
        uint8_t c = r->buf[r->pos];

        if (pgm_is_space(c)) {
            r->pos++;
        } else if (comments && c == '#') {
            while (r->pos < r->len && r->buf[r->pos] != '\n' &&
                   r->buf[r->pos] != '\r')
                r->pos++;
        } else {
            break;
        }
    }
    return r->pos - start;
}

/*
 * Read a decimal number after at least one separator. Values over max
 * give over_code; what names the field in messages.
 */
static int pgm_number(pgm_reader_t *r, bool comments, unsigned max,
                      int over_code, const char *what, unsigned *out,
                      dadc_error_t *err)
{
    unsigned long v = 0;
    size_t digits = 0;

    if (pgm_skip(r, comments) == 0 && r->pos < r->len)
        return dadc_error_set(err, DADC_EFORMAT, "%s: bad PGM: no space "
                              "before the %s", r->name, what);
    if (r->pos >= r->len)
        return dadc_error_set(err, DADC_ETRUNC, "%s: truncated PGM: the "
                              "file ends before the %s", r->name, what);
    while (r->pos < r->len && r->buf[r->pos] >= '0' &&
           r->buf[r->pos] <= '9') {
        if (v <= max)
            v = v * 10 + (r->buf[r->pos] - '0');
        r->pos++;
        digits++;
    }
    if (digits == 0)
        return dadc_error_set(err, DADC_EFORMAT, "%s: bad PGM: expected "
                              "the %s, found byte 0x%02x", r->name, what,
                              r->buf[r->pos]);
    if (v > max)
        return dadc_error_set(err, over_code, "%s: PGM %s is over %u",
                              r->name, what, max);
    *out = (unsigned)v;
    return 0;
}

/* Width, height and maxval; leaves r at the byte after maxval. */
static int pgm_header_parse(pgm_reader_t *r, unsigned *w, unsigned *h,
                            unsigned *maxval, dadc_error_t *err)
{
    int rc;

    r->pos = 2;
    rc = pgm_number(r, true, IMAGE_MAX_SIDE, DADC_ELIMIT, "width", w, err);
    if (rc == 0)
        rc = pgm_number(r, true, IMAGE_MAX_SIDE, DADC_ELIMIT, "height", h,
                        err);
    if (rc == 0)
        rc = pgm_number(r, true, 65535, DADC_ERANGE, "maxval", maxval,
                        err);
    if (rc < 0)
        return rc;
    if (*w == 0 || *h == 0 || *maxval == 0)
        return dadc_error_set(err, DADC_ERANGE, "%s: bad PGM: width %u, "
                              "height %u, maxval %u (each must be > 0)",
                              r->name, *w, *h, *maxval);
    if (r->pos >= r->len)
        return dadc_error_set(err, DADC_ETRUNC, "%s: truncated PGM: no "
                              "image data", r->name);
    if (!pgm_is_space(r->buf[r->pos]))
        return dadc_error_set(err, DADC_EFORMAT, "%s: bad PGM: byte 0x%02x "
                              "after maxval", r->name, r->buf[r->pos]);
    r->pos++;
    return 0;
}

static uint8_t pgm_to_8bit(unsigned v, unsigned maxval)
{
    return (uint8_t)((v * 255u + maxval / 2) / maxval);
}

static int pgm_raster_binary(pgm_reader_t *r, size_t n, unsigned maxval,
                             uint8_t *px, dadc_error_t *err)
{
    size_t bps = maxval > 255 ? 2 : 1;
    const uint8_t *p = r->buf + r->pos;

    for (size_t i = 0; i < n; i++) {
        unsigned v = bps == 2 ? (unsigned)p[2 * i] << 8 | p[2 * i + 1]
                              : p[i];

        if (v > maxval)
            return dadc_error_set(err, DADC_ERANGE, "%s: PGM sample %u at "
                                  "pixel %zu is over maxval %u", r->name,
                                  v, i, maxval);
        px[i] = pgm_to_8bit(v, maxval);
    }
    return 0;
}

static int pgm_raster_plain(pgm_reader_t *r, size_t n, unsigned maxval,
                            uint8_t *px, dadc_error_t *err)
{
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        int rc;

        /* The first sample's separator was eaten with the header. */
        if (i == 0)
            r->pos--;
        rc = pgm_number(r, false, maxval, DADC_ERANGE, "next sample", &v,
                        err);
        if (rc < 0)
            return rc;
        px[i] = pgm_to_8bit(v, maxval);
    }
    pgm_skip(r, false);
    if (r->pos != r->len)
        return dadc_error_set(err, DADC_EFORMAT, "%s: bad PGM: %zu bytes "
                              "after the image data", r->name,
                              r->len - r->pos);
    return 0;
}

/* Bytes the raster needs at least, checked before allocating. */
static int pgm_raster_size_check(const pgm_reader_t *r, bool plain,
                                 size_t n, unsigned maxval,
                                 dadc_error_t *err)
{
    size_t have = r->len - r->pos;
    size_t need = plain ? 2 * n - 1 : n * (maxval > 255 ? 2 : 1);

    if (have < need)
        return dadc_error_set(err, DADC_ETRUNC, "%s: truncated PGM: %zu "
                              "bytes of image data, %zu pixels need %s%zu",
                              r->name, have, n, plain ? "at least " : "",
                              need);
    if (!plain && have > need)
        return dadc_error_set(err, DADC_EFORMAT, "%s: bad PGM: %zu bytes "
                              "after the image data", r->name, have - need);
    return 0;
}

static int image_pgm_decode(const uint8_t *buf, size_t len,
                            const char *name, image_t *img,
                            dadc_error_t *err)
{
    pgm_reader_t r = {buf, len, 0, name};
    bool plain = buf[1] == '2';
    unsigned w = 0, h = 0, maxval = 0;
    uint8_t *px;
    size_t n;
    int rc;

    rc = pgm_header_parse(&r, &w, &h, &maxval, err);
    if (rc < 0)
        return rc;
    n = (size_t)w * h;
    rc = pgm_raster_size_check(&r, plain, n, maxval, err);
    if (rc < 0)
        return rc;

    px = malloc(n);
    if (px == NULL)
        return dadc_error_set(err, -ENOMEM, "%s: out of memory", name);
    if (plain)
        rc = pgm_raster_plain(&r, n, maxval, px, err);
    else
        rc = pgm_raster_binary(&r, n, maxval, px, err);
    if (rc < 0) {
        free(px);
        return rc;
    }
    img->width = (int)w;
    img->height = (int)h;
    img->pixels = px;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Files                                                               */
/* ------------------------------------------------------------------ */

int image_decode(const uint8_t *buf, size_t len, const char *name,
                 image_t *img, dadc_error_t *err)
{
    memset(img, 0, sizeof(*img));
    if (len == 0)
        return dadc_error_set(err, DADC_ETRUNC, "%s: empty file", name);
    if (len >= 8 && memcmp(buf, png_magic, 8) == 0)
        return image_png_decode(buf, len, name, img, err);
    if (len < 8 && memcmp(buf, png_magic, len) == 0)
        return dadc_error_set(err, DADC_ETRUNC, "%s: truncated PNG: %zu "
                              "bytes", name, len);
    if (len >= 2 && buf[0] == 'P' && (buf[1] == '2' || buf[1] == '5'))
        return image_pgm_decode(buf, len, name, img, err);
    if (len >= 2 && buf[0] == 'P' && buf[1] >= '1' && buf[1] <= '7')
        return dadc_error_set(err, DADC_EFORMAT, "%s: P%c files are not "
                              "supported (only grayscale PGM: P2, P5)",
                              name, buf[1]);
    return dadc_error_set(err, DADC_EFORMAT, "%s: not a PNG or PGM file",
                          name);
}

int image_load(const char *path, image_t *img, dadc_error_t *err)
{
    uint8_t *buf;
    size_t len;
    int rc;

    memset(img, 0, sizeof(*img));
    rc = dadc_file_read(path, IMAGE_MAX_FILE_BYTES, &buf, &len, err);
    if (rc < 0)
        return rc;
    rc = image_decode(buf, len, path, img, err);
    free(buf);
    return rc;
}

int image_save_png(const char *path, const uint8_t *pixels, int width,
                   int height, dadc_error_t *err)
{
    dadc_file_part_t part;
    uint8_t *buf;
    size_t len;
    int rc;

    rc = image_encode_png(pixels, width, height, &buf, &len, err);
    if (rc < 0)
        return rc;
    part.data = buf;
    part.len = len;
    rc = dadc_file_write_atomic(path, &part, 1, err);
    free(buf);
    return rc;
}

int image_save_pgm(const char *path, const uint8_t *pixels, int width,
                   int height, dadc_error_t *err)
{
    dadc_file_part_t parts[2];
    char header[64];
    int rc, n;

    rc = image_size_check(width, height, path, err);
    if (rc < 0)
        return rc;
    n = snprintf(header, sizeof(header), "P5\n%d %d\n255\n", width,
                 height);
    parts[0].data = header;
    parts[0].len = (size_t)n;
    parts[1].data = pixels;
    parts[1].len = (size_t)width * height;
    return dadc_file_write_atomic(path, parts, 2, err);
}
