#!/usr/bin/env bash
# A throw-away Redis Sentinel set-up on 127.0.0.1: one master, one replica, three sentinels
# (quorum 2), for the store conformance tests, the fail-over tests and the soak:
#
#   bash scripts/redis-sentinel.sh start         # idempotent: a healthy set-up is left alone
#   bash scripts/redis-sentinel.sh status
#   bash scripts/redis-sentinel.sh master        # prints the current master's port
#   bash scripts/redis-sentinel.sh kill-master   # SIGKILLs the current master, prints its port
#   bash scripts/redis-sentinel.sh stop          # shuts everything down and removes its state
#
# Ports: REDIS_SENTINEL_DATA_PORTS (master then replica, default "7201 7202") and
# REDIS_SENTINEL_PORTS (default "7211 7212 7213"); service name REDIS_SENTINEL_SERVICE (default
# "recovery"). Port 6379 is refused: it is the shared single-node Redis. Nothing is persisted;
# state and logs live under REDIS_SENTINEL_DIR (default /tmp/recovery-redis-sentinel).
#
# Fail-over is tuned for tests: a master is judged down after 1 s without an answer
# (down-after-milliseconds), so a killed master is replaced in about 2-5 s.
#
# Then: RECOVERY_TEST_REDIS_SENTINEL=redis+sentinel://127.0.0.1:7211,127.0.0.1:7212,127.0.0.1:7213/recovery
set -euo pipefail

DATA_PORTS=(${REDIS_SENTINEL_DATA_PORTS:-7201 7202})
DATA_PORTS=(${DATA_PORTS[@]//,/ })
SENTINEL_PORTS=(${REDIS_SENTINEL_PORTS:-7211 7212 7213})
SENTINEL_PORTS=(${SENTINEL_PORTS[@]//,/ })
SERVICE=${REDIS_SENTINEL_SERVICE:-recovery}
STATE_DIR=${REDIS_SENTINEL_DIR:-/tmp/recovery-redis-sentinel}
HOST=127.0.0.1
WAIT_SECONDS=${REDIS_SENTINEL_WAIT_SECONDS:-30}

die() { echo "redis-sentinel: $*" >&2; exit 1; }
log() { echo "redis-sentinel: $*" >&2; }

for port in "${DATA_PORTS[@]}" "${SENTINEL_PORTS[@]}"; do
  [[ $port =~ ^[0-9]+$ ]] || die "not a port: '$port'"
  [[ $port != 6379 ]] || die "port 6379 is the shared Redis; choose other ports"
done
(( ${#DATA_PORTS[@]} >= 2 )) || die "need a master and at least one replica port"
(( ${#SENTINEL_PORTS[@]} >= 3 )) || die "need at least 3 sentinel ports (quorum 2)"
[[ $SERVICE =~ ^[A-Za-z0-9._-]+$ ]] || die "service name '$SERVICE' has odd characters"

ensure_installed() {
  if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
    return
  fi
  command -v apt-get >/dev/null || die "redis-server/redis-cli missing and apt-get is not available"
  local sudo=""
  (( EUID == 0 )) || sudo="sudo"
  log "installing redis-server and redis-tools"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server redis-tools >/dev/null
}

cli() { local port=$1; shift; redis-cli -h "$HOST" -p "$port" "$@"; }

node_up() { [[ $(cli "$1" ping 2>/dev/null) == PONG ]]; }

# The master's port as the first sentinel that answers names it (empty if none does).
master_port() {
  local port answer
  for port in "${SENTINEL_PORTS[@]}"; do
    answer=$(cli "$port" sentinel get-master-addr-by-name "$SERVICE" 2>/dev/null | tr -d '\r' | sed -n 2p)
    if [[ -n $answer ]]; then echo "$answer"; return; fi
  done
}

field() { tr -d '\r' | sed -n "s/^$1://p"; }

# Healthy: the named master says it is master with a replica attached, and every sentinel knows
# the same master and the other sentinels (so a quorum can form at once).
healthy() {
  local master port
  master=$(master_port)
  [[ -n $master ]] || return 1
  [[ $(cli "$master" info replication 2>/dev/null | field role) == master ]] || return 1
  # A replica counts once its first sync is done (state=online), not merely connected.
  cli "$master" info replication 2>/dev/null | grep -q '^slave[0-9]*:.*state=online' || return 1
  for port in "${SENTINEL_PORTS[@]}"; do
    [[ $(cli "$port" sentinel get-master-addr-by-name "$SERVICE" 2>/dev/null | tr -d '\r' | sed -n 2p) == "$master" ]] || return 1
    local others
    others=$(cli "$port" sentinel master "$SERVICE" 2>/dev/null | tr -d '\r' | sed -n '/^num-other-sentinels$/{n;p}')
    (( ${others:-0} >= ${#SENTINEL_PORTS[@]} - 1 )) || return 1
  done
}

wait_healthy() {
  local deadline=$((SECONDS + WAIT_SECONDS))
  until healthy; do
    (( SECONDS < deadline )) || die "sentinel set-up not healthy after ${WAIT_SECONDS}s; see $STATE_DIR/*.log"
    sleep 0.2
  done
}

wait_up() {
  local port=$1 deadline=$((SECONDS + 10))
  until node_up "$port"; do
    (( SECONDS < deadline )) || die "$port did not start; see $STATE_DIR/*-$port.log"
    sleep 0.1
  done
}

# A data node; `replicaof` is the master's port, or empty for the master itself.
start_data_node() {
  local port=$1 replicaof=$2
  if node_up "$port"; then
    [[ $(cli "$port" info server 2>/dev/null | field redis_mode) == standalone ]] \
      || die "port $port is taken by a Redis that is not a standalone node"
    return
  fi
  # No diskless-sync delay: the default 5 s would hold every (re)joining replica back that long.
  local args=(--port "$port" --bind "$HOST" --save "" --appendonly no --daemonize yes
    --repl-diskless-sync-delay 0
    --dir "$STATE_DIR" --logfile "$STATE_DIR/redis-$port.log" --pidfile "$STATE_DIR/redis-$port.pid")
  [[ -z $replicaof ]] || args+=(--replicaof "$HOST" "$replicaof")
  redis-server "${args[@]}"
  wait_up "$port"
}

start_sentinel() {
  local port=$1 master=$2
  if node_up "$port"; then
    [[ $(cli "$port" info server 2>/dev/null | field redis_mode) == sentinel ]] \
      || die "port $port is taken by a Redis that is not a sentinel"
    return
  fi
  # Sentinel rewrites its config file as it learns the set-up, so each has its own.
  cat >"$STATE_DIR/sentinel-$port.conf" <<EOF
port $port
bind $HOST
daemonize yes
dir $STATE_DIR
logfile $STATE_DIR/sentinel-$port.log
pidfile $STATE_DIR/sentinel-$port.pid
sentinel monitor $SERVICE $HOST $master 2
sentinel down-after-milliseconds $SERVICE 1000
sentinel failover-timeout $SERVICE 5000
sentinel parallel-syncs $SERVICE 1
EOF
  redis-server "$STATE_DIR/sentinel-$port.conf" --sentinel
  wait_up "$port"
}

start() {
  ensure_installed
  if healthy; then
    log "already running and healthy (master on $(master_port))"
    return
  fi
  mkdir -p "$STATE_DIR"
  # After a fail-over the master may be any data port: follow the sentinels when they know it.
  local master port
  master=$(master_port)
  [[ -n $master ]] || master=${DATA_PORTS[0]}
  start_data_node "$master" ""
  for port in "${DATA_PORTS[@]}"; do
    [[ $port == "$master" ]] || start_data_node "$port" "$master"
  done
  for port in "${SENTINEL_PORTS[@]}"; do start_sentinel "$port" "$master"; done
  wait_healthy
  log "healthy: master on $(master_port), sentinels on ${SENTINEL_PORTS[*]}, service $SERVICE"
}

stop() {
  local port
  for port in "${SENTINEL_PORTS[@]}" "${DATA_PORTS[@]}"; do
    if node_up "$port"; then
      cli "$port" shutdown nosave >/dev/null 2>&1 || true
    fi
  done
  for port in "${SENTINEL_PORTS[@]}" "${DATA_PORTS[@]}"; do
    local deadline=$((SECONDS + 10))
    while node_up "$port"; do
      (( SECONDS < deadline )) || die "$port did not shut down"
      sleep 0.1
    done
  done
  rm -rf -- "$STATE_DIR"
  log "stopped"
}

status() {
  local port rc=0
  for port in "${DATA_PORTS[@]}"; do
    if node_up "$port"; then
      echo "$HOST:$port up, role:$(cli "$port" info replication | field role)"
    else
      echo "$HOST:$port down"; rc=1
    fi
  done
  for port in "${SENTINEL_PORTS[@]}"; do
    if node_up "$port"; then echo "$HOST:$port sentinel up"; else echo "$HOST:$port sentinel down"; rc=1; fi
  done
  echo "master: $(master_port)"
  healthy || rc=1
  return $rc
}

kill_master() {
  local master
  master=$(master_port)
  [[ -n $master ]] || die "no sentinel names a master"
  local pidfile="$STATE_DIR/redis-$master.pid"
  [[ -f $pidfile ]] || die "master $master was not started by this script (no $pidfile)"
  kill -KILL "$(cat "$pidfile")"
  rm -f -- "$pidfile"
  echo "$master"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  master) master_port ;;
  kill-master) kill_master ;;
  *) die "usage: $0 start|stop|status|master|kill-master" ;;
esac
