#!/usr/bin/env bash
# The Rust SDK's checks, against a real server started by scripts/test-server.sh:
#   1. packaging: version = sdk/VERSION, LICENSE = the repository's, `cargo package` (which builds
#      the crate from its own files: vendored protos, no ../../proto);
#   2. the packaged crate in a fresh cargo project in a temp dir OUTSIDE the repository: the .crate
#      is unpacked there and the project depends on the unpacked directory by path (what a registry
#      would download); it runs quickstart/main.rs (create, watch to DELIVERED, download) and the
#      video's size and SHA-256 are checked against the server's answer;
#   3. unit tests, the conformance scenario, and the fault scenarios (examples/faults.rs: restarts
#      mid-call and mid-watch, the rate-limited Bronze tenant, deadlines).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"

version=$(sed -n 's/^version = "\(.*\)"/\1/p' sdk/rust/Cargo.toml | head -n1)
[ "$version" = "$(cat sdk/VERSION)" ] || { echo "sdk/rust/Cargo.toml version $version != sdk/VERSION $(cat sdk/VERSION)" >&2; exit 1; }
cmp -s LICENSE sdk/rust/LICENSE || { echo "sdk/rust/LICENSE differs from LICENSE (run scripts/codegen.sh)" >&2; exit 1; }
diff -r proto/aiprod sdk/rust/proto/aiprod >/dev/null && diff -r proto/google sdk/rust/proto/google >/dev/null \
  || { echo "sdk/rust/proto is stale (run scripts/codegen.sh)" >&2; exit 1; }

cargo package --quiet -p aiprod-sdk --allow-dirty
crate="$root/target/package/aiprod-sdk-$version.crate"
files=$(tar -tzf "$crate")
for f in LICENSE README.md build.rs proto/aiprod/v1/render_service.proto proto/google/bytestream/bytestream.proto; do
  grep -qx "aiprod-sdk-$version/$f" <<<"$files" || { echo "the crate lacks $f" >&2; exit 1; }
done

cargo build --quiet --bin aiprod --examples -p aiprod -p aiprod-sdk
cargo test --quiet -p aiprod-sdk --lib

srv=$(mktemp -d)
fresh=$(mktemp -d)
cleanup() {
  rc=$?
  [ "$rc" -ne 0 ] && [ -f "$srv/server.log" ] && tail -n 40 "$srv/server.log" >&2
  "$root/scripts/test-server.sh" stop "$srv"
  rm -rf "$srv" "$fresh"
  exit "$rc"
}
trap cleanup EXIT
"$root/scripts/test-server.sh" start "$srv" >/dev/null

echo "== packaged crate in a fresh project ($fresh)"
tar -xzf "$crate" -C "$fresh"
mkdir -p "$fresh/app/src"
cp "$fresh/aiprod-sdk-$version/quickstart/main.rs" "$fresh/app/src/main.rs"
cat >"$fresh/app/Cargo.toml" <<TOML
[package]
name = "quickstart"
version = "0.0.0"
edition = "2024"
publish = false

[dependencies]
aiprod-sdk = { path = "../aiprod-sdk-$version" }
tokio = { version = "1", features = ["macros", "rt-multi-thread"] }
TOML
# The workspace's lock file pins the same dependency versions (cargo drops what is unused); a
# target directory kept between runs under target/ only caches compiled dependencies.
cp Cargo.lock "$fresh/app/Cargo.lock"
(cd "$fresh/app" && set -a && . "$srv/env" && set +a &&
  CARGO_TARGET_DIR="$root/target/sdk-rust-fresh" cargo run --quiet) | tee "$fresh/out.txt"
read -r _ size sha < <(grep '^video.mp4 ' "$fresh/out.txt")
[ "$(stat -c %s "$fresh/app/video.mp4")" = "$size" ] || { echo "video size mismatch" >&2; exit 1; }
[ "$(sha256sum "$fresh/app/video.mp4" | cut -d' ' -f1)" = "$sha" ] || { echo "video SHA-256 mismatch" >&2; exit 1; }
echo "quickstart video verified: $size bytes, sha256 $sha"

echo "== conformance"
# In the server's scratch directory: the scenario downloads video.mp4 into its working directory.
(cd "$srv" && AIPROD_ENV_FILE="$srv/env" "$root/target/debug/examples/conformance")
echo "== faults"
AIPROD_ENV_FILE="$srv/env" AIPROD_TEST_SERVER="$root/scripts/test-server.sh" "$root/target/debug/examples/faults"
