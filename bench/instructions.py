#!/usr/bin/env python3
"""Instructions chatd spends per answer, counted by callgrind, so that two
builds can be compared on a busy machine (instruction counts do not depend
on load). For each binary: chatd with one worker under
`valgrind --tool=callgrind`, a keep-alive client reading one 50-message
history page N1 and then N2 times; the figure is (I(N2) - I(N1)) / (N2 - N1),
start-up and shutdown cancelling out.

    bench/instructions.py --stack-env var/stack/env [--cached] BIN [BIN ...]

The stack (scripts/stack.sh) must be running and migrated; the first binary
writes the page it reads (a user, a conversation, 50 messages), so it must
speak the database's schema. Keep N2 - N1 at 1,000 or more: start-up varies
by a few hundred thousand instructions (pool connects) from run to run. Prints one line per binary and the ratio of
each to the first.
"""
import argparse
import http.client
import json
import os
import re
import signal
import subprocess
import tempfile
import time

PORT = 27411


def stack_env(path):
    env = dict(os.environ)
    for line in open(path):
        m = re.match(r"export (\w+)='?([^']*)'?$", line.strip())
        if m:
            env[m.group(1)] = m.group(2)
    return env


def wait_up(deadline_s=120):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=2)
            c.request("GET", "/healthz")
            c.getresponse().read()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("chatd did not come up")


def setup(binary, env):
    p = subprocess.Popen([binary], env=env)
    try:
        wait_up()
        c = http.client.HTTPConnection("127.0.0.1", PORT)

        def call(method, path, body, token=None):
            h = {"Content-Type": "application/json"}
            if token:
                h["Authorization"] = "Bearer " + token
            c.request(method, path, json.dumps(body), h)
            r = c.getresponse()
            data = r.read()
            assert r.status in (200, 201), (r.status, data)
            return json.loads(data)

        u = call("POST", "/api/v1/users", {"name": "instr%d" % time.time_ns()})
        conv = call("POST", "/api/v1/conversations", {"title": "instr", "member_ids": []},
                    u["token"])
        for i in range(50):
            call("POST", f"/api/v1/conversations/{conv['id']}/messages",
                 {"body": "message %d" % i}, u["token"])
        return u["token"], conv["id"]
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait()


def count(binary, env, token, cid, n, out):
    p = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", binary],
                         env=env, stderr=subprocess.DEVNULL)
    try:
        wait_up()
        c = http.client.HTTPConnection("127.0.0.1", PORT)
        for _ in range(n):
            c.request("GET", f"/api/v1/conversations/{cid}/messages?limit=50",
                      headers={"Authorization": "Bearer " + token})
            r = c.getresponse()
            r.read()
            assert r.status == 200, r.status
        c.close()
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait()
    for line in open(out):
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise SystemExit(f"no totals in {out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stack-env", required=True)
    ap.add_argument("--cached", action="store_true", help="cache on (default: bypassed)")
    ap.add_argument("--n1", type=int, default=100)
    ap.add_argument("--n2", type=int, default=1100)
    ap.add_argument("binaries", nargs="+")
    a = ap.parse_args()
    env = stack_env(a.stack_env)
    env.update(CHATD_LISTEN=f"127.0.0.1:{PORT}", CHATD_WORKERS="1", CHATD_LOG_LEVEL="warn",
               CACHE_BYPASS="false" if a.cached else "true",
               CHATD_RATE_SEND="0", CHATD_RATE_REQUEST="0", CHATD_RATE_SIGNUP="0")
    token, cid = setup(a.binaries[0], env)
    kind = "cached" if a.cached else "uncached"
    first = None
    with tempfile.TemporaryDirectory() as tmp:
        for i, b in enumerate(a.binaries):
            lo = count(b, env, token, cid, a.n1, f"{tmp}/{i}-lo.out")
            hi = count(b, env, token, cid, a.n2, f"{tmp}/{i}-hi.out")
            per = (hi - lo) / (a.n2 - a.n1)
            first = first or per
            print(f"{b}: {per:,.0f} instructions per {kind} history page "
                  f"({per / first:.3f}x the first)", flush=True)


if __name__ == "__main__":
    main()
