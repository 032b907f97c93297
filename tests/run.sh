#!/bin/bash
# run.sh - the test suite behind `make test`. Every step prints PASS/FAIL lines;
# the last line sums them: "N passed, N failed".
cd "$(dirname "$0")/.." || exit 2
B=build/tests
mkdir -p "$B"
log=$B/all.log
: > "$log"
CC=${CC:-gcc}
UNIT="test_core test_grad test_parity test_api test_fit test_augment_io test_augment test_resize test_split test_keras test_reference test_inspect"
# tests that are fast enough to repeat under the sanitizers
SAN="test_core test_grad test_parity test_api test_fit test_augment_io test_augment test_resize test_split test_keras test_reference test_inspect"

# run NAME CMD...: run a command, keep its PASS/FAIL lines, record a crash as FAIL
run() {
  [ "$MODE" = collect ] && return
  local name=$1; shift
  local out rc
  out=$("$@" 2>&1); rc=$?
  printf '%s\n' "$out" | grep -E '^(PASS|FAIL|SKIP)' | tee -a "$log"
  if [ $rc -ne 0 ] && ! printf '%s\n' "$out" | grep -q '^FAIL'; then
    echo "FAIL $name: exit status $rc" | tee -a "$log"
    printf '%s\n' "$out" | tail -20
  fi
}

# compile NAME CMD...: a compile that must succeed with no warnings. The builds are made
# ahead, JOBS at a time (see the end of this file): in the "collect" pass compile only writes
# its command down; in the real pass it takes the result of that build (or builds, if the
# command was not collected).
JOBS=${CNN_TEST_JOBS:-$(nproc 2>/dev/null || echo 2)}
P=$B/prebuild
compile() {
  local name=$1; shift
  local cmd out rc n
  cmd=$(printf '%q ' "$@")
  if [ "$MODE" = collect ]; then printf '%s\n' "$cmd" >> "$P/list"; return; fi
  n=$(grep -n -x -F -e "$cmd" "$P/list" 2>/dev/null | head -1 | cut -d: -f1)
  if [ -n "$n" ] && [ -f "$P/$n.rc" ]; then out=$(cat "$P/$n.out"); rc=$(cat "$P/$n.rc")
  else out=$("$@" 2>&1); rc=$?; fi
  if [ "$rc" = 0 ] && [ -z "$out" ]; then echo "PASS $name" | tee -a "$log"
  else echo "FAIL $name" | tee -a "$log"; printf '%s\n' "$out" | head -20; fi
}

suite() {
echo "== unit tests (-O2, OpenMP)"
for t in $UNIT; do
  [ -f tests/$t.c ] || { echo "FAIL $t: tests/$t.c missing" | tee -a "$log"; continue; }
  compile "build $t" $CC -std=c99 -O2 -march=native -fopenmp -Wall -Wextra -I. tests/$t.c -lm -lpthread -o $B/$t
  [ -x $B/$t ] && run $t $B/$t
done

# every CPU kernel path this processor runs (cnn_set_kernels), pinned through
# CNN_KERNELS: the -march=native build, and a plain -O2 build (no -march), which
# must find the same paths at run time; the same tolerances on each
cat > $B/kernel_paths.c <<'C'
#define CNN_IMPLEMENTATION
#include "cnn.h"
int main(void) { /* every path cnn.h has: "runs", or why this build and processor do not run it */
    const char *known[] = {"avx512", "avx2", "neon", "portable"};
    for (int i = 0; i < 4; i++) {
        int built = 0;
        for (int j = 0; j < CNN__KERNEL_PATHS; j++) built |= !strcmp(cnn__kernel_paths[j].name, known[i]);
        printf("%s %s\n", known[i], cnn_set_kernels(known[i]) == CNN_OK ? "runs"
                                   : built ? "this processor lacks it"
                                   : !strcmp(known[i], "neon") ? "not in this build (AArch64's: tested under qemu below)"
                                                               : "not in this build (another architecture's, or a CNN_NO_ macro)");
    }
    return 0;
}
C
compile "build kernel_paths" $CC -std=c99 -O2 -Wall -Wextra -I. $B/kernel_paths.c -lm -o $B/kernel_paths
paths=$([ -x $B/kernel_paths ] && $B/kernel_paths | awk '$2 == "runs" {print $1}' | tr '\n' ' ')
echo "kernel paths this processor runs: $paths"
[ -x $B/kernel_paths ] && [ "$MODE" != collect ] && $B/kernel_paths | awk '$2 != "runs"' |
  while read -r k why; do echo "SKIP kernels $k: $why" | tee -a "$log"; done
# (test_augment and test_keras: the augmentation's resample follows the kernel path)
for t in test_core test_grad test_parity test_augment test_keras; do
  compile "build $t (plain -O2)" $CC -std=c99 -O2 -fopenmp -Wall -Wextra -I. tests/$t.c -lm -lpthread -o $B/$t.O2
done
paths_start=$SECONDS
for k in $paths; do
  for t in test_core test_grad test_parity test_reference test_fit test_augment test_keras; do
    [ -x $B/$t ] && CNN_KERNELS=$k run "$t (kernels $k)" $B/$t
    [ -x $B/$t.O2 ] && CNN_KERNELS=$k run "$t (kernels $k, plain -O2)" $B/$t.O2
  done
done
[ "$MODE" != collect ] && echo "(the kernel paths' runs took $((SECONDS - paths_start)) s)"
compile "build test_core (CNN_NO_AVX512 CNN_NO_AVX2)" $CC -std=c99 -O2 -fopenmp -DCNN_NO_AVX512 -DCNN_NO_AVX2 -Wall -Wextra \
  -I. tests/test_core.c -lm -lpthread -o $B/test_core.portable
[ -x $B/test_core.portable ] && CNN_KERNELS=portable run "test_core (CNN_NO_AVX512 CNN_NO_AVX2)" $B/test_core.portable

# a compiler without OpenMP (as Apple's clang): everything on one thread, the same results
for t in test_core test_fit; do
  compile "build $t (clang, no OpenMP)" clang -std=c99 -O2 -Wall -Wextra -I. tests/$t.c -lm -lpthread -o $B/$t.noomp
  [ -x $B/$t.noomp ] && run "$t (clang, no OpenMP)" $B/$t.noomp
done

# ARM: the AArch64 build under qemu-user, on the NEON path and the portable one; test_core
# and test_fit compare 1, 2 and 3 threads bit for bit, test_fit trains small networks
if command -v aarch64-linux-gnu-gcc >/dev/null && command -v qemu-aarch64 >/dev/null; then
  for t in test_core test_grad test_parity test_reference test_fit; do
    compile "build $t (aarch64)" aarch64-linux-gnu-gcc -std=c99 -O2 -fopenmp -Wall -Wextra -I. tests/$t.c -lm -lpthread \
      -o $B/$t.arm64
    [ -x $B/$t.arm64 ] && CNN_KERNELS=neon run "$t (aarch64 under qemu, kernels neon)" \
      qemu-aarch64 -L /usr/aarch64-linux-gnu $B/$t.arm64
  done
  [ -x $B/test_grad.arm64 ] && CNN_KERNELS=portable run "test_grad (aarch64 under qemu, kernels portable)" \
    qemu-aarch64 -L /usr/aarch64-linux-gnu $B/test_grad.arm64
else
  echo "FAIL aarch64 build: gcc-aarch64-linux-gnu or qemu-user missing (scripts/ensure-deps.sh test installs them)" | tee -a "$log"
fi

# the fast path with its fusion planned away agrees with the reference path too
compile "build test_reference (CNN_NO_FUSION)" $CC -std=c99 -O2 -march=native -fopenmp -DCNN_NO_FUSION -Wall -Wextra -I. \
  tests/test_reference.c -lm -lpthread -o $B/test_reference_nofusion
[ -x $B/test_reference_nofusion ] && run "test_reference (CNN_NO_FUSION)" $B/test_reference_nofusion
# every model on the reference path by default (CNN_REFERENCE): the gradient checks and PyTorch's
# figures hold there too, and test_reference still compares both paths
for t in test_grad test_parity test_reference; do
  compile "build $t (CNN_REFERENCE)" $CC -std=c99 -O2 -fopenmp -DCNN_REFERENCE -Wall -Wextra -I. tests/$t.c -lm -lpthread \
    -o $B/$t.reference
  [ -x $B/$t.reference ] && run "$t (CNN_REFERENCE)" $B/$t.reference
done

echo "== unit tests under AddressSanitizer + UndefinedBehaviorSanitizer"
for t in $SAN; do
  [ -f tests/$t.c ] || continue
  compile "build $t (asan+ubsan)" $CC -std=c99 -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
    -fno-sanitize-recover=undefined -Wall -Wextra -I. tests/$t.c -lm -lpthread -o $B/$t.san
  [ -x $B/$t.san ] && ASAN_OPTIONS=detect_leaks=1 run "$t (asan+ubsan)" $B/$t.san
done
# float-to-int conversions out of range, which GCC's -fsanitize=undefined leaves out: the
# augmentation's coordinates (zooms of 1e12 included), with clang
compile "build test_augment (clang, float-cast-overflow)" clang -std=c99 -O1 -g -fsanitize=float-cast-overflow \
  -fno-sanitize-recover=all -Wall -Wextra -I. tests/test_augment.c -lm -lpthread -o $B/test_augment.fco
[ -x $B/test_augment.fco ] && run "test_augment (clang, float-cast-overflow)" $B/test_augment.fco
# the builds above run the best kernel path at run time (AVX-512's masked loads
# near buffer ends, where the processor has it); every other path this processor
# runs under the sanitizers too
for k in $paths; do
  [ "$k" = "$(echo $paths | cut -d' ' -f1)" ] && continue
  for t in test_core test_grad; do
    [ -x $B/$t.san ] && CNN_KERNELS=$k ASAN_OPTIONS=detect_leaks=1 run "$t (asan+ubsan, kernels $k)" $B/$t.san
  done
done

echo "== two fits at once in two threads under ThreadSanitizer (without OpenMP, whose runtime it does not see)"
compile "build test_threads (tsan)" $CC -std=c99 -O1 -g -fsanitize=thread -Wall -Wextra -I. tests/test_threads.c \
  -lm -lpthread -o $B/test_threads.tsan
[ -x $B/test_threads.tsan ] && TSAN_OPTIONS=halt_on_error=1 run "test_threads (tsan)" $B/test_threads.tsan

echo "== fuzz corpus replay under AddressSanitizer + UndefinedBehaviorSanitizer (make fuzz runs the fuzzers)"
# every seed and every input of a fixed crash (tests/fuzz/corpus/<target>/regress-*), once,
# with leaks checked and any allocation over 1 GB an error; all targets in one program (replay.c)
compile "build fuzz replay (asan+ubsan)" $CC -std=c99 -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
  -fno-sanitize-recover=all -Wall -Wextra -I. tests/fuzz/replay.c -lm -lpthread -lOpenCL -lclblast -o $B/fuzz_replay
for t in model model_payload idx cifar image image_dir opencl_spec npy npz backup; do
  [ -x $B/fuzz_replay ] && ASAN_OPTIONS=detect_leaks=1:max_allocation_size_mb=1024 run "fuzz replay $t" \
    $B/fuzz_replay $t tests/fuzz/corpus/$t
done

echo "== compile checks (-Wall -Wextra, no warnings allowed)"
cat > $B/impl.c <<'C'
#define CNN_IMPLEMENTATION
#define CNN_AUGMENT_IMPLEMENTATION
#define CNN_AUGMENT_STB_IMPLEMENTATION
#include "cnn.h"
#include "cnn_augment.h"
int main(void) { cnn_model *m = cnn_model_new(); cnn_model_free(m); return cnn_last_error()[0] != 0; }
C
cp $B/impl.c $B/impl.cpp
compile "compiles as C99 (gcc)" gcc -std=c99 -Wall -Wextra -I. -c $B/impl.c -o $B/c99.o
compile "compiles as C11 with OpenMP (gcc)" gcc -std=c11 -fopenmp -Wall -Wextra -I. -c $B/impl.c -o $B/c11.o
compile "compiles as C++ (g++)" g++ -std=c++11 -Wall -Wextra -I. -c $B/impl.cpp -o $B/cpp.o
compile "compiles as C99 (clang)" clang -std=c99 -Wall -Wextra -I. -c $B/impl.c -o $B/clang.o
compile "compiles as C++ (clang++)" clang++ -std=c++11 -Wall -Wextra -I. -c $B/impl.cpp -o $B/clangpp.o
compile "compiles with AVX-512 paths, C99 (gcc -O2)" gcc -std=c99 -O2 -mavx512f -mavx512bw -mavx512vl -mfma -Wall -Wextra -I. -c $B/impl.c -o $B/avx512.o
compile "compiles with AVX-512 paths, C++ (g++ -O2)" g++ -std=c++11 -O2 -mavx512f -mavx512bw -mavx512vl -mfma -Wall -Wextra -I. -c $B/impl.cpp -o $B/avx512pp.o
compile "compiles with AVX-512 paths, C99 (clang -O2)" clang -std=c99 -O2 -mavx512f -mavx512bw -mavx512vl -mfma -Wall -Wextra -I. -c $B/impl.c -o $B/avx512clang.o
compile "compiles with AVX-512F alone (no BW/VL), C99 (gcc -O2)" gcc -std=c99 -O2 -mavx512f -mfma -Wall -Wextra -I. -c $B/impl.c -o $B/avx512f.o
compile "compiles without the x86-64 kernel sections (CNN_NO_AVX512 CNN_NO_AVX2, clang)" clang -std=c99 -O2 -DCNN_NO_AVX512 \
  -DCNN_NO_AVX2 -Wall -Wextra -I. -c $B/impl.c -o $B/noavx.o
compile "compiles with the AVX2 paths, C99 (gcc -O2 -mavx2 -mfma)" gcc -std=c99 -O2 -mavx2 -mfma -Wall -Wextra -I. -c $B/impl.c -o $B/avx2.o
compile "compiles with CNN_STATIC" gcc -std=c99 -DCNN_STATIC -Wall -Wextra -I. $B/impl.c -lm -o $B/static
compile "declarations only (no implementation)" gcc -std=c99 -Wall -Wextra -I. -fsyntax-only -x c cnn_augment.h
compile "cnn_opencl.h declarations only" gcc -std=c99 -Wall -Wextra -I. -fsyntax-only -x c cnn_opencl.h
if [ -f /usr/include/CL/cl.h ] && [ -f /usr/include/clblast_c.h ]; then
  cat > $B/impl_cl.c <<'C'
#define CNN_IMPLEMENTATION
#define CNN_OPENCL_IMPLEMENTATION
#include "cnn.h"
#include "cnn_opencl.h"
int main(void) { return cnn_opencl_devices(NULL, 0) < 0; }
C
  cp $B/impl_cl.c $B/impl_cl.cpp
  compile "cnn_opencl.h compiles as C99 (gcc)" gcc -std=c99 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -I. -c $B/impl_cl.c -o $B/cl_c99.o
  compile "cnn_opencl.h compiles as strict C99 without POSIX (gcc)" gcc -std=c99 -Wall -Wextra -I. -c $B/impl_cl.c -o $B/cl_strict.o
  compile "cnn_opencl.h compiles as C++ (g++)" g++ -std=c++11 -Wall -Wextra -I. -c $B/impl_cl.cpp -o $B/cl_cpp.o
  compile "cnn_opencl.h compiles as C99 (clang)" clang -std=c99 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -I. -c $B/impl_cl.c -o $B/cl_clang.o
  compile "cnn_opencl.h compiles as C++ (clang++)" clang++ -std=c++11 -Wall -Wextra -I. -c $B/impl_cl.cpp -o $B/cl_clangpp.o
  compile "cnn_opencl.h with CNN_STATIC and CNN_OPENCL_STATIC" gcc -std=c99 -DCNN_STATIC -DCNN_OPENCL_STATIC -Wall -Wextra -I. $B/impl_cl.c -lOpenCL -lclblast -lm -o $B/cl_static
else
  echo "FAIL cnn_opencl.h compile checks: OpenCL or CLBlast headers missing (scripts/ensure-deps.sh test installs them)" | tee -a "$log"
fi
compile "build tests/cpp_user.cpp (the C++ API)" g++ -std=c++11 -O1 -Wall -Wextra -I. tests/cpp_user.cpp -lm -o $B/cpp_user
[ -x $B/cpp_user ] && run cpp_user $B/cpp_user

echo "== OpenCL (cnn_opencl.h) on CPU-hosted drivers of two vendors: PoCL and Mesa's rusticl"
# No sanitizers here: the drivers' own allocations would drown LeakSanitizer; the
# host-side split and reduction logic is in test_split, which runs under them above.
if [ -f /usr/include/CL/cl.h ] && [ -f /usr/include/clblast_c.h ]; then
  compile "build test_opencl" $CC -std=c99 -D_POSIX_C_SOURCE=200809L -O2 -Wall -Wextra -I. tests/test_opencl.c \
    -lOpenCL -lclblast -lm -o $B/test_opencl
  for mode in pocl2 vendors uneven none; do
    [ -x $B/test_opencl ] && run "test_opencl $mode" bash tests/opencl_env.sh $mode $B/test_opencl $mode
  done
else
  echo "FAIL test_opencl: OpenCL or CLBlast headers missing (scripts/ensure-deps.sh test installs them)" | tee -a "$log"
fi

echo "== tools: Keras models in (tools/keras_import.py), ONNX out (tools/onnx_export.py)"
run keras_import bash tests/test_keras_import.sh
run onnx_export bash tests/test_onnx.sh

echo "== drop-in build"
run drop-in bash tests/test_dropin.sh
run tensorboard bash tests/test_tensorboard.sh  # TensorBoard's reader on the callback's files (pip: ~/.cache/cnn-h/tb-venv)
run install bash tests/test_install.sh  # make install/uninstall into a temporary prefix, a program built with pkg-config

echo "== examples"
if [ -x examples/cifar10_cnn ] && [ -f tests/test_examples.sh ]; then run examples bash tests/test_examples.sh
else echo "FAIL examples: not built (run make examples)" | tee -a "$log"; fi
}

# 1. the builds the suite makes, written down; 2. made JOBS at a time; 3. the suite, on them
mkdir -p "$P" && rm -f "$P"/*
MODE=collect suite > /dev/null 2>&1
echo "== building $(grep -c '' "$P/list") test programs, $JOBS at a time"
seq 1 "$(grep -c '' "$P/list")" | xargs -P "$JOBS" -I{} bash -c \
  'eval "$(sed -n "{}p" "$0/list")" > "$0/{}.out" 2>&1; echo $? > "$0/{}.rc"' "$P"
: > "$log"
MODE=real suite

p=$(grep -c '^PASS' "$log"); f=$(grep -c '^FAIL' "$log"); s=$(grep -c '^SKIP' "$log")
echo "$p passed, $f failed$([ "$s" -gt 0 ] && echo ", $s skipped (see the SKIP lines)")"
[ "$f" -eq 0 ]
