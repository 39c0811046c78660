/*
 * The server's log: one line per event on stderr,
 *
 *   2026-12-03T16:05:03.123Z info  server: listening on 127.0.0.1:7070
 *
 * with a UTC timestamp, the level, the component or connection the event
 * belongs to, and the message (the logger adds the newline). Lines are
 * written with one write(2) each, so threads may log at once without
 * interleaving.
 *
 * Levels: error (our own failures that stop something), warning (our own
 * failures we recover from), info (lifecycle: listening, model loaded,
 * rounds and their figures, promotions, rollbacks), debug (connections
 * coming and going, mistakes a peer makes). Nothing is logged per request
 * at info.
 */
#ifndef DADC_SERVER_LOG_H
#define DADC_SERVER_LOG_H

#include <stddef.h>
#include <stdint.h>

typedef enum log_level {
    LOG_ERROR = 0,
    LOG_WARNING = 1,
    LOG_INFO = 2,
    LOG_DEBUG = 3,
} log_level_t;

/* The most verbose level written; LOG_INFO until log_level_set. */
extern volatile int log_level_current;

/*
 * Log one event. The level is compared before the arguments are
 * evaluated, so a debug line costs nothing at the default level.
 * `who` names the component ("server", "round", "conn 7 1.2.3.4:5").
 */
#define LOG(level, who, ...)                                               \
    do {                                                                   \
        if ((int)(level) <= log_level_current)                             \
            log_write((level), (who), __VA_ARGS__);                        \
    } while (0)

/* Write one line unconditionally; use LOG instead. */
void log_write(log_level_t level, const char *who, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

void log_level_set(log_level_t level);

/*
 * Parse "error", "warning" (or "warn"), "info" or "debug" into *out.
 * Returns 0, or DADC_ERANGE for any other word.
 */
int log_level_parse(const char *word, log_level_t *out);

/* The name of a level ("info"). */
const char *log_level_name(log_level_t level);

/*
 * A short masked sample of bytes that came from the wire, safe to log:
 * at most 8 bytes as hex, printable ASCII shown after them with anything
 * else as '.', and the total length, e.g. `47 45 54 20 "GET " (4 bytes)`.
 * Writes into out (always NUL-terminated) and returns out.
 */
char *log_sample(const uint8_t *bytes, size_t len, char *out,
                 size_t out_size);

/*
 * A peer-given string made safe to log: printable ASCII kept, anything
 * else (control bytes, escapes, UTF-8) shown as '?', cut to fit out
 * (always NUL-terminated). in may be NULL. Returns out.
 */
char *log_clean(const char *in, char *out, size_t out_size);

#endif
