#!/bin/bash
# test_onnx.sh - tools/onnx_export.py against ONNX Runtime: the tutorial network and a
# graph with Add and Concatenate (random weights, made and saved by tests/tools_check.c
# with cnn_save) exported with NHWC input and with --nchw; ONNX Runtime's outputs must
# match cnn_predict's within 1e-5. ONNX Runtime comes from the Python package index into
# the virtual environment ~/.cache/cnn-h/onnx-venv (CNN_ONNX_VENV overrides it), made on
# the first run; SKIP only when pip cannot reach the index. Prints PASS/FAIL/SKIP lines.
cd "$(dirname "$0")/.." || exit 2
B=build/tests/onnx
mkdir -p "$B"
VENV=${CNN_ONNX_VENV:-$HOME/.cache/cnn-h/onnx-venv}
fail=0
if ! "$VENV/bin/python" -c 'import onnxruntime, onnx, numpy' 2>/dev/null; then
  echo "test_onnx: installing onnxruntime onnx numpy into $VENV"
  log=$B/pip.log
  if ! { [ -x "$VENV/bin/python" ] || /usr/bin/python3 -m venv "$VENV"; } >"$log" 2>&1 ||
     ! "$VENV/bin/python" -m pip install -q --retries 2 --timeout 30 onnxruntime onnx numpy >>"$log" 2>&1; then
    if grep -qiE 'NewConnectionError|Failed to establish a new connection|Temporary failure in name resolution|Network is unreachable|ConnectTimeout|ProxyError|Max retries exceeded|No route to host' "$log"; then
      echo "SKIP test_onnx: pip cannot reach the Python package index to install onnxruntime (see $log)"
      exit 0
    fi
    echo "FAIL test_onnx: installing onnxruntime into $VENV failed:"; tail -5 "$log"; exit 1
  fi
fi
# the exporter runs on Debian's python3-onnx where it is installed (the README's command),
# else on the virtual environment's onnx
EXPORT_PY=/usr/bin/python3
/usr/bin/python3 -c 'import onnx, numpy' 2>/dev/null || EXPORT_PY=$VENV/bin/python
# tools_check (shared with test_keras_import.sh): -O0 builds in half the time of -O2,
# and its few predictions take a fraction of a second
TC=build/tests/tools_check
if ! [ $TC -nt tests/tools_check.c ] || ! [ $TC -nt cnn.h ]; then
  gcc -std=c99 -O0 -Wall -Wextra -I. tests/tools_check.c -lm -o $TC || { echo "FAIL test_onnx: tests/tools_check.c does not build"; exit 1; }
fi
if ! $TC make-models $B; then echo "FAIL test_onnx: tools_check make-models"; exit 1; fi
for model in tutorial branch; do
  for layout in nhwc nchw; do
    flag=$([ $layout = nchw ] && echo --nchw)
    if out=$($EXPORT_PY tools/onnx_export.py $flag $B/$model.cnn $B/$model.$layout.onnx 2>&1) &&
       res=$("$VENV/bin/python" tests/onnx_check.py $B/$model.$layout.onnx $B/${model}_x.npy $B/${model}_y.npy 1e-5 $flag 2>&1); then
      echo "PASS onnx_export $model ($layout input): ONNX Runtime = cnn_predict, $res"
    else
      echo "FAIL onnx_export $model ($layout input):"; printf '%s\n%s\n' "$out" "$res" | tail -8; fail=1
    fi
  done
done
# a file that is not a model: a message and exit status 1
printf 'not a model' > $B/bad.cnn
out=$($EXPORT_PY tools/onnx_export.py $B/bad.cnn $B/bad.onnx 2>&1); rc=$?
if [ $rc -eq 1 ] && printf '%s' "$out" | grep -q 'not a cnn.h model file'; then echo "PASS onnx_export refuses a file that is not a model"
else echo "FAIL onnx_export on a bad file: exit status $rc: $out"; fail=1; fi
exit $fail
