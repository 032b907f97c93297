#!/bin/bash
# run.sh - `make fuzz`: builds each fuzz target with clang's libFuzzer, AddressSanitizer and
# UndefinedBehaviorSanitizer, and runs it for FUZZ_SECONDS on its seed corpus
# (tests/fuzz/corpus/<target>, read only; new inputs go to build/fuzz/corpus-<target>).
# A crash, leak, undefined behaviour, input slower than 1 s or allocation over 1 GB stops
# that target and leaves the input in build/fuzz/ (crash-*, leak-*, timeout-*, oom-*):
# fix the bug, then copy the input into the target's corpus folder as regress-<what>, so
# that `make test` replays it from then on. Ends with a table: runs, coverage, findings.
#   FUZZ_SECONDS=60 (per target)  FUZZ_TARGETS="model model_payload idx cifar image image_dir opencl_spec npy npz backup"
cd "$(dirname "$0")/../.." || exit 2
SECONDS_EACH=${FUZZ_SECONDS:-60}
TARGETS=${FUZZ_TARGETS:-"model model_payload idx cifar image image_dir opencl_spec npy npz backup"}
CC=${FUZZ_CC:-clang}
B=build/fuzz
# the targets that read files write each input to a temporary file: in memory (/dev/shm) that
# costs microseconds, on a disk-backed /tmp milliseconds (npz: 330 runs/s instead of 2,500)
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then export TMPDIR=/dev/shm; fi
mkdir -p "$B"
summary=()
failed=0
for t in $TARGETS; do
  libs="-lm -lpthread"
  [ "$t" = opencl_spec ] && libs="$libs -lOpenCL -lclblast"
  if ! $CC -std=c99 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -Wall -Wextra -I. \
       "tests/fuzz/$t.c" $libs -o "$B/$t"; then
    echo "FAIL fuzz $t: does not build (clang and libFuzzer: Debian's clang and libclang-rt-dev)"
    failed=1; continue
  fi
  mkdir -p "$B/corpus-$t"
  log="$B/$t.log"
  echo "== fuzz $t: $SECONDS_EACH s"
  # -malloc_limit_mb: any single allocation over 1 GB is a finding; -rss_limit_mb: the whole process
  UBSAN_OPTIONS=print_stacktrace=1 "$B/$t" -max_total_time="$SECONDS_EACH" -timeout=1 -rss_limit_mb=2560 \
    -malloc_limit_mb=1024 -max_len=65536 -print_final_stats=1 -artifact_prefix="$B/" \
    "$B/corpus-$t" "tests/fuzz/corpus/$t" >"$log" 2>&1
  rc=$?
  execs=$(awk '/stat::number_of_executed_units:/ {print $2}' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | awk '{print $2}')
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | awk '{print $2}')
  if [ $rc -eq 0 ]; then finding="none"
  else
    finding=$(grep -m1 -oE 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer): [a-z-]+|runtime error: .*|ERROR: libFuzzer: [a-z-]+' "$log" | head -1)
    finding="${finding:-exit $rc}, input $(grep -oE "$B/(crash|leak|timeout|oom|slow-unit)-[0-9a-f]+" "$log" | tail -1)"
    failed=1
  fi
  summary+=("| $t | $SECONDS_EACH s | ${execs:-?} | ${cov:-?} | ${ft:-?} | $finding |")
  echo "${summary[-1]}"
done
echo
echo "| target | time | executions | coverage (edges) | features | findings |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${summary[@]}"
exit $failed
