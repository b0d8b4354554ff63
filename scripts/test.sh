#!/usr/bin/env bash
# The one test command: every test of the repository, Rust and every SDK.
#   1. proto checks: buf lint; buf breaking against the previous commit
#   2. cargo test --workspace (domain unit/property tests; end-to-end tests on SQLite and on a
#      throwaway PostgreSQL cluster that the tests start themselves)
#   3. generated SDK code is fresh (regenerate, then git diff --exit-code)
#   4. each SDK's own quality gates, unit tests and the conformance scenario against a real server
# Installs what it needs locally (npm ci, a Python venv, Go modules). Exits non-zero on any failure.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
started=$(date +%s)
passed=()
step() { echo; echo "=== $*"; }

step "proto: buf lint and buf breaking"
[ -x node_modules/.bin/buf ] || npm ci --no-audit --no-fund --loglevel=error
node_modules/.bin/buf lint
if git rev-parse --verify --quiet HEAD~1 >/dev/null && git cat-file -e HEAD~1:proto/aiprod/v1 2>/dev/null; then
  node_modules/.bin/buf breaking --against '.git#ref=HEAD~1'
fi
passed+=("proto")

step "rust: cargo test --workspace"
cargo test --workspace
passed+=("rust")

step "sdk: generated code and README snippets are fresh"
scripts/codegen.sh
generated=(sdk/rust/proto sdk/rust/LICENSE sdk/python/src/aiprod/v1 sdk/python/src/aiprod/_google sdk/python/src/aiprod/_services.py sdk/typescript/src/gen sdk/go/gen)
if ! git diff --exit-code --stat -- "${generated[@]}" || [ -n "$(git status --porcelain --untracked-files=all -- "${generated[@]}")" ]; then
  echo "generated SDK code is stale: run scripts/codegen.sh and commit the result" >&2
  exit 1
fi
python3 scripts/readme_snippets.py --check
passed+=("codegen")

for lang in rust python typescript go; do
  step "sdk/$lang"
  "sdk/$lang/test.sh"
  passed+=("sdk/$lang")
done

echo
echo "=== all suites passed in $(( $(date +%s) - started )) s: ${passed[*]}"
echo "suites: ${#passed[@]} passed, 0 failed"
