#include "dadc_error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *dadc_strerror(int code)
{
    switch (code) {
    case DADC_OK:
        return "success";
    case DADC_EFORMAT:
        return "malformed input";
    case DADC_ETRUNC:
        return "input is truncated";
    case DADC_ESHAPE:
        return "wrong shape";
    case DADC_EDTYPE:
        return "unsupported element type";
    case DADC_ENOTFOUND:
        return "not found";
    case DADC_EEMPTY:
        return "nothing to work on";
    case DADC_ERANGE:
        return "value out of range";
    case DADC_ELIMIT:
        return "size limit exceeded";
    case DADC_ESTORE:
        return "store failure";
    case DADC_EPROTO:
        return "protocol violation";
    case DADC_ESTATUS:
        return "server reported an error";
    case DADC_ECANCELED:
        return "cancelled";
    case DADC_EBUSY:
        return "busy";
    case DADC_ETIMEDOUT:
        return "timed out";
    case DADC_ECLOSED:
        return "connection closed";
    }
    if (code < 0 && code > -4096)
        return strerror(-code);
    return "unknown error";
}

int dadc_error_set(dadc_error_t *err, int code, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL)
        return code;
    err->code = code;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    return code;
}

void dadc_error_clear(dadc_error_t *err)
{
    if (err == NULL)
        return;
    err->code = 0;
    err->msg[0] = '\0';
}

const char *dadc_error_message(const dadc_error_t *err)
{
    if (err == NULL)
        return "unknown error";
    if (err->msg[0] != '\0')
        return err->msg;
    return dadc_strerror(err->code);
}
