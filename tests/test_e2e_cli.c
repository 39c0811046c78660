/*
 * The `dadc` CLI against the real server: predict on MNIST test images
 * written as PNG and from an IDX file, single and batch flags (10,000
 * images in one command), stats, models, model get, export, and the exit
 * codes of every kind of failure.
 */
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "e2e_util.h"
#include "image.h"
#include "nn.h"
#include "test_util.h"

#define N_PNG 20

static e2e_server_t srv;
static char png[N_PNG][600];

/* Parse out as JSON; fails the test when it is not. */
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

static void setup(void)
{
    static const char *const extra[] = {"--round-threshold", "1000000",
                                        NULL};
    size_t i;

    e2e_server_start(&srv, test_path("data"), extra);
    for (i = 0; i < N_PNG; i++) {
        char name[32];

        snprintf(name, sizeof(name), "digit-%02zu.png", i);
        snprintf(png[i], sizeof(png[i]), "%s", test_path(name));
        e2e_write_test_png(png[i], i);
    }
}

/* The library's prediction for a PNG, through the same 28x28 step. */
static uint32_t library_predict(dadc_client_t *c, const char *path)
{
    image_t img;
    uint8_t mn[784];
    dadc_prediction_t p;

    CHECK_EQ(image_load(path, &img, NULL), 0);
    CHECK_EQ(image_to_mnist(img.pixels, img.width, img.height, mn, NULL),
             0);
    free(img.pixels);
    CHECK_EQ(dadc_client_predict(c, mn, 1, 0, &p), 0);
    return p.digit;
}

static void test_predict_png(void)
{
    const mnist_t *m = e2e_mnist();
    dadc_client_t *c = e2e_connect(&srv, "tester");
    char *out, *err;
    cJSON *j, *preds, *p;
    int i = 0, right = 0;

    CHECK_EQ(e2e_cli(&srv, &out, &err, "predict", "--json", png[0], png[1],
                     png[2], png[3], png[4], png[5], png[6], png[7], png[8],
                     png[9], png[10], png[11], png[12], png[13], png[14],
                     png[15], png[16], png[17], png[18], png[19], NULL), 0);
    j = json_parse(out);
    CHECK_EQ(json_num(j, "model_version"), 1);
    preds = cJSON_GetObjectItem(j, "predictions");
    CHECK_EQ(cJSON_GetArraySize(preds), N_PNG);
    cJSON_ArrayForEach(p, preds) {
        uint32_t digit = (uint32_t)json_num(p, "digit");

        CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(p, "file")),
                  png[i]);
        CHECK_EQ(cJSON_GetArraySize(cJSON_GetObjectItem(p,
                                                        "probabilities")),
                 10);
        CHECK_EQ(digit, library_predict(c, png[i]));
        right += digit == m->test_labels.data[i];
        i++;
    }
    /* a base model trained briefly still gets most of these right */
    CHECK_INT(right, >=, 15);
    cJSON_Delete(j);
    free(out);
    free(err);

    CHECK_EQ(e2e_cli(&srv, &out, NULL, "predict", png[0], NULL), 0);
    CHECK_CONTAINS(out, "digit-00.png: ");
    CHECK_CONTAINS(out, "model v1");
    free(out);
    dadc_client_close(c);
}

static void test_predict_idx(void)
{
    const mnist_t *m = e2e_mnist();
    char path[700], *out;
    cJSON *j, *p;
    size_t right = 0, n = 0;

    snprintf(path, sizeof(path), "%s/t10k-images-idx3-ubyte",
             test_mnist_dir());
    CHECK_EQ(e2e_cli(&srv, &out, NULL, "predict", "--idx", path, "--json",
                     NULL), 0);
    j = json_parse(out);
    cJSON_ArrayForEach(p, cJSON_GetObjectItem(j, "predictions")) {
        CHECK_EQ(json_num(p, "index"), n);
        right += json_num(p, "digit") == m->test_labels.data[n];
        n++;
    }
    CHECK_EQ(n, 10000);
    CHECK_INT(right, >=, 8500);
    cJSON_Delete(j);
    free(out);
}

static void test_flag_one(void)
{
    char *out, *err;
    cJSON *j, *r;
    int label = e2e_mnist()->test_labels.data[0];
    char lab[4];

    snprintf(lab, sizeof(lab), "%d", label);
    CHECK_EQ(e2e_cli(&srv, &out, &err, "--name", "alice", "flag", "--label",
                     lab, png[0], "--json", NULL), 0);
    j = json_parse(out);
    CHECK_EQ(json_num(j, "acknowledged"), 1);
    CHECK_EQ(json_num(j, "failed"), 0);
    r = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "results"), 0);
    CHECK(json_num(r, "example_id") > 0);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(r, "stored")));
    CHECK_EQ(cJSON_IsTrue(cJSON_GetObjectItem(r, "fooled")),
             json_num(r, "predicted") != label);
    cJSON_Delete(j);
    free(out);
    free(err);

    CHECK_EQ(e2e_cli(&srv, &out, NULL, "flag", "-l", lab, png[0], NULL), 0);
    CHECK_CONTAINS(out, "stored as example");
    CHECK_CONTAINS(out, "1 stored, ");
    free(out);
}

static void test_flag_batch(void)
{
    char images[700], labels[700], *out, *err;
    dadc_client_t *c;
    Dadc__StatsResponse *s;
    cJSON *j;

    snprintf(images, sizeof(images), "%s/t10k-images-idx3-ubyte",
             test_mnist_dir());
    snprintf(labels, sizeof(labels), "%s/t10k-labels-idx1-ubyte",
             test_mnist_dir());
    CHECK_EQ(e2e_cli(&srv, &out, &err, "--name", "batcher", "flag", "--idx",
                     images, "--labels", labels, "--json", NULL), 0);
    j = json_parse(out);
    CHECK_EQ(json_num(j, "acknowledged"), 10000);
    CHECK_EQ(json_num(j, "failed"), 0);
    CHECK_EQ(cJSON_GetArraySize(cJSON_GetObjectItem(j, "results")), 10000);
    /* not a terminal: no progress bar on stderr */
    CHECK_STR(err, "");

    /* the server counted every one, with this annotator's name */
    c = e2e_connect(&srv, NULL);
    CHECK_EQ(dadc_client_stats(c, &s), 0);
    CHECK_EQ(s->overall->submitted, 10002);
    CHECK_INT(s->overall->fooled, >=, json_num(j, "fooled"));
    CHECK_INT(s->overall->fooled, <=, json_num(j, "fooled") + 2);
    {
        size_t i, found = 0;

        for (i = 0; i < s->n_per_annotator; i++)
            if (strcmp(s->per_annotator[i]->annotator, "batcher") == 0) {
                CHECK_EQ(s->per_annotator[i]->counts->submitted, 10000);
                CHECK_EQ(s->per_annotator[i]->counts->fooled,
                         json_num(j, "fooled"));
                found++;
            }
        CHECK_EQ(found, 1);
    }
    dadc__stats_response__free_unpacked(s, NULL);
    dadc_client_close(c);
    cJSON_Delete(j);
    free(out);
    free(err);
}

static void test_stats_models(void)
{
    char *out, model[600];
    cJSON *j;
    nn_model_t *m;

    snprintf(model, sizeof(model), "%s", test_path("v1.safetensors"));
    CHECK_EQ(e2e_cli(&srv, &out, NULL, "stats", NULL), 0);
    CHECK_CONTAINS(out, "overall: 10002 submitted");
    CHECK_CONTAINS(out, "batcher");
    free(out);
    CHECK_EQ(e2e_cli(&srv, &out, NULL, "stats", "--json", NULL), 0);
    j = json_parse(out);
    CHECK_EQ(json_num(cJSON_GetObjectItem(j, "overall"), "submitted"),
             10002);
    CHECK_EQ(json_num(j, "current_model_version"), 1);
    cJSON_Delete(j);
    free(out);

    CHECK_EQ(e2e_cli(&srv, &out, NULL, "models", "--json", NULL), 0);
    j = json_parse(out);
    CHECK_EQ(cJSON_GetArraySize(cJSON_GetObjectItem(j, "models")), 1);
    CHECK_EQ(json_num(j, "current_model_version"), 1);
    cJSON_Delete(j);
    free(out);

    CHECK_EQ(e2e_cli(&srv, &out, NULL, "model", "get", "1", "-o", model,
                     NULL), 0);
    CHECK_CONTAINS(out, "wrote model v1");
    free(out);
    CHECK_EQ(nn_model_load(model, &m, NULL, NULL), 0);
    nn_model_free(m);
}

/* Labels of the exported examples, counted per digit. */
static void count_labels(const uint8_t *labels, size_t n, size_t hist[10])
{
    size_t i;

    memset(hist, 0, 10 * sizeof(hist[0]));
    for (i = 0; i < n; i++)
        hist[labels[i]]++;
}

static void test_export(void)
{
    const mnist_t *m = e2e_mnist();
    char dir[600], path[700], *out;
    idx_file_t im, lb;
    size_t want[10], got[10], lines = 0, len, i;
    char *meta;

    snprintf(dir, sizeof(dir), "%s", test_path("export-idx"));
    CHECK_EQ(e2e_cli(&srv, &out, NULL, "export", "--format", "idx", dir,
                     NULL), 0);
    CHECK_CONTAINS(out, "exported 10002 examples");
    free(out);
    snprintf(path, sizeof(path), "%s/examples-images-idx3-ubyte", dir);
    CHECK_EQ(idx_load(path, &im, NULL), 0);
    snprintf(path, sizeof(path), "%s/examples-labels-idx1-ubyte", dir);
    CHECK_EQ(idx_load(path, &lb, NULL), 0);
    CHECK_EQ(im.count, 10002);
    CHECK_EQ(lb.count, 10002);
    count_labels(m->test_labels.data, 10000, want);
    want[m->test_labels.data[0]] += 2;
    count_labels(lb.data, lb.count, got);
    for (i = 0; i < 10; i++)
        CHECK_EQ(got[i], want[i]);
    /* the first example is the PNG flagged first */
    CHECK_EQ(lb.data[0], m->test_labels.data[0]);
    idx_free(&im);
    idx_free(&lb);
    snprintf(path, sizeof(path), "%s/examples.jsonl", dir);
    meta = test_read_file(path, &len);
    for (i = 0; i < len; i++)
        lines += meta[i] == '\n';
    CHECK_EQ(lines, 10002);
    CHECK_CONTAINS(meta, "\"annotator\":\"alice\"");
    free(meta);
}

static void test_export_png(void)
{
    char dir[600], path[800], *out;
    cJSON *j, *first;
    char *meta, *nl;
    image_t img;

    snprintf(dir, sizeof(dir), "%s", test_path("export-png"));
    CHECK_EQ(e2e_cli(&srv, &out, NULL, "export", "--format", "png", "--json",
                     dir, NULL), 0);
    j = json_parse(out);
    CHECK_EQ(json_num(j, "examples"), 2);
    cJSON_Delete(j);
    free(out);
    snprintf(path, sizeof(path), "%s/examples.jsonl", dir);
    meta = test_read_file(path, NULL);
    nl = strchr(meta, '\n');
    CHECK(nl != NULL);
    *nl = '\0';
    first = json_parse(meta);
    snprintf(path, sizeof(path), "%s/%s", dir,
             cJSON_GetStringValue(cJSON_GetObjectItem(first, "file")));
    CHECK_EQ(image_load(path, &img, NULL), 0);
    CHECK_EQ(img.width, 28);
    CHECK_EQ(img.height, 28);
    free(img.pixels);
    cJSON_Delete(first);
    free(meta);
}

static void test_exit_codes(void)
{
    char *out, *err, blank[600], junk[600];
    uint8_t white[64 * 64];
    e2e_server_t gone = srv;

    snprintf(blank, sizeof(blank), "%s", test_path("blank.png"));
    snprintf(junk, sizeof(junk), "%s", test_path("junk.png"));

    /* usage: 2 */
    CHECK_EQ(e2e_cli(&srv, NULL, &err, NULL), 2);
    CHECK_CONTAINS(err, "try 'dadc --help'");
    free(err);
    CHECK_EQ(e2e_cli(&srv, NULL, &err, "flag", png[0], NULL), 2);
    CHECK_CONTAINS(err, "dadc: flag needs --label");
    free(err);
    CHECK_EQ(e2e_cli(&srv, NULL, NULL, "stats", "--bogus", NULL), 2);
    CHECK_EQ(e2e_cli(&srv, NULL, NULL, "rollback", "x", NULL), 2);
    CHECK_EQ(e2e_cli(&srv, &out, NULL, "--help", NULL), 0);
    CHECK_CONTAINS(out, "exit codes");
    free(out);

    /* bad input files: 4 */
    memset(white, 255, sizeof(white));
    CHECK_EQ(image_save_png(blank, white, 64, 64, NULL), 0);
    CHECK_EQ(e2e_cli(&srv, NULL, &err, "predict", blank, NULL), 4);
    CHECK_CONTAINS(err, "no ink");
    free(err);
    test_write_file(junk, "not a png at all", 16);
    CHECK_EQ(e2e_cli(&srv, NULL, &err, "flag", "-l", "3", junk, NULL), 4);
    CHECK(strncmp(err, "dadc: ", 6) == 0);
    free(err);
    CHECK_EQ(e2e_cli(&srv, NULL, NULL, "predict", "--idx", junk, NULL), 4);

    /* the server says no: 1, with its message */
    CHECK_EQ(e2e_cli(&srv, NULL, &err, "rollback", "99", NULL), 1);
    CHECK(strncmp(err, "dadc: ", 6) == 0);
    CHECK_CONTAINS(err, "NOT_FOUND");
    free(err);
    CHECK_EQ(e2e_cli(&srv, NULL, NULL, "predict", "--model", "77", png[0],
                     NULL), 1);

    /* nobody listening: 3 */
    snprintf(gone.addr, sizeof(gone.addr), "127.0.0.1:1");
    CHECK_EQ(e2e_cli(&gone, NULL, &err, "stats", NULL), 3);
    CHECK_CONTAINS(err, "cannot connect");
    free(err);
}

/*
 * Run `dadc --server ADDR ARGS...` with stdout a pipe nobody reads any
 * more (as under `| head -1`) and stderr into *err. Returns the exit
 * status.
 */
static int cli_closed_stdout(char **err, const char *a1, const char *a2,
                             const char *a3)
{
    char bin[600], err_path[600];
    char *argv[] = {bin, "--server", srv.addr, (char *)a1, (char *)a2,
                    (char *)a3, NULL};
    int fds[2], status;
    pid_t pid;

    snprintf(bin, sizeof(bin), "%s/dadc", test_bin_dir());
    snprintf(err_path, sizeof(err_path), "%s", test_path("pipe.err"));
    CHECK_EQ(pipe(fds), 0);
    close(fds[0]);
    fflush(NULL);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int e = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

        if (e < 0)
            _exit(126);
        dup2(fds[1], 1);
        dup2(e, 2);
        execv(argv[0], argv);
        _exit(127);
    }
    close(fds[1]);
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    *err = test_read_file(err_path, NULL);
    return WIFSIGNALED(status) ? 128 + WTERMSIG(status)
                               : WEXITSTATUS(status);
}

/* Output problems: a reader gone away, a model file that cannot be made. */
static void test_output_errors(void)
{
    char idx[700], dest[700], *err;

    snprintf(idx, sizeof(idx), "%s/t10k-images-idx3-ubyte",
             test_mnist_dir());
    CHECK_EQ(cli_closed_stdout(&err, "predict", "--idx", idx), 5);
    CHECK_STR(err, "");
    free(err);
    CHECK_EQ(cli_closed_stdout(&err, "stats", NULL, NULL), 5);
    CHECK_STR(err, "");
    free(err);

    snprintf(dest, sizeof(dest), "%s", test_path("no/such/dir/x.st"));
    CHECK_EQ(e2e_cli(&srv, NULL, &err, "model", "get", "1", "-o", dest,
                     NULL), 5);
    CHECK_CONTAINS(err, dest);
    CHECK_CONTAINS(err, "No such file or directory");
    CHECK(strstr(err, ".tmp.") == NULL);
    free(err);
}

/* Whether s holds a byte that steers a terminal. */
static int has_control_byte(const char *s)
{
    for (; *s != '\0'; s++)
        if ((unsigned char)*s < 0x20 && *s != '\n')
            return 1;
    return 0;
}

/*
 * Text from the server is escaped: an annotator name with an escape
 * sequence. And a round the server died in shows as such, not as
 * "candidate v0".
 */
static void test_stats_text(void)
{
    static const char *const extra[] = {"--round-threshold", "1000000",
                                        "--round-epochs", "200", NULL};
    char *out;

    if (e2e_cli(&srv, NULL, NULL, "--name", "ev\x1b[2Jil\a", "flag", "-l",
                "3", png[3], NULL) == 0) {
        CHECK_EQ(e2e_cli(&srv, &out, NULL, "stats", NULL), 0);
        CHECK_CONTAINS(out, "ev\\x1b[2Jil\\x07: 1 submitted");
        CHECK(!has_control_byte(out));
        free(out);
    }

    e2e_server_stop(&srv);
    e2e_server_start(&srv, test_path("data"), extra);
    CHECK_EQ(e2e_cli(&srv, NULL, NULL, "train", NULL), 0);
    e2e_server_kill(&srv);
    e2e_server_start(&srv, test_path("data"), extra);
    CHECK_EQ(e2e_cli(&srv, &out, NULL, "stats", NULL), 0);
    CHECK_CONTAINS(out, "no candidate: interrupted");
    CHECK(strstr(out, "candidate v0") == NULL);
    free(out);
}

int main(void)
{
    test_init("test_e2e_cli", 600);
    setup();
    TEST_RUN(test_predict_png);
    TEST_RUN(test_predict_idx);
    TEST_RUN(test_flag_one);
    TEST_RUN(test_export_png);
    TEST_RUN(test_flag_batch);
    TEST_RUN(test_stats_models);
    TEST_RUN(test_export);
    TEST_RUN(test_exit_codes);
    TEST_RUN(test_output_errors);
    TEST_RUN(test_stats_text);
    e2e_server_stop(&srv);
    return test_finish();
}
