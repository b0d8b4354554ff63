#!/usr/bin/env bash
# Tests the Python SDK: installs its pinned deps into sdk/python/.venv, runs mypy --strict on the
# wrapper and the example, the unit tests, and the conformance scenario against a real server
# started with scripts/test-server.sh. Runs from any cwd; exits non-zero on any failure.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=_venv.sh
. "$here/_venv.sh"
python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e "$here"
cd "$here"

echo "== python: mypy --strict (src/aiprod, examples)"
mypy

echo "== python: starting a test server"
srv=$(mktemp -d)
cleanup() {
  rc=$?
  if [ "$rc" -ne 0 ] && [ -f "$srv/server.log" ]; then
    echo "== python: server log (panics and last lines)" >&2
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

echo "== python: pytest (unit tests + conformance scenario)"
python -m pytest -v -rs
