#!/usr/bin/env bash
# The one codegen command: regenerates every SDK's committed code from proto/.
# Each SDK owns its generator in sdk/<lang>/codegen.sh; the Rust SDK generates at build time.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
[ -x node_modules/.bin/buf ] || npm ci --no-audit --no-fund --loglevel=error
node_modules/.bin/buf lint
for lang in python typescript go; do
  if [ -x "sdk/$lang/codegen.sh" ]; then
    echo "== codegen: $lang"
    "sdk/$lang/codegen.sh"
  fi
done
# The README's per-language snippets are the examples' quickstart blocks.
python3 scripts/readme_snippets.py
