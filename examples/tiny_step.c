/* tiny_step.c - one training step of a tiny CNN, every number printed.

   A 4x4 grey image goes through the tutorial's block, Conv2D -> BatchNorm ->
   MaxPooling2D, then Flatten and a Dense softmax over 3 classes. The weights
   are written below, not drawn at random, so you can follow every number with
   pencil and paper (or a spreadsheet) and check it against what is printed.

   What you learn:
     1. what each layer does to a tensor, and the shape it gives
        (cnn_layer_output_training reads any layer's output);
     2. how the softmax probabilities turn into the loss;
     3. what "the gradient" is: one number per parameter saying how much the
        loss changes when that parameter moves (cnn_input_gradient computes
        them, cnn_model_grads hands them out), and per input pixel;
     4. how to trust a gradient: central differences agree with it
        (cnn_gradient_check);
     5. what one optimizer step does: w -= learning_rate * gradient (SGD),
        and that the loss goes down.

   Build and run (from the repository root):
     make examples/tiny_step && examples/tiny_step
   or
     gcc -std=c99 -O2 -Wall -Wextra -I. examples/tiny_step.c -lm -o examples/tiny_step

   Read it with docs/gradients.md open: its sections "Conv2D",
   "BatchNormalization", "MaxPooling2D", "Flatten", "Dense" and "Losses"
   derive every formula the gradients below come from, and "Checking a
   derivation" explains the gradient check.

   The mode: every tensor is printed as training sees it (BatchNorm normalises
   with the statistics of this batch, Dropout would be off), because that is
   what the loss and the gradients are computed from. The batch is the one
   image: BatchNorm's statistics are taken over its 4x4 positions, which is
   enough (a batch of 2 or more images changes nothing below but the sums). */

#define CNN_IMPLEMENTATION
#include "cnn.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* ---------------------------------------------------------------- data */

/* The image: 4 rows of 4 pixels, one channel (grey), values in 0..1.
   A bright vertical stripe in the third column. */
static const float image[4][4] = {
    {0.0f, 0.2f, 0.9f, 0.1f},
    {0.1f, 0.3f, 1.0f, 0.0f},
    {0.0f, 0.2f, 0.8f, 0.3f},
    {0.1f, 0.1f, 0.7f, 0.2f},
};
static const float label = 2; /* its class: 0, 1 or 2 */

/* Conv2D's two 3x3 filters, written as pictures [filter][row][column]:
   filter 0 answers to a bright column left of a dark one, filter 1 to
   brightness that grows downwards. Keras stores a kernel as
   [row][column][input channel][filter]; main() copies them into that order. */
static const float filters[2][3][3] = {
    {{0.5f, 0.0f, -0.5f}, {0.5f, 0.0f, -0.5f}, {0.5f, 0.0f, -0.5f}},
    {{-0.3f, -0.3f, -0.3f}, {0.0f, 0.1f, 0.0f}, {0.3f, 0.3f, 0.3f}},
};
static const float conv_bias[2] = {0.05f, 0.1f};

/* Dense: 8 inputs (the flattened 2x2x2 pool output) to 3 classes.
   Keras stores it as [input][output]: row k holds input k's weight for each class. */
static const float dense_kernel[8][3] = {
    {0.2f, -0.1f, 0.3f}, {-0.2f, 0.1f, 0.1f}, {0.1f, 0.2f, -0.3f}, {0.0f, -0.2f, 0.2f},
    {0.3f, 0.1f, -0.1f}, {-0.1f, 0.2f, 0.0f}, {0.1f, -0.3f, 0.2f}, {0.2f, 0.0f, -0.1f},
};
static const float dense_bias[3] = {0.0f, 0.1f, -0.1f};

/* ------------------------------------------------------------ printing */

/* A tensor [h][w][c] of one image, one h x w grid per channel. */
static void print_tensor(const float *t, int h, int w, int c) {
    for (int ch = 0; ch < c; ch++) {
        if (c > 1) printf("  channel %d:\n", ch);
        for (int y = 0; y < h; y++) {
            printf("   ");
            for (int x = 0; x < w; x++) printf(" %8.4f", t[((size_t)y * w + x) * c + ch]);
            printf("\n");
        }
    }
}

/* A vector of n numbers on one line. */
static void print_vector(const float *v, int n) {
    printf("   ");
    for (int i = 0; i < n; i++) printf(" %8.4f", v[i]);
    printf("\n");
}

/* A layer's output for our image, in training mode, printed with its shape. */
static void show_layer(cnn_model *m, const float *x, const char *layer) {
    int h = 0, w = 0, c = 0;
    float out[64];
    cnn_node_shape(cnn_get_layer(m, layer), &h, &w, &c);
    if (cnn_layer_output_training(m, layer, x, 1, out) != CNN_OK) {
        fprintf(stderr, "tiny_step: %s\n", cnn_last_error());
        exit(1);
    }
    if (h == 1 && w == 1) print_vector(out, c);
    else print_tensor(out, h, w, c);
}

/* The gradient of one weight tensor: it sits in the gradient buffer at the
   place its weights sit in the parameter buffer (same layout). */
static const float *grad_of(cnn_model *m, const char *layer, const char *which, size_t *count) {
    const float *w = cnn_layer_weights(m, layer, which, count);
    return cnn_model_grads(m, NULL) + (w - cnn_model_params(m, NULL));
}

int main(void) {
    /* ------------------------------------------------ 1. the network */
    cnn_model *m = cnn_model_new();
    cnn_node *x = cnn_input(m, 4, 4, 1, "input");
    x = cnn_conv2d(m, x, .filters = 2, .kernel_size = {3, 3}, .padding = CNN_SAME, .activation = CNN_RELU,
                   .name = "conv");
    x = cnn_batch_norm(m, x, .name = "batch_norm");
    x = cnn_max_pool2d(m, x, .pool_size = {2, 2}, .name = "pool");
    x = cnn_flatten(m, x, .name = "flatten");
    x = cnn_dense(m, x, .units = 3, .activation = CNN_SOFTMAX, .name = "dense");
    /* SGD without momentum: a step is exactly w -= 0.1 * gradient */
    if (cnn_model_set_output(m, x) != CNN_OK ||
        cnn_compile(m, .optimizer = cnn_sgd(.learning_rate = 0.1f), .loss = CNN_SPARSE_CATEGORICAL_CROSSENTROPY) !=
            CNN_OK) {
        fprintf(stderr, "tiny_step: %s\n", cnn_last_error());
        return 1;
    }
    cnn_summary(m, stdout);

    /* our weights instead of random ones (BatchNorm keeps gamma 1, beta 0) */
    float kernel[3][3][1][2];
    for (int f = 0; f < 2; f++)
        for (int r = 0; r < 3; r++)
            for (int col = 0; col < 3; col++) kernel[r][col][0][f] = filters[f][r][col];
    if (cnn_set_weights(m, "conv", "kernel", &kernel[0][0][0][0], 18) != CNN_OK ||
        cnn_set_weights(m, "conv", "bias", conv_bias, 2) != CNN_OK ||
        cnn_set_weights(m, "dense", "kernel", &dense_kernel[0][0], 24) != CNN_OK ||
        cnn_set_weights(m, "dense", "bias", dense_bias, 3) != CNN_OK) {
        fprintf(stderr, "tiny_step: %s\n", cnn_last_error());
        return 1;
    }
    const float *in = &image[0][0];
    const float y = label;

    /* ------------------------------------------------ 2. forward, layer by layer */
    printf("\n== forward pass (training mode: BatchNorm uses this batch's statistics)\n");
    /* the input image, shape [4][4][1] */
    printf("\ninput image [4][4][1]:\n");
    print_tensor(in, 4, 4, 1);
    /* conv: each output pixel = relu(bias + sum of the 3x3 neighbourhood times
       the filter), zeros around the border ('same'); shape [4][4][2] */
    printf("\nconv: relu(bias + 3x3 window . filter), padding 'same' [4][4][2]:\n");
    show_layer(m, in, "conv");
    /* batch_norm: per channel, (x - mean) / sqrt(var + 0.001) * gamma + beta
       with the mean and variance of that channel's 16 values; shape [4][4][2] */
    float conv_out[32];
    cnn_layer_output_training(m, "conv", in, 1, conv_out);
    for (int ch = 0; ch < 2; ch++) {
        double mean = 0, var = 0;
        for (int i = 0; i < 16; i++) mean += conv_out[2 * i + ch] / 16.0;
        for (int i = 0; i < 16; i++) var += (conv_out[2 * i + ch] - mean) * (conv_out[2 * i + ch] - mean) / 16.0;
        /* the statistics BatchNorm normalises channel ch with (by hand); two scalars */
        printf("%s channel %d: mean %.4f, variance %.4f", ch ? "," : "\nconv's", ch, mean, var);
    }
    printf("\nbatch_norm: (x - mean) / sqrt(var + 0.001) * gamma + beta, per channel [4][4][2]:\n");
    show_layer(m, in, "batch_norm");
    /* pool: the largest value of each 2x2 block; shape [2][2][2] */
    printf("\npool: the maximum of each 2x2 block [2][2][2]:\n");
    show_layer(m, in, "pool");
    /* flatten: the same 8 numbers in one row, order [row][column][channel]; shape [8] */
    printf("\nflatten: the pool's values in the order [row][column][channel] [8]:\n");
    show_layer(m, in, "flatten");
    /* dense: softmax(bias + flatten . kernel), the class probabilities; shape [3] */
    float p[3];
    cnn_layer_output_training(m, "dense", in, 1, p);
    printf("\ndense: softmax(bias + flatten . kernel), the probability of each class [3]:\n");
    print_vector(p, 3);

    /* ------------------------------------------------ 3. the loss */
    /* the loss of one image: -log(probability of its true class); a scalar */
    printf("\nloss = -log(p[%d]) = -log(%.4f) = %.4f   (by hand)\n", (int)y, p[(int)y], -log(p[(int)y]));

    /* ------------------------------------------------ 4. the gradients */
    /* cnn_input_gradient runs forward and backward in training mode without
       an optimizer step: it returns d loss / d input and leaves every
       parameter's gradient in the gradient buffer (cnn_model_grads) */
    float dx[16], loss;
    if (cnn_input_gradient(m, in, &y, 1, 1, dx, &loss) != CNN_OK) {
        fprintf(stderr, "tiny_step: %s\n", cnn_last_error());
        return 1;
    }
    /* the loss as the library computed it (probabilities clipped to [1e-7, 1 - 1e-7]); a scalar */
    printf("loss = %.4f   (cnn_input_gradient)\n", loss);
    printf("\n== backward pass: d loss / d parameter, one number per weight\n");
    size_t n;
    const float *g;
    /* dense bias gradient = p - onehot(label): the softmax + cross-entropy rule; shape [3] */
    g = grad_of(m, "dense", "bias", &n);
    printf("\ndense bias gradient [3]  (= p - onehot(%d): %.4f %.4f %.4f by hand):\n", (int)y, p[0] - (y == 0),
           p[1] - (y == 1), p[2] - (y == 2));
    print_vector(g, (int)n);
    /* dense kernel gradient = flatten[k] * (p - onehot)[u]; shape [8][3] */
    g = grad_of(m, "dense", "kernel", &n);
    printf("\ndense kernel gradient [8][3]  (row k = flatten[k] * bias gradient):\n");
    for (int k = 0; k < 8; k++) print_vector(g + 3 * k, 3);
    /* batch_norm gamma and beta gradients: one per channel; shape [2] each */
    g = grad_of(m, "batch_norm", "gamma", &n);
    printf("\nbatch_norm gamma gradient [2]:\n");
    print_vector(g, (int)n);
    g = grad_of(m, "batch_norm", "beta", &n);
    printf("batch_norm beta gradient [2]:\n");
    print_vector(g, (int)n);
    /* conv kernel gradient, shown per filter as a 3x3 picture; shape [3][3][1][2] */
    g = grad_of(m, "conv", "kernel", &n);
    printf("\nconv kernel gradient [3][3][1][2], as the filters above:\n");
    print_tensor(g, 3, 3, 2);
    /* conv bias gradient; shape [2] */
    g = grad_of(m, "conv", "bias", &n);
    printf("conv bias gradient [2]:\n");
    print_vector(g, (int)n);
    /* d loss / d input pixel: what a saliency map shows; shape [4][4][1] */
    printf("\nd loss / d input pixel [4][4][1]:\n");
    print_tensor(dx, 4, 4, 1);

    /* ------------------------------------------------ 5. check them */
    /* central differences (loss(w + h) - loss(w - h)) / 2h for every
       parameter, against the gradients above; a scalar, the largest relative error */
    double worst = cnn_gradient_check(m, in, &y, 1, 1, 100, 1e-2);
    if (worst < 0) {
        fprintf(stderr, "tiny_step: %s\n", cnn_last_error());
        return 1;
    }
    cnn_model_params(m, &n);
    /* In float arithmetic the two differ by up to about 1e-2 (rounding in the
       loss, and the curvature over the step h = 0.01); a wrong gradient is off
       by something near 1. tests/test_grad.c accepts below 2e-2 too. */
    printf("\ngradient check: largest relative error %.2e over all %zu parameters (%s)\n", worst, n,
           worst < 2e-2 ? "below 2e-2: the gradients are right" : "WRONG");

    /* ------------------------------------------------ 6. one step */
    /* SGD: every parameter moves against its gradient, w -= 0.1 * g; the
       first dense bias, a scalar, before and after */
    const float b0 = cnn_layer_weights(m, "dense", "bias", &n)[0], g0 = grad_of(m, "dense", "bias", &n)[0];
    float before;
    cnn_train_on_batch(m, in, &y, 1, 1, &before, NULL);
    printf("\n== one SGD step, learning rate 0.1\n");
    printf("dense bias[0]: %.4f - 0.1 * %.4f = %.4f\n", b0, g0, cnn_layer_weights(m, "dense", "bias", &n)[0]);
    /* the loss on the same image after the step: lower; a scalar */
    float after;
    cnn_input_gradient(m, in, &y, 1, 1, dx, &after);
    printf("loss before the step %.4f, after %.4f\n", before, after);

    cnn_model_free(m);
    return 0;
}
