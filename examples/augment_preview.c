/* augment_preview.c - see what an ImageDataGenerator does to your images.

   Build (from the repository root):
     gcc -std=c99 -O2 -Wall -Wextra -I. examples/augment_preview.c -lm -o examples/augment_preview

   Run:
     examples/augment_preview --tutorial --out preview.png            # Fashion-MNIST
     examples/augment_preview --data /tmp/cifar10/train --images 6 --n 10 \
         --rotation-range 30 --zoom-range 0.8,1.2 --fill-mode reflect --out grid.png

   Writes a PNG grid: one row per source image, the original in the first
   column, then N randomly augmented versions of it. Every Keras parameter of
   ImageDataGenerator's random transforms has an option here with the Keras name
   (underscores become dashes). The same --seed always draws the same grid.

   The lesson: a generator is a set of ranges; each image gets its own random
   draw from them (cnn_datagen_random_transform with a seed); the draw is one
   resample of the picture (rotation, shift, shear and zoom about its centre)
   followed by the flips and colour changes. */
#define CNN_IMPLEMENTATION
#define CNN_AUGMENT_IMPLEMENTATION
#define CNN_AUGMENT_STB_IMPLEMENTATION
#include "cnn.h"
#include "cnn_augment.h"

#include "common.h"

static const char *usage =
    "usage: augment_preview [options] --out FILE.png\n"
    "Write a PNG grid: one row per image, the original, then N augmented versions.\n"
    "\n"
    "  --data PATH                 CIFAR-10 folder or .bin file, IDX folder, or image folder\n"
    "                              with one subfolder per class (default: Fashion-MNIST)\n"
    "  --images K                  rows: source images (default 4)\n"
    "  --first I                   index of the first source image (default 0)\n"
    "  --n N                       augmented versions per image (default 8)\n"
    "  --seed S                    seed of the random draws (default 1)\n"
    "  --scale F                   enlarge every picture F times (default: to 64 pixels or more)\n"
    "  --out FILE                  the PNG to write\n"
    "ImageDataGenerator parameters (Keras names; default: no change):\n"
    "  --tutorial                  the tutorial's: rotation 20, shifts 0.02, horizontal flip\n"
    "  --rotation-range DEG        --width-shift-range F      --height-shift-range F\n"
    "  --shear-range DEG           --zoom-range Z | LO,HI     --channel-shift-range V\n"
    "  --brightness-range LO,HI    --fill-mode nearest|constant|reflect|wrap\n"
    "  --cval V                    --horizontal-flip          --vertical-flip\n"
    "  --interpolation bilinear|nearest\n"
    "  --help                      show this help\n";

/* "LO,HI" (or a single number when one_ok) into v[0], v[1]. */
static void arg_pair(const char *opt, const char *s, float v[2], int one_ok) {
    char buf[128];
    const char *comma = strchr(s, ',');
    if (!comma) {
        if (!one_ok) fail(EXIT_USAGE, "%s expects LO,HI, got '%s'", opt, s);
        v[0] = (float)arg_float(opt, s, 0, 1e9);
        v[1] = 0;
        return;
    }
    if ((size_t)(comma - s) >= sizeof buf) fail(EXIT_USAGE, "%s: '%s' is too long", opt, s);
    memcpy(buf, s, (size_t)(comma - s));
    buf[comma - s] = '\0';
    v[0] = (float)arg_float(opt, buf, 0, 1e9);
    v[1] = (float)arg_float(opt, comma + 1, 0, 1e9);
}

int main(int argc, char **argv) {
    prog_name = "augment_preview";
    const char *data = NULL, *out = NULL;
    int rows = 4, first = 0, n_aug = 8, scale = 0;
    uint64_t seed = 1;
    cnn_datagen_opts o; /* the generator's options; zero = Keras' defaults */
    memset(&o, 0, sizeof o);

    /* 1. options --------------------------------------------------------- */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage, stdout);
            return 0;
        } else if ((v = arg_value(argc, argv, &i, "--data"))) data = v;
        else if ((v = arg_value(argc, argv, &i, "--out"))) out = v;
        else if ((v = arg_value(argc, argv, &i, "--images"))) rows = (int)arg_int("--images", v, 1, 1000);
        else if ((v = arg_value(argc, argv, &i, "--first"))) first = (int)arg_int("--first", v, 0, 2147483647L);
        else if ((v = arg_value(argc, argv, &i, "--n"))) n_aug = (int)arg_int("--n", v, 0, 1000);
        else if ((v = arg_value(argc, argv, &i, "--seed"))) seed = arg_u64("--seed", v);
        else if ((v = arg_value(argc, argv, &i, "--scale"))) scale = (int)arg_int("--scale", v, 1, 64);
        else if (!strcmp(a, "--tutorial")) {
            o.rotation_range = 20;
            o.width_shift_range = o.height_shift_range = 0.02f;
            o.horizontal_flip = 1;
        } else if ((v = arg_value(argc, argv, &i, "--rotation-range"))) o.rotation_range = (float)arg_float(a, v, 0, 360);
        else if ((v = arg_value(argc, argv, &i, "--width-shift-range"))) o.width_shift_range = (float)arg_float(a, v, 0, 1e6);
        else if ((v = arg_value(argc, argv, &i, "--height-shift-range"))) o.height_shift_range = (float)arg_float(a, v, 0, 1e6);
        else if ((v = arg_value(argc, argv, &i, "--shear-range"))) o.shear_range = (float)arg_float(a, v, 0, 360);
        else if ((v = arg_value(argc, argv, &i, "--zoom-range"))) arg_pair("--zoom-range", v, o.zoom_range, 1);
        else if ((v = arg_value(argc, argv, &i, "--channel-shift-range"))) o.channel_shift_range = (float)arg_float(a, v, 0, 1e6);
        else if ((v = arg_value(argc, argv, &i, "--brightness-range"))) arg_pair("--brightness-range", v, o.brightness_range, 0);
        else if ((v = arg_value(argc, argv, &i, "--cval"))) o.cval = (float)arg_float("--cval", v, -1e9, 1e9);
        else if (!strcmp(a, "--horizontal-flip")) o.horizontal_flip = 1;
        else if (!strcmp(a, "--vertical-flip")) o.vertical_flip = 1;
        else if ((v = arg_value(argc, argv, &i, "--fill-mode"))) {
            static const char *const modes[4] = {"nearest", "constant", "reflect", "wrap"};
            int m = 0;
            while (m < 4 && strcmp(v, modes[m])) m++;
            if (m == 4) fail(EXIT_USAGE, "--fill-mode must be nearest, constant, reflect or wrap, got '%s'", v);
            o.fill_mode = (cnn_fill_mode)m;
        } else if ((v = arg_value(argc, argv, &i, "--interpolation"))) {
            if (!strcmp(v, "bilinear")) o.interpolation = CNN_INTERP_BILINEAR;
            else if (!strcmp(v, "nearest")) o.interpolation = CNN_INTERP_NEAREST;
            else fail(EXIT_USAGE, "--interpolation must be bilinear or nearest, got '%s'", v);
        } else fail(EXIT_USAGE, "unknown option '%s' (see --help)", a);
    }
    if (!out) fail(EXIT_USAGE, "--out FILE.png is required (see --help)");
    check_writable("--out", out);
    /* the library checks the ranges (a zoom of 1, a brightness pair backwards, ...) */
    cnn_datagen *g = cnn_datagen_new_opt(&o);
    if (!g) fail(EXIT_USAGE, "%s", cnn_last_error());

    /* 2. the source images ----------------------------------------------- */
    cnn_dataset *d = data ? cnn_load_dataset(data) : cnn_load_fashion_mnist(NULL, 1);
    if (!d) fail(EXIT_FAILURE, "cannot load %s: %s", data ? data : "Fashion-MNIST", cnn_last_error());
    if (first >= d->n) fail(EXIT_FAILURE, "--first %d: the dataset has %d images", first, d->n);
    if (rows > d->n - first) rows = d->n - first;
    const int h = d->h, w = d->w, c = d->c, cols = 1 + n_aug;
    if (!scale) scale = h >= 64 ? 1 : (64 + h - 1) / h;

    /* 3. the grid: cells of (w x h) * scale with a 2-pixel gap, light grey ---- */
    const int gap = 2, cw = w * scale, chh = h * scale;
    const int W = cols * cw + (cols + 1) * gap, H = rows * chh + (rows + 1) * gap;
    unsigned char *grid = (unsigned char *)malloc((size_t)W * H * c);
    float *src = (float *)malloc((size_t)h * w * c * sizeof(float));
    float *aug = (float *)malloc((size_t)h * w * c * sizeof(float));
    if (!grid || !src || !aug) fail(EXIT_FAILURE, "out of memory for a %dx%d grid", W, H);
    memset(grid, 200, (size_t)W * H * c);
    if (c == 4) /* opaque background */
        for (size_t p = 3; p < (size_t)W * H * 4; p += 4) grid[p] = 255;

    for (int r = 0; r < rows; r++) {
        const unsigned char *img = d->images + (size_t)(first + r) * h * w * c;
        for (int i = 0; i < h * w * c; i++) src[i] = img[i]; /* transforms work on floats */
        for (int col = 0; col < cols; col++) {
            if (col == 0) memcpy(aug, src, (size_t)h * w * c * sizeof(float)); /* the original */
            /* one random draw per cell: the seed names the cell */
            else if (cnn_datagen_random_transform(g, src, h, w, c, seed * 1000003u + (uint64_t)r * 1009u + (uint64_t)col,
                                                  aug) != CNN_OK)
                fail(EXIT_FAILURE, "%s", cnn_last_error());
            /* copy the cell into the grid, enlarged `scale` times, rounded to 0..255 */
            for (int y = 0; y < chh; y++)
                for (int x = 0; x < cw; x++)
                    for (int k = 0; k < c; k++) {
                        float v = aug[((size_t)(y / scale) * w + x / scale) * c + k] + 0.5f;
                        size_t at = ((size_t)(gap + r * (chh + gap) + y) * W + gap + col * (cw + gap) + x) * c + k;
                        grid[at] = (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v);
                    }
        }
    }
    if (cnn_write_png(out, W, H, c, grid) != CNN_OK) fail(EXIT_FAILURE, "%s", cnn_last_error());
    printf("%s: %d images x (original + %d augmented), %dx%dx%d each, grid %dx%d\n", out, rows, n_aug, h, w, c, W, H);

    free(grid);
    free(src);
    free(aug);
    cnn_dataset_free(d);
    cnn_datagen_free(g);
    return 0;
}
