"""Operations: /healthz, /readyz, /metrics (names of the contract, valid
Prometheus text), graceful SIGTERM, and the cap on client connections."""

import signal
import socket
import threading
import time

import psycopg2
import pytest

from chatlib import (Api, Metrics, TcpProxy, connect, http_get, json_body, parse_responses, read_until,
                     wait_closed, wait_for)
from conftest import lock_waiters, with_port


# --- health -------------------------------------------------------------------------


def test_healthz(api):
    r = api.req("GET", "/healthz")
    assert json_body(r, 200) == {"status": "ok"}


def test_readyz(api):
    # /healthz answers as soon as chatd listens; /readyz only once a database
    # connection is up, which on a loaded machine may come a moment later.
    r = wait_for(lambda: (x := api.req("GET", "/readyz")).status_code == 200 and x, 15,
                 what="/readyz 200 after start")
    b = json_body(r, 200)
    assert {"status", "db", "cache"} <= set(b), b
    assert b["status"] in ("ready", "degraded")
    assert b["db"] == "up"
    assert b["cache"] in ("up", "down", "bypassed")


def test_sigterm_drains_then_a_second_signal_stops(chatd_factory):
    """CHATD_DRAIN_MS: after SIGTERM /readyz answers 503 draining while other
    requests are served; a second SIGTERM ends the drain at once."""
    inst = chatd_factory(env={"CHATD_DRAIN_MS": "20000"})
    a = Api(inst.base_url)
    inst.proc.send_signal(signal.SIGTERM)
    inst.wait_log("event=drain", timeout=5)
    r = a.req("GET", "/readyz")
    assert r.status_code == 503, r.text
    assert json_body(r, 503)["status"] == "draining"
    assert a.req("GET", "/healthz").status_code == 200
    a.signup()  # everything else is still served
    t = time.monotonic()
    inst.proc.send_signal(signal.SIGTERM)
    inst.proc.wait(timeout=10)
    assert time.monotonic() - t < 10 and inst.proc.returncode == 0
    assert inst.log_contains("event=shutdown signal=SIGTERM")
    a.close()


def test_ops_need_no_token(api):
    for path in ("/healthz", "/readyz", "/metrics"):
        assert api.req("GET", path).status_code == 200


# --- metrics ------------------------------------------------------------------------


def fetch(api):
    r = api.req("GET", "/metrics")
    assert r.status_code == 200
    return r, Metrics(r.text)


def test_metrics_content_type_and_validity(api):
    # Some traffic first, so labelled series exist.
    api.req("GET", "/healthz")
    api.req("GET", "/nope")
    u = api.signup()
    api.get_user(u["token"], u["id"])
    r, m = fetch(api)
    ct = r.headers.get("Content-Type", "")
    assert ct.split(";")[0].strip() == "text/plain", ct
    if "version=" in ct:
        assert "version=0.0.4" in ct, ct
    assert not m.errors, "invalid exposition:\n" + "\n".join(m.errors[:20])
    assert m.samples


CORE_METRICS = [
    ("chatd_http_requests_total", "counter"),
    ("chatd_http_request_duration_seconds", "histogram"),
    ("chatd_connections_open", "gauge"),
    ("chatd_db_pool_size", "gauge"),
    ("chatd_db_pool_active", "gauge"),
    ("chatd_db_pool_waiting", "gauge"),
    ("chatd_db_tx_queue_wait_seconds", "histogram"),
    ("chatd_db_queries_total", "counter"),
    ("chatd_db_errors_total", "counter"),
    ("chatd_db_path", "gauge"),
]

CACHE_METRICS = [
    ("chatd_cache_hits_total", "counter"),
    ("chatd_cache_misses_total", "counter"),
    ("chatd_cache_errors_total", "counter"),
    ("chatd_cache_hit_ratio", "gauge"),
    ("chatd_cache_bypass", "gauge"),
]


def check_family(m, name, typ):
    assert m.types.get(name) == typ, f"# TYPE {name} {typ} missing (have {m.types.get(name)!r})"
    if typ == "histogram":
        assert m.has(name + "_count") and m.has(name + "_sum") and m.has(name + "_bucket"), name


@pytest.mark.parametrize("name,typ", CORE_METRICS, ids=[n for n, _ in CORE_METRICS])
def test_metric_present_with_type(api, name, typ):
    u = api.signup()
    api.get_user(u["token"], u["id"])
    _, m = fetch(api)
    check_family(m, name, typ)
    if typ != "histogram" and name not in ("chatd_http_requests_total",):
        assert m.has(name), f"no sample of {name}"


@pytest.mark.parametrize("name,typ", CACHE_METRICS, ids=[n for n, _ in CACHE_METRICS])
def test_cache_metric_present_with_type(api, name, typ):
    _, m = fetch(api)
    assert m.types.get(name) == typ, f"# TYPE {name} {typ} missing"
    if name not in ("chatd_cache_hits_total", "chatd_cache_misses_total"):  # per-kind series may come later
        assert m.has(name), f"no sample of {name}"


def test_http_requests_total_labels_and_counting(api):
    _, m0 = fetch(api)

    def healthz_200(m):
        return sum(v for lab, v in m.series("chatd_http_requests_total")
                   if "healthz" in lab.get("route", "") and lab.get("method") == "GET" and lab.get("status") == "200")

    before = healthz_200(m0)
    for _ in range(7):
        assert api.req("GET", "/healthz").status_code == 200
    _, m1 = fetch(api)
    for lab, _ in m1.series("chatd_http_requests_total"):
        assert {"route", "method", "status"} <= set(lab), lab
        assert lab["status"].isdigit() and len(lab["status"]) == 3, lab
    assert healthz_200(m1) - before >= 7
    # Route labels are templates, not raw paths with ids in them.
    u = api.signup()
    for _ in range(3):
        api.get_user(u["token"], u["id"])
    _, m2 = fetch(api)
    routes = {lab["route"] for lab, _ in m2.series("chatd_http_requests_total")}
    assert not any(str(u["id"]) in r for r in routes), routes
    # Errors are counted with their status.
    api.req("GET", "/definitely/not/here")
    _, m3 = fetch(api)
    assert any(lab.get("status") == "404" for lab, _ in m3.series("chatd_http_requests_total"))


def test_route_label_does_not_grow_with_unknown_paths(api):
    """Unknown paths do not each become a route label (bounded cardinality)."""
    import uuid
    junk = [uuid.uuid4().hex for _ in range(5)]
    for j in junk:
        assert api.req("GET", f"/{j}").status_code == 404
        assert api.req("GET", f"/api/v1/conversations/{j}").status_code in (401, 404)
    _, m = fetch(api)
    labels = [lab for name, lab, _ in m.samples if name.startswith("chatd_http_")]
    assert not any(j in v for lab in labels for v in lab.values() for j in junk), "raw paths in labels"


def test_request_duration_histogram_has_route(api):
    api.req("GET", "/healthz")
    _, m = fetch(api)
    for lab, _ in m.series("chatd_http_request_duration_seconds_count"):
        assert "route" in lab, lab
    assert m.value("chatd_http_request_duration_seconds_count") > 0


def test_connections_open_counts_http(api, chatd):
    socks = []
    try:
        _, m0 = fetch(api)
        base = m0.value("chatd_connections_open", {"kind": "http"})
        for _ in range(10):
            s = connect(chatd.host, chatd.port)
            s.sendall(http_get("/healthz"))
            read_until(s, responses=1, timeout=5)
            socks.append(s)
        _, m1 = fetch(api)
        assert m1.value("chatd_connections_open", {"kind": "http"}) >= base + 10
    finally:
        for s in socks:
            s.close()
    wait_for(lambda: fetch(api)[1].value("chatd_connections_open", {"kind": "http"}) <= base + 1, 10,
             what="connections_open to drop after closing")


def test_db_path_gauge(api):
    """With DATABASE_URL healthy chatd stays on it: path="pooler" (whatever DATABASE_URL points at)."""
    _, m = fetch(api)
    series = m.series("chatd_db_path")
    assert series
    assert all(lab.get("path") in ("pooler", "direct") for lab, _ in series), series
    on = [lab["path"] for lab, v in series if v == 1]
    assert on == ["pooler"], series


def test_db_pool_gauges_sane(chatd_factory):
    inst = chatd_factory(env={"CHATD_DB_POOL_SIZE": "6"})
    x = Api(inst.base_url)
    try:
        u = x.signup()
        x.get_user(u["token"], u["id"])
        m = Metrics(inst.metrics())
        assert not m.errors, m.errors[:10]
        series = m.series("chatd_db_pool_size")
        if any("path" in lab for lab, _ in series):
            series = [(lab, v) for lab, v in series if lab.get("path") == "pooler"]
        size = sum(v for _, v in series)
        assert size == 6, f"chatd_db_pool_size {m.series('chatd_db_pool_size')} with CHATD_DB_POOL_SIZE=6"
        q0 = m.value("chatd_db_queries_total")
        for _ in range(3):
            x.get_user(u["token"], u["id"])
            x.create_conversation(u["token"])
        m = Metrics(inst.metrics())
        assert m.value("chatd_db_queries_total") > q0
        assert m.value("chatd_db_pool_active") <= size
        assert m.value("chatd_db_pool_waiting") >= 0
        assert m.value("chatd_db_queries_total") > 0
        assert m.value("chatd_db_tx_queue_wait_seconds_count") > 0
    finally:
        x.close()


# --- graceful shutdown --------------------------------------------------------------


def test_sigterm_idle_server_exits_0(chatd_factory):
    inst = chatd_factory()
    s = connect(inst.host, inst.port)  # an idle keep-alive client must not hold the exit up
    try:
        s.sendall(http_get("/healthz"))
        read_until(s, responses=1, timeout=5)
        t0 = time.monotonic()
        inst.proc.send_signal(signal.SIGTERM)
        rc = inst.proc.wait(timeout=10)
        assert rc == 0, f"exit code {rc}; log:\n{inst.log_text()[-3000:]}"
        assert time.monotonic() - t0 < 10
    finally:
        s.close()


def test_sigterm_lets_in_flight_request_finish(chatd_factory, db, stack):
    inst = chatd_factory(env={"CACHE_BYPASS": "true"})
    x = Api(inst.base_url)
    a = x.signup()
    c = x.create_conversation(a["token"])
    m = x.send(a["token"], c["id"], "in flight")
    watcher = psycopg2.connect(stack.pg_admin_dsn)
    watcher.autocommit = True
    result = {}

    def inflight():
        y = Api(inst.base_url, timeout=30)
        try:
            r = y.history_raw(a["token"], c["id"])
            result["status"] = r.status_code
            result["body"] = r.json() if r.content else None
        except Exception as e:  # reported below
            result["error"] = repr(e)
        finally:
            y.close()

    t = threading.Thread(target=inflight)
    locked = False
    try:
        with db.cursor() as cur:
            cur.execute("SET lock_timeout = '10s'")
            cur.execute("BEGIN")
            cur.execute("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
            locked = True
        t.start()
        wait_for(lambda: lock_waiters(watcher, "chat") > 0, 10, what="the history request to block on the lock")
        t0 = time.monotonic()
        inst.proc.send_signal(signal.SIGTERM)
        # The server is shutting down with a request in flight; it must wait for it.
        time.sleep(1.0)
        assert inst.proc.poll() is None, "chatd exited with a request in flight"
        with db.cursor() as cur:
            cur.execute("ROLLBACK")
            locked = False
        t.join(timeout=15)
        assert not t.is_alive()
        assert result.get("status") == 200, result
        assert result["body"]["messages"][0]["id"] == m["id"]
        rc = inst.proc.wait(timeout=max(0.1, 10 - (time.monotonic() - t0)))
        assert rc == 0, f"exit code {rc}"
        assert time.monotonic() - t0 < 10
    finally:
        if locked:
            with db.cursor() as cur:
                cur.execute("ROLLBACK")
        watcher.close()
        x.close()
        t.join(timeout=15)


# --- max connections ----------------------------------------------------------------


def test_max_connections(chatd_factory):
    inst = chatd_factory(env={"CHATD_MAX_CONNECTIONS": "5"})
    first = []
    try:
        for _ in range(5):
            s = connect(inst.host, inst.port)
            s.sendall(http_get("/healthz"))
            buf, eof = read_until(s, responses=1, timeout=5)
            rs, _ = parse_responses(buf)
            assert rs and rs[0].status == 200 and not eof
            first.append(s)
        # The sixth is closed at once.
        sixth = socket.create_connection((inst.host, inst.port), timeout=5)
        try:
            try:
                sixth.sendall(http_get("/healthz"))
            except (BrokenPipeError, ConnectionResetError):
                pass
            t, buf = wait_closed(sixth, 3)
            assert t is not None, "the sixth connection was not closed"
            if buf:
                rs, _ = parse_responses(buf)
                assert rs and rs[0].status != 200, f"the sixth connection was served: {buf[:200]!r}"
        finally:
            sixth.close()
        # The first five are still served.
        for s in first:
            s.sendall(http_get("/healthz"))
            buf, eof = read_until(s, responses=1, timeout=5)
            rs, _ = parse_responses(buf)
            assert rs and rs[0].status == 200, buf[:200]
        # Once one leaves, a newcomer gets in.
        first.pop().close()

        def newcomer_served():
            s = socket.create_connection((inst.host, inst.port), timeout=5)
            try:
                s.sendall(http_get("/healthz"))
                buf, _ = read_until(s, responses=1, timeout=2)
                rs, _ = parse_responses(buf)
                return bool(rs) and rs[0].status == 200
            except OSError:
                return False
            finally:
                s.close()

        wait_for(newcomer_served, 10, interval=0.1, what="a freed slot to be reused")
    finally:
        for s in first:
            s.close()


# --- the direct fallback path ---------------------------------------------------------


def test_pooler_lost_falls_back_to_direct(chatd_factory, stack):
    """DATABASE_URL goes away mid-run: chatd moves to DATABASE_URL_DIRECT and keeps serving."""
    import urllib.parse
    target = urllib.parse.urlsplit(stack.database_url)
    proxy = TcpProxy(target.hostname, target.port)
    try:
        inst = chatd_factory(env={"DATABASE_URL": with_port(stack.database_url, proxy.port),
                                  "DATABASE_URL_DIRECT": stack.database_url_direct,
                                  "CHATD_DB_QUEUE_TIMEOUT_MS": "3000", "CHATD_DB_CONNECT_TIMEOUT_MS": "1000"})
        x = Api(inst.base_url, timeout=15)
        try:
            a = x.signup()
            c = x.create_conversation(a["token"])
            x.send(a["token"], c["id"], "via the pooler")
            # With a 1 s connect timeout a loaded machine may start on the direct path
            # and return to the pooler on its own: wait for that, as below.
            wait_for(lambda: Metrics(inst.metrics()).value("chatd_db_path", {"path": "pooler"}) == 1,
                     30, interval=0.2, what="chatd to use the pooler path")

            proxy.stop()  # the pooler is gone: refused connects, cut sessions

            def served():
                r = x.send_raw(a["token"], c["id"], "after the cut")
                assert r.status_code in (201, 503), (r.status_code, r.content[:200])
                return r.status_code == 201

            wait_for(served, 20, interval=0.2, what="sends to succeed on the direct path")
            m = Metrics(inst.metrics())
            assert m.value("chatd_db_path", {"path": "direct"}) == 1, m.series("chatd_db_path")
            assert m.value("chatd_db_path", {"path": "pooler"}) == 0
            r = x.req("GET", "/readyz")
            b = json_body(r, 200)
            assert b["db"] == "up" and b["status"] in ("ready", "degraded")
            h = x.history(a["token"], c["id"])
            assert h["messages"][0]["body"] == "after the cut"
            x.signup()

            # The pooler comes back: chatd returns to it (design.md: "and back when the
            # pooler is healthy again"), serving all along.
            proxy = TcpProxy(target.hostname, target.port, port=proxy.port)

            def back():
                assert x.send_raw(a["token"], c["id"], "meanwhile").status_code == 201
                return Metrics(inst.metrics()).value("chatd_db_path", {"path": "pooler"}) == 1

            wait_for(back, 30, interval=0.2, what="chatd to return to the pooler path")
            m = Metrics(inst.metrics())
            assert m.value("chatd_db_path", {"path": "direct"}) == 0
            x.send(a["token"], c["id"], "via the pooler again")
        finally:
            x.close()
    finally:
        proxy.stop()
