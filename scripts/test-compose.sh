#!/usr/bin/env bash
# scripts/test-compose.sh — deploy/docker-compose.yml really run, once per `make test`.
#
# Builds the images (scripts/images.sh: the debootstrap base when missing, podman's
# layer cache otherwise), starts a private podman API service on a socket under
# var/compose-test, and runs tests/compose/test_compose.py with Debian's
# docker-compose against it: the seed's commands (up postgres redis pgbouncer,
# then chatd, then the monitoring profile without Grafana), health, a REST and
# WebSocket smoke through the published chatd port, Prometheus scraping chatd,
# Redis and PgBouncer restarted under sends, `down -v`; then
# deploy/docker-compose.cluster.yml in a second project (tests/compose/test_compose_cluster.py:
# one `up -d`, every service healthy, REST, stream, freshness and replica reads through
# HAProxy, an instance stopped and started, `down -v`). Whatever happens, it then removes
# every container, volume and network of both compose projects (by label) and stops
# the service; it prints each step's time.
#
# Environment:
#   COMPOSE_TEST_PORT     chatd's published port on 127.0.0.1 (25550), the cluster's
#                         HAProxy's too; Prometheus, Alertmanager and Grafana get the
#                         next three, HAProxy's stats page the fourth
#   COMPOSE_TEST_TIMEOUT  seconds for the pytest run (900)
#   CHATD_IMAGES_DIR      scripts/images.sh's cache (var/images)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
export CONTAINERS_CONF=${CONTAINERS_CONF:-$REPO/deploy/podman/containers.conf}
PORT=${COMPOSE_TEST_PORT:-25550}
if [[ ! $PORT =~ ^[0-9]+$ ]] || ((PORT <= 0 || PORT + 4 >= 32768)); then
  echo "test-compose: COMPOSE_TEST_PORT $PORT: use a port below 32764" >&2
  exit 1
fi
DIR=$REPO/var/compose-test
SOCK=$DIR/podman.sock
export COMPOSE_PROJECT_NAME=chatdtest$PORT
export DOCKER_HOST=unix://$SOCK
export COMPOSE_TEST_ENV_FILE=$DIR/empty.env COMPOSE_TEST_TIMINGS=$DIR/timings.txt
export CHATD_PUBLISH=127.0.0.1:$PORT PROMETHEUS_PUBLISH=127.0.0.1:$((PORT + 1))
export ALERTMANAGER_PUBLISH=127.0.0.1:$((PORT + 2)) GRAFANA_PUBLISH=127.0.0.1:$((PORT + 3))
export HAPROXY_STATS_PUBLISH=127.0.0.1:$((PORT + 4))
secret() { od -An -N16 -tx1 /dev/urandom | tr -d ' \n'; }
CHATD_DB_PASSWORD=$(secret)
CHATD_ADMIN_DB_PASSWORD=$(secret)
CHATD_ADMIN_TOKEN=$(secret)
export CHATD_DB_PASSWORD CHATD_ADMIN_DB_PASSWORD CHATD_ADMIN_TOKEN
# the single-host project and the cluster's (tests/compose/test_compose_cluster.py)
PROJECTS=("$COMPOSE_PROJECT_NAME" "${COMPOSE_PROJECT_NAME}cl")
FILES=(deploy/docker-compose.yml deploy/docker-compose.cluster.yml)

say() { printf 'test-compose: %s\n' "$*"; }
for tool in podman docker-compose; do
  command -v "$tool" >/dev/null || { say "$tool missing: run scripts/deps.sh" >&2; exit 1; }
done

mkdir -p "$DIR"
: >"$COMPOSE_TEST_ENV_FILE"
: >"$COMPOSE_TEST_TIMINGS"
service_pid=

# every object of both projects, by label, with podman itself (no API needed)
remove_project() {
  local ids p label
  for p in "${PROJECTS[@]}"; do
    label=label=com.docker.compose.project=$p
    ids=$(podman ps -a -q --filter "$label")
    # shellcheck disable=SC2086 # one id a word
    [[ -z $ids ]] || podman rm -f -t 5 $ids >/dev/null || true
    ids=$(podman volume ls -q --filter "$label")
    # shellcheck disable=SC2086
    [[ -z $ids ]] || podman volume rm -f $ids >/dev/null || true
    ids=$(podman network ls -q --filter "$label")
    # shellcheck disable=SC2086
    [[ -z $ids ]] || podman network rm -f $ids >/dev/null || true
  done
}

left_behind() {
  local p label
  for p in "${PROJECTS[@]}"; do
    label=label=com.docker.compose.project=$p
    podman ps -a -q --filter "$label"
    podman volume ls -q --filter "$label"
    podman network ls -q --filter "$label"
  done
}

cleanup() {
  local rc=$?
  if [[ -n $service_pid ]] && kill -0 "$service_pid" 2>/dev/null; then
    # twice: podman removes `net` only after the containers in its namespace
    for i in 0 1; do
      for _ in 1 2; do
        docker-compose --ansi never -f "${FILES[$i]}" -p "${PROJECTS[$i]}" \
          --env-file "$COMPOSE_TEST_ENV_FILE" --profile monitoring down -v --remove-orphans \
          --timeout 10 >>"$DIR/cleanup.log" 2>&1 && break
      done
    done
  fi
  remove_project
  if [[ -n $service_pid ]]; then
    kill -TERM "$service_pid" 2>/dev/null || true
    wait "$service_pid" 2>/dev/null || true
  fi
  rm -f "$SOCK"
  left=$(left_behind)
  if [[ -n $left ]]; then
    say "left behind in podman: $left" >&2
    rc=1
  fi
  if [[ -s $COMPOSE_TEST_TIMINGS ]]; then
    say "steps (seconds):"
    sed 's/^\(.*\) \([0-9.]*\)$/  \2\t\1/' "$COMPOSE_TEST_TIMINGS"
  fi
  exit "$rc"
}
trap cleanup EXIT

# a run killed half-way leaves its project behind: the same name, so remove it
remove_project

t0=$SECONDS
scripts/images.sh build
echo "images (base, build or cache) $((SECONDS - t0))" >>"$COMPOSE_TEST_TIMINGS"

rm -f "$SOCK"
# podman's API for docker-compose; no systemd here, so no health-check timers either
DISABLE_HC_SYSTEMD=true podman system service --time=0 "unix://$SOCK" >"$DIR/podman-service.log" 2>&1 &
service_pid=$!
for _ in $(seq 100); do
  [[ -S $SOCK ]] && podman --remote --url "unix://$SOCK" version >/dev/null 2>&1 && break
  kill -0 "$service_pid" 2>/dev/null || break
  sleep 0.1
done
podman --remote --url "unix://$SOCK" version >/dev/null ||
  { say "podman's API service did not start; see $DIR/podman-service.log" >&2; exit 1; }

say "compose project $COMPOSE_PROJECT_NAME, chatd on $CHATD_PUBLISH, Prometheus on $PROMETHEUS_PUBLISH"
timeout -s INT -k 30 "${COMPOSE_TEST_TIMEOUT:-900}" \
  /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/compose
