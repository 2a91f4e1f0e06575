#!/usr/bin/env bash
# Builds examples/go/watch_job with Debian's Go packages only (no module download): the code
# for personalize_gateway.proto is generated with protoc-gen-go (golang-goprotobuf-dev) and
# protoc-gen-go-grpc, into a GOPATH of its own next to Debian's /usr/share/gocode.
#
#   examples/go/build.sh OUT_BINARY        (GOCACHE from the environment, or a temporary one)
set -euo pipefail
out=$(realpath -m "${1:?usage: build.sh OUT_BINARY}")
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gen=$work/src/pgwexample/gen
mkdir -p "$gen" "$work/src/pgwexample/watch_job"
# No go_package in the .proto (it is every language's contract): map it here.
map="Mpersonalize_gateway/v1/personalize_gateway.proto=pgwexample/gen/personalize_gateway/v1;personalize_gateway_v1"
map="$map,Mgoogle/protobuf/timestamp.proto=github.com/golang/protobuf/ptypes/timestamp"
protoc -I "$repo/proto" -I /usr/include \
  --go_out="$gen" --go_opt="paths=source_relative,$map" \
  --go-grpc_out="$gen" --go-grpc_opt="paths=source_relative,$map" \
  personalize_gateway/v1/personalize_gateway.proto
cp "$here/watch_job/main.go" "$work/src/pgwexample/watch_job/"
cd "$work/src/pgwexample/watch_job"
GO111MODULE=off GOPATH="$work:/usr/share/gocode" GOCACHE="${GOCACHE:-$work/cache}" GOFLAGS= \
  go build -o "$out" .
