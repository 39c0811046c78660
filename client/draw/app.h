/*
 * The drawing client's state, shared by its subsystems: ui.c draws the
 * drawing view, dash.c the dashboard, input.c turns events into
 * actions, player.c runs replay scripts, shot.c writes screenshots, and
 * main.c owns the loop. Everything here lives on the UI thread; the
 * network thread is reached only through net.h.
 */
#ifndef DADC_DRAW_APP_H
#define DADC_DRAW_APP_H

#include <stdbool.h>
#include <stdint.h>

#include <SDL.h>
#include <SDL_ttf.h>

#include "canvas.h"
#include "net.h"
#include "replay.h"

#define APP_NAME "dadc-draw"
#define APP_DEFAULT_FONT "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
#define APP_MAX_BUTTONS 24
/* The smallest window (points) where the canvas is still at least
 * 280x280 and the panel's contents fit. */
#define APP_MIN_WIDTH 760
#define APP_MIN_HEIGHT 600

/*
 * The model's input is made from the drawing at CANVAS_MODEL_SIDE with a
 * margin of paper around it, so that strokes running along the canvas
 * edge never make the border look like ink (image_to_mnist reads the
 * paper's colour from the border).
 */
#define APP_MODEL_PAD 8
#define APP_MODEL_SIDE (CANVAS_MODEL_SIDE + 2 * APP_MODEL_PAD)

/* Exit statuses, documented in --help. */
enum {
    APP_EXIT_OK = 0,
    APP_EXIT_FAILURE = 1,   /* SDL, font or pending file trouble */
    APP_EXIT_USAGE = 2,
    APP_EXIT_REPLAY = 3,    /* a replay wait timed out or a save failed */
};

typedef enum app_action {
    ACT_NONE,
    ACT_CLEAR,
    ACT_UNDO,
    ACT_DASHBOARD,
    ACT_HELP,
    ACT_FLAG0,   /* ACT_FLAG0 + d flags the drawing as digit d */
} app_action_t;

typedef struct ui_button {
    SDL_Rect rect;
    app_action_t action;
    char label[24];
} ui_button_t;

/* What the server said about the current drawing. */
typedef struct app_prediction {
    bool valid;
    unsigned seq;             /* canvas generation it was made for */
    uint32_t digit;
    float probabilities[10];
    uint32_t model_version;
} app_prediction_t;

/* Figures for the dashboard. */
typedef struct app_figures {
    bool valid;
    net_msg_t msg;            /* a NET_MSG_FIGURES */
} app_figures_t;

typedef struct app_fonts {
    TTF_Font *small;
    TTF_Font *normal;
    TTF_Font *large;
    TTF_Font *huge;
    int px;                   /* pixel size they were opened at */
} app_fonts_t;

typedef struct app_layout {
    float unit;               /* drawable pixels per design unit */
    int width, height;        /* drawable size */
    SDL_Rect canvas;
    SDL_Rect panel;
    SDL_Rect digit;           /* the big predicted digit */
    SDL_Rect preview;         /* the 28x28 image, magnified */
    SDL_Rect bars;
    SDL_Rect result;
    SDL_Rect status;
} app_layout_t;

typedef struct app {
    const char *font_path;
    float ui_scale;
    SDL_Window *window;
    SDL_Renderer *renderer;
    app_fonts_t fonts;
    app_layout_t layout;
    ui_button_t buttons[APP_MAX_BUTTONS];
    int button_count;
    int focus;                /* keyboard focus: button index or -1 */

    canvas_t canvas;
    uint8_t *view;            /* canvas at display size */
    int view_side;
    unsigned view_generation; /* canvas generation view shows */
    bool view_stale;          /* needs a full re-rasterisation */
    SDL_Texture *canvas_tex;
    SDL_Texture *preview_tex;

    uint8_t drawing_buf[CANVAS_MODEL_SIDE * CANVAS_MODEL_SIDE];
    uint8_t model_buf[APP_MODEL_SIDE * APP_MODEL_SIDE];
    uint8_t mnist[784];
    bool mnist_valid;
    unsigned mnist_generation;
    uint32_t predict_due;     /* SDL ticks; 0: nothing due */
    uint32_t predict_sent_at;
    app_prediction_t prediction;

    net_t *net;
    net_status_t status;
    app_figures_t figures;
    char result[200];
    int result_tone;          /* > 0 good, < 0 bad, 0 waiting */
    char notice[200];
    uint32_t notice_at;

    bool dashboard;
    bool help;
    bool mouse_down;
    bool finger_down;
    SDL_FingerID finger;
    bool kb_pen;              /* keyboard pen shown */
    bool kb_down;             /* keyboard pen touching */
    float kb_x, kb_y;         /* keyboard pen, canvas units */

    unsigned figures_count;   /* figures received so far */
    unsigned event_count;     /* server events received so far */
    char shot_path[4096];     /* screenshot wanted at the next frame */

    bool dirty;
    bool quit;
    int exit_status;
} app_t;

/* ui.c */
void ui_layout(app_t *app);
void ui_render(app_t *app);
void ui_text(app_t *app, TTF_Font *font, const char *text, int x, int y,
             SDL_Color color, int align);
void ui_rect_fill(app_t *app, SDL_Rect r, SDL_Color c);
void ui_rect_frame(app_t *app, SDL_Rect r, SDL_Color c, int width);
int ui_fonts_open(app_t *app);
void ui_fonts_close(app_t *app);
/* Drawing-view state after a change of the canvas (preview, predict). */
void ui_canvas_changed(app_t *app);

/* dash.c */
void dash_render(app_t *app, SDL_Rect area);

/* input.c */
void input_event(app_t *app, const SDL_Event *ev);
void input_action(app_t *app, app_action_t action);
/* Canvas units of a point in drawable pixels; false when outside. */
bool input_canvas_point(const app_t *app, float px, float py, float *x,
                        float *y);

/* main.c: the MNIST image of the drawing as it is now; false if empty. */
bool app_mnist_update(app_t *app);
/* main.c: render the drawing, with its margin, into app->model_buf. */
void app_drawing_render(app_t *app);

/* shot.c: the window's current frame as an RGB PNG. */
int shot_save(app_t *app, const char *path, dadc_error_t *err);

#endif
