/* cifar.c - fuzz target: a CIFAR-10 binary batch file (records of 1 label byte
   and 3072 pixel bytes), through cnn_load_cifar10_file and cnn_load_dataset,
   which also decides what kind of file it is. */
#define FUZZ_NAME "cifar"
#include "fuzz.h"
#define CNN_IMPLEMENTATION
#define CNN_AUGMENT_IMPLEMENTATION
#define CNN_AUGMENT_STB_IMPLEMENTATION
#include "cnn_augment.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[600];
    cnn_dataset *d;
    FUZZ_SETUP();
    fuzz_write(fuzz_path("data_batch_1.bin", path, sizeof path), data, size);
    d = cnn_load_cifar10_file(path);
    cnn_dataset_free(d);
    d = cnn_load_dataset(path);
    cnn_dataset_free(d);
    return 0;
}
