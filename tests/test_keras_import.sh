#!/bin/bash
# test_keras_import.sh - tools/keras_import.py against real Keras: the committed model files
# of tests/fixtures/keras_models (made by tests/fixtures/make_keras_models.py with tf_keras 2.21
# and Keras 3) are converted by Debian's /usr/bin/python3 (python3-numpy, python3-h5py), loaded
# by cnn.h (tests/tools_check.c) and must predict what Keras predicted within 1e-5; the imported
# optimizer slots and step must equal Keras' own; files with a layer or option cnn.h lacks must
# be refused with a message naming it and exit status 1. Prints PASS/FAIL lines.
cd "$(dirname "$0")/.." || exit 2
B=build/tests/keras_import
FX=tests/fixtures/keras_models
mkdir -p "$B"
PY=/usr/bin/python3
if ! $PY -c 'import numpy, h5py' 2>/dev/null; then
  echo "FAIL test_keras_import: /usr/bin/python3 lacks numpy or h5py (scripts/ensure-deps.sh test installs python3-numpy python3-h5py)"
  exit 1
fi
# tools_check (shared with test_onnx.sh): -O0 builds in half the time of -O2
TC=build/tests/tools_check
if ! [ $TC -nt tests/tools_check.c ] || ! [ $TC -nt cnn.h ]; then
  gcc -std=c99 -O0 -Wall -Wextra -I. tests/tools_check.c -lm -o $TC || { echo "FAIL test_keras_import: tests/tools_check.c does not build"; exit 1; }
fi
fail=0
# unpack FILE: the path of a usable copy (the .h5 fixtures are stored gzip'd)
unpack() {
  case $1 in
    *.gz) local out=$B/$(basename "${1%.gz}"); gzip -dc "$1" > "$out" && echo "$out" ;;
    *) echo "$1" ;;
  esac
}
for f in tutorial_tfkeras.h5.gz tutorial_keras3.keras branch_tfkeras.h5.gz branch_keras3.keras; do
  name=${f%%.*}; model=${name%_*}
  src=$(unpack $FX/$f)
  if ! out=$($PY tools/keras_import.py "$src" $B/$name.cnn 2>&1); then
    echo "FAIL keras_import $f: $out"; fail=1; continue
  fi
  if res=$($TC compare $B/$name.cnn $FX/${model}_x.npy $FX/${name}_y.npy 1e-5 2>&1); then
    echo "PASS keras_import $f: cnn.h predicts what Keras predicted, $res"
  else
    echo "FAIL keras_import $f: $res"; fail=1
  fi
  if res=$($PY - $B/$name.cnn $FX/${name}_slots.npy <<'P' 2>&1
import sys
sys.path.insert(0, "tools")
import numpy as np, cnn_format
m, want = cnn_format.load(sys.argv[1]), np.load(sys.argv[2])
assert m.compiled and m.slots is not None, "no optimizer state imported"
got = np.stack(m.slots)
d = float(np.max(np.abs(got - want[:, :-1])))
assert got.shape == want[:, :-1].shape and d == 0, "slots differ by %g" % d
assert m.compiled["step"] == int(want[0, -1]), "step %d, Keras %d" % (m.compiled["step"], want[0, -1])
print("%s, step %d, %d x 2 slot values equal Keras'" % (m.compiled["optimizer"], m.compiled["step"], got.shape[1]))
P
  ); then echo "PASS keras_import $f: optimizer state: $res"
  else echo "FAIL keras_import $f: optimizer state: $res"; fail=1; fi
done
# refused, with a message naming the layer and what cnn.h lacks, and exit status 1
printf 'no model here' > $B/not_a_model.h5
for case in "bad_dilation.keras:'dilated' (Conv2D): dilation_rate" "bad_channels_first.keras:'conv_cf' (Conv2D): data_format channels_first" \
            "bad_layer.h5.gz:'depthwise' is a DepthwiseConv2D" "not_a_model.h5:neither a Keras 3 .keras zip nor an HDF5 file"; do
  f=${case%%:*}; want=${case#*:}
  [ -f $FX/$f ] && src=$(unpack $FX/$f) || src=$B/$f
  out=$($PY tools/keras_import.py "$src" $B/bad.cnn 2>&1); rc=$?
  if [ $rc -eq 1 ] && printf '%s' "$out" | grep -qF "$want"; then echo "PASS keras_import refuses $f: $out"
  else echo "FAIL keras_import $f: exit status $rc, wanted 1 and a message with \"$want\": $out"; fail=1; fi
done
exit $fail
