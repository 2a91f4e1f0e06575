#!/usr/bin/env bash
# A/B of the "Redis hits" row (bench/run.sh) across gateway builds, each measured against the
# floor in the same run (see bench/README.md, "Where Redis hits spend their time"), or of the
# "L1 hits" row with TIER=l1:
#
#   bench/redis_ab.sh NAME=BUILD_DIR [NAME=BUILD_DIR...]   # e.g. before=build/base after=build/release
#   TIER=l1 bench/redis_ab.sh NAME=BUILD_DIR...            # every call an in-process (L1) hit
#
# Each round runs the floor (pgw-bench-fixed-server of the first build), then every build's
# gateway with --l1-max-entries 0 against one redis-server (plain, and over TLS with TLS=1),
# or with its defaults and no Redis for TIER=l1, with h2load as run.sh drives it. ROUNDS rounds (default 3), the builds' order rotating each
# round, because a shared VM's speed drifts by tens of percent within minutes. Prints one line
# per measurement: calls/s, the ratio to the floor of the same round, server CPU per call.
# GATEWAY_ARGS are added to every gateway's command line.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { sed -n 2,13p "$0"; exit 2; }
REQUESTS=${REQUESTS:-200000}
CLIENTS=${CLIENTS:-16}
STREAMS=${STREAMS:-16}
ROUNDS=${ROUNDS:-3}
TLS=${TLS:-0}
TIER=${TIER:-redis}
case "$TIER" in redis | l1) ;; *) echo "TIER is redis or l1, not '$TIER'" >&2; exit 2 ;; esac
names=(); dirs=()
for a in "$@"; do names+=("${a%%=*}"); dirs+=("${a#*=}"); done
for d in "${dirs[@]}"; do [ -x "$d/personalize-gateway" ] || { echo "no $d/personalize-gateway" >&2; exit 2; }; done
floor_bin=${dirs[0]}/bench/pgw-bench-fixed-server
[ -x "$floor_bin" ] || { echo "no $floor_bin (build the pgw-bench-fixed-server target)" >&2; exit 2; }

work=$(mktemp -d -t pgw-ab.XXXXXX)
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
export FAKE_AWS_ACCESS_KEY_ID=AKIDBENCH FAKE_AWS_SECRET_ACCESS_KEY=bench-secret-key
/usr/bin/python3 tests/fakes/fake_personalize.py --port 0 --port-file "$work/fake.port" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/fake.port" ] && break; sleep 0.1; done
fake="http://127.0.0.1:$(cat "$work/fake.port")"
curl -s -XPOST "$fake/__control/jobs" -d "{\"arn\":\"$ARN\",\"status\":\"ACTIVE\"}" >/dev/null
redis_port=$(free_port)
tls_args=()
if [ "$TLS" = 1 ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/ca.key" \
    -out "$work/ca.pem" -days 1 -subj /CN=bench-ca -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=critical,keyCertSign >/dev/null 2>&1
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/redis.key" \
    -out "$work/redis.csr" -subj /CN=127.0.0.1 >/dev/null 2>&1
  printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > "$work/redis.ext"
  openssl x509 -req -in "$work/redis.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
    -out "$work/redis.pem" -days 1 -extfile "$work/redis.ext" >/dev/null 2>&1
  redis_tls_port=$(free_port)
  tls_args=(--tls-port "$redis_tls_port" --tls-cert-file "$work/redis.pem" --tls-key-file "$work/redis.key"
    --tls-ca-cert-file "$work/ca.pem" --tls-auth-clients no)
fi
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no "${tls_args[@]}" >/dev/null &
pids+=($!)
wait_port "$redis_port"

h2() { # port -> calls/s
  h2load -n "$REQUESTS" -c "$CLIENTS" -m "$STREAMS" -t 1 -d "$work/req.bin" \
    -H 'content-type: application/grpc' -H 'te: trailers' "http://127.0.0.1:$1$PATH_" > "$work/h2load.out"
  awk '/^finished in/ {for (i=1;i<=NF;i++) if ($i ~ /req\/s/) print $(i-1)}' "$work/h2load.out"
}
per_call() { awk -v a="$1" -v b="$2" -v n="$REQUESTS" 'BEGIN {printf "%.1f", (b - a) / n}'; }

gateway_row() { # name build url-args...
  local name=$1 build=$2; shift 2
  local gp hp; gp=$(free_port); hp=$(free_port)
  AWS_ACCESS_KEY_ID=AKIDBENCH AWS_SECRET_ACCESS_KEY=bench-secret-key AWS_ENDPOINT_URL_PERSONALIZE="$fake" \
    "$build"/personalize-gateway --grpc-addr "127.0.0.1:$gp" --http-addr "127.0.0.1:$hp" \
    --log-level warn "$@" ${GATEWAY_ARGS:-} > "$work/gw.log" 2>&1 &
  local gw=$!; pids+=("$gw")
  wait_port "$gp"
  for _ in $(seq 50); do
    h2load -n 1 -c 1 -d "$work/req.bin" -H 'content-type: application/grpc' -H 'te: trailers' \
      "http://127.0.0.1:$gp$PATH_" >/dev/null 2>&1
    curl -s "http://127.0.0.1:$hp/metrics" |
      grep -q "^pgw_cache_requests_total{tier=\"$TIER\",result=\"hit\"} [1-9]" && break
    sleep 0.1
  done
  local c0 rps hits; c0=$(cpu_us "$gw")
  rps=$(h2 "$gp")
  local cpu; cpu=$(per_call "$c0" "$(cpu_us "$gw")")
  curl -s "http://127.0.0.1:$hp/metrics" > "$work/metrics"
  hits=$(awk -v t="$TIER" '$1 == "pgw_cache_requests_total{tier=\"" t "\",result=\"hit\"}" {print $2}' "$work/metrics")
  local errs; errs=$(awk '/^pgw_redis_errors_total/ {s += $2} END {print s + 0}' "$work/metrics")
  kill "$gw"; wait "$gw" 2>/dev/null || true
  printf '%-8s %-10s %10s/s  %.2fx floor  %5s us/call  (%s hits %s, Redis errors %s)\n' "$round" \
    "$name" "$rps" "$(awk -v a="$rps" -v b="$floor_rps" 'BEGIN {print a / b}')" "$cpu" "$TIER" \
    "$hits" "$errs"
}

echo "machine: $(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg); h2load -c $CLIENTS -m $STREAMS -t 1 -n $REQUESTS"
n=${#names[@]}
for r in $(seq "$ROUNDS"); do
  round="round$r"
  fp=$(free_port)
  "$floor_bin" "127.0.0.1:$fp" 2 >/dev/null &
  fpid=$!; pids+=("$fpid")
  wait_port "$fp"
  c0=$(cpu_us "$fpid")
  floor_rps=$(h2 "$fp")
  printf '%-8s %-10s %10s/s  1.00x floor  %5s us/call\n' "$round" floor "$floor_rps" "$(per_call "$c0" "$(cpu_us "$fpid")")"
  kill "$fpid"; wait "$fpid" 2>/dev/null || true
  for k in $(seq 0 $((n - 1))); do
    i=$(((k + r - 1) % n))
    if [ "$TIER" = l1 ]; then
      gateway_row "${names[$i]}" "${dirs[$i]}"
      continue
    fi
    gateway_row "${names[$i]}" "${dirs[$i]}" --l1-max-entries 0 --redis-url "redis://127.0.0.1:$redis_port"
    if [ "$TLS" = 1 ]; then
      gateway_row "${names[$i]}-tls" "${dirs[$i]}" --l1-max-entries 0 \
        --redis-url "rediss://127.0.0.1:$redis_tls_port" \
        --redis-ca-file "$work/ca.pem"
    fi
  done
done
