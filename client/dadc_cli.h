/*
 * The `dadc` command-line client: what its files share. dadc.c parses
 * the command line and runs a command; dadc_cmds.c holds the commands;
 * dadc_json.c turns protocol records into JSON.
 */
#ifndef DADC_CLI_H
#define DADC_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "dadc_client.h"

/* Exit codes (documented in --help and the README). */
enum cli_exit {
    CLI_EXIT_OK = 0,
    CLI_EXIT_SERVER = 1,    /* the server answered with an error */
    CLI_EXIT_USAGE = 2,     /* bad command line */
    CLI_EXIT_CONNECT = 3,   /* could not connect, or the connection failed */
    CLI_EXIT_INPUT = 4,     /* an input file is missing or malformed */
    CLI_EXIT_OUTPUT = 5,    /* an output file could not be written */
};

/* The parsed command line. */
typedef struct cli {
    const char *server;      /* --server, else $DADC_SERVER, else default */
    const char *name;        /* --name: the annotator */
    const char *idx;         /* --idx FILE */
    const char *labels;      /* --labels FILE */
    const char *output;      /* -o FILE */
    const char *format;      /* --format idx|png */
    int label;               /* --label N, -1 when not given */
    uint32_t model;          /* --model V, 0 for the current one */
    long count;              /* --count N for watch, 0 for no limit */
    int timeout_ms;          /* --timeout SECONDS */
    bool json;               /* --json */
    bool quiet;              /* --quiet: no progress bar */
    int argc;                /* operands after the command */
    char **argv;
    dadc_client_t *client;   /* once connected */
} cli_t;

/* Print "dadc: message" on stderr. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A usage error: the message, "try 'dadc --help'"; returns exit 2. */
int cli_usage_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/*
 * Connect to the server and say Hello with the annotator name. Prints
 * the problem and returns CLI_EXIT_CONNECT (or another exit code) on
 * failure, 0 on success.
 */
int cli_connect(cli_t *cli);

/* Print the client's last error and map rc to an exit code. */
int cli_client_error(cli_t *cli, int rc);

/*
 * Flush stdout: 0, or CLI_EXIT_OUTPUT when something written to it was
 * lost, with a message on stderr unless the reader has gone away
 * (EPIPE).
 */
int cli_output_check(void);

/* Print json on stdout as one line and free it. */
void cli_json_print(cJSON *json);

/* Parse a decimal version/count operand; -1 when it is not one. */
long cli_parse_uint(const char *s, long max);

/* Commands: each returns an exit code. */
int cli_cmd_predict(cli_t *cli);
int cli_cmd_flag(cli_t *cli);
int cli_cmd_stats(cli_t *cli);
int cli_cmd_models(cli_t *cli);
int cli_cmd_model(cli_t *cli);
int cli_cmd_train(cli_t *cli);
int cli_cmd_rollback(cli_t *cli);
int cli_cmd_export(cli_t *cli);
int cli_cmd_watch(cli_t *cli);

/* Protocol records as JSON (new objects the caller owns). */
cJSON *cli_json_model(const Dadc__ModelInfo *m);
cJSON *cli_json_round(const Dadc__RoundInfo *r);
cJSON *cli_json_stats(const Dadc__StatsResponse *s);
cJSON *cli_json_event(const Dadc__Event *e);
cJSON *cli_json_example(const Dadc__Example *e);
cJSON *cli_json_prediction(const dadc_prediction_t *p);

/* One line of text describing an event, into buf. */
void cli_event_text(const Dadc__Event *e, char *buf, size_t size);

#endif
