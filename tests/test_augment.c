/* test_augment.c - cnn_augment.h's ImageDataGenerator: transforms against index
   arithmetic and scipy fixtures, fit statistics and ZCA against numpy, standardize,
   flows (shuffling, subsets, targets, determinism across worker counts, fit on a
   generator), save_to_dir and flow_from_directory on a generated folder of PNG,
   JPEG and BMP files with broken ones.

   Fixtures: tests/fixtures/augment.bin, written by make_augment_fixtures.py.
   Everything written goes to a mkdtemp folder under /tmp, removed at the end. */
#ifndef _XOPEN_SOURCE
#define _XOPEN_SOURCE 700 /* mkdtemp under -std=c99 */
#endif
#define CNN_IMPLEMENTATION
#define CNN_AUGMENT_IMPLEMENTATION
#define CNN_AUGMENT_STB_IMPLEMENTATION
#include "cnn_augment.h"
#include "test_util.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmp_root[64];

/* ---------------------------------------------------------------- helpers */

typedef struct fixture {
    char name[48];
    unsigned count;
    float *v;
} fixture;
static fixture *fx;
static int n_fx;

static int load_fixtures(void) {
    const char *paths[2] = {"tests/fixtures/augment.bin", "fixtures/augment.bin"};
    FILE *f = NULL;
    char magic[8];
    unsigned n;
    for (int i = 0; i < 2 && !f; i++) f = fopen(paths[i], "rb");
    if (!f) return 0;
    if (fread(magic, 1, 8, f) != 8 || memcmp(magic, "CNNAUGF1", 8) || fread(&n, 4, 1, f) != 1) { fclose(f); return 0; }
    fx = (fixture *)calloc(n, sizeof *fx);
    for (unsigned i = 0; i < n; i++) {
        if (fread(fx[i].name, 1, 48, f) != 48 || fread(&fx[i].count, 4, 1, f) != 1) break;
        fx[i].v = (float *)malloc((fx[i].count ? fx[i].count : 1) * sizeof(float));
        if (fread(fx[i].v, sizeof(float), fx[i].count, f) != fx[i].count) break;
        n_fx++;
    }
    fclose(f);
    return n_fx == (int)n;
}

static const float *F(const char *name, unsigned *count) {
    for (int i = 0; i < n_fx; i++)
        if (!strcmp(fx[i].name, name)) {
            if (count) *count = fx[i].count;
            return fx[i].v;
        }
    return NULL;
}

static uint32_t rng_state = 12345;
static float frand(void) {
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)(rng_state >> 8) / 16777216.0f;
}

static void fill_random(float *x, size_t n, float scale) {
    for (size_t i = 0; i < n; i++) x[i] = frand() * scale;
}

/* the index a fill mode reads for sample i of n, -1 = cval (the reference) */
static int ref_map(int i, int n, cnn_fill_mode mode) {
    if (i >= 0 && i < n) return i;
    if (mode == CNN_FILL_CONSTANT) return -1;
    if (mode == CNN_FILL_NEAREST) return i < 0 ? 0 : n - 1;
    if (mode == CNN_FILL_WRAP) return ((i % n) + n) % n;
    int p = 2 * n, r = ((i % p) + p) % p;
    return r < n ? r : p - 1 - r;
}

static int error_has(const char *what) { return strstr(cnn_last_error(), what) != NULL; }

/* A 12x10 RGB JPEG made by PIL (quality 90). The tree's JPEG files are these
   bytes: stb_image_write's JPEG encoder shifts negative ints, which UBSan stops at. */
static const unsigned char tiny_jpeg[] = {
    0xff,0xd8,0xff,0xe0,0x00,0x10,0x4a,0x46,0x49,0x46,0x00,0x01,0x01,0x00,0x00,0x01,0x00,0x01,0x00,0x00,
    0xff,0xdb,0x00,0x43,0x00,0x03,0x02,0x02,0x03,0x02,0x02,0x03,0x03,0x03,0x03,0x04,0x03,0x03,0x04,0x05,
    0x08,0x05,0x05,0x04,0x04,0x05,0x0a,0x07,0x07,0x06,0x08,0x0c,0x0a,0x0c,0x0c,0x0b,0x0a,0x0b,0x0b,0x0d,
    0x0e,0x12,0x10,0x0d,0x0e,0x11,0x0e,0x0b,0x0b,0x10,0x16,0x10,0x11,0x13,0x14,0x15,0x15,0x15,0x0c,0x0f,
    0x17,0x18,0x16,0x14,0x18,0x12,0x14,0x15,0x14,0xff,0xdb,0x00,0x43,0x01,0x03,0x04,0x04,0x05,0x04,0x05,
    0x09,0x05,0x05,0x09,0x14,0x0d,0x0b,0x0d,0x14,0x14,0x14,0x14,0x14,0x14,0x14,0x14,0x14,0x14,0x14,0x14,
    0x14,0x14,0x14,0x14,0x14,0x14,0x14,0x14,0x14,0x14,0x14,0x14,0x14,0x14,0x14,0x14,0x14,0x14,0x14,0x14,
    0x14,0x14,0x14,0x14,0x14,0x14,0x14,0x14,0x14,0x14,0x14,0x14,0x14,0x14,0x14,0x14,0x14,0x14,0xff,0xc0,
    0x00,0x11,0x08,0x00,0x0a,0x00,0x0c,0x03,0x01,0x22,0x00,0x02,0x11,0x01,0x03,0x11,0x01,0xff,0xc4,0x00,
    0x1f,0x00,0x00,0x01,0x05,0x01,0x01,0x01,0x01,0x01,0x01,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x01,
    0x02,0x03,0x04,0x05,0x06,0x07,0x08,0x09,0x0a,0x0b,0xff,0xc4,0x00,0xb5,0x10,0x00,0x02,0x01,0x03,0x03,
    0x02,0x04,0x03,0x05,0x05,0x04,0x04,0x00,0x00,0x01,0x7d,0x01,0x02,0x03,0x00,0x04,0x11,0x05,0x12,0x21,
    0x31,0x41,0x06,0x13,0x51,0x61,0x07,0x22,0x71,0x14,0x32,0x81,0x91,0xa1,0x08,0x23,0x42,0xb1,0xc1,0x15,
    0x52,0xd1,0xf0,0x24,0x33,0x62,0x72,0x82,0x09,0x0a,0x16,0x17,0x18,0x19,0x1a,0x25,0x26,0x27,0x28,0x29,
    0x2a,0x34,0x35,0x36,0x37,0x38,0x39,0x3a,0x43,0x44,0x45,0x46,0x47,0x48,0x49,0x4a,0x53,0x54,0x55,0x56,
    0x57,0x58,0x59,0x5a,0x63,0x64,0x65,0x66,0x67,0x68,0x69,0x6a,0x73,0x74,0x75,0x76,0x77,0x78,0x79,0x7a,
    0x83,0x84,0x85,0x86,0x87,0x88,0x89,0x8a,0x92,0x93,0x94,0x95,0x96,0x97,0x98,0x99,0x9a,0xa2,0xa3,0xa4,
    0xa5,0xa6,0xa7,0xa8,0xa9,0xaa,0xb2,0xb3,0xb4,0xb5,0xb6,0xb7,0xb8,0xb9,0xba,0xc2,0xc3,0xc4,0xc5,0xc6,
    0xc7,0xc8,0xc9,0xca,0xd2,0xd3,0xd4,0xd5,0xd6,0xd7,0xd8,0xd9,0xda,0xe1,0xe2,0xe3,0xe4,0xe5,0xe6,0xe7,
    0xe8,0xe9,0xea,0xf1,0xf2,0xf3,0xf4,0xf5,0xf6,0xf7,0xf8,0xf9,0xfa,0xff,0xc4,0x00,0x1f,0x01,0x00,0x03,
    0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x01,0x00,0x00,0x00,0x00,0x00,0x00,0x01,0x02,0x03,0x04,0x05,
    0x06,0x07,0x08,0x09,0x0a,0x0b,0xff,0xc4,0x00,0xb5,0x11,0x00,0x02,0x01,0x02,0x04,0x04,0x03,0x04,0x07,
    0x05,0x04,0x04,0x00,0x01,0x02,0x77,0x00,0x01,0x02,0x03,0x11,0x04,0x05,0x21,0x31,0x06,0x12,0x41,0x51,
    0x07,0x61,0x71,0x13,0x22,0x32,0x81,0x08,0x14,0x42,0x91,0xa1,0xb1,0xc1,0x09,0x23,0x33,0x52,0xf0,0x15,
    0x62,0x72,0xd1,0x0a,0x16,0x24,0x34,0xe1,0x25,0xf1,0x17,0x18,0x19,0x1a,0x26,0x27,0x28,0x29,0x2a,0x35,
    0x36,0x37,0x38,0x39,0x3a,0x43,0x44,0x45,0x46,0x47,0x48,0x49,0x4a,0x53,0x54,0x55,0x56,0x57,0x58,0x59,
    0x5a,0x63,0x64,0x65,0x66,0x67,0x68,0x69,0x6a,0x73,0x74,0x75,0x76,0x77,0x78,0x79,0x7a,0x82,0x83,0x84,
    0x85,0x86,0x87,0x88,0x89,0x8a,0x92,0x93,0x94,0x95,0x96,0x97,0x98,0x99,0x9a,0xa2,0xa3,0xa4,0xa5,0xa6,
    0xa7,0xa8,0xa9,0xaa,0xb2,0xb3,0xb4,0xb5,0xb6,0xb7,0xb8,0xb9,0xba,0xc2,0xc3,0xc4,0xc5,0xc6,0xc7,0xc8,
    0xc9,0xca,0xd2,0xd3,0xd4,0xd5,0xd6,0xd7,0xd8,0xd9,0xda,0xe2,0xe3,0xe4,0xe5,0xe6,0xe7,0xe8,0xe9,0xea,
    0xf2,0xf3,0xf4,0xf5,0xf6,0xf7,0xf8,0xf9,0xfa,0xff,0xda,0x00,0x0c,0x03,0x01,0x00,0x02,0x11,0x03,0x11,
    0x00,0x3f,0x00,0xf9,0xbe,0x8a,0x28,0xae,0x83,0x9c,0xff,0xd9,
};

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_SANITIZER 1
#endif
#endif

/* ------------------------------------------------------- parameter errors */

static void test_bad_params(void) {
    test_begin("datagen_bad_parameters");
    struct { cnn_datagen_opts o; const char *name; } bad[21];
    memset(bad, 0, sizeof bad);
    bad[0].o.rotation_range = -1; bad[0].name = "rotation_range";
    bad[1].o.width_shift_range = -0.1f; bad[1].name = "width_shift_range";
    bad[2].o.height_shift_range = NAN; bad[2].name = "height_shift_range";
    bad[3].o.shear_range = -5; bad[3].name = "shear_range";
    bad[4].o.channel_shift_range = -1; bad[4].name = "channel_shift_range";
    bad[5].o.zoom_range[0] = 1.0f; bad[5].name = "zoom_range";          /* 1 - z = 0 */
    bad[6].o.zoom_range[0] = -0.2f; bad[6].name = "zoom_range";
    bad[7].o.zoom_range[0] = 0.0f; bad[7].o.zoom_range[1] = 1.2f; bad[7].name = "zoom_range"; /* lo = 0 */
    bad[8].o.zoom_range[0] = 1.3f; bad[8].o.zoom_range[1] = 1.2f; bad[8].name = "zoom_range"; /* lo > hi */
    bad[9].o.fill_mode = (cnn_fill_mode)7; bad[9].name = "fill_mode";
    bad[10].o.brightness_range[0] = 1.5f; bad[10].o.brightness_range[1] = 0.5f; bad[10].name = "brightness_range";
    bad[11].o.validation_split = 1.0f; bad[11].name = "validation_split";
    bad[12].o.interpolation = (cnn_interpolation)9; bad[12].name = "interpolation";
    bad[13].o.zca_epsilon = -1e-6f; bad[13].name = "zca_epsilon";
    bad[14].o.interpolation = CNN_INTERP_BICUBIC; bad[14].name = "bicubic is for resizing";
    bad[15].o.width_shift_int = -2; bad[15].name = "width_shift_int";
    bad[16].o.height_shift_list_len = CNN_SHIFT_LIST_MAX + 1; bad[16].name = "height_shift_list_len";
    bad[17].o.width_shift_list_len = 1; bad[17].o.width_shift_list[0] = INFINITY; bad[17].name = "width_shift_list[0]";
    bad[18].o.width_shift_range = 0.1f; bad[18].o.width_shift_int = 3; bad[18].name = "width_shift";
    bad[19].o.height_shift_int = 2; bad[19].o.height_shift_list_len = 1; bad[19].name = "height_shift";
    bad[20].o.interpolation = CNN_INTERP_HAMMING; bad[20].name = "hamming";
    for (int i = 0; i < 21; i++) {
        cnn_datagen *g = cnn_datagen_new_opt(&bad[i].o);
        CHECK(g == NULL, "case %d (%s) accepted", i, bad[i].name);
        CHECK(error_has(bad[i].name), "case %d: error '%s' does not name %s", i, cnn_last_error(), bad[i].name);
        cnn_datagen_free(g);
    }
    /* the good ones: Keras defaults and the documented forms */
    cnn_datagen *g = cnn_datagen_new_opt(NULL);
    CHECK(g != NULL, "NULL options: %s", cnn_last_error());
    CHECK(g && cnn_datagen_options(g)->interpolation == CNN_INTERP_BILINEAR && cnn_datagen_options(g)->zca_epsilon == 1e-6f,
          "defaults not filled in");
    cnn_datagen_free(g);
    g = cnn_datagen_new(.zoom_range = {0.8f, 1.2f}, .brightness_range = {0.5f, 1.5f}, .zca_whitening = 1,
                        .featurewise_std_normalization = 1);
    CHECK(g != NULL, "pair ranges: %s", cnn_last_error());
    CHECK(g && cnn_datagen_options(g)->featurewise_center && !cnn_datagen_options(g)->featurewise_std_normalization,
          "zca_whitening must turn featurewise_center on and std normalization off");
    cnn_datagen_free(g);
    /* as Keras: std normalization without centring turns the centring on */
    g = cnn_datagen_new(.featurewise_std_normalization = 1, .samplewise_std_normalization = 1);
    CHECK(g && cnn_datagen_options(g)->featurewise_center && cnn_datagen_options(g)->samplewise_center &&
              cnn_datagen_options(g)->featurewise_std_normalization && cnn_datagen_options(g)->samplewise_std_normalization,
          "std normalization must turn its centring on");
    cnn_datagen_free(g);
    cnn_datagen_free(NULL);

    test_begin("datagen_bad_calls");
    g = cnn_datagen_new(.rotation_range = 10);
    float img[4 * 4 * 3] = {0}, out[4 * 4 * 3];
    cnn_transform t;
    memset(&t, 0, sizeof t);
    CHECK(cnn_datagen_apply_transform_opt(NULL, img, 4, 4, 3, &t, out) == CNN_ERR_ARG && error_has("generator"), "NULL generator");
    CHECK(cnn_datagen_apply_transform_opt(g, NULL, 4, 4, 3, &t, out) == CNN_ERR_ARG && error_has("image"), "NULL image");
    CHECK(cnn_datagen_apply_transform_opt(g, img, 0, 4, 3, &t, out) == CNN_ERR_ARG && error_has("shape"), "h = 0");
    CHECK(cnn_datagen_apply_transform(g, img, 4, 4, 3, out, .zoom_x = -1) == CNN_ERR_ARG && error_has("zoom_x"), "negative zoom");
    CHECK(cnn_datagen_apply_transform(g, img, 4, 4, 3, out, .theta = INFINITY) == CNN_ERR_ARG && error_has("theta"), "inf theta");
    CHECK(cnn_datagen_apply_transform(g, img, 4, 4, 3, out, .brightness = -0.5f) == CNN_ERR_ARG && error_has("brightness"), "negative brightness");
    CHECK(cnn_datagen_get_random_transform(g, 4, 4, 1, NULL) == CNN_ERR_ARG, "NULL transform");
    CHECK(cnn_datagen_random_transform(g, img, 4, -4, 3, 1, out) == CNN_ERR_ARG, "negative width");
    CHECK(cnn_datagen_standardize(NULL, img, 1, 4, 4, 3) == CNN_ERR_ARG, "standardize NULL generator");
    CHECK(cnn_datagen_standardize(g, img, -1, 4, 4, 3) == CNN_ERR_ARG, "standardize negative n");
    CHECK(cnn_datagen_fit(g, NULL) == CNN_ERR_ARG && error_has("dataset"), "fit NULL dataset");
    CHECK(cnn_datagen_fit_float(g, img, 0, 4, 4, 3) == CNN_ERR_ARG, "fit on no images");
    CHECK(cnn_datagen_set_stats(g, img, NULL, 0) == CNN_ERR_ARG, "set_stats c = 0");
    float nan_mean[1] = {NAN};
    CHECK(cnn_datagen_set_stats(g, nan_mean, NULL, 1) == CNN_ERR_ARG && error_has("mean"), "set_stats NaN mean");
    cnn_datagen_free(g);
    /* featurewise without fit: a clear error, not silence */
    g = cnn_datagen_new(.featurewise_center = 1);
    CHECK(cnn_datagen_standardize(g, img, 1, 4, 4, 3) == CNN_ERR_STATE && error_has("featurewise_center") &&
          error_has("cnn_datagen_fit"), "standardize before fit: %s", cnn_last_error());
    cnn_dataset *d = cnn_dataset_new(4, 4, 4, 3, 2);
    cnn_flow *f = cnn_datagen_flow(g, d);
    CHECK(f == NULL && error_has("featurewise_center"), "flow before fit");
    float m3[3] = {1, 2, 3};
    CHECK(cnn_datagen_set_stats(g, m3, NULL, 3) == CNN_OK, "set_stats: %s", cnn_last_error());
    CHECK(cnn_datagen_standardize(g, img, 1, 4, 4, 1) == CNN_ERR_SHAPE && error_has("channel"), "channel mismatch");
    cnn_datagen_free(g);
    g = cnn_datagen_new(.zca_whitening = 1);
    CHECK(cnn_datagen_standardize(g, img, 1, 4, 4, 3) == CNN_ERR_STATE && error_has("zca_whitening"), "zca before fit");
    cnn_datagen_free(g);
    /* flows */
    g = cnn_datagen_new(.validation_split = 0);
    CHECK(cnn_datagen_flow(NULL, d) == NULL && error_has("generator"), "flow NULL generator");
    CHECK(cnn_datagen_flow(g, NULL) == NULL && error_has("dataset"), "flow NULL dataset");
    CHECK(cnn_datagen_flow(g, d, .batch_size = -2) == NULL && error_has("batch_size"), "negative batch size");
    CHECK(cnn_datagen_flow(g, d, .subset = CNN_SUBSET_VALIDATION) == NULL && error_has("validation_split"), "subset without split");
    CHECK(cnn_datagen_flow(g, d, .save_to_dir = "/nonexistent/dir") == NULL && error_has("/nonexistent/dir"), "bad save dir");
    CHECK(cnn_datagen_flow(g, d, .save_to_dir = "/tmp", .save_format = "gif") == NULL && error_has("save_format"), "bad format");
    CHECK(cnn_datagen_flow(g, d, .workers = -5) == NULL && error_has("workers"), "bad workers");
    CHECK(cnn_datagen_flow(g, d, .y_width = 3) == NULL && error_has("y_width"), "y_width without y");
    CHECK(cnn_datagen_flow_float(g, img, 1, 4, 4, 3, .one_hot = 1) == NULL && error_has("one_hot"), "one_hot without labels");
    d->labels[2] = 7; /* out of range for one-hot over 2 classes */
    CHECK(cnn_datagen_flow(g, d, .one_hot = 1) == NULL && error_has("label 7"), "label out of range");
    CHECK(cnn_datagen_flow_from_directory(g, NULL) == NULL && error_has("folder"), "NULL folder");
    CHECK(cnn_datagen_flow_from_directory(g, "/tmp", .target_size = {32, 0}) == NULL && error_has("target_size"), "target size 0");
    CHECK(cnn_datagen_flow_from_directory(g, "/tmp", .target_size = {-3, 8}) == NULL && error_has("target_size"), "negative target");
    CHECK(cnn_datagen_flow_from_directory(g, "/tmp", .class_mode = (cnn_class_mode)9) == NULL && error_has("class_mode"), "class_mode");
    CHECK(cnn_datagen_flow_from_directory(g, "/tmp", .color_mode = (cnn_color_mode)9) == NULL && error_has("color_mode"), "color_mode");
    CHECK(cnn_datagen_flow_from_directory(g, "/nonexistent/x") == NULL && error_has("/nonexistent/x"), "missing folder");
    CHECK(cnn_flow_next(NULL, NULL, NULL) == CNN_ERR_ARG && cnn_flow_reset(NULL, 0) == CNN_ERR_ARG, "NULL flow");
    CHECK(cnn_flow_source(NULL) == NULL && cnn_flow_len(NULL) == 0, "NULL flow queries");
    cnn_flow_free(NULL);
    cnn_datagen_free(g);
    cnn_dataset_free(d);
}

/* ---------------------------------------------------- exact transforms */

static void test_exact_transforms(void) {
    enum { H = 5, W = 7, C = 3, S = 6, C2 = 2 };
    float x[H * W * C], out[H * W * C], sq[S * S * C2], sqo[S * S * C2];
    cnn_datagen *g[4];
    fill_random(x, sizeof x / sizeof *x, 255);
    fill_random(sq, sizeof sq / sizeof *sq, 255);
    for (int m = 0; m < 4; m++) g[m] = cnn_datagen_new(.fill_mode = (cnn_fill_mode)m, .cval = -3);

    test_begin("transform_identity");
    for (int m = 0; m < 4; m++) {
        int bad = 0;
        cnn_datagen_apply_transform(g[m], x, H, W, C, out, .theta = 0);
        bad += memcmp(out, x, sizeof x) != 0;
        cnn_datagen_apply_transform(g[m], x, H, W, C, out, .theta = 360, .zoom_x = 1, .zoom_y = 1);
        bad += memcmp(out, x, sizeof x) != 0;
        cnn_datagen_apply_transform_opt(g[m], x, H, W, C, NULL, out);
        bad += memcmp(out, x, sizeof x) != 0;
        CHECK(!bad, "mode %d: the identity changed the image", m);
    }
    {   /* the identity through the general resampler (nearest interpolation forces no shortcut) */
        cnn_datagen *gn = cnn_datagen_new(.interpolation = CNN_INTERP_NEAREST);
        cnn_datagen_apply_transform(gn, x, H, W, C, out, .shift_x = 0.25f, .shift_y = -0.25f);
        CHECK(!memcmp(out, x, sizeof x), "nearest with a quarter-pixel shift is not the identity");
        cnn_datagen_apply_transform(gn, x, H, W, C, out, .shift_x = 0.75f);
        int bad = 0;
        for (int r = 0; r < H; r++)
            for (int q = 0; q < W; q++)
                for (int k = 0; k < C; k++) bad += out[(r * W + q) * C + k] != x[(r * W + (q ? q - 1 : 0)) * C + k];
        CHECK(!bad, "nearest with a 0.75 pixel shift is not a 1 pixel shift");
        cnn_datagen_free(gn);
    }

    test_begin("transform_flips_exact");
    for (int m = 0; m < 4; m++) {
        int bad = 0;
        cnn_datagen_apply_transform(g[m], x, H, W, C, out, .flip_horizontal = 1);
        for (int r = 0; r < H; r++)
            for (int q = 0; q < W; q++)
                for (int k = 0; k < C; k++) bad += out[(r * W + q) * C + k] != x[(r * W + (W - 1 - q)) * C + k];
        cnn_datagen_apply_transform(g[m], x, H, W, C, out, .flip_vertical = 1);
        for (int r = 0; r < H; r++)
            for (int q = 0; q < W; q++)
                for (int k = 0; k < C; k++) bad += out[(r * W + q) * C + k] != x[((H - 1 - r) * W + q) * C + k];
        cnn_datagen_apply_transform(g[m], x, H, W, C, out, .flip_horizontal = 1, .flip_vertical = 1);
        for (int r = 0; r < H; r++)
            for (int q = 0; q < W; q++)
                for (int k = 0; k < C; k++) bad += out[(r * W + q) * C + k] != x[((H - 1 - r) * W + (W - 1 - q)) * C + k];
        CHECK(!bad, "mode %d: %d flipped values differ from index arithmetic", m, bad);
    }

    test_begin("transform_rot90_exact");
    for (int m = 0; m < 4; m++) {
        int bad = 0;
        /* counter-clockwise as displayed: out[r][q] = in[q][S-1-r] (np.rot90) */
        cnn_datagen_apply_transform(g[m], sq, S, S, C2, sqo, .theta = 90);
        for (int r = 0; r < S; r++)
            for (int q = 0; q < S; q++)
                for (int k = 0; k < C2; k++) bad += sqo[(r * S + q) * C2 + k] != sq[(q * S + (S - 1 - r)) * C2 + k];
        cnn_datagen_apply_transform(g[m], sq, S, S, C2, sqo, .theta = -90);
        for (int r = 0; r < S; r++)
            for (int q = 0; q < S; q++)
                for (int k = 0; k < C2; k++) bad += sqo[(r * S + q) * C2 + k] != sq[((S - 1 - q) * S + r) * C2 + k];
        cnn_datagen_apply_transform(g[m], sq, S, S, C2, sqo, .theta = 270);
        for (int r = 0; r < S; r++)
            for (int q = 0; q < S; q++)
                for (int k = 0; k < C2; k++) bad += sqo[(r * S + q) * C2 + k] != sq[((S - 1 - q) * S + r) * C2 + k];
        cnn_datagen_apply_transform(g[m], x, H, W, C, out, .theta = 180); /* any shape */
        for (int r = 0; r < H; r++)
            for (int q = 0; q < W; q++)
                for (int k = 0; k < C; k++) bad += out[(r * W + q) * C + k] != x[((H - 1 - r) * W + (W - 1 - q)) * C + k];
        CHECK(!bad, "mode %d: %d rotated values differ from index arithmetic", m, bad);
    }

    test_begin("transform_integer_shift_is_roll");
    for (int m = 0; m < 4; m++) {
        static const int shifts[4][2] = {{3, -2}, {-5, 4}, {9, 0}, {-1, -11}}; /* some beyond the image */
        int bad = 0;
        for (int s = 0; s < 4; s++) {
            const int sx = shifts[s][0], sy = shifts[s][1];
            cnn_datagen_apply_transform(g[m], x, H, W, C, out, .shift_x = (float)sx, .shift_y = (float)sy);
            for (int r = 0; r < H; r++)
                for (int q = 0; q < W; q++) {
                    int rr = ref_map(r - sy, H, (cnn_fill_mode)m), qq = ref_map(q - sx, W, (cnn_fill_mode)m);
                    for (int k = 0; k < C; k++) {
                        float want = rr < 0 || qq < 0 ? -3.0f : x[(rr * W + qq) * C + k];
                        bad += out[(r * W + q) * C + k] != want;
                    }
                }
        }
        CHECK(!bad, "mode %d: %d shifted values differ from the roll", m, bad);
    }

    test_begin("transform_in_place");
    memcpy(out, x, sizeof x);
    cnn_datagen_apply_transform(g[2], out, H, W, C, out, .theta = 33, .shift_x = 1.5f);
    {
        float ref[H * W * C];
        cnn_datagen_apply_transform(g[2], x, H, W, C, ref, .theta = 33, .shift_x = 1.5f);
        CHECK(!memcmp(out, ref, sizeof ref), "out == x gives another result than a separate output");
    }
    for (int m = 0; m < 4; m++) cnn_datagen_free(g[m]);
}

/* The clamping fill modes take their coordinates in 32.32 fixed point
   (cnn__idg_coords_row_fixed) where the padded image has fewer than 2^24
   floats and the row stays within 2^30; the same rules in double, here. Each
   pixel must read the same block, with fractions within 2e-6 of a pixel, but
   where the coordinate lies within 1e-6 of a whole number (either block is
   right); on exact maps (whole shifts, zoom 1 or 2, quarter turns) all of it
   exactly. The sizes reach both sides of the 2^24 limit (2360 x 2360 x 3 in
   fixed point, 2400 x 2400 x 3 in double), a row of 400,000 pixels, single
   pixels, and a zoom of 1e12 on a one-pixel-wide image. */
static long long coords_against_double(int h, int w, int c, int mode, int nearest, const cnn_transform *t, int exact,
                                       int *off, float *fx, float *fy, long long *ties, double *worst) {
    cnn__idg_affine A;
    cnn__idg_affine_of(t, h, w, &A);
    const int prow = (w + 3) * c;
    const double half = nearest ? 0.5 : 0.0, lo = mode == CNN_FILL_NEAREST ? 0 : -1;
    const double xhi = mode == CNN_FILL_NEAREST ? w - 1 : w, yhi = mode == CNN_FILL_NEAREST ? h - 1 : h;
    long long bad = 0;
    for (int oy = 0; oy < h; oy += h > 64 ? 37 : 1) {
        cnn__idg_coords_row(&A, oy, h, w, c, mode, nearest, off, fx, fy);
        for (int ox = 0; ox < w; ox++) {
            const double X = A.a * ox + A.b * oy + A.tx + half, Y = A.c * ox + A.d * oy + A.ty + half;
            double x0 = floor(X), y0 = floor(Y), f = X - x0, g = Y - y0;
            if (x0 < lo || x0 >= xhi) f = 0;
            if (y0 < lo || y0 >= yhi) g = 0;
            x0 = x0 < lo ? lo : (x0 > xhi ? xhi : x0);
            y0 = y0 < lo ? lo : (y0 > yhi ? yhi : y0);
            if (nearest) f = g = 0;
            if (!exact && (fabs(X - floor(X + 0.5)) < 1e-6 || fabs(Y - floor(Y + 0.5)) < 1e-6)) {
                ++*ties;
                continue;
            }
            const double err = fmax(fabs(fx[ox] - f), fabs(fy[ox] - g));
            *worst = fmax(*worst, err);
            bad += off[ox] != (int)((y0 + 1) * prow + (x0 + 1) * c) || err > (exact ? 0 : 2e-6);
        }
    }
    return bad;
}

static void test_fixed_coordinates(void) {
    test_begin("fixed-point coordinates of the clamping fill modes match double");
    static const int sizes[][3] = {{32, 32, 3}, {7, 5, 1},       {1, 1, 1},       {300, 200, 3},
                                   {1500, 2000, 3}, {2360, 2360, 3}, {2400, 2400, 3}, {2, 400000, 1}};
    enum { WMAX = 400000 };
    int *off = (int *)malloc(WMAX * sizeof(int));
    float *fx = (float *)malloc(WMAX * sizeof(float)), *fy = (float *)malloc(WMAX * sizeof(float));
    long long checked = 0, ties = 0, bad = 0, exact_bad = 0, exact_ties = 0;
    double worst = 0, exact_worst = 0;
    for (int si = 0; si < 8; si++)
        for (int k = 0; k < 12; k++) {
            const int h = sizes[si][0], w = sizes[si][1], c = sizes[si][2];
            cnn_transform t = {0};
            t.theta = (frand() - 0.5f) * 360;
            t.shift_x = (frand() - 0.5f) * 0.6f * (float)w;
            t.shift_y = (frand() - 0.5f) * 0.6f * (float)h;
            t.shear = (frand() - 0.5f) * 40;
            t.zoom_x = 0.5f + 1.5f * frand();
            t.zoom_y = 0.5f + 1.5f * frand();
            bad += coords_against_double(h, w, c, k % 2 ? CNN_FILL_CONSTANT : CNN_FILL_NEAREST, k % 3 == 2, &t, 0,
                                         off, fx, fy, &ties, &worst);
            checked += (long long)(h > 64 ? (h + 36) / 37 : h) * w;
            /* exact maps: a whole shift, a quarter turn, zoom 2 */
            cnn_transform e = {0};
            e.shift_x = (float)(k - 6);
            e.shift_y = (float)(3 - k);
            e.theta = k % 4 == 1 ? 90.0f : 0.0f;
            e.zoom_x = e.zoom_y = k % 4 == 2 ? 2.0f : 1.0f;
            exact_bad += coords_against_double(h, w, c, k % 2 ? CNN_FILL_CONSTANT : CNN_FILL_NEAREST, k % 3 == 2, &e,
                                               e.theta == 0, off, fx, fy, &exact_ties, &exact_worst);
        }
    {
        cnn_transform t = {0};
        t.theta = 30;
        t.zoom_x = 1e12f; /* the step far beyond 2^30: the double loops take it */
        for (int mode = CNN_FILL_NEAREST; mode <= CNN_FILL_CONSTANT; mode++)
            bad += coords_against_double(3, 1, 1, mode, 0, &t, 0, off, fx, fy, &ties, &worst);
    }
    CHECK(bad == 0, "%lld of %lld pixels read another block or fractions off by more than 2e-6 (largest %g)", bad,
          checked, worst);
    CHECK(exact_bad == 0, "exact maps: %lld pixels differ from double (largest fraction difference %g)", exact_bad,
          exact_worst);
    printf("# %lld pixels, %lld within 1e-6 of a whole coordinate, largest fraction difference %.2g\n", checked, ties,
           worst);
    free(off);
    free(fx);
    free(fy);
}

/* ------------------------------------------------------- scipy fixtures */

static void test_scipy_fixtures(void) {
    test_begin("transform_matches_scipy_affine_transform");
    const float *nt = F("n_transforms", NULL);
    CHECK(nt != NULL, "fixture n_transforms missing");
    if (!nt) return;
    double worst = 0;
    int cases = (int)nt[0];
    for (int k = 0; k < cases; k++) {
        char name[48];
        unsigned count;
        snprintf(name, sizeof name, "t%d_params", k);
        const float *p = F(name, NULL);
        snprintf(name, sizeof name, "t%d_out", k);
        const float *want = F(name, &count);
        CHECK(p && want, "fixture case %d missing", k);
        if (!p || !want) continue;
        snprintf(name, sizeof name, "img%d", (int)p[9]);
        const float *img = F(name, NULL);
        snprintf(name, sizeof name, "img%d_shape", (int)p[9]);
        const float *shape = F(name, NULL);
        int h = (int)shape[0], w = (int)shape[1], c = (int)shape[2];
        cnn_datagen *g = cnn_datagen_new(.fill_mode = (cnn_fill_mode)(int)p[8], .cval = 37.5f);
        float *out = (float *)malloc(count * sizeof(float));
        int rc = cnn_datagen_apply_transform(g, img, h, w, c, out, .theta = p[0], .shift_x = p[1], .shift_y = p[2],
                                             .shear = p[3], .zoom_x = p[4], .zoom_y = p[5],
                                             .flip_horizontal = (int)p[6], .flip_vertical = (int)p[7]);
        CHECK(rc == CNN_OK, "case %d: %s", k, cnn_last_error());
        double err = 0;
        for (unsigned i = 0; i < count; i++) err = fmax(err, fabs((double)out[i] - want[i]));
        CHECK(err <= 1e-3, "case %d (theta %g shift %g,%g shear %g zoom %g,%g flips %d%d mode %d, %dx%dx%d): max abs error %g",
              k, p[0], p[1], p[2], p[3], p[4], p[5], (int)p[6], (int)p[7], (int)p[8], h, w, c, err);
        worst = fmax(worst, err);
        free(out);
        cnn_datagen_free(g);
    }
    printf("# %d scipy cases, max abs error %.2e (0..255 data)\n", cases, worst);
}

/* ------------------------------------------------- colour, random draws */

static void test_color_and_draws(void) {
    enum { H = 4, W = 5, C = 3, N = H * W * C };
    float x[N], out[N];
    cnn_datagen *g = cnn_datagen_new(.rotation_range = 0);
    for (int i = 0; i < N; i++) x[i] = (float)(i * 4); /* 0..236 */

    test_begin("channel_shift_and_brightness");
    cnn_datagen_apply_transform(g, x, H, W, C, out, .channel_shift = 50);
    int bad = 0;
    for (int i = 0; i < N; i++) bad += out[i] != (x[i] + 50 > 236 ? 236 : x[i] + 50);
    cnn_datagen_apply_transform(g, x, H, W, C, out, .channel_shift = -100);
    for (int i = 0; i < N; i++) bad += out[i] != (x[i] - 100 < 0 ? 0 : x[i] - 100);
    CHECK(!bad, "channel shift is not clip(x + s, min, max)");
    bad = 0;
    cnn_datagen_apply_transform(g, x, H, W, C, out, .brightness = 1.5f);
    for (int i = 0; i < N; i++) bad += out[i] != (x[i] * 1.5f > 255 ? 255 : x[i] * 1.5f);
    cnn_datagen_apply_transform(g, x, H, W, C, out, .brightness = 0.5f);
    for (int i = 0; i < N; i++) bad += out[i] != x[i] * 0.5f;
    CHECK(!bad, "brightness is not clip(x * b, 0, 255)");
    {   /* data outside 0..255 (say -1..1) is mapped to 0..255 and back */
        float y[N], yo[N];
        for (int i = 0; i < N; i++) y[i] = -1 + 2.0f * i / (N - 1);
        cnn_datagen_apply_transform(g, y, H, W, C, yo, .brightness = 0.5f);
        double err = 0;
        for (int i = 0; i < N; i++) err = fmax(err, fabs(yo[i] - (-1 + (y[i] + 1) * 0.5)));
        CHECK(err < 1e-5, "brightness of -1..1 data: error %g", err);
    }

    /* brightness leaves the alpha channel of RGBA images alone (PIL's
       ImageEnhance.Brightness), in range and out of range */
    {
        enum { P = 6 };
        float rgba[P * 4], o4[P * 4], wide[P * 4], w4[P * 4];
        for (int i = 0; i < P * 4; i++) {
            rgba[i] = (float)(i * 10);
            wide[i] = -3.0f + 0.25f * (float)i;
        }
        cnn_datagen_apply_transform(g, rgba, 2, 3, 4, o4, .brightness = 1.4f);
        cnn_datagen_apply_transform(g, wide, 2, 3, 4, w4, .brightness = 0.6f);
        bad = 0;
        for (int i = 0; i < P * 4; i++) {
            const float want = i % 4 == 3 ? rgba[i] : (rgba[i] * 1.4f > 255 ? 255 : rgba[i] * 1.4f);
            bad += fabsf(o4[i] - want) > 1e-4f;
            bad += i % 4 == 3 && w4[i] != wide[i];
            bad += i % 4 != 3 && fabsf(w4[i] - (-3.0f + (wide[i] + 3.0f) * 0.6f)) > 1e-4f;
        }
        CHECK(!bad, "brightness of RGBA: %d values wrong (alpha must stay)", bad);
    }

    /* Keras' int form (whole pixels from {0, ..., r-1} times a sign) and list
       form (a value times a sign; fractions of the size when all are < 1) */
    test_begin("random_shift_int_and_list");
    cnn_datagen_free(g);
    g = cnn_datagen_new(.width_shift_int = 3, .height_shift_list = {0.25f, 0.5f}, .height_shift_list_len = 2);
    {
        int seen_x[7] = {0}, seen_y[5] = {0}, outside = 0;
        cnn_transform t;
        for (int s = 0; s < 4000; s++) {
            cnn_datagen_get_random_transform(g, 32, 40, (uint64_t)s, &t);
            const int ix = (int)t.shift_x, iy = (int)(t.shift_y / 8); /* 0.25 and 0.5 of 32 rows: 8, 16 px */
            outside += t.shift_x != (float)ix || ix < -2 || ix > 2 || t.shift_y != (float)(iy * 8) ||
                       (abs(iy) != 1 && abs(iy) != 2);
            if (ix >= -2 && ix <= 2) seen_x[ix + 2]++;
            if (iy >= -2 && iy <= 2) seen_y[iy + 2]++;
        }
        CHECK(!outside, "%d draws outside {-2..2} px across / {+-8, +-16} px down", outside);
        for (int k = 0; k < 5; k++)
            CHECK(k == 2 ? seen_x[k] > 1000 : seen_x[k] > 500, "shift_x %d drawn %d times of 4000", k - 2, seen_x[k]);
        for (int k = 0; k < 5; k++)
            CHECK(k == 2 ? seen_y[k] == 0 : seen_y[k] > 800, "shift_y %d drawn %d times of 4000", (k - 2) * 8, seen_y[k]);
    }
    cnn_datagen_free(g);
    g = cnn_datagen_new(.width_shift_list = {2, 0.5f}, .width_shift_list_len = 2);
    {   /* a list with a value >= 1 is in pixels: 0.5 stays half a pixel */
        int halves = 0, twos = 0;
        cnn_transform t;
        for (int s = 0; s < 400; s++) {
            cnn_datagen_get_random_transform(g, 32, 40, (uint64_t)s, &t);
            halves += fabsf(t.shift_x) == 0.5f;
            twos += fabsf(t.shift_x) == 2.0f;
        }
        CHECK(halves + twos == 400 && halves > 150 && twos > 150, "pixel list: %d halves, %d twos", halves, twos);
    }

    test_begin("random_transform_draws");
    cnn_datagen_free(g);
    g = cnn_datagen_new(.rotation_range = 20, .width_shift_range = 0.1f, .height_shift_range = 3, .shear_range = 5,
                        .zoom_range = {0.2f}, .horizontal_flip = 1, .channel_shift_range = 10,
                        .brightness_range = {0.7f, 1.3f});
    int hflips = 0, vflips = 0, out_of_range = 0, same = 1;
    cnn_transform a, b;
    for (int s = 0; s < 2000; s++) {
        cnn_datagen_get_random_transform(g, 32, 40, (uint64_t)s, &a);
        hflips += a.flip_horizontal;
        vflips += a.flip_vertical;
        out_of_range += fabsf(a.theta) > 20 || fabsf(a.shift_x) > 4.0f || fabsf(a.shift_y) > 3 || fabsf(a.shear) > 5 ||
                        a.zoom_x < 0.8f || a.zoom_x > 1.2f || a.zoom_y < 0.8f || a.zoom_y > 1.2f ||
                        fabsf(a.channel_shift) > 10 || a.brightness < 0.7f || a.brightness > 1.3f;
        cnn_datagen_get_random_transform(g, 32, 40, (uint64_t)s, &b);
        same &= !memcmp(&a, &b, sizeof a);
    }
    CHECK(!out_of_range, "%d draws outside their ranges (width_shift_range 0.1 of 40 = 4 px)", out_of_range);
    CHECK(hflips > 900 && hflips < 1100 && vflips == 0, "%d/2000 horizontal flips, %d vertical", hflips, vflips);
    CHECK(same, "the same seed gave different draws");
    cnn_datagen_get_random_transform(g, 32, 40, 1, &a);
    cnn_datagen_get_random_transform(g, 32, 40, 2, &b);
    CHECK(memcmp(&a, &b, sizeof a) != 0, "different seeds gave the same draw");
    {
        float img[8 * 8 * 3], r1[8 * 8 * 3], r2[8 * 8 * 3];
        fill_random(img, sizeof img / sizeof *img, 255);
        cnn_datagen_random_transform(g, img, 8, 8, 3, 99, r1);
        cnn_datagen_get_random_transform(g, 8, 8, 99, &a);
        cnn_datagen_apply_transform_opt(g, img, 8, 8, 3, &a, r2);
        CHECK(!memcmp(r1, r2, sizeof r1), "random_transform != apply_transform(get_random_transform)");
    }
    cnn_datagen_free(g);
}

/* ------------------------------------------------------------ standardize */

static int prep_calls;
static int prep_fn(float *img, int h, int w, int c, void *user) {
    (void)user;
    prep_calls++;
    for (int i = 0; i < h * w * c; i++) img[i] += 10; /* runs before rescale */
    return 0;
}
static int prep_fail(float *img, int h, int w, int c, void *user) {
    (void)img; (void)h; (void)w; (void)c; (void)user;
    return 42;
}

static void test_standardize(void) {
    enum { H = 3, W = 4, C = 2, N = H * W * C };
    float x[2 * N], y[2 * N];
    fill_random(x, 2 * N, 255);

    test_begin("standardize_order");
    cnn_datagen *g = cnn_datagen_new(.preprocessing_function = prep_fn, .rescale = 0.5f, .samplewise_center = 1,
                                     .samplewise_std_normalization = 1, .featurewise_center = 1,
                                     .featurewise_std_normalization = 1);
    float mean[C] = {0.25f, -0.5f}, std[C] = {2.0f, 0.5f};
    cnn_datagen_set_stats(g, mean, std, C);
    memcpy(y, x, sizeof x);
    prep_calls = 0;
    CHECK(cnn_datagen_standardize(g, y, 2, H, W, C) == CNN_OK, "%s", cnn_last_error());
    CHECK(prep_calls == 2, "preprocessing_function called %d times for 2 images", prep_calls);
    double err = 0;
    for (int im = 0; im < 2; im++) {
        double v[N], m = 0, s = 0;
        for (int i = 0; i < N; i++) { v[i] = (x[im * N + i] + 10) * 0.5; m += v[i]; }
        m /= N;
        for (int i = 0; i < N; i++) { v[i] -= m; s += v[i] * v[i]; }
        s = sqrt(s / N) + 1e-6;
        for (int i = 0; i < N; i++) {
            double want = (v[i] / s - mean[i % C]) / (std[i % C] + 1e-6);
            err = fmax(err, fabs(want - y[im * N + i]));
        }
    }
    CHECK(err < 1e-5, "standardize differs from preprocessing, rescale, samplewise, featurewise: %g", err);
    cnn_datagen_free(g);
    g = cnn_datagen_new(.preprocessing_function = prep_fail);
    CHECK(cnn_datagen_standardize(g, y, 1, H, W, C) < 0 && error_has("preprocessing_function returned 42"),
          "a failing preprocessing_function: %s", cnn_last_error());
    cnn_datagen_free(g);
}

/* ----------------------------------------------------------- fit and ZCA */

static void test_fit(void) {
    for (int fi = 0; fi < 2; fi++) {
        static const char *const groups[2] = {"fit_statistics_and_zca_vs_numpy_full_rank",
                                              "fit_statistics_and_zca_vs_numpy_fewer_images"};
        char name[48];
        unsigned count;
        test_begin(groups[fi]);
        snprintf(name, sizeof name, "fit%d_x", fi);
        const float *xs = F(name, &count);
        CHECK(xs != NULL, "fixture %s missing", name);
        if (!xs) continue;
        int n = (int)(count / 48);
        cnn_dataset *d = cnn_dataset_new(n, 4, 4, 3, 1);
        for (unsigned i = 0; i < count; i++) d->images[i] = (unsigned char)xs[i];
        snprintf(name, sizeof name, "fit%d_mean", fi);
        const float *wm = F(name, NULL);
        snprintf(name, sizeof name, "fit%d_std", fi);
        const float *ws = F(name, NULL);
        snprintf(name, sizeof name, "fit%d_pc", fi);
        const float *wpc = F(name, NULL);
        snprintf(name, sizeof name, "fit%d_std_out", fi);
        const float *wso = F(name, NULL);
        snprintf(name, sizeof name, "fit%d_zca_out", fi);
        const float *wzo = F(name, NULL);

        cnn_datagen *g = cnn_datagen_new(.rescale = 1.0f / 255, .featurewise_center = 1, .featurewise_std_normalization = 1);
        CHECK(cnn_datagen_fit(g, d) == CNN_OK, "fit: %s", cnn_last_error());
        const float *mean = NULL, *std = NULL;
        int c = 0;
        cnn_datagen_stats(g, &mean, &std, &c);
        CHECK(c == 3 && mean && std, "no statistics after fit");
        double err = 0;
        for (int k = 0; k < 3 && mean; k++) err = fmax(err, fmax(fabs(mean[k] - wm[k]), fabs(std[k] - ws[k])));
        CHECK(err < 1e-6, "mean/std differ from numpy by %g", err);
        float img[48];
        for (int i = 0; i < 48; i++) img[i] = xs[i];
        cnn_datagen_standardize(g, img, 1, 4, 4, 3);
        err = 0;
        for (int i = 0; i < 48; i++) err = fmax(err, fabs(img[i] - wso[i]));
        CHECK(err < 1e-4, "featurewise standardize differs from numpy by %g", err);
        cnn_datagen_free(g);

        g = cnn_datagen_new(.rescale = 1.0f / 255, .zca_whitening = 1);
        CHECK(cnn_datagen_fit(g, d) == CNN_OK, "fit (ZCA): %s", cnn_last_error());
        int dd = 0;
        const float *pc = cnn_datagen_zca_matrix(g, &dd);
        CHECK(pc && dd == 48, "no 48 x 48 ZCA matrix (d = %d)", dd);
        double maxv = 0;
        err = 0;
        for (int i = 0; pc && i < 48 * 48; i++) {
            maxv = fmax(maxv, fabs(wpc[i]));
            err = fmax(err, fabs(pc[i] - wpc[i]));
        }
        CHECK(err <= 1e-4 * maxv, "ZCA matrix differs from numpy by %g (largest entry %g)", err, maxv);
        for (int i = 0; i < 48; i++) img[i] = xs[i];
        cnn_datagen_standardize(g, img, 1, 4, 4, 3);
        err = maxv = 0;
        for (int i = 0; i < 48; i++) {
            maxv = fmax(maxv, fabs(wzo[i]));
            err = fmax(err, fabs(img[i] - wzo[i]));
        }
        CHECK(err <= 1e-4 * maxv, "whitened image differs from numpy by %g (largest %g)", err, maxv);
        cnn_datagen_free(g);
        cnn_dataset_free(d);
    }

    test_begin("fit_augment_rounds_seed");
    {
        enum { N = 12 };
        cnn_dataset *d = cnn_dataset_new(N, 6, 6, 3, 1);
        for (int i = 0; i < N * 108; i++) d->images[i] = (unsigned char)(frand() * 255);
        cnn_datagen *plain = cnn_datagen_new(.featurewise_center = 1, .featurewise_std_normalization = 1);
        cnn_datagen *aug = cnn_datagen_new(.featurewise_center = 1, .featurewise_std_normalization = 1,
                                           .rotation_range = 30, .fill_mode = CNN_FILL_CONSTANT, .cval = 0);
        const float *m0 = NULL, *s0 = NULL, *m1 = NULL, *s1 = NULL;
        float keep[6];
        int c;
        cnn_datagen_fit(plain, d, .augment = 1, .rounds = 3, .seed = 5); /* nothing random: the plain statistics */
        cnn_datagen_stats(plain, &m0, &s0, &c);
        memcpy(keep, m0, 3 * sizeof(float));
        memcpy(keep + 3, s0, 3 * sizeof(float));
        cnn_datagen_fit(plain, d);
        cnn_datagen_stats(plain, &m0, &s0, &c);
        double err = 0;
        for (int k = 0; k < 3; k++) err = fmax(err, fmax(fabs(keep[k] - m0[k]), fabs(keep[3 + k] - s0[k])));
        CHECK(err < 1e-4, "augment with an identity generator changed the statistics by %g", err);
        cnn_datagen_fit(aug, d, .augment = 1, .rounds = 2, .seed = 5);
        cnn_datagen_stats(aug, &m1, &s1, &c);
        memcpy(keep, m1, 3 * sizeof(float));
        cnn_datagen_fit(aug, d, .augment = 1, .rounds = 2, .seed = 5);
        cnn_datagen_stats(aug, &m1, &s1, &c);
        CHECK(!memcmp(keep, m1, 3 * sizeof(float)), "the same seed gave other statistics");
        CHECK(m1[0] < m0[0], "rotating in black corners (constant 0) should lower the mean: %g vs %g", m1[0], m0[0]);
        cnn_datagen_fit(aug, d, .augment = 1, .rounds = 2, .seed = 6);
        cnn_datagen_stats(aug, &m1, &s1, &c);
        CHECK(memcmp(keep, m1, 3 * sizeof(float)) != 0, "another seed gave the same statistics");
        CHECK(cnn_datagen_fit(aug, d, .augment = 1, .rounds = -1) == CNN_ERR_ARG && error_has("rounds"), "negative rounds");
        cnn_datagen_free(plain);
        cnn_datagen_free(aug);
        cnn_dataset_free(d);
    }
}

/* ------------------------------------------------------------------ flows */

/* n images of h x w x 1 whose pixels all equal their index; label = index % k */
static cnn_dataset *indexed_dataset(int n, int h, int w, int k) {
    cnn_dataset *d = cnn_dataset_new(n, h, w, 1, k);
    for (int i = 0; i < n; i++) {
        memset(d->images + (size_t)i * h * w, i, (size_t)h * w);
        d->labels[i] = i % k;
    }
    return d;
}

static float *collect(cnn_flow *f, int passes, size_t *len);

static void test_flow_basics(void) {
    enum { N = 37, BS = 8 };
    cnn_dataset *d = indexed_dataset(N, 3, 3, 5);
    cnn_datagen *g = cnn_datagen_new(.rescale = 0.5f, .validation_split = 0.25f);
    const float *x, *y;
    int got;

    test_begin("flow_pass_covers_every_sample_once");
    cnn_flow *f = cnn_datagen_flow(g, d, .batch_size = BS, .seed = 3);
    CHECK(f && cnn_flow_len(f) == 5 && cnn_flow_samples(f) == N, "len %d samples %d", cnn_flow_len(f), cnn_flow_samples(f));
    int order[3][N];
    for (int pass = 0; pass < 3; pass++) {
        int seen[N] = {0}, k = 0, batches = 0, bad = 0;
        while ((got = cnn_flow_next(f, &x, &y)) > 0) {
            batches++;
            CHECK(got == (batches < 5 ? BS : N - 4 * BS), "batch %d has %d samples", batches, got);
            for (int i = 0; i < got; i++) {
                int idx = (int)(x[i * 9] / 0.5f + 0.5f);
                bad += idx < 0 || idx >= N || x[i * 9 + 8] != x[i * 9] || y[i] != (float)(idx % 5);
                if (idx >= 0 && idx < N) seen[idx]++;
                if (k < N) order[pass][k++] = idx;
            }
        }
        CHECK(got == 0 && batches == 5, "pass %d: %d batches, last return %d", pass, batches, got);
        for (int i = 0; i < N; i++) bad += seen[i] != 1;
        CHECK(!bad, "pass %d: samples missing, repeated or mislabelled", pass);
    }
    CHECK(memcmp(order[0], order[1], sizeof order[0]) && memcmp(order[1], order[2], sizeof order[0]),
          "passes are not reshuffled");
    int sorted = 1;
    for (int i = 1; i < N; i++) sorted &= order[0][i] > order[0][i - 1];
    CHECK(!sorted, "shuffle left the order sorted");
    cnn_flow_reset(f, 1); /* back to pass 1: the same order as before */
    int again[N], k = 0;
    while ((got = cnn_flow_next(f, &x, &y)) > 0)
        for (int i = 0; i < got; i++) again[k++] = (int)(x[i * 9] / 0.5f + 0.5f);
    CHECK(k == N && !memcmp(again, order[1], sizeof again), "reset(1) does not replay pass 1");
    CHECK(f->src.rescale == 0.5f && f->src.mean == NULL, "source preprocessing fields: rescale %g", f->src.rescale);
    cnn_flow_free(f);

    test_begin("flow_no_shuffle_targets_subsets");
    f = cnn_datagen_flow(g, d, .batch_size = BS, .no_shuffle = 1, .one_hot = 1, .workers = -1);
    int bad = 0, pos = 0;
    CHECK(f && f->src.y_width == 5, "one-hot width");
    while ((got = cnn_flow_next(f, &x, &y)) > 0)
        for (int i = 0; i < got; i++, pos++) {
            bad += x[i * 9] != pos * 0.5f;
            for (int c = 0; c < 5; c++) bad += y[i * 5 + c] != (c == pos % 5 ? 1.0f : 0.0f);
        }
    CHECK(!bad && pos == N, "no_shuffle order or one-hot targets wrong (%d samples)", pos);
    cnn_flow_free(f);
    {
        float ys[N * 2];
        for (int i = 0; i < N; i++) { ys[2 * i] = (float)i; ys[2 * i + 1] = -(float)i; }
        f = cnn_datagen_flow(g, d, .batch_size = BS, .y = ys, .y_width = 2, .seed = 9);
        bad = 0;
        while ((got = cnn_flow_next(f, &x, &y)) > 0)
            for (int i = 0; i < got; i++) {
                int idx = (int)(x[i * 9] / 0.5f + 0.5f);
                bad += y[2 * i] != (float)idx || y[2 * i + 1] != -(float)idx;
            }
        CHECK(!bad, "explicit targets do not follow their images");
        cnn_flow_free(f);
    }
    /* Keras' subset rule: the validation part is the FIRST int(n * split) = 9 images */
    cnn_flow *tr = cnn_datagen_flow(g, d, .subset = CNN_SUBSET_TRAINING, .no_shuffle = 1, .batch_size = 64);
    cnn_flow *va = cnn_datagen_flow(g, d, .subset = CNN_SUBSET_VALIDATION, .no_shuffle = 1, .batch_size = 64);
    CHECK(tr && va && cnn_flow_samples(tr) == 28 && cnn_flow_samples(va) == 9, "subset sizes %d + %d",
          cnn_flow_samples(tr), cnn_flow_samples(va));
    got = cnn_flow_next(va, &x, &y);
    CHECK(got == 9 && x[0] == 0 && x[8 * 9] == 4.0f, "validation subset is not images 0..8");
    got = cnn_flow_next(tr, &x, &y);
    CHECK(got == 28 && x[0] == 4.5f && cnn_flow_classes(tr)[0] == 9 % 5, "training subset does not start at image 9");
    cnn_flow_free(tr);
    cnn_flow_free(va);
    {   /* sorted labels lose classes in a split: Keras' error */
        cnn_dataset *s = indexed_dataset(20, 2, 2, 2);
        for (int i = 0; i < 20; i++) s->labels[i] = i < 10 ? 0 : 1;
        cnn_datagen *g2 = cnn_datagen_new(.validation_split = 0.3f);
        CHECK(cnn_datagen_flow(g2, s, .subset = CNN_SUBSET_TRAINING) == NULL && error_has("different classes"),
              "a split by sorted labels: %s", cnn_last_error());
        cnn_datagen_free(g2);
        cnn_dataset_free(s);
    }

    test_begin("flow_float_and_worker_errors");
    {   /* float images give what their uint8 originals give */
        float *xf = (float *)malloc((size_t)N * 9 * sizeof(float)), ys[N];
        cnn_datagen *gr = cnn_datagen_new(.rotation_range = 25, .shear_range = 8, .fill_mode = CNN_FILL_REFLECT);
        for (int i = 0; i < N * 9; i++) xf[i] = d->images[i];
        for (int i = 0; i < N; i++) ys[i] = (float)d->labels[i];
        cnn_flow *a = cnn_datagen_flow(gr, d, .batch_size = 6, .seed = 2, .workers = 2);
        cnn_flow *b = cnn_datagen_flow_float(gr, xf, N, 3, 3, 1, .batch_size = 6, .seed = 2, .y = ys, .y_width = 1);
        size_t na, nb;
        float *ra = collect(a, 2, &na), *rb = collect(b, 2, &nb);
        CHECK(na == nb && !memcmp(ra, rb, na * sizeof(float)), "float images flow differently from their uint8 originals");
        free(ra);
        free(rb);
        cnn_flow_free(a);
        cnn_flow_free(b);
        cnn_datagen_free(gr);
        free(xf);
        /* an error on a worker reaches next, naming the cause */
        gr = cnn_datagen_new(.preprocessing_function = prep_fail);
        a = cnn_datagen_flow(gr, d, .batch_size = 6, .workers = 3);
        got = cnn_flow_next(a, &x, &y);
        CHECK(got < 0 && error_has("preprocessing_function returned 42"), "worker error: %d %s", got, cnn_last_error());
        cnn_flow_free(a);
        cnn_datagen_free(gr);
    }

    test_begin("flow_source_partial_batches");
    f = cnn_datagen_flow(g, d, .batch_size = BS, .no_shuffle = 1);
    cnn_batch_source *src = cnn_flow_source(f);
    float bx[3 * 9], by[3];
    int total = 0, calls = 0;
    bad = 0;
    src->reset(src->ctx, 0);
    while ((got = src->next(src->ctx, 3, bx, by)) > 0) { /* 3 at a time out of batches of 8 */
        for (int i = 0; i < got; i++) bad += bx[i * 9] != (total + i) * 0.5f || by[i] != (float)((total + i) % 5);
        total += got;
        calls++;
    }
    CHECK(!bad && total == N && calls == 14, "partial reads: %d samples in %d calls", total, calls);
    cnn_flow_free(f);
    cnn_datagen_free(g);
    cnn_dataset_free(d);
}

/* every batch of `passes` passes, concatenated, plus reset/peek patterns */
static float *collect(cnn_flow *f, int passes, size_t *len) {
    size_t cap = 1 << 16, n = 0;
    float *all = (float *)malloc(cap * sizeof(float));
    const float *x, *y;
    int got;
    const int per = f->h * f->w * f->c;
    for (int p = 0; p < passes; p++) {
        cnn_flow_reset(f, p);
        while ((got = cnn_flow_next(f, &x, &y)) > 0) {
            size_t add = (size_t)got * (per + 1);
            while (n + add > cap) all = (float *)realloc(all, (cap *= 2) * sizeof(float));
            memcpy(all + n, x, (size_t)got * per * sizeof(float));
            memcpy(all + n + (size_t)got * per, y, (size_t)got * sizeof(float));
            n += add;
        }
    }
    *len = n;
    return all;
}

static void test_flow_determinism(void) {
    test_begin("flow_same_batches_for_1_and_4_threads");
    enum { N = 45 };
    cnn_dataset *d = cnn_dataset_new(N, 8, 8, 3, 3);
    for (int i = 0; i < N * 192; i++) d->images[i] = (unsigned char)(frand() * 255);
    for (int i = 0; i < N; i++) d->labels[i] = i % 3;
    cnn_datagen *g = cnn_datagen_new(.rotation_range = 20, .width_shift_range = 0.02f, .height_shift_range = 0.02f,
                                     .horizontal_flip = 1, .zoom_range = {0.1f}, .rescale = 1.0f / 255);
    static const int workers[4] = {-1, 1, 4, 2}, queue[4] = {0, 3, 0, 1};
    float *ref = NULL;
    size_t ref_len = 0;
    for (int v = 0; v < 4; v++) {
        cnn_flow *f = cnn_datagen_flow(g, d, .batch_size = 7, .seed = 11, .workers = workers[v], .max_queue_size = queue[v]);
        size_t len;
        float *all = collect(f, 3, &len);
        if (!ref) { ref = all; ref_len = len; }
        else {
            CHECK(len == ref_len && !memcmp(all, ref, len * sizeof(float)), "workers %d queue %d: other batches",
                  workers[v], queue[v]);
            free(all);
        }
        cnn_flow_free(f);
    }
    {   /* a flow peeked at mid-pass and reset, then read again, gives the same stream */
        cnn_flow *f = cnn_datagen_flow(g, d, .batch_size = 7, .seed = 11, .workers = 4);
        const float *x, *y;
        cnn_flow_reset(f, 2);
        cnn_flow_next(f, &x, &y);
        cnn_flow_next(f, &x, &y);
        size_t len;
        float *all = collect(f, 3, &len);
        CHECK(len == ref_len && !memcmp(all, ref, len * sizeof(float)), "a reset after peeking changed the stream");
        free(all);
        cnn_flow_free(f);
        f = cnn_datagen_flow(g, d, .batch_size = 7, .seed = 12, .workers = 2);
        all = collect(f, 1, &len);
        CHECK(memcmp(all, ref, (len < ref_len ? len : ref_len) * sizeof(float)) != 0, "another seed gave the same batches");
        free(all);
        cnn_flow_free(f);
    }
    free(ref);
    cnn_datagen_free(g);
    cnn_dataset_free(d);
}

static void test_flow_fit(void) {
    test_begin("fit_on_a_flow_steps_and_validation");
    enum { N = 40 };
    cnn_dataset *d = cnn_dataset_new(N, 4, 4, 1, 2);
    for (int i = 0; i < N; i++) { /* class 1: bright top half */
        d->labels[i] = i % 2;
        for (int p = 0; p < 16; p++) d->images[i * 16 + p] = (unsigned char)(p < 8 && i % 2 ? 200 : 30 + (i * 7 + p * 13) % 40);
    }
    cnn_model *m = cnn_model_new();
    cnn_node *in = cnn_input(m, 4, 4, 1, "input");
    cnn_node *x = cnn_flatten(m, in, .name = "flatten");
    x = cnn_dense(m, x, .units = 2, .activation = CNN_SOFTMAX, .name = "out");
    CHECK(cnn_model_set_output(m, x) == CNN_OK && cnn_compile(m, .loss = CNN_CATEGORICAL_CROSSENTROPY, .metrics = CNN_ACCURACY) == CNN_OK,
          "model: %s", cnn_last_error());
    cnn_datagen *g = cnn_datagen_new(.rescale = 1.0f / 255, .horizontal_flip = 1, .featurewise_center = 1,
                                     .validation_split = 0.2f);
    cnn_datagen_fit(g, d);
    cnn_flow *tr = cnn_datagen_flow(g, d, .batch_size = 8, .subset = CNN_SUBSET_TRAINING, .seed = 1);
    cnn_flow *va = cnn_datagen_flow(g, d, .batch_size = 8, .subset = CNN_SUBSET_VALIDATION, .no_shuffle = 1);
    /* more batches than a pass holds (32 samples = 4 batches): sampling continues across passes */
    cnn_history *h = cnn_fit_source(m, cnn_flow_source(tr), .batch_size = 8, .epochs = 3, .steps_per_epoch = 6,
                                    .validation_source = cnn_flow_source(va));
    CHECK(h && h->epochs == 3 && cnn_history_get(h, "val_accuracy"), "fit with steps_per_epoch 6: %s", cnn_last_error());
    cnn_history_free(h);
    /* fewer, and validation from arrays (the model repeats rescale and the mean) */
    h = cnn_fit_source(m, cnn_flow_source(tr), .batch_size = 8, .epochs = 2, .steps_per_epoch = 3, .validation_data = d);
    CHECK(h && h->epochs == 2, "fit with steps_per_epoch 3 and validation_data: %s", cnn_last_error());
    cnn_history_free(h);
    h = cnn_fit_source(m, cnn_flow_source(tr), .batch_size = 8, .epochs = 2);
    CHECK(h && h->epochs == 2, "fit on one pass per epoch: %s", cnn_last_error());
    cnn_history_free(h);
    CHECK(fabsf(cnn_model_rescale(m) - 1.0f / 255) < 1e-9f, "fit did not record the flow's rescale");
    {   /* the model's preprocessing now equals the flow's standardization */
        float a[16], b[16];
        const float *fm = NULL;
        int c = 0;
        cnn_datagen_stats(g, &fm, NULL, &c);
        cnn_preprocess(m, d->images, 1, a);
        for (int p = 0; p < 16; p++) b[p] = ((float)d->images[p] * (1.0f / 255) - fm[0]) / 1.0f;
        CHECK(!memcmp(a, b, sizeof a), "model preprocessing differs from the generator's");
    }
    cnn_eval_result r;
    CHECK(cnn_evaluate_source(m, cnn_flow_source(va), 8, 0, &r) == CNN_OK, "evaluate on a flow: %s", cnn_last_error());
    cnn_flow_free(tr);
    cnn_flow_free(va);
    cnn_datagen_free(g);
    cnn_model_free(m);
    cnn_dataset_free(d);
}

static int count_files(const char *dir, const char *prefix, const char *ext) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "ls '%s' | grep -c '^%s_[0-9]*_[0-9]*\\.%s$' > '%s/count.txt'", dir, prefix, ext, tmp_root);
    if (system(cmd) < 0) return -1;
    snprintf(cmd, sizeof cmd, "%s/count.txt", tmp_root);
    FILE *f = fopen(cmd, "r");
    int n = -1;
    if (f) { if (fscanf(f, "%d", &n) != 1) n = -1; fclose(f); }
    return n;
}

static void test_save_to_dir(void) {
    test_begin("flow_save_to_dir");
    char dir[128];
    snprintf(dir, sizeof dir, "%s/saved", tmp_root);
    mkdir(dir, 0755);
    cnn_dataset *d = cnn_dataset_new(10, 6, 5, 3, 2);
    for (int i = 0; i < 10 * 90; i++) d->images[i] = (unsigned char)(i * 7);
    cnn_datagen *g = cnn_datagen_new(.rotation_range = 15);
    cnn_flow *f = cnn_datagen_flow(g, d, .batch_size = 4, .save_to_dir = dir, .save_prefix = "aug", .workers = 2);
    const float *x, *y;
    while (cnn_flow_next(f, &x, &y) > 0) {}
    cnn_flow_free(f);
    CHECK(count_files(dir, "aug", "png") == 10, "%d PNG files, expected 10", count_files(dir, "aug", "png"));
    f = cnn_datagen_flow(g, d, .batch_size = 4, .save_to_dir = dir, .save_prefix = "b", .save_format = "bmp", .workers = -1);
    while (cnn_flow_next(f, &x, &y) > 0) {}
    cnn_flow_free(f);
    CHECK(count_files(dir, "b", "bmp") == 10, "%d BMP files, expected 10", count_files(dir, "b", "bmp"));
#ifndef UNDER_SANITIZER /* stb_image_write's JPEG encoder has a signed shift UBSan stops at */
    f = cnn_datagen_flow(g, d, .batch_size = 4, .save_to_dir = dir, .save_prefix = "j", .save_format = "jpeg");
    while (cnn_flow_next(f, &x, &y) > 0) {}
    cnn_flow_free(f);
    CHECK(count_files(dir, "j", "jpg") == 10, "%d JPEG files, expected 10", count_files(dir, "j", "jpg"));
#endif
    cnn_datagen_free(g);
    cnn_dataset_free(d);
}

/* ------------------------------------------------------ flow_from_directory */


static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (f) { fwrite(data, 1, n, f); fclose(f); }
}

static void test_directory(void) {
    test_begin("flow_from_directory_tree");
    char root[128], p[256];
    snprintf(root, sizeof root, "%s/tree", tmp_root);
    mkdir(root, 0755);
    static const char *const cls[3] = {"dog", "cat", "zebra"}; /* sorted: cat dog zebra */
    unsigned char img[10 * 12 * 3];
    int made = 0;
    for (int c = 0; c < 3; c++) {
        snprintf(p, sizeof p, "%s/%s", root, cls[c]);
        mkdir(p, 0755);
        snprintf(p, sizeof p, "%s/%s/sub", root, cls[c]);
        mkdir(p, 0755);
        for (int i = 0; i < 4; i++) {
            for (int k = 0; k < (int)sizeof img; k++) img[k] = (unsigned char)(c * 60 + i * 10 + (k % 3) * 5);
            if (i == 0) { snprintf(p, sizeof p, "%s/%s/a%d.png", root, cls[c], i); stbi_write_png(p, 12, 10, 3, img, 36); }
            if (i == 1) { snprintf(p, sizeof p, "%s/%s/b%d.JPG", root, cls[c], i); write_file(p, tiny_jpeg, sizeof tiny_jpeg); }
            if (i == 2) { snprintf(p, sizeof p, "%s/%s/c%d.bmp", root, cls[c], i); stbi_write_bmp(p, 12, 10, 3, img); }
            if (i == 3) { snprintf(p, sizeof p, "%s/%s/sub/d%d.png", root, cls[c], i); stbi_write_png(p, 12, 10, 3, img, 36); }
            made++;
        }
        snprintf(p, sizeof p, "%s/%s/notes.txt", root, cls[c]); /* not an image: ignored */
        write_file(p, "hello", 5);
        snprintf(p, sizeof p, "%s/%s/.hidden.png", root, cls[c]); /* hidden: ignored */
        write_file(p, "x", 1);
    }
    cnn_datagen *g = cnn_datagen_new(.validation_split = 0.5f);
    cnn_flow *f = cnn_datagen_flow_from_directory(g, root, .target_size = {10, 12}, .no_shuffle = 1, .batch_size = 5);
    CHECK(f != NULL, "a good tree: %s", cnn_last_error());
    if (f) {
        CHECK(cnn_flow_samples(f) == made && cnn_flow_num_classes(f) == 3, "%d samples, %d classes", cnn_flow_samples(f),
              cnn_flow_num_classes(f));
        CHECK(!strcmp(cnn_flow_class_name(f, 0), "cat") && !strcmp(cnn_flow_class_name(f, 1), "dog") &&
              !strcmp(cnn_flow_class_name(f, 2), "zebra"), "classes are not sorted");
        CHECK(strstr(cnn_flow_filename(f, 0), "cat/a0.png") && strstr(cnn_flow_filename(f, 3), "cat/sub/d3.png"),
              "file order: %s, %s", cnn_flow_filename(f, 0), cnn_flow_filename(f, 3));
        const float *x, *y;
        int got = cnn_flow_next(f, &x, &y);
        CHECK(got == 5 && f->src.y_width == 3 && y[0] == 1 && y[1] == 0 && y[4 * 3 + 1] == 1, "categorical targets");
        CHECK(x[0] == 60 && x[1] == 65 && x[2] == 70, "PNG pixels of dog... got %g %g %g", x[0], x[1], x[2]);
        cnn_flow_free(f);
    }
    /* classes given, subsets, class modes, colour modes, resizing */
    const char *const two[] = {"zebra", "cat", NULL};
    f = cnn_datagen_flow_from_directory(g, root, .classes = two, .class_mode = CNN_CLASS_BINARY, .subset = CNN_SUBSET_VALIDATION,
                                        .target_size = {20, 24}, .color_mode = CNN_COLOR_GRAYSCALE, .no_shuffle = 1);
    CHECK(f && cnn_flow_samples(f) == 4 && f->c == 1 && f->h == 20 && f->w == 24 && cnn_flow_classes(f)[0] == 0 &&
          !strcmp(cnn_flow_class_name(f, 0), "zebra"), "classes list / subset / grayscale: %s", cnn_last_error());
    if (f) {
        const float *x, *y;
        int got = cnn_flow_next(f, &x, &y);
        /* nearest resize to twice the size repeats every pixel 2 x 2 */
        CHECK(got == 4 && x[0] == x[1] && x[0] == x[24] && x[0] == x[25] && y[0] == 0 && y[3] == 1,
              "nearest 2x resize or binary targets wrong");
        cnn_flow_free(f);
    }
    f = cnn_datagen_flow_from_directory(g, root, .class_mode = CNN_CLASS_INPUT, .subset = CNN_SUBSET_TRAINING,
                                        .target_size = {5, 6}, .color_mode = CNN_COLOR_RGBA, .interpolation = CNN_INTERP_BILINEAR);
    CHECK(f && cnn_flow_samples(f) == 6 && f->c == 4 && f->src.y_width == 5 * 6 * 4, "input mode / rgba / training subset");
    if (f) {
        const float *x, *y;
        int got = cnn_flow_next(f, &x, &y);
        CHECK(got == 6 && !memcmp(x, y, (size_t)got * 120 * sizeof(float)), "class_mode input: y is not x");
        cnn_flow_free(f);
    }
    f = cnn_datagen_flow_from_directory(g, root, .class_mode = CNN_CLASS_SPARSE, .target_size = {4, 4});
    CHECK(f && f->src.y_width == 1, "sparse targets");
    cnn_flow_free(f);
    {   /* a link to a folder inside a class folder counts only with follow_links */
        char target[96], link[200];
        snprintf(target, sizeof target, "%s/extra", tmp_root);
        mkdir(target, 0755);
        snprintf(p, sizeof p, "%s/e.png", target);
        stbi_write_png(p, 12, 10, 3, img, 36);
        snprintf(link, sizeof link, "%s/cat/linked", root);
        CHECK(symlink(target, link) == 0, "symlink");
        cnn_flow *nl = cnn_datagen_flow_from_directory(g, root, .target_size = {4, 4});
        cnn_flow *fl = cnn_datagen_flow_from_directory(g, root, .target_size = {4, 4}, .follow_links = 1);
        CHECK(nl && fl && cnn_flow_samples(nl) == made && cnn_flow_samples(fl) == made + 1,
              "follow_links: %d and %d samples", nl ? cnn_flow_samples(nl) : -1, fl ? cnn_flow_samples(fl) : -1);
        cnn_flow_free(nl);
        cnn_flow_free(fl);
        remove(link);
    }
    const char *const missing[] = {"cat", "unicorn", NULL};
    CHECK(cnn_datagen_flow_from_directory(g, root, .classes = missing) == NULL && error_has("unicorn"), "missing class folder");
    CHECK(cnn_datagen_flow_from_directory(g, root, .class_mode = CNN_CLASS_BINARY) == NULL && error_has("binary"),
          "binary with 3 classes");

    test_begin("flow_from_directory_lazy_same_batches");
    cnn_datagen *ga = cnn_datagen_new(.rotation_range = 10, .horizontal_flip = 1);
    cnn_flow *e = cnn_datagen_flow_from_directory(ga, root, .target_size = {8, 8}, .seed = 4, .batch_size = 5, .workers = 2);
    cnn_flow *l = cnn_datagen_flow_from_directory(ga, root, .target_size = {8, 8}, .seed = 4, .batch_size = 5, .lazy = 1, .workers = 3);
    if (e && l) {
        size_t n1, n2;
        float *a = collect(e, 2, &n1), *b = collect(l, 2, &n2);
        CHECK(n1 == n2 && !memcmp(a, b, n1 * sizeof(float)), "lazy decoding gives other batches");
        free(a);
        free(b);
    } else CHECK(0, "flows: %s", cnn_last_error());
    cnn_flow_free(e);
    cnn_flow_free(l);

    test_begin("flow_from_directory_bad_files");
    snprintf(p, sizeof p, "%s/cat/broken.png", root); /* an image extension, not an image */
    write_file(p, "this is not a png at all", 24);
    f = cnn_datagen_flow_from_directory(g, root, .target_size = {8, 8});
    CHECK(f == NULL && error_has("broken.png"), "a corrupt file must be an error naming it: %s", cnn_last_error());
    fflush(stdout);
    int saved = dup(2);
    FILE *devnull = freopen("/dev/null", "w", stderr); /* keep the expected warning out of the log */
    f = cnn_datagen_flow_from_directory(g, root, .target_size = {8, 8}, .skip_bad = 1);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    (void)devnull;
    CHECK(f && cnn_flow_samples(f) == made, "skip_bad: %d samples (%s)", f ? cnn_flow_samples(f) : -1, cnn_last_error());
    cnn_flow_free(f);
    remove(p);
    /* a truncated JPEG: the header reads (so a lazy flow accepts it), the pixels do not */
    snprintf(p, sizeof p, "%s/dog/b1.JPG", root);
    FILE *jf = fopen(p, "rb");
    unsigned char buf[4096];
    size_t jn = jf ? fread(buf, 1, sizeof buf, jf) : 0;
    if (jf) fclose(jf);
    snprintf(p, sizeof p, "%s/dog/truncated.jpg", root);
    write_file(p, buf, jn > 400 ? 400 : jn / 2);
    f = cnn_datagen_flow_from_directory(g, root, .target_size = {8, 8});
    CHECK(f == NULL && error_has("truncated.jpg"), "a truncated JPEG must be an error naming it: %s", cnn_last_error());
    l = cnn_datagen_flow_from_directory(g, root, .target_size = {8, 8}, .lazy = 1, .no_shuffle = 1, .batch_size = 64);
    if (l) {
        const float *x, *y;
        int got = cnn_flow_next(l, &x, &y);
        CHECK(got < 0 && error_has("truncated.jpg"), "lazy: next must fail naming the file (got %d: %s)", got, cnn_last_error());
        cnn_flow_free(l);
    } else {
        CHECK(error_has("truncated.jpg"), "lazy flow: %s", cnn_last_error());
    }
    cnn_datagen_free(ga);
    cnn_datagen_free(g);
}

/* stops a fit at the end of epoch user[0] (0-based); counts the epochs run in user[1] */
static int stop_after_epoch(cnn_model *m, int epoch, const cnn_history *h, void *user) {
    (void)m, (void)h;
    ((int *)user)[1]++;
    return epoch == ((const int *)user)[0];
}

/* BackupAndRestore with an augmentation flow: a run stopped after 2 epochs and
   started again with a new model and a new flow (as a new process would) ends
   where a run never stopped ends. Epochs of 5 batches over passes of 4 (the
   stop falls inside a pass), random transforms made by 2 worker threads. */
static void test_flow_backup(void) {
    test_begin("BackupAndRestore on an augmentation flow: stopped after 2 epochs and started again with a new "
               "flow = 4 epochs straight (weights and History bit for bit)");
    enum { N = 32 };
    cnn_dataset *d = cnn_dataset_new(N, 6, 6, 1, 2);
    for (int i = 0; i < N; i++) {
        d->labels[i] = i % 2;
        for (int p = 0; p < 36; p++)
            d->images[i * 36 + p] = (unsigned char)(p < 18 && i % 2 ? 210 : 20 + (i * 11 + p * 17) % 60);
    }
    cnn_datagen *g = cnn_datagen_new(.rescale = 1.0f / 255, .rotation_range = 20, .width_shift_range = 0.2f,
                                     .horizontal_flip = 1);
    float w[2][3 * 3 * 2 + 2 + 32 * 2 + 2]; /* conv, then dense on the 4x4x2 flattened */
    cnn_history *hist[2] = {NULL, NULL};
    for (int run = 0; run < 2; run++) {
        char dir[300];
        snprintf(dir, sizeof dir, "%s/flow-backup-%d", tmp_root, run);
        for (int part = 0; part < (run ? 2 : 1); part++) { /* run 1: stopped, then started again */
            cnn_model *m = cnn_model_new();
            cnn_model_set_seed(m, 5);
            cnn_node *x = cnn_input(m, 6, 6, 1, "input");
            x = cnn_conv2d(m, x, .filters = 2, .kernel_size = {3, 3}, .activation = CNN_RELU, .name = "conv");
            x = cnn_flatten(m, x, .name = "flatten");
            x = cnn_dropout(m, x, .rate = 0.3f, .name = "drop");
            x = cnn_dense(m, x, .units = 2, .activation = CNN_SOFTMAX, .name = "out");
            cnn_model_set_output(m, x);
            cnn_compile(m, .loss = CNN_CATEGORICAL_CROSSENTROPY, .metrics = CNN_ACCURACY);
            cnn_flow *f = cnn_datagen_flow(g, d, .batch_size = 8, .seed = 9, .workers = 2);
            int stop_at[2] = {run && part == 0 ? 1 : -1, 0}; /* epoch to stop after, epochs run */
            cnn_callback *cbs[3] = {cnn_backup_and_restore(.backup_dir = dir, .keep_backup = 1),
                                    cnn_lambda_callback(.on_epoch_end = stop_after_epoch, .user = stop_at), NULL};
            cnn_history *h = cnn_fit_source(m, cnn_flow_source(f), .epochs = 4, .steps_per_epoch = 5,
                                            .callbacks = cbs);
            CHECK(h != NULL, "fit: %s", cnn_last_error());
            if (part == 0 && run) CHECK(h && h->epochs == 2, "the first part ran %d epochs", h ? h->epochs : -1);
            if (part == 1) CHECK(stop_at[1] == 2, "the run started again ran %d epochs, not the last 2", stop_at[1]);
            if (stop_at[0] < 0) {
                hist[run] = h;
                h = NULL;
                size_t count = 0;
                const float *p = cnn_model_params(m, &count);
                CHECK(count * sizeof(float) == sizeof w[run], "%zu parameters", count);
                if (count * sizeof(float) == sizeof w[run]) memcpy(w[run], p, sizeof w[run]);
            }
            cnn_history_free(h);
            cnn_callback_free(cbs[0]);
            cnn_callback_free(cbs[1]);
            cnn_flow_free(f);
            cnn_model_free(m);
        }
    }
    CHECK(hist[0] && hist[1] && hist[0]->epochs == 4 && hist[1]->epochs == 4, "epochs %d, %d",
          hist[0] ? hist[0]->epochs : -1, hist[1] ? hist[1]->epochs : -1);
    for (int k = 0; hist[0] && hist[1] && k < hist[0]->n_keys; k++) {
        const double *a = hist[0]->values[k], *b = cnn_history_get(hist[1], hist[0]->keys[k]);
        CHECK(b && !memcmp(a, b, 4 * sizeof(double)), "History '%s' differs", hist[0]->keys[k]);
    }
    CHECK(!memcmp(w[0], w[1], sizeof w[0]), "the weights differ");
    cnn_history_free(hist[0]);
    cnn_history_free(hist[1]);
    cnn_datagen_free(g);
    cnn_dataset_free(d);
}

int main(void) {
    (void)test_rel_err;
    snprintf(tmp_root, sizeof tmp_root, "/tmp/cnn_augtest_XXXXXX");
    if (!mkdtemp(tmp_root)) { printf("FAIL mkdtemp\n"); return 1; }
    test_begin("fixtures_load");
    CHECK(load_fixtures(), "cannot read tests/fixtures/augment.bin (run from the repository root)");
    test_bad_params();
    test_exact_transforms();
    test_fixed_coordinates();
    test_scipy_fixtures();
    test_color_and_draws();
    test_standardize();
    test_fit();
    test_flow_basics();
    test_flow_determinism();
    test_flow_fit();
    test_flow_backup();
    test_save_to_dir();
    test_directory();
    for (int i = 0; i < n_fx; i++) free(fx[i].v);
    free(fx);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_root);
    if (system(cmd) != 0) printf("# could not remove %s\n", tmp_root);
    return test_finish();
}
