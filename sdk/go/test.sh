#!/usr/bin/env bash
# Tests the Go SDK: the packaging checks (LICENSE = the root LICENSE, Version = sdk/VERSION, the go
# directive = the README's "Go 1.xx+"), the quality gates (go vet, gofmt -l), then against a real
# server (scripts/test-server.sh) the unit tests, the quickstart + conformance scenario and the fault
# tests (restarts, rate limit), and finally the module as a partner gets it: published into a
# file:// GOPROXY (zip made by golang.org/x/mod/zip), fetched with `go get` by a fresh project in a
# temporary directory outside the repository, whose quickstart (examples/conformance/main.go, the
# README's) must deliver a video whose SHA-256 matches the server's. Runs from any cwd.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$here"
module=github.com/aiprod/aiprod/sdk/go
version=$(tr -d '[:space:]' <"$root/sdk/VERSION")

echo "== go: packaging checks"
cmp -s LICENSE "$root/LICENSE" || { echo "sdk/go/LICENSE differs from the root LICENSE" >&2; exit 1; }
grep -q "^const Version = \"$version\"$" aiprod/client.go ||
  { echo "aiprod.Version in aiprod/client.go is not sdk/VERSION ($version)" >&2; exit 1; }
godirective=$(sed -n 's/^go \([0-9]*\.[0-9]*\).*/\1/p' go.mod)
grep -q "Go $godirective+" README.md ||
  { echo "sdk/go/README.md does not say Go $godirective+ (go.mod: go $godirective)" >&2; exit 1; }
grep -q "^module $module$" go.mod || { echo "go.mod: module is not $module" >&2; exit 1; }
# The README's complete programs are the example files the tests run.
python3 - <<'PY'
import pathlib, re, sys
readme = pathlib.Path("README.md").read_text()
blocks = re.findall(r"<!-- file: (\S+) [^>]*-->\n```go\n(.*?)\n```", readme, re.S)
if len(blocks) < 2:
    sys.exit("sdk/go/README.md: the file blocks are missing")
for path, block in blocks:
    text = pathlib.Path(path).read_text()
    m = re.search(r"\[START quickstart\][^\n]*\n(.*?)\n[^\n]*\[END quickstart\]", text, re.S)
    if block.strip("\n") != (m.group(1) if m else text).strip("\n"):
        sys.exit(f"sdk/go/README.md: the block of {path} differs from the file")
PY

echo "== go: modules"
go mod download
go mod verify >/dev/null

echo "== go: go vet ./..."
go vet ./...
(cd tools/modproxy && go vet .)

echo "== go: gofmt -l"
unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
  echo "gofmt: these files need formatting:" >&2
  echo "$unformatted" >&2
  exit 1
fi

echo "== go: starting a test server"
srv=$(mktemp -d)
tmp=$(mktemp -d)
cleanup() {
  rc=$?
  if [ "$rc" -ne 0 ] && [ -f "$srv/server.log" ]; then
    echo "== go: server log (panics and last lines)" >&2
    grep -A3 'panicked' "$srv/server.log" >&2 || true
    tail -n 20 "$srv/server.log" >&2
  fi
  "$root/scripts/test-server.sh" stop "$srv"
  rm -rf "$srv" "$tmp"
  exit "$rc"
}
trap cleanup EXIT
"$root/scripts/test-server.sh" start "$srv" >/dev/null
export AIPROD_ENV_FILE="$srv/env" AIPROD_REQUIRE_CONFORMANCE=1 AIPROD_TEST_SERVER="$root/scripts/test-server.sh"

echo "== go: go test (unit tests, quickstart + conformance scenario, fault tests)"
log="$srv/go-test.log"
set +e
go test -count=1 -v ./... >"$log" 2>&1
status=$?
set -e
grep -v '^[0-9]* JOB_STATE_' "$log" # the quickstart's event lines are noise here
passed=$(grep -c -- '--- PASS' "$log" || true)
failed=$(grep -c -- '--- FAIL' "$log" || true)
skipped=$(grep -c -- '--- SKIP' "$log" || true)
echo "go: $passed passed, $failed failed, $skipped skipped"
[ "$status" -eq 0 ] || exit "$status"

echo "== go: examples/production (the README's settings program)"
prod=$(set -a && . "$srv/env" && go run ./examples/production 2>&1)
echo "$prod"
echo "$prod" | grep -q 'CreateJob attempt 1: InvalidArgument' && echo "$prod" | grep -q '^  brief: ' ||
  { echo "examples/production: no hook line or no field violation" >&2; exit 1; }

echo "== go: the module from a GOPROXY, in a fresh project outside the repository"
(cd tools/modproxy && go run . -dir "$here" -module "$module" -version "v$version" -out "$tmp/proxy")
# The version is not published: drop what an earlier run left in the module cache, so that the
# project gets this zip (the rest of the cache serves the dependencies).
modcache=$(go env GOMODCACHE)
if [ -d "$modcache/$module@v$version" ]; then
  chmod -R u+w "$modcache/$module@v$version"
  rm -rf "$modcache/$module@v$version"
fi
rm -f "$modcache/cache/download/$module/@v/v$version."*
mkdir -p "$tmp/quickstart" "$tmp/run"
cp examples/conformance/main.go "$tmp/quickstart/main.go"
(
  cd "$tmp/quickstart"
  export GOPROXY="file://$tmp/proxy,$(go env GOPROXY)" GONOSUMDB=github.com/aiprod/aiprod GOWORK=off
  go mod init example.com/quickstart >/dev/null 2>&1
  go get "$module@v$version"
  go mod tidy
  grep -q "^$module v$version h1:" go.sum
  go build -o "$tmp/run/quickstart" .
)
# shellcheck disable=SC1091
. "$srv/env"
out=$(cd "$tmp/run" && AIPROD_ENDPOINT=$AIPROD_ENDPOINT AIPROD_API_KEY=$AIPROD_API_KEY ./quickstart)
echo "$out" | grep -v '^[0-9]* JOB_STATE_'
echo "$out" | grep -q 'JOB_STATE_DELIVERED' || { echo "the quickstart's job did not reach DELIVERED" >&2; exit 1; }
line=$(echo "$out" | grep '^video.mp4: ')
want_size=$(echo "$line" | sed -n 's/^video.mp4: \([0-9]*\) bytes.*/\1/p')
want_sha=$(echo "$line" | sed -n 's/.*sha256 \([0-9a-f]*\)$/\1/p')
got_size=$(wc -c <"$tmp/run/video.mp4" | tr -d ' ')
got_sha=$(sha256sum "$tmp/run/video.mp4" | cut -d' ' -f1)
if [ "$got_size" != "$want_size" ] || [ "$got_sha" != "$want_sha" ]; then
  echo "video.mp4: $got_size bytes, sha256 $got_sha; the server said $want_size bytes, sha256 $want_sha" >&2
  exit 1
fi
echo "go: $module@v$version from a GOPROXY: quickstart delivered video.mp4, $got_size bytes, sha256 verified"
