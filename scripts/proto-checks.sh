#!/usr/bin/env bash
# buf lint and buf breaking on the contract (buf.yaml at the top: the lint exceptions the
# contract forces, and the WIRE_JSON breaking rules). `buf breaking` compares proto/ with the
# previous commit's proto/; a history without one (a shallow clone) is an error, not a skip:
# fetch it with `git fetch --deepen=1`.
set -euo pipefail
cd "$(dirname "$0")/.."
BUF=${BUF:-web/node_modules/.bin/buf}
[ -x "$BUF" ] || { echo "proto-checks: $BUF is missing: cd web && npm ci" >&2; exit 1; }

"$BUF" lint
echo "buf lint: clean"

AGAINST=${BUF_AGAINST:-HEAD~1}
if ! git rev-parse --verify --quiet "$AGAINST^{commit}" >/dev/null; then
  echo "proto-checks: no commit $AGAINST to compare proto/ with (shallow clone? git fetch --deepen=1)" >&2
  exit 1
fi
"$BUF" breaking --against ".git#ref=$(git rev-parse "$AGAINST"),subdir=proto"
echo "buf breaking: no breaking change against $AGAINST ($(git rev-parse --short "$AGAINST"))"
