#include "replay.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <SDL.h>

typedef struct op_name {
    const char *name;
    replay_op_t op;
} op_name_t;

static const op_name_t op_names[] = {
    {"stroke", REPLAY_STROKE},
    {"stroke-px", REPLAY_STROKE},
    {"touch", REPLAY_TOUCH},
    {"key", REPLAY_KEY},
    {"wait-ms", REPLAY_WAIT_MS},
    {"wait-prediction", REPLAY_WAIT_PREDICTION},
    {"wait-connected", REPLAY_WAIT_CONNECTED},
    {"wait-disconnected", REPLAY_WAIT_DISCONNECTED},
    {"wait-flags", REPLAY_WAIT_FLAGS},
    {"wait-stats", REPLAY_WAIT_STATS},
    {"wait-notice", REPLAY_WAIT_NOTICE},
    {"resize", REPLAY_RESIZE},
    {"save-mnist", REPLAY_SAVE_MNIST},
    {"save-drawing", REPLAY_SAVE_DRAWING},
    {"screenshot", REPLAY_SCREENSHOT},
    {"quit", REPLAY_QUIT},
};

static void cmd_free(replay_cmd_t *c)
{
    free(c->points);
    free(c->path);
}

void replay_free(replay_t *r)
{
    for (int i = 0; i < r->count; i++)
        cmd_free(&r->cmds[i]);
    free(r->cmds);
    memset(r, 0, sizeof(*r));
}

/* Parse "X,Y X,Y ..." into c->points. Returns NULL or what is wrong. */
static const char *points_parse(replay_cmd_t *c, char *args, float scale)
{
    char *save = NULL;

    for (char *tok = strtok_r(args, " \t", &save); tok != NULL;
         tok = strtok_r(NULL, " \t", &save)) {
        float x, y;
        int used = 0;

        if (sscanf(tok, "%f,%f%n", &x, &y, &used) != 2 ||
            tok[used] != '\0')
            return "a point is not X,Y";
        x /= scale;
        y /= scale;
        if (!(x >= 0.0f && x <= 1.0f && y >= 0.0f && y <= 1.0f))
            return "a point lies outside the canvas";
        if (c->count >= CANVAS_MAX_POINTS)
            return "too many points in one stroke";
        if ((c->count & (c->count - 1)) == 0) {
            size_t cap = c->count ? 2 * (size_t)c->count : 1;
            void *n = realloc(c->points, cap * sizeof(*c->points));

            if (n == NULL)
                return "out of memory";
            c->points = n;
        }
        c->points[c->count].x = x;
        c->points[c->count].y = y;
        c->count++;
    }
    return c->count > 0 ? NULL : "a stroke needs at least one point";
}

/* Parse "[ctrl+|shift+]...NAME" into c->key and c->mod. */
static const char *key_parse(replay_cmd_t *c, const char *arg)
{
    for (;;) {
        if (strncasecmp(arg, "ctrl+", 5) == 0 && arg[5] != '\0') {
            c->mod |= KMOD_LCTRL;
            arg += 5;
        } else if (strncasecmp(arg, "shift+", 6) == 0 && arg[6] != '\0') {
            c->mod |= KMOD_LSHIFT;
            arg += 6;
        } else {
            break;
        }
    }
    if (arg[0] == '\0')
        return "key needs a name";
    c->key = (int)SDL_GetKeyFromName(arg);
    if (c->key == SDLK_UNKNOWN && arg[1] == '\0')
        c->key = (unsigned char)arg[0];
    return c->key == SDLK_UNKNOWN ? "unknown key name" : NULL;
}

static const char *int_parse(const char *s, int lo, int hi, int *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || (*end != '\0' && *end != ' '))
        return "expected a whole number";
    if (v < lo || v > hi)
        return "number out of range";
    *out = (int)v;
    return NULL;
}

/* Parse the arguments of an already named command. */
static const char *args_parse(replay_cmd_t *c, const char *cmd, char *args)
{
    const char *why;

    switch (c->op) {
    case REPLAY_STROKE:
    case REPLAY_TOUCH:
        return points_parse(c, args,
                            strcmp(cmd, "stroke-px") ? 1.0f : REPLAY_SIDE_PX);
    case REPLAY_KEY:
        return key_parse(c, args);
    case REPLAY_WAIT_MS:
        return int_parse(args, 0, 3600 * 1000, &c->a);
    case REPLAY_RESIZE:
        why = int_parse(args, 100, 16384, &c->a);
        if (why == NULL && strchr(args, ' ') == NULL)
            why = "resize needs W H";
        return why ? why : int_parse(strchr(args, ' ') + 1, 100, 16384,
                                     &c->b);
    case REPLAY_SAVE_MNIST:
    case REPLAY_SAVE_DRAWING:
    case REPLAY_SCREENSHOT:
        if (args[0] == '\0')
            return "needs a file name";
        c->path = strdup(args);
        return c->path ? NULL : "out of memory";
    default:
        return args[0] == '\0' ? NULL : "takes no arguments";
    }
}

static int cmds_reserve(replay_t *r)
{
    replay_cmd_t *n;
    int cap;

    if (r->count < r->cap)
        return 0;
    if (r->count >= REPLAY_MAX_COMMANDS)
        return DADC_ELIMIT;
    cap = r->cap ? r->cap * 2 : 32;
    n = realloc(r->cmds, (size_t)cap * sizeof(*n));
    if (n == NULL)
        return -ENOMEM;
    r->cmds = n;
    r->cap = cap;
    return 0;
}

/* Parse one line (modified in place); blank and comment lines pass. */
static const char *line_parse(replay_t *r, char *line, int lineno)
{
    replay_cmd_t *c;
    char *args, *end;
    const char *why;
    size_t i;

    line += strspn(line, " \t\r");
    for (char *h = strchr(line, '#'); h != NULL; h = strchr(h + 1, '#')) {
        if (h == line || h[-1] == ' ' || h[-1] == '\t') {
            *h = '\0';   /* a comment runs to the end of the line */
            break;
        }
    }
    end = line + strlen(line);
    while (end > line && strchr(" \t\r", end[-1]) != NULL)
        *--end = '\0';
    if (line[0] == '\0' || line[0] == '#')
        return NULL;

    args = line + strcspn(line, " \t");
    if (*args != '\0')
        *args++ = '\0';
    args += strspn(args, " \t");
    for (i = 0; i < sizeof(op_names) / sizeof(op_names[0]); i++)
        if (strcmp(line, op_names[i].name) == 0)
            break;
    if (i == sizeof(op_names) / sizeof(op_names[0]))
        return "unknown command";
    if (cmds_reserve(r) != 0)
        return "too many commands";

    c = &r->cmds[r->count];
    memset(c, 0, sizeof(*c));
    c->op = op_names[i].op;
    c->line = lineno;
    why = args_parse(c, line, args);
    if (why != NULL)
        cmd_free(c);
    else
        r->count++;
    return why;
}

int replay_parse(replay_t *r, const char *text, size_t len,
                 const char *name, dadc_error_t *err)
{
    char *copy = malloc(len + 1), *save = NULL, *line;
    int lineno = 0, rc = 0;

    memset(r, 0, sizeof(*r));
    if (copy == NULL)
        return -ENOMEM;
    memcpy(copy, text, len);
    copy[len] = '\0';
    if (memchr(copy, '\0', len) != NULL) {
        rc = dadc_error_set(err, DADC_EFORMAT, "%s: not a text file", name);
        goto fail_parse;
    }

    /* strtok_r would merge empty lines and skew the line numbers. */
    for (line = copy; line != NULL; line = save) {
        const char *why;

        save = strchr(line, '\n');
        if (save != NULL)
            *save++ = '\0';
        lineno++;
        why = line_parse(r, line, lineno);
        if (why != NULL) {
            rc = dadc_error_set(err, DADC_EFORMAT, "%s:%d: %s", name,
                                lineno, why);
            goto fail_parse;
        }
    }
    free(copy);
    return 0;

fail_parse:
    free(copy);
    replay_free(r);
    return rc;
}

int replay_load(replay_t *r, const char *path, dadc_error_t *err)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int rc;

    memset(r, 0, sizeof(*r));
    if (f == NULL)
        return dadc_error_set(err, -errno, "%s: %s", path, strerror(errno));
    for (;;) {
        if (len == cap) {
            char *n = cap < (64u << 20) ? realloc(buf, cap + 65536) : NULL;

            if (n == NULL) {
                rc = dadc_error_set(err, cap ? DADC_ELIMIT : -ENOMEM,
                                    "%s: too large", path);
                goto fail_read;
            }
            buf = n;
            cap += 65536;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        rc = dadc_error_set(err, -EIO, "%s: read error", path);
        goto fail_read;
    }
    rc = replay_parse(r, buf, len, path, err);

fail_read:
    free(buf);
    fclose(f);
    return rc;
}
