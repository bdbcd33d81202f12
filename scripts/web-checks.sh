#!/usr/bin/env bash
# The checks the ecosystem's own tools make on this service, run by scripts/test.sh
# after the cargo suites (it needs the debug binary, target/debug/recovery-service):
#
#   1. npm ci (pinned by web/package-lock.json);
#   2. deploy/ validated offline (scripts/deploy_checks.py);
#   3. docs/openapi.yaml valid (openapi-spec-validator), docs/config.schema.json a valid schema and
#      the example configuration valid against it as editors see it (taplo); buf lint and buf
#      breaking on proto/ (against the previous commit's proto/);
#   4. the web bundle is up to date: TypeScript regenerated from proto/ and type-checked, the
#      bundle rebuilt, and neither may differ from what is committed (the binary embeds
#      web/dist/, so a stale bundle would ship);
#   5. the clients against one started binary (scripts/client-checks.sh): the README's grpcurl
#      walk-through, the Python client generated from proto/, the curl walk through Envoy;
#   6. node --test: the grpc-js client, the browser and the accessibility (headless Chromium,
#      axe-core) suites against the real binary;
#   7. traces exported to a real OTLP receiver.
#
# Needs node/npm, chromium and the pinned Python checkers: scripts/test-services.sh installs them.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${RECOVERY_TEST_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/debug/recovery-service}
[ -x "$BIN" ] || { echo "web-checks: $BIN is missing; run cargo build first" >&2; exit 1; }
export RECOVERY_TEST_BIN=$BIN

echo "== npm ci (web/)"
(cd web && npm ci --no-audit --no-fund --loglevel=error)

echo "== deploy/: Kubernetes schemas and policy, compose spec, Dockerfile, binary linkage"
python3 scripts/deploy_checks.py "$BIN"

echo "== docs/openapi.yaml is valid OpenAPI; TOML checked against docs/config.schema.json as editors do"
openapi-spec-validator docs/openapi.yaml
check-jsonschema --check-metaschema docs/config.schema.json
# taplo reads the `#:schema ./config.schema.json` directive of the file, as an editor does.
taplo check docs/recovery.example.toml 2>&1 | grep -v ' INFO ' || true
taplo check docs/recovery.example.toml >/dev/null 2>&1 || { echo "web-checks: taplo refuses docs/recovery.example.toml" >&2; exit 1; }
broken=$(mktemp -d)
printf '#:schema %s/docs/config.schema.json\n[flow]\nmax_attempts = 0\n' "$PWD" >"$broken/recovery.toml"
if taplo check "$broken/recovery.toml" >/dev/null 2>&1; then
  echo "web-checks: taplo accepted flow.max_attempts = 0: the schema lost its bounds" >&2; exit 1
fi
rm -rf "$broken"

echo "== buf lint, buf breaking"
bash scripts/proto-checks.sh

echo "== web bundle up to date with its sources"
# Hash what is on disk (what cargo embeds), rebuild, hash again: any difference means the
# bundle or the generated code was not rebuilt after a change to web/src or proto/.
snapshot() { (cd web && find dist src/gen -type f -print0 | sort -z | xargs -0 sha256sum); }
before=$(snapshot)
(cd web && npm run --silent generate && npm run --silent typecheck && npm run --silent build)
if [ "$before" != "$(snapshot)" ]; then
  diff <(echo "$before") <(snapshot) >&2 || true
  echo "web-checks: web/dist or web/src/gen was stale; it is rebuilt now: rebuild the binary and commit both" >&2
  exit 1
fi
echo "web/dist and web/src/gen match their sources"

echo "== clients: the README's grpcurl walk-through, the Python client, the curl walk through Envoy"
bash scripts/client-checks.sh

echo "== node --test: grpc-js client, browser, accessibility"
(cd web && npm test --silent)

echo "== traces and metrics to a real OTLP receiver (oteltest's otelsink)"
python3 scripts/otlp_receiver_check.py "$BIN"
