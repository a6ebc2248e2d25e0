#!/usr/bin/env bash
# scripts/fuzz.sh [NAME...] — build chatd's libFuzzer harnesses (tests/fuzz/fuzz_*.c,
# clang-14 with ASan + UBSan, against the real sources) into build-fuzz/ and run each
# for FUZZ_SECONDS (default 300; FUZZ_RUNS=N stops a harness after N executions
# instead, when sooner; FUZZ_FORK=N fuzzes in N processes, libFuzzer's -fork, with
# FUZZ_RUNS counting them all). `make fuzz` runs it; `make test` with FUZZ_SECONDS=20.
#
# Each harness first replays its committed crash inputs (tests/fuzz/regress/NAME/,
# which must all pass), then fuzzes from its committed seeds (tests/fuzz/corpus/NAME/)
# and what earlier runs found (var/fuzz/corpus/NAME/, where new inputs go), with its
# dictionary (tests/fuzz/NAME.dict) when there is one, niced (FUZZ_NICE, default 10).
# Prints per harness the executions, the coverage (cov: edges, ft: features, from
# libFuzzer's last status line) and the crashes; a crashing input is kept in
# var/fuzz/artifacts/NAME/ and the log in var/fuzz/NAME.log. Exits 1 when any harness
# crashed (or broke an invariant, which aborts: a crash to libFuzzer).
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS=${FUZZ_SECONDS:-300}
FUZZ_RUNS=${FUZZ_RUNS:-}
FUZZ_FORK=${FUZZ_FORK:-}
FUZZ_NICE=${FUZZ_NICE:-10}
JOBS=${JOBS:-2}
CC_FUZZ=${CC_FUZZ:-clang-14}
OUT=var/fuzz

scripts/deps.sh
# -O1: quicker to build than -O2 and as good for fuzzing; assertions stay on.
cmake -S . -B build-fuzz -DCHATD_FUZZ=ON -DCMAKE_C_COMPILER="$CC_FUZZ" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g" >/dev/null
cmake --build build-fuzz -j"$JOBS"

names=("$@")
if ((${#names[@]} == 0)); then
  for f in tests/fuzz/fuzz_*.c; do
    n=${f##*/}
    names+=("${n%.c}")
  done
fi

# Leaks are reported at the end of each input; a sanitizer report is a crash.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

mkdir -p "$OUT"
failed=0
summary=()
for n in "${names[@]}"; do
  bin=build-fuzz/$n
  [[ -x $bin ]] || { echo "fuzz: no harness $n" >&2; exit 2; }
  corpus=$OUT/corpus/$n
  art=$OUT/artifacts/$n
  log=$OUT/$n.log
  mkdir -p "$corpus" "$art"
  crashes=0
  # committed crash inputs: each must now pass
  regress=tests/fuzz/regress/$n
  if compgen -G "$regress/*" >/dev/null; then
    if ! "$bin" "$regress"/* >"$OUT/$n.regress.log" 2>&1; then
      echo "fuzz: $n: a committed crash input fails again (see $OUT/$n.regress.log)" >&2
      crashes=1
    fi
  fi
  args=(-max_total_time="$FUZZ_SECONDS" -timeout=25 -rss_limit_mb=2048 -print_final_stats=1
    -artifact_prefix="$art/")
  [[ -n $FUZZ_RUNS ]] && args+=(-runs="$FUZZ_RUNS")
  [[ -n $FUZZ_FORK ]] && args+=(-fork="$FUZZ_FORK")
  [[ -f tests/fuzz/$n.dict ]] && args+=(-dict="tests/fuzz/$n.dict")
  seeds=tests/fuzz/corpus/$n
  [[ -d $seeds ]] || seeds=
  t0=$(date +%s)
  rc=0
  # shellcheck disable=SC2086 # an absent seed directory is no argument
  nice -n "$FUZZ_NICE" "$bin" "${args[@]}" "$corpus" $seeds >"$log" 2>&1 || rc=$?
  secs=$(($(date +%s) - t0))
  execs=$(awk '/stat::number_of_executed_units:/ {print $2}' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  # -fork prints no final statistics: its last status line counts every process
  [[ -n $execs ]] || execs=$(sed -n 's/^#\([0-9]*\).*/\1/p' <<<"$last")
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  if ((rc != 0)) || grep -qE '^==[0-9]+==ERROR|^SUMMARY: |invariant broken' "$log"; then
    crashes=$((crashes + 1))
  fi
  ((crashes == 0)) || failed=1
  line=$(printf '%-12s %12s execs %5ss  cov %6s  ft %7s  crashes %d' "$n" "${execs:-?}" "$secs" \
    "${cov:-?}" "${ft:-?}" "$crashes")
  summary+=("$line")
  echo "fuzz: $line"
  if ((crashes)); then
    grep -E 'invariant broken|ERROR: |SUMMARY: |Test unit written' "$log" | head -5 | sed 's/^/fuzz:   /' >&2 || true
  fi
done
echo "fuzz: summary (FUZZ_SECONDS=$FUZZ_SECONDS${FUZZ_RUNS:+, FUZZ_RUNS=$FUZZ_RUNS}${FUZZ_FORK:+, FUZZ_FORK=$FUZZ_FORK})"
printf 'fuzz:   %s\n' "${summary[@]}"
exit "$failed"
