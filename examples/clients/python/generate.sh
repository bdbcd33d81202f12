#!/usr/bin/env bash
# Generates the Python client of recovery-service from proto/ into ./gen (not committed):
# grpcio-tools' protoc for the messages and the gRPC stubs; the google.api and google.rpc modules
# the generated code imports come from googleapis-common-protos (a grpcio-tools dependency's peer,
# installed below if missing).
#   pip install grpcio-tools googleapis-common-protos
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
python3 -c 'import grpc_tools' 2>/dev/null || python3 -m pip install -q grpcio-tools
python3 -c 'import google.rpc.status_pb2, google.api.annotations_pb2' 2>/dev/null || python3 -m pip install -q googleapis-common-protos
rm -rf "$here/gen" && mkdir -p "$here/gen"
python3 -m grpc_tools.protoc -I "$root/proto" \
  --python_out="$here/gen" --pyi_out="$here/gen" --grpc_python_out="$here/gen" \
  "$root/proto/identity/recovery/v1/recovery.proto" "$root/proto/identity/recovery/v1/account.proto"
echo "generated into $here/gen"
