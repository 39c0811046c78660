/*
 * Screenshots: the frame on the renderer, read back as RGB and written
 * as a PNG through libpng. Call between ui_render and
 * SDL_RenderPresent: after presenting, the back buffer is undefined.
 */
#include "app.h"

#include <errno.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int png_rgb_write(FILE *f, const uint8_t *rgb, int w, int h)
{
    png_structp png;
    png_infop info;

    png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    if (png == NULL)
        return -ENOMEM;
    info = png_create_info_struct(png);
    if (info == NULL || setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        return -EIO;
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8,
                 PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < h; y++)
        png_write_row(png, rgb + (size_t)y * (size_t)w * 3);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return 0;
}

int shot_save(app_t *app, const char *path, dadc_error_t *err)
{
    int w = app->layout.width, h = app->layout.height, rc;
    uint8_t *rgb = malloc((size_t)w * (size_t)h * 3);
    FILE *f;

    if (rgb == NULL)
        return dadc_error_set(err, -ENOMEM, "%s: out of memory", path);
    if (SDL_RenderReadPixels(app->renderer, NULL, SDL_PIXELFORMAT_RGB24,
                             rgb, w * 3) != 0) {
        rc = dadc_error_set(err, DADC_EFORMAT, "%s: cannot read the "
                            "window: %s", path, SDL_GetError());
        goto fail_read;
    }
    f = fopen(path, "wb");
    if (f == NULL) {
        rc = dadc_error_set(err, -errno, "%s: %s", path, strerror(errno));
        goto fail_read;
    }
    rc = png_rgb_write(f, rgb, w, h);
    if (fclose(f) != 0 && rc == 0)
        rc = -errno;
    if (rc != 0)
        dadc_error_set(err, rc, "%s: cannot write the PNG", path);

fail_read:
    free(rgb);
    return rc;
}
