/* device.h - where an example's model runs: --device cpu|opencl|opencl:DEVICES.

   Built with CNN_EXAMPLES_OPENCL (the Makefile defines it, and links -lOpenCL
   -lclblast, when OpenCL's and CLBlast's headers are installed), an example
   can put its model on OpenCL devices with cnn_opencl.h; built without, it
   runs on the CPU only and says so if asked for OpenCL. Include this after
   cnn.h in the file that defines CNN_IMPLEMENTATION, and after common.h. */
#ifndef EXAMPLES_DEVICE_H
#define EXAMPLES_DEVICE_H

#ifdef CNN_EXAMPLES_OPENCL
#define CNN_OPENCL_IMPLEMENTATION
#include "cnn_opencl.h"
#endif

/* The help lines of the two options. */
#define DEVICE_USAGE                                                                        \
    "  --device D        where the model runs: cpu (default), opencl (every GPU, else\n"    \
    "                    every OpenCL device), or opencl:SPEC with SPEC device indices\n"   \
    "                    \"0,2\", a type gpu|cpu|all, or a piece of a name (see\n"          \
    "                    examples/devices)\n"                                               \
    "  --split S         how each batch is shared between the devices: auto (by\n"          \
    "                    measured speed, the default), equal, or weights W1:W2:...\n"

/* Put model m on the devices `device` names, split as `split` says (NULL:
   defaults); cpu leaves it where it is. Exits with a one-line error on failure. */
static inline void use_device(cnn_model *m, const char *device, const char *split) {
    if (!device || !strcmp(device, "cpu")) {
        if (split) fail(EXIT_USAGE, "--split shares a batch between OpenCL devices: give --device opencl too");
        return;
    }
    if (strncmp(device, "opencl", 6) != 0 || (device[6] != '\0' && device[6] != ':'))
        fail(EXIT_USAGE, "--device %s: give cpu, opencl or opencl:DEVICES (see --help)", device);
#ifdef CNN_EXAMPLES_OPENCL
    if (cnn_opencl_attach(m, .devices = device[6] ? device + 7 : NULL, .split = split) != CNN_OK)
        fail(EXIT_FAILURE, "--device %s: %s", device, cnn_last_error());
#else
    (void)m;
    fail(EXIT_USAGE, "--device %s: this program was built without OpenCL (install ocl-icd-opencl-dev, "
         "opencl-headers and libclblast-dev, then run make examples again: they are rebuilt when OpenCL appears)", device);
#endif
}

/* On OpenCL devices: where the last step's time went (the split, each
   device's compute and transfers, the host's reductions). */
static inline void report_device(const cnn_model *m, FILE *out) {
#ifdef CNN_EXAMPLES_OPENCL
    cnn_opencl_times t;
    int counts[CNN_OPENCL_MAX_DEVICES];
    if (cnn_opencl_get_times(m, &t) <= 0 || cnn_opencl_get_split(m, counts, CNN_OPENCL_MAX_DEVICES) != t.n) return;
    fprintf(out, "the last batch on OpenCL: %.1f ms;", t.step_s * 1e3);
    for (int k = 0; k < t.n; k++) {
        cnn_opencl_device_info info;
        cnn_opencl_device(m, k, &info);
        if (t.compute_s[k] < 0)
            fprintf(out, " device %d (%s) %d samples, no clock;", info.index, info.name, counts[k]);
        else
            fprintf(out, " device %d (%s) %d samples, compute %.1f ms, transfers %.1f ms;", info.index, info.name,
                    counts[k], t.compute_s[k] * 1e3, t.transfer_s[k] * 1e3);
    }
    fprintf(out, " host reductions %.1f ms\n", t.reduce_s * 1e3);
#else
    (void)m;
    (void)out;
#endif
}
#endif
