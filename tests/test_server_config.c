/*
 * dadc-server's settings, through the real binary: defaults, the config
 * file, the environment and the command line in that order of
 * precedence (--print-config shows the result), and clear usage errors
 * with exit status 2 for bad values, unknown keys and broken files.
 */
#include "test_util.h"

#include <sys/wait.h>

typedef struct run {
    int status;          /* exit status */
    char out[16384];     /* stdout and stderr */
} run_t;

/* Run dadc-server with env (a "K=V K=V" prefix, may be "") and args. */
static void run_server(run_t *r, const char *env, const char *args)
{
    char cmd[4096];
    size_t n = 0, got;
    FILE *p;
    int st;

    snprintf(cmd, sizeof(cmd), "env -u DADC_MNIST_DIR -u DADC_CONFIG %s "
             "'%s/dadc-server' %s 2>&1", env, test_bin_dir(), args);
    p = popen(cmd, "r");
    CHECK(p != NULL);
    while ((got = fread(r->out + n, 1, sizeof(r->out) - 1 - n, p)) > 0)
        n += got;
    r->out[n] = '\0';
    st = pclose(p);
    CHECK(WIFEXITED(st));
    r->status = WEXITSTATUS(st);
}

static void test_defaults(void)
{
    run_t r;

    run_server(&r, "", "--print-config");
    CHECK_EQ(r.status, 0);
    CHECK_CONTAINS(r.out, "data_dir = ./dadc-data\n");
    CHECK_CONTAINS(r.out, "listen = 127.0.0.1:7070\n");
    CHECK_CONTAINS(r.out, "mnist_dir = ./dadc-data/mnist\n");
    CHECK_CONTAINS(r.out, "round_threshold = 10\n");
    CHECK_CONTAINS(r.out, "round_margin = 0.3\n");
    CHECK_CONTAINS(r.out, "heldout_percent = 20\n");
    CHECK_CONTAINS(r.out, "max_frame = 4194304\n");
    CHECK_CONTAINS(r.out, "max_frame_pre_hello = 16384\n");
    CHECK_CONTAINS(r.out, "max_inflight = 32\n");
    CHECK_CONTAINS(r.out, "max_pending_out = 8388608\n");
    CHECK_CONTAINS(r.out, "frame_timeout = 30\n");
    CHECK_CONTAINS(r.out, "idle_timeout = 300\n");
    CHECK_CONTAINS(r.out, "max_connections = 1024\n");
}

static void test_precedence(void)
{
    const char *conf = test_path("a.conf");
    const char *text =
        "# a comment\n"
        "\n"
        "data-dir = /srv/dadc   # trailing comment\n"
        "listen = 10.0.0.1:7000\n"
        "round_threshold = 5\n"
        "max_frame = 1MiB\n"
        "frame_timeout = 1500ms\n"
        "log_level = \"debug\"\n";
    char args[1024];
    run_t r;

    test_write_file(conf, text, strlen(text));

    /* The file over the defaults; DIR/mnist follows data_dir. */
    snprintf(args, sizeof(args), "--config %s --print-config", conf);
    run_server(&r, "", args);
    CHECK_EQ(r.status, 0);
    CHECK_CONTAINS(r.out, "data_dir = /srv/dadc\n");
    CHECK_CONTAINS(r.out, "mnist_dir = /srv/dadc/mnist\n");
    CHECK_CONTAINS(r.out, "listen = 10.0.0.1:7000\n");
    CHECK_CONTAINS(r.out, "round_threshold = 5\n");
    CHECK_CONTAINS(r.out, "max_frame = 1048576\n");
    CHECK_CONTAINS(r.out, "frame_timeout = 1.5\n");
    CHECK_CONTAINS(r.out, "log_level = debug\n");

    /* The environment over the file, the command line over both. */
    run_server(&r, "DADC_LISTEN=10.0.0.2:7001 DADC_ROUND_THRESHOLD=6",
               args);
    CHECK_EQ(r.status, 0);
    CHECK_CONTAINS(r.out, "listen = 10.0.0.2:7001\n");
    CHECK_CONTAINS(r.out, "round_threshold = 6\n");
    snprintf(args, sizeof(args), "--config %s --listen=10.0.0.3:7002 "
             "--round-threshold 7 --mnist /m --print-config", conf);
    run_server(&r, "DADC_LISTEN=10.0.0.2:7001 DADC_ROUND_THRESHOLD=6",
               args);
    CHECK_EQ(r.status, 0);
    CHECK_CONTAINS(r.out, "listen = 10.0.0.3:7002\n");
    CHECK_CONTAINS(r.out, "round_threshold = 7\n");
    CHECK_CONTAINS(r.out, "mnist_dir = /m\n");

    /* DADC_CONFIG names the file too. */
    snprintf(args, sizeof(args), "DADC_CONFIG=%s", conf);
    run_server(&r, args, "--print-config");
    CHECK_CONTAINS(r.out, "round_threshold = 5\n");
}

static void test_usage_errors(void)
{
    const char *bad = test_path("bad.conf");
    const char *text = "listen = 127.0.0.1:1\nno equals sign here\n";
    char args[1024];
    run_t r;

    run_server(&r, "", "--bogus 1");
    CHECK_EQ(r.status, 2);
    CHECK_CONTAINS(r.out, "dadc-server: unknown option '--bogus'");
    CHECK_CONTAINS(r.out, "try 'dadc-server --help'");

    run_server(&r, "", "--max-inflight 0");
    CHECK_EQ(r.status, 2);
    CHECK_CONTAINS(r.out, "max_inflight");

    run_server(&r, "", "--frame-timeout soon");
    CHECK_EQ(r.status, 2);
    CHECK_CONTAINS(r.out, "not a valid duration");

    run_server(&r, "", "--log-level loud");
    CHECK_EQ(r.status, 2);

    run_server(&r, "", "--listen");
    CHECK_EQ(r.status, 2);
    CHECK_CONTAINS(r.out, "needs a value");

    run_server(&r, "DADC_MAX_FRAME=12x", "");
    CHECK_EQ(r.status, 2);
    CHECK_CONTAINS(r.out, "DADC_MAX_FRAME");

    test_write_file(bad, text, strlen(text));
    snprintf(args, sizeof(args), "--config %s", bad);
    run_server(&r, "", args);
    CHECK_EQ(r.status, 2);
    CHECK_CONTAINS(r.out, "bad.conf:2: expected 'key = value'");

    run_server(&r, "", "--config /nonexistent/dadc.conf");
    CHECK_EQ(r.status, 2);
    CHECK_CONTAINS(r.out, "/nonexistent/dadc.conf");
}

static void test_help(void)
{
    run_t r;

    run_server(&r, "", "--help");
    CHECK_EQ(r.status, 0);
    CHECK_CONTAINS(r.out, "--data-dir");
    CHECK_CONTAINS(r.out, "--max-connections");
    CHECK_CONTAINS(r.out, "Exit status");
    for (const char *line = r.out; *line != '\0';) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        CHECK_INT(len, <=, 79);
        line += len + (end != NULL);
    }
}

/* A store it cannot open and an address it cannot bind: exit 1. */
static void test_startup_failures(void)
{
    char args[1024];
    run_t r;

    snprintf(args, sizeof(args), "--data-dir %s --mnist /nonexistent "
             "--listen 127.0.0.1:0", test_path("store"));
    run_server(&r, "", args);
    CHECK_EQ(r.status, 1);
    CHECK_CONTAINS(r.out, "dadc-server: ");
    CHECK_CONTAINS(r.out, "/nonexistent");

    snprintf(args, sizeof(args), "--data-dir %s --mnist %s "
             "--listen 192.0.2.1:1", test_path("store"), test_mnist_dir());
    run_server(&r, "", args);
    CHECK_EQ(r.status, 1);
    CHECK_CONTAINS(r.out, "192.0.2.1:1");
}

/* A port outside 0..65535 or not a number is a usage error wherever it
 * is set, never wrapped to another port. */
static void test_listen_port_range(void)
{
    static const char *bad[] = {"99999", "65536", "-1", "abc", "",
                                "1000000"};
    const char *conf = test_path("port.conf");
    char args[1024], text[128];
    run_t r;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(args, sizeof(args), "--listen 127.0.0.1:%s "
                 "--print-config", bad[i]);
        run_server(&r, "", args);
        CHECK_EQ(r.status, 2);
        CHECK_CONTAINS(r.out, "dadc-server: --listen: ");
        CHECK_CONTAINS(r.out, "try 'dadc-server --help'");
        CHECK(strstr(r.out, "listen = ") == NULL);
    }

    run_server(&r, "", "--listen 127.0.0.1:99999 --print-config");
    CHECK_CONTAINS(r.out, "port 99999 is outside 0..65535");
    run_server(&r, "", "--listen nohost --print-config");
    CHECK_EQ(r.status, 2);
    CHECK_CONTAINS(r.out, "'nohost' is not HOST:PORT");

    run_server(&r, "DADC_LISTEN=127.0.0.1:65536", "--print-config");
    CHECK_EQ(r.status, 2);
    CHECK_CONTAINS(r.out, "DADC_LISTEN: listen: port 65536");

    snprintf(text, sizeof(text), "listen = 127.0.0.1:-1\n");
    test_write_file(conf, text, strlen(text));
    snprintf(args, sizeof(args), "--config %s --print-config", conf);
    run_server(&r, "", args);
    CHECK_EQ(r.status, 2);
    CHECK_CONTAINS(r.out, "port.conf:1: listen: port '-1' is not a "
                   "number");

    /* The edges are accepted. */
    run_server(&r, "", "--listen [::1]:65535 --print-config");
    CHECK_EQ(r.status, 0);
    CHECK_CONTAINS(r.out, "listen = [::1]:65535\n");
    run_server(&r, "", "--listen 0.0.0.0:0 --print-config");
    CHECK_EQ(r.status, 0);
}

/* Limits print as integers, sizes with the unit that divides them. */
static void test_limit_format(void)
{
    run_t r;

    run_server(&r, "", "--map-size 64K --print-config");
    CHECK_EQ(r.status, 2);
    CHECK_CONTAINS(r.out, "map_size: 64K is outside 1M..16T");
    CHECK(strstr(r.out, "e+") == NULL);

    run_server(&r, "", "--max-inflight 2000000 --print-config");
    CHECK_EQ(r.status, 2);
    CHECK_CONTAINS(r.out, "is outside 1..1000000");

    run_server(&r, "", "--idle-timeout 1e9 --print-config");
    CHECK_EQ(r.status, 2);
    CHECK_CONTAINS(r.out, "is outside 0.001..2592000 seconds");

    run_server(&r, "", "--map-size 1T --print-config");
    CHECK_EQ(r.status, 0);
    CHECK_CONTAINS(r.out, "map_size = 1099511627776\n");
}

int main(void)
{
    test_init("server_config", 120);
    TEST_RUN(test_defaults);
    TEST_RUN(test_precedence);
    TEST_RUN(test_usage_errors);
    TEST_RUN(test_help);
    TEST_RUN(test_startup_failures);
    TEST_RUN(test_listen_port_range);
    TEST_RUN(test_limit_format);
    return test_finish();
}
