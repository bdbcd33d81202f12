#!/usr/bin/env bash
# A throw-away 3-master Redis Cluster (no replicas) on 127.0.0.1 for the store conformance tests:
#
#   bash scripts/redis-cluster.sh start    # idempotent: a healthy running cluster is left alone
#   bash scripts/redis-cluster.sh status
#   bash scripts/redis-cluster.sh stop     # shuts the nodes down and removes their state
#
# Ports: REDIS_CLUSTER_PORTS (space- or comma-separated, default "7001 7002 7003"). Port 6379 is
# refused: it is the shared single-node Redis. Nothing is persisted (--save "" --appendonly no);
# node state lives under REDIS_CLUSTER_DIR (default /tmp/recovery-redis-cluster).
#
# Then: RECOVERY_TEST_REDIS_CLUSTER=redis://127.0.0.1:7001,redis://127.0.0.1:7002,redis://127.0.0.1:7003
set -euo pipefail

PORTS=(${REDIS_CLUSTER_PORTS:-7001 7002 7003})
PORTS=(${PORTS[@]//,/ })
STATE_DIR=${REDIS_CLUSTER_DIR:-/tmp/recovery-redis-cluster}
HOST=127.0.0.1
WAIT_SECONDS=${REDIS_CLUSTER_WAIT_SECONDS:-30}

die() { echo "redis-cluster: $*" >&2; exit 1; }
log() { echo "redis-cluster: $*" >&2; }

for port in "${PORTS[@]}"; do
  [[ $port =~ ^[0-9]+$ ]] || die "not a port: '$port'"
  [[ $port != 6379 ]] || die "port 6379 is the shared Redis; choose other REDIS_CLUSTER_PORTS"
done
(( ${#PORTS[@]} >= 3 )) || die "a cluster needs at least 3 masters (got ${#PORTS[@]} ports)"

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

node_state() { cli "$1" cluster info 2>/dev/null | tr -d '\r' | sed -n 's/^cluster_state://p'; }

# Healthy: every node answers, reports cluster_state:ok and knows all the configured masters.
healthy() {
  local port known
  for port in "${PORTS[@]}"; do
    [[ $(node_state "$port") == ok ]] || return 1
    known=$(cli "$port" cluster info 2>/dev/null | tr -d '\r' | sed -n 's/^cluster_known_nodes://p')
    [[ $known == "${#PORTS[@]}" ]] || return 1
  done
}

wait_healthy() {
  local deadline=$((SECONDS + WAIT_SECONDS))
  until healthy; do
    (( SECONDS < deadline )) || die "cluster not ok after ${WAIT_SECONDS}s; see $STATE_DIR/*.log"
    sleep 0.2
  done
}

start_node() {
  local port=$1
  if node_up "$port"; then
    # Something answers on the port: it must be one of our cluster nodes, never a stranger.
    [[ $(cli "$port" info cluster 2>/dev/null | tr -d '\r') == *cluster_enabled:1* ]] \
      || die "port $port is taken by a Redis that is not in cluster mode"
    return
  fi
  redis-server --port "$port" --bind "$HOST" \
    --cluster-enabled yes --cluster-config-file "nodes-$port.conf" --cluster-node-timeout 5000 \
    --save "" --appendonly no --daemonize yes \
    --dir "$STATE_DIR" --logfile "$STATE_DIR/redis-$port.log" --pidfile "$STATE_DIR/redis-$port.pid"
  local deadline=$((SECONDS + 10))
  until node_up "$port"; do
    (( SECONDS < deadline )) || die "node $port did not start; see $STATE_DIR/redis-$port.log"
    sleep 0.1
  done
}

start() {
  ensure_installed
  if healthy; then
    log "already running and healthy on ports ${PORTS[*]}"
    return
  fi
  mkdir -p "$STATE_DIR"
  local port
  for port in "${PORTS[@]}"; do start_node "$port"; done

  # Create the cluster only if no node has slots yet; a half-formed cluster (nodes that already
  # own slots but are not ok) may just need time to converge, otherwise it is reset by `stop`.
  local assigned=0
  for port in "${PORTS[@]}"; do
    local slots
    slots=$(cli "$port" cluster info | tr -d '\r' | sed -n 's/^cluster_slots_assigned://p')
    if (( ${slots:-0} > assigned )); then assigned=$slots; fi
  done
  if (( assigned == 0 )); then
    local nodes=()
    for port in "${PORTS[@]}"; do nodes+=("$HOST:$port"); done
    log "creating the cluster on ${nodes[*]}"
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >/dev/null
  fi
  wait_healthy
  log "cluster ok on ports ${PORTS[*]}"
}

stop() {
  local port
  for port in "${PORTS[@]}"; do
    if node_up "$port"; then
      cli "$port" shutdown nosave >/dev/null 2>&1 || true
    fi
  done
  for port in "${PORTS[@]}"; do
    local deadline=$((SECONDS + 10))
    while node_up "$port"; do
      (( SECONDS < deadline )) || die "node $port did not shut down"
      sleep 0.1
    done
  done
  rm -rf -- "$STATE_DIR"
  log "stopped"
}

status() {
  local port rc=0
  for port in "${PORTS[@]}"; do
    if node_up "$port"; then
      echo "$HOST:$port up, cluster_state:$(node_state "$port")"
    else
      echo "$HOST:$port down"
      rc=1
    fi
  done
  healthy || rc=1
  return $rc
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) die "usage: $0 start|stop|status" ;;
esac
