/* tools_check.c - the C side of the tests of tools/ (tests/test_keras_import.sh,
   tests/test_onnx.sh): cnn.h loads and predicts, Python's tools convert.

     tools_check predict MODEL.cnn IN.npy OUT.npy
         load MODEL.cnn, predict on IN.npy ([n][h][w][c]: uint8 images through
         cnn_predict_images, which applies the model's rescale and featurewise
         statistics, or float32 through cnn_predict) and write the outputs [n][units]
         as float32 OUT.npy
     tools_check compare MODEL.cnn IN.npy EXPECTED.npy TOL
         the same prediction, compared with EXPECTED.npy: prints the largest absolute
         difference; exit status 0 when it is <= TOL, 1 otherwise
     tools_check make-models DIR
         write DIR/tutorial.cnn (the tutorial's build_network, 32x32x3, random weights
         and BatchNorm statistics) and DIR/branch.cnn (Add, Concatenate, ZeroPadding2D,
         UpSampling2D, pools, a rescale and featurewise statistics), each with
         DIR/<name>_x.npy (inputs) and DIR/<name>_y.npy (cnn_predict's outputs)

   .npy files: version 1, little-endian '<f4' or '|u1', C order. */
#define CNN_IMPLEMENTATION
#include "cnn.h"
#include "tutorial_net.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct npy { int ndim, shape[8], is_u8; size_t count; void *data; } npy;

static int npy_read(const char *path, npy *a) {
    memset(a, 0, sizeof *a);
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "tools_check: cannot open %s\n", path); return 1; }
    unsigned char head[10];
    char dict[4096];
    if (fread(head, 1, 10, f) != 10 || memcmp(head, "\x93NUMPY", 6) || head[6] != 1) goto bad;
    size_t hl = head[8] | (size_t)head[9] << 8;
    if (hl >= sizeof dict || fread(dict, 1, hl, f) != hl) goto bad;
    dict[hl] = 0;
    if (strstr(dict, "'<f4'")) a->is_u8 = 0;
    else if (strstr(dict, "'|u1'")) a->is_u8 = 1;
    else goto bad;
    if (strstr(dict, "'fortran_order': True")) goto bad;
    const char *s = strstr(dict, "'shape': (");
    if (!s) goto bad;
    s += 10;
    a->count = 1;
    while (*s && *s != ')') {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s) break;
        if (a->ndim == 8 || v < 0) goto bad;
        a->shape[a->ndim++] = (int)v;
        a->count *= (size_t)v;
        s = end;
        while (*s == ',' || *s == ' ') s++;
    }
    size_t size = a->is_u8 ? 1 : 4;
    a->data = malloc(a->count * size + 1);
    if (!a->data || fread(a->data, size, a->count, f) != a->count) goto bad;
    fclose(f);
    return 0;
bad:
    fclose(f);
    free(a->data);
    a->data = NULL;
    fprintf(stderr, "tools_check: %s is not a version 1 '<f4' or '|u1' C-order .npy file\n", path);
    return 1;
}

static int npy_write(const char *path, const float *x, int ndim, const int *shape) {
    char dict[256], sh[128] = "";
    size_t count = 1;
    for (int i = 0; i < ndim; i++) {
        char t[32];
        snprintf(t, sizeof t, "%d%s", shape[i], ndim == 1 || i < ndim - 1 ? ", " : "");
        strcat(sh, t);
        count *= (size_t)shape[i];
    }
    int n = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }", sh);
    while ((10 + n + 1) % 64) dict[n++] = ' ';
    dict[n++] = '\n';
    FILE *f = fopen(path, "wb");
    if (!f) { fprintf(stderr, "tools_check: cannot create %s\n", path); return 1; }
    unsigned char head[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(n & 255), (unsigned char)(n >> 8)};
    int ok = fwrite(head, 1, 10, f) == 10 && fwrite(dict, 1, (size_t)n, f) == (size_t)n &&
             fwrite(x, sizeof(float), count, f) == count;
    ok = fclose(f) == 0 && ok;
    if (!ok) fprintf(stderr, "tools_check: cannot write %s\n", path);
    return !ok;
}

/* predictions of model on the inputs in x ([n][h][w][c]); NULL on error */
static float *predict(cnn_model *m, const npy *x, int *n_out, int *units) {
    int h, w, c;
    cnn_model_input_shape(m, &h, &w, &c);
    if (x->ndim != 4 || x->shape[1] != h || x->shape[2] != w || x->shape[3] != c) {
        fprintf(stderr, "tools_check: the inputs are not [n][%d][%d][%d]\n", h, w, c);
        return NULL;
    }
    const int n = x->shape[0];
    *units = cnn_model_output_size(m);
    *n_out = n;
    float *y = (float *)malloc((size_t)n * *units * sizeof(float));
    int rc = x->is_u8 ? cnn_predict_images(m, (const unsigned char *)x->data, n, 0, y)
                      : cnn_predict(m, (const float *)x->data, n, 0, y);
    if (rc) { fprintf(stderr, "tools_check: predict: %s\n", cnn_last_error()); free(y); return NULL; }
    return y;
}

static uint32_t rng_state = 12345;
static float uniform(float lo, float hi) { /* xorshift32 */
    rng_state ^= rng_state << 13; rng_state ^= rng_state >> 17; rng_state ^= rng_state << 5;
    return lo + (hi - lo) * (float)(rng_state >> 8) / 16777216.0f;
}

/* the glorot kernels cnn.h drew, random biases and BatchNorm parameters and
   statistics, so that every tensor matters */
static void randomize(cnn_model *m) {
    size_t count;
    const char *dense[] = {"conv_1", "conv_2", "fc1", "fc2", "softmax", "conv_a", "conv_c", "fc_flat", "out"};
    for (int i = 0; i < 9; i++) {
        float *b = cnn_layer_weights(m, dense[i], "bias", &count);
        for (size_t k = 0; b && k < count; k++) b[k] = uniform(-0.2f, 0.2f);
    }
    const char *bn[] = {"batch_norm_1", "batch_norm_2", "bn"};
    for (int i = 0; i < 3; i++) {
        float *mean = cnn_layer_weights(m, bn[i], "moving_mean", &count);
        float *var = cnn_layer_weights(m, bn[i], "moving_variance", &count);
        float *gamma = cnn_layer_weights(m, bn[i], "gamma", &count);
        float *beta = cnn_layer_weights(m, bn[i], "beta", &count);
        for (size_t k = 0; mean && k < count; k++) {
            mean[k] = uniform(-0.3f, 0.3f);
            var[k] = uniform(0.5f, 2.0f);
            gamma[k] = uniform(0.5f, 1.5f);
            beta[k] = uniform(-0.2f, 0.2f);
        }
    }
}

static cnn_model *tutorial(void) {
    cnn_model *m = cnn_model_new();
    cnn_node *x = tutorial_layers(m, 32, 32, 3, 10, 0.2f);
    if (cnn_model_set_output(m, x) ||
        cnn_compile(m, .optimizer = cnn_adam(), .loss = CNN_CATEGORICAL_CROSSENTROPY, .metrics = CNN_ACCURACY)) {
        fprintf(stderr, "tools_check: tutorial: %s\n", cnn_last_error());
        exit(2);
    }
    randomize(m);
    return m;
}

/* every other layer kind, in two branches joined by Add and Concatenate */
static cnn_model *branch(void) {
    cnn_model *m = cnn_model_new();
    cnn_node *in = cnn_input(m, 12, 10, 3, "image");
    cnn_node *a = cnn_conv2d(m, in, .filters = 6, .kernel_size = {3, 3}, .padding = CNN_SAME,
                             .activation = CNN_RELU, .name = "conv_a");
    cnn_node *b = cnn_conv2d(m, in, .filters = 6, .kernel_size = {5, 3}, .strides = {1, 1}, .padding = CNN_SAME,
                             .no_bias = 1, .name = "conv_b");
    b = cnn_batch_norm(m, b, .name = "bn");
    b = cnn_activation(m, b, .activation = CNN_LEAKY_RELU, .alpha = 0.1f, .name = "leaky");
    cnn_node *ab[2] = {a, b};
    cnn_node *x = cnn_add(m, ab, 2, .name = "add");
    x = cnn_zero_padding2d(m, x, .padding = {1, 2, 0, 1}, .name = "pad");       /* 15x11 */
    cnn_node *p = cnn_avg_pool2d(m, x, .pool_size = {3, 3}, .strides = {2, 2}, .padding = CNN_SAME,
                                 .name = "avg");                                  /* 8x6 */
    p = cnn_up_sampling2d(m, p, .size = {2, 2}, .name = "up");                  /* 16x12 */
    cnn_node *q = cnn_conv2d(m, x, .filters = 4, .kernel_size = {2, 2}, .strides = {1, 1},
                             .activation = CNN_ELU, .name = "conv_c");           /* 14x10 */
    q = cnn_zero_padding2d(m, q, .padding = {1, 1, 1, 1}, .name = "pad2");      /* 16x12 */
    cnn_node *pq[2] = {p, q};
    x = cnn_concatenate(m, pq, 2, .name = "concat");                             /* 16x12x10 */
    x = cnn_max_pool2d(m, x, .pool_size = {3, 3}, .strides = {2, 2}, .padding = CNN_SAME, .name = "max");
    x = cnn_activation(m, x, .activation = CNN_TANH, .name = "tanh");
    cnn_node *g = cnn_global_avg_pool2d(m, x, .name = "gap");
    cnn_node *f = cnn_dense(m, cnn_flatten(m, x, .name = "flat"), .units = 10, .activation = CNN_SIGMOID,
                            .name = "fc_flat");
    /* a second Flatten of the same layer: the exporter must flatten it once */
    cnn_node *f2 = cnn_dense(m, cnn_flatten(m, x, .name = "flat_again"), .units = 3, .activation = CNN_TANH,
                             .name = "fc_flat_again");
    cnn_node *gf[3] = {g, f, f2};
    x = cnn_concatenate(m, gf, 3, .name = "concat_flat");
    x = cnn_dropout(m, x, .rate = 0.5f, .name = "drop");
    x = cnn_dense(m, x, .units = 5, .activation = CNN_SOFTMAX, .name = "out");
    const float mean[3] = {0.4f, 0.5f, 0.6f}, std[3] = {0.2f, 0.25f, 0.3f};
    if (cnn_model_set_output(m, x) || cnn_model_set_rescale(m, 1.0f / 255) ||
        cnn_model_set_featurewise(m, mean, std, 3) ||
        cnn_compile(m, .optimizer = cnn_sgd(.learning_rate = 0.05f, .momentum = 0.9f, .nesterov = 1),
                    .loss = CNN_CATEGORICAL_CROSSENTROPY)) {
        fprintf(stderr, "tools_check: branch: %s\n", cnn_last_error());
        exit(2);
    }
    randomize(m);
    return m;
}

static int make(const char *dir, const char *name, cnn_model *m, int n, int u8) {
    char path[1024];
    int h, w, c, units, n_out;
    cnn_model_input_shape(m, &h, &w, &c);
    npy x = {4, {n, h, w, c}, u8, (size_t)n * h * w * c, NULL};
    x.data = malloc(x.count * sizeof(float));
    for (size_t i = 0; i < x.count; i++) {
        if (u8) ((unsigned char *)x.data)[i] = (unsigned char)uniform(0, 256);
        else ((float *)x.data)[i] = uniform(0, 1);
    }
    float *y = predict(m, &x, &n_out, &units);
    int rc = !y;
    snprintf(path, sizeof path, "%s/%s.cnn", dir, name);
    if (!rc && cnn_save(m, path)) { fprintf(stderr, "tools_check: %s\n", cnn_last_error()); rc = 1; }
    if (!rc && u8) { /* the inputs as uint8 values, stored as float32 (what the ONNX graph takes) */
        float *xf = (float *)malloc(x.count * sizeof(float));
        for (size_t i = 0; i < x.count; i++) xf[i] = ((unsigned char *)x.data)[i];
        free(x.data);
        x.data = xf;
    }
    snprintf(path, sizeof path, "%s/%s_x.npy", dir, name);
    rc = rc || npy_write(path, (const float *)x.data, 4, x.shape);
    snprintf(path, sizeof path, "%s/%s_y.npy", dir, name);
    const int shape[2] = {n_out, units};
    rc = rc || npy_write(path, y, 2, shape);
    free(x.data);
    free(y);
    cnn_model_free(m);
    return rc;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "make-models"))
        return make(argv[2], "tutorial", tutorial(), 6, 0) || make(argv[2], "branch", branch(), 5, 1);
    if ((argc == 5 && !strcmp(argv[1], "predict")) || (argc == 6 && !strcmp(argv[1], "compare"))) {
        cnn_model *m = cnn_load(argv[2]);
        if (!m) { fprintf(stderr, "tools_check: %s\n", cnn_last_error()); return 1; }
        npy x, e;
        int n, units, rc = 1;
        if (npy_read(argv[3], &x)) { cnn_model_free(m); return 1; }
        float *y = predict(m, &x, &n, &units);
        if (y && argc == 5) {
            const int shape[2] = {n, units};
            rc = npy_write(argv[4], y, 2, shape);
        } else if (y && !npy_read(argv[4], &e)) {
            if (e.is_u8 || e.count != (size_t)n * units) {
                fprintf(stderr, "tools_check: %s holds %zu values, the model predicts %d x %d\n", argv[4], e.count,
                        n, units);
            } else {
                double worst = 0;
                for (size_t i = 0; i < e.count; i++) {
                    double d = fabs((double)y[i] - ((float *)e.data)[i]);
                    if (!(d <= worst)) worst = d; /* NaN counts as the worst */
                }
                printf("max abs difference %.3g over %d x %d outputs (tolerance %s)\n", worst, n, units, argv[5]);
                rc = !(worst <= atof(argv[5]));
            }
            free(e.data);
        }
        free(y);
        free(x.data);
        cnn_model_free(m);
        return rc;
    }
    fprintf(stderr, "usage: tools_check predict MODEL.cnn IN.npy OUT.npy\n"
                    "       tools_check compare MODEL.cnn IN.npy EXPECTED.npy TOL\n"
                    "       tools_check make-models DIR\n");
    return 2;
}
