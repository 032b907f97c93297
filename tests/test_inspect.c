/* test_inspect.c - reading a layer's output (cnn_layer_output,
   cnn_layer_output_training) and the layer look-ups (cnn_get_layer,
   cnn_model_layer, cnn_node_type).

   The tutorial network with random weights and BatchNorm statistics away from
   their defaults. Its first block, Conv2D -> BatchNorm -> MaxPooling2D, is one
   fused block on the fast path, where batch_norm_1 never stores its output:
   each layer's output must equal the reference path's (cnn_set_reference),
   the first block's also a computation written out here, the last layer's
   cnn_predict's; in training mode BatchNorm must use the batch's statistics
   and leave the moving ones alone; batches larger than the buffers come in
   chunks; bad arguments are errors naming the problem. Only public calls.
   And cnn_augment.h's cnn_draw_text, which the examples label pictures with. */
#define CNN_IMPLEMENTATION
#define CNN_AUGMENT_IMPLEMENTATION
#define CNN_AUGMENT_STB_IMPLEMENTATION
#include "cnn.h"
#include "cnn_augment.h"
#include "test_util.h"
#include "tutorial_net.h"

#define H 32
#define W 32
#define C 3
#define N 5

static float frand(unsigned *s) {
    *s = *s * 1664525u + 1013904223u;
    return (float)((*s >> 8) & 0xffffff) / 8388608.0f - 1.0f;
}
static void fill(float *v, size_t n, unsigned seed, float lo, float hi) {
    for (size_t i = 0; i < n; i++) v[i] = lo + (hi - lo) * 0.5f * (frand(&seed) + 1.0f);
}

static const char *layers[] = {"input", "conv_1", "batch_norm_1", "pool_1", "conv_2", "batch_norm_2", "pool_2",
                               "flatten", "fc1", "dropout1", "fc2", "dropout2", "softmax"};
#define N_LAYERS (int)(sizeof layers / sizeof layers[0])

/* examples/cifar10_cnn.c's build_network, with BatchNorm's gamma, beta and
   moving statistics drawn at random */
static cnn_model *tutorial(void) {
    cnn_model *m = cnn_model_new();
    cnn_model_set_seed(m, 11);
    cnn_node *x = tutorial_layers(m, H, W, C, 10, 0.2f);
    if (cnn_model_set_output(m, x) != CNN_OK ||
        cnn_compile(m, .optimizer = cnn_adam(), .loss = CNN_SPARSE_CATEGORICAL_CROSSENTROPY) != CNN_OK) {
        printf("# building failed: %s\n", cnn_last_error());
        cnn_model_free(m);
        return NULL;
    }
    const char *bns[2] = {"batch_norm_1", "batch_norm_2"};
    const int ch[2] = {64, 32};
    float v[64];
    for (int k = 0; k < 2; k++) {
        fill(v, ch[k], 100 + k, 0.5f, 1.5f);
        cnn_set_weights(m, bns[k], "gamma", v, ch[k]);
        fill(v, ch[k], 200 + k, -0.5f, 0.5f);
        cnn_set_weights(m, bns[k], "beta", v, ch[k]);
        fill(v, ch[k], 300 + k, -0.2f, 0.4f);
        cnn_set_weights(m, bns[k], "moving_mean", v, ch[k]);
        fill(v, ch[k], 400 + k, 0.3f, 2.0f);
        cnn_set_weights(m, bns[k], "moving_variance", v, ch[k]);
    }
    return m;
}

static size_t layer_size(cnn_model *m, const char *name) {
    int h = 0, w = 0, c = 0;
    cnn_node_shape(cnn_get_layer(m, name), &h, &w, &c);
    return (size_t)h * w * c;
}

/* The first block written out: conv_1 (3x3 valid, ReLU), batch_norm_1 with
   moving statistics (training 0) or the batch's (training 1), pool_1 (2x2). */
static void block_1(cnn_model *m, const float *x, int n, int training, float *conv, float *bn, float *pool) {
    size_t count;
    const float *K = cnn_layer_weights(m, "conv_1", "kernel", &count), *bias = cnn_layer_weights(m, "conv_1", "bias", &count);
    const float *gamma = cnn_layer_weights(m, "batch_norm_1", "gamma", &count),
                *beta = cnn_layer_weights(m, "batch_norm_1", "beta", &count),
                *mm = cnn_layer_weights(m, "batch_norm_1", "moving_mean", &count),
                *mv = cnn_layer_weights(m, "batch_norm_1", "moving_variance", &count);
    const int Ho = H - 2, Wo = W - 2, U = 64;
    for (int b = 0; b < n; b++)
        for (int oy = 0; oy < Ho; oy++)
            for (int ox = 0; ox < Wo; ox++)
                for (int u = 0; u < U; u++) {
                    double s = bias[u];
                    for (int ky = 0; ky < 3; ky++)
                        for (int kx = 0; kx < 3; kx++)
                            for (int c = 0; c < C; c++)
                                s += (double)x[(((size_t)b * H + oy + ky) * W + ox + kx) * C + c] *
                                     K[((ky * 3 + kx) * C + c) * U + u];
                    conv[(((size_t)b * Ho + oy) * Wo + ox) * U + u] = s > 0 ? (float)s : 0.0f;
                }
    const size_t M = (size_t)n * Ho * Wo;
    for (int u = 0; u < U; u++) {
        double mean = mm[u], var = mv[u];
        if (training) {
            double s = 0, q = 0;
            for (size_t r = 0; r < M; r++) s += conv[r * U + u];
            mean = s / M;
            for (size_t r = 0; r < M; r++) q += (conv[r * U + u] - mean) * (conv[r * U + u] - mean);
            var = q / M;
        }
        for (size_t r = 0; r < M; r++)
            bn[r * U + u] = (float)(gamma[u] * (conv[r * U + u] - mean) / sqrt(var + 1e-3) + beta[u]);
    }
    for (int b = 0; b < n; b++)
        for (int py = 0; py < Ho / 2; py++)
            for (int px = 0; px < Wo / 2; px++)
                for (int u = 0; u < U; u++) {
                    float best = -INFINITY;
                    for (int dy = 0; dy < 2; dy++)
                        for (int dx = 0; dx < 2; dx++) {
                            float v = bn[(((size_t)b * Ho + 2 * py + dy) * Wo + 2 * px + dx) * U + u];
                            if (v > best) best = v;
                        }
                    pool[(((size_t)b * (Ho / 2) + py) * (Wo / 2) + px) * U + u] = best;
                }
}

/* every layer's output, fast path against the reference path; the first
   block against block_1; the last layer against cnn_predict */
static void test_against_reference(cnn_model *m, const float *x, int training) {
    const size_t conv_n = (size_t)N * 30 * 30 * 64, pool_n = (size_t)N * 15 * 15 * 64;
    float *conv = (float *)malloc(conv_n * 4), *bn = (float *)malloc(conv_n * 4), *pool = (float *)malloc(pool_n * 4);
    block_1(m, x, N, training, conv, bn, pool);
    for (int l = 0; l < N_LAYERS; l++) {
        const size_t count = (size_t)N * layer_size(m, layers[l]);
        float *fast = (float *)malloc(count * 4), *ref = (float *)malloc(count * 4);
        int (*fn)(cnn_model *, const char *, const float *, int, float *) =
            training ? cnn_layer_output_training : cnn_layer_output;
        cnn_set_reference(m, 0);
        int rc1 = fn(m, layers[l], x, N, fast);
        cnn_set_reference(m, 1);
        int rc2 = fn(m, layers[l], x, N, ref);
        cnn_set_reference(m, 0);
        CHECK(rc1 == CNN_OK && rc2 == CNN_OK, "%s: %s", layers[l], cnn_last_error());
        double e = test_rel_err(fast, ref, count);
        CHECK(e <= 1e-5, "%s: fast path against reference path: rel %.2e", layers[l], e);
        const float *mine = !strcmp(layers[l], "conv_1") ? conv : !strcmp(layers[l], "batch_norm_1") ? bn
                            : !strcmp(layers[l], "pool_1") ? pool : NULL;
        if (mine) {
            double e2 = test_rel_err(fast, mine, count);
            CHECK(e2 <= 1e-5, "%s: against the computation written out here: rel %.2e", layers[l], e2);
            printf("#   %s%s: rel %.1e against the reference path, %.1e against the loops here\n", layers[l],
                   training ? " (training)" : "", e, e2);
        }
        if (!strcmp(layers[l], "input")) CHECK(!memcmp(fast, x, count * 4), "the input layer gives x back");
        if (!strcmp(layers[l], "softmax") && !training) {
            float *p = (float *)malloc(count * 4);
            CHECK(cnn_predict(m, x, N, 0, p) == CNN_OK, "predict: %s", cnn_last_error());
            double e3 = test_rel_err(fast, p, count);
            CHECK(e3 <= 1e-6, "softmax against cnn_predict: rel %.2e", e3);
            free(p);
        }
        if (!strcmp(layers[l], "dropout1") && training) { /* dropout is off in training mode here */
            float *fc1 = (float *)malloc(count * 4);
            cnn_layer_output_training(m, "fc1", x, N, fc1);
            CHECK(!memcmp(fc1, fast, count * 4), "dropout1 in training mode is fc1 (dropout off)");
            free(fc1);
        }
        free(fast);
        free(ref);
    }
    /* the comparison can fail: a neighbouring layer's values are far off */
    float *got = (float *)malloc(conv_n * 4);
    if (training) cnn_layer_output_training(m, "conv_1", x, N, got);
    else cnn_layer_output(m, "conv_1", x, N, got);
    double wrong = test_rel_err(got, bn, conv_n);
    CHECK(wrong > 0.1, "conv_1's output taken for batch_norm_1's differs by only %.2e", wrong);
    free(got);
    free(conv);
    free(bn);
    free(pool);
}

int main(void) {
    cnn_model *m = tutorial();
    if (!m) return 1;
    const size_t per = (size_t)H * W * C;
    float *x = (float *)malloc(40 * per * 4);
    fill(x, 40 * per, 7, 0.0f, 1.0f);

    test_begin("layer lookups: cnn_get_layer, cnn_model_layer, cnn_node_type");
    {
        int h = 0, w = 0, c = 0;
        CHECK(cnn_model_num_layers(m) == N_LAYERS, "%d layers", cnn_model_num_layers(m));
        for (int i = 0; i < N_LAYERS; i++) {
            cnn_node *a = cnn_model_layer(m, i), *b = cnn_get_layer(m, layers[i]);
            CHECK(a && a == b, "layer %d is '%s'", i, a ? cnn_node_name(a) : "(null)");
        }
        CHECK(!strcmp(cnn_node_type(cnn_get_layer(m, "conv_1")), "Conv2D"), "conv_1's type");
        CHECK(!strcmp(cnn_node_type(cnn_get_layer(m, "batch_norm_2")), "BatchNormalization"), "bn type");
        CHECK(!strcmp(cnn_node_type(cnn_model_layer(m, 0)), "InputLayer"), "input type %s",
              cnn_node_type(cnn_model_layer(m, 0)));
        cnn_node_shape(cnn_get_layer(m, "pool_1"), &h, &w, &c);
        CHECK(h == 15 && w == 15 && c == 64, "pool_1 is %dx%dx%d", h, w, c);
        CHECK(!cnn_get_layer(m, "conv_9") && strstr(cnn_last_error(), "conv_9"), "%s", cnn_last_error());
        CHECK(!cnn_get_layer(NULL, "conv_1") && strstr(cnn_last_error(), "NULL"), "%s", cnn_last_error());
        CHECK(!cnn_get_layer(m, NULL) && strstr(cnn_last_error(), "NULL"), "%s", cnn_last_error());
        CHECK(!cnn_model_layer(m, N_LAYERS) && strstr(cnn_last_error(), "not in 0.."), "%s", cnn_last_error());
        CHECK(!cnn_model_layer(m, -1), "layer -1");
        CHECK(!cnn_model_layer(NULL, 0), "NULL model");
        CHECK(!cnn_node_type(NULL), "NULL node");
    }

    test_begin("cnn_layer_output: every layer of the tutorial network, fused block included");
    test_against_reference(m, x, 0);

    test_begin("cnn_layer_output_training: batch statistics, dropout off, moving statistics kept");
    {
        float before[128], after[128];
        cnn_get_weights(m, "batch_norm_1", "moving_mean", before, 64);
        cnn_get_weights(m, "batch_norm_1", "moving_variance", before + 64, 64);
        test_against_reference(m, x, 1);
        cnn_get_weights(m, "batch_norm_1", "moving_mean", after, 64);
        cnn_get_weights(m, "batch_norm_1", "moving_variance", after + 64, 64);
        CHECK(!memcmp(before, after, sizeof before), "the moving statistics changed");
    }

    test_begin("cnn_layer_output: batches larger than the buffers come in chunks");
    {
        const char *which[3] = {"batch_norm_1", "pool_2", "softmax"};
        for (int k = 0; k < 3; k++) {
            const size_t sz = layer_size(m, which[k]);
            float *all = (float *)malloc(40 * sz * 4), *one = (float *)malloc(sz * 4);
            CHECK(cnn_layer_output(m, which[k], x, 40, all) == CNN_OK, "%s", cnn_last_error());
            for (int s = 0; s < 40; s += 13) {
                cnn_layer_output(m, which[k], x + s * per, 1, one);
                double e = test_rel_err(all + s * sz, one, sz);
                CHECK(e <= 1e-5, "%s, sample %d of 40 against it alone: rel %.2e", which[k], s, e);
            }
            free(all);
            free(one);
        }
        float *p = (float *)malloc(40 * 10 * 4), *q = (float *)malloc(40 * 10 * 4);
        cnn_predict(m, x, 40, 7, p);
        cnn_layer_output(m, "softmax", x, 40, q);
        CHECK(test_rel_err(q, p, 400) <= 1e-5, "softmax for 40 against predict");
        /* and the model still trains and predicts as before */
        float y[4] = {1, 2, 3, 4}, loss;
        CHECK(cnn_train_on_batch(m, x, y, 4, 1, &loss, NULL) == CNN_OK && isfinite(loss), "a step after: %s",
              cnn_last_error());
        free(p);
        free(q);
    }

    test_begin("cnn_layer_output: bad arguments are errors naming the problem");
    {
        float out[64];
        cnn_model *unbuilt = cnn_model_new();
        cnn_node *in = cnn_input(unbuilt, 4, 4, 1, "input");
        cnn_conv2d(unbuilt, in, .filters = 2, .kernel_size = {3, 3}, .name = "conv");
        CHECK(cnn_layer_output(NULL, "conv_1", x, 1, out) < 0 && strstr(cnn_last_error(), "NULL"), "%s",
              cnn_last_error());
        CHECK(cnn_layer_output(m, "nonesuch", x, 1, out) < 0 && strstr(cnn_last_error(), "'nonesuch'"), "%s",
              cnn_last_error());
        CHECK(cnn_layer_output_training(m, "nonesuch", x, 1, out) < 0 &&
              strstr(cnn_last_error(), "cnn_layer_output_training"), "%s", cnn_last_error());
        CHECK(cnn_layer_output(m, NULL, x, 1, out) < 0 && strstr(cnn_last_error(), "layer name"), "%s",
              cnn_last_error());
        CHECK(cnn_layer_output(m, "softmax", x, 0, out) < 0 && strstr(cnn_last_error(), "> 0"), "%s",
              cnn_last_error());
        CHECK(cnn_layer_output(m, "softmax", x, -3, out) < 0, "n = -3");
        CHECK(cnn_layer_output(m, "softmax", NULL, 1, out) < 0 && strstr(cnn_last_error(), "inputs"), "%s",
              cnn_last_error());
        CHECK(cnn_layer_output(m, "softmax", x, 1, NULL) < 0 && strstr(cnn_last_error(), "output buffer"), "%s",
              cnn_last_error());
        CHECK(cnn_layer_output(unbuilt, "conv", x, 1, out) < 0 && strstr(cnn_last_error(), "no output yet"), "%s",
              cnn_last_error());
        cnn_model_free(unbuilt);
    }

    test_begin("cnn_draw_text: the plot font into RGB pixels, clipped, bad arguments refused");
    {
        enum { TW = 40, TH = 12 };
        unsigned char px[TH][TW][3];
        memset(px, 255, sizeof px);
        CHECK(cnn_draw_text(&px[0][0][0], TW, TH, 1, 1, "1a", 1, 0, 0, 0) == 11, "width of '1a'");
        /* '1' is {4,12,4,4,4,4,14}: row 0 has its one pixel at column 2 */
        CHECK(px[1][1 + 2][0] == 0 && px[1][1 + 1][0] == 255 && px[1][1 + 3][1] == 255, "the '1' glyph's top row");
        int dark = 0;
        for (int y = 0; y < TH; y++)
            for (int x = 0; x < TW; x++) dark += px[y][x][0] == 0;
        CHECK(dark == 10 + 14, "%d pixels drawn for '1a' (10 + 14 expected)", dark);
        CHECK(cnn_draw_text(&px[0][0][0], TW, TH, 2, 2, "A", 2, 9, 8, 7) == 10, "scale 2 width");
        CHECK(px[2 + 2 * 2][2 + 2 * 1][0] == 9 && px[2 + 2 * 2][2 + 2 * 1][2] == 7, "upper case as lower case, colour");
        /* clipped at every edge, far away too, and unknown characters are spaces: no crash (ASan) */
        CHECK(cnn_draw_text(&px[0][0][0], TW, TH, -7, -5, "wide text, clipped ~", 3, 1, 2, 3) > 0, "clipped");
        CHECK(cnn_draw_text(&px[0][0][0], TW, TH, TW - 3, TH - 3, "xyz", 1, 1, 2, 3) == 17, "clipped at the end");
        CHECK(cnn_draw_text(&px[0][0][0], TW, TH, 2147483600, 2147483600, "far", 64, 1, 2, 3) > 0, "far away");
        CHECK(cnn_draw_text(&px[0][0][0], TW, TH, -2147483600, 0, "far", 64, 1, 2, 3) > 0, "far left");
        CHECK(cnn_draw_text(&px[0][0][0], TW, TH, 0, 0, "", 1, 0, 0, 0) == 0, "empty text");
        CHECK(cnn_draw_text(NULL, TW, TH, 0, 0, "a", 1, 0, 0, 0) < 0 && strstr(cnn_last_error(), "pixels"), "%s",
              cnn_last_error());
        CHECK(cnn_draw_text(&px[0][0][0], TW, TH, 0, 0, NULL, 1, 0, 0, 0) < 0 && strstr(cnn_last_error(), "text"),
              "%s", cnn_last_error());
        CHECK(cnn_draw_text(&px[0][0][0], 0, TH, 0, 0, "a", 1, 0, 0, 0) < 0 && strstr(cnn_last_error(), "size"), "%s",
              cnn_last_error());
        CHECK(cnn_draw_text(&px[0][0][0], TW, TH, 0, 0, "a", 0, 0, 0, 0) < 0 && strstr(cnn_last_error(), "scale"),
              "%s", cnn_last_error());
    }

    free(x);
    cnn_model_free(m);
    return test_finish();
}
