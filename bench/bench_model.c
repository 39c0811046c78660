/*
 * bench_model: the model engine side by side with PyTorch on the same
 * model, data and hyperparameters (batch 64, lr 0.01, momentum 0.5).
 * Prints, for each figure, ours, PyTorch's (python3-torch 1.13 through
 * /usr/bin/python3 running bench/torch_bench.py, 2 threads) and the
 * ratio. Without python3-torch it says so and prints ours alone.
 *
 *   bench_model [--steps N] [--json]      (MNIST from $DADC_MNIST_DIR)
 *
 * Exit status 0, 1 when MNIST cannot be read, 2 on bad use.
 */
#include "idx.h"
#include "nn.h"
#include "nn_bench.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PYTHON "/usr/bin/python3"

typedef struct torch_figures {
    int ok;
    char version[64];
    double train_images_per_s;
    double eval_s;
    double single_us;
} torch_figures_t;

static double json_num(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

    return cJSON_IsNumber(v) ? v->valuedouble : 0.0;
}

/* Run torch_bench.py and read its JSON line; ok = 0 when unavailable. */
static void torch_run(const char *mnist, int steps, torch_figures_t *t)
{
    char cmd[4096], line[4096];
    FILE *p;
    cJSON *o;
    const cJSON *v;

    memset(t, 0, sizeof(*t));
    snprintf(cmd, sizeof(cmd), "%s '%s/bench/torch_bench.py' '%s' %d", PYTHON,
             DADC_SOURCE_DIR, mnist, steps);
    p = popen(cmd, "r");
    if (p == NULL)
        return;
    if (fgets(line, sizeof(line), p) == NULL)
        line[0] = '\0';
    pclose(p);
    o = cJSON_Parse(line);
    if (o == NULL)
        return;
    t->train_images_per_s = json_num(o, "train_images_per_s");
    t->eval_s = json_num(o, "eval_s");
    t->single_us = json_num(o, "single_us");
    v = cJSON_GetObjectItemCaseSensitive(o, "torch");
    snprintf(t->version, sizeof(t->version), "%s",
             cJSON_IsString(v) ? v->valuestring : "?");
    t->ok = t->train_images_per_s > 0 && t->eval_s > 0 && t->single_us > 0;
    cJSON_Delete(o);
}

/* One table row; higher_better says which way the ratio reads. */
static void row(const char *name, double ours, double theirs,
                int higher_better, const char *fmt)
{
    char a[32], b[32];

    snprintf(a, sizeof(a), fmt, ours);
    if (theirs > 0)
        snprintf(b, sizeof(b), fmt, theirs);
    else
        snprintf(b, sizeof(b), "-");
    printf("%-30s %12s %12s", name, a, b);
    if (theirs > 0)
        printf("   %5.1fx %s", higher_better ? ours / theirs : theirs / ours,
               "faster");
    printf("\n");
}

static void print_table(const nn_bench_t *b, const torch_figures_t *t)
{
    double tflop_train = t->train_images_per_s * b->flop_train * 1e-9;
    double tflop_eval = t->ok ? (double)b->eval_images * b->flop_forward /
                                    t->eval_s * 1e-9
                              : 0;

    printf("%-30s %12s %12s   %s\n", "figure", "ours", "PyTorch", "ratio");
    row("training, images/s", b->train_images_per_s, t->train_images_per_s,
        1, "%.0f");
    row("training, GFLOP/s", b->train_gflops, tflop_train, 1, "%.1f");
    row("10k test set, ms", b->eval_s * 1e3, t->eval_s * 1e3, 0, "%.1f");
    row("10k test set, GFLOP/s", b->eval_gflops, tflop_eval, 1, "%.1f");
    row("one image, us", b->single_us, t->single_us, 0, "%.1f");
    printf("\ntargets: training >= 8x PyTorch, 10k test set <= 120 ms, one "
           "image <= 25 us\n");
    printf("engine threads %d; FLOP per image: %.2f M forward, %.2f M "
           "training\n",
           b->threads, b->flop_forward * 1e-6, b->flop_train * 1e-6);
}

static void print_json(const nn_bench_t *b, const torch_figures_t *t)
{
    printf("{\"ours\":{\"train_images_per_s\":%.0f,\"train_gflops\":%.2f,"
           "\"eval_s\":%.4f,\"eval_gflops\":%.2f,\"single_us\":%.1f},",
           b->train_images_per_s, b->train_gflops, b->eval_s, b->eval_gflops,
           b->single_us);
    if (t->ok)
        printf("\"torch\":{\"version\":\"%s\",\"train_images_per_s\":%.0f,"
               "\"eval_s\":%.4f,\"single_us\":%.1f}}\n",
               t->version, t->train_images_per_s, t->eval_s, t->single_us);
    else
        printf("\"torch\":null}\n");
}

int main(int argc, char **argv)
{
    const char *mnist = getenv("DADC_MNIST_DIR");
    int steps = 300, json = 0;
    mnist_t d;
    nn_model_t *m;
    nn_bench_t b;
    torch_figures_t t;
    dadc_error_t err;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = 1;
        else if (strcmp(argv[i], "--steps") == 0 && i + 1 < argc)
            steps = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_model [--steps N] [--json]\n");
            return 2;
        }
    }
    if (steps < 1)
        steps = 1;
    if (mnist == NULL || *mnist == '\0')
        mnist = DADC_MNIST_DEFAULT;
    if (mnist_load(mnist, &d, &err) < 0) {
        fprintf(stderr, "bench_model: %s\n", dadc_error_message(&err));
        return 1;
    }

    /* ours first, alone on the machine, then PyTorch's */
    if (nn_model_create_reference(&m) < 0)
        return 1;
    nn_model_init(m, 1);
    if (nn_bench_run(m, d.train_images.data, d.train_labels.data,
                     d.train_images.count, d.test_images.data,
                     d.test_labels.data, d.test_images.count, steps, 2000,
                     &b) < 0) {
        fprintf(stderr, "bench_model: engine benchmark failed\n");
        return 1;
    }
    torch_run(mnist, steps, &t);
    if (!t.ok)
        fprintf(stderr, "bench_model: PyTorch figures unavailable "
                        "(python3-torch missing for " PYTHON "?); printing "
                        "ours alone\n");
    else if (!json)
        printf("PyTorch %s via " PYTHON ", 2 threads\n", t.version);
    if (json)
        print_json(&b, &t);
    else
        print_table(&b, &t);
    nn_model_free(m);
    mnist_free(&d);
    return 0;
}
