#!/bin/sh
# rss_cifar.sh - peak memory of one training epoch on CIFAR-10: cnn.h's tutorial
# example against the same network in PyTorch (bench/torch_reference.py).
#   bench/rss_cifar.sh [DIR] [THREADS]
# DIR: an image folder with one subfolder per class (default /tmp/cifar/train, the
# 50,000 training JPEGs: tar xzf ../shared/data/cifar10-train-jpg.tar.gz -C /tmp/cifar).
# Both sides load every image as uint8 and train one epoch at batch 32 with no
# validation split. LIMIT=N in the environment trains on only N images (all are
# still loaded), for a quick check. Prints "peak_rss_mb: X" for each side, then
# both on the last line.
# Debian's python3-torch takes its BLAS from libblas.so.3, the reference BLAS
# unless OpenBLAS is installed: its dense layers then run at a few GFLOP/s and the
# PyTorch epoch takes about 15 minutes here. With libopenblas0-pthread installed,
#   LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-pthread bench/rss_cifar.sh
# gives PyTorch OpenBLAS (cnn.h uses no BLAS; the variable does not touch it).
set -e
cd "$(dirname "$0")/.."
DIR=${1:-/tmp/cifar/train}
THREADS=${2:-2}
PY=/usr/bin/python3   # Debian's python3-torch is importable only there

[ -d "$DIR" ] || { echo "rss_cifar: no folder $DIR" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "rss_cifar: needs GNU time: apt-get install time" >&2; exit 2; }
[ -x examples/cifar10_cnn ] || make examples >&2

limit_c='' limit_py=''
if [ -n "$LIMIT" ]; then limit_c="--limit $LIMIT"; limit_py="--limit $LIMIT"; fi

log=$(mktemp)
trap 'rm -f "$log" "$log.out"' EXIT
echo "== cnn.h: examples/cifar10_cnn --data $DIR --epochs 1 --val-split 0 --threads $THREADS $limit_c"
# shellcheck disable=SC2086
/usr/bin/time -v -o "$log" examples/cifar10_cnn --data "$DIR" --epochs 1 --val-split 0 \
    --verbose 0 --threads "$THREADS" $limit_c >"$log.out"
grep -vE '^ *$|^Model:|^[ _=]|Layer \(type\)|params:' "$log.out" || true
grep -E 'Elapsed \(wall clock\)|Maximum resident set size' "$log" | sed 's/^[[:space:]]*//'
ours=$(awk -F': ' '/Maximum resident set size/ { printf "%.1f", $2 / 1024 }' "$log")
echo "peak_rss_mb: $ours"

echo "== PyTorch: bench/torch_reference.py --rss-cifar $DIR --threads $THREADS $limit_py"
# shellcheck disable=SC2086
torch_out=$($PY bench/torch_reference.py --rss-cifar "$DIR" --threads "$THREADS" $limit_py)
echo "$torch_out"
theirs=$(echo "$torch_out" | awk -F': ' '/^peak_rss_mb:/ { print $2 }')

echo "peak_rss_mb cnn.h: $ours  pytorch: $theirs"
