/* idx.c - fuzz target: IDX image and label files (MNIST's format), raw and
   gzip'd. The input is split in two: the first 2 bytes give the image file's
   length (little-endian, capped at what is there), the rest is the label file.
   Both are read from memory (cnn_load_idx_memory), then written to files and
   read through cnn_load_idx_gz, which inflates those that start with gzip's
   magic (the seeds include gzip'd files). */
#define FUZZ_NAME "idx"
#include "fuzz.h"
#define CNN_IMPLEMENTATION
#define CNN_AUGMENT_IMPLEMENTATION
#define CNN_AUGMENT_STB_IMPLEMENTATION
#include "cnn_augment.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char ipath[600], lpath[600];
    size_t n_images;
    cnn_dataset *d;
    FUZZ_SETUP();
    if (size < 2) return 0;
    n_images = (size_t)data[0] | (size_t)data[1] << 8;
    data += 2;
    size -= 2;
    if (n_images > size) n_images = size;
    d = cnn_load_idx_memory(data, n_images, data + n_images, size - n_images);
    cnn_dataset_free(d);
    fuzz_write(fuzz_path("images-idx3-ubyte.gz", ipath, sizeof ipath), data, n_images);
    fuzz_write(fuzz_path("labels-idx1-ubyte.gz", lpath, sizeof lpath), data + n_images, size - n_images);
    d = cnn_load_idx_gz(ipath, lpath);
    cnn_dataset_free(d);
    return 0;
}
