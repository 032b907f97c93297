#!/bin/bash
# opencl_bench.sh - the OpenCL part of `make bench`: the tutorial network
# (examples/cifar10_cnn on Fashion-MNIST, batch 32, one epoch of IMAGES images)
# on the CPU path and on CPU-hosted OpenCL
# devices of two vendors: 1 and 2 PoCL devices, a fast + slow PoCL pair, and
# PoCL + Mesa's rusticl, equal split against auto. Prints a markdown table and
# the split auto chose. On PoCL the CPU path stays faster: the devices share
# the same cores and PoCL's kernels are plain loops.
#   IMAGES=1600 (PoCL runs), RUSTICL_IMAGES=320 (llvmpipe is slow)
cd "$(dirname "$0")/.." || exit 2
IMAGES=${IMAGES:-1600} RUSTICL_IMAGES=${RUSTICL_IMAGES:-320}
C=examples/cifar10_cnn
if [ ! -x examples/devices ]; then echo "(OpenCL figures skipped: build with OpenCL installed)"; exit 0; fi
V=$(mktemp -d "${TMPDIR:-/tmp}/cnn_cl_vendors.XXXXXX") && trap 'rm -rf "$V"' EXIT
mkdir -p "$V/pocl" "$V/both"
ln -s /etc/OpenCL/vendors/pocl.icd "$V/pocl/" && ln -s /etc/OpenCL/vendors/pocl.icd "$V/both/"
[ -f /etc/OpenCL/vendors/rusticl.icd ] && ln -s /etc/OpenCL/vendors/rusticl.icd "$V/both/"

# run LABEL IMAGES VENDORS POCL_DEVICES DEVICE SPLIT: one row
run() {
  local label=$1 n=$2 vendors=$3 pocl=$4 device=$5 split=$6 out rate chose
  out=$(env OCL_ICD_VENDORS="$V/$vendors" POCL_DEVICES="$pocl" RUSTICL_ENABLE=llvmpipe \
        $C --limit "$n" --epochs 1 --val-split 0 --verbose 2 --seed 1 --device "$device" \
        ${split:+--split "$split"} 2>&1)
  rate=$(sed -n 's/^throughput: \([0-9.]*\).*/\1/p' <<<"$out")
  # fit's last line on the devices: "... 19% (6 of 32), ... 81% (26 of 32)" -> 6:26
  chose=$(grep 'OpenCL, split' <<<"$out" | tail -1 | grep -o '([0-9]* of' | tr -dc '0-9 ' | xargs | tr ' ' ':')
  echo "| $label | ${split:-} | ${rate:-failed} | ${chose:-} |"
}

echo "OpenCL (bench/opencl_bench.sh; images/s of one epoch, batch 32; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')):"
echo
echo "| devices | split | images/s | split auto chose (samples per device) |"
echo "|---|---|---|---|"
echo "| CPU path ($(nproc) threads) | | $($C --limit "$IMAGES" --epochs 1 --val-split 0 --verbose 0 --seed 1 | sed -n 's/^throughput: \([0-9.]*\).*/\1/p') | |"
run "1 PoCL device (pthread)" "$IMAGES" pocl "pthread" opencl:0 ""
run "2 PoCL devices (pthread pthread)" "$IMAGES" pocl "pthread pthread" opencl:0,1 equal
run "2 PoCL devices (pthread pthread)" "$IMAGES" pocl "pthread pthread" opencl:0,1 auto
run "PoCL fast + slow (basic, pthread)" "$IMAGES" pocl "pthread basic" opencl:0,1 equal
run "PoCL fast + slow (basic, pthread)" "$IMAGES" pocl "pthread basic" opencl:0,1 auto
if [ -f /etc/OpenCL/vendors/rusticl.icd ]; then
  run "PoCL + rusticl llvmpipe" "$RUSTICL_IMAGES" both "pthread" opencl:all equal
  run "PoCL + rusticl llvmpipe" "$RUSTICL_IMAGES" both "pthread" opencl:all auto
fi
