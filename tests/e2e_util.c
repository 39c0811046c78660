#include "e2e_util.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "image.h"
#include "nn.h"
#include "test_util.h"

#define E2E_MAX_ARGS 64

static mnist_t mnist;
static int mnist_loaded;
static char base_model[600];

/* Servers still running, killed at exit so a failed check leaves none. */
static pid_t running[16];

static void kill_running(void)
{
    size_t i;

    for (i = 0; i < sizeof(running) / sizeof(running[0]); i++)
        if (running[i] > 0)
            kill(running[i], SIGKILL);
}

static void running_set(pid_t old, pid_t pid)
{
    static int registered;
    size_t i;

    if (!registered) {
        atexit(kill_running);
        registered = 1;
    }
    for (i = 0; i < sizeof(running) / sizeof(running[0]); i++) {
        if (running[i] == old) {
            running[i] = pid;
            return;
        }
    }
}

const mnist_t *e2e_mnist(void)
{
    dadc_error_t err;
    const char *dir;

    if (mnist_loaded)
        return &mnist;
    dir = test_mnist_dir();
    CHECK(dir != NULL);
    dadc_error_clear(&err);
    if (mnist_load(dir, &mnist, &err) != 0)
        test_fail(__FILE__, __LINE__, "%s", dadc_error_message(&err));
    mnist_loaded = 1;
    return &mnist;
}

const char *e2e_base_model(void)
{
    const mnist_t *m = e2e_mnist();
    nn_model_t *model;
    nn_train_opts_t o;
    nn_train_result_t res;
    dadc_error_t err;

    if (base_model[0] != '\0')
        return base_model;
    snprintf(base_model, sizeof(base_model), "%s",
             test_path("base.safetensors"));
    CHECK_EQ(nn_model_create_reference(&model), 0);
    nn_model_init(model, 1);
    nn_train_opts_default(&o);
    o.epochs = 1;
    o.seed = 1;
    o.progress_cb = NULL;
    dadc_error_clear(&err);
    CHECK_EQ(nn_train(model, m->train_images.data, m->train_labels.data,
                      6000, &o, &res, &err), 0);
    CHECK_EQ(nn_model_save(model, NULL, base_model, &err), 0);
    nn_model_free(model);
    return base_model;
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

/* Build the server's argument vector into argv (static strings). */
static int server_argv(e2e_server_t *s, const char *const *extra,
                       char **argv, char *bin, size_t bin_size)
{
    static char listen_arg[] = "127.0.0.1:0";
    int n = 0;

    snprintf(bin, bin_size, "%s/dadc-server", test_bin_dir());
    argv[n++] = bin;
    argv[n++] = "--data-dir";
    argv[n++] = s->data_dir;
    argv[n++] = "--listen";
    argv[n++] = listen_arg;
    argv[n++] = "--port-file";
    argv[n++] = s->port_file;
    argv[n++] = "--mnist";
    argv[n++] = (char *)test_mnist_dir();
    argv[n++] = "--init-model";
    argv[n++] = (char *)e2e_base_model();
    for (; extra != NULL && *extra != NULL && n < E2E_MAX_ARGS - 1; extra++)
        argv[n++] = (char *)*extra;
    argv[n] = NULL;
    return n;
}

static int read_port_file(const char *path)
{
    FILE *f = fopen(path, "r");
    int port = 0;

    if (f == NULL)
        return 0;
    if (fscanf(f, "%d", &port) != 1)
        port = 0;
    fclose(f);
    return port;
}

void e2e_server_start(e2e_server_t *s, const char *data_dir,
                      const char *const *extra)
{
    char *argv[E2E_MAX_ARGS], bin[600];
    int64_t deadline;
    int fd;

    snprintf(s->data_dir, sizeof(s->data_dir), "%s", data_dir);
    snprintf(s->log_path, sizeof(s->log_path), "%s.log", data_dir);
    snprintf(s->port_file, sizeof(s->port_file), "%s.port", data_dir);
    unlink(s->port_file);
    mkdir(data_dir, 0755);
    server_argv(s, extra, argv, bin, sizeof(bin));
    fflush(NULL);
    s->pid = fork();
    CHECK(s->pid >= 0);
    if (s->pid == 0) {
        fd = open(s->log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    running_set(0, s->pid);
    /* Before answering, the server measures its initial model on the
     * MNIST test set: minutes in a sanitizer build on a busy machine. */
    deadline = now_ms() + 600000;
    while ((s->port = read_port_file(s->port_file)) == 0) {
        if (!e2e_server_alive(s)) {
            char *log = test_read_file(s->log_path, NULL);

            fprintf(stderr, "server log:\n%s\n", log);
            free(log);
            test_fail(__FILE__, __LINE__, "dadc-server exited at start");
        }
        if (now_ms() > deadline)
            test_fail(__FILE__, __LINE__, "dadc-server did not write its "
                      "port file within 600 s (log: %s)", s->log_path);
        sleep_ms(20);
    }
    snprintf(s->addr, sizeof(s->addr), "127.0.0.1:%d", s->port);
}

int e2e_server_alive(const e2e_server_t *s)
{
    int status;

    return s->pid > 0 && waitpid(s->pid, &status, WNOHANG) == 0;
}

void e2e_server_stop(e2e_server_t *s)
{
    int status = 0;
    int64_t deadline = now_ms() + 60000;

    CHECK(s->pid > 0);
    kill(s->pid, SIGTERM);
    while (waitpid(s->pid, &status, WNOHANG) == 0) {
        if (now_ms() > deadline) {
            kill(s->pid, SIGKILL);
            waitpid(s->pid, &status, 0);
            test_fail(__FILE__, __LINE__, "dadc-server ignored SIGTERM");
        }
        sleep_ms(20);
    }
    running_set(s->pid, 0);
    s->pid = 0;
    CHECK(WIFEXITED(status));
    CHECK_EQ(WEXITSTATUS(status), 0);
}

void e2e_server_kill(e2e_server_t *s)
{
    int status;

    CHECK(s->pid > 0);
    kill(s->pid, SIGKILL);
    waitpid(s->pid, &status, 0);
    running_set(s->pid, 0);
    s->pid = 0;
}

dadc_client_t *e2e_connect(const e2e_server_t *s, const char *annotator)
{
    dadc_client_t *c;
    dadc_error_t err;

    dadc_error_clear(&err);
    if (dadc_client_connect(&c, s->addr, 10000, &err) != 0)
        test_fail(__FILE__, __LINE__, "connect: %s",
                  dadc_error_message(&err));
    dadc_client_set_timeout(c, 600000);
    if (dadc_client_hello(c, "e2e-test", annotator, NULL) != 0)
        test_fail(__FILE__, __LINE__, "hello: %s",
                  dadc_client_last_error(c));
    return c;
}

/* Run argv with stdout/stderr into files; returns the exit status. */
static int run_captured(char **argv, const char *out_path,
                        const char *err_path)
{
    pid_t pid;
    int status;

    fflush(NULL);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int o = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int e = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

        if (o < 0 || e < 0)
            _exit(126);
        dup2(o, 1);
        dup2(e, 2);
        execv(argv[0], argv);
        _exit(127);
    }
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}

int e2e_cli(const e2e_server_t *s, char **out, char **err, ...)
{
    char *argv[E2E_MAX_ARGS], bin[600], out_path[600], err_path[600];
    const char *a;
    va_list ap;
    int n = 0, rc;

    snprintf(bin, sizeof(bin), "%s/dadc", test_bin_dir());
    argv[n++] = bin;
    argv[n++] = "--server";
    argv[n++] = (char *)s->addr;
    /* sanitizer builds on a busy machine can be slow to answer */
    argv[n++] = "--timeout";
    argv[n++] = "600";
    va_start(ap, err);
    while ((a = va_arg(ap, const char *)) != NULL && n < E2E_MAX_ARGS - 1)
        argv[n++] = (char *)a;
    va_end(ap);
    argv[n] = NULL;
    snprintf(out_path, sizeof(out_path), "%s", test_path("cli.out"));
    snprintf(err_path, sizeof(err_path), "%s", test_path("cli.err"));
    rc = run_captured(argv, out_path, err_path);
    if (out != NULL)
        *out = test_read_file(out_path, NULL);
    if (err != NULL)
        *err = test_read_file(err_path, NULL);
    return rc;
}

pid_t e2e_cli_spawn(const e2e_server_t *s, const char *out_path, ...)
{
    char *argv[E2E_MAX_ARGS], bin[600];
    const char *a;
    va_list ap;
    pid_t pid;
    int n = 0;

    snprintf(bin, sizeof(bin), "%s/dadc", test_bin_dir());
    argv[n++] = bin;
    argv[n++] = "--server";
    argv[n++] = (char *)s->addr;
    va_start(ap, out_path);
    while ((a = va_arg(ap, const char *)) != NULL && n < E2E_MAX_ARGS - 1)
        argv[n++] = (char *)a;
    va_end(ap);
    argv[n] = NULL;
    fflush(NULL);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int o = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

        if (o < 0)
            _exit(126);
        dup2(o, 1);
        dup2(o, 2);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

int e2e_wait(pid_t pid, int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    int status;

    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);

        if (r == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status)
                                     : 128 + WTERMSIG(status);
        CHECK_EQ(r, 0);
        if (now_ms() >= deadline)
            return -1;
        sleep_ms(10);
    }
}

void e2e_write_test_png(const char *path, size_t i)
{
    const mnist_t *m = e2e_mnist();
    dadc_error_t err;

    CHECK(i < m->test_images.count);
    dadc_error_clear(&err);
    CHECK_EQ(image_save_png(path, m->test_images.data + i * 784, 28, 28,
                            &err), 0);
}

uint64_t *e2e_list_example_ids(dadc_client_t *c, size_t *n)
{
    uint64_t after = 0, *ids = NULL;
    size_t cap = 0;

    *n = 0;
    do {
        Dadc__ListExamplesResponse *page;
        size_t i;

        CHECK_EQ(dadc_client_list_examples(c, after, 1000, false, &page), 0);
        for (i = 0; i < page->n_examples; i++) {
            if (*n == cap) {
                cap = cap ? cap * 2 : 1024;
                ids = realloc(ids, cap * sizeof(*ids));
                CHECK(ids != NULL);
            }
            ids[(*n)++] = page->examples[i]->id;
        }
        after = page->next_after_id;
        dadc__list_examples_response__free_unpacked(page, NULL);
    } while (after != 0);
    return ids;
}
