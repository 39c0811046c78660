/*
 * `dadc export`: page through every stored example and write it into a
 * directory, as an IDX pair (examples-images-idx3-ubyte,
 * examples-labels-idx1-ubyte) or one PNG per example (ID-LABEL.png).
 * Either way examples.jsonl holds one line of metadata per example, in
 * the same order.
 */
#include "dadc_cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "idx.h"
#include "image.h"

#define EXPORT_PAGE 1000

typedef struct export_state {
    cli_t *cli;
    bool png;
    FILE *meta;             /* examples.jsonl */
    uint8_t *images;        /* idx: every image so far */
    uint8_t *labels;
    size_t n;
    size_t cap;
} export_state_t;

/* DIR/name into buf; returns buf. */
static const char *export_path(const cli_t *cli, char *buf, size_t size,
                               const char *name)
{
    snprintf(buf, size, "%s/%s", cli->argv[0], name);
    return buf;
}

static int export_grow(export_state_t *st)
{
    size_t cap = st->cap ? st->cap * 2 : 4096;
    uint8_t *im = realloc(st->images, cap * DADC_IMAGE_BYTES);
    uint8_t *lb;

    if (im == NULL)
        return -ENOMEM;
    st->images = im;
    lb = realloc(st->labels, cap);
    if (lb == NULL)
        return -ENOMEM;
    st->labels = lb;
    st->cap = cap;
    return 0;
}

/*
 * Write one 28x28 PNG into the export directory. Plain writes, without
 * the fsync of an atomic replace: an export of many thousand files
 * would otherwise wait on the disk for each one.
 */
static int export_png(export_state_t *st, const char *name,
                      const uint8_t *pixels)
{
    char path[4200];
    uint8_t *buf = NULL;
    size_t len = 0;
    dadc_error_t err;
    bool ok;
    FILE *f;

    dadc_error_clear(&err);
    if (image_encode_png(pixels, 28, 28, &buf, &len, &err) != 0) {
        cli_error("%s", dadc_error_message(&err));
        return CLI_EXIT_OUTPUT;
    }
    export_path(st->cli, path, sizeof(path), name);
    f = fopen(path, "wb");
    ok = f != NULL && fwrite(buf, 1, len, f) == len;
    if (f != NULL && fclose(f) != 0)
        ok = false;
    free(buf);
    if (!ok) {
        cli_error("cannot write %s: %s", path, strerror(errno));
        return CLI_EXIT_OUTPUT;
    }
    return 0;
}

/* Write one example. Returns 0 or an exit code. */
static int export_one(export_state_t *st, const Dadc__Example *e)
{
    cJSON *meta = cli_json_example(e);
    char *line;

    if (e->image.len != DADC_IMAGE_BYTES || e->label > 9) {
        cJSON_Delete(meta);
        cli_error("example %llu from the server is malformed",
                  (unsigned long long)e->id);
        return CLI_EXIT_CONNECT;
    }
    if (st->png) {
        char name[64];
        int rc;

        snprintf(name, sizeof(name), "%llu-%u.png",
                 (unsigned long long)e->id, e->label);
        rc = export_png(st, name, e->image.data);
        if (rc != 0) {
            cJSON_Delete(meta);
            return rc;
        }
        cJSON_AddStringToObject(meta, "file", name);
    } else {
        if (st->n == st->cap && export_grow(st) != 0) {
            cJSON_Delete(meta);
            cli_error("out of memory");
            return CLI_EXIT_OUTPUT;
        }
        memcpy(st->images + st->n * DADC_IMAGE_BYTES, e->image.data,
               DADC_IMAGE_BYTES);
        st->labels[st->n] = (uint8_t)e->label;
    }
    st->n++;
    line = cJSON_PrintUnformatted(meta);
    cJSON_Delete(meta);
    if (line == NULL || fprintf(st->meta, "%s\n", line) < 0) {
        free(line);
        cli_error("cannot write examples.jsonl: %s", strerror(errno));
        return CLI_EXIT_OUTPUT;
    }
    free(line);
    return 0;
}

/* Fetch every page and write its examples. Returns an exit code. */
static int export_pages(export_state_t *st, size_t *total)
{
    uint64_t after = 0;
    int rc;

    do {
        Dadc__ListExamplesResponse *page;
        size_t i;

        rc = dadc_client_list_examples(st->cli->client, after, EXPORT_PAGE,
                                       true, &page);
        if (rc != 0)
            return cli_client_error(st->cli, rc);
        for (i = 0; rc == 0 && i < page->n_examples; i++)
            rc = export_one(st, page->examples[i]);
        if (rc == 0 && page->next_after_id != 0 &&
            page->next_after_id <= after) {
            cli_error("the server's page token went backwards");
            rc = CLI_EXIT_CONNECT;
        }
        after = page->next_after_id;
        *total = page->total;
        dadc__list_examples_response__free_unpacked(page, NULL);
        if (rc == 0 && !st->cli->quiet && isatty(STDERR_FILENO))
            fprintf(stderr, "\rexport: %zu examples", st->n);
    } while (rc == 0 && after != 0);
    if (!st->cli->quiet && isatty(STDERR_FILENO))
        fputc('\n', stderr);
    return rc;
}

static int export_write_idx(export_state_t *st)
{
    uint32_t dims[3] = {0, 28, 28};
    char path[4200];
    dadc_error_t err;
    int rc;

    dadc_error_clear(&err);
    rc = idx_save(export_path(st->cli, path, sizeof(path),
                              "examples-images-idx3-ubyte"),
                  st->images, st->n, dims, 3, &err);
    if (rc == 0)
        rc = idx_save(export_path(st->cli, path, sizeof(path),
                                  "examples-labels-idx1-ubyte"),
                      st->labels, st->n, dims, 1, &err);
    if (rc != 0) {
        cli_error("%s", dadc_error_message(&err));
        return CLI_EXIT_OUTPUT;
    }
    return 0;
}

static int export_check(cli_t *cli, bool *png)
{
    struct stat sb;

    if (cli->argc != 1)
        return cli_usage_error("usage: dadc export [--format idx|png] DIR");
    if (cli->format != NULL && strcmp(cli->format, "png") != 0 &&
        strcmp(cli->format, "idx") != 0)
        return cli_usage_error("--format is idx or png, not '%s'",
                               cli->format);
    *png = cli->format != NULL && strcmp(cli->format, "png") == 0;
    if (mkdir(cli->argv[0], 0755) != 0 && errno != EEXIST) {
        cli_error("cannot create %s: %s", cli->argv[0], strerror(errno));
        return CLI_EXIT_OUTPUT;
    }
    if (stat(cli->argv[0], &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        cli_error("%s is not a directory", cli->argv[0]);
        return CLI_EXIT_OUTPUT;
    }
    return 0;
}

static void export_report(const export_state_t *st, size_t total)
{
    if (st->cli->json) {
        cJSON *root = cJSON_CreateObject();

        cJSON_AddNumberToObject(root, "examples", (double)st->n);
        cJSON_AddNumberToObject(root, "total", (double)total);
        cJSON_AddStringToObject(root, "dir", st->cli->argv[0]);
        cJSON_AddStringToObject(root, "format", st->png ? "png" : "idx");
        cli_json_print(root);
    } else {
        printf("exported %zu examples to %s (%s, metadata in "
               "examples.jsonl)\n", st->n, st->cli->argv[0],
               st->png ? "png" : "idx");
    }
}

int cli_cmd_export(cli_t *cli)
{
    export_state_t st = {0};
    char path[4200];
    size_t total = 0;
    int rc;

    st.cli = cli;
    rc = export_check(cli, &st.png);
    if (rc == 0)
        rc = cli_connect(cli);
    if (rc != 0)
        return rc;
    st.meta = fopen(export_path(cli, path, sizeof(path), "examples.jsonl"),
                    "w");
    if (st.meta == NULL) {
        cli_error("cannot create %s: %s", path, strerror(errno));
        return CLI_EXIT_OUTPUT;
    }
    rc = export_pages(&st, &total);
    if (rc == 0 && !st.png)
        rc = export_write_idx(&st);
    if (fclose(st.meta) != 0 && rc == 0) {
        cli_error("cannot write examples.jsonl: %s", strerror(errno));
        rc = CLI_EXIT_OUTPUT;
    }
    if (rc == 0)
        export_report(&st, total);
    free(st.images);
    free(st.labels);
    return rc;
}
