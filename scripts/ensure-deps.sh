#!/bin/sh
# ensure-deps.sh - install the Debian packages the build and tests need.
# As root it runs one `apt-get update` and `apt-get install -y` for what is
# missing; otherwise it prints the exact command to run and fails.
#   usage: scripts/ensure-deps.sh [test|demo|bench|windows|fuzz]
set -e
need=""
have_cmd() { command -v "$1" >/dev/null 2>&1; }
have_cmd gcc || need="$need gcc"
have_cmd g++ || need="$need g++"
have_cmd make || need="$need make"
[ -f /usr/include/stb/stb_image.h ] || need="$need libstb-dev"
# gcc's OpenMP runtime ships with gcc itself (libgomp); nothing else to add.
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need="$need dataset-fashion-mnist"
case "$1" in
  test) have_cmd clang || need="$need clang"
        # cnn_opencl.h: the loader, headers and CLBlast, and two vendors' CPU
        # drivers (PoCL, Mesa's rusticl) to test several devices without a GPU
        [ -f /usr/include/CL/cl.h ] || need="$need opencl-headers"
        [ -f /usr/lib/x86_64-linux-gnu/libOpenCL.so ] || [ -f /usr/lib/aarch64-linux-gnu/libOpenCL.so ] ||
          need="$need ocl-icd-opencl-dev"
        [ -f /usr/include/clblast_c.h ] || need="$need libclblast-dev"
        [ -f /etc/OpenCL/vendors/pocl.icd ] || need="$need pocl-opencl-icd"
        [ -f /etc/OpenCL/vendors/rusticl.icd ] || need="$need mesa-opencl-icd"
        have_cmd clinfo || need="$need clinfo"
        # tests/test_install.sh builds with pkg-config; tests/test_tensorboard.sh makes a venv
        have_cmd pkg-config || need="$need pkgconf"
        python3 -c 'import ensurepip, venv' 2>/dev/null || need="$need python3-venv"
        # the AArch64 build of the tests, run under qemu-user (the NEON kernels)
        have_cmd aarch64-linux-gnu-gcc || need="$need gcc-aarch64-linux-gnu libc6-dev-arm64-cross"
        [ -e /usr/aarch64-linux-gnu/lib/libgomp.so.1 ] || need="$need libgomp1-arm64-cross"
        have_cmd qemu-aarch64 || need="$need qemu-user"
        # tools/keras_import.py and tools/onnx_export.py run on Debian's Python; the
        # ONNX test makes a virtual environment for onnxruntime (python3 -m venv: ensurepip)
        /usr/bin/python3 -c 'import numpy' 2>/dev/null || need="$need python3-numpy"
        /usr/bin/python3 -c 'import h5py' 2>/dev/null || need="$need python3-h5py"
        /usr/bin/python3 -c 'import onnx' 2>/dev/null || need="$need python3-onnx"
        /usr/bin/python3 -c 'import ensurepip' 2>/dev/null || need="$need python3-venv"
        # NumPy also writes the .npy / .npz files test_augment_io reads (tests/make_npy_files.py)
        ;;
  fuzz) have_cmd clang || need="$need clang"
        # libFuzzer's runtime: Debian's libclang-rt-dev (the version paired with clang)
        printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return d && n; }\n' >/tmp/cnn-fuzz-probe.c
        clang -fsanitize=fuzzer /tmp/cnn-fuzz-probe.c -o /tmp/cnn-fuzz-probe 2>/dev/null || need="$need libclang-rt-dev"
        rm -f /tmp/cnn-fuzz-probe.c /tmp/cnn-fuzz-probe
        [ -f /usr/include/CL/cl.h ] || need="$need opencl-headers"
        [ -f /usr/lib/x86_64-linux-gnu/libOpenCL.so ] || [ -f /usr/lib/aarch64-linux-gnu/libOpenCL.so ] ||
          need="$need ocl-icd-opencl-dev"
        [ -f /usr/include/clblast_c.h ] || need="$need libclblast-dev" ;;
  windows) have_cmd x86_64-w64-mingw32-gcc-posix || need="$need gcc-mingw-w64-x86-64-posix"
           { have_cmd wine64 || [ -x /usr/lib/wine/wine64 ]; } || need="$need wine64" ;;
  bench) { [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import torch' 2>/dev/null; } || need="$need python3-torch python3-numpy"
         [ -x /usr/bin/time ] || need="$need time"
         [ -e /usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 ] || need="$need libopenblas0-pthread"
         /usr/bin/python3 -c 'import PIL' 2>/dev/null || need="$need python3-pil"
         /usr/bin/python3 -c 'import scipy' 2>/dev/null || need="$need python3-scipy" # Keras' augmentation
         have_cmd taskset || need="$need util-linux" ;;
esac
[ -z "$need" ] && exit 0
if [ "$(id -u)" = 0 ] && have_cmd apt-get; then
  echo "ensure-deps: installing:$need"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
else
  echo "ensure-deps: missing Debian packages. Run as root:" >&2
  echo "  apt-get update && apt-get install -y$need" >&2
  exit 1
fi
