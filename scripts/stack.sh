#!/usr/bin/env bash
# scripts/stack.sh — chatd's private local stack: PostgreSQL 15, PgBouncer, Redis.
#
#   scripts/stack.sh start    initialise (once) and start all three; wait until ready
#   scripts/stack.sh stop     stop all three (idempotent)
#   scripts/stack.sh status   say what runs (exit 0 when all three answer, 3 otherwise)
#   scripts/stack.sh env      print shell lines: export DATABASE_URL=... (eval "$(...)")
#   scripts/stack.sh reset-db empty database `chat` (drop, recreate) and Redis (make test does)
#   scripts/stack.sh replica-start  start only the streaming replica and its PgBouncer (made once)
#   scripts/stack.sh replica-stop   stop only the replica and its PgBouncer (idempotent)
#   scripts/stack.sh replica-stop server   stop only the replica's PostgreSQL: its
#                                   PgBouncer keeps accepting (a server gone behind its pooler)
#
# Environment:
#   CHATD_STACK_DIR  where the stack lives        (default var/stack, relative to the repo)
#   PG_PORT          PostgreSQL port              (default 5432)
#   PGBOUNCER_PORT   PgBouncer port               (default 6432)
#   REDIS_PORT       Redis port                   (default 6379)
#   PG_REPLICA_PORT  with PGBOUNCER_REPLICA_PORT: the stack also runs a hot-standby
#   PGBOUNCER_REPLICA_PORT   streaming replica of its PostgreSQL on PG_REPLICA_PORT,
#                    behind its own PgBouncer on PGBOUNCER_REPLICA_PORT (same config
#                    shape as the primary's). Unset (and not in `ports`): no replica.
#                    `none` for both forgets a recorded replica.
#   PG_BIN           PostgreSQL binaries          (default /usr/lib/postgresql/15/bin)
#   STACK_TIMEOUT    seconds to wait for a server (default 60)
#
# Layout of $CHATD_STACK_DIR:
#   pg/                     the cluster (initdb once, reused afterwards)
#   pgbouncer/pgbouncer.ini generated from deploy/pgbouncer/pgbouncer.ini at each start
#   pgbouncer/userlist.txt  SCRAM verifiers copied from pg_authid (mode 600)
#   pg-replica/             the replica (pg_basebackup -R of pg/, once; made again
#                           when pg/ is a different cluster), when one is configured
#   pgbouncer-replica/      the replica's PgBouncer, generated the same way
#   redis/redis.conf        copy of deploy/redis/redis.conf; Redis' working dir
#   run/                    pid files and unix sockets
#   log/                    postgres.log, pgbouncer.log, redis.log (+ postgres-replica.log,
#                           pgbouncer-replica.log)
#   secrets/                chat.password, chat_admin.password (mode 600, generated once)
#   env                     what `env` prints (written by start); with a replica it also
#                           holds DATABASE_URL_REPLICAS (its PgBouncer; a comma-separated
#                           list in general), DATABASE_URL_REPLICAS_DIRECT (the replica
#                           itself) and CHATD_TEST_PG_REPLICA_ADMIN (superuser on it)
#   ports                   the ports of the last start: stop/status/env and a
#                           later start use them unless the environment says otherwise
#
# The replica streams as chat_admin (pg_hba allows replication to it over TCP),
# with hot_standby_feedback on so that vacuum on the primary does not cancel its
# reads. `start` waits until it is streaming.
#
# Roles: `chat` (LOGIN, owns database `chat`; what chatd uses) and `chat_admin`
# (the cluster's superuser, also PgBouncer's admin user; for tests and operators).
# Every connection, TCP or unix socket, authenticates with SCRAM-SHA-256.
#
# Servers never run as root (PostgreSQL and PgBouncer refuse). When this script
# runs as root they run as the `postgres` system user through runuser; otherwise
# as the calling user. runuser resets the soft open-file limit to 1024, so each
# server command raises it (`ulimit -n`) itself — PgBouncer stalls near 1,000
# clients otherwise.
#
# The postgres user must be able to reach the stack directory. A repo cloned
# under a directory it cannot traverse (e.g. /root, mode 700) would break that,
# so then the real data lives in /tmp/chatd-stack-<hash of the path> (mode 700,
# owned by postgres) and $CHATD_STACK_DIR is a symlink to it. Paths given to the
# servers are always the resolved ones.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
STACK_TIMEOUT=${STACK_TIMEOUT:-60}
STACK_DIR=${CHATD_STACK_DIR:-var/stack}
case $STACK_DIR in /*) ;; *) STACK_DIR=$REPO/$STACK_DIR ;; esac
STACK_DIR=${STACK_DIR%/}
# ports: the environment, else those of the last start of this stack, else the defaults
if [[ -r $STACK_DIR/ports ]]; then
  while IFS='=' read -r k v; do
    case $k in
      PG_PORT | PGBOUNCER_PORT | REDIS_PORT | PG_REPLICA_PORT | PGBOUNCER_REPLICA_PORT)
        [[ -n ${!k:-} ]] || printf -v "$k" '%s' "$v"
        ;;
    esac
  done <"$STACK_DIR/ports"
fi
PG_PORT=${PG_PORT:-5432}
PGBOUNCER_PORT=${PGBOUNCER_PORT:-6432}
REDIS_PORT=${REDIS_PORT:-6379}
PG_REPLICA_PORT=${PG_REPLICA_PORT:-}
PGBOUNCER_REPLICA_PORT=${PGBOUNCER_REPLICA_PORT:-}
[[ $PG_REPLICA_PORT != none ]] || PG_REPLICA_PORT=
[[ $PGBOUNCER_REPLICA_PORT != none ]] || PGBOUNCER_REPLICA_PORT=

DB_NAME=chat
APP_USER=chat
ADMIN_USER=chat_admin

say() { printf 'stack: %s\n' "$*"; }
die() { printf 'stack: error: %s\n' "$*" >&2; exit 1; }

if [[ -n $PG_REPLICA_PORT$PGBOUNCER_REPLICA_PORT && (-z $PG_REPLICA_PORT || -z $PGBOUNCER_REPLICA_PORT) ]]; then
  die "a replica needs both PG_REPLICA_PORT and PGBOUNCER_REPLICA_PORT"
fi
has_replica() { [[ -n $PG_REPLICA_PORT ]]; }

for p in "$PG_PORT" "$PGBOUNCER_PORT" "$REDIS_PORT" $PG_REPLICA_PORT $PGBOUNCER_REPLICA_PORT; do
  if [[ ! $p =~ ^[0-9]+$ ]] || ((p <= 0 || p >= 32768)); then
    die "port $p: use a port below 32768 (above is the kernel's ephemeral range)"
  fi
done

if [[ $(id -u) -eq 0 ]]; then
  RUN_USER=postgres
  id "$RUN_USER" >/dev/null 2>&1 || die "no '$RUN_USER' user: run scripts/deps.sh first"
else
  RUN_USER=$(id -un)
fi
RUN_GROUP=$(id -gn "$RUN_USER")

# as_server CMD... — run a command as the server user with the fd limit raised.
as_server() {
  # shellcheck disable=SC2016 # expanded by the inner sh -c, not here
  local cmd='h=$(ulimit -Hn); if [ "$h" = unlimited ] || [ "$h" -gt 20000 ]; then h=20000; fi; ulimit -n "$h"; exec "$@"'
  if [[ $(id -u) -eq 0 ]]; then
    # from / : the server user may not be allowed into the caller's directory
    (cd / && runuser -u "$RUN_USER" -- sh -c "$cmd" sh "$@" 9>&-)
  else
    sh -c "$cmd" sh "$@" 9>&-
  fi
}

# ---------------------------------------------------------------------------
# Where the data really lives (D) — see the header.
path_hash() { printf '%s' "$1" | sha256sum | cut -c1-12; }
ALT_DIR=/tmp/chatd-stack-$(path_hash "$STACK_DIR")

server_can_use() { # DIR — can the server user create files in DIR?
  if [[ $(id -u) -eq 0 ]]; then runuser -u "$RUN_USER" -- test -w "$1" -a -x "$1"; else test -w "$1" -a -x "$1"; fi
}

resolve_dir() { # sets D; creates the directory when $1 == create
  if [[ -L $STACK_DIR ]]; then
    D=$(readlink -f "$STACK_DIR" || true)
    if [[ -z $D || ! -d $D ]]; then # /tmp was cleaned: start afresh
      [[ $1 == create ]] || { D=; return; }
      D=$(readlink "$STACK_DIR")
      install -d -m 700 -o "$RUN_USER" -g "$RUN_GROUP" "$D"
    fi
    return
  fi
  D=$STACK_DIR
  if [[ ! -d $D ]]; then
    [[ $1 == create ]] || { D=; return; }
    mkdir -p "$D"
  fi
  [[ $(id -u) -eq 0 ]] || return 0
  [[ $(stat -c %U "$D") == "$RUN_USER" ]] || chown "$RUN_USER:" "$D"
  chmod 700 "$D"
  if ! server_can_use "$D"; then
    [[ -z $(ls -A "$D") ]] || die "$D is not reachable by user $RUN_USER and not empty; move it away"
    rmdir "$D"
    install -d -m 700 -o "$RUN_USER" -g "$RUN_GROUP" "$ALT_DIR"
    ln -s "$ALT_DIR" "$STACK_DIR"
    D=$ALT_DIR
    say "$STACK_DIR is not reachable by user $RUN_USER; data lives in $D (symlinked)"
  fi
}

# unix socket paths are limited to 107 bytes
sock_dir() {
  if ((${#D} + 30 < 100)); then echo "$D/run"; else echo "/tmp/chatd-sock-$(path_hash "$D")"; fi
}

# ---------------------------------------------------------------------------
# helpers
proc_is() { # PID NAME — is PID alive and running NAME?
  [[ -n $1 && -r /proc/$1/comm ]] && [[ $(cat "/proc/$1/comm" 2>/dev/null) == "$2"* ]]
}
pid_from() { if [[ -r $1 ]]; then head -n1 "$1" | tr -dc 0-9 || true; fi; }

wait_until() { # DESCRIPTION CMD... — poll CMD until it succeeds or STACK_TIMEOUT passes
  local deadline=$((SECONDS + STACK_TIMEOUT))
  shift # the description is for the reader of the call
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
}

port_busy() { # PORT — is something listening on 127.0.0.1:PORT?
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

urlencode() {
  local s=$1 out='' c i
  for ((i = 0; i < ${#s}; i++)); do
    c=${s:i:1}
    case $c in [A-Za-z0-9._~-]) out+=$c ;; *) out+=$(printf '%%%02X' "'$c") ;; esac
  done
  printf '%s' "$out"
}

gen_secret() { # FILE — a random password, generated once, mode 600
  [[ -s $1 ]] && return
  local pw
  pw=$(head -c 4096 /dev/urandom | LC_ALL=C tr -dc 'A-Za-z0-9' | cut -c1-32)
  [[ ${#pw} -eq 32 ]] || die "cannot generate a password"
  (umask 077 && printf '%s' "$pw" >"$1.tmp" && mv "$1.tmp" "$1")
}

admin_psql() { # SQL via TCP as the superuser
  PGPASSWORD=$(cat "$D/secrets/$ADMIN_USER.password") PGCONNECT_TIMEOUT=5 \
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U "$ADMIN_USER" "$@"
}

# ---------------------------------------------------------------------------
# PostgreSQL
pg_running() { as_server "$PG_BIN/pg_ctl" -D "$D/pg" status >/dev/null 2>&1; }

pg_init() {
  [[ -f $D/pg/PG_VERSION ]] && return
  say "initialising PostgreSQL cluster in $D/pg"
  rm -rf "$D/pg.init"
  install -d -m 700 -o "$RUN_USER" -g "$RUN_GROUP" "$D/pg.init"
  # the superuser's password goes to initdb through a file only the server user reads
  install -m 600 -o "$RUN_USER" -g "$RUN_GROUP" "$D/secrets/$ADMIN_USER.password" "$D/pg.init.pw"
  as_server "$PG_BIN/initdb" -D "$D/pg.init" -U "$ADMIN_USER" --pwfile="$D/pg.init.pw" \
    --auth=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$D/log/initdb.log" 2>&1 ||
    { rm -f "$D/pg.init.pw"; cat "$D/log/initdb.log" >&2; die "initdb failed"; }
  rm -f "$D/pg.init.pw"
  printf "\n# chatd: deploy/postgres/postgresql.conf, copied by scripts/stack.sh\ninclude 'chatd.conf'\n" \
    >>"$D/pg.init/postgresql.conf"
  mv "$D/pg.init" "$D/pg"
}

pg_start() {
  # what is deployed is what runs: refresh our settings and pg_hba at each start
  install -m 600 -o "$RUN_USER" -g "$RUN_GROUP" "$REPO/deploy/postgres/postgresql.conf" "$D/pg/chatd.conf"
  install -m 600 -o "$RUN_USER" -g "$RUN_GROUP" "$REPO/deploy/postgres/pg_hba.conf" "$D/pg/pg_hba.conf"
  if pg_running; then
    # line 4 of postmaster.pid is the port
    if [[ $(sed -n 4p "$D/pg/postmaster.pid" 2>/dev/null) == "$PG_PORT" ]]; then
      say "PostgreSQL already running on port $PG_PORT"
      return
    fi
    say "PostgreSQL runs on another port; restarting on $PG_PORT"
    pg_stop
  fi
  # a postmaster.pid left by a crash whose pid now belongs to something else
  local pid
  pid=$(pid_from "$D/pg/postmaster.pid")
  if [[ -n $pid ]] && ! proc_is "$pid" postgres; then rm -f "$D/pg/postmaster.pid"; fi
  port_busy "$PG_PORT" && die "port $PG_PORT is taken by another process (a distro cluster? run scripts/deps.sh, or set PG_PORT)"
  local sd
  sd=$(sock_dir)
  install -d -m 700 -o "$RUN_USER" -g "$RUN_GROUP" "$sd"
  as_server "$PG_BIN/pg_ctl" -D "$D/pg" -l "$D/log/postgres.log" -s -w -t "$STACK_TIMEOUT" \
    -o "-p $PG_PORT -k $sd -c listen_addresses=127.0.0.1" start ||
    { tail -n 30 "$D/log/postgres.log" >&2; die "PostgreSQL did not start"; }
  wait_until "PostgreSQL" "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" ||
    die "PostgreSQL not ready after ${STACK_TIMEOUT}s (see $D/log/postgres.log)"
  say "PostgreSQL on 127.0.0.1:$PG_PORT"
}

pg_roles() {
  local pwfile=$D/secrets/$APP_USER.password
  admin_psql -d postgres <<'SQL' >/dev/null
SET client_min_messages = warning;
SELECT format('CREATE ROLE %I LOGIN', 'chat') WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'chat') \gexec
ALTER ROLE chat WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
SELECT 'CREATE DATABASE chat OWNER chat' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'chat') \gexec
ALTER DATABASE chat OWNER TO chat;
SQL
  # set the password only when it does not already work, so the SCRAM verifier
  # (and PgBouncer's auth_file) stays the same from one start to the next;
  # psql reads it from the file (\set with backquotes), never from argv
  if ! PGPASSWORD=$(cat "$pwfile") PGCONNECT_TIMEOUT=5 "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$PG_PORT" \
    -U "$APP_USER" -d "$DB_NAME" -c 'SELECT 1' >/dev/null 2>&1; then
    printf '%s\n' "\\set pw \`cat '$pwfile'\`" "ALTER ROLE chat PASSWORD :'pw';" | admin_psql -d postgres >/dev/null
  fi
  admin_psql -d "$DB_NAME" -c 'ALTER SCHEMA public OWNER TO chat' >/dev/null
}

pg_stop() {
  [[ -f $D/pg/PG_VERSION ]] || return 0
  if pg_running; then
    as_server "$PG_BIN/pg_ctl" -D "$D/pg" -s -w -t "$STACK_TIMEOUT" -m fast stop ||
      die "PostgreSQL did not stop"
    say "PostgreSQL stopped"
  fi
}

# ---------------------------------------------------------------------------
# PgBouncer — NAME is `pgbouncer` (in front of the primary) or `pgbouncer-replica`:
# its files are $D/NAME/, $D/run/NAME.pid|.port, $D/log/NAME.log.

# Generate the runtime ini from the deploy file: only the values of these keys
# change; everything else is copied line for line.
pgb_config() { # NAME PG-PORT LISTEN-PORT
  local name=$1 pgport=$2 port=$3 sd
  sd=$(sock_dir)
  install -d -m 700 -o "$RUN_USER" -g "$RUN_GROUP" "$D/$name"
  local tmp=$D/$name/pgbouncer.ini.tmp
  {
    printf ';; GENERATED by scripts/stack.sh from deploy/pgbouncer/pgbouncer.ini — do not edit.\n'
    printf ';; sha256 of the source: %s\n' "$(sha256sum <"$REPO/deploy/pgbouncer/pgbouncer.ini" | cut -d' ' -f1)"
    awk -v pgport="$pgport" -v port="$port" -v sock="$sd" \
      -v logf="$D/log/$name.log" -v pid="$D/run/$name.pid" -v auth="$D/$name/userlist.txt" '
      /^[ \t]*\[/ { sec = $0; gsub(/[][ \t]/, "", sec); print; next }
      sec == "databases" && /^[ \t]*[^;#[ \t]/ {
        line = $0; sub(/port=[0-9]+/, "port=" pgport, line); print line; n["db"]++; next }
      sec == "pgbouncer" && /^[ \t]*[a-z_]+[ \t]*=/ {
        k = $0; sub(/[ \t]*=.*/, "", k); gsub(/^[ \t]+/, "", k)
        v = ""
        if (k == "listen_port") v = port
        else if (k == "unix_socket_dir") v = sock
        else if (k == "logfile") v = logf
        else if (k == "pidfile") v = pid
        else if (k == "auth_file") v = auth
        if (v != "") { print k " = " v; n[k]++; next }
      }
      { print }
      END { if (n["listen_port"] != 1 || n["auth_file"] != 1 || n["pidfile"] != 1 || n["logfile"] != 1 || !n["db"])
              { print "pgbouncer.ini: a key stack.sh must set is missing" > "/dev/stderr"; exit 1 } }
    ' "$REPO/deploy/pgbouncer/pgbouncer.ini"
  } >"$tmp" || die "cannot generate pgbouncer.ini"
  chown "$RUN_USER:" "$tmp"
  chmod 600 "$tmp"
  mv "$tmp" "$D/$name/pgbouncer.ini"

  # auth_file: the SCRAM verifiers, exactly as PostgreSQL stores them (a
  # physical replica has the same ones; they are read from the primary)
  local users=$D/$name/userlist.txt.tmp
  (umask 077 && admin_psql -d postgres -At -c "
      SELECT format('\"%s\" \"%s\"', rolname, rolpassword) FROM pg_authid
       WHERE rolname IN ('$APP_USER', '$ADMIN_USER') AND rolpassword LIKE 'SCRAM-SHA-256\$%'
       ORDER BY rolname" >"$users") || die "cannot read verifiers from pg_authid"
  [[ $(wc -l <"$users") -eq 2 ]] || die "expected SCRAM verifiers for $APP_USER and $ADMIN_USER"
  chown "$RUN_USER:" "$users"
  mv "$users" "$D/$name/userlist.txt"
}

pgb_pid() { local p; p=$(pid_from "$D/run/$1.pid"); proc_is "$p" pgbouncer && echo "$p"; }

# the port a running PgBouncer was started with (recorded next to its pid file)
pgb_listen_port() { cat "$D/run/$1.port" 2>/dev/null || true; }

pgb_ready() { # PORT
  PGPASSWORD=$(cat "$D/secrets/$APP_USER.password") PGCONNECT_TIMEOUT=3 \
    "$PG_BIN/psql" -X -At -h 127.0.0.1 -p "$1" -U "$APP_USER" -d "$DB_NAME" -c 'SELECT 1' 2>/dev/null | grep -qx 1
}

pgb_start() { # NAME PG-PORT LISTEN-PORT
  local name=$1 pgport=$2 port=$3 pid
  pgb_config "$name" "$pgport" "$port"
  if pid=$(pgb_pid "$name") && [[ $(pgb_listen_port "$name") != "$port" ]]; then
    say "PgBouncer ($name) listens on another port; restarting on $port"
    pgb_stop "$name"
  fi
  if pid=$(pgb_pid "$name"); then
    # reload picks up a changed ini or userlist
    kill -HUP "$pid"
    say "PgBouncer ($name) already running (pid $pid), reloaded"
  else
    rm -f "$D/run/$name.pid"
    port_busy "$port" && die "port $port is taken by another process (distro pgbouncer? run scripts/deps.sh, or set PGBOUNCER_PORT)"
    as_server /usr/sbin/pgbouncer -q -d "$D/$name/pgbouncer.ini" ||
      { tail -n 20 "$D/log/$name.log" >&2 2>/dev/null; die "PgBouncer ($name) did not start"; }
    echo "$port" >"$D/run/$name.port"
  fi
  wait_until "PgBouncer" pgb_ready "$port" ||
    { tail -n 20 "$D/log/$name.log" >&2 2>/dev/null; die "PgBouncer ($name) not ready after ${STACK_TIMEOUT}s"; }
  say "PgBouncer ($name) on 127.0.0.1:$port (pid $(pgb_pid "$name"))"
}

pgb_stop() { # NAME
  local pid
  if pid=$(pgb_pid "$1"); then
    kill -TERM "$pid"
    wait_until "PgBouncer exit" eval "! kill -0 $pid" || kill -KILL "$pid" 2>/dev/null || true
    say "PgBouncer ($1) stopped"
  fi
  rm -f "$D/run/$1.pid" "$D/run/$1.port"
}

# ---------------------------------------------------------------------------
# The streaming replica (PG_REPLICA_PORT) — see the header.
R() { echo "$D/pg-replica"; }
replica_running() { as_server "$PG_BIN/pg_ctl" -D "$(R)" status >/dev/null 2>&1; }
sysid() { as_server "$PG_BIN/pg_controldata" "$1" 2>/dev/null | sed -n 's/^Database system identifier: *//p'; }

replica_streaming() {
  PGPASSWORD=$(cat "$D/secrets/$ADMIN_USER.password") PGCONNECT_TIMEOUT=3 \
    "$PG_BIN/psql" -X -At -h 127.0.0.1 -p "$PG_REPLICA_PORT" -U "$ADMIN_USER" -d postgres \
    -c "SELECT status FROM pg_stat_wal_receiver" 2>/dev/null | grep -qx streaming
}

replica_make() {
  # a replica of another cluster (pg/ made afresh) is made again
  if [[ -f $(R)/PG_VERSION ]]; then
    [[ $(sysid "$(R)") == "$(sysid "$D/pg")" ]] && return
    say "the replica in $(R) belongs to another cluster; making it again"
    replica_stop_pg
    rm -rf "$(R)"
  fi
  say "making the replica in $(R) (pg_basebackup)"
  rm -rf "$D/pg-replica.init"
  install -d -m 700 -o "$RUN_USER" -g "$RUN_GROUP" "$D/pg-replica.init"
  # -R writes primary_conninfo (with the password, in the replica's
  # postgresql.auto.conf, mode 600) and standby.signal
  PGPASSWORD=$(cat "$D/secrets/$ADMIN_USER.password") as_server "$PG_BIN/pg_basebackup" \
    -D "$D/pg-replica.init" -h 127.0.0.1 -p "$PG_PORT" -U "$ADMIN_USER" -X stream -R -c fast \
    >"$D/log/basebackup.log" 2>&1 ||
    { cat "$D/log/basebackup.log" >&2; die "pg_basebackup failed"; }
  mv "$D/pg-replica.init" "$(R)"
}

replica_start_pg() {
  install -m 600 -o "$RUN_USER" -g "$RUN_GROUP" "$REPO/deploy/postgres/postgresql.conf" "$(R)/chatd.conf"
  install -m 600 -o "$RUN_USER" -g "$RUN_GROUP" "$REPO/deploy/postgres/pg_hba.conf" "$(R)/pg_hba.conf"
  if replica_running; then
    if [[ $(sed -n 4p "$(R)/postmaster.pid" 2>/dev/null) == "$PG_REPLICA_PORT" ]]; then
      say "replica already running on port $PG_REPLICA_PORT"
      return
    fi
    say "the replica runs on another port; restarting on $PG_REPLICA_PORT"
    replica_stop_pg
  fi
  local pid sd
  pid=$(pid_from "$(R)/postmaster.pid")
  if [[ -n $pid ]] && ! proc_is "$pid" postgres; then rm -f "$(R)/postmaster.pid"; fi
  port_busy "$PG_REPLICA_PORT" && die "port $PG_REPLICA_PORT is taken by another process (set PG_REPLICA_PORT)"
  sd=$(sock_dir)
  install -d -m 700 -o "$RUN_USER" -g "$RUN_GROUP" "$sd"
  as_server "$PG_BIN/pg_ctl" -D "$(R)" -l "$D/log/postgres-replica.log" -s -w -t "$STACK_TIMEOUT" \
    -o "-p $PG_REPLICA_PORT -k $sd -c listen_addresses=127.0.0.1 -c hot_standby=on -c hot_standby_feedback=on" start ||
    { tail -n 30 "$D/log/postgres-replica.log" >&2; die "the replica did not start"; }
  wait_until "replica streaming" replica_streaming ||
    { tail -n 30 "$D/log/postgres-replica.log" >&2; die "the replica is not streaming after ${STACK_TIMEOUT}s"; }
  say "replica on 127.0.0.1:$PG_REPLICA_PORT, streaming"
}

replica_stop_pg() {
  [[ -f $(R)/PG_VERSION ]] || return 0
  if replica_running; then
    as_server "$PG_BIN/pg_ctl" -D "$(R)" -s -w -t "$STACK_TIMEOUT" -m fast stop ||
      die "the replica did not stop"
    say "replica stopped"
  fi
}

replica_start() {
  has_replica || die "no replica configured: set PG_REPLICA_PORT and PGBOUNCER_REPLICA_PORT"
  pg_running || die "PostgreSQL (the primary) is not running: scripts/stack.sh start"
  # pg_hba.conf (replication lines) may be newer than the running primary's
  admin_psql -d postgres -c 'SELECT pg_reload_conf()' >/dev/null
  replica_make
  replica_start_pg
  pgb_start pgbouncer-replica "$PG_REPLICA_PORT" "$PGBOUNCER_REPLICA_PORT"
}

replica_stop() {
  pgb_stop pgbouncer-replica
  replica_stop_pg
}

# ---------------------------------------------------------------------------
# Redis
redis_pid() { local p; p=$(pid_from "$D/run/redis.pid"); proc_is "$p" redis-server && echo "$p"; }
redis_ready() { [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; }

redis_start() {
  install -d -m 700 -o "$RUN_USER" -g "$RUN_GROUP" "$D/redis"
  install -m 600 -o "$RUN_USER" -g "$RUN_GROUP" "$REPO/deploy/redis/redis.conf" "$D/redis/redis.conf"
  local pid
  if pid=$(redis_pid) && ! redis_ready; then
    say "Redis does not answer on port $REDIS_PORT; restarting it there"
    redis_stop
  fi
  if pid=$(redis_pid); then
    say "Redis already running (pid $pid)"
  else
    rm -f "$D/run/redis.pid"
    port_busy "$REDIS_PORT" && die "port $REDIS_PORT is taken by another process (distro redis? run scripts/deps.sh, or set REDIS_PORT)"
    as_server /usr/bin/redis-server "$D/redis/redis.conf" --port "$REDIS_PORT" --daemonize yes \
      --pidfile "$D/run/redis.pid" --logfile "$D/log/redis.log" --dir "$D/redis" ||
      die "Redis did not start"
  fi
  wait_until "Redis" redis_ready ||
    { tail -n 20 "$D/log/redis.log" >&2 2>/dev/null; die "Redis not ready after ${STACK_TIMEOUT}s"; }
  say "Redis on 127.0.0.1:$REDIS_PORT"
}

redis_stop() {
  local pid
  if pid=$(redis_pid); then
    kill -TERM "$pid"
    wait_until "Redis exit" eval "! kill -0 $pid" || kill -KILL "$pid" 2>/dev/null || true
    say "Redis stopped"
  fi
  rm -f "$D/run/redis.pid"
}

# ---------------------------------------------------------------------------
write_env() {
  local app admin
  app=$(urlencode "$(cat "$D/secrets/$APP_USER.password")")
  admin=$(urlencode "$(cat "$D/secrets/$ADMIN_USER.password")")
  (
    umask 077
    cat >"$D/env.tmp" <<EOF
# chatd stack in $STACK_DIR — source it, or: eval "\$(scripts/stack.sh env)"
export DATABASE_URL='postgresql://$APP_USER:$app@127.0.0.1:$PGBOUNCER_PORT/$DB_NAME'
export DATABASE_URL_DIRECT='postgresql://$APP_USER:$app@127.0.0.1:$PG_PORT/$DB_NAME'
export REDIS_URL='redis://127.0.0.1:$REDIS_PORT'
export CHATD_TEST_PG_ADMIN='postgresql://$ADMIN_USER:$admin@127.0.0.1:$PG_PORT/$DB_NAME'
export CHATD_TEST_PGBOUNCER_ADMIN='postgresql://$ADMIN_USER:$admin@127.0.0.1:$PGBOUNCER_PORT/pgbouncer'
EOF
    if has_replica; then
      cat >>"$D/env.tmp" <<EOF
export DATABASE_URL_REPLICAS='postgresql://$APP_USER:$app@127.0.0.1:$PGBOUNCER_REPLICA_PORT/$DB_NAME'
export DATABASE_URL_REPLICAS_DIRECT='postgresql://$APP_USER:$app@127.0.0.1:$PG_REPLICA_PORT/$DB_NAME'
export CHATD_TEST_PG_REPLICA_ADMIN='postgresql://$ADMIN_USER:$admin@127.0.0.1:$PG_REPLICA_PORT/$DB_NAME'
EOF
    fi
  )
  mv "$D/env.tmp" "$D/env"
}

cmd_start() {
  resolve_dir create
  install -d -m 700 -o "$RUN_USER" -g "$RUN_GROUP" "$D/run" "$D/log"
  install -d -m 700 "$D/secrets"
  [[ $(id -u) -ne 0 ]] || chown "$RUN_USER:" "$D/log" "$D/run"
  write_ports
  gen_secret "$D/secrets/$APP_USER.password"
  gen_secret "$D/secrets/$ADMIN_USER.password"
  pg_init
  pg_start
  pg_roles
  redis_start
  pgb_start pgbouncer "$PG_PORT" "$PGBOUNCER_PORT"
  if has_replica; then replica_start; fi
  write_env
  say "ready; environment in $STACK_DIR/env"
}

write_ports() {
  printf 'PG_PORT=%s\nPGBOUNCER_PORT=%s\nREDIS_PORT=%s\n' "$PG_PORT" "$PGBOUNCER_PORT" "$REDIS_PORT" >"$D/ports.tmp"
  if has_replica; then
    printf 'PG_REPLICA_PORT=%s\nPGBOUNCER_REPLICA_PORT=%s\n' "$PG_REPLICA_PORT" "$PGBOUNCER_REPLICA_PORT" >>"$D/ports.tmp"
  fi
  mv "$D/ports.tmp" "$D/ports"
}

cmd_replica_start() {
  resolve_dir check
  [[ -n $D && -r $D/env ]] || die "stack not started ($STACK_DIR): run scripts/stack.sh start"
  write_ports
  replica_start
  write_env
}

cmd_replica_stop() {
  resolve_dir check
  [[ -n $D ]] || return 0
  if [[ ${1:-} == server ]]; then replica_stop_pg; else replica_stop; fi
}

cmd_stop() {
  resolve_dir check
  [[ -n $D ]] || return 0
  replica_stop
  pgb_stop pgbouncer
  redis_stop
  pg_stop
}

cmd_status() {
  resolve_dir check
  [[ -n $D ]] || { say "not initialised ($STACK_DIR)"; return 3; }
  local rc=0 pid
  if pg_running && "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; then
    say "PostgreSQL running (pid $(pid_from "$D/pg/postmaster.pid"), port $PG_PORT)"
  else say "PostgreSQL down"; rc=3; fi
  if pid=$(pgb_pid pgbouncer) && pgb_ready "$PGBOUNCER_PORT"; then say "PgBouncer running (pid $pid, port $PGBOUNCER_PORT)"
  else say "PgBouncer down"; rc=3; fi
  if has_replica; then
    if replica_running && replica_streaming; then
      say "replica running, streaming (pid $(pid_from "$(R)/postmaster.pid"), port $PG_REPLICA_PORT)"
    else say "replica down or not streaming"; rc=3; fi
    if pid=$(pgb_pid pgbouncer-replica) && pgb_ready "$PGBOUNCER_REPLICA_PORT"; then
      say "replica's PgBouncer running (pid $pid, port $PGBOUNCER_REPLICA_PORT)"
    else say "replica's PgBouncer down"; rc=3; fi
  fi
  if pid=$(redis_pid) && redis_ready; then say "Redis running (pid $pid, port $REDIS_PORT)"
  else say "Redis down"; rc=3; fi
  say "data in $D"
  return $rc
}

cmd_env() {
  resolve_dir check
  [[ -n $D && -r $D/env ]] || die "stack not started ($STACK_DIR): run scripts/stack.sh start"
  grep -v '^#' "$D/env"
}

# drop and recreate database `chat` (empty, no schema) and empty Redis: `make test` starts each
# run from the state CI starts from. PgBouncer's connections to it are killed
# first and the database resumed afterwards.
cmd_reset_db() {
  resolve_dir check
  [[ -n $D && -r $D/env ]] || die "stack not started ($STACK_DIR)"
  pg_running || die "PostgreSQL is not running"
  local pgb=
  if pgb_pid pgbouncer >/dev/null; then pgb=1; fi
  pgb_admin() {
    PGPASSWORD=$(cat "$D/secrets/$ADMIN_USER.password") PGCONNECT_TIMEOUT=5 \
      "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$PGBOUNCER_PORT" -U "$ADMIN_USER" -d pgbouncer -c "$1" >/dev/null
  }
  [[ -z $pgb ]] || pgb_admin "KILL $DB_NAME"
  admin_psql -d postgres -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" >/dev/null
  pg_roles
  [[ -z $pgb ]] || pgb_admin "RESUME $DB_NAME"
  # cached rows of the old database must not answer for the new one
  if redis_pid >/dev/null; then redis-cli -h 127.0.0.1 -p "$REDIS_PORT" flushall >/dev/null; fi
  say "database $DB_NAME recreated (empty), Redis flushed"
}

# one stack command at a time per stack directory
LOCK=/tmp/chatd-stack-$(path_hash "$STACK_DIR").lock
case ${1:-} in
  start | stop | status | reset-db | replica-start | replica-stop)
    exec 9>"$LOCK"
    flock -w 300 9 || die "another stack.sh holds $LOCK"
    "cmd_${1//-/_}" "${@:2}"
    ;;
  env) cmd_env ;;
  *)
    echo "usage: $0 start|stop|status|env|reset-db|replica-start|replica-stop [server]" >&2
    exit 2
    ;;
esac
