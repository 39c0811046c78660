/*
 * The commands of `dadc`. Each checks its operands, reads its input
 * files before connecting (so a bad file costs no connection), talks to
 * the server through the client library and prints text or JSON.
 */
#include "dadc_cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fileio.h"
#include "idx.h"
#include "image.h"

/* ------------------------------------------------------------------ */
/* Input images                                                        */

/* The images a predict or flag command works on. */
typedef struct cli_images {
    size_t n;
    uint8_t *pixels;      /* n * 784 */
    uint8_t *labels;      /* n, or NULL */
} cli_images_t;

static void cli_images_free(cli_images_t *im)
{
    free(im->pixels);
    free(im->labels);
    memset(im, 0, sizeof(*im));
}

/* Read drawings (PNG/PGM) and make them 28x28. Returns an exit code. */
static int images_from_files(cli_images_t *im, char **files, int nfiles)
{
    dadc_error_t err;
    int i;

    im->n = (size_t)nfiles;
    im->pixels = malloc(im->n * DADC_IMAGE_BYTES);
    if (im->pixels == NULL) {
        cli_error("out of memory");
        return CLI_EXIT_INPUT;
    }
    for (i = 0; i < nfiles; i++) {
        image_t img = {0};
        int rc;

        dadc_error_clear(&err);
        rc = image_load(files[i], &img, &err);
        if (rc == 0)
            rc = image_to_mnist(img.pixels, img.width, img.height,
                                im->pixels + (size_t)i * DADC_IMAGE_BYTES,
                                &err);
        free(img.pixels);
        if (rc != 0) {
            if (rc == DADC_EEMPTY)
                cli_error("%s: the drawing has no ink", files[i]);
            else
                cli_error("%s", dadc_error_message(&err));
            return CLI_EXIT_INPUT;
        }
    }
    return 0;
}

/* Read an IDX image file (and labels when given). Returns an exit code. */
static int images_from_idx(cli_images_t *im, const char *images,
                           const char *labels)
{
    idx_file_t fi = {0}, fl = {0};
    dadc_error_t err;
    int rc;

    dadc_error_clear(&err);
    rc = idx_load(images, &fi, &err);
    if (rc == 0)
        rc = idx_check_images(&fi, images, &err);
    if (rc == 0 && fi.count == 0)
        rc = dadc_error_set(&err, DADC_EEMPTY, "%s: no images", images);
    if (rc == 0 && labels != NULL) {
        rc = idx_load(labels, &fl, &err);
        if (rc == 0)
            rc = idx_check_labels(&fl, fi.count, labels, &err);
    }
    if (rc != 0) {
        cli_error("%s", dadc_error_message(&err));
        idx_free(&fi);
        idx_free(&fl);
        return CLI_EXIT_INPUT;
    }
    im->n = fi.count;
    im->pixels = fi.data;
    im->labels = fl.data;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Progress                                                            */

static int progress_bar_cb(size_t done, size_t total, void *user)
{
    const char *what = user;
    int width = 30, fill = total ? (int)(done * (size_t)width / total) : 0;
    char bar[32];

    memset(bar, '#', (size_t)fill);
    memset(bar + fill, '.', (size_t)(width - fill));
    bar[width] = '\0';
    fprintf(stderr, "\r%s [%s] %zu/%zu %3d%%", what, bar, done, total,
            total ? (int)(done * 100 / total) : 100);
    if (done == total)
        fputc('\n', stderr);
    return 0;
}

static bool progress_wanted(const cli_t *cli)
{
    return !cli->quiet && isatty(STDERR_FILENO);
}

/* ------------------------------------------------------------------ */
/* predict                                                             */

static void predict_print(const cli_t *cli, const dadc_prediction_t *p,
                          size_t n)
{
    cJSON *root, *arr;
    size_t i;

    if (!cli->json) {
        for (i = 0; i < n; i++) {
            char name[32];
            const char *label = name;

            if (cli->idx == NULL)
                label = cli->argv[i];
            else
                snprintf(name, sizeof(name), "%zu", i);
            printf("%s: %u (p=%.3f, model v%u)\n", label, p[i].digit,
                   p[i].probabilities[p[i].digit], p[i].model_version);
        }
        return;
    }
    root = cJSON_CreateObject();
    cJSON_AddNumberToObject(root, "model_version", p[0].model_version);
    arr = cJSON_AddArrayToObject(root, "predictions");
    for (i = 0; i < n; i++) {
        cJSON *o = cli_json_prediction(&p[i]);

        if (cli->idx == NULL)
            cJSON_AddStringToObject(o, "file", cli->argv[i]);
        else
            cJSON_AddNumberToObject(o, "index", (double)i);
        cJSON_AddItemToArray(arr, o);
    }
    cli_json_print(root);
}

int cli_cmd_predict(cli_t *cli)
{
    cli_images_t im = {0};
    dadc_prediction_t *p = NULL;
    int rc;

    if (cli->idx != NULL && cli->argc > 0)
        return cli_usage_error("predict takes FILEs or --idx, not both");
    if (cli->idx == NULL && cli->argc == 0)
        return cli_usage_error("predict needs FILEs or --idx FILE");
    rc = cli->idx ? images_from_idx(&im, cli->idx, NULL)
                  : images_from_files(&im, cli->argv, cli->argc);
    if (rc == 0)
        rc = cli_connect(cli);
    if (rc != 0)
        goto out;
    p = calloc(im.n, sizeof(*p));
    if (p == NULL) {
        cli_error("out of memory");
        rc = CLI_EXIT_INPUT;
        goto out;
    }
    rc = dadc_client_predict(cli->client, im.pixels, im.n, cli->model, p);
    if (rc != 0) {
        rc = cli_client_error(cli, rc);
        goto out;
    }
    predict_print(cli, p, im.n);

out:
    free(p);
    cli_images_free(&im);
    return rc;
}

/* ------------------------------------------------------------------ */
/* flag                                                                */

static void flag_print_text(const cli_t *cli, const dadc_flag_result_t *r,
                            size_t n, const dadc_flag_summary_t *s)
{
    size_t i;

    for (i = 0; cli->idx == NULL && i < n; i++) {
        if (r[i].status != 0)
            printf("%s: not stored\n", cli->argv[i]);
        else
            printf("%s: stored as example %llu; the model said %u: %s\n",
                   cli->argv[i], (unsigned long long)r[i].example_id,
                   r[i].predicted,
                   r[i].fooled ? "fooled it" : "not fooled");
    }
    printf("%zu stored, %zu fooled the model (v%u)", s->acknowledged,
           s->fooled, s->model_version);
    if (s->failed > 0)
        printf(", %zu NOT stored", s->failed);
    printf("; %u/%u fooling examples toward the next round%s\n",
           s->pending_fooled, s->round_threshold,
           s->round_started ? "; a round started" : "");
}

static void flag_print_json(const cli_t *cli, const dadc_flag_result_t *r,
                            size_t n, const dadc_flag_summary_t *s)
{
    cJSON *root = cJSON_CreateObject(), *arr;
    size_t i;

    cJSON_AddNumberToObject(root, "acknowledged", (double)s->acknowledged);
    cJSON_AddNumberToObject(root, "failed", (double)s->failed);
    cJSON_AddNumberToObject(root, "fooled", (double)s->fooled);
    cJSON_AddNumberToObject(root, "model_version", s->model_version);
    cJSON_AddNumberToObject(root, "pending_fooled", s->pending_fooled);
    cJSON_AddNumberToObject(root, "round_threshold", s->round_threshold);
    cJSON_AddBoolToObject(root, "round_started", s->round_started);
    arr = cJSON_AddArrayToObject(root, "results");
    for (i = 0; i < n; i++) {
        cJSON *o = cJSON_CreateObject();

        if (cli->idx == NULL)
            cJSON_AddStringToObject(o, "file", cli->argv[i]);
        else
            cJSON_AddNumberToObject(o, "index", (double)i);
        cJSON_AddBoolToObject(o, "stored", r[i].status == 0);
        if (r[i].status == 0) {
            cJSON_AddNumberToObject(o, "example_id",
                                    (double)r[i].example_id);
            cJSON_AddNumberToObject(o, "predicted", r[i].predicted);
            cJSON_AddBoolToObject(o, "fooled", r[i].fooled);
            cJSON_AddBoolToObject(o, "heldout", r[i].heldout);
        }
        cJSON_AddItemToArray(arr, o);
    }
    cli_json_print(root);
}

/* Check flag's operands; returns 0 or the usage exit code. */
static int flag_check_usage(const cli_t *cli)
{
    if (cli->idx != NULL) {
        if (cli->labels == NULL)
            return cli_usage_error("flag --idx needs --labels FILE");
        if (cli->label >= 0 || cli->argc > 0)
            return cli_usage_error("flag --idx takes no --label or FILEs");
        return 0;
    }
    if (cli->labels != NULL)
        return cli_usage_error("--labels goes with --idx");
    if (cli->label < 0)
        return cli_usage_error("flag needs --label N (the true digit)");
    if (cli->argc == 0)
        return cli_usage_error("flag needs FILEs or --idx");
    return 0;
}

static int flag_load(cli_t *cli, cli_images_t *im)
{
    int rc;

    if (cli->idx != NULL)
        return images_from_idx(im, cli->idx, cli->labels);
    rc = images_from_files(im, cli->argv, cli->argc);
    if (rc != 0)
        return rc;
    im->labels = malloc(im->n);
    if (im->labels == NULL) {
        cli_error("out of memory");
        return CLI_EXIT_INPUT;
    }
    memset(im->labels, cli->label, im->n);
    return 0;
}

int cli_cmd_flag(cli_t *cli)
{
    cli_images_t im = {0};
    dadc_flag_result_t *r = NULL;
    dadc_flag_summary_t s;
    int rc = flag_check_usage(cli), frc;

    if (rc == 0)
        rc = flag_load(cli, &im);
    if (rc == 0)
        rc = cli_connect(cli);
    if (rc != 0)
        goto out;
    r = calloc(im.n, sizeof(*r));
    if (r == NULL) {
        cli_error("out of memory");
        rc = CLI_EXIT_INPUT;
        goto out;
    }
    frc = dadc_client_flag(cli->client, im.pixels, im.labels, im.n, r, &s,
                           progress_wanted(cli) ? progress_bar_cb : NULL,
                           "flag");
    if (frc != 0 && progress_wanted(cli) && s.acknowledged < im.n)
        fputc('\n', stderr);
    if (cli->json)
        flag_print_json(cli, r, im.n, &s);
    else
        flag_print_text(cli, r, im.n, &s);
    if (frc != 0)
        rc = cli_client_error(cli, frc);

out:
    free(r);
    cli_images_free(&im);
    return rc;
}

/* ------------------------------------------------------------------ */
/* stats                                                               */

static void print_counts(const char *what, const Dadc__CountFigures *c)
{
    if (c == NULL) {
        printf("  %s: none\n", what);
        return;
    }
    printf("  %s: %llu submitted, %llu fooled (error rate %.1f%%)\n", what,
           (unsigned long long)c->submitted, (unsigned long long)c->fooled,
           100.0 * c->error_rate);
}

/* How a finished round ended; the server's reason escaped. */
static void round_outcome_print(const Dadc__RoundInfo *r)
{
    char *reason = dadc_text_escape(r->reason);
    const char *why = reason ? reason : "?";

    if (r->candidate_version == 0)
        printf("    no candidate%s%s\n", why[0] ? ": " : "", why);
    else if (why[0])
        printf("    candidate v%u: %s\n", r->candidate_version, why);
    else
        printf("    candidate v%u %s\n", r->candidate_version,
               r->promoted ? "promoted" : "kept back");
    free(reason);
}

static void stats_print_rounds(const Dadc__StatsResponse *s)
{
    size_t i;

    printf("per round:\n");
    for (i = 0; i < s->n_per_round; i++) {
        const Dadc__RoundFigures *r = s->per_round[i];
        char what[32];

        snprintf(what, sizeof(what), "round %u", r->round);
        print_counts(what, r->counts);
        if (r->info == NULL)
            printf("    (collecting)\n");
        else if (r->info->running)
            printf("    training from v%u\n", r->info->base_version);
        else
            round_outcome_print(r->info);
    }
}

static void stats_print_text(const Dadc__StatsResponse *s)
{
    size_t i;

    printf("current model: v%u; next round at %u/%u fooling examples%s; "
           "%u connections\n", s->current_model_version, s->pending_fooled,
           s->round_threshold, s->round_running ? "; a round is running"
                                                 : "",
           s->connections);
    print_counts("overall", s->overall);
    printf("  held out: %llu examples\nper digit:\n",
           (unsigned long long)s->heldout_examples);
    for (i = 0; i < s->n_per_digit; i++) {
        char what[16];

        snprintf(what, sizeof(what), "%u", s->per_digit[i]->digit);
        print_counts(what, s->per_digit[i]->counts);
    }
    printf("per annotator:\n");
    for (i = 0; i < s->n_per_annotator; i++) {
        const char *a = s->per_annotator[i]->annotator;
        char *name = dadc_text_escape(a && a[0] ? a : "(anonymous)");

        print_counts(name ? name : "?", s->per_annotator[i]->counts);
        free(name);
    }
    stats_print_rounds(s);
}

int cli_cmd_stats(cli_t *cli)
{
    Dadc__StatsResponse *s;
    int rc;

    if (cli->argc > 0)
        return cli_usage_error("stats takes no operands");
    rc = cli_connect(cli);
    if (rc != 0)
        return rc;
    rc = dadc_client_stats(cli->client, &s);
    if (rc != 0)
        return cli_client_error(cli, rc);
    if (cli->json)
        cli_json_print(cli_json_stats(s));
    else
        stats_print_text(s);
    dadc__stats_response__free_unpacked(s, NULL);
    return 0;
}

/* ------------------------------------------------------------------ */
/* models, model get                                                   */

static void models_print_text(const Dadc__ListModelsResponse *l)
{
    size_t i;

    printf("%7s %7s %5s %-8s %-8s %8s %8s %9s\n", "VERSION", "PARENT",
           "ROUND", "CURRENT", "PROMOTED", "MNIST", "ADVERS.", "BYTES");
    for (i = 0; i < l->n_models; i++) {
        const Dadc__ModelInfo *m = l->models[i];

        printf("%7u %7u %5u %-8s %-8s %7.2f%% %7.2f%% %9llu\n",
               m->version, m->parent_version, m->round,
               m->current ? "*" : "", m->promoted ? "yes" : "no",
               100.0 * m->mnist_test_accuracy,
               100.0 * m->adversarial_accuracy,
               (unsigned long long)m->size_bytes);
    }
}

int cli_cmd_models(cli_t *cli)
{
    Dadc__ListModelsResponse *l;
    int rc;

    if (cli->argc > 0)
        return cli_usage_error("models takes no operands");
    rc = cli_connect(cli);
    if (rc != 0)
        return rc;
    rc = dadc_client_list_models(cli->client, &l);
    if (rc != 0)
        return cli_client_error(cli, rc);
    if (cli->json) {
        cJSON *root = cJSON_CreateObject();
        cJSON *arr = cJSON_AddArrayToObject(root, "models");
        size_t i;

        cJSON_AddNumberToObject(root, "current_model_version",
                                l->current_model_version);
        for (i = 0; i < l->n_models; i++)
            cJSON_AddItemToArray(arr, cli_json_model(l->models[i]));
        cli_json_print(root);
    } else {
        models_print_text(l);
    }
    dadc__list_models_response__free_unpacked(l, NULL);
    return 0;
}

static int model_write(const cli_t *cli, const Dadc__GetModelResponse *g)
{
    dadc_file_part_t part = {g->safetensors.data, g->safetensors.len};
    dadc_error_t err;
    uint32_t version = g->info ? g->info->version : 0;

    dadc_error_clear(&err);
    if (dadc_file_write_atomic(cli->output, &part, 1, &err) != 0) {
        cli_error("%s", dadc_error_message(&err));
        return CLI_EXIT_OUTPUT;
    }
    if (cli->json) {
        cJSON *root = g->info ? cli_json_model(g->info)
                              : cJSON_CreateObject();

        cJSON_AddStringToObject(root, "file", cli->output);
        cJSON_AddNumberToObject(root, "bytes", (double)g->safetensors.len);
        cli_json_print(root);
    } else {
        printf("wrote model v%u to %s (%zu bytes)\n", version, cli->output,
               g->safetensors.len);
    }
    return 0;
}

int cli_cmd_model(cli_t *cli)
{
    Dadc__GetModelResponse *g;
    long v;
    int rc;

    if (cli->argc != 2 || strcmp(cli->argv[0], "get") != 0)
        return cli_usage_error("usage: dadc model get V -o FILE");
    v = cli_parse_uint(cli->argv[1], UINT32_MAX);
    if (v < 0)
        return cli_usage_error("'%s' is not a version number",
                               cli->argv[1]);
    if (cli->output == NULL)
        return cli_usage_error("model get needs -o FILE");
    rc = cli_connect(cli);
    if (rc != 0)
        return rc;
    rc = dadc_client_get_model(cli->client, (uint32_t)v, &g);
    if (rc != 0)
        return cli_client_error(cli, rc);
    rc = model_write(cli, g);
    dadc__get_model_response__free_unpacked(g, NULL);
    return rc;
}

/* ------------------------------------------------------------------ */
/* train, rollback                                                     */

int cli_cmd_train(cli_t *cli)
{
    uint32_t round = 0;
    int rc;

    if (cli->argc > 0)
        return cli_usage_error("train takes no operands");
    rc = cli_connect(cli);
    if (rc != 0)
        return rc;
    rc = dadc_client_train(cli->client, &round);
    if (rc != 0)
        return cli_client_error(cli, rc);
    if (cli->json) {
        cJSON *root = cJSON_CreateObject();

        cJSON_AddNumberToObject(root, "round", round);
        cli_json_print(root);
    } else {
        printf("round %u started\n", round);
    }
    return 0;
}

int cli_cmd_rollback(cli_t *cli)
{
    uint32_t prev = 0, cur = 0;
    long v;
    int rc;

    if (cli->argc != 1)
        return cli_usage_error("usage: dadc rollback V");
    v = cli_parse_uint(cli->argv[0], UINT32_MAX);
    if (v <= 0)
        return cli_usage_error("'%s' is not a version number",
                               cli->argv[0]);
    rc = cli_connect(cli);
    if (rc != 0)
        return rc;
    rc = dadc_client_rollback(cli->client, (uint32_t)v, &prev, &cur);
    if (rc != 0)
        return cli_client_error(cli, rc);
    if (cli->json) {
        cJSON *root = cJSON_CreateObject();

        cJSON_AddNumberToObject(root, "previous_version", prev);
        cJSON_AddNumberToObject(root, "current_version", cur);
        cli_json_print(root);
    } else {
        printf("current model: v%u (was v%u)\n", cur, prev);
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* watch                                                               */

int cli_cmd_watch(cli_t *cli)
{
    long seen = 0;
    int rc;

    if (cli->argc > 0)
        return cli_usage_error("watch takes no operands");
    rc = cli_connect(cli);
    if (rc == 0 && (rc = dadc_client_subscribe(cli->client)) != 0)
        rc = cli_client_error(cli, rc);
    while (rc == 0 && (cli->count == 0 || seen < cli->count)) {
        Dadc__Event *ev;
        char line[512];

        rc = dadc_client_next_event(cli->client, -1, &ev);
        if (rc != 0)
            return cli_client_error(cli, rc);
        if (cli->json) {
            cli_json_print(cli_json_event(ev));
        } else {
            char *text;

            cli_event_text(ev, line, sizeof(line));
            text = dadc_text_escape(line);
            printf("%s\n", text ? text : "?");
            free(text);
        }
        dadc__event__free_unpacked(ev, NULL);
        rc = cli_output_check();
        seen++;
    }
    return rc;
}
