#include "pending.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define PENDING_HEADER "dadc-draw pending flags 1"
#define PENDING_LINE_MAX (16 + 2 * PENDING_IMAGE_BYTES)

static int hex_value(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

static int items_reserve(pending_t *p)
{
    pending_flag_t *n;
    int cap;

    if (p->count < p->cap)
        return 0;
    if (p->count >= PENDING_MAX)
        return DADC_ELIMIT;
    cap = p->cap ? p->cap * 2 : 16;
    n = realloc(p->items, (size_t)cap * sizeof(*n));
    if (n == NULL)
        return -ENOMEM;
    p->items = n;
    p->cap = cap;
    return 0;
}

/* Parse "flag LABEL HEX" into f. Returns NULL or what is wrong. */
static const char *line_parse(const char *line, pending_flag_t *f)
{
    const char *hex;
    size_t len = strlen(line);

    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        len--;
    if (len < 8 || strncmp(line, "flag ", 5) != 0)
        return "expected \"flag LABEL HEX\"";
    if (line[5] < '0' || line[5] > '9' || line[6] != ' ')
        return "label is not a digit 0-9";
    f->label = (uint8_t)(line[5] - '0');

    hex = line + 7;
    if (len - 7 != 2 * PENDING_IMAGE_BYTES)
        return "image is not 1568 hex digits";
    for (int i = 0; i < PENDING_IMAGE_BYTES; i++) {
        int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);

        if (hi < 0 || lo < 0)
            return "image has a character that is not a hex digit";
        f->image[i] = (uint8_t)(hi << 4 | lo);
    }
    return NULL;
}

static int file_load(pending_t *p, FILE *f, dadc_error_t *err)
{
    char *line = malloc(PENDING_LINE_MAX + 2);
    int lineno = 0, rc = 0;

    if (line == NULL)
        return -ENOMEM;
    while (fgets(line, PENDING_LINE_MAX + 2, f) != NULL) {
        const char *why = NULL;

        lineno++;
        if (strchr(line, '\n') == NULL && !feof(f))
            why = "line too long";
        else if (lineno == 1)
            why = strncmp(line, PENDING_HEADER, strlen(PENDING_HEADER))
                      ? "not a dadc-draw pending file" : NULL;
        else if ((rc = items_reserve(p)) != 0)
            break;
        else if ((why = line_parse(line, &p->items[p->count])) == NULL)
            p->count++;
        if (why != NULL) {
            rc = dadc_error_set(err, DADC_EFORMAT, "%s:%d: %s", p->path,
                                lineno, why);
            break;
        }
    }
    free(line);
    return rc;
}

/* mkdir -p of the directory part of path. */
static int dir_make(const char *path)
{
    char buf[4096];
    size_t len = strlen(path);

    if (len >= sizeof(buf))
        return -ENAMETOOLONG;
    memcpy(buf, path, len + 1);
    for (char *s = buf + 1; *s != '\0'; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(buf, 0700) != 0 && errno != EEXIST)
            return -errno;
        *s = '/';
    }
    return 0;
}

/* Take PATH.lock (making its directory first). */
static int lock_take(pending_t *p, dadc_error_t *err)
{
    char lock[4200];
    int rc = dir_make(p->path);

    if (rc != 0)
        return dadc_error_set(err, rc, "%s: cannot make its directory: %s",
                              p->path, strerror(-rc));
    snprintf(lock, sizeof(lock), "%s.lock", p->path);
    p->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (p->lock_fd < 0)
        return dadc_error_set(err, -errno, "%s: %s", lock, strerror(errno));
    if (flock(p->lock_fd, LOCK_EX | LOCK_NB) != 0)
        return dadc_error_set(err, errno == EWOULDBLOCK ? DADC_EBUSY
                                                        : -errno,
                              "%s: another dadc-draw is using it; give "
                              "this one its own --pending-file", p->path);
    return 0;
}

int pending_open(pending_t *p, const char *path, dadc_error_t *err)
{
    FILE *f;
    int rc;

    memset(p, 0, sizeof(*p));
    p->lock_fd = -1;
    if (path == NULL)
        return 0;
    p->path = strdup(path);
    if (p->path == NULL)
        return -ENOMEM;
    rc = lock_take(p, err);
    if (rc != 0)
        goto fail_open;

    f = fopen(path, "r");
    if (f == NULL) {
        if (errno == ENOENT)
            return 0;
        rc = dadc_error_set(err, -errno, "%s: %s", path, strerror(errno));
        goto fail_open;
    }
    rc = file_load(p, f, err);
    fclose(f);
    if (rc != 0)
        goto fail_open;
    return 0;

fail_open:
    pending_close(p);
    return rc;
}

void pending_close(pending_t *p)
{
    if (p->lock_fd >= 0)
        close(p->lock_fd);   /* releases the lock */
    free(p->items);
    free(p->path);
    memset(p, 0, sizeof(*p));
    p->lock_fd = -1;
}

static int file_write(const pending_t *p, FILE *f)
{
    static const char digits[] = "0123456789abcdef";

    fprintf(f, "%s\n", PENDING_HEADER);
    for (int k = 0; k < p->count; k++) {
        const pending_flag_t *it = &p->items[k];

        fprintf(f, "flag %d ", it->label);
        for (int i = 0; i < PENDING_IMAGE_BYTES; i++) {
            fputc(digits[it->image[i] >> 4], f);
            fputc(digits[it->image[i] & 15], f);
        }
        fputc('\n', f);
    }
    if (fflush(f) != 0 || fsync(fileno(f)) != 0)
        return -errno;
    return 0;
}

int pending_save(pending_t *p, dadc_error_t *err)
{
    char tmp[4200];
    FILE *f;
    int rc;

    if (p->path == NULL)
        return 0;
    if (p->count == 0) {
        if (unlink(p->path) != 0 && errno != ENOENT)
            return dadc_error_set(err, -errno, "%s: %s", p->path,
                                  strerror(errno));
        return 0;
    }
    rc = dir_make(p->path);
    if (rc != 0)
        return dadc_error_set(err, rc, "%s: cannot make its directory: %s",
                              p->path, strerror(-rc));

    snprintf(tmp, sizeof(tmp), "%s.tmp", p->path);
    f = fopen(tmp, "w");
    if (f == NULL)
        return dadc_error_set(err, -errno, "%s: %s", tmp, strerror(errno));
    rc = file_write(p, f);
    if (fclose(f) != 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, p->path) != 0)
        rc = -errno;
    if (rc != 0) {
        unlink(tmp);
        return dadc_error_set(err, rc, "%s: %s", p->path, strerror(-rc));
    }
    return 0;
}

int pending_push(pending_t *p, const uint8_t image[PENDING_IMAGE_BYTES],
                 int label, dadc_error_t *err)
{
    int rc;

    if (label < 0 || label > 9)
        return dadc_error_set(err, DADC_ERANGE, "label %d is not 0-9",
                              label);
    rc = items_reserve(p);
    if (rc != 0)
        return dadc_error_set(err, rc, "cannot keep another pending flag");
    memcpy(p->items[p->count].image, image, PENDING_IMAGE_BYTES);
    p->items[p->count].label = (uint8_t)label;
    p->count++;
    return pending_save(p, err);
}

int pending_drop(pending_t *p, int n, dadc_error_t *err)
{
    if (n <= 0)
        return 0;
    if (n > p->count)
        n = p->count;
    memmove(p->items, p->items + n,
            (size_t)(p->count - n) * sizeof(*p->items));
    p->count -= n;
    return pending_save(p, err);
}

int pending_default_path(char *buf, size_t n)
{
    const char *state = getenv("XDG_STATE_HOME");
    const char *home = getenv("HOME");
    int len;

    if (state != NULL && state[0] == '/')
        len = snprintf(buf, n, "%s/dadc-draw/pending", state);
    else if (home != NULL && home[0] != '\0')
        len = snprintf(buf, n, "%s/.local/state/dadc-draw/pending", home);
    else
        return DADC_ENOTFOUND;
    return len < 0 || (size_t)len >= n ? DADC_ELIMIT : 0;
}
