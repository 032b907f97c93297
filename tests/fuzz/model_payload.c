/* model_payload.c - fuzz target: the payload of a model file, wrapped in a valid
   header (magic, version, length) and checksum, so that every mutation reaches
   the layer, option and parameter parser (cnn__deserialize): a file that passes
   its checksum is still untrusted. */
#define FUZZ_NAME "model_payload"
#define FUZZ_MODEL_USE_ONLY /* model.c's use_model, not its entry point */
#include "model.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    unsigned char *file = (unsigned char *)malloc(size + 24);
    uint32_t crc;
    cnn_model *m;
    FUZZ_SETUP();
    if (!file) return 0;
    memcpy(file, "CNNMODEL", 8);
    for (int i = 0; i < 8; i++) file[12 + i] = (unsigned char)((uint64_t)size >> (8 * i));
    if (size) memcpy(file + 20, data, size);
    crc = cnn__crc32(file + 20, size);
    for (int i = 0; i < 4; i++) file[20 + size + i] = (unsigned char)(crc >> (8 * i));
    /* the same payload read as every version this cnn.h reads (they differ in the
       compile settings: version 2 adds gradient clipping) */
    for (uint32_t version = 1; version <= (uint32_t)CNN_FORMAT_VERSION; version++) {
        for (int i = 0; i < 4; i++) file[8 + i] = (unsigned char)(version >> (8 * i));
        m = cnn_load_memory(file, size + 24);
        if (m) use_model(m);
        cnn_model_free(m);
    }
    free(file);
    return 0;
}
