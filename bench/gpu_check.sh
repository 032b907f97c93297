#!/bin/bash
# gpu_check.sh - cnn_opencl.h on an NVIDIA GPU, on a machine with no network, installing
# nothing: builds against Debian's OpenCL loader, headers and CLBlast unpacked into a
# private prefix, registers the NVIDIA driver's OpenCL library with a vendors folder of
# its own, then
#   (a) lists the OpenCL devices (clinfo -l, examples/devices);
#   (b) builds tests/test_opencl.c as tests/run.sh does and runs its modes that fit one
#       GPU: "gpu" (every layer and 10 training steps on device 0 against the CPU, and a
#       short fit) and "none" (no platform);
#   (c) trains the tutorial network (examples/cifar10_cnn, built with OpenCL as the
#       Makefile does) on Fashion-MNIST on the GPU at batch 32 and 256, after an untimed
#       warm-up run, beside the CPU path and PyTorch on CUDA (bench/torch_reference.py
#       --device cuda, same network and input size);
#   (d) prints a markdown table: what, batch, images/s.
#
# Run from the repository on the GPU machine, after bench/gpu_fetch.sh filled
# bench/gpu-debs/ on a machine with network and the folder was copied along:
#   bench/gpu_check.sh
# Needs there: bash, gcc (with OpenMP), coreutils' timeout, dpkg-deb (or ar, tar and xz),
# the NVIDIA driver (libnvidia-opencl.so.1); PyTorch with CUDA in $PYTHON for the
# reference rows (else the table says so; wheels in bench/gpu-debs/wheels are used
# when present). Everything runs under one time budget, 450 s by default.
#
# Settings (environment):
#   IMAGES=8192 EPOCHS=2     each timed run trains EPOCHS passes over IMAGES images
#   BATCHES="32 256"         the batch sizes timed
#   GPU_CHECK_DEVICE=opencl:gpu    examples/cifar10_cnn's --device
#   GPU_CHECK_ICD=PATH       the OpenCL driver library to register instead of NVIDIA's
#   GPU_CHECK_TORCH_DEVICE=cuda    torch_reference.py's --device
#   GPU_CHECK_BUDGET=450     seconds for the whole check; each part's timeout is capped by
#                            what is left
#   GPU_CHECK_DEBS=bench/gpu-debs  GPU_CHECK_LOGS=build/gpu_check (builds, logs, table.md)
#   GPU_CHECK_DATA=DIR       the Fashion-MNIST folder (default: the unpacked
#                            dataset-fashion-mnist, else /usr/share/datasets/fashion-mnist)
#   PYTHON=python3 CC=gcc
# A dry run on a machine without a GPU, with Debian's PoCL (apt-get install pocl-opencl-icd):
#   GPU_CHECK_ICD=/usr/lib/x86_64-linux-gnu/libpocl.so.2 GPU_CHECK_DEVICE=opencl:0 \
#   GPU_CHECK_TORCH_DEVICE=cpu IMAGES=256 EPOCHS=1 bench/gpu_check.sh
set -u
cd "$(dirname "$0")/.." || exit 2
IMAGES=${IMAGES:-8192} EPOCHS=${EPOCHS:-2} BATCHES=${BATCHES:-32 256}
DEVICE=${GPU_CHECK_DEVICE:-opencl:gpu} TORCH_DEVICE=${GPU_CHECK_TORCH_DEVICE:-cuda}
BUDGET=${GPU_CHECK_BUDGET:-450} DEBS=${GPU_CHECK_DEBS:-bench/gpu-debs} B=${GPU_CHECK_LOGS:-build/gpu_check}
PY=${PYTHON:-python3} CC=${CC:-gcc}
deadline=$((SECONDS + BUDGET))
failed=0

die() { echo "gpu_check: $*" >&2; exit 1; }
# run_for SECONDS CMD...: CMD under timeout, capped by what is left of the budget
run_for() {
  local want=$1 left=$((deadline - SECONDS)); shift
  [ "$left" -lt "$want" ] && want=$left
  if [ "$want" -lt 5 ]; then echo "gpu_check: out of time (GPU_CHECK_BUDGET=$BUDGET s), skipped: $*" >&2; return 124; fi
  timeout -k 5 "$want" "$@"
}

mkdir -p "$B" || exit 2
compgen -G "$DEBS/*.deb" >/dev/null || die "no .deb files in $DEBS: run bench/gpu_fetch.sh on a machine with network and copy $DEBS here"
command -v "$CC" >/dev/null || die "no C compiler '$CC'"
P=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX") || exit 2
trap 'rm -rf "$P"' EXIT
echo "# gpu_check: $(date -u '+%Y-%m-%d %H:%M UTC'), $(git describe --always --dirty 2>/dev/null || echo 'no git'), $($CC --version | head -1)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | sed 's/^/# GPU: /'

# ---------------------------------------------------------------- the private prefix
# extract DEB DIR: dpkg-deb -x, or by hand where dpkg is missing (a .deb is an ar archive)
extract() {
  if command -v dpkg-deb >/dev/null; then dpkg-deb -x "$1" "$2"; return; fi
  local m; m=$(ar t "$1" | grep '^data\.tar') || return 1
  case $m in
    *.xz) ar p "$1" "$m" | tar -xJ -C "$2" ;;
    *.zst) ar p "$1" "$m" | zstd -dc | tar -x -C "$2" ;;
    *.gz) ar p "$1" "$m" | tar -xz -C "$2" ;;
    *) ar p "$1" "$m" | tar -x -C "$2" ;;
  esac
}
echo "== unpacking $DEBS/*.deb into $P/root"
mkdir -p "$P/root"
for d in "$DEBS"/*.deb; do extract "$d" "$P/root" || die "cannot unpack $d"; done
lib=$(find "$P/root" -name libOpenCL.so.1 -printf '%h\n' -quit)
INC=$P/root/usr/include
if ! { [ -n "$lib" ] && [ -e "$lib/libOpenCL.so" ] && [ -e "$lib/libclblast.so" ] && [ -f "$INC/CL/cl.h" ] &&
       [ -f "$INC/clblast_c.h" ]; }; then
  die "the packages in $DEBS lack the OpenCL loader, headers or CLBlast: run bench/gpu_fetch.sh again"
fi
export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# CLBlast is C++: where this machine's libstdc++ is older than the one it was built with,
# use the one gpu_fetch.sh put in fallback/
if ldd "$lib/libclblast.so.1" 2>&1 | grep -q 'not found'; then
  echo "   this machine's C++ runtime is too old for CLBlast: using $DEBS/fallback"
  mkdir -p "$P/fallback"
  for d in "$DEBS"/fallback/*.deb; do extract "$d" "$P/fallback" || die "cannot unpack $d"; done
  fb=$(find "$P/fallback" -name 'libstdc++.so.6' -printf '%h\n' -quit)
  [ -n "$fb" ] || die "no libstdc++.so.6 in $DEBS/fallback"
  export LD_LIBRARY_PATH="$lib:$fb:${LD_LIBRARY_PATH#"$lib"}"
  ldd "$lib/libclblast.so.1" 2>&1 | grep 'not found' && die "CLBlast still misses libraries (above)"
fi

# ---------------------------------------------------------------- the OpenCL driver
# The NVIDIA driver mounts libnvidia-opencl.so.1 but often no /etc/OpenCL/vendors/nvidia.icd
# (DESIGN.md section 6): find the library and register it in a vendors folder of our own.
find_nvidia_icd() {
  local f d
  f=$(ldconfig -p 2>/dev/null | awk '$1 == "libnvidia-opencl.so.1" && /x86-64/ {print $NF; exit}')
  [ -n "$f" ] && [ -e "$f" ] && { echo "$f"; return 0; }
  if [ -f /etc/OpenCL/vendors/nvidia.icd ]; then
    f=$(head -1 /etc/OpenCL/vendors/nvidia.icd)
    [ -e "$f" ] && { echo "$f"; return 0; }
  fi
  for d in /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/lib /usr/local/nvidia/lib64 /usr/local/nvidia/lib \
           /usr/lib/x86_64-linux-gnu/nvidia/current /usr/local/cuda/compat /usr/local/cuda/lib64 \
           /run/nvidia/driver/usr/lib/x86_64-linux-gnu; do
    for f in "$d"/libnvidia-opencl.so.1 "$d"/libnvidia-opencl.so.[0-9]*; do
      [ -e "$f" ] && { echo "$f"; return 0; }
    done
  done
  f=$(timeout 30 find /usr /opt /run -name 'libnvidia-opencl.so*' -print -quit 2>/dev/null)
  [ -n "$f" ] && { echo "$f"; return 0; }
  return 1
}
if [ -n "${GPU_CHECK_ICD:-}" ]; then
  icd=$GPU_CHECK_ICD
  [ -e "$icd" ] || die "GPU_CHECK_ICD=$icd does not exist"
else
  smi=$(command -v nvidia-smi >/dev/null && nvidia-smi -L 2>&1 | head -1)
  icd=$(find_nvidia_icd) || die "no NVIDIA OpenCL library (libnvidia-opencl.so.1) found: searched ldconfig -p, \
/etc/OpenCL/vendors/nvidia.icd, /usr/lib/x86_64-linux-gnu, /usr/lib64, /usr/lib, /usr/local/nvidia/lib64, \
/usr/local/cuda/{compat,lib64} and /usr /opt /run. Is the NVIDIA driver's OpenCL part mounted (nvidia-smi -L: \
${smi:-no nvidia-smi})? Give its path as GPU_CHECK_ICD=/path/to/libnvidia-opencl.so.1."
fi
mkdir -p "$P/vendors"
case $(basename "$icd") in libnvidia-opencl*) name=nvidia ;; *) name=gpu_check ;; esac
echo "$icd" > "$P/vendors/$name.icd"
export OCL_ICD_VENDORS=$P/vendors
# the driver's own dependencies (libcuda.so.1 beside it) where the loader would not look
icd_dir=$(dirname "$icd")
export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$icd_dir"
export CNN_OPENCL_CACHE=$P/kernel-cache # built OpenCL programs: filled by the warm-up run
unset CNN_OPENCL_DEVICES
echo "== OpenCL driver: $icd (OCL_ICD_VENDORS=$OCL_ICD_VENDORS, holding $name.icd)"

# ---------------------------------------------------------------- builds, side by side
CLFLAGS=(-DCNN_EXAMPLES_OPENCL -D_POSIX_C_SOURCE=200809L) # the Makefile's, with OpenCL
# build NAME CMD...: run a compile, its output in $B/build_NAME.log
build() { local n=$1; shift; run_for 240 "$@" >"$B/build_$n.log" 2>&1; echo $? >"$B/build_$n.rc"; }
echo "== building examples/devices, examples/cifar10_cnn (Makefile flags) and tests/test_opencl (tests/run.sh flags) into $B"
build devices "$CC" -std=c99 -O3 -march=native -fopenmp "${CLFLAGS[@]}" -Wall -Wextra -I. -I"$INC" \
  examples/devices.c -L"$lib" -lOpenCL -lclblast -lm -lpthread -o "$B/devices" &
build cifar10_cnn "$CC" -std=c99 -O3 -march=native -fopenmp "${CLFLAGS[@]}" -Wall -Wextra -I. -I"$INC" \
  examples/cifar10_cnn.c -L"$lib" -lOpenCL -lclblast -lm -lpthread -o "$B/cifar10_cnn" &
build test_opencl "$CC" -std=c99 -D_POSIX_C_SOURCE=200809L -O2 -Wall -Wextra -I. -I"$INC" \
  tests/test_opencl.c -L"$lib" -lOpenCL -lclblast -lm -o "$B/test_opencl" &
wait
for n in devices cifar10_cnn test_opencl; do
  if [ "$(cat "$B/build_$n.rc")" != 0 ]; then echo "   $n: BUILD FAILED"; head -20 "$B/build_$n.log"; failed=1
  elif [ -s "$B/build_$n.log" ]; then echo "   $n: built, with warnings:"; head -20 "$B/build_$n.log"
  else echo "   $n: built, no warnings"; fi
done
[ -x "$B/devices" ] && ldd "$B/devices" | grep -E 'libOpenCL|libclblast|libstdc' | sed 's/^[[:space:]]*/   uses /'

# ---------------------------------------------------------------- (a) devices
echo "== (a) OpenCL devices"
spec=${DEVICE#opencl}; spec=${spec#:}
run_for 60 "$P/root/usr/bin/clinfo" -l
[ -x "$B/devices" ] || die "examples/devices did not build (above)"
run_for 60 "$B/devices" ${spec:+"$spec"} || die "no OpenCL device through $icd (above): the driver loads no platform or none that --device $DEVICE names"

# ---------------------------------------------------------------- (b) test_opencl
echo "== (b) tests/test_opencl"
modes="none"
grep -q 'strcmp(mode, "gpu")' tests/test_opencl.c && modes="gpu none"
if [ -x "$B/test_opencl" ]; then
  for m in $modes; do
    if [ "$m" = none ]; then # as tests/run.sh: an empty vendors folder
      run_for 120 bash tests/opencl_env.sh none "$B/test_opencl" none >"$B/test_opencl_$m.log" 2>&1
    else                     # the GPU, through our vendors folder
      run_for 240 "$B/test_opencl" "$m" >"$B/test_opencl_$m.log" 2>&1
    fi
    rc=$?
    grep '^FAIL' "$B/test_opencl_$m.log" | head -20
    p=$(grep -c '^PASS' "$B/test_opencl_$m.log"); f=$(grep -c '^FAIL' "$B/test_opencl_$m.log")
    echo "   test_opencl $m: $p passed, $f failed, exit status $rc (log: $B/test_opencl_$m.log)"
    [ "$rc" = 0 ] && [ "$f" = 0 ] || failed=1
  done
  [ "$modes" = none ] && echo "   (test_opencl's other modes, pocl2, vendors and uneven, need two PoCL devices or PoCL" \
    "and rusticl, none of them a GPU: not run. cnn_opencl_attach's own start-up check, CLBlast's products and a" \
    "forward and backward pass against the CPU, runs on the GPU in (c), and (c) compares the GPU's training" \
    "accuracy with the CPU path's on the same seed.)"
fi

# ---------------------------------------------------------------- (c) throughput
echo "== (c) the tutorial network, images/s (IMAGES=$IMAGES, EPOCHS=$EPOCHS, batches $BATCHES)"
data=${GPU_CHECK_DATA:-}
if [ -z "$data" ]; then
  for d in "$P/root/usr/share/datasets/fashion-mnist" /usr/share/datasets/fashion-mnist; do
    [ -f "$d/train-images-idx3-ubyte.gz" ] && { data=$d; break; }
  done
fi
rows=()
# ours TAG LABEL BATCH [--device D]: one row from examples/cifar10_cnn (log: $B/TAG_BATCH.log)
ours() {
  local tag=$1 label=$2 bs=$3 log; shift 3
  log=$B/${tag}_$bs.log
  run_for 150 "$B/cifar10_cnn" --data "$data" --limit "$IMAGES" --epochs "$EPOCHS" --batch-size "$bs" \
    --val-split 0 --verbose 2 --seed 1 "$@" >"$log" 2>&1
  local rc=$? rate ms acc note
  rate=$(sed -n 's/^throughput: \([0-9.]*\).*/\1/p' "$log")
  ms=$(sed -n 's/^the last batch on OpenCL: \([0-9.]*\) ms.*/\1/p' "$log")
  acc=$(sed -n 's/^final accuracy: \([0-9.]*\).*/\1/p' "$log")
  note="training accuracy ${acc:-?}"
  [ -n "$ms" ] && note+=$(awk -v ms="$ms" -v b="$bs" 'BEGIN {printf "; last step %.2f ms (%.0f img/s)", ms, b * 1000 / ms}')
  if [ -z "$rate" ]; then
    failed=1
    case $rc in
      124|137) note="timed out (150 s, or the rest of GPU_CHECK_BUDGET)" ;;
      *) note="failed, exit status $rc: $(grep -v '^ *$' "$log" | tail -1)" ;;
    esac
  fi
  rows+=("| $label | $bs | ${rate:-failed} | $note |")
  echo "   $label, batch $bs: ${rate:-failed} img/s ($note)"
}
# theirs BATCH: one row from bench/torch_reference.py
theirs() {
  local bs=$1 log=$B/torch_$1.log rate where note
  run_for 150 "$PY" bench/torch_reference.py --device "$TORCH_DEVICE" --shape 28x28x1 --batch-size "$bs" \
    --images $((IMAGES * EPOCHS)) >"$log" 2>&1
  rate=$(awk '/^img\/s:/ {v=$2} END {print v}' "$log")
  note="one batch kept on the device, 3 warm-up steps"
  [ -n "$rate" ] || { note="failed: $(grep -v '^ *$' "$log" | tail -1)"; failed=1; }
  where=$(sed -n 's/^torch: .*device: \(.*\)  cudnn.*/\1/p' "$log")
  rows+=("| PyTorch $torch_version, $TORCH_DEVICE${where:+ ($where)} | $bs | ${rate:-failed} | $note |")
  echo "   PyTorch, batch $bs: ${rate:-failed} img/s"
}

if [ -z "$data" ] || [ ! -x "$B/cifar10_cnn" ]; then
  echo "   skipped: ${data:+examples/cifar10_cnn did not build}${data:-no Fashion-MNIST (run bench/gpu_fetch.sh without --no-dataset)}"
  failed=1
else
  echo "   data: $data"
  # warm-up, untimed: builds the kernels into the cache, compiles CLBlast's, wakes the GPU
  run_for 150 "$B/cifar10_cnn" --data "$data" --limit 512 --epochs 1 --batch-size 32 --val-split 0 \
    --verbose 0 --seed 1 --device "$DEVICE" >"$B/warmup.log" 2>&1
  grep '^cnn_opencl: device' "$B/warmup.log" | sed 's/^/   warm-up: /'
  dev=$(sed -n 's/^cnn_opencl: device [0-9]*: \(.*\) (.*), kernels.*/\1/p' "$B/warmup.log" | head -1)
  for bs in $BATCHES; do
    ours opencl "cnn.h OpenCL, ${dev:-$DEVICE}" "$bs" --device "$DEVICE"
    ours cpu "cnn.h CPU path, $(nproc) threads" "$bs"
  done
fi
# PyTorch: the machine's, else wheels from gpu_fetch.sh --torch
if ! "$PY" -c 'import torch' 2>/dev/null && compgen -G "$DEBS/wheels/*.whl" >/dev/null; then
  echo "   installing $DEBS/wheels into $P/site (no index)"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$P/site" "$DEBS"/wheels/*.whl &&
    export PYTHONPATH="$P/site${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! torch_version=$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null); then
  rows+=("| PyTorch | | not measured | torch is not importable by $PY |")
  echo "   PyTorch: torch is not importable by $PY"
elif [[ $TORCH_DEVICE == cuda* ]] && ! "$PY" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
  rows+=("| PyTorch $torch_version | | not measured | torch sees no CUDA device |")
  echo "   PyTorch: torch $torch_version sees no CUDA device"
else
  for bs in $BATCHES; do theirs "$bs"; done
  sed -n 's/^torch: /   torch: /p' "$B/torch_${BATCHES%% *}.log"
fi

# ---------------------------------------------------------------- (d) the table
{
  echo
  echo "Tutorial network (examples/cifar10_cnn's, 28x28x1 Fashion-MNIST input), training images/s; bench/gpu_check.sh, $(date -u +%Y-%m-%d):"
  echo
  echo "| what | batch | images/s | notes |"
  echo "|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "cnn.h: examples/cifar10_cnn's throughput line, $EPOCHS epoch(s) over $IMAGES images divided by cnn_fit's wall"
  echo "time (shuffling, uint8 to float, the upload of every batch, the host's loss, reductions and optimizer"
  echo "included; attach and kernel builds not), after one untimed warm-up run; 'last step' is the OpenCL"
  echo "step time of the last batch (report_device). PyTorch: bench/torch_reference.py, $((IMAGES * EPOCHS))"
  echo "images on one synthetic batch that stays on the device, timed after 3 warm-up steps."
} | tee "$B/table.md"
echo "(logs and table.md in $B; $((SECONDS)) s)"
exit "$failed"
