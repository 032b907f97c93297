/* npy.c - fuzz target: NumPy .npy files (cnn.h's header parser, dtypes, shapes,
   label checks) and the float-array batch source. The input is split in two:
   the first 2 bytes give the first file's length (little-endian, capped at what
   is there), the rest is the second file. Both are read from memory as images
   and labels (cnn_load_npy_memory), as float x and y (cnn_load_npy_float_memory),
   and as float x alone; float arrays that load are streamed once through
   cnn_float_source. Seeds: tests/make_npy_files.py --fuzz-corpus. */
#define FUZZ_NAME "npy"
#include "fuzz.h"
#define CNN_IMPLEMENTATION
#define CNN_AUGMENT_IMPLEMENTATION
#define CNN_AUGMENT_STB_IMPLEMENTATION
#include "cnn_augment.h"

static void fuzz_npy_stream(const cnn_float_arrays *a) {
    cnn_batch_source *src = a ? cnn_float_source(a, 1, 5) : NULL;
    if (!src) return;
    size_t per = (size_t)a->h * a->w * a->c;
    float *x = (float *)malloc(per * 4 * sizeof(float)), *y = (float *)malloc((size_t)a->y_width * 4 * sizeof(float));
    if (x && y && src->reset(src->ctx, 1) == CNN_OK)
        while (src->next(src->ctx, 4, x, y) > 0) {}
    free(x);
    free(y);
    cnn_float_source_free(src);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    size_t n_first;
    FUZZ_SETUP();
    if (size < 2) return 0;
    n_first = (size_t)data[0] | (size_t)data[1] << 8;
    data += 2;
    size -= 2;
    if (n_first > size) n_first = size;
    cnn_dataset_free(cnn_load_npy_memory(data, n_first, data + n_first, size - n_first));
    cnn_float_arrays *a = cnn_load_npy_float_memory(data, n_first, data + n_first, size - n_first);
    fuzz_npy_stream(a);
    cnn_float_arrays_free(a);
    cnn_float_arrays_free(cnn_load_npy_float_memory(data, n_first, NULL, 0));
    return 0;
}
