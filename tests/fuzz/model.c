/* model.c - fuzz target: a model file as raw bytes (cnn_load_memory). Most
   mutations fail the magic, length or checksum; model_payload.c reaches the
   parser behind them (it includes this file for use_model, with
   FUZZ_MODEL_USE_ONLY). A file that loads is summarised, run on two zero
   samples (when its input is small) and saved again. */
#ifndef FUZZ_MODEL_USE /* once, also where model_payload.c includes this file again */
#define FUZZ_MODEL_USE
#ifndef FUZZ_NAME
#define FUZZ_NAME "model"
#endif
#include "fuzz.h"
#define CNN_IMPLEMENTATION
#include "cnn.h"

/* what a user does with a model that loaded */
static void use_model(cnn_model *m) {
    int h, w, c;
    char path[600];
    FILE *null = fopen("/dev/null", "w");
    if (null) { cnn_summary(m, null); fclose(null); }
    if (cnn_model_input_shape(m, &h, &w, &c) == CNN_OK && (size_t)h * w * c <= 4096 &&
        cnn_model_param_count(m) <= 1000000 && cnn_model_output_size(m) <= 4096) {
        float *x = (float *)calloc((size_t)2 * h * w * c, sizeof(float));
        float *y = (float *)malloc((size_t)2 * cnn_model_output_size(m) * sizeof(float));
        if (x && y) cnn_predict(m, x, 2, 2, y);
        free(x);
        free(y);
    }
    cnn_save(m, fuzz_path("resaved.cnn", path, sizeof path));
}

#endif

#ifndef FUZZ_MODEL_USE_ONLY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cnn_model *m;
    FUZZ_SETUP();
    m = cnn_load_memory(data, size);
    if (m) use_model(m);
    cnn_model_free(m);
    return 0;
}
#endif
