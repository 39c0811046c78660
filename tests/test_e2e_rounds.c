/*
 * Rounds end to end: fooling flags sent with the CLI start a round whose
 * candidate is promoted to a new version (with the events a subscriber
 * sees and `dadc watch` prints), rollback through the CLI, predictions
 * naming a version, and a candidate rejected by the accuracy gate.
 */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "e2e_util.h"
#include "test_util.h"

/* Wrongly labelled flags sent to the gate server (kept small: a round
 * in a sanitizer build trains slowly). */
#define GATE_FLAGS 30
#define EVENT_WAIT_S 900

static e2e_server_t srv;

static cJSON *json_parse(const char *out)
{
    cJSON *j = cJSON_Parse(out);

    if (j == NULL)
        test_fail(__FILE__, __LINE__, "not JSON: %.200s", out);
    return j;
}

static double json_num(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

    if (!cJSON_IsNumber(v))
        test_fail(__FILE__, __LINE__, "no number '%s'", key);
    return v->valuedouble;
}

/*
 * Up to want MNIST test images the server's current model gets right
 * (right = true) or wrong; their indices go to idx. Returns the count.
 * Asks in chunks and stops once it has enough: predicting all 10,000
 * takes minutes in a sanitizer build.
 */
static size_t pick_images(dadc_client_t *c, bool right, size_t *idx,
                          size_t want)
{
    enum { CHUNK = 500 };
    const mnist_t *m = e2e_mnist();
    size_t n = m->test_images.count, k = 0;
    dadc_prediction_t *p = calloc(CHUNK, sizeof(*p));

    CHECK(p != NULL);
    for (size_t at = 0; at < n && k < want; at += CHUNK) {
        size_t len = n - at < CHUNK ? n - at : CHUNK;

        CHECK_EQ(dadc_client_predict(c, m->test_images.data + at * 784,
                                     len, 0, p), 0);
        for (size_t i = 0; i < len && k < want; i++)
            if ((p[i].digit == m->test_labels.data[at + i]) == right)
                idx[k++] = at + i;
    }
    free(p);
    return k;
}

/* The name of event kind (a field of Event), for messages. */
static const char *event_name(int kind)
{
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field(&dadc__event__descriptor,
                                                (unsigned)kind);

    return f != NULL ? f->name : "?";
}

/* Wait for an event of kind; earlier events are counted in seen[]. A
 * round may legitimately take many minutes in a sanitizer build on a
 * busy machine, hence the long wait. */
static Dadc__Event *wait_event(dadc_client_t *c, int kind, int seen[32])
{
    for (;;) {
        Dadc__Event *ev;
        int rc = dadc_client_next_event(c, EVENT_WAIT_S * 1000, &ev);

        if (rc != 0)
            test_fail(__FILE__, __LINE__, "expected a %s event (kind %d) "
                      "within %d s (%d round_started, %d round_finished "
                      "seen so far): %s", event_name(kind), kind,
                      EVENT_WAIT_S,
                      seen[DADC__EVENT__KIND_ROUND_STARTED],
                      seen[DADC__EVENT__KIND_ROUND_FINISHED],
                      dadc_client_last_error(c));
        if (ev->kind_case < 32)
            seen[ev->kind_case]++;
        if ((int)ev->kind_case == kind)
            return ev;
        dadc__event__free_unpacked(ev, NULL);
    }
}

static void test_round_by_flags(void)
{
    static const char *const extra[] = {
        "--round-threshold", "10", "--round-margin", "100",
        "--replay-size", "1000", "--round-epochs", "1",
        /* the flagging client stays quiet through a slow round */
        "--idle-timeout", "3600", NULL};
    const mnist_t *m = e2e_mnist();
    dadc_client_t *c, *sub;
    size_t idx[30], n, i;
    uint8_t images[30 * 784], labels[30];
    uint32_t dims[3] = {0, 28, 28};
    char img_path[600], lab_path[600], *out;
    int seen[32] = {0};
    Dadc__Event *ev;
    cJSON *j, *models;

    e2e_server_start(&srv, test_path("data"), extra);
    c = e2e_connect(&srv, "tester");
    sub = e2e_connect(&srv, "watcher");
    CHECK_EQ(dadc_client_subscribe(sub), 0);

    /* thirty images the base model gets wrong, as an IDX pair */
    n = pick_images(c, false, idx, 30);
    CHECK_EQ(n, 30);
    for (i = 0; i < n; i++) {
        memcpy(images + i * 784, m->test_images.data + idx[i] * 784, 784);
        labels[i] = m->test_labels.data[idx[i]];
    }
    snprintf(img_path, sizeof(img_path), "%s", test_path("fool-images"));
    snprintf(lab_path, sizeof(lab_path), "%s", test_path("fool-labels"));
    CHECK_EQ(idx_save(img_path, images, n, dims, 3, NULL), 0);
    CHECK_EQ(idx_save(lab_path, labels, n, dims, 1, NULL), 0);

    CHECK_EQ(e2e_cli(&srv, &out, NULL, "--name", "eve", "flag", "--idx",
                     img_path, "--labels", lab_path, "--json", NULL), 0);
    j = json_parse(out);
    CHECK_EQ(json_num(j, "acknowledged"), 30);
    CHECK_INT(json_num(j, "fooled"), >=, 28);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(j, "round_started")));
    cJSON_Delete(j);
    free(out);

    /* started, finished with the candidate promoted, promoted */
    ev = wait_event(sub, DADC__EVENT__KIND_MODEL_PROMOTED, seen);
    CHECK_EQ(ev->model_promoted->version, 2);
    CHECK_EQ(ev->model_promoted->previous_version, 1);
    dadc__event__free_unpacked(ev, NULL);
    CHECK_EQ(seen[DADC__EVENT__KIND_ROUND_STARTED], 1);
    CHECK_EQ(seen[DADC__EVENT__KIND_ROUND_FINISHED], 1);

    CHECK_EQ(e2e_cli(&srv, &out, NULL, "models", "--json", NULL), 0);
    j = json_parse(out);
    CHECK_EQ(json_num(j, "current_model_version"), 2);
    models = cJSON_GetObjectItem(j, "models");
    CHECK_EQ(cJSON_GetArraySize(models), 2);
    {
        const cJSON *v2 = cJSON_GetArrayItem(models, 1);

        CHECK_EQ(json_num(v2, "version"), 2);
        CHECK_EQ(json_num(v2, "parent_version"), 1);
        CHECK_EQ(json_num(v2, "round"), 1);
        CHECK(cJSON_IsTrue(cJSON_GetObjectItem(v2, "promoted")));
        CHECK(cJSON_IsTrue(cJSON_GetObjectItem(v2, "current")));
    }
    cJSON_Delete(j);
    free(out);

    /* the CLI now predicts with version 2 */
    e2e_write_test_png(test_path("seven.png"), 0);
    CHECK_EQ(e2e_cli(&srv, &out, NULL, "predict", test_path("seven.png"),
                     NULL), 0);
    CHECK_CONTAINS(out, "model v2");
    free(out);
    dadc_client_close(c);
    dadc_client_close(sub);
}

static void test_rollback_and_watch(void)
{
    dadc_client_t *c = e2e_connect(&srv, "tester");
    char watch_out[600], png[600], *out, *text;
    dadc_prediction_t p;
    uint32_t prev, cur, target = 1;
    pid_t watch;
    int i, rc = -1;
    cJSON *j;

    /* `dadc watch` prints the rollback events it is sent; roll back
     * and forth until it has subscribed and seen one */
    snprintf(watch_out, sizeof(watch_out), "%s", test_path("watch.out"));
    watch = e2e_cli_spawn(&srv, watch_out, "watch", "--count", "1",
                          "--json", NULL);
    for (i = 0; i < 300 && rc < 0; i++) {
        CHECK_EQ(dadc_client_rollback(c, target, &prev, &cur), 0);
        CHECK_EQ(cur, target);
        target = 3 - target;
        rc = e2e_wait(watch, 100);
    }
    CHECK_EQ(rc, 0);
    text = test_read_file(watch_out, NULL);
    j = json_parse(text);
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(j, "event")),
              "model_rolled_back");
    cJSON_Delete(j);
    free(text);

    /* make 2 current, then roll back to 1 with the CLI */
    if (target == 2)
        CHECK_EQ(dadc_client_rollback(c, 2, NULL, NULL), 0);
    CHECK_EQ(e2e_cli(&srv, &out, NULL, "rollback", "1", NULL), 0);
    CHECK_CONTAINS(out, "current model: v1 (was v2)");
    free(out);

    snprintf(png, sizeof(png), "%s", test_path("seven.png"));
    CHECK_EQ(dadc_client_predict(c, e2e_mnist()->test_images.data, 1, 0,
                                 &p), 0);
    CHECK_EQ(p.model_version, 1);
    CHECK_EQ(dadc_client_predict(c, e2e_mnist()->test_images.data, 1, 2,
                                 &p), 0);
    CHECK_EQ(p.model_version, 2);
    CHECK_EQ(e2e_cli(&srv, &out, NULL, "predict", "--model", "2", png,
                     NULL), 0);
    CHECK_CONTAINS(out, "model v2");
    free(out);
    CHECK_EQ(e2e_cli(&srv, &out, NULL, "predict", png, NULL), 0);
    CHECK_CONTAINS(out, "model v1");
    free(out);
    CHECK_EQ(e2e_cli(&srv, NULL, NULL, "rollback", "3", NULL), 1);
    dadc_client_close(c);
    e2e_server_stop(&srv);
}

static void test_gate_rejects(void)
{
    /* fine-tuning hard on wrong labels, no replay, no margin: the
     * candidate loses MNIST accuracy and must not be promoted */
    static const char *const extra[] = {
        "--round-threshold", "10", "--round-margin", "0",
        "--replay-size", "0", "--round-epochs", "3", "--round-lr", "0.1",
        /* the flagging client stays quiet through a slow round */
        "--idle-timeout", "3600", NULL};
    const mnist_t *m = e2e_mnist();
    e2e_server_t gate;
    dadc_client_t *c, *sub;
    size_t idx[GATE_FLAGS], n, i;
    uint8_t *images = malloc(GATE_FLAGS * 784), labels[GATE_FLAGS];
    dadc_flag_summary_t s;
    Dadc__ListModelsResponse *l;
    int seen[32] = {0};
    Dadc__Event *ev;

    e2e_server_start(&gate, test_path("gate"), extra);
    c = e2e_connect(&gate, "mallory");
    sub = e2e_connect(&gate, "watcher");
    CHECK_EQ(dadc_client_subscribe(sub), 0);
    n = pick_images(c, true, idx, GATE_FLAGS);
    CHECK_EQ(n, GATE_FLAGS);
    for (i = 0; i < n; i++) {
        memcpy(images + i * 784, m->test_images.data + idx[i] * 784, 784);
        labels[i] = (uint8_t)((m->test_labels.data[idx[i]] + 1) % 10);
    }
    CHECK_EQ(dadc_client_flag(c, images, labels, n, NULL, &s, NULL, NULL),
             0);
    CHECK_EQ(s.acknowledged, GATE_FLAGS);
    CHECK_INT(s.fooled, >=, GATE_FLAGS - 2);

    ev = wait_event(sub, DADC__EVENT__KIND_ROUND_FINISHED, seen);
    CHECK(!ev->round_finished->info->promoted);
    CHECK_EQ(ev->round_finished->info->candidate_version, 2);
    CHECK(strlen(ev->round_finished->info->reason) > 0);
    dadc__event__free_unpacked(ev, NULL);
    CHECK_EQ(seen[DADC__EVENT__KIND_MODEL_PROMOTED], 0);

    /* kept as a version with its figures, but 1 stays current */
    CHECK_EQ(dadc_client_list_models(c, &l), 0);
    CHECK_EQ(l->current_model_version, 1);
    CHECK_EQ(l->n_models, 2);
    CHECK(!l->models[1]->promoted);
    CHECK(!l->models[1]->current);
    CHECK(l->models[1]->mnist_test_accuracy <
          l->models[0]->mnist_test_accuracy);
    printf("candidate MNIST test %.2f%% against %.2f%%\n",
           100 * l->models[1]->mnist_test_accuracy,
           100 * l->models[0]->mnist_test_accuracy);
    dadc__list_models_response__free_unpacked(l, NULL);
    free(images);
    dadc_client_close(c);
    dadc_client_close(sub);
    e2e_server_stop(&gate);
}

int main(void)
{
    test_init("test_e2e_rounds", 1700);
    TEST_RUN(test_round_by_flags);
    TEST_RUN(test_rollback_and_watch);
    TEST_RUN(test_gate_rejects);
    return test_finish();
}
