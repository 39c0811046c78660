/*
 * Flags waiting to reach the server, kept in memory and in a small file
 * so that none is lost when the connection or the program goes away.
 *
 * The file is text: a header line "dadc-draw pending flags 1", then one
 * line per flag, oldest first: "flag LABEL HEX" where HEX is the 784
 * bytes of the 28x28 image as 1568 hex digits. Every change rewrites
 * the file through a temporary and rename(), so a crash leaves either
 * the old or the new list, never half of one. An empty list removes
 * the file.
 *
 * Not thread-safe: the caller holds its own lock.
 */
#ifndef DADC_DRAW_PENDING_H
#define DADC_DRAW_PENDING_H

#include <stddef.h>
#include <stdint.h>

#include "dadc_error.h"

#define PENDING_IMAGE_BYTES 784
#define PENDING_MAX 100000   /* more than this is refused */

typedef struct pending_flag {
    uint8_t image[PENDING_IMAGE_BYTES];
    uint8_t label;
} pending_flag_t;

typedef struct pending {
    pending_flag_t *items;
    int count;
    int cap;
    char *path;   /* NULL: memory only */
    int lock_fd;  /* holds PATH.lock while open; -1 when none */
} pending_t;

/*
 * Load the list kept at path (a missing file is an empty list). path may
 * be NULL for a list kept in memory only. While the list is open, an
 * exclusive lock on PATH.lock keeps a second program from using the same
 * file (each would overwrite the other's flags): DADC_EBUSY then. On a
 * malformed file returns DADC_EFORMAT with "path:line: what" in err and
 * leaves the file alone; other failures -errno or -ENOMEM. On error p
 * needs no pending_close.
 */
int pending_open(pending_t *p, const char *path, dadc_error_t *err);

/* Free the list (the file stays as it is). */
void pending_close(pending_t *p);

/*
 * Append a flag and save. On a save failure the flag stays in memory,
 * the code (-errno) comes back with a message, and the next save
 * retries.
 */
int pending_push(pending_t *p, const uint8_t image[PENDING_IMAGE_BYTES],
                 int label, dadc_error_t *err);

/* Drop the n oldest flags (they were acknowledged) and save. */
int pending_drop(pending_t *p, int n, dadc_error_t *err);

/* Write the list to its file now (through a temporary and rename). */
int pending_save(pending_t *p, dadc_error_t *err);

/*
 * The default file: $XDG_STATE_HOME/dadc-draw/pending, or
 * $HOME/.local/state/dadc-draw/pending. Writes into buf (n bytes).
 * Returns 0, or DADC_ENOTFOUND when neither variable is set, or
 * DADC_ELIMIT when the path does not fit.
 */
int pending_default_path(char *buf, size_t n);

#endif
