#!/usr/bin/env bash
# Regenerates the TypeScript SDK's committed code (src/gen) from proto/ (aiprod/v1 and the
# wire-compatible google/bytestream/bytestream.proto) and the vendored google/rpc/error_details.proto
# (sdk/typescript/proto, copied from the tonic-types crate, Apache-2.0).
# Uses only local tools: buf from the repo's node_modules and protoc-gen-es from this package's node_modules.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
[ -x node_modules/.bin/buf ] || npm ci --no-audit --no-fund --loglevel=error
[ -x sdk/typescript/node_modules/.bin/protoc-gen-es ] || (cd sdk/typescript && npm ci --no-audit --no-fund --loglevel=error)
node_modules/.bin/buf generate --template sdk/typescript/buf.gen.yaml
