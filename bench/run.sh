#!/usr/bin/env bash
# bench/run.sh — `make bench`: the hot history page with the cache on and with
# CACHE_BYPASS=true, measured in one run on loopback with wrk, and the ratios.
#
# Starts its own stack (var/bench-stack; ports 17532/17632/17679), one chatd
# per phase on 127.0.0.1:17300, seeds one conversation of 200 messages and
# reads its newest page (50 messages, ~10 KiB) with wrk: RUNS runs of DURATION
# seconds each, 100 connections, 2 threads. Prints every run and the medians.
# Environment: RUNS (3), DURATION (8), CONNS (100).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
RUNS=${RUNS:-3} DURATION=${DURATION:-8} CONNS=${CONNS:-100}
export CHATD_STACK_DIR=var/bench-stack PG_PORT=17532 PGBOUNCER_PORT=17632 REDIS_PORT=17679
LISTEN=127.0.0.1:17300
BASE=http://$LISTEN

command -v wrk >/dev/null || { apt-get install -y -qq wrk >/dev/null 2>&1 || sudo -n apt-get install -y -qq wrk; }
make --no-print-directory build >/dev/null
pid=
cleanup() { [[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; scripts/stack.sh stop >/dev/null; }
trap cleanup EXIT
scripts/stack.sh start >/dev/null
set -a; . "$CHATD_STACK_DIR/env"; set +a
build/chatd migrate 2>/dev/null

start_chatd() { # extra env...
  env "$@" CHATD_LISTEN=$LISTEN CHATD_LOG_LEVEL=warn build/chatd 2>>var/bench-chatd.log &
  pid=$!
  for _ in $(seq 100); do curl -sf "$BASE/readyz" >/dev/null && return; sleep 0.1; done
  echo "bench: chatd did not become ready" >&2; exit 1
}
stop_chatd() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; }

start_chatd
read -r TOKEN CID < <(/usr/bin/python3 - "$BASE" <<'PY'
import json, sys, urllib.request, uuid
base = sys.argv[1]
def call(method, path, body, token=None):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method=method)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    return json.load(urllib.request.urlopen(req))
u = call("POST", "/api/v1/users", {"name": "bench-" + uuid.uuid4().hex[:10]})
c = call("POST", "/api/v1/conversations", {"title": "bench", "member_ids": []}, u["token"])
for i in range(200):
    call("POST", f"/api/v1/conversations/{c['id']}/messages",
         {"body": f"message {i} with some typical chat text in it, about eighty bytes long"}, u["token"])
print(u["token"], c["id"])
PY
)
export TOKEN WPATH=/api/v1/conversations/$CID/messages

measure() { # label
  for _ in $(seq "$RUNS"); do
    wrk -t2 -c"$CONNS" -d"${DURATION}s" -s bench/hot_page.lua "$BASE" | grep RESULT | sed "s/^RESULT/$1/"
  done
}
results=$(mktemp)
measure cached | tee -a "$results"
stop_chatd
start_chatd CACHE_BYPASS=true
measure bypass | tee -a "$results"
stop_chatd

/usr/bin/python3 - "$results" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    label, *kv = line.split()
    rows.setdefault(label, []).append({k: float(v) for k, v in (x.split("=") for x in kv)})
med = {l: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for l, rs in rows.items()}
for l, m in med.items():
    print(f"median {l}: {m['rps']:.0f} req/s, p50 {m['p50_ms']:.2f} ms, p95 {m['p95_ms']:.2f} ms, "
          f"errors {m['errors']:.0f}, non-2xx {m['non2xx']:.0f}")
c, b = med["cached"], med["bypass"]
print(f"cache on / bypass: throughput x{c['rps'] / b['rps']:.2f}, "
      f"p95 {100 * (1 - c['p95_ms'] / b['p95_ms']):.0f} % lower")
PY
rm -f "$results"
