/*
 * Error codes shared by every library in the project.
 *
 * Library functions return 0 on success or a negative code: either one of
 * the DADC_E* values below or a negative errno passed through from the
 * system (-ENOMEM, -ENOENT, ...). The two ranges never overlap.
 *
 * Functions that can explain a failure in more detail than a code take a
 * dadc_error_t *err (which may be NULL) and fill it with the code and a
 * one-line message naming what was wrong, e.g.
 *   "train-images-idx3-ubyte: truncated: header says 60000 items of 784
 *    bytes, file has 1000 bytes of data".
 */
#ifndef DADC_ERROR_H
#define DADC_ERROR_H

#include <stddef.h>

enum dadc_error_code {
    DADC_OK = 0,
    DADC_EFORMAT = -1001,   /* input is malformed (bad magic, bad JSON, ...) */
    DADC_ETRUNC = -1002,    /* input ends before its header says it should */
    DADC_ESHAPE = -1003,    /* a tensor or image has the wrong shape */
    DADC_EDTYPE = -1004,    /* a tensor has an unsupported element type */
    DADC_ENOTFOUND = -1005, /* a named item (tensor, version, ...) is absent */
    DADC_EEMPTY = -1006,    /* nothing to work on (a drawing with no ink) */
    DADC_ERANGE = -1007,    /* a value is out of its allowed range */
    DADC_ELIMIT = -1008,    /* a size limit would be exceeded */
    DADC_ESTORE = -1009,    /* the LMDB store failed */
    DADC_EPROTO = -1010,    /* a peer broke the wire protocol */
    DADC_ESTATUS = -1011,   /* the server answered with a non-OK status */
    DADC_ECANCELED = -1012, /* the operation was cancelled */
    DADC_EBUSY = -1013,     /* the resource is busy (e.g. a round running) */
    DADC_ETIMEDOUT = -1014, /* a deadline passed */
    DADC_ECLOSED = -1015,   /* the connection was closed */
};

#define DADC_ERROR_MSG_MAX 256

typedef struct dadc_error {
    int code;
    char msg[DADC_ERROR_MSG_MAX];
} dadc_error_t;

/*
 * Return a static, human-readable description of code (a DADC_E* value or
 * a negative errno). Never returns NULL.
 */
const char *dadc_strerror(int code);

/*
 * Record code and a printf-style message in err (if err is not NULL) and
 * return code, so that callers can write
 *   return dadc_error_set(err, DADC_EFORMAT, "%s: bad magic", path);
 */
int dadc_error_set(dadc_error_t *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Reset err to "no error". err may be NULL.
 */
void dadc_error_clear(dadc_error_t *err);

/*
 * The message recorded in err, or dadc_strerror(err->code) when no message
 * was recorded. err may be NULL (gives "unknown error").
 */
const char *dadc_error_message(const dadc_error_t *err);

#endif
