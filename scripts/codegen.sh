#!/usr/bin/env bash
# The one codegen command: regenerates every SDK's committed code from proto/.
# Each SDK owns its generator in sdk/<lang>/codegen.sh; the Rust SDK generates at build time from
# the protos vendored into its crate (copied here, so the published crate builds on its own).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
[ -x node_modules/.bin/buf ] || npm ci --no-audit --no-fund --loglevel=error
node_modules/.bin/buf lint
echo "== codegen: rust (vendored protos, LICENSE)"
rm -rf sdk/rust/proto
mkdir -p sdk/rust/proto/aiprod sdk/rust/proto/google/bytestream
cp -R proto/aiprod/v1 sdk/rust/proto/aiprod/
cp proto/google/bytestream/bytestream.proto sdk/rust/proto/google/bytestream/
cp LICENSE sdk/rust/LICENSE
for lang in python typescript go; do
  if [ -x "sdk/$lang/codegen.sh" ]; then
    echo "== codegen: $lang"
    "sdk/$lang/codegen.sh"
  fi
done
# The README's per-language snippets are the examples' quickstart blocks.
python3 scripts/readme_snippets.py
