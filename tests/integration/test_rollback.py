"""The rollback done by chatd itself, under load: PgBouncer stops, chatd moves to
DATABASE_URL_DIRECT within 5 s and keeps answering; PgBouncer comes back, chatd
returns to it. Every acknowledged write is in the database exactly once, and no
request fails (the count of failed requests is reported in the assertion).

The PgBouncer here is a private one (its own port, pid file and socket
directory, the test stack's configuration and users) so stopping it touches no
other test. It is stopped with SIGTERM: PgBouncer's immediate shutdown, which
cuts transactions in flight, the case where a write's answer is lost.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse

import pytest

from chatlib import Api, Metrics, TcpProxy, wait_for
from conftest import free_port, with_port

LOAD_THREADS = 6
PHASE_WRITES = 300         # acknowledged sends wanted in each phase
DIRECT_WITHIN_S = 5.0      # the bound for the switch
BACK_WITHIN_S = 30.0       # hold time (5 s) plus probes and slack


class PrivatePgBouncer:
    """A second PgBouncer on the test stack's PostgreSQL, started and stopped at will."""

    def __init__(self, stack, port):
        self.port = port
        self.dir = stack.stack_dir / "rollback-pgbouncer"
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.ini = self.dir / "pgbouncer.ini"
        self.pidfile = self.dir / "pgbouncer.pid"
        src = (stack.stack_dir / "pgbouncer" / "pgbouncer.ini").read_text()
        repl = {"listen_port": str(port), "unix_socket_dir": str(self.dir),
                "logfile": str(self.dir / "pgbouncer.log"), "pidfile": str(self.pidfile)}
        out = []
        for line in src.splitlines():
            m = re.match(r"\s*([a-z_]+)\s*=", line)
            out.append(f"{m.group(1)} = {repl[m.group(1)]}" if m and m.group(1) in repl else line)
        self.ini.write_text("\n".join(out) + "\n")
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.dir, "postgres", "postgres")
            shutil.chown(self.ini, "postgres", "postgres")

    def start(self):
        cmd = ["/usr/sbin/pgbouncer", "-q", "-d", str(self.ini)]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", "sh", "-c",
                   'ulimit -n 4096; exec "$@"', "sh"] + cmd
        subprocess.run(cmd, check=True, cwd="/", timeout=30)
        wait_for(self.pid, 10, what="the private PgBouncer's pid file")

    def pid(self):
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if os.path.exists(f"/proc/{pid}") else None

    def stop(self):
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)  # immediate shutdown: sessions cut mid-transaction
        wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 10, what="PgBouncer to exit")


@pytest.fixture
def private_pgbouncer(stack):
    # a free port: a fixed offset from the stack's may be another pass's stack
    pgb = PrivatePgBouncer(stack, free_port())
    pgb.start()
    yield pgb
    pgb.stop()


class Load:
    """LOAD_THREADS clients, each sending to and reading its own conversation,
    as fast as answers come, until stopped. Keeps every acknowledged send."""

    def __init__(self, base_url):
        self.base_url = base_url
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acked = {}      # body -> (conversation id, message id)
        self.failures = []   # (what, status or exception)
        self.requests = 0
        self.setup = []
        api = Api(base_url, timeout=30)
        for i in range(LOAD_THREADS):
            u = api.signup()
            c = api.create_conversation(u["token"], title=f"rollback {i}")
            self.setup.append((u["token"], c["id"]))
        api.close()
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True)
                        for i in range(LOAD_THREADS)]

    def acked_count(self):
        with self.lock:
            return len(self.acked)

    def run(self, i):
        token, cid = self.setup[i]
        api = Api(self.base_url, timeout=30)
        n = 0
        try:
            while not self.stop.is_set():
                n += 1
                body = f"rollback t{i} n{n}"
                cmid = f"t{i}-n{n}" if n % 2 else None  # half with a client_msg_id
                what = "send"
                try:
                    r = api.send_raw(token, cid, body, client_msg_id=cmid)
                    if r.status_code == 201:
                        with self.lock:
                            self.acked[body] = (cid, r.json()["id"])
                    else:
                        self.fail(what, r.status_code)
                    what = "history" if n % 3 else "count"
                    r = (api.history_raw(token, cid, limit=5) if what == "history"
                         else api.count_raw(token, cid))
                    if r.status_code != 200:
                        self.fail(what, r.status_code)
                    if n % 10 == 0:
                        what = "signup"
                        r = api.req("POST", "/api/v1/users",
                                    json={"name": f"rollback-{os.getpid()}-{i}-{n}"})
                        if r.status_code != 201:
                            self.fail(what, r.status_code)
                        what = "create"
                        r = api.req("POST", "/api/v1/conversations", token=token,
                                    json={"title": f"rollback {i} {n}", "member_ids": []})
                        if r.status_code != 201:
                            self.fail(what, r.status_code)
                except Exception as e:  # a transport failure is a failed request too
                    self.fail(what, repr(e))
                with self.lock:
                    self.requests += 1
        finally:
            api.close()

    def fail(self, what, why):
        with self.lock:
            self.failures.append((what, why))

    def wait_more(self, n, timeout, what):
        start = self.acked_count()
        wait_for(lambda: self.acked_count() >= start + n, timeout, what=what)


def _paths(inst):
    m = Metrics(inst.metrics())
    return m.value("chatd_db_path", {"path": "pooler"}), m.value("chatd_db_path", {"path": "direct"})


def test_pgbouncer_stopped_and_restarted_under_load(chatd_factory, stack, private_pgbouncer, db):
    pgb = private_pgbouncer
    inst = chatd_factory(env={
        "DATABASE_URL": with_port(stack.database_url, pgb.port),
        "DATABASE_URL_DIRECT": stack.database_url_direct,
        "CACHE_BYPASS": "true",  # every read goes to the database path
    }, workers=2)
    assert _paths(inst) == (1, 0)
    load = Load(inst.base_url)
    for t in load.threads:
        t.start()
    try:
        load.wait_more(PHASE_WRITES, 60, "writes through PgBouncer")

        assert _paths(inst) == (1, 0), "left the pooler before it was stopped"
        stopped = time.monotonic()
        pgb.stop()
        # Every worker on the direct path: pooler gauge 0, direct 1.
        wait_for(lambda: _paths(inst) == (0, 1), 15, what="all workers on the direct path")
        switched_in = time.monotonic() - stopped
        assert switched_in <= DIRECT_WITHIN_S, f"direct path after {switched_in:.2f} s"
        load.wait_more(PHASE_WRITES, 60, "writes on the direct path")

        pgb.start()
        wait_for(lambda: _paths(inst) == (1, 0), BACK_WITHIN_S, what="all workers back on the pooler")
        load.wait_more(PHASE_WRITES, 60, "writes through PgBouncer again")
    finally:
        load.stop.set()
        for t in load.threads:
            t.join(60)

    print(f"\nrollback: {load.requests} request rounds, {len(load.acked)} acknowledged sends, "
          f"{len(load.failures)} failed requests, direct path {switched_in:.2f} s after the stop")
    assert load.failures == [], f"{len(load.failures)} failed requests: {load.failures[:10]}"

    # Every acknowledged send is stored, once, with its id.
    cids = [cid for _, cid in load.setup]
    with db.cursor() as cur:
        cur.execute("SELECT body, conversation_id, id FROM messages WHERE conversation_id = ANY(%s)",
                    (cids,))
        rows = cur.fetchall()
        stored = {}
        for body, cid, mid in rows:
            stored.setdefault(body, []).append((cid, mid))
        missing = [b for b in load.acked if b not in stored]
        assert not missing, f"{len(missing)} acknowledged sends missing: {missing[:5]}"
        twice = {b: v for b, v in stored.items() if len(v) > 1}
        assert not twice, f"sends stored twice: {list(twice.items())[:5]}"
        wrong = [b for b, v in load.acked.items() if stored[b][0] != v]
        assert not wrong, f"acknowledged ids differ from the stored ones: {wrong[:5]}"
        # The kept count agrees with the rows.
        cur.execute("SELECT c.id, c.message_count, (SELECT count(*) FROM messages m "
                    "WHERE m.conversation_id = c.id) FROM conversations c WHERE c.id = ANY(%s)",
                    (cids,))
        for cid, kept, real in cur.fetchall():
            assert kept == real, f"conversation {cid}: message_count {kept}, rows {real}"

    m = Metrics(inst.metrics())
    # Why it left (refused connections, or the error ratio of the cut) is logged and counted.
    left = sum(m.value("chatd_db_path_switches_total", {"to": "direct", "reason": r}) or 0
               for r in ("unreachable", "error_ratio", "queue_wait"))
    assert left >= 2, m.series("chatd_db_path_switches_total")  # both workers
    assert m.value("chatd_db_path_switches_total", {"to": "pooler", "reason": "healthy"}) >= 2
    assert inst.log_contains("event=db_path_switch")


# --- a write whose answer is lost is sent again, and done once -----------------------


class AnswerLosingProxy(TcpProxy):
    """A TCP proxy in front of the database that, once armed with a byte string,
    lets the next query containing it through and then cuts that connection as
    soon as the server starts answering: the transaction has run (PostgreSQL
    flushes its answer at the Sync, after the commit) but chatd never hears
    how it ended."""

    def __init__(self, host, port):
        self.trigger = None
        self.fired = threading.Event()
        super().__init__(host, port)

    def arm(self, trigger):
        self.fired.clear()
        self.trigger = trigger

    def _accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(self.target, timeout=5)
                u.settimeout(None)
            except OSError:
                c.close()
                continue
            with self.lock:
                self.conns += [c, u]
            doomed = threading.Event()
            threading.Thread(target=self._up, args=(c, u, doomed), daemon=True).start()
            threading.Thread(target=self._down, args=(u, c, doomed), daemon=True).start()

    def _up(self, src, dst, doomed):
        try:
            while True:
                d = src.recv(65536)
                if not d:
                    break
                if self.trigger and self.trigger in d:
                    self.trigger = None
                    doomed.set()
                dst.sendall(d)
        except OSError:
            pass
        finally:
            self._cut(src, dst)

    def _down(self, src, dst, doomed):
        try:
            while True:
                d = src.recv(65536)
                if not d:
                    break
                if doomed.is_set():
                    self.fired.set()
                    break  # the answer is dropped
                dst.sendall(d)
        except OSError:
            pass
        finally:
            self._cut(src, dst)

    @staticmethod
    def _cut(a, b):
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture
def lossy(chatd_factory, stack):
    target = urllib.parse.urlsplit(stack.chatd_database_url)
    proxy = AnswerLosingProxy(target.hostname, target.port)
    inst = chatd_factory(env={"DATABASE_URL": with_port(stack.chatd_database_url, proxy.port),
                              "CACHE_BYPASS": "true"})
    api = Api(inst.base_url, timeout=30)
    yield proxy, inst, api
    api.close()
    proxy.stop()


def test_send_with_lost_answer_is_stored_once(lossy, db):
    proxy, inst, api = lossy
    a = api.signup()
    c = api.create_conversation(a["token"])
    for cmid in (None, "lost-answer-1"):
        body = f"answer lost {cmid}"
        proxy.arm(b"chat_send_insert(")  # the statement that inserts the message
        r = api.send_raw(a["token"], c["id"], body, client_msg_id=cmid)
        assert proxy.fired.is_set(), "the proxy never cut an answer"
        assert r.status_code == 201, (r.status_code, r.text[:300])
        m = r.json()
        assert m["body"] == body and m["client_msg_id"] == cmid
        with db.cursor() as cur:
            cur.execute("SELECT id FROM messages WHERE conversation_id = %s AND body = %s",
                        (c["id"], body))
            assert [row[0] for row in cur.fetchall()] == [m["id"]]
    assert api.count(a["token"], c["id"]) == 2
    assert inst.log_contains("event=db_tx_retry")


def test_conversation_create_with_lost_answer_is_stored_once(lossy, db):
    proxy, inst, api = lossy
    a = api.signup()
    b = api.signup()
    title = f"lost answer {os.getpid()} {time.monotonic_ns()}"
    proxy.arm(b"INSERT INTO conversations")
    r = api.req("POST", "/api/v1/conversations", token=a["token"],
                json={"title": title, "member_ids": [b["id"]]})
    assert proxy.fired.is_set(), "the proxy never cut an answer"
    assert r.status_code == 201, (r.status_code, r.text[:300])
    conv = r.json()
    assert conv["title"] == title and conv["member_count"] == 2
    with db.cursor() as cur:
        cur.execute("SELECT id FROM conversations WHERE title = %s", (title,))
        assert [row[0] for row in cur.fetchall()] == [conv["id"]]
        cur.execute("SELECT count(*) FROM members WHERE conversation_id = %s", (conv["id"],))
        assert cur.fetchone()[0] == 2


def test_signup_with_lost_answer_is_not_a_conflict(lossy, db):
    proxy, inst, api = lossy
    name = f"lost-{os.getpid()}-{time.monotonic_ns()}"
    proxy.arm(b"INSERT INTO users")
    r = api.req("POST", "/api/v1/users", json={"name": name})
    assert proxy.fired.is_set(), "the proxy never cut an answer"
    assert r.status_code == 201, (r.status_code, r.text[:300])
    u = r.json()
    assert u["name"] == name
    # The token returned is the one stored: it authenticates as this user.
    me = api.get_user(u["token"], u["id"])
    assert me.status_code == 200 and me.json()["id"] == u["id"], (me.status_code, me.text[:200])
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM users WHERE name = %s", (name,))
        assert cur.fetchone()[0] == 1
    # And a real second sign-up with the name is still a conflict.
    assert api.req("POST", "/api/v1/users", json={"name": name}).status_code == 409


# --- the thresholds: queue wait and error ratio over the window -----------------------


def _threshold_chatd(chatd_factory, stack, extra):
    env = {"DATABASE_URL": stack.database_url, "DATABASE_URL_DIRECT": stack.database_url_direct,
           "CHATD_DB_POOL_SIZE": "1", "CHATD_FAILOVER_WINDOW_MS": "3000",
           "CHATD_FAILOVER_HOLD_MS": "1000", "CACHE_BYPASS": "true"}
    env.update(extra)
    return chatd_factory(env=env, workers=1)


def _burst_behind_lock(inst, db, n=30, until_failed=False):
    """n concurrent history reads queue behind one connection held up by a table lock,
    released 0.4 s after they all queued, or (until_failed) once all but one failed."""
    api = Api(inst.base_url, timeout=30)
    a = api.signup()
    c = api.create_conversation(a["token"])
    api.close()
    results = []
    lock = threading.Lock()

    def one(i):
        x = Api(inst.base_url, timeout=30)
        try:
            # A key of its own (a before_id past every message), so that coalescing
            # leaves each read a transaction of its own to queue.
            r = x.history_raw(a["token"], c["id"], before_id=1_000_000_000 + i)
            with lock:
                results.append(r.status_code)
        finally:
            x.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    with db.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("LOCK TABLE members IN ACCESS EXCLUSIVE MODE")
        for t in threads:
            t.start()
        if until_failed:
            wait_for(lambda: len(results) >= n - 1, 20, what="the queued requests to fail")
        else:
            # every request has arrived and waits: one on the lock, the rest in the queue
            wait_for(lambda: (Metrics(inst.metrics()).value("chatd_db_pool_waiting") or 0) >= n - 1,
                     20, what="the requests to queue")
            time.sleep(0.4)  # the fault itself: the queue is held past the 200 ms threshold
        cur.execute("COMMIT")
    for t in threads:
        t.join(30)
    return a, c, results


def test_queue_wait_over_threshold_moves_to_direct_and_back(chatd_factory, stack, db):
    inst = _threshold_chatd(chatd_factory, stack, {"CHATD_FAILOVER_QUEUE_WAIT_MS": "200"})
    a, c, results = _burst_behind_lock(inst, db)
    assert results == [200] * len(results)
    wait_for(lambda: _paths(inst) == (0, 1), 10, what="the direct path")
    m = Metrics(inst.metrics())
    assert m.value("chatd_db_path_switches_total", {"to": "direct", "reason": "queue_wait"}) == 1
    assert inst.log_contains("reason=queue_wait")
    api = Api(inst.base_url, timeout=30)
    try:
        assert api.send_raw(a["token"], c["id"], "on the direct path").status_code == 201
        # probes answer quickly again: back on the pooler after the hold time
        wait_for(lambda: _paths(inst) == (1, 0), 20, what="the pooler path again")
        assert api.send_raw(a["token"], c["id"], "on the pooler again").status_code == 201
    finally:
        api.close()


def test_error_ratio_over_threshold_moves_to_direct(chatd_factory, stack, db):
    # A queue deadline of 100 ms turns the held-up requests into errors (503).
    inst = _threshold_chatd(chatd_factory, stack, {"CHATD_FAILOVER_QUEUE_WAIT_MS": "0",
                                                   "CHATD_DB_QUEUE_TIMEOUT_MS": "100"})
    a, c, results = _burst_behind_lock(inst, db, until_failed=True)
    assert results.count(503) >= 20, results
    wait_for(lambda: _paths(inst) == (0, 1), 10, what="the direct path")
    m = Metrics(inst.metrics())
    assert m.value("chatd_db_path_switches_total", {"to": "direct", "reason": "error_ratio"}) == 1
    assert inst.log_contains("reason=error_ratio")
