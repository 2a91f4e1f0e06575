#!/usr/bin/env bash
# Gateway CPU per L1 hit, two builds interleaved (bench/README.md, "Idle memory"):
#
#   bench/l1_cpu_pair.sh BINARY_A BINARY_B [ROUNDS]     # ROUNDS (4) of A then B
#
# For each round and binary: starts the gateway against the AWS fake (one ACTIVE job), warms
# the job into L1 with 1,000 calls, then sends REQUESTS (200,000) DescribeBatchInferenceJob
# calls with h2load (CLIENTS 16 connections x STREAMS 16 streams) and prints the gateway's CPU
# time (user + system, all threads, /proc/<pid>/stat) per call and h2load's requests/s. CPU per
# call is the figure to compare: this VM's speed drifts by tens of percent between runs, so
# read the medians of many interleaved rounds, not one pair.
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,11p' "$0" >&2; exit 2; }
a=$(realpath "$1") b=$(realpath "$2") rounds=${3:-4}
REQUESTS=${REQUESTS:-200000} CLIENTS=${CLIENTS:-16} STREAMS=${STREAMS:-16}
cd "$(dirname "$0")/.."
work=$(mktemp -d -t pgw-l1cpu.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }
cpu_us() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) * 1000000 / hz}' "/proc/$1/stat"; }

ARN="arn:aws:personalize:us-east-1:123456789012:batch-inference-job/bench"
PATH_="/personalize_gateway.v1.PersonalizeGateway/DescribeBatchInferenceJob"
echo "batch_inference_job_arn: \"$ARN\"" |
  protoc -I proto -I /usr/include --encode=personalize_gateway.v1.DescribeBatchInferenceJobRequest \
    proto/personalize_gateway/v1/personalize_gateway.proto > "$work/req.pb"
/usr/bin/python3 -c 'import sys,struct; b=open(sys.argv[1],"rb").read(); sys.stdout.buffer.write(b"\0"+struct.pack(">I",len(b))+b)' \
  "$work/req.pb" > "$work/req.bin"
h2() { # port requests clients streams
  h2load -n "$2" -c "$3" -m "$4" -t 1 -d "$work/req.bin" -H 'content-type: application/grpc' \
    -H 'te: trailers' "http://127.0.0.1:$1$PATH_" > "$work/h2load.out"
}

export FAKE_AWS_ACCESS_KEY_ID=AKIDBENCH FAKE_AWS_SECRET_ACCESS_KEY=bench-secret-key
/usr/bin/python3 tests/fakes/fake_personalize.py --port 0 --port-file "$work/fake.port" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/fake.port" ] && break; sleep 0.1; done
fake="http://127.0.0.1:$(cat "$work/fake.port")"
curl -s -XPOST "$fake/__control/jobs" -d "{\"arn\":\"$ARN\",\"status\":\"ACTIVE\"}" >/dev/null

echo "| round | binary | gateway CPU per L1 hit | h2load requests/s |"
echo "| ---: | --- | ---: | ---: |"
for round in $(seq "$rounds"); do
  for bin in "$a" "$b"; do
    port=$(free_port)
    AWS_ACCESS_KEY_ID=AKIDBENCH AWS_SECRET_ACCESS_KEY=bench-secret-key AWS_REGION=us-east-1 \
      AWS_ENDPOINT_URL_PERSONALIZE="$fake" \
      "$bin" --grpc-addr "127.0.0.1:$port" --http-addr 127.0.0.1:0 --log-level warn >/dev/null 2>&1 &
    gw=$!
    pids+=("$gw")
    wait_port "$port"
    h2 "$port" 1000 1 1
    before=$(cpu_us "$gw")
    h2 "$port" "$REQUESTS" "$CLIENTS" "$STREAMS"
    after=$(cpu_us "$gw")
    grep -q "succeeded, 0 failed, 0 errored" "$work/h2load.out" || { cat "$work/h2load.out" >&2; exit 1; }
    rps=$(awk '/^finished in/ {for (i=1;i<=NF;i++) if ($i ~ /req\/s/) print $(i-1)}' "$work/h2load.out")
    printf '| %d | %s | %.2f µs | %s |\n' "$round" "$bin" \
      "$(awk -v a="$before" -v b="$after" -v n="$REQUESTS" 'BEGIN {print (b - a) / n}')" "$rps"
    kill "$gw"
    wait "$gw" 2>/dev/null || true
  done
done
