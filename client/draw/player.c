#include "player.h"

#include <math.h>
#include <stdio.h>

#include "image.h"

/* Push a mouse event at canvas point p (canvas units). */
static void mouse_push(app_t *app, Uint32 type, canvas_point_t p)
{
    SDL_Rect c = app->layout.canvas;
    float k = app->layout.unit / app->ui_scale;   /* pixels per point */
    int x = (int)lroundf(((float)c.x + p.x * (float)c.w) / k);
    int y = (int)lroundf(((float)c.y + p.y * (float)c.h) / k);
    SDL_Event ev;

    SDL_zero(ev);
    ev.type = type;
    if (type == SDL_MOUSEMOTION) {
        ev.motion.windowID = SDL_GetWindowID(app->window);
        ev.motion.state = SDL_BUTTON_LMASK;
        ev.motion.x = x;
        ev.motion.y = y;
    } else {
        ev.button.windowID = SDL_GetWindowID(app->window);
        ev.button.button = SDL_BUTTON_LEFT;
        ev.button.state = type == SDL_MOUSEBUTTONDOWN ? SDL_PRESSED
                                                      : SDL_RELEASED;
        ev.button.clicks = 1;
        ev.button.x = x;
        ev.button.y = y;
    }
    SDL_PushEvent(&ev);
}

static void stroke_push(app_t *app, const replay_cmd_t *c)
{
    mouse_push(app, SDL_MOUSEBUTTONDOWN, c->points[0]);
    for (int i = 1; i < c->count; i++)
        mouse_push(app, SDL_MOUSEMOTION, c->points[i]);
    mouse_push(app, SDL_MOUSEBUTTONUP, c->points[c->count - 1]);
}

/* The same stroke as finger events (positions are window fractions). */
static void touch_push(app_t *app, const replay_cmd_t *c)
{
    SDL_Rect r = app->layout.canvas;
    SDL_Event ev;

    for (int i = 0; i <= c->count; i++) {
        const canvas_point_t *p = &c->points[i < c->count ? i : i - 1];

        SDL_zero(ev);
        ev.type = i == 0 ? SDL_FINGERDOWN
                         : (i == c->count ? SDL_FINGERUP : SDL_FINGERMOTION);
        ev.tfinger.touchId = 1;
        ev.tfinger.fingerId = 1;
        ev.tfinger.x = ((float)r.x + p->x * (float)r.w) /
                       (float)app->layout.width;
        ev.tfinger.y = ((float)r.y + p->y * (float)r.h) /
                       (float)app->layout.height;
        ev.tfinger.pressure = 1.0f;
        ev.tfinger.windowID = SDL_GetWindowID(app->window);
        SDL_PushEvent(&ev);
    }
}

static void key_push(app_t *app, const replay_cmd_t *c)
{
    SDL_Event ev;

    SDL_zero(ev);
    ev.type = SDL_KEYDOWN;
    ev.key.windowID = SDL_GetWindowID(app->window);
    ev.key.state = SDL_PRESSED;
    ev.key.keysym.sym = c->key;
    ev.key.keysym.scancode = SDL_GetScancodeFromKey(c->key);
    ev.key.keysym.mod = (Uint16)c->mod;
    SDL_PushEvent(&ev);
    ev.type = SDL_KEYUP;
    ev.key.state = SDL_RELEASED;
    SDL_PushEvent(&ev);
}

static int save_image(app_t *app, const replay_cmd_t *c, dadc_error_t *err)
{
    if (c->op == REPLAY_SCREENSHOT) {
        snprintf(app->shot_path, sizeof(app->shot_path), "%s", c->path);
        return 0;
    }
    if (canvas_is_empty(&app->canvas))
        return dadc_error_set(err, DADC_EEMPTY, "%s: the canvas is empty",
                              c->path);
    if (c->op == REPLAY_SAVE_DRAWING) {
        app_drawing_render(app);
        return image_save_png(c->path, app->model_buf, APP_MODEL_SIDE,
                              APP_MODEL_SIDE, err);
    }
    if (!app_mnist_update(app))
        return dadc_error_set(err, DADC_EEMPTY, "%s: no MNIST image",
                              c->path);
    return image_save_png(c->path, app->mnist, 28, 28, err);
}

/* Whether the wait c is over. */
static bool wait_done(player_t *pl, app_t *app, const replay_cmd_t *c)
{
    const app_prediction_t *p = &app->prediction;

    switch (c->op) {
    case REPLAY_WAIT_MS:
        return SDL_GetTicks() - pl->started >= (Uint32)c->a;
    case REPLAY_WAIT_PREDICTION:
        return canvas_is_empty(&app->canvas) ||
               (app->predict_due == 0 && p->valid &&
                p->seq == app->canvas.generation);
    case REPLAY_WAIT_CONNECTED:
        return app->status.state == NET_CONNECTED;
    case REPLAY_WAIT_DISCONNECTED:
        return app->status.state != NET_CONNECTED;
    case REPLAY_WAIT_FLAGS:
        return app->status.flags_waiting == 0;
    case REPLAY_WAIT_NOTICE:
        return app->event_count != pl->notices_seen;
    default:
        return app->figures_count != pl->figures_seen;
    }
}

/* Start or continue the wait c: true when it is over. */
static bool wait_step(player_t *pl, app_t *app, const replay_cmd_t *c)
{
    if (!pl->waiting) {
        pl->waiting = true;
        pl->started = SDL_GetTicks();
        pl->figures_seen = app->figures_count;
        pl->notices_seen = app->event_count;
        if (c->op == REPLAY_WAIT_STATS)
            net_figures_request(app->net);
    }
    if (wait_done(pl, app, c)) {
        pl->waiting = false;
        return true;
    }
    if (c->op != REPLAY_WAIT_MS &&
        SDL_GetTicks() - pl->started >= (Uint32)pl->timeout_ms) {
        fprintf(stderr, "%s: replay line %d: gave up waiting after %d ms "
                "(server %s: %s)\n", APP_NAME, c->line, pl->timeout_ms,
                app->status.server,
                app->status.error[0] ? app->status.error : "no error");
        app->exit_status = APP_EXIT_REPLAY;
        app->quit = true;
    }
    return false;
}

/* Run command c. Returns false when the script must yield after it. */
static bool cmd_run(player_t *pl, app_t *app, const replay_cmd_t *c)
{
    dadc_error_t err;

    switch (c->op) {
    case REPLAY_STROKE:
        stroke_push(app, c);
        return false;
    case REPLAY_TOUCH:
        touch_push(app, c);
        return false;
    case REPLAY_KEY:
        key_push(app, c);
        return false;
    case REPLAY_RESIZE:
        SDL_SetWindowSize(app->window, c->a, c->b);
        ui_layout(app);
        return false;
    case REPLAY_SAVE_MNIST:
    case REPLAY_SAVE_DRAWING:
    case REPLAY_SCREENSHOT:
        dadc_error_clear(&err);
        if (save_image(app, c, &err) != 0) {
            fprintf(stderr, "%s: replay line %d: %s\n", APP_NAME, c->line,
                    dadc_error_message(&err));
            app->exit_status = APP_EXIT_REPLAY;
            app->quit = true;
        }
        return c->op != REPLAY_SCREENSHOT;
    case REPLAY_QUIT:
        app->quit = true;
        return false;
    default:
        return wait_step(pl, app, c);
    }
}

int player_step(player_t *pl, app_t *app)
{
    while (pl->next < pl->script.count && !app->quit) {
        const replay_cmd_t *c = &pl->script.cmds[pl->next];
        bool go_on = cmd_run(pl, app, c);

        if (pl->waiting)
            return c->op == REPLAY_WAIT_MS ? 5 : 10;
        pl->next++;
        if (!go_on)
            return 0;
    }
    if (pl->next >= pl->script.count)
        app->quit = true;
    return -1;
}
