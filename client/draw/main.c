/*
 * dadc-draw: draw digits, watch the model guess, flag the ones it gets
 * wrong. This file holds the options, start-up and the event loop.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app.h"
#include "dadc_client.h"
#include "image.h"
#include "player.h"

#define DRAW_VERSION "0.1"

typedef struct draw_options {
    const char *server;
    const char *name;
    const char *font;
    const char *pending_file;
    bool no_pending_file;
    const char *replay;
    int replay_timeout_ms;
    const char *screenshot;
    int width, height;
    float scale;
    float brush;
} draw_options_t;

static void usage_print(FILE *out)
{
    fprintf(out,
"Usage: dadc-draw [OPTION]...\n"
"Draw digits and try to fool the DADC model; flag what it gets wrong.\n"
"\n"
"  --server HOST:PORT    server (default $DADC_SERVER or 127.0.0.1:7070)\n"
"  --name NAME           annotator name sent to the server (default $USER)\n"
"  --font FILE           TrueType font (default $DADC_DRAW_FONT or\n"
"                        " APP_DEFAULT_FONT ")\n"
"  --pending-file FILE   where unsent flags are kept (default\n"
"                        $XDG_STATE_HOME/dadc-draw/pending or\n"
"                        ~/.local/state/dadc-draw/pending)\n"
"  --no-pending-file     keep unsent flags in memory only\n"
"  --size WxH            window size in points (default 1000x660)\n"
"  --scale F             make the interface F times larger (0.5-4)\n"
"  --brush F             brush diameter, fraction of the canvas (%.3f)\n"
"  --replay FILE         run a script of strokes, keys and waits, then\n"
"                        quit (format below)\n"
"  --replay-timeout SEC  give up a replay wait after SEC s (default 30)\n"
"  --screenshot FILE     save the window as PNG when the program ends\n"
"  --help, --version\n"
"\n"
"Replay scripts: one command a line; '#' (at the start or after a space)\n"
"starts a comment.\n"
"  stroke X,Y X,Y ...    a stroke, canvas units 0..1 from the top left\n"
"  stroke-px X,Y ...     the same in pixels of a 280x280 canvas\n"
"  touch X,Y ...         a stroke drawn with a finger, canvas units\n"
"  key NAME              a key press: 7, c, ctrl+z, F1, Escape, Tab, ...\n"
"  wait-ms N             let N milliseconds pass\n"
"  wait-prediction       until the current drawing's prediction is in\n"
"  wait-connected        until the server has answered Hello\n"
"  wait-disconnected     until the connection is down\n"
"  wait-flags            until no flag waits to be delivered\n"
"  wait-stats            until fresh dashboard figures have arrived\n"
"  wait-notice           until the server's next event (round, model)\n"
"  resize W H            set the window size\n"
"  save-mnist FILE       the 28x28 image the model sees, as PNG\n"
"  save-drawing FILE     the drawing the model's input is made from,\n"
"                        296x296 white on black, as PNG\n"
"  screenshot FILE       the window as it is now, as PNG\n"
"  quit                  end here\n"
"\n"
"Exit status: 0 ok, 1 failure (display, font, pending file), 2 usage,\n"
"3 a replay wait timed out or a replay save failed.\n",
            (double)CANVAS_BRUSH_DEFAULT);
}

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "%s: ", APP_NAME);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\ntry '%s --help'\n", APP_NAME);
    return APP_EXIT_USAGE;
}

static bool float_parse(const char *s, float lo, float hi, float *out)
{
    char *end;
    float v;

    errno = 0;
    v = strtof(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(v >= lo && v <= hi))
        return false;
    *out = v;
    return true;
}

enum {
    OPT_SERVER = 256, OPT_NAME, OPT_FONT, OPT_PENDING, OPT_NO_PENDING,
    OPT_SIZE, OPT_SCALE, OPT_BRUSH, OPT_REPLAY, OPT_REPLAY_TIMEOUT,
    OPT_SCREENSHOT, OPT_HELP, OPT_VERSION,
};

static const struct option long_options[] = {
    {"server", required_argument, NULL, OPT_SERVER},
    {"name", required_argument, NULL, OPT_NAME},
    {"font", required_argument, NULL, OPT_FONT},
    {"pending-file", required_argument, NULL, OPT_PENDING},
    {"no-pending-file", no_argument, NULL, OPT_NO_PENDING},
    {"size", required_argument, NULL, OPT_SIZE},
    {"scale", required_argument, NULL, OPT_SCALE},
    {"brush", required_argument, NULL, OPT_BRUSH},
    {"replay", required_argument, NULL, OPT_REPLAY},
    {"replay-timeout", required_argument, NULL, OPT_REPLAY_TIMEOUT},
    {"screenshot", required_argument, NULL, OPT_SCREENSHOT},
    {"help", no_argument, NULL, OPT_HELP},
    {"version", no_argument, NULL, OPT_VERSION},
    {NULL, 0, NULL, 0},
};

/* One option; returns -1 to go on or an exit status. */
static int option_apply(draw_options_t *o, int opt, const char *arg)
{
    float v;
    char end;

    switch (opt) {
    case OPT_SERVER: o->server = arg; break;
    case OPT_NAME: o->name = arg; break;
    case OPT_FONT: o->font = arg; break;
    case OPT_PENDING: o->pending_file = arg; break;
    case OPT_NO_PENDING: o->no_pending_file = true; break;
    case OPT_REPLAY: o->replay = arg; break;
    case OPT_SCREENSHOT: o->screenshot = arg; break;
    case OPT_SIZE:
        if (sscanf(arg, "%dx%d%c", &o->width, &o->height, &end) != 2 ||
            o->width < APP_MIN_WIDTH || o->height < APP_MIN_HEIGHT ||
            o->width > 16384 ||
            o->height > 16384)
            return usage_error("--size: '%s' is not WxH, at least "
                               "760x600", arg);
        break;
    case OPT_SCALE:
        if (!float_parse(arg, 0.5f, 4.0f, &o->scale))
            return usage_error("--scale: '%s' is not 0.5-4", arg);
        break;
    case OPT_BRUSH:
        if (!float_parse(arg, 0.01f, 0.3f, &o->brush))
            return usage_error("--brush: '%s' is not 0.01-0.3", arg);
        break;
    case OPT_REPLAY_TIMEOUT:
        if (!float_parse(arg, 0.1f, 3600.0f, &v))
            return usage_error("--replay-timeout: '%s' is not 0.1-3600 "
                               "seconds", arg);
        o->replay_timeout_ms = (int)(v * 1000.0f);
        break;
    case OPT_HELP:
        usage_print(stdout);
        return APP_EXIT_OK;
    case OPT_VERSION:
        printf("dadc-draw %s\n", DRAW_VERSION);
        return APP_EXIT_OK;
    default:
        fprintf(stderr, "try '%s --help'\n", APP_NAME);
        return APP_EXIT_USAGE;
    }
    return -1;
}

static int options_parse(draw_options_t *o, int argc, char **argv)
{
    const char *env_font = getenv("DADC_DRAW_FONT");
    char host[256];
    uint16_t port;
    dadc_error_t err;
    int opt, rc;

    *o = (draw_options_t){
        .server = dadc_client_default_server(),
        .name = getenv("USER") ? getenv("USER") : "anonymous",
        .font = env_font && env_font[0] ? env_font : APP_DEFAULT_FONT,
        .replay_timeout_ms = 30000, .width = 1000, .height = 660,
        .scale = 1.0f, .brush = CANVAS_BRUSH_DEFAULT,
    };
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":", long_options, NULL)) != -1) {
        if (opt == ':')
            return usage_error("%s needs a value", argv[optind - 1]);
        if (opt == '?')
            return usage_error("unknown option '%s'", argv[optind - 1]);
        if ((rc = option_apply(o, opt, optarg)) >= 0)
            return rc;
    }
    if (optind < argc)
        return usage_error("unexpected argument '%s'", argv[optind]);
    if (dadc_client_parse_address(o->server, host, sizeof(host), &port,
                                  &err) != 0)
        return usage_error("--server: %s", dadc_error_message(&err));
    if (access(o->font, R_OK) != 0) {
        fprintf(stderr, "%s: font %s: %s (install Debian's "
                "fonts-dejavu-core or pass --font FILE)\n", APP_NAME,
                o->font, strerror(errno));
        return APP_EXIT_FAILURE;
    }
    return -1;
}

void app_drawing_render(app_t *app)
{
    canvas_render(&app->canvas, app->drawing_buf, CANVAS_MODEL_SIDE);
    memset(app->model_buf, 0, sizeof(app->model_buf));
    for (int y = 0; y < CANVAS_MODEL_SIDE; y++)
        memcpy(app->model_buf + (size_t)(y + APP_MODEL_PAD) * APP_MODEL_SIDE
                   + APP_MODEL_PAD,
               app->drawing_buf + (size_t)y * CANVAS_MODEL_SIDE,
               CANVAS_MODEL_SIDE);
}

bool app_mnist_update(app_t *app)
{
    dadc_error_t err;

    if (canvas_is_empty(&app->canvas))
        return false;
    if (app->mnist_valid && app->mnist_generation == app->canvas.generation)
        return true;
    app_drawing_render(app);
    app->mnist_valid = image_to_mnist(app->model_buf, APP_MODEL_SIDE,
                                      APP_MODEL_SIDE, app->mnist,
                                      &err) == 0;
    app->mnist_generation = app->canvas.generation;
    return app->mnist_valid;
}

static void flag_answer_show(app_t *app, const net_msg_t *m)
{
    if (m->fooled)
        snprintf(app->result, sizeof(app->result), "You fooled it! The "
                 "model said %u, you said %d.%s", m->predicted, m->label,
                 m->round_started ? " That started a training round." : "");
    else
        snprintf(app->result, sizeof(app->result), "Not fooled: the model "
                 "also said %u. Try a trickier %d.", m->predicted,
                 m->label);
    app->result_tone = m->fooled ? 1 : -1;
}

static void net_drain(app_t *app)
{
    net_msg_t *m = malloc(sizeof(*m));
    net_status_t st;

    while (m != NULL && net_poll(app->net, m)) {
        app->dirty = true;
        if (m->kind == NET_MSG_PREDICTION) {
            app->prediction.valid = true;
            app->prediction.seq = m->seq;
            app->prediction.digit = m->digit % 10;
            app->prediction.model_version = m->model_version;
            memcpy(app->prediction.probabilities, m->probabilities,
                   sizeof(m->probabilities));
        } else if (m->kind == NET_MSG_FLAG) {
            flag_answer_show(app, m);
        } else if (m->kind == NET_MSG_FIGURES) {
            app->figures.msg = *m;
            app->figures.valid = true;
            app->figures_count++;
        } else {
            snprintf(app->notice, sizeof(app->notice), "%s", m->text);
            app->event_count += m->event;
            app->notice_at = SDL_GetTicks();
            /* The model may have changed: ask again about the drawing. */
            if (!canvas_is_empty(&app->canvas))
                app->predict_due = SDL_GetTicks();
        }
    }
    free(m);

    net_status_get(app->net, &st);
    if (memcmp(&st, &app->status, sizeof(st)) != 0) {
        if (st.retry_in_ms / 1000 != app->status.retry_in_ms / 1000 ||
            st.state != app->status.state || st.flags_waiting !=
            app->status.flags_waiting || st.model_version !=
            app->status.model_version || st.my_submitted !=
            app->status.my_submitted || st.pending_fooled !=
            app->status.pending_fooled || st.figures_known !=
            app->status.figures_known)
            app->dirty = true;
        app->status = st;
    }
}

static void predict_tick(app_t *app)
{
    uint32_t now = SDL_GetTicks();

    if (app->predict_due == 0 || !SDL_TICKS_PASSED(now, app->predict_due))
        return;
    app->predict_due = 0;
    if (app_mnist_update(app)) {
        net_predict(app->net, app->mnist, app->mnist_generation);
        app->predict_sent_at = now;
    }
    app->dirty = true;
}

/* Draw a frame (taking a wanted screenshot before it is shown). */
static void frame_show(app_t *app)
{
    dadc_error_t err;

    ui_render(app);
    if (app->shot_path[0] != '\0') {
        dadc_error_clear(&err);
        if (shot_save(app, app->shot_path, &err) != 0) {
            fprintf(stderr, "%s: screenshot: %s\n", APP_NAME,
                    dadc_error_message(&err));
            app->exit_status = APP_EXIT_REPLAY;
            app->quit = true;
        }
        app->shot_path[0] = '\0';
    }
    SDL_RenderPresent(app->renderer);
    app->dirty = false;
}

static int loop_wait_ms(const app_t *app, int player_ms)
{
    int ms = 500;

    if (app->predict_due != 0) {
        int left = (int)(app->predict_due - SDL_GetTicks());

        ms = left < 0 ? 0 : (left < ms ? left : ms);
    }
    if (player_ms >= 0 && player_ms < ms)
        ms = player_ms;
    return ms;
}

static void loop_run(app_t *app, player_t *pl)
{
    int player_ms = -1;
    uint32_t drawn_at = 0;
    SDL_Event ev;

    while (!app->quit) {
        if (SDL_WaitEventTimeout(&ev, loop_wait_ms(app, player_ms))) {
            input_event(app, &ev);
            while (SDL_PollEvent(&ev))
                input_event(app, &ev);
        }
        net_drain(app);
        predict_tick(app);
        if (pl != NULL)
            player_ms = player_step(pl, app);
        /* The status bar's countdowns and notices age even when idle. */
        if (SDL_GetTicks() - drawn_at > 1000)
            app->dirty = true;
        if (app->dirty || app->shot_path[0] != '\0') {
            frame_show(app);
            drawn_at = SDL_GetTicks();
        }
    }
}

static int video_open(app_t *app, const draw_options_t *o)
{
    SDL_SetHint(SDL_HINT_RENDER_SCALE_QUALITY, "1");
    SDL_SetHint(SDL_HINT_MOUSE_TOUCH_EVENTS, "0");
    if (SDL_Init(SDL_INIT_VIDEO) != 0 || TTF_Init() != 0) {
        fprintf(stderr, "%s: cannot open the display: %s\n", APP_NAME,
                SDL_GetError());
        return -1;
    }
    app->window = SDL_CreateWindow(
        "DADC draw", SDL_WINDOWPOS_CENTERED, SDL_WINDOWPOS_CENTERED,
        o->width, o->height, SDL_WINDOW_RESIZABLE |
        SDL_WINDOW_ALLOW_HIGHDPI);
    if (app->window == NULL) {
        fprintf(stderr, "%s: cannot open a window: %s\n", APP_NAME,
                SDL_GetError());
        return -1;
    }
    SDL_SetWindowMinimumSize(app->window, APP_MIN_WIDTH, APP_MIN_HEIGHT);
    app->renderer = SDL_CreateRenderer(app->window, -1, 0);
    if (app->renderer == NULL)
        app->renderer = SDL_CreateRenderer(app->window, -1,
                                           SDL_RENDERER_SOFTWARE);
    if (app->renderer == NULL) {
        fprintf(stderr, "%s: cannot render: %s\n", APP_NAME,
                SDL_GetError());
        return -1;
    }
    ui_layout(app);
    if (app->fonts.px == 0) {
        fprintf(stderr, "%s: font %s: %s\n", APP_NAME, app->font_path,
                TTF_GetError());
        return -1;
    }
    return 0;
}

static void video_close(app_t *app)
{
    ui_fonts_close(app);
    if (app->canvas_tex != NULL)
        SDL_DestroyTexture(app->canvas_tex);
    if (app->preview_tex != NULL)
        SDL_DestroyTexture(app->preview_tex);
    if (app->renderer != NULL)
        SDL_DestroyRenderer(app->renderer);
    if (app->window != NULL)
        SDL_DestroyWindow(app->window);
    if (TTF_WasInit())
        TTF_Quit();
    SDL_Quit();
}

static int net_open(app_t *app, const draw_options_t *o)
{
    char path[4096];
    net_config_t cfg = {.server = o->server, .annotator = o->name};
    dadc_error_t err;

    if (!o->no_pending_file) {
        cfg.pending_path = o->pending_file;
        if (cfg.pending_path == NULL &&
            pending_default_path(path, sizeof(path)) == 0)
            cfg.pending_path = path;
    }
    cfg.wake_event = SDL_RegisterEvents(1);
    dadc_error_clear(&err);
    if (net_start(&app->net, &cfg, &err) != 0) {
        fprintf(stderr, "%s: %s\n", APP_NAME, dadc_error_message(&err));
        if (err.code == DADC_EFORMAT)
            fprintf(stderr, "%s: the file is left as it is; fix it or "
                    "move it away (--pending-file chooses another)\n",
                    APP_NAME);
        return -1;
    }
    net_status_get(app->net, &app->status);
    return 0;
}

static int script_open(player_t *pl, const draw_options_t *o)
{
    dadc_error_t err;

    memset(pl, 0, sizeof(*pl));
    pl->timeout_ms = o->replay_timeout_ms;
    dadc_error_clear(&err);
    if (replay_load(&pl->script, o->replay, &err) != 0) {
        fprintf(stderr, "%s: %s\n", APP_NAME, dadc_error_message(&err));
        return -1;
    }
    return 0;
}

static void final_screenshot(app_t *app, const char *path)
{
    snprintf(app->shot_path, sizeof(app->shot_path), "%s", path);
    frame_show(app);
}

int main(int argc, char **argv)
{
    static app_t app;
    player_t player;
    draw_options_t o;
    int rc = options_parse(&o, argc, argv);

    if (rc >= 0)
        return rc;
    if (o.replay != NULL && script_open(&player, &o) != 0)
        return APP_EXIT_USAGE;
    app.font_path = o.font;
    app.ui_scale = o.scale;
    app.focus = -1;
    canvas_init(&app.canvas, o.brush);

    rc = APP_EXIT_FAILURE;
    if (video_open(&app, &o) == 0 && net_open(&app, &o) == 0) {
        loop_run(&app, o.replay ? &player : NULL);
        if (o.screenshot != NULL)
            final_screenshot(&app, o.screenshot);
        rc = app.exit_status;
        net_stop(app.net);
    }
    video_close(&app);
    canvas_free(&app.canvas);
    free(app.view);
    if (o.replay != NULL)
        replay_free(&player.script);
    return rc;
}
