/* test_parity.c - parity of cnn.h with a PyTorch reference set up to compute what
   Keras computes (NHWC, Keras kernel layouts and 'same' padding, BatchNormalization
   momentum 0.99 / epsilon 1e-3, Adam with epsilon 1e-7 in Keras' form).

   The reference values come from tests/fixtures/make_fixtures.py (run it with
   /usr/bin/python3 to regenerate the fixtures; the file format is described
   there and read by fx_load below). Run this test from the repository root, or set
   CNN_FIXTURES to the fixtures folder.

   Every compared tensor must satisfy ||ours - reference|| / ||reference|| <= 1e-4.
   Each comparison is printed as a "# " line with its relative error.

   Build: gcc -std=c99 -O2 -Wall -Wextra -I. tests/test_parity.c -lm -o test_parity */
#define CNN_IMPLEMENTATION
#include "../cnn.h"
#include "test_util.h"
#include "tutorial_net.h"

#include <stdint.h>
#include <stdlib.h>

#define TOL 1e-4

/* ------------------------------------------------------------------------ */
/* Fixture files                                                            */
/* ------------------------------------------------------------------------ */

typedef struct fx_tensor {
    char *name;
    int ndim;
    uint32_t dims[8];
    size_t count;
    float *data;
} fx_tensor;

typedef struct fx_file {
    char path[512];
    int n;
    fx_tensor *t;
} fx_file;

static int fx_u32(FILE *f, uint32_t *v) {
    unsigned char b[4];
    if (fread(b, 1, 4, f) != 4) return 0;
    *v = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    return 1;
}

static void fx_free(fx_file *fx) {
    for (int i = 0; i < fx->n; i++) { free(fx->t[i].name); free(fx->t[i].data); }
    free(fx->t);
    fx->t = NULL;
    fx->n = 0;
}

/* Load a whole fixture file; on any problem a FAIL line names the file and why. */
static int fx_load(fx_file *fx, const char *file) {
    const char *dir = getenv("CNN_FIXTURES");
    memset(fx, 0, sizeof *fx);
    snprintf(fx->path, sizeof fx->path, "%s/%s", dir && *dir ? dir : "tests/fixtures", file);
    FILE *f = fopen(fx->path, "rb");
    if (!f) {
        CHECK(0, "cannot open fixture %s (run from the repository root, or regenerate with "
                 "/usr/bin/python3 tests/fixtures/make_fixtures.py)", fx->path);
        return 0;
    }
    char magic[8];
    uint32_t count = 0;
    if (fread(magic, 1, 8, f) != 8 || memcmp(magic, "CNNFIXT1", 8) != 0 || !fx_u32(f, &count) ||
        count > 100000) {
        CHECK(0, "%s is not a fixture file (bad magic or header)", fx->path);
        fclose(f);
        return 0;
    }
    fx->t = (fx_tensor *)calloc(count, sizeof *fx->t);
    for (uint32_t i = 0; fx->t && i < count; i++) {
        fx_tensor *t = &fx->t[i];
        uint32_t len, ndim;
        if (!fx_u32(f, &len) || len == 0 || len > 1000) goto bad;
        t->name = (char *)calloc(len + 1, 1);
        fx->n = (int)i + 1;
        if (!t->name || fread(t->name, 1, len, f) != len) goto bad;
        if (!fx_u32(f, &ndim) || ndim > 8) goto bad;
        t->ndim = (int)ndim;
        t->count = 1;
        for (uint32_t d = 0; d < ndim; d++) {
            if (!fx_u32(f, &t->dims[d])) goto bad;
            t->count *= t->dims[d];
        }
        if (t->count > ((size_t)1 << 26)) goto bad;
        t->data = (float *)malloc((t->count ? t->count : 1) * sizeof(float));
        if (!t->data) goto bad;
        for (size_t k = 0; k < t->count; k++) {
            uint32_t u;
            if (!fx_u32(f, &u)) goto bad;
            memcpy(&t->data[k], &u, 4);
        }
    }
    if (!fx->t) goto bad;
    fclose(f);
    return 1;
bad:
    CHECK(0, "%s is truncated or corrupt (tensor %d)", fx->path, fx->n);
    fclose(f);
    fx_free(fx);
    return 0;
}

/* The tensor "<prefix>/<name>" (prefix may be NULL); a missing tensor is a FAIL. */
static const float *fx_get(const fx_file *fx, const char *prefix, const char *name, size_t *count) {
    char full[256];
    if (prefix) snprintf(full, sizeof full, "%s/%s", prefix, name);
    else snprintf(full, sizeof full, "%s", name);
    for (int i = 0; i < fx->n; i++)
        if (strcmp(fx->t[i].name, full) == 0) {
            if (count) *count = fx->t[i].count;
            return fx->t[i].data;
        }
    CHECK(0, "fixture %s has no tensor %s", fx->path, full);
    if (count) *count = 0;
    return NULL;
}

static int fx_has(const fx_file *fx, const char *name) {
    for (int i = 0; i < fx->n; i++)
        if (strcmp(fx->t[i].name, name) == 0) return 1;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Comparisons                                                              */
/* ------------------------------------------------------------------------ */

static void cmp(const char *what, const float *ours, const float *ref, size_t n) {
    if (!ours || !ref) { CHECK(0, "%s: missing data", what); return; }
    double e = test_rel_err(ours, ref, n);
    printf("#   %-44s rel err %.3e\n", what, e);
    CHECK(e <= TOL, "%s: rel err %.3e > %.0e", what, e, TOL);
}

static void cmp_scalar(const char *what, double ours, double ref) {
    double e = ref != 0 ? fabs(ours - ref) / fabs(ref) : fabs(ours);
    printf("#   %-44s rel err %.3e  (%.7g vs %.7g)\n", what, e, ours, ref);
    CHECK(e <= TOL, "%s: %.7g vs reference %.7g, rel err %.3e > %.0e", what, ours, ref, e, TOL);
}

/* Compare a whole tensor, or its stored subset "<key>/idx", "<key>/val" and
   "<key>/stats" = [sum, sum of squares, sum of |x|] when the fixture has those. */
static void cmp_tensor(const fx_file *fx, const char *key, const float *ours, size_t n) {
    char buf[256];
    if (!ours) { CHECK(0, "%s: no data from the model", key); return; }
    if (fx_has(fx, key)) {
        size_t cnt;
        const float *ref = fx_get(fx, NULL, key, &cnt);
        CHECK(cnt == n, "%s: %zu values in the model, %zu in the fixture", key, n, cnt);
        if (ref && cnt == n) cmp(key, ours, ref, n);
        return;
    }
    size_t ni, nv, ns;
    const float *idx = fx_get(fx, key, "idx", &ni);
    const float *val = fx_get(fx, key, "val", &nv);
    const float *st = fx_get(fx, key, "stats", &ns);
    if (!idx || !val || !st || ni != nv || ns != 3) return;
    float *sub = (float *)malloc(ni * sizeof(float));
    if (!sub) { CHECK(0, "out of memory"); return; }
    for (size_t k = 0; k < ni; k++) {
        size_t i = (size_t)idx[k];
        if (i >= n) { CHECK(0, "%s: subset index %zu outside %zu values", key, i, n); free(sub); return; }
        sub[k] = ours[i];
    }
    snprintf(buf, sizeof buf, "%s [%zu of %zu]", key, ni, n);
    cmp(buf, sub, val, ni);
    free(sub);
    double s = 0, s2 = 0, sa = 0;
    for (size_t i = 0; i < n; i++) { s += ours[i]; s2 += (double)ours[i] * ours[i]; sa += fabs(ours[i]); }
    double es = fabs(s - st[0]) / st[2], es2 = fabs(s2 - st[1]) / st[1], esa = fabs(sa - st[2]) / st[2];
    printf("#   %-44s sum %.3e  sumsq %.3e  sumabs %.3e  (sum err / sum|x|)\n", key, es, es2, esa);
    CHECK(es <= TOL && es2 <= TOL && esa <= TOL,
          "%s: whole-tensor statistics off: sum %.3e, sum of squares %.3e, sum |x| %.3e", key, es,
          es2, esa);
}

/* The gradient of one parameter tensor: same offset in the gradient buffer as
   the tensor in the parameter buffer. */
static const float *grad_of(cnn_model *m, const char *layer, const char *which, size_t *n) {
    size_t np = 0, ng = 0;
    float *w = cnn_layer_weights(m, layer, which, n);
    float *p = cnn_model_params(m, &np);
    float *g = cnn_model_grads(m, &ng);
    if (!w || !p || !g || np != ng || w < p || (size_t)(w - p) + *n > np) {
        CHECK(0, "no gradient for %s/%s: %s", layer, which, cnn_last_error());
        return NULL;
    }
    return g + (w - p);
}

static int set_w(cnn_model *m, const char *layer, const char *which, const float *v, size_t n) {
    if (!v) return 0;
    int rc = cnn_set_weights(m, layer, which, v, n);
    CHECK(rc == CNN_OK, "cnn_set_weights(%s, %s, %zu): %s", layer, which, n, cnn_last_error());
    return rc == CNN_OK;
}

#define REQUIRE(cond, ...) do { if (!(cond)) { CHECK(0, __VA_ARGS__); goto done; } } while (0)

/* Finish, compile and check the output shape of a one-layer test model. */
static int finish_model(cnn_model *m, cnn_node *out, cnn_compile_opts opts, size_t want_units) {
    if (!out) { CHECK(0, "building the model: %s", cnn_last_error()); return 0; }
    if (cnn_model_set_output(m, out) != CNN_OK) { CHECK(0, "set_output: %s", cnn_last_error()); return 0; }
    if (cnn_compile_opt(m, &opts) != CNN_OK) { CHECK(0, "compile: %s", cnn_last_error()); return 0; }
    int units = cnn_model_output_size(m);
    CHECK((size_t)units == want_units, "output size %d, reference %zu", units, want_units);
    return (size_t)units == want_units;
}

/* Forward in inference mode, then loss and gradients in training mode; compares
   y, loss and dx. n samples of in_size values, out_units outputs each. */
static void check_forward_backward(cnn_model *m, const fx_file *fx, const char *cs, int n,
                                   size_t in_size, size_t out_units) {
    char key[128];
    size_t cx, ct, cy, cl, cdx;
    const float *x = fx_get(fx, cs, "x", &cx), *t = fx_get(fx, cs, "target", &ct);
    const float *y = fx_get(fx, cs, "y", &cy), *loss = fx_get(fx, cs, "loss", &cl);
    const float *dxr = fx_get(fx, cs, "dx", &cdx);
    if (!x || !t || !y || !loss || !dxr) return;
    CHECK(cx == (size_t)n * in_size && cdx == cx && cy == (size_t)n * out_units && ct == cy,
          "%s: fixture sizes do not match the model", cs);
    if (cx != (size_t)n * in_size || cy != (size_t)n * out_units) return;
    float *out = (float *)calloc(cy, sizeof(float)), *dx = (float *)calloc(cx, sizeof(float));
    float l = -1;
    if (!out || !dx) { CHECK(0, "out of memory"); free(out); free(dx); return; }
    int rc = cnn_predict(m, x, n, n, out);
    CHECK(rc == CNN_OK, "cnn_predict: %s", cnn_last_error());
    snprintf(key, sizeof key, "%s/y", cs);
    if (rc == CNN_OK) cmp(key, out, y, cy);
    rc = cnn_input_gradient(m, x, t, n, (int)out_units, dx, &l);
    CHECK(rc == CNN_OK, "cnn_input_gradient: %s", cnn_last_error());
    if (rc == CNN_OK) {
        snprintf(key, sizeof key, "%s/loss", cs);
        cmp_scalar(key, l, loss[0]);
        snprintf(key, sizeof key, "%s/dx", cs);
        cmp(key, dx, dxr, cx);
    }
    free(out);
    free(dx);
}

static void check_param_grad(cnn_model *m, const fx_file *fx, const char *cs, const char *layer,
                             const char *which, const char *ref_name) {
    char key[128];
    size_t n = 0, cr = 0;
    const float *g = grad_of(m, layer, which, &n);
    const float *r = fx_get(fx, cs, ref_name, &cr);
    if (!g || !r) return;
    CHECK(n == cr, "%s/%s: %zu values in the model, %zu in the fixture", cs, ref_name, n, cr);
    snprintf(key, sizeof key, "%s/%s", cs, ref_name);
    if (n == cr) cmp(key, g, r, n);
}

/* ------------------------------------------------------------------------ */
/* Layers                                                                   */
/* ------------------------------------------------------------------------ */

static void test_conv2d(void) {
    static const char *cases[] = {"valid", "valid_relu", "same_odd", "same_even", "same_rect",
                                  "strided_valid", "strided_same"};
    static char names[7][64];
    fx_file fx;
    test_begin("parity conv2d fixture");
    if (!fx_load(&fx, "conv2d.bin")) return;
    for (int ci = 0; ci < 7; ci++) {
        const char *cs = cases[ci];
        snprintf(names[ci], sizeof names[ci], "parity conv2d %s", cs);
        test_begin(names[ci]);
        size_t nc, nk, nb, ny;
        const float *cfg = fx_get(&fx, cs, "cfg", &nc);
        const float *k = fx_get(&fx, cs, "kernel", &nk), *b = fx_get(&fx, cs, "bias", &nb);
        fx_get(&fx, cs, "y", &ny);
        if (!cfg || nc != 11 || !k || !b) { CHECK(0, "%s: bad cfg", cs); continue; }
        int n = (int)cfg[0], h = (int)cfg[1], w = (int)cfg[2], c = (int)cfg[3], f = (int)cfg[4];
        cnn_model *m = cnn_model_new();
        REQUIRE(m, "cnn_model_new: %s", cnn_last_error());
        cnn_node *x = cnn_input(m, h, w, c, "input");
        x = cnn_conv2d(m, x, .filters = f, .kernel_size = {(int)cfg[5], (int)cfg[6]},
                       .strides = {(int)cfg[7], (int)cfg[8]},
                       .padding = cfg[9] != 0 ? CNN_SAME : CNN_VALID,
                       .activation = cfg[10] != 0 ? CNN_RELU : CNN_LINEAR, .name = "conv");
        {
            cnn_compile_opts co = {.loss = CNN_MSE};
            if (!finish_model(m, x, co, ny / (size_t)n)) goto done;
        }
        if (!set_w(m, "conv", "kernel", k, nk) || !set_w(m, "conv", "bias", b, nb)) goto done;
        check_forward_backward(m, &fx, cs, n, (size_t)h * w * c, ny / (size_t)n);
        check_param_grad(m, &fx, cs, "conv", "kernel", "dkernel");
        check_param_grad(m, &fx, cs, "conv", "bias", "dbias");
    done:
        cnn_model_free(m);
    }
    fx_free(&fx);
}

static void test_batchnorm(void) {
    fx_file fx;
    cnn_model *m = NULL;
    const int n = 4, h = 3, w = 3, c = 5;
    const size_t size = (size_t)n * h * w * c;
    float loss = -1, mm[5], mv[5], dx[4 * 3 * 3 * 5], out[4 * 3 * 3 * 5];
    static const float zeros[5] = {0, 0, 0, 0, 0}, ones[5] = {1, 1, 1, 1, 1};
    size_t cnt;
    test_begin("parity batchnorm fixture");
    if (!fx_load(&fx, "batchnorm.bin")) return;

    /* training mode: batch statistics; loss and gradients */
    test_begin("parity batchnorm training");
    m = cnn_model_new();
    REQUIRE(m, "cnn_model_new: %s", cnn_last_error());
    {
        cnn_node *x = cnn_batch_norm(m, cnn_input(m, h, w, c, "input"), .name = "bn");
        cnn_compile_opts co = {.optimizer = cnn_sgd(.learning_rate = 1e-30f), .loss = CNN_MSE};
        if (!finish_model(m, x, co, (size_t)h * w * c)) goto done;
    }
    {
        const float *x = fx_get(&fx, "train", "x", &cnt), *t = fx_get(&fx, "train", "target", NULL);
        const float *l = fx_get(&fx, "train", "loss", NULL);
        const float *g = fx_get(&fx, "train", "gamma", NULL), *b = fx_get(&fx, "train", "beta", NULL);
        REQUIRE(x && t && l && g && b && cnt == size, "batchnorm training fixture incomplete");
        if (!set_w(m, "bn", "gamma", g, c) || !set_w(m, "bn", "beta", b, c) ||
            !set_w(m, "bn", "moving_mean", zeros, c) || !set_w(m, "bn", "moving_variance", ones, c))
            goto done;
        int rc = cnn_input_gradient(m, x, t, n, h * w * c, dx, &loss);
        REQUIRE(rc == CNN_OK, "cnn_input_gradient: %s", cnn_last_error());
        cmp_scalar("train/loss", loss, l[0]);
        cmp("train/dx", dx, fx_get(&fx, "train", "dx", NULL), size);
        check_param_grad(m, &fx, "train", "bn", "gamma", "dgamma");
        check_param_grad(m, &fx, "train", "bn", "beta", "dbeta");
        /* cnn_input_gradient leaves the moving statistics alone */
        cnn_get_weights(m, "bn", "moving_mean", mm, c);
        cnn_get_weights(m, "bn", "moving_variance", mv, c);
        CHECK(memcmp(mm, zeros, sizeof mm) == 0 && memcmp(mv, ones, sizeof mv) == 0,
              "cnn_input_gradient changed the moving statistics");

        /* one training step updates the moving statistics (momentum 0.99,
           unbiased batch variance); lr 1e-30 keeps gamma and beta in place */
        test_begin("parity batchnorm moving statistics");
        loss = -1;
        rc = cnn_train_on_batch(m, x, t, n, h * w * c, &loss, NULL);
        REQUIRE(rc == CNN_OK, "cnn_train_on_batch: %s", cnn_last_error());
        cmp_scalar("train/loss (train_on_batch)", loss, l[0]);
        REQUIRE(cnn_get_weights(m, "bn", "moving_mean", mm, c) == CNN_OK &&
                    cnn_get_weights(m, "bn", "moving_variance", mv, c) == CNN_OK,
                "cnn_get_weights: %s", cnn_last_error());
        cmp("train/moving_mean", mm, fx_get(&fx, "train", "moving_mean", NULL), c);
        cmp("train/moving_variance", mv, fx_get(&fx, "train", "moving_variance", NULL), c);
    }

    /* inference mode: moving statistics */
    test_begin("parity batchnorm inference");
    {
        const float *x = fx_get(&fx, "infer", "x", &cnt);
        REQUIRE(x && cnt == size, "batchnorm inference fixture incomplete");
        if (!set_w(m, "bn", "gamma", fx_get(&fx, "infer", "gamma", NULL), c) ||
            !set_w(m, "bn", "beta", fx_get(&fx, "infer", "beta", NULL), c) ||
            !set_w(m, "bn", "moving_mean", fx_get(&fx, "infer", "moving_mean", NULL), c) ||
            !set_w(m, "bn", "moving_variance", fx_get(&fx, "infer", "moving_variance", NULL), c))
            goto done;
        int rc = cnn_predict(m, x, n, n, out);
        REQUIRE(rc == CNN_OK, "cnn_predict: %s", cnn_last_error());
        cmp("infer/y", out, fx_get(&fx, "infer", "y", NULL), size);
    }
done:
    cnn_model_free(m);
    fx_free(&fx);
}

static void test_maxpool(void) {
    static const char *cases[] = {"valid", "same", "overlap", "wide"};
    static char names[4][64];
    fx_file fx;
    test_begin("parity maxpool fixture");
    if (!fx_load(&fx, "maxpool.bin")) return;
    for (int ci = 0; ci < 4; ci++) {
        const char *cs = cases[ci];
        snprintf(names[ci], sizeof names[ci], "parity maxpool %s", cs);
        test_begin(names[ci]);
        size_t nc, ny;
        const float *cfg = fx_get(&fx, cs, "cfg", &nc);
        fx_get(&fx, cs, "y", &ny);
        if (!cfg || nc != 9) { CHECK(0, "%s: bad cfg", cs); continue; }
        int n = (int)cfg[0], h = (int)cfg[1], w = (int)cfg[2], c = (int)cfg[3];
        cnn_model *m = cnn_model_new();
        REQUIRE(m, "cnn_model_new: %s", cnn_last_error());
        cnn_node *x = cnn_input(m, h, w, c, "input");
        x = cnn_max_pool2d(m, x, .pool_size = {(int)cfg[4], (int)cfg[5]},
                           .strides = {(int)cfg[6], (int)cfg[7]},
                           .padding = cfg[8] != 0 ? CNN_SAME : CNN_VALID, .name = "pool");
        {
            cnn_compile_opts co = {.loss = CNN_MSE};
            if (!finish_model(m, x, co, ny / (size_t)n)) goto done;
        }
        check_forward_backward(m, &fx, cs, n, (size_t)h * w * c, ny / (size_t)n);
    done:
        cnn_model_free(m);
    }
    fx_free(&fx);
}

static void test_dense(void) {
    static const char *cases[] = {"linear", "relu", "softmax"};
    static char names[3][64];
    fx_file fx;
    test_begin("parity dense fixture");
    if (!fx_load(&fx, "dense.bin")) return;
    for (int ci = 0; ci < 3; ci++) {
        const char *cs = cases[ci];
        int softmax = ci == 2;
        snprintf(names[ci], sizeof names[ci], "parity dense %s%s", cs,
                 softmax ? " + categorical cross-entropy" : "");
        test_begin(names[ci]);
        size_t nc, nk, nb;
        const float *cfg = fx_get(&fx, cs, "cfg", &nc);
        const float *k = fx_get(&fx, cs, "kernel", &nk), *b = fx_get(&fx, cs, "bias", &nb);
        if (!cfg || nc < 5 || !k || !b) { CHECK(0, "%s: bad cfg", cs); continue; }
        int n = (int)cfg[0], h = (int)cfg[1], w = (int)cfg[2], c = (int)cfg[3], u = (int)cfg[4];
        cnn_activation_type act = softmax ? CNN_SOFTMAX : (nc > 5 && cfg[5] != 0) ? CNN_RELU : CNN_LINEAR;
        cnn_model *m = cnn_model_new();
        REQUIRE(m, "cnn_model_new: %s", cnn_last_error());
        cnn_node *x = cnn_flatten(m, cnn_input(m, h, w, c, "input"), .name = "flatten");
        x = cnn_dense(m, x, .units = u, .activation = act, .name = "dense");
        {
            cnn_compile_opts co = {.loss = softmax ? CNN_CATEGORICAL_CROSSENTROPY : CNN_MSE};
            if (!finish_model(m, x, co, (size_t)u)) goto done;
        }
        if (!set_w(m, "dense", "kernel", k, nk) || !set_w(m, "dense", "bias", b, nb)) goto done;
        check_forward_backward(m, &fx, cs, n, (size_t)h * w * c, (size_t)u);
        check_param_grad(m, &fx, cs, "dense", "kernel", "dkernel");
        check_param_grad(m, &fx, cs, "dense", "bias", "dbias");
    done:
        cnn_model_free(m);
    }
    fx_free(&fx);
}

/* [Conv2D] -> ZeroPadding2D / UpSampling2D (one or two) -> [Conv2D], MSE: the
   layers' output, the input gradient and the convs' parameter gradients.
   cfg (see make_padding_upsampling): n h w c, f1 k1h k1w, f2 k2h k2w, ops, then
   per op kind (0 ZeroPadding2D, 1 UpSampling2D), default, 4 values. */
static void test_padding_upsampling(void) {
    static const char *cases[] = {"pad_asym", "pad_default_input", "pad_conv", "up_23",
                                  "up_default_input", "up_conv", "pad_up_chain"};
    enum { NCASES = sizeof cases / sizeof cases[0] };
    static char names[NCASES][64];
    fx_file fx;
    test_begin("parity zero_padding2d / up_sampling2d fixture");
    if (!fx_load(&fx, "padding_upsampling.bin")) return;
    for (int ci = 0; ci < NCASES; ci++) {
        const char *cs = cases[ci];
        char key[64];
        snprintf(names[ci], sizeof names[ci], "parity %s", cs);
        test_begin(names[ci]);
        size_t nc, ny;
        const float *cfg = fx_get(&fx, cs, "cfg", &nc);
        fx_get(&fx, cs, "y", &ny);
        if (!cfg || nc < 11 || nc != 11 + 6 * (size_t)cfg[10] || cfg[10] < 1) { CHECK(0, "%s: bad cfg", cs); continue; }
        const int n = (int)cfg[0], h = (int)cfg[1], w = (int)cfg[2], c = (int)cfg[3], ops = (int)cfg[10];
        cnn_model *m = cnn_model_new();
        REQUIRE(m, "cnn_model_new: %s", cnn_last_error());
        cnn_node *x = cnn_input(m, h, w, c, "input");
        if (cfg[4] > 0)
            x = cnn_conv2d(m, x, .filters = (int)cfg[4], .kernel_size = {(int)cfg[5], (int)cfg[6]}, .name = "conv_1");
        for (int k = 0; k < ops; k++) {
            const float *op = cfg + 11 + 6 * k;
            const int dflt = op[1] != 0;
            snprintf(key, sizeof key, "layer_%d", k);
            if (op[0] == 0) {
                cnn_zero_padding2d_opts o = {{0, 0, 0, 0}, key};
                if (!dflt) for (int i = 0; i < 4; i++) o.padding[i] = (int)op[2 + i];
                x = cnn_zero_padding2d_opt(m, x, &o);
            } else {
                cnn_up_sampling2d_opts o = {{0, 0}, key};
                if (!dflt) o.size[0] = (int)op[2], o.size[1] = (int)op[3];
                x = cnn_up_sampling2d_opt(m, x, &o);
            }
        }
        if (cfg[7] > 0)
            x = cnn_conv2d(m, x, .filters = (int)cfg[7], .kernel_size = {(int)cfg[8], (int)cfg[9]}, .name = "conv_2");
        {
            cnn_compile_opts co = {.loss = CNN_MSE};
            if (!finish_model(m, x, co, ny / (size_t)n)) goto done;
        }
        for (int k = 1; k <= 2; k++) {
            if (cfg[k == 1 ? 4 : 7] <= 0) continue;
            char layer[32], kern[32], bias[32];
            size_t nk, nb;
            snprintf(layer, sizeof layer, "conv_%d", k);
            snprintf(kern, sizeof kern, "kernel_%d", k);
            snprintf(bias, sizeof bias, "bias_%d", k);
            const float *kv = fx_get(&fx, cs, kern, &nk), *bv = fx_get(&fx, cs, bias, &nb);
            if (!set_w(m, layer, "kernel", kv, nk) || !set_w(m, layer, "bias", bv, nb)) goto done;
        }
        check_forward_backward(m, &fx, cs, n, (size_t)h * w * c, ny / (size_t)n);
        for (int k = 1; k <= 2; k++) {
            if (cfg[k == 1 ? 4 : 7] <= 0) continue;
            char layer[32], dk[32], db[32];
            snprintf(layer, sizeof layer, "conv_%d", k);
            snprintf(dk, sizeof dk, "dkernel_%d", k);
            snprintf(db, sizeof db, "dbias_%d", k);
            check_param_grad(m, &fx, cs, layer, "kernel", dk);
            check_param_grad(m, &fx, cs, layer, "bias", db);
        }
    done:
        cnn_model_free(m);
    }
    fx_free(&fx);
}

/* ------------------------------------------------------------------------ */
/* The tutorial network: initial weights from a hash, 5 Adam steps          */
/* ------------------------------------------------------------------------ */

static uint64_t splitmix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* w[i] = float(offset + scale*(2u-1)), u = (splitmix64((id << 32) | i) >> 40) / 2^24;
   bit for bit what make_fixtures.py's hash_weights computes. */
static void hash_weights(float *w, size_t n, uint64_t id, double offset, double scale) {
    for (size_t i = 0; i < n; i++) {
        double u = (double)(splitmix64((id << 32) | (uint64_t)i) >> 40) * (1.0 / 16777216.0);
        w[i] = (float)(offset + scale * (2.0 * u - 1.0));
    }
}

static const char *const net_params[][2] = {
    {"conv_1", "kernel"}, {"conv_1", "bias"}, {"batch_norm_1", "gamma"}, {"batch_norm_1", "beta"},
    {"conv_2", "kernel"}, {"conv_2", "bias"}, {"batch_norm_2", "gamma"}, {"batch_norm_2", "beta"},
    {"fc1", "kernel"}, {"fc1", "bias"}, {"fc2", "kernel"}, {"fc2", "bias"},
    {"softmax", "kernel"}, {"softmax", "bias"}};
#define NET_NP 14
static const char *const net_moving[][2] = {
    {"batch_norm_1", "moving_mean"}, {"batch_norm_1", "moving_variance"},
    {"batch_norm_2", "moving_mean"}, {"batch_norm_2", "moving_variance"}};

static cnn_model *build_network(float lr) {
    cnn_model *m = cnn_model_new();
    if (!m) return NULL;
    cnn_node *x = tutorial_layers(m, 32, 32, 3, 10, 0.0f);
    if (!x || cnn_model_set_output(m, x) != CNN_OK ||
        cnn_compile(m, .optimizer = cnn_adam(.learning_rate = lr),
                    .loss = CNN_CATEGORICAL_CROSSENTROPY) != CNN_OK) {
        CHECK(0, "building the tutorial network: %s", cnn_last_error());
        cnn_model_free(m);
        return NULL;
    }
    return m;
}

static void test_network(void) {
    fx_file fx;
    cnn_model *m = NULL;
    float *init[NET_NP] = {0}, *dx = NULL;
    size_t cnt[NET_NP] = {0};
    char key[128];
    test_begin("parity network fixture");
    if (!fx_load(&fx, "network.bin")) return;
    size_t nh, nx, ny, nl;
    const float *hyper = fx_get(&fx, NULL, "hyper", &nh);
    const float *x = fx_get(&fx, NULL, "x", &nx), *y = fx_get(&fx, NULL, "y", &ny);
    const float *losses = fx_get(&fx, NULL, "losses", &nl);
    if (!hyper || nh != 4 || !x || !y || !losses) goto done;
    const int n = (int)hyper[0], classes = (int)hyper[1], steps = (int)hyper[2];
    REQUIRE(nx == (size_t)n * 32 * 32 * 3 && ny == (size_t)n * classes && classes == 10 &&
                nl == (size_t)steps, "network fixture sizes do not match the tutorial network");

    /* build, check the parameter layout, set the generated initial weights */
    test_begin("parity network initial weights");
    m = build_network(hyper[3]);
    if (!m) goto done;
    {
        size_t np = 0, expect_off = 0;
        float *p = cnn_model_params(m, &np);
        REQUIRE(p, "cnn_model_params: %s", cnn_last_error());
        for (int i = 0; i < NET_NP; i++) {
            const char *layer = net_params[i][0], *which = net_params[i][1];
            float *w = cnn_layer_weights(m, layer, which, &cnt[i]);
            REQUIRE(w, "cnn_layer_weights(%s, %s): %s", layer, which, cnn_last_error());
            CHECK((size_t)(w - p) == expect_off, "%s/%s at offset %td, expected %zu (layers in order, "
                  "kernel then bias / gamma then beta)", layer, which, w - p, expect_off);
            expect_off = (size_t)(w - p) + cnt[i];
            size_t ng;
            snprintf(key, sizeof key, "gen/%s/%s", layer, which);
            const float *gen = fx_get(&fx, NULL, key, &ng);
            REQUIRE(gen && ng == 3, "%s missing", key);
            init[i] = (float *)malloc(cnt[i] * sizeof(float));
            REQUIRE(init[i], "out of memory");
            hash_weights(init[i], cnt[i], (uint64_t)gen[0], gen[1], gen[2]);
            /* the generator must agree with the script's bit for bit */
            snprintf(key, sizeof key, "init/%s/%s", layer, which);
            const float *first = fx_get(&fx, key, "first", &ng);
            const float *st = fx_get(&fx, key, "stats", NULL);
            REQUIRE(first && st && ng == 8, "%s missing", key);
            CHECK(memcmp(first, init[i], 8 * sizeof(float)) == 0,
                  "%s: the weight generator differs from make_fixtures.py", key);
            double s = 0, s2 = 0;
            for (size_t k = 0; k < cnt[i]; k++) { s += init[i][k]; s2 += (double)init[i][k] * init[i][k]; }
            CHECK(fabs(s - st[0]) <= 1e-6 * st[2] && fabs(s2 - st[1]) <= 1e-6 * st[1],
                  "%s: the generated tensor's sums differ (%.9g, %.9g vs %.9g, %.9g)", key, s, s2,
                  (double)st[0], (double)st[1]);
            if (!set_w(m, layer, which, init[i], cnt[i])) goto done;
        }
        CHECK(expect_off == np, "the parameter buffer holds %zu values, the layers %zu", np, expect_off);
        for (int i = 0; i < 4; i++) {
            float v[64];
            int c = i < 2 ? 64 : 32;
            for (int k = 0; k < c; k++) v[k] = (i & 1) ? 1.0f : 0.0f;
            if (!set_w(m, net_moving[i][0], net_moving[i][1], v, (size_t)c)) goto done;
        }
    }

    /* gradients at the initial weights (BatchNorm with batch statistics) */
    test_begin("parity network gradients at the initial weights");
    dx = (float *)malloc(nx * sizeof(float));
    REQUIRE(dx, "out of memory");
    {
        float loss = -1;
        int rc = cnn_input_gradient(m, x, y, n, classes, dx, &loss);
        REQUIRE(rc == CNN_OK, "cnn_input_gradient: %s", cnn_last_error());
        cmp_scalar("loss at the initial weights", loss, losses[0]);
        cmp_tensor(&fx, "grad0/dx", dx, nx);
        for (int i = 0; i < NET_NP; i++) {
            size_t c;
            const float *g = grad_of(m, net_params[i][0], net_params[i][1], &c);
            snprintf(key, sizeof key, "grad0/%s/%s", net_params[i][0], net_params[i][1]);
            if (g) cmp_tensor(&fx, key, g, c);
        }
    }

    /* five Adam steps */
    test_begin("parity network 5 Adam steps");
    for (int s = 0; s < steps; s++) {
        float loss = -1;
        int rc = cnn_train_on_batch(m, x, y, n, classes, &loss, NULL);
        REQUIRE(rc == CNN_OK, "cnn_train_on_batch step %d: %s", s + 1, cnn_last_error());
        snprintf(key, sizeof key, "loss at step %d", s + 1);
        cmp_scalar(key, loss, losses[s]);
    }
    for (int i = 0; i < NET_NP; i++) {
        size_t c;
        float *w = cnn_layer_weights(m, net_params[i][0], net_params[i][1], &c);
        snprintf(key, sizeof key, "final/%s/%s", net_params[i][0], net_params[i][1]);
        REQUIRE(w && c == cnt[i], "cnn_layer_weights(%s): %s", key, cnn_last_error());
        cmp_tensor(&fx, key, w, c);
        /* for information: the same comparison on the change from the initial
           value (fixture values minus our identical initial values) */
        if (fx_has(&fx, key)) {
            const float *r = fx_get(&fx, NULL, key, NULL);
            double num = 0, den = 0;
            for (size_t k = 0; k < c; k++) {
                double d = (double)w[k] - r[k], ch = (double)r[k] - init[i][k];
                num += d * d;
                den += ch * ch;
            }
            printf("#     (change from the initial value: rel err %.3e)\n", den > 0 ? sqrt(num / den) : 0.0);
        }
    }
    for (int i = 0; i < 4; i++) {
        float v[64];
        size_t c = i < 2 ? 64 : 32;
        snprintf(key, sizeof key, "final/%s/%s", net_moving[i][0], net_moving[i][1]);
        REQUIRE(cnn_get_weights(m, net_moving[i][0], net_moving[i][1], v, c) == CNN_OK,
                "cnn_get_weights(%s): %s", key, cnn_last_error());
        cmp_tensor(&fx, key, v, c);
    }
done:
    for (int i = 0; i < NET_NP; i++) free(init[i]);
    free(dx);
    cnn_model_free(m);
    fx_free(&fx);
}

int main(void) {
    test_conv2d();
    test_batchnorm();
    test_maxpool();
    test_dense();
    test_padding_upsampling();
    test_network();
    return test_finish();
}
