/* replay.c - every fuzz target in one program, for make test: one build under
   the sanitizers instead of ten (each a minute of compiling). Each target's
   file is included with its entry point renamed.
     replay TARGET FILE_OR_FOLDER...   feeds each input to TARGET once */
#define FUZZ_REPLAY_ALL
#define LLVMFuzzerTestOneInput fuzz_model
#include "model.c"
#undef LLVMFuzzerTestOneInput
#undef FUZZ_NAME
#define LLVMFuzzerTestOneInput fuzz_model_payload
#include "model_payload.c"
#undef LLVMFuzzerTestOneInput
#undef FUZZ_NAME
#define LLVMFuzzerTestOneInput fuzz_idx
#include "idx.c"
#undef LLVMFuzzerTestOneInput
#undef FUZZ_NAME
#define LLVMFuzzerTestOneInput fuzz_cifar
#include "cifar.c"
#undef LLVMFuzzerTestOneInput
#undef FUZZ_NAME
#define LLVMFuzzerTestOneInput fuzz_image
#include "image.c"
#undef LLVMFuzzerTestOneInput
#undef FUZZ_NAME
#define LLVMFuzzerTestOneInput fuzz_image_dir
#include "image_dir.c"
#undef LLVMFuzzerTestOneInput
#undef FUZZ_NAME
#define LLVMFuzzerTestOneInput fuzz_opencl_spec
#include "opencl_spec.c"
#undef LLVMFuzzerTestOneInput
#undef FUZZ_NAME
#define LLVMFuzzerTestOneInput fuzz_npy
#include "npy.c"
#undef LLVMFuzzerTestOneInput
#undef FUZZ_NAME
#define LLVMFuzzerTestOneInput fuzz_npz
#include "npz.c"
#undef LLVMFuzzerTestOneInput
#undef FUZZ_NAME
#define LLVMFuzzerTestOneInput fuzz_backup
#include "backup.c"
#undef LLVMFuzzerTestOneInput

int main(int argc, char **argv) {
    static const struct { const char *name; int (*entry)(const uint8_t *, size_t); } targets[] = {
        {"model", fuzz_model},         {"model_payload", fuzz_model_payload}, {"idx", fuzz_idx},
        {"cifar", fuzz_cifar},         {"image", fuzz_image},                 {"image_dir", fuzz_image_dir},
        {"opencl_spec", fuzz_opencl_spec}, {"npy", fuzz_npy},                 {"npz", fuzz_npz},
        {"backup", fuzz_backup}};
    for (size_t i = 0; argc >= 2 && i < sizeof targets / sizeof *targets; i++)
        if (!strcmp(argv[1], targets[i].name)) return fuzz_replay(targets[i].entry, targets[i].name, argc - 2, argv + 2);
    fprintf(stderr, "usage: replay TARGET FILE_OR_FOLDER... (TARGET: model, model_payload, idx, cifar, image, "
                    "image_dir, opencl_spec, npy, npz, backup)\n");
    return 2;
}
