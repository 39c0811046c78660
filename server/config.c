#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "round.h"

#ifndef DADC_VERSION
#define DADC_VERSION "0.1.0"
#endif

typedef enum opt_type {
    OPT_STR,
    OPT_U32,
    OPT_SIZE,
    OPT_DOUBLE,
    OPT_MS,
    OPT_LEVEL,
} opt_type_t;

typedef struct opt_def {
    const char *key;         /* with '_' */
    opt_type_t type;
    size_t offset;
    size_t size;             /* OPT_STR: buffer size */
    double min, max;
    const char *help;
} opt_def_t;

#define OFF(f) offsetof(server_config_t, f)
#define FSIZE(f) sizeof(((server_config_t *)0)->f)
#define STR(f) OPT_STR, OFF(f), FSIZE(f), 0, 0
#define U32(f, lo, hi) OPT_U32, OFF(f), FSIZE(f), lo, hi
#define SIZE(f, lo, hi) OPT_SIZE, OFF(f), FSIZE(f), lo, hi
#define DBL(f, lo, hi) OPT_DOUBLE, OFF(f), FSIZE(f), lo, hi
#define MS(f, lo, hi) OPT_MS, OFF(f), FSIZE(f), lo, hi

/* The one table of options; --help prints it. */
static const opt_def_t opts[] = {
    {"data_dir", STR(data_dir), "store directory (LMDB)"},
    {"listen", STR(listen), "HOST:PORT to listen on; port 0 picks one"},
    {"mnist_dir", STR(mnist_dir), "MNIST IDX files (default DIR/mnist)"},
    {"init_model", STR(init_model),
     "model file for an empty store instead of base training"},
    {"port_file", STR(port_file), "write the bound port to this file"},
    {"log_level", OPT_LEVEL, OFF(log_level), 16, 0, 0,
     "error, warning, info or debug"},
    {"round_threshold", U32(round_threshold, 1, 1e6),
     "new fooling training examples that start a round"},
    {"round_margin", DBL(round_margin, 0, 100),
     "MNIST accuracy points a candidate may lose and still be promoted"},
    {"heldout_percent", U32(heldout_percent, 0, 100),
     "share of examples held out as the adversarial test split"},
    {"replay_size", U32(replay_size, 0, 60000),
     "MNIST training images mixed into each round"},
    {"round_epochs", U32(round_epochs, 1, 1000),
     "fine-tuning epochs in a round"},
    {"round_lr", DBL(round_lr, 1e-9, 10), "fine-tuning learning rate"},
    {"base_epochs", U32(base_epochs, 0, 1000),
     "base model epochs on an empty store (0: engine default)"},
    {"base_images", U32(base_images, 0, 1e9),
     "MNIST training images for the base model (0: all)"},
    {"max_frame", SIZE(max_frame, 1024, 1u << 30),
     "largest frame after Hello"},
    {"max_frame_pre_hello", SIZE(max_frame_pre_hello, 64, 1u << 30),
     "largest frame before Hello"},
    {"max_inflight", U32(max_inflight, 1, 1e6),
     "requests in flight per connection before reading pauses"},
    {"max_pending_out", SIZE(max_pending_out, 1024, 1ull << 40),
     "unread answer bytes after which a connection is dropped"},
    {"max_pending_in", SIZE(max_pending_in, 1u << 20, 1ull << 40),
     "image bytes queued in all connections before reading pauses"},
    {"frame_timeout", MS(frame_timeout_ms, 1, 86400000),
     "seconds a started frame has to complete"},
    {"idle_timeout", MS(idle_timeout_ms, 1, 86400000 * 30.0),
     "seconds of silence before a connection is closed"},
    {"max_connections", U32(max_connections, 1, 1e6),
     "connections served at once; the next is told \"server full\""},
    {"max_predict_batch", U32(max_predict_batch, 1, 1e6),
     "images per model call (scratch is ~115 KiB an image)"},
    {"map_size", SIZE(map_size, 1u << 20, 1ull << 44),
     "initial LMDB map size (it grows when full)"},
};

#define NOPTS (sizeof(opts) / sizeof(opts[0]))

void config_defaults(server_config_t *cfg)
{
    round_opts_t ro;

    memset(cfg, 0, sizeof(*cfg));
    round_opts_default(&ro);
    strcpy(cfg->data_dir, "./dadc-data");
    strcpy(cfg->listen, "127.0.0.1:7070");
    strcpy(cfg->log_level, "info");
    cfg->round_threshold = 10;
    cfg->round_margin = 0.3;
    cfg->heldout_percent = 20;
    cfg->replay_size = (uint32_t)ro.replay;
    cfg->round_epochs = (uint32_t)ro.epochs;
    cfg->round_lr = ro.lr;
    cfg->base_epochs = 0;
    cfg->max_frame = 4u * 1024 * 1024;
    cfg->max_frame_pre_hello = 16u * 1024;
    cfg->max_inflight = 32;
    cfg->max_pending_out = 8u * 1024 * 1024;
    cfg->max_pending_in = 256u * 1024 * 1024;
    cfg->frame_timeout_ms = 30000;
    cfg->idle_timeout_ms = 300000;
    cfg->max_connections = 1024;
    cfg->max_predict_batch = 256;
    cfg->map_size = 256u * 1024 * 1024;
}

/* Find an option by key, spelled with '-' or '_', any case. */
static const opt_def_t *opt_find(const char *key)
{
    char canon[64];
    size_t i;

    for (i = 0; key[i] != '\0'; i++) {
        if (i + 1 >= sizeof(canon))
            return NULL;
        canon[i] = key[i] == '-' ? '_' : (char)tolower((unsigned char)key[i]);
    }
    canon[i] = '\0';
    for (size_t k = 0; k < NOPTS; k++) {
        if (strcmp(opts[k].key, canon) == 0)
            return &opts[k];
    }
    return NULL;
}

/* A number with an optional size suffix (K, KiB, M, MiB, G, GiB, T,
 * TiB). */
static int parse_size(const char *s, double *out)
{
    char *end;
    double v, mult = 1;

    errno = 0;
    v = strtod(s, &end);
    if (end == s || errno != 0 || !isfinite(v))
        return -1;
    while (*end == ' ')
        end++;
    if (*end == 'k' || *end == 'K')
        mult = 1024.0;
    else if (*end == 'm' || *end == 'M')
        mult = 1024.0 * 1024;
    else if (*end == 'g' || *end == 'G')
        mult = 1024.0 * 1024 * 1024;
    else if (*end == 't' || *end == 'T')
        mult = 1024.0 * 1024 * 1024 * 1024;
    if (mult != 1) {
        end++;
        if (strcmp(end, "iB") == 0 || strcmp(end, "B") == 0)
            end += strlen(end);
    }
    if (*end != '\0' || v != floor(v) || v < 0)
        return -1;
    *out = v * mult;
    return 0;
}

/* Seconds (fractional allowed) or a number with an "ms" suffix, in ms. */
static int parse_ms(const char *s, double *out)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (end == s || errno != 0 || !isfinite(v))
        return -1;
    if (strcmp(end, "ms") == 0)
        *out = v;
    else if (*end == '\0' || strcmp(end, "s") == 0)
        *out = v * 1000.0;
    else
        return -1;
    *out = floor(*out + 0.5);
    return 0;
}

static int parse_double(const char *s, double *out)
{
    char *end;

    errno = 0;
    *out = strtod(s, &end);
    if (end == s || *end != '\0' || errno != 0 || !isfinite(*out))
        return -1;
    return 0;
}

/* Parse value into the number the option stores, before range checks. */
static int opt_parse_number(const opt_def_t *o, const char *value,
                            double *v)
{
    switch (o->type) {
    case OPT_U32:
    case OPT_SIZE:
        return parse_size(value, v);
    case OPT_MS:
        return parse_ms(value, v);
    case OPT_DOUBLE:
        return parse_double(value, v);
    default:
        return -1;
    }
}

/* Store v in the option's field: double, or an integer of its width. */
static void opt_store_number(server_config_t *cfg, const opt_def_t *o,
                             double v)
{
    char *field = (char *)cfg + o->offset;

    if (o->type == OPT_DOUBLE) {
        memcpy(field, &v, sizeof(v));
    } else if (o->size == sizeof(uint32_t)) {
        uint32_t u = (uint32_t)v;
        memcpy(field, &u, sizeof(u));
    } else {
        uint64_t u = (uint64_t)v;
        memcpy(field, &u, sizeof(u));
    }
}

/* A limit as the user would type it: sizes with the largest binary
 * unit that divides them exactly ("1M", "16T"), other numbers plain. */
static void limit_format(const opt_def_t *o, double v, char *buf,
                         size_t size)
{
    static const char units[] = "KMGT";
    uint64_t u = (uint64_t)v;
    int k = -1;

    if (o->type == OPT_DOUBLE) {
        snprintf(buf, size, "%.15g", v);
        return;
    }
    while (o->type == OPT_SIZE && k < 3 && u >= 1024 && u % 1024 == 0) {
        u /= 1024;
        k++;
    }
    if (k < 0)
        snprintf(buf, size, "%llu", (unsigned long long)u);
    else
        snprintf(buf, size, "%llu%c", (unsigned long long)u, units[k]);
}

/* "HOST:PORT" or "[V6]:PORT" with a decimal port 0..65535; the host is
 * resolved only when the server binds. */
static int config_check_listen(const char *value, const char *source,
                               dadc_error_t *err)
{
    const char *colon = strrchr(value, ':');
    const char *p;
    unsigned long port = 0;

    if (colon == NULL || colon == value || colon[1] == '\0')
        return dadc_error_set(err, DADC_ERANGE, "%s: listen: '%s' is not "
                              "HOST:PORT", source, value);
    for (p = colon + 1; *p != '\0'; p++) {
        if (!isdigit((unsigned char)*p) || p - colon > 5)
            return dadc_error_set(err, DADC_ERANGE, "%s: listen: port "
                                  "'%s' is not a number 0..65535",
                                  source, colon + 1);
        port = port * 10 + (unsigned long)(*p - '0');
    }
    if (port > 65535)
        return dadc_error_set(err, DADC_ERANGE, "%s: listen: port %lu is "
                              "outside 0..65535", source, port);
    return 0;
}

int config_set(server_config_t *cfg, const char *key, const char *value,
               const char *source, dadc_error_t *err)
{
    const opt_def_t *o = opt_find(key);
    log_level_t level;
    double v;

    if (o == NULL)
        return dadc_error_set(err, DADC_ERANGE, "%s: unknown setting '%s'",
                              source, key);
    if (o->type == OPT_STR || o->type == OPT_LEVEL) {
        if (o->type == OPT_LEVEL && log_level_parse(value, &level) != 0)
            return dadc_error_set(err, DADC_ERANGE,
                                  "%s: %s: '%s' is not error, warning, "
                                  "info or debug", source, o->key, value);
        if (strlen(value) >= o->size)
            return dadc_error_set(err, DADC_ERANGE, "%s: %s: too long",
                                  source, o->key);
        if (strcmp(o->key, "listen") == 0 &&
            config_check_listen(value, source, err) != 0)
            return DADC_ERANGE;
        strcpy((char *)cfg + o->offset, value);
        return 0;
    }

    if (opt_parse_number(o, value, &v) != 0)
        return dadc_error_set(err, DADC_ERANGE, "%s: %s: '%s' is not a "
                              "valid %s", source, o->key, value,
                              o->type == OPT_MS ? "duration" : "number");
    if (o->type == OPT_MS && (v < o->min || v > o->max))
        return dadc_error_set(err, DADC_ERANGE, "%s: %s: %s is outside "
                              "%.15g..%.15g seconds", source, o->key, value,
                              o->min / 1000, o->max / 1000);
    if (v < o->min || v > o->max) {
        char lo[32], hi[32];

        limit_format(o, o->min, lo, sizeof(lo));
        limit_format(o, o->max, hi, sizeof(hi));
        return dadc_error_set(err, DADC_ERANGE, "%s: %s: %s is outside "
                              "%s..%s", source, o->key, value, lo, hi);
    }
    opt_store_number(cfg, o, v);
    return 0;
}

static char *trim(char *s)
{
    char *end;

    while (isspace((unsigned char)*s))
        s++;
    end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1]))
        *--end = '\0';
    if (end - s >= 2 && s[0] == '"' && end[-1] == '"') {
        end[-1] = '\0';
        s++;
    }
    return s;
}

/* One line of a config file: blank, a comment, or key = value. */
static int config_file_line(server_config_t *cfg, char *line,
                            const char *where, dadc_error_t *err)
{
    char *hash = strchr(line, '#');
    char *eq, *key;

    if (hash != NULL)
        *hash = '\0';
    key = trim(line);
    if (*key == '\0')
        return 0;
    eq = strchr(key, '=');
    if (eq == NULL)
        return dadc_error_set(err, DADC_EFORMAT, "%s: expected 'key = "
                              "value'", where);
    *eq = '\0';
    return config_set(cfg, trim(key), trim(eq + 1), where, err);
}

int config_load_file(server_config_t *cfg, const char *path,
                     dadc_error_t *err)
{
    char line[2048], where[CONFIG_PATH_MAX + 32];
    FILE *f = fopen(path, "r");
    int lineno = 0, rc = 0;

    if (f == NULL)
        return dadc_error_set(err, -errno, "%s: %s", path, strerror(errno));
    while (rc == 0 && fgets(line, sizeof(line), f) != NULL) {
        lineno++;
        snprintf(where, sizeof(where), "%s:%d", path, lineno);
        if (strchr(line, '\n') == NULL && !feof(f)) {
            rc = dadc_error_set(err, DADC_EFORMAT, "%s: line too long",
                                where);
            break;
        }
        rc = config_file_line(cfg, line, where, err);
    }
    if (rc == 0 && ferror(f))
        rc = dadc_error_set(err, -EIO, "%s: read error", path);
    fclose(f);
    return rc;
}

/* DADC_<KEY> for every option. */
static int config_load_env(server_config_t *cfg, dadc_error_t *err)
{
    char name[80];

    for (size_t k = 0; k < NOPTS; k++) {
        const char *value;
        size_t i;

        snprintf(name, sizeof(name), "DADC_%s", opts[k].key);
        for (i = 5; name[i] != '\0'; i++)
            name[i] = (char)toupper((unsigned char)name[i]);
        value = getenv(name);
        if (value != NULL && value[0] != '\0') {
            int rc = config_set(cfg, opts[k].key, value, name, err);
            if (rc != 0)
                return rc;
        }
    }
    return 0;
}

/* An option's value in cfg as text, in the units it is set in. */
static void opt_format(const server_config_t *cfg, const opt_def_t *o,
                       char *buf, size_t size)
{
    const char *field = (const char *)cfg + o->offset;
    uint64_t u = 0;
    double d;

    switch (o->type) {
    case OPT_STR:
    case OPT_LEVEL:
        snprintf(buf, size, "%s", field);
        return;
    case OPT_DOUBLE:
        memcpy(&d, field, sizeof(d));
        snprintf(buf, size, "%g", d);
        return;
    default:
        break;
    }
    if (o->size == sizeof(uint32_t)) {
        uint32_t v;
        memcpy(&v, field, sizeof(v));
        u = v;
    } else {
        memcpy(&u, field, sizeof(u));
    }
    if (o->type == OPT_MS)
        snprintf(buf, size, "%g", (double)u / 1000.0);
    else
        snprintf(buf, size, "%llu", (unsigned long long)u);
}

/* "--data-dir" for "data_dir". */
static void opt_flag(const opt_def_t *o, char *buf, size_t size)
{
    snprintf(buf, size, "--%s", o->key);
    for (char *p = buf; *p != '\0'; p++)
        *p = *p == '_' ? '-' : *p;
}

void config_print(const server_config_t *cfg)
{
    char value[CONFIG_PATH_MAX];

    for (size_t k = 0; k < NOPTS; k++) {
        opt_format(cfg, &opts[k], value, sizeof(value));
        printf("%s = %s\n", opts[k].key, value);
    }
}

void config_usage(void)
{
    server_config_t d;
    char flag[48], value[CONFIG_PATH_MAX];

    config_defaults(&d);
    printf("usage: dadc-server [--config FILE] [--data-dir DIR]\n"
           "         [--listen HOST:PORT] [--mnist DIR] [--KEY VALUE]...\n"
           "\nThe DADC server: serves predictions, stores flagged "
           "examples, retrains\nthe model in rounds and keeps every "
           "version.\n\nSettings come from (later wins) the defaults, "
           "the config file (`key =\nvalue` lines), the environment "
           "(DADC_<KEY>) and the command line.\n"
           "Sizes take K/KiB, M/MiB, G/GiB or T/TiB; durations are "
           "seconds or end\nin \"ms\".\n\n");
    printf("  --config FILE\n      settings file (also DADC_CONFIG)\n");
    for (size_t k = 0; k < NOPTS; k++) {
        opt_flag(&opts[k], flag, sizeof(flag));
        opt_format(&d, &opts[k], value, sizeof(value));
        printf("  %s%s\n      %s", flag,
               strcmp(opts[k].key, "mnist_dir") == 0 ? ", --mnist" : "",
               opts[k].help);
        if (value[0] != '\0' && strcmp(value, "0") != 0)
            printf(" [%s]", value);
        printf("\n");
    }
    printf("  --print-config\n      print the settings in effect and "
           "exit\n  --help, --version\n\n"
           "The bound address is logged (\"listening on HOST:PORT\"); "
           "with --port-file\nthe port is written once the server "
           "answers Predict.\n\n"
           "Exit status: 0 after a clean shutdown (SIGINT/SIGTERM), "
           "1 when the server\ncannot start or fails while running, "
           "2 on a usage error.\n");
}

/* The option name of argv[i] ("--key" or "--key=value") and its value. */
static int config_arg(int argc, char **argv, int *i, char *key,
                      size_t key_size, const char **value,
                      dadc_error_t *err)
{
    const char *arg = argv[*i];
    const char *eq;
    size_t len;

    if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0')
        return dadc_error_set(err, DADC_ERANGE, "unexpected argument '%s'",
                              arg);
    arg += 2;
    eq = strchr(arg, '=');
    len = eq != NULL ? (size_t)(eq - arg) : strlen(arg);
    if (len >= key_size)
        return dadc_error_set(err, DADC_ERANGE, "unknown option '--%s'",
                              arg);
    memcpy(key, arg, len);
    key[len] = '\0';
    if (eq != NULL) {
        *value = eq + 1;
    } else if (*i + 1 < argc) {
        *value = argv[++*i];
    } else {
        return dadc_error_set(err, DADC_ERANGE, "option '--%s' needs a "
                              "value", key);
    }
    return 0;
}

/* First pass over argv: --help, --version and --config. */
static int config_scan_args(int argc, char **argv, const char **config,
                            dadc_error_t *err)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--print-config") == 0)
            continue;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            config_usage();
            return 1;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("dadc-server %s\n", DADC_VERSION);
            return 1;
        }
        if (strcmp(argv[i], "--config") == 0) {
            if (i + 1 >= argc)
                return dadc_error_set(err, DADC_ERANGE,
                                      "option '--config' needs a value");
            *config = argv[++i];
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            *config = argv[i] + 9;
        }
    }
    return 0;
}

/* Second pass over argv: every other option. */
static int config_apply_args(server_config_t *cfg, int argc, char **argv,
                             dadc_error_t *err)
{
    char key[64], where[80];
    const char *value = NULL;
    int rc;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--print-config") == 0)
            continue;
        rc = config_arg(argc, argv, &i, key, sizeof(key), &value, err);
        if (rc != 0)
            return rc;
        if (strcmp(key, "config") == 0)
            continue;
        if (strcmp(key, "mnist") == 0)
            strcpy(key, "mnist_dir");
        snprintf(where, sizeof(where), "--%s", key);
        if (opt_find(key) == NULL)
            return dadc_error_set(err, DADC_ERANGE, "unknown option "
                                  "'--%s'", key);
        rc = config_set(cfg, key, value, where, err);
        if (rc != 0)
            return rc;
    }
    return 0;
}

int config_load(server_config_t *cfg, int argc, char **argv,
                dadc_error_t *err)
{
    const char *config = getenv("DADC_CONFIG");
    int rc;

    config_defaults(cfg);
    if (config != NULL && config[0] == '\0')
        config = NULL;
    rc = config_scan_args(argc, argv, &config, err);
    if (rc != 0)
        return rc;

    if (config != NULL) {
        rc = config_load_file(cfg, config, err);
        if (rc != 0)
            return rc;
    }
    rc = config_load_env(cfg, err);
    if (rc != 0)
        return rc;
    rc = config_apply_args(cfg, argc, argv, err);
    if (rc != 0)
        return rc;

    if (cfg->mnist_dir[0] == '\0' &&
        snprintf(cfg->mnist_dir, sizeof(cfg->mnist_dir), "%s/mnist",
                 cfg->data_dir) >= (int)sizeof(cfg->mnist_dir))
        return dadc_error_set(err, DADC_ERANGE, "data-dir: too long");
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--print-config") == 0) {
            config_print(cfg);
            return 1;
        }
    }
    return 0;
}
