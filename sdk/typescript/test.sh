#!/usr/bin/env bash
# Tests the TypeScript SDK end to end: installs its dependencies (npm ci), checks the package
# metadata (version = sdk/VERSION, Apache-2.0, LICENSE = the root one), type-checks (strict), checks
# the generated code is up to date, packs the npm tarball (`npm pack`, whose prepack builds the ESM
# and CommonJS entries), starts a real server and runs the unit tests, the server tests and the
# conformance scenario, then the fault tests (server restarts, a rate-limited tenant, deadlines),
# and finally installs the TARBALL into a fresh npm project outside the repository and runs a
# quickstart there with `import` and with `require`, and type-checks an ESM and a CJS consumer and
# the README's complete snippets.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$here"

echo "== install (npm ci)"
npm ci --no-audit --no-fund --loglevel=error

echo "== package metadata"
version=$(tr -d '[:space:]' <"$root/sdk/VERSION")
node -e '
  const [version] = process.argv.slice(1);
  const pkg = require("./package.json");
  const fail = (m) => { console.error("package.json: " + m); process.exit(1); };
  if (pkg.version !== version) fail(`version ${pkg.version} != sdk/VERSION ${version}`);
  if (pkg.license !== "Apache-2.0") fail(`license ${pkg.license}`);
  if (!pkg.repository?.url?.includes("github.com/aiprod/aiprod") || pkg.homepage !== "https://github.com/aiprod/aiprod") fail("repository/homepage");
  if (pkg.scripts?.prepack === undefined) fail("no prepack script");
' "$version"
grep -qx "export const VERSION = \"$version\";" src/version.ts || { echo "src/version.ts != sdk/VERSION $version" >&2; exit 1; }
cmp LICENSE "$root/LICENSE" || { echo "sdk/typescript/LICENSE differs from the root LICENSE" >&2; exit 1; }

echo "== typecheck (tsc --noEmit, strict)"
node_modules/.bin/tsc -p tsconfig.json --noEmit

echo "== generated code is up to date"
./codegen.sh
if git -C "$root" rev-parse --git-dir >/dev/null 2>&1; then
  git -C "$root" diff --exit-code --stat -- sdk/typescript/src/gen
  untracked=$(git -C "$root" ls-files --others --exclude-standard -- sdk/typescript/src/gen)
  [ -z "$untracked" ] || { echo "untracked generated files: $untracked" >&2; exit 1; }
fi

work=$(mktemp -d)
server_dir="$work/server"
cleanup() {
  "$root/scripts/test-server.sh" stop "$server_dir" || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== npm pack (prepack builds dist/src (ESM) and dist/cjs (CommonJS))"
rm -rf dist
npm pack --pack-destination "$work" --loglevel=error >/dev/null
tarball="$work/aiprod-sdk-$version.tgz"
contents=$(tar -tzf "$tarball")
for f in package/LICENSE package/README.md package/dist/src/index.js package/dist/src/index.d.ts \
  package/dist/cjs/index.js package/dist/cjs/index.d.ts package/dist/cjs/package.json; do
  grep -qx "$f" <<<"$contents" || { echo "$f missing from the tarball" >&2; exit 1; }
done
if grep -q "^package/dist/test/" <<<"$contents"; then echo "tests in the tarball" >&2; exit 1; fi

echo "== build the tests (tsc)"
node_modules/.bin/tsc -p tsconfig.json

echo "== start a server"
"$root/scripts/test-server.sh" start "$server_dir" >/dev/null
set -a
# shellcheck disable=SC1091
. "$server_dir/env"
set +a

echo "== unit tests, server tests, conformance (node --test)"
node --test dist/test/unit/ dist/test/server.test.js dist/test/conformance.test.js

echo "== fault tests: restarts, a rate-limited tenant, deadlines (node --test, on their own)"
AIPROD_TEST_SERVER_DIR="$server_dir" AIPROD_TEST_SERVER_SCRIPT="$root/scripts/test-server.sh" node --test dist/test/faults/
# The restart rewrote the env file (new pid; same port and keys).
set -a
# shellcheck disable=SC1091
. "$server_dir/env"
set +a

echo "== the tarball in a fresh npm project outside the repository"
project="$work/fresh-project"
mkdir -p "$project"
case "$project" in "$root"/*) echo "the fresh project must be outside the repository" >&2; exit 1 ;; esac
cp package-test/quickstart.mjs package-test/quickstart.cjs package-test/typed.ts package-test/typed-cjs.cts package-test/tsconfig.json "$project/"
(
  cd "$project"
  npm init -y >/dev/null
  npm install --no-audit --no-fund --loglevel=error "$tarball" "@types/node@$(node -p 'require("'"$here"'/package.json").devDependencies["@types/node"]')"
  [ ! -L node_modules/@aiprod/sdk ] || { echo "installed as a symlink" >&2; exit 1; }
  node quickstart.mjs
  node quickstart.cjs
  node "$here/package-test/readme-snippets.mjs" "$here/README.md"
  "$here/node_modules/.bin/tsc" -p tsconfig.json
  echo "typescript consumers (ESM, CommonJS, the README's snippets) type-check against the tarball's declarations"
)
echo "== typescript SDK: all tests passed"
