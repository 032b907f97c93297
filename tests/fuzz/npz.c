/* npz.c - fuzz target: NumPy .npz archives (cnn_augment.h's ZIP reader: the end
   records, ZIP64, the central directory, local headers, stored and deflated
   members, CRC-32, then the .npy members). The input is one archive, read from
   memory for the members x_train and y_train (cnn_load_npz_memory), then
   written to a file and read as float arrays (cnn_load_npz_float) and asked for
   x_test (cnn_npz_has). Seeds: tests/make_npy_files.py --fuzz-corpus. */
#define FUZZ_NAME "npz"
#include "fuzz.h"
#define CNN_IMPLEMENTATION
#define CNN_AUGMENT_IMPLEMENTATION
#define CNN_AUGMENT_STB_IMPLEMENTATION
#include "cnn_augment.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[600];
    FUZZ_SETUP();
    cnn_dataset_free(cnn_load_npz_memory(data, size, "x_train", "y_train"));
    fuzz_write(fuzz_path("data.npz", path, sizeof path), data, size);
    cnn_float_arrays_free(cnn_load_npz_float(path, "x_train", "y_train"));
    (void)cnn_npz_has(path, "x_test");
    return 0;
}
