/* image_dir.c - fuzz target: an image folder with one hostile file, as Keras
   users load them: cnn_load_image_dir (sized from the first image, or a target
   size) and flow_from_directory (eager or lazy, with a target size), taking one
   batch. The folder holds two classes: "a" has the input as a file whose
   extension the first byte picks, "b" a valid 3x2 PPM image. The second byte
   picks skip_bad, lazy, the colour mode and whether a target size is given. */
#define FUZZ_NAME "image_dir"
#include "fuzz.h"
#define CNN_IMPLEMENTATION
#define CNN_AUGMENT_IMPLEMENTATION
#define CNN_AUGMENT_STB_IMPLEMENTATION
#include "cnn_augment.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *const ext[] = {"png", "jpg", "bmp", "gif", "tga", "ppm", "pgm", "jpeg"};
    static const unsigned char good[] = "P6\n3 2\n255\n"
                                        "\x10\x20\x30\x40\x50\x60\x70\x80\x90"
                                        "\xa0\xb0\xc0\xd0\xe0\xf0\x01\x02\x03";
    char dir[600], path[700];
    const char *out_dir;
    int skip_bad, lazy, sized, mode;
    cnn_dataset *d;
    cnn_datagen *g;
    FUZZ_SETUP();
    if (size < 2) return 0;
    skip_bad = data[1] & 1;
    lazy = (data[1] >> 1) & 1;
    sized = (data[1] >> 2) & 1;
    mode = ((data[1] >> 3) & 3) % 3; /* rgb, grayscale, rgba */
    out_dir = fuzz_path("imgs", dir, sizeof dir);
    fuzz_rm_tree(out_dir);
    snprintf(path, sizeof path, "%s/a/x.%s", out_dir, ext[data[0] % 8]);
    fuzz_write(path, data + 2, size - 2);
    snprintf(path, sizeof path, "%s/b/y.ppm", out_dir);
    fuzz_write(path, good, sizeof good - 1);

    d = cnn_load_image_dir(out_dir, .skip_bad = skip_bad, .height = sized ? 5 : 0, .width = sized ? 7 : 0,
                           .channels = mode == 1 ? 1 : (mode == 2 ? 4 : 3));
    cnn_dataset_free(d);

    g = cnn_datagen_new(.rotation_range = 10, .horizontal_flip = 1);
    if (g) {
        cnn_flow *f = cnn_datagen_flow_from_directory(g, out_dir, .target_size = {sized ? 9 : 4, sized ? 6 : 4},
                                                      .color_mode = (cnn_color_mode)mode, .batch_size = 2,
                                                      .skip_bad = skip_bad, .lazy = lazy, .workers = -1);
        if (f) {
            const float *x, *y;
            cnn_flow_next(f, &x, &y);
        }
        cnn_flow_free(f);
        cnn_datagen_free(g);
    }
    return 0;
}
