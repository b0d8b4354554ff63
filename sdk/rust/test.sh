#!/usr/bin/env bash
# Runs the Rust SDK's conformance example against a real server started by scripts/test-server.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
cargo build --quiet --bin aiprod --example conformance -p aiprod -p aiprod-sdk
srv=$(mktemp -d)
cleanup() {
  rc=$?
  [ "$rc" -ne 0 ] && [ -f "$srv/server.log" ] && tail -n 40 "$srv/server.log" >&2
  "$root/scripts/test-server.sh" stop "$srv"
  rm -rf "$srv"
  exit "$rc"
}
trap cleanup EXIT
"$root/scripts/test-server.sh" start "$srv" >/dev/null
# In the server's scratch directory: the scenario downloads video.mp4 into its working directory.
(cd "$srv" && AIPROD_ENV_FILE="$srv/env" "$root/target/debug/examples/conformance")
