#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "dadc_error.h"

#define LOG_LINE_MAX 1024
#define LOG_SAMPLE_BYTES 8

volatile int log_level_current = LOG_INFO;

static const char *const level_names[] = {"error", "warning", "info",
                                          "debug"};

void log_level_set(log_level_t level)
{
    log_level_current = (int)level;
}

const char *log_level_name(log_level_t level)
{
    if ((int)level < 0 || (int)level > LOG_DEBUG)
        return "?";
    return level_names[level];
}

int log_level_parse(const char *word, log_level_t *out)
{
    for (int i = 0; i <= LOG_DEBUG; i++) {
        if (strcmp(word, level_names[i]) == 0) {
            *out = (log_level_t)i;
            return 0;
        }
    }
    if (strcmp(word, "warn") == 0) {
        *out = LOG_WARNING;
        return 0;
    }
    return DADC_ERANGE;
}

static size_t log_timestamp(char *buf, size_t size)
{
    struct timeval tv;
    struct tm tm;
    size_t n;

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    n = strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(buf + n, size - n, ".%03dZ",
                          (int)(tv.tv_usec / 1000));
    return n;
}

void log_write(log_level_t level, const char *who, const char *fmt, ...)
{
    char line[LOG_LINE_MAX];
    size_t n;
    int m;
    va_list ap;

    n = log_timestamp(line, sizeof(line));
    m = snprintf(line + n, sizeof(line) - n, " %-7s %s: ",
                 log_level_name(level), who);
    if (m > 0)
        n += (size_t)m;
    if (n >= sizeof(line) - 2)
        n = sizeof(line) - 2;

    va_start(ap, fmt);
    m = vsnprintf(line + n, sizeof(line) - 1 - n, fmt, ap);
    va_end(ap);
    if (m > 0)
        n += (size_t)m;
    if (n > sizeof(line) - 2)
        n = sizeof(line) - 2;

    /* One event, one line: a message never carries its own newlines. */
    for (size_t i = 0; i < n; i++) {
        if (line[i] == '\n' || line[i] == '\r')
            line[i] = ' ';
    }
    line[n++] = '\n';
    if (write(STDERR_FILENO, line, n) < 0) {
        /* nowhere left to report it */
    }
}

char *log_sample(const uint8_t *bytes, size_t len, char *out,
                 size_t out_size)
{
    size_t show = len < LOG_SAMPLE_BYTES ? len : LOG_SAMPLE_BYTES;
    size_t n = 0;

    out[0] = '\0';
    for (size_t i = 0; i < show && n + 4 < out_size; i++)
        n += (size_t)snprintf(out + n, out_size - n, "%02x ", bytes[i]);
    if (n + show + 3 < out_size) {
        out[n++] = '"';
        for (size_t i = 0; i < show; i++) {
            int c = bytes[i];
            out[n++] = (c >= 0x20 && c < 0x7f && c != '"') ? (char)c : '.';
        }
        out[n++] = '"';
        out[n] = '\0';
    }
    if (n < out_size)
        snprintf(out + n, out_size - n, " (%zu bytes)", len);
    return out;
}

char *log_clean(const char *in, char *out, size_t out_size)
{
    size_t n = 0;

    for (; in != NULL && in[n] != '\0' && n + 1 < out_size; n++) {
        unsigned char c = (unsigned char)in[n];
        out[n] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    out[n] = '\0';
    return out;
}
