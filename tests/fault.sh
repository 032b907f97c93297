#!/bin/bash
# fault.sh - `make fault`: the long fault runs, under ASan, UBSan and LeakSanitizer.
#   - every allocation of the whole pipeline failing in turn (tests/test_augment_io.c, with the
#     rest of that file), the flow's batches made inline and on 2 worker threads;
#   - 300 SIGKILLs while cnn_save, ModelCheckpoint and BackupAndRestore write (tests/test_api.c).
# make test runs the same with the batches inline and 24 kills. Ends with "N passed, N failed".
cd "$(dirname "$0")/.." || exit 2
B=build/tests
mkdir -p "$B"
CC=${CC:-gcc}
SAN="-std=c99 -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined -Wall -Wextra -I."
passed=0 failed=0
check() { # NAME CMD...: its PASS/FAIL lines and its "#" figures
  local name=$1; shift
  local out rc
  out=$("$@" 2>&1); rc=$?
  printf '%s\n' "$out" | grep -E '^(PASS|FAIL|#   )'
  passed=$((passed + $(printf '%s\n' "$out" | grep -c '^PASS')))
  failed=$((failed + $(printf '%s\n' "$out" | grep -c '^FAIL')))
  if [ $rc -ne 0 ] && ! printf '%s\n' "$out" | grep -q '^FAIL'; then
    echo "FAIL $name: exit status $rc"; failed=$((failed + 1)); printf '%s\n' "$out" | tail -20
  fi
}
$CC $SAN tests/test_augment_io.c -lm -lpthread -o $B/test_augment_io.san || exit 1
$CC $SAN tests/test_api.c -lm -lpthread -o $B/test_api.san || exit 1
echo "== every allocation failing in turn, batches made inline"
check test_augment_io env ASAN_OPTIONS=detect_leaks=1 $B/test_augment_io.san
echo "== every allocation failing in turn, batches made on 2 worker threads"
check "test_augment_io (workers)" env CNN_FAULT_WORKERS=2 ASAN_OPTIONS=detect_leaks=1 $B/test_augment_io.san
echo "== 300 SIGKILLs while saving (with the rest of test_api)"
check "test_api (300 kills)" env CNN_TEST_KILLS=300 ASAN_OPTIONS=detect_leaks=1 $B/test_api.san
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
