// cpp_user.cpp - cnn.h from C++: no keyword macros, so fill the options structs
// and call the *_opt functions, as the header's documentation says.
#define CNN_IMPLEMENTATION
#include "cnn.h"
#include <cstdio>
#include <vector>

int main() {
    cnn_model *m = cnn_model_new();
    cnn_node *x = cnn_input(m, 6, 6, 1, "input");
    cnn_conv2d_opts conv = {};
    conv.filters = 4;
    conv.kernel_size[0] = conv.kernel_size[1] = 3;
    conv.activation = CNN_RELU;
    conv.name = "conv";
    x = cnn_conv2d_opt(m, x, &conv);
    cnn_name_opts flat = {"flatten"};
    x = cnn_flatten_opt(m, x, &flat);
    cnn_dense_opts dense = {};
    dense.units = 2;
    dense.activation = CNN_SOFTMAX;
    dense.name = "out";
    x = cnn_dense_opt(m, x, &dense);
    int ok = cnn_model_set_output(m, x) == CNN_OK;
    cnn_compile_opts co = {};
    co.loss = CNN_SPARSE_CATEGORICAL_CROSSENTROPY;
    co.metrics = CNN_ACCURACY;
    ok = ok && cnn_compile_opt(m, &co) == CNN_OK;
    // class = whether the left or the right half is bright
    std::vector<float> xs(16 * 36), ys(16);
    for (int b = 0; b < 16; b++) {
        ys[b] = (float)(b % 2);
        for (int i = 0; i < 36; i++) xs[b * 36 + i] = ((i % 6 < 3) == (b % 2 == 0)) ? 1.0f : 0.0f;
    }
    float first = 0, loss = 0, acc = 0;
    for (int step = 0; ok && step < 30; step++) {
        ok = cnn_train_on_batch(m, xs.data(), ys.data(), 16, 1, &loss, &acc) == CNN_OK;
        if (step == 0) first = loss;
    }
    std::printf("%s C++ API trains (loss %.4f -> %.4f, accuracy %.2f)\n", ok && loss < first && acc == 1.0f ? "PASS" : "FAIL", first, loss, acc);
    if (!ok) std::printf("FAIL C++ API: %s\n", cnn_last_error());
    cnn_model_free(m);
    return ok ? 0 : 1;
}
