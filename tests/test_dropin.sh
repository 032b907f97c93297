#!/bin/bash
# test_dropin.sh - a user vendors the headers: copy them into an empty folder
# beside a short program and build it with one cc command, no Makefile.
cd "$(dirname "$0")/.." || exit 2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cp cnn.h cnn_augment.h "$dir"/
cat > "$dir/main.c" <<'C'
#define CNN_IMPLEMENTATION
#define CNN_AUGMENT_IMPLEMENTATION
#define CNN_AUGMENT_STB_IMPLEMENTATION
#include "cnn.h"
#include "cnn_augment.h"

int main(void) {
    /* 200 tiny images: class 1 when the top half is brighter */
    cnn_dataset *d = cnn_dataset_new(200, 8, 8, 1, 2);
    if (!d) return 1;
    for (int i = 0; i < 200; i++) {
        d->labels[i] = i % 2;
        for (int p = 0; p < 64; p++) d->images[i * 64 + p] = (unsigned char)(((p < 32) == (i % 2)) ? 200 : 30);
    }
    cnn_model *m = cnn_model_new();
    cnn_node *x = cnn_input(m, 8, 8, 1, "input");
    x = cnn_conv2d(m, x, .filters = 4, .kernel_size = {3, 3}, .activation = CNN_RELU);
    x = cnn_max_pool2d(m, x);
    x = cnn_flatten(m, x);
    x = cnn_dense(m, x, .units = 2, .activation = CNN_SOFTMAX);
    cnn_model_set_output(m, x);
    cnn_compile(m, .loss = CNN_CATEGORICAL_CROSSENTROPY, .metrics = CNN_ACCURACY);
    cnn_model_set_rescale(m, 1.0f / 255);
    cnn_history *h = cnn_fit(m, d, .epochs = 5, .batch_size = 16);
    if (!h) { printf("%s\n", cnn_last_error()); return 1; }
    double acc = cnn_history_get(h, "accuracy")[h->epochs - 1];
    printf("accuracy %.3f\n", acc);
    int rc = acc > 0.95 ? 0 : 1;
    cnn_history_free(h);
    cnn_model_free(m);
    cnn_dataset_free(d);
    return rc;
}
C
if out=$(cd "$dir" && cc -O2 main.c -lm -o app 2>&1); then echo "PASS drop-in: one cc command builds the vendored headers"
else echo "FAIL drop-in: cc failed: $out"; exit 1; fi
if out=$("$dir/app" 2>&1); then echo "PASS drop-in: the program trains ($out)"
else echo "FAIL drop-in: the program failed: $out"; exit 1; fi
