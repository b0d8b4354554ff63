#!/usr/bin/env bash
# Tests the Python SDK: installs its pinned deps into sdk/python/.venv; checks the version
# (= sdk/VERSION) and the LICENSE (= the root one); runs ruff and mypy --strict; starts a real server
# (scripts/test-server.sh); builds the wheel and sdist with `python -m build`, checks them with
# `twine check` and installs the WHEEL into a fresh venv in a temp dir outside the repository, where
# the README quickstart runs against the server and type-checks with mypy --strict; then runs the
# unit tests, the conformance scenario and the fault tests (restarts, rate limit) with pytest.
# Runs from any cwd; exits non-zero on any failure.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=_venv.sh
. "$here/_venv.sh"
python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e "$here"
cd "$here"

echo "== python: version and licence"
want=$(tr -d '[:space:]' <"$root/sdk/VERSION")
have=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' src/aiprod/_version.py)
if [ "$have" != "$want" ]; then
  echo "src/aiprod/_version.py says $have, sdk/VERSION says $want" >&2
  exit 1
fi
cmp "$root/LICENSE" LICENSE || { echo "sdk/python/LICENSE differs from the root LICENSE" >&2; exit 1; }
echo "version $have, LICENSE = root LICENSE"

echo "== python: ruff format --check, ruff check, mypy --strict (src/aiprod, examples)"
ruff format --check .
ruff check .
mypy

echo "== python: starting a test server"
srv=$(mktemp -d)
work=$(mktemp -d) # outside the repository: the build output and the fresh project
cleanup() {
  rc=$?
  if [ "$rc" -ne 0 ] && [ -f "$srv/server.log" ]; then
    echo "== python: server log (panics and last lines)" >&2
    grep -A3 'panicked' "$srv/server.log" >&2 || true
    tail -n 20 "$srv/server.log" >&2
  fi
  "$root/scripts/test-server.sh" stop "$srv"
  rm -rf "$srv" "$work"
  exit "$rc"
}
trap cleanup EXIT
"$root/scripts/test-server.sh" start "$srv" >/dev/null

echo "== python: python -m build (sdist, then the wheel from it) and twine check"
# --no-isolation: the build backend is the pinned hatchling of requirements-dev.txt.
python -m build --no-isolation --outdir "$work/dist" "$here" >"$work/build.log" 2>&1 || {
  cat "$work/build.log" >&2
  exit 1
}
wheel="$work/dist/aiprod-$want-py3-none-any.whl"
sdist="$work/dist/aiprod-$want.tar.gz"
twine check --strict "$wheel" "$sdist"
python - "$wheel" "$sdist" "$root/LICENSE" "$want" <<'EOF'
"""Both artifacts ship the LICENSE (the root one), Apache-2.0 metadata and the version."""
import sys, tarfile, zipfile
wheel, sdist, license_path, version = sys.argv[1:]
license_text = open(license_path, "rb").read()
with zipfile.ZipFile(wheel) as z:
    wheel_license = z.read(f"aiprod-{version}.dist-info/licenses/LICENSE")
    meta = z.read(f"aiprod-{version}.dist-info/METADATA").decode()
with tarfile.open(sdist) as t:
    member = t.extractfile(f"aiprod-{version}/LICENSE")
    assert member is not None
    sdist_license = member.read()
    pkg_info = t.extractfile(f"aiprod-{version}/PKG-INFO").read().decode()  # type: ignore[union-attr]
assert wheel_license == license_text, "the wheel's LICENSE differs from the root LICENSE"
assert sdist_license == license_text, "the sdist's LICENSE differs from the root LICENSE"
for name, m in (("wheel", meta), ("sdist", pkg_info)):
    assert "License-Expression: Apache-2.0" in m, f"{name}: no License-Expression: Apache-2.0"
    assert f"Version: {version}\n" in m, f"{name}: version is not {version}"
    assert "Project-URL: Repository, https://github.com/aiprod/aiprod" in m, f"{name}: no repository URL"
print(f"{wheel.rsplit('/', 1)[1]} and {sdist.rsplit('/', 1)[1]}: LICENSE, Apache-2.0, version {version}")
EOF

echo "== python: the wheel in a fresh project ($work/app): README quickstart against the server"
mkdir "$work/app"
python -m venv "$work/app/.venv"
mypy_pin=$(grep '^mypy==' requirements-dev.txt)
"$work/app/.venv/bin/python" -m pip install --quiet --disable-pip-version-check "$wheel[typing]" "$mypy_pin"
# The quickstart is the README's Python snippet, taken from examples/conformance.py like scripts/readme_snippets.py.
python - examples/conformance.py "$work/app/quickstart.py" <<'EOF'
import re, sys, textwrap
text = open(sys.argv[1]).read()
m = re.search(r"\[START quickstart\][^\n]*\n(.*?)\n[^\n]*\[END quickstart\]", text, re.S)
assert m, "no quickstart block in examples/conformance.py"
open(sys.argv[2], "w").write(textwrap.dedent(m.group(1)).strip("\n") + "\n")
EOF
(
  cd "$work/app"
  location=$(.venv/bin/python -c 'import aiprod; print(aiprod.__file__)')
  case "$location" in
  "$work/app/.venv/"*) ;;
  *) echo "aiprod was imported from $location, not from the installed wheel" >&2; exit 1 ;;
  esac
  .venv/bin/mypy --strict quickstart.py
  set -a
  # shellcheck disable=SC1091
  . "$srv/env"
  set +a
  .venv/bin/python quickstart.py | tail -n 2
  test -s video.mp4
)

export AIPROD_ENV_FILE="$srv/env" AIPROD_REQUIRE_CONFORMANCE=1
echo "== python: pytest (unit tests, typing, conformance scenario, fault tests against the server)"
python -m pytest -v -rs
