#!/usr/bin/env bash
# scripts/test-integration.sh — the integration half of `make test`.
#
# Runs the pytest suite twice — the release build through PgBouncer, and the
# sanitizer build straight to PostgreSQL — each pass on its own private stack
# (PostgreSQL, PgBouncer, Redis), which it starts, empties, migrates with its
# build's chatd, and always stops. Before its suite each pass also runs the
# unit tests that need a real PostgreSQL against its stack, with its build.
#
# The two passes run at the same time: most of a pass is waiting (for
# timeouts, restarts, conditions), so together they take little more than the
# slower one alone. Each writes var/test-logs/NAME.log, printed whole when it
# ends. Both always run to their end; the exit status is non-zero if either
# failed. INTEGRATION_PARALLEL=0 runs them one after the other.
#
# Ports: the release pass uses CHATD_TEST_PG_PORT (15432), CHATD_TEST_PGBOUNCER_PORT
# (16432), CHATD_TEST_REDIS_PORT (16379), CHATD_TEST_REDIS_CLUSTER_PORT (17001, the
# first of six; test_redis_cluster.py), the PostgreSQL and PgBouncer ports + 1 for
# the stack's streaming replica (test_replicas.py) and the stack directory
# CHATD_TEST_STACK_DIR (var/test-stack); the sanitizer pass every port + 10 and
# that directory's name + "-asan". Another checkout testing at the same time
# moves them all by setting those variables.
#
# Environment: PYTEST_ARGS (extra pytest arguments), INTEGRATION_TIMEOUT
# (seconds per pytest run, default 1200), INTEGRATION_PARALLEL (1).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

PG=${CHATD_TEST_PG_PORT:-15432}
PGB=${CHATD_TEST_PGBOUNCER_PORT:-16432}
REDIS=${CHATD_TEST_REDIS_PORT:-16379}
CLUSTER=${CHATD_TEST_REDIS_CLUSTER_PORT:-17001}
STACK=${CHATD_TEST_STACK_DIR:-$REPO/var/test-stack}
# test_cluster.py's cluster (make cluster's layout): HAProxy there, its instances and
# servers on offsets up to +533; and its Redis Cluster's first port
CLUSTER_HTTP=${CHATD_TEST_CLUSTER_PORT:-21000}
CLUSTER_REDIS=${CHATD_TEST_CLUSTER_REDIS_PORT:-17201}
PY=/usr/bin/python3
TIMEOUT=${INTEGRATION_TIMEOUT:-1200}
LOGS=$REPO/var/test-logs

for bin in build/chatd build-asan/chatd; do
  [[ -x $bin ]] || { echo "test-integration: $bin missing (make build build-asan)" >&2; exit 1; }
done

# sanitizer reports go to chatd's log, where the fixtures look for them
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:halt_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# one pass, in a subshell of its own: NAME BUILD_DIR DB_PATH STACK_DIR PG PGBOUNCER
# REDIS CLUSTER [PYTEST-ARG...]; its exit status says whether all of it passed
pass() {
  local name=$1 dir=$2 db=$3
  export CHATD_TEST_STACK_DIR=$4 CHATD_TEST_PG_PORT=$5 CHATD_TEST_PGBOUNCER_PORT=$6 \
    CHATD_TEST_REDIS_PORT=$7 CHATD_TEST_REDIS_CLUSTER_PORT=$8
  # test_replicas.py's streaming replica of the stack and its PgBouncer (stack.sh replica-start)
  export CHATD_TEST_PG_REPLICA_PORT=$(($5 + 1)) CHATD_TEST_PGBOUNCER_REPLICA_PORT=$(($6 + 1))
  export CHATD_TEST_CLUSTER_PORT=$CLUSTER_HTTP CHATD_TEST_CLUSTER_REDIS_PORT=$CLUSTER_REDIS
  shift 8
  export CHATD_STACK_DIR=$CHATD_TEST_STACK_DIR PG_PORT=$CHATD_TEST_PG_PORT \
    PGBOUNCER_PORT=$CHATD_TEST_PGBOUNCER_PORT REDIS_PORT=$CHATD_TEST_REDIS_PORT
  local rc=0
  trap 'scripts/stack.sh stop' EXIT
  scripts/stack.sh start
  # every run starts from an empty database and cache, as on CI
  scripts/stack.sh reset-db
  (
    set -a
    # shellcheck source=/dev/null # written at run time by scripts/stack.sh start
    . "$CHATD_STACK_DIR/env"
    exec "$dir/chatd" migrate
  )
  # the unit tests that need a real PostgreSQL (the pool, a connection, the
  # failover path, migrations) run here, where there is one; `make unit` alone
  # skips those cases. CHATD_TEST_REQUIRE_PG makes a missing server a failure.
  echo "=== unit tests with PostgreSQL ($dir) ==="
  (
    set -a
    # shellcheck source=/dev/null
    . "$CHATD_STACK_DIR/env"
    set +a
    CHATD_TEST_PG=$DATABASE_URL_DIRECT CHATD_TEST_REQUIRE_PG=1 \
      ctest --test-dir "$dir" --output-on-failure -R '^test_(pool|db_conn|path|migrate)$'
  ) || {
    echo "=== unit tests with PostgreSQL ($dir) FAILED ===" >&2
    rc=1
  }
  echo "=== integration: $name ($dir/chatd, database path: $db, stack $CHATD_STACK_DIR) ==="
  # SIGINT on timeout lets pytest tear its fixtures down (chatd processes, servers)
  # shellcheck disable=SC2086 # PYTEST_ARGS holds several words (e.g. "-x -k stream")
  CHATD_BIN=$dir/chatd CHATD_TEST_DB_PATH=$db timeout -s INT -k 30 "$TIMEOUT" \
    "$PY" -m pytest -q -p no:cacheprovider tests/integration "$@" ${PYTEST_ARGS:-} || {
    echo "=== integration: $name FAILED ===" >&2
    rc=1
  }
  return $rc
}

release=(release build pooler "$STACK" "$PG" "$PGB" "$REDIS" "$CLUSTER")
# test_cluster.py (a whole cluster of instances, about a minute) runs in the
# release pass only, for the time it takes
sanitizers=(sanitizers build-asan direct "$STACK-asan" $((PG + 10)) $((PGB + 10)) $((REDIS + 10))
  $((CLUSTER + 10)) --ignore=tests/integration/test_cluster.py)

rc=0
if [[ ${INTEGRATION_PARALLEL:-1} == 0 ]]; then
  (pass "${release[@]}") || rc=1
  (pass "${sanitizers[@]}") || rc=1
  exit $rc
fi

mkdir -p "$LOGS"
pids=()
t0=$SECONDS
for p in release sanitizers; do
  declare -n args=$p
  echo "=== integration: $p pass started (log: var/test-logs/$p.log) ==="
  (pass "${args[@]}") >"$LOGS/$p.log" 2>&1 &
  pids+=($!)
done
# each log whole, in order, once its pass has ended
for i in 0 1; do
  p=$([[ $i == 0 ]] && echo release || echo sanitizers)
  if wait "${pids[$i]}"; then r=passed; else r=FAILED rc=1; fi
  cat "$LOGS/$p.log"
  echo "=== integration: $p pass $r, $((SECONDS - t0)) s after the start ==="
done
exit $rc
