#!/usr/bin/env bash
# Reproducible benchmark of cached lookups over gRPC on loopback (see bench/README.md).
#
#   bench/run.sh            # ~2 minutes; prints a Markdown table of the results
#
# Builds an optimised gateway and the floor server (a trivial gRPC core server answering a
# fixed message), starts the AWS fake and redis-server on free loopback ports, and drives each
# with h2load (nghttp2-client): plain gRPC unary calls over HTTP/2.
#   floor    the trivial server, same threading as the gateway
#   l1       gateway, every call an in-process (L1) hit
#   redis    gateway with --l1-max-entries 0: every call a Redis hit
#   redis-tls the same against the same redis-server's TLS port (rediss://, certificates made
#            here with openssl, verified by the gateway)
#   stampede gateway, every call `cache-control: no-cache` for one ARN: coalesced upstream reads
# h2load counts any HTTP 200 as success, whatever the grpc-status, so successes are also
# counted by the gateway itself (pgw_requests_total{code="OK"} on /metrics).
#
# Latency comes from bench/loadgen.c (pgw-bench-loadgen), a gRPC core client, not from
# h2load --rps, which fires every client's requests together on a timer tick and so measures
# its own bursts. For the floor and for L1 hits it measures the max rate in a closed loop
# (LG_CONCURRENCY calls kept outstanding), then p50/p99 in an open loop at half and at a
# quarter of that rate: calls evenly spaced, sent on schedule whatever is outstanding, latency
# counted from each call's scheduled time. "sent late" counts sends more than 1 ms behind
# schedule: the loadgen itself could not keep up, and the row measures the client.
# The loadgen costs more CPU per call than h2load and shares the cores with the server, so its
# max rate is that of client+server, below h2load's. Evenly spaced calls also cost several
# times more CPU per call than batched ones (a wake-up and a syscall each, on both sides), so
# half the closed-loop max is well over half the CPU. With LG_PIN=1 (the default) the loadgen
# runs on the last CPU and the server is moved to the others for the loadgen rows, so the
# client's threads never preempt the server's.
set -euo pipefail
cd "$(dirname "$0")/.."
REQUESTS=${REQUESTS:-200000}
CLIENTS=${CLIENTS:-16}
STREAMS=${STREAMS:-16}
BUILD=${BUILD:-build/release}         # build directory (Release)
LG_SECONDS=${LG_SECONDS:-5}           # measured seconds per loadgen run (after a 1 s warm-up)
LG_CONCURRENCY=${LG_CONCURRENCY:-32}  # closed-loop calls outstanding
LG_CHANNELS=${LG_CHANNELS:-4}         # connections the loadgen spreads its calls over
LG_PIN=${LG_PIN:-1}                   # 1: loadgen on the last CPU, server on the rest
# Open loop: calls due within this many µs of each other leave together. 200 (bursts of ~4
# calls at 20k/s) rather than the loadgen's 50 keeps its own wake-ups from saturating its core.
LG_BATCH_US=${LG_BATCH_US:-200}
command -v h2load >/dev/null || { sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo;
  $sudo apt-get install -y -qq nghttp2-client >/dev/null; }
scripts/install-deps
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target personalize-gateway pgw-bench-fixed-server \
  pgw-bench-loadgen >/dev/null

work=$(mktemp -d -t pgw-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }

ARN="arn:aws:personalize:us-east-1:123456789012:batch-inference-job/bench"
PATH_="/personalize_gateway.v1.PersonalizeGateway/DescribeBatchInferenceJob"
# The request body: gRPC's 5-byte frame header, then the serialized request (req.pb, which
# is what the loadgen sends: the core API frames it).
echo "batch_inference_job_arn: \"$ARN\"" |
  protoc -I proto -I /usr/include --encode=personalize_gateway.v1.DescribeBatchInferenceJobRequest \
    proto/personalize_gateway/v1/personalize_gateway.proto > "$work/req.pb"
/usr/bin/python3 -c 'import sys,struct; b=open(sys.argv[1],"rb").read(); sys.stdout.buffer.write(b"\0"+struct.pack(">I",len(b))+b)' \
  "$work/req.pb" > "$work/req.bin"

export FAKE_AWS_ACCESS_KEY_ID=AKIDBENCH FAKE_AWS_SECRET_ACCESS_KEY=bench-secret-key
/usr/bin/python3 tests/fakes/fake_personalize.py --port 0 --port-file "$work/fake.port" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/fake.port" ] && break; sleep 0.1; done
fake="http://127.0.0.1:$(cat "$work/fake.port")"
curl -s -XPOST "$fake/__control/jobs" -d "{\"arn\":\"$ARN\",\"status\":\"ACTIVE\"}" >/dev/null
# A test CA and a certificate for 127.0.0.1, for the TLS port of the same redis-server.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/ca.key" \
  -out "$work/ca.pem" -days 1 -subj /CN=bench-ca -addext basicConstraints=critical,CA:TRUE \
  -addext keyUsage=critical,keyCertSign >/dev/null 2>&1
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/redis.key" \
  -out "$work/redis.csr" -subj /CN=127.0.0.1 >/dev/null 2>&1
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > "$work/redis.ext"
openssl x509 -req -in "$work/redis.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
  -out "$work/redis.pem" -days 1 -extfile "$work/redis.ext" >/dev/null 2>&1
redis_port=$(free_port)
redis_tls_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
  --tls-port "$redis_tls_port" --tls-cert-file "$work/redis.pem" --tls-key-file "$work/redis.key" \
  --tls-ca-cert-file "$work/ca.pem" --tls-auth-clients no >/dev/null &
pids+=($!)
wait_port "$redis_port"
wait_port "$redis_tls_port"

# CPU time (user + system, all threads) a process has used, in µs: per call, it is the figure
# least disturbed by other load on a shared VM, where requests/s drift by tens of percent.
cpu_us() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) * 1000000 / hz}' "/proc/$1/stat"; }

h2() { # port log-file [extra h2load args...]
  local port=$1 log=$2; shift 2
  h2load -n "$REQUESTS" -c "$CLIENTS" -m "$STREAMS" -t 1 -d "$work/req.bin" \
    -H 'content-type: application/grpc' -H 'te: trailers' --log-file="$log" "$@" \
    "http://127.0.0.1:$port$PATH_" > "$work/h2load.out"
  local rps; rps=$(awk '/^finished in/ {for (i=1;i<=NF;i++) if ($i ~ /req\/s/) print $(i-1)}' "$work/h2load.out")
  local lat; lat=$(sort -n -k3,3 "$log" | awk '{a[NR]=$3} END {printf "%.0f %.0f", a[int(NR*0.5)], a[int(NR*0.99)]}')
  echo "$rps $lat"
}
ncpu=$(nproc)
[ "$ncpu" -ge 2 ] || LG_PIN=0
pin() { # pid cpu-list: moves every thread of a running server
  [ "$LG_PIN" = 1 ] && taskset -a -p -c "$2" "$1" >/dev/null || true
}
lg() { # port loadgen-args... -> "rate p50 p99 ok count late"; the JSON line is in $work/lg.json
  local port=$1 pin_cmd=(); shift
  [ "$LG_PIN" = 1 ] && pin_cmd=(taskset -c "$((ncpu - 1))")
  "${pin_cmd[@]}" "$BUILD"/bench/pgw-bench-loadgen --target "127.0.0.1:$port" --method "$PATH_" \
    --request "$work/req.pb" --channels "$LG_CHANNELS" --warmup 1 --duration "$LG_SECONDS" --batch-us "$LG_BATCH_US" "$@" \
    > "$work/lg.json"
  /usr/bin/python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))
print("%.0f %.0f %.0f %d %d %d" % (d["rate"], d["p50_us"], d["p99_us"], d["ok"], d["count"], d["late"]))
if d["errors"]: print("loadgen:", d, file=sys.stderr)' "$work/lg.json"
}
ok_count() { curl -s "http://127.0.0.1:$1/metrics" | awk '/^pgw_requests_total\{.*frontend="grpc".*code="OK"/ {s+=$2} END {print s+0}'; }

start_gateway() { # name extra-args...
  local name=$1; shift
  GRPC_PORT=$(free_port); HTTP_PORT=$(free_port)
  AWS_ACCESS_KEY_ID=AKIDBENCH AWS_SECRET_ACCESS_KEY=bench-secret-key AWS_ENDPOINT_URL_PERSONALIZE="$fake" \
    "$BUILD"/personalize-gateway --grpc-addr "127.0.0.1:$GRPC_PORT" --http-addr "127.0.0.1:$HTTP_PORT" \
    --log-level warn "$@" > "$work/$name.log" 2>&1 &
  GW_PID=$!
  pids+=("$GW_PID")
  wait_port "$GRPC_PORT"
}
stop_gateway() { kill "$GW_PID"; wait "$GW_PID" || true; }

results=()
fixed_port=$(free_port)
"$BUILD"/bench/pgw-bench-fixed-server "127.0.0.1:$fixed_port" 2 >/dev/null &
fixed_pid=$!; pids+=("$fixed_pid")
wait_port "$fixed_port"
cpu0=$(cpu_us "$fixed_pid")
read -r rps p50 p99 < <(h2 "$fixed_port" "$work/floor.log")
floor_cpu=$(awk -v a="$cpu0" -v b="$(cpu_us "$fixed_pid")" -v n="$REQUESTS" 'BEGIN {printf "%.1f", (b - a) / n}')
results+=("| floor: trivial gRPC core server | h2load | $rps | $p50 | $p99 | $REQUESTS (not counted); server CPU $floor_cpu µs/call |")
floor_rps=$rps
pin "$fixed_pid" "0-$((ncpu - 2))"
read -r rps p50 p99 ok n late < <(lg "$fixed_port" --concurrency "$LG_CONCURRENCY")
results+=("| floor, max rate (closed loop, $LG_CONCURRENCY outstanding) | loadgen | $rps | $p50 | $p99 | loadgen: $ok OK of $n |")
floor_half=$((rps / 2))
read -r rps p50 p99 ok n late < <(lg "$fixed_port" --rate "$floor_half")
results+=("| floor at half its loadgen max (open loop, $floor_half/s) | loadgen | $rps | $p50 | $p99 | loadgen: $ok OK of $n, $late sent late |")
read -r rps p50 p99 ok n late < <(lg "$fixed_port" --rate "$((floor_half / 2))")
results+=("| floor at a quarter of its loadgen max (open loop, $((floor_half / 2))/s) | loadgen | $rps | $p50 | $p99 | loadgen: $ok OK of $n, $late sent late |")
kill "$fixed_pid"; wait "$fixed_pid" 2>/dev/null || true

start_gateway l1
curl -s "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null
cpu0=$(cpu_us "$GW_PID")
read -r rps p50 p99 < <(h2 "$GRPC_PORT" "$work/l1.log")
l1_cpu=$(awk -v a="$cpu0" -v b="$(cpu_us "$GW_PID")" -v n="$REQUESTS" 'BEGIN {printf "%.1f", (b - a) / n}')
results+=("| gateway, L1 hits | h2load | $rps | $p50 | $p99 | $(ok_count "$HTTP_PORT"); server CPU $l1_cpu µs/call |")
l1_rps=$rps
pin "$GW_PID" "0-$((ncpu - 2))"
read -r rps p50 p99 ok n late < <(lg "$GRPC_PORT" --concurrency "$LG_CONCURRENCY")
results+=("| gateway, L1 hits, max rate (closed loop, $LG_CONCURRENCY outstanding) | loadgen | $rps | $p50 | $p99 | loadgen: $ok OK of $n; server: $(ok_count "$HTTP_PORT") (cumulative) |")
l1_half=$((rps / 2))
read -r rps p50 p99 ok n late < <(lg "$GRPC_PORT" --rate "$l1_half")
results+=("| gateway, L1 hits at half its loadgen max (open loop, $l1_half/s) | loadgen | $rps | $p50 | $p99 | loadgen: $ok OK of $n, $late sent late; server: $(ok_count "$HTTP_PORT") (cumulative) |")
read -r rps p50 p99 ok n late < <(lg "$GRPC_PORT" --rate "$((l1_half / 2))")
results+=("| gateway, L1 hits at a quarter of its loadgen max (open loop, $((l1_half / 2))/s) | loadgen | $rps | $p50 | $p99 | loadgen: $ok OK of $n, $late sent late; server: $(ok_count "$HTTP_PORT") (cumulative) |")
stop_gateway

redis_row() { # label log-name gateway-args...
  local label=$1 name=$2; shift 2
  start_gateway "$name" "$@" --l1-max-entries 0
  # Warm: the first call fills Redis; wait until the connection is up and answering.
  for _ in $(seq 50); do
    h2load -n 1 -c 1 -d "$work/req.bin" -H 'content-type: application/grpc' -H 'te: trailers' \
      "http://127.0.0.1:$GRPC_PORT$PATH_" >/dev/null 2>&1
    curl -s "http://127.0.0.1:$HTTP_PORT/metrics" |
      grep -q '^pgw_cache_requests_total{tier="redis",result="hit"} [1-9]' && break
    sleep 0.1
  done
  local cpu0; cpu0=$(cpu_us "$GW_PID")
  read -r rps p50 p99 < <(h2 "$GRPC_PORT" "$work/$name.h2.log")
  local cpu; cpu=$(awk -v a="$cpu0" -v b="$(cpu_us "$GW_PID")" -v n="$REQUESTS" 'BEGIN {printf "%.1f", (b - a) / n}')
  local hits; hits=$(curl -s "http://127.0.0.1:$HTTP_PORT/metrics" | awk '/^pgw_cache_requests_total\{tier="redis",result="hit"\}/ {print $2}')
  results+=("| $label | h2load | $rps | $p50 | $p99 | $(ok_count "$HTTP_PORT"); Redis hits $hits; server CPU $cpu µs/call |")
  LAST_RPS=$rps; LAST_CPU=$cpu
  stop_gateway
}
redis_row "gateway, Redis hits (L1 disabled)" redis --redis-url "redis://127.0.0.1:$redis_port"
redis_rps=$LAST_RPS; redis_cpu=$LAST_CPU
redis_row "gateway, Redis hits over TLS (rediss://, L1 disabled)" redis-tls \
  --redis-url "rediss://127.0.0.1:$redis_tls_port" --redis-ca-file "$work/ca.pem"
redis_tls_rps=$LAST_RPS; redis_tls_cpu=$LAST_CPU

curl -s -XPOST "$fake/__control/latency" -d '{"ms": 20, "service": "personalize"}' >/dev/null
curl -s -XPOST "$fake/__control/reset_stats" >/dev/null
start_gateway stampede
read -r rps p50 p99 < <(REQUESTS=$((REQUESTS / 4)) h2 "$GRPC_PORT" "$work/stampede.log" -H 'cache-control: no-cache')
upstream=$(curl -s "$fake/__control/stats" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["personalize"]["requests"])')
results+=("| gateway, same-ARN stampede, no-cache, 20 ms upstream | h2load | $rps | $p50 | $p99 | $(ok_count "$HTTP_PORT"); upstream calls: $upstream |")
stop_gateway

echo "machine: $(nproc) cores, $(uname -r); h2load -c $CLIENTS -m $STREAMS -t 1 -n $REQUESTS;" \
  "loadgen $LG_CHANNELS channels, 1 s warm-up + $LG_SECONDS s per row, pinned: $LG_PIN, batch $LG_BATCH_US µs"
echo
echo "| scenario | client | requests/s | p50 µs | p99 µs | gRPC OK |"
echo "| --- | --- | ---: | ---: | ---: | --- |"
printf '%s\n' "${results[@]}"
echo
/usr/bin/python3 -c "print('L1 hits reach %.0f%% of the floor' % (100 * float('$l1_rps') / float('$floor_rps')))"
/usr/bin/python3 -c "print('Redis hits reach %.2fx the floor (plain), %.2fx over TLS; server CPU per call %s us plain, %s us TLS' % (float('$redis_rps') / float('$floor_rps'), float('$redis_tls_rps') / float('$floor_rps'), '$redis_cpu', '$redis_tls_cpu'))"
/usr/bin/python3 -c "print('server CPU per L1 hit: %s us, per floor call: %s us (%.0f%% of the floor per call)' % ('$l1_cpu', '$floor_cpu', 100 * float('$floor_cpu') / float('$l1_cpu')))"
