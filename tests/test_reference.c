/* test_reference.c - the fast path against the reference path (cnn_set_reference):
   every layer kind, alone and in the fused arrangements the fast path plans
   (Conv2D -> BatchNormalization -> MaxPooling2D, the tutorial's), ZeroPadding2D
   and UpSampling2D around and between them, forward
   outputs, parameter gradients and input gradients of one training-mode pass;
   then ten training steps of the tutorial network on both paths; and the
   reference path's own gradients against central differences. */
#define CNN_IMPLEMENTATION
#include "cnn.h"
#include "test_util.h"

static float frand(unsigned *s) { *s = *s * 1664525u + 1013904223u; return (float)((*s >> 8) & 0xffffff) / 8388608.0f - 1.0f; }
static void fill(float *v, size_t n, unsigned seed) { for (size_t i = 0; i < n; i++) v[i] = frand(&seed); }

typedef cnn_node *(*net_fn)(cnn_model *m, cnn_node *x);

static cnn_model *make(net_fn build, int h, int w, int c, cnn_loss loss, cnn_optimizer opt) {
    cnn_model *m = cnn_model_new();
    cnn_model_set_seed(m, 3);
    cnn_node *x = cnn_input(m, h, w, c, "input");
    if (cnn_model_set_output(m, build(m, x)) != CNN_OK || cnn_compile(m, .optimizer = opt, .loss = loss) != CNN_OK) {
        printf("# building failed: %s\n", cnn_last_error());
        cnn_model_free(m);
        return NULL;
    }
    return m;
}

/* BatchNorm's gamma, beta and moving statistics away from 1, 0, 0, 1 */
static void stir_bn(cnn_model *m) {
    size_t np, i;
    float *p = cnn_model_params(m, &np);
    for (i = 0; i < m->n_state; i++) m->state[i] = 0.3f + 0.1f * (float)(i % 7);
    for (int k = 0; k < m->n_nodes; k++) {
        const cnn_node *n = m->nodes[k];
        if (n->type != CNN__BATCH_NORM) continue;
        for (int c = 0; c < 2 * n->c; c++) p[n->p_off + c] = (c < n->c ? 1.0f : 0.0f) + 0.2f * (float)((c * 5) % 7 - 3) / 3;
    }
}

static cnn_node *conv_relu(cnn_model *m, cnn_node *x) {
    return cnn_conv2d(m, x, .filters = 5, .kernel_size = {3, 3}, .padding = CNN_SAME, .activation = CNN_RELU);
}
static cnn_node *conv_strided(cnn_model *m, cnn_node *x) {
    x = cnn_conv2d(m, x, .filters = 4, .kernel_size = {3, 2}, .strides = {2, 1}, .padding = CNN_SAME, .activation = CNN_TANH);
    return cnn_conv2d(m, x, .filters = 3, .kernel_size = {2, 2}, .strides = {2, 2}, .no_bias = 1);
}
static cnn_node *dense_softmax(cnn_model *m, cnn_node *x) {
    x = cnn_dense(m, cnn_flatten(m, x), .units = 7, .activation = CNN_ELU);
    return cnn_dense(m, x, .units = 4, .activation = CNN_SOFTMAX);
}
static cnn_node *bn_after_dense(cnn_model *m, cnn_node *x) {
    x = cnn_batch_norm(m, cnn_dense(m, cnn_flatten(m, x), .units = 6));
    return cnn_dense(m, x, .units = 3, .activation = CNN_SIGMOID);
}
/* the tutorial's block, which the fast path fuses: Conv2D (ReLU) -> BatchNorm -> MaxPooling2D */
static cnn_node *conv_bn_pool(cnn_model *m, cnn_node *x) {
    x = cnn_conv2d(m, x, .filters = 6, .kernel_size = {3, 3}, .activation = CNN_RELU);
    x = cnn_max_pool2d(m, cnn_batch_norm(m, x), .pool_size = {2, 2});
    return cnn_dense(m, cnn_flatten(m, x), .units = 4, .activation = CNN_SOFTMAX);
}
/* the same blocks with channel counts the vector kernels split into 8 and 16
   lanes (40 = 32 + 8, 24, 16), with and without ReLU */
static cnn_node *conv_bn_pool_wide(cnn_model *m, cnn_node *x) {
    x = cnn_conv2d(m, x, .filters = 40, .kernel_size = {3, 3}, .activation = CNN_RELU);
    x = cnn_max_pool2d(m, cnn_batch_norm(m, x), .pool_size = {2, 2});
    x = cnn_conv2d(m, x, .filters = 24, .kernel_size = {3, 3}, .padding = CNN_SAME);
    x = cnn_max_pool2d(m, cnn_batch_norm(m, x), .pool_size = {2, 2});
    x = cnn_conv2d(m, x, .filters = 16, .kernel_size = {1, 1}, .activation = CNN_RELU);
    x = cnn_max_pool2d(m, cnn_batch_norm(m, x), .pool_size = {2, 2});
    return cnn_dense(m, cnn_flatten(m, x), .units = 4, .activation = CNN_SOFTMAX);
}
static cnn_node *conv_bn_linear(cnn_model *m, cnn_node *x) { /* a linear conv read by BatchNorm alone */
    x = cnn_batch_norm(m, cnn_conv2d(m, x, .filters = 4, .kernel_size = {3, 3}));
    return cnn_conv2d(m, cnn_activation(m, x, .activation = CNN_LEAKY_RELU), .filters = 2, .kernel_size = {1, 1});
}
static cnn_node *pools(cnn_model *m, cnn_node *x) {
    x = cnn_conv2d(m, x, .filters = 3, .kernel_size = {2, 2}, .activation = CNN_TANH);
    x = cnn_max_pool2d(m, x, .pool_size = {3, 3}, .strides = {2, 2}, .padding = CNN_SAME);
    x = cnn_avg_pool2d(m, x, .pool_size = {2, 2}, .strides = {1, 1}, .padding = CNN_SAME);
    return cnn_dense(m, cnn_global_avg_pool2d(m, x), .units = 3, .activation = CNN_SOFTMAX);
}
static cnn_node *residual(cnn_model *m, cnn_node *x) {
    cnn_node *a = cnn_conv2d(m, x, .filters = 4, .kernel_size = {3, 3}, .padding = CNN_SAME, .activation = CNN_RELU), *in[2];
    cnn_node *b = cnn_conv2d(m, a, .filters = 4, .kernel_size = {3, 3}, .padding = CNN_SAME);
    in[0] = a, in[1] = b;
    x = cnn_add(m, in, 2);
    in[0] = x, in[1] = cnn_max_pool2d(m, a, .pool_size = {2, 2}, .strides = {1, 1}, .padding = CNN_SAME);
    x = cnn_dropout(m, cnn_concatenate(m, in, 2), .rate = 0.3f);
    return cnn_dense(m, cnn_flatten(m, x), .units = 3, .activation = CNN_SOFTMAX);
}
static cnn_node *frozen_bn(cnn_model *m, cnn_node *x) {
    x = cnn_batch_norm(m, cnn_conv2d(m, x, .filters = 3, .kernel_size = {3, 3}, .activation = CNN_RELU), .name = "frozen");
    return cnn_dense(m, cnn_flatten(m, x), .units = 2, .activation = CNN_SOFTMAX);
}

/* ZeroPadding2D and UpSampling2D between convs, a max pool after them */
static cnn_node *pad_up(cnn_model *m, cnn_node *x) {
    x = cnn_conv2d(m, x, .filters = 4, .kernel_size = {3, 3}, .activation = CNN_RELU);
    x = cnn_up_sampling2d(m, cnn_zero_padding2d(m, x, .padding = {1, 0, 2, 1}), .size = {2, 3});
    x = cnn_conv2d(m, x, .filters = 3, .kernel_size = {3, 3}, .strides = {2, 2}, .activation = CNN_TANH);
    x = cnn_max_pool2d(m, x, .pool_size = {2, 2});
    return cnn_dense(m, cnn_flatten(m, x), .units = 3, .activation = CNN_SOFTMAX);
}
/* the default padding on the input, the fused Conv2D -> BatchNorm -> MaxPool
   block reading it, the default UpSampling2D after the block */
static cnn_node *pad_fused_up(cnn_model *m, cnn_node *x) {
    x = cnn_conv2d(m, cnn_zero_padding2d(m, x), .filters = 6, .kernel_size = {3, 3}, .activation = CNN_RELU);
    x = cnn_max_pool2d(m, cnn_batch_norm(m, x), .pool_size = {2, 2});
    x = cnn_conv2d(m, cnn_up_sampling2d(m, x), .filters = 3, .kernel_size = {2, 2}, .activation = CNN_TANH);
    return cnn_dense(m, cnn_global_avg_pool2d(m, x), .units = 3, .activation = CNN_SOFTMAX);
}
/* each new layer's input and output read by two layers (gradients summed) */
static cnn_node *pad_up_two_readers(cnn_model *m, cnn_node *x) {
    cnn_node *a = cnn_conv2d(m, x, .filters = 2, .kernel_size = {2, 2}, .activation = CNN_TANH), *in[3];
    cnn_node *p1 = cnn_zero_padding2d(m, a, .padding = {1, 0, 2, 1}), *p2 = cnn_zero_padding2d(m, a, .padding = {0, 1, 1, 2});
    in[0] = p1, in[1] = p2, in[2] = cnn_conv2d(m, p1, .filters = 2, .kernel_size = {3, 3}, .padding = CNN_SAME);
    cnn_node *b = cnn_conv2d(m, cnn_add(m, in, 3), .filters = 2, .kernel_size = {2, 2}, .activation = CNN_TANH);
    cnn_node *u1 = cnn_up_sampling2d(m, b, .size = {2, 3});
    in[0] = u1, in[1] = cnn_up_sampling2d(m, cnn_conv2d(m, b, .filters = 2, .kernel_size = {1, 1}), .size = {2, 3}), in[2] = u1;
    return cnn_dense(m, cnn_flatten(m, cnn_add(m, in, 3)), .units = 4, .activation = CNN_SOFTMAX);
}

/* One training-mode pass with its gradients on each path: output, loss,
   parameter gradients and the input gradient. */
static void compare_pass(const char *label, net_fn build, int h, int w, int c, cnn_loss loss, int freeze) {
    enum { B = 5 };
    cnn_model *fast = make(build, h, w, c, loss, cnn_sgd()), *ref = make(build, h, w, c, loss, cnn_sgd());
    float x[B * 12 * 12 * 3], y[B * 256], dx_f[B * 12 * 12 * 3], dx_r[B * 12 * 12 * 3], lf = 0, lr = 0;
    size_t np;
    int U, yw;
    test_begin(label);
    if (!fast || !ref) { CHECK(0, "%s: %s", label, cnn_last_error()); cnn_model_free(fast); cnn_model_free(ref); return; }
    stir_bn(fast);
    stir_bn(ref);
    if (freeze) { cnn_set_trainable(fast, "frozen", 0); cnn_set_trainable(ref, "frozen", 0); }
    cnn_set_reference(fast, 0); /* the fast path even where CNN_REFERENCE makes the reference one the default */
    cnn_set_reference(ref, 1);
    U = cnn_model_output_size(fast);
    if (U > 256) { CHECK(0, "%s: %d outputs, more than the test's targets hold", label, U); U = 256; }
    fill(x, (size_t)B * h * w * c, 17);
    yw = loss == CNN_SPARSE_CATEGORICAL_CROSSENTROPY ? 1 : U;
    for (int b = 0; b < B; b++)
        for (int j = 0; j < yw; j++) y[b * yw + j] = yw == 1 ? (float)(b % U) : (float)((b + j) % 2);
    CHECK(cnn_input_gradient(fast, x, y, B, yw, dx_f, &lf) == CNN_OK, "fast pass: %s", cnn_last_error());
    CHECK(cnn_input_gradient(ref, x, y, B, yw, dx_r, &lr) == CNN_OK, "reference pass: %s", cnn_last_error());
    {
        const float *gf = cnn_model_grads(fast, &np), *gr = cnn_model_grads(ref, &np);
        const double e_out = test_rel_err(fast->nodes[fast->output]->out, ref->nodes[ref->output]->out, (size_t)B * U);
        const double e_g = test_rel_err(gf, gr, np), e_dx = test_rel_err(dx_f, dx_r, (size_t)B * h * w * c);
        printf("#   %-58s output %.1e  loss %.1e  gradients %.1e  input gradient %.1e\n", label, e_out,
               fabs(lf - lr) / fabs(lr), e_g, e_dx);
        CHECK(e_out <= 1e-5, "output rel %.2e", e_out);
        CHECK(fabs(lf - lr) <= 1e-5 * fabs(lr), "loss %.8f vs %.8f", lf, lr);
        CHECK(e_g <= 1e-4, "parameter gradients rel %.2e", e_g);
        CHECK(e_dx <= 1e-4, "input gradient rel %.2e", e_dx);
        CHECK(test_rel_err(gr, gr, np) == 0 && e_g == e_g, "NaN in the gradients");
    }
    cnn_model_free(fast);
    cnn_model_free(ref);
}

/* The tutorial network, ten SGD steps on each path (SGD: Adam would turn the
   rounding noise of a BatchNorm-fed conv bias, whose gradient is zero in exact
   arithmetic, into full-size steps) */
static cnn_node *tutorial(cnn_model *m, cnn_node *x) {
    x = cnn_conv2d(m, x, .filters = 8, .kernel_size = {3, 3}, .activation = CNN_RELU);
    x = cnn_max_pool2d(m, cnn_batch_norm(m, x), .pool_size = {2, 2});
    x = cnn_conv2d(m, x, .filters = 8, .kernel_size = {3, 3}, .activation = CNN_RELU);
    x = cnn_max_pool2d(m, cnn_batch_norm(m, x), .pool_size = {2, 2});
    x = cnn_dropout(m, cnn_dense(m, cnn_flatten(m, x), .units = 16, .activation = CNN_RELU), .rate = 0.2f);
    return cnn_dense(m, x, .units = 5, .activation = CNN_SOFTMAX);
}
static void compare_training(void) {
    enum { B = 8, H = 14, STEPS = 10 };
    const cnn_optimizer opt = cnn_sgd(.learning_rate = 0.05f, .momentum = 0.9f);
    cnn_model *fast = make(tutorial, H, H, 3, CNN_SPARSE_CATEGORICAL_CROSSENTROPY, opt);
    cnn_model *ref = make(tutorial, H, H, 3, CNN_SPARSE_CATEGORICAL_CROSSENTROPY, opt);
    float x[B * H * H * 3], y[B];
    double worst_loss = 0;
    test_begin("the tutorial network: 10 SGD steps on the fast and the reference path");
    if (!fast || !ref) { CHECK(0, "%s", cnn_last_error()); cnn_model_free(fast); cnn_model_free(ref); return; }
    cnn_set_reference(fast, 0);
    cnn_set_reference(ref, 1);
    for (int s = 0; s < STEPS; s++) {
        float lf, lr;
        fill(x, sizeof x / sizeof x[0], 100u + (unsigned)s);
        for (int b = 0; b < B; b++) y[b] = (float)((b + s) % 5);
        CHECK(cnn_train_on_batch(fast, x, y, B, 1, &lf, NULL) == CNN_OK, "fast step %d: %s", s, cnn_last_error());
        CHECK(cnn_train_on_batch(ref, x, y, B, 1, &lr, NULL) == CNN_OK, "reference step %d: %s", s, cnn_last_error());
        if (fabs(lf - lr) / fabs(lr) > worst_loss) worst_loss = fabs(lf - lr) / fabs(lr);
    }
    {
        size_t np;
        const float *pf = cnn_model_params(fast, &np), *pr = cnn_model_params(ref, &np);
        const double e_p = test_rel_err(pf, pr, np), e_s = test_rel_err(fast->state, ref->state, fast->n_state);
        printf("#   after %d steps: loss rel %.1e, parameters rel %.1e, moving statistics rel %.1e\n", STEPS, worst_loss, e_p, e_s);
        CHECK(worst_loss <= 1e-4, "loss rel %.2e", worst_loss);
        CHECK(e_p <= 1e-4, "parameters rel %.2e", e_p);
        CHECK(e_s <= 1e-4, "moving statistics rel %.2e", e_s);
        CHECK(e_p > 0, "the two paths gave the same bits: is the reference path running at all?");
    }
    cnn_model_free(fast);
    cnn_model_free(ref);
}

/* The same graphs with smooth activations for central differences (ReLU's
   zeros make ties in a max pool, where a difference quotient means nothing) */
static cnn_node *conv_bn_pool_smooth(cnn_model *m, cnn_node *x) {
    x = cnn_conv2d(m, x, .filters = 6, .kernel_size = {3, 3}, .activation = CNN_TANH);
    x = cnn_max_pool2d(m, cnn_batch_norm(m, x), .pool_size = {2, 2});
    return cnn_dense(m, cnn_flatten(m, x), .units = 4, .activation = CNN_SOFTMAX);
}
static cnn_node *residual_smooth(cnn_model *m, cnn_node *x) {
    cnn_node *a = cnn_conv2d(m, x, .filters = 4, .kernel_size = {3, 3}, .padding = CNN_SAME, .activation = CNN_TANH), *in[2];
    cnn_node *b = cnn_conv2d(m, a, .filters = 4, .kernel_size = {3, 3}, .padding = CNN_SAME);
    in[0] = a, in[1] = b;
    x = cnn_add(m, in, 2);
    in[0] = x, in[1] = cnn_avg_pool2d(m, a, .pool_size = {2, 2}, .strides = {1, 1}, .padding = CNN_SAME);
    return cnn_dense(m, cnn_flatten(m, cnn_concatenate(m, in, 2)), .units = 3, .activation = CNN_SOFTMAX);
}

/* The reference path's own gradients against central differences */
static void reference_gradients(void) {
    static const struct { const char *label; net_fn build; int h, c; } nets[] = {
        {"conv + BatchNorm + max pool", conv_bn_pool_smooth, 6, 2}, {"BatchNorm after Dense", bn_after_dense, 4, 2},
        {"strided convs", conv_strided, 7, 2}, {"residual Add / Concatenate", residual_smooth, 5, 2},
        {"ZeroPadding2D / UpSampling2D", pad_up_two_readers, 5, 2}};
    test_begin("the reference path's gradients against central differences");
    for (size_t i = 0; i < sizeof nets / sizeof nets[0]; i++) {
        enum { B = 3 };
        const cnn_loss loss = nets[i].build == conv_strided || nets[i].build == bn_after_dense ? CNN_MSE
                                                                                             : CNN_SPARSE_CATEGORICAL_CROSSENTROPY;
        cnn_model *m = make(nets[i].build, nets[i].h, nets[i].h, nets[i].c, loss, cnn_sgd());
        float x[B * 7 * 7 * 2], y[B * 64];
        int U, yw;
        double e;
        if (!m) { CHECK(0, "%s: %s", nets[i].label, cnn_last_error()); continue; }
        cnn_set_reference(m, 1);
        {   /* away from the initial zero biases, where ReLU's kink sits on the data */
            size_t np;
            float *p = cnn_model_params(m, &np);
            unsigned seed = 99;
            for (size_t k = 0; k < np; k++) p[k] += 0.1f * frand(&seed);
        }
        U = cnn_model_output_size(m);
        yw = loss == CNN_MSE ? U : 1;
        fill(x, (size_t)B * nets[i].h * nets[i].h * nets[i].c, 5);
        for (int k = 0; k < B * yw; k++) y[k] = loss == CNN_MSE ? 0.3f * (float)(k % 3) : (float)(k % U);
        e = cnn_gradient_check(m, x, y, B, yw, 40, nets[i].build == conv_bn_pool_smooth ? 3e-3 : 1e-2);
        printf("#   %-30s worst relative gap %.1e\n", nets[i].label, e);
        CHECK(e >= 0 && e < 2e-2, "%s: %.3g", nets[i].label, e);
        cnn_model_free(m);
    }
}

/* Inference through a fused Conv2D -> BatchNorm -> MaxPooling2D runs a block of
   samples at a time where a sample's conv output is large: about 1 MiB of it a
   thread, so 2T samples of conv_1's 64x64x32 floats (512 KiB) and 4T of
   conv_2's 32x32x64 on T threads (see cnn__forward_conv_blocks). On 1, 2 and
   3 threads, 13 samples make blocks in both (conv_2 reads another layer's
   output; its pool is 3x3, strides 2, 'same'). The predictions must equal the
   reference path's, and exactly those of one sample at a time (no blocks);
   conv_1's buffer must then hold its last block's first sample (the blocks
   ran); and a training step after it must equal one on a fresh model (every
   buffer pointer was put back). */
static cnn_node *big_blocks(cnn_model *m, cnn_node *x) {
    x = cnn_conv2d(m, x, .filters = 32, .kernel_size = {3, 3}, .padding = CNN_SAME, .activation = CNN_RELU);
    x = cnn_max_pool2d(m, cnn_batch_norm(m, x), .pool_size = {2, 2});
    x = cnn_conv2d(m, x, .filters = 64, .kernel_size = {3, 3}, .padding = CNN_SAME, .activation = CNN_RELU);
    x = cnn_max_pool2d(m, cnn_batch_norm(m, x), .pool_size = {3, 3}, .strides = {2, 2}, .padding = CNN_SAME);
    return cnn_dense(m, cnn_flatten(m, x), .units = 5, .activation = CNN_SOFTMAX);
}
static void compare_inference_blocks(void) {
    enum { B = 13, H = 64, C = 3, U = 5, CONV1 = 64 * 64 * 32 };
    static float x[B * H * H * C], last[CONV1];
    float p_fast[B * U], p_one[B * U], p_ref[B * U], y[B];
    for (int b = 0; b < B; b++) y[b] = (float)(b % U);
    fill(x, sizeof x / sizeof x[0], 29);
    for (int threads = 1; threads <= 3; threads++) {
        static char labels[3][96]; /* test_begin keeps the pointer until the group ends */
        char *label = labels[threads - 1];
        snprintf(label, sizeof labels[0], "inference in blocks of samples through fused Conv2D/BatchNorm/MaxPool, %d thread%s",
                 threads, threads > 1 ? "s" : "");
        test_begin(label);
        cnn_set_num_threads(threads);
        cnn_model *fast = make(big_blocks, H, H, C, CNN_SPARSE_CATEGORICAL_CROSSENTROPY, cnn_sgd());
        cnn_model *ref = make(big_blocks, H, H, C, CNN_SPARSE_CATEGORICAL_CROSSENTROPY, cnn_sgd());
        cnn_model *fresh = make(big_blocks, H, H, C, CNN_SPARSE_CATEGORICAL_CROSSENTROPY, cnn_sgd());
        if (!fast || !ref || !fresh) {
            CHECK(0, "%s", cnn_last_error());
        } else {
            stir_bn(fast);
            stir_bn(ref);
            stir_bn(fresh);
            cnn_set_reference(fast, 0);
            cnn_set_reference(fresh, 0);
            cnn_set_reference(ref, 1);
            const int block = 2 * cnn__team_size(), last_b0 = (B - 1) / block * block; /* conv_1's blocks */
            CHECK(4 * cnn__team_size() < B, "%d threads make no blocks of conv_2 in %d samples", cnn__team_size(), B);
            CHECK(cnn_predict(fast, x, B, B, p_fast) == CNN_OK, "%s", cnn_last_error());
            memcpy(last, fast->nodes[1]->out, sizeof last);
            CHECK(cnn_predict(fast, x, B, 1, p_one) == CNN_OK, "%s", cnn_last_error());
            CHECK(cnn_predict(ref, x, B, B, p_ref) == CNN_OK, "%s", cnn_last_error());
            const double e = test_rel_err(p_fast, p_ref, (size_t)B * U);
            printf("#   %d thread%s: against the reference path %.1e\n", threads, threads > 1 ? "s" : "", e);
            CHECK(e <= 1e-5, "against the reference path: rel %.2e", e);
            CHECK(!memcmp(p_fast, p_one, sizeof p_fast), "a batch of %d in blocks differs from one sample at a time", B);
            /* predicting sample last_b0 alone leaves its conv_1 output at the buffer's start
               (with the fusion planned: CNN_NO_FUSION builds run no blocks) */
            CHECK(cnn_predict(fast, x + (size_t)last_b0 * H * H * C, 1, 1, p_one) == CNN_OK, "%s", cnn_last_error());
            CHECK(!fast->nodes[2]->fuse.pool || !memcmp(last, fast->nodes[1]->out, sizeof last),
                  "conv_1's buffer does not hold its last block (from sample %d)", last_b0);
            float loss_fast = 0, loss_fresh = 0;
            size_t np;
            CHECK(cnn_train_on_batch(fast, x, y, B, 1, &loss_fast, NULL) == CNN_OK &&
                      cnn_train_on_batch(fresh, x, y, B, 1, &loss_fresh, NULL) == CNN_OK,
                  "%s", cnn_last_error());
            const float *w_fast = cnn_model_params(fast, &np), *w_fresh = cnn_model_params(fresh, &np);
            CHECK(loss_fast == loss_fresh && !memcmp(w_fast, w_fresh, np * sizeof(float)),
                  "a training step after the blocked predictions differs from one on a fresh model (loss %.7g vs %.7g)",
                  loss_fast, loss_fresh);
        }
        cnn_model_free(fast);
        cnn_model_free(ref);
        cnn_model_free(fresh);
    }
    cnn_set_num_threads(0); /* all of them again, as before */
}

int main(void) {
    CHECK(cnn_set_reference(NULL, 1) == CNN_ERR_ARG, "cnn_set_reference(NULL)");
    compare_pass("Conv2D 3x3 same, ReLU", conv_relu, 6, 5, 3, CNN_MSE, 0);
    compare_pass("Conv2D 3x2 strides 2,1 same, then 2x2 stride 2 without bias", conv_strided, 7, 6, 2, CNN_MSE, 0);
    compare_pass("Dense ELU, Dense softmax + crossentropy", dense_softmax, 4, 4, 2, CNN_CATEGORICAL_CROSSENTROPY, 0);
    compare_pass("Dense -> BatchNorm -> Dense sigmoid", bn_after_dense, 4, 3, 2, CNN_BINARY_CROSSENTROPY, 0);
    compare_pass("Conv2D -> BatchNorm -> MaxPool (fused on the fast path)", conv_bn_pool, 8, 8, 3, CNN_SPARSE_CATEGORICAL_CROSSENTROPY, 0);
    compare_pass("fused blocks of 40, 24 (linear) and 16 channels", conv_bn_pool_wide, 12, 12, 3, CNN_SPARSE_CATEGORICAL_CROSSENTROPY, 0);
    compare_pass("linear Conv2D -> BatchNorm -> LeakyReLU", conv_bn_linear, 7, 7, 2, CNN_MSE, 0);
    compare_pass("max 3x3 same, average 2x2 same, global average", pools, 9, 8, 3, CNN_SPARSE_CATEGORICAL_CROSSENTROPY, 0);
    compare_pass("residual Add, Concatenate, Dropout", residual, 6, 6, 2, CNN_SPARSE_CATEGORICAL_CROSSENTROPY, 0);
    compare_pass("frozen BatchNorm (moving statistics)", frozen_bn, 6, 6, 2, CNN_SPARSE_CATEGORICAL_CROSSENTROPY, 1);
    compare_pass("ZeroPadding2D {1,0,2,1} -> UpSampling2D {2,3} between convs", pad_up, 6, 5, 3, CNN_SPARSE_CATEGORICAL_CROSSENTROPY, 0);
    compare_pass("ZeroPadding2D -> fused Conv2D/BatchNorm/MaxPool -> UpSampling2D", pad_fused_up, 8, 8, 3, CNN_CATEGORICAL_CROSSENTROPY, 0);
    compare_pass("ZeroPadding2D / UpSampling2D with two readers each", pad_up_two_readers, 5, 4, 2, CNN_SPARSE_CATEGORICAL_CROSSENTROPY, 0);
    compare_training();
    compare_inference_blocks();
    reference_gradients();
    return test_finish();
}
