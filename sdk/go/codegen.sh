#!/usr/bin/env bash
# Regenerates the Go SDK's committed code (sdk/go/gen/aiprod/v1) from proto/aiprod/v1 with buf and
# local protoc-gen-go / protoc-gen-go-grpc installed at pinned versions into sdk/go/.bin. Idempotent.
# proto/google/bytestream is left out (see buf.gen.yaml): its go_package is Google's published
# google.golang.org/genproto/googleapis/bytestream, a dependency in go.mod.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2
bin="$here/.bin"
mkdir -p "$bin"
stamp="$bin/.versions"
want="protoc-gen-go@$PROTOC_GEN_GO_VERSION protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ] || [ ! -x "$bin/protoc-gen-go" ] || [ ! -x "$bin/protoc-gen-go-grpc" ]; then
  GOBIN="$bin" GOFLAGS=-mod=mod go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
  GOBIN="$bin" GOFLAGS=-mod=mod go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION"
  echo "$want" >"$stamp"
fi
cd "$root"
[ -x node_modules/.bin/buf ] || npm ci --no-audit --no-fund --loglevel=error
node_modules/.bin/buf generate --template sdk/go/buf.gen.yaml
echo "go: generated $(find sdk/go/gen -name '*.go' | wc -l) files in sdk/go/gen/aiprod/v1"
