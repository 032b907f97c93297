/* test_grad.c - finite-difference gradient checks of every layer, activation
   and loss: the analytic gradients of cnn.h against central differences of the
   loss (cnn_gradient_check), plus the input gradient (cnn_input_gradient). */
#define CNN_IMPLEMENTATION
#include "cnn.h"
#include "test_util.h"

#include <stdlib.h>

/* deterministic pseudo-random floats in [-1, 1) */
static float frand(unsigned *s) { *s = *s * 1664525u + 1013904223u; return (float)((*s >> 8) & 0xffffff) / 8388608.0f - 1.0f; }

static void fill(float *v, size_t n, unsigned seed) { for (size_t i = 0; i < n; i++) v[i] = frand(&seed); }

/* targets for loss `loss` with U outputs: class indices (y_width 1) or dense rows */
static int make_targets(float *y, int n, int U, cnn_loss loss, int sparse, unsigned seed) {
    for (int b = 0; b < n; b++) {
        int cls = (int)((frand(&seed) + 1.0f) * 0.5f * U) % U;
        if (sparse) { y[b] = (float)cls; continue; }
        for (int j = 0; j < U; j++) {
            float v = loss == CNN_MSE ? frand(&seed) : loss == CNN_BINARY_CROSSENTROPY ? (frand(&seed) > 0) : (j == cls);
            y[b * U + j] = v;
        }
    }
    return sparse ? 1 : U;
}

/* Kinks (relu, max) need a small step; smooth networks a larger one, which
   float32 rounding of the loss favours. */
static double g_step = 1e-2;

/* the largest relative gap between cnn_input_gradient and central differences on x */
static double input_grad_err(cnn_model *m, float *x, const float *y, int n, int yw, size_t xcount) {
    float *dx = (float *)malloc(xcount * sizeof(float)), *g = (float *)malloc(xcount * sizeof(float)), loss;
    size_t pc;
    cnn_input_gradient(m, x, y, n, yw, dx, &loss);
    float *grads = cnn_model_grads(m, &pc);
    (void)grads;
    double worst = 0;
    /* 40 inputs spread evenly, then up to 16 of those with a nonzero gradient
       (a max pool's gradient reaches only one input a window: spread points
       can miss them all) */
    size_t nonzero = 0, seen = 0, *at = (size_t *)malloc((40 + 16 + 2) * sizeof(size_t)), count = 0;
    for (size_t k = 0; k < xcount; k += 1 + xcount / 40) at[count++] = k;
    for (size_t k = 0; k < xcount; k++) nonzero += dx[k] != 0;
    for (size_t k = 0; k < xcount && nonzero; k++)
        if (dx[k] != 0 && seen++ % (1 + nonzero / 16) == 0) at[count++] = k;
    for (size_t i = 0; i < count; i++) {
        const size_t k = at[i];
        float keep = x[k], lp, lm;
        x[k] = keep + (float)g_step; cnn_input_gradient(m, x, y, n, yw, g, &lp);
        x[k] = keep - (float)g_step; cnn_input_gradient(m, x, y, n, yw, g, &lm);
        x[k] = keep;
        double num = (lp - lm) / (2 * g_step), ana = dx[k];
        double scale = fabs(num) > fabs(ana) ? fabs(num) : fabs(ana);
        double err = fabs(num - ana) / (scale > 1e-3 ? scale : 1e-3);
        if (err > worst) worst = err;
    }
    free(dx); free(g); free(at);
    return worst;
}

typedef cnn_node *(*builder)(cnn_model *m, cnn_node *x);

/* Build input(h,w,c) -> body -> head, compile with `loss`, and check gradients. */
static void check(const char *name, int h, int w, int c, builder body, int units, cnn_activation_type head_act, cnn_loss loss, int sparse) {
    test_begin(name);
    const int n = 4;
    cnn_model *m = cnn_model_new();
    cnn_model_set_seed(m, 7);
    cnn_node *x = cnn_input(m, h, w, c, "input");
    x = body(m, x);
    if (units > 0) {
        int oh = 0, ow = 0, oc = 0;
        cnn_node_shape(x, &oh, &ow, &oc);
        if (oh != 1 || ow != 1) x = cnn_flatten(m, x, .name = "flat");
        x = cnn_dense(m, x, .units = units, .activation = head_act, .name = "head");
    }
    CHECK(x != NULL, "building failed: %s", cnn_last_error());
    if (!x) { cnn_model_free(m); return; }
    CHECK(cnn_model_set_output(m, x) == CNN_OK, "%s", cnn_last_error());
    CHECK(cnn_compile(m, .loss = loss) == CNN_OK, "%s", cnn_last_error());
    /* non-trivial biases / BatchNorm parameters so every term matters */
    size_t np;
    float *p = cnn_model_params(m, &np);
    unsigned s = 99;
    for (size_t i = 0; i < np; i++) p[i] += 0.1f * frand(&s);
    int U = cnn_model_output_size(m);
    size_t xcount = (size_t)n * h * w * c;
    float *xb = (float *)malloc(xcount * sizeof(float)), *y = (float *)malloc((size_t)n * U * sizeof(float));
    fill(xb, xcount, 3);
    int yw = make_targets(y, n, U, loss, sparse, 5);
    double err = cnn_gradient_check(m, xb, y, n, yw, 40, g_step);
    CHECK(err >= 0 && err < 2e-2, "parameter gradient relative error %.3g", err);
    double ierr = input_grad_err(m, xb, y, n, yw, xcount);
    CHECK(ierr < 2e-2, "input gradient relative error %.3g", ierr);
    printf("# %-34s param err %.2e  input err %.2e\n", name, err, ierr);
    free(xb); free(y);
    cnn_model_free(m);
}

static cnn_node *b_conv_valid(cnn_model *m, cnn_node *x) { return cnn_conv2d(m, x, .filters = 3, .kernel_size = {3, 3}, .name = "conv"); }
static cnn_node *b_conv_same_strided(cnn_model *m, cnn_node *x) { return cnn_conv2d(m, x, .filters = 3, .kernel_size = {3, 2}, .strides = {2, 2}, .padding = CNN_SAME, .name = "conv"); }
static cnn_node *b_conv_1x1_nobias(cnn_model *m, cnn_node *x) { return cnn_conv2d(m, x, .filters = 2, .kernel_size = {1, 1}, .no_bias = 1, .name = "conv"); }
static cnn_node *b_conv_l1l2(cnn_model *m, cnn_node *x) { return cnn_conv2d(m, x, .filters = 3, .kernel_size = {2, 2}, .kernel_regularizer = {0.01f, 0.02f}, .name = "conv"); }
static cnn_node *b_bn(cnn_model *m, cnn_node *x) { return cnn_batch_norm(m, x, .name = "bn"); }
static cnn_node *b_maxpool(cnn_model *m, cnn_node *x) { return cnn_max_pool2d(m, x, .pool_size = {2, 2}, .name = "pool"); }
static cnn_node *b_maxpool_same(cnn_model *m, cnn_node *x) { return cnn_max_pool2d(m, x, .pool_size = {3, 3}, .strides = {2, 2}, .padding = CNN_SAME, .name = "pool"); }
/* a window of 272 cells: the pool keeps two bytes a cell (see cnn__argmax_cell) */
static cnn_node *b_maxpool_wide(cnn_model *m, cnn_node *x) { return cnn_max_pool2d(m, x, .pool_size = {17, 16}, .strides = {1, 2}, .name = "pool"); }
/* BatchNorm read only by a max pool fuses into it: the pool keeps BatchNorm's input at each maximum */
static cnn_node *b_bn_maxpool_same(cnn_model *m, cnn_node *x) { return b_maxpool_same(m, b_bn(m, x)); }
static cnn_node *b_bn_maxpool_wide(cnn_model *m, cnn_node *x) { return b_maxpool_wide(m, b_bn(m, x)); }
static cnn_node *b_avgpool(cnn_model *m, cnn_node *x) { return cnn_avg_pool2d(m, x, .pool_size = {2, 2}, .padding = CNN_SAME, .name = "pool"); }
static cnn_node *b_gap(cnn_model *m, cnn_node *x) { return cnn_global_avg_pool2d(m, x, .name = "gap"); }
static cnn_node *b_dense(cnn_model *m, cnn_node *x) {
    x = cnn_flatten(m, x, .name = "flatten");
    return cnn_dense(m, x, .units = 5, .kernel_regularizer = {0.0f, 0.05f}, .name = "dense");
}
static cnn_node *b_dropout(cnn_model *m, cnn_node *x) { return cnn_dropout(m, x, .rate = 0.5f, .name = "drop"); }
static cnn_node *b_add(cnn_model *m, cnn_node *x) {
    cnn_node *a = cnn_conv2d(m, x, .filters = 2, .kernel_size = {3, 3}, .padding = CNN_SAME, .name = "a");
    cnn_node *b = cnn_conv2d(m, x, .filters = 2, .kernel_size = {1, 1}, .name = "b");
    return cnn_add(m, ((cnn_node *[]){a, b, a}), 3, .name = "add");
}
static cnn_node *b_concat(cnn_model *m, cnn_node *x) {
    cnn_node *a = cnn_conv2d(m, x, .filters = 2, .kernel_size = {3, 3}, .padding = CNN_SAME, .name = "a");
    cnn_node *b = cnn_max_pool2d(m, x, .pool_size = {3, 3}, .strides = {1, 1}, .padding = CNN_SAME, .name = "b");
    return cnn_concatenate(m, ((cnn_node *[]){a, b}), 2, .name = "concat");
}
/* ZeroPadding2D between convs, asymmetric: the border's gradient must go
   nowhere and the inside's back to its pixel */
static cnn_node *b_zero_padding(cnn_model *m, cnn_node *x) {
    x = cnn_conv2d(m, x, .filters = 3, .kernel_size = {2, 2}, .activation = CNN_TANH, .name = "conv_a");
    x = cnn_zero_padding2d(m, x, .padding = {1, 0, 2, 1}, .name = "pad");
    return cnn_conv2d(m, x, .filters = 2, .kernel_size = {3, 3}, .strides = {2, 1}, .name = "conv_b");
}
/* the default padding (1 on each side) right after the input: the input gradient crosses it */
static cnn_node *b_zero_padding_input(cnn_model *m, cnn_node *x) {
    x = cnn_zero_padding2d(m, x, .name = "pad");
    return cnn_conv2d(m, x, .filters = 2, .kernel_size = {3, 2}, .activation = CNN_TANH, .name = "conv");
}
/* UpSampling2D {2, 3} between convs: each input pixel gets the sum of its 2x3 block */
static cnn_node *b_up_sampling(cnn_model *m, cnn_node *x) {
    x = cnn_conv2d(m, x, .filters = 3, .kernel_size = {2, 2}, .activation = CNN_TANH, .name = "conv_a");
    x = cnn_up_sampling2d(m, x, .size = {2, 3}, .name = "up");
    return cnn_conv2d(m, x, .filters = 2, .kernel_size = {3, 3}, .strides = {2, 2}, .name = "conv_b");
}
/* the default size {2, 2} right after the input */
static cnn_node *b_up_sampling_input(cnn_model *m, cnn_node *x) {
    x = cnn_up_sampling2d(m, x, .name = "up");
    return cnn_conv2d(m, x, .filters = 2, .kernel_size = {2, 3}, .strides = {2, 1}, .activation = CNN_TANH, .name = "conv");
}
/* The new layers' input and output each read by two layers. conv_a feeds pad_1
   and then pad_2 (built in that order, so pad_1's backward runs last and adds
   to conv_a's gradient); pad_1 is read by conv_c and by the Add, twice. The same
   for UpSampling2D: up_1 is built before conv_d, which also reads conv_b, so
   up_1's backward adds to what conv_d left there. */
static cnn_node *b_two_readers(cnn_model *m, cnn_node *x) {
    cnn_node *a = cnn_conv2d(m, x, .filters = 2, .kernel_size = {2, 2}, .activation = CNN_TANH, .name = "conv_a");
    cnn_node *p1 = cnn_zero_padding2d(m, a, .padding = {1, 0, 2, 1}, .name = "pad_1");
    cnn_node *p2 = cnn_zero_padding2d(m, a, .padding = {0, 1, 1, 2}, .name = "pad_2");
    cnn_node *c = cnn_conv2d(m, p1, .filters = 2, .kernel_size = {3, 3}, .padding = CNN_SAME, .name = "conv_c");
    x = cnn_add(m, ((cnn_node *[]){p1, p2, c, p1}), 4, .name = "add_pad");
    cnn_node *b = cnn_conv2d(m, x, .filters = 2, .kernel_size = {2, 2}, .activation = CNN_TANH, .name = "conv_b");
    cnn_node *u1 = cnn_up_sampling2d(m, b, .size = {2, 3}, .name = "up_1");
    cnn_node *d = cnn_conv2d(m, b, .filters = 2, .kernel_size = {1, 1}, .name = "conv_d");
    cnn_node *u2 = cnn_up_sampling2d(m, d, .size = {2, 3}, .name = "up_2");
    return cnn_add(m, ((cnn_node *[]){u1, u2, u1}), 3, .name = "add_up");
}
/* one body per activation, as a separate Activation layer after a conv */
static cnn_activation_type g_act;
static cnn_node *b_act(cnn_model *m, cnn_node *x) {
    x = cnn_conv2d(m, x, .filters = 3, .kernel_size = {2, 2}, .name = "conv");
    return cnn_activation(m, x, .activation = g_act, .name = "act");
}
static cnn_node *b_fused_act(cnn_model *m, cnn_node *x) {
    return cnn_conv2d(m, x, .filters = 3, .kernel_size = {2, 2}, .activation = g_act, .name = "conv");
}
/* The tutorial's shape with ELU for ReLU and average for max pooling: after
   BatchNorm, ReLU kinks become cliffs and max windows hold near-ties, both of
   which central differences step across. ReLU and max pooling are checked
   alone above, and the real tutorial network against PyTorch in test_parity.c. */
static cnn_node *b_tutorial(cnn_model *m, cnn_node *x) {
    x = cnn_conv2d(m, x, .filters = 4, .kernel_size = {3, 3}, .activation = CNN_ELU, .name = "conv_1");
    x = cnn_batch_norm(m, x, .name = "batch_norm_1");
    x = cnn_avg_pool2d(m, x, .pool_size = {2, 2}, .name = "pool_1");
    x = cnn_conv2d(m, x, .filters = 3, .kernel_size = {3, 3}, .activation = CNN_ELU, .name = "conv_2");
    x = cnn_batch_norm(m, x, .name = "batch_norm_2");
    x = cnn_flatten(m, x, .name = "flatten");
    x = cnn_dense(m, x, .units = 8, .activation = CNN_TANH, .name = "fc1");
    return cnn_dropout(m, x, .rate = 0.2f, .name = "dropout1");
}

int main(void) {
    check("grad conv2d valid", 6, 6, 2, b_conv_valid, 3, CNN_SOFTMAX, CNN_CATEGORICAL_CROSSENTROPY, 0);
    check("grad conv2d same strided", 7, 6, 2, b_conv_same_strided, 0, CNN_LINEAR, CNN_MSE, 0);
    check("grad conv2d 1x1 no bias", 4, 4, 3, b_conv_1x1_nobias, 0, CNN_LINEAR, CNN_MSE, 0);
    check("grad conv2d l1/l2 regularizer", 5, 5, 2, b_conv_l1l2, 3, CNN_SOFTMAX, CNN_CATEGORICAL_CROSSENTROPY, 0);
    check("grad batchnorm (training)", 4, 4, 3, b_bn, 0, CNN_LINEAR, CNN_MSE, 0);
    check("grad maxpool valid", 5, 5, 2, b_maxpool, 0, CNN_LINEAR, CNN_MSE, 0);
    check("grad maxpool same strided", 5, 6, 2, b_maxpool_same, 0, CNN_LINEAR, CNN_MSE, 0);
    check("grad batchnorm into maxpool same strided", 5, 6, 2, b_bn_maxpool_same, 0, CNN_LINEAR, CNN_MSE, 0);
    /* 272 inputs in [-1, 1) a window: its two largest lie ~0.007 apart. After
       BatchNorm (x1.7 here) the usual step fits; a smaller one would drown its
       ~1/M coupling terms in the float loss's rounding. */
    g_step = 1e-3;
    check("grad maxpool wide window", 17, 18, 2, b_maxpool_wide, 0, CNN_LINEAR, CNN_MSE, 0);
    g_step = 1e-2;
    check("grad batchnorm into wide maxpool", 17, 18, 2, b_bn_maxpool_wide, 0, CNN_LINEAR, CNN_MSE, 0);
    check("grad avgpool same", 5, 5, 2, b_avgpool, 0, CNN_LINEAR, CNN_MSE, 0);
    check("grad global avgpool", 4, 3, 3, b_gap, 0, CNN_LINEAR, CNN_MSE, 0);
    check("grad flatten + dense l2", 3, 3, 2, b_dense, 0, CNN_LINEAR, CNN_MSE, 0);
    check("grad dropout (off in checks)", 3, 3, 2, b_dropout, 0, CNN_LINEAR, CNN_MSE, 0);
    check("grad add (3 inputs)", 4, 4, 2, b_add, 0, CNN_LINEAR, CNN_MSE, 0);
    check("grad concatenate", 4, 4, 2, b_concat, 0, CNN_LINEAR, CNN_MSE, 0);
    check("grad zero_padding2d {1,0,2,1} between convs", 5, 6, 2, b_zero_padding, 0, CNN_LINEAR, CNN_MSE, 0);
    check("grad zero_padding2d default on the input", 4, 3, 2, b_zero_padding_input, 3, CNN_SOFTMAX, CNN_CATEGORICAL_CROSSENTROPY, 0);
    check("grad up_sampling2d {2,3} between convs", 4, 3, 2, b_up_sampling, 0, CNN_LINEAR, CNN_MSE, 0);
    check("grad up_sampling2d default on the input", 3, 4, 2, b_up_sampling_input, 0, CNN_LINEAR, CNN_MSE, 0);
    check("grad zero_padding2d / up_sampling2d, two readers", 4, 4, 2, b_two_readers, 0, CNN_LINEAR, CNN_MSE, 0);
    static const struct { cnn_activation_type a; const char *name, *fused; } acts[] = {
        {CNN_LINEAR, "grad activation linear", "grad conv2d+linear"},
        {CNN_RELU, "grad activation relu", "grad conv2d+relu"},
        {CNN_SIGMOID, "grad activation sigmoid", "grad conv2d+sigmoid"},
        {CNN_TANH, "grad activation tanh", "grad conv2d+tanh"},
        {CNN_SOFTMAX, "grad activation softmax", "grad conv2d+softmax"},
        {CNN_LEAKY_RELU, "grad activation leaky_relu", "grad conv2d+leaky_relu"},
        {CNN_ELU, "grad activation elu", "grad conv2d+elu"}};
    for (int i = 0; i < 7; i++) {
        g_act = acts[i].a;
        g_step = g_act == CNN_RELU || g_act == CNN_LEAKY_RELU ? 1e-3 : 1e-2;
        check(acts[i].name, 4, 4, 2, b_act, 0, CNN_LINEAR, CNN_MSE, 0);
        check(acts[i].fused, 4, 4, 2, b_fused_act, 0, CNN_LINEAR, CNN_MSE, 0);
    }
    g_step = 1e-2;
    check("grad loss categorical (softmax fused)", 3, 3, 2, b_gap, 4, CNN_SOFTMAX, CNN_CATEGORICAL_CROSSENTROPY, 0);
    check("grad loss categorical (class index)", 3, 3, 2, b_gap, 4, CNN_SOFTMAX, CNN_CATEGORICAL_CROSSENTROPY, 1);
    check("grad loss categorical (no softmax)", 3, 3, 2, b_gap, 4, CNN_SIGMOID, CNN_CATEGORICAL_CROSSENTROPY, 0);
    check("grad loss sparse categorical", 3, 3, 2, b_gap, 4, CNN_SOFTMAX, CNN_SPARSE_CATEGORICAL_CROSSENTROPY, 1);
    check("grad loss binary (sigmoid fused)", 3, 3, 2, b_gap, 3, CNN_SIGMOID, CNN_BINARY_CROSSENTROPY, 0);
    check("grad loss binary (single unit)", 3, 3, 2, b_gap, 1, CNN_SIGMOID, CNN_BINARY_CROSSENTROPY, 0);
    check("grad loss binary (tanh head)", 3, 3, 2, b_gap, 2, CNN_TANH, CNN_BINARY_CROSSENTROPY, 0);
    check("grad loss mse", 3, 3, 2, b_gap, 3, CNN_LINEAR, CNN_MSE, 0);
    check("grad tutorial-shaped network", 10, 10, 3, b_tutorial, 5, CNN_SOFTMAX, CNN_CATEGORICAL_CROSSENTROPY, 0);
    return test_finish();
}
