#!/usr/bin/env bash
# The long local fuzz run recorded in tests/fuzz/README.md: each target in turn (one at a time,
# at nice 19: the machine is shared) for PGW_FUZZ_RUNS executions (default 10 million), on a
# corpus kept in <build>/fuzz-long/<target>/ and seeded from tests/fuzz/corpus/<target>/.
# Appends one line per target to <build>/fuzz-long/summary.tsv: target, executions, cov, ft,
# corpus size, seconds, exit status. Usage: long_run.sh <build dir> [target...]
set -uo pipefail
build=$(cd "$1" && pwd)
shift
here=$(cd "$(dirname "$0")" && pwd)
runs=${PGW_FUZZ_RUNS:-10000000}
out=$build/fuzz-long
mkdir -p "$out"
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  for f in "$here"/fuzz_*.c; do t=$(basename "$f" .c); targets+=("${t#fuzz_}"); done
fi
for t in "${targets[@]}"; do
  bin=$build/tests/fuzz/fuzz_$t
  mkdir -p "$out/$t/corpus" "$out/$t/artifacts"
  args=(-runs="$runs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048
        -artifact_prefix="$out/$t/artifacts/")
  [ -f "$here/dict/$t.dict" ] && args+=(-dict="$here/dict/$t.dict")
  start=$(date +%s)
  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    nice -n 19 "$bin" "${args[@]}" "$out/$t/corpus" "$here/corpus/$t" >"$out/$t.log" 2>&1
  rc=$?
  secs=$(( $(date +%s) - start ))
  execs=$(sed -n 's/^stat::number_of_executed_units: //p' "$out/$t.log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$out/$t.log" | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p' <<<"$last")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "${execs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" \
    "$secs" "$rc" >>"$out/summary.tsv"
done
