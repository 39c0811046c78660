/*
 * The dashboard: the figures of the whole collection as two charts,
 * fooled examples per digit (bars over the submitted ones) and each
 * model version's accuracy on MNIST and on the held-out adversarial
 * examples (lines over the versions, in the order they were made).
 */
#include "app.h"

#include <stdio.h>

static const SDL_Color col_paper = {255, 255, 255, 255};
static const SDL_Color col_text = {30, 34, 44, 255};
static const SDL_Color col_dim = {110, 116, 130, 255};
static const SDL_Color col_line = {196, 201, 210, 255};
static const SDL_Color col_grid = {228, 231, 236, 255};
static const SDL_Color col_mnist = {38, 110, 214, 255};
static const SDL_Color col_adv = {222, 112, 30, 255};
static const SDL_Color col_submitted = {200, 214, 236, 255};
static const SDL_Color col_fooled = {196, 56, 44, 255};

static int u(const app_t *app, float v)
{
    return (int)(v * app->layout.unit + 0.5f);
}

static void legend_item(app_t *app, int *x, int y, SDL_Color c,
                        const char *text)
{
    int w = 0, h = 0;

    ui_rect_fill(app, (SDL_Rect){*x, y + u(app, 4), u(app, 12),
                                 u(app, 12)}, c);
    ui_text(app, app->fonts.normal, text, *x + u(app, 18), y, col_text, 0);
    TTF_SizeUTF8(app->fonts.normal, text, &w, &h);
    *x += w + u(app, 40);
}

static void digits_chart(app_t *app, SDL_Rect r, const net_msg_t *f)
{
    int top = r.y + u(app, 70), base = r.y + r.h - u(app, 30);
    int slot = (r.w - u(app, 20)) / 10, gap = u(app, 8), x;
    uint64_t most = 1;
    char buf[32];

    ui_text(app, app->fonts.large, "Fooled examples per true digit",
            r.x + u(app, 10), r.y + u(app, 8), col_text, 0);
    x = r.x + u(app, 10);
    legend_item(app, &x, r.y + u(app, 40), col_fooled, "fooled");
    legend_item(app, &x, r.y + u(app, 40), col_submitted, "submitted");
    for (int d = 0; d < 10; d++)
        most = f->digit_submitted[d] > most ? f->digit_submitted[d] : most;

    ui_rect_fill(app, (SDL_Rect){r.x + u(app, 10), base, r.w - u(app, 20),
                                 1}, col_line);
    for (int d = 0; d < 10; d++) {
        int bx = r.x + u(app, 10) + d * slot + gap / 2, bw = slot - gap;
        int hs = (int)((double)(base - top) * f->digit_submitted[d] / most);
        int hf = (int)((double)(base - top) * f->digit_fooled[d] / most);

        ui_rect_fill(app, (SDL_Rect){bx, base - hs, bw, hs}, col_submitted);
        ui_rect_fill(app, (SDL_Rect){bx + bw / 4, base - hf, bw / 2, hf},
                     col_fooled);
        snprintf(buf, sizeof(buf), "%llu/%llu",
                 (unsigned long long)f->digit_fooled[d],
                 (unsigned long long)f->digit_submitted[d]);
        ui_text(app, app->fonts.small, buf, bx + bw / 2,
                base - hs - u(app, 16), col_text, 1);
        snprintf(buf, sizeof(buf), "%d", d);
        ui_text(app, app->fonts.normal, buf, bx + bw / 2, base + u(app, 4),
                col_text, 1);
    }
}

/* The y axis runs from lo to 100 %, lo a multiple of 10 under the data. */
static double accuracy_floor(const net_msg_t *f)
{
    double lo = 1.0;

    for (int i = 0; i < f->model_count; i++) {
        lo = f->models[i].mnist_accuracy < lo ? f->models[i].mnist_accuracy
                                              : lo;
        lo = f->models[i].adversarial_accuracy < lo
                 ? f->models[i].adversarial_accuracy : lo;
    }
    lo = (double)(int)(lo * 10.0) / 10.0;
    return lo > 0.9 ? 0.9 : (lo < 0.0 ? 0.0 : lo);
}

static void series_draw(app_t *app, const net_msg_t *f, SDL_Rect plot,
                        double lo, bool adversarial, SDL_Color c)
{
    int n = f->model_count, dot = u(app, 4);
    int px = 0, py = 0;

    SDL_SetRenderDrawColor(app->renderer, c.r, c.g, c.b, 255);
    for (int i = 0; i < n; i++) {
        const net_model_point_t *m = &f->models[i];
        double a = adversarial ? m->adversarial_accuracy : m->mnist_accuracy;
        int x = plot.x + (n == 1 ? plot.w / 2 : plot.w * i / (n - 1));
        int y = plot.y + plot.h - (int)((a - lo) / (1.0 - lo) * plot.h);
        SDL_Rect mark = {x - dot, y - dot, 2 * dot, 2 * dot};

        if (i > 0) {
            for (int t = -1; t <= 1; t++)
                SDL_RenderDrawLine(app->renderer, px, py + t, x, y + t);
        }
        if (m->promoted || m->version == 1)
            SDL_RenderFillRect(app->renderer, &mark);
        else
            ui_rect_frame(app, mark, c, u(app, 2));
        px = x;
        py = y;
    }
}

static void versions_axes(app_t *app, SDL_Rect plot, const net_msg_t *f,
                          double lo)
{
    int n = f->model_count, step = n > 12 ? (n + 11) / 12 : 1;
    char buf[32];

    for (int k = 0; k <= 4; k++) {
        double a = lo + (1.0 - lo) * k / 4;
        int y = plot.y + plot.h - plot.h * k / 4;

        ui_rect_fill(app, (SDL_Rect){plot.x, y, plot.w, 1}, col_grid);
        snprintf(buf, sizeof(buf), "%.1f%%", 100.0 * a);
        ui_text(app, app->fonts.small, buf, plot.x - u(app, 6),
                y - u(app, 8), col_dim, 2);
    }
    for (int i = 0; i < n; i += step) {
        int x = plot.x + (n == 1 ? plot.w / 2 : plot.w * i / (n - 1));

        snprintf(buf, sizeof(buf), "v%u%s", f->models[i].version,
                 f->models[i].current ? "*" : "");
        ui_text(app, app->fonts.small, buf, x, plot.y + plot.h + u(app, 4),
                f->models[i].current ? col_text : col_dim, 1);
    }
}

static void models_chart(app_t *app, SDL_Rect r, const net_msg_t *f)
{
    SDL_Rect plot = {r.x + u(app, 60), r.y + u(app, 80),
                     r.w - u(app, 90), r.h - u(app, 120)};
    double lo = accuracy_floor(f);
    int x = r.x + u(app, 10);

    ui_text(app, app->fonts.large, "Accuracy of each model version",
            r.x + u(app, 10), r.y + u(app, 8), col_text, 0);
    legend_item(app, &x, r.y + u(app, 40), col_mnist, "MNIST test");
    legend_item(app, &x, r.y + u(app, 40), col_adv, "adversarial held-out");
    if (f->model_count == 0) {
        ui_text(app, app->fonts.normal, "no model versions yet",
                plot.x + plot.w / 2, plot.y + plot.h / 2, col_dim, 1);
        return;
    }
    versions_axes(app, plot, f, lo);
    series_draw(app, f, plot, lo, false, col_mnist);
    series_draw(app, f, plot, lo, true, col_adv);
    ui_text(app, app->fonts.small,
            "filled: promoted; hollow: kept back by the gate; *: current",
            plot.x, plot.y + plot.h + u(app, 22), col_dim, 0);
}

void dash_render(app_t *app, SDL_Rect area)
{
    int m = u(app, 12), bottom = u(app, 60);
    SDL_Rect left, right;
    bool wide = area.w >= u(app, 900);

    left = (SDL_Rect){area.x + m, area.y + m, 0, 0};
    if (wide) {
        left.w = (area.w - 3 * m) * 2 / 5;
        left.h = area.h - 2 * m - bottom;
        right = (SDL_Rect){left.x + left.w + m, left.y,
                           area.w - 3 * m - left.w, left.h};
    } else {
        left.w = area.w - 2 * m;
        left.h = (area.h - 3 * m - bottom) / 2;
        right = (SDL_Rect){left.x, left.y + left.h + m, left.w, left.h};
    }
    ui_rect_fill(app, left, col_paper);
    ui_rect_fill(app, right, col_paper);
    ui_rect_frame(app, left, col_line, 1);
    ui_rect_frame(app, right, col_line, 1);
    if (!app->figures.valid) {
        ui_text(app, app->fonts.large,
                app->status.state == NET_CONNECTED
                    ? "Fetching the figures..."
                    : "No figures: not connected to the server",
                area.x + area.w / 2, area.y + area.h / 3, col_dim, 1);
        return;
    }
    digits_chart(app, left, &app->figures.msg);
    models_chart(app, right, &app->figures.msg);
}
