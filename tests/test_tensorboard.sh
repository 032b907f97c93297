#!/bin/bash
# test_tensorboard.sh - the TensorBoard callback against TensorBoard's own reader.
# tests/tensorboard_fit.c trains a tiny model for 3 epochs with validation and
# cnn_tensorboard (histograms every epoch; every batch; every 3 batches) and
# prints its History; tests/tensorboard_check.py reads the event files with
# tensorboard's record reader (CRCs checked) and EventAccumulator and compares
# tags, steps, values and histograms. Then a copy with one CRC flipped must
# make the check fail (the check can fail).
# TensorBoard comes from the Python package index into a virtual environment,
# ~/.cache/cnn-h/tb-venv (CNN_TB_VENV overrides), made when missing; only when
# pip cannot reach the index does this print SKIP instead.
cd "$(dirname "$0")/.." || exit 2
CC=${CC:-gcc}
B=build/tests
mkdir -p "$B"
V=${CNN_TB_VENV:-$HOME/.cache/cnn-h/tb-venv}

if ! "$V/bin/python" -c 'import tensorboard' 2>/dev/null; then
  rm -rf "$V"
  mkdir -p "$(dirname "$V")"
  if ! out=$(python3 -m venv "$V" 2>&1); then
    echo "FAIL tensorboard: python3 -m venv $V failed (Debian: apt-get install python3-venv)"
    printf '%s\n' "$out" | tail -5
    exit 1
  fi
  if ! out=$("$V/bin/pip" install -q tensorboard 2>&1); then
    rm -rf "$V"
    if printf '%s\n' "$out" | grep -qiE 'NewConnectionError|connection (broken|refused|error|aborted)|Could not fetch URL|Max retries|Temporary failure in name resolution|Name or service not known|timed out|ProxyError'; then
      echo "SKIP tensorboard: pip cannot reach the package index to install tensorboard into $V"
      printf '%s\n' "$out" | tail -3
      exit 0
    fi
    echo "FAIL tensorboard: pip install tensorboard into $V failed"
    printf '%s\n' "$out" | tail -10
    exit 1
  fi
fi

if out=$($CC -std=c99 -O2 -fopenmp -Wall -Wextra -I. tests/tensorboard_fit.c -lm -lpthread -o $B/tensorboard_fit 2>&1) &&
   [ -z "$out" ]; then echo "PASS tensorboard: build tests/tensorboard_fit.c"
else echo "FAIL tensorboard: build tests/tensorboard_fit.c"; printf '%s\n' "$out" | head -20; exit 1; fi

T=$(mktemp -d /tmp/cnn-tb.XXXXXX) || exit 2
trap 'rm -rf "$T"' EXIT
$B/tensorboard_fit "$T" > "$T/fit.txt" 2>&1
rc=$?
grep -E '^(PASS|FAIL|SKIP)|^  ' "$T/fit.txt"
[ $rc -eq 0 ] || echo "FAIL tensorboard: tensorboard_fit exit status $rc"

"$V/bin/python" tests/tensorboard_check.py "$T" "$T/fit.txt" || rc=1

# the tutorial example with --tensorboard (built by make examples; Fashion-MNIST, 2 short epochs):
# its CSV log against the event files, and the tutorial network's 18 weight histograms
if [ -x examples/cifar10_cnn ] && [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  if examples/cifar10_cnn --limit 300 --epochs 2 --verbose 0 --threads 1 --tensorboard "$T/example" \
       --history "$T/example.csv" > "$T/example.out" 2>&1; then
    "$V/bin/python" tests/tensorboard_check.py --example "$T/example" "$T/example.csv" || rc=1
  else
    echo "FAIL tensorboard: examples/cifar10_cnn --tensorboard failed"; tail -5 "$T/example.out"; rc=1
  fi
fi

# the check can fail: run a's train file with the data CRC of its last record
# (a histogram) flipped must fail TensorBoard's record reader and the check
mkdir -p "$T/flipped"
cp -r "$T/a" "$T/weights.txt" "$T/flipped/"
f=$(ls "$T"/flipped/a/train/events.out.tfevents.*)
size=$(stat -c %s "$f")
last=$(od -An -tu1 -j $((size - 1)) -N1 "$f" | tr -d ' ')
printf "$(printf '\\%03o' $((last ^ 1)))" | dd of="$f" bs=1 seek=$((size - 1)) conv=notrunc status=none
out=$("$V/bin/python" tests/tensorboard_check.py "$T/flipped" "$T/fit.txt" a 2>&1)
if [ $? -ne 0 ] && printf '%s\n' "$out" | grep -q 'FAIL.*failed event crc32 check' &&
   printf '%s\n' "$out" | grep -q 'FAIL.*softmax/bias_0/histogram at steps 0, 1, 2'; then
  echo "PASS tensorboard: a flipped CRC fails TensorBoard's reader and the check (the last histogram is lost)"
else
  echo "FAIL tensorboard: a flipped CRC went unnoticed"
  printf '%s\n' "$out" | grep FAIL | head
  rc=1
fi
exit $rc
