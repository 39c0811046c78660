/*
 * Replay scripts: a drawing session written down as text, for tests,
 * demos and screenshots. One command a line; '#' at the start of a line
 * or after a space starts a comment; blank lines are skipped.
 *
 *   stroke X,Y X,Y ...     a stroke through these points, canvas units
 *                          (0..1, origin top left); one point is a dot
 *   stroke-px X,Y ...      the same in pixels of a 280x280 canvas
 *   touch X,Y X,Y ...      a stroke drawn with a finger (touch events),
 *                          canvas units
 *   key NAME               press and release a key: a digit, a letter,
 *                          or an SDL key name (F1, Escape, Tab, Return,
 *                          Space, Left, ...), with optional "ctrl+" or
 *                          "shift+" in front: key 7, key ctrl+z, key F1
 *   wait-ms N              let the program run for N milliseconds
 *   wait-prediction        until the prediction of the current drawing
 *                          has arrived
 *   wait-connected         until the server has answered Hello
 *   wait-disconnected      until the connection is down
 *   wait-flags             until no flag is waiting to be delivered
 *   wait-stats             until the dashboard figures have arrived
 *   wait-notice            until the server's next event (round started
 *                          or finished, model promoted or rolled back)
 *   resize W H             set the window size (in window units)
 *   save-mnist FILE        the 28x28 image the model sees, as PNG
 *   save-drawing FILE      the drawing the model's input is made from
 *                          (296x296, white on black) as PNG
 *   screenshot FILE        the window as it is now, as PNG
 *   quit                   end the program (exit status 0)
 *
 * Every wait gives up after the --replay-timeout (default 30 s) and the
 * program then exits with status 3, as it does when a save fails.
 */
#ifndef DADC_DRAW_REPLAY_H
#define DADC_DRAW_REPLAY_H

#include "canvas.h"
#include "dadc_error.h"

#define REPLAY_SIDE_PX 280.0f   /* canvas side that stroke-px assumes */
#define REPLAY_MAX_COMMANDS 100000

typedef enum replay_op {
    REPLAY_STROKE,
    REPLAY_TOUCH,
    REPLAY_KEY,
    REPLAY_WAIT_MS,
    REPLAY_WAIT_PREDICTION,
    REPLAY_WAIT_CONNECTED,
    REPLAY_WAIT_DISCONNECTED,
    REPLAY_WAIT_FLAGS,
    REPLAY_WAIT_STATS,
    REPLAY_WAIT_NOTICE,
    REPLAY_RESIZE,
    REPLAY_SAVE_MNIST,
    REPLAY_SAVE_DRAWING,
    REPLAY_SCREENSHOT,
    REPLAY_QUIT,
} replay_op_t;

typedef struct replay_cmd {
    replay_op_t op;
    int line;                 /* in the script, for messages */
    canvas_point_t *points;   /* REPLAY_STROKE, canvas units */
    int count;
    int key;                  /* REPLAY_KEY: an SDL_Keycode */
    int mod;                  /* REPLAY_KEY: SDL_Keymod bits */
    int a, b;                 /* WAIT_MS: a; RESIZE: a x b */
    char *path;               /* the SAVE and SCREENSHOT commands */
} replay_cmd_t;

typedef struct replay {
    replay_cmd_t *cmds;
    int count;
    int cap;
} replay_t;

/*
 * Parse a script from text (len bytes; name is used in messages).
 * Returns 0, DADC_EFORMAT with "name:line: what" in err, or -ENOMEM.
 * On error r needs no replay_free.
 */
int replay_parse(replay_t *r, const char *text, size_t len,
                 const char *name, dadc_error_t *err);

/* Read and parse a script file. Errors as replay_parse, or -errno. */
int replay_load(replay_t *r, const char *path, dadc_error_t *err);

void replay_free(replay_t *r);

#endif
