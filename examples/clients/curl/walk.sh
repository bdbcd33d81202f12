#!/usr/bin/env bash
# The recovery over JSON/HTTP through Envoy (deploy/envoy/envoy.yaml), with curl and jq:
#
#   BASE=http://127.0.0.1:8080 S=127.0.0.1:50051 SERVICE_LOG=service.log bash walk.sh
#
# BASE is the gateway; S the service's gRPC port, used only to create the account (AccountService
# is internal: the gateway refuses its paths) and SERVICE_LOG the service's console, where the
# `log` notifier prints the code (the service runs with RECOVERY_CAPTCHA=off). Paths and bodies are
# those of docs/openapi.yaml; every error is a google.rpc.Status with an ErrorInfo reason.
set -euo pipefail
: "${BASE:?the gateway, e.g. http://127.0.0.1:8080}" "${S:?the gRPC address}" "${SERVICE_LOG:?the service log}"
LOGIN="curl-$(date +%s)$RANDOM@example.com"
OLD='Old-Granite-Harbor-73!' NEW='New-Velvet-Lantern-58?'

# POST a JSON body; prints the answer; fails unless the HTTP status is $2 (default 200).
post() { # path body [status]
  local out status
  out=$(mktemp)
  status=$(curl -sS -o "$out" -w '%{http_code}' -H 'content-type: application/json' -d "$2" "$BASE$1")
  cat "$out"; echo; rm -f "$out"
  [ "$status" = "${3:-200}" ] || { echo "curl walk: POST $1 answered HTTP $status, not ${3:-200}" >&2; return 1; }
}

grpcurl -plaintext -d "{\"login_id\":\"$LOGIN\",\"password\":\"$OLD\"}" "$S" identity.recovery.v1.AccountService/CreateAccount >/dev/null

echo "# StartRecovery: POST /v1/recovery/flows"
FLOW=$(post /v1/recovery/flows "{\"login_id\":\"$LOGIN\",\"locale\":\"en\"}" | tee /dev/stderr | jq -r .flow.flow_id)

echo "# SendVerificationCode: POST /v1/recovery/flows/$FLOW:sendCode"
post "/v1/recovery/flows/$FLOW:sendCode" '{"channel":"EMAIL"}' | jq -e '.flow.state == "CODE_SENT"' >/dev/null
CODE=""
for _ in $(seq 1 150); do
  CODE=$(awk -v to="message to $LOGIN -----" 'index($0, to) {m=1} m && /^ +[0-9]{6} *$/ {gsub(/ /, ""); print; exit}' "$SERVICE_LOG")
  [ -n "$CODE" ] && break
  sleep 0.1
done
[ -n "$CODE" ] || { echo "curl walk: no code in $SERVICE_LOG" >&2; exit 1; }

echo "# A wrong code: HTTP 400, google.rpc.Status with ErrorInfo CODE_INVALID"
WRONG=$(printf '%06d' $(( (10#$CODE + 1) % 1000000 )))
post "/v1/recovery/flows/$FLOW:verify" "{\"code\":\"$WRONG\"}" 400 |
  jq -e '.details[] | select(."@type" == "type.googleapis.com/google.rpc.ErrorInfo") | .reason == "CODE_INVALID"' >/dev/null

echo "# VerifyCode: POST /v1/recovery/flows/$FLOW:verify"
TOKEN=$(post "/v1/recovery/flows/$FLOW:verify" "{\"code\":\"$CODE\"}" | jq -r .reset_token)

echo "# ResetPassword: POST /v1/recovery:resetPassword"
post /v1/recovery:resetPassword \
  "{\"reset_token\":\"$TOKEN\",\"new_password\":\"$NEW\",\"new_password_confirmation\":\"$NEW\"}" |
  jq -e '.password_changed_at' >/dev/null

echo "# GetRecoveryFlow: GET /v1/recovery/flows/$FLOW"
curl -sS -f "$BASE/v1/recovery/flows/$FLOW" | jq -e '.state == "COMPLETED"' >/dev/null
echo "curl walk: the whole flow works through the gateway"
