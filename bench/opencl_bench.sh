#!/bin/bash
# opencl_bench.sh - the OpenCL part of `make bench`: the tutorial network
# (examples/cifar10_cnn on Fashion-MNIST, batch 32, one epoch of IMAGES images)
# on the CPU path and on CPU-hosted OpenCL devices of two vendors: 1 and 2 PoCL
# devices, a fast + slow PoCL pair, and PoCL + Mesa's rusticl, equal split
# against auto. The equal and auto runs of a pair alternate, REPS times each,
# and the table gives their medians (this machine's speed drifts from minute to
# minute). On PoCL the CPU path stays faster: the devices share the same cores
# and PoCL's kernels are plain loops.
#   IMAGES=1600 (PoCL runs), RUSTICL_IMAGES=320 (llvmpipe is slow), REPS=3
cd "$(dirname "$0")/.." || exit 2
IMAGES=${IMAGES:-1600} RUSTICL_IMAGES=${RUSTICL_IMAGES:-320} REPS=${REPS:-3}
C=examples/cifar10_cnn
if [ ! -x examples/devices ]; then echo "(OpenCL figures skipped: build with OpenCL installed)"; exit 0; fi
V=$(mktemp -d "${TMPDIR:-/tmp}/cnn_cl_vendors.XXXXXX") && trap 'rm -rf "$V"' EXIT
mkdir -p "$V/pocl" "$V/both"
ln -s /etc/OpenCL/vendors/pocl.icd "$V/pocl/" && ln -s /etc/OpenCL/vendors/pocl.icd "$V/both/"
[ -f /etc/OpenCL/vendors/rusticl.icd ] && ln -s /etc/OpenCL/vendors/rusticl.icd "$V/both/"

# one IMAGES VENDORS POCL_DEVICES DEVICE SPLIT: one run; prints "images/s split"
# (the split of the last batch, from the example's report: "12 samples ... 20 samples" -> 12:20)
one() {
  local n=$1 vendors=$2 pocl=$3 device=$4 split=$5 out
  out=$(env OCL_ICD_VENDORS="$V/$vendors" POCL_DEVICES="$pocl" RUSTICL_ENABLE=llvmpipe \
        $C --limit "$n" --epochs 1 --val-split 0 --verbose 0 --seed 1 --device "$device" \
        ${split:+--split "$split"} 2>&1)
  echo "$(sed -n 's/^throughput: \([0-9.]*\).*/\1/p' <<<"$out") \
$(grep '^the last batch on OpenCL' <<<"$out" | grep -o '[0-9]* samples' | tr -dc '0-9 ' | xargs | tr ' ' ':')"
}
median() { sort -n | awk '{v[NR] = $1} END {if (NR) print v[int((NR + 1) / 2)]; else print "failed"}'; }

# pair LABEL IMAGES VENDORS POCL_DEVICES DEVICE: equal and auto, alternating
pair() {
  local label=$1 n=$2 vendors=$3 pocl=$4 device=$5 eq="" au="" r res split_eq split_au
  for ((r = 0; r < REPS; r++)); do
    res=$(one "$n" "$vendors" "$pocl" "$device" equal); eq+="${res%% *}"$'\n'; split_eq=${res#* }
    res=$(one "$n" "$vendors" "$pocl" "$device" auto); au+="${res%% *}"$'\n'; split_au=${res#* }
  done
  echo "| $label | equal | $(median <<<"$eq") | $split_eq |"
  echo "| $label | auto | $(median <<<"$au") | $split_au |"
}

echo "OpenCL (bench/opencl_bench.sh; images/s of one epoch, batch 32, median of $REPS alternating runs; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')):"
echo
echo "| devices | split | images/s | split of the last batch (samples per device) |"
echo "|---|---|---|---|"
echo "| CPU path ($(nproc) threads) | | $($C --limit "$IMAGES" --epochs 1 --val-split 0 --verbose 0 --seed 1 | sed -n 's/^throughput: \([0-9.]*\).*/\1/p') | |"
res=$(one "$IMAGES" pocl "pthread" opencl:0 "")
echo "| 1 PoCL device (pthread) | | ${res%% *} | ${res#* } |"
pair "2 PoCL devices (pthread pthread)" "$IMAGES" pocl "pthread pthread" opencl:0,1
pair "PoCL fast + slow (basic, pthread)" "$IMAGES" pocl "pthread basic" opencl:0,1
if [ -f /etc/OpenCL/vendors/rusticl.icd ]; then
  pair "PoCL + rusticl llvmpipe" "$RUSTICL_IMAGES" both "pthread" opencl:all
fi
