"""Read replicas with read-your-writes (DATABASE_URL_REPLICAS).

A streaming replica of the test stack's PostgreSQL, behind its own PgBouncer,
is started by scripts/stack.sh (replica-start; ports CHATD_TEST_PG_REPLICA_PORT
and CHATD_TEST_PGBOUNCER_REPLICA_PORT, default 15433/16433) and stopped at the
end of the module. chatd instances read it through its PgBouncer in the pooler
pass and straight in the direct pass, as they reach the primary.

What is checked: a reader on another instance never misses an acknowledged
write while a real share of its cache misses is answered by the replica; the
replica stopped under load sends the reads to the primary with no failed
request, and its restart brings them back; a replica whose replay is paused
is not read for the conversations written after the pause, but still for the
others, and past CHATD_REPLICA_MAX_LAG_MS it is left out altogether.
"""

import os
import subprocess
import threading
import time

import psycopg2
import pytest
from chatlib import Api, json_body
from conftest import REPO, TEST_PG_PORT, TEST_PGBOUNCER_PORT, TEST_REDIS_PORT, _read_env_file

REPLICA_PG_PORT = int(os.environ.get("CHATD_TEST_PG_REPLICA_PORT", "15433"))
REPLICA_PGBOUNCER_PORT = int(os.environ.get("CHATD_TEST_PGBOUNCER_REPLICA_PORT", "16433"))


def _stack(cmd, stack_dir, *args):
    env = dict(os.environ)
    env.update(
        CHATD_STACK_DIR=str(stack_dir),
        PG_PORT=str(TEST_PG_PORT),
        PGBOUNCER_PORT=str(TEST_PGBOUNCER_PORT),
        REDIS_PORT=str(TEST_REDIS_PORT),
        PG_REPLICA_PORT=str(REPLICA_PG_PORT),
        PGBOUNCER_REPLICA_PORT=str(REPLICA_PGBOUNCER_PORT),
    )
    t0 = time.monotonic()
    res = subprocess.run([str(REPO / "scripts" / "stack.sh"), cmd, *args], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=180)
    assert res.returncode == 0, f"stack.sh {cmd} failed:\n{res.stdout}"
    return time.monotonic() - t0


class Replica:
    def __init__(self, stack):
        self.stack = stack
        env = _read_env_file(stack.stack_dir / "env")
        self.url = (env["DATABASE_URL_REPLICAS_DIRECT"] if stack.db_path == "direct"
                    else env["DATABASE_URL_REPLICAS"])
        self.admin_dsn = env["CHATD_TEST_PG_REPLICA_ADMIN"]

    def stop(self, *what):
        return _stack("replica-stop", self.stack.stack_dir, *what)

    def start(self):
        return _stack("replica-start", self.stack.stack_dir)

    def sql(self, q):
        conn = psycopg2.connect(self.admin_dsn, connect_timeout=5)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(q)
                return cur.fetchone() if cur.description else None
        finally:
            conn.close()


@pytest.fixture(scope="module")
def replica(stack):
    took = _stack("replica-start", stack.stack_dir)
    print(f"\nreplica started (made once, then streaming) in {took:.1f} s")
    r = Replica(stack)
    yield r
    try:
        r.sql("SELECT pg_wal_replay_resume()")
    except Exception:  # noqa: BLE001 - it may be stopped
        pass
    _stack("replica-stop", stack.stack_dir)


def start_pair(chatd_factory, replica, extra=None):
    env = {"DATABASE_URL_REPLICAS": replica.url}
    env.update(extra or {})
    a = chatd_factory(env=env, workers=2)
    b = chatd_factory(env=env, workers=2)
    return a, b


def reads(inst, path):
    return inst.metric("chatd_db_reads_total", {"path": path})


def wait_for(cond, timeout, what):
    deadline = time.monotonic() + timeout
    t0 = time.monotonic()
    while True:
        if cond():
            return time.monotonic() - t0
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.02)


def setup_convs(api, n):
    u = api.signup()
    v = api.signup()
    convs = [api.create_conversation(u["token"], member_ids=[v["id"]])["id"] for _ in range(n)]
    return u, v, convs


def test_fresh_reads_on_another_instance_while_the_replica_answers(chatd_factory, replica):
    a, b = start_pair(chatd_factory, replica)
    wa, rb = Api(a.base_url), Api(b.base_url)
    u, v, convs = setup_convs(wa, 12)
    last = {}  # conversation -> newest acknowledged message id
    rev = {}
    stale = []
    checked = 0
    before = {p: reads(b, p) for p in ("primary", "replica")}
    deadline = time.monotonic() + 8
    i = 0
    while time.monotonic() < deadline:
        cid = convs[i % len(convs)]
        m = wa.send(u["token"], cid, f"m{i}")
        last[cid] = m["id"]
        # at once, on the other instance: history (a limit no send writes through), events
        h = rb.history(v["token"], cid, limit=10)
        checked += 1
        if last[cid] not in [x["id"] for x in h["messages"]]:
            stale.append(("history now", cid, i))
        r = rb.events(v["token"], cid, after_rev=rev.get(cid, 0))
        checked += 1
        if m["id"] not in [e["message"]["id"] for e in r["events"]]:
            stale.append(("events now", cid, i))
        if r["events"]:
            rev[cid] = r["events"][-1]["rev"] - 1
        # a conversation written a few steps ago, read under another key (a miss)
        old = convs[(i - 6) % len(convs)]
        if old in last:
            h = rb.history(v["token"], old, limit=11)
            checked += 1
            if last[old] not in [x["id"] for x in h["messages"]]:
                stale.append(("history later", old, i))
        i += 1
        if i % 25 == 0:
            # membership: added on one instance, listed and inboxed on the other
            w = wa.signup()
            assert wa.add_member(u["token"], cid, w["id"]).status_code == 204
            ms = json_body(rb.req("GET", f"/api/v1/conversations/{cid}/members",
                                  token=v["token"], params={"limit": 100}), 200)
            checked += 1
            if w["id"] not in [x["id"] for x in ms["members"]]:
                stale.append(("members", cid, i))
            ib = json_body(rb.req("GET", "/api/v1/conversations", token=w["token"]), 200)
            checked += 1
            if cid not in [x["conversation"]["id"] for x in ib["conversations"]]:
                stale.append(("inbox", cid, i))
    rep = reads(b, "replica") - before["replica"]
    pri = reads(b, "primary") - before["primary"]
    share = rep / max(1.0, rep + pri)
    print(f"\n{i} sends, {checked} freshness checks on the other instance, stale: "
          f"{len(stale)} (0 allowed); cache-miss reads: replica {rep:.0f}, primary {pri:.0f} "
          f"(replica share {share:.0%})")
    assert not stale, f"stale reads after acknowledged writes: {stale[:10]}"
    assert i >= 40, "the loop made too few writes to mean anything"
    assert rep >= 20 and share >= 0.2, f"too few reads went to the replica: {rep} of {rep + pri}"


class Load:
    """A writer and readers across two instances; counts non-2xx answers."""

    def __init__(self, a, b, u, v, convs):
        self.apis = (Api(a.base_url), Api(b.base_url))
        self.u, self.v, self.convs = u, v, convs
        self.stop = threading.Event()
        self.bad = []
        self.ok = 0
        self.threads = [threading.Thread(target=self.writer)] + [
            threading.Thread(target=self.reader, args=(k,)) for k in range(3)]

    def writer(self):
        i = 0
        while not self.stop.is_set():
            cid = self.convs[i % len(self.convs)]
            r = self.apis[0].send_raw(self.u["token"], cid, f"w{i}")
            self.note(r)
            i += 1

    def reader(self, k):
        i = 0
        api = self.apis[1]
        while not self.stop.is_set():
            cid = self.convs[(i * 7 + k) % len(self.convs)]
            r = api.history_raw(self.v["token"], cid, limit=5 + (i + k) % 20)
            self.note(r)
            i += 1

    def note(self, r):
        if 200 <= r.status_code < 300:
            self.ok += 1
        else:
            self.bad.append((r.status_code, r.text[:200]))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(30)


def test_replica_stopped_and_restarted_under_load(chatd_factory, replica):
    a, b = start_pair(chatd_factory, replica)
    wa = Api(a.base_url)
    u, v, convs = setup_convs(wa, 20)
    with Load(a, b, u, v, convs) as load:
        base = reads(b, "replica")
        wait_for(lambda: reads(b, "replica") > base + 20, 15, "reads reaching the replica")
        # the stop runs beside the load; the clock starts with it
        took = {}
        stopper = threading.Thread(target=lambda: took.setdefault("stop", replica.stop()))
        stopper.start()
        # every read is answered by the primary: the replica is marked down
        # (a failed read or poll) and its counter stops moving
        left_out = wait_for(lambda: b.metric("chatd_db_replica_up") == 0, 15,
                            "the replica left out")
        stopper.join(60)
        stop_took = took["stop"]
        frozen = reads(b, "replica")
        pri = reads(b, "primary")
        wait_for(lambda: reads(b, "primary") > pri + 50, 15, "reads on the primary")
        assert reads(b, "replica") == frozen, "a read went to a stopped replica"
        t_start = time.monotonic()
        took = replica.start()
        back = wait_for(lambda: reads(b, "replica") > frozen + 20, 20, "reads back on the replica")
        returned = time.monotonic() - t_start
        # more load after the return, still counted below
        n = load.ok
        wait_for(lambda: load.ok > n + 100, 15, "answers after the return")
    print(f"\nreplica stopped under load (stack.sh took {stop_took:.1f} s): left out "
          f"{left_out:.2f} s after the stop began; restarted in {took:.1f} s, reads back on it {returned:.2f} s after "
          f"the restart began ({back:.2f} s after it was ready); {load.ok} answers, "
          f"{len(load.bad)} non-2xx")
    assert not load.bad, f"non-2xx answers: {load.bad[:5]}"
    assert load.ok > 200


def test_replica_server_gone_behind_its_pooler(chatd_factory, replica):
    """Only the replica's PostgreSQL stops; in the pooler pass its PgBouncer
    still accepts, and holds what it cannot pass on: reads there are given up
    after a bound and answered by the primary."""
    a, b = start_pair(chatd_factory, replica)
    u, v, convs = setup_convs(Api(a.base_url), 20)
    with Load(a, b, u, v, convs) as load:
        base = reads(b, "replica")
        wait_for(lambda: reads(b, "replica") > base + 20, 15, "reads reaching the replica")
        replica.stop("server")
        left_out = wait_for(lambda: b.metric("chatd_db_replica_up") == 0, 15,
                            "the replica left out")
        pri = reads(b, "primary")
        wait_for(lambda: reads(b, "primary") > pri + 50, 15, "reads on the primary")
        replica.start()
        frozen = reads(b, "replica")
        back = wait_for(lambda: reads(b, "replica") > frozen + 20, 20, "reads back on the replica")
    print(f"\nreplica server stopped behind its pooler ({replica.stack.db_path} pass): left out "
          f"{left_out:.2f} s after, back {back:.2f} s after its restart; {load.ok} answers, "
          f"{len(load.bad)} non-2xx")
    assert not load.bad, f"non-2xx answers: {load.bad[:5]}"


def test_lagging_replica_is_not_read_for_newer_writes(chatd_factory, replica):
    # b: a bound far above the test's length, lag alone does not leave it out;
    # c: a short one, to see the lag leave the replica out. One worker each:
    # their gauges are their one poller's.
    a = chatd_factory(env={"DATABASE_URL_REPLICAS": replica.url}, workers=2)
    b = chatd_factory(env={"DATABASE_URL_REPLICAS": replica.url,
                           "CHATD_REPLICA_MAX_LAG_MS": "600000"}, workers=1)
    c = chatd_factory(env={"DATABASE_URL_REPLICAS": replica.url,
                           "CHATD_REPLICA_MAX_LAG_MS": "300"}, workers=1)
    wa, rb, rc = Api(a.base_url), Api(b.base_url), Api(c.base_url)
    u, v, convs = setup_convs(wa, 2)
    x, y = convs
    mx = wa.send(u["token"], x, "before")
    my = wa.send(u["token"], y, "before")
    # both writes are replayed, and b's and c's polls have seen it
    conn = psycopg2.connect(replica.stack.pg_admin_dsn, connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_current_wal_insert_lsn() - '0/0'")
            after_writes = float(cur.fetchone()[0])
    finally:
        conn.close()
    wait_for(lambda: all(i.metric("chatd_db_replica_up") == 1
                         and i.metric("chatd_db_replica_replay_lsn") >= after_writes
                         for i in (b, c)), 10, "replica up, past both writes")
    replica.sql("SELECT pg_wal_replay_pause()")
    try:
        wait_for(lambda: replica.sql("SELECT pg_get_wal_replay_pause_state()")[0] == "paused",
                 10, "replay paused")
        mx2 = wa.send(u["token"], x, "after the pause")
        # x, written after the pause: fresh, from the primary, every time
        rep0, pri0 = reads(b, "replica"), reads(b, "primary")
        for lim in range(20, 30):
            h = rb.history(v["token"], x, limit=lim)
            assert mx2["id"] in [m["id"] for m in h["messages"]], "stale read of x"
        assert reads(b, "replica") == rep0, "x was read from the paused replica"
        assert reads(b, "primary") >= pri0 + 10
        # y, last written before the pause: the replica still answers it
        rep1 = reads(b, "replica")
        for lim in range(20, 30):
            h = rb.history(v["token"], y, limit=lim)
            assert my["id"] in [m["id"] for m in h["messages"]]
        assert reads(b, "replica") >= rep1 + 10, "y was not read from the replica"
        # past the short bound, c leaves the replica out altogether
        left = wait_for(lambda: c.metric("chatd_db_replica_up") == 0, 10, "lagging replica left out")
        lag = c.metric("chatd_db_replica_lag_seconds")
        rep2 = reads(c, "replica")
        for lim in range(20, 25):
            rc.history(v["token"], y, limit=lim)
        assert reads(c, "replica") == rep2, "a replica past its lag bound was read"
        print(f"\npaused replica: x (written after) read 10x from the primary, y 10x from the "
              f"replica; with a 300 ms bound left out after {left:.2f} s more "
              f"of waiting (lag {lag:.2f} s)")
    finally:
        replica.sql("SELECT pg_wal_replay_resume()")
    back = wait_for(lambda: c.metric("chatd_db_replica_up") == 1, 10, "replica back after resume")
    print(f"replay resumed: back in use after {back:.2f} s")
    assert mx["id"] and my["id"]
