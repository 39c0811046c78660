/*
 * The real dadc-server under abuse, over raw sockets on 127.0.0.1: bad
 * frames of every kind close only the offending connection, the limits
 * hold (connections, frame deadline, unread answers, idle), pipelined
 * requests come back with their ids, and SIGTERM shuts down cleanly.
 *
 * One server serves every case; it starts from a model file made here
 * with fixed random weights, so no training is needed.
 */
#include "test_util.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dadc.pb-c.h"
#include "frame.h"
#include "nn.h"

#define MAX_CONNS 12
#define PENDING_OUT (64 * 1024)
/* How long a client waits for an answer or a close. Long on purpose: in
 * a sanitizer build on a busy machine one Flag of 1000 images can take
 * well over 10 s, and waiting is no failure; only silence beyond this
 * is. */
#define ANSWER_WAIT_S 180

static pid_t server_pid;
static int server_port;
static char log_path[512];

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

/* ---- the server process ---- */

/* A failed check exits: never leave the server behind. */
static void server_kill(void)
{
    if (server_pid > 0)
        kill(server_pid, SIGKILL);
}

static void make_model(const char *path)
{
    nn_model_t *m = NULL;
    dadc_error_t err;

    CHECK_EQ(nn_model_create_reference(&m), 0);
    nn_model_init(m, 42);
    if (nn_model_save(m, NULL, path, &err) != 0)
        test_fail(__FILE__, __LINE__, "save model: %s",
                  dadc_error_message(&err));
    nn_model_free(m);
}

/*
 * Start dadc-server on an ephemeral port with the store in tmp/data
 * (created from a model file on the first start) and its log in
 * tmp/<name>.log. max_conns is its connection limit; nofile > 0 sets the
 * descriptor limit (soft and hard) it runs under.
 */
static void server_start(const char *name, int max_conns, long nofile)
{
    char bin[512], model[512], data[512], port_file[512], conns[16];
    char pending[32], file[64];
    const char *mnist = test_mnist_dir();
    double deadline;
    char *text;

    CHECK(mnist != NULL);
    snprintf(bin, sizeof(bin), "%s/dadc-server", test_bin_dir());
    snprintf(model, sizeof(model), "%s", test_path("init.safetensors"));
    snprintf(data, sizeof(data), "%s", test_path("data"));
    snprintf(file, sizeof(file), "%s.port", name);
    snprintf(port_file, sizeof(port_file), "%s", test_path(file));
    snprintf(file, sizeof(file), "%s.log", name);
    snprintf(log_path, sizeof(log_path), "%s", test_path(file));
    snprintf(conns, sizeof(conns), "%d", max_conns);
    snprintf(pending, sizeof(pending), "%d", PENDING_OUT);
    if (access(model, R_OK) != 0)
        make_model(model);

    server_pid = fork();
    CHECK(server_pid >= 0);
    if (server_pid == 0) {
        int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        struct rlimit rl = {(rlim_t)nofile, (rlim_t)nofile};

        dup2(fd, 2);
        close(fd);
        if (nofile > 0)
            setrlimit(RLIMIT_NOFILE, &rl);
        execl(bin, bin, "--data-dir", data, "--mnist", mnist, "--listen",
              "127.0.0.1:0", "--port-file", port_file, "--init-model",
              model, "--frame-timeout", "0.5", "--idle-timeout", "3",
              "--max-connections", conns, "--max-pending-out", pending,
              "--round-threshold", "1000000", "--max-pending-in", "1MiB",
              "--log-level", "debug", (char *)NULL);
        _exit(127);
    }

    /* The port file appears once the server answers Predict. */
    deadline = now_s() + ANSWER_WAIT_S;
    while (access(port_file, R_OK) != 0) {
        int status;
        if (waitpid(server_pid, &status, WNOHANG) == server_pid)
            test_fail(__FILE__, __LINE__, "server exited (status %d); "
                      "log: %s", status, test_read_file(log_path, NULL));
        CHECK(now_s() < deadline);
        sleep_ms(20);
    }
    text = test_read_file(port_file, NULL);
    server_port = atoi(text);
    free(text);
    CHECK(server_port > 0);
}

/* The last lines of the server's log (static storage), for failure
 * messages. */
static const char *log_tail(void)
{
    static char tail[2048];
    size_t n = 0;
    char *text;

    if (log_path[0] == '\0' || access(log_path, R_OK) != 0)
        return "(no log)";
    text = test_read_file(log_path, &n);
    snprintf(tail, sizeof(tail), "%s",
             n > sizeof(tail) - 1 ? text + n - (sizeof(tail) - 1) : text);
    free(text);
    return tail;
}

/* ---- raw client helpers ---- */

static int tc_connect_buf(int rcvbuf)
{
    struct sockaddr_in a;
    struct timeval tv = {ANSWER_WAIT_S, 0};
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

    CHECK(fd >= 0);
    if (rcvbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)server_port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK_EQ(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    return fd;
}

static int tc_connect(void)
{
    return tc_connect_buf(0);
}

static void send_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;

    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        CHECK(n > 0);
        p += n;
        len -= (size_t)n;
    }
}

static void send_header(int fd, uint32_t len)
{
    uint8_t hdr[FRAME_HEADER_BYTES];

    frame_header_encode(hdr, len);
    send_all(fd, hdr, sizeof(hdr));
}

/* Pack req into a frame appended at buf + *off (buf large enough). */
static size_t frame_request(uint8_t *buf, const Dadc__Request *req)
{
    size_t len = dadc__request__get_packed_size(req);

    frame_header_encode(buf, (uint32_t)len);
    dadc__request__pack(req, buf + FRAME_HEADER_BYTES);
    return FRAME_HEADER_BYTES + len;
}

static void send_request(int fd, const Dadc__Request *req)
{
    size_t len = dadc__request__get_packed_size(req);
    uint8_t *buf = malloc(len + FRAME_HEADER_BYTES);

    CHECK(buf != NULL);
    send_all(fd, buf, frame_request(buf, req));
    free(buf);
}

/* Read exactly len bytes; 0 on success, -1 on EOF or reset. Fails the
 * test when nothing arrives for ANSWER_WAIT_S. */
static int recv_all(int fd, void *buf, size_t len)
{
    uint8_t *p = buf;

    while (len > 0) {
        ssize_t n = recv(fd, p, len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            test_fail(__FILE__, __LINE__, "no message from the server "
                      "within %d s; server log tail: %s", ANSWER_WAIT_S,
                      log_tail());
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* The next message from the server, or NULL at EOF. */
static Dadc__ServerMessage *recv_msg(int fd)
{
    uint8_t hdr[FRAME_HEADER_BYTES], *body;
    Dadc__ServerMessage *msg;
    uint32_t len;

    if (recv_all(fd, hdr, sizeof(hdr)) != 0)
        return NULL;
    len = frame_header_decode(hdr);
    CHECK(len <= FRAME_DEFAULT_MAX);
    body = malloc(len + 1);
    CHECK(body != NULL);
    CHECK_EQ(recv_all(fd, body, len), 0);
    msg = dadc__server_message__unpack(NULL, len, body);
    free(body);
    CHECK(msg != NULL);
    return msg;
}

/* The next response; fails the test on EOF or an event. */
static Dadc__Response *recv_response(int fd)
{
    Dadc__ServerMessage *msg = recv_msg(fd);
    Dadc__Response *resp;

    if (msg == NULL)
        test_fail(__FILE__, __LINE__, "expected a response, but the server "
                  "closed the connection; server log tail: %s",
                  log_tail());
    CHECK_EQ(msg->kind_case, DADC__SERVER_MESSAGE__KIND_RESPONSE);
    resp = msg->response;
    msg->response = NULL;
    msg->kind_case = DADC__SERVER_MESSAGE__KIND__NOT_SET;
    dadc__server_message__free_unpacked(msg, NULL);
    return resp;
}

static int status_of(const Dadc__Response *r)
{
    return r->status != NULL ? (int)r->status->code : 0;
}

/* The server closes fd: read gives EOF or a reset within
 * ANSWER_WAIT_S. */
static void expect_closed(int fd)
{
    uint8_t b[4096];
    double deadline = now_s() + ANSWER_WAIT_S;
    ssize_t n;

    do {
        n = recv(fd, b, sizeof(b), 0);
        CHECK(now_s() < deadline);
    } while (n > 0 || (n < 0 && errno == EINTR));
    CHECK(n == 0 || errno == ECONNRESET);
}

/* An id-0 error answer with code, then the close. */
static void expect_error_close(int fd, int code)
{
    Dadc__Response *r = recv_response(fd);

    CHECK_EQ(r->id, 0);
    CHECK_EQ(status_of(r), code);
    CHECK(r->status->message != NULL && r->status->message[0] != '\0');
    dadc__response__free_unpacked(r, NULL);
    expect_closed(fd);
}

static void hello(int fd, uint64_t id)
{
    Dadc__Request req = DADC__REQUEST__INIT;
    Dadc__HelloRequest h = DADC__HELLO_REQUEST__INIT;
    Dadc__Response *r;

    h.protocol_version = 1;
    h.client_name = "test_server_abuse";
    h.annotator = "tester";
    req.id = id;
    req.call_case = DADC__REQUEST__CALL_HELLO;
    req.hello = &h;
    send_request(fd, &req);
    r = recv_response(fd);
    CHECK_EQ(r->id, id);
    CHECK_EQ(status_of(r), 0);
    CHECK_EQ(r->result_case, DADC__RESPONSE__RESULT_HELLO);
    CHECK_EQ(r->hello->current_model_version, 1);
    CHECK_EQ(r->hello->max_inflight, 32);
    dadc__response__free_unpacked(r, NULL);
}

/* A 28x28 image that depends on seed. */
static void make_image(uint8_t img[NN_IMAGE_PIXELS], unsigned seed)
{
    for (int i = 0; i < NN_IMAGE_PIXELS; i++)
        img[i] = (uint8_t)((i * 31 + seed * 97) % 256);
}

static void predict_request(Dadc__Request *req, Dadc__PredictRequest *p,
                            ProtobufCBinaryData *imgs, size_t n,
                            uint64_t id)
{
    dadc__request__init(req);
    dadc__predict_request__init(p);
    p->n_images = n;
    p->images = imgs;
    req->id = id;
    req->call_case = DADC__REQUEST__CALL_PREDICT;
    req->predict = p;
}

/* A full Hello + Predict exchange on a new connection. */
static void expect_served(void)
{
    uint8_t img[NN_IMAGE_PIXELS];
    ProtobufCBinaryData bd = {sizeof(img), img};
    Dadc__Request req;
    Dadc__PredictRequest p;
    Dadc__Response *r;
    int fd = tc_connect();
    float sum = 0;

    hello(fd, 1);
    make_image(img, 1);
    predict_request(&req, &p, &bd, 1, 2);
    send_request(fd, &req);
    r = recv_response(fd);
    CHECK_EQ(r->id, 2);
    CHECK_EQ(status_of(r), 0);
    CHECK_EQ(r->predict->model_version, 1);
    CHECK_EQ(r->predict->n_predictions, 1);
    CHECK_EQ(r->predict->predictions[0]->n_probabilities, 10);
    for (int i = 0; i < 10; i++)
        sum += r->predict->predictions[0]->probabilities[i];
    CHECK_NEAR(sum, 1.0, 1e-4);
    dadc__response__free_unpacked(r, NULL);
    close(fd);
}

/* A /proc file's text (its size is not known in advance). */
static void proc_read(const char *path, char *buf, size_t size)
{
    FILE *f = fopen(path, "r");
    size_t n;

    CHECK(f != NULL);
    n = fread(buf, 1, size - 1, f);
    buf[n] = '\0';
    fclose(f);
    CHECK(n > 0);
}

static long server_rss_kib(void)
{
    char path[64], text[4096], *p;
    long kib = -1;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)server_pid);
    proc_read(path, text, sizeof(text));
    p = strstr(text, "VmRSS:");
    CHECK(p != NULL);
    kib = strtol(p + 6, NULL, 10);
    CHECK(kib > 0);
    return kib;
}

/* ---- cases ---- */

static void test_listening_logged(void)
{
    char *log = test_read_file(log_path, NULL);
    char want[64];

    snprintf(want, sizeof(want), "listening on 127.0.0.1:%d", server_port);
    CHECK_CONTAINS(log, want);
    CHECK_CONTAINS(log, "ready: serving model version 1");
    free(log);
    expect_served();
}

static void test_empty_frame(void)
{
    int fd = tc_connect();

    send_header(fd, 0);
    expect_error_close(fd, DADC__STATUS_CODE__INVALID_ARGUMENT);
    close(fd);
    expect_served();
}

static void test_oversized_prefix(void)
{
    int fd = tc_connect();
    long before = server_rss_kib();

    hello(fd, 1);
    send_header(fd, 0xFFFFFFF0u);
    send_all(fd, "abcdefgh", 8);
    expect_error_close(fd, DADC__STATUS_CODE__RESOURCE_EXHAUSTED);
    close(fd);
    /* Nothing near the announced 4 GiB was allocated. */
    CHECK_INT(server_rss_kib(), <, before + 64 * 1024);
    expect_served();
}

static void test_over_max_frame_after_hello(void)
{
    int fd = tc_connect();

    hello(fd, 1);
    send_header(fd, FRAME_DEFAULT_MAX + 1);
    expect_error_close(fd, DADC__STATUS_CODE__RESOURCE_EXHAUSTED);
    close(fd);
    expect_served();
}

static void test_pre_hello_17k(void)
{
    int fd = tc_connect();
    uint8_t *body = calloc(1, 17 * 1024);

    CHECK(body != NULL);
    send_header(fd, 17 * 1024);
    /* The peer may keep sending; the answer must still reach it. */
    send_all(fd, body, 17 * 1024);
    free(body);
    expect_error_close(fd, DADC__STATUS_CODE__RESOURCE_EXHAUSTED);
    close(fd);
    expect_served();
}

static void test_truncated_frame(void)
{
    int fd = tc_connect();
    uint8_t part[50];

    memset(part, 0x08, sizeof(part));
    send_header(fd, 100);
    send_all(fd, part, sizeof(part));
    close(fd);
    expect_served();
}

static void test_garbage_frame(void)
{
    int fd = tc_connect();
    uint8_t junk[32];

    memset(junk, 0xff, sizeof(junk));
    send_header(fd, sizeof(junk));
    send_all(fd, junk, sizeof(junk));
    expect_error_close(fd, DADC__STATUS_CODE__INVALID_ARGUMENT);
    close(fd);

    /* Raw bytes with no frame structure at all (an HTTP request). */
    fd = tc_connect();
    send_all(fd, "GET / HTTP/1.0\r\n\r\n", 18);
    expect_error_close(fd, DADC__STATUS_CODE__RESOURCE_EXHAUSTED);
    close(fd);
    expect_served();
}

/* A bad argument is answered with the request's id; the connection
 * stays open. */
static void test_bad_argument_keeps_connection(void)
{
    uint8_t small[10] = {0};
    ProtobufCBinaryData bd = {sizeof(small), small};
    Dadc__Request req;
    Dadc__PredictRequest p;
    Dadc__Response *r;
    int fd = tc_connect();

    hello(fd, 1);
    predict_request(&req, &p, &bd, 1, 77);
    send_request(fd, &req);
    r = recv_response(fd);
    CHECK_EQ(r->id, 77);
    CHECK_EQ(status_of(r), DADC__STATUS_CODE__INVALID_ARGUMENT);
    CHECK_CONTAINS(r->status->message, "784");
    dadc__response__free_unpacked(r, NULL);

    /* Same connection, a version that does not exist. */
    uint8_t img[NN_IMAGE_PIXELS];
    ProtobufCBinaryData good = {sizeof(img), img};
    make_image(img, 3);
    predict_request(&req, &p, &good, 1, 78);
    p.model_version = 99;
    send_request(fd, &req);
    r = recv_response(fd);
    CHECK_EQ(r->id, 78);
    CHECK_EQ(status_of(r), DADC__STATUS_CODE__NOT_FOUND);
    dadc__response__free_unpacked(r, NULL);

    /* Told in the client's terms, no internal module names. */
    {
        Dadc__GetModelRequest gm = DADC__GET_MODEL_REQUEST__INIT;

        dadc__request__init(&req);
        req.id = 80;
        req.call_case = DADC__REQUEST__CALL_GET_MODEL;
        req.get_model = &gm;
        gm.version = 99;
        send_request(fd, &req);
        r = recv_response(fd);
        CHECK_EQ(r->id, 80);
        CHECK_EQ(status_of(r), DADC__STATUS_CODE__NOT_FOUND);
        CHECK_STR(r->status->message, "no model version 99");
        dadc__response__free_unpacked(r, NULL);
    }
    hello(fd, 79);
    close(fd);
}

static void test_slowloris(void)
{
    int fd = tc_connect();
    uint8_t part[10] = {0};
    double t0 = now_s(), waited;

    hello(fd, 1);
    send_header(fd, 100);
    send_all(fd, part, sizeof(part));
    /* Others are served while the slow frame waits. */
    expect_served();
    expect_error_close(fd, DADC__STATUS_CODE__DEADLINE_EXCEEDED);
    waited = now_s() - t0;
    CHECK(waited >= 0.4);
    CHECK(waited < 5.0);
    close(fd);
    expect_served();
}

static void test_pipelined(void)
{
    enum { N = 100 };
    static uint8_t buf[N * (NN_IMAGE_PIXELS + 64)];
    uint8_t imgs[N][NN_IMAGE_PIXELS];
    bool seen[N + 1] = {false};
    uint32_t digit_of[N + 1];
    size_t off = 0;
    int fd = tc_connect();

    hello(fd, 1000);
    /* Predicts (ids 1..N, odd ones the same image) mixed with Stats, all
     * in one write: more than the in-flight limit at once. */
    for (int i = 1; i <= N; i++) {
        Dadc__Request req = DADC__REQUEST__INIT;
        Dadc__PredictRequest p;
        Dadc__StatsRequest st = DADC__STATS_REQUEST__INIT;
        ProtobufCBinaryData bd = {NN_IMAGE_PIXELS, imgs[i - 1]};

        make_image(imgs[i - 1], i % 2 ? 5 : (unsigned)i);
        if (i % 10 == 0) {
            req.id = (uint64_t)i;
            req.call_case = DADC__REQUEST__CALL_STATS;
            req.stats = &st;
        } else {
            predict_request(&req, &p, &bd, 1, (uint64_t)i);
        }
        off += frame_request(buf + off, &req);
    }
    send_all(fd, buf, off);

    for (int k = 0; k < N; k++) {
        Dadc__Response *r = recv_response(fd);
        CHECK(r->id >= 1 && r->id <= N);
        CHECK(!seen[r->id]);
        seen[r->id] = true;
        CHECK_EQ(status_of(r), 0);
        if (r->id % 10 == 0) {
            CHECK_EQ(r->result_case, DADC__RESPONSE__RESULT_STATS);
            CHECK_EQ(r->stats->current_model_version, 1);
        } else {
            CHECK_EQ(r->result_case, DADC__RESPONSE__RESULT_PREDICT);
            digit_of[r->id] = r->predict->predictions[0]->digit;
        }
        dadc__response__free_unpacked(r, NULL);
    }
    /* The same image gives the same answer wherever it sat. */
    for (int i = 3; i <= N; i += 2) {
        if (i % 10 != 0)
            CHECK_EQ(digit_of[i], digit_of[1]);
    }
    close(fd);
}

/* Poll Stats until the server counts at most n connections (this one
 * included); the server sees closes asynchronously. */
static void wait_connections_at_most(uint32_t n)
{
    double deadline = now_s() + ANSWER_WAIT_S;

    for (;;) {
        Dadc__Request req = DADC__REQUEST__INIT;
        Dadc__StatsRequest st = DADC__STATS_REQUEST__INIT;
        Dadc__Response *r;
        uint32_t now = UINT32_MAX;
        int fd = tc_connect();

        req.id = 9;
        req.call_case = DADC__REQUEST__CALL_STATS;
        req.stats = &st;
        send_request(fd, &req);
        r = recv_response(fd);
        close(fd);
        if (status_of(r) == 0)
            now = r->stats->connections;
        dadc__response__free_unpacked(r, NULL);
        if (now <= n)
            return;
        if (now_s() > deadline)
            test_fail(__FILE__, __LINE__, "the server still counts %u "
                      "connections after %d s, expected at most %u",
                      now, ANSWER_WAIT_S, n);
        sleep_ms(50);
    }
}

/* A frame much larger than one read, arriving in pieces, then a
 * half-close: every request sent before it is still answered. */
static void test_large_frame_and_half_close(void)
{
    enum { BIG = 200, SMALL = 20 };
    static uint8_t imgs[BIG][NN_IMAGE_PIXELS];
    ProtobufCBinaryData bd[BIG];
    Dadc__Request req;
    Dadc__PredictRequest p;
    size_t len, half;
    uint8_t *buf;
    bool seen[SMALL + 2] = {false};
    int fd = tc_connect();

    hello(fd, 1);
    for (int i = 0; i < BIG; i++) {
        make_image(imgs[i], (unsigned)i);
        bd[i].len = NN_IMAGE_PIXELS;
        bd[i].data = imgs[i];
    }
    predict_request(&req, &p, bd, BIG, 2);
    buf = malloc(dadc__request__get_packed_size(&req) + 64 * SMALL + 64);
    CHECK(buf != NULL);
    len = frame_request(buf, &req);
    CHECK(len > 2 * 65536);
    half = len / 2;
    send_all(fd, buf, half);
    sleep_ms(100);
    send_all(fd, buf + half, len - half);
    len = 0;
    for (int i = 0; i < SMALL; i++) {
        predict_request(&req, &p, bd + i, 1, (uint64_t)(3 + i));
        len += frame_request(buf + len, &req);
    }
    send_all(fd, buf, len);
    free(buf);
    CHECK_EQ(shutdown(fd, SHUT_WR), 0);

    for (int k = 0; k < SMALL + 1; k++) {
        Dadc__Response *r = recv_response(fd);
        CHECK(r->id >= 2 && r->id < 3 + SMALL);
        CHECK(!seen[r->id - 2]);
        seen[r->id - 2] = true;
        CHECK_EQ(status_of(r), 0);
        CHECK_EQ(r->predict->n_predictions, r->id == 2 ? BIG : 1);
        dadc__response__free_unpacked(r, NULL);
    }
    expect_closed(fd);
    close(fd);
}

/* Flags pipelined with predicts: each answered with its id after the
 * commit, every example stored once with the server's own prediction. */
static void test_pipelined_flags(void)
{
    enum { N = 40 };
    static uint8_t buf[N * (NN_IMAGE_PIXELS + 64)];
    uint8_t imgs[N][NN_IMAGE_PIXELS];
    uint64_t ids[N + 1] = {0};
    size_t off = 0, flags = 0;
    Dadc__Request sreq = DADC__REQUEST__INIT;
    Dadc__StatsRequest st = DADC__STATS_REQUEST__INIT;
    Dadc__Response *r;
    uint64_t before;
    int fd = tc_connect();

    hello(fd, 100);
    sreq.id = 101;
    sreq.call_case = DADC__REQUEST__CALL_STATS;
    sreq.stats = &st;
    send_request(fd, &sreq);
    r = recv_response(fd);
    before = r->stats->overall->submitted;
    dadc__response__free_unpacked(r, NULL);

    for (int i = 1; i <= N; i++) {
        Dadc__Request req = DADC__REQUEST__INIT;
        Dadc__FlagRequest fr = DADC__FLAG_REQUEST__INIT;
        Dadc__FlagItem item = DADC__FLAG_ITEM__INIT;
        Dadc__FlagItem *itemp = &item;
        Dadc__PredictRequest p;
        ProtobufCBinaryData bd = {NN_IMAGE_PIXELS, imgs[i - 1]};

        make_image(imgs[i - 1], (unsigned)(1000 + i));
        if (i % 4 == 0) {
            predict_request(&req, &p, &bd, 1, (uint64_t)i);
        } else {
            item.image = bd;
            item.label = (uint32_t)(i % 10);
            fr.n_items = 1;
            fr.items = &itemp;
            req.id = (uint64_t)i;
            req.call_case = DADC__REQUEST__CALL_FLAG;
            req.flag = &fr;
            flags++;
        }
        off += frame_request(buf + off, &req);
    }
    send_all(fd, buf, off);

    for (int k = 0; k < N; k++) {
        r = recv_response(fd);
        CHECK(r->id >= 1 && r->id <= N);
        CHECK_EQ(status_of(r), 0);
        if (r->id % 4 != 0) {
            CHECK_EQ(r->result_case, DADC__RESPONSE__RESULT_FLAG);
            CHECK_EQ(r->flag->n_results, 1);
            CHECK_EQ(r->flag->model_version, 1);
            CHECK(r->flag->results[0]->example_id > 0);
            CHECK_EQ(r->flag->results[0]->fooled,
                     r->flag->results[0]->predicted != r->id % 10);
            ids[r->id] = r->flag->results[0]->example_id;
        }
        dadc__response__free_unpacked(r, NULL);
    }
    for (int i = 1; i <= N; i++) {
        for (int j = i + 1; j <= N; j++)
            CHECK(ids[i] == 0 || ids[i] != ids[j]);
    }

    sreq.id = 102;
    send_request(fd, &sreq);
    r = recv_response(fd);
    CHECK_EQ(r->stats->overall->submitted, before + flags);
    dadc__response__free_unpacked(r, NULL);
    close(fd);
}

/* Requests holding more images than max_pending_in (1 MiB here) pause
 * reading until answers free them; every one is still answered. */
static void test_pending_input_cap(void)
{
    enum { REQS = 8, ITEMS = 1000 };
    static uint8_t img[NN_IMAGE_PIXELS];
    static Dadc__FlagItem items[ITEMS];
    static Dadc__FlagItem *itemp[ITEMS];
    Dadc__Request req = DADC__REQUEST__INIT;
    Dadc__FlagRequest fr = DADC__FLAG_REQUEST__INIT;
    Dadc__PredictRequest p;
    ProtobufCBinaryData bd = {NN_IMAGE_PIXELS, img};
    uint8_t *buf;
    size_t off = 0;
    bool seen[REQS + 2] = {false};
    int fd = tc_connect();

    hello(fd, 1);
    make_image(img, 9);
    for (int i = 0; i < ITEMS; i++) {
        dadc__flag_item__init(&items[i]);
        items[i].image = bd;
        items[i].label = (uint32_t)(i % 10);
        itemp[i] = &items[i];
    }
    fr.n_items = ITEMS;
    fr.items = itemp;
    req.call_case = DADC__REQUEST__CALL_FLAG;
    req.flag = &fr;
    buf = malloc((REQS + 1) * (dadc__request__get_packed_size(&req) + 64));
    CHECK(buf != NULL);
    for (int i = 0; i < REQS; i++) {
        req.id = (uint64_t)(2 + i);
        off += frame_request(buf + off, &req);
    }
    /* A small request after the big ones waits its turn too. */
    predict_request(&req, &p, &bd, 1, (uint64_t)(2 + REQS));
    off += frame_request(buf + off, &req);
    send_all(fd, buf, off);
    free(buf);

    for (int k = 0; k < REQS + 1; k++) {
        Dadc__Response *r = recv_response(fd);
        CHECK(r->id >= 2 && r->id <= 2 + REQS);
        CHECK(!seen[r->id - 2]);
        seen[r->id - 2] = true;
        CHECK_EQ(status_of(r), 0);
        if (r->id < 2 + REQS)
            CHECK_EQ(r->flag->n_results, ITEMS);
        dadc__response__free_unpacked(r, NULL);
    }
    close(fd);
    buf = (uint8_t *)test_read_file(log_path, NULL);
    CHECK_CONTAINS((char *)buf, "reading resumes");
    free(buf);
}

static void test_connection_limit(void)
{
    int fds[MAX_CONNS + 8], n = 0, rejected = -1;

    /* Fill up: every accepted connection answers Hello; the first one
     * past the limit is told "server full" and closed. */
    while (n < MAX_CONNS + 8) {
        Dadc__Request req = DADC__REQUEST__INIT;
        Dadc__HelloRequest h = DADC__HELLO_REQUEST__INIT;
        Dadc__Response *r;

        fds[n] = tc_connect();
        req.id = 5;
        req.call_case = DADC__REQUEST__CALL_HELLO;
        req.hello = &h;
        send_request(fds[n], &req);
        r = recv_response(fds[n]);
        if (status_of(r) == DADC__STATUS_CODE__UNAVAILABLE) {
            CHECK_EQ(r->id, 0);
            CHECK_CONTAINS(r->status->message, "server full");
            dadc__response__free_unpacked(r, NULL);
            expect_closed(fds[n]);
            rejected = n;
            n++;
            break;
        }
        CHECK_EQ(r->id, 5);
        dadc__response__free_unpacked(r, NULL);
        n++;
    }
    CHECK(rejected >= 1);
    CHECK_INT(rejected, <=, MAX_CONNS);

    /* One leaves: a new client gets in. */
    close(fds[0]);
    for (double deadline = now_s() + ANSWER_WAIT_S;;) {
        Dadc__Request req = DADC__REQUEST__INIT;
        Dadc__StatsRequest st = DADC__STATS_REQUEST__INIT;
        Dadc__Response *r;
        int fd = tc_connect();

        req.id = 9;
        req.call_case = DADC__REQUEST__CALL_STATS;
        req.stats = &st;
        send_request(fd, &req);
        r = recv_response(fd);
        close(fd);
        if (status_of(r) == 0) {
            CHECK_EQ(r->id, 9);
            dadc__response__free_unpacked(r, NULL);
            break;
        }
        dadc__response__free_unpacked(r, NULL);
        if (now_s() > deadline)
            test_fail(__FILE__, __LINE__, "still \"server full\" %d s "
                      "after a connection left", ANSWER_WAIT_S);
        sleep_ms(50);
    }
    for (int i = 1; i < n; i++)
        close(fds[i]);
    wait_connections_at_most(1);
}

/* Every connection past the limit is told "server full", also the
 * ones beyond the 64 whose answer lingers (those are answered and closed
 * at once). Each sends its Hello first, as a real client does. */
static void test_all_rejected_answered(void)
{
    enum { EXTRA = 64 + 36 };
    int full[MAX_CONNS], extra[EXTRA];
    char *log;

    for (int i = 0; i < MAX_CONNS; i++) {
        full[i] = tc_connect();
        hello(full[i], 1);
    }
    for (int i = 0; i < EXTRA; i++) {
        Dadc__Request req = DADC__REQUEST__INIT;
        Dadc__HelloRequest h = DADC__HELLO_REQUEST__INIT;

        extra[i] = tc_connect();
        req.id = 5;
        req.call_case = DADC__REQUEST__CALL_HELLO;
        req.hello = &h;
        send_request(extra[i], &req);
    }
    for (int i = 0; i < EXTRA; i++) {
        Dadc__Response *r = recv_response(extra[i]);

        if (status_of(r) != DADC__STATUS_CODE__UNAVAILABLE)
            test_fail(__FILE__, __LINE__, "connection %d past the limit: "
                      "status %d, expected UNAVAILABLE", i, status_of(r));
        CHECK_EQ(r->id, 0);
        CHECK_CONTAINS(r->status->message, "server full");
        dadc__response__free_unpacked(r, NULL);
        expect_closed(extra[i]);
        close(extra[i]);
    }
    for (int i = 0; i < MAX_CONNS; i++)
        close(full[i]);
    wait_connections_at_most(1);
    log = test_read_file(log_path, NULL);
    CHECK_CONTAINS(log, "closed: server full");
    free(log);
}

/* A client that sends but never reads is dropped once PENDING_OUT bytes
 * of answers wait for it. */
static void test_slow_reader_dropped(void)
{
    enum { N = 400 };
    uint8_t frame[64];
    size_t len;
    Dadc__Request req = DADC__REQUEST__INIT;
    Dadc__GetModelRequest gm = DADC__GET_MODEL_REQUEST__INIT;
    int fd = tc_connect_buf(4096);
    size_t got = 0;
    uint8_t b[65536];
    ssize_t n;

    hello(fd, 1);
    req.id = 2;
    req.call_case = DADC__REQUEST__CALL_GET_MODEL;
    req.get_model = &gm;
    len = frame_request(frame, &req);
    /* Each answer is a whole model (~87 KB): N of them is ~35 MB. */
    for (int i = 0; i < N; i++) {
        if (send(fd, frame, len, MSG_NOSIGNAL) != (ssize_t)len)
            break;
    }
    sleep_ms(500);
    while ((n = recv(fd, b, sizeof(b), 0)) > 0)
        got += (size_t)n;
    CHECK(n == 0 || errno == ECONNRESET);
    CHECK_INT(got, <, (size_t)N * 80000);
    close(fd);
    expect_served();
}

static void test_idle_closed(void)
{
    int fd = tc_connect();
    double t0 = now_s();

    hello(fd, 1);
    expect_closed(fd);
    CHECK(now_s() - t0 >= 2.5);
    close(fd);
}

/* SIGTERM: the server finishes and exits 0 with the store closed. */
static void server_stop_clean(void)
{
    double deadline = now_s() + 30;
    int status = 0;
    char *log;

    CHECK_EQ(kill(server_pid, SIGTERM), 0);
    while (waitpid(server_pid, &status, WNOHANG) != server_pid) {
        CHECK(now_s() < deadline);
        sleep_ms(20);
    }
    server_pid = 0;
    CHECK(WIFEXITED(status));
    CHECK_EQ(WEXITSTATUS(status), 0);
    log = test_read_file(log_path, NULL);
    CHECK_CONTAINS(log, "stopping (SIGTERM)");
    CHECK_CONTAINS(log, "stopped; store closed");
    free(log);
}

static void test_sigterm_clean(void)
{
    server_stop_clean();
}

/* CPU time the server used so far, in clock ticks. */
static long server_cpu_ticks(void)
{
    char path[64], text[4096], *p;
    unsigned long ut = 0, st = 0;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)server_pid);
    proc_read(path, text, sizeof(text));
    p = strrchr(text, ')');
    CHECK(p != NULL);
    /* After the name: state, then utime and stime are the 12th and 13th
     * fields. */
    CHECK_EQ(sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u "
                    "%lu %lu", &ut, &st), 2);
    return (long)(ut + st);
}

/* Out of descriptors: the server (restarted on the same store with a
 * limit of 40) keeps serving its connections, does not spin, and takes
 * new ones again once descriptors are free. */
static void test_fd_exhaustion(void)
{
    enum { FLOOD = 60 };
    int keeper, flood[FLOOD];
    long before, used;
    char *log;

    server_start("fds", 1000, 40);
    keeper = tc_connect();
    hello(keeper, 1);
    for (int i = 0; i < FLOOD; i++)
        flood[i] = tc_connect();
    sleep_ms(300);

    before = server_cpu_ticks();
    sleep_ms(1000);
    used = server_cpu_ticks() - before;
    CHECK_INT(used, <, 30);
    hello(keeper, 2);
    log = test_read_file(log_path, NULL);
    CHECK_CONTAINS(log, "model version 1 loaded");
    free(log);

    for (int i = 0; i < FLOOD; i++)
        close(flood[i]);
    close(keeper);
    wait_connections_at_most(1);
    expect_served();
    server_stop_clean();
}

/* A second server on the same data directory is refused while the
 * first runs, naming it; exit status 1. */
static void test_second_server_refused(void)
{
    char cmd[2048], out[4096], want[128];
    size_t n;
    FILE *p;
    int st;

    snprintf(cmd, sizeof(cmd), "'%s/dadc-server' --data-dir '%s' "
             "--mnist '%s' --listen 127.0.0.1:0 2>&1", test_bin_dir(),
             test_path("data"), test_mnist_dir());
    p = popen(cmd, "r");
    CHECK(p != NULL);
    n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    st = pclose(p);
    CHECK(WIFEXITED(st));
    CHECK_EQ(WEXITSTATUS(st), 1);
    snprintf(want, sizeof(want), "is in use by another server (pid %d)",
             (int)server_pid);
    CHECK_CONTAINS(out, "dadc-server: ");
    CHECK_CONTAINS(out, want);
    expect_served();
}

/* A server killed with SIGKILL leaves no lock behind: the next one on
 * the same directory starts and serves. */
static void test_start_after_sigkill(void)
{
    int status;

    server_start("killed", MAX_CONNS, 0);
    expect_served();
    CHECK_EQ(kill(server_pid, SIGKILL), 0);
    CHECK_EQ(waitpid(server_pid, &status, 0), server_pid);
    CHECK(WIFSIGNALED(status));
    server_start("after-kill", MAX_CONNS, 0);
    expect_served();
    server_stop_clean();
}

int main(void)
{
    test_init("server_abuse", 1700);
    atexit(server_kill);
    server_start("server", MAX_CONNS, 0);
    TEST_RUN(test_listening_logged);
    TEST_RUN(test_second_server_refused);
    TEST_RUN(test_empty_frame);
    TEST_RUN(test_oversized_prefix);
    TEST_RUN(test_over_max_frame_after_hello);
    TEST_RUN(test_pre_hello_17k);
    TEST_RUN(test_truncated_frame);
    TEST_RUN(test_garbage_frame);
    TEST_RUN(test_bad_argument_keeps_connection);
    TEST_RUN(test_slowloris);
    TEST_RUN(test_pipelined);
    TEST_RUN(test_large_frame_and_half_close);
    TEST_RUN(test_pipelined_flags);
    TEST_RUN(test_pending_input_cap);
    TEST_RUN(test_connection_limit);
    TEST_RUN(test_all_rejected_answered);
    TEST_RUN(test_slow_reader_dropped);
    TEST_RUN(test_idle_closed);
    TEST_RUN(test_sigterm_clean);
    TEST_RUN(test_fd_exhaustion);
    TEST_RUN(test_start_after_sigkill);
    return test_finish();
}
