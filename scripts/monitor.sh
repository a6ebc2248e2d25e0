#!/usr/bin/env bash
# scripts/monitor.sh — Prometheus, Alertmanager and the exporters on loopback,
# watching the local dev stack (scripts/stack.sh) and a chatd on it.
#
#   scripts/monitor.sh [start]   start what is not running; print the Prometheus URL
#   scripts/monitor.sh stop      stop what start started (idempotent)
#   scripts/monitor.sh status    say what runs (exit 0 when Prometheus answers, 3 otherwise)
#   scripts/monitor.sh pgbouncer-exporter PORT   the minimal PgBouncer exporter, in the
#                                foreground (start uses it when Debian's cannot run)
#
# Uses Debian's packages (scripts/deps.sh installs them): prometheus,
# prometheus-alertmanager, prometheus-postgres-exporter,
# prometheus-redis-exporter, prometheus-pgbouncer-exporter. An exporter whose
# package is missing is skipped with a message; Prometheus itself is required.
#
# Configuration: deploy/prometheus/prometheus.yml and alerts.yml,
# deploy/alertmanager/alertmanager.yml — the deployed files. The runtime copy of
# prometheus.yml ($CHATD_MONITOR_DIR/prometheus.yml) differs only in the target
# ports below and the absolute path of alerts.yml.
#
# Environment (defaults in brackets; every port is below 32768, away from the
# ephemeral range):
#   CHATD_STACK_DIR        the stack to watch              [var/stack]; its env file gives
#                          the PostgreSQL, PgBouncer and Redis ports and credentials
#   CHATD_LISTEN           the chatd to scrape             [127.0.0.1:3000] (what `make run` serves)
#   CHATD_MONITOR_DIR      data, logs, pid files            [var/monitor]
#   MONITOR_PROMETHEUS_PORT     [19090]   MONITOR_ALERTMANAGER_PORT      [19093]
#   MONITOR_PGBOUNCER_EXPORTER_PORT [19127]  MONITOR_REDIS_EXPORTER_PORT [19121]
#   MONITOR_POSTGRES_EXPORTER_PORT  [19187]
#   MONITOR_RETENTION      Prometheus retention            [7d]
#
# Layout of $CHATD_MONITOR_DIR: prometheus.yml (generated), prometheus/ (TSDB),
# alertmanager/ (silences), log/*.log, run/*.pid.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

STACK_DIR=${CHATD_STACK_DIR:-var/stack}
MON=${CHATD_MONITOR_DIR:-var/monitor}
[[ $MON == /* ]] || MON=$REPO/$MON
[[ $STACK_DIR == /* ]] || STACK_DIR=$REPO/$STACK_DIR
CHATD_TARGET=${CHATD_LISTEN:-127.0.0.1:3000}
PROM_PORT=${MONITOR_PROMETHEUS_PORT:-19090}
AM_PORT=${MONITOR_ALERTMANAGER_PORT:-19093}
PGB_EXP_PORT=${MONITOR_PGBOUNCER_EXPORTER_PORT:-19127}
REDIS_EXP_PORT=${MONITOR_REDIS_EXPORTER_PORT:-19121}
PG_EXP_PORT=${MONITOR_POSTGRES_EXPORTER_PORT:-19187}
RETENTION=${MONITOR_RETENTION:-7d}
STARTUP_TIMEOUT=${MONITOR_TIMEOUT:-30}

say() { printf 'monitor: %s\n' "$*"; }
die() {
  printf 'monitor: %s\n' "$*" >&2
  exit 1
}

for p in "$PROM_PORT" "$AM_PORT" "$PGB_EXP_PORT" "$REDIS_EXP_PORT" "$PG_EXP_PORT"; do
  if ! [[ $p =~ ^[0-9]+$ ]] || ((p <= 0 || p >= 32768)); then die "port $p: use a port below 32768"; fi
done

# --- processes -------------------------------------------------------------------
pid_of() { # NAME — pid of our running NAME, or nothing
  local f=$MON/run/$1.pid p
  [[ -r $f ]] || return 1
  p=$(tr -dc 0-9 <"$f")
  [[ -n $p && -r /proc/$p/cmdline ]] || return 1
  # the pid must still be the program we started (its path is in the command line)
  tr '\0' ' ' <"/proc/$p/cmdline" | grep -q -- "$(cat "$MON/run/$1.bin" 2>/dev/null || echo none)" || return 1
  echo "$p"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

http_ok() { # URL
  if command -v curl >/dev/null 2>&1; then
    curl -fsS -m 2 -o /dev/null "$1"
  else
    /usr/bin/python3 -c 'import sys,urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$1"
  fi
}

wait_http() { # NAME URL — 0 when URL answers; 1 (with the log's tail) when NAME exits or times out
  local deadline=$((SECONDS + STARTUP_TIMEOUT))
  until http_ok "$2" >/dev/null 2>&1; do
    if ! pid_of "$1" >/dev/null; then
      tail -n 5 "$MON/log/$1.log" >&2 || true
      say "$1 exited (log: $MON/log/$1.log)" >&2
      return 1
    fi
    if ((SECONDS >= deadline)); then
      tail -n 5 "$MON/log/$1.log" >&2 || true
      say "$1 not ready after ${STARTUP_TIMEOUT}s" >&2
      stop_one "$1"
      return 1
    fi
    sleep 0.2
  done
}

launch() { # NAME PORT READY-URL BINARY ARGS... — start in the background unless running; 1 on failure
  local name=$1 port=$2 url=$3 bin=$4 pid
  shift 4
  if pid=$(pid_of "$name"); then
    say "$name already running (pid $pid)"
    return
  fi
  if port_busy "$port"; then
    say "port $port is taken by another process (set MONITOR_*_PORT)" >&2
    return 1
  fi
  # what its command line must contain for pid_of (MATCH overrides the binary's path)
  printf '%s' "${MATCH:-$bin}" >"$MON/run/$name.bin"
  # setsid: not in the caller's process group, so Ctrl-C in that shell leaves it running
  # 9>&-: the children must not hold the lock of this script
  setsid "$bin" "$@" </dev/null >>"$MON/log/$name.log" 2>&1 9>&- &
  echo $! >"$MON/run/$name.pid"
  wait_http "$name" "$url" || return 1
  say "$name on http://127.0.0.1:$port (pid $(pid_of "$name"))"
}

stop_one() { # NAME
  local pid
  pid=$(pid_of "$1") || { rm -f "$MON/run/$1.pid"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$MON/run/$1.pid"
  say "$1 stopped"
}

# --- a minimal PgBouncer exporter -------------------------------------------------
# Debian 12's prometheus-pgbouncer-exporter (1.7) reads SHOW STATS columns that
# PgBouncer 1.18 no longer has and exits at start. When it does, this one runs
# instead: SHOW POOLS on the admin console at every scrape, under the metric
# names of the Prometheus community's pgbouncer_exporter (what the alert and
# the dashboards read). Environment: PGB_HOST, PGB_PORT, PGB_USER, PGPASSWORD.
#   scripts/monitor.sh pgbouncer-exporter LISTEN-PORT     (foreground)
pgbouncer_exporter_fallback() {
  # the last argument marks the process for pid_of
  exec /usr/bin/python3 - "$1" chatd-pgbouncer-exporter <<'PY'
import http.server, os, sys
import psycopg2

METRICS = [  # SHOW POOLS column -> (name, help)
    ("cl_active", "pgbouncer_pools_client_active_connections", "Client connections linked to a server connection"),
    ("cl_waiting", "pgbouncer_pools_client_waiting_connections", "Client connections waiting for a server connection (cl_waiting)"),
    ("sv_active", "pgbouncer_pools_server_active_connections", "Server connections linked to a client"),
    ("sv_idle", "pgbouncer_pools_server_idle_connections", "Server connections idle and ready"),
]

def esc(v):
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')

def scrape():
    out = []
    try:
        conn = psycopg2.connect(host=os.environ.get("PGB_HOST", "127.0.0.1"),
                                port=os.environ.get("PGB_PORT", "6432"),
                                user=os.environ.get("PGB_USER", "pgbouncer"),
                                dbname="pgbouncer", connect_timeout=3)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SHOW POOLS")
            cols = [c.name for c in cur.description]
            rows = [dict(zip(cols, r)) for r in cur.fetchall()]
        conn.close()
    except Exception as e:  # noqa: BLE001
        sys.stderr.write(f"pgbouncer-exporter: {e}\n")
        return "# HELP pgbouncer_up 1 when PgBouncer's admin console answered\n# TYPE pgbouncer_up gauge\npgbouncer_up 0\n"
    out.append("# HELP pgbouncer_up 1 when PgBouncer's admin console answered")
    out.append("# TYPE pgbouncer_up gauge")
    out.append("pgbouncer_up 1")
    for col, name, help_ in METRICS:
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} gauge")
        for r in rows:
            out.append(f'{name}{{database="{esc(r["database"])}",user="{esc(r["user"])}"}} {int(r[col])}')
    name = "pgbouncer_pools_client_maxwait_seconds"
    out.append(f"# HELP {name} Longest wait of a client for a server connection")
    out.append(f"# TYPE {name} gauge")
    for r in rows:
        w = float(r["maxwait"]) + float(r.get("maxwait_us") or 0) / 1e6
        out.append(f'{name}{{database="{esc(r["database"])}",user="{esc(r["user"])}"}} {w}')
    return "\n".join(out) + "\n"

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.split("?")[0] != "/metrics":
            self.send_error(404)
            return
        body = scrape().encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass

http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
}

# --- the stack's env file ---------------------------------------------------------
read_stack_env() {
  local f=$STACK_DIR/env
  [[ -r $f ]] || die "no $f: start the stack first (make run, or scripts/stack.sh start)"
  set -a
  # shellcheck disable=SC1090
  . "$f"
  set +a
}

url_part() { # URL PART(user|password|host|port|path) — via Python's urllib, which decodes %xx
  /usr/bin/python3 -c '
import sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1]); part = sys.argv[2]
v = {"user": u.username, "password": u.password, "host": u.hostname, "port": u.port,
     "path": u.path.lstrip("/")}[part]
print(urllib.parse.unquote(str(v)) if v is not None else "")' "$1" "$2"
}

# --- configuration ----------------------------------------------------------------
gen_prometheus_yml() {
  local src=$REPO/deploy/prometheus/prometheus.yml tmp=$MON/prometheus.yml.tmp
  sed -e "s#\"127\.0\.0\.1:3000\"#\"$CHATD_TARGET\"#" \
    -e "s#\"127\.0\.0\.1:9127\"#\"127.0.0.1:$PGB_EXP_PORT\"#" \
    -e "s#\"127\.0\.0\.1:9121\"#\"127.0.0.1:$REDIS_EXP_PORT\"#" \
    -e "s#\"127\.0\.0\.1:9187\"#\"127.0.0.1:$PG_EXP_PORT\"#" \
    -e "s#\"127\.0\.0\.1:9093\"#\"127.0.0.1:$AM_PORT\"#" \
    -e "s#\"127\.0\.0\.1:9090\"#\"127.0.0.1:$PROM_PORT\"#" \
    -e "s#^\(  - \)alerts\.yml\$#\1$REPO/deploy/prometheus/alerts.yml#" \
    "$src" >"$tmp"
  {
    printf '# GENERATED by scripts/monitor.sh from deploy/prometheus/prometheus.yml — do not edit.\n'
    cat "$tmp"
  } >"$MON/prometheus.yml"
  rm -f "$tmp"
  grep -q "$REPO/deploy/prometheus/alerts.yml" "$MON/prometheus.yml" || die "could not set the rule file path"
  promtool check config "$MON/prometheus.yml" >"$MON/log/promtool.log" 2>&1 ||
    { cat "$MON/log/promtool.log" >&2; die "generated prometheus.yml is invalid"; }
}

# --- commands ---------------------------------------------------------------------
cmd_start() {
  command -v prometheus >/dev/null || die "prometheus is not installed: run scripts/deps.sh (make deps)"
  command -v promtool >/dev/null || die "promtool is not installed: run scripts/deps.sh (make deps)"
  read_stack_env
  mkdir -p "$MON/run" "$MON/log" "$MON/prometheus" "$MON/alertmanager"
  chmod 700 "$MON/run" "$MON/log"

  local pg_port pgb_port redis_port admin_user admin_pw failed=()
  pg_port=$(url_part "$DATABASE_URL_DIRECT" port)
  pgb_port=$(url_part "$DATABASE_URL" port)
  redis_port=$(url_part "$REDIS_URL" port)
  admin_user=$(url_part "$CHATD_TEST_PG_ADMIN" user)
  admin_pw=$(url_part "$CHATD_TEST_PG_ADMIN" password)

  # exporters first, so Prometheus' first scrape finds them
  # PgBouncer: Debian's exporter, else the minimal one above (see there)
  local pgb_ok=
  if command -v prometheus-pgbouncer-exporter >/dev/null; then
    PGPASSWORD=$admin_pw launch pgbouncer-exporter "$PGB_EXP_PORT" "http://127.0.0.1:$PGB_EXP_PORT/metrics" \
      "$(command -v prometheus-pgbouncer-exporter)" --host 127.0.0.1 --port "$PGB_EXP_PORT" \
      --pgbouncer-host 127.0.0.1 --pgbouncer-port "$pgb_port" --pgbouncer-user "$admin_user" && pgb_ok=1
  fi
  if [[ -z $pgb_ok ]]; then
    say "using scripts/monitor.sh's own PgBouncer exporter (SHOW POOLS) instead"
    PGPASSWORD=$admin_pw PGB_HOST=127.0.0.1 PGB_PORT=$pgb_port PGB_USER=$admin_user \
      MATCH=chatd-pgbouncer-exporter \
      launch pgbouncer-exporter "$PGB_EXP_PORT" "http://127.0.0.1:$PGB_EXP_PORT/metrics" \
      "$REPO/scripts/monitor.sh" pgbouncer-exporter "$PGB_EXP_PORT" || failed+=(pgbouncer-exporter)
  fi
  if command -v prometheus-redis-exporter >/dev/null; then
    launch redis-exporter "$REDIS_EXP_PORT" "http://127.0.0.1:$REDIS_EXP_PORT/metrics" \
      "$(command -v prometheus-redis-exporter)" --redis.addr="redis://127.0.0.1:$redis_port" \
      --web.listen-address="127.0.0.1:$REDIS_EXP_PORT" || failed+=(redis-exporter)
  else
    say "prometheus-redis-exporter not installed: Redis panels stay empty"
  fi
  if command -v prometheus-postgres-exporter >/dev/null; then
    DATA_SOURCE_URI="127.0.0.1:$pg_port/chat?sslmode=disable" \
      DATA_SOURCE_USER=$admin_user DATA_SOURCE_PASS=$admin_pw \
      launch postgres-exporter "$PG_EXP_PORT" "http://127.0.0.1:$PG_EXP_PORT/metrics" \
      "$(command -v prometheus-postgres-exporter)" --web.listen-address="127.0.0.1:$PG_EXP_PORT" ||
      failed+=(postgres-exporter)
  else
    say "prometheus-postgres-exporter not installed: PostgreSQL panels stay empty"
  fi
  if command -v prometheus-alertmanager >/dev/null; then
    # --cluster.listen-address= : a single Alertmanager, no gossip port
    launch alertmanager "$AM_PORT" "http://127.0.0.1:$AM_PORT/-/ready" \
      "$(command -v prometheus-alertmanager)" --config.file="$REPO/deploy/alertmanager/alertmanager.yml" \
      --storage.path="$MON/alertmanager" --web.listen-address="127.0.0.1:$AM_PORT" \
      --cluster.listen-address= || failed+=(alertmanager)
  else
    say "prometheus-alertmanager not installed: alerts show in Prometheus only"
  fi

  gen_prometheus_yml
  launch prometheus "$PROM_PORT" "http://127.0.0.1:$PROM_PORT/-/ready" \
    "$(command -v prometheus)" --config.file="$MON/prometheus.yml" \
    --storage.tsdb.path="$MON/prometheus" --storage.tsdb.retention.time="$RETENTION" \
    --web.listen-address="127.0.0.1:$PROM_PORT" --web.enable-lifecycle ||
    die "Prometheus did not start"
  # a running Prometheus re-reads its (regenerated) configuration
  if http_ok "http://127.0.0.1:$PROM_PORT/-/ready" && command -v curl >/dev/null; then
    curl -fsS -m 5 -XPOST "http://127.0.0.1:$PROM_PORT/-/reload" >/dev/null 2>&1 || true
  fi

  say "scraping chatd at $CHATD_TARGET, the stack in $STACK_DIR"
  if ((${#failed[@]})); then
    say "did not start: ${failed[*]} — their panels and alerts stay empty (logs in $MON/log)" >&2
  fi
  say "Prometheus: http://127.0.0.1:$PROM_PORT   (alerts: http://127.0.0.1:$PROM_PORT/alerts)"
  echo "http://127.0.0.1:$PROM_PORT"
}

cmd_stop() {
  [[ -d $MON/run ]] || return 0
  local n
  for n in prometheus alertmanager postgres-exporter redis-exporter pgbouncer-exporter; do
    stop_one "$n"
  done
}

cmd_status() {
  local n pid rc=3
  for n in prometheus alertmanager postgres-exporter redis-exporter pgbouncer-exporter; do
    if pid=$(pid_of "$n"); then say "$n running (pid $pid)"; else say "$n not running"; fi
  done
  if http_ok "http://127.0.0.1:$PROM_PORT/-/ready" 2>/dev/null && pid_of prometheus >/dev/null; then
    say "Prometheus: http://127.0.0.1:$PROM_PORT"
    rc=0
  fi
  return $rc
}

if [[ ${1:-} == pgbouncer-exporter ]]; then
  [[ ${2:-} =~ ^[0-9]+$ ]] || die "usage: $0 pgbouncer-exporter LISTEN-PORT"
  pgbouncer_exporter_fallback "$2"
fi

LOCK=/tmp/chatd-monitor-$(printf '%s' "$MON" | sha256sum | cut -c1-12).lock
exec 9>"$LOCK"
flock -w 120 9 || die "another monitor.sh holds $LOCK"
case ${1:-start} in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *)
    echo "usage: $0 [start|stop|status]" >&2
    exit 2
    ;;
esac
