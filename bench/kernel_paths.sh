#!/bin/bash
# kernel_paths.sh - part of `make bench`: each CPU kernel path this processor runs, side by side
# with PyTorch in the same invocation; the plain -O2 build against the -march=native one; each
# Conv2D and Dense layer's GFLOP/s as a share of that path's FMA peak; and training on a busy
# machine (a spinning process this script starts on one core and stops).
#   PAIRS=3 THREADS=2 IMAGES=4096 TORCH_IMAGES=2048 (as run_bench.sh)
cd "$(dirname "$0")/.." || exit 2
PAIRS=${PAIRS:-3} THREADS=${THREADS:-2} IMAGES=${IMAGES:-4096} TORCH_IMAGES=${TORCH_IMAGES:-2048}
PY=/usr/bin/python3
OPENBLAS=/usr/lib/x86_64-linux-gnu/openblas-pthread
if [ -e "$OPENBLAS/libblas.so.3" ]; then torch_env=(env LD_LIBRARY_PATH="$OPENBLAS" OPENBLAS_NUM_THREADS=1)
else torch_env=(env); fi
last_rate() { awk '/^img\/s:/ {v=$2} END {print v}'; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
CC=${CC:-cc}
mkdir -p build/bench
# the same program built with plain -O2 (no -march): the kernel path is still chosen at run time
$CC -std=c99 -O2 -fopenmp -I. bench/train_bench.c -lm -o build/bench/train_bench_O2 || exit 1
# FMA peaks of the instruction sets (bench/peak picks its vectors by the compiler's target)
case "$(uname -m)" in
  x86_64)
    $CC -std=c99 -O3 -mavx2 -mfma -fopenmp bench/peak.c -o build/bench/peak_avx2 || exit 1
    $CC -std=c99 -O3 -mavx512f -mfma -fopenmp bench/peak.c -o build/bench/peak_avx512 || exit 1 ;;
esac
peak_of() { # best of 3
  local b=build/bench/peak_$1; [ -x "$b" ] || { echo 0; return; }
  for i in 1 2 3; do "$b" --threads "$THREADS" | awk '/GFLOP\/s:/ {v=$2} END {print v}'; done | sort -g | tail -1
}
paths=""
for k in avx512 avx2 neon portable; do
  bench/train_bench --kernels "$k" --images 32 --threads 1 >/dev/null 2>&1 && paths="$paths $k"
done
echo "# CPU kernel paths side by side ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $THREADS threads): paths$paths"
echo
echo "| path | training img/s (-march=native / plain -O2) | PyTorch | ratio | inference img/s (native / -O2) | PyTorch | ratio |"
echo "|---|---|---|---|---|---|---|"
for k in $paths; do
  declare -a tn=() to=() tt=() in_=() io=() it=()
  for p in $(seq "$PAIRS"); do
    tn+=("$(bench/train_bench --kernels "$k" --images "$IMAGES" --threads "$THREADS" | last_rate)")
    to+=("$(build/bench/train_bench_O2 --kernels "$k" --images "$IMAGES" --threads "$THREADS" | last_rate)")
    tt+=("$("${torch_env[@]}" $PY bench/torch_reference.py --images "$TORCH_IMAGES" --threads "$THREADS" | last_rate)")
    in_+=("$(bench/train_bench --kernels "$k" --images $((IMAGES * 4)) --threads "$THREADS" --infer | last_rate)")
    io+=("$(build/bench/train_bench_O2 --kernels "$k" --images $((IMAGES * 4)) --threads "$THREADS" --infer | last_rate)")
    it+=("$("${torch_env[@]}" $PY bench/torch_reference.py --images $((TORCH_IMAGES * 4)) --threads "$THREADS" --infer | last_rate)")
  done
  a=$(printf '%s\n' "${tn[@]}" | median); b=$(printf '%s\n' "${to[@]}" | median); c=$(printf '%s\n' "${tt[@]}" | median)
  d=$(printf '%s\n' "${in_[@]}" | median); e=$(printf '%s\n' "${io[@]}" | median); f=$(printf '%s\n' "${it[@]}" | median)
  awk -v k="$k" -v a="$a" -v b="$b" -v c="$c" -v d="$d" -v e="$e" -v f="$f" 'BEGIN {
    printf "| %s | %.0f / %.0f (%.2f) | %.0f | %.2fx | %.0f / %.0f (%.2f) | %.0f | %.2fx |\n", k, a, b, b / a, c, a / c, d, e, e / d, f, d / f }'
done
echo
echo "(medians of $PAIRS alternating runs; in brackets the plain -O2 build's share of the native one's speed)"
echo
echo "per layer, each path's fastest of $PAIRS profiled runs, as a share of that path's FMA peak (build/bench/peak_*):"
echo
echo "| path | peak GFLOP/s | conv_1 fwd / bwd | conv_2 fwd / bwd | fc1 fwd / bwd |"
echo "|---|---|---|---|---|"
for k in $paths; do
  peak=$(peak_of "$k")
  out=""
  for p in $(seq "$PAIRS"); do out+="$(bench/train_bench --kernels "$k" --images "$IMAGES" --threads "$THREADS" --profile)"$'\n'; done
  printf '%s\n' "$out" | awk -v k="$k" -v peak="$peak" '
    $1 == "conv_1" || $1 == "conv_2" || $1 == "fc1" { if (!($1 in f) || $4 > f[$1]) f[$1] = $4; if (!($1 in b) || $6 > b[$1]) b[$1] = $6 }
    END {
      if (peak > 0) printf "| %s | %.0f | %.0f%% / %.0f%% | %.0f%% / %.0f%% | %.0f%% / %.0f%% |\n", k, peak, 100*f["conv_1"]/peak, 100*b["conv_1"]/peak, 100*f["conv_2"]/peak, 100*b["conv_2"]/peak, 100*f["fc1"]/peak, 100*b["fc1"]/peak;
      else printf "| %s | (no peak of its own) | %.0f / %.0f GF/s | %.0f / %.0f GF/s | %.0f / %.0f GF/s |\n", k, f["conv_1"], b["conv_1"], f["conv_2"], b["conv_2"], f["fc1"], b["fc1"] }'
done
# a busy machine: one process spinning on the last core, training with the default thread count
# (tuned by cnn.h) against training on one thread alone
echo
spin_core=$(( $(nproc) - 1 ))
alone=$(bench/train_bench --images 6400 --threads 1 | last_rate)
taskset -c "$spin_core" sh -c 'while :; do :; done' & spinner=$!
sleep 0.5
busy=$(bench/train_bench --images 6400 | last_rate)
busy_pinned=$(bench/train_bench --images 6400 --threads "$(nproc)" | last_rate)
kill "$spinner"; wait "$spinner" 2>/dev/null
awk -v a="$alone" -v b="$busy" -v p="$busy_pinned" -v c="$spin_core" -v n="$(nproc)" 'BEGIN {
  printf "busy machine (a process spinning on core %d): default threads (tuned) %.0f img/s = %.2f of one thread alone (%.0f); all %d threads pinned %.0f img/s = %.2f\n", c, b, b / a, a, n, p, p / a }'
