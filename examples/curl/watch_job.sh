#!/usr/bin/env bash
# Describes a batch inference job through personalize-gateway's HTTP port, then watches it
# until it is done, with curl alone: the server-sent events of ?watch=true instead of a loop of
# GETs.
#
#   examples/curl/watch_job.sh http://127.0.0.1:8080 arn:aws:personalize:us-east-1:123456789012:batch-inference-job/my-job
#
# Prints the job's JSON once ("describe: {...}"), then one line per change ("watch: {...}"),
# each the same proto3 JSON as the plain GET. The stream ends after a terminal status (exit 0);
# an `event: error` (the job became unknown, or the gateway is shutting down: reconnect) exits
# 1 with the error's JSON on stderr, as does an error before the first event (the plain GET's
# status and body).
set -euo pipefail
base=${1:?usage: watch_job.sh http://host:port ARN}
arn=${2:?usage: watch_job.sh http://host:port ARN}

urlencode() {
  local s=$1 out="" c i
  for ((i = 0; i < ${#s}; i++)); do
    c=${s:i:1}
    case $c in
      [a-zA-Z0-9.~_-]) out+=$c ;;
      *) printf -v c '%%%02X' "'$c"; out+=$c ;;
    esac
  done
  printf '%s' "$out"
}
url="$base/v1/batch-inference-jobs/$(urlencode "$arn")"

# Describe: what most callers did in a loop.
echo "describe: $(curl -sS --fail-with-body "$url")"

# Watch: one response that stays open. -N: each event as it comes.
exec 3< <(curl -sS -N --fail-with-body -H 'Accept: text/event-stream' "$url?watch=true")
curl_pid=$!
event=message
status=0
while IFS= read -r line <&3; do
  case "$line" in
    "event: "*) event=${line#event: } ;;
    "data: "*)
      if [ "$event" = error ]; then
        echo "watch ended: ${line#data: }" >&2
        status=1
      else
        echo "watch: ${line#data: }"
      fi
      event=message ;;
    "" | :*) ;; # end of an event; a comment (keep-alive)
    *) echo "$line" >&2 ;; # not an event stream: an error answer's body
  esac
done
rc=0
wait "$curl_pid" || rc=$?
if [ "$rc" -ne 0 ]; then
  echo "watch failed (curl exit status $rc)" >&2
  exit 1
fi
exit $status
