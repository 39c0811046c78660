/*
 * Helpers for the drawing client's tests: a real X server (Xvfb) of
 * their own, dadc-draw runs with a timeout, and looking at screenshots.
 * (The servers come from e2e_util.h.)
 */
#ifndef DADC_TEST_DRAW_X_H
#define DADC_TEST_DRAW_X_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "image.h"

/*
 * Start Xvfb on a display number it picks itself (-displayfd) and set
 * DISPLAY; when Xvfb is not installed, set SDL_VIDEODRIVER=offscreen
 * instead and say so on stdout. Returns "xvfb" or "offscreen". The X
 * server dies with the test process.
 */
const char *draw_x_start(void);

/* Stop the X server started by draw_x_start (if any). */
void draw_x_stop(void);

/*
 * Run bin_dir/dadc-draw with args (NULL-terminated), stderr saved to a
 * file in the test's temporary dir. Waits at most timeout_s seconds
 * (then kills it). Returns the exit status, 128 + signal, or -1 on a
 * timeout; *err_text (if not NULL) gets the stderr text (malloc'd).
 */
int draw_run(const char *const *args, int timeout_s, char **err_text);

/*
 * Start dadc-draw with args (as draw_run) without waiting; its stderr
 * goes to err_path. Returns its pid.
 */
pid_t draw_spawn(const char *const *args, const char *err_path);

/* Wait for a spawned dadc-draw as draw_run does. */
int draw_wait(pid_t pid, int timeout_s);

/* Variance of the gray values of img inside the rectangle. */
double draw_region_variance(const image_t *img, int x, int y, int w,
                            int h);

/* Pixels darker than level inside the rectangle. */
long draw_region_dark(const image_t *img, int x, int y, int w, int h,
                      int level);

#endif
