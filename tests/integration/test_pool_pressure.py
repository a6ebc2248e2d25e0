"""Pool pressure: 2,000 truly concurrent clients fold onto at most
CHATD_DB_POOL_SIZE database connections, queue FIFO, and all get correct
answers; a queue wait past CHATD_DB_QUEUE_TIMEOUT_MS answers 503 with
Retry-After."""

import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg2
import psycopg2.extensions
import pytest
import requests

from chatlib import (Api, Metrics, assert_error, assert_retry_after, http_req, json_body, mass_connect,
                     mass_exchange, parse_responses, raise_nofile, wait_for)
from conftest import lock_waiters

CLIENTS = 2000
POOL = 20


def chat_user(stack):
    try:
        return psycopg2.extensions.parse_dsn(stack.chatd_database_url).get("user") or "chat"
    except Exception:
        return "chat"


class PgSampler(threading.Thread):
    """Samples pg_stat_activity every ~20 ms on its own connection."""

    def __init__(self, dsn, dbname, user, since):
        super().__init__(daemon=True)
        self.dbname = dbname
        self.conn = psycopg2.connect(dsn)
        self.conn.autocommit = True
        self.user = user
        self.since = since
        self.stop_ev = threading.Event()
        with self.conn.cursor() as cur:
            cur.execute("SELECT clock_timestamp()")
            self.load_start = cur.fetchone()[0]
        self.max_busy = 0   # backends not idle at one moment
        self.max_total = 0  # backends of the user at one moment (PgBouncer may hold idle ones)
        self.max_new = 0    # backends started since chatd started
        self.max_used = 0   # distinct backends that ran a statement since the load began
        self.samples = 0
        self.error = None

    def sample(self, cur):
        cur.execute(
            "SELECT count(*) FILTER (WHERE state IS DISTINCT FROM 'idle'),"
            "       count(*),"
            "       count(*) FILTER (WHERE backend_start >= %s),"
            "       count(*) FILTER (WHERE query_start >= %s)"
            "  FROM pg_stat_activity"
            " WHERE datname = %s AND usename = %s AND pid <> pg_backend_pid()"
            "   AND backend_type = 'client backend'",
            (self.since, self.load_start, self.dbname, self.user))
        busy, total, new, used = cur.fetchone()
        self.max_busy = max(self.max_busy, busy)
        self.max_total = max(self.max_total, total)
        self.max_new = max(self.max_new, new)
        self.max_used = max(self.max_used, used)
        self.samples += 1

    def run(self):
        try:
            with self.conn.cursor() as cur:
                while not self.stop_ev.is_set():
                    self.sample(cur)
                    self.stop_ev.wait(0.02)
                self.sample(cur)  # once more after the load: every backend it used
        except Exception as e:  # reported by the test
            self.error = repr(e)
        finally:
            self.conn.close()

    def stop(self):
        self.stop_ev.set()
        self.join(timeout=10)


class MetricsSampler(threading.Thread):
    def __init__(self, base_url):
        super().__init__(daemon=True)
        self.base_url = base_url
        self.stop_ev = threading.Event()
        self.max_waiting = 0.0
        self.max_active = 0.0
        self.samples = 0

    def run(self):
        s = requests.Session()
        try:
            while not self.stop_ev.is_set():
                try:
                    m = Metrics(s.get(self.base_url + "/metrics", timeout=10).text)
                    self.max_waiting = max(self.max_waiting, m.value("chatd_db_pool_waiting"))
                    self.max_active = max(self.max_active, m.value("chatd_db_pool_active"))
                    self.samples += 1
                except requests.RequestException:
                    pass
                self.stop_ev.wait(0.02)
        finally:
            s.close()

    def stop(self):
        self.stop_ev.set()
        self.join(timeout=15)


def pg_now(db):
    """The database server's clock and the chat database's name."""
    with db.cursor() as cur:
        cur.execute("SELECT clock_timestamp(), current_database()")
        return cur.fetchone()


@pytest.mark.parametrize("workers", [1, 2])
def test_two_thousand_clients_fold_onto_the_pool(chatd_factory, db, stack, workers):
    raise_nofile()
    since, dbname = pg_now(db)
    # The queue waits here are the load's, not PgBouncer's: no failover to the direct
    # path, whose connections would count as backends beyond the pool (they did when
    # PgBouncer's own pool was cold, e.g. after test_faults.py restarted PostgreSQL).
    inst = chatd_factory(env={"CHATD_DB_POOL_SIZE": str(POOL), "CACHE_BYPASS": "true",
                              "ENABLE_REDIS_CACHE": "false", "CHATD_DB_QUEUE_TIMEOUT_MS": "60000",
                              "CHATD_FAILOVER_QUEUE_WAIT_MS": "0"},
                         workers=workers)
    x = Api(inst.base_url)
    a = x.signup()
    conv = x.create_conversation(a["token"])

    def seed(i):
        y = Api(inst.base_url)
        try:
            return y.send(a["token"], conv["id"], f"seed {i}")["id"]
        finally:
            y.close()

    with ThreadPoolExecutor(8) as ex:
        ids = list(ex.map(seed, range(200)))
    newest = max(ids)
    expect_page = sorted(ids, reverse=True)[:50]

    m0 = Metrics(inst.metrics())
    assert not m0.errors, m0.errors[:5]
    count0 = m0.value("chatd_db_tx_queue_wait_seconds_count")
    sum0 = m0.value("chatd_db_tx_queue_wait_seconds_sum")
    buckets0 = dict(m0.buckets("chatd_db_tx_queue_wait_seconds"))

    socks = mass_connect(inst.host, inst.port, CLIENTS, in_flight=512, timeout=60)
    pg = PgSampler(stack.pg_admin_dsn, dbname, chat_user(stack), since)
    ms = MetricsSampler(inst.base_url)
    try:
        # Every client is connected (accepted by the server) before any sends.
        wait_for(lambda: Metrics(inst.metrics()).value("chatd_connections_open", {"kind": "http"}) >= CLIENTS,
                 30, interval=0.1, what=f"{CLIENTS} open connections")
        pg.start()
        ms.start()
        # Each asks for the newest page under its own key (a before_id past the newest
        # message), so that coalescing leaves every one of them a transaction of its own.
        reqs = [http_req("GET", f"/api/v1/conversations/{conv['id']}/messages?before_id={newest + 1 + i}",
                         token=a["token"]) for i in range(CLIENTS)]
        t0 = time.monotonic()
        results = mass_exchange(socks, lambda i: reqs[i], timeout=90)
        elapsed = time.monotonic() - t0
    finally:
        ms.stop()
        pg.stop()
        for s in socks:
            s.close()
        x.close()

    bad = []
    for i, (buf, eof) in enumerate(results):
        rs, _ = parse_responses(buf)
        if not rs:
            bad.append((i, "no response", eof, buf[:100]))
            continue
        r = rs[0]
        if r.status != 200:
            bad.append((i, r.status, r.body[:200]))
            continue
        b = r.json()
        if [m["id"] for m in b["messages"]] != expect_page or b["messages"][0]["id"] != newest:
            bad.append((i, "wrong page", [m["id"] for m in b["messages"]][:3]))
    assert not bad, f"{len(bad)} of {CLIENTS} clients got a wrong answer, e.g. {bad[:5]}"

    m1 = Metrics(inst.metrics())
    count1 = m1.value("chatd_db_tx_queue_wait_seconds_count")
    sum1 = m1.value("chatd_db_tx_queue_wait_seconds_sum")
    buckets1 = m1.buckets("chatd_db_tx_queue_wait_seconds")
    print(f"\n{CLIENTS} clients, workers={workers}: {elapsed:.2f}s; PG backends used={pg.max_used}, max busy={pg.max_busy} "
          f"total={pg.max_total} new={pg.max_new} ({pg.samples} samples); max pool_waiting={ms.max_waiting} "
          f"max pool_active={ms.max_active} ({ms.samples} samples); queue waits {count1 - count0:.0f}, "
          f"sum {sum1 - sum0:.3f}s")

    assert pg.error is None, pg.error
    assert pg.samples >= 5, "pg_stat_activity sampler barely ran"
    assert pg.max_busy <= POOL, f"max busy backends {pg.max_busy}, pool is {POOL}"
    assert 0 < pg.max_used <= POOL, f"{pg.max_used} backends ran statements during the load, pool is {POOL}"
    assert pg.max_new <= POOL, f"{pg.max_new} backends opened since chatd started, pool is {POOL}"
    assert ms.max_active <= POOL

    assert count1 - count0 >= CLIENTS, f"queue wait count grew by {count1 - count0}, want >= {CLIENTS}"
    assert sum1 - sum0 > 0, "no time spent waiting in the queue"
    smallest = buckets1[0][0]
    above_smallest = (count1 - buckets1[0][1]) - (count0 - buckets0.get(smallest, 0.0))
    assert ms.max_waiting > 0 or above_smallest > 0, (
        "no sign of queueing: chatd_db_pool_waiting never > 0 and no wait above the smallest bucket")


def test_queue_deadline_answers_503(chatd_factory, db, stack):
    inst = chatd_factory(env={"CHATD_DB_POOL_SIZE": "1", "CHATD_DB_QUEUE_TIMEOUT_MS": "1000",
                              "CACHE_BYPASS": "true", "ENABLE_REDIS_CACHE": "false"}, workers=1)
    x = Api(inst.base_url)
    a = x.signup()
    conv = x.create_conversation(a["token"])
    m = x.send(a["token"], conv["id"], "only")
    watcher = psycopg2.connect(stack.pg_admin_dsn)
    watcher.autocommit = True
    result = {}

    def request_a():
        y = Api(inst.base_url, timeout=30)
        try:
            r = y.history_raw(a["token"], conv["id"])
            result["status"] = r.status_code
            result["body"] = r.json() if r.content else None
        except Exception as e:  # reported below
            result["error"] = repr(e)
        finally:
            y.close()

    ta = threading.Thread(target=request_a)
    locked = False
    try:
        with db.cursor() as cur:
            cur.execute("SET lock_timeout = '10s'")
            cur.execute("BEGIN")
            cur.execute("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
            locked = True
        ta.start()
        wait_for(lambda: lock_waiters(watcher, chat_user(stack)) > 0, 10,
                 what="request A to hold the only pool connection, blocked on the lock")

        t0 = time.monotonic()
        rb = x.history_raw(a["token"], conv["id"])
        waited = time.monotonic() - t0
        assert_error(rb, 503, "unavailable")
        assert_retry_after(rb)
        assert 0.9 <= waited <= 3.5, f"503 after {waited:.2f}s with a 1 s queue timeout"
        assert ta.is_alive(), "request A finished while the table was locked"

        with db.cursor() as cur:
            cur.execute("ROLLBACK")
            locked = False
        ta.join(timeout=15)
        assert not ta.is_alive(), "request A did not finish after the lock was released"
        assert result.get("status") == 200, result
        assert result["body"]["messages"][0]["id"] == m["id"]

        rc = x.history_raw(a["token"], conv["id"])
        assert json_body(rc, 200)["messages"][0]["id"] == m["id"]
    finally:
        if locked:
            with db.cursor() as cur:
                cur.execute("ROLLBACK")
        ta.join(timeout=15)
        watcher.close()
        x.close()


def test_clients_leaving_mid_request(chatd_factory, db, stack):
    """Clients that hang up while their request holds or waits for the only connection
    do not wedge the pool: the next client is served."""
    inst = chatd_factory(env={"CHATD_DB_POOL_SIZE": "1", "CHATD_DB_QUEUE_TIMEOUT_MS": "20000",
                              "CACHE_BYPASS": "true", "ENABLE_REDIS_CACHE": "false"}, workers=1)
    x = Api(inst.base_url, timeout=20)
    a = x.signup()
    conv = x.create_conversation(a["token"])
    m = x.send(a["token"], conv["id"], "still here")
    watcher = psycopg2.connect(stack.pg_admin_dsn)
    watcher.autocommit = True
    # Distinct keys (before_id past the newest message): each waits for the pool, not
    # for another's load.
    reqs = [http_req("GET", f"/api/v1/conversations/{conv['id']}/messages?before_id={m['id'] + 1 + i}",
                     token=a["token"]) for i in range(20)]
    socks = []
    locked = False
    try:
        with db.cursor() as cur:
            cur.execute("SET lock_timeout = '10s'")
            cur.execute("BEGIN")
            cur.execute("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
            locked = True
        for req in reqs:
            s = socket.create_connection((inst.host, inst.port), timeout=5)
            s.sendall(req)
            socks.append(s)
        wait_for(lambda: lock_waiters(watcher, chat_user(stack)) > 0, 10, what="a request blocked on the lock")
        wait_for(lambda: Metrics(inst.metrics()).value("chatd_db_pool_waiting") > 0, 10, interval=0.05,
                 what="requests queued behind it")
        # Everyone hangs up (RST), the one in the database and the ones queued.
        for s in socks:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        socks = []
        with db.cursor() as cur:
            cur.execute("ROLLBACK")
            locked = False
        wait_for(lambda: (lambda mm: mm.value("chatd_db_pool_waiting") == 0
                          and mm.value("chatd_db_pool_active") == 0)(Metrics(inst.metrics())),
                 20, interval=0.05, what="the pool to drain after the clients left")
        for _ in range(3):
            assert x.history(a["token"], conv["id"])["messages"][0]["id"] == m["id"]
        assert x.req("GET", "/healthz").status_code == 200
    finally:
        for s in socks:
            s.close()
        if locked:
            with db.cursor() as cur:
                cur.execute("ROLLBACK")
        watcher.close()
        x.close()


def test_two_thousand_clients_hanging_up(chatd_factory):
    """2,000 requests whose clients reset the connection right after sending: the server
    stays up, the pool drains, and serves the next client."""
    raise_nofile()
    inst = chatd_factory(env={"CHATD_DB_POOL_SIZE": str(POOL), "CACHE_BYPASS": "true",
                              "ENABLE_REDIS_CACHE": "false"}, workers=1)
    x = Api(inst.base_url, timeout=20)
    try:
        a = x.signup()
        conv = x.create_conversation(a["token"])
        m = x.send(a["token"], conv["id"], "hi")
        socks = mass_connect(inst.host, inst.port, CLIENTS, in_flight=512, timeout=60)
        req = http_req("GET", f"/api/v1/conversations/{conv['id']}/messages", token=a["token"])
        try:
            for s in socks:
                try:
                    s.send(req)
                except OSError:
                    pass
        finally:
            for s in socks:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()

        def drained():
            mm = Metrics(inst.metrics())
            return (mm.value("chatd_db_pool_waiting") == 0 and mm.value("chatd_db_pool_active") == 0
                    and mm.value("chatd_connections_open", {"kind": "http"}) <= 2)

        wait_for(drained, 30, interval=0.1, what="the pool and connections to drain")
        assert x.history(a["token"], conv["id"])["messages"][0]["id"] == m["id"]
    finally:
        x.close()
