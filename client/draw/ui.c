/*
 * The drawing view: layout, canvas, prediction panel, flag buttons,
 * status bar and the help overlay. Sizes are in design units (one unit
 * is a window point at --scale 1) times the drawable pixels per point,
 * so the window looks the same on a HiDPI screen, only sharper.
 */
#include "app.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const SDL_Color col_bg = {236, 239, 243, 255};
static const SDL_Color col_paper = {255, 255, 255, 255};
static const SDL_Color col_ink = {22, 26, 36, 255};
static const SDL_Color col_text = {30, 34, 44, 255};
static const SDL_Color col_dim = {110, 116, 130, 255};
static const SDL_Color col_line = {196, 201, 210, 255};
static const SDL_Color col_accent = {38, 110, 214, 255};
static const SDL_Color col_button = {250, 251, 253, 255};
static const SDL_Color col_good = {24, 140, 72, 255};
static const SDL_Color col_bad = {196, 56, 44, 255};
static const SDL_Color col_warn = {184, 112, 0, 255};
static const SDL_Color col_status = {44, 50, 62, 255};
static const SDL_Color col_status_text = {232, 236, 242, 255};

static int u(const app_t *app, float v)
{
    return (int)(v * app->layout.unit + 0.5f);
}

void ui_rect_fill(app_t *app, SDL_Rect r, SDL_Color c)
{
    SDL_SetRenderDrawColor(app->renderer, c.r, c.g, c.b, c.a);
    SDL_RenderFillRect(app->renderer, &r);
}

void ui_rect_frame(app_t *app, SDL_Rect r, SDL_Color c, int width)
{
    SDL_Rect side;

    SDL_SetRenderDrawColor(app->renderer, c.r, c.g, c.b, c.a);
    for (int i = 0; i < 4; i++) {
        side = r;
        if (i < 2)
            side.h = width;
        else
            side.w = width;
        if (i == 1)
            side.y = r.y + r.h - width;
        if (i == 3)
            side.x = r.x + r.w - width;
        SDL_RenderFillRect(app->renderer, &side);
    }
}

/* align: 0 left, 1 centre, 2 right of x; y is the top. */
void ui_text(app_t *app, TTF_Font *font, const char *text, int x, int y,
             SDL_Color color, int align)
{
    SDL_Surface *s;
    SDL_Texture *t;
    SDL_Rect dst;

    if (text[0] == '\0')
        return;
    s = TTF_RenderUTF8_Blended(font, text, color);
    if (s == NULL)
        return;
    t = SDL_CreateTextureFromSurface(app->renderer, s);
    dst.w = s->w;
    dst.h = s->h;
    dst.x = align == 1 ? x - s->w / 2 : (align == 2 ? x - s->w : x);
    dst.y = y;
    SDL_FreeSurface(s);
    if (t == NULL)
        return;
    SDL_RenderCopy(app->renderer, t, NULL, &dst);
    SDL_DestroyTexture(t);
}

/* Width of text in pixels. */
static int text_width(TTF_Font *font, const char *text)
{
    int w = 0, h = 0;

    TTF_SizeUTF8(font, text, &w, &h);
    return w;
}

void ui_fonts_close(app_t *app)
{
    TTF_Font **f[] = {&app->fonts.small, &app->fonts.normal,
                      &app->fonts.large, &app->fonts.huge};

    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
        if (*f[i] != NULL)
            TTF_CloseFont(*f[i]);
        *f[i] = NULL;
    }
    app->fonts.px = 0;
}

/* (Re)open the fonts at the sizes the layout's unit asks for. */
int ui_fonts_open(app_t *app)
{
    int px = u(app, 15);

    if (app->fonts.px == px)
        return 0;
    ui_fonts_close(app);
    app->fonts.small = TTF_OpenFont(app->font_path, u(app, 12));
    app->fonts.normal = TTF_OpenFont(app->font_path, px);
    app->fonts.large = TTF_OpenFont(app->font_path, u(app, 22));
    app->fonts.huge = TTF_OpenFont(app->font_path, u(app, 96));
    if (app->fonts.small == NULL || app->fonts.normal == NULL ||
        app->fonts.large == NULL || app->fonts.huge == NULL) {
        ui_fonts_close(app);
        return -1;
    }
    app->fonts.px = px;
    return 0;
}

static void button_add(app_t *app, SDL_Rect r, app_action_t action,
                       const char *label)
{
    ui_button_t *b;

    if (app->button_count >= APP_MAX_BUTTONS)
        return;
    b = &app->buttons[app->button_count++];
    b->rect = r;
    b->action = action;
    snprintf(b->label, sizeof(b->label), "%s", label);
}

static void layout_toolbar(app_t *app, int y)
{
    static const struct {
        app_action_t action;
        const char *label;
    } tools[] = {
        {ACT_CLEAR, "Clear (C)"},
        {ACT_UNDO, "Undo (Z)"},
        {ACT_DASHBOARD, "Dashboard (D)"},
        {ACT_HELP, "Help (?)"},
    };
    SDL_Rect c = app->layout.canvas;
    int gap = u(app, 8), n = 4;
    int w = (c.w - gap * (n - 1)) / n;

    for (int i = 0; i < n; i++) {
        SDL_Rect r = {c.x + i * (w + gap), y, w, u(app, 36)};

        button_add(app, r, tools[i].action, tools[i].label);
    }
}

static void layout_panel(app_t *app)
{
    app_layout_t *l = &app->layout;
    int pad = u(app, 14), x = l->panel.x + pad, w = l->panel.w - 2 * pad;
    int y = l->panel.y + pad, gap = u(app, 8), bw, side;

    side = u(app, 28 * 4);
    l->digit = (SDL_Rect){x, y, w - side - pad, u(app, 150)};
    l->preview = (SDL_Rect){x + w - side, y + u(app, 24), side, side};
    y += l->digit.h + pad;
    l->bars = (SDL_Rect){x, y, w, u(app, 120)};
    y += l->bars.h + pad + u(app, 26);

    bw = (w - 4 * gap) / 5;
    for (int d = 0; d < 10; d++) {
        SDL_Rect r = {x + (d % 5) * (bw + gap), y + (d / 5) *
                      (u(app, 40) + gap), bw, u(app, 40)};
        char label[4];

        snprintf(label, sizeof(label), "%d", d);
        button_add(app, r, (app_action_t)(ACT_FLAG0 + d), label);
    }
    y += 2 * u(app, 40) + gap + pad;
    l->result = (SDL_Rect){x, y, w, l->panel.y + l->panel.h - y};
}

void ui_layout(app_t *app)
{
    app_layout_t *l = &app->layout;
    int ww, wh, m, status_h, tool_h, avail, pw, side;

    SDL_GetWindowSize(app->window, &ww, &wh);
    SDL_GetRendererOutputSize(app->renderer, &l->width, &l->height);
    l->unit = (ww > 0 ? (float)l->width / (float)ww : 1.0f) *
              app->ui_scale;
    m = u(app, 12);
    status_h = u(app, 30);
    tool_h = u(app, 36);

    avail = l->height - status_h - 3 * m - tool_h;
    pw = l->width * 2 / 5;
    pw = pw < u(app, 330) ? u(app, 330) : (pw > u(app, 460) ? u(app, 460)
                                                            : pw);
    side = l->width - pw - 3 * m;
    side = side < avail ? side : avail;
    side = side < 16 ? 16 : side;
    l->canvas = (SDL_Rect){m, m, side, side};
    l->panel = (SDL_Rect){2 * m + side, m, l->width - 3 * m - side,
                          l->height - status_h - 2 * m};
    l->status = (SDL_Rect){0, l->height - status_h, l->width, status_h};

    app->button_count = 0;
    if (app->dashboard) {
        SDL_Rect r = {m, l->status.y - m - tool_h, u(app, 220), tool_h};

        button_add(app, r, ACT_DASHBOARD, "Back to drawing (D)");
    } else {
        layout_toolbar(app, m + side + m);
        layout_panel(app);
    }
    if (app->focus >= app->button_count)
        app->focus = -1;
    ui_fonts_open(app);
    app->dirty = true;
}

/* Bring the display-size raster and its texture up to date. */
static void view_sync(app_t *app)
{
    int side = app->layout.canvas.w;
    uint32_t *px;
    void *pixels;
    int pitch;

    if (side != app->view_side || app->view == NULL) {
        free(app->view);
        app->view = malloc((size_t)side * (size_t)side);
        if (app->canvas_tex != NULL)
            SDL_DestroyTexture(app->canvas_tex);
        app->canvas_tex = SDL_CreateTexture(
            app->renderer, SDL_PIXELFORMAT_ARGB8888,
            SDL_TEXTUREACCESS_STREAMING, side, side);
        app->view_side = app->view ? side : 0;
        app->view_stale = true;
    }
    if (app->view == NULL || app->canvas_tex == NULL)
        return;
    if (app->view_stale || app->view_generation != app->canvas.generation)
        canvas_render(&app->canvas, app->view, side);
    app->view_stale = false;
    app->view_generation = app->canvas.generation;

    if (SDL_LockTexture(app->canvas_tex, NULL, &pixels, &pitch) != 0)
        return;
    for (int y = 0; y < side; y++) {
        const uint8_t *src = app->view + (size_t)y * (size_t)side;

        px = (uint32_t *)((uint8_t *)pixels + (size_t)y * (size_t)pitch);
        for (int x = 0; x < side; x++) {
            /* paper to ink by coverage */
            uint32_t a = src[x], b = 255 - a;
            uint32_t r = (col_paper.r * b + col_ink.r * a) / 255;
            uint32_t g = (col_paper.g * b + col_ink.g * a) / 255;
            uint32_t bl = (col_paper.b * b + col_ink.b * a) / 255;

            px[x] = 0xff000000u | r << 16 | g << 8 | bl;
        }
    }
    SDL_UnlockTexture(app->canvas_tex);
}

static void canvas_draw(app_t *app)
{
    SDL_Rect c = app->layout.canvas;

    view_sync(app);
    ui_rect_fill(app, c, col_paper);
    if (app->canvas_tex != NULL)
        SDL_RenderCopy(app->renderer, app->canvas_tex, NULL, &c);
    ui_rect_frame(app, (SDL_Rect){c.x - 1, c.y - 1, c.w + 2, c.h + 2},
                  col_line, 1);
    if (canvas_is_empty(&app->canvas))
        ui_text(app, app->fonts.large, "Draw a digit here", c.x + c.w / 2,
                c.y + c.h / 2 - u(app, 12), col_line, 1);

    if (app->kb_pen) {
        int r = (int)(app->canvas.brush * c.w * 0.5f) + 2;
        SDL_Rect k = {c.x + (int)(app->kb_x * c.w) - r,
                      c.y + (int)(app->kb_y * c.h) - r, 2 * r, 2 * r};

        ui_rect_frame(app, k, app->kb_down ? col_bad : col_accent,
                      u(app, 2));
    }
}

static void button_draw(app_t *app, int i)
{
    const ui_button_t *b = &app->buttons[i];
    TTF_Font *f = b->action >= ACT_FLAG0 ? app->fonts.large
                                         : app->fonts.normal;
    int h;

    if (text_width(f, b->label) > b->rect.w - u(app, 6))
        f = app->fonts.small;   /* a narrow window */
    h = TTF_FontHeight(f);

    ui_rect_fill(app, b->rect, col_button);
    ui_rect_frame(app, b->rect, i == app->focus ? col_accent : col_line,
                  i == app->focus ? u(app, 3) : 1);
    ui_text(app, f, b->label, b->rect.x + b->rect.w / 2,
            b->rect.y + (b->rect.h - h) / 2, col_text, 1);
}

/* The big digit and what it rests on. */
static void prediction_draw(app_t *app)
{
    const app_prediction_t *p = &app->prediction;
    SDL_Rect r = app->layout.digit;
    int cx = r.x + r.w / 2, y = r.y + u(app, 20);
    char line[96];
    bool fresh = p->valid && p->seq == app->canvas.generation;

    ui_text(app, app->fonts.normal, "Model says", r.x, r.y, col_dim, 0);
    if (canvas_is_empty(&app->canvas)) {
        ui_text(app, app->fonts.huge, "\xe2\x80\x93", cx, y, col_line, 1);
        return;
    }
    if (p->valid) {
        snprintf(line, sizeof(line), "%u", p->digit);
        ui_text(app, app->fonts.huge, line, cx, y,
                fresh ? col_accent : col_dim, 1);
        snprintf(line, sizeof(line), "%.0f%% sure, model v%u",
                 100.0 * p->probabilities[p->digit % 10], p->model_version);
        ui_text(app, app->fonts.normal, line, cx, r.y + r.h - u(app, 18),
                col_text, 1);
        return;
    }
    ui_text(app, app->fonts.huge, "?", cx, y, col_line, 1);
    ui_text(app, app->fonts.normal,
            app->status.state == NET_CONNECTED ? "asking the model..."
                                               : "offline: no prediction",
            cx, r.y + r.h - u(app, 18), col_dim, 1);
}

static void preview_draw(app_t *app)
{
    SDL_Rect r = app->layout.preview;
    void *pixels;
    int pitch;

    ui_text(app, app->fonts.normal, "Model sees", r.x, r.y - u(app, 24),
            col_dim, 0);
    ui_rect_fill(app, r, (SDL_Color){0, 0, 0, 255});
    if (app->preview_tex == NULL) {
        app->preview_tex = SDL_CreateTexture(
            app->renderer, SDL_PIXELFORMAT_ARGB8888,
            SDL_TEXTUREACCESS_STREAMING, 28, 28);
        if (app->preview_tex == NULL)
            return;
        SDL_SetTextureScaleMode(app->preview_tex, SDL_ScaleModeNearest);
    }
    if (!app->mnist_valid || canvas_is_empty(&app->canvas))
        return;
    if (SDL_LockTexture(app->preview_tex, NULL, &pixels, &pitch) == 0) {
        for (int y = 0; y < 28; y++) {
            uint32_t *row = (uint32_t *)((uint8_t *)pixels + y * pitch);

            for (int x = 0; x < 28; x++) {
                uint32_t v = app->mnist[y * 28 + x];

                row[x] = 0xff000000u | v << 16 | v << 8 | v;
            }
        }
        SDL_UnlockTexture(app->preview_tex);
    }
    SDL_RenderCopy(app->renderer, app->preview_tex, NULL, &r);
}

static void bars_draw(app_t *app)
{
    const app_prediction_t *p = &app->prediction;
    SDL_Rect r = app->layout.bars;
    int label_h = TTF_FontHeight(app->fonts.normal) + u(app, 2);
    int slot = r.w / 10, gap = u(app, 6), top = r.y + u(app, 16);
    int full = r.h - label_h - u(app, 16);
    bool show = p->valid && !canvas_is_empty(&app->canvas);

    ui_rect_fill(app, (SDL_Rect){r.x, top + full, r.w, 1}, col_line);
    for (int d = 0; d < 10; d++) {
        int x = r.x + d * slot + gap / 2;
        float prob = show ? p->probabilities[d] : 0.0f;
        int h = (int)(prob * (float)full + 0.5f);
        char label[8];

        if (h > 0)
            ui_rect_fill(app, (SDL_Rect){x, top + full - h, slot - gap, h},
                         (uint32_t)d == p->digit ? col_accent : col_dim);
        if (prob >= 0.05f) {
            snprintf(label, sizeof(label), "%.0f", 100.0 * prob);
            ui_text(app, app->fonts.small, label, x + (slot - gap) / 2,
                    top + full - h - u(app, 15), col_text, 1);
        }
        snprintf(label, sizeof(label), "%d", d);
        ui_text(app, app->fonts.normal, label, x + (slot - gap) / 2,
                top + full + u(app, 2), col_text, 1);
    }
}

/* Draw text wrapped to width w; returns the height used. */
static int text_wrapped(app_t *app, const char *text, int x, int y, int w,
                        SDL_Color c)
{
    SDL_Surface *s = TTF_RenderUTF8_Blended_Wrapped(app->fonts.normal,
                                                    text, c, (Uint32)w);
    SDL_Texture *t = s ? SDL_CreateTextureFromSurface(app->renderer, s)
                       : NULL;
    int h = s ? s->h : 0;

    if (t != NULL) {
        SDL_Rect dst = {x, y, s->w, s->h};

        SDL_RenderCopy(app->renderer, t, NULL, &dst);
        SDL_DestroyTexture(t);
    }
    SDL_FreeSurface(s);
    return h;
}

static void result_draw(app_t *app)
{
    SDL_Rect r = app->layout.result;
    int lh = TTF_FontHeight(app->fonts.normal) + u(app, 4), y = r.y;
    char line[200];

    if (app->result[0] != '\0') {
        SDL_Surface *s = TTF_RenderUTF8_Blended_Wrapped(
            app->fonts.large, app->result,
            app->result_tone > 0 ? col_good
                                 : (app->result_tone < 0 ? col_bad : col_warn),
            (Uint32)r.w);
        SDL_Texture *t = s ? SDL_CreateTextureFromSurface(app->renderer, s)
                           : NULL;

        if (t != NULL) {
            SDL_Rect dst = {r.x, y, s->w, s->h};

            SDL_RenderCopy(app->renderer, t, NULL, &dst);
            y += s->h + u(app, 6);
            SDL_DestroyTexture(t);
        }
        SDL_FreeSurface(s);
    }
    if (app->status.figures_known) {
        unsigned long long f = app->status.my_fooled;
        unsigned long long n = app->status.my_submitted;

        snprintf(line, sizeof(line), "You have fooled it %llu time%s in "
                 "%llu tr%s.", f, f == 1 ? "" : "s", n, n == 1 ? "y" : "ies");
        ui_text(app, app->fonts.normal, line, r.x, y, col_text, 0);
        y += lh;
    }
    if (app->status.state != NET_CONNECTED && app->status.error[0]) {
        snprintf(line, sizeof(line), "Server: %s", app->status.error);
        y += text_wrapped(app, line, r.x, y, r.w, col_dim) + u(app, 4);
    }
    ui_text(app, app->fonts.normal, "Press ? for the keys.", r.x, y,
            col_dim, 0);
}

static void panel_draw(app_t *app)
{
    SDL_Rect r = app->layout.panel;

    ui_rect_fill(app, r, col_paper);
    ui_rect_frame(app, r, col_line, 1);
    prediction_draw(app);
    preview_draw(app);
    bars_draw(app);
    ui_text(app, app->fonts.normal,
            "What did you draw? Flag it with its digit:", app->layout.bars.x,
            app->layout.bars.y + app->layout.bars.h + u(app, 4), col_text,
            0);
    result_draw(app);
}

/* Draw one status item at *x, advancing it; false when out of room. */
static bool status_item(app_t *app, const char *text, SDL_Color c, int *x,
                        int limit)
{
    int w = text_width(app->fonts.normal, text);
    int y = app->layout.status.y +
            (app->layout.status.h - TTF_FontHeight(app->fonts.normal)) / 2;

    if (*x + w > limit)
        return false;
    ui_text(app, app->fonts.normal, text, *x, y, c, 0);
    *x += w + u(app, 22);
    return true;
}

static void status_connection(const net_status_t *st, char *buf, size_t n,
                              SDL_Color *c)
{
    if (st->state == NET_CONNECTED) {
        snprintf(buf, n, "\xe2\x97\x8f %s: connected", st->server);
        *c = (SDL_Color){110, 210, 130, 255};
    } else if (st->state == NET_CONNECTING) {
        snprintf(buf, n, "\xe2\x97\x8f %s: connecting...", st->server);
        *c = (SDL_Color){240, 190, 80, 255};
    } else {
        snprintf(buf, n, "\xe2\x97\x8f %s: disconnected, retry in %d s",
                 st->server, (st->retry_in_ms + 999) / 1000);
        *c = (SDL_Color){245, 110, 100, 255};
    }
}

static void status_draw(app_t *app)
{
    const net_status_t *st = &app->status;
    SDL_Rect r = app->layout.status;
    int x = r.x + u(app, 10), limit = r.x + r.w - u(app, 10);
    SDL_Color c;
    char buf[256];

    ui_rect_fill(app, r, col_status);
    status_connection(st, buf, sizeof(buf), &c);
    if (!status_item(app, buf, c, &x, limit))
        return;
    if (st->flags_waiting > 0) {
        snprintf(buf, sizeof(buf), "%d flag%s waiting to be sent",
                 st->flags_waiting, st->flags_waiting == 1 ? "" : "s");
        if (!status_item(app, buf, (SDL_Color){255, 170, 90, 255}, &x,
                         limit))
            return;
    }
    if (st->model_version != 0) {
        snprintf(buf, sizeof(buf), "model v%u", st->model_version);
        if (!status_item(app, buf, col_status_text, &x, limit))
            return;
    }
    if (st->figures_known) {
        snprintf(buf, sizeof(buf), "you fooled it %llu of %llu",
                 (unsigned long long)st->my_fooled,
                 (unsigned long long)st->my_submitted);
        if (!status_item(app, buf, col_status_text, &x, limit))
            return;
    }
    if (st->round_threshold != 0) {
        snprintf(buf, sizeof(buf), "%u/%u until retraining",
                 st->pending_fooled, st->round_threshold);
        if (!status_item(app, buf, col_status_text, &x, limit))
            return;
    }
    if (app->notice[0] != '\0' && SDL_GetTicks() - app->notice_at < 20000)
        status_item(app, app->notice, (SDL_Color){255, 214, 102, 255}, &x,
                    limit);
}

static const char *const help_keys[][2] = {
    {"Mouse, touch, pen", "draw on the canvas"},
    {"Arrow keys", "move the keyboard pen (Shift: faster)"},
    {"Space", "keyboard pen down / up"},
    {"0 - 9", "flag the drawing as that digit, then clear"},
    {"C, Delete", "clear the canvas"},
    {"Z, Ctrl+Z, Backspace", "undo the last stroke"},
    {"D", "dashboard / back to drawing"},
    {"Tab, Shift+Tab", "move between buttons"},
    {"Enter", "press the button in focus"},
    {"?, F1", "show / hide this help"},
    {"Esc", "close help or dashboard"},
    {"Ctrl+Q", "quit"},
};

static void help_draw(app_t *app)
{
    int n = (int)(sizeof(help_keys) / sizeof(help_keys[0]));
    int lh = TTF_FontHeight(app->fonts.normal) + u(app, 6);
    int w = u(app, 600), h = n * lh + u(app, 80);
    SDL_Rect box = {(app->layout.width - w) / 2,
                    (app->layout.height - h) / 2, w, h};
    int y = box.y + u(app, 18);

    SDL_SetRenderDrawBlendMode(app->renderer, SDL_BLENDMODE_BLEND);
    ui_rect_fill(app, (SDL_Rect){0, 0, app->layout.width,
                                 app->layout.height},
                 (SDL_Color){20, 24, 32, 150});
    SDL_SetRenderDrawBlendMode(app->renderer, SDL_BLENDMODE_NONE);
    ui_rect_fill(app, box, col_paper);
    ui_rect_frame(app, box, col_accent, u(app, 2));
    ui_text(app, app->fonts.large, "Keys", box.x + u(app, 20), y, col_text,
            0);
    y += u(app, 44);
    for (int i = 0; i < n; i++, y += lh) {
        ui_text(app, app->fonts.normal, help_keys[i][0], box.x + u(app, 20),
                y, col_accent, 0);
        ui_text(app, app->fonts.normal, help_keys[i][1],
                box.x + u(app, 220), y, col_text, 0);
    }
}

void ui_render(app_t *app)
{
    SDL_Color bg = col_bg;

    SDL_SetRenderDrawColor(app->renderer, bg.r, bg.g, bg.b, 255);
    SDL_RenderClear(app->renderer);
    if (app->dashboard) {
        SDL_Rect area = {0, 0, app->layout.width, app->layout.status.y};

        dash_render(app, area);
    } else {
        canvas_draw(app);
        panel_draw(app);
    }
    for (int i = 0; i < app->button_count; i++)
        button_draw(app, i);
    status_draw(app);
    if (app->help)
        help_draw(app);
}

void ui_canvas_changed(app_t *app)
{
    uint32_t now = SDL_GetTicks(), due, soonest;

    app->dirty = true;
    if (canvas_is_empty(&app->canvas)) {
        app->predict_due = 0;
        app->mnist_valid = false;
        return;
    }
    if (app->predict_due != 0)
        return;
    /* Ask 100 ms after the last change, but while the pen keeps moving
     * still ask every 250 ms, so the answer follows the drawing. */
    due = now + 100;
    soonest = app->predict_sent_at + 250;
    app->predict_due = SDL_TICKS_PASSED(soonest, due) ? soonest : due;
}
