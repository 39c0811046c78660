/*
 * Drawings to MNIST images, and PNG/PGM reading and writing: real MNIST
 * digits through files and back, enlarged and inverted drawings, tiny
 * and empty ones, every colour type libpng can write, and malformed
 * files (truncated, corrupted, oversized, seeded garbage) refused
 * without a crash.
 */
#include <errno.h>
#include <png.h>
#include <stdint.h>
#include <sys/resource.h>

#include "idx.h"
#include "image.h"
#include "test_util.h"

#define N_DIGITS 300

static idx_file_t digits;  /* the MNIST test images */

static void digits_load(void)
{
    char path[512];
    dadc_error_t err;
    const char *dir = test_mnist_dir();

    CHECK(dir != NULL);
    snprintf(path, sizeof(path), "%s/t10k-images-idx3-ubyte", dir);
    CHECK_EQ(idx_load(path, &digits, &err), 0);
    CHECK_EQ(idx_check_images(&digits, path, &err), 0);
}

/* xorshift64*, seeded: the same "random" data every run. */
static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

static double mean_abs_diff(const uint8_t *a, const uint8_t *b, size_t n)
{
    double sum = 0.0;

    for (size_t i = 0; i < n; i++)
        sum += abs((int)a[i] - (int)b[i]);
    return sum / (double)n;
}

/* The MNIST properties: ink box longer side 20, centre of mass ~ 14. */
static void check_mnist_shape(const uint8_t img[784], int min_side)
{
    int x0 = 28, x1 = -1, y0 = 28, y1 = -1;
    double mass = 0.0, mx = 0.0, my = 0.0;

    for (int y = 0; y < 28; y++) {
        for (int x = 0; x < 28; x++) {
            int v = img[y * 28 + x];

            if (v == 0)
                continue;
            x0 = x < x0 ? x : x0;
            x1 = x > x1 ? x : x1;
            y0 = y < y0 ? y : y0;
            y1 = y;
            mass += v;
            mx += (double)v * x;
            my += (double)v * y;
        }
    }
    CHECK_INT(x1, >=, 0);
    CHECK_INT(x1 - x0 + 1, <=, 20);
    CHECK_INT(y1 - y0 + 1, <=, 20);
    CHECK_INT((x1 - x0 > y1 - y0 ? x1 - x0 : y1 - y0) + 1, >=, min_side);
    CHECK_NEAR(mx / mass, 14.0, 0.55);
    CHECK_NEAR(my / mass, 14.0, 0.55);
}

static void test_png_pgm_round_trip(void)
{
    const int w = 37, h = 23;
    uint8_t px[37 * 23], *buf;
    uint64_t seed = 7;
    dadc_error_t err;
    image_t img;
    size_t len;

    for (int i = 0; i < w * h; i++)
        px[i] = (uint8_t)rng_next(&seed);
    CHECK_EQ(image_encode_png(px, w, h, &buf, &len, &err), 0);
    CHECK_EQ(image_decode(buf, len, "mem.png", &img, &err), 0);
    CHECK_EQ(img.width, w);
    CHECK_EQ(img.height, h);
    CHECK(memcmp(img.pixels, px, sizeof(px)) == 0);
    free(img.pixels);
    free(buf);

    CHECK_EQ(image_save_png(test_path("rt.png"), px, w, h, &err), 0);
    CHECK_EQ(image_load(test_path("rt.png"), &img, &err), 0);
    CHECK(img.width == w && img.height == h);
    CHECK(memcmp(img.pixels, px, sizeof(px)) == 0);
    free(img.pixels);

    CHECK_EQ(image_save_pgm(test_path("rt.pgm"), px, w, h, &err), 0);
    CHECK_EQ(image_load(test_path("rt.pgm"), &img, &err), 0);
    CHECK(img.width == w && img.height == h);
    CHECK(memcmp(img.pixels, px, sizeof(px)) == 0);
    free(img.pixels);

    /* Nothing left behind but the two files. */
    {
        char cmd[512];

        snprintf(cmd, sizeof(cmd), "test $(ls '%s' | wc -l) -eq 2",
                 test_tmpdir());
        CHECK_EQ(system(cmd), 0);
    }
}

static void test_save_errors(void)
{
    uint8_t px[4] = {0};
    dadc_error_t err;
    image_t img;
    uint8_t *buf;
    size_t len;

    CHECK_EQ(image_save_png(test_path("no/dir.png"), px, 2, 2, &err),
             -ENOENT);
    CHECK_CONTAINS(err.msg, "no/dir.png");
    CHECK_EQ(image_save_pgm(test_path("no/dir.pgm"), px, 2, 2, &err),
             -ENOENT);
    CHECK_EQ(image_save_pgm(test_path("zero.pgm"), px, 0, 2, &err),
             DADC_ERANGE);
    CHECK_EQ(image_encode_png(px, 2, IMAGE_MAX_SIDE + 1, &buf, &len, &err),
             DADC_ERANGE);
    CHECK(buf == NULL);
    CHECK_EQ(image_load(test_path("absent.png"), &img, &err), -ENOENT);
    CHECK(img.pixels == NULL);
}

/* Digit i as a file of the given kind, read back and converted. */
static void digit_file_to_mnist(int i, int png, uint8_t out[784])
{
    const uint8_t *src = digits.data + (size_t)i * 784;
    const char *path = test_path(png ? "digit.png" : "digit.pgm");
    dadc_error_t err;
    image_t img;

    if (png)
        CHECK_EQ(image_save_png(path, src, 28, 28, &err), 0);
    else
        CHECK_EQ(image_save_pgm(path, src, 28, 28, &err), 0);
    CHECK_EQ(image_load(path, &img, &err), 0);
    CHECK(img.width == 28 && img.height == 28);
    CHECK(memcmp(img.pixels, src, 784) == 0);
    CHECK_EQ(image_to_mnist(img.pixels, 28, 28, out, &err), 0);
    free(img.pixels);
}

static void test_mnist_files_round_trip(void)
{
    double total = 0.0, worst = 0.0;
    int exact = 0;

    for (int i = 0; i < N_DIGITS; i++) {
        const uint8_t *src = digits.data + (size_t)i * 784;
        uint8_t a[784], b[784];
        double d;

        digit_file_to_mnist(i, 1, a);
        digit_file_to_mnist(i, 0, b);
        CHECK(memcmp(a, b, 784) == 0);
        check_mnist_shape(a, 19);
        d = mean_abs_diff(a, src, 784);
        total += d;
        worst = d > worst ? d : worst;
        exact += d == 0.0;
    }
    printf("   MNIST -> file -> MNIST over %d digits: mean |diff| %.3f, "
           "worst %.3f, %d identical\n", N_DIGITS, total / N_DIGITS, worst,
           exact);
    CHECK_INT(exact, >=, N_DIGITS * 8 / 10);
    CHECK_NEAR(total / N_DIGITS, 0.0, 1.0);
}

/*
 * A 28x28 digit enlarged k times, as dark ink (down to ink) on light
 * paper (paper): by pixel replication, or bilinear for smooth edges.
 */
static uint8_t *digit_enlarge(const uint8_t *src, int k, int bilinear,
                              int paper, int ink)
{
    int side = 28 * k;
    uint8_t *big = malloc((size_t)side * side);

    CHECK(big != NULL);
    for (int y = 0; y < side; y++) {
        for (int x = 0; x < side; x++) {
            double fx = (x + 0.5) / k - 0.5, fy = (y + 0.5) / k - 0.5;
            int ix = (int)floor(fx), iy = (int)floor(fy);
            double ax = fx - ix, ay = fy - iy, v = 0.0;

            for (int dy = 0; bilinear && dy < 2; dy++) {
                for (int dx = 0; dx < 2; dx++) {
                    int sx = ix + dx, sy = iy + dy;
                    double wgt = (dx ? ax : 1 - ax) * (dy ? ay : 1 - ay);

                    if (sx >= 0 && sx < 28 && sy >= 0 && sy < 28)
                        v += wgt * src[sy * 28 + sx];
                }
            }
            if (!bilinear)
                v = src[(y / k) * 28 + x / k];
            big[(size_t)y * side + x] =
                (uint8_t)lround(paper - v * (paper - ink) / 255);
        }
    }
    return big;
}

/* Mean and worst difference to the originals over n digits. */
static void enlarged_compare(int n, int bilinear, int paper, int ink,
                             double *mean, double *worst, double *other)
{
    *mean = *worst = *other = 0.0;
    for (int i = 0; i < n; i++) {
        const uint8_t *src = digits.data + (size_t)i * 784;
        uint8_t *big = digit_enlarge(src, 10, bilinear, paper, ink);
        uint8_t out[784];
        dadc_error_t err;
        double d;

        CHECK_EQ(image_to_mnist(big, 280, 280, out, &err), 0);
        check_mnist_shape(out, 19);
        d = mean_abs_diff(out, src, 784);
        *mean += d / n;
        *worst = d > *worst ? d : *worst;
        *other += mean_abs_diff(out, src + 784, 784) / n;
        free(big);
    }
}

static void test_enlarged_inverted(void)
{
    double mean, worst, other;

    /* Replicated pixels: area averaging undoes it almost exactly, and the
     * gray paper and gray ink are stretched back to 0..255. */
    enlarged_compare(100, 0, 235, 20, &mean, &worst, &other);
    printf("   280x280 replicated, ink 20 on paper 235: mean |diff| "
           "%.3f, worst %.3f\n", mean, worst);
    CHECK_NEAR(mean, 0.0, 0.5);
    CHECK_NEAR(worst, 0.0, 2.0);

    /* Bilinear: edges spread by half a source pixel, so the digit comes
     * back a little smaller and softer, but far closer to itself than
     * to another digit. */
    enlarged_compare(100, 1, 255, 0, &mean, &worst, &other);
    printf("   280x280 bilinear, black on white: mean |diff| %.2f, worst "
           "%.2f (vs the next digit: %.2f)\n", mean, worst, other);
    CHECK_NEAR(mean, 0.0, 10.0);
    CHECK_NEAR(worst, 0.0, 25.0);
    CHECK(other > 3 * mean);
}

/* Pencil on gray paper reads the same as black ink on white. */
static void test_low_contrast(void)
{
    const uint8_t *src = digits.data + 5 * 784;
    uint8_t *a = digit_enlarge(src, 10, 1, 255, 0);
    uint8_t *b = digit_enlarge(src, 10, 1, 200, 120);
    uint8_t oa[784], ob[784];
    dadc_error_t err;

    CHECK_EQ(image_to_mnist(a, 280, 280, oa, &err), 0);
    CHECK_EQ(image_to_mnist(b, 280, 280, ob, &err), 0);
    CHECK_NEAR(mean_abs_diff(oa, ob, 784), 0.0, 1.0);
    free(a);
    free(b);

    /* Marks only IMAGE_INK_MIN_CONTRAST - 1 levels from the paper. */
    b = digit_enlarge(src, 2, 0, 200, 200 - IMAGE_INK_MIN_CONTRAST + 1);
    CHECK_EQ(image_to_mnist(b, 56, 56, ob, &err), DADC_EEMPTY);
    free(b);
}

/* Paper with seeded noise reads like clean paper. */
static void test_noisy_paper(void)
{
    uint64_t seed = 99;
    double total = 0.0;

    for (int i = 0; i < 20; i++) {
        const uint8_t *src = digits.data + (size_t)i * 784;
        uint8_t *clean = digit_enlarge(src, 10, 1, 255, 0);
        uint8_t *noisy = digit_enlarge(src, 10, 1, 225, 20);
        uint8_t oc[784], on[784];
        dadc_error_t err;

        /* Roughly normal noise, sigma about 5 levels. */
        for (size_t k = 0; k < 280 * 280; k++) {
            int r = 0;

            for (int j = 0; j < 4; j++)
                r += (int)(rng_next(&seed) % 9) - 4;
            noisy[k] = (uint8_t)(noisy[k] + r < 0 ? 0 : noisy[k] + r);
        }
        CHECK_EQ(image_to_mnist(clean, 280, 280, oc, &err), 0);
        CHECK_EQ(image_to_mnist(noisy, 280, 280, on, &err), 0);
        check_mnist_shape(on, 19);
        total += mean_abs_diff(oc, on, 784) / 20;
        free(clean);
        free(noisy);
    }
    printf("   noisy gray paper vs clean white: mean |diff| %.2f\n",
           total);
    /* Faint edges sink below the noise floor and the noisiest pixel sets
     * full strength, so the digit is a little thinner and dimmer. */
    CHECK_NEAR(total, 0.0, 6.0);
}

/* A big dark-on-light drawing through PNG and PGM files. */
static void test_drawing_files(void)
{
    const uint8_t *src = digits.data + 7 * 784;
    uint8_t *big = digit_enlarge(src, 10, 1, 250, 30);
    uint8_t direct[784], out[784];
    const char *names[2] = {"big.png", "big.pgm"};
    dadc_error_t err;

    CHECK_EQ(image_to_mnist(big, 280, 280, direct, &err), 0);
    CHECK_EQ(image_save_png(test_path(names[0]), big, 280, 280, &err), 0);
    CHECK_EQ(image_save_pgm(test_path(names[1]), big, 280, 280, &err), 0);
    for (int i = 0; i < 2; i++) {
        image_t img;

        CHECK_EQ(image_load(test_path(names[i]), &img, &err), 0);
        CHECK(img.width == 280 && img.height == 280);
        CHECK_EQ(image_to_mnist(img.pixels, img.width, img.height, out,
                                &err), 0);
        CHECK(memcmp(out, direct, 784) == 0);
        free(img.pixels);
    }
    free(big);
}

static void test_tiny_drawing(void)
{
    /* A 1x5 stroke in a 5x7 canvas: becomes a 4x20 bar, centred. */
    uint8_t canvas[7 * 5] = {0}, out[784];
    dadc_error_t err;
    int cols = 0;

    for (int y = 1; y < 6; y++)
        canvas[y * 5 + 2] = 255;
    CHECK_EQ(image_to_mnist(canvas, 5, 7, out, &err), 0);
    check_mnist_shape(out, 20);
    for (int x = 0; x < 28; x++)
        cols += out[14 * 28 + x] == 255;
    CHECK_EQ(cols, 4);
    CHECK_EQ(out[5 * 28 + 13], 255);
    CHECK_EQ(out[24 * 28 + 16], 255);
    CHECK_EQ(out[4 * 28 + 14], 0);
    CHECK_EQ(out[14 * 28 + 12], 0);

    /* One gray pixel: a full-strength 20x20 square. */
    memset(canvas, 0, sizeof(canvas));
    canvas[3 * 5 + 1] = 200;
    CHECK_EQ(image_to_mnist(canvas, 5, 7, out, &err), 0);
    check_mnist_shape(out, 20);
    CHECK_EQ(out[5 * 28 + 5], 255);
    CHECK_EQ(out[24 * 28 + 24], 255);
    CHECK_EQ(out[4 * 28 + 4], 0);
    CHECK_EQ(out[25 * 28 + 25], 0);

    /* A 1x1 drawing that is all ink reads as paper: empty. */
    CHECK_EQ(image_to_mnist(canvas + 16, 1, 1, out, &err), DADC_EEMPTY);
}

static void test_empty_and_bad_drawings(void)
{
    uint8_t *blank = malloc(300 * 200), out[784];
    dadc_error_t err;

    CHECK(blank != NULL);
    memset(blank, 0, 300 * 200);
    CHECK_EQ(image_to_mnist(blank, 300, 200, out, &err), DADC_EEMPTY);
    CHECK_CONTAINS(err.msg, "empty");
    memset(blank, 255, 300 * 200);
    CHECK_EQ(image_to_mnist(blank, 300, 200, out, &err), DADC_EEMPTY);
    memset(blank, 128, 300 * 200);
    CHECK_EQ(image_to_mnist(blank, 300, 200, out, &err), DADC_EEMPTY);

    /* Faint dust on white paper, too little to show at 28x28. */
    memset(blank, 255, 300 * 200);
    blank[150 * 300 + 17] = 254;
    blank[10 * 300 + 200] = 254;
    CHECK_EQ(image_to_mnist(blank, 300, 200, out, &err), DADC_EEMPTY);

    CHECK_EQ(image_to_mnist(blank, 0, 200, out, &err), DADC_ERANGE);
    CHECK_EQ(image_to_mnist(blank, 300, -1, out, &err), DADC_ERANGE);
    CHECK_EQ(image_to_mnist(NULL, 3, 3, out, &err), DADC_ERANGE);
    CHECK_EQ(image_to_mnist(blank, IMAGE_MAX_SIDE + 1, 1, out, &err),
             DADC_ERANGE);
    free(blank);
}

/* A wide drawing keeps its aspect ratio: 20 px wide, 5 px high. */
static void test_aspect_ratio(void)
{
    uint8_t *canvas = calloc(100 * 400, 1), out[784];
    dadc_error_t err;
    int rows = 0, cols = 0;

    CHECK(canvas != NULL);
    for (int y = 40; y < 60; y++)
        for (int x = 100; x < 180; x++)
            canvas[y * 400 + x] = 255;
    CHECK_EQ(image_to_mnist(canvas, 400, 100, out, &err), 0);
    for (int i = 0; i < 28; i++) {
        rows += out[i * 28 + 14] != 0;
        cols += out[14 * 28 + i] != 0;
    }
    CHECK_EQ(cols, 20);
    CHECK_EQ(rows, 5);
    check_mnist_shape(out, 20);
    free(canvas);
}

/* Write pixels with libpng directly, in a colour type of our choosing. */
typedef struct png_mem {
    uint8_t *buf;
    size_t len;
} png_mem_t;

static void png_mem_write_cb(png_structp png, png_bytep data, size_t n)
{
    png_mem_t *m = png_get_io_ptr(png);

    m->buf = realloc(m->buf, m->len + n);
    CHECK(m->buf != NULL);
    memcpy(m->buf + m->len, data, n);
    m->len += n;
}

static void png_mem_flush_cb(png_structp png)
{
    (void)png;
}

static png_mem_t png_custom(int w, int h, int depth, int ctype,
                            int interlace, const uint8_t *rowdata,
                            const png_color *palette, int npal,
                            const uint8_t *trns, int ntrns)
{
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL,
                                              NULL, NULL);
    png_infop info = png_create_info_struct(png);
    size_t rowbytes;
    png_mem_t m = {NULL, 0};

    CHECK(png != NULL && info != NULL);
    png_set_write_fn(png, &m, png_mem_write_cb, png_mem_flush_cb);
    png_set_IHDR(png, info, w, h, depth, ctype, interlace,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (palette)
        png_set_PLTE(png, info, palette, npal);
    if (trns)
        png_set_tRNS(png, info, trns, ntrns, NULL);
    png_write_info(png, info);
    rowbytes = png_get_rowbytes(png, info);
    {
        png_bytep rows[16];

        CHECK_INT(h, <=, 16);
        for (int y = 0; y < h; y++)
            rows[y] = (png_bytep)rowdata + (size_t)y * rowbytes;
        png_write_image(png, rows);
    }
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return m;
}

static void png_expect(png_mem_t m, int w, int h, const uint8_t *want)
{
    dadc_error_t err;
    image_t img;

    CHECK_EQ(image_decode(m.buf, m.len, "custom.png", &img, &err), 0);
    CHECK_EQ(img.width, w);
    CHECK_EQ(img.height, h);
    for (int i = 0; i < w * h; i++)
        CHECK_NEAR(img.pixels[i], want[i], 1);
    free(img.pixels);
    free(m.buf);
}

static void test_png_colour_types(void)
{
    static const uint8_t rgb[] = {10, 10, 10, 200, 200, 200, 255, 0, 0};
    static const uint8_t rgba[] = {10, 10, 10, 255, 50, 50, 50, 0,
                                   0, 0, 0, 128};
    static const uint8_t ga[] = {0, 255, 0, 0, 100, 128, 255, 128};
    static const uint8_t g16[] = {0, 0, 0x80, 0x80, 0xff, 0xff};
    static const uint8_t g1[] = {0xa0};  /* 1 0 1 0 */
    static const uint8_t pal_idx[] = {0x1b};  /* 0 1 2 3, 2 bits each */
    static const png_color pal[4] = {{0, 0, 0}, {255, 255, 255},
                                     {90, 90, 90}, {0, 0, 0}};
    static const uint8_t pal_trns[4] = {255, 255, 255, 0};
    static const uint8_t want_rgb[] = {10, 200, 54};
    static const uint8_t want_rgba[] = {10, 255, 127};
    static const uint8_t want_ga[] = {0, 255, 178, 255};
    static const uint8_t want_g16[] = {0, 128, 255};
    static const uint8_t want_g1[] = {255, 0, 255, 0};
    static const uint8_t want_pal[] = {0, 255, 90, 255};
    uint8_t il[9 * 9], g2[2];

    png_expect(png_custom(3, 1, 8, PNG_COLOR_TYPE_RGB, 0, rgb, NULL, 0,
                          NULL, 0), 3, 1, want_rgb);
    png_expect(png_custom(3, 1, 8, PNG_COLOR_TYPE_RGB_ALPHA, 0, rgba,
                          NULL, 0, NULL, 0), 3, 1, want_rgba);
    png_expect(png_custom(2, 2, 8, PNG_COLOR_TYPE_GRAY_ALPHA, 0, ga, NULL,
                          0, NULL, 0), 2, 2, want_ga);
    png_expect(png_custom(3, 1, 16, PNG_COLOR_TYPE_GRAY, 0, g16, NULL, 0,
                          NULL, 0), 3, 1, want_g16);
    png_expect(png_custom(4, 1, 1, PNG_COLOR_TYPE_GRAY, 0, g1, NULL, 0,
                          NULL, 0), 4, 1, want_g1);
    png_expect(png_custom(4, 1, 2, PNG_COLOR_TYPE_PALETTE, 0, pal_idx, pal,
                          4, pal_trns, 4), 4, 1, want_pal);

    /* Gray with a transparent value: that value becomes white. */
    g2[0] = 7;
    g2[1] = 9;
    {
        png_color_16 tc = {0, 0, 0, 0, 7};
        png_structp png = NULL;
        png_mem_t m = {NULL, 0};
        png_infop info;
        png_bytep row = g2;
        static const uint8_t want[] = {255, 9};

        png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL,
                                      NULL);
        info = png_create_info_struct(png);
        png_set_write_fn(png, &m, png_mem_write_cb, png_mem_flush_cb);
        png_set_IHDR(png, info, 2, 1, 8, PNG_COLOR_TYPE_GRAY, 0, 0, 0);
        png_set_tRNS(png, info, NULL, 0, &tc);
        png_write_info(png, info);
        png_write_rows(png, &row, 1);
        png_write_end(png, NULL);
        png_destroy_write_struct(&png, &info);
        png_expect(m, 2, 1, want);
    }

    /* Adam7 interlacing. */
    for (int i = 0; i < 81; i++)
        il[i] = (uint8_t)(i * 3);
    png_expect(png_custom(9, 9, 8, PNG_COLOR_TYPE_GRAY,
                          PNG_INTERLACE_ADAM7, il, NULL, 0, NULL, 0), 9, 9,
               il);
}

static uint32_t crc32_calc(const uint8_t *p, size_t n)
{
    uint32_t c = 0xffffffffu;

    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
    }
    return c ^ 0xffffffffu;
}

static void be32_put(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* A copy of png with IHDR's width and height replaced, CRC fixed. */
static uint8_t *png_resized(const uint8_t *png, size_t len, uint32_t w,
                            uint32_t h)
{
    uint8_t *p = malloc(len);

    CHECK(p != NULL);
    memcpy(p, png, len);
    CHECK(memcmp(p + 12, "IHDR", 4) == 0);
    be32_put(p + 16, w);
    be32_put(p + 20, h);
    be32_put(p + 29, crc32_calc(p + 12, 17));
    return p;
}

static int decode_refused(const uint8_t *buf, size_t len, const char *name)
{
    dadc_error_t err;
    image_t img;
    int rc;

    dadc_error_clear(&err);
    rc = image_decode(buf, len, name, &img, &err);
    if (rc == 0) {
        free(img.pixels);
        return 0;
    }
    CHECK_EQ(err.code, rc);
    CHECK_CONTAINS(err.msg, name);
    CHECK(img.pixels == NULL);
    return rc;
}

static void test_png_malformed(void)
{
    const uint8_t *src = digits.data + 784;
    uint8_t *png, *bad;
    size_t len;
    dadc_error_t err;
    int flips_refused = 0;

    CHECK_EQ(image_encode_png(src, 28, 28, &png, &len, &err), 0);

    /* Cut at every length short of the whole file. */
    for (size_t n = 0; n < len; n++) {
        bad = malloc(n + 1);
        memcpy(bad, png, n);
        CHECK_INT(decode_refused(bad, n, "cut.png"), <, 0);
        free(bad);
    }

    /* Every single byte changed: the CRCs catch all of them. */
    bad = malloc(len);
    for (size_t i = 0; i < len; i++) {
        memcpy(bad, png, len);
        bad[i] ^= 0x5a;
        flips_refused += decode_refused(bad, len, "flip.png") < 0;
    }
    free(bad);
    CHECK_EQ(flips_refused, (int)len);

    /* Sizes over the limit never reach an allocation. */
    bad = png_resized(png, len, IMAGE_MAX_SIDE + 1, 28);
    CHECK_EQ(decode_refused(bad, len, "wide.png"), DADC_ELIMIT);
    free(bad);
    bad = png_resized(png, len, 28, 0x7fffffffu);
    CHECK_EQ(decode_refused(bad, len, "tall.png"), DADC_ELIMIT);
    free(bad);
    bad = png_resized(png, len, 0xffffffffu, 0xffffffffu);
    CHECK_INT(decode_refused(bad, len, "huge.png"), <, 0);
    free(bad);
    bad = png_resized(png, len, 0, 28);
    CHECK_INT(decode_refused(bad, len, "zero.png"), <, 0);
    free(bad);

    /* Within the limit but with far too little data for its size. */
    bad = png_resized(png, len, IMAGE_MAX_SIDE, 64);
    CHECK_INT(decode_refused(bad, len, "short.png"), <, 0);
    free(bad);

    /* Bytes after IEND are ignored by PNG readers; just no crash. */
    bad = malloc(len + 5);
    memcpy(bad, png, len);
    memcpy(bad + len, "junk!", 5);
    decode_refused(bad, len + 5, "tail.png");
    free(bad);
    free(png);
}

static void test_png_message(void)
{
    uint8_t *png, *bad;
    size_t len;
    dadc_error_t err;
    image_t img;

    CHECK_EQ(image_encode_png(digits.data, 28, 28, &png, &len, &err), 0);
    bad = png_resized(png, len, 20000, 28);
    CHECK_EQ(image_decode(bad, len, "big.png", &img, &err), DADC_ELIMIT);
    CHECK_CONTAINS(err.msg, "big.png: PNG is 20000x28; sides over 16384");
    free(bad);

    CHECK_EQ(image_decode(png, len / 2, "half.png", &img, &err),
             DADC_ETRUNC);
    CHECK_CONTAINS(err.msg, "half.png: bad PNG: truncated");
    CHECK_EQ(image_decode(png, 5, "five.png", &img, &err), DADC_ETRUNC);
    CHECK_EQ(image_decode((const uint8_t *)"GIF89a", 6, "x.gif", &img,
                          &err), DADC_EFORMAT);
    CHECK_CONTAINS(err.msg, "x.gif: not a PNG or PGM file");
    CHECK_EQ(image_decode(png, 0, "nothing", &img, &err), DADC_ETRUNC);
    free(png);
}

/* The process's peak resident size so far, in KiB. */
static long maxrss_kib(void)
{
    struct rusage ru;

    CHECK_EQ(getrusage(RUSAGE_SELF, &ru), 0);
    return ru.ru_maxrss;
}

/*
 * The first count bytes of png followed by a chunk of the given type
 * whose length field says length, with only 100 bytes of data after it.
 */
static uint8_t *png_overlong_chunk(const uint8_t *png, size_t count,
                                   const char *type, uint32_t length,
                                   size_t *out_len)
{
    uint8_t *p = malloc(count + 8 + 100);

    CHECK(p != NULL);
    memcpy(p, png, count);
    be32_put(p + count, length);
    memcpy(p + count + 4, type, 4);
    memset(p + count + 8, 'x', 100);
    *out_len = count + 8 + 100;
    return p;
}

/* Offset of the first chunk of the given type in png. */
static size_t png_chunk_find(const uint8_t *png, size_t len,
                             const char *type)
{
    size_t pos = 8;

    while (pos + 8 <= len && memcmp(png + pos + 4, type, 4) != 0)
        pos += 12 + ((size_t)png[pos] << 24 | (size_t)png[pos + 1] << 16 |
                     (size_t)png[pos + 2] << 8 | png[pos + 3]);
    CHECK(pos + 8 <= len);
    return pos;
}

/*
 * A chunk whose length field runs past the end of the file is refused
 * as truncated before anything of that size is allocated, whichever
 * chunk it is: the peak resident size does not grow by the gigabytes
 * the length fields claim.
 */
static void test_png_chunk_overlong(void)
{
    static const char *types[] = {"tEXt", "zTXt", "iCCP", "IDAT", "prVt"};
    static const uint32_t lengths[] = {0x7fffffffu, 0x40000000u, 5000};
    long before = maxrss_kib();
    uint8_t *png, *bad;
    size_t len, blen, idat;
    dadc_error_t err;
    image_t img;

    CHECK_EQ(image_encode_png(digits.data, 28, 28, &png, &len, &err), 0);
    for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
        for (size_t k = 0; k < 3; k++) {
            bad = png_overlong_chunk(png, 33, types[t], lengths[k], &blen);
            CHECK_EQ(image_decode(bad, blen, "long.png", &img, &err),
                     DADC_ETRUNC);
            CHECK_CONTAINS(err.msg, "long.png: bad PNG: truncated");
            CHECK_CONTAINS(err.msg, types[t]);
            free(bad);
        }
    }

    /* The length of IHDR itself, and of the real IDAT, made too big. */
    bad = malloc(len);
    memcpy(bad, png, len);
    be32_put(bad + 8, 0x7fffffffu);
    CHECK_EQ(image_decode(bad, len, "ihdr.png", &img, &err), DADC_ETRUNC);
    CHECK_CONTAINS(err.msg, "IHDR");
    memcpy(bad, png, len);
    idat = png_chunk_find(png, len, "IDAT");
    be32_put(bad + idat, 0x7ffffff0u);
    CHECK_EQ(image_decode(bad, len, "idat.png", &img, &err), DADC_ETRUNC);
    CHECK_CONTAINS(err.msg, "IDAT");

    /* Over 2^31 - 1 is not a PNG length at all. */
    be32_put(bad + idat, 0x80000000u);
    CHECK_EQ(image_decode(bad, len, "idat.png", &img, &err), DADC_EFORMAT);
    free(bad);
    free(png);
    CHECK_INT(maxrss_kib() - before, <, 64 * 1024);
}

/* A PGM input and what image_decode must answer. */
typedef struct pgm_case {
    const char *text;
    size_t len;  /* 0: strlen(text) */
    int code;
    const char *msg;
} pgm_case_t;

static const pgm_case_t pgm_cases[] = {
    {"P5\n2 2\n255\n\x01\x02\x03", 0, DADC_ETRUNC,
     "3 bytes of image data, 4 pixels need 4"},
    {"P5\n2 2\n255\n\x01\x02\x03\x04\x05", 0, DADC_EFORMAT,
     "1 bytes after the image data"},
    {"P5\n0 2\n255\n", 0, DADC_ERANGE, "width 0"},
    {"P5\n99999 2\n255\n", 0, DADC_ELIMIT, "width is over 16384"},
    {"P5\n2 16385\n255\n", 0, DADC_ELIMIT, "height is over 16384"},
    {"P5\n2 2\n70000\n", 0, DADC_ERANGE, "maxval is over 65535"},
    {"P5\n2 2\n0\n", 0, DADC_ERANGE, "maxval 0"},
    {"P5\n2 2\n255", 0, DADC_ETRUNC, "no image data"},
    {"P5\n2 2\n", 0, DADC_ETRUNC, "before the maxval"},
    {"P5", 0, DADC_ETRUNC, "before the width"},
    {"P5\n2x2\n255\n", 0, DADC_EFORMAT, "no space before the height"},
    {"P52 2 255 ", 0, DADC_EFORMAT, "no space before the width"},
    {"P5\n-2 2\n255\n", 0, DADC_EFORMAT, "expected the width"},
    {"P5\n2 2\n255x\x01\x02\x03\x04", 0, DADC_EFORMAT, "after maxval"},
    {"P5\n2 1\n10\n\x05\x0b", 0, DADC_ERANGE, "sample 11"},
    {"P5\n1 1\n1000\n\x03\xe9", 0, DADC_ERANGE, "sample 1001"},
    {"P2\n2 2\n255\n1 2 3", 0, DADC_ETRUNC, "need at least 7"},
    {"P2\n2 2\n255\n1 2 3 x", 0, DADC_EFORMAT, "expected the next sample"},
    {"P2\n2 2\n255\n1 2 3 4 5", 0, DADC_EFORMAT, "after the image data"},
    {"P2\n2 1\n10\n5 11", 0, DADC_ERANGE, "next sample is over 10"},
    {"P2\n2 1\n255\n1 # no\n2\n", 0, DADC_EFORMAT, "found byte 0x23"},
    {"P6\n1 1\n255\n\x01\x02\x03", 0, DADC_EFORMAT, "P6 files are not"},
    {"P5\n1 1\n255\n\x00", 12, DADC_OK, NULL},
    {"P5 # c\n#more\n 2\t1 #x\n255\n\x10\xff", 0, DADC_OK, NULL},
    {"P2\n3 1\n65535\n0 32768 65535\n", 0, DADC_OK, NULL},
    {"P5\n2 1\n1000\n\x03\xe8\x00\x00", 16, DADC_OK, NULL},
};

static void test_pgm_cases(void)
{
    size_t n = sizeof(pgm_cases) / sizeof(pgm_cases[0]);

    for (size_t i = 0; i < n; i++) {
        const pgm_case_t *c = &pgm_cases[i];
        size_t len = c->len ? c->len : strlen(c->text);
        dadc_error_t err;
        image_t img;
        int rc;

        printf("   case %zu\n", i);
        dadc_error_clear(&err);
        rc = image_decode((const uint8_t *)c->text, len, "case.pgm", &img,
                          &err);
        CHECK_EQ(rc, c->code);
        if (rc == 0) {
            free(img.pixels);
            continue;
        }
        CHECK(img.pixels == NULL);
        CHECK_CONTAINS(err.msg, "case.pgm: ");
        CHECK_CONTAINS(err.msg, c->msg);
    }
}

static void test_pgm_values(void)
{
    static const char p2[] = "P2\n3 1\n65535\n0 32768 65535\n";
    static const char p5[] = "P5\n2 1\n1000\n\x03\xe8\x01\xf4";
    dadc_error_t err;
    image_t img;

    CHECK_EQ(image_decode((const uint8_t *)p2, strlen(p2), "p2", &img,
                          &err), 0);
    CHECK(img.width == 3 && img.height == 1);
    CHECK_EQ(img.pixels[0], 0);
    CHECK_EQ(img.pixels[1], 128);
    CHECK_EQ(img.pixels[2], 255);
    free(img.pixels);
    CHECK_EQ(image_decode((const uint8_t *)p5, sizeof(p5) - 1, "p5", &img,
                          &err), 0);
    CHECK_EQ(img.pixels[0], 255);
    CHECK_EQ(img.pixels[1], 128);
    free(img.pixels);
}

static void test_pgm_truncated(void)
{
    const char *path = test_path("t.pgm");
    dadc_error_t err;
    size_t len;
    char *pgm;

    CHECK_EQ(image_save_pgm(path, digits.data, 28, 28, &err), 0);
    pgm = test_read_file(path, &len);
    for (size_t n = 0; n < len; n++)
        CHECK_INT(decode_refused((uint8_t *)pgm, n, "cut.pgm"), <, 0);
    free(pgm);
}

/* Seeded garbage, half of it behind a PNG or PGM signature. */
static void test_random_garbage(void)
{
    static const char *heads[] = {"\x89PNG\r\n\x1a\n", "P5\n", "P2\n",
                                  "P5 28 28 255\n"};
    uint64_t seed = 0xdadc;
    uint8_t buf[512], *png;
    size_t png_len;
    dadc_error_t err;
    int accepted = 0;

    CHECK_EQ(image_encode_png(digits.data + 2 * 784, 28, 28, &png, &png_len,
                              &err), 0);
    for (int iter = 0; iter < 20000; iter++) {
        size_t len = rng_next(&seed) % sizeof(buf);
        int kind = (int)(rng_next(&seed) % 6);

        for (size_t i = 0; i < len; i++)
            buf[i] = (uint8_t)rng_next(&seed);
        if (kind < 4) {
            size_t h = strlen(heads[kind]);

            memcpy(buf, heads[kind], h < len ? h : len);
        } else if (kind == 4 && len > 0) {
            /* A real PNG with a few bytes changed. */
            len = png_len < sizeof(buf) ? png_len : sizeof(buf);
            memcpy(buf, png, len);
            for (int k = 0; k < 3; k++)
                buf[rng_next(&seed) % len] = (uint8_t)rng_next(&seed);
        }
        accepted += decode_refused(buf, len, "garbage") == 0;
    }
    free(png);
    printf("   %d of 20000 garbage inputs decoded\n", accepted);
    CHECK_INT(accepted, <, 200);
}

/* Recompute every chunk's CRC so changes reach the decoder proper. */
static void png_crcs_fix(uint8_t *p, size_t len)
{
    size_t pos = 8;

    while (len - pos >= 12) {
        uint32_t n = (uint32_t)p[pos] << 24 | (uint32_t)p[pos + 1] << 16 |
                     (uint32_t)p[pos + 2] << 8 | p[pos + 3];

        if (n > len - pos - 12)
            return;
        be32_put(p + pos + 8 + n, crc32_calc(p + pos + 4, 4 + (size_t)n));
        pos += 12 + (size_t)n;
    }
}

/*
 * Seeded mutations of PNGs in several colour types, with the CRCs
 * repaired: bad IHDR fields, broken zlib streams, wrong filter bytes,
 * bad palettes. Some decode (a changed pixel is still a PNG), the rest
 * must be refused cleanly.
 */
static void test_png_mutated(void)
{
    static const uint8_t rgba[] = {10, 10, 10, 255, 50, 50, 50, 0,
                                   0, 0, 0, 128};
    static const uint8_t pal_idx[] = {0x1b};
    static const png_color pal[4] = {{0, 0, 0}, {255, 255, 255},
                                     {90, 90, 90}, {0, 0, 0}};
    static const uint8_t pal_trns[4] = {255, 255, 255, 0};
    static const uint8_t g16[] = {0, 0, 0x80, 0x80, 0xff, 0xff};
    png_mem_t seeds[5];
    uint64_t seed = 0x5eed;
    dadc_error_t err;
    uint8_t il[81];
    int accepted = 0, refused = 0;

    for (int i = 0; i < 81; i++)
        il[i] = (uint8_t)(i * 3);
    CHECK_EQ(image_encode_png(digits.data, 28, 28, &seeds[0].buf,
                              &seeds[0].len, &err), 0);
    seeds[1] = png_custom(3, 1, 8, PNG_COLOR_TYPE_RGB_ALPHA, 0, rgba, NULL,
                          0, NULL, 0);
    seeds[2] = png_custom(4, 1, 2, PNG_COLOR_TYPE_PALETTE, 0, pal_idx, pal,
                          4, pal_trns, 4);
    seeds[3] = png_custom(9, 9, 8, PNG_COLOR_TYPE_GRAY,
                          PNG_INTERLACE_ADAM7, il, NULL, 0, NULL, 0);
    seeds[4] = png_custom(3, 1, 16, PNG_COLOR_TYPE_GRAY, 0, g16, NULL, 0,
                          NULL, 0);

    for (int iter = 0; iter < 25000; iter++) {
        const png_mem_t *sd = &seeds[iter % 5];
        uint8_t *buf = malloc(sd->len);
        int changes = 1 + (int)(rng_next(&seed) % 3);

        CHECK(buf != NULL);
        memcpy(buf, sd->buf, sd->len);
        for (int k = 0; k < changes; k++)
            buf[8 + rng_next(&seed) % (sd->len - 8)] =
                (uint8_t)rng_next(&seed);
        png_crcs_fix(buf, sd->len);
        if (decode_refused(buf, sd->len, "mutant.png") == 0)
            accepted++;
        else
            refused++;
        free(buf);
    }
    for (int i = 0; i < 5; i++)
        free(seeds[i].buf);
    printf("   25000 mutated PNGs: %d decoded, %d refused\n", accepted,
           refused);
    CHECK_INT(accepted, >, 0);
    CHECK_INT(refused, >, 0);
}

int main(void)
{
    test_init("test_image", 240);
    digits_load();
    TEST_RUN(test_png_pgm_round_trip);
    TEST_RUN(test_save_errors);
    TEST_RUN(test_mnist_files_round_trip);
    TEST_RUN(test_enlarged_inverted);
    TEST_RUN(test_low_contrast);
    TEST_RUN(test_noisy_paper);
    TEST_RUN(test_drawing_files);
    TEST_RUN(test_tiny_drawing);
    TEST_RUN(test_empty_and_bad_drawings);
    TEST_RUN(test_aspect_ratio);
    TEST_RUN(test_png_colour_types);
    TEST_RUN(test_png_malformed);
    TEST_RUN(test_png_message);
    TEST_RUN(test_png_chunk_overlong);
    TEST_RUN(test_png_mutated);
    TEST_RUN(test_pgm_cases);
    TEST_RUN(test_pgm_values);
    TEST_RUN(test_pgm_truncated);
    TEST_RUN(test_random_garbage);
    idx_free(&digits);
    return test_finish();
}
