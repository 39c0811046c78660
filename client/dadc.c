/*
 * dadc: the command-line client of the DADC server, for scripts and
 * operators. This file holds the option table, the command table, the
 * parsing and the connection; the commands are in dadc_cmds.c.
 */
#include "dadc_cli.h"

#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DADC_CLI_VERSION "0.1.0"

/* Which commands an option applies to (bit per command). */
enum {
    CMD_PREDICT = 1 << 0,
    CMD_FLAG = 1 << 1,
    CMD_STATS = 1 << 2,
    CMD_MODELS = 1 << 3,
    CMD_MODEL = 1 << 4,
    CMD_TRAIN = 1 << 5,
    CMD_ROLLBACK = 1 << 6,
    CMD_EXPORT = 1 << 7,
    CMD_WATCH = 1 << 8,
    CMD_ALL = 0x1ff,
};

enum {
    OPT_SERVER = 's',
    OPT_NAME = 'n',
    OPT_JSON = 'j',
    OPT_TIMEOUT = 't',
    OPT_LABEL = 'l',
    OPT_OUTPUT = 'o',
    OPT_FORMAT = 'f',
    OPT_MODEL = 'm',
    OPT_COUNT = 'c',
    OPT_QUIET = 'q',
    OPT_HELP = 'h',
    OPT_VERSION = 'V',
    OPT_IDX = 256,
    OPT_LABELS,
};

/* The one table of options. */
typedef struct cli_option {
    const char *name;
    int key;
    const char *arg;       /* NULL: takes no argument */
    unsigned cmds;
    const char *help;
} cli_option_t;

static const cli_option_t cli_options[] = {
    {"server", OPT_SERVER, "HOST:PORT", CMD_ALL,
     "server (default $DADC_SERVER, else 127.0.0.1:7070)"},
    {"name", OPT_NAME, "NAME", CMD_ALL,
     "annotator name sent in Hello (default $DADC_NAME)"},
    {"json", OPT_JSON, NULL, CMD_ALL, "print JSON instead of text"},
    {"timeout", OPT_TIMEOUT, "SECONDS", CMD_ALL,
     "per-request timeout (default 30)"},
    {"idx", OPT_IDX, "FILE", CMD_PREDICT | CMD_FLAG,
     "28x28 images from an IDX file, not image files"},
    {"labels", OPT_LABELS, "FILE", CMD_FLAG,
     "true labels for --idx (an IDX label file)"},
    {"label", OPT_LABEL, "N", CMD_FLAG, "true label (0-9) of the FILEs"},
    {"model", OPT_MODEL, "V", CMD_PREDICT,
     "predict with model version V (default: current)"},
    {"output", OPT_OUTPUT, "FILE", CMD_MODEL, "where to write the model"},
    {"format", OPT_FORMAT, "idx|png", CMD_EXPORT,
     "export format (default idx)"},
    {"count", OPT_COUNT, "N", CMD_WATCH, "exit after N events"},
    {"quiet", OPT_QUIET, NULL, CMD_FLAG | CMD_EXPORT,
     "no progress bar"},
    {"help", OPT_HELP, NULL, CMD_ALL, "show this help"},
    {"version", OPT_VERSION, NULL, CMD_ALL, "show the version"},
};

#define N_OPTIONS (sizeof(cli_options) / sizeof(cli_options[0]))

/* The commands. */
typedef struct cli_command {
    const char *name;
    unsigned bit;
    int (*run)(cli_t *cli);
    const char *usage;
    const char *help;
} cli_command_t;

static const cli_command_t cli_commands[] = {
    {"predict", CMD_PREDICT, cli_cmd_predict,
     "predict [--model V] FILE... | predict --idx FILE",
     "the model's digit and probabilities for PNG/PGM drawings"},
    {"flag", CMD_FLAG, cli_cmd_flag,
     "flag --label N FILE... | flag --idx IMAGES --labels LABELS",
     "submit drawings with their true label (batch with --idx)"},
    {"stats", CMD_STATS, cli_cmd_stats, "stats",
     "examples, fooled counts and error rates, overall and per round"},
    {"models", CMD_MODELS, cli_cmd_models, "models",
     "every model version with its figures"},
    {"model", CMD_MODEL, cli_cmd_model, "model get V -o FILE",
     "download version V (0: current) as safetensors"},
    {"train", CMD_TRAIN, cli_cmd_train, "train", "start a round now"},
    {"rollback", CMD_ROLLBACK, cli_cmd_rollback, "rollback V",
     "make version V current"},
    {"export", CMD_EXPORT, cli_cmd_export, "export [--format idx|png] DIR",
     "write every stored example into DIR"},
    {"watch", CMD_WATCH, cli_cmd_watch, "watch [--count N]",
     "print the server's events (rounds, promotions, rollbacks)"},
};

#define N_COMMANDS (sizeof(cli_commands) / sizeof(cli_commands[0]))

void cli_error(const char *fmt, ...)
{
    va_list ap;

    fputs("dadc: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int cli_usage_error(const char *fmt, ...)
{
    va_list ap;

    fputs("dadc: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\ntry 'dadc --help'\n", stderr);
    return CLI_EXIT_USAGE;
}

long cli_parse_uint(const char *s, long max)
{
    char *end;
    long v;

    if (s == NULL || s[0] < '0' || s[0] > '9')
        return -1;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v > max)
        return -1;
    return v;
}

static void cli_help(void)
{
    size_t i;

    printf("usage: dadc [OPTIONS] COMMAND [ARGS]\n\n"
           "A command-line client of the DADC server.\n\ncommands:\n");
    for (i = 0; i < N_COMMANDS; i++)
        printf("  %s\n      %s\n", cli_commands[i].usage,
               cli_commands[i].help);
    printf("\noptions:\n");
    for (i = 0; i < N_OPTIONS; i++) {
        const cli_option_t *o = &cli_options[i];
        char left[40];

        if (o->key < 256)
            snprintf(left, sizeof(left), "-%c, --%s%s%s", o->key, o->name,
                     o->arg ? " " : "", o->arg ? o->arg : "");
        else
            snprintf(left, sizeof(left), "    --%s%s%s", o->name,
                     o->arg ? " " : "", o->arg ? o->arg : "");
        printf("  %-26s %s\n", left, o->help);
    }
    printf("\nexit codes:\n"
           "  0  success\n"
           "  1  the server answered with an error (its message on "
           "stderr)\n"
           "  2  usage error\n"
           "  3  could not connect, or the connection failed or timed "
           "out\n"
           "  4  an input file is missing or malformed\n"
           "  5  an output file could not be written (a closed "
           "stdout, as with\n"
           "     `| head`, exits 5 without a message)\n"
           "\nerrors go to stderr as plain text, also with --json.\n");
}

/* Build getopt_long's tables from the option table. */
static void cli_getopt_tables(struct option *longs, char *shorts)
{
    size_t i, k = 0;

    shorts[k++] = '+';
    for (i = 0; i < N_OPTIONS; i++) {
        const cli_option_t *o = &cli_options[i];

        longs[i] = (struct option){o->name, o->arg ? required_argument
                                                   : no_argument,
                                   NULL, o->key};
        if (o->key < 256) {
            shorts[k++] = (char)o->key;
            if (o->arg)
                shorts[k++] = ':';
        }
    }
    longs[N_OPTIONS] = (struct option){NULL, 0, NULL, 0};
    shorts[k] = '\0';
}

static const cli_option_t *cli_option_find(int key)
{
    size_t i;

    for (i = 0; i < N_OPTIONS; i++)
        if (cli_options[i].key == key)
            return &cli_options[i];
    return NULL;
}

/* Store one option's value. Returns 0 or an exit code. */
static int cli_option_set(cli_t *cli, int key, const char *arg)
{
    long v;

    switch (key) {
    case OPT_SERVER: cli->server = arg; break;
    case OPT_NAME: cli->name = arg; break;
    case OPT_JSON: cli->json = true; break;
    case OPT_QUIET: cli->quiet = true; break;
    case OPT_IDX: cli->idx = arg; break;
    case OPT_LABELS: cli->labels = arg; break;
    case OPT_OUTPUT: cli->output = arg; break;
    case OPT_FORMAT: cli->format = arg; break;
    case OPT_TIMEOUT:
        v = cli_parse_uint(arg, 86400);
        if (v <= 0)
            return cli_usage_error("--timeout wants 1..86400 seconds, "
                                   "not '%s'", arg);
        cli->timeout_ms = (int)(v * 1000);
        break;
    case OPT_LABEL:
        v = cli_parse_uint(arg, 9);
        if (v < 0)
            return cli_usage_error("--label wants a digit 0-9, not '%s'",
                                   arg);
        cli->label = (int)v;
        break;
    case OPT_MODEL:
        v = cli_parse_uint(arg, UINT32_MAX);
        if (v < 0)
            return cli_usage_error("--model wants a version number, not "
                                   "'%s'", arg);
        cli->model = (uint32_t)v;
        break;
    case OPT_COUNT:
        v = cli_parse_uint(arg, 1000000000L);
        if (v <= 0)
            return cli_usage_error("--count wants a positive number, not "
                                   "'%s'", arg);
        cli->count = v;
        break;
    }
    return 0;
}

static const cli_command_t *cli_command_find(const char *name)
{
    size_t i;

    for (i = 0; i < N_COMMANDS; i++)
        if (strcmp(cli_commands[i].name, name) == 0)
            return &cli_commands[i];
    return NULL;
}

/*
 * Parse options (anywhere on the line) and find the command. Returns 0,
 * or an exit code (-1 for "done, exit 0": --help / --version).
 */
static int cli_parse(cli_t *cli, int argc, char **argv,
                     const cli_command_t **cmd, unsigned *seen)
{
    struct option longs[N_OPTIONS + 1];
    char shorts[2 * N_OPTIONS + 2];
    int key, rc;

    cli_getopt_tables(longs, shorts);
    *cmd = NULL;
    cli->argv = calloc((size_t)argc + 1, sizeof(*cli->argv));
    if (cli->argv == NULL) {
        cli_error("out of memory");
        return CLI_EXIT_OUTPUT;
    }
    opterr = 0;
    while (optind < argc) {
        key = getopt_long(argc, argv, shorts, longs, NULL);
        if (key == -1) {
            /* an operand: the command, or one of its operands */
            if (*cmd == NULL) {
                *cmd = cli_command_find(argv[optind]);
                if (*cmd == NULL)
                    return cli_usage_error("unknown command '%s'",
                                           argv[optind]);
            } else {
                cli->argv[cli->argc++] = argv[optind];
            }
            optind++;
            continue;
        }
        if (key == '?' || key == ':')
            return cli_usage_error("bad option '%s'", argv[optind - 1]);
        if (key == OPT_HELP || key == OPT_VERSION) {
            if (key == OPT_HELP)
                cli_help();
            else
                printf("dadc %s\n", DADC_CLI_VERSION);
            return -1;
        }
        rc = cli_option_set(cli, key, optarg);
        if (rc != 0)
            return rc;
        *seen |= 1u << (cli_option_find(key) - cli_options);
    }
    return 0;
}

/* Refuse options that do not apply to the command. */
static int cli_check_options(const cli_command_t *cmd, unsigned seen)
{
    size_t i;

    for (i = 0; i < N_OPTIONS; i++)
        if ((seen & (1u << i)) && !(cli_options[i].cmds & cmd->bit))
            return cli_usage_error("--%s does not apply to '%s'",
                                   cli_options[i].name, cmd->name);
    return 0;
}

int cli_connect(cli_t *cli)
{
    dadc_error_t err;
    const char *name = cli->name;
    int rc;

    dadc_error_clear(&err);
    rc = dadc_client_connect(&cli->client, cli->server, cli->timeout_ms,
                             &err);
    if (rc == DADC_ERANGE)
        return cli_usage_error("%s", dadc_error_message(&err));
    if (rc != 0) {
        cli_error("%s", dadc_error_message(&err));
        return CLI_EXIT_CONNECT;
    }
    dadc_client_set_timeout(cli->client, cli->timeout_ms);
    if (name == NULL)
        name = getenv("DADC_NAME");
    rc = dadc_client_hello(cli->client, "dadc/" DADC_CLI_VERSION, name,
                           NULL);
    if (rc != 0)
        return cli_client_error(cli, rc);
    return 0;
}

int cli_client_error(cli_t *cli, int rc)
{
    char *msg = dadc_text_escape(dadc_client_last_error(cli->client));

    cli_error("%s", msg ? msg : "out of memory");
    free(msg);
    switch (rc) {
    case DADC_ESTATUS:
        return CLI_EXIT_SERVER;
    case DADC_ERANGE:
    case DADC_ELIMIT:
        return CLI_EXIT_INPUT;
    default:
        return CLI_EXIT_CONNECT;
    }
}

/* Whether stdout is a pipe or socket whose reader has gone away. */
static bool cli_stdout_closed(void)
{
    struct pollfd p = {STDOUT_FILENO, POLLOUT, 0};

    return poll(&p, 1, 0) == 1 && (p.revents & POLLERR) != 0;
}

int cli_output_check(void)
{
    int failed = fflush(stdout) != 0, saved = errno;

    if (!failed && !ferror(stdout))
        return 0;
    /* A reader that went away (`| head`) is no error worth a message. */
    if (failed && saved != EPIPE)
        cli_error("cannot write the output: %s", strerror(saved));
    else if (!failed && !cli_stdout_closed())
        cli_error("cannot write the output");
    return CLI_EXIT_OUTPUT;
}

void cli_json_print(cJSON *json)
{
    char *s = cJSON_PrintUnformatted(json);

    if (s != NULL) {
        fputs(s, stdout);
        fputc('\n', stdout);
        free(s);
    }
    cJSON_Delete(json);
}

int main(int argc, char **argv)
{
    cli_t cli = {0};
    const cli_command_t *cmd;
    unsigned seen = 0;
    int rc;

    signal(SIGPIPE, SIG_IGN);
    cli.label = -1;
    cli.timeout_ms = 30000;
    rc = cli_parse(&cli, argc, argv, &cmd, &seen);
    if (rc == 0 && cmd == NULL)
        rc = cli_usage_error("no command given");
    if (rc == 0)
        rc = cli_check_options(cmd, seen);
    if (rc == 0) {
        if (cli.server == NULL)
            cli.server = dadc_client_default_server();
        rc = cmd->run(&cli);
    }
    dadc_client_close(cli.client);
    free(cli.argv);
    if (rc < 0)
        return CLI_EXIT_OK;
    if (rc == 0)
        rc = cli_output_check();
    return rc;
}
