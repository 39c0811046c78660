/*
 * The dadc-model program from outside: usage errors exit 2 with a hint,
 * bad files exit 1 naming the file, eval and predict print what they
 * promise (text and JSON) on real MNIST images and a PNG drawing.
 */
#include "idx.h"
#include "image.h"
#include "nn.h"
#include "test_util.h"

#include <cjson/cJSON.h>
#include <sys/wait.h>

static mnist_t d;

/* Run dadc-model with args; stdout/stderr to out/err files. */
static int run(const char *args)
{
    char cmd[4096];
    int st;

    snprintf(cmd, sizeof(cmd), "%s/dadc-model %s >%s 2>%s", test_bin_dir(),
             args, test_path("out"), test_path("err"));
    st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static char *out_text(const char *which)
{
    size_t len;

    return test_read_file(test_path(which), &len);
}

static void test_usage_errors(void)
{
    char *e;

    CHECK_EQ(run(""), 2);
    e = out_text("err");
    CHECK_CONTAINS(e, "dadc-model: missing command");
    CHECK_CONTAINS(e, "try 'dadc-model --help'");
    free(e);
    CHECK_EQ(run("frobnicate"), 2);
    CHECK_EQ(run("train --epochs 0"), 2);
    e = out_text("err");
    CHECK_CONTAINS(e, "--epochs");
    free(e);
    CHECK_EQ(run("train --lr banana"), 2);
    CHECK_EQ(run("eval"), 2);
    CHECK_EQ(run("predict model.safetensors"), 2);
    CHECK_EQ(run("eval a b"), 2);
    for (int i = 0; i < 5; i++) {
        static const char *const cmds[] = {"--help", "train --help",
                                           "eval --help", "predict --help",
                                           "bench --help"};
        char *o;

        CHECK_EQ(run(cmds[i]), 0);
        o = out_text("out");
        CHECK_CONTAINS(o, "usage: dadc-model");
        CHECK_CONTAINS(o, "Exit codes");
        free(o);
    }
}

static void test_bad_files(void)
{
    char args[1024], *e;

    snprintf(args, sizeof(args), "eval %s", test_path("absent.safetensors"));
    CHECK_EQ(run(args), 1);
    e = out_text("err");
    CHECK_CONTAINS(e, "absent.safetensors");
    free(e);

    test_write_file(test_path("junk.safetensors"), "\x10\0\0\0\0\0\0\0{}", 10);
    snprintf(args, sizeof(args), "predict %s --idx %s",
             test_path("junk.safetensors"), test_path("none"));
    CHECK_EQ(run(args), 1);
    e = out_text("err");
    CHECK_CONTAINS(e, "junk.safetensors: header length 16 runs past");
    free(e);

    snprintf(args, sizeof(args), "eval %s --mnist %s",
             test_path("model.safetensors"), test_tmpdir());
    CHECK_EQ(run(args), 1);
}

static void test_eval_json(void)
{
    uint32_t dims[3] = {0, 28, 28};
    char args[2048], *o;
    cJSON *j, *conf;
    double sum = 0;
    dadc_error_t err;

    CHECK_EQ(idx_save(test_path("img.idx"), d.test_images.data, 200, dims, 3,
                      &err),
             0);
    CHECK_EQ(idx_save(test_path("lab.idx"), d.test_labels.data, 200, dims, 1,
                      &err),
             0);
    snprintf(args, sizeof(args), "eval %s --images %s --labels %s --json",
             test_path("model.safetensors"), test_path("img.idx"),
             test_path("lab.idx"));
    CHECK_EQ(run(args), 0);
    o = out_text("out");
    j = cJSON_Parse(o);
    CHECK(j != NULL);
    CHECK_EQ(cJSON_GetObjectItem(j, "examples")->valuedouble, 200);
    CHECK(cJSON_GetObjectItem(j, "accuracy")->valuedouble >= 0.8);
    conf = cJSON_GetObjectItem(j, "confusion");
    CHECK_EQ(cJSON_GetArraySize(conf), 10);
    for (int y = 0; y < 10; y++)
        for (int p = 0; p < 10; p++)
            sum += cJSON_GetArrayItem(cJSON_GetArrayItem(conf, y), p)
                       ->valuedouble;
    CHECK_EQ(sum, 200);
    cJSON_Delete(j);
    free(o);

    /* the text form has the per-digit table and the confusion matrix */
    snprintf(args, sizeof(args), "eval %s --images %s --labels %s",
             test_path("model.safetensors"), test_path("img.idx"),
             test_path("lab.idx"));
    CHECK_EQ(run(args), 0);
    o = out_text("out");
    CHECK_CONTAINS(o, "digit  accuracy");
    CHECK_CONTAINS(o, "confusion (row: true digit");
    free(o);
}

static void test_predict(void)
{
    char args[2048], *o, *line2;
    dadc_error_t err;
    cJSON *j;

    /* MNIST test image 0 is a 7; as a PNG drawing it goes through the
     * drawing-to-MNIST step first */
    CHECK_EQ(image_save_png(test_path("seven.png"), d.test_images.data, 28,
                            28, &err),
             0);
    snprintf(args, sizeof(args), "predict %s %s --json",
             test_path("model.safetensors"), test_path("seven.png"));
    CHECK_EQ(run(args), 0);
    o = out_text("out");
    j = cJSON_Parse(o);
    CHECK(j != NULL);
    CHECK_EQ(cJSON_GetObjectItem(j, "digit")->valuedouble, 7);
    CHECK_EQ(cJSON_GetArraySize(cJSON_GetObjectItem(j, "probabilities")),
             10);
    cJSON_Delete(j);
    free(o);

    snprintf(args, sizeof(args), "predict %s --idx %s --first 1 --count 2",
             test_path("model.safetensors"), test_path("img.idx"));
    CHECK_EQ(run(args), 0);
    o = out_text("out");
    CHECK_CONTAINS(o, "img.idx[1]: 2  (0:");
    line2 = strchr(o, '\n');
    CHECK(line2 != NULL);
    CHECK_CONTAINS(line2, "img.idx[2]: 1  (0:");
    free(o);

    /* an empty drawing is an error for that file, not a crash */
    {
        uint8_t blank[64 * 64];

        memset(blank, 255, sizeof(blank));
        CHECK_EQ(image_save_png(test_path("blank.png"), blank, 64, 64, &err),
                 0);
    }
    snprintf(args, sizeof(args), "predict %s %s",
             test_path("model.safetensors"), test_path("blank.png"));
    CHECK_EQ(run(args), 1);
    o = out_text("err");
    CHECK_CONTAINS(o, "blank.png");
    free(o);
}

int main(void)
{
    const char *dir;
    dadc_error_t err;
    nn_model_t *m;
    nn_train_opts_t o;
    nn_train_result_t r;

    test_init("test_dadc_model", 600);
    dir = test_mnist_dir();
    CHECK(dir != NULL);
    CHECK_EQ(mnist_load(dir, &d, &err), 0);

    /* a model good enough for its answers to mean something */
    CHECK_EQ(nn_model_create_reference(&m), 0);
    nn_model_init(m, 1);
    nn_train_opts_default(&o);
    o.epochs = 1;
    CHECK_EQ(nn_train(m, d.train_images.data, d.train_labels.data, 4000, &o,
                      &r, &err),
             0);
    CHECK_EQ(nn_model_save(m, NULL, test_path("model.safetensors"), &err),
             0);
    nn_model_free(m);

    TEST_RUN(test_usage_errors);
    TEST_RUN(test_bad_files);
    TEST_RUN(test_eval_json);
    TEST_RUN(test_predict);
    mnist_free(&d);
    return test_finish();
}
