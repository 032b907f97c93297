#!/bin/bash
# windows.sh - `make windows`: the gradient, PyTorch-parity and reference tests built for Windows
# by MinGW-w64 (static, OpenMP) and run under wine, on each kernel path, and saving there
# (tests/windows_save.c). Ends with
# "N passed, N failed". Not part of `make test`: wine's first start takes half a minute.
cd "$(dirname "$0")/.." || exit 2
B=build/windows
mkdir -p "$B"
CC=x86_64-w64-mingw32-gcc-posix
WINE=$(command -v wine64 || echo /usr/lib/wine/wine64)
export WINEDEBUG=-all WINEPREFIX="$PWD/$B/prefix"
pass=0 fail=0
for t in test_grad test_parity test_reference; do
  if out=$($CC -std=c99 -O2 -fopenmp -Wall -Wextra -I. tests/$t.c -lm -static -o $B/$t.exe 2>&1) && [ -z "$out" ]; then
    echo "PASS build $t.exe (MinGW-w64, no warnings)"; pass=$((pass + 1))
  else
    echo "FAIL build $t.exe"; printf '%s\n' "$out" | head -20; fail=$((fail + 1)); continue
  fi
  for k in auto avx2 portable; do
    res=$(CNN_KERNELS=$k "$WINE" $B/$t.exe 2>&1 | tr -d '\r')
    if printf '%s\n' "$res" | grep -q 'is not a kernel path'; then # the pin fell back to another path
      echo "FAIL $t.exe under wine, kernels $k: $(printf '%s\n' "$res" | grep -m1 'is not a kernel path')"; fail=$((fail + 1))
    elif printf '%s\n' "$res" | grep -q '^# [0-9]* passed, 0 failed'; then
      echo "PASS $t.exe under wine, kernels $k: $(printf '%s\n' "$res" | grep '^# [0-9]* passed')"; pass=$((pass + 1))
    else
      echo "FAIL $t.exe under wine, kernels $k"; printf '%s\n' "$res" | grep -E '^FAIL' | head -10; fail=$((fail + 1))
    fi
  done
done
# saving over an existing file, and BackupAndRestore's backups (rename() does not replace there)
if out=$($CC -std=c99 -O2 -fopenmp -Wall -Wextra -I. tests/windows_save.c -lm -static -o $B/windows_save.exe 2>&1) &&
   [ -z "$out" ]; then
  res=$(cd $B && "$WINE" ./windows_save.exe 2>&1 | tr -d '\r')
  if printf '%s\n' "$res" | grep -q '^# [0-9]* passed, 0 failed'; then
    echo "PASS windows_save.exe under wine: $(printf '%s\n' "$res" | grep '^# [0-9]* passed')"; pass=$((pass + 1))
  else
    echo "FAIL windows_save.exe under wine"; printf '%s\n' "$res" | grep -E '^FAIL' | head -10; fail=$((fail + 1))
  fi
else
  echo "FAIL build windows_save.exe"; printf '%s\n' "$out" | head -20; fail=$((fail + 1))
fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
