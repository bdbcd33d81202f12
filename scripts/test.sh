#!/usr/bin/env bash
# The whole test suite, as README.md promises: lint, then every test over every backend.
#
#   1. makes sure PostgreSQL, Redis, MariaDB, Envoy and the Python peers are there (installing and
#      starting them when needed), and starts a 3-master Redis Cluster and a Redis Sentinel
#      set-up (master, replica, 3 sentinels) on spare ports;
#   2. cargo fmt --check, cargo clippy -D warnings; promtool on the suggested alert rules; the
#      committed benchmark and soak pictures are what scripts/plots.py draws from the committed
#      run data (benches/results/; nothing is measured here);
#   3. all tests on the embedded defaults (SQLite + in-process store), with every backend
#      variable set, so the suites that pick their backends themselves run on all of them: store
#      conformance (memory, Redis, Redis Cluster, Redis Sentinel, plus fail-overs on a private
#      Sentinel set-up), account repository conformance (SQLite, PostgreSQL, MariaDB), races
#      (Redis + PostgreSQL), faults (private redis-server and PostgreSQL on spare ports) and the
#      load generator's smoke run (tests/suite/loadgen.rs: every scenario, a few requests, answers
#      only — the timed benchmark is scripts/bench.sh);
#      The model test (e2e::model: random concurrent clients checked against a reference model
#      of the contract, about a minute per backend) is one of the end-to-end suites;
#   4. the end-to-end suites (every test under `e2e::` in tests/suite) again on Redis +
#      PostgreSQL, Redis Cluster + MariaDB;
#   4b. every cargo-fuzz target for 10 s (scripts/fuzz-smoke.sh; the long run: a larger number),
#      built and run in the background while step 4 waits on its databases;
#   5. the ecosystem's tools on the contract and the binary (scripts/web-checks.sh): buf lint and
#      breaking, the web bundle up to date, the web UI in headless Chromium, a grpc-js client,
#      the README walk-through script;
#   6. a 3-minute soak under faults (scripts/soak.sh: two replicas on Redis Sentinel, a private
#      PostgreSQL and SMTP, while masters die, PostgreSQL restarts, SMTP stops, a replica is
#      SIGKILLed), which fails if an invariant does.
#
# A backend that cannot be reached fails the run; nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/test-services.sh
bash scripts/redis-cluster.sh start
bash scripts/redis-sentinel.sh start
trap 'kill $(jobs -p) 2>/dev/null || true; bash scripts/redis-cluster.sh stop >/dev/null 2>&1 || true; bash scripts/redis-sentinel.sh stop >/dev/null 2>&1 || true' EXIT

export RECOVERY_TEST_REDIS_URL=${RECOVERY_TEST_REDIS_URL:-redis://127.0.0.1:6379}
export RECOVERY_TEST_REDIS_CLUSTER=${RECOVERY_TEST_REDIS_CLUSTER:-redis://127.0.0.1:7001,redis://127.0.0.1:7002,redis://127.0.0.1:7003}
export RECOVERY_TEST_REDIS_SENTINEL=${RECOVERY_TEST_REDIS_SENTINEL:-redis+sentinel://127.0.0.1:7211,127.0.0.1:7212,127.0.0.1:7213/recovery}
export RECOVERY_TEST_POSTGRES_URL=${RECOVERY_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432}
export RECOVERY_TEST_MYSQL_URL=${RECOVERY_TEST_MYSQL_URL:-mysql://root@127.0.0.1:3306}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

echo "== format and lints"
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings

echo "== Prometheus alert rules (deploy/prometheus): syntax and unit tests"
promtool check rules deploy/prometheus/alerts.yaml
promtool test rules deploy/prometheus/alerts.test.yaml

echo "== benchmark and soak pictures: redrawn from benches/results/, byte for byte (scripts/plots.py check)"
python3 scripts/plots.py check

echo "== all tests: SQLite + in-process store (the embedded defaults)"
cargo test --all-targets --locked

# The fuzz targets build (cold: several minutes of CPU) and run while the end-to-end suites below
# wait on their databases; the output is shown, and a failure fails the run, once those are done.
echo "== every fuzz target, 10 s each, in the background (scripts/fuzz-smoke.sh; longer: scripts/fuzz-smoke.sh 600)"
mkdir -p target
bash scripts/fuzz-smoke.sh 10 >target/fuzz-smoke.log 2>&1 &
fuzz_pid=$!

# The end-to-end suites are the modules under tests/suite/e2e/: a new one needs no edit here.
echo "== end-to-end on Redis + PostgreSQL"
RECOVERY_TEST_STORE=redis RECOVERY_TEST_DB=postgres cargo test --locked --test suite e2e::
echo "== end-to-end on Redis Cluster + MariaDB"
RECOVERY_TEST_STORE=cluster RECOVERY_TEST_DB=mysql cargo test --locked --test suite e2e::
echo "== the fuzz targets (started above)"
fuzz_status=0
wait "$fuzz_pid" || fuzz_status=$?
cat target/fuzz-smoke.log
if ((fuzz_status)); then
  echo "scripts/fuzz-smoke.sh failed (exit $fuzz_status)" >&2
  exit "$fuzz_status"
fi
echo "== web UI, buf, grpc-js, README walk-through (scripts/web-checks.sh)"
cargo build --locked --bin recovery-service
bash scripts/web-checks.sh
echo "== soak under faults, short run (benches/SOAK.md; the long one: scripts/soak.sh --minutes 20)"
bash scripts/soak.sh --minutes 3
echo "== all suites passed"
