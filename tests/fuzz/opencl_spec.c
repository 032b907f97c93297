/* opencl_spec.c - fuzz target: the device and split choices that users type
   (CNN_OPENCL_DEVICES, --devices, --split): cnn_opencl_select's parser over a
   made-up list of 1 to 8 devices (no driver needed), and cnn_split_parse. The
   first byte picks the device count and the room for indices; the rest is the
   text. */
#define FUZZ_NAME "opencl_spec"
#include "fuzz.h"
#define CNN_IMPLEMENTATION
#define CNN_OPENCL_IMPLEMENTATION
#include "cnn_opencl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *const names[8] = {"NVIDIA GeForce RTX 4090", "cpu-haswell-AMD EPYC 7B13", "gfx1100",
                                         "Intel(R) UHD Graphics 770", "llvmpipe (LLVM 15.0.6, 256 bits)",
                                         "Apple M2", "", "Tesla T4"};
    cnn_opencl_device_info all[8];
    int indices[8], n, max, fixed;
    double weights[8];
    char *text;
    FUZZ_SETUP();
    if (size < 1) return 0;
    n = 1 + data[0] % 8;
    max = 1 + (data[0] >> 3) % 8;
    memset(all, 0, sizeof all);
    for (int i = 0; i < n; i++) {
        all[i].index = i;
        snprintf(all[i].name, sizeof all[i].name, "%s", names[i]);
        snprintf(all[i].platform, sizeof all[i].platform, "%s", i % 2 ? "Portable Computing Language" : "rusticl");
        all[i].is_gpu = i % 3 == 0;
        all[i].is_cpu = !all[i].is_gpu;
    }
    text = (char *)malloc(size); /* the rest, NUL-terminated */
    if (!text) return 0;
    memcpy(text, data + 1, size - 1);
    text[size - 1] = 0;
    cnn__cl_choose(text, all, n, indices, max);
    cnn_split_parse(text, n, &fixed, weights);
    free(text);
    return 0;
}
