/*
 * dadc-draw against a real dadc-server, under a real X server (Xvfb):
 * a scripted session draws and flags a digit and the server stores it;
 * a flag made while the server is away is delivered once it is back,
 * both to the running client (reconnect) and from the pending file by a
 * later run.
 */
#include "test_util.h"

#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dadc_client.h"
#include "draw_x.h"
#include "e2e_util.h"
#include "image.h"

/* Window size the tests use and where things land in it (ui_layout). */
#define WIN_SIZE "1000x660"
#define CANVAS_X 12
#define CANVAS_Y 12
#define CANVAS_SIDE 558
#define DIGIT_X 596        /* the big predicted digit */
#define DIGIT_Y 46
#define DIGIT_W 252
#define DIGIT_H 110
#define BARS_X 596         /* the probability bars */
#define BARS_Y 206
#define BARS_W 378
#define BARS_H 80

static const char seven[] =
    "stroke 0.25,0.22 0.45,0.22 0.62,0.22 0.75,0.23\n"
    "stroke 0.75,0.23 0.68,0.38 0.60,0.52 0.53,0.66 0.47,0.80\n";
static const char four[] =
    "stroke-px 90,60 70,130 60,160 150,160 190,158\n"
    "stroke-px 150,70 148,150 146,230\n";

static void image_must_load(const char *path, image_t *img)
{
    dadc_error_t e;

    dadc_error_clear(&e);
    if (image_load(path, img, &e) != 0)
        test_fail(__FILE__, __LINE__, "%s", dadc_error_message(&e));
}

/* test_path's buffers rotate: keep a path for the whole test. */
static const char *path_keep(const char *name)
{
    static char kept[16][512];
    static int used;

    CHECK(used < 16);
    snprintf(kept[used], sizeof(kept[used]), "%s", test_path(name));
    return kept[used++];
}

static const char *script_write(const char *name, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Write a script file; returns its path (kept). */
static const char *script_write(const char *name, const char *fmt, ...)
{
    char text[8192];
    const char *path = path_keep(name);
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    CHECK(n > 0 && (size_t)n < sizeof(text));
    test_write_file(path, text, (size_t)n);
    return path;
}

/* Run dadc-draw; fail with its messages unless it exits with 0. */
static void draw_run_ok(const char *const *args, int timeout_s)
{
    char *err;
    int rc = draw_run(args, timeout_s, &err);

    if (rc != 0)
        test_fail(__FILE__, __LINE__, "dadc-draw exited with %d: %s", rc,
                  err);
    free(err);
}

/* The one example stored with label, and the image that was sent. */
static void example_check(const e2e_server_t *s, size_t index, size_t total,
                          int label, const char *annotator,
                          const char *mnist_png)
{
    dadc_client_t *c = e2e_connect(s, "checker");
    Dadc__ListExamplesResponse *page = NULL;
    const Dadc__Example *ex;
    image_t sent;

    CHECK_EQ(dadc_client_list_examples(c, 0, 100, true, &page), 0);
    CHECK_EQ(page->n_examples, total);
    ex = page->examples[index];
    CHECK_EQ(ex->label, label);
    CHECK_STR(ex->annotator, annotator);
    image_must_load(mnist_png, &sent);
    CHECK_EQ(ex->image.len, 784);
    CHECK(memcmp(ex->image.data, sent.pixels, 784) == 0);
    free(sent.pixels);
    dadc__list_examples_response__free_unpacked(page, NULL);
    dadc_client_close(c);
}

/*
 * Draw a seven, wait for the model's answer, flag it as 7: the server
 * stores exactly that image with label 7 under our name, and the
 * screenshot shows the drawing, the predicted digit and the bars.
 */
static void test_draw_predict_flag(void)
{
    e2e_server_t s;
    const char *script;
    image_t shot;
    struct stat st;

    e2e_server_start(&s, test_path("data-a"), NULL);
    script = script_write("a.txt", "wait-connected\n%swait-prediction\n"
                          "wait-ms 200\nscreenshot %s\nsave-mnist %s\n"
                          "key 7\nwait-flags\nwait-ms 300\nscreenshot %s\n"
                          "quit\n", seven, test_path("a-shot.png"),
                          test_path("a-mnist.png"),
                          test_path("a-after.png"));
    {
        const char *args[] = {"--server", s.addr, "--name", "tester",
                              "--pending-file", test_path("a-pending"),
                              "--size", WIN_SIZE, "--replay", script,
                              "--replay-timeout", "60", NULL};

        draw_run_ok(args, 120);
    }
    example_check(&s, 0, 1, 7, "tester", test_path("a-mnist.png"));
    CHECK(stat(test_path("a-pending"), &st) != 0);   /* nothing left */

    image_must_load(test_path("a-shot.png"), &shot);
    CHECK_EQ(shot.width, 1000);
    CHECK_INT(draw_region_variance(&shot, CANVAS_X, CANVAS_Y, CANVAS_SIDE,
                                   CANVAS_SIDE), >, 1000.0);
    /* the digit is drawn dark (offline it is a pale "?") */
    CHECK_INT(draw_region_dark(&shot, DIGIT_X, DIGIT_Y, DIGIT_W, DIGIT_H,
                               160), >, 400);
    CHECK_INT(draw_region_variance(&shot, DIGIT_X, DIGIT_Y, DIGIT_W,
                                   DIGIT_H), >, 500.0);
    /* and at least one probability bar stands up */
    CHECK_INT(draw_region_dark(&shot, BARS_X, BARS_Y, BARS_W, BARS_H, 160),
              >, 300);
    free(shot.pixels);
    e2e_server_stop(&s);
}

static void file_wait(const char *path, pid_t draw, int timeout_s)
{
    struct stat st;

    for (int i = 0; i < timeout_s * 50; i++) {
        if (stat(path, &st) == 0 && st.st_size > 0) {
            usleep(200000);   /* let the writer finish it */
            return;
        }
        if (kill(draw, 0) != 0)
            break;
        usleep(20000);
    }
    test_fail(__FILE__, __LINE__, "%s did not appear", path);
}

/* Flags kept in the pending file: header line plus one per flag. */
static int pending_count(const char *path)
{
    size_t len;
    char *text = test_read_file(path, &len);
    int lines = 0;

    for (size_t i = 0; i < len; i++)
        lines += text[i] == '\n';
    free(text);
    return lines - 1;
}

static void server_restart(e2e_server_t *s, int port)
{
    char listen[32], dir[sizeof(s->data_dir)];
    const char *extra[] = {"--listen", listen, NULL};

    snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
    snprintf(dir, sizeof(dir), "%s", s->data_dir);
    e2e_server_start(s, dir, extra);
    CHECK_EQ(s->port, port);
}

/*
 * The server goes away mid-session. A flag made meanwhile waits in the
 * pending file and reaches the server when it is back: first while the
 * client keeps running (it reconnects by itself), then after the client
 * quit with a flag still pending and a later run delivers it.
 */
static void test_server_gone(void)
{
    const char *pending = path_keep("c-pending"), *script;
    e2e_server_t s;
    struct stat st;
    pid_t draw;
    int port;

    e2e_server_start(&s, test_path("data-c"), NULL);
    port = s.port;
    script = script_write("c1.txt", "wait-connected\n%swait-prediction\n"
        "save-mnist %s\nwait-disconnected\nkey 4\nwait-ms 300\n"
        "screenshot %s\nwait-connected\nwait-flags\n%swait-prediction\n"
        "save-mnist %s\nwait-disconnected\nkey 7\nwait-ms 300\nquit\n",
        four, test_path("c-four.png"), test_path("c-offline.png"), seven,
        test_path("c-seven.png"));
    {
        const char *args[] = {"--server", s.addr, "--name", "tester",
                              "--pending-file", pending, "--size",
                              WIN_SIZE, "--replay", script,
                              "--replay-timeout", "90", NULL};

        draw = draw_spawn(args, test_path("c1-stderr"));
    }

    /* the four is drawn: take the server away, the client flags it */
    file_wait(test_path("c-four.png"), draw, 60);
    e2e_server_stop(&s);
    file_wait(test_path("c-offline.png"), draw, 60);
    CHECK_EQ(pending_count(pending), 1);

    /* back on the same port: the running client delivers it */
    server_restart(&s, port);
    file_wait(test_path("c-seven.png"), draw, 90);
    example_check(&s, 0, 1, 4, "tester", test_path("c-four.png"));
    e2e_server_stop(&s);
    CHECK_EQ(draw_wait(draw, 60), 0);
    CHECK_EQ(pending_count(pending), 1);   /* the seven, never sent */

    /* a later run sends what the previous one left behind */
    server_restart(&s, port);
    script = script_write("c2.txt", "wait-connected\nwait-flags\nquit\n");
    {
        const char *args[] = {"--server", s.addr, "--name", "tester",
                              "--pending-file", pending, "--replay", script,
                              "--replay-timeout", "60", NULL};

        draw_run_ok(args, 120);
    }
    example_check(&s, 1, 2, 7, "tester", test_path("c-seven.png"));
    CHECK(stat(pending, &st) != 0);
    e2e_server_stop(&s);
}

/* Bright pixels (text) in the status bar along the window's bottom. */
static long status_text_pixels(const char *png)
{
    image_t img;
    long n = 0;

    image_must_load(png, &img);
    for (int y = img.height - 30; y < img.height; y++)
        for (int x = 0; x < img.width; x++)
            n += img.pixels[(size_t)y * img.width + x] > 150;
    free(img.pixels);
    return n;
}

/*
 * The server's events reach the status bar: a round started by Train
 * shows up as a notice in the running client.
 */
static void test_event_notice(void)
{
    const char *script, *before = path_keep("e-before.png");
    const char *after = path_keep("e-after.png");
    dadc_client_t *c;
    e2e_server_t s;
    uint32_t round = 0;
    pid_t draw;

    e2e_server_start(&s, test_path("data-e"), NULL);
    script = script_write("e.txt", "wait-connected\nwait-ms 300\n"
                          "screenshot %s\nwait-notice\nwait-ms 300\n"
                          "screenshot %s\nquit\n", before, after);
    {
        const char *args[] = {"--server", s.addr, "--no-pending-file",
                              "--size", WIN_SIZE, "--replay", script,
                              "--replay-timeout", "120", NULL};

        draw = draw_spawn(args, test_path("e-stderr"));
    }
    file_wait(before, draw, 60);
    c = e2e_connect(&s, "operator");
    CHECK_EQ(dadc_client_train(c, &round), 0);
    CHECK_INT(round, >, 0);
    dadc_client_close(c);
    CHECK_EQ(draw_wait(draw, 150), 0);
    CHECK_INT(status_text_pixels(after), >,
              status_text_pixels(before) + 200);
    e2e_server_stop(&s);
}

int main(void)
{
    test_init("test_draw_server", 600);
    draw_x_start();
    TEST_RUN(test_draw_predict_flag);
    TEST_RUN(test_server_gone);
    TEST_RUN(test_event_notice);
    draw_x_stop();
    return test_finish();
}
