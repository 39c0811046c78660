/*
 * dadc-idx2png: write images of an IDX file (MNIST's format) as PNG
 * files, to try the CLI and the drawing client on real handwritten
 * digits. Files are named INDEX-LABEL.png when labels are given, else
 * INDEX.png.
 *
 *   dadc-idx2png [--labels LABELS] [--first N] [--count K] IMAGES DIR
 *
 * Exit codes: 0 success, 2 usage error, 4 bad input file, 5 cannot
 * write the output.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "idx.h"
#include "image.h"

static int usage_error(const char *msg)
{
    fprintf(stderr, "dadc-idx2png: %s\ntry 'dadc-idx2png --help'\n", msg);
    return 2;
}

static void usage(void)
{
    printf("usage: dadc-idx2png [--labels LABELS] [--first N] [--count K] "
           "IMAGES DIR\n\n"
           "Write images N .. N+K-1 of an IDX image file (e.g. MNIST's\n"
           "t10k-images-idx3-ubyte) into DIR as INDEX-LABEL.png.\n\n"
           "  -l, --labels FILE  IDX labels, put into the file names\n"
           "  -f, --first N      first image (default 0)\n"
           "  -n, --count K      how many (default: all)\n"
           "  -h, --help\n\n"
           "Exit codes: 0 success, 2 usage error, 4 bad input file,\n"
           "5 cannot write the output.\n");
}

static long parse_count(const char *s)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || end == s || v < 0)
        return -1;
    return v;
}

/*
 * One PNG, written plainly: an atomic replace with fsync per file would
 * make thousands of small files crawl.
 */
static int png_write(const char *path, const uint8_t *pixels, int w, int h)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    dadc_error_t err;
    FILE *f;
    int ok;

    dadc_error_clear(&err);
    if (image_encode_png(pixels, w, h, &buf, &len, &err) != 0) {
        fprintf(stderr, "dadc-idx2png: %s\n", dadc_error_message(&err));
        return 5;
    }
    f = fopen(path, "wb");
    ok = f != NULL && fwrite(buf, 1, len, f) == len;
    if (f != NULL && fclose(f) != 0)
        ok = 0;
    free(buf);
    if (!ok) {
        fprintf(stderr, "dadc-idx2png: cannot write %s: %s\n", path,
                strerror(errno));
        return 5;
    }
    return 0;
}

/* Write images [first, first + count) into dir. Returns an exit code. */
static int write_pngs(const idx_file_t *im, const idx_file_t *lb,
                      size_t first, size_t count, const char *dir)
{
    size_t w = im->dims[2], h = im->dims[1], i;
    char path[4200];
    int rc;

    for (i = first; i < first + count; i++) {
        if (lb != NULL)
            snprintf(path, sizeof(path), "%s/%05zu-%u.png", dir, i,
                     lb->data[i]);
        else
            snprintf(path, sizeof(path), "%s/%05zu.png", dir, i);
        rc = png_write(path, im->data + i * im->item_size, (int)w,
                       (int)h);
        if (rc != 0)
            return rc;
    }
    printf("wrote %zu images to %s\n", count, dir);
    return 0;
}

/* Load the inputs and check they fit together. Returns an exit code. */
static int load_inputs(const char *images, const char *labels,
                       idx_file_t *im, idx_file_t *lb)
{
    dadc_error_t err;
    int rc;

    dadc_error_clear(&err);
    rc = idx_load(images, im, &err);
    if (rc == 0 && (im->ndim != 3 || im->dims[1] == 0 || im->dims[2] == 0))
        rc = dadc_error_set(&err, DADC_ESHAPE, "%s: not N x H x W images",
                            images);
    if (rc == 0 && labels != NULL) {
        rc = idx_load(labels, lb, &err);
        if (rc == 0)
            rc = idx_check_labels(lb, im->count, labels, &err);
    }
    if (rc != 0) {
        fprintf(stderr, "dadc-idx2png: %s\n", dadc_error_message(&err));
        return 4;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option longs[] = {
        {"labels", required_argument, NULL, 'l'},
        {"first", required_argument, NULL, 'f'},
        {"count", required_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *labels = NULL;
    long first = 0, count = -1;
    idx_file_t im = {0}, lb = {0};
    int k, rc;

    while ((k = getopt_long(argc, argv, "l:f:n:h", longs, NULL)) != -1) {
        switch (k) {
        case 'l': labels = optarg; break;
        case 'f': first = parse_count(optarg); break;
        case 'n': count = parse_count(optarg); break;
        case 'h': usage(); return 0;
        default: return usage_error("bad option");
        }
        if (first < 0 || (k == 'n' && count < 0))
            return usage_error("--first and --count want numbers >= 0");
    }
    if (argc - optind != 2)
        return usage_error("want IMAGES and DIR");
    rc = load_inputs(argv[optind], labels, &im, &lb);
    if (rc == 0 && (size_t)first > im.count)
        rc = usage_error("--first is past the last image");
    if (rc == 0) {
        if (count < 0 || (size_t)(first + count) > im.count)
            count = (long)(im.count - (size_t)first);
        if (mkdir(argv[optind + 1], 0755) != 0 && errno != EEXIST) {
            fprintf(stderr, "dadc-idx2png: cannot create %s: %s\n",
                    argv[optind + 1], strerror(errno));
            rc = 5;
        }
    }
    if (rc == 0)
        rc = write_pngs(&im, labels ? &lb : NULL, (size_t)first,
                        (size_t)count, argv[optind + 1]);
    idx_free(&im);
    idx_free(&lb);
    return rc;
}
