/*
 * dadc-model: train, evaluate, query and benchmark the digit model
 * offline, on the real MNIST files.
 *
 * Exit codes: 0 success, 1 failure (unreadable or malformed input,
 * training error), 2 usage error.
 */
#include "idx.h"
#include "image.h"
#include "nn.h"
#include "nn_bench.h"

#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PROG "dadc-model"
#define EXIT_FAIL 1
#define EXIT_USAGE 2

static const char usage_main[] =
    "usage: dadc-model COMMAND [options]\n"
    "\n"
    "Commands:\n"
    "  train    train a model on MNIST and write it as safetensors\n"
    "  eval     accuracy, per-digit accuracy and confusion matrix\n"
    "  predict  digit and probabilities for PNG/PGM drawings or IDX images\n"
    "  bench    training and inference speed of the engine\n"
    "\n"
    "'dadc-model COMMAND --help' describes each command.\n"
    "MNIST is read from --mnist DIR, else $DADC_MNIST_DIR, else\n"
    "./dadc-data/mnist.\n"
    "Exit codes: 0 success, 1 failure, 2 usage error.\n";

static const char usage_train[] =
    "usage: dadc-model train [options]\n"
    "  --mnist DIR      MNIST directory\n"
    "  --out FILE       model file to write (default model.safetensors)\n"
    "  --epochs N       passes over the 60,000 images (default 10)\n"
    "  --lr X           initial learning rate (default 0.03)\n"
    "  --momentum X     SGD momentum (default 0.9)\n"
    "  --gamma X        lr multiplied by X after each epoch (default 0.75)\n"
    "  --batch N        batch size (default 64)\n"
    "  --wd X           weight decay (default 0.0005)\n"
    "  --seed N         seed of initial weights, order, dropout (default 1)\n"
    "  --init FILE      start from this model instead of fresh weights\n"
    "  --json           print the result as JSON\n"
    "A progress bar is drawn on stderr when it is a terminal.\n"
    "Exit codes: 0 success, 1 failure, 2 usage error.\n";

static const char usage_eval[] =
    "usage: dadc-model eval MODEL [options]\n"
    "  --mnist DIR      MNIST directory (the 10,000 test images are used)\n"
    "  --images FILE    IDX images instead (with --labels FILE)\n"
    "  --labels FILE    IDX labels\n"
    "  --json           print the result as JSON\n"
    "Exit codes: 0 success, 1 failure, 2 usage error.\n";

static const char usage_predict[] =
    "usage: dadc-model predict MODEL FILE... [options]\n"
    "       dadc-model predict MODEL --idx IMAGES [--first N] [--count N]\n"
    "  FILE             PNG or PGM drawing, any size, either polarity; it\n"
    "                   is made into a 28x28 MNIST-style image first\n"
    "  --idx FILE       28x28 images from an IDX file, taken as they are\n"
    "  --first N        first IDX image (default 0)\n"
    "  --count N        number of IDX images (default all)\n"
    "  --json           one JSON object per input on stdout\n"
    "Exit codes: 0 success, 1 failure, 2 usage error.\n";

static const char usage_bench[] =
    "usage: dadc-model bench [options]\n"
    "  --mnist DIR      MNIST directory\n"
    "  --steps N        training steps of batch 64 measured (default 300)\n"
    "  --json           print the figures as JSON\n"
    "Exit codes: 0 success, 1 failure, 2 usage error.\n";

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static int fail(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, PROG ": ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return EXIT_FAIL;
}

static int usage_error(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, PROG ": ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\ntry '" PROG " --help'\n");
    return EXIT_USAGE;
}

/* Strict number parsing for options. */
static int parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    long v;

    if (s == NULL || *s == '\0')
        return -1;
    v = strtol(s, &end, 10);
    if (*end != '\0' || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int parse_double(const char *s, double lo, double hi, double *out)
{
    char *end;
    double v;

    if (s == NULL || *s == '\0')
        return -1;
    v = strtod(s, &end);
    if (*end != '\0' || !(v >= lo) || !(v <= hi))
        return -1;
    *out = v;
    return 0;
}

static const char *mnist_dir(const char *opt)
{
    const char *env = getenv("DADC_MNIST_DIR");

    if (opt != NULL)
        return opt;
    return env != NULL && *env ? env : "./dadc-data/mnist";
}

static int load_mnist(const char *dir, mnist_t *d)
{
    dadc_error_t err;

    if (mnist_load(dir, d, &err) < 0)
        return fail("%s (the setup step deploy/setup.sh fetches MNIST)",
                    dadc_error_message(&err));
    return 0;
}

/* ------------------------------------------------------------------ */
/* train */

typedef struct train_args {
    const char *mnist;
    const char *out;
    const char *init;
    int json;
    nn_train_opts_t opts;
} train_args_t;

static void progress_cb(const nn_train_progress_t *p, void *user)
{
    int width = 30, done = (int)(width * p->seen / (p->total ? p->total : 1));

    (void)user;
    fprintf(stderr, "\repoch %d/%d [", p->epoch, p->epochs);
    for (int i = 0; i < width; i++)
        fputc(i < done ? '#' : '.', stderr);
    fprintf(stderr, "] loss %.4f  %.0f img/s  lr %.4g ", p->loss,
            p->images_per_s, p->lr);
    if (p->seen == p->total)
        fputc('\n', stderr);
    fflush(stderr);
}

static int train_opt(train_args_t *a, int c, const char *arg)
{
    long v;
    nn_train_opts_t *o = &a->opts;

    switch (c) {
    case 'm': a->mnist = arg; return 0;
    case 'o': a->out = arg; return 0;
    case 'i': a->init = arg; return 0;
    case 'j': a->json = 1; return 0;
    case 'e':
        if (parse_long(arg, 1, 1000, &v) < 0)
            return usage_error("--epochs: want 1..1000, got '%s'", arg);
        o->epochs = (int)v;
        return 0;
    case 'b':
        if (parse_long(arg, 1, 4096, &v) < 0)
            return usage_error("--batch: want 1..4096, got '%s'", arg);
        o->batch = (int)v;
        return 0;
    case 's':
        if (parse_long(arg, 0, 0x7fffffffL, &v) < 0)
            return usage_error("--seed: want a number >= 0, got '%s'", arg);
        o->seed = (uint64_t)v;
        return 0;
    case 'l':
        return parse_double(arg, 1e-9, 10, &o->lr) < 0
                   ? usage_error("--lr: want (0, 10], got '%s'", arg)
                   : 0;
    case 'M':
        return parse_double(arg, 0, 0.999, &o->momentum) < 0
                   ? usage_error("--momentum: want [0, 0.999], got '%s'", arg)
                   : 0;
    case 'g':
        return parse_double(arg, 1e-6, 1, &o->lr_gamma) < 0
                   ? usage_error("--gamma: want (0, 1], got '%s'", arg)
                   : 0;
    case 'w':
        return parse_double(arg, 0, 1, &o->weight_decay) < 0
                   ? usage_error("--wd: want [0, 1], got '%s'", arg)
                   : 0;
    }
    return usage_error("unknown option");
}

static int train_parse(int argc, char **argv, train_args_t *a)
{
    static const struct option longs[] = {
        {"mnist", 1, 0, 'm'}, {"out", 1, 0, 'o'},      {"init", 1, 0, 'i'},
        {"json", 0, 0, 'j'},  {"epochs", 1, 0, 'e'},   {"batch", 1, 0, 'b'},
        {"seed", 1, 0, 's'},  {"lr", 1, 0, 'l'},       {"momentum", 1, 0, 'M'},
        {"gamma", 1, 0, 'g'}, {"wd", 1, 0, 'w'},       {"help", 0, 0, 'h'},
        {0, 0, 0, 0}};
    int c, rc;

    memset(a, 0, sizeof(*a));
    a->out = "model.safetensors";
    nn_train_opts_default(&a->opts);
    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        if (c == 'h') {
            fputs(usage_train, stdout);
            return -1;
        }
        if (c == '?')
            return usage_error("bad option for train");
        rc = train_opt(a, c, optarg);
        if (rc != 0)
            return rc;
    }
    if (optind < argc)
        return usage_error("train: unexpected argument '%s'", argv[optind]);
    return 0;
}

static int model_start(const train_args_t *a, nn_model_t **m)
{
    dadc_error_t err;

    if (a->init == NULL) {
        if (nn_model_create_reference(m) < 0)
            return fail("out of memory");
        nn_model_init(*m, a->opts.seed);
        return 0;
    }
    if (nn_model_load(a->init, m, NULL, &err) < 0)
        return fail("%s", dadc_error_message(&err));
    return 0;
}

static void train_meta(nn_meta_t *meta, const train_args_t *a,
                       const nn_train_result_t *r, const nn_eval_t *ev)
{
    char v[128];

    nn_meta_set(meta, "data", "MNIST train (60000 images)");
    snprintf(v, sizeof(v), "%d", r->epochs_done);
    nn_meta_set(meta, "epochs", v);
    snprintf(v, sizeof(v), "%g", a->opts.lr);
    nn_meta_set(meta, "lr", v);
    snprintf(v, sizeof(v), "%g", a->opts.momentum);
    nn_meta_set(meta, "momentum", v);
    snprintf(v, sizeof(v), "%g", a->opts.lr_gamma);
    nn_meta_set(meta, "lr_gamma", v);
    snprintf(v, sizeof(v), "%d", a->opts.batch);
    nn_meta_set(meta, "batch", v);
    snprintf(v, sizeof(v), "%g", a->opts.weight_decay);
    nn_meta_set(meta, "weight_decay", v);
    snprintf(v, sizeof(v), "%llu", (unsigned long long)a->opts.seed);
    nn_meta_set(meta, "seed", v);
    snprintf(v, sizeof(v), "%.3f", r->seconds);
    nn_meta_set(meta, "seconds", v);
    snprintf(v, sizeof(v), "%.6f", ev->accuracy);
    nn_meta_set(meta, "accuracy", v);
    nn_meta_set(meta, "accuracy_data", "MNIST test (10000 images)");
    if (a->init != NULL)
        nn_meta_set(meta, "init", a->init);
}

static int cmd_train(int argc, char **argv)
{
    train_args_t a;
    mnist_t d;
    nn_model_t *m = NULL;
    nn_train_result_t r;
    nn_eval_t ev;
    nn_meta_t meta = {0};
    dadc_error_t err;
    int rc = train_parse(argc, argv, &a);

    if (rc != 0)
        return rc < 0 ? 0 : rc;
    if (load_mnist(mnist_dir(a.mnist), &d) != 0)
        return EXIT_FAIL;
    rc = model_start(&a, &m);
    if (rc != 0)
        goto done;

    if (isatty(STDERR_FILENO))
        a.opts.progress_cb = progress_cb;
    if (nn_train(m, d.train_images.data, d.train_labels.data,
                 d.train_images.count, &a.opts, &r, &err) < 0) {
        rc = fail("training failed: %s", dadc_error_message(&err));
        goto done;
    }
    nn_evaluate(m, d.test_images.data, d.test_labels.data,
                d.test_images.count, &ev);
    train_meta(&meta, &a, &r, &ev);
    if (nn_model_save(m, &meta, a.out, &err) < 0) {
        rc = fail("%s", dadc_error_message(&err));
        goto done;
    }
    if (a.json)
        printf("{\"out\":\"%s\",\"epochs\":%d,\"seconds\":%.3f,"
               "\"images_per_s\":%.0f,\"final_loss\":%.6f,"
               "\"test_accuracy\":%.6f}\n",
               a.out, r.epochs_done, r.seconds, r.images_per_s,
               r.final_loss, ev.accuracy);
    else
        printf("trained %d epochs in %.1f s (%.0f images/s), final loss "
               "%.4f\ntest accuracy %.2f%% (%zu/%zu)\nwrote %s\n",
               r.epochs_done, r.seconds, r.images_per_s, r.final_loss,
               100.0 * ev.accuracy, ev.correct, ev.examples, a.out);

done:
    nn_model_free(m);
    mnist_free(&d);
    return rc;
}

/* ------------------------------------------------------------------ */
/* eval */

static void eval_print_text(const nn_eval_t *ev)
{
    printf("accuracy %.2f%% (%zu/%zu), mean loss %.4f\n\n",
           100.0 * ev->accuracy, ev->correct, ev->examples, ev->loss);
    printf("digit  accuracy   correct/total\n");
    for (int y = 0; y < NN_CLASSES; y++)
        printf("%5d  %7.2f%%   %zu/%zu\n", y,
               ev->per_digit_total[y]
                   ? 100.0 * ev->per_digit_correct[y] /
                         ev->per_digit_total[y]
                   : 0.0,
               ev->per_digit_correct[y], ev->per_digit_total[y]);
    printf("\nconfusion (row: true digit, column: predicted)\n      ");
    for (int p = 0; p < NN_CLASSES; p++)
        printf("%6d", p);
    printf("\n");
    for (int y = 0; y < NN_CLASSES; y++) {
        printf("%6d", y);
        for (int p = 0; p < NN_CLASSES; p++)
            printf("%6zu", ev->confusion[y][p]);
        printf("\n");
    }
}

static void eval_print_json(const nn_eval_t *ev)
{
    printf("{\"examples\":%zu,\"correct\":%zu,\"accuracy\":%.6f,"
           "\"loss\":%.6f,\"per_digit\":[",
           ev->examples, ev->correct, ev->accuracy, ev->loss);
    for (int y = 0; y < NN_CLASSES; y++)
        printf("%s{\"digit\":%d,\"correct\":%zu,\"total\":%zu}", y ? "," : "",
               y, ev->per_digit_correct[y], ev->per_digit_total[y]);
    printf("],\"confusion\":[");
    for (int y = 0; y < NN_CLASSES; y++) {
        printf("%s[", y ? "," : "");
        for (int p = 0; p < NN_CLASSES; p++)
            printf("%s%zu", p ? "," : "", ev->confusion[y][p]);
        printf("]");
    }
    printf("]}\n");
}

typedef struct eval_args {
    const char *model;
    const char *mnist;
    const char *images;
    const char *labels;
    int json;
} eval_args_t;

static int eval_parse(int argc, char **argv, eval_args_t *a)
{
    static const struct option longs[] = {
        {"mnist", 1, 0, 'm'}, {"images", 1, 0, 'i'}, {"labels", 1, 0, 'l'},
        {"json", 0, 0, 'j'},  {"help", 0, 0, 'h'},   {0, 0, 0, 0}};
    int c;

    memset(a, 0, sizeof(*a));
    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (c) {
        case 'h': fputs(usage_eval, stdout); return -1;
        case 'm': a->mnist = optarg; break;
        case 'i': a->images = optarg; break;
        case 'l': a->labels = optarg; break;
        case 'j': a->json = 1; break;
        default: return usage_error("bad option for eval");
        }
    }
    if (optind != argc - 1)
        return usage_error("eval: give exactly one MODEL file");
    if ((a->images == NULL) != (a->labels == NULL))
        return usage_error("eval: --images and --labels go together");
    a->model = argv[optind];
    return 0;
}

/* The labelled images to evaluate on: IDX files or the MNIST test set. */
static int eval_data(const eval_args_t *a, idx_file_t *img, idx_file_t *lab)
{
    dadc_error_t err;
    mnist_t d;

    if (a->images == NULL) {
        if (load_mnist(mnist_dir(a->mnist), &d) != 0)
            return EXIT_FAIL;
        *img = d.test_images;
        *lab = d.test_labels;
        idx_free(&d.train_images);
        idx_free(&d.train_labels);
        return 0;
    }
    if (idx_load(a->images, img, &err) < 0 ||
        idx_check_images(img, a->images, &err) < 0 ||
        idx_load(a->labels, lab, &err) < 0 ||
        idx_check_labels(lab, img->count, a->labels, &err) < 0)
        return fail("%s", dadc_error_message(&err));
    return 0;
}

static int cmd_eval(int argc, char **argv)
{
    eval_args_t a;
    idx_file_t img = {0}, lab = {0};
    nn_model_t *m = NULL;
    nn_eval_t ev;
    dadc_error_t err;
    int rc = eval_parse(argc, argv, &a);

    if (rc != 0)
        return rc < 0 ? 0 : rc;
    if (nn_model_load(a.model, &m, NULL, &err) < 0)
        return fail("%s", dadc_error_message(&err));
    rc = eval_data(&a, &img, &lab);
    if (rc != 0)
        goto done;
    if (nn_evaluate(m, img.data, lab.data, img.count, &ev) < 0) {
        rc = fail("evaluation failed (labels must be 0..9)");
        goto done;
    }
    if (a.json)
        eval_print_json(&ev);
    else
        eval_print_text(&ev);

done:
    idx_free(&img);
    idx_free(&lab);
    nn_model_free(m);
    return rc;
}

/* ------------------------------------------------------------------ */
/* predict */

static void predict_print(const char *name, size_t index, const float *p,
                          int json)
{
    int d = nn_argmax(p);

    if (json) {
        printf("{\"input\":\"%s\",\"index\":%zu,\"digit\":%d,"
               "\"probabilities\":[",
               name, index, d);
        for (int j = 0; j < NN_CLASSES; j++)
            printf("%s%.6f", j ? "," : "", p[j]);
        printf("]}\n");
        return;
    }
    printf("%s", name);
    if (index != (size_t)-1)
        printf("[%zu]", index);
    printf(": %d  (", d);
    for (int j = 0; j < NN_CLASSES; j++)
        printf("%s%d:%.3f", j ? " " : "", j, p[j]);
    printf(")\n");
}

static int predict_file(nn_ctx_t *ctx, const nn_model_t *m,
                        const char *path, int json)
{
    image_t img;
    uint8_t px[NN_IMAGE_PIXELS];
    float p[NN_CLASSES];
    dadc_error_t err;
    int rc;

    if (image_load(path, &img, &err) < 0)
        return fail("%s", dadc_error_message(&err));
    rc = image_to_mnist(img.pixels, img.width, img.height, px, &err);
    free(img.pixels);
    if (rc < 0)
        return fail("%s: %s", path, dadc_error_message(&err));
    nn_predict(ctx, m, px, 1, p);
    predict_print(path, (size_t)-1, p, json);
    return 0;
}

static int predict_idx(nn_ctx_t *ctx, const nn_model_t *m, const char *path,
                       long first, long count, int json)
{
    idx_file_t f;
    float p[NN_CLASSES];
    dadc_error_t err;

    if (idx_load(path, &f, &err) < 0 ||
        idx_check_images(&f, path, &err) < 0)
        return fail("%s", dadc_error_message(&err));
    if ((size_t)first >= f.count) {
        idx_free(&f);
        return fail("%s: --first %ld but the file has %zu images", path,
                    first, f.count);
    }
    if (count < 0 || (size_t)(first + count) > f.count)
        count = (long)(f.count - (size_t)first);
    for (long i = first; i < first + count; i++) {
        nn_predict(ctx, m, f.data + (size_t)i * NN_IMAGE_PIXELS, 1, p);
        predict_print(path, (size_t)i, p, json);
    }
    idx_free(&f);
    return 0;
}

static int cmd_predict(int argc, char **argv)
{
    static const struct option longs[] = {
        {"idx", 1, 0, 'x'},  {"first", 1, 0, 'f'}, {"count", 1, 0, 'c'},
        {"json", 0, 0, 'j'}, {"help", 0, 0, 'h'},  {0, 0, 0, 0}};
    const char *idx = NULL;
    long first = 0, count = -1;
    int c, json = 0, rc = 0;
    nn_model_t *m;
    nn_ctx_t *ctx;
    dadc_error_t err;

    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (c) {
        case 'h': fputs(usage_predict, stdout); return 0;
        case 'x': idx = optarg; break;
        case 'j': json = 1; break;
        case 'f':
            if (parse_long(optarg, 0, 1L << 40, &first) < 0)
                return usage_error("--first: want a number >= 0");
            break;
        case 'c':
            if (parse_long(optarg, 1, 1L << 40, &count) < 0)
                return usage_error("--count: want a number >= 1");
            break;
        default: return usage_error("bad option for predict");
        }
    }
    if (optind >= argc)
        return usage_error("predict: give a MODEL file");
    if (idx == NULL && optind + 1 >= argc)
        return usage_error("predict: give image files or --idx FILE");
    if (nn_model_load(argv[optind], &m, NULL, &err) < 0)
        return fail("%s", dadc_error_message(&err));
    if (nn_ctx_create(&ctx, m, 1) < 0) {
        nn_model_free(m);
        return fail("out of memory");
    }
    if (idx != NULL)
        rc = predict_idx(ctx, m, idx, first, count, json);
    for (int i = optind + 1; i < argc; i++)
        if (predict_file(ctx, m, argv[i], json) != 0)
            rc = EXIT_FAIL;
    nn_ctx_free(ctx);
    nn_model_free(m);
    return rc;
}

/* ------------------------------------------------------------------ */
/* bench */

static void bench_print(const nn_bench_t *b, int json)
{
    if (json) {
        printf("{\"threads\":%d,\"batch\":%d,\"train_images_per_s\":%.0f,"
               "\"train_gflops\":%.2f,\"eval_images\":%zu,\"eval_s\":%.4f,"
               "\"eval_gflops\":%.2f,\"single_us\":%.1f,"
               "\"single_gflops\":%.2f}\n",
               b->threads, b->batch, b->train_images_per_s, b->train_gflops,
               b->eval_images, b->eval_s, b->eval_gflops, b->single_us,
               b->single_gflops);
        return;
    }
    printf("engine threads          %d\n", b->threads);
    printf("training (batch %d)     %.0f images/s  (%.1f GFLOP/s)\n",
           b->batch, b->train_images_per_s, b->train_gflops);
    printf("evaluate %zu images  %.1f ms  (%.1f GFLOP/s)\n", b->eval_images,
           b->eval_s * 1e3, b->eval_gflops);
    printf("one image               %.1f us  (%.1f GFLOP/s)\n", b->single_us,
           b->single_gflops);
}

static int cmd_bench(int argc, char **argv)
{
    static const struct option longs[] = {{"mnist", 1, 0, 'm'},
                                          {"steps", 1, 0, 's'},
                                          {"json", 0, 0, 'j'},
                                          {"help", 0, 0, 'h'},
                                          {0, 0, 0, 0}};
    const char *dir = NULL;
    long steps = 300;
    int c, json = 0, rc;
    mnist_t d;
    nn_model_t *m;
    nn_bench_t b;

    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (c) {
        case 'h': fputs(usage_bench, stdout); return 0;
        case 'm': dir = optarg; break;
        case 'j': json = 1; break;
        case 's':
            if (parse_long(optarg, 1, 1000000, &steps) < 0)
                return usage_error("--steps: want 1..1000000");
            break;
        default: return usage_error("bad option for bench");
        }
    }
    if (optind < argc)
        return usage_error("bench: unexpected argument '%s'", argv[optind]);
    if (load_mnist(mnist_dir(dir), &d) != 0)
        return EXIT_FAIL;
    if (nn_model_create_reference(&m) < 0)
        return fail("out of memory");
    nn_model_init(m, 1);
    rc = nn_bench_run(m, d.train_images.data, d.train_labels.data,
                      d.train_images.count, d.test_images.data,
                      d.test_labels.data, d.test_images.count, (int)steps,
                      2000, &b);
    if (rc < 0)
        rc = fail("benchmark failed: %s", dadc_strerror(rc));
    else
        bench_print(&b, json);
    nn_model_free(m);
    mnist_free(&d);
    return rc;
}

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*fn)(int argc, char **argv);
    } cmds[] = {{"train", cmd_train},
                {"eval", cmd_eval},
                {"predict", cmd_predict},
                {"bench", cmd_bench}};

    if (argc < 2)
        return usage_error("missing command");
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(usage_main, stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        if (strcmp(argv[1], cmds[i].name) == 0)
            return cmds[i].fn(argc - 1, argv + 1);
    return usage_error("unknown command '%s'", argv[1]);
}
