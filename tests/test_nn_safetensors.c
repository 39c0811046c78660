/*
 * Model files: safetensors round trips, metadata, other layer lists, and
 * malformed files refused with a message naming the problem (run under
 * ASan+UBSan too: no crash, no leak on any of them).
 */
#include "nn.h"
#include "test_util.h"

#include <dirent.h>
#include <errno.h>
#include <stdint.h>

static uint8_t *good;
static size_t good_len;
static char *good_header;
static size_t good_hlen;

static void make_good(void)
{
    nn_model_t *m;
    nn_meta_t meta = {0};

    CHECK_EQ(nn_model_create_reference(&m), 0);
    nn_model_init(m, 9);
    CHECK_EQ(nn_meta_set(&meta, "epochs", "3"), 0);
    CHECK_EQ(nn_model_to_safetensors(m, &meta, &good, &good_len), 0);
    for (int i = 0; i < 8; i++)
        good_hlen |= (size_t)good[i] << (8 * i);
    good_header = calloc(1, good_hlen + 1);
    memcpy(good_header, good + 8, good_hlen);
    nn_model_free(m);
}

/* A file with the good data and `header` (with `from` replaced by `to`). */
static uint8_t *with_header(const char *from, const char *to, size_t *len)
{
    char *h = malloc(good_hlen + strlen(to) + 16);
    const char *at = strstr(good_header, from);
    size_t hl, data = good_len - 8 - good_hlen;
    uint8_t *f;

    CHECK(at != NULL);
    memcpy(h, good_header, (size_t)(at - good_header));
    strcpy(h + (at - good_header), to);
    strcat(h, at + strlen(from));
    hl = strlen(h);
    f = malloc(8 + hl + data);
    for (int i = 0; i < 8; i++)
        f[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(f + 8, h, hl);
    memcpy(f + 8 + hl, good + 8 + good_hlen, data);
    *len = 8 + hl + data;
    free(h);
    return f;
}

/* Parse buf and expect code with `needle` in the message. */
static void expect_refused(const uint8_t *buf, size_t len, int code,
                           const char *needle)
{
    nn_model_t *m = (nn_model_t *)buf; /* must be reset to NULL */
    dadc_error_t err;

    dadc_error_clear(&err);
    CHECK_EQ(nn_model_from_safetensors(buf, len, &m, NULL, &err), code);
    CHECK(m == NULL);
    CHECK_CONTAINS(err.msg, needle);
    printf("  refused: %s\n", err.msg);
}

static void expect_header_refused(const char *from, const char *to,
                                  int code, const char *needle)
{
    size_t len;
    uint8_t *f = with_header(from, to, &len);

    expect_refused(f, len, code, needle);
    free(f);
}

static void test_round_trip(void)
{
    nn_model_t *m, *back;
    nn_meta_t meta;
    dadc_error_t err;

    CHECK_EQ(nn_model_from_safetensors(good, good_len, &m, &meta, &err), 0);
    CHECK_STR(nn_meta_get(&meta, "epochs"), "3");
    CHECK_CONTAINS(nn_meta_get(&meta, "layers"), "\"name\":\"fc2\"");
    CHECK_CONTAINS(good_header, "\"conv1.weight\":{\"dtype\":\"F32\","
                                "\"shape\":[10,1,5,5]");
    CHECK_CONTAINS(good_header, "\"fc1.weight\":{\"dtype\":\"F32\","
                                "\"shape\":[50,320]");
    CHECK_EQ(good_hlen % 8, 0);
    CHECK_EQ(good_len, 8 + good_hlen + 21840 * 4);

    /* through a file: same parameters, nothing else left behind */
    CHECK_EQ(nn_model_save(m, &meta, test_path("m.safetensors"), &err), 0);
    CHECK_EQ(nn_model_load(test_path("m.safetensors"), &back, NULL, &err),
             0);
    CHECK(memcmp(nn_model_params(m), nn_model_params(back), 21840 * 4) ==
          0);
    {
        DIR *d = opendir(test_tmpdir());
        struct dirent *e;
        int files = 0;

        while ((e = readdir(d)) != NULL)
            files += e->d_name[0] != '.';
        closedir(d);
        CHECK_EQ(files, 1);
    }
    nn_model_free(back);
    nn_model_free(m);
}

static void test_other_layer_list(void)
{
    nn_layer_spec_t layers[] = {
        {NN_FLATTEN, "flat", 0, 0, 0, 0},
        {NN_LINEAR, "hidden", 784, 32, 0, 0},
        {NN_RELU, "relu", 0, 0, 0, 0},
        {NN_LINEAR, "head", 32, 10, 0, 0},
        {NN_LOGSOFTMAX, "out", 0, 0, 0, 0},
    };
    nn_model_t *m, *back;
    uint8_t *buf;
    size_t len;
    int nl;
    dadc_error_t err;

    CHECK_EQ(nn_model_create(&m, layers, 5, &err), 0);
    nn_model_init(m, 1);
    CHECK_EQ(nn_model_to_safetensors(m, NULL, &buf, &len), 0);
    CHECK_EQ(nn_model_from_safetensors(buf, len, &back, NULL, &err), 0);
    nn_model_layers(back, &nl);
    CHECK_EQ(nl, 5);
    CHECK_STR(nn_model_layers(back, NULL)[3].name, "head");
    CHECK(memcmp(nn_model_params(m), nn_model_params(back),
                 nn_model_nparams(m) * 4) == 0);
    free(buf);
    nn_model_free(back);
    nn_model_free(m);
}

static void test_malformed(void)
{
    uint8_t tiny[8] = {0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0};
    uint8_t *f;
    size_t len;

    expect_refused(good, 0, DADC_ETRUNC, "too short");
    expect_refused(good, 7, DADC_ETRUNC, "too short");
    expect_refused(tiny, 8, DADC_ETRUNC, "past the end");
    expect_refused(good, 8 + good_hlen - 1, DADC_ETRUNC, "past the end");
    expect_refused(good, good_len - 4, DADC_EFORMAT, "out of range");
    expect_header_refused("{", "[", DADC_EFORMAT, "not a JSON object");
    expect_header_refused("\"dtype\":\"F32\"", "\"dtype\":\"F16\"",
                          DADC_EDTYPE, "dtype F16");
    expect_header_refused("[10,1,5,5]", "[10,1,5,4]", DADC_ESHAPE,
                          "shape [10,1,5,4]");
    expect_header_refused("\"fc2.bias\"", "\"fc2.bias2\"", DADC_ENOTFOUND,
                          "missing tensor 'fc2.bias'");
    expect_header_refused("[1000,1040]", "[996,1036]", DADC_EFORMAT,
                          "overlap");
    expect_header_refused("[1000,1040]", "[1000,99999999]", DADC_EFORMAT,
                          "data_offsets out of range");
    expect_header_refused("[1000,1040]", "[1000,-4]", DADC_EFORMAT,
                          "data_offsets");
    expect_header_refused("[1000,1040]", "[1040,1000]", DADC_EFORMAT,
                          "data_offsets");
    expect_header_refused("[87320,87360]", "[87320,87356]", DADC_EFORMAT,
                          "span 36 bytes");
    expect_header_refused("\"dtype\":\"F32\"", "\"dtype\":7", DADC_EFORMAT,
                          "needs dtype");
    expect_header_refused("\"layers\":\"[", "\"layers\":\"[{}, ",
                          DADC_EFORMAT, "layer 0");
    expect_header_refused("\"epochs\":\"3\"", "\"epochs\":3", DADC_EFORMAT,
                          "not a string");

    /* an extra tensor the layer list does not know */
    f = with_header("{", "{\"extra\":{\"dtype\":\"F32\",\"shape\":[0],"
                         "\"data_offsets\":[0,0]},",
                    &len);
    expect_refused(f, len, DADC_EFORMAT, "unexpected tensor 'extra'");
    free(f);

    /* NaN weights */
    f = malloc(good_len);
    memcpy(f, good, good_len);
    memset(f + 8 + good_hlen, 0xff, 4);
    expect_refused(f, good_len, DADC_ERANGE, "NaN");
    free(f);
}

/* Every truncation of a good file is refused; no length crashes. */
static void test_every_truncation(void)
{
    int refused = 0, tried = 0;
    size_t step;

    for (size_t len = 0; len < good_len; len += step) {
        nn_model_t *m;
        dadc_error_t err;

        step = len < 8 + good_hlen ? 1 : 97;
        tried++;
        refused += nn_model_from_safetensors(good, len, &m, NULL, &err) < 0;
    }
    CHECK_EQ(refused, tried);
}

/* Flipped header bytes: refused or loaded, never a crash. */
static void test_corrupt_headers(void)
{
    uint8_t *f = malloc(good_len);
    uint64_t r = 7;

    for (int round = 0; round < 3000; round++) {
        nn_model_t *m = NULL;
        dadc_error_t err;

        memcpy(f, good, good_len);
        for (int k = 0; k < 1 + round % 4; k++) {
            r = r * 6364136223846793005ULL + 1442695040888963407ULL;
            f[8 + (r >> 33) % good_hlen] = (uint8_t)(r >> 20);
        }
        if (nn_model_from_safetensors(f, good_len, &m, NULL, &err) == 0)
            nn_model_free(m);
        else
            CHECK(err.msg[0] != '\0');
    }
    free(f);
}

static void test_files(void)
{
    nn_model_t *m;
    dadc_error_t err;

    CHECK_EQ(nn_model_load(test_path("absent.safetensors"), &m, NULL, &err),
             -ENOENT);
    CHECK_CONTAINS(err.msg, "absent.safetensors");
    test_write_file(test_path("short.safetensors"), good, 100);
    CHECK(nn_model_load(test_path("short.safetensors"), &m, NULL, &err) < 0);
    CHECK_CONTAINS(err.msg, "short.safetensors: header length");
    CHECK(nn_model_load(test_tmpdir(), &m, NULL, &err) < 0);
}

int main(void)
{
    test_init("test_nn_safetensors", 300);
    make_good();
    TEST_RUN(test_round_trip);
    TEST_RUN(test_other_layer_list);
    TEST_RUN(test_malformed);
    TEST_RUN(test_every_truncation);
    TEST_RUN(test_corrupt_headers);
    TEST_RUN(test_files);
    free(good);
    free(good_header);
    return test_finish();
}
