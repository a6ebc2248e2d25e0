"""10,000 concurrent keep-alive connections on one worker: all held, all
served, all released. Prints the server's memory per connection (pytest -s)."""

import time

import pytest

from chatlib import (Api, Metrics, http_get, http_req, mass_connect, mass_exchange, parse_responses,
                     raise_nofile, read_vmrss_kib, wait_for)

N = 10_000
HISTORY_EVERY = 20  # every 20th connection reads history (authenticated, database-backed)


def test_ten_thousand_connections(chatd_factory):
    t_start = time.monotonic()
    soft = raise_nofile(20_000)
    if soft < N + 500:
        pytest.fail(f"RLIMIT_NOFILE hard limit {soft} is too low for {N} client sockets")
    inst = chatd_factory(workers=1)
    x = Api(inst.base_url)
    a = x.signup()
    conv = x.create_conversation(a["token"])
    msg = x.send(a["token"], conv["id"], "to everyone")

    # Spread over 127.0.0.2..201 so no source address runs short of ephemeral ports.
    rss_before = read_vmrss_kib(inst.pid)
    socks = mass_connect(inst.host, inst.port, N, source_of=lambda i: f"127.0.0.{2 + i % 200}",
                         in_flight=512, timeout=60)
    try:
        t_connected = time.monotonic()

        def open_http():
            return Metrics(inst.metrics()).value("chatd_connections_open", {"kind": "http"})

        def reached():
            v = open_http()
            return v if v >= N else None

        seen = wait_for(reached, 30, interval=0.2, what=f"chatd_connections_open{{kind=\"http\"}} >= {N}")
        rss_held = read_vmrss_kib(inst.pid)

        health = http_get("/healthz")
        hist = http_req("GET", f"/api/v1/conversations/{conv['id']}/messages?limit=1", token=a["token"])
        results = mass_exchange(socks, lambda i: hist if i % HISTORY_EVERY == 0 else health, timeout=60)
        t_served = time.monotonic()
        rss_served = read_vmrss_kib(inst.pid)

        bad = []
        for i, (buf, eof) in enumerate(results):
            rs, _ = parse_responses(buf)
            if not rs:
                bad.append((i, "no response", eof))
                continue
            r = rs[0]
            if r.status != 200:
                bad.append((i, r.status, r.body[:100]))
            elif i % HISTORY_EVERY == 0:
                if r.json()["messages"][0]["id"] != msg["id"]:
                    bad.append((i, "wrong history", r.body[:100]))
            elif r.json() != {"status": "ok"}:
                bad.append((i, "wrong healthz", r.body[:100]))
        assert not bad, f"{len(bad)} of {N} connections not served correctly, e.g. {bad[:5]}"
    finally:
        for s in socks:
            s.close()
        x.close()

    # The server lets go of them all.
    wait_for(lambda: Metrics(inst.metrics()).value("chatd_connections_open", {"kind": "http"}) <= 5, 30,
             interval=0.2, what="connections to be released")
    rss_after = read_vmrss_kib(inst.pid)

    per_conn = (rss_held - rss_before) * 1024 / N if rss_held and rss_before else float("nan")
    print(f"\n{N} connections: connect {t_connected - t_start:.1f}s, served {t_served - t_connected:.1f}s; "
          f"open gauge {seen:.0f}; VmRSS before {rss_before} KiB, holding {rss_held} KiB, "
          f"after serving {rss_served} KiB, after closing {rss_after} KiB; "
          f"~{per_conn:.0f} bytes per idle connection")
    assert time.monotonic() - t_start < 120, "the test took too long"
