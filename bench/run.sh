#!/usr/bin/env bash
# bench/run.sh — `make bench`: the validation run of chatd (issue 5).
#
#   bench/run.sh [--quick] [options]        (make bench ARGS="--quick ...")
#
# Starts its own stack (var/bench-stack: PostgreSQL 27532, PgBouncer 27632,
# Redis 27679) and chatd on 127.0.0.1:27300, empties the database, seeds it
# with `chatload seed --copy` (10,000 users, 10,000 conversations, 1,000,000
# messages), then measures, all on loopback:
#   1. references: nginx serving the hot history page as a static file (wrk),
#      pgbench running chatd's history query with 20 clients through PgBouncer,
#      redis-benchmark GET of a value of the page's size;
#   2. baseline, CACHE_BYPASS=true: chatload stages 1k -> 5k -> 10k connections
#      at the base rate, a burst at twice the rate, then back to the base rate,
#      then the chat API mix (inbox, read markers, edits, deletes) for one
#      stage at the most connections;
#   3. the same stages with the cache on, then the chat API mix again;
#   4. closed-loop with wrk, cache bypassed and cache on: the hot history page
#      and the inbox page of one of its members;
#   5. the realtime stage (`chatload realtime`, a fresh chatd with the rate
#      limits off): 10,000 WebSocket clients (the seed's users) in Zipf-sized
#      conversations, sends at a fixed rate for 60 s and a drain of up to 30 s
#      (quick: 10 s),
#      then the mass reconnect with the senders going on at a tenth of that
#      rate (so that it measures the resumes, not a backlog of the steady
#      stage);
#   6. (--cluster) the cluster stage, after a checkpoint, the replica's replay
#      of the seed and a warm-up (a sixth of a stage, not counted): the same
#      chat API mix stage and the wrk hot page against `scripts/cluster.sh`'s
#      HAProxy, CPU per answer of the three chatd instances and of HAProxy, and
#      how many of the chat stage's cache-miss reads went to the replica.
# Step 3 ends with closed-loop sends (wrk POSTs with fresh client_msg_ids over
# many conversations): the CPU, WAL and statements per send that
# bench/scaling.py turns into docs/scaling.md.
# Then bench/report.py writes docs/performance.md and the plots docs/perf/*.svg
# from the JSON results (kept in docs/perf/). Everything it starts it stops.
#
# Full run: about 31 minutes (2 x 12 min of stages, plus seeding, references,
# wrk and about 3 min of realtime). --quick shortens every stage (about 4
# minutes; a smoke run, and the report says so).
#
# Options (defaults of the full run; --quick changes those marked *):
#   --rate N               base rate, requests/s (800); the burst is 2x
#   --conns A,B,C          connections of the three base stages (1000,5000,10000)
#   --stage-seconds N      * each base stage (90; quick 10)
#   --burst-seconds N      * the burst (300; quick 15)
#   --recover-seconds N    * back at the base rate after the burst (60; quick 5)
#   --users/--conversations/--messages N   the seed (10000/10000/1000000)
#   --ref-seconds N        * nginx and pgbench runs (20; quick 5)
#   --redis-requests N     * redis-benchmark requests (500000; quick 100000)
#   --wrk-runs N --wrk-seconds N --wrk-conns N   * hot page runs (3 x 10 s, 100; quick 1 x 5 s)
#   --rt-clients N         * WebSocket clients of the realtime stage (10000; quick 1000),
#                          at most the seed's users
#   --rt-frame-rate N      * frames/s offered: sends/s x the frames a send makes
#                          (110000, above the 100,000 target; quick 20000)
#   --rt-seconds N         * the realtime stage's steady sending (60; quick 10)
#   --send-conversations N the closed-loop send run's conversations, each sent to by
#                          its first member (1000; at most the seed's)
#   --no-realtime          skip the realtime stage
#   --cluster              add the cluster stage: scripts/cluster.sh (3 chatd behind
#                          HAProxy, Redis Cluster, PostgreSQL primary + replica) on
#                          its own ports, seeded alike, the chat API mix and the wrk
#                          hot page through HAProxy (about 2 min more; quick: 1.5)
#   --cluster-conns N      connections of the cluster stage (5000): one HAProxy
#                          holds two descriptors per proxied connection, and under
#                          this machine's 20,000 open files per process it takes
#                          at most 9,983 clients (its maxconn, derived from the
#                          limit); at 10,000 the ones past that wait unaccepted
#                          and fail (transport errors, 408s)
#   --out DIR              where performance.md and perf/ go (docs)
#   --stack-env FILE       use a running stack (its env file, as scripts/stack.sh
#                          writes it) instead of starting one; the database is
#                          not emptied (the seed adds to it). For tests.
#   --listen HOST:PORT     chatd's address (127.0.0.1:27300)
#   --nginx-port N         nginx's port (27380)
#   --var DIR              scratch files and logs (var/bench): seed.json, chatd-*.log, …
#   --no-deps              do not run scripts/deps.sh / make build
# Environment: BENCH_CLUSTER_PORT (23000: HAProxy; the cluster stage's chatd on
# +1..+3, HAProxy stats +90, PostgreSQL +532/+533, PgBouncer +632/+633, Redis
# +679, and the Redis Cluster on BENCH_CLUSTER_REDIS_PORT, 13701..13706, whose
# bus ports are +10000), CHATD_BIN (build/chatd), CHATLOAD_BIN (build/chatload),
# BENCH_DATABASE_URL (chatd's DATABASE_URL; default: the stack's PgBouncer),
# BENCH_STACK_DIR, BENCH_PG_PORT, BENCH_PGBOUNCER_PORT, BENCH_REDIS_PORT (the
# bench's own stack: var/bench-stack, 27532, 27632, 27679), so that two
# checkouts can run it side by side.
set -euo pipefail
# one compound command: bash reads all of it before running any, so editing
# this file during a run cannot change the run
{
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

QUICK=0 RATE=800 CONNS=1000,5000,10000 STAGE_S='' BURST_S='' RECOVER_S=''
USERS=10000 CONVS=10000 MSGS=1000000 REF_S='' REDIS_N='' WRK_RUNS='' WRK_S='' WRK_CONNS=100
OUT=docs STACK_ENV='' LISTEN=127.0.0.1:27300 NGINX_PORT=27380 DEPS=1 VAR=$REPO/var/bench
SEND_CONVS=1000 CLUSTER=0 CL_CONNS=5000 RT=1 RT_CLIENTS='' RT_FRAME_RATE='' RT_S='' RT_DRAIN_S=''
ARGS_SEEN=("$@")
while (($#)); do
  case $1 in
    --quick) QUICK=1 ;;
    --rate) RATE=$2; shift ;;
    --conns) CONNS=$2; shift ;;
    --stage-seconds) STAGE_S=$2; shift ;;
    --burst-seconds) BURST_S=$2; shift ;;
    --recover-seconds) RECOVER_S=$2; shift ;;
    --users) USERS=$2; shift ;;
    --conversations) CONVS=$2; shift ;;
    --messages) MSGS=$2; shift ;;
    --ref-seconds) REF_S=$2; shift ;;
    --redis-requests) REDIS_N=$2; shift ;;
    --wrk-runs) WRK_RUNS=$2; shift ;;
    --wrk-seconds) WRK_S=$2; shift ;;
    --wrk-conns) WRK_CONNS=$2; shift ;;
    --rt-clients) RT_CLIENTS=$2; shift ;;
    --rt-frame-rate) RT_FRAME_RATE=$2; shift ;;
    --rt-seconds) RT_S=$2; shift ;;
    --send-conversations) SEND_CONVS=$2; shift ;;
    --no-realtime) RT=0 ;;
    --cluster) CLUSTER=1 ;;
    --cluster-conns) CL_CONNS=$2; shift ;;
    --out) OUT=$2; shift ;;
    --stack-env) STACK_ENV=$2; shift ;;
    --listen) LISTEN=$2; shift ;;
    --nginx-port) NGINX_PORT=$2; shift ;;
    --var) VAR=$2; shift ;;
    --no-deps) DEPS=0 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench: unknown option $1 (--help)" >&2; exit 2 ;;
  esac
  shift
done
case $VAR in /*) ;; *) VAR=$REPO/$VAR ;; esac  # nginx -p takes it from another directory
if ((QUICK)); then
  : "${STAGE_S:=10}" "${BURST_S:=15}" "${RECOVER_S:=5}" "${REF_S:=5}" "${REDIS_N:=100000}" "${WRK_RUNS:=1}" "${WRK_S:=5}"
  : "${RT_CLIENTS:=1000}" "${RT_FRAME_RATE:=20000}" "${RT_S:=10}" "${RT_DRAIN_S:=10}"
else
  : "${STAGE_S:=90}" "${BURST_S:=300}" "${RECOVER_S:=60}" "${REF_S:=20}" "${REDIS_N:=500000}" "${WRK_RUNS:=3}" "${WRK_S:=10}"
  : "${RT_CLIENTS:=10000}" "${RT_FRAME_RATE:=110000}" "${RT_S:=60}" "${RT_DRAIN_S:=30}"
fi
if ((RT_CLIENTS > USERS)); then
  printf 'bench: --rt-clients %s is more than the seed'"'"'s %s users; using %s\n' "$RT_CLIENTS" "$USERS" "$USERS" >&2
  RT_CLIENTS=$USERS
fi
IFS=, read -r C1 C2 C3 <<<"$CONNS"
[[ -n ${C3:-} ]] || { echo "bench: --conns takes three counts, e.g. 1000,5000,10000" >&2; exit 2; }
BURST_RATE=$((2 * RATE))
CHAT_MIX=history=70,inbox=12,count=4,metadata=2,profile=2,send=4,read=4,edit=1,delete=1
STAGES="$C1:$RATE:$STAGE_S,$C2:$RATE:$STAGE_S,$C3:$RATE:$STAGE_S,$C3:$BURST_RATE:$BURST_S,$C3:$RATE:$RECOVER_S"
CHATD_BIN=${CHATD_BIN:-build/chatd}
CHATLOAD_BIN=${CHATLOAD_BIN:-build/chatload}
BASE=http://$LISTEN
PERF=$OUT/perf
mkdir -p "$PERF" "$VAR"
rm -f "$PERF"/*.json "$PERF"/*.md "$PERF"/*.svg "$PERF"/*.dat "$PERF"/*.gp "$PERF"/commands.txt
say() { printf 'bench: %s\n' "$*" >&2; }
T_START=$(date +%s)

if ((DEPS)); then
  scripts/deps.sh
  make --no-print-directory build >/dev/null
fi
for b in "$CHATD_BIN" "$CHATLOAD_BIN"; do [[ -x $b ]] || { say "$b missing (make build)"; exit 1; }; done

# --- commands, logged for the report (passwords masked) ---------------------
mask() { sed -E 's#(://[^:/@]*):[^@]*@#\1:***@#g'; }
logcmd() { printf '%s\n' "$*" | mask >>"$PERF/commands.txt"; }
logcmd "bench/run.sh ${ARGS_SEEN[*]}"

# --- processes we start, stopped on any exit -------------------------------
chatd_pid='' nginx_started='' own_stack='' cluster_started=''
# shellcheck disable=SC2317 # reached through the EXIT trap
cleanup() {
  set +e
  [[ -n $chatd_pid ]] && kill "$chatd_pid" 2>/dev/null && wait "$chatd_pid" 2>/dev/null
  if [[ -n $nginx_started && -r $VAR/nginx/nginx.pid ]]; then
    kill -QUIT "$(cat "$VAR/nginx/nginx.pid")" 2>/dev/null
  fi
  [[ -n $cluster_started ]] && CLUSTER_DIR=$VAR/cluster scripts/cluster.sh stop >/dev/null 2>&1
  [[ -n $own_stack ]] && scripts/stack.sh stop >/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ -n $STACK_ENV ]]; then
  set -a
  # shellcheck source=/dev/null # the stack's env file, named on the command line
  . "$STACK_ENV"
  set +a
else
  export CHATD_STACK_DIR=${BENCH_STACK_DIR:-var/bench-stack} PG_PORT=${BENCH_PG_PORT:-27532} \
    PGBOUNCER_PORT=${BENCH_PGBOUNCER_PORT:-27632} REDIS_PORT=${BENCH_REDIS_PORT:-27679}
  own_stack=1
  scripts/stack.sh start >&2
  # every run starts from the same state: an empty database and cache
  scripts/stack.sh reset-db >&2
  set -a
  # shellcheck source=/dev/null # written at run time by scripts/stack.sh start
  . "$CHATD_STACK_DIR/env"
  set +a
fi
CHATD_DB_URL=${BENCH_DATABASE_URL:-$DATABASE_URL}
CHATD_DB_KIND=pgbouncer
[[ $CHATD_DB_URL == "$DATABASE_URL" ]] || CHATD_DB_KIND=postgresql
"$CHATD_BIN" migrate >&2

# --- seed ------------------------------------------------------------------
say "seeding $USERS users, $CONVS conversations, $MSGS messages by COPY"
logcmd "$CHATLOAD_BIN seed --copy --db-url $DATABASE_URL_DIRECT --users $USERS --conversations $CONVS --messages $MSGS --seed 42 --out $VAR/seed.json"
t0=$(date +%s.%N)
"$CHATLOAD_BIN" seed --copy --db-url "$DATABASE_URL_DIRECT" --users "$USERS" --conversations "$CONVS" \
  --messages "$MSGS" --seed 42 --out "$VAR/seed.json"
SEED_S=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
# the hottest conversation (Zipf rank 0) and one of its members
read -r HOT_CID HOT_UID HOT_TOKEN < <(/usr/bin/python3 -c '
import json, sys
s = json.load(open(sys.argv[1])); c = s["conversations"][0]; u = s["users"][c["members"][0]]
print(c["id"], u["id"], u["token"])' "$VAR/seed.json")
export TOKEN=$HOT_TOKEN WPATH=/api/v1/conversations/$HOT_CID/messages
# the same user's inbox (first page, default limit): the other cached page measured by wrk
IPATH=/api/v1/conversations

# --- chatd -----------------------------------------------------------------
# chatload opens a stage's connections up front and uses each in turn; the
# default 10 s for a first request head would close the ones not used yet
start_chatd() { # LABEL extra env...
  local label=$1; shift
  # the load is the measurement: no rate limit may throttle it
  set -- CHATD_HEADER_TIMEOUT_MS=60000 CHATD_RATE_SEND=0 CHATD_RATE_REQUEST=0 CHATD_RATE_SIGNUP=0 "$@"
  logcmd "env $* DATABASE_URL=$CHATD_DB_URL CHATD_LISTEN=$LISTEN CHATD_LOG_LEVEL=warn $CHATD_BIN"
  env "$@" DATABASE_URL="$CHATD_DB_URL" CHATD_LISTEN="$LISTEN" CHATD_LOG_LEVEL=warn \
    "$CHATD_BIN" >>"$VAR/chatd-$label.log" 2>&1 &
  chatd_pid=$!
  for _ in $(seq 150); do
    curl -sf "$BASE/readyz" >/dev/null && return
    kill -0 "$chatd_pid" 2>/dev/null || break
    sleep 0.1
  done
  say "chatd did not become ready; $VAR/chatd-$label.log:"; tail -n 20 "$VAR/chatd-$label.log" >&2; exit 1
}
stop_chatd() { kill "$chatd_pid"; wait "$chatd_pid" 2>/dev/null || true; chatd_pid=; }

# --- CPU accounting: where the time of one answer goes ----------------------
url_port() { local u=${1##*@}; u=${u#*://}; u=${u%%/*}; u=${u%%\?*}; echo "${u##*:}"; }
port_pid() { ss -Htlnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2; }
# clock ticks "user system" of the given processes, all their threads
cpu_ticks() {
  local u=0 s=0 p f
  local -a st
  for p in "$@"; do
    f=$(cat "/proc/$p/stat" 2>/dev/null) || continue
    # the fields after the command name: st[0] is the state, st[11] utime, st[12] stime
    read -ra st <<<"${f##*) }"
    u=$((u + st[11])) s=$((s + st[12]))
  done
  echo "$u $s"
}
db_pids() { # PgBouncer, PostgreSQL and its backends
  local pg; pg=$(port_pid "$(url_port "$DATABASE_URL_DIRECT")")
  echo "$(port_pid "$(url_port "$DATABASE_URL")") $pg ${pg:+$(pgrep -P "$pg" | tr '\n' ' ')}"
}
redis_pid() { port_pid "$(url_port "$REDIS_URL")"; }
pgbouncer_pid() { port_pid "$(url_port "$DATABASE_URL")"; }
pg_pids() { # PostgreSQL and its backends
  local pg; pg=$(port_pid "$(url_port "$DATABASE_URL_DIRECT")")
  echo "$pg ${pg:+$(pgrep -P "$pg" | tr '\n' ' ')}"
}
# metric_sums "SERIES ..." URL...: each series (name and labels, as /metrics writes them) summed
# over the /metrics of every URL, on one line
metric_sums() {
  local series=$1 u; shift
  for u in "$@"; do curl -sf "$u/metrics"; done |
    awk -v series="$series" 'BEGIN { n = split(series, k, " ") }
      { for (i = 1; i <= n; i++) if ($1 == k[i]) s[i] += $2 }
      END { for (i = 1; i <= n; i++) printf "%d%s", s[i], i < n ? " " : "\n" }'
}
# chatd's statements so far (its /metrics counter)
chatd_queries() { metric_sums chatd_db_queries_total "$BASE"; }
HZ=$(getconf CLK_TCK)

# LABEL URL RUNS SECONDS [GROUP=PIDS...] -> RESULT lines on stdout, each with the
# CPU seconds every group of processes and wrk itself used during the run
wrk_runs() {
  local label=$1 url=$2 runs=$3 secs=$4 g out script=${WRK_SCRIPT:-bench/hot_page.lua}
  shift 4
  local -a names=() pids=() t0=()
  for g in "$@"; do names+=("${g%%=*}"); pids+=("${g#*=}"); done
  for _ in $(seq "$runs"); do
    logcmd "TOKEN=... WPATH=$WPATH wrk -t2 -c$WRK_CONNS -d${secs}s -s $script $url"
    # shellcheck disable=SC2086 # ${pids[i]} is a space-separated list of pids, split on purpose
    for i in "${!pids[@]}"; do t0[i]=$(cpu_ticks ${pids[i]}); done
    out=$( { TIMEFORMAT='%3U %3S'; time wrk -t2 -c"$WRK_CONNS" -d"${secs}s" -s "$script" "$url"; } 2>"$VAR/wrk-time.txt" )
    local extra=""
    for i in "${!pids[@]}"; do
      # shellcheck disable=SC2086 # ${pids[i]} is a space-separated list of pids, split on purpose
      extra+=$(awk -v a="${t0[i]}" -v b="$(cpu_ticks ${pids[i]})" -v hz="$HZ" -v n="${names[i]}" \
        'BEGIN { split(a, x, " "); split(b, y, " ");
                 printf " cpu_%s_user_s=%.2f cpu_%s_sys_s=%.2f", n, (y[1] - x[1]) / hz, n, (y[2] - x[2]) / hz }')
    done
    read -r wu ws <"$VAR/wrk-time.txt"
    extra+=" cpu_wrk_user_s=$wu cpu_wrk_sys_s=$ws"
    echo "$out" | grep '^RESULT' | sed "s/^RESULT/$label/; s/\$/$extra/"
  done
}

stage_run() { # LABEL [STAGES [MIX]] — the seed's mix over $STAGES unless given
  local stages=${2:-$STAGES} mix=${3:-history=90,count=4,metadata=2,profile=2,send=2}
  logcmd "$CHATLOAD_BIN run --url $BASE --seedfile $VAR/seed.json --stages $stages --mix $mix --seed 42 --json $PERF/$1.json --report $PERF/$1.md"
  say "chatload ($1): stages $stages, mix $mix"
  "$CHATLOAD_BIN" run --url "$BASE" --seedfile "$VAR/seed.json" --stages "$stages" --mix "$mix" --seed 42 \
    --json "$PERF/$1.json" --report "$PERF/$1.md" 2>"$VAR/chatload-$1.log" ||
    { say "chatload ($1) exited non-zero; the tail of its log:"; tail -n 5 "$VAR/chatload-$1.log" >&2; }
  [[ -s $PERF/$1.json ]] || { say "chatload ($1) wrote no results"; exit 1; }
}

start_chatd bypass CACHE_BYPASS=true
curl -sf -H "Authorization: Bearer $HOT_TOKEN" "$BASE$WPATH?limit=50" -o "$VAR/page.json"
PAGE_BYTES=$(stat -c %s "$VAR/page.json")
say "hot page: conversation $HOT_CID, $PAGE_BYTES bytes"

# --- references ------------------------------------------------------------
REFS=$VAR/refs.txt
: >"$VAR/wrk.txt"
: >"$REFS"
echo "page_bytes $PAGE_BYTES" >>"$REFS"

say "reference: nginx, static page of $PAGE_BYTES bytes"
N=$VAR/nginx
rm -rf "$N" && mkdir -p "$N/www" "$N/tmp"
cp "$VAR/page.json" "$N/www/page.json"
{
  [[ $(id -u) -ne 0 ]] || echo "user root;"
  cat <<EOF
worker_processes $(nproc);
pid $N/nginx.pid;
error_log $N/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $N/tmp/body;
  proxy_temp_path $N/tmp/proxy;
  fastcgi_temp_path $N/tmp/fastcgi;
  uwsgi_temp_path $N/tmp/uwsgi;
  scgi_temp_path $N/tmp/scgi;
  types { application/json json; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    root $N/www;
  }
}
EOF
} >"$N/nginx.conf"
logcmd "nginx -p $N -c $N/nginx.conf -e $N/error.log   # worker_processes $(nproc), the page as $N/www/page.json"
nginx -p "$N" -c "$N/nginx.conf" -e "$N/error.log"
nginx_started=1
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$NGINX_PORT/page.json" -o /dev/null && break; sleep 0.1; done
NGINX_PIDS="$(cat "$N/nginx.pid") $(pgrep -P "$(cat "$N/nginx.pid")" | tr '\n' ' ')"
WPATH=/page.json wrk_runs nginx "http://127.0.0.1:$NGINX_PORT" "$WRK_RUNS" "$REF_S" "nginx=$NGINX_PIDS" | tee -a "$VAR/wrk.txt" >&2
kill -QUIT "$(cat "$N/nginx.pid")"
nginx_started=

say "reference: pgbench, the history query, 20 clients through PgBouncer"
# chatd's history statement (src/chat/messages.c) for the hot conversation;
# pgbench would take the colons of the time format for variables: chr(58)
cat >"$VAR/history.sql" <<EOF
\\set cid $HOT_CID
\\set uid $HOT_UID
SELECT p.id, p.conversation_id, p.sender_id, p.body, to_char(p.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24' || chr(58) || 'MI' || chr(58) || 'SS.US"Z"'), p.client_msg_id FROM members mem LEFT JOIN LATERAL (  SELECT * FROM messages WHERE conversation_id = :cid::bigint AND (NULL::bigint IS NULL OR id < NULL::bigint) ORDER BY id DESC LIMIT 50 OFFSET 0) p ON true WHERE mem.conversation_id = :cid::bigint AND mem.user_id = :uid::bigint ORDER BY p.id DESC;
EOF
cp "$VAR/history.sql" "$PERF/pgbench-history.sql"
logcmd "pgbench -n -M extended -c 20 -j 2 -T $REF_S -f perf/pgbench-history.sql $DATABASE_URL"
# a short run first, so PgBouncer's server connections (and their backends,
# whose CPU is counted) exist before the measured one
pgbench -n -M extended -c 20 -j 2 -T 2 -f "$VAR/history.sql" "$DATABASE_URL" >/dev/null 2>&1 || true
read -ra DBP <<<"$(db_pids)"
db0=$(cpu_ticks "${DBP[@]}")
{ TIMEFORMAT='%3U %3S'; time pgbench -n -M extended -c 20 -j 2 -T "$REF_S" -f "$VAR/history.sql" "$DATABASE_URL" \
    >"$VAR/pgbench.txt" 2>&1; } 2>"$VAR/pgbench-time.txt" ||
  { say "pgbench failed:"; tail -n 5 "$VAR/pgbench.txt" >&2; }
db1=$(cpu_ticks "${DBP[@]}")
grep -E '^tps' "$VAR/pgbench.txt" | head -1 >&2 || true
awk '/^tps = / { print "pgbench_tps", $3; exit }' "$VAR/pgbench.txt" >>"$REFS"
# CPU of the run, as the wrk runs record it (bench.json: wrk.results.pgbench)
read -r pu ps <"$VAR/pgbench-time.txt" || true
awk -v a="$db0" -v b="$db1" -v hz="$HZ" -v pu="${pu:-0}" -v ps="${ps:-0}" -v secs="$REF_S" \
  '/^tps = / { split(a, x, " "); split(b, y, " ");
    printf "pgbench rps=%s cpu_db_user_s=%.2f cpu_db_sys_s=%.2f cpu_pgbench_user_s=%s cpu_pgbench_sys_s=%s\n",
      $3, (y[1] - x[1]) / hz, (y[2] - x[2]) / hz, pu, ps; exit }' "$VAR/pgbench.txt" >>"$VAR/wrk.txt"

say "reference: redis-benchmark GET of $PAGE_BYTES bytes"
RPORT=${REDIS_URL##*:}
RPORT=${RPORT%%/*}
logcmd "redis-benchmark -h 127.0.0.1 -p $RPORT -t set,get -d $PAGE_BYTES -c 100 -n $REDIS_N --csv"
redis-benchmark -h 127.0.0.1 -p "$RPORT" -t set,get -d "$PAGE_BYTES" -c 100 -n "$REDIS_N" --csv >"$VAR/redis.txt" 2>&1 ||
  { say "redis-benchmark failed:"; tail -n 5 "$VAR/redis.txt" >&2; }
redis-cli -h 127.0.0.1 -p "$RPORT" del 'key:__rand_int__' >/dev/null || true
awk -F, '$1 == "\"GET\"" { gsub(/"/, "", $2); print "redis_get_rps", $2 }' "$VAR/redis.txt" | tee -a "$REFS" >&2

# --- baseline: cache bypassed ----------------------------------------------
stage_run bypass
# the chat API mix with the cache bypassed: what the cache saves the inbox
stage_run chat-bypass "$C3:$RATE:$STAGE_S" "$CHAT_MIX"
say "wrk hot page, cache bypassed"
wrk_runs bypass "$BASE" "$WRK_RUNS" "$WRK_S" "chatd=$chatd_pid" "redis=$(redis_pid)" "db=$(db_pids)" | tee -a "$VAR/wrk.txt" >&2
say "wrk inbox page of the hot conversation's member, cache bypassed"
WPATH=$IPATH wrk_runs bypass-inbox "$BASE" "$WRK_RUNS" "$WRK_S" "chatd=$chatd_pid" "redis=$(redis_pid)" "db=$(db_pids)" | tee -a "$VAR/wrk.txt" >&2
stop_chatd

# --- cache on ---------------------------------------------------------------
start_chatd cached
stage_run cached
# the chat API mix (inbox, read markers, edits, deletes) at the most connections, cache on
stage_run chat "$C3:$RATE:$STAGE_S" "$CHAT_MIX"
say "wrk hot page, cache on"
wrk_runs cached "$BASE" "$WRK_RUNS" "$WRK_S" "chatd=$chatd_pid" "redis=$(redis_pid)" "db=$(db_pids)" | tee -a "$VAR/wrk.txt" >&2
say "wrk inbox page of the hot conversation's member, cache on"
WPATH=$IPATH wrk_runs cached-inbox "$BASE" "$WRK_RUNS" "$WRK_S" "chatd=$chatd_pid" "redis=$(redis_pid)" "db=$(db_pids)" | tee -a "$VAR/wrk.txt" >&2

# --- unit cost of a send: closed-loop POSTs, each acknowledged send costing
# the CPU of chatd, PgBouncer, PostgreSQL and Redis, WAL bytes and statements
say "wrk closed-loop sends over $SEND_CONVS conversations, cache on"
/usr/bin/python3 - "$VAR/seed.json" "$SEND_CONVS" >"$VAR/sends.txt" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
users = s["users"]  # members are indices into it
out = [(c["id"], users[c["members"][0]]["token"]) for c in s["conversations"] if c["members"]][:int(sys.argv[2])]
for cid, token in out:
    print(cid, token)
PY
# a short unmeasured run first: PgBouncer's server connections for the writes
SENDS=$VAR/sends.txt WRK_SCRIPT=bench/send.lua wrk_runs send-warm "$BASE" 1 1 >/dev/null
read -ra PGP <<<"$(pg_pids)"
lsn0=$(psql "$DATABASE_URL_DIRECT" -Atc 'SELECT pg_current_wal_lsn()')
q0=$(chatd_queries)
line=$(SENDS=$VAR/sends.txt WRK_SCRIPT=bench/send.lua wrk_runs send "$BASE" 1 "$WRK_S" "chatd=$chatd_pid" \
  "redis=$(redis_pid)" "pgbouncer=$(pgbouncer_pid)" "pg=${PGP[*]}")
q1=$(chatd_queries)
wal=$(psql "$DATABASE_URL_DIRECT" -Atc "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$lsn0')")
echo "$line wal_bytes=${wal%.*} db_queries=$((q1 - q0))" | tee -a "$VAR/wrk.txt" >&2
redis-cli -h 127.0.0.1 -p "$RPORT" info memory | tr -d '\r' |
  awk -F: '$1 == "used_memory" { print "redis_used_memory_bytes", $2 }' >>"$REFS"
printf 'redis_keys %s\n' "$(redis-cli -h 127.0.0.1 -p "$RPORT" dbsize | tr -d '\r')" >>"$REFS"
stop_chatd

# --- realtime: WebSocket delivery and the mass reconnect ---------------------
# A fresh chatd, so that its RSS before and with the idle sockets is the
# sockets' own; the rate limits are set off explicitly (one load generator
# address signs nobody up here, but its senders act for every user).
if ((RT)); then
  start_chatd realtime CHATD_RATE_SEND=0 CHATD_RATE_REQUEST=0 CHATD_RATE_SIGNUP=0
  logcmd "$CHATLOAD_BIN realtime --url $BASE --seedfile $VAR/seed.json --clients $RT_CLIENTS --frame-rate $RT_FRAME_RATE --seconds $RT_S --drain-seconds $RT_DRAIN_S --rc-share 0.1 --chatd-pid $chatd_pid --seed 42 --json $PERF/realtime.json --report $PERF/realtime.md"
  say "chatload realtime: $RT_CLIENTS clients, $RT_FRAME_RATE frames/s offered for $RT_S s, then the mass reconnect"
  rt_c0=$(cpu_ticks "$chatd_pid") rt_r0=$(cpu_ticks "$(redis_pid)") rt_t0=$(date +%s.%N)
  "$CHATLOAD_BIN" realtime --url "$BASE" --seedfile "$VAR/seed.json" --clients "$RT_CLIENTS" \
    --frame-rate "$RT_FRAME_RATE" --seconds "$RT_S" --drain-seconds "$RT_DRAIN_S" --rc-share 0.1 \
    --chatd-pid "$chatd_pid" --seed 42 \
    --json "$PERF/realtime.json" --report "$PERF/realtime.md" 2>"$VAR/chatload-realtime.log" ||
    { say "chatload realtime exited non-zero; the tail of its log:"; tail -n 8 "$VAR/chatload-realtime.log" >&2; }
  # the CPU chatd and Redis used over the whole realtime run (setup, steady, reconnect)
  awk -v c0="$rt_c0" -v c1="$(cpu_ticks "$chatd_pid")" -v r0="$rt_r0" -v r1="$(cpu_ticks "$(redis_pid)")" \
    -v t0="$rt_t0" -v t1="$(date +%s.%N)" -v hz="$HZ" 'BEGIN { split(c0, a, " "); split(c1, b, " ");
      split(r0, x, " "); split(r1, y, " ");
      printf "{\"chatd_s\": %.2f, \"redis_s\": %.2f, \"wall_s\": %.2f}\n",
        (b[1] + b[2] - a[1] - a[2]) / hz, (y[1] + y[2] - x[1] - x[2]) / hz, t1 - t0 }' >"$VAR/rt-cpu.json"
  grep '^chatload realtime: ' "$VAR/chatload-realtime.log" | tail -n 4 >&2 || true
  [[ -s $PERF/realtime.json ]] || { say "chatload realtime wrote no results"; exit 1; }
  stop_chatd
fi

# --- the cluster stage: the same load through HAProxy ------------------------
if ((CLUSTER)) && [[ ! -x scripts/cluster.sh ]]; then
  say "--cluster needs scripts/cluster.sh (make cluster); skipping the cluster stage"
  CLUSTER=0
fi
if ((CLUSTER)); then
  CP=${BENCH_CLUSTER_PORT:-23000}
  export CLUSTER_DIR=$VAR/cluster CLUSTER_PORT=$CP CLUSTER_CHATD_PORT=$((CP + 1)) CLUSTER_STATS_PORT=$((CP + 90)) \
    CLUSTER_PG_PORT=$((CP + 532)) CLUSTER_PG_REPLICA_PORT=$((CP + 533)) CLUSTER_PGBOUNCER_PORT=$((CP + 632)) \
    CLUSTER_PGBOUNCER_REPLICA_PORT=$((CP + 633)) CLUSTER_REDIS_PORT=$((CP + 679)) \
    CLUSTER_REDIS_CLUSTER_PORT=${BENCH_CLUSTER_REDIS_PORT:-13701}
  rm -rf "$CLUSTER_DIR"
  say "cluster stage: scripts/cluster.sh start (HAProxy on 127.0.0.1:$CP)"
  logcmd "CHATD_HEADER_TIMEOUT_MS=60000 CHATD_RATE_SEND=0 CHATD_RATE_REQUEST=0 CHATD_RATE_SIGNUP=0 CHATD_LOG_LEVEL=warn scripts/cluster.sh start"
  cluster_started=1
  CHATD_BIN=$CHATD_BIN CHATD_HEADER_TIMEOUT_MS=60000 CHATD_RATE_SEND=0 CHATD_RATE_REQUEST=0 CHATD_RATE_SIGNUP=0 \
    CHATD_LOG_LEVEL=warn scripts/cluster.sh start >&2
  # shellcheck source=/dev/null # written at run time by scripts/cluster.sh start
  read -r CL_URL CL_DB CL_INSTANCES < <(. "$CLUSTER_DIR/env"
    echo "$CLUSTER_URL $DATABASE_URL_DIRECT $CLUSTER_CHATD_1 $CLUSTER_CHATD_2 $CLUSTER_CHATD_3")
  say "cluster: seeding alike"
  logcmd "$CHATLOAD_BIN seed --copy --db-url $CL_DB --users $USERS --conversations $CONVS --messages $MSGS --seed 42 --out $VAR/seed-cluster.json"
  "$CHATLOAD_BIN" seed --copy --db-url "$CL_DB" --users "$USERS" --conversations "$CONVS" \
    --messages "$MSGS" --seed 42 --out "$VAR/seed-cluster.json" 2>"$VAR/seed-cluster.log"
  # The single process's stages begin minutes after its seed. Here the seed's WAL (some hundreds
  # of MB) would still be replaying on the replica and waiting for a checkpoint on the primary,
  # on the same two cores, during the first seconds of the stage: settle both first.
  # shellcheck source=/dev/null # written at run time by scripts/stack.sh
  read -r CL_ADMIN CL_RADMIN < <(. "$CLUSTER_DIR/stack/env"; echo "$CHATD_TEST_PG_ADMIN $CHATD_TEST_PG_REPLICA_ADMIN")
  psql "$CL_ADMIN" -qAtc 'CHECKPOINT'
  cl_lsn=$(psql "$CL_ADMIN" -Atc 'SELECT pg_current_wal_lsn()')
  cl_t0=$(date +%s.%N) cl_caught=0
  for _ in $(seq 1200); do  # at most about 2 minutes
    [[ $(psql "$CL_RADMIN" -Atc "SELECT pg_last_wal_replay_lsn() >= '$cl_lsn'") == t ]] && { cl_caught=1; break; }
    sleep 0.1
  done
  psql "$CL_RADMIN" -qAtc 'CHECKPOINT'
  if ((cl_caught)); then
    say "cluster: the replica replayed the seed $(awk -v a="$cl_t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s after the primary's checkpoint"
  else
    say "cluster: the replica has not replayed the seed after 2 minutes; measuring all the same"
  fi
  read -r CL_CID CL_TOKEN < <(/usr/bin/python3 -c '
import json, sys
s = json.load(open(sys.argv[1])); c = s["conversations"][0]; u = s["users"][c["members"][0]]
print(c["id"], u["token"])' "$VAR/seed-cluster.json")
  CL_CHATD=$(for i in 1 2 3; do cat "$CLUSTER_DIR/chatd-$i.pid"; echo -n ' '; done)
  CL_HA=$(cat "$CLUSTER_DIR/haproxy.pid")
  CL_HA="$CL_HA $(pgrep -P "$CL_HA" | tr '\n' ' ')"
  CL_REDIS=$(for i in 0 1 2 3 4 5; do port_pid $((CLUSTER_REDIS_CLUSTER_PORT + i)); echo -n ' '; done)
  # cache-miss reads that could use the replica, summed over the instances: "primary replica"
  cluster_reads() {
    # shellcheck disable=SC2086 # CL_INSTANCES: the three URLs
    metric_sums 'chatd_db_reads_total{path="primary"} chatd_db_reads_total{path="replica"}' $CL_INSTANCES
  }
  # as the single process's chat stage follows its staged runs: a warm-up of the same mix, not counted
  CL_WARM_S=$((STAGE_S / 6 > 1 ? STAGE_S / 6 : 1))
  logcmd "$CHATLOAD_BIN run --url $CL_URL --seedfile $VAR/seed-cluster.json --stages $CL_CONNS:$RATE:$CL_WARM_S --mix $CHAT_MIX --seed 7 --json $VAR/cluster-warm.json"
  say "chatload (cluster warm-up, not counted): stages $CL_CONNS:$RATE:$CL_WARM_S"
  "$CHATLOAD_BIN" run --url "$CL_URL" --seedfile "$VAR/seed-cluster.json" --stages "$CL_CONNS:$RATE:$CL_WARM_S" \
    --mix "$CHAT_MIX" --seed 7 --json "$VAR/cluster-warm.json" 2>"$VAR/chatload-cluster-warm.log" ||
    { say "chatload (cluster warm-up) exited non-zero; the tail of its log:"; tail -n 5 "$VAR/chatload-cluster-warm.log" >&2; }
  read -r CL_P0 CL_R0 < <(cluster_reads)
  logcmd "$CHATLOAD_BIN run --url $CL_URL --seedfile $VAR/seed-cluster.json --stages $CL_CONNS:$RATE:$STAGE_S --mix $CHAT_MIX --seed 42 --json $PERF/cluster-chat.json --report $PERF/cluster-chat.md"
  say "chatload (cluster-chat): stages $CL_CONNS:$RATE:$STAGE_S, mix $CHAT_MIX, through HAProxy"
  "$CHATLOAD_BIN" run --url "$CL_URL" --seedfile "$VAR/seed-cluster.json" --stages "$CL_CONNS:$RATE:$STAGE_S" \
    --mix "$CHAT_MIX" --seed 42 --json "$PERF/cluster-chat.json" --report "$PERF/cluster-chat.md" \
    2>"$VAR/chatload-cluster-chat.log" ||
    { say "chatload (cluster-chat) exited non-zero; the tail of its log:"; tail -n 5 "$VAR/chatload-cluster-chat.log" >&2; }
  read -r CL_P1 CL_R1 < <(cluster_reads)
  echo "{\"primary\": $((CL_P1 - CL_P0)), \"replica\": $((CL_R1 - CL_R0))}" >"$VAR/cluster-reads.json"
  say "cluster-chat: cache-miss reads $((CL_P1 - CL_P0)) on the primary, $((CL_R1 - CL_R0)) on the replica"
  say "wrk hot page through HAProxy, cache on"
  TOKEN=$CL_TOKEN WPATH=/api/v1/conversations/$CL_CID/messages wrk_runs cluster "$CL_URL" "$WRK_RUNS" "$WRK_S" \
    "chatd=$CL_CHATD" "haproxy=$CL_HA" "redis=$CL_REDIS" | tee -a "$VAR/wrk.txt" >&2
  scripts/cluster.sh stop >&2
  cluster_started=
fi

# --- what the report needs beyond chatload's JSON ---------------------------
/usr/bin/python3 - "$VAR" "$PERF/bench.json" <<PY
import json, sys
var, out = sys.argv[1], sys.argv[2]
refs = {}
for line in open(var + "/refs.txt"):
    k, v = line.split()
    refs[k] = float(v)
wrk = {}
for line in open(var + "/wrk.txt"):
    label, *kv = line.split()
    wrk.setdefault(label, []).append({k: float(v) for k, v in (x.split("=") for x in kv)})
json.dump({
    "quick": bool($QUICK), "rate": $RATE, "burst_rate": $BURST_RATE, "stages": "$STAGES",
    "conns": [$C1, $C2, $C3], "stage_seconds": $STAGE_S, "burst_seconds": $BURST_S,
    "recover_seconds": $RECOVER_S, "ref_seconds": $REF_S, "redis_requests": $REDIS_N,
    "wrk": {"runs": $WRK_RUNS, "seconds": $WRK_S, "connections": $WRK_CONNS, "threads": 2, "results": wrk},
    "seed": {"users": $USERS, "conversations": $CONVS, "messages": $MSGS, "seconds": $SEED_S,
             "hot_conversation": $HOT_CID},
    "page_bytes": $PAGE_BYTES, "refs": refs,
    "realtime": {"ran": bool($RT), "clients": $RT_CLIENTS, "frame_rate": $RT_FRAME_RATE, "seconds": $RT_S,
                 "cpu": json.load(open(var + "/rt-cpu.json")) if $RT else None},
    "send_conversations": $SEND_CONVS, "cluster": {"ran": bool($CLUSTER), "instances": 3,
                                                "reads": json.load(open(var + "/cluster-reads.json")) if $CLUSTER else None},
    "own_stack": bool("$own_stack"), "chatd_bin": "$CHATD_BIN",
    "chatd_db": "$CHATD_DB_KIND",
    "elapsed_s": $(date +%s) - $T_START,
}, open(out, "w"), indent=1)
PY
# the unit costs (stored in bench.json) and the model past this machine, then the report
/usr/bin/python3 bench/scaling.py --bench "$PERF/bench.json" --out "$OUT/scaling.md"
/usr/bin/python3 bench/report.py --perf "$PERF" --out "$OUT/performance.md"
say "done in $(( $(date +%s) - T_START )) s; report: $OUT/performance.md"
exit
}
