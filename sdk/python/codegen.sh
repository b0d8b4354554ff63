#!/usr/bin/env bash
# Regenerates the Python SDK's committed code from proto/aiprod/v1:
#   src/aiprod/v1/*_pb2.py, *_pb2.pyi, *_pb2_grpc.py, *_pb2_grpc.pyi  (grpcio-tools + mypy-protobuf)
#   src/aiprod/v1/__init__.py, src/aiprod/_services.py                (tools/gen_services.py)
# Tools are pinned in requirements-dev.txt and installed into sdk/python/.venv. Idempotent.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=_venv.sh
. "$here/_venv.sh"
cd "$root/proto"
protos=$(find aiprod/v1 -name '*.proto' | LC_ALL=C sort)
out="$here/src"
rm -f "$out"/aiprod/v1/*_pb2.py "$out"/aiprod/v1/*_pb2.pyi "$out"/aiprod/v1/*_pb2_grpc.py "$out"/aiprod/v1/*_pb2_grpc.pyi
mkdir -p "$out/aiprod/v1"
# shellcheck disable=SC2086
python -m grpc_tools.protoc -I . \
  --plugin=protoc-gen-mypy="$venv/bin/protoc-gen-mypy" \
  --plugin=protoc-gen-mypy_grpc="$venv/bin/protoc-gen-mypy_grpc" \
  --python_out="$out" --mypy_out="$out" \
  --grpc_python_out="$out" --mypy_grpc_out="$out" \
  $protos 2> >(grep -v '^Writing mypy to' >&2)
# Files without services get an empty *_pb2_grpc.py: drop them.
for f in "$out"/aiprod/v1/*_pb2_grpc.py; do
  grep -q 'Stub' "$f" || rm -f "$f" "${f}i"
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# shellcheck disable=SC2086
python -m grpc_tools.protoc -I . --include_source_info --descriptor_set_out="$tmp/aiprod.binpb" $protos
python "$here/tools/gen_services.py" "$tmp/aiprod.binpb" "$out"
echo "python: generated $(find "$out/aiprod/v1" -name '*_pb2*' | wc -l) files in sdk/python/src/aiprod/v1"
