/*
 * The drawing client's canvas (rasteriser, undo), its pending-flag file
 * and its replay-script parser. No display needed.
 */
#include "test_util.h"

#include <errno.h>
#include <stdint.h>
#include <sys/stat.h>

#include "canvas.h"
#include "idx.h"
#include "image.h"
#include "pending.h"
#include "replay.h"

#define SIDE 280

static uint8_t buf_a[SIDE * SIDE];
static uint8_t buf_b[SIDE * SIDE];

static long ink_sum(const uint8_t *buf, int n)
{
    long s = 0;

    for (int i = 0; i < n; i++)
        s += buf[i];
    return s;
}

/* A horizontal capsule: full ink inside, paper outside, a ramp between. */
static void test_capsule_profile(void)
{
    uint8_t img[64 * 64] = {0};

    canvas_capsule_draw(img, 64, 16.0f, 32.0f, 48.0f, 32.0f, 5.0f);
    CHECK_EQ(img[32 * 64 + 32], 255);           /* on the axis */
    CHECK_EQ(img[28 * 64 + 32], 255);           /* 3.5 px off */
    CHECK_EQ(img[24 * 64 + 32], 0);             /* 7.5 px off */
    CHECK_EQ(img[32 * 64 + 5], 0);              /* beyond the cap */
    /* symmetric about the axis (pixel centres at y+0.5) */
    for (int d = 0; d < 8; d++)
        CHECK_EQ(img[(31 - d) * 64 + 30], img[(32 + d) * 64 + 30]);

    /* moved a quarter pixel, the edge row is partly covered */
    memset(img, 0, sizeof(img));
    canvas_capsule_draw(img, 64, 16.0f, 32.25f, 48.0f, 32.25f, 5.0f);
    CHECK_EQ(img[28 * 64 + 32], 255);           /* 3.75 px off */
    CHECK_NEAR(img[27 * 64 + 32], 0.75 * 255, 1.0);   /* 4.75 px off */
    CHECK_EQ(img[26 * 64 + 32], 0);             /* 5.75 px off */
}

/* Edge coverage approximates area: ink total ~ 255 * capsule area. */
static void test_capsule_area(void)
{
    static uint8_t img[200 * 200];
    double r = 12.0, len = 100.0;
    double area = 2.0 * r * len + 3.14159265 * r * r;

    canvas_capsule_draw(img, 200, 50.0f, 100.0f, 150.0f, 100.0f,
                        (float)r);
    CHECK_NEAR(ink_sum(img, 200 * 200) / 255.0, area, area * 0.01);
}

/* Drawing segment by segment gives exactly the full rasterisation. */
static void test_incremental_equals_full(void)
{
    canvas_t c;

    canvas_init(&c, CANVAS_BRUSH_DEFAULT);
    memset(buf_a, 0, sizeof(buf_a));
    CHECK_EQ(canvas_stroke_begin(&c, 0.2f, 0.2f), 0);
    canvas_render_last(&c, buf_a, SIDE);
    for (int i = 1; i <= 40; i++) {
        float t = (float)i / 40.0f;

        CHECK_EQ(canvas_stroke_add(&c, 0.2f + 0.6f * t,
                                   0.2f + 0.5f * t * t), 0);
        canvas_render_last(&c, buf_a, SIDE);
    }
    canvas_stroke_end(&c);
    canvas_render(&c, buf_b, SIDE);
    CHECK(memcmp(buf_a, buf_b, sizeof(buf_a)) == 0);
    CHECK_INT(ink_sum(buf_b, SIDE * SIDE), >, 0);
    canvas_free(&c);
}

/* Undo removes the last stroke; the raster matches a drawing without it. */
static void test_undo(void)
{
    canvas_t c, ref;
    unsigned gen;

    canvas_init(&c, 0.08f);
    canvas_init(&ref, 0.08f);
    CHECK(!canvas_undo(&c));
    canvas_stroke_begin(&c, 0.3f, 0.3f);
    canvas_stroke_add(&c, 0.7f, 0.3f);
    canvas_stroke_begin(&ref, 0.3f, 0.3f);
    canvas_stroke_add(&ref, 0.7f, 0.3f);
    canvas_stroke_begin(&c, 0.5f, 0.2f);
    canvas_stroke_add(&c, 0.5f, 0.9f);
    CHECK_EQ(c.count, 2);

    gen = c.generation;
    CHECK(canvas_undo(&c));
    CHECK_INT(c.generation, !=, gen);
    CHECK_EQ(c.count, 1);
    canvas_render(&c, buf_a, SIDE);
    canvas_render(&ref, buf_b, SIDE);
    CHECK(memcmp(buf_a, buf_b, sizeof(buf_a)) == 0);

    canvas_clear(&c);
    CHECK(canvas_is_empty(&c));
    canvas_render(&c, buf_a, SIDE);
    CHECK_EQ(ink_sum(buf_a, SIDE * SIDE), 0);
    /* adding to a closed stroke is refused */
    CHECK_EQ(canvas_stroke_add(&c, 0.1f, 0.1f), DADC_ERANGE);
    canvas_free(&c);
    canvas_free(&ref);
}

/* Out-of-range and NaN points are clamped, never written outside. */
static void test_clamp(void)
{
    canvas_t c;

    canvas_init(&c, 0.1f);
    CHECK_EQ(canvas_stroke_begin(&c, -5.0f, NAN), 0);
    CHECK_EQ(canvas_stroke_add(&c, 7.0f, 1e30f), 0);
    CHECK(c.strokes[0].points[0].x == 0.0f);
    CHECK(c.strokes[0].points[0].y == 0.0f);
    CHECK(c.strokes[0].points[1].x == 1.0f);
    CHECK(c.strokes[0].points[1].y == 1.0f);
    canvas_render(&c, buf_a, SIDE);
    CHECK_EQ(buf_a[0], 255);
    CHECK_EQ(buf_a[SIDE * SIDE - 1], 255);
    canvas_free(&c);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/*
 * Percentile q (0..1) over the MNIST test images of digit, of the mean
 * ink (in full pixels) per row of rows [r0, r1).
 */
static double mnist_ink_percentile(const idx_file_t *img,
                                   const idx_file_t *lab, int digit,
                                   int r0, int r1, double q)
{
    double *v = malloc(img->count * sizeof(*v));
    size_t n = 0;
    double out;

    CHECK(v != NULL);
    for (size_t i = 0; i < img->count; i++) {
        const uint8_t *p = img->data + i * 784;
        double s = 0;

        if (lab->data[i] != digit)
            continue;
        for (int k = r0 * 28; k < r1 * 28; k++)
            s += p[k] / 255.0;
        v[n++] = s / (r1 - r0);
    }
    qsort(v, n, sizeof(*v), cmp_double);
    out = v[(size_t)(q * (double)(n - 1))];
    free(v);
    return out;
}

/* Our drawing's mean ink per row of rows [r0, r1) once made MNIST-like. */
static double drawing_ink(const canvas_t *c, int r0, int r1)
{
    uint8_t mnist[784];
    double s = 0;

    canvas_render(c, buf_a, SIDE);
    CHECK_EQ(image_to_mnist(buf_a, SIDE, SIDE, mnist, NULL), 0);
    for (int k = r0 * 28; k < r1 * 28; k++)
        s += mnist[k] / 255.0;
    return s / (r1 - r0);
}

/* The default brush makes strokes as wide as MNIST's at 28x28. */
static void test_brush_like_mnist(void)
{
    const char *dir = test_mnist_dir();
    idx_file_t img, lab;
    canvas_t c;
    double one, seven, lo, hi;
    char path[600];

    CHECK(dir != NULL);
    snprintf(path, sizeof(path), "%s/t10k-images-idx3-ubyte", dir);
    CHECK_EQ(idx_load(path, &img, NULL), 0);
    snprintf(path, sizeof(path), "%s/t10k-labels-idx1-ubyte", dir);
    CHECK_EQ(idx_load(path, &lab, NULL), 0);

    /* a one: a single upright stroke; rows 10-17 cross it once */
    canvas_init(&c, CANVAS_BRUSH_DEFAULT);
    canvas_stroke_begin(&c, 0.52f, 0.15f);
    canvas_stroke_add(&c, 0.48f, 0.85f);
    one = drawing_ink(&c, 10, 18);
    lo = mnist_ink_percentile(&img, &lab, 1, 10, 18, 0.10);
    hi = mnist_ink_percentile(&img, &lab, 1, 10, 18, 0.90);
    printf("stroke width of a one: ours %.2f px, MNIST p10-p90 "
           "%.2f-%.2f px\n", one, lo, hi);
    CHECK(one >= lo && one <= hi);

    /* a seven: total ink within MNIST's central 80% of sevens */
    canvas_clear(&c);
    canvas_stroke_begin(&c, 0.25f, 0.22f);
    canvas_stroke_add(&c, 0.75f, 0.23f);
    canvas_stroke_add(&c, 0.60f, 0.52f);
    canvas_stroke_add(&c, 0.47f, 0.80f);
    seven = drawing_ink(&c, 0, 28) * 28;
    lo = mnist_ink_percentile(&img, &lab, 7, 0, 28, 0.10) * 28;
    hi = mnist_ink_percentile(&img, &lab, 7, 0, 28, 0.90) * 28;
    printf("ink of a seven: ours %.1f px, MNIST p10-p90 %.1f-%.1f px\n",
           seven, lo, hi);
    CHECK(seven >= lo && seven <= hi);
    canvas_free(&c);
    idx_free(&img);
    idx_free(&lab);
}

static void image_fill(uint8_t *img, int seed)
{
    for (int i = 0; i < PENDING_IMAGE_BYTES; i++)
        img[i] = (uint8_t)(i * 7 + seed * 31);
}

/* Flags survive a reload, in order, byte for byte; drops rewrite. */
static void test_pending_roundtrip(void)
{
    const char *path = test_path("state/dadc-draw/pending");
    uint8_t img[PENDING_IMAGE_BYTES];
    pending_t p;
    struct stat st;

    CHECK_EQ(pending_open(&p, path, NULL), 0);   /* no file yet */
    CHECK_EQ(p.count, 0);
    for (int k = 0; k < 3; k++) {
        image_fill(img, k);
        CHECK_EQ(pending_push(&p, img, k + 4, NULL), 0);
    }
    CHECK_EQ(pending_push(&p, img, 10, NULL), DADC_ERANGE);
    pending_close(&p);

    CHECK_EQ(pending_open(&p, path, NULL), 0);
    CHECK_EQ(p.count, 3);
    for (int k = 0; k < 3; k++) {
        image_fill(img, k);
        CHECK_EQ(p.items[k].label, k + 4);
        CHECK(memcmp(p.items[k].image, img, sizeof(img)) == 0);
    }
    CHECK_EQ(pending_drop(&p, 1, NULL), 0);
    pending_close(&p);
    CHECK_EQ(pending_open(&p, path, NULL), 0);
    CHECK_EQ(p.count, 2);
    CHECK_EQ(p.items[0].label, 5);

    /* a second user of the same file is turned away while it is open */
    {
        pending_t q;
        dadc_error_t err;

        CHECK_EQ(pending_open(&q, path, &err), DADC_EBUSY);
        CHECK_CONTAINS(err.msg, "another dadc-draw is using it");
    }

    /* an empty list leaves no file behind */
    CHECK_EQ(pending_drop(&p, 2, NULL), 0);
    CHECK(stat(path, &st) != 0 && errno == ENOENT);
    pending_close(&p);

    /* closed, the file is free again */
    CHECK_EQ(pending_open(&p, path, NULL), 0);
    pending_close(&p);
}

/* A damaged file is refused with its line, and left as it was. */
static void test_pending_malformed(void)
{
    static const char *bad[] = {
        "not a pending file\n",
        "dadc-draw pending flags 1\nflag 3 abcd\n",
        "dadc-draw pending flags 1\nflag x 00\n",
        "dadc-draw pending flags 1\nhello\n",
    };
    const char *path = test_path("bad-pending");
    dadc_error_t err;
    pending_t p;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        size_t len;
        char *after;

        test_write_file(path, bad[i], strlen(bad[i]));
        CHECK_EQ(pending_open(&p, path, &err), DADC_EFORMAT);
        CHECK_CONTAINS(err.msg, "bad-pending:");
        after = test_read_file(path, &len);
        CHECK_STR(after, bad[i]);
        free(after);
    }
}

static void test_replay_parse(void)
{
    static const char script[] =
        "# a comment\n"
        "\n"
        "stroke 0.1,0.2 0.3,0.4 # two points\n"
        "stroke-px 140,28\n"
        "  key 7  \n"
        "key ctrl+z\n"
        "key F1\n"
        "wait-ms 250\n"
        "wait-prediction\n"
        "resize 800 600\n"
        "save-mnist /tmp/x y#2.png   # the 28x28 image\n"
        "quit\n";
    replay_t r;

    CHECK_EQ(replay_parse(&r, script, strlen(script), "s", NULL), 0);
    CHECK_EQ(r.count, 10);
    CHECK_EQ(r.cmds[0].op, REPLAY_STROKE);
    CHECK_EQ(r.cmds[0].count, 2);
    CHECK_NEAR(r.cmds[0].points[1].y, 0.4, 1e-6);
    CHECK_EQ(r.cmds[0].line, 3);
    CHECK_NEAR(r.cmds[1].points[0].x, 0.5, 1e-6);
    CHECK_NEAR(r.cmds[1].points[0].y, 0.1, 1e-6);
    CHECK_EQ(r.cmds[2].key, '7');
    CHECK_EQ(r.cmds[3].key, 'z');
    CHECK(r.cmds[3].mod != 0);
    CHECK_EQ(r.cmds[5].a, 250);
    CHECK_EQ(r.cmds[7].a, 800);
    CHECK_EQ(r.cmds[7].b, 600);
    CHECK_STR(r.cmds[8].path, "/tmp/x y#2.png");
    CHECK_EQ(r.cmds[9].op, REPLAY_QUIT);
    replay_free(&r);
}

static void test_replay_errors(void)
{
    static const struct {
        const char *text;
        const char *msg;
    } cases[] = {
        {"stroke\n", "s:1: a stroke needs at least one point"},
        {"\n\nstroke 0.1\n", "s:3: a point is not X,Y"},
        {"stroke 1.5,0.2\n", "s:1: a point lies outside the canvas"},
        {"stroke-px 300,10\n", "s:1: a point lies outside the canvas"},
        {"key nosuchkey\n", "s:1: unknown key name"},
        {"wait-ms -4\n", "s:1: number out of range"},
        {"wait-ms soon\n", "s:1: expected a whole number"},
        {"resize 800\n", "s:1: resize needs W H"},
        {"screenshot\n", "s:1: needs a file name"},
        {"quit now\n", "s:1: takes no arguments"},
        {"jump 3\n", "s:1: unknown command"},
        {"stroke 0.1,0.2\0\n", "s: not a text file"},
    };
    dadc_error_t err;
    replay_t r;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t len = strlen(cases[i].text);

        if (strstr(cases[i].msg, "text file") != NULL)
            len += 2;
        CHECK_EQ(replay_parse(&r, cases[i].text, len, "s", &err),
                 DADC_EFORMAT);
        CHECK_STR(err.msg, cases[i].msg);
    }
    CHECK_EQ(replay_load(&r, test_path("missing"), &err), -ENOENT);
}

int main(void)
{
    test_init("test_draw_canvas", 120);
    TEST_RUN(test_capsule_profile);
    TEST_RUN(test_capsule_area);
    TEST_RUN(test_incremental_equals_full);
    TEST_RUN(test_undo);
    TEST_RUN(test_clamp);
    TEST_RUN(test_brush_like_mnist);
    TEST_RUN(test_pending_roundtrip);
    TEST_RUN(test_pending_malformed);
    TEST_RUN(test_replay_parse);
    TEST_RUN(test_replay_errors);
    return test_finish();
}
