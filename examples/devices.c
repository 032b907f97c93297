/* devices.c - list the OpenCL devices cnn_opencl.h can train on.

   Build (from the repository root; make does it when OpenCL is installed):
     gcc -std=c99 -D_POSIX_C_SOURCE=200809L -O2 -Wall -Wextra -I. examples/devices.c \
         -lOpenCL -lclblast -lm -o examples/devices

   Run:
     examples/devices                      # every device of every platform
     examples/devices gpu                  # which devices a choice names
     POCL_DEVICES="pthread basic" RUSTICL_ENABLE=llvmpipe examples/devices

   The index in the first column is what --device opencl:0,2 and
   cnn_opencl_attach(m, .devices = "0,2") take. */

#define CNN_IMPLEMENTATION
#define CNN_OPENCL_IMPLEMENTATION
#include "cnn.h"
#include "cnn_opencl.h"

int main(int argc, char **argv) {
    cnn_opencl_device_info dev[64];
    int n = cnn_opencl_devices(dev, 64), chosen[64], k;
    if (n < 0) {
        fprintf(stderr, "devices: %s\n", cnn_last_error());
        return 1;
    }
    if (n == 0) {
        printf("no OpenCL device: no platform is installed (Debian: pocl-opencl-icd for CPUs, mesa-opencl-icd,\n"
               "or your GPU vendor's driver), or OCL_ICD_VENDORS points at an empty folder\n");
        return 1;
    }
    printf("%-3s %-5s %-34s %-16s %-28s %5s %9s  %s\n", "#", "type", "device", "vendor", "platform", "units", "memory",
           "OpenCL");
    for (int i = 0; i < n; i++)
        printf("%-3d %-5s %-34.34s %-16.16s %-28.28s %5d %6.1f GB  %s\n", dev[i].index,
               dev[i].is_gpu ? "gpu" : dev[i].is_cpu ? "cpu" : "other", dev[i].name, dev[i].vendor, dev[i].platform,
               dev[i].compute_units, (double)dev[i].global_memory / 1e9, dev[i].version);
    /* which devices a choice names: the argument, else CNN_OPENCL_DEVICES, else the default */
    k = cnn_opencl_select(argc > 1 ? argv[1] : NULL, chosen, 64);
    if (k < 0) {
        fprintf(stderr, "devices: %s\n", cnn_last_error());
        return 1;
    }
    printf("chosen (%s):", argc > 1 ? argv[1] : getenv("CNN_OPENCL_DEVICES") ? getenv("CNN_OPENCL_DEVICES")
                                                                                : "default: every GPU, else all");
    for (int i = 0; i < k; i++) printf(" %d", chosen[i]);
    printf("\n");
    return 0;
}
