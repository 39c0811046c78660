/*
 * Frames end to end: many pipelined requests of mixed kinds on one
 * connection are each answered once, with their own id and the right
 * result (in whatever order the server finishes them); an oversized
 * length prefix, a garbage body and an over-limit frame before Hello
 * each close only the offending connection while other clients, old and
 * new, are still served. (The server's own abuse test covers the
 * limits in depth.)
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "e2e_util.h"
#include "frame.h"
#include "test_util.h"

#define PIPELINED 120

static e2e_server_t srv;

/* What request i of the pipeline asked. */
typedef struct sent {
    uint64_t id;
    int kind;          /* DADC__REQUEST__CALL_* */
    size_t first;      /* predict/flag: first test image */
    size_t count;
    int answered;
} sent_t;

static void send_request(dadc_client_t *c, sent_t *s, size_t i)
{
    const mnist_t *m = e2e_mnist();
    Dadc__Request req = DADC__REQUEST__INIT;
    Dadc__PredictRequest pr = DADC__PREDICT_REQUEST__INIT;
    Dadc__StatsRequest st = DADC__STATS_REQUEST__INIT;
    Dadc__ListModelsRequest lm = DADC__LIST_MODELS_REQUEST__INIT;
    Dadc__FlagRequest fr = DADC__FLAG_REQUEST__INIT;
    Dadc__FlagItem item = DADC__FLAG_ITEM__INIT, *items = &item;
    ProtobufCBinaryData img[64];
    size_t k;

    s->first = i * 3;
    s->count = 1 + (i * 7) % 60;
    switch (i % 4) {
    case 0:
    case 1:
        for (k = 0; k < s->count; k++)
            img[k] = (ProtobufCBinaryData){
                784, m->test_images.data + (s->first + k) * 784};
        pr.n_images = s->count;
        pr.images = img;
        req.call_case = DADC__REQUEST__CALL_PREDICT;
        req.predict = &pr;
        break;
    case 2:
        req.call_case = i % 8 == 2 ? DADC__REQUEST__CALL_STATS
                                   : DADC__REQUEST__CALL_LIST_MODELS;
        req.stats = &st;
        if (i % 8 != 2)
            req.list_models = &lm;
        break;
    default:
        item.image = (ProtobufCBinaryData){
            784, m->test_images.data + s->first * 784};
        item.label = m->test_labels.data[s->first];
        s->count = 1;
        fr.n_items = 1;
        fr.items = &items;
        req.call_case = DADC__REQUEST__CALL_FLAG;
        req.flag = &fr;
        break;
    }
    s->kind = req.call_case;
    CHECK_EQ(dadc_client_send_async(c, &req, &s->id), 0);
}

/* Check one answer against what was asked. */
static void check_answer(const sent_t *s, const Dadc__Response *r,
                         const dadc_prediction_t *ref)
{
    size_t k;

    CHECK(r->status == NULL || r->status->code == 0);
    CHECK_EQ(r->result_case, s->kind);
    if (s->kind == DADC__REQUEST__CALL_PREDICT) {
        CHECK_EQ(r->predict->n_predictions, s->count);
        for (k = 0; k < s->count; k++)
            CHECK_EQ(r->predict->predictions[k]->digit,
                     ref[s->first + k].digit);
    } else if (s->kind == DADC__REQUEST__CALL_FLAG) {
        CHECK_EQ(r->flag->n_results, 1);
        CHECK_EQ(r->flag->results[0]->predicted, ref[s->first].digit);
    }
}

static void test_pipelined(void)
{
    static sent_t sent[PIPELINED];
    static dadc_prediction_t ref[PIPELINED * 3 + 64];
    dadc_client_t *c = e2e_connect(&srv, "pipeliner");
    size_t i, got = 0, late = 0;
    uint64_t last = 0;

    /* the answers every image should get */
    CHECK_EQ(dadc_client_predict(c, e2e_mnist()->test_images.data,
                                 PIPELINED * 3 + 64, 0, ref), 0);

    /* more requests than the server's in-flight limit, unanswered */
    for (i = 0; i < PIPELINED; i++)
        send_request(c, &sent[i], i);
    while (got < PIPELINED) {
        Dadc__ServerMessage *msg;
        const Dadc__Response *r;

        CHECK_EQ(dadc_client_recv(c, 60000, &msg), 0);
        CHECK_EQ(msg->kind_case, DADC__SERVER_MESSAGE__KIND_RESPONSE);
        r = msg->response;
        for (i = 0; i < PIPELINED && sent[i].id != r->id; i++) {
        }
        CHECK(i < PIPELINED);
        CHECK_EQ(sent[i].answered, 0);
        sent[i].answered = 1;
        check_answer(&sent[i], r, ref);
        late += r->id < last;
        last = r->id > last ? r->id : last;
        got++;
        dadc__server_message__free_unpacked(msg, NULL);
    }
    CHECK_EQ(dadc_client_outstanding(c), 0);
    printf("%zu of %d answers arrived after a later request's\n", late,
           PIPELINED);
    dadc_client_close(c);
}

/* A raw connection to the server. */
static int raw_connect(void)
{
    struct sockaddr_in a = {0};
    struct timeval tv = {10, 0};
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    CHECK(fd >= 0);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)srv.port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK_EQ(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

/*
 * Read until the server closes fd; the status code of the first frame
 * it sent (-1 if none). Fails if it does not close within the timeout.
 */
static int raw_expect_close(int fd)
{
    uint8_t buf[65536];
    size_t len = 0;
    int code = -1;

    for (;;) {
        ssize_t n = read(fd, buf + len, sizeof(buf) - len);

        if (n == 0)
            break;
        if (n < 0)
            test_fail(__FILE__, __LINE__, "server kept the connection");
        len += (size_t)n;
        if (len == sizeof(buf))
            len = 0;
    }
    if (len >= 4 && frame_header_decode(buf) <= len - 4) {
        Dadc__ServerMessage *m = dadc__server_message__unpack(
            NULL, frame_header_decode(buf), buf + 4);

        if (m != NULL && m->response != NULL && m->response->status)
            code = (int)m->response->status->code;
        dadc__server_message__free_unpacked(m, NULL);
    }
    close(fd);
    return code;
}

static void raw_send(int fd, const void *buf, size_t len)
{
    CHECK_EQ(write(fd, buf, len), (ssize_t)len);
}

static void check_served(dadc_client_t *c)
{
    dadc_prediction_t p;

    CHECK_EQ(dadc_client_predict(c, e2e_mnist()->test_images.data, 1, 0,
                                 &p), 0);
}

static void test_bad_frames(void)
{
    static const uint8_t huge[] = {0xff, 0xff, 0xff, 0xff};
    static const uint8_t junk[] = {0, 0, 0, 8, 0xff, 0xff, 0xff, 0xff,
                                   0xff, 0xff, 0xff, 0xff};
    dadc_client_t *old = e2e_connect(&srv, "bystander"), *fresh;
    uint8_t *big = calloc(1, 20 * 1024 + 4);
    int fd;

    fd = raw_connect();
    raw_send(fd, huge, sizeof(huge));
    CHECK_EQ(raw_expect_close(fd), DADC__STATUS_CODE__RESOURCE_EXHAUSTED);
    check_served(old);

    fd = raw_connect();
    raw_send(fd, junk, sizeof(junk));
    CHECK(raw_expect_close(fd) != 0);
    check_served(old);

    /* 20 KiB before Hello: over the pre-Hello limit */
    frame_header_encode(big, 20 * 1024);
    fd = raw_connect();
    raw_send(fd, big, 20 * 1024 + 4);
    CHECK_EQ(raw_expect_close(fd), DADC__STATUS_CODE__RESOURCE_EXHAUSTED);
    free(big);

    check_served(old);
    fresh = e2e_connect(&srv, "newcomer");
    check_served(fresh);
    dadc_client_close(fresh);
    dadc_client_close(old);
}

int main(void)
{
    static const char *const extra[] = {"--round-threshold", "1000000",
                                        NULL};

    test_init("test_e2e_frames", 600);
    e2e_server_start(&srv, test_path("data"), extra);
    TEST_RUN(test_pipelined);
    TEST_RUN(test_bad_frames);
    e2e_server_stop(&srv);
    return test_finish();
}
