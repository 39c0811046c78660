/*
 * dadc-draw driven by replay scripts under a real X server (Xvfb),
 * with no DADC server to talk to: what it draws, what it saves, keys,
 * the keyboard pen, screenshots and bad input.
 */
#include "test_util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "draw_x.h"
#include "image.h"

/* Window size the tests use, and the canvas it gets (see ui_layout). */
#define WIN_SIZE "1000x660"
#define CANVAS_X 12
#define CANVAS_Y 12
#define CANVAS_SIDE 558
/* save-drawing: the 280x280 canvas inside a margin of 8 px */
#define DRAWING_SIDE 296
#define DRAWING_AT(img, x, y) \
    ((img).pixels[((size_t)(y) + 8) * DRAWING_SIDE + (size_t)(x) + 8])

/* A seven and a four, in canvas units. */
static const char seven[] =
    "stroke 0.25,0.22 0.45,0.22 0.62,0.22 0.75,0.23\n"
    "stroke 0.75,0.23 0.68,0.38 0.60,0.52 0.53,0.66 0.47,0.80\n";
static const char four[] =
    "stroke-px 90,60 70,130 60,160 150,160 190,158\n"
    "stroke-px 150,70 148,150 146,230\n";
/* A zero run along the very edge of the canvas. */
static const char edge[] =
    "stroke 0,0 1,0 1,1 0,1 0,0\n";

/* Write script text to a file; run dadc-draw on it offline. */
static int replay_run(const char *name, const char *script, char **err)
{
    const char *path = test_path(name);
    const char *args[] = {"--server", "127.0.0.1:1", "--no-pending-file",
                          "--size", WIN_SIZE, "--replay", path,
                          "--replay-timeout", "10", NULL};

    test_write_file(path, script, strlen(script));
    return draw_run(args, 60, err);
}

static void image_must_load(const char *path, image_t *img)
{
    dadc_error_t e;

    dadc_error_clear(&e);
    if (image_load(path, img, &e) != 0)
        test_fail(__FILE__, __LINE__, "%s", dadc_error_message(&e));
}

/*
 * The 28x28 image the client sends equals what `dadc predict` makes from
 * the same drawing saved as PNG (image_load, then image_to_mnist).
 */
static void test_mnist_matches_png_path(void)
{
    const char *digits[] = {seven, four, edge};

    for (int k = 0; k < 3; k++) {
        char script[2048], *err;
        image_t drawing, mnist;
        uint8_t again[784];
        long ink = 0;

        snprintf(script, sizeof(script), "%swait-ms 200\n"
                 "save-drawing %s\nsave-mnist %s\nquit\n", digits[k],
                 test_path("drawing.png"), test_path("mnist.png"));
        CHECK_EQ(replay_run("mnist.txt", script, &err), 0);
        free(err);
        image_must_load(test_path("drawing.png"), &drawing);
        image_must_load(test_path("mnist.png"), &mnist);
        CHECK_EQ(drawing.width, DRAWING_SIDE);
        CHECK_EQ(mnist.width, 28);
        CHECK_EQ(mnist.height, 28);
        CHECK_EQ(image_to_mnist(drawing.pixels, drawing.width,
                                drawing.height, again, NULL), 0);
        CHECK(memcmp(again, mnist.pixels, 784) == 0);
        for (int i = 0; i < 784; i++)
            ink += mnist.pixels[i];
        /* ink, but not the whole frame: polarity was read right */
        CHECK_INT(ink / 255, >, 40);
        CHECK_INT(ink / 255, <, 392);
        free(drawing.pixels);
        free(mnist.pixels);
    }
}

static int file_cmp(const char *a, const char *b)
{
    image_t x, y;
    int diff;

    image_must_load(a, &x);
    image_must_load(b, &y);
    diff = x.width != y.width || x.height != y.height ||
           memcmp(x.pixels, y.pixels, (size_t)x.width * x.height) != 0;
    free(x.pixels);
    free(y.pixels);
    return diff;
}

/* Undo by key takes back exactly the last stroke; clear empties it. */
static void test_undo_and_clear_keys(void)
{
    char script[2048], *err;

    snprintf(script, sizeof(script), "%s"
             "stroke 0.1,0.9 0.9,0.9\nkey ctrl+z\nsave-drawing %s\n"
             "stroke 0.2,0.5 0.8,0.5\nkey Backspace\nsave-drawing %s\n"
             "quit\n", seven, test_path("undone.png"),
             test_path("undone2.png"));
    CHECK_EQ(replay_run("undo.txt", script, &err), 0);
    free(err);
    snprintf(script, sizeof(script), "%ssave-drawing %s\nquit\n", seven,
             test_path("plain.png"));
    CHECK_EQ(replay_run("plain.txt", script, &err), 0);
    free(err);
    CHECK_EQ(file_cmp(test_path("undone.png"), test_path("plain.png")), 0);
    CHECK_EQ(file_cmp(test_path("undone2.png"), test_path("plain.png")),
             0);

    /* after C there is nothing to save: the replay fails with 3 */
    snprintf(script, sizeof(script), "%skey c\nsave-drawing %s\nquit\n",
             seven, test_path("cleared.png"));
    CHECK_EQ(replay_run("clear.txt", script, &err), 3);
    CHECK_CONTAINS(err, "the canvas is empty");
    free(err);
}

/* A finger draws what the mouse draws (touch events, not mouse ones). */
static void test_touch(void)
{
    char script[2048], touch[1024], *err;
    image_t m, t;
    long differ = 0, ink_m = 0, ink_t = 0;
    size_t n = 0;

    /* the seven again, as finger strokes */
    for (const char *p = seven; *p != '\0'; p++) {
        if (strncmp(p, "stroke ", 7) == 0) {
            n += (size_t)snprintf(touch + n, sizeof(touch) - n, "touch ");
            p += 6;
        } else {
            touch[n++] = *p;
        }
    }
    touch[n] = '\0';
    snprintf(script, sizeof(script), "%ssave-drawing %s\nquit\n", seven,
             test_path("by-mouse.png"));
    CHECK_EQ(replay_run("mouse.txt", script, &err), 0);
    free(err);
    snprintf(script, sizeof(script), "%ssave-drawing %s\nquit\n", touch,
             test_path("by-touch.png"));
    CHECK_EQ(replay_run("touch.txt", script, &err), 0);
    free(err);

    /* the same up to the mouse's rounding to whole window points */
    image_must_load(test_path("by-mouse.png"), &m);
    image_must_load(test_path("by-touch.png"), &t);
    for (int i = 0; i < m.width * m.height; i++) {
        differ += abs(m.pixels[i] - t.pixels[i]) > 64;
        ink_m += m.pixels[i];
        ink_t += t.pixels[i];
    }
    CHECK_INT(ink_t, >, 0);
    CHECK_NEAR((double)ink_t / (double)ink_m, 1.0, 0.03);
    CHECK_INT(differ, <, m.width * m.height / 100);
    free(m.pixels);
    free(t.pixels);
}

/* Drawing with the keyboard alone: Space, arrows, Space. */
static void test_keyboard_pen(void)
{
    char script[4096], *err;
    size_t n;
    image_t d;
    long top = 0, bottom = 0, centre = 0;

    n = (size_t)snprintf(script, sizeof(script),
                         "key Space\nkey shift+Up\nkey shift+Up\n"
                         "key shift+Up\nkey Space\n");
    for (int i = 0; i < 6; i++)
        n += (size_t)snprintf(script + n, sizeof(script) - n,
                              "key shift+Down\n");
    snprintf(script + n, sizeof(script) - n, "key Space\nsave-drawing %s\n"
             "quit\n", test_path("kb.png"));
    CHECK_EQ(replay_run("kb.txt", script, &err), 0);
    free(err);

    /* a vertical line through the centre, from y 0.38 to 0.62 */
    image_must_load(test_path("kb.png"), &d);
    top = DRAWING_AT(d, 140, 0.40 * 280);
    centre = DRAWING_AT(d, 140, 140);
    bottom = DRAWING_AT(d, 140, 0.60 * 280);
    CHECK_EQ(top, 255);
    CHECK_EQ(centre, 255);
    CHECK_EQ(bottom, 255);
    CHECK_EQ(DRAWING_AT(d, 200, 140), 0);
    CHECK_EQ(DRAWING_AT(d, 140, 0.80 * 280), 0);
    free(d.pixels);
}

/* The screenshot shows the drawing; help (F1) covers the window. */
static void test_screenshot(void)
{
    char script[2048], *err;
    image_t a, b;
    long changed = 0, ink;

    snprintf(script, sizeof(script), "%swait-ms 300\nscreenshot %s\n"
             "key F1\nscreenshot %s\nkey Escape\nresize 1200 800\n"
             "quit\n", seven, test_path("shot.png"),
             test_path("help.png"));
    CHECK_EQ(replay_run("shot.txt", script, &err), 0);
    free(err);
    image_must_load(test_path("shot.png"), &a);
    image_must_load(test_path("help.png"), &b);
    CHECK_EQ(a.width, 1000);
    CHECK_EQ(a.height, 660);

    /* dark ink on white paper inside the canvas, plenty of it */
    ink = draw_region_dark(&a, CANVAS_X, CANVAS_Y, CANVAS_SIDE,
                           CANVAS_SIDE, 64);
    CHECK_INT(ink, >, 10000);
    CHECK_INT(draw_region_variance(&a, CANVAS_X, CANVAS_Y, CANVAS_SIDE,
                                   CANVAS_SIDE), >, 1000.0);
    for (int i = 0; i < a.width * a.height; i++)
        changed += a.pixels[i] != b.pixels[i];
    CHECK_INT(changed, >, a.width * a.height / 2);
    free(a.pixels);
    free(b.pixels);
}

/* Seconds on the monotonic clock. */
static double clock_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/*
 * A server that takes the connection and never answers: the network
 * thread sits in Hello for its 5 s timeout, again and again, while
 * drawing, saving and quitting go on at once.
 */
static void test_silent_server(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    char script[2048], server[32], *err;
    double t0, took, limit;
    int rc;

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(fd >= 0);
    CHECK_EQ(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    CHECK_EQ(listen(fd, 8), 0);   /* never accepted: the kernel holds it */
    CHECK_EQ(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    snprintf(server, sizeof(server), "127.0.0.1:%d", ntohs(a.sin_port));
    snprintf(script, sizeof(script), "wait-ms 300\n%skey z\n%s"
             "save-drawing %s\nscreenshot %s\nquit\n", seven, seven,
             test_path("silent.png"), test_path("silent-shot.png"));
    test_write_file(test_path("silent.txt"), script, strlen(script));
    {
        const char *args[] = {"--server", server, "--no-pending-file",
                              "--replay", test_path("silent.txt"), NULL};

        t0 = clock_s();
        rc = draw_run(args, 60, &err);
        took = clock_s() - t0;
    }
    CHECK_EQ(rc, 0);
    free(err);
    close(fd);
#ifdef __SANITIZE_ADDRESS__
    limit = 20.0;   /* everything is slower; the checks above still hold */
#else
    limit = 4.5;    /* under the 5 s the network thread is stuck for */
#endif
    printf("drew, saved and quit in %.2f s with a silent server\n", took);
    CHECK(took < limit);
}

/* Bad arguments and files: clear messages and documented statuses. */
static void test_bad_input(void)
{
    const char *bad_size[] = {"--size", "12x", NULL};
    const char *bad_font[] = {"--font", "/nonexistent/font.ttf", NULL};
    const char *bad_server[] = {"--server", "nocolon", NULL};
    const char *help[] = {"--help", NULL};
    const char *unknown[] = {"--colour", "red", NULL};
    char *err;

    CHECK_EQ(draw_run(bad_size, 30, &err), 2);
    CHECK_CONTAINS(err, "try 'dadc-draw --help'");
    free(err);
    CHECK_EQ(draw_run(bad_font, 30, &err), 1);
    CHECK_CONTAINS(err, "fonts-dejavu-core");
    free(err);
    CHECK_EQ(draw_run(bad_server, 30, &err), 2);
    CHECK_CONTAINS(err, "--server");
    free(err);
    CHECK_EQ(draw_run(unknown, 30, &err), 2);
    CHECK_CONTAINS(err, "dadc-draw: unknown option '--colour'");
    free(err);
    CHECK_EQ(draw_run(help, 30, &err), 0);
    CHECK_CONTAINS(err, "wait-prediction");
    free(err);

    CHECK_EQ(replay_run("bad.txt", "stroke 0.1,0.1\nfly away\n", &err), 2);
    CHECK_CONTAINS(err, "bad.txt:2: unknown command");
    free(err);

    /* a wait that cannot end gives up with status 3 */
    CHECK_EQ(replay_run("wait.txt", "wait-connected\n", &err), 3);
    CHECK_CONTAINS(err, "gave up waiting");
    free(err);
}

int main(void)
{
    test_init("test_draw_replay", 280);
    draw_x_start();
    TEST_RUN(test_mnist_matches_png_path);
    TEST_RUN(test_undo_and_clear_keys);
    TEST_RUN(test_touch);
    TEST_RUN(test_keyboard_pen);
    TEST_RUN(test_screenshot);
    TEST_RUN(test_silent_server);
    TEST_RUN(test_bad_input);
    draw_x_stop();
    return test_finish();
}
