#!/usr/bin/env bash
# scripts/redis-cluster.sh — a private Redis Cluster on loopback for chatd's tests:
# 3 masters and 3 replicas on ports BASEPORT..BASEPORT+5 (cluster bus: +10000).
#
#   scripts/redis-cluster.sh start  DIR BASEPORT   start six empty nodes, create the
#                                                  cluster, wait until every node
#                                                  says cluster_state:ok
#   scripts/redis-cluster.sh stop   DIR BASEPORT   stop every node (idempotent)
#   scripts/redis-cluster.sh status DIR BASEPORT   exit 0 when every node says ok
#   scripts/redis-cluster.sh node-start DIR BASEPORT PORT   start one stopped node
#                                                  again from its nodes.conf (it
#                                                  rejoins; a master that was
#                                                  replaced comes back as a
#                                                  replica), wait until every node
#                                                  says ok
#
# DIR holds one directory per node (nodes.conf, redis.log, redis.pid); it is
# emptied at each start, so a start always makes a new cluster. Nothing is
# persisted. cluster-node-timeout is 1000 ms so that a replica takes over a
# dead master within a few seconds. CLUSTER_TIMEOUT (seconds, default 30)
# bounds every wait.
set -euo pipefail

CMD=${1:-}
DIR=${2:-}
BASE=${3:-}
TIMEOUT=${CLUSTER_TIMEOUT:-30}
[[ -n $CMD && -n $DIR && $BASE =~ ^[0-9]+$ ]] || {
  echo "usage: $0 start|stop|status DIR BASEPORT | node-start DIR BASEPORT PORT" >&2
  exit 2
}
((BASE >= 1024 && BASE + 5 + 10000 < 32768)) || {
  echo "BASEPORT must leave the six ports and their bus ports (+10000) in 1024..32767" >&2
  exit 2
}
case $DIR in /*) ;; *) DIR=$PWD/$DIR ;; esac
PORTS=()
for i in 0 1 2 3 4 5; do PORTS+=($((BASE + i))); done

say() { echo "redis-cluster: $*"; }
node_pid() {
  local f=$DIR/$1/redis.pid p
  [[ -r $f ]] || return 1
  p=$(cat "$f")
  [[ -n $p ]] && kill -0 "$p" 2>/dev/null && grep -q redis-server "/proc/$p/cmdline" 2>/dev/null && echo "$p"
}
node_ok() { redis-cli -h 127.0.0.1 -p "$1" cluster info 2>/dev/null | grep -q '^cluster_state:ok'; }

# wait_for SECONDS CMD... — polls CMD every 0.1 s until it succeeds or time runs out.
wait_for() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
}

all_ok() {
  local p
  for p in "${PORTS[@]}"; do node_ok "$p" || return 1; done
}

gone() { ! kill -0 "$1" 2>/dev/null; }

# Every node at once; a node that outlives 10 s is killed.
stop() {
  local p pid pids=()
  for p in "${PORTS[@]}"; do
    if pid=$(node_pid "$p"); then
      kill "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  for pid in "${pids[@]}"; do
    wait_for 10 gone "$pid" || kill -9 "$pid" 2>/dev/null || true
  done
  for p in "${PORTS[@]}"; do rm -f "$DIR/$p/redis.pid"; done
}

# One node in DIR/PORT (its nodes.conf, when there is one, says which cluster it is in).
run_node() {
  redis-server --port "$1" --bind 127.0.0.1 --protected-mode yes --daemonize yes \
    --dir "$DIR/$1" --pidfile "$DIR/$1/redis.pid" --logfile "$DIR/$1/redis.log" \
    --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 1000 \
    --cluster-replica-validity-factor 0 --save '' --appendonly no \
    --shutdown-on-sigterm 'nosave now' \
    --maxmemory 128mb --maxmemory-policy allkeys-lru >/dev/null
}

node_start() {
  local p=${1:-}
  [[ " ${PORTS[*]} " == *" $p "* && -f $DIR/$p/nodes.conf ]] ||
    { echo "node-start needs the port of a node of this cluster (${PORTS[0]}-${PORTS[5]})" >&2; exit 2; }
  node_pid "$p" >/dev/null && { say "node $p runs already"; return 0; }
  run_node "$p"
  wait_for "$TIMEOUT" all_ok || { tail -n 20 "$DIR/$p/redis.log" >&2; say "cluster not ok after ${TIMEOUT}s"; exit 1; }
  say "node $p back"
}

# A new cluster: six empty nodes, created with one replica for each master.
start() {
  local p addrs=()
  stop
  for p in "${PORTS[@]}"; do
    rm -rf "${DIR:?}/$p"
    install -d -m 700 "$DIR/$p"
    run_node "$p"
    addrs+=("127.0.0.1:$p")
  done
  for p in "${PORTS[@]}"; do
    wait_for "$TIMEOUT" redis-cli -h 127.0.0.1 -p "$p" ping >/dev/null ||
      { tail -n 20 "$DIR/$p/redis.log" >&2; say "node $p did not start"; exit 1; }
  done
  redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >"$DIR/create.log" 2>&1 ||
    { cat "$DIR/create.log" >&2; say "cluster create failed"; exit 1; }
  wait_for "$TIMEOUT" all_ok || { say "cluster not ok after ${TIMEOUT}s"; exit 1; }
  say "ok on ${PORTS[0]}-${PORTS[5]} (dir $DIR)"
}

case $CMD in
start) start ;;
stop) stop ;;
status) all_ok ;;
node-start) node_start "${4:-}" ;;
*)
  echo "usage: $0 start|stop|status DIR BASEPORT | node-start DIR BASEPORT PORT" >&2
  exit 2
  ;;
esac
