/*
 * The drawing: strokes, their rasterisation and undo.
 *
 * A canvas is a square; points are kept in canvas units (0..1 on both
 * axes, origin top left) so the drawing does not depend on the window
 * size. Rasterising renders every stroke as a chain of capsules (discs
 * swept along each segment) with anti-aliased edges into an 8-bit
 * coverage buffer: 0 is paper, 255 full ink. Coverage is combined with
 * max(), so drawing one more segment into a buffer gives exactly what a
 * full re-rasterisation gives.
 *
 * No SDL here: the UI feeds points in, the tests check pixels out.
 */
#ifndef DADC_DRAW_CANVAS_H
#define DADC_DRAW_CANVAS_H

#include <stdbool.h>
#include <stdint.h>

/*
 * The brush diameter in canvas units. A digit drawn over two thirds of
 * the canvas height ends up with strokes 2.5-3 px wide once the digit is
 * scaled to MNIST's 20 px box, as in MNIST itself.
 */
#define CANVAS_BRUSH_DEFAULT 0.10f

/* Side of the buffer the model's input is made from, in pixels. */
#define CANVAS_MODEL_SIDE 280

/* Limits that keep a runaway input device from eating memory. */
#define CANVAS_MAX_STROKES 4096
#define CANVAS_MAX_POINTS 65536   /* per stroke */

typedef struct canvas_point {
    float x;
    float y;
} canvas_point_t;

typedef struct canvas_stroke {
    canvas_point_t *points;
    int count;
    int cap;
} canvas_stroke_t;

typedef struct canvas {
    canvas_stroke_t *strokes;
    int count;
    int cap;
    bool open;            /* the last stroke is still being drawn */
    float brush;          /* diameter, canvas units */
    unsigned generation;  /* bumped by every change to the drawing */
} canvas_t;

/* Start an empty canvas with a brush diameter (canvas units). */
void canvas_init(canvas_t *c, float brush);

/* Free every stroke; the canvas may be initialised again. */
void canvas_free(canvas_t *c);

/*
 * Begin a stroke at (x, y), ending any open one. Coordinates are
 * clamped to 0..1. Returns 0, -ENOMEM or DADC_ELIMIT (too many strokes;
 * the drawing is unchanged).
 */
int canvas_stroke_begin(canvas_t *c, float x, float y);

/*
 * Extend the open stroke to (x, y). A point closer than a hundredth of
 * the brush to the previous one is dropped (returns 0, nothing
 * changes). Returns 0, -ENOMEM, DADC_ELIMIT (stroke too long) or
 * DADC_ERANGE when no stroke is open.
 */
int canvas_stroke_add(canvas_t *c, float x, float y);

/* End the open stroke, if any. */
void canvas_stroke_end(canvas_t *c);

/* Remove the last stroke (open or not). Returns true if one was removed. */
bool canvas_undo(canvas_t *c);

/* Remove every stroke. */
void canvas_clear(canvas_t *c);

/* True when there is no stroke. */
bool canvas_is_empty(const canvas_t *c);

/*
 * Rasterise the whole drawing into buf (side x side bytes, cleared
 * first). side must be positive.
 */
void canvas_render(const canvas_t *c, uint8_t *buf, int side);

/*
 * Rasterise only the last segment of the last stroke into buf (or its
 * single point when it has just begun): what changed since the previous
 * canvas_stroke_begin/add. buf must hold the drawing as it was.
 */
void canvas_render_last(const canvas_t *c, uint8_t *buf, int side);

/*
 * Draw one anti-aliased capsule from (x0, y0) to (x1, y1) with radius r,
 * all in pixels, into buf (side x side), combining by max().
 */
void canvas_capsule_draw(uint8_t *buf, int side, float x0, float y0,
                         float x1, float y1, float r);

#endif
