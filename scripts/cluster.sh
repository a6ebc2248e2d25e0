#!/usr/bin/env bash
# scripts/cluster.sh — chatd's local cluster on loopback (`make cluster`):
# PostgreSQL primary + 1 streaming replica, each behind its PgBouncer
# (scripts/stack.sh), a Redis Cluster of 3 masters + 3 replicas
# (scripts/redis-cluster.sh), 3 chatd instances and HAProxy in front of them
# (deploy/haproxy/haproxy.cfg).
#
#   scripts/cluster.sh start    start everything, wait until HAProxy sees all
#                               three instances ready, print what runs where
#   scripts/cluster.sh stop     stop everything (idempotent; chatd with SIGTERM)
#   scripts/cluster.sh status   what runs; exit 0 when every part answers
#   scripts/cluster.sh instance-start N   start chatd instance N (1-3) again after
#                               it stopped or died, wait until it is ready
#   scripts/cluster.sh replica-stop | replica-start   stop (start again) the
#                               PostgreSQL replica and its PgBouncer: reads move
#                               to the primary (and back)
#   scripts/cluster.sh redis-node-start PORT   start a Redis Cluster node again
#                               after it stopped or died (a replaced master
#                               rejoins as a replica), wait until all say ok
#
# Ports (environment; defaults keep clear of `make run`'s stack on 5432/6432/6379):
#   CLUSTER_PORT 3000 (HAProxy)        CLUSTER_CHATD_PORT 3001 (instances: +0, +1, +2)
#   CLUSTER_STATS_PORT 3090 (HAProxy's /stats and /metrics)
#   CLUSTER_PG_PORT 5442  CLUSTER_PGBOUNCER_PORT 6442  CLUSTER_REDIS_PORT 6389 (the stack's
#   lone Redis, unused by chatd here)  CLUSTER_PG_REPLICA_PORT 5443
#   CLUSTER_PGBOUNCER_REPLICA_PORT 6443  CLUSTER_REDIS_CLUSTER_PORT 7001 (6 nodes: +0..+5,
#   bus ports +10000)
# CLUSTER_DIR (var/cluster) holds stack/ (PostgreSQL, PgBouncer), redis/ (the
# Redis Cluster), chatd-N.log/.pid, haproxy.cfg's log and pid, and env (the
# URLs). CHATD_BIN (build/chatd) is the binary; other CHATD_* variables of the
# caller's environment reach the instances (CHATD_DRAIN_MS defaults to 2000). CLUSTER_TIMEOUT (60 s) bounds waits.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${CLUSTER_DIR:-var/cluster}
case $DIR in /*) ;; *) DIR=$REPO/$DIR ;; esac
TIMEOUT=${CLUSTER_TIMEOUT:-60}
# ports: the environment, else those of the last start of this cluster, else the defaults
PORT_VARS=(CLUSTER_PORT CLUSTER_CHATD_PORT CLUSTER_STATS_PORT CLUSTER_PG_PORT CLUSTER_PGBOUNCER_PORT
  CLUSTER_REDIS_PORT CLUSTER_PG_REPLICA_PORT CLUSTER_PGBOUNCER_REPLICA_PORT CLUSTER_REDIS_CLUSTER_PORT)
if [[ -r $DIR/ports ]]; then
  while IFS='=' read -r k v; do
    for want in "${PORT_VARS[@]}"; do
      if [[ $k == "$want" && -z ${!k:-} ]]; then printf -v "$k" '%s' "$v"; fi
    done
  done <"$DIR/ports"
fi
HA_PORT=${CLUSTER_PORT:-3000}
CHATD_PORT=${CLUSTER_CHATD_PORT:-3001}
STATS_PORT=${CLUSTER_STATS_PORT:-3090}
PG_PORT=${CLUSTER_PG_PORT:-5442}
PGB_PORT=${CLUSTER_PGBOUNCER_PORT:-6442}
REDIS_PORT=${CLUSTER_REDIS_PORT:-6389}
PGR_PORT=${CLUSTER_PG_REPLICA_PORT:-5443}
PGBR_PORT=${CLUSTER_PGBOUNCER_REPLICA_PORT:-6443}
RC_PORT=${CLUSTER_REDIS_CLUSTER_PORT:-7001}
CHATD_BIN=${CHATD_BIN:-build/chatd}
case $CHATD_BIN in /*) ;; *) CHATD_BIN=$REPO/$CHATD_BIN ;; esac
N=3

say() { printf 'cluster: %s\n' "$*"; }
die() { printf 'cluster: error: %s\n' "$*" >&2; exit 1; }

wait_for() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
}

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pid_of() {
  local f=$1 p
  [[ -r $f ]] || return 1
  p=$(cat "$f")
  [[ -n $p ]] && kill -0 "$p" 2>/dev/null && grep -q "$2" "/proc/$p/cmdline" 2>/dev/null && echo "$p"
}
gone() { ! kill -0 "$1" 2>/dev/null; }
instance_port() { echo $((CHATD_PORT + $1 - 1)); }
ready() { curl -fsS -m 2 "http://127.0.0.1:$1/readyz" >/dev/null 2>&1; }
# HAProxy's stats CSV: every chatd server UP
all_up() {
  local csv
  pid_of "$DIR/haproxy.pid" haproxy >/dev/null || return 2
  csv=$(curl -fsS -m 2 "http://127.0.0.1:$STATS_PORT/stats;csv" 2>/dev/null) || return 1
  [[ $(grep -c '^chatd,chatd[0-9]*,.*,UP,' <<<"$csv") -eq $N ]]
}

up_or_dead() {
  local rc=0
  all_up || rc=$?
  ((rc != 1))
}
stack() {
  CHATD_STACK_DIR=$DIR/stack PG_PORT=$PG_PORT PGBOUNCER_PORT=$PGB_PORT REDIS_PORT=$REDIS_PORT \
    PG_REPLICA_PORT=$PGR_PORT PGBOUNCER_REPLICA_PORT=$PGBR_PORT "$REPO/scripts/stack.sh" "$@"
}
rcluster() { "$REPO/scripts/redis-cluster.sh" "$1" "$DIR/redis" "$RC_PORT"; }

redis_url() {
  local i addrs=()
  for i in 0 1 2 3 4 5; do addrs+=("127.0.0.1:$((RC_PORT + i))"); done
  local IFS=,
  echo "redis+cluster://${addrs[*]}"
}

haproxy_env() {
  export HAPROXY_BIND=127.0.0.1:$HA_PORT HAPROXY_STATS=127.0.0.1:$STATS_PORT \
    HAPROXY_SOCKET=$DIR/haproxy.sock
  local i
  for i in $(seq "$N"); do export "CHATD_$i=127.0.0.1:$(instance_port "$i")"; done
}

start_chatd() {
  local i=$1 port
  port=$(instance_port "$i")
  (
    set -a
    # shellcheck disable=SC1091
    . "$DIR/stack/env"
    set +a
    # SIGTERM: /readyz says draining for 2 s (HAProxy's checks take it out
    # within ~1 s), then the listener closes and requests in flight finish
    export CHATD_LISTEN=127.0.0.1:$port REDIS_URL CHATD_DRAIN_MS=${CHATD_DRAIN_MS:-2000}
    REDIS_URL=$(redis_url)
    exec setsid "$CHATD_BIN" >>"$DIR/chatd-$i.log" 2>&1 </dev/null
  ) &
  echo $! >"$DIR/chatd-$i.pid"
}

cmd_start() {
  [[ -x $CHATD_BIN ]] || die "no chatd binary at $CHATD_BIN (make build)"
  command -v haproxy >/dev/null || die "haproxy is not installed (scripts/deps.sh)"
  local i p
  for i in $(seq "$N"); do
    if pid_of "$DIR/chatd-$i.pid" chatd >/dev/null; then die "already running (scripts/cluster.sh stop first)"; fi
  done
  for p in "$HA_PORT" "$STATS_PORT" $(for i in $(seq "$N"); do instance_port "$i"; done); do
    if port_taken "$p"; then
      die "127.0.0.1:$p is taken (make run's chatd? 'make stop' stops it; or set CLUSTER_PORT/CLUSTER_CHATD_PORT/CLUSTER_STATS_PORT)"
    fi
  done
  mkdir -p "$DIR"
  printf '%s\n' "CLUSTER_PORT=$HA_PORT" "CLUSTER_CHATD_PORT=$CHATD_PORT" "CLUSTER_STATS_PORT=$STATS_PORT" \
    "CLUSTER_PG_PORT=$PG_PORT" "CLUSTER_PGBOUNCER_PORT=$PGB_PORT" "CLUSTER_REDIS_PORT=$REDIS_PORT" \
    "CLUSTER_PG_REPLICA_PORT=$PGR_PORT" "CLUSTER_PGBOUNCER_REPLICA_PORT=$PGBR_PORT" \
    "CLUSTER_REDIS_CLUSTER_PORT=$RC_PORT" >"$DIR/ports"
  stack start
  # shellcheck disable=SC1091
  (set -a; . "$DIR/stack/env"; set +a; "$CHATD_BIN" migrate) >>"$DIR/migrate.log" 2>&1 ||
    { tail -n 20 "$DIR/migrate.log" >&2; die "migrate failed"; }
  CLUSTER_TIMEOUT=$TIMEOUT rcluster start
  for i in $(seq "$N"); do start_chatd "$i"; done
  for i in $(seq "$N"); do
    wait_for "$TIMEOUT" ready "$(instance_port "$i")" ||
      { tail -n 30 "$DIR/chatd-$i.log" >&2; die "chatd $i not ready after ${TIMEOUT}s"; }
  done
  haproxy_env
  haproxy -c -q -f "$REPO/deploy/haproxy/haproxy.cfg" || die "haproxy.cfg does not check"
  (exec setsid haproxy -W -db -f "$REPO/deploy/haproxy/haproxy.cfg" >>"$DIR/haproxy.log" 2>&1 </dev/null) &
  echo $! >"$DIR/haproxy.pid"
  if ! wait_for "$TIMEOUT" up_or_dead || ! all_up; then
    tail -n 30 "$DIR/haproxy.log" >&2
    die "HAProxy does not see every instance up"
  fi
  {
    echo "export CLUSTER_URL='http://127.0.0.1:$HA_PORT'"
    for i in $(seq "$N"); do echo "export CLUSTER_CHATD_$i='http://127.0.0.1:$(instance_port "$i")'"; done
    echo "export REDIS_URL='$(redis_url)'"
    grep '^export' "$DIR/stack/env"
  } >"$DIR/env"
  chmod 600 "$DIR/env"
  cmd_where
}

cmd_where() {
  local i
  say "HAProxy        http://127.0.0.1:$HA_PORT  (stats: http://127.0.0.1:$STATS_PORT/stats)"
  for i in $(seq "$N"); do
    say "chatd $i        http://127.0.0.1:$(instance_port "$i")  (log $DIR/chatd-$i.log)"
  done
  say "PostgreSQL     primary 127.0.0.1:$PG_PORT (PgBouncer $PGB_PORT), replica 127.0.0.1:$PGR_PORT (PgBouncer $PGBR_PORT)"
  say "Redis Cluster  127.0.0.1:$RC_PORT-$((RC_PORT + 5)) (3 masters + 3 replicas)"
  say "URLs in $DIR/env; scripts/cluster.sh stop (or make stop) stops it all"
}

cmd_stop() {
  local i pid pids=()
  if pid=$(pid_of "$DIR/haproxy.pid" haproxy); then
    kill -TERM "$pid" 2>/dev/null || true
    wait_for 10 gone "$pid" || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$DIR/haproxy.pid"
  for i in $(seq "$N"); do
    if pid=$(pid_of "$DIR/chatd-$i.pid" chatd); then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  for pid in "${pids[@]}"; do wait_for 20 gone "$pid" || kill -KILL "$pid" 2>/dev/null || true; done
  for i in $(seq "$N"); do rm -f "$DIR/chatd-$i.pid"; done
  [[ ! -d $DIR/redis ]] || rcluster stop
  [[ ! -d $DIR/stack ]] || stack stop
}

cmd_status() {
  local i ok=0
  for i in $(seq "$N"); do
    if pid_of "$DIR/chatd-$i.pid" chatd >/dev/null && ready "$(instance_port "$i")"; then
      say "chatd $i on $(instance_port "$i"): ready"
    else
      say "chatd $i on $(instance_port "$i"): not ready"
      ok=1
    fi
  done
  if pid_of "$DIR/haproxy.pid" haproxy >/dev/null && all_up; then
    say "HAProxy on $HA_PORT: every instance up"
  else
    say "HAProxy on $HA_PORT: not running or an instance down"
    ok=1
  fi
  if rcluster status; then say "Redis Cluster: ok"; else say "Redis Cluster: not ok"; ok=1; fi
  stack status || ok=1
  return "$ok"
}

cmd_instance_start() {
  local i=${1:-}
  if ! [[ $i =~ ^[1-9]$ ]] || ((i > N)); then die "instance-start needs an instance number 1..$N"; fi
  if pid_of "$DIR/chatd-$i.pid" chatd >/dev/null; then die "chatd $i runs already"; fi
  start_chatd "$i"
  wait_for "$TIMEOUT" ready "$(instance_port "$i")" ||
    { tail -n 30 "$DIR/chatd-$i.log" >&2; die "chatd $i not ready after ${TIMEOUT}s"; }
  say "chatd $i ready on 127.0.0.1:$(instance_port "$i")"
}

case ${1:-} in
start) cmd_start ;;
instance-start) cmd_instance_start "${2:-}" ;;
replica-stop | replica-start) stack "$1" ;;
redis-node-start) "$REPO/scripts/redis-cluster.sh" node-start "$DIR/redis" "$RC_PORT" "${2:-}" ;;
stop) cmd_stop ;;
status) cmd_status ;;
*)
  echo "usage: $0 start|stop|status|instance-start N|replica-stop|replica-start|redis-node-start PORT" >&2
  exit 2
  ;;
esac
