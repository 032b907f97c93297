#!/bin/bash
# run_bench.sh - `make bench`: cnn.h against PyTorch on the tutorial network, side by side.
#   PAIRS=3 (alternating runs of ours and the reference), THREADS=2, IMAGES=4096 (ours),
#   TORCH_IMAGES=2048, CIFAR_DIR=/tmp/cifar/train (an image folder of the 50,000 CIFAR-10
#   training images, for the memory comparison; skipped when missing).
cd "$(dirname "$0")/.." || exit 2
PAIRS=${PAIRS:-3} THREADS=${THREADS:-2} IMAGES=${IMAGES:-4096} TORCH_IMAGES=${TORCH_IMAGES:-2048}
CIFAR_DIR=${CIFAR_DIR:-/tmp/cifar/train}
PY=/usr/bin/python3 # Debian's python3-torch is importable only by the system interpreter
# Debian's torch multiplies through libblas.so.3; point it at OpenBLAS (one thread: torch
# runs its own threads) so the reference is PyTorch at its best on this system.
OPENBLAS=/usr/lib/x86_64-linux-gnu/openblas-pthread
if [ -e "$OPENBLAS/libblas.so.3" ]; then
  torch_env=(env LD_LIBRARY_PATH="$OPENBLAS" OPENBLAS_NUM_THREADS=1); blas="OpenBLAS"
else
  torch_env=(env); blas="the system's libblas.so.3"
fi

last_rate() { awk '/^img\/s:/ {v=$2} END {print v}'; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
best() { sort -g | tail -1; }

echo "# cnn.h vs PyTorch $($PY -c 'import torch; print(torch.__version__)') with $blas, tutorial network, $THREADS threads, $(nproc) cores"
echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
# The FMA peak is what the machine can do: the fastest of several runs spread over the
# benchmark (one disturbed run would understate it and overstate the % of peak below).
measure_peak() { peaks+=("$(bench/peak --threads "$THREADS" | awk '/GFLOP\/s:/ {v=$2} END {print v}')"); }
declare -a peaks
measure_peak

declare -a ours_t torch_t ours_i torch_i
for p in $(seq "$PAIRS"); do
  ours_t+=("$(bench/train_bench --images "$IMAGES" --threads "$THREADS" | last_rate)")
  torch_t+=("$("${torch_env[@]}" $PY bench/torch_reference.py --images "$TORCH_IMAGES" --threads "$THREADS" | last_rate)")
  ours_i+=("$(bench/train_bench --images $((IMAGES * 4)) --threads "$THREADS" --infer | last_rate)")
  torch_i+=("$("${torch_env[@]}" $PY bench/torch_reference.py --images $((TORCH_IMAGES * 4)) --threads "$THREADS" --infer | last_rate)")
  echo "pair $p: train ours ${ours_t[-1]} torch ${torch_t[-1]} | infer ours ${ours_i[-1]} torch ${torch_i[-1]} img/s"
  measure_peak
done
mo=$(printf '%s\n' "${ours_t[@]}" | median); mt=$(printf '%s\n' "${torch_t[@]}" | median)
io=$(printf '%s\n' "${ours_i[@]}" | median); it=$(printf '%s\n' "${torch_i[@]}" | median)
bo=$(printf '%s\n' "${ours_t[@]}" | best); bt=$(printf '%s\n' "${torch_t[@]}" | best)
bio=$(printf '%s\n' "${ours_i[@]}" | best); bit=$(printf '%s\n' "${torch_i[@]}" | best)
echo
echo "The fastest runs, least disturbed by the rest of the machine, are shown beside the medians."
echo
echo "| images/s, median of $PAIRS (fastest) | cnn.h | PyTorch | ratio of medians (of fastest) |"
echo "|---|---|---|---|"
awk -v o="$mo" -v t="$mt" -v bo="$bo" -v bt="$bt" 'BEGIN {printf "| training, batch 32 | %.0f (%.0f) | %.0f (%.0f) | %.2fx (%.2fx) |\n", o, bo, t, bt, o / t, bo / bt}'
awk -v o="$io" -v t="$it" -v bo="$bio" -v bt="$bit" 'BEGIN {printf "| inference, batch 256 | %.0f (%.0f) | %.0f (%.0f) | %.2fx (%.2fx) |\n", o, bo, t, bt, o / t, bo / bt}'
awk -v o="$mo" -v bo="$bo" 'BEGIN {printf "| training GFLOP/s (32 MFLOP/image) | %.0f (%.0f) | | |\n", o * 0.032, bo * 0.032}'

# the per-layer profile: each layer's forward and backward time is its fastest of PAIRS
# profiled runs (each the mean over the run's batches), as the FMA peak is the fastest of
# its runs: the machine's disturbances only ever add time. A layer's time includes the
# element-wise work fused into it (bias, ReLU, BatchNorm's statistics and input gradient
# for a Conv2D before one).
profiles=""; best=0
for p in $(seq "$PAIRS"); do
  out=$(bench/train_bench --images "$IMAGES" --threads "$THREADS" --profile)
  rate=$(printf '%s\n' "$out" | last_rate)
  if awk -v a="$rate" -v b="$best" 'BEGIN {exit !(a > b)}'; then best=$rate; fi
  profiles+="$out"$'\n'
  measure_peak
done
peak=$(printf '%s\n' "${peaks[@]}" | best)
echo
echo "measured FMA peak: $peak GFLOP/s ($THREADS threads, fastest of ${#peaks[@]} runs of bench/peak spread over the benchmark; slowest $(printf '%s\n' "${peaks[@]}" | sort -g | head -1))"
echo
echo "per layer, ms per batch of 32: each time the fastest of $PAIRS profiled runs (the fastest run: $best img/s):"
echo
echo "| layer | forward ms | forward GFLOP/s | backward ms | backward GFLOP/s | % of peak (fwd / bwd) |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "$profiles" |
  awk -v peak="$peak" '$1 == "layer" {on = 1; next} /^threads:/ {on = 0} on && $2 != "InputLayer" {
    if (!($1 in type)) { order[++n] = $1; type[$1] = $2; fms[$1] = $3; fgf[$1] = $4; bms[$1] = $5; bgf[$1] = $6 }
    if ($3 < fms[$1]) { fms[$1] = $3; fgf[$1] = $4 }   # a layer does the same work every run:
    if ($5 < bms[$1]) { bms[$1] = $5; bgf[$1] = $6 } } # its fastest time has its highest GFLOP/s
  END { for (i = 1; i <= n; i++) { l = order[i]; t = type[l];
    pct = (t == "Conv2D" || t == "Dense") ? sprintf("%.0f%% / %.0f%%", 100 * fgf[l] / peak, 100 * bgf[l] / peak) : "";
    printf "| %s (%s) | %.3f | %s | %.3f | %s | %s |\n", l, t, fms[l], (fgf[l] > 0 ? fgf[l] : ""), bms[l], (bgf[l] > 0 ? bgf[l] : ""), pct } }'

if [ -x bench/augment_bench ]; then
  ours_a=$(bench/augment_bench --images 20000 --threads "$THREADS" | last_rate)
  keras_a=$($PY bench/keras_augment.py --images 3000 | last_rate)
  echo
  awk -v o="$ours_a" -v k="$keras_a" 'BEGIN {printf "augmentation (the tutorial transform, 32x32x3): cnn_augment.h %.0f img/s, Keras algorithm %.0f img/s: %.0fx\n", o, k, o / k}'
fi

if [ -d "$CIFAR_DIR" ] && [ -x examples/cifar10_cnn ]; then
  echo
  echo "peak RSS, one epoch on all images of $CIFAR_DIR (bench/rss_cifar.sh):"
  bash bench/rss_cifar.sh "$CIFAR_DIR"
else
  echo
  echo "(memory comparison skipped: unpack the CIFAR-10 images to $CIFAR_DIR and run make examples)"
fi

# each CPU kernel path, plain -O2 against -march=native, and a busy machine
echo
bench/kernel_paths.sh

# the OpenCL devices (skipped when built without OpenCL)
echo
bench/opencl_bench.sh
