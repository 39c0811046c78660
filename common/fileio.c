#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Read until len bytes or end of file; returns bytes read or -errno. */
static ssize_t fileio_read_full(int fd, uint8_t *buf, size_t len)
{
    size_t done = 0;

    while (done < len) {
        ssize_t n = read(fd, buf + done, len - done);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            break;
        done += (size_t)n;
    }
    return (ssize_t)done;
}

/*
 * Read everything left in fd, growing the buffer as needed. Used for
 * pipes and as the tail of a regular file (which may grow while read).
 */
static int fileio_read_stream(int fd, const char *path, size_t max,
                              uint8_t **buf, size_t *len, size_t cap,
                              dadc_error_t *err)
{
    for (;;) {
        ssize_t n;

        if (*len == cap) {
            size_t ncap = cap ? cap * 2 : 65536;
            uint8_t *nbuf;

            if (ncap > max + 1)
                ncap = max + 1;
            if (ncap <= cap)
                return dadc_error_set(err, DADC_ELIMIT,
                                      "%s: file is larger than %zu bytes",
                                      path, max);
            nbuf = realloc(*buf, ncap);
            if (nbuf == NULL)
                return dadc_error_set(err, -ENOMEM, "%s: out of memory",
                                      path);
            *buf = nbuf;
            cap = ncap;
        }
        n = fileio_read_full(fd, *buf + *len, cap - *len);
        if (n < 0)
            return dadc_error_set(err, (int)n, "%s: %s", path,
                                  strerror((int)-n));
        *len += (size_t)n;
        if (*len > max)
            return dadc_error_set(err, DADC_ELIMIT,
                                  "%s: file is larger than %zu bytes",
                                  path, max);
        if (*len < cap)
            return 0;
    }
}

int dadc_file_read(const char *path, size_t max, uint8_t **buf,
                   size_t *len, dadc_error_t *err)
{
    struct stat st;
    size_t cap = 0;
    int fd, rc;

    *buf = NULL;
    *len = 0;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return dadc_error_set(err, -errno, "%s: %s", path, strerror(errno));
    if (fstat(fd, &st) < 0) {
        rc = dadc_error_set(err, -errno, "%s: %s", path, strerror(errno));
        goto fail_stat;
    }

    /* A regular file is sized up front; +1 so growth shows up as EOF
     * not reached and the stream path takes over. */
    if (S_ISREG(st.st_mode)) {
        if ((uintmax_t)st.st_size > max) {
            rc = dadc_error_set(err, DADC_ELIMIT,
                                "%s: file has %jd bytes, more than the "
                                "limit of %zu", path, (intmax_t)st.st_size,
                                max);
            goto fail_stat;
        }
        cap = (size_t)st.st_size + 1;
        *buf = malloc(cap);
        if (*buf == NULL) {
            rc = dadc_error_set(err, -ENOMEM, "%s: out of memory", path);
            goto fail_stat;
        }
    }
    rc = fileio_read_stream(fd, path, max, buf, len, cap, err);
    if (rc < 0)
        goto fail_read;
    close(fd);
    return 0;

fail_read:
    free(*buf);
    *buf = NULL;
    *len = 0;
fail_stat:
    close(fd);
    return rc;
}

static int fileio_write_parts(int fd, const dadc_file_part_t *parts,
                              int nparts)
{
    for (int i = 0; i < nparts; i++) {
        const uint8_t *p = parts[i].data;
        size_t left = parts[i].len;

        while (left > 0) {
            ssize_t n = write(fd, p, left);

            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0)
                return -errno;
            p += n;
            left -= (size_t)n;
        }
    }
    return 0;
}

/*
 * Flush the directory holding path, so that a rename into it survives a
 * crash. Best effort: some file systems refuse fsync on directories.
 */
static void fileio_dir_sync(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir;
    int fd;

    if (slash == NULL)
        dir = strdup(".");
    else
        dir = strndup(path, slash == path ? 1 : (size_t)(slash - path));
    if (dir == NULL)
        return;
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(dir);
}

int dadc_file_write_atomic(const char *path, const dadc_file_part_t *parts,
                           int nparts, dadc_error_t *err)
{
    size_t plen = strlen(path);
    char *tmp;
    int fd, rc;

    tmp = malloc(plen + 16);
    if (tmp == NULL)
        return dadc_error_set(err, -ENOMEM, "%s: out of memory", path);
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp.XXXXXX", 12);
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        rc = dadc_error_set(err, -errno, "%s: cannot create: %s", path,
                            strerror(errno));
        goto fail_create;
    }

    rc = fileio_write_parts(fd, parts, nparts);
    if (rc == 0 && fchmod(fd, 0644) < 0)
        rc = -errno;
    if (rc == 0 && fsync(fd) < 0)
        rc = -errno;
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    if (rc < 0) {
        dadc_error_set(err, rc, "%s: write failed: %s", path,
                       strerror(-rc));
        goto fail_write;
    }

    if (rename(tmp, path) < 0) {
        rc = dadc_error_set(err, -errno, "%s: cannot put in place: %s",
                            path, strerror(errno));
        goto fail_write;
    }
    fileio_dir_sync(path);
    free(tmp);
    return 0;

fail_write:
    unlink(tmp);
fail_create:
    free(tmp);
    return rc;
}
