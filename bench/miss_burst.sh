#!/usr/bin/env bash
# Cached lookups during a burst of misses (issue 9), see bench/README.md:
#
#   bench/miss_burst.sh          # ~30 s; prints one Markdown row per run
#
# Starts the AWS fake (Personalize answering after UPSTREAM_MS) and the gateway (Release build,
# default bounds unless GATEWAY_ARGS says otherwise), caches one ARN, then fires MISSES
# concurrent lookups of cold ARNs with DEADLINE_S deadlines (tests/integration/burst_client.py,
# its own process and connection) while pgw-bench-loadgen asks for the cached ARN at HOT_RATE
# calls/s, open loop (each call sent on schedule, latency counted from its due time, so a
# stall shows in every call it delays). Prints the cached lookups' p50/p99/max and how the
# misses ended. BINARY=... runs another build (e.g. an older commit) with the same harness.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/release}
BINARY=${BINARY:-$BUILD/personalize-gateway}
LOADGEN=${LOADGEN:-$BUILD/bench/pgw-bench-loadgen}
MISSES=${MISSES:-3000}
UPSTREAM_MS=${UPSTREAM_MS:-2000}
DEADLINE_S=${DEADLINE_S:-5}
HOT_RATE=${HOT_RATE:-200}
RUNS=${RUNS:-3}
GATEWAY_ARGS=${GATEWAY_ARGS:-}
if [ -z "${BINARY_GIVEN:-}" ] && [ "$BINARY" = "$BUILD/personalize-gateway" ]; then
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$BUILD" -j"$(nproc)" --target personalize-gateway pgw-bench-loadgen >/dev/null
fi

work=$(mktemp -d -t pgw-burst.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }

HOT="arn:aws:personalize:us-east-1:123456789012:batch-inference-job/hot"
COLD="arn:aws:personalize:us-east-1:123456789012:batch-inference-job/cold-"
METHOD="/personalize_gateway.v1.PersonalizeGateway/DescribeBatchInferenceJob"
echo "batch_inference_job_arn: \"$HOT\"" |
  protoc -I proto -I /usr/include --encode=personalize_gateway.v1.DescribeBatchInferenceJobRequest \
    proto/personalize_gateway/v1/personalize_gateway.proto > "$work/hot.pb"

export FAKE_AWS_ACCESS_KEY_ID=AKIDBENCH FAKE_AWS_SECRET_ACCESS_KEY=bench-secret-key
# The fake and the burst client in sessions of their own (setsid): with the kernel's autogroup
# scheduling their hundreds of threads then share one CPU share each, as if AWS and the
# clients ran elsewhere, instead of starving the gateway thread by thread.
setsid /usr/bin/python3 tests/fakes/fake_personalize.py --port 0 --port-file "$work/fake.port" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/fake.port" ] && break; sleep 0.1; done
fake="http://127.0.0.1:$(cat "$work/fake.port")"
curl -s -XPOST "$fake/__control/jobs" -d "{\"arn\":\"$HOT\",\"status\":\"ACTIVE\"}" >/dev/null

echo "| cached lookups during $MISSES concurrent misses, ${UPSTREAM_MS} ms upstream, ${DEADLINE_S} s deadlines | hot calls/s | p50 µs | p99 µs | max µs | misses |"
echo "| --- | ---: | ---: | ---: | ---: | --- |"
for run in $(seq "$RUNS"); do
  curl -s -XPOST "$fake/__control/latency" -d '{"ms": 0, "service": "personalize"}' >/dev/null
  grpc_port=$(free_port); http_port=$(free_port)
  # shellcheck disable=SC2086
  AWS_ACCESS_KEY_ID=AKIDBENCH AWS_SECRET_ACCESS_KEY=bench-secret-key AWS_ENDPOINT_URL_PERSONALIZE="$fake" \
    "$BINARY" --grpc-addr "127.0.0.1:$grpc_port" --http-addr "127.0.0.1:$http_port" \
    --log-level error --cache-ttl-not-found-s 0 $GATEWAY_ARGS > "$work/gateway.log" 2>&1 &
  gw=$!; pids+=("$gw")
  wait_port "$grpc_port"
  "$LOADGEN" --target "127.0.0.1:$grpc_port" --method "$METHOD" --request "$work/hot.pb" \
    --concurrency 1 --count 10 --warmup 0 --channels 1 >/dev/null   # caches HOT
  curl -s -XPOST "$fake/__control/latency" -d "{\"ms\": $UPSTREAM_MS, \"service\": \"personalize\"}" >/dev/null
  setsid /usr/bin/python3 tests/integration/burst_client.py "127.0.0.1:$grpc_port" "$MISSES" "$COLD" \
    "$DEADLINE_S" "$work/burst.json" --start-file "$work/started" &
  burst=$!
  for _ in $(seq 200); do [ -e "$work/started" ] && break; sleep 0.05; done
  "$LOADGEN" --target "127.0.0.1:$grpc_port" --method "$METHOD" --request "$work/hot.pb" \
    --rate "$HOT_RATE" --duration "$((DEADLINE_S + 1))" --warmup 0 --channels 1 \
    --timeout-ms "$((DEADLINE_S * 1000))" > "$work/hot.json"
  wait "$burst"
  rm -f "$work/started"
  /usr/bin/python3 - "$work/hot.json" "$work/burst.json" "$run" <<'PY'
import collections, json, sys
hot = json.load(open(sys.argv[1]))
calls = json.load(open(sys.argv[2]))["calls"]
codes = collections.Counter(c[0] for c in calls)
slowest = max(c[1] for c in calls)
errs = "" if not hot["errors"] else ", cached lookups failed (code: count): %s" % hot["errors"]
print("| run %s | %.0f | %.0f | %.0f | %.0f | %s; slowest ended after %.2f s; %d of %d cached lookups OK%s |" % (
    sys.argv[3], hot["rate"], hot["p50_us"], hot["p99_us"], hot["max_us"],
    ", ".join("%d %s" % (n, c) for c, n in codes.most_common()), slowest, hot["ok"], hot["count"],
    errs))
PY
  kill "$gw"; wait "$gw" 2>/dev/null || true
done
