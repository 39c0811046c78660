#include "canvas.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dadc_error.h"

void canvas_init(canvas_t *c, float brush)
{
    memset(c, 0, sizeof(*c));
    c->brush = brush > 0 ? brush : CANVAS_BRUSH_DEFAULT;
}

void canvas_free(canvas_t *c)
{
    for (int i = 0; i < c->count; i++)
        free(c->strokes[i].points);
    free(c->strokes);
    c->strokes = NULL;
    c->count = 0;
    c->cap = 0;
    c->open = false;
    c->generation++;
}

static float clamp01(float v)
{
    if (!(v >= 0.0f))   /* also catches NaN */
        return 0.0f;
    return v > 1.0f ? 1.0f : v;
}

static int stroke_push(canvas_stroke_t *s, float x, float y)
{
    if (s->count == s->cap) {
        int cap = s->cap ? s->cap * 2 : 64;
        canvas_point_t *p = realloc(s->points, (size_t)cap * sizeof(*p));

        if (p == NULL)
            return -ENOMEM;
        s->points = p;
        s->cap = cap;
    }
    s->points[s->count].x = clamp01(x);
    s->points[s->count].y = clamp01(y);
    s->count++;
    return 0;
}

int canvas_stroke_begin(canvas_t *c, float x, float y)
{
    canvas_stroke_t *s;
    int rc;

    canvas_stroke_end(c);
    if (c->count >= CANVAS_MAX_STROKES)
        return DADC_ELIMIT;
    if (c->count == c->cap) {
        int cap = c->cap ? c->cap * 2 : 16;
        canvas_stroke_t *n = realloc(c->strokes, (size_t)cap * sizeof(*n));

        if (n == NULL)
            return -ENOMEM;
        c->strokes = n;
        c->cap = cap;
    }

    s = &c->strokes[c->count];
    memset(s, 0, sizeof(*s));
    rc = stroke_push(s, x, y);
    if (rc != 0)
        return rc;
    c->count++;
    c->open = true;
    c->generation++;
    return 0;
}

int canvas_stroke_add(canvas_t *c, float x, float y)
{
    canvas_stroke_t *s;
    canvas_point_t *last;
    float dx, dy, min_step = c->brush * 0.01f;
    int rc;

    if (!c->open || c->count == 0)
        return DADC_ERANGE;
    s = &c->strokes[c->count - 1];
    if (s->count >= CANVAS_MAX_POINTS)
        return DADC_ELIMIT;

    last = &s->points[s->count - 1];
    dx = clamp01(x) - last->x;
    dy = clamp01(y) - last->y;
    if (dx * dx + dy * dy < min_step * min_step)
        return 0;

    rc = stroke_push(s, x, y);
    if (rc == 0)
        c->generation++;
    return rc;
}

void canvas_stroke_end(canvas_t *c)
{
    c->open = false;
}

bool canvas_undo(canvas_t *c)
{
    if (c->count == 0)
        return false;
    c->count--;
    free(c->strokes[c->count].points);
    c->open = false;
    c->generation++;
    return true;
}

void canvas_clear(canvas_t *c)
{
    while (canvas_undo(c)) {
    }
    c->generation++;
}

bool canvas_is_empty(const canvas_t *c)
{
    return c->count == 0;
}

/* Squared distance from (px, py) to the segment (x0, y0)-(x1, y1). */
static float segment_dist2(float px, float py, float x0, float y0,
                           float x1, float y1)
{
    float dx = x1 - x0, dy = y1 - y0;
    float len2 = dx * dx + dy * dy;
    float t = 0.0f, ex, ey;

    if (len2 > 0.0f) {
        t = ((px - x0) * dx + (py - y0) * dy) / len2;
        t = t < 0.0f ? 0.0f : (t > 1.0f ? 1.0f : t);
    }
    ex = px - (x0 + t * dx);
    ey = py - (y0 + t * dy);
    return ex * ex + ey * ey;
}

static int clampi(int v, int lo, int hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}

void canvas_capsule_draw(uint8_t *buf, int side, float x0, float y0,
                         float x1, float y1, float r)
{
    /* A pixel whose centre lies within r - 0.5 of the segment is full
     * ink, one beyond r + 0.5 is paper, and coverage falls linearly in
     * between: a one-pixel ramp, the usual box-filter approximation. */
    float reach = r + 0.5f;
    int xa = clampi((int)floorf(fminf(x0, x1) - reach), 0, side - 1);
    int xb = clampi((int)ceilf(fmaxf(x0, x1) + reach), 0, side - 1);
    int ya = clampi((int)floorf(fminf(y0, y1) - reach), 0, side - 1);
    int yb = clampi((int)ceilf(fmaxf(y0, y1) + reach), 0, side - 1);

    for (int y = ya; y <= yb; y++) {
        uint8_t *row = buf + (size_t)y * (size_t)side;

        for (int x = xa; x <= xb; x++) {
            float d2 = segment_dist2(x + 0.5f, y + 0.5f, x0, y0, x1, y1);
            float cov;
            uint8_t v;

            if (d2 >= reach * reach)
                continue;
            cov = reach - sqrtf(d2);
            v = cov >= 1.0f ? 255 : (uint8_t)(cov * 255.0f + 0.5f);
            if (v > row[x])
                row[x] = v;
        }
    }
}

static void stroke_segment_draw(const canvas_t *c, const canvas_stroke_t *s,
                                int i, uint8_t *buf, int side)
{
    const canvas_point_t *a = &s->points[i > 0 ? i - 1 : 0];
    const canvas_point_t *b = &s->points[i];

    canvas_capsule_draw(buf, side, a->x * side, a->y * side, b->x * side,
                        b->y * side, c->brush * side * 0.5f);
}

void canvas_render(const canvas_t *c, uint8_t *buf, int side)
{
    memset(buf, 0, (size_t)side * (size_t)side);
    for (int k = 0; k < c->count; k++) {
        const canvas_stroke_t *s = &c->strokes[k];

        /* Segment 0 is the first point's disc; later segments start at
         * their predecessor, so every point is covered once at least. */
        for (int i = (s->count > 1 ? 1 : 0); i < s->count; i++)
            stroke_segment_draw(c, s, i, buf, side);
    }
}

void canvas_render_last(const canvas_t *c, uint8_t *buf, int side)
{
    const canvas_stroke_t *s;

    if (c->count == 0)
        return;
    s = &c->strokes[c->count - 1];
    if (s->count > 0)
        stroke_segment_draw(c, s, s->count - 1, buf, side);
}
