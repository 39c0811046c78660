/*
 * What the two halves of the client library share: the transport
 * (dadc_client.c) and the convenience calls (dadc_client_calls.c).
 * Not part of the public API.
 */
#ifndef DADC_CLIENT_INTERNAL_H
#define DADC_CLIENT_INTERNAL_H

#include "dadc_client.h"

/* Batch window, images per batch frame and call timeout as set. */
unsigned dadc_client_window_get(const dadc_client_t *c);
unsigned dadc_client_batch_images_get(const dadc_client_t *c);
int dadc_client_timeout_get(const dadc_client_t *c);

/* Store the server's Hello answer (marks Hello as said). */
void dadc_client_info_set(dadc_client_t *c, const dadc_server_info_t *info);

/* Record a printf-style message as the last error; returns code. */
int dadc_client_fail(dadc_client_t *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
