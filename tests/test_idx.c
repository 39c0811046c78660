/*
 * The IDX reader and writer: the real MNIST files, malformed inputs each
 * refused with the right code and a message, round trips, and seeded
 * random garbage.
 */
#include <errno.h>
#include <stdint.h>

#include "idx.h"
#include "test_util.h"

/* A malformed input and what idx_parse must say about it. */
typedef struct idx_bad_case {
    const char *what;
    uint8_t bytes[40];
    size_t len;
    int code;
    const char *msg;
} idx_bad_case_t;

static const idx_bad_case_t bad_cases[] = {
    {"empty", {0}, 0, DADC_ETRUNC, "too short for the IDX magic"},
    {"three bytes", {0, 0, 8}, 3, DADC_ETRUNC, "too short"},
    {"bad magic", {0x89, 'P', 'N', 'G', 0, 0, 0, 1, 7}, 9, DADC_EFORMAT,
     "bad magic 89 50 4e 47"},
    {"second byte", {0, 1, 8, 1, 0, 0, 0, 1, 7}, 9, DADC_EFORMAT,
     "bad magic"},
    {"float type", {0, 0, 0x0d, 1, 0, 0, 0, 1, 0, 0, 0, 0}, 12,
     DADC_EDTYPE, "data type 0x0d is not unsigned byte"},
    {"signed type", {0, 0, 0x09, 1, 0, 0, 0, 1, 7}, 9, DADC_EDTYPE,
     "0x09"},
    {"zero dims", {0, 0, 8, 0}, 4, DADC_EFORMAT, "0 dimensions"},
    {"five dims", {0, 0, 8, 5}, 4, DADC_EFORMAT, "5 dimensions"},
    {"header cut", {0, 0, 8, 3, 0, 0, 0, 1, 0, 0}, 10, DADC_ETRUNC,
     "header needs 16 bytes, file has 10"},
    {"overflow", {0, 0, 8, 4, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                  0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
     20, DADC_ELIMIT, "overflow"},
    {"data short", {0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5},
     17, DADC_ETRUNC, "header says 2 items of 3 bytes, file has 5 bytes"},
    {"no data", {0, 0, 8, 1, 0, 0, 0, 1}, 8, DADC_ETRUNC,
     "file has 0 bytes of data"},
    {"data long", {0, 0, 8, 1, 0, 0, 0, 2, 1, 2, 3}, 11, DADC_EFORMAT,
     "1 bytes of data after the 2"},
};

static void test_mnist_real(void)
{
    static const uint8_t train_first[] = {5, 0, 4, 1, 9, 2, 1, 3, 1, 4};
    static const uint8_t test_first[] = {7, 2, 1, 0, 4, 1, 4, 9, 5, 9};
    const char *dir = test_mnist_dir();
    dadc_error_t err;
    mnist_t m;

    CHECK(dir != NULL);
    CHECK_EQ(mnist_load(dir, &m, &err), 0);
    CHECK_EQ(m.train_images.ndim, 3);
    CHECK_EQ(m.train_images.count, 60000);
    CHECK_EQ(m.train_images.item_size, 784);
    CHECK_EQ(m.train_images.dims[1], 28);
    CHECK_EQ(m.train_images.dims[2], 28);
    CHECK_EQ(m.train_labels.count, 60000);
    CHECK_EQ(m.test_images.count, 10000);
    CHECK_EQ(m.test_labels.count, 10000);
    CHECK_EQ(m.test_labels.ndim, 1);
    CHECK(memcmp(m.train_labels.data, train_first, 10) == 0);
    CHECK(memcmp(m.test_labels.data, test_first, 10) == 0);

    /* MNIST pixels: border rows are blank, the middle has ink. */
    CHECK_EQ(m.test_images.data[0], 0);
    CHECK_EQ(m.test_images.data[783], 0);
    {
        unsigned sum = 0;

        for (int i = 0; i < 784; i++)
            sum += m.test_images.data[i];
        CHECK_INT(sum, >, 10000);
    }
    mnist_free(&m);
    CHECK(m.train_images.data == NULL);
}

static void test_parse_malformed(void)
{
    size_t n = sizeof(bad_cases) / sizeof(bad_cases[0]);

    for (size_t i = 0; i < n; i++) {
        const idx_bad_case_t *c = &bad_cases[i];
        dadc_error_t err;
        idx_file_t f;
        int rc;

        printf("   case: %s\n", c->what);
        dadc_error_clear(&err);
        rc = idx_parse(c->bytes, c->len, "case.idx", &f, &err);
        CHECK_EQ(rc, c->code);
        CHECK_EQ(err.code, c->code);
        CHECK_CONTAINS(err.msg, "case.idx: ");
        CHECK_CONTAINS(err.msg, c->msg);
        CHECK(f.data == NULL);
    }
}

static void test_load_malformed(void)
{
    const char *path = test_path("short-images");
    const uint8_t bytes[] = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 28, 0, 0,
                             0, 28, 1, 2, 3};
    dadc_error_t err;
    idx_file_t f;

    test_write_file(path, bytes, sizeof(bytes));
    CHECK_EQ(idx_load(path, &f, &err), DADC_ETRUNC);
    CHECK_CONTAINS(err.msg, path);
    CHECK_CONTAINS(err.msg, "header says 2 items of 784 bytes, file has 3");

    CHECK_EQ(idx_load(test_path("missing"), &f, &err), -ENOENT);
    CHECK_CONTAINS(err.msg, "missing");
    CHECK(f.data == NULL);
}

static void test_round_trip(void)
{
    const char *path = test_path("rt-idx");
    uint32_t dims[3] = {0, 3, 5};
    uint8_t data[4 * 15];
    dadc_error_t err;
    idx_file_t f;
    size_t len;
    char *raw;

    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(i * 37 + 11);
    CHECK_EQ(idx_save(path, data, 4, dims, 3, &err), 0);
    raw = test_read_file(path, &len);
    CHECK_EQ(len, 16 + sizeof(data));
    CHECK_EQ((uint8_t)raw[2], 8);
    CHECK_EQ((uint8_t)raw[3], 3);
    CHECK_EQ((uint8_t)raw[7], 4);
    free(raw);

    CHECK_EQ(idx_load(path, &f, &err), 0);
    CHECK_EQ(f.ndim, 3);
    CHECK_EQ(f.count, 4);
    CHECK_EQ(f.item_size, 15);
    CHECK_EQ(f.dims[1], 3);
    CHECK_EQ(f.dims[2], 5);
    CHECK(memcmp(f.data, data, sizeof(data)) == 0);
    idx_free(&f);

    /* Zero items is a valid, empty file. */
    CHECK_EQ(idx_save(path, NULL, 0, dims, 3, &err), 0);
    CHECK_EQ(idx_load(path, &f, &err), 0);
    CHECK_EQ(f.count, 0);
    CHECK_EQ(f.item_size, 15);
    idx_free(&f);

    CHECK_EQ(idx_save(path, data, 4, dims, 0, &err), DADC_ERANGE);
    CHECK_EQ(idx_save(path, data, 4, dims, 5, &err), DADC_ERANGE);
    CHECK_EQ(idx_save(test_path("no/such/dir"), data, 4, dims, 3, &err),
             -ENOENT);
}

/* Write a small images/labels pair into dir under the MNIST test names. */
static void mnist_pair_write(const char *dir, size_t n_images,
                             uint32_t side, size_t n_labels, uint8_t label)
{
    char path[512];
    uint32_t idims[3] = {0, side, side}, ldims[1] = {0};
    uint8_t *pix = calloc(n_images * side * side + 1, 1);
    uint8_t *labels = malloc(n_labels + 1);
    dadc_error_t err;

    CHECK(pix != NULL && labels != NULL);
    memset(labels, label, n_labels + 1);
    snprintf(path, sizeof(path), "%s/t10k-images-idx3-ubyte", dir);
    CHECK_EQ(idx_save(path, pix, n_images, idims, 3, &err), 0);
    snprintf(path, sizeof(path), "%s/t10k-labels-idx1-ubyte", dir);
    CHECK_EQ(idx_save(path, labels, n_labels, ldims, 1, &err), 0);
    free(pix);
    free(labels);
}

/* Links to the real train files plus a bad test pair in a temp dir. */
static int mnist_bad_load(size_t n_images, uint32_t side, size_t n_labels,
                          uint8_t label, dadc_error_t *err)
{
    const char *src = test_mnist_dir();
    char cmd[2048];
    mnist_t m;
    int rc;

    CHECK(src != NULL);
    snprintf(cmd, sizeof(cmd),
             "ln -sf '%s/train-images-idx3-ubyte' "
             "'%s/train-labels-idx1-ubyte' '%s/'", src, src, test_tmpdir());
    CHECK_EQ(system(cmd), 0);
    mnist_pair_write(test_tmpdir(), n_images, side, n_labels, label);
    rc = mnist_load(test_tmpdir(), &m, err);
    if (rc == 0)
        mnist_free(&m);
    return rc;
}

static void test_mnist_mismatch(void)
{
    dadc_error_t err;
    mnist_t m;

    CHECK_EQ(mnist_bad_load(5, 28, 5, 3, &err), 0);

    CHECK_EQ(mnist_bad_load(5, 28, 4, 3, &err), DADC_ESHAPE);
    CHECK_CONTAINS(err.msg, "t10k-labels-idx1-ubyte: 4 labels for 5");

    CHECK_EQ(mnist_bad_load(5, 28, 5, 10, &err), DADC_ERANGE);
    CHECK_CONTAINS(err.msg, "label 10 at item 0 is not a digit");

    CHECK_EQ(mnist_bad_load(5, 27, 5, 3, &err), DADC_ESHAPE);
    CHECK_CONTAINS(err.msg, "t10k-images-idx3-ubyte: images are 5 x 27 x 27");

    CHECK_EQ(mnist_load(test_path("nowhere"), &m, &err), -ENOENT);
    CHECK_CONTAINS(err.msg, "train-images-idx3-ubyte");
}

/* xorshift64*, seeded: the same garbage every run. */
static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

static void test_random_garbage(void)
{
    uint64_t seed = 0x1dc0ffee;
    uint8_t buf[96];
    int ok = 0;

    for (int iter = 0; iter < 200000; iter++) {
        size_t len = rng_next(&seed) % sizeof(buf);
        dadc_error_t err;
        idx_file_t f;
        int rc;

        for (size_t i = 0; i < len; i++)
            buf[i] = (uint8_t)rng_next(&seed);

        /* Mostly plausible headers, so the deeper checks get exercised. */
        if (len >= 4 && iter % 4 != 0) {
            buf[0] = buf[1] = 0;
            buf[2] = 8;
            buf[3] = (uint8_t)(1 + rng_next(&seed) % 4);
            for (size_t i = 4; i < len && i < 20; i++)
                if (i % 4 != 3)
                    buf[i] = (uint8_t)(rng_next(&seed) % 4 ? 0 : buf[i]);
        }
        dadc_error_clear(&err);
        rc = idx_parse(buf, len, "garbage", &f, &err);
        if (rc == 0) {
            CHECK_EQ(f.count * f.item_size + 4 + 4 * (size_t)f.ndim, len);
            ok++;
            idx_free(&f);
        } else {
            CHECK_EQ(err.code, rc);
            CHECK_CONTAINS(err.msg, "garbage: ");
        }
    }
    printf("   %d of 200000 random inputs were valid IDX\n", ok);
    CHECK_INT(ok, >, 0);
}

int main(void)
{
    test_init("test_idx", 120);
    TEST_RUN(test_mnist_real);
    TEST_RUN(test_parse_malformed);
    TEST_RUN(test_load_malformed);
    TEST_RUN(test_round_trip);
    TEST_RUN(test_mnist_mismatch);
    TEST_RUN(test_random_garbage);
    return test_finish();
}
