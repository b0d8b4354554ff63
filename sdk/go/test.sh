#!/usr/bin/env bash
# Tests the Go SDK: downloads its modules, runs the quality gates (go vet, gofmt -l), the unit
# tests, and the conformance scenario (examples/conformance) against a real server started with
# scripts/test-server.sh. Runs from any cwd; exits non-zero on any failure.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$here"

echo "== go: modules"
go mod download
go mod verify >/dev/null

echo "== go: go vet ./..."
go vet ./...

echo "== go: gofmt -l"
unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
  echo "gofmt: these files need formatting:" >&2
  echo "$unformatted" >&2
  exit 1
fi

echo "== go: starting a test server"
srv=$(mktemp -d)
cleanup() {
  rc=$?
  if [ "$rc" -ne 0 ] && [ -f "$srv/server.log" ]; then
    echo "== go: server log (panics and last lines)" >&2
    grep -A3 'panicked' "$srv/server.log" >&2 || true
    tail -n 20 "$srv/server.log" >&2
  fi
  "$root/scripts/test-server.sh" stop "$srv"
  rm -rf "$srv"
  exit "$rc"
}
trap cleanup EXIT
"$root/scripts/test-server.sh" start "$srv" >/dev/null
export AIPROD_ENV_FILE="$srv/env" AIPROD_REQUIRE_CONFORMANCE=1

echo "== go: go test (unit tests + conformance scenario)"
log="$srv/go-test.log"
set +e
go test -count=1 -v ./... >"$log" 2>&1
status=$?
set -e
cat "$log"
passed=$(grep -c -- '--- PASS' "$log" || true)
failed=$(grep -c -- '--- FAIL' "$log" || true)
skipped=$(grep -c -- '--- SKIP' "$log" || true)
echo "go: $passed passed, $failed failed, $skipped skipped"
exit "$status"
