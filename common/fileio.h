/*
 * Whole-file reads with a size limit, and writes that replace a file
 * atomically (temporary file in the same directory, fsync, rename), so a
 * reader never sees half a file and a failed write leaves the old one.
 */
#ifndef DADC_FILEIO_H
#define DADC_FILEIO_H

#include <stddef.h>
#include <stdint.h>

#include "dadc_error.h"

/*
 * Read the whole of path into a malloc'd buffer (*buf, *len; the caller
 * frees). Works on regular files and on pipes. Returns 0, -errno when the
 * file cannot be opened or read, or DADC_ELIMIT when it is longer than
 * max bytes (checked before allocating for regular files). Messages name
 * the file.
 */
int dadc_file_read(const char *path, size_t max, uint8_t **buf,
                   size_t *len, dadc_error_t *err);

/* One piece of a file to write. */
typedef struct dadc_file_part {
    const void *data;
    size_t len;
} dadc_file_part_t;

/*
 * Write the nparts pieces, in order, to a temporary file next to path,
 * flush it to disk and rename it over path (mode 0644). On failure the
 * temporary file is removed and path is untouched. Returns 0 or -errno.
 */
int dadc_file_write_atomic(const char *path, const dadc_file_part_t *parts,
                           int nparts, dadc_error_t *err);

#endif
