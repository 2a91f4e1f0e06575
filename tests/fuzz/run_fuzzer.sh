#!/usr/bin/env bash
# Runs one libFuzzer target for a bounded time: run_fuzzer.sh <binary> <seed corpus dir>
# <seconds> <artifact dir>. New inputs go to a scratch corpus (removed afterwards), so the seed
# corpus in the repository is only read. A crash, leak, sanitizer report, timeout or failed
# invariant makes libFuzzer exit non-zero; the input is kept in <artifact dir> and its path
# printed. A dictionary tests/fuzz/dict/<boundary>.dict is used when present.
set -euo pipefail
bin=$1 seeds=$2 seconds=$3 artifacts=$4
name=$(basename "$bin")
boundary=${name#fuzz_}
here=$(cd "$(dirname "$0")" && pwd)
[ -d "$seeds" ] || { echo "no seed corpus at $seeds" >&2; exit 1; }
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$artifacts"
args=(-max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048
      -artifact_prefix="$artifacts/$name-")
[ -f "$here/dict/$boundary.dict" ] && args+=(-dict="$here/dict/$boundary.dict")
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
exec "$bin" "${args[@]}" "$scratch" "$seeds"
