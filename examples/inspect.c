/* inspect.c - look inside a trained CNN: its filters, its feature maps, and
   which pixels its decision depends on.

   Build (from the repository root):
     make examples/inspect
   or
     gcc -std=c99 -O2 -fopenmp -Wall -Wextra -I. examples/inspect.c -lm -lpthread -o examples/inspect

   Run (a model saved by cifar10_cnn --save, any png/jpg/bmp/... picture):
     examples/inspect --model cifar.cnn --image cat.jpg --out cat
     examples/inspect --model cifar.cnn --image ship.png --out ship --layer pool_2

   It writes three pictures and prints the predicted class:
     PREFIX-filters.png   the first Conv2D layer's filters, one tile each: the
                          weights of a filter [kh][kw][c_in], scaled from their
                          smallest (black) to their largest (white), 8x bigger
     PREFIX-features.png  the feature maps of --layer (default: the first
                          Conv2D) for the image, one grey tile per channel,
                          each scaled from its smallest to its largest value
     PREFIX-saliency.png  the image beside its saliency map: how strongly the
                          loss of the predicted class reacts to each pixel,
                          |d loss / d pixel|, the largest over the colours

   The lesson:
     1. the first layer's filters are small pictures: trained on photos they
        become colour blobs and edges at various angles (random ones are noise);
     2. a layer's output is one map per filter, bright where the filter found
        its pattern (cnn_layer_output reads any layer's output);
     3. the gradient with respect to the input, which training never uses,
        says which pixels the decision depends on (cnn_input_gradient; the
        BatchNorm layers are frozen first so that it is taken in inference
        mode, as the prediction was). docs/gradients.md derives it. */

#define CNN_IMPLEMENTATION
#define CNN_AUGMENT_IMPLEMENTATION
#define CNN_AUGMENT_STB_IMPLEMENTATION /* compile stb_image & co. in here too */
#include "cnn.h"
#include "cnn_augment.h"

#include <math.h>

#include "common.h" /* option parsing and one-line errors */

static const char *usage =
    "usage: inspect --model FILE --image FILE --out PREFIX [--layer NAME]\n"
    "Draw a trained model's first-layer filters, one layer's feature maps for\n"
    "an image and the image's saliency map as PNG files; print the predicted\n"
    "class.\n"
    "\n"
    "  --model FILE      a model saved by cifar10_cnn --save\n"
    "  --image FILE      a picture (png, jpg, bmp, gif, tga, ppm, pgm), resized\n"
    "                    to the model's input size\n"
    "  --out PREFIX      writes PREFIX-filters.png, PREFIX-features.png and\n"
    "                    PREFIX-saliency.png\n"
    "  --layer NAME      the layer whose feature maps are drawn (default: the\n"
    "                    first Conv2D layer)\n"
    "  --help            show this help\n";

/* ------------------------------------------------------------------------ */
/* A tiny RGB canvas and a grid of tiles                                    */
/* ------------------------------------------------------------------------ */

typedef struct canvas {
    unsigned char *px; /* [h][w][3] */
    int w, h;
} canvas;

static canvas canvas_new(int w, int h, unsigned char background) {
    canvas cv = {(unsigned char *)malloc((size_t)w * h * 3), w, h};
    if (!cv.px) fail(EXIT_FAILURE, "out of memory for a %dx%d picture", w, h);
    memset(cv.px, background, (size_t)w * h * 3);
    return cv;
}

/* Write it as PNG, one grey channel when `grey` (a third of the bytes). */
static void canvas_write(canvas *cv, const char *path, const char *what, int grey) {
    if (grey)
        for (size_t i = 0; i < (size_t)cv->w * cv->h; i++) cv->px[i] = cv->px[3 * i];
    if (cnn_write_png(path, cv->w, cv->h, grey ? 1 : 3, cv->px) != CNN_OK) fail(EXIT_FAILURE, "%s", cnn_last_error());
    printf("wrote %s: %s\n", path, what);
    free(cv->px);
    cv->px = NULL;
}

/* Paint pixels tile [th][tw][tc] (tc 1 = grey, 3 = RGB) at (x0, y0), each
   pixel a scale x scale square (nearest neighbour). */
static void put_tile(canvas *cv, int x0, int y0, const unsigned char *tile, int tw, int th, int tc, int scale) {
    for (int y = 0; y < th * scale; y++)
        for (int x = 0; x < tw * scale; x++) {
            const unsigned char *s = tile + ((size_t)(y / scale) * tw + x / scale) * tc;
            unsigned char *d = cv->px + ((size_t)(y0 + y) * cv->w + x0 + x) * 3;
            d[0] = s[0];
            d[1] = s[tc == 3 ? 1 : 0];
            d[2] = s[tc == 3 ? 2 : 0];
        }
}

/* values v[i * stride] for i < n, mapped from [their min, their max] to 0..255 */
static void to_bytes(const float *v, size_t n, size_t stride, unsigned char *out) {
    float lo = v[0], hi = v[0];
    for (size_t i = 1; i < n; i++) {
        if (v[i * stride] < lo) lo = v[i * stride];
        if (v[i * stride] > hi) hi = v[i * stride];
    }
    for (size_t i = 0; i < n; i++)
        out[i] = hi > lo ? (unsigned char)(255.0f * (v[i * stride] - lo) / (hi - lo) + 0.5f) : 0;
}

/* columns of a near-square grid of n tiles */
static int grid_cols(int n) {
    int cols = (int)ceil(sqrt((double)n));
    return cols < 1 ? 1 : cols;
}

/* ------------------------------------------------------------------------ */
/* 1. The first Conv2D layer's filters                                      */
/* ------------------------------------------------------------------------ */

/* The first Conv2D layer, or NULL */
static cnn_node *first_conv(cnn_model *m, int *index) {
    for (int i = 0; i < cnn_model_num_layers(m); i++)
        if (!strcmp(cnn_node_type(cnn_model_layer(m, i)), "Conv2D")) {
            *index = i;
            return cnn_model_layer(m, i);
        }
    return NULL;
}

static void draw_filters(cnn_model *m, const char *path) {
    int index = 0, h = 0, w = 0, c_out = 0, c_in = 0;
    cnn_node *conv = first_conv(m, &index);
    if (!conv) fail(EXIT_FAILURE, "the model has no Conv2D layer to draw the filters of");
    const char *name = cnn_node_name(conv);
    size_t count;
    const float *kernel = cnn_layer_weights(m, name, "kernel", &count); /* [kh][kw][c_in][c_out] */
    if (!kernel) fail(EXIT_FAILURE, "%s", cnn_last_error());
    cnn_node_shape(conv, &h, &w, &c_out);
    /* c_in: the channels of the layer before (the input image, in the tutorial) */
    cnn_node_shape(cnn_model_layer(m, index - 1), NULL, NULL, &c_in);
    if (c_in < 1 || c_out < 1) fail(EXIT_FAILURE, "cannot tell the kernel shape of '%s'", name);
    const int k = (int)(sqrt((double)count / ((double)c_in * c_out)) + 0.5); /* a k x k kernel */
    if ((size_t)k * k * c_in * c_out != count)
        fail(EXIT_FAILURE, "cannot tell the kernel shape of '%s' (%zu weights): only square kernels reading "
             "the layer before are drawn", name, count);

    /* each filter as a k x k picture: RGB when it reads 3 channels, else grey
       (the mean over its input channels) */
    enum { SCALE = 8, GAP = 1 };
    const int tc = c_in == 3 ? 3 : 1, cols = grid_cols(c_out), rows = (c_out + cols - 1) / cols;
    const int tile = k * SCALE;
    canvas cv = canvas_new(cols * (tile + GAP) + GAP, rows * (tile + GAP) + GAP, 255);
    float *f = (float *)malloc((size_t)k * k * tc * sizeof(float));
    unsigned char *bytes = (unsigned char *)malloc((size_t)k * k * tc);
    if (!f || !bytes) fail(EXIT_FAILURE, "out of memory");
    for (int u = 0; u < c_out; u++) {
        for (int p = 0; p < k * k; p++) /* p = ky * k + kx */
            for (int t = 0; t < tc; t++) {
                double s = 0;
                if (tc == 3) s = kernel[((size_t)p * c_in + t) * c_out + u];
                else
                    for (int ci = 0; ci < c_in; ci++) s += kernel[((size_t)p * c_in + ci) * c_out + u] / c_in;
                f[p * tc + t] = (float)s;
            }
        to_bytes(f, (size_t)k * k * tc, 1, bytes); /* the filter's own range: smallest black, largest white */
        put_tile(&cv, GAP + (u % cols) * (tile + GAP), GAP + (u / cols) * (tile + GAP), bytes, k, k, tc, SCALE);
    }
    free(f);
    free(bytes);
    char what[160];
    snprintf(what, sizeof what, "the %d filters of %s, %dx%dx%d each, %dx bigger", c_out, name, k, k, c_in, SCALE);
    canvas_write(&cv, path, what, tc == 1);
}

/* ------------------------------------------------------------------------ */
/* 2. One layer's feature maps                                              */
/* ------------------------------------------------------------------------ */

static void draw_features(cnn_model *m, const char *layer, const float *x, const char *path) {
    int h = 0, w = 0, c = 0;
    cnn_node *node = cnn_get_layer(m, layer);
    if (!node) fail(EXIT_FAILURE, "--layer: the model has no layer named '%s' (cifar10_cnn's: conv_1, "
                    "batch_norm_1, pool_1, conv_2, ...)", layer);
    cnn_node_shape(node, &h, &w, &c);
    float *out = (float *)malloc((size_t)h * w * c * sizeof(float));
    if (!out) fail(EXIT_FAILURE, "out of memory");
    /* the layer's output [h][w][c] for our one image, in inference mode */
    if (cnn_layer_output(m, layer, x, 1, out) != CNN_OK) fail(EXIT_FAILURE, "%s", cnn_last_error());

    enum { GAP = 1 };
    char what[160];
    canvas cv;
    if (h == 1 && w == 1) { /* a vector (Dense, Flatten): one 6x6 cell per value, all on one scale */
        const int cols = grid_cols(c), rows = (c + cols - 1) / cols, cell = 6;
        unsigned char *bytes = (unsigned char *)malloc((size_t)c);
        if (!bytes) fail(EXIT_FAILURE, "out of memory");
        to_bytes(out, (size_t)c, 1, bytes);
        cv = canvas_new(cols * cell + 2 * GAP, rows * cell + 2 * GAP, 128);
        for (int i = 0; i < c; i++) put_tile(&cv, GAP + (i % cols) * cell, GAP + (i / cols) * cell, bytes + i, 1, 1, 1, cell);
        free(bytes);
        snprintf(what, sizeof what, "the %d values of %s, one square each, black the smallest, white the largest", c,
                 layer);
    } else { /* one grey tile per channel, each on its own scale, at least 48 pixels wide */
        const int scale = (48 + (w > h ? w : h) - 1) / (w > h ? w : h);
        const int cols = grid_cols(c), rows = (c + cols - 1) / cols;
        unsigned char *bytes = (unsigned char *)malloc((size_t)h * w);
        if (!bytes) fail(EXIT_FAILURE, "out of memory");
        cv = canvas_new(cols * (w * scale + GAP) + GAP, rows * (h * scale + GAP) + GAP, 255);
        for (int ch = 0; ch < c; ch++) {
            to_bytes(out + ch, (size_t)h * w, (size_t)c, bytes); /* channel ch: every c-th value */
            put_tile(&cv, GAP + (ch % cols) * (w * scale + GAP), GAP + (ch / cols) * (h * scale + GAP), bytes, w, h,
                     1, scale);
        }
        free(bytes);
        snprintf(what, sizeof what, "the %d feature maps of %s, %dx%d each, %dx bigger", c, layer, w, h, scale);
    }
    free(out);
    canvas_write(&cv, path, what, 1);
}

/* ------------------------------------------------------------------------ */
/* 3. The saliency map                                                      */
/* ------------------------------------------------------------------------ */

/* black -> red -> yellow -> white for v in 0..1 ("hot") */
static void hot(float v, unsigned char *rgb) {
    float r = 3 * v, g = 3 * v - 1, b = 3 * v - 2;
    rgb[0] = (unsigned char)(255 * (r < 0 ? 0 : r > 1 ? 1 : r));
    rgb[1] = (unsigned char)(255 * (g < 0 ? 0 : g > 1 ? 1 : g));
    rgb[2] = (unsigned char)(255 * (b < 0 ? 0 : b > 1 ? 1 : b));
}

static void draw_saliency(cnn_model *m, const unsigned char *pixels, const float *x, int h, int w, int c,
                          int predicted, const char *path) {
    /* Training mode would normalise with this one image's statistics: frozen,
       a BatchNorm uses its moving statistics, as in the prediction. */
    for (int i = 0; i < cnn_model_num_layers(m); i++) {
        cnn_node *n = cnn_model_layer(m, i);
        if (!strcmp(cnn_node_type(n), "BatchNormalization")) cnn_set_trainable(m, cnn_node_name(n), 0);
    }
    /* d loss / d x for the target "the predicted class" (one class index) */
    const float target = (float)predicted;
    float *dx = (float *)malloc((size_t)h * w * c * sizeof(float)), loss;
    if (!dx) fail(EXIT_FAILURE, "out of memory");
    if (cnn_input_gradient(m, x, &target, 1, 1, dx, &loss) != CNN_OK) fail(EXIT_FAILURE, "%s", cnn_last_error());

    /* saliency[y][x] = max over the channels of |dx|, scaled so the largest is 1 */
    float *sal = (float *)malloc((size_t)h * w * sizeof(float)), top = 0;
    unsigned char *heat = (unsigned char *)malloc((size_t)h * w * 3), *rgb = (unsigned char *)malloc((size_t)h * w * 3);
    if (!sal || !heat || !rgb) fail(EXIT_FAILURE, "out of memory");
    for (int p = 0; p < h * w; p++) {
        sal[p] = 0;
        for (int ch = 0; ch < c; ch++)
            if (fabsf(dx[(size_t)p * c + ch]) > sal[p]) sal[p] = fabsf(dx[(size_t)p * c + ch]);
        if (sal[p] > top) top = sal[p];
    }
    for (int p = 0; p < h * w; p++) {
        hot(top > 0 ? sal[p] / top : 0, heat + 3 * p);
        for (int t = 0; t < 3; t++) rgb[3 * p + t] = pixels[(size_t)p * c + (c == 3 ? t : 0)];
    }
    /* the image and the map side by side, each 8x bigger (at most 256 pixels) */
    const int big = w > h ? w : h, scale = big >= 256 ? 1 : 256 / big, GAP = 8;
    canvas cv = canvas_new(2 * w * scale + GAP, h * scale, 255);
    put_tile(&cv, 0, 0, rgb, w, h, 3, scale);
    put_tile(&cv, w * scale + GAP, 0, heat, w, h, 3, scale);
    char what[160];
    snprintf(what, sizeof what, "the image and |d loss / d pixel| for its predicted class (loss %.4f), %dx bigger",
             loss, scale);
    canvas_write(&cv, path, what, 0);
    free(dx);
    free(sal);
    free(heat);
    free(rgb);
}

/* ------------------------------------------------------------------------ */
/* main                                                                     */
/* ------------------------------------------------------------------------ */

int main(int argc, char **argv) {
    prog_name = "inspect";
    const char *model_path = NULL, *image_path = NULL, *prefix = NULL, *layer = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage, stdout);
            return 0;
        } else if ((v = arg_value(argc, argv, &i, "--model"))) {
            model_path = v;
        } else if ((v = arg_value(argc, argv, &i, "--image"))) {
            image_path = v;
        } else if ((v = arg_value(argc, argv, &i, "--out"))) {
            prefix = v;
        } else if ((v = arg_value(argc, argv, &i, "--layer"))) {
            layer = v;
        } else {
            fail(EXIT_USAGE, "unknown option '%s' (see --help)", a);
        }
    }
    if (!model_path) fail(EXIT_USAGE, "--model FILE is required (see --help)");
    if (!image_path) fail(EXIT_USAGE, "--image FILE is required (see --help)");
    if (!prefix) fail(EXIT_USAGE, "--out PREFIX is required (see --help)");
    char paths[3][1024];
    const char *suffix[3] = {"filters", "features", "saliency"};
    for (int k = 0; k < 3; k++) {
        if ((size_t)snprintf(paths[k], sizeof paths[k], "%s-%s.png", prefix, suffix[k]) >= sizeof paths[k])
            fail(EXIT_USAGE, "--out: the prefix is too long");
        check_writable("--out", paths[k]);
    }

    /* the model and the image, resized to the model's input as predict does */
    cnn_model *m = cnn_load(model_path);
    if (!m) fail(EXIT_FAILURE, "cannot load model %s: %s", model_path, cnn_last_error());
    int h, w, c;
    if (cnn_model_input_shape(m, &h, &w, &c) != CNN_OK) fail(EXIT_FAILURE, "%s", cnn_last_error());
    const int k = cnn_model_output_size(m);
    if (k < 1) fail(EXIT_FAILURE, "model %s has no outputs: %s", model_path, cnn_last_error());
    unsigned char *pixels = (unsigned char *)malloc((size_t)h * w * c);
    float *x = (float *)malloc((size_t)h * w * c * sizeof(float)), *probs = (float *)malloc((size_t)k * sizeof(float));
    if (!pixels || !x || !probs) fail(EXIT_FAILURE, "out of memory");
    if (cnn_load_image(image_path, h, w, c, CNN_INTERP_BILINEAR, 0, pixels) != CNN_OK)
        fail(EXIT_FAILURE, "%s", cnn_last_error());
    if (cnn_preprocess(m, pixels, 1, x) != CNN_OK) fail(EXIT_FAILURE, "%s", cnn_last_error());

    /* what the model says */
    if (cnn_predict(m, x, 1, 1, probs) != CNN_OK) fail(EXIT_FAILURE, "prediction failed: %s", cnn_last_error());
    int best = 0;
    for (int j = 1; j < k; j++)
        if (probs[j] > probs[best]) best = j;
    char buf[32];
    printf("%s: predicted %s with probability %.4f\n", image_path, class_label(m, NULL, best, buf, sizeof buf),
           probs[best]);

    /* the pictures */
    int index;
    if (!layer) {
        cnn_node *conv = first_conv(m, &index);
        if (!conv) fail(EXIT_FAILURE, "the model has no Conv2D layer; name a layer with --layer");
        layer = cnn_node_name(conv);
    }
    draw_filters(m, paths[0]);
    draw_features(m, layer, x, paths[1]);
    if (!cnn_get_learning_rate(m)) /* gradients need a loss: a model saved uncompiled gets the tutorial's */
        if (cnn_compile(m, .optimizer = cnn_adam(), .loss = CNN_CATEGORICAL_CROSSENTROPY) != CNN_OK)
            fail(EXIT_FAILURE, "%s", cnn_last_error());
    draw_saliency(m, pixels, x, h, w, c, best, paths[2]);

    free(pixels);
    free(x);
    free(probs);
    cnn_model_free(m);
    return 0;
}
