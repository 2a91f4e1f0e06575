#!/usr/bin/env bash
# Idle memory of the gateway and of the floor server (bench/README.md, "Idle memory").
#
#   bench/idle_rss.sh [gateway args...]      # e.g. --redis-url redis://127.0.0.1:6379
#
# Starts the AWS fake, the Release gateway against it (credentials from the environment, as an
# operator would), waits IDLE seconds (10), prints VmRSS from /proc/<pid>/status and a per-library
# breakdown of /proc/<pid>/smaps (bench/smaps_breakdown.py); then the same for the floor server
# (pgw-bench-fixed-server, 2 threads). BUILD= picks the build directory (build/release).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/release}
IDLE=${IDLE:-10}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target personalize-gateway pgw-bench-fixed-server >/dev/null

work=$(mktemp -d -t pgw-idle.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

export FAKE_AWS_ACCESS_KEY_ID=AKIDBENCH FAKE_AWS_SECRET_ACCESS_KEY=bench-secret-key
/usr/bin/python3 tests/fakes/fake_personalize.py --port 0 --port-file "$work/fake.port" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/fake.port" ] && break; sleep 0.1; done
AWS_ACCESS_KEY_ID=AKIDBENCH AWS_SECRET_ACCESS_KEY=bench-secret-key AWS_REGION=us-east-1 \
  AWS_ENDPOINT_URL_PERSONALIZE="http://127.0.0.1:$(cat "$work/fake.port")" \
  "$BUILD"/personalize-gateway --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 --log-level warn "$@" \
  > "$work/gateway.log" 2>&1 &
gw=$!; pids+=("$gw")
"$BUILD"/bench/pgw-bench-fixed-server 127.0.0.1:0 2 >/dev/null 2>&1 &
floor=$!; pids+=("$floor")
sleep "$IDLE"
echo "== gateway, ${IDLE} s idle: $*"
/usr/bin/python3 bench/smaps_breakdown.py "$gw"
echo
echo "== floor (pgw-bench-fixed-server, 2 threads), ${IDLE} s idle"
/usr/bin/python3 bench/smaps_breakdown.py "$floor"
