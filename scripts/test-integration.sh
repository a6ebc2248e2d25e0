#!/usr/bin/env bash
# scripts/test-integration.sh — the integration half of `make test`.
#
# Starts the test stack (var/test-stack; PostgreSQL 15432, PgBouncer 16432,
# Redis 16379), empties its database and Redis, applies migrations with build/chatd, runs the pytest suite
# twice — the release build through PgBouncer, then the sanitizer build
# straight to PostgreSQL — and always stops the stack. Both runs happen even
# when the first fails; the exit status is non-zero if either failed.
#
# Environment: PYTEST_ARGS (extra pytest arguments), INTEGRATION_TIMEOUT
# (seconds per pytest run, default 900).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

# another checkout testing at the same time may move its stack elsewhere:
# CHATD_TEST_STACK_DIR, CHATD_TEST_PG_PORT, CHATD_TEST_PGBOUNCER_PORT, CHATD_TEST_REDIS_PORT,
# CHATD_TEST_REDIS_CLUSTER_PORT (the first of the six of test_redis_cluster.py's cluster),
# CHATD_TEST_PG_REPLICA_PORT, CHATD_TEST_PGBOUNCER_REPLICA_PORT (test_replicas.py),
# CHATD_TEST_CLUSTER_PORT (test_cluster.py's cluster: HAProxy there, its instances and
# servers on offsets up to +533) and CHATD_TEST_CLUSTER_REDIS_PORT (its Redis Cluster)
export CHATD_TEST_PG_PORT=${CHATD_TEST_PG_PORT:-15432}
export CHATD_TEST_PGBOUNCER_PORT=${CHATD_TEST_PGBOUNCER_PORT:-16432}
export CHATD_TEST_REDIS_PORT=${CHATD_TEST_REDIS_PORT:-16379}
export CHATD_TEST_REDIS_CLUSTER_PORT=${CHATD_TEST_REDIS_CLUSTER_PORT:-17001}
# test_replicas.py's streaming replica of the stack and its PgBouncer (stack.sh replica-start)
export CHATD_TEST_PG_REPLICA_PORT=${CHATD_TEST_PG_REPLICA_PORT:-15433}
export CHATD_TEST_PGBOUNCER_REPLICA_PORT=${CHATD_TEST_PGBOUNCER_REPLICA_PORT:-16433}
export CHATD_TEST_CLUSTER_PORT=${CHATD_TEST_CLUSTER_PORT:-21000}
export CHATD_TEST_CLUSTER_REDIS_PORT=${CHATD_TEST_CLUSTER_REDIS_PORT:-17201}
export CHATD_TEST_STACK_DIR=${CHATD_TEST_STACK_DIR:-$REPO/var/test-stack}
export CHATD_STACK_DIR=$CHATD_TEST_STACK_DIR PG_PORT=$CHATD_TEST_PG_PORT \
  PGBOUNCER_PORT=$CHATD_TEST_PGBOUNCER_PORT REDIS_PORT=$CHATD_TEST_REDIS_PORT
PY=/usr/bin/python3
TIMEOUT=${INTEGRATION_TIMEOUT:-900}

for bin in build/chatd build-asan/chatd; do
  [[ -x $bin ]] || { echo "test-integration: $bin missing (make build build-asan)" >&2; exit 1; }
done

trap 'scripts/stack.sh stop' EXIT
scripts/stack.sh start
# every run starts from an empty database and cache, as on CI
scripts/stack.sh reset-db
(
  set -a
  # shellcheck source=/dev/null # written at run time by scripts/stack.sh start
  . "$CHATD_STACK_DIR/env"
  exec build/chatd migrate
)

# the unit tests that need a real PostgreSQL (the pool, a connection, the
# failover path, migrations) run here, where there is one; `make unit` alone
# skips those cases. CHATD_TEST_REQUIRE_PG makes a missing server a failure.
unit_rc=0
for dir in build build-asan; do
  echo "=== unit tests with PostgreSQL ($dir) ==="
  (
    set -a
    # shellcheck source=/dev/null # written at run time by scripts/stack.sh start
    . "$CHATD_STACK_DIR/env"
    set +a
    CHATD_TEST_PG=$DATABASE_URL_DIRECT CHATD_TEST_REQUIRE_PG=1 \
      ctest --test-dir "$dir" --output-on-failure -R '^test_(pool|db_conn|path|migrate)$'
  ) || unit_rc=1
done

# sanitizer reports go to chatd's log, where the fixtures look for them
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:halt_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

rc=0
run() { # NAME BIN DB_PATH [PYTEST-ARG...]
  local name=$1 bin=$2 db=$3
  shift 3
  echo "=== integration: $name ($bin, database path: $db) ==="
  # SIGINT on timeout lets pytest tear its fixtures down (chatd processes, stack)
  # shellcheck disable=SC2086 # PYTEST_ARGS holds several words (e.g. "-x -k stream")
  CHATD_BIN=$bin CHATD_TEST_DB_PATH=$db timeout -s INT -k 30 "$TIMEOUT" \
    "$PY" -m pytest -q tests/integration "$@" ${PYTEST_ARGS:-} || {
    echo "=== integration: $name FAILED ===" >&2
    rc=1
  }
}
run release build/chatd pooler
# KNOWN DEFECT, left open on issue 14: under the sanitizer build's slower loop
# the Redis Cluster client's node handshakes (200 ms) time out while a worker
# starts, and rate limits are then decided locally and a pattern delete misses
# keys; test_redis_cluster.py runs in the release pass only until that is fixed,
# and so does test_cluster.py (make cluster's layout: its instances on the same
# Redis Cluster client; ~30 s).
run sanitizers build-asan/chatd direct --ignore=tests/integration/test_redis_cluster.py \
  --ignore=tests/integration/test_cluster.py
[[ $unit_rc -eq 0 ]] || { echo "=== unit tests with PostgreSQL FAILED ===" >&2; rc=1; }
exit $rc
