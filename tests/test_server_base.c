/*
 * dadc-server on an empty store without --init-model: it trains the base
 * model on the thread pool while it listens. Meanwhile Hello and Stats
 * work and Predict is answered UNAVAILABLE; SIGTERM cancels the training
 * and exits cleanly with nothing stored; a short training run ends with
 * version 1 stored and served, and the port file written only then.
 */
#include "test_util.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dadc_client.h"

static pid_t server_pid;

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

static void server_kill(void)
{
    if (server_pid > 0)
        kill(server_pid, SIGKILL);
}

/* Wait until path contains needle (the server's log); fail after 120 s
 * or when the server exits. Returns the file's text. */
static char *wait_for_text(const char *path, const char *needle)
{
    double deadline = now_s() + 120;

    for (;;) {
        char *text = test_read_file(path, NULL);
        int status;

        if (strstr(text, needle) != NULL)
            return text;
        if (waitpid(server_pid, &status, WNOHANG) == server_pid)
            test_fail(__FILE__, __LINE__, "server exited; log: %s", text);
        free(text);
        CHECK(now_s() < deadline);
        sleep_ms(20);
    }
}

/* Start the server with an empty store in tmp/<name>; returns its port,
 * read from the "listening on" log line. */
static int server_start(const char *name, const char *epochs,
                        const char *images, char *log_path, size_t size)
{
    char bin[512], data[512], port_file[512], file[64];
    const char *mnist = test_mnist_dir();
    char *text, *at;
    int port;

    CHECK(mnist != NULL);
    snprintf(bin, sizeof(bin), "%s/dadc-server", test_bin_dir());
    snprintf(data, sizeof(data), "%s", test_path(name));
    snprintf(file, sizeof(file), "%s.port", name);
    snprintf(port_file, sizeof(port_file), "%s", test_path(file));
    snprintf(file, sizeof(file), "%s.log", name);
    snprintf(log_path, size, "%s", test_path(file));
    test_write_file(log_path, "", 0);

    server_pid = fork();
    CHECK(server_pid >= 0);
    if (server_pid == 0) {
        int fd = open(log_path, O_WRONLY | O_TRUNC);
        dup2(fd, 2);
        close(fd);
        execl(bin, bin, "--data-dir", data, "--mnist", mnist, "--listen",
              "127.0.0.1:0", "--port-file", port_file, "--base-epochs",
              epochs, "--base-images", images, (char *)NULL);
        _exit(127);
    }
    text = wait_for_text(log_path, "listening on 127.0.0.1:");
    at = strstr(text, "listening on 127.0.0.1:");
    port = atoi(at + strlen("listening on 127.0.0.1:"));
    free(text);
    CHECK(port > 0);
    return port;
}

static int server_wait_exit(double seconds)
{
    double deadline = now_s() + seconds;
    int status = 0;

    while (waitpid(server_pid, &status, WNOHANG) != server_pid) {
        CHECK(now_s() < deadline);
        sleep_ms(20);
    }
    server_pid = 0;
    CHECK(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static dadc_client_t *connect_port(int port)
{
    char addr[64];
    dadc_client_t *c = NULL;
    dadc_error_t err;

    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    if (dadc_client_connect(&c, addr, 10000, &err) != 0)
        test_fail(__FILE__, __LINE__, "connect: %s",
                  dadc_error_message(&err));
    return c;
}

/* Long training: calls that need the model wait, SIGTERM cancels. */
static void test_unavailable_then_cancel(void)
{
    char log_path[600];
    uint8_t img[784] = {0};
    dadc_prediction_t pred;
    dadc_server_info_t info;
    Dadc__StatsResponse *st = NULL;
    Dadc__ListModelsResponse *lm = NULL;
    Dadc__GetModelResponse *gm = NULL;
    dadc_client_t *c;
    char *log;
    int port = server_start("long", "50", "0", log_path,
                            sizeof(log_path));

    c = connect_port(port);
    CHECK_EQ(dadc_client_hello(c, "test", "tester", &info), 0);
    CHECK_EQ(info.current_model_version, 0);
    CHECK(dadc_client_predict(c, img, 1, 0, &pred) != 0);
    CHECK_EQ(dadc_client_last_status(c), DADC__STATUS_CODE__UNAVAILABLE);
    CHECK_CONTAINS(dadc_client_last_status_message(c),
                   "base model training");
    CHECK_EQ(dadc_client_stats(c, &st), 0);
    CHECK_EQ(st->current_model_version, 0);
    dadc__stats_response__free_unpacked(st, NULL);
    CHECK_EQ(dadc_client_list_models(c, &lm), 0);
    CHECK_EQ(lm->n_models, 0);
    dadc__list_models_response__free_unpacked(lm, NULL);

    /* GetModel of the current model waits like Predict; an explicit
     * version is simply not there yet, said in the client's terms. */
    CHECK(dadc_client_get_model(c, 0, &gm) != 0);
    CHECK_EQ(dadc_client_last_status(c), DADC__STATUS_CODE__UNAVAILABLE);
    CHECK_CONTAINS(dadc_client_last_status_message(c),
                   "base model training");
    CHECK(dadc_client_get_model(c, 3, &gm) != 0);
    CHECK_EQ(dadc_client_last_status(c), DADC__STATUS_CODE__NOT_FOUND);
    CHECK_STR(dadc_client_last_status_message(c), "no model version 3");
    dadc_client_close(c);

    CHECK_EQ(kill(server_pid, SIGTERM), 0);
    CHECK_EQ(server_wait_exit(60), 0);
    log = test_read_file(log_path, NULL);
    CHECK_CONTAINS(log, "base training cancelled; nothing stored");
    CHECK_CONTAINS(log, "stopped; store closed");
    CHECK(access(test_path("long.port"), F_OK) != 0);
    free(log);
}

/* Short training: version 1 is stored and served. */
static void test_short_training(void)
{
    char log_path[600];
    const char *port_file = test_path("short.port");
    uint8_t img[784];
    dadc_prediction_t pred;
    Dadc__ListModelsResponse *lm = NULL;
    dadc_client_t *c;
    char *log;
    int port = server_start("short", "1", "3000", log_path,
                            sizeof(log_path));

    free(wait_for_text(log_path, "ready: serving model version 1"));
    CHECK(access(port_file, R_OK) == 0);
    log = test_read_file(port_file, NULL);
    CHECK_EQ(atoi(log), port);
    free(log);

    c = connect_port(port);
    for (int i = 0; i < 784; i++)
        img[i] = (uint8_t)(i % 28 > 12 && i % 28 < 16 ? 255 : 0);
    CHECK_EQ(dadc_client_predict(c, img, 1, 0, &pred), 0);
    CHECK_EQ(pred.model_version, 1);
    CHECK_EQ(dadc_client_list_models(c, &lm), 0);
    CHECK_EQ(lm->n_models, 1);
    CHECK_EQ(lm->models[0]->version, 1);
    CHECK(lm->models[0]->current);
    /* 3,000 images, one epoch: far better than chance. */
    CHECK(lm->models[0]->mnist_test_accuracy > 0.5);
    dadc__list_models_response__free_unpacked(lm, NULL);
    dadc_client_close(c);

    CHECK_EQ(kill(server_pid, SIGTERM), 0);
    CHECK_EQ(server_wait_exit(60), 0);
    log = test_read_file(log_path, NULL);
    CHECK_CONTAINS(log, "empty store: training the base model on 3000");
    CHECK_CONTAINS(log, "base model stored as version 1");
    free(log);
}

int main(void)
{
    test_init("server_base", 600);
    atexit(server_kill);
    TEST_RUN(test_unavailable_then_cancel);
    TEST_RUN(test_short_training);
    return test_finish();
}
