#include "draw_x.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test_util.h"

static pid_t xvfb_pid;

static bool program_found(const char *name)
{
    const char *path = getenv("PATH");
    char buf[1024], *save = NULL, *dir, *copy;
    bool found = false;

    copy = strdup(path ? path : "/usr/bin:/bin");
    for (dir = strtok_r(copy, ":", &save); dir != NULL && !found;
         dir = strtok_r(NULL, ":", &save)) {
        snprintf(buf, sizeof(buf), "%s/%s", dir, name);
        found = access(buf, X_OK) == 0;
    }
    free(copy);
    return found;
}

/* In a child: die with the test, send output to path (or nowhere). */
static void child_prepare(const char *out_path)
{
    int fd = open(out_path ? out_path : "/dev/null",
                  O_WRONLY | O_CREAT | O_TRUNC, 0600);

    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
    }
}

const char *draw_x_start(void)
{
    char fdarg[16], buf[32] = {0}, display[40];
    struct pollfd pfd;
    int fds[2];
    ssize_t n;

    if (!program_found("Xvfb")) {
        printf("Xvfb is not installed: using SDL's offscreen video driver "
               "instead of a real X server\n");
        setenv("SDL_VIDEODRIVER", "offscreen", 1);
        return "offscreen";
    }
    CHECK(pipe(fds) == 0);
    xvfb_pid = fork();
    CHECK(xvfb_pid >= 0);
    if (xvfb_pid == 0) {
        close(fds[0]);
        child_prepare(NULL);
        snprintf(fdarg, sizeof(fdarg), "%d", fds[1]);
        execlp("Xvfb", "Xvfb", "-displayfd", fdarg, "-screen", "0",
               "1280x1024x24", "-nolisten", "tcp", "-noreset", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);

    /* Xvfb writes the display number it took once it accepts clients. */
    pfd = (struct pollfd){.fd = fds[0], .events = POLLIN};
    CHECK(poll(&pfd, 1, 20000) == 1);
    n = read(fds[0], buf, sizeof(buf) - 1);
    close(fds[0]);
    CHECK(n > 0);
    buf[strcspn(buf, "\n")] = '\0';
    snprintf(display, sizeof(display), ":%s", buf);
    setenv("DISPLAY", display, 1);
    unsetenv("SDL_VIDEODRIVER");
    printf("Xvfb on display %s\n", display);
    return "xvfb";
}

void draw_x_stop(void)
{
    if (xvfb_pid <= 0)
        return;
    kill(xvfb_pid, SIGTERM);
    waitpid(xvfb_pid, NULL, 0);
    xvfb_pid = 0;
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Wait for pid at most timeout_s; kill it then. Exit status or -1. */
static int child_wait(pid_t pid, int timeout_s)
{
    double end = now_s() + timeout_s;
    int status;

    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);

        if (r == pid)
            break;
        if (now_s() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1;
        }
        usleep(20000);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status)
                             : 128 + WTERMSIG(status);
}

/*
 * Under AddressSanitizer, turn leak checking off for dadc-draw: the X
 * libraries SDL loads with dlopen (and libdbus) keep allocations that
 * LeakSanitizer reports once SDL has unloaded them, as "<unknown
 * module>", which no suppression can name. Memory errors are still
 * caught; our own code's leaks are checked by test_draw_canvas.
 */
static void leaks_quiet(void)
{
    const char *asan = getenv("ASAN_OPTIONS");
    char buf[1024];

    snprintf(buf, sizeof(buf), "%s%sdetect_leaks=0", asan ? asan : "",
             asan && asan[0] ? ":" : "");
    setenv("ASAN_OPTIONS", buf, 1);
}

pid_t draw_spawn(const char *const *args, const char *err_path)
{
    static char prog[600];
    const char *argv[64];
    pid_t pid;
    int n = 0;

    snprintf(prog, sizeof(prog), "%s/dadc-draw", test_bin_dir());
    argv[n++] = prog;
    for (; args[n - 1] != NULL && n < 63; n++)
        argv[n] = args[n - 1];
    argv[n] = NULL;

    fflush(NULL);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        child_prepare(err_path);
        leaks_quiet();
        execv(prog, (char *const *)argv);
        _exit(127);
    }
    return pid;
}

int draw_wait(pid_t pid, int timeout_s)
{
    return child_wait(pid, timeout_s);
}

int draw_run(const char *const *args, int timeout_s, char **err_text)
{
    static int runs;
    const char *err_path;
    char name[32];
    int rc;

    snprintf(name, sizeof(name), "draw-stderr-%d", runs++);
    err_path = test_path(name);
    rc = child_wait(draw_spawn(args, err_path), timeout_s);
    if (err_text != NULL)
        *err_text = test_read_file(err_path, NULL);
    return rc;
}

double draw_region_variance(const image_t *img, int x, int y, int w,
                            int h)
{
    double sum = 0, sum2 = 0, n = 0;

    for (int j = y; j < y + h && j < img->height; j++) {
        for (int i = x; i < x + w && i < img->width; i++) {
            double v = img->pixels[(size_t)j * img->width + i];

            sum += v;
            sum2 += v * v;
            n++;
        }
    }
    return n > 0 ? sum2 / n - (sum / n) * (sum / n) : 0.0;
}

long draw_region_dark(const image_t *img, int x, int y, int w, int h,
                      int level)
{
    long n = 0;

    for (int j = y; j < y + h && j < img->height; j++)
        for (int i = x; i < x + w && i < img->width; i++)
            n += img->pixels[(size_t)j * img->width + i] < level;
    return n;
}
