#include "test_util.h"

#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *test_name = "test";
static const char *current_case;
static int cases_passed;
static int cases_failed;
static char tmpdir[256];

static void watchdog_cb(int sig)
{
    static const char msg[] = "test: timed out\n";

    (void)sig;
    if (write(2, msg, sizeof(msg) - 1) < 0) {
        /* nothing left to do */
    }
    _exit(124);
}

void test_init(const char *name, unsigned timeout_s)
{
    test_name = name;
    signal(SIGALRM, watchdog_cb);
    signal(SIGPIPE, SIG_IGN);
    alarm(timeout_s);
    setvbuf(stdout, NULL, _IOLBF, 0);
}

static void remove_tmpdir(void)
{
    char cmd[300];

    if (tmpdir[0] == '\0' || getenv("TEST_KEEP_TMP") != NULL)
        return;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "%s: could not remove %s\n", test_name, tmpdir);
    tmpdir[0] = '\0';
}

int test_finish(void)
{
    remove_tmpdir();
    printf("%s: %d passed, %d failed\n", test_name, cases_passed,
           cases_failed);
    return cases_failed ? 1 : 0;
}

void test_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "FAIL %s: %s:%d: ", current_case ? current_case : "?",
            file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    cases_failed++;
    test_finish();
    exit(1);
}

void test_case_begin(const char *name)
{
    current_case = name;
    printf("-- %s\n", name);
}

void test_case_end(void)
{
    printf("ok %s\n", current_case);
    cases_passed++;
    current_case = NULL;
}

const char *test_tmpdir(void)
{
    const char *base;

    if (tmpdir[0] != '\0')
        return tmpdir;
    base = getenv("TMPDIR");
    if (base == NULL || base[0] == '\0')
        base = "/tmp";
    snprintf(tmpdir, sizeof(tmpdir), "%s/dadc-%s-XXXXXX", base, test_name);
    if (mkdtemp(tmpdir) == NULL) {
        tmpdir[0] = '\0';
        test_fail(__FILE__, __LINE__, "mkdtemp failed");
    }
    return tmpdir;
}

const char *test_path(const char *name)
{
    static char bufs[8][512];
    static int next;
    char *p = bufs[next++ % 8];

    snprintf(p, 512, "%s/%s", test_tmpdir(), name);
    return p;
}

void test_write_file(const char *path, const void *buf, size_t len)
{
    FILE *f = fopen(path, "wb");

    if (f == NULL)
        test_fail(__FILE__, __LINE__, "cannot create %s", path);
    if (len > 0 && fwrite(buf, 1, len, f) != len)
        test_fail(__FILE__, __LINE__, "cannot write %s", path);
    fclose(f);
}

char *test_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;

    if (f == NULL)
        test_fail(__FILE__, __LINE__, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    if (buf == NULL || fread(buf, 1, (size_t)n, f) != (size_t)n)
        test_fail(__FILE__, __LINE__, "cannot read %s", path);
    buf[n] = '\0';
    fclose(f);
    if (len != NULL)
        *len = (size_t)n;
    return buf;
}

const char *test_mnist_dir(void)
{
    const char *dir = getenv("DADC_MNIST_DIR");
    char probe[600];
    struct stat st;

    if (dir == NULL || dir[0] == '\0') {
        fprintf(stderr, "%s: DADC_MNIST_DIR is not set\n", test_name);
        return NULL;
    }
    snprintf(probe, sizeof(probe), "%s/t10k-labels-idx1-ubyte", dir);
    if (stat(probe, &st) != 0) {
        fprintf(stderr, "%s: no MNIST files in %s\n", test_name, dir);
        return NULL;
    }
    return dir;
}

const char *test_bin_dir(void)
{
    const char *dir = getenv("DADC_BIN_DIR");

    return dir != NULL && dir[0] != '\0' ? dir : ".";
}
