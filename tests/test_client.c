/*
 * The client library against a misbehaving peer: a thread in this test
 * listens on 127.0.0.1 and answers by script, so the library's handling
 * of what a correct server never sends (garbage frames, huge length
 * prefixes, silence, unsolicited ids, out-of-order answers) can be
 * checked. The real server is driven by the test_e2e_* tests.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <locale.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>
#include <wchar.h>
#include <wctype.h>

#include "dadc_client.h"
#include "frame.h"
#include "test_util.h"

typedef void (*peer_script_fn)(int fd);

typedef struct peer {
    int lfd;
    int port;
    peer_script_fn script;
    pthread_t thread;
} peer_t;

static void *peer_main(void *arg)
{
    peer_t *p = arg;
    int fd = accept(p->lfd, NULL, NULL);

    if (fd >= 0) {
        p->script(fd);
        close(fd);
    }
    return NULL;
}

static void peer_start(peer_t *p, peer_script_fn script)
{
    struct sockaddr_in a = {0};
    socklen_t len = sizeof(a);

    p->script = script;
    p->lfd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(p->lfd >= 0);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK_EQ(bind(p->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    CHECK_EQ(listen(p->lfd, 4), 0);
    CHECK_EQ(getsockname(p->lfd, (struct sockaddr *)&a, &len), 0);
    p->port = ntohs(a.sin_port);
    CHECK_EQ(pthread_create(&p->thread, NULL, peer_main, p), 0);
}

static void peer_join(peer_t *p)
{
    pthread_join(p->thread, NULL);
    close(p->lfd);
}

static dadc_client_t *peer_connect(const peer_t *p)
{
    char addr[64];
    dadc_client_t *c;
    dadc_error_t err;

    snprintf(addr, sizeof(addr), "127.0.0.1:%d", p->port);
    CHECK_EQ(dadc_client_connect(&c, addr, 2000, &err), 0);
    dadc_client_set_timeout(c, 5000);
    return c;
}

static int read_full(int fd, void *buf, size_t len)
{
    uint8_t *b = buf;

    while (len > 0) {
        ssize_t n = read(fd, b, len);

        if (n <= 0)
            return -1;
        b += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Read one request frame; NULL when the client hung up. */
static Dadc__Request *peer_read_request(int fd)
{
    uint8_t hdr[4], *body;
    uint32_t len;
    Dadc__Request *r;

    if (read_full(fd, hdr, 4) != 0)
        return NULL;
    len = frame_header_decode(hdr);
    body = malloc(len ? len : 1);
    if (body == NULL || read_full(fd, body, len) != 0) {
        free(body);
        return NULL;
    }
    r = dadc__request__unpack(NULL, len, body);
    free(body);
    return r;
}

/* Read and drop requests until the client hangs up. */
static void peer_wait_hangup(int fd)
{
    Dadc__Request *r;

    while ((r = peer_read_request(fd)) != NULL)
        dadc__request__free_unpacked(r, NULL);
}

static void peer_send_raw(int fd, const void *buf, size_t len)
{
    if (write(fd, buf, len) != (ssize_t)len) {
        /* the client may have gone; the test checks its side */
    }
}

static void peer_send_msg(int fd, const Dadc__ServerMessage *m)
{
    size_t len = dadc__server_message__get_packed_size(m);
    uint8_t *buf = malloc(4 + len);

    frame_header_encode(buf, (uint32_t)len);
    dadc__server_message__pack(m, buf + 4);
    peer_send_raw(fd, buf, 4 + len);
    free(buf);
}

/* Answer a request with id and a status (code 0: OK, no result). */
static void peer_send_status(int fd, uint64_t id, int code, const char *msg)
{
    Dadc__ServerMessage m = DADC__SERVER_MESSAGE__INIT;
    Dadc__Response r = DADC__RESPONSE__INIT;
    Dadc__Status st = DADC__STATUS__INIT;

    st.code = (Dadc__StatusCode)code;
    st.message = (char *)msg;
    r.id = id;
    r.status = &st;
    m.kind_case = DADC__SERVER_MESSAGE__KIND_RESPONSE;
    m.response = &r;
    peer_send_msg(fd, &m);
}

static void peer_answer_hello(int fd)
{
    Dadc__Request *req = peer_read_request(fd);
    Dadc__ServerMessage m = DADC__SERVER_MESSAGE__INIT;
    Dadc__Response r = DADC__RESPONSE__INIT;
    Dadc__HelloResponse h = DADC__HELLO_RESPONSE__INIT;

    if (req == NULL)
        return;
    h.protocol_version = 1;
    h.server_version = "peer";
    h.current_model_version = 3;
    h.max_frame_bytes = 4096;
    h.max_inflight = 4;
    h.round_threshold = 10;
    r.id = req->id;
    r.result_case = DADC__RESPONSE__RESULT_HELLO;
    r.hello = &h;
    m.kind_case = DADC__SERVER_MESSAGE__KIND_RESPONSE;
    m.response = &r;
    peer_send_msg(fd, &m);
    dadc__request__free_unpacked(req, NULL);
}

/* Answer each Predict of the batch (digit = first pixel % 10). */
static void peer_answer_predict(int fd, const Dadc__Request *req)
{
    Dadc__ServerMessage m = DADC__SERVER_MESSAGE__INIT;
    Dadc__Response r = DADC__RESPONSE__INIT;
    Dadc__PredictResponse pr = DADC__PREDICT_RESPONSE__INIT;
    size_t n = req->predict->n_images, i;
    Dadc__Prediction *p = calloc(n, sizeof(*p));
    Dadc__Prediction **pp = calloc(n, sizeof(*pp));
    float probs[10] = {0};

    for (i = 0; i < n; i++) {
        dadc__prediction__init(&p[i]);
        p[i].digit = req->predict->images[i].data[0] % 10;
        p[i].n_probabilities = 10;
        p[i].probabilities = probs;
        pp[i] = &p[i];
    }
    pr.model_version = 3;
    pr.n_predictions = n;
    pr.predictions = pp;
    r.id = req->id;
    r.result_case = DADC__RESPONSE__RESULT_PREDICT;
    r.predict = &pr;
    m.kind_case = DADC__SERVER_MESSAGE__KIND_RESPONSE;
    m.response = &r;
    peer_send_msg(fd, &m);
    free(p);
    free(pp);
}

/* ------------------------------------------------------------------ */

static void test_parse_address(void)
{
    char host[64];
    uint16_t port;

    CHECK_EQ(dadc_client_parse_address("127.0.0.1:7070", host, sizeof(host),
                                       &port, NULL), 0);
    CHECK_STR(host, "127.0.0.1");
    CHECK_EQ(port, 7070);
    CHECK_EQ(dadc_client_parse_address("[::1]:80", host, sizeof(host),
                                       &port, NULL), 0);
    CHECK_STR(host, "::1");
    CHECK_EQ(port, 80);
    CHECK_EQ(dadc_client_parse_address("lab:1", host, sizeof(host), &port,
                                       NULL), 0);
    CHECK_EQ(dadc_client_parse_address("host", host, sizeof(host), &port,
                                       NULL), DADC_ERANGE);
    CHECK_EQ(dadc_client_parse_address("h:0", host, sizeof(host), &port,
                                       NULL), DADC_ERANGE);
    CHECK_EQ(dadc_client_parse_address("h:70000", host, sizeof(host),
                                       &port, NULL), DADC_ERANGE);
    CHECK_EQ(dadc_client_parse_address(":80", host, sizeof(host), &port,
                                       NULL), DADC_ERANGE);
    CHECK_EQ(dadc_client_parse_address("h:8x", host, sizeof(host), &port,
                                       NULL), DADC_ERANGE);
    CHECK_EQ(dadc_client_parse_address("[::1]80", host, sizeof(host),
                                       &port, NULL), DADC_ERANGE);
}

static void test_connect_refused(void)
{
    peer_t p;
    char addr[64];
    dadc_client_t *c = NULL;
    dadc_error_t err;
    int rc;

    /* a port that was just free: bind, learn it, close */
    p.lfd = socket(AF_INET, SOCK_STREAM, 0);
    {
        struct sockaddr_in a = {0};
        socklen_t len = sizeof(a);

        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        CHECK_EQ(bind(p.lfd, (struct sockaddr *)&a, sizeof(a)), 0);
        CHECK_EQ(getsockname(p.lfd, (struct sockaddr *)&a, &len), 0);
        p.port = ntohs(a.sin_port);
    }
    close(p.lfd);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", p.port);
    rc = dadc_client_connect(&c, addr, 2000, &err);
    CHECK_EQ(rc, -ECONNREFUSED);
    CHECK(c == NULL);
    CHECK_CONTAINS(err.msg, addr);
}

static void script_hello_ok(int fd)
{
    peer_answer_hello(fd);
    peer_wait_hangup(fd);
}

static void test_hello(void)
{
    peer_t p;
    dadc_client_t *c;
    dadc_server_info_t info;

    peer_start(&p, script_hello_ok);
    c = peer_connect(&p);
    CHECK(dadc_client_server_info(c) == NULL);
    CHECK_EQ(dadc_client_hello(c, "test", "alice", &info), 0);
    CHECK_EQ(info.current_model_version, 3);
    CHECK_EQ(info.max_frame_bytes, 4096);
    CHECK_EQ(info.max_inflight, 4);
    CHECK_STR(info.server_version, "peer");
    CHECK(dadc_client_server_info(c) != NULL);
    dadc_client_close(c);
    peer_join(&p);
}

static void script_garbage(int fd)
{
    static const uint8_t junk[] = {0, 0, 0, 6, 0xff, 0xff, 0xff, 0xff,
                                   0xff, 0xff};
    Dadc__Request *req = peer_read_request(fd);

    dadc__request__free_unpacked(req, NULL);
    peer_send_raw(fd, junk, sizeof(junk));
    peer_wait_hangup(fd);
}

static void test_garbage_frame(void)
{
    peer_t p;
    dadc_client_t *c;

    peer_start(&p, script_garbage);
    c = peer_connect(&p);
    CHECK_EQ(dadc_client_hello(c, NULL, NULL, NULL), DADC_EPROTO);
    CHECK_CONTAINS(dadc_client_last_error(c), "malformed");
    CHECK(!dadc_client_is_open(c));
    CHECK_EQ(dadc_client_train(c, NULL), DADC_ECLOSED);
    dadc_client_close(c);
    peer_join(&p);
}

static void script_huge_prefix(int fd)
{
    static const uint8_t hdr[] = {0xff, 0xff, 0xff, 0xf0, 1, 2, 3};
    Dadc__Request *req = peer_read_request(fd);

    dadc__request__free_unpacked(req, NULL);
    peer_send_raw(fd, hdr, sizeof(hdr));
    peer_wait_hangup(fd);
}

static void test_huge_prefix(void)
{
    peer_t p;
    dadc_client_t *c;

    peer_start(&p, script_huge_prefix);
    c = peer_connect(&p);
    CHECK_EQ(dadc_client_hello(c, NULL, NULL, NULL), DADC_EPROTO);
    CHECK_CONTAINS(dadc_client_last_error(c), "over the limit");
    dadc_client_close(c);
    peer_join(&p);
}

static void script_close(int fd)
{
    Dadc__Request *req = peer_read_request(fd);

    dadc__request__free_unpacked(req, NULL);
}

static void test_peer_closes(void)
{
    peer_t p;
    dadc_client_t *c;

    peer_start(&p, script_close);
    c = peer_connect(&p);
    CHECK_EQ(dadc_client_hello(c, NULL, NULL, NULL), DADC_ECLOSED);
    CHECK_CONTAINS(dadc_client_last_error(c), "closed");
    dadc_client_close(c);
    peer_join(&p);
}

static void script_silent(int fd)
{
    Dadc__Request *req = peer_read_request(fd);

    /* answer nothing; wait for the client to hang up */
    dadc__request__free_unpacked(req, NULL);
    peer_wait_hangup(fd);
}

static void test_timeout(void)
{
    peer_t p;
    dadc_client_t *c;

    peer_start(&p, script_silent);
    c = peer_connect(&p);
    dadc_client_set_timeout(c, 200);
    CHECK_EQ(dadc_client_hello(c, NULL, NULL, NULL), DADC_ETIMEDOUT);
    CHECK(dadc_client_is_open(c));
    CHECK_EQ(dadc_client_outstanding(c), 0);
    dadc_client_close(c);
    peer_join(&p);
}

static void *cancel_later(void *arg)
{
    usleep(100000);
    dadc_client_cancel(arg);
    return NULL;
}

static void test_cancel(void)
{
    peer_t p;
    dadc_client_t *c;
    pthread_t t;

    peer_start(&p, script_silent);
    c = peer_connect(&p);
    CHECK_EQ(pthread_create(&t, NULL, cancel_later, c), 0);
    CHECK_EQ(dadc_client_hello(c, NULL, NULL, NULL), DADC_ECANCELED);
    pthread_join(t, NULL);
    dadc_client_close(c);
    peer_join(&p);
}

/*
 * Three pipelined requests answered in reverse order, with an answer to
 * an id nobody asked for and an event in between.
 */
static void script_out_of_order(int fd)
{
    Dadc__Request *req[3];
    Dadc__ServerMessage m = DADC__SERVER_MESSAGE__INIT;
    Dadc__Event ev = DADC__EVENT__INIT;
    Dadc__ModelRolledBack rb = DADC__MODEL_ROLLED_BACK__INIT;
    int i;

    peer_answer_hello(fd);
    for (i = 0; i < 3; i++)
        req[i] = peer_read_request(fd);
    peer_send_status(fd, 999, 0, "nobody's");
    rb.version = 2;
    rb.previous_version = 3;
    ev.kind_case = DADC__EVENT__KIND_MODEL_ROLLED_BACK;
    ev.model_rolled_back = &rb;
    m.kind_case = DADC__SERVER_MESSAGE__KIND_EVENT;
    m.event = &ev;
    peer_send_msg(fd, &m);
    for (i = 2; i >= 0; i--) {
        if (req[i] == NULL)
            continue;
        if (req[i]->call_case == DADC__REQUEST__CALL_PREDICT)
            peer_answer_predict(fd, req[i]);
        else
            peer_send_status(fd, req[i]->id, 5, "no such version");
        dadc__request__free_unpacked(req[i], NULL);
    }
    peer_wait_hangup(fd);
}

static void send_predict(dadc_client_t *c, uint8_t first_pixel,
                         uint64_t *id)
{
    Dadc__Request req = DADC__REQUEST__INIT;
    Dadc__PredictRequest pr = DADC__PREDICT_REQUEST__INIT;
    uint8_t img[784] = {first_pixel};
    ProtobufCBinaryData b = {784, img};

    pr.n_images = 1;
    pr.images = &b;
    req.call_case = DADC__REQUEST__CALL_PREDICT;
    req.predict = &pr;
    CHECK_EQ(dadc_client_send_async(c, &req, id), 0);
}

static void test_out_of_order(void)
{
    peer_t p;
    dadc_client_t *c;
    Dadc__Request req = DADC__REQUEST__INIT;
    Dadc__GetModelRequest gm = DADC__GET_MODEL_REQUEST__INIT;
    Dadc__Response *r;
    Dadc__Event *ev;
    uint64_t id[3];

    peer_start(&p, script_out_of_order);
    c = peer_connect(&p);
    CHECK_EQ(dadc_client_hello(c, NULL, NULL, NULL), 0);
    send_predict(c, 7, &id[0]);
    send_predict(c, 4, &id[1]);
    gm.version = 9;
    req.call_case = DADC__REQUEST__CALL_GET_MODEL;
    req.get_model = &gm;
    CHECK_EQ(dadc_client_send(c, &req, &id[2]), 0);
    CHECK(id[0] < id[1] && id[1] < id[2]);
    CHECK_EQ(dadc_client_outstanding(c), 3);

    /* the first request's answer comes last */
    CHECK_EQ(dadc_client_wait(c, id[0], 5000, &r), 0);
    CHECK_EQ(r->id, id[0]);
    CHECK_EQ(r->predict->predictions[0]->digit, 7);
    dadc__response__free_unpacked(r, NULL);
    CHECK_EQ(dadc_client_wait(c, id[2], 5000, &r), DADC_ESTATUS);
    CHECK_EQ(dadc_client_last_status(c), DADC__STATUS_CODE__NOT_FOUND);
    CHECK_STR(dadc_client_last_status_message(c), "no such version");
    CHECK_CONTAINS(dadc_client_last_error(c), "NOT_FOUND");
    dadc__response__free_unpacked(r, NULL);
    CHECK_EQ(dadc_client_wait(c, id[1], 5000, &r), 0);
    CHECK_EQ(r->predict->predictions[0]->digit, 4);
    dadc__response__free_unpacked(r, NULL);

    /* the event waited in the queue; the stray answer was dropped */
    CHECK_EQ(dadc_client_queued(c), 1);
    CHECK_EQ(dadc_client_next_event(c, 0, &ev), 0);
    CHECK_EQ(ev->kind_case, DADC__EVENT__KIND_MODEL_ROLLED_BACK);
    CHECK_EQ(dadc_client_server_info(c)->current_model_version, 3);
    dadc__event__free_unpacked(ev, NULL);
    CHECK_EQ(dadc_client_next_event(c, 0, &ev), DADC_ETIMEDOUT);
    CHECK_EQ(dadc_client_outstanding(c), 0);
    CHECK_EQ(dadc_client_queued(c), 0);
    dadc_client_close(c);
    peer_join(&p);
}

/* Answer every Predict until the client hangs up. */
static void script_predict_all(int fd)
{
    Dadc__Request *req;

    peer_answer_hello(fd);
    while ((req = peer_read_request(fd)) != NULL) {
        peer_answer_predict(fd, req);
        dadc__request__free_unpacked(req, NULL);
    }
}

static void test_batch_split(void)
{
    enum { N = 100 };
    peer_t p;
    dadc_client_t *c;
    uint8_t *images = calloc(N, 784);
    dadc_prediction_t out[N];
    int i;

    peer_start(&p, script_predict_all);
    c = peer_connect(&p);
    for (i = 0; i < N; i++)
        images[i * 784] = (uint8_t)i;
    /* a 4096-byte frame limit holds 5 images: 20 pipelined frames */
    CHECK_EQ(dadc_client_predict(c, images, N, 0, out), 0);
    for (i = 0; i < N; i++) {
        CHECK_EQ(out[i].digit, i % 10);
        CHECK_EQ(out[i].model_version, 3);
    }
    CHECK_EQ(dadc_client_predict(c, images, 0, 0, out), DADC_ERANGE);
    dadc_client_close(c);
    peer_join(&p);
    free(images);
}

/* Store every Flag but the second request's (an INVALID_ARGUMENT). */
static void script_flag_second_fails(int fd)
{
    Dadc__Request *req;
    int nth = 0;
    uint64_t next_example = 100;

    peer_answer_hello(fd);
    while ((req = peer_read_request(fd)) != NULL) {
        Dadc__ServerMessage m = DADC__SERVER_MESSAGE__INIT;
        Dadc__Response r = DADC__RESPONSE__INIT;
        Dadc__FlagResponse fr = DADC__FLAG_RESPONSE__INIT;
        size_t n = req->flag->n_items, i;
        Dadc__FlagResult *res = calloc(n, sizeof(*res));
        Dadc__FlagResult **pp = calloc(n, sizeof(*pp));

        if (nth++ == 1) {
            peer_send_status(fd, req->id, 3, "bad image");
        } else {
            for (i = 0; i < n; i++) {
                dadc__flag_result__init(&res[i]);
                res[i].example_id = next_example++;
                res[i].predicted = 1;
                res[i].fooled = req->flag->items[i]->label != 1;
                pp[i] = &res[i];
            }
            fr.n_results = n;
            fr.results = pp;
            fr.pending_fooled = 4;
            fr.round_threshold = 10;
            r.id = req->id;
            r.result_case = DADC__RESPONSE__RESULT_FLAG;
            r.flag = &fr;
            m.kind_case = DADC__SERVER_MESSAGE__KIND_RESPONSE;
            m.response = &r;
            peer_send_msg(fd, &m);
        }
        free(res);
        free(pp);
        dadc__request__free_unpacked(req, NULL);
    }
}

static int count_progress_cb(size_t done, size_t total, void *user)
{
    size_t *calls = user;

    CHECK(done <= total);
    (*calls)++;
    return 0;
}

static void test_flag_partial_failure(void)
{
    enum { N = 12 };
    peer_t p;
    dadc_client_t *c;
    uint8_t *img = calloc(N, 784), labels[N];
    dadc_flag_result_t res[N];
    dadc_flag_summary_t s;
    size_t calls = 0, i;

    for (i = 0; i < N; i++)
        labels[i] = (uint8_t)(i % 10);
    peer_start(&p, script_flag_second_fails);
    c = peer_connect(&p);
    dadc_client_set_batch_images(c, 4);
    CHECK_EQ(dadc_client_flag(c, img, labels, N, res, &s, count_progress_cb,
                              &calls), DADC_ESTATUS);
    CHECK_EQ(dadc_client_last_status(c),
             DADC__STATUS_CODE__INVALID_ARGUMENT);
    /* items 4..7 rode in the refused request; the others are stored */
    for (i = 0; i < N; i++) {
        if (i >= 4 && i < 8) {
            CHECK_EQ(res[i].status, DADC_ESTATUS);
            continue;
        }
        CHECK_EQ(res[i].status, 0);
        CHECK_EQ(res[i].fooled, labels[i] != 1);
    }
    CHECK_EQ(res[0].example_id, 100);
    CHECK_EQ(res[8].example_id, 104);
    CHECK_EQ(s.acknowledged, 8);
    CHECK_EQ(s.failed, 4);
    CHECK_EQ(s.fooled, 6);
    CHECK_EQ(s.pending_fooled, 4);
    CHECK_EQ(calls, 3);
    dadc_client_close(c);
    peer_join(&p);
    free(img);
}

static void test_flag_bad_label(void)
{
    peer_t p;
    dadc_client_t *c;
    uint8_t img[2 * 784] = {0}, labels[2] = {3, 12};
    dadc_flag_result_t res[2];
    dadc_flag_summary_t s;

    peer_start(&p, script_predict_all);
    c = peer_connect(&p);
    CHECK_EQ(dadc_client_flag(c, img, labels, 2, res, &s, NULL, NULL),
             DADC_ERANGE);
    CHECK_EQ(s.acknowledged, 0);
    CHECK_EQ(s.failed, 2);
    CHECK_EQ(res[0].status, DADC_ERANGE);
    dadc_client_close(c);
    peer_join(&p);
}

/* Expect dadc_text_escape(in) to be want. */
static void escape_expect(const char *in, const char *want)
{
    char *got = dadc_text_escape(in);

    CHECK(got != NULL);
    CHECK_STR(got, want);
    free(got);
}

/* s is valid UTF-8 without control characters (C.UTF-8 locale). */
static void utf8_printable_check(const char *s)
{
    mbstate_t st;
    size_t len = strlen(s);

    memset(&st, 0, sizeof(st));
    while (len > 0) {
        wchar_t wc;
        size_t n = mbrtowc(&wc, s, len, &st);

        CHECK(n != (size_t)-1 && n != (size_t)-2 && n > 0);
        CHECK(!iswcntrl((wint_t)wc));
        s += n;
        len -= n;
    }
}

/*
 * Server text for terminals: controls and broken UTF-8 escaped byte by
 * byte, printable UTF-8 kept, no terminal control byte ever left.
 */
static void test_text_escape(void)
{
    uint64_t seed = 7;
    char raw[64];

    CHECK(setlocale(LC_CTYPE, "C.UTF-8") != NULL);

    escape_expect("alice", "alice");
    escape_expect(NULL, "");
    escape_expect("ev\x1b[2Jil\a", "ev\\x1b[2Jil\\x07");
    escape_expect("a\r\nb\tc\x7f", "a\\x0d\\x0ab\\x09c\\x7f");
    escape_expect("back\\slash", "back\\\\slash");
    escape_expect("Zo\xc3\xab \xe6\x97\xa5 \xf0\x9f\x98\x80",
                  "Zo\xc3\xab \xe6\x97\xa5 \xf0\x9f\x98\x80");
    /* C1 CSI as UTF-8, a right-to-left override, broken sequences */
    escape_expect("\xc2\x9b" "31m", "\\xc2\\x9b31m");
    escape_expect("x\xe2\x80\xaey", "x\\xe2\\x80\\xaey");
    escape_expect("\xc0\xaf \xed\xa0\x80 \xe6\x97", "\\xc0\\xaf "
                  "\\xed\\xa0\\x80 \\xe6\\x97");
    escape_expect("\x9b\xff", "\\x9b\\xff");

    for (int iter = 0; iter < 2000; iter++) {
        char *got;

        for (size_t i = 0; i < sizeof(raw) - 1; i++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            raw[i] = (char)(1 + (seed >> 33) % 255);
        }
        raw[sizeof(raw) - 1] = '\0';
        got = dadc_text_escape(raw);
        CHECK(got != NULL);
        utf8_printable_check(got);
        free(got);
    }
}

int main(void)
{
    test_init("test_client", 60);
    TEST_RUN(test_parse_address);
    TEST_RUN(test_connect_refused);
    TEST_RUN(test_hello);
    TEST_RUN(test_garbage_frame);
    TEST_RUN(test_huge_prefix);
    TEST_RUN(test_peer_closes);
    TEST_RUN(test_timeout);
    TEST_RUN(test_cancel);
    TEST_RUN(test_out_of_order);
    TEST_RUN(test_batch_split);
    TEST_RUN(test_flag_partial_failure);
    TEST_RUN(test_flag_bad_label);
    TEST_RUN(test_text_escape);
    return test_finish();
}
