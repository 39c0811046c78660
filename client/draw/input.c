/*
 * Input: mouse, touch and pen events become strokes; keys and buttons
 * become actions. Pointer positions arrive in window points (mouse) or
 * as fractions of the window (touch) and are turned into drawable
 * pixels first, then canvas units.
 */
#include "app.h"

#include <stdio.h>

#define KB_STEP 0.01f        /* keyboard pen step, canvas units */
#define KB_STEP_FAST 0.04f

bool input_canvas_point(const app_t *app, float px, float py, float *x,
                        float *y)
{
    SDL_Rect c = app->layout.canvas;

    *x = (px - (float)c.x) / (float)c.w;
    *y = (py - (float)c.y) / (float)c.h;
    return *x >= 0.0f && *x <= 1.0f && *y >= 0.0f && *y <= 1.0f;
}

/* Window points to drawable pixels. */
static void points_to_pixels(const app_t *app, int wx, int wy, float *px,
                             float *py)
{
    float k = app->layout.unit / app->ui_scale;

    *px = (float)wx * k;
    *py = (float)wy * k;
}

/* Extend or start the stroke, keeping the display raster in step. */
static void pen_to(app_t *app, float x, float y, bool begin)
{
    unsigned before = app->canvas.generation;
    int rc = begin ? canvas_stroke_begin(&app->canvas, x, y)
                   : canvas_stroke_add(&app->canvas, x, y);

    if (rc != 0 || app->canvas.generation == before)
        return;
    if (app->view != NULL && app->view_generation == before &&
        !app->view_stale) {
        canvas_render_last(&app->canvas, app->view, app->view_side);
        app->view_generation = app->canvas.generation;
    }
    ui_canvas_changed(app);
}

static void pen_up(app_t *app)
{
    canvas_stroke_end(&app->canvas);
    app->dirty = true;
}

static int button_at(const app_t *app, float px, float py)
{
    SDL_Point p = {(int)px, (int)py};

    for (int i = 0; i < app->button_count; i++)
        if (SDL_PointInRect(&p, &app->buttons[i].rect))
            return i;
    return -1;
}

/* A press of mouse, finger or pen at drawable pixel (px, py). */
static bool pointer_down(app_t *app, float px, float py)
{
    float x, y;
    int b;

    if (app->help) {
        app->help = false;
        app->dirty = true;
        return false;
    }
    b = button_at(app, px, py);
    if (b >= 0) {
        input_action(app, app->buttons[b].action);
        return false;
    }
    if (app->dashboard || !input_canvas_point(app, px, py, &x, &y))
        return false;
    app->kb_pen = false;
    pen_to(app, x, y, true);
    return true;
}

static void pointer_move(app_t *app, float px, float py)
{
    float x, y;

    input_canvas_point(app, px, py, &x, &y);
    pen_to(app, x, y, false);   /* clamped to the canvas edge */
}

static void mouse_event(app_t *app, const SDL_Event *ev)
{
    float px, py;

    /* Touches arrive as finger events too; skip SDL's mouse copies. */
    if ((ev->type == SDL_MOUSEMOTION ? ev->motion.which
                                     : ev->button.which) == SDL_TOUCH_MOUSEID)
        return;
    if (ev->type == SDL_MOUSEMOTION) {
        if (!app->mouse_down)
            return;
        points_to_pixels(app, ev->motion.x, ev->motion.y, &px, &py);
        pointer_move(app, px, py);
        return;
    }
    if (ev->button.button != SDL_BUTTON_LEFT)
        return;
    points_to_pixels(app, ev->button.x, ev->button.y, &px, &py);
    if (ev->type == SDL_MOUSEBUTTONDOWN) {
        app->mouse_down = pointer_down(app, px, py);
    } else if (app->mouse_down) {
        pointer_move(app, px, py);
        app->mouse_down = false;
        pen_up(app);
    }
}

static void finger_event(app_t *app, const SDL_TouchFingerEvent *ev)
{
    float px = ev->x * (float)app->layout.width;
    float py = ev->y * (float)app->layout.height;

    if (ev->type == SDL_FINGERDOWN) {
        if (app->finger_down)
            return;   /* one finger draws; others are ignored */
        app->finger_down = pointer_down(app, px, py);
        app->finger = ev->fingerId;
        return;
    }
    if (!app->finger_down || ev->fingerId != app->finger)
        return;
    pointer_move(app, px, py);
    if (ev->type == SDL_FINGERUP) {
        app->finger_down = false;
        pen_up(app);
    }
}

static void result_set(app_t *app, int tone, const char *text)
{
    snprintf(app->result, sizeof(app->result), "%s", text);
    app->result_tone = tone;
    app->dirty = true;
}

static void flag_send(app_t *app, int digit)
{
    dadc_error_t err;
    char text[200];

    if (!app_mnist_update(app)) {
        result_set(app, -1, "Draw a digit first, then press its key.");
        return;
    }
    dadc_error_clear(&err);
    if (net_flag(app->net, app->mnist, digit, &err) != 0)
        snprintf(text, sizeof(text), "Flag kept in memory only, not on "
                 "disk: %s", dadc_error_message(&err));
    else if (app->status.state == NET_CONNECTED)
        snprintf(text, sizeof(text), "Sending your %d...", digit);
    else
        snprintf(text, sizeof(text), "Your %d is kept and will be sent "
                 "when the server is back.", digit);
    result_set(app, 0, text);

    canvas_clear(&app->canvas);
    app->prediction.valid = false;
    ui_canvas_changed(app);
}

void input_action(app_t *app, app_action_t action)
{
    app->dirty = true;
    switch (action) {
    case ACT_CLEAR:
        canvas_clear(&app->canvas);
        ui_canvas_changed(app);
        break;
    case ACT_UNDO:
        if (canvas_undo(&app->canvas))
            ui_canvas_changed(app);
        break;
    case ACT_DASHBOARD:
        app->dashboard = !app->dashboard;
        app->focus = -1;
        if (app->dashboard)
            net_figures_request(app->net);
        ui_layout(app);
        break;
    case ACT_HELP:
        app->help = !app->help;
        break;
    case ACT_NONE:
        break;
    default:
        if (!app->dashboard)
            flag_send(app, (int)(action - ACT_FLAG0));
        break;
    }
}

/* The keyboard pen: arrows move it, Space puts it down or lifts it. */
static bool kb_pen_key(app_t *app, SDL_Keycode key, bool fast)
{
    float step = fast ? KB_STEP_FAST : KB_STEP;
    float dx = key == SDLK_LEFT ? -step : (key == SDLK_RIGHT ? step : 0);
    float dy = key == SDLK_UP ? -step : (key == SDLK_DOWN ? step : 0);

    if (app->dashboard)
        return false;
    if (key == SDLK_SPACE) {
        if (!app->kb_pen) {
            app->kb_pen = true;
            app->kb_x = app->kb_y = 0.5f;
        } else if (app->kb_down) {
            pen_up(app);
            app->kb_down = false;
        } else {
            app->kb_down = true;
            pen_to(app, app->kb_x, app->kb_y, true);
        }
        app->dirty = true;
        return true;
    }
    if (dx == 0 && dy == 0)
        return false;
    app->kb_x = SDL_clamp(app->kb_x + dx, 0.0f, 1.0f);
    app->kb_y = SDL_clamp(app->kb_y + dy, 0.0f, 1.0f);
    if (!app->kb_pen)
        app->kb_x = app->kb_y = 0.5f;
    app->kb_pen = true;
    if (app->kb_down)
        pen_to(app, app->kb_x, app->kb_y, false);
    app->dirty = true;
    return true;
}

static void focus_key(app_t *app, bool back)
{
    int n = app->button_count;

    if (n == 0)
        return;
    if (app->focus < 0)
        app->focus = back ? n - 1 : 0;
    else
        app->focus = (app->focus + (back ? n - 1 : 1)) % n;
    app->dirty = true;
}

static app_action_t key_action(SDL_Keycode key, SDL_Scancode code,
                               Uint16 mod)
{
    bool ctrl = (mod & KMOD_CTRL) != 0, shift = (mod & KMOD_SHIFT) != 0;

    /* The digit row by position, so layouts that need Shift for digits
     * (AZERTY) flag with the same keys. */
    if (code >= SDL_SCANCODE_1 && code <= SDL_SCANCODE_0 && !ctrl)
        return (app_action_t)(ACT_FLAG0 +
                              (code == SDL_SCANCODE_0
                                   ? 0 : 1 + (code - SDL_SCANCODE_1)));
    if (key >= SDLK_0 && key <= SDLK_9 && !ctrl && !shift)
        return (app_action_t)(ACT_FLAG0 + (key - SDLK_0));
    if (key >= SDLK_KP_1 && key <= SDLK_KP_9)
        return (app_action_t)(ACT_FLAG0 + 1 + (key - SDLK_KP_1));
    if (key == SDLK_KP_0)
        return ACT_FLAG0;
    if (key == SDLK_c || key == SDLK_DELETE)
        return ACT_CLEAR;
    if (key == SDLK_z || key == SDLK_u || key == SDLK_BACKSPACE)
        return ACT_UNDO;
    if (key == SDLK_d)
        return ACT_DASHBOARD;
    if (key == SDLK_F1 || key == SDLK_QUESTION ||
        (key == SDLK_SLASH && shift))
        return ACT_HELP;
    return ACT_NONE;
}

static void key_event(app_t *app, const SDL_KeyboardEvent *ev)
{
    SDL_Keycode key = ev->keysym.sym;
    Uint16 mod = ev->keysym.mod;
    app_action_t action = key_action(key, ev->keysym.scancode, mod);

    if (key == SDLK_q && (mod & KMOD_CTRL)) {
        app->quit = true;
    } else if (key == SDLK_ESCAPE) {
        if (app->help)
            app->help = false;
        else if (app->dashboard)
            input_action(app, ACT_DASHBOARD);
        app->dirty = true;
    } else if (key == SDLK_TAB) {
        focus_key(app, (mod & KMOD_SHIFT) != 0);
    } else if ((key == SDLK_RETURN || key == SDLK_KP_ENTER) &&
               app->focus >= 0) {
        input_action(app, app->buttons[app->focus].action);
    } else if (action != ACT_NONE) {
        input_action(app, action);
    } else {
        kb_pen_key(app, key, (mod & KMOD_SHIFT) != 0);
    }
}

void input_event(app_t *app, const SDL_Event *ev)
{
    switch (ev->type) {
    case SDL_MOUSEBUTTONDOWN:
    case SDL_MOUSEBUTTONUP:
    case SDL_MOUSEMOTION:
        mouse_event(app, ev);
        break;
    case SDL_FINGERDOWN:
    case SDL_FINGERMOTION:
    case SDL_FINGERUP:
        finger_event(app, &ev->tfinger);
        break;
    case SDL_KEYDOWN:
        key_event(app, &ev->key);
        break;
    case SDL_WINDOWEVENT:
        if (ev->window.event == SDL_WINDOWEVENT_SIZE_CHANGED)
            ui_layout(app);
        app->dirty = true;
        break;
    case SDL_QUIT:
        app->quit = true;
        break;
    default:
        break;
    }
}
