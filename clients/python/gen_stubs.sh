#!/usr/bin/env bash
# Regenerates the committed Python stubs in corelm/v1 from ../../proto, with
# Debian's protoc (protobuf-compiler) and gRPC's Python plugin
# (protobuf-compiler-grpc) — no Python package index needed:
#
#   apt-get install -y protobuf-compiler protobuf-compiler-grpc
#   ./gen_stubs.sh            # or: ./gen_stubs.sh OUTDIR
#
# Run it after changing a .proto; services/inference/python_test.go checks
# the committed stubs are what this script makes.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here}"
plugin="$(command -v grpc_python_plugin)" || { echo "gen_stubs.sh: grpc_python_plugin not found (apt-get install protobuf-compiler-grpc)" >&2; exit 1; }
mkdir -p "$out/corelm/v1"
protoc -I "$here/../../proto" \
	--python_out="$out" --pyi_out="$out" \
	--plugin=protoc-gen-grpc_python="$plugin" --grpc_python_out="$out" \
	corelm/v1/inference.proto corelm/v1/loader.proto
# Regular packages, so a stray "corelm" elsewhere on sys.path cannot shadow them.
: >"$out/corelm/__init__.py"
: >"$out/corelm/v1/__init__.py"
