/* augment_bench.c - images per second of the tutorial's ImageDataGenerator
   (rotation_range=20, width_shift_range=0.02, height_shift_range=0.02,
   horizontal_flip, fill_mode nearest, bilinear) on 32x32x3 uint8 images it
   makes itself, through a flow: batches of 32 made on worker threads, taken with
   cnn_flow_next (no copy), as a training loop would take them.
     --images N    images per pass (default 20000)
     --threads T   worker threads (default 2; 0 = none, batches made inline)
     --passes P    timed passes after one warm-up pass (default: whole passes until
                   at least 0.5 s have passed)
   Prints "img/s: X" as its last line; bench/keras_augment.py does the same with
   Keras' algorithm (numpy + scipy.ndimage). */
#define CNN_IMPLEMENTATION
#define CNN_AUGMENT_IMPLEMENTATION
#define CNN_AUGMENT_STB_IMPLEMENTATION
#include "cnn_augment.h"

#include <stdlib.h>
#include <string.h>


static int arg_int(const char *v, const char *name, int lo) {
    char *end;
    long x = strtol(v ? v : "", &end, 10);
    if (!v || *end || x < lo || x > 100000000) {
        fprintf(stderr, "augment_bench: %s needs an integer >= %d\n", name, lo);
        exit(2);
    }
    return (int)x;
}

int main(int argc, char **argv) {
    int images = 20000, threads = 2, passes = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--images")) images = arg_int(argv[++i < argc ? i : 0], "--images", 1);
        else if (!strcmp(argv[i], "--threads")) threads = arg_int(argv[++i < argc ? i : 0], "--threads", 0);
        else if (!strcmp(argv[i], "--passes")) passes = arg_int(argv[++i < argc ? i : 0], "--passes", 1);
        else {
            fprintf(stderr, "augment_bench: unknown option %s (--images N, --threads T, --passes P)\n", argv[i]);
            return 2;
        }
    }
    cnn_dataset *d = cnn_dataset_new(images, 32, 32, 3, 10);
    if (!d) { fprintf(stderr, "augment_bench: %s\n", cnn_last_error()); return 1; }
    /* smooth gradients plus noise: a resample of flat noise would flatter nothing, but be unlike photos */
    unsigned s = 12345;
    for (int n = 0; n < images; n++)
        for (int p = 0; p < 32 * 32 * 3; p++) {
            s = s * 1664525u + 1013904223u;
            int y = p / 96, x = (p / 3) % 32, c = p % 3;
            d->images[(size_t)n * 3072 + p] = (unsigned char)((x * 5 + y * 3 + c * 40 + n + (int)(s >> 28)) & 255);
        }
    cnn_datagen *g = cnn_datagen_new(.rotation_range = 20, .width_shift_range = 0.02f, .height_shift_range = 0.02f,
                                     .horizontal_flip = 1);
    cnn_flow *f = g ? cnn_datagen_flow(g, d, .batch_size = 32, .seed = 1, .workers = threads ? threads : -1) : NULL;
    if (!f) { fprintf(stderr, "augment_bench: %s\n", cnn_last_error()); return 1; }
    const float *x, *y;
    double checksum = 0;
    int got;
    while ((got = cnn_flow_next(f, &x, &y)) > 0) checksum += x[0]; /* warm-up pass: threads, caches */
    double t0 = cnn_wall_time();
    long long done = 0;
    double t = 0;
    for (int p = 0; passes ? p < passes : (p == 0 || t < 0.5); p++) {
        while ((got = cnn_flow_next(f, &x, &y)) > 0) {
            checksum += x[(size_t)(got - 1) * 3072 + 1000];
            done += got;
        }
        t = cnn_wall_time() - t0;
        if (got < 0) break;
    }
    if (got < 0) { fprintf(stderr, "augment_bench: %s\n", cnn_last_error()); return 1; }
    printf("augment_bench: %lld images of 32x32x3 in %.3f s on %d worker thread%s (checksum %.1f)\n", done, t,
           threads, threads == 1 ? "" : "s", checksum);
    printf("us/img: %.3f\n", t / (double)done * 1e6);
    printf("img/s: %.1f\n", (double)done / t);
    cnn_flow_free(f);
    cnn_datagen_free(g);
    cnn_dataset_free(d);
    return 0;
}
