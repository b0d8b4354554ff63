#!/usr/bin/env bash
# Tests the TypeScript SDK end to end: installs its dependencies (npm ci), type-checks (strict),
# checks the generated code is up to date, builds, starts a real server and runs the unit tests and
# the conformance scenario (examples/conformance.ts) with node's test runner.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$here"

echo "== install (npm ci)"
npm ci --no-audit --no-fund --loglevel=error

echo "== typecheck (tsc --noEmit, strict)"
node_modules/.bin/tsc -p tsconfig.json --noEmit

echo "== generated code is up to date"
./codegen.sh
if git -C "$root" rev-parse --git-dir >/dev/null 2>&1; then
  git -C "$root" diff --exit-code --stat -- sdk/typescript/src/gen
  untracked=$(git -C "$root" ls-files --others --exclude-standard -- sdk/typescript/src/gen)
  [ -z "$untracked" ] || { echo "untracked generated files: $untracked" >&2; exit 1; }
fi

echo "== build (tsc)"
rm -rf dist
node_modules/.bin/tsc -p tsconfig.json

echo "== start a server"
server_dir=$(mktemp -d)
cleanup() {
  "$root/scripts/test-server.sh" stop "$server_dir" || true
  rm -rf "$server_dir"
}
trap cleanup EXIT
"$root/scripts/test-server.sh" start "$server_dir" >/dev/null
set -a
# shellcheck disable=SC1091
. "$server_dir/env"
set +a

echo "== unit tests + conformance (node --test)"
node --test dist/test/
