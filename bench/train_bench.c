/* train_bench.c - images per second of the tutorial network (32x32x3 input)
   on synthetic data it makes itself.
     --images N      images per timed run (default 2048)
     --batch-size B  training batch (default 32)
     --threads T     OpenMP threads (default: all cores)
     --infer         time prediction with batch 256 instead of training
     --profile       print each layer's time and GFLOP/s (forward, backward)
     --kernels K     the CPU kernel path (cnn_set_kernels: avx512, avx2, neon, portable);
                     exits with status 3 when this processor or build cannot run it
   Prints "img/s: X" as its last line. */
#define CNN_IMPLEMENTATION
#include "cnn.h"
#include "tests/tutorial_net.h"

#include <stdlib.h>
#include <string.h>

static cnn_model *build_network(int h, int w, int c, int classes) {
    cnn_model *m = cnn_model_new();
    cnn_node *x = tutorial_layers(m, h, w, c, classes, 0.2f);
    if (cnn_model_set_output(m, x) || cnn_compile(m, .optimizer = cnn_adam(), .loss = CNN_CATEGORICAL_CROSSENTROPY, .metrics = CNN_ACCURACY)) {
        fprintf(stderr, "train_bench: %s\n", cnn_last_error());
        exit(1);
    }
    return m;
}

static int arg_int(const char *v, const char *name) {
    char *end;
    long x = strtol(v ? v : "", &end, 10);
    if (!v || *end || x <= 0 || x > 100000000) { fprintf(stderr, "train_bench: %s needs a positive integer\n", name); exit(2); }
    return (int)x;
}

int main(int argc, char **argv) {
    int images = 2048, batch = 32, threads = 0, infer = 0, profile = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--images")) images = arg_int(argv[++i < argc ? i : 0], "--images");
        else if (!strcmp(argv[i], "--batch-size")) batch = arg_int(argv[++i < argc ? i : 0], "--batch-size");
        else if (!strcmp(argv[i], "--threads")) threads = arg_int(argv[++i < argc ? i : 0], "--threads");
        else if (!strcmp(argv[i], "--infer")) infer = 1;
        else if (!strcmp(argv[i], "--profile")) profile = 1;
        else if (!strcmp(argv[i], "--kernels") && i + 1 < argc) {
            if (cnn_set_kernels(argv[++i])) { fprintf(stderr, "train_bench: %s\n", cnn_last_error()); return 3; }
        }
        else { fprintf(stderr, "train_bench: unknown option %s\n", argv[i]); return 2; }
    }
    if (threads) cnn_set_num_threads(threads);
    cnn_model *m = build_network(32, 32, 3, 10);
    const int per = 32 * 32 * 3, B = infer ? 256 : batch;
    float *x = (float *)malloc((size_t)B * per * sizeof(float)), *y = (float *)malloc((size_t)B * 10 * sizeof(float));
    unsigned s = 12345;
    for (int i = 0; i < B * per; i++) { s = s * 1664525u + 1013904223u; x[i] = (float)(s >> 8) / 16777216.0f; }
    for (int b = 0; b < B; b++) y[b] = (float)(b % 10);
    float loss;
    /* warm-up: first-touch of buffers, caches */
    for (int i = 0; i < 3; i++) infer ? cnn_predict(m, x, B, B, y + 0 * 0 + 0 * B) : cnn_train_on_batch(m, x, y, B, 1, &loss, NULL);
    if (profile) cnn_set_profiling(m, 1);
    double t0 = cnn_wall_time();
    int done = 0;
    float *out = (float *)malloc((size_t)B * 10 * sizeof(float));
    while (done < images) {
        if (infer) cnn_predict(m, x, B, B, out);
        else cnn_train_on_batch(m, x, y, B, 1, &loss, NULL);
        done += B;
    }
    double dt = cnn_wall_time() - t0;
    if (profile) {
        printf("%-14s %-20s %9s %9s %9s %9s\n", "layer", "type", "fwd ms", "fwd GF/s", "bwd ms", "bwd GF/s");
        for (int i = 0; i < cnn_model_num_layers(m); i++) {
            cnn_layer_profile p = {0};
            cnn_get_profile(m, i, &p);
            double calls = p.forward_calls ? (double)p.forward_calls : 1;
            printf("%-14s %-20s %9.3f %9.1f %9.3f %9.1f\n", p.name, p.type, 1e3 * p.forward_s / calls,
                   p.forward_s > 0 ? p.forward_flop / p.forward_s * 1e-9 : 0, 1e3 * p.backward_s / calls,
                   p.backward_s > 0 ? p.backward_flop / p.backward_s * 1e-9 : 0);
        }
    }
    printf("threads: %d  batch: %d  mode: %s  kernels: %s\n", cnn_get_num_threads(), B, infer ? "inference" : "training",
           cnn_kernels());
    printf("img/s: %.1f\n", done / dt);
    free(x); free(y); free(out);
    cnn_model_free(m);
    return 0;
}
