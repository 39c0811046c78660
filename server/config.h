/*
 * dadc-server's settings: one table of options, read from (later ones
 * win)
 *
 *   1. built-in defaults,
 *   2. the config file (--config FILE, or DADC_CONFIG), lines of
 *      `key = value`, '#' starts a comment,
 *   3. the environment, DADC_<KEY> (e.g. DADC_LISTEN, DADC_DATA_DIR),
 *   4. the command line, --key VALUE or --key=VALUE.
 *
 * Keys are spelled with '-' or '_' interchangeably (data-dir, data_dir).
 * Sizes take an optional K/KiB or M/MiB suffix; durations are seconds and
 * may be fractional (0.5) or carry an "ms" suffix.
 */
#ifndef DADC_SERVER_CONFIG_H
#define DADC_SERVER_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "dadc_error.h"

#define CONFIG_PATH_MAX 1024

typedef struct server_config {
    /* Where things are. */
    char data_dir[CONFIG_PATH_MAX];
    char listen[256];              /* HOST:PORT, [V6]:PORT; port 0 picks */
    char mnist_dir[CONFIG_PATH_MAX]; /* empty: <data_dir>/mnist */
    char init_model[CONFIG_PATH_MAX]; /* safetensors for an empty store */
    char port_file[CONFIG_PATH_MAX];  /* the bound port is written here */
    char log_level[16];

    /* Rounds. */
    uint32_t round_threshold;      /* fooling examples that start a round */
    double round_margin;           /* accuracy points a candidate may lose */
    uint32_t heldout_percent;      /* adversarial examples held out */
    uint32_t replay_size;          /* MNIST images replayed per round */
    uint32_t round_epochs;         /* fine-tuning epochs per round */
    double round_lr;               /* fine-tuning learning rate */
    uint32_t base_epochs;          /* base training; 0: engine default */
    uint32_t base_images;          /* MNIST images for it; 0: all */

    /* Limits. */
    uint32_t max_frame;            /* bytes of one frame after Hello */
    uint32_t max_frame_pre_hello;  /* bytes of one frame before Hello */
    uint32_t max_inflight;         /* requests in flight per connection */
    uint64_t max_pending_out;      /* unread answer bytes before a drop */
    uint64_t max_pending_in;       /* image bytes of queued Predict/Flag
                                    * requests, all connections, before
                                    * reading pauses everywhere */
    uint64_t frame_timeout_ms;     /* a started frame must complete */
    uint64_t idle_timeout_ms;      /* silence before a connection closes */
    uint32_t max_connections;
    uint32_t max_predict_batch;    /* images run through one nn_predict */
    uint64_t map_size;             /* initial LMDB map size */
} server_config_t;

/* Fill cfg with the built-in defaults. */
void config_defaults(server_config_t *cfg);

/*
 * Read the config file, the environment and the command line into cfg
 * (which config_load first sets to the defaults), in that order of
 * precedence, lowest first. Returns 0; 1 when --help, --version or
 * --print-config was asked for (the text is already on stdout); or
 * DADC_ERANGE /
 * DADC_EFORMAT / -errno with a message naming the source (file and line,
 * variable or option) in err.
 */
int config_load(server_config_t *cfg, int argc, char **argv,
                dadc_error_t *err);

/* Apply one key = value pair (key spelled with '-' or '_'); `source`
 * names where it came from, for messages. Returns 0 or DADC_ERANGE. */
int config_set(server_config_t *cfg, const char *key, const char *value,
               const char *source, dadc_error_t *err);

/* Read a config file into cfg. Returns 0 or a negative code. */
int config_load_file(server_config_t *cfg, const char *path,
                     dadc_error_t *err);

/* Print the settings in effect, one `key = value` line each, in the
 * config file's syntax, to stdout. */
void config_print(const server_config_t *cfg);

/* Print --help to stdout. */
void config_usage(void);

#endif
