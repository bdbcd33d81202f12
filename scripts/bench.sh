#!/usr/bin/env bash
# Performance, measured side by side: one command, one report, its pictures.
#
#   bash scripts/bench.sh           # full run (~17 min on a 2-core box), writes benches/REPORT.md
#   bash scripts/bench.sh --quick   # the same steps, short (~4 min); the report says "quick"
#   add --no-build to use the release binaries already in the target directory;
#   bash scripts/bench.sh --render DIR   # only rewrite the report (and pictures) from DIR/runs.jsonl
#
# Next to the report it writes the run's data (results/bench.jsonl: runs.jsonl after a line
# saying whether the run was quick) and the pictures scripts/plots.py draws from it:
# bench-throughput.svg, bench-latency.svg (against calls in flight, one panel per RPC) and
# bench-ratio.svg (each RPC's rate as a share of the no-op's). The report's generated block starts
# with those pictures and a verdict paragraph written from the numbers (plots.bench_verdict);
# `python3 scripts/plots.py check` (in scripts/test.sh) checks the committed pictures and verdict
# against the committed data.
#
# Builds the release binaries (service + src/bin/loadgen), starts a real SMTP sink (aiosmtpd) and
# the service twice — on the embedded defaults (SQLite + in-process store) and on Redis +
# PostgreSQL (a private database and key prefix) — with rate limits off, captcha off, the SMTP
# notifier, the resend cooldown off and the per-flow send and attempt limits at the
# configuration's maxima, so one prepared flow serves many sends and wrong codes. For each backend it measures:
#   - start to SERVING (Health/Check), from the process's start;
#   - the raw argon2id rate with the service's parameters and permits (the recovery ceiling);
#   - every scenario at 1, 16 and 64 in flight, with the no-op Health/Check of the same run;
#   - GetRecoveryFlow p99 alone and while CreateCaptcha, worst-case ValidatePassword and
#     VerifyPassword are each flooded at 64 in flight;
#   - CPU seconds per 1,000 calls of the service, redis-server and PostgreSQL (the bench
#     database's backends and PostgreSQL's background processes), the load generator and the whole
#     machine, from /proc/<pid>/stat and /proc/stat over the measured calls (no perf needed), for
#     the cheap RPCs at 64 in flight; and the whole recovery's time per step (start, send, mail
#     wait, verify, reset, login);
#   - peak RSS under 1,000 concurrent ResetPassword calls on a *fresh* server process (a new one,
#     on a new database, started for the flood): RSS after start, peak (VmHWM, reset after the
#     start) during the flood, and the difference.
# PostgreSQL is on the same host, so the URL says sslmode=disable (a deployment with TLS to its
# database pays the TLS cost on every query on top of these figures).
# Every run appends a JSON line to $OUT/runs.jsonl; the report is rendered from those lines.
# Ratios within one run are what count: this machine is shared and noisy.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
BUILD=1
RENDER_ONLY=""
while (($#)); do
  case "$1" in
    --quick) QUICK=1 ;;
    --no-build) BUILD=0 ;;
    --render) RENDER_ONLY=$2; shift ;;
    *) echo "usage: $0 [--quick] [--no-build] | --render DIR"; exit 2 ;;
  esac
  shift
done

# The pictures need matplotlib (pinned; scripts/test-services.sh installs it): say so before the run.
python3 -c 'import matplotlib' 2>/dev/null ||
  { echo "matplotlib is missing: bash scripts/test-services.sh (or pip install matplotlib==3.11.2)"; exit 1; }

TARGET_DIR=${CARGO_TARGET_DIR:-target}
REPORT=${BENCH_REPORT:-benches/REPORT.md}
if [[ -n "$RENDER_ONLY" ]]; then
  OUT=$RENDER_ONLY
  JSON="$OUT/runs.jsonl"
  QUICK=$(cat "$OUT/quick" 2>/dev/null || echo 0)
else
  OUT=${BENCH_OUT:-$(mktemp -d /tmp/recovery-bench.XXXXXX)}
  mkdir -p "$OUT/mail"
  JSON="$OUT/runs.jsonl"
  : >"$JSON"
  echo "$QUICK" >"$OUT/quick"
  cut -d' ' -f1 /proc/loadavg >"$OUT/loadavg" # before the run, for the report's header
fi

if [[ -z "$RENDER_ONLY" ]]; then
if ((QUICK)); then
  SECS=1; K_CANCEL=1000; K_VERIFY=60; K_RESET=24; K_RECOVERY=16; FLOOD_RESET=200; ARGON_SECS=3
  K_CPU=4000
else
  SECS=4; K_CANCEL=6000; K_VERIFY=400; K_RESET=160; K_RECOVERY=120; FLOOD_RESET=1000; ARGON_SECS=8
  K_CPU=20000
fi
LEVELS=(1 16 64)

if ((BUILD)); then
  echo "== building release binaries"
  cargo build --release --locked --bin recovery-service --bin loadgen
fi
SERVICE="$TARGET_DIR/release/recovery-service"
LOADGEN="$TARGET_DIR/release/loadgen"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

SMTP_PORT=$(free_port)
RUN_ID=$(head -c6 /dev/urandom | od -An -tx1 | tr -d ' \n')
PG_DB="bench_${RUN_ID}"
SINK_PID=""
SERVER_PID=""

cleanup() {
  [[ -n "$SERVER_PID" ]] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
  [[ -n "$SINK_PID" ]] && kill "$SINK_PID" 2>/dev/null && wait "$SINK_PID" 2>/dev/null || true
  for db in "$PG_DB" "${PG_DB}_rss"; do
    psql -h 127.0.0.1 -U postgres -d test -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  done
  redis-cli -h 127.0.0.1 -p 6379 --scan --pattern "bench:${RUN_ID}:*" 2>/dev/null |
    xargs -r -n 500 redis-cli -h 127.0.0.1 -p 6379 del >/dev/null 2>&1 || true
}
trap cleanup EXIT

python3 -c 'import aiosmtpd' || { echo "aiosmtpd is missing: pip install aiosmtpd (scripts/test-services.sh)"; exit 1; }
python3 tests/support/smtp_sink.py --port "$SMTP_PORT" --dir "$OUT/mail" 2>"$OUT/smtp.log" &
SINK_PID=$!

# Settings shared by both backends: see the header.
export RECOVERY_CAPTCHA=off
export RECOVERY_RATE_LIMITS__ENABLED=false
export RECOVERY_NOTIFIER=smtp
export RECOVERY_SMTP_URL="smtp://127.0.0.1:$SMTP_PORT"
export RECOVERY_SECRET="bench-secret-${RUN_ID}-0123456789-0123456789"
export RECOVERY_FLOW__RESEND_COOLDOWN_SECS=0
# The configuration's maxima (strict config refuses more): a prepared flow then takes 50 sends
# and 19 wrong codes (the 20th kills it), hence the --reuse values below.
export RECOVERY_FLOW__MAX_SENDS=50
export RECOVERY_FLOW__MAX_ATTEMPTS=20
export RECOVERY_LOG_FORMAT=text
export RUST_LOG=${RUST_LOG:-warn}

PORT=""
start_server() { # backend [database suffix, e.g. _rss: a fresh database for a fresh process]
  local backend=$1 suffix=${2:-}
  PORT=$(free_port)
  export RECOVERY_LISTEN="127.0.0.1:$PORT"
  case "$backend" in
    embedded)
      unset RECOVERY_REDIS_URL
      export RECOVERY_DATABASE_URL="sqlite://$OUT/embedded${suffix}.db?mode=rwc"
      ;;
    redis-postgres)
      psql -h 127.0.0.1 -U postgres -d test -qc "CREATE DATABASE ${PG_DB}${suffix}" >/dev/null
      export RECOVERY_REDIS_URL=redis://127.0.0.1:6379
      export RECOVERY_REDIS__KEY_PREFIX="bench:${RUN_ID}:${suffix}"
      # Loopback: no TLS (sslmode's default, prefer, would negotiate it with this server).
      export RECOVERY_DATABASE_URL="postgres://postgres@127.0.0.1:5432/${PG_DB}${suffix}?sslmode=disable"
      ;;
  esac
  local t0
  t0=$(date +%s%N)
  "$SERVICE" serve >"$OUT/server-$backend$suffix.log" 2>&1 &
  SERVER_PID=$!
  local json=$JSON
  [[ -n "$suffix" ]] && json=/dev/null # start to SERVING is the first start's
  "$LOADGEN" wait-serving --addr "http://127.0.0.1:$PORT" --since-unix-ns "$t0" --json "$json" --label "$backend"
}

# --cpu-pid arguments for the load generator: the service, and on Redis + PostgreSQL the
# redis-server and the PostgreSQL processes that serve this run (the bench database's backends,
# and the background writers: WAL, checkpoints). Shared servers: other clients' work on them
# during the measurement counts too (the "rest of the machine" column shows how busy it was).
cpu_pids() { # backend
  echo "--cpu-pid service=$SERVER_PID"
  if [[ $1 == redis-postgres ]]; then
    local redis_pid pg_pids
    redis_pid=$(redis-cli -h 127.0.0.1 -p 6379 info server | awk -F: '/^process_id/ {print $2}' | tr -d '\r')
    pg_pids=$(psql -h 127.0.0.1 -U postgres -d test -tAc \
      "SELECT string_agg(pid::text, ',') FROM pg_stat_activity WHERE datname = '$PG_DB' OR backend_type <> 'client backend'")
    [[ -n "$redis_pid" ]] && echo "--cpu-pid redis=$redis_pid"
    [[ -n "$pg_pids" ]] && echo "--cpu-pid postgres=$pg_pids"
  fi
  return 0
}

stop_server() {
  kill -TERM "$SERVER_PID"
  wait "$SERVER_PID" || true
  SERVER_PID=""
}

lg() { # backend args...
  local backend=$1; shift
  "$LOADGEN" run --addr "http://127.0.0.1:$PORT" --maildrop "$OUT/mail" --json "$JSON" --label "$backend" "$@" ||
    echo "   ^ errors (recorded in the report)"
}

# Messages still waiting in the delivery queue (the earlier scenarios' sends) when the whole
# recovery starts: its codes queue behind them.
mail_backlog() { # backend in_flight
  local sql="SELECT count(*) FROM deliveries WHERE status = 'pending'" pending
  if [[ $1 == redis-postgres ]]; then
    pending=$(psql -h 127.0.0.1 -U postgres -d "$PG_DB" -tAc "$sql" 2>/dev/null || echo null)
  else
    pending=$(sqlite3 -cmd ".timeout 5000" "$OUT/embedded.db" "$sql" 2>/dev/null || echo null)
  fi
  echo "{\"scenario\":\"mail-backlog\",\"label\":\"$1\",\"in_flight\":$2,\"pending\":${pending:-null}}" >>"$JSON"
}

bench_backend() {
  local backend=$1
  echo "== $backend: start to SERVING"
  start_server "$backend"

  echo "== $backend: argon2id ceiling (service parameters and permits)"
  "$LOADGEN" argon2 --seconds "$ARGON_SECS" --json "$JSON" --label "$backend"

  for n in "${LEVELS[@]}"; do
    echo "== $backend: $n in flight"
    local timed=(--in-flight "$n" --duration "$SECS")
    lg "$backend" --scenario health "${timed[@]}"
    lg "$backend" --scenario get-recovery-flow "${timed[@]}"
    lg "$backend" --scenario verify-code-wrong --reuse 19 --pool 2000 "${timed[@]}"
    lg "$backend" --scenario cancel-recovery --in-flight "$n" --requests "$K_CANCEL"
    lg "$backend" --scenario start-recovery "${timed[@]}"
    lg "$backend" --scenario send-verification-code --reuse 50 "${timed[@]}"
    lg "$backend" --scenario validate-password "${timed[@]}"
    lg "$backend" --scenario validate-password-worst "${timed[@]}"
    lg "$backend" --scenario create-captcha "${timed[@]}"
    lg "$backend" --scenario verify-password "${timed[@]}"
    lg "$backend" --scenario verify-code-right --in-flight "$n" --requests "$K_VERIFY"
    lg "$backend" --scenario reset-password --in-flight "$n" --requests "$K_RESET"
    mail_backlog "$backend" "$n"
    lg "$backend" --scenario recovery --in-flight "$n" --requests "$K_RECOVERY"
    # The no-op again, last: the ratio uses the mean of both, so drift during a level shows.
    lg "$backend" --scenario health "${timed[@]}"
  done

  echo "== $backend: GetRecoveryFlow while expensive RPCs are flooded (64 in flight)"
  lg "$backend" --scenario get-recovery-flow --in-flight 4 --duration "$SECS"
  for flood in create-captcha validate-password-worst verify-password; do
    lg "$backend" --scenario get-recovery-flow --in-flight 4 --duration "$SECS" --flood "$flood" --flood-in-flight 64
  done

  echo "== $backend: CPU per call at 64 in flight (/proc/<pid>/stat over $K_CPU calls each)"
  local pids
  mapfile -t pids < <(cpu_pids "$backend" | tr ' ' '\n')
  lg "$backend" --scenario health --in-flight 64 --requests "$K_CPU" "${pids[@]}"
  lg "$backend" --scenario get-recovery-flow --in-flight 64 --requests "$K_CPU" "${pids[@]}"
  lg "$backend" --scenario verify-code-wrong --reuse 19 --in-flight 64 --requests $((K_CPU / 2)) "${pids[@]}"
  lg "$backend" --scenario cancel-recovery --in-flight 64 --requests $((K_CPU / 2)) "${pids[@]}"
  lg "$backend" --scenario start-recovery --in-flight 64 --requests $((K_CPU / 2)) "${pids[@]}"

  stop_server

  # Peak RSS on a fresh process: the one above has served millions of calls by now (and the
  # in-process store keeps every flow until it expires), which is not what the target is about.
  echo "== $backend: peak RSS under $FLOOD_RESET concurrent ResetPassword (fresh server)"
  start_server "$backend" _rss
  sleep 1
  local before
  before=$(awk '/VmRSS/ {print $2}' "/proc/$SERVER_PID/status")
  echo 5 >"/proc/$SERVER_PID/clear_refs" # resets VmHWM (peak RSS) to the current RSS
  lg "$backend" --scenario reset-password --in-flight "$FLOOD_RESET" --connections 8 --requests "$FLOOD_RESET" --mail-timeout 120
  local peak after
  peak=$(awk '/VmHWM/ {print $2}' "/proc/$SERVER_PID/status")
  after=$(awk '/VmRSS/ {print $2}' "/proc/$SERVER_PID/status")
  echo "{\"scenario\":\"rss\",\"label\":\"$backend\",\"fresh\":true,\"clients\":$FLOOD_RESET,\"rss_before_kib\":$before,\"peak_kib\":$peak,\"rss_after_kib\":$after}" >>"$JSON"
  echo "   RSS after start $((before / 1024)) MiB, peak $((peak / 1024)) MiB (+$(((peak - before) / 1024)) MiB), after $((after / 1024)) MiB"

  stop_server
}

bench_backend embedded
bench_backend redis-postgres

fi

REPORT_DIR=$(dirname "$REPORT")
mkdir -p "$REPORT_DIR/results"
RESULTS="$REPORT_DIR/results/bench.jsonl"
{
  if ((QUICK)); then echo '{"scenario":"meta","quick":true}'; else echo '{"scenario":"meta","quick":false}'; fi
  cat "$JSON"
} >"$RESULTS.tmp"
mv "$RESULTS.tmp" "$RESULTS"

echo "== writing $REPORT"
python3 - "$JSON" "$REPORT" "$QUICK" "$OUT/loadavg" <<'PY'
import json, os, platform, subprocess, sys, datetime

sys.path.insert(0, "scripts")
import plots  # the verdict paragraph, written from the same numbers as the pictures

runs_path, report_path, quick = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
try:
    load_before = open(sys.argv[4]).read().strip()
except OSError:
    load_before = open('/proc/loadavg').read().split()[0] + " (at rendering; the run did not record it)"
runs = [json.loads(l) for l in open(runs_path) if l.strip()]
BACKENDS = [("embedded", "embedded (SQLite + in-process store)"), ("redis-postgres", "Redis + PostgreSQL")]
ORDER = ["get-recovery-flow", "verify-code-wrong", "cancel-recovery", "start-recovery",
         "send-verification-code", "validate-password", "validate-password-worst", "create-captcha",
         "verify-password", "verify-code-right", "reset-password", "recovery"]
ARGON2_PER_RECOVERY = 3

def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"

def pick(backend, scenario, in_flight=None, flood=False, cpu=False):
    out = []
    for r in runs:
        if r.get("label") != backend or r.get("scenario") != scenario:
            continue
        if in_flight is not None and r.get("in_flight") != in_flight:
            continue
        if ("flood" in r) != flood:
            continue
        if ("cpu_s" in r) != cpu:  # the CPU runs have their own table
            continue
        out.append(r)
    return out

def noop(backend, n):
    rs = pick(backend, "health", n)
    return sum(r["rate"] for r in rs) / len(rs) if rs else float("nan")

def fmt_ms(x):
    return f"{x:.2f}" if x < 10 else f"{x:.0f}"

def failures(r):
    n = sum(r["errors"].values()) + sum(r["wrong"].values())
    if not n:
        return "0"
    parts = [f"{k} ×{v}" for k, v in list(r["errors"].items()) + list(r["wrong"].items())]
    return f"**{n}** ({', '.join(parts)})"

lines = []
w = lines.append
cpu = sh("sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
w("<!-- bench.sh:begin — generated by scripts/bench.sh; edit the script, not this block -->")
w("# Performance — report")
w("")
w("![Throughput against calls in flight, per RPC and backend](bench-throughput.svg)")
w("")
w("![Each RPC's throughput as a share of the no-op's, per backend](bench-ratio.svg)")
w("")
w("![p50 and p99 latency against calls in flight, per RPC and backend](bench-latency.svg)")
w("")
w("**Verdict.** " + plots.bench_verdict(runs, quick))
w("")
w("The pictures and the tables below come from the same run (`benches/results/bench.jsonl`; "
  "redraw with `python3 scripts/plots.py bench benches/results/bench.jsonl`).")
w("")
w(f"Generated by `bash scripts/bench.sh{' --quick' if quick else ''}` on "
  f"{datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}, commit "
  f"`{sh('git', 'rev-parse', '--short', 'HEAD')}`{' (QUICK mode: short runs, indicative only)' if quick else ''}.")
w(f"Machine: {os.cpu_count()} vCPU {cpu}, load average before the run {load_before} "
  "(shared with other builds); the load generator runs on the same cores as the server. "
  "Ratios within one run are what count.")
w("Server: release build, rate limits off, captcha off, SMTP notifier to a real aiosmtpd sink, "
  "argon2id m=19 MiB t=2 p=1 with 4 permits (the defaults). Ratios are to the no-op "
  "`grpc.health.v1.Health/Check` at the same number in flight on the same server, measured "
  "before and after that level's scenarios. PostgreSQL is on the same host and reached without TLS "
  "(`sslmode=disable`); a deployment with TLS to its database pays that cost on every query.")
w("")
for backend, title in BACKENDS:
    if not pick(backend, "health"):
        continue
    start = pick(backend, "start-to-serving")
    argon = pick(backend, "argon2")
    w(f"## {title}")
    w("")
    if start:
        w(f"Start to SERVING: **{start[0]['ms']:.0f} ms** (process start to the first SERVING Health/Check; migrations on an empty database included).")
        w("")
    w("| scenario | in flight | rate /s | ratio to no-op | p50 ms | p99 ms | correct | errors |")
    w("|---|---:|---:|---:|---:|---:|---:|---|")
    for n in [1, 16, 64]:
        base = noop(backend, n)
        w(f"| no-op Health/Check | {n} | {base:,.0f} | 1.00 | | | | |")
        for s in ORDER:
            for r in pick(backend, s, n):
                w(f"| {s} | {n} | {r['rate']:,.1f} | {r['rate'] / base:.3f} | {fmt_ms(r['p50_ms'])} | "
                  f"{fmt_ms(r['p99_ms'])} | {r['correct']} | {failures(r)} |")
    w("")
    if argon:
        a = argon[0]
        ceiling = a["rate"] / ARGON2_PER_RECOVERY
        w(f"**Recoveries against the argon2 ceiling.** Raw argon2id in this run: {a['rate']:.1f} hashes/s "
          f"(m={a['m_cost_kib']} KiB, t={a['t_cost']}, p={a['p_cost']}, {a['permits']} permits, the service's own "
          f"hasher). One recovery needs {ARGON2_PER_RECOVERY} argon2 operations: ResetPassword verifies the new "
          "password against the account's password history (a fresh account has one entry, its current "
          "password) and hashes it, and the final VerifyPassword verifies it. Ceiling: "
          f"{ceiling:.1f} recoveries/s.")
        w("")
        w("| in flight | recoveries/s | of the ceiling | p50 ms | p99 ms | failed |")
        w("|---:|---:|---:|---:|---:|---|")
        for n in [1, 16, 64]:
            for r in pick(backend, "recovery", n):
                w(f"| {n} | {r['rate']:.1f} | {r['rate'] / ceiling:.2f}× | {fmt_ms(r['p50_ms'])} | {fmt_ms(r['p99_ms'])} | {failures(r)} |")
        w("")
        stepped = [r for n in [1, 16, 64] for r in pick(backend, "recovery", n) if r.get("steps_mean_ms")]
        if stepped:
            op_ms = a["permits"] / a["rate"] * 1000
            w("Where a recovery's time goes (mean ms per step, as the client sees it; *mail* is from "
              "SendVerificationCode's answer until the code is read from the sink's maildrop). "
              f"One argon2 operation takes ~{op_ms:.0f} ms of wall time when all {a['permits']} "
              f"permits are busy ({a['permits']} permits / {a['rate']:.1f} hashes/s); reset holds 2 "
              "operations and login 1, so anything above that in those columns is waiting for a permit.")
            w("")
            steps = ["start", "send", "mail", "verify", "reset", "login"]
            w("| in flight | mails queued at the start | " + " | ".join(steps) + " | sum |")
            w("|---:|---:|" + "---:|" * (len(steps) + 1))
            for r in stepped:
                m = r["steps_mean_ms"]
                backlog = [b["pending"] for b in pick(backend, "mail-backlog", r["in_flight"])]
                queued = "?" if not backlog or backlog[0] is None else f"{backlog[0]:,}"
                w(f"| {r['in_flight']} | {queued} | " + " | ".join(fmt_ms(m.get(k, float('nan'))) for k in steps)
                  + f" | {fmt_ms(sum(m.values()))} |")
            w("")
    alone = [r for r in pick(backend, "get-recovery-flow", 4)]
    flooded = pick(backend, "get-recovery-flow", 4, flood=True)
    if alone or flooded:
        w("**GetRecoveryFlow (4 in flight) while an expensive RPC is flooded at 64 in flight.**")
        w("")
        w("| flood | GetRecoveryFlow /s | p50 ms | p99 ms | flood rate /s | flood p99 ms | failed |")
        w("|---|---:|---:|---:|---:|---:|---|")
        for r in alone:
            w(f"| none | {r['rate']:,.0f} | {fmt_ms(r['p50_ms'])} | {fmt_ms(r['p99_ms'])} | | | {failures(r)} |")
        for r in flooded:
            f = r["flood"]
            w(f"| {f['scenario']} | {r['rate']:,.0f} | {fmt_ms(r['p50_ms'])} | {fmt_ms(r['p99_ms'])} | "
              f"{f['rate']:,.1f} | {fmt_ms(f['p99_ms'])} | {failures(r)} / {failures(f)} |")
        w("")
    cpu_runs = [r for s in ["health"] + ORDER for r in pick(backend, s, 64, cpu=True)]
    if cpu_runs:
        cols = ["service", "redis", "postgres", "loadgen"]
        present = [c for c in cols if any(c in r["cpu_s"] for r in cpu_runs)]
        w("**CPU per 1,000 calls at 64 in flight** (milliseconds of CPU, utime + stime from "
          "`/proc/<pid>/stat` over the measured calls; *rest* is the machine's busy time not in "
          "those processes: other sessions, kernel threads; *busy* is the whole machine's share of "
          f"its {os.cpu_count()} cores during the calls).")
        w("")
        w("| scenario | calls | rate /s | " + " | ".join(present) + " | rest | busy |")
        w("|---|---:|---:|" + "---:|" * (len(present) + 2))
        for r in cpu_runs:
            c = r["cpu_s"]
            per = 1000 / r["requests"] * 1000  # seconds per call → ms per 1,000 calls
            ours = sum(c.get(k, 0) for k in present)
            rest = c.get("machine", float("nan")) - ours
            busy = c.get("machine", float("nan")) / r["elapsed_s"] / os.cpu_count()
            w(f"| {r['scenario']} | {r['requests']:,} | {r['rate']:,.0f} | "
              + " | ".join(f"{c.get(k, 0) * per:.0f}" for k in present)
              + f" | {rest * per:.0f} | {busy:.0%} |")
        w("")
    for r in pick(backend, "rss"):
        bound = 64 + 4 * 19
        if r.get("fresh"):
            delta = (r["peak_kib"] - r["rss_before_kib"]) / 1024
            w(f"**Peak RSS under {r['clients']} concurrent ResetPassword, on a fresh server** (a new "
              "process on a new database, started for this flood; VmHWM reset after the start; the "
              "accounts, flows and codes are prepared through the same server, so the peak covers "
              f"them too): after start **{r['rss_before_kib'] / 1024:.0f} MiB**, peak "
              f"**{r['peak_kib'] / 1024:.0f} MiB** (+{delta:.0f} MiB), after the flood "
              f"{r['rss_after_kib'] / 1024:.0f} MiB; target ≤ 64 MiB + 4 permits × 19 MiB = {bound} MiB: "
              f"**{'met' if r['peak_kib'] / 1024 <= bound else 'missed'}**.")
            for rr in pick(backend, "reset-password", r["clients"]):
                w(f"The flood itself: {rr['rate']:.1f} resets/s, p99 {fmt_ms(rr['p99_ms'])} ms, failed {failures(rr)}.")
            w("")
            continue
        w(f"**Peak RSS under {r['clients']} concurrent ResetPassword** (VmHWM, reset before the flood; "
          f"the accounts and tokens are prepared by the same calls, so the peak covers them too): "
          f"**{r['peak_kib'] / 1024:.0f} MiB** (before {r['rss_before_kib'] / 1024:.0f} MiB, after "
          f"{r['rss_after_kib'] / 1024:.0f} MiB); target ≤ 64 MiB + 4 permits × 19 MiB = {bound} MiB.")
        for rr in pick(backend, "reset-password", r["clients"]):
            w(f"The flood itself: {rr['rate']:.1f} resets/s, p99 {fmt_ms(rr['p99_ms'])} ms, failed {failures(rr)}.")
        w("")
w("<!-- bench.sh:end -->")
generated = "\n".join(lines) + "\n"

old = open(report_path).read() if os.path.exists(report_path) else ""
begin, end = "<!-- bench.sh:begin", "<!-- bench.sh:end -->"
if begin in old and end in old:
    head = old[: old.index(begin)]
    tail = old[old.index(end) + len(end):].lstrip("\n")
    new = head + generated + "\n" + tail
else:
    new = generated + "\n" + old
open(report_path, "w").write(new)
print(f"wrote {report_path}")
PY
echo "== drawing the pictures (scripts/plots.py)"
python3 scripts/plots.py bench "$RESULTS" --out "$REPORT_DIR"
echo "runs: $JSON (copied to $RESULTS)"
