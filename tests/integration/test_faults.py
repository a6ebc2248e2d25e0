"""The fault matrix (issue 12): a steady load on one chatd — REST sends with and
without client_msg_id, edits, history and count reads, and WebSocket clients
that receive every event and send through the stream — while one fault at a
time hits a server chatd depends on:

  case                  fault                                      allowed failures
  pg_fast_restart       pg_ctl restart -m fast                     none
  pg_kill9              kill -9 of the postmaster, then a start     only requests that
                        (crash recovery)                           outlived CHATD_DB_HOLD_MS
  pgbouncer_kill9       kill -9 of PgBouncer, then a start         none
  redis_kill9           kill -9 of Redis, then a start (empty)     none
  redis_sigstop         SIGSTOP of Redis until chatd gives up on   none
                        it, then SIGCONT
  network_cut           a TCP proxy in front of PostgreSQL drops   none for a cut within
                        every connection and refuses new ones:     the hold (3 s here); past
                        1 s, then 5 s                              it, only requests that
                                                                   outlived the hold

After each case: every acknowledged send is stored exactly once, with the id
it was acknowledged with; no send, acknowledged or not, is stored twice;
acknowledged edits are stored; the conversation's counts and event log agree
with its rows; reads after the fault (history, count, events) reflect every
acknowledged write; every WebSocket client received every event of its
conversation in rev order with no gap and no repeat and an answer to every
send it made; and the recovery time is printed (`pytest -s`).

Servers. PostgreSQL is the shared test stack's: the cases restart and kill
it, and wait, in a finally, until the stack answers again (PostgreSQL,
PgBouncer, Redis) before they return. PgBouncer and Redis are private ones
(test_rollback.py's and test_cache.py's helpers), so killing them touches no
other test. In the pooler pass (CHATD_TEST_DB_PATH=pooler) chatd runs as
`make run` runs it: DATABASE_URL the stack's PgBouncer, DATABASE_URL_DIRECT
PostgreSQL; in the direct pass both are PostgreSQL, so the PostgreSQL cases
exercise the hold without any failover. The PgBouncer case does not apply
to a chatd without PgBouncer: in both passes it runs a chatd configured for
the pooler (a private PgBouncer, PostgreSQL as the direct path), so the
sanitizer build also goes through the failover. The network cut cuts what
chatd's database traffic crosses to reach PostgreSQL: in the pooler pass a
private PgBouncer pointed at the proxy (and the direct path through it too),
in the direct pass chatd's own connections.
"""
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from pathlib import Path

import psycopg2
import pytest
import requests

from chatlib import Api, Metrics, TcpProxy, wait_for
from conftest import _stack_answers, _stack_script, free_port, with_port
from test_cache import PrivateRedis
from test_rollback import PrivatePgBouncer
from wsclient import WS, Closed

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
HOLD_S = 10.0            # CHATD_DB_HOLD_MS of the chatd of most cases (its default)
CUT_HOLD_S = 3.0         # the network cut's chatd holds 3 s, to see a cut outlive it
SENDERS = 3              # REST clients, each with its conversation and WebSocket client
WARM_ACKS = 15           # acknowledged sends before the fault
AFTER_ACKS = 3           # acknowledged sends per client, started after the fault, to end a case
PACE_S = 0.01            # pause between two rounds of a client: a steady load, not a flood


# --- the load -----------------------------------------------------------------------


class Failure:
    def __init__(self, what, why, start, end):
        self.what, self.why, self.start, self.end = what, why, start, end

    @property
    def took(self):
        return self.end - self.start

    def __repr__(self):
        return f"{self.what}: {self.why} after {self.took:.2f}s"


class Client:
    """One user with a conversation of their own: a REST thread that sends,
    edits and reads, and a WebSocket that receives the conversation's events
    and sends through the stream."""

    def __init__(self, load, i, inst):
        self.load, self.i = load, i
        api = Api(inst.base_url, timeout=60)
        u = api.signup()
        self.token, self.uid = u["token"], u["id"]
        self.cid = api.create_conversation(self.token, title=f"faults {load.tag} {i}")["id"]
        api.close()
        self.ws = WS.open(inst.host, inst.port, self.token)
        self.events = []        # (rev, type, message id) as received
        self.pending = {}       # client_msg_id -> (body, sent at): stream sends unanswered
        self.ws_closed = None
        self.ok_sends = []      # (start, end) of acknowledged sends (REST and stream)

    # REST: send, sometimes edit, then read
    def rest(self, base_url):
        load = self.load
        api = Api(base_url, timeout=60)
        n = 0
        last_id = 0
        try:
            while not load.stop.wait(PACE_S):
                n += 1
                body = f"{load.tag} r{self.i} n{n}"
                cmid = f"{load.tag}-r{self.i}-n{n}" if n % 4 else None
                what = "send"
                t0 = time.monotonic()
                try:
                    r = api.send_raw(self.token, self.cid, body, client_msg_id=cmid)
                    t1 = time.monotonic()
                    if r.status_code != 201:
                        load.fail(what, r, t0, t1)
                        continue
                    m = r.json()
                    load.ack(body, self.cid, m["id"])
                    self.ok_sends.append((t0, t1))
                    last_id = m["id"]
                    if n % 3 == 0:
                        what = "edit"
                        edited = body + " edited"
                        load.edit_tried(m["id"], edited)
                        t0 = time.monotonic()
                        r = api.edit_raw(self.token, self.cid, m["id"], edited)
                        if r.status_code == 200:
                            load.edit_acked(m["id"], edited)
                        else:
                            load.fail(what, r, t0, time.monotonic())
                    what = "history" if n % 2 else "count"
                    t0 = time.monotonic()
                    if what == "history":
                        r = api.history_raw(self.token, self.cid, limit=5)
                        if r.status_code == 200:
                            msgs = r.json()["messages"]
                            if not msgs or msgs[0]["id"] < last_id:
                                load.stale(f"history of {self.cid}: newest "
                                           f"{msgs[0]['id'] if msgs else None} < {last_id}")
                    else:
                        r = api.count_raw(self.token, self.cid)
                    if r.status_code != 200:
                        load.fail(what, r, t0, time.monotonic())
                except Exception as e:  # a transport failure is a failed request too
                    load.fail(what, repr(e), t0, time.monotonic())
        finally:
            api.close()

    # WebSocket: send a frame now and then (at most 2 unanswered)
    def ws_send(self):
        load = self.load
        n = 0
        while not load.stop.is_set() and self.ws_closed is None:
            with load.lock:
                busy = len(self.pending) >= 2
            if not busy:
                n += 1
                body = f"{load.tag} w{self.i} n{n}"
                cmid = f"{load.tag}-w{self.i}-n{n}"
                with load.lock:
                    self.pending[cmid] = (body, time.monotonic())
                try:
                    self.ws.send_json({"type": "send", "conversation_id": self.cid,
                                       "body": body, "client_msg_id": cmid})
                except OSError as e:
                    self.ws_closed = repr(e)
                    return
            load.stop.wait(0.05)

    def ws_read(self):
        load = self.load
        while not load.ws_stop.is_set():
            try:
                f = self.ws.recv_json(timeout=0.2)
            except TimeoutError:
                continue
            except (Closed, OSError, AssertionError) as e:
                self.ws_closed = repr(e)
                return
            t = f.get("type")
            if t in ("message", "message_edited", "message_deleted"):
                if f["conversation_id"] == self.cid:
                    self.events.append((f["rev"], t, f["message"]["id"]))
            elif t in ("ack", "error"):
                now = time.monotonic()
                with load.lock:
                    body, t0 = self.pending.pop(f.get("client_msg_id"), (None, now))
                if body is None:
                    load.stale(f"a stream answer to no send of ours: {f}")
                elif t == "ack":
                    load.ack(body, self.cid, f["message"]["id"])
                    self.ok_sends.append((t0, now))
                else:
                    load.fail("stream send", f["error"]["code"], t0, now)


class Load:
    def __init__(self, inst, tag):
        self.inst = inst
        self.tag = f"{tag}-{os.getpid()}-{int(time.time() * 1000) % 10**8}"
        self.stop = threading.Event()
        self.ws_stop = threading.Event()
        self.lock = threading.Lock()
        self.acked = {}          # body -> (conversation id, message id)
        self.edits = {}          # message id -> edited body (acknowledged)
        self.edits_tried = {}    # message id -> edited body (sent)
        self.failures = []
        self.stale_reads = []
        self.clients = [Client(self, i, inst) for i in range(SENDERS)]
        self.threads = []
        for c in self.clients:
            self.threads += [threading.Thread(target=c.rest, args=(inst.base_url,), daemon=True),
                             threading.Thread(target=c.ws_send, daemon=True)]
        self.readers = [threading.Thread(target=c.ws_read, daemon=True) for c in self.clients]

    def start(self):
        for t in self.readers + self.threads:
            t.start()

    def ack(self, body, cid, mid):
        with self.lock:
            self.acked[body] = (cid, mid)

    def edit_tried(self, mid, body):
        with self.lock:
            self.edits_tried[mid] = body

    def edit_acked(self, mid, body):
        with self.lock:
            self.edits[mid] = body

    def fail(self, what, r, start, end):
        why = r if isinstance(r, str) else f"{r.status_code} {r.text[:120]}"
        if not isinstance(r, str) and r.status_code == 503:
            if not r.headers.get("Retry-After"):
                why += " (no Retry-After)"
        with self.lock:
            self.failures.append(Failure(what, why, start, end))

    def stale(self, what):
        with self.lock:
            self.stale_reads.append(what)

    def acked_count(self):
        with self.lock:
            return len(self.acked)

    def wait_acked(self, n, timeout, what):
        start = self.acked_count()
        wait_for(lambda: self.acked_count() >= start + n, timeout, what=what)

    def recovered_by(self, since):
        """When every client had a send acknowledged that started after since, else None."""
        ends = []
        for c in self.clients:
            done = [e for s, e in list(c.ok_sends) if s >= since]
            if len(done) < AFTER_ACKS:
                return None
            ends.append(min(done))
        return max(ends)

    def finish(self):
        """Stops the senders, waits for every stream send to be answered, and for
        every client to have received every event of its conversation."""
        self.stop.set()
        for t in self.threads:
            t.join(90)
        wait_for(lambda: all(not c.pending or c.ws_closed for c in self.clients), 30,
                 what="answers to every stream send")

    def stop_readers(self):
        if self.ws_stop.is_set():
            return
        self.ws_stop.set()
        for t in self.readers:
            t.join(10)
        for c in self.clients:
            c.ws.close_socket()


def _norm(body):
    return body[: -len(" edited")] if body.endswith(" edited") else body


def check_after(load, stack, inst):
    """What must hold after a fault, whatever it was (see the module's docstring)."""
    cids = [c.cid for c in load.clients]
    conn = psycopg2.connect(stack.pg_admin_dsn, connect_timeout=10)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT id, conversation_id, body FROM messages WHERE conversation_id = ANY(%s)",
                    (cids,))
        rows = cur.fetchall()
        cur.execute("SELECT id, rev, message_count FROM conversations WHERE id = ANY(%s)", (cids,))
        convs = {cid: (rev, count) for cid, rev, count in cur.fetchall()}
        cur.execute("SELECT conversation_id, array_agg(rev ORDER BY rev) FROM events "
                    "WHERE conversation_id = ANY(%s) GROUP BY conversation_id", (cids,))
        event_revs = dict(cur.fetchall())
    conn.close()
    stored = {}
    by_id = {}
    for mid, cid, body in rows:
        stored.setdefault(_norm(body), []).append((cid, mid))
        by_id[mid] = body
    missing = [b for b in load.acked if b not in stored]
    assert not missing, f"{len(missing)} acknowledged sends missing: {missing[:5]}"
    twice = {b: v for b, v in stored.items() if len(v) > 1}
    assert not twice, f"sends stored more than once: {list(twice.items())[:5]}"
    wrong = [(b, v, stored[b][0]) for b, v in load.acked.items() if stored[b][0] != v]
    assert not wrong, f"acknowledged ids differ from the stored ones: {wrong[:5]}"
    lost_edits = [(mid, body, by_id.get(mid)) for mid, body in load.edits.items()
                  if by_id.get(mid) != body]
    assert not lost_edits, f"acknowledged edits not stored: {lost_edits[:5]}"
    odd = [(mid, by_id.get(mid)) for mid in by_id
           if by_id[mid].endswith(" edited") and mid not in load.edits_tried]
    assert not odd, f"edits nobody sent: {odd[:5]}"
    for cid in cids:
        rev, count = convs[cid]
        n = sum(1 for _, c, _ in rows if c == cid)
        assert count == n, f"conversation {cid}: message_count {count}, rows {n}"
        assert event_revs.get(cid, []) == list(range(1, rev + 1)), f"conversation {cid}: event revs"

    # Reads after the fault reflect every acknowledged write: they equal the database.
    api = Api(inst.base_url, timeout=60)
    try:
        for c in load.clients:
            rev, count = convs[c.cid]
            r = api.count_raw(c.token, c.cid)
            assert r.status_code == 200 and r.json()["count"] == count, (r.status_code, r.text)
            r = api.events_raw(c.token, c.cid, after_rev=max(0, rev - 5))
            assert r.status_code == 200 and r.json()["rev"] == rev, (r.status_code, r.text[:300])
            page = api.history(c.token, c.cid, limit=100)["messages"]
            newest = sorted(((mid, body) for mid, cid, body in rows if cid == c.cid),
                            reverse=True)[:100]
            assert [(m["id"], m["body"]) for m in page] == newest, f"history of {c.cid}"
    finally:
        api.close()

    # Every WebSocket client got every event of its conversation, in rev order, once,
    # and stayed connected.
    def delivered():
        return all(c.ws_closed or (c.events and c.events[-1][0] >= convs[c.cid][0])
                   for c in load.clients)

    wait_for(delivered, 15, what="every event on every WebSocket")
    load.stop_readers()
    for c in load.clients:
        assert c.ws_closed is None, f"client {c.i}: the stream closed: {c.ws_closed}"
        revs = [e[0] for e in c.events]
        assert revs == list(range(1, convs[c.cid][0] + 1)), \
            f"client {c.i}: revs {revs[:10]}…{revs[-10:]} of {convs[c.cid][0]}"
        assert not c.pending, f"client {c.i}: stream sends never answered: {list(c.pending)[:5]}"
    assert not load.stale_reads, f"stale reads: {load.stale_reads[:5]}"


def report(name, load, fault_at, back_at, recovered_at):
    longest = max((e - s for c in load.clients for s, e in c.ok_sends), default=0.0)
    print(f"\nfaults: {name}: {len(load.acked)} sends acknowledged, {len(load.edits)} edits, "
          f"{len(load.failures)} failed requests; server back {back_at - fault_at:.2f} s after "
          f"the fault, load recovered {recovered_at - back_at:.2f} s later; longest acknowledged "
          f"send {longest:.2f} s")
    for f in load.failures[:10]:
        print(f"faults: {name}:   failed {f!r}")


def run_case(name, inst, stack, fault, allowed=None):
    """The load, the fault (a function returning the time its server is back),
    recovery, then check_after. allowed(failure) says whether a failure is
    acceptable; none is by default."""
    load = Load(inst, name)
    load.start()
    try:
        try:
            load.wait_acked(WARM_ACKS, 60, "acknowledged sends before the fault")
            fault_at = time.monotonic()
            back_at = fault(load)
            recovered_at = wait_for(lambda: load.recovered_by(back_at), 60,
                                    what="every client acknowledged again after the fault")
        finally:
            load.finish()
        report(name, load, fault_at, back_at, recovered_at)
        bad = [f for f in load.failures if not (allowed and allowed(f))]
        assert not bad, f"{len(bad)} failed requests: {bad[:10]}"
        check_after(load, stack, inst)
    finally:
        load.stop_readers()
    return load


# --- the shared stack's PostgreSQL ------------------------------------------------------


def _as_server(args, timeout=120):
    """Runs a PostgreSQL command as the server's user (scripts/stack.sh's way)."""
    cmd = ["sh", "-c", 'ulimit -n 20000 2>/dev/null || ulimit -n 4096; exec "$@"', "sh"] + args
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--"] + cmd
    return subprocess.run(cmd, cwd="/", stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          stdin=subprocess.DEVNULL, text=True, timeout=timeout)


def _pg_dir(stack):
    return (stack.stack_dir / "pg").resolve()


def _pg_ctl(stack, *args):
    d = _pg_dir(stack)
    log = (stack.stack_dir / "log" / "postgres.log").resolve()
    res = _as_server([str(PG_BIN / "pg_ctl"), "-D", str(d), "-l", str(log), "-s", "-w",
                      "-t", "60", *args])
    assert res.returncode == 0, f"pg_ctl {' '.join(args)}: {res.stdout[-2000:]}"


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _children(pid):
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(p))
            except (OSError, ValueError, IndexError):
                pass
    return out


def _postmaster_pid(stack):
    return int((_pg_dir(stack) / "postmaster.pid").read_text().splitlines()[0])


def _pg_start_after_crash(stack, pid):
    """Starts PostgreSQL whose postmaster (pid) died: crash recovery. A dead
    postmaster not yet reaped (a zombie: its parent is init, which may take
    seconds or, in a container, never) still answers kill(pid, 0), which
    PostgreSQL and pg_ctl take for a live server: its lock files (the data
    directory's and the socket's) go first then."""
    # the options of its last start (port, socket directory, listen address)
    opts = shlex.split((_pg_dir(stack) / "postmaster.opts").read_text())[1:]
    if opts[:1] == ["-D"]:
        opts = opts[2:]
    if os.path.exists(f"/proc/{pid}"):
        locks = [_pg_dir(stack) / "postmaster.pid"]
        if "-k" in opts and "-p" in opts:
            sock_dir, port = opts[opts.index("-k") + 1], opts[opts.index("-p") + 1]
            locks.append(Path(sock_dir) / f".s.PGSQL.{port}.lock")
        for f in locks:
            f.unlink(missing_ok=True)
    _pg_ctl(stack, "-o", shlex.join(opts), "start")


def _pg_ready(stack):
    try:
        conn = psycopg2.connect(stack.pg_admin_dsn, connect_timeout=2)
        conn.close()
        return True
    except psycopg2.Error:
        return False


def _stack_back(stack):
    """Waits until PostgreSQL, PgBouncer and Redis of the shared stack answer;
    starts whatever is still down after 20 s (scripts/stack.sh start)."""
    try:
        wait_for(lambda: _stack_answers(stack.env), 20, interval=0.2, what="the test stack")
    except AssertionError:
        _stack_script("start")
        wait_for(lambda: _stack_answers(stack.env), 60, interval=0.2, what="the test stack")


@pytest.fixture
def shared_pg(stack):
    """The shared stack's PostgreSQL, which the case may stop or kill: back before teardown."""
    assert _pg_dir(stack).joinpath("PG_VERSION").exists(), _pg_dir(stack)
    try:
        yield stack
    finally:
        if not _pg_ready(stack):
            pid = None
            try:
                pid = _postmaster_pid(stack)
            except (OSError, ValueError, IndexError):
                pass
            if pid is None or not _alive(pid):
                try:
                    _pg_start_after_crash(stack, pid or -1)
                except AssertionError:
                    pass  # e.g. old backends still attached: scripts/stack.sh start, below
        _stack_back(stack)


def _chatd(chatd_factory, env=None):
    e = {"CHATD_RATE_SEND": "0", "CHATD_RATE_REQUEST": "0"}
    e.update(env or {})
    return chatd_factory(env=e, workers=2)


def test_pg_fast_restart(chatd_factory, shared_pg):
    stack = shared_pg
    inst = _chatd(chatd_factory)

    def fault(load):
        _pg_ctl(shared_pg, "-m", "fast", "restart")
        return time.monotonic()

    run_case("pg_fast_restart", inst, stack, fault)
    m = Metrics(inst.metrics())
    assert m.value("chatd_db_path_retries_total") > 0, "nothing was held and sent again"
    assert m.value("chatd_db_path_hold_expired_total") == 0
    assert m.value("chatd_db_path_held") == 0


def _hold_outlived(hold_s):
    """A failure the hold allows: a 503 with Retry-After after at least the hold."""
    def ok(f):
        unavailable = f.why == "unavailable" or (f.why.startswith("503 ")
                                                 and "no Retry-After" not in f.why)
        return unavailable and f.took >= hold_s - 0.05
    return ok


def test_pg_kill9_postmaster(chatd_factory, shared_pg):
    stack = shared_pg
    inst = _chatd(chatd_factory)

    def fault(load):
        pid = _postmaster_pid(shared_pg)
        kids = _children(pid)
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not _alive(pid) and not any(_alive(k) for k in kids), 30,
                 what="the postmaster and its children to exit")
        _pg_start_after_crash(shared_pg, pid)
        return time.monotonic()

    run_case("pg_kill9", inst, stack, fault, allowed=_hold_outlived(HOLD_S))
    assert Metrics(inst.metrics()).value("chatd_db_path_held") == 0


# --- PgBouncer and Redis: private ones -----------------------------------------------


def test_pgbouncer_kill9(chatd_factory, stack):
    pgb = PrivatePgBouncer(stack, free_port())
    pgb.start()
    try:
        inst = _chatd(chatd_factory, {
            "DATABASE_URL": with_port(stack.database_url, pgb.port),
            "DATABASE_URL_DIRECT": stack.database_url_direct,
        })

        def fault(load):
            pid = pgb.pid()
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: not _alive(pid), 10, what="PgBouncer to exit")
            # chatd moves to the direct path; requests keep being answered there
            load.wait_acked(WARM_ACKS, 30, "acknowledged sends while PgBouncer is down")
            pgb.pidfile.unlink(missing_ok=True)
            pgb.start()
            return time.monotonic()

        run_case("pgbouncer_kill9", inst, stack, fault)
    finally:
        pgb.stop()


def _cache_state(inst):
    try:
        return requests.get(inst.url("/readyz"), timeout=5).json().get("cache")
    except (requests.RequestException, ValueError):
        return None


def test_redis_kill9(chatd_factory, stack, tmp_path):
    redis_srv = PrivateRedis(tmp_path)
    try:
        inst = _chatd(chatd_factory, {"REDIS_URL": redis_srv.url})

        def fault(load):
            redis_srv.kill()  # SIGKILL
            wait_for(lambda: _cache_state(inst) == "down", 10, what="chatd to see Redis down")
            load.wait_acked(WARM_ACKS, 30, "acknowledged sends while Redis is down")
            redis_srv.start()  # empty
            back = time.monotonic()
            wait_for(lambda: _cache_state(inst) == "up", 15, what="chatd to see Redis back")
            return back

        run_case("redis_kill9", inst, stack, fault)
    finally:
        if redis_srv.proc.poll() is None:
            redis_srv.kill()


def test_redis_sigstop(chatd_factory, stack, tmp_path):
    redis_srv = PrivateRedis(tmp_path)
    try:
        inst = _chatd(chatd_factory, {"REDIS_URL": redis_srv.url})

        def fault(load):
            redis_srv.proc.send_signal(signal.SIGSTOP)
            try:
                wait_for(lambda: _cache_state(inst) == "down", 10,
                         what="chatd to give up on a stopped Redis")
                load.wait_acked(WARM_ACKS, 30, "acknowledged sends while Redis is stopped")
            finally:
                redis_srv.proc.send_signal(signal.SIGCONT)
            back = time.monotonic()
            wait_for(lambda: _cache_state(inst) == "up", 15, what="chatd to see Redis back")
            return back

        run_case("redis_sigstop", inst, stack, fault)
    finally:
        if redis_srv.proc.poll() is None:
            redis_srv.proc.send_signal(signal.SIGCONT)
            redis_srv.kill()


# --- a network cut to PostgreSQL ------------------------------------------------------


class CutProxy:
    """chatlib's TcpProxy in front of PostgreSQL, cut (every connection it
    carries dropped, new ones refused) and mended on the same port."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.proxy = TcpProxy("127.0.0.1", target_port, port=free_port())
        self.port = self.proxy.port

    def cut(self):
        self.proxy.stop()
        self.proxy = None

    def mend(self):
        self.proxy = TcpProxy("127.0.0.1", self.target_port, port=self.port)

    def stop(self):
        if self.proxy is not None:
            self.cut()


def _held(inst):
    try:
        return Metrics(inst.metrics()).value("chatd_db_path_held") or 0
    except Exception:  # noqa: BLE001 — polled
        return 0


def test_network_cut_to_postgres(chatd_factory, stack):
    proxy = CutProxy(stack.pg_port)
    through = with_port(stack.database_url_direct, proxy.port)
    pgb = None
    try:
        env = {"CHATD_DB_HOLD_MS": str(int(CUT_HOLD_S * 1000)),
               "DATABASE_URL": through, "DATABASE_URL_DIRECT": through}
        if stack.db_path == "pooler":
            pgb = PrivatePgBouncer(stack, free_port())
            ini = pgb.ini.read_text()
            pgb.ini.write_text(re.sub(r"(?m)^(chat\s*=.*\bport=)\d+", rf"\g<1>{proxy.port}", ini))
            pgb.start()
            env["DATABASE_URL"] = with_port(stack.database_url, pgb.port)
        inst = _chatd(chatd_factory, env)

        def cut_for(seconds):
            def fault(load):
                start = time.monotonic()
                proxy.cut()
                try:
                    wait_for(lambda: _held(inst) > 0, 5, what="requests held by chatd")
                    left = seconds - (time.monotonic() - start)
                    if left > 0:
                        load.stop.wait(left)  # the cut's length is the fault itself
                finally:
                    proxy.mend()
                return time.monotonic()
            return fault

        # Within the hold: nothing fails.
        run_case("network_cut_1s", inst, stack, cut_for(1.0))
        # Past the hold: what outlives it fails (503), and only that.
        load = run_case("network_cut_5s", inst, stack, cut_for(5.0),
                        allowed=_hold_outlived(CUT_HOLD_S))
        assert load.failures, "a cut of 5 s failed nothing with a hold of 3 s"
        assert Metrics(inst.metrics()).value("chatd_db_path_hold_expired_total") > 0
    finally:
        if pgb is not None:
            pgb.stop()
        proxy.stop()
