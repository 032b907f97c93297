#!/bin/bash
# kernel_paths.sh - part of `make bench`: each CPU kernel path this processor runs, side by side
# with PyTorch (Debian's, and a current one from PyPI) in the same invocation; the Makefile's
# plain -O2 build against a -O3 -march=native one; the augmentation against Keras' algorithm on
# each path; each Conv2D and Dense layer's GFLOP/s as a share of that path's FMA peak; and
# training on a busy machine (a spinning process this script starts on one core and stops).
#   PAIRS=3 THREADS=2 IMAGES=4096 TORCH_IMAGES=2048 (as run_bench.sh); TORCH_PIP=0 leaves out
#   the PyPI PyTorch (bench/torch_venv.sh installs it, a few GB, on first use)
cd "$(dirname "$0")/.." || exit 2
PAIRS=${PAIRS:-3} THREADS=${THREADS:-2} IMAGES=${IMAGES:-4096} TORCH_IMAGES=${TORCH_IMAGES:-2048}
PY=/usr/bin/python3
PIP_PY=$(bench/torch_venv.sh)
OPENBLAS=/usr/lib/x86_64-linux-gnu/openblas-pthread
if [ -e "$OPENBLAS/libblas.so.3" ]; then torch_env=(env LD_LIBRARY_PATH="$OPENBLAS" OPENBLAS_NUM_THREADS=1)
else torch_env=(env); fi
last_rate() { awk '/^img\/s:/ {v=$2} END {print v}'; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
CC=${CC:-cc}
mkdir -p build/bench
# the same programs built with the Makefile's flags (plain -O2, no -march) and with -march=native:
# the kernel path is chosen at run time either way
for prog in train_bench augment_bench; do
  $CC -std=c99 -O2 -fopenmp -I. bench/$prog.c -lm -lpthread -o build/bench/${prog}_O2 || exit 1
  $CC -std=c99 -O3 -march=native -fopenmp -I. bench/$prog.c -lm -lpthread -o build/bench/${prog}_native || exit 1
done
# the peaks of the instruction sets (bench/peak picks its vectors by the compiler's target): FMA
# for AVX2 and AVX-512; for the portable path, what the Makefile's plain flags give it (128-bit
# vectors: SSE2's multiply and add on x86-64, NEON's multiply-add on AArch64, as for the NEON path)
$CC -std=c99 -O3 -fopenmp bench/peak.c -o build/bench/peak_portable || exit 1
case "$(uname -m)" in
  x86_64)
    $CC -std=c99 -O3 -mavx2 -mfma -fopenmp bench/peak.c -o build/bench/peak_avx2 || exit 1
    $CC -std=c99 -O3 -mavx512f -mfma -fopenmp bench/peak.c -o build/bench/peak_avx512 || exit 1 ;;
  aarch64) cp build/bench/peak_portable build/bench/peak_neon ;;
esac
peak_of() { # best of 3
  local b=build/bench/peak_$1; [ -x "$b" ] || { echo 0; return; }
  for i in 1 2 3; do "$b" --threads "$THREADS" | awk '/GFLOP\/s:/ {v=$2} END {print v}'; done | sort -g | tail -1
}
paths=""
for k in avx512 avx2 neon portable; do
  build/bench/train_bench_O2 --kernels "$k" --images 32 --threads 1 >/dev/null 2>&1 && paths="$paths $k"
done
torch_ver=$($PY -c 'import torch; print(torch.__version__)')
pip_ver=${PIP_PY:+$($PIP_PY -c 'import torch; print(torch.__version__)')}
echo "# CPU kernel paths side by side ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $THREADS threads): paths$paths"
echo "# PyTorch $torch_ver (Debian, OpenBLAS)${pip_ver:+ and PyTorch $pip_ver (PyPI, channels-last, its fastest layout here)}"
echo
echo "| path | training img/s: -O2 (-march=native, -O2's share) | Debian PyTorch | ratio | PyPI PyTorch | ratio | inference img/s: -O2 (native, share) | Debian | ratio | PyPI | ratio |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
pip_rate() { [ -n "$PIP_PY" ] && $PIP_PY bench/torch_reference.py --channels-last "$@" | last_rate || echo 0; }
for k in $paths; do
  declare -a tn=() to=() tt=() tp=() in_=() io=() it=() ip=()
  for p in $(seq "$PAIRS"); do
    to+=("$(build/bench/train_bench_O2 --kernels "$k" --images "$IMAGES" --threads "$THREADS" | last_rate)")
    tn+=("$(build/bench/train_bench_native --kernels "$k" --images "$IMAGES" --threads "$THREADS" | last_rate)")
    tt+=("$("${torch_env[@]}" $PY bench/torch_reference.py --images "$TORCH_IMAGES" --threads "$THREADS" | last_rate)")
    tp+=("$(pip_rate --images "$TORCH_IMAGES" --threads "$THREADS")")
    io+=("$(build/bench/train_bench_O2 --kernels "$k" --images $((IMAGES * 4)) --threads "$THREADS" --infer | last_rate)")
    in_+=("$(build/bench/train_bench_native --kernels "$k" --images $((IMAGES * 4)) --threads "$THREADS" --infer | last_rate)")
    it+=("$("${torch_env[@]}" $PY bench/torch_reference.py --images $((TORCH_IMAGES * 4)) --threads "$THREADS" --infer | last_rate)")
    ip+=("$(pip_rate --images $((TORCH_IMAGES * 4)) --threads "$THREADS" --infer)")
  done
  a=$(printf '%s\n' "${to[@]}" | median); b=$(printf '%s\n' "${tn[@]}" | median); c=$(printf '%s\n' "${tt[@]}" | median)
  c2=$(printf '%s\n' "${tp[@]}" | median)
  d=$(printf '%s\n' "${io[@]}" | median); e=$(printf '%s\n' "${in_[@]}" | median); f=$(printf '%s\n' "${it[@]}" | median)
  f2=$(printf '%s\n' "${ip[@]}" | median)
  awk -v k="$k" -v a="$a" -v b="$b" -v c="$c" -v c2="$c2" -v d="$d" -v e="$e" -v f="$f" -v f2="$f2" 'BEGIN {
    printf "| %s | %.0f (%.0f, %.2f) | %.0f | %.2fx | %s | %s | %.0f (%.0f, %.2f) | %.0f | %.2fx | %s | %s |\n", k, a, b, a / b, c, a / c,
      (c2 > 0 ? sprintf("%.0f", c2) : "-"), (c2 > 0 ? sprintf("%.2fx", a / c2) : "-"), d, e, d / e, f, d / f,
      (f2 > 0 ? sprintf("%.0f", f2) : "-"), (f2 > 0 ? sprintf("%.2fx", d / f2) : "-") }'
done
echo
echo "(medians of $PAIRS alternating runs; ratios are the -O2 build's)"
echo
# the augmentation transform on each path (the resample follows the kernel path) against
# Keras' algorithm (bench/keras_augment.py: scipy's affine_transform, as Keras calls it), run
# once per pair between the paths' runs: the median of $PAIRS, as for the paths (one run of it
# alone once caught a disturbed moment at half its speed)
declare -A ao=() an=()
ka=()
for p in $(seq "$PAIRS"); do
  ka+=("$($PY bench/keras_augment.py --images 3000 | last_rate)")
  for k in $paths; do
    ao[$k]+="$(CNN_KERNELS=$k build/bench/augment_bench_O2 --images 20000 --threads "$THREADS" | last_rate) "
    an[$k]+="$(CNN_KERNELS=$k build/bench/augment_bench_native --images 20000 --threads "$THREADS" | last_rate) "
  done
done
keras_a=$(printf '%s\n' "${ka[@]}" | median)
echo "augmentation, 32x32x3 images, $THREADS threads, against Keras' algorithm ($keras_a img/s, the median of ${ka[*]}):"
echo
echo "| path | -O2 img/s | ratio | -march=native img/s | ratio |"
echo "|---|---|---|---|---|"
for k in $paths; do
  a=$(printf '%s\n' ${ao[$k]} | median); b=$(printf '%s\n' ${an[$k]} | median)
  awk -v k="$k" -v a="$a" -v b="$b" -v r="$keras_a" 'BEGIN { printf "| %s | %.0f | %.1fx | %.0f | %.1fx |\n", k, a, a / r, b, b / r }'
done
echo
echo "per layer, each path's fastest of $PAIRS profiled runs, as a share of that path's peak (build/bench/peak_*; the portable path's: 128-bit multiply-adds, at the Makefile's plain flags):"
echo
echo "| path | peak GFLOP/s | conv_1 fwd / bwd | conv_2 fwd / bwd | fc1 fwd / bwd |"
echo "|---|---|---|---|---|"
for k in $paths; do
  peak=$(peak_of "$k")
  out=""
  for p in $(seq "$PAIRS"); do out+="$(build/bench/train_bench_O2 --kernels "$k" --images "$IMAGES" --threads "$THREADS" --profile)"$'\n'; done
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
alone=$(build/bench/train_bench_O2 --images 6400 --threads 1 | last_rate)
taskset -c "$spin_core" sh -c 'while :; do :; done' & spinner=$!
sleep 0.5
busy=$(build/bench/train_bench_O2 --images 6400 | last_rate)
busy_pinned=$(build/bench/train_bench_O2 --images 6400 --threads "$(nproc)" | last_rate)
kill "$spinner"; wait "$spinner" 2>/dev/null
awk -v a="$alone" -v b="$busy" -v p="$busy_pinned" -v c="$spin_core" -v n="$(nproc)" 'BEGIN {
  printf "busy machine (a process spinning on core %d): default threads (tuned) %.0f img/s = %.2f of one thread alone (%.0f); all %d threads pinned %.0f img/s = %.2f\n", c, b, b / a, a, n, p, p / a }'
