/* image.c - fuzz target: one image file of any format stb_image reads (PNG,
   JPEG, BMP, GIF, TGA, PNM, PSD, HDR, PIC), through cnn_load_image with a target
   size, channel count and resize filter taken from the input's first 4 bytes
   (the rest is the file). */
#define FUZZ_NAME "image"
#include "fuzz.h"
#define CNN_IMPLEMENTATION
#define CNN_AUGMENT_IMPLEMENTATION
#define CNN_AUGMENT_STB_IMPLEMENTATION
#include "cnn_augment.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static unsigned char pixels[64 * 64 * 4];
    static const int channels[3] = {1, 3, 4};
    char path[600];
    int h, w, c, interp, keep;
    FUZZ_SETUP();
    if (size < 4) return 0;
    h = 1 + data[0] % 64;
    w = 1 + data[1] % 64;
    c = channels[data[2] % 3];
    interp = data[3] % 7;      /* CNN_INTERP_DEFAULT .. CNN_INTERP_HAMMING */
    keep = (data[3] >> 3) & 1; /* keep_aspect_ratio */
    fuzz_write(fuzz_path("image", path, sizeof path), data + 4, size - 4);
    cnn_load_image(path, h, w, c, (cnn_interpolation)interp, keep, pixels);
    return 0;
}
