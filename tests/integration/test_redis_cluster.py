"""chatd on a Redis Cluster: REDIS_URL=redis+cluster://... (docs/operations.md).

A real cluster of 3 masters and 3 replicas (scripts/redis-cluster.sh) on
loopback ports CHATD_TEST_REDIS_CLUSTER_PORT..+5 (default 17001..17006),
started once for this module and stopped at its end, failures included.
The tests show: cached reads (hits) with every key on its slot's master and
no redirect in steady state; freshness after writes across two instances;
rate limits shared; WebSocket delivery across instances through sharded
pub/sub; a slot migrated under traffic (ASK, then MOVED); a master killed
and replaced by its replica with reads and sends going on and no
acknowledged message lost. Every wait polls a condition with a bound.
"""

import os
import signal
import subprocess
import threading
import time

import pytest
import redis
import requests

from chatlib import Api, wait_for
from conftest import REPO, chatd_bin
from wsclient import WS

BASE = int(os.environ.get("CHATD_TEST_REDIS_CLUSTER_PORT", "17001"))
PORTS = [BASE + i for i in range(6)]
SCRIPT = REPO / "scripts" / "redis-cluster.sh"


def _script(cmd, d):
    return subprocess.run([str(SCRIPT), cmd, str(d), str(BASE)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=120)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    d = tmp_path_factory.mktemp("redis-cluster")
    try:
        res = _script("start", d)
        assert res.returncode == 0, res.stdout
        yield d
    finally:
        _script("stop", d)


def node(port):
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)


def alive(port):
    try:
        return node(port).ping()
    except redis.RedisError:
        return False


def masters():
    """{node id: port} of the masters that answer, as their own view says."""
    out = {}
    for p in PORTS:
        if not alive(p):
            continue
        for line in node(p).execute_command("CLUSTER", "NODES").decode().splitlines():
            f = line.split()
            if "master" in f[2] and "fail" not in f[2] and "myself" in f[2]:
                out[f[0]] = p
    return out


def owner_port(tag):
    """The port of the master that owns tag's slot (CLUSTER SLOTS of a live node)."""
    p = next(p for p in PORTS if alive(p))
    slot = node(p).execute_command("CLUSTER", "KEYSLOT", tag)
    for lo, hi, m, *_ in node(p).execute_command("CLUSTER", "SLOTS"):
        if lo <= slot <= hi:
            return int(m[1]), slot
    raise AssertionError(f"no master for slot {slot}")


def url(ports=PORTS[:2]):
    return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports)


def cache_metrics(inst):
    return requests.get(inst.base_url + "/api/cache/metrics", timeout=5).json()


def start(chatd_factory, **env):
    """A chatd on the cluster, once its cache serves hits: a node whose first
    handshake ran late (a slow start, as under the sanitizers) keeps the cache
    off for a moment after it is up, which is not what the tests look at."""
    inst = chatd_factory(env={"REDIS_URL": url(), **env}, workers=2)
    wait_for(lambda: cache_metrics(inst)["healthy"], 10, what="the cache on the cluster")
    api = Api(inst.base_url)
    u = api.signup()
    c = api.create_conversation(u["token"])

    def hits_now():
        h = cache_metrics(inst)["hits"]
        api.history(u["token"], c["id"])
        return cache_metrics(inst)["hits"] > h

    wait_for(hits_now, 15, interval=0.1, what="cache hits on the cluster")
    return inst


# The bound: the cache serves hits again within 5 s of a replica
# taking over. The sanitizer build's loop runs several times slower (its
# new epoch's 16,384 SETs take longer), so it gets twice the bound.
RECOVERY_S = 10 if "asan" in str(chatd_bin()) else 5


def redirects(inst, kind):
    return inst.metric("chatd_redis_cluster_redirects_total", {"kind": kind})


def conv_on(api, tok, member, port, tries=200):
    """A conversation whose slot a given master owns."""
    for _ in range(tries):
        c = api.create_conversation(tok, member_ids=[member])
        if owner_port(f"c:{c['id']}")[0] == port:
            return c
    raise AssertionError(f"no conversation landed on {port}")


def test_cached_reads_on_the_cluster(cluster, chatd_factory):
    inst = start(chatd_factory)
    api = Api(inst.base_url)
    a, b = api.signup(), api.signup()
    conv = api.create_conversation(a["token"], member_ids=[b["id"]])
    sent = [api.send(a["token"], conv["id"], f"m{i}") for i in range(3)]
    before = cache_metrics(inst)["hits"]
    for _ in range(5):
        page = api.history(b["token"], conv["id"])
        assert sent[-1]["id"] in [m["id"] for m in page["messages"]]
        api.get_user(a["token"], b["id"])
    assert cache_metrics(inst)["hits"] >= before + 5
    # every key of the conversation sits on the master of {c:ID}'s slot
    port, _ = owner_port(f"c:{conv['id']}")
    keys = node(port).keys(f"msg:history:{conv['id']}:*")
    assert keys, "the history page was not filled on its slot's master"
    assert node(port).exists(f"conv:ver:{{c:{conv['id']}}}")
    # the slot computed by chatd matched Redis': no redirect in steady state
    assert redirects(inst, "moved") == 0 and redirects(inst, "ask") == 0


def cluster_keys(pattern):
    return [k for p in masters().values() for k in node(p).keys(pattern)]


def test_delete_keys_by_pattern_on_every_master(cluster, chatd_factory):
    admin = "admin-cluster-test-token"
    inst = start(chatd_factory, CHATD_ADMIN_TOKEN=admin)
    api = Api(inst.base_url)
    a = api.signup()
    convs = [api.create_conversation(a["token"]) for _ in range(8)]
    for c in convs:
        api.send(a["token"], c["id"], "x")
    pattern = "msg:history:*"

    def filled():
        for c in convs:
            api.history(a["token"], c["id"])
        keys = [k.decode() for k in cluster_keys(pattern)]
        return all(any(k.startswith(f"msg:history:{c['id']}:") for k in keys) for c in convs)

    wait_for(filled, 10, what="fills on every conversation")
    owners = {owner_port(f"c:{c['id']}")[0] for c in convs}
    assert len(owners) >= 2, "the conversations should span masters"
    answers = []

    def delete():
        # a worker whose cache is still coming up answers 503 and deletes nothing
        answers.append(requests.delete(inst.base_url + "/api/cache/keys", params={"pattern": pattern},
                                       headers={"Authorization": f"Bearer {admin}"}, timeout=10))
        assert answers[-1].status_code in (200, 503), answers[-1].text
        return answers[-1].status_code == 200

    wait_for(delete, 10, interval=0.2, what="the pattern delete")
    r = answers[-1]
    assert r.json()["deleted"] >= len(convs)
    assert cluster_keys(pattern) == []


def test_fresh_after_writes_across_instances(cluster, chatd_factory):
    w, r = start(chatd_factory), start(chatd_factory)
    aw, ar = Api(w.base_url), Api(r.base_url)
    a, b = aw.signup(), aw.signup()
    conv = aw.create_conversation(a["token"], member_ids=[b["id"]])
    stale = 0
    for i in range(30):
        ar.history(b["token"], conv["id"])  # fill (or hit) the newest page
        m = aw.send(a["token"], conv["id"], f"n{i}")
        page = ar.history(b["token"], conv["id"])
        ids = [x["id"] for x in page["messages"]]
        stale += m["id"] not in ids
        assert ar.count(b["token"], conv["id"]) == i + 1
    assert stale == 0
    assert cache_metrics(r)["hits"] > 0


def inbox(api, token):
    r = api.req("GET", "/api/v1/conversations", token=token)
    assert r.status_code == 200, r.text
    return r


def test_inbox_cached_and_fresh_across_slots(cluster, chatd_factory):
    """An inbox page depends on versions of conversations on other masters."""
    w, r = start(chatd_factory), start(chatd_factory)
    aw, ar = Api(w.base_url), Api(r.base_url)
    a, b = aw.signup(), aw.signup()
    convs = [aw.create_conversation(a["token"], member_ids=[b["id"]]) for _ in range(6)]
    assert len({owner_port(f"c:{c['id']}")[0] for c in convs}) >= 2
    assert owner_port(f"u:{b['id']}")[0] is not None
    hits = lambda: r.metric("chatd_cache_hits_total", {"kind": "inbox"})
    stale = 0
    for i, c in enumerate(convs * 2):
        first = inbox(ar, b["token"])
        h = hits()

        def hit():  # the fill lands after the first answer: read until a hit
            assert inbox(ar, b["token"]).content == first.content
            return hits() > h

        wait_for(hit, 5, what="a hit on the unchanged inbox")
        m = aw.send(a["token"], c["id"], f"i{i}")
        top = inbox(ar, b["token"]).json()["conversations"][0]
        stale += top["last_message"]["id"] != m["id"]
    assert stale == 0


def test_rate_limits_shared_across_instances(cluster, chatd_factory):
    env = {"CHATD_RATE_SEND": "1/min:4"}
    x, y = start(chatd_factory, **env), start(chatd_factory, **env)
    ax, ay = Api(x.base_url), Api(y.base_url)
    a, warm = ax.signup(), ax.signup()
    conv, wconv = ax.create_conversation(a["token"]), ax.create_conversation(warm["token"])
    local = lambda: sum(i.metric("chatd_rate_local_checks_total") for i in (x, y))

    def on_redis():  # each connection's worker counts in Redis, not alone
        before = local()
        for api in (ax, ay):
            api.send_raw(warm["token"], wconv["id"], "w")
        return local() == before

    wait_for(on_redis, 10, what="the rate limiters on the cluster")
    before = local()
    codes = []
    for i in range(8):
        api = ax if i % 2 == 0 else ay
        codes.append(api.send_raw(a["token"], conv["id"], f"r{i}").status_code)
    assert codes.count(201) == 4 and codes[4:] == [429] * 4, codes
    assert local() == before, "a check was decided without Redis"


def push_of(ws, timeout=10):
    while True:
        m = ws.recv_json(timeout)
        if m["type"] == "message":
            return m["message"]


def test_websocket_delivery_across_instances(cluster, chatd_factory):
    a_inst, b_inst = start(chatd_factory), start(chatd_factory)
    api_a = Api(a_inst.base_url)
    alice, bob = api_a.signup(), api_a.signup()
    convs = [api_a.create_conversation(alice["token"], member_ids=[bob["id"]]) for _ in range(6)]
    ws = WS.open(b_inst.host, b_inst.port, bob["token"])
    try:
        for c in convs:  # conversations on every master
            m = api_a.send(alice["token"], c["id"], f"to B {c['id']}")
            assert push_of(ws) == m
    finally:
        ws.close_socket()
    assert len({owner_port(f"c:{c['id']}")[0] for c in convs}) >= 2


def migrate_slot(slot, src, dst):
    """Moves slot from port src to port dst with the CLUSTER SETSLOT sequence."""
    ids = {p: node(p).execute_command("CLUSTER", "MYID").decode() for p in (src, dst)}
    node(dst).execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[src])
    node(src).execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[dst])
    while True:
        keys = node(src).execute_command("CLUSTER", "GETKEYSINSLOT", slot, 10)
        if not keys:
            break
        node(src).execute_command("MIGRATE", "127.0.0.1", dst, "", 0, 5000, "KEYS", *keys)
        time.sleep(0.05)  # spreads the migration over the traffic: ASK replies meanwhile
    for p in masters().values():
        node(p).execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[dst])


class Traffic:
    """Sends and reads on one conversation in a thread; every answer recorded."""

    def __init__(self, inst, reader_inst, tok, rtok, cid):
        self.api, self.rapi = Api(inst.base_url), Api(reader_inst.base_url)
        self.tok, self.rtok, self.cid = tok, rtok, cid
        self.acked, self.bad, self.reads = [], [], 0
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)

    def run(self):
        i = 0
        while not self.stop.is_set():
            r = self.api.send_raw(self.tok, self.cid, f"t{i}")
            if r.status_code == 201:
                self.acked.append(r.json()["id"])
            else:
                self.bad.append(("send", r.status_code))
            for _ in range(3):
                h = self.rapi.history_raw(self.rtok, self.cid)
                self.reads += 1
                if h.status_code != 200:
                    self.bad.append(("read", h.status_code))
            i += 1

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.t.join(30)


def all_ids(api, tok, cid):
    n = api.count(tok, cid)
    ids, before = [], None
    while len(ids) < n:
        page = api.history(tok, cid, limit=100, **({"before_id": before} if before else {}))
        msgs = page["messages"]
        if not msgs:
            break
        ids += [m["id"] for m in msgs]
        before = min(m["id"] for m in msgs)
    return set(ids)


def test_slot_migrated_under_traffic(cluster, chatd_factory):
    w, r = start(chatd_factory), start(chatd_factory)
    api = Api(w.base_url)
    a, b = api.signup(), api.signup()
    conv = api.create_conversation(a["token"], member_ids=[b["id"]])
    src, slot = owner_port(f"c:{conv['id']}")
    dst = next(p for p in masters().values() if p != src)
    ws = WS.open(r.host, r.port, b["token"])
    try:
        with Traffic(w, r, a["token"], b["token"], conv["id"]) as t:
            wait_for(lambda: len(t.acked) >= 5, 10, what="traffic")
            t0 = time.monotonic()
            migrate_slot(slot, src, dst)
            took = time.monotonic() - t0
            n = len(t.acked)
            wait_for(lambda: len(t.acked) >= n + 10, 15, what="traffic after the migration")
        assert owner_port(f"c:{conv['id']}")[0] == dst
        assert t.bad == [], t.bad[:10]
        moved = redirects(w, "moved") + redirects(r, "moved") + redirects(w, "ask") + redirects(r, "ask")
        assert moved > 0, "the migration was never seen as a redirect"
        assert set(t.acked) <= all_ids(api, a["token"], conv["id"])
        # the cache serves the conversation from its new master
        hits = cache_metrics(r)["hits"]
        wait_for(lambda: (Api(r.base_url).history(b["token"], conv["id"]) and
                          cache_metrics(r)["hits"] > hits), 10, what="hits after the migration")
        assert node(dst).keys(f"msg:history:{conv['id']}:*")
        # the channel's subscription followed the slot: a push still arrives
        m = api.send(a["token"], conv["id"], "after the move")
        deadline = time.monotonic() + 10
        while True:
            got = push_of(ws, max(0.1, deadline - time.monotonic()))
            if got["id"] == m["id"]:
                break
        print(f"migration of slot {slot} {src}->{dst}: {took:.2f}s, {len(t.acked)} sends, "
              f"{t.reads} reads, redirects {moved:.0f}")
    finally:
        ws.close_socket()


def replica_of(port):
    """The port of a replica of the master on port."""
    mid = node(port).execute_command("CLUSTER", "MYID").decode()
    for line in node(port).execute_command("CLUSTER", "NODES").decode().splitlines():
        f = line.split()
        if f[3] == mid and "fail" not in f[2]:
            return int(f[1].split("@")[0].rsplit(":", 1)[1])
    raise AssertionError(f"no replica of {port}")


def test_manual_failover_under_traffic(cluster, chatd_factory):
    """CLUSTER FAILOVER: the old master lives on as a replica and answers MOVED."""
    w, r = start(chatd_factory), start(chatd_factory)
    api = Api(w.base_url)
    a, b = api.signup(), api.signup()
    conv = api.create_conversation(a["token"], member_ids=[b["id"]])
    old, _ = owner_port(f"c:{conv['id']}")
    new = replica_of(old)
    ws = WS.open(r.host, r.port, b["token"])
    try:
        with Traffic(w, r, a["token"], b["token"], conv["id"]) as t:
            wait_for(lambda: len(t.acked) >= 5, 10, what="traffic")
            t0 = time.monotonic()
            node(new).execute_command("CLUSTER", "FAILOVER")
            wait_for(lambda: owner_port(f"c:{conv['id']}")[0] == new, 15, interval=0.1,
                     what="the replica taking over")
            took = time.monotonic() - t0
            n = len(t.acked)
            wait_for(lambda: len(t.acked) >= n + 10, 15, what="traffic after the failover")
            # the cache comes back on the new master while the load goes on
            hits = cache_metrics(r)["hits"]
            wait_for(lambda: (Api(r.base_url).history(b["token"], conv["id"]) and
                              cache_metrics(r)["hits"] > hits), 10, interval=0.1,
                     what="hits after the failover")
            back = time.monotonic() - t0
        assert t.bad == [], t.bad[:10]
        assert set(t.acked) <= all_ids(api, a["token"], conv["id"])
        assert back - took < RECOVERY_S, f"cache back {back - took:.2f}s after the takeover"
        m = api.send(a["token"], conv["id"], "after the manual failover")
        deadline = time.monotonic() + 10
        while True:
            got = push_of(ws, max(0.1, deadline - time.monotonic()))
            if got["id"] == m["id"]:
                break
        print(f"\nmanual failover {old}->{new}: {took:.2f}s, cache back after {back:.2f}s, "
              f"{len(t.acked)} sends acked, {t.reads} reads, none lost")
    finally:
        ws.close_socket()


def test_master_failover_under_traffic(cluster, chatd_factory):
    w, r = start(chatd_factory), start(chatd_factory)
    api = Api(w.base_url)
    a, b = api.signup(), api.signup()
    ports = sorted(masters().values())
    victim = ports[0]
    conv = conv_on(api, a["token"], b["id"], victim)
    other = conv_on(api, a["token"], b["id"], ports[1])
    ra = Api(r.base_url)
    ra.history(b["token"], other["id"])
    ws = WS.open(r.host, r.port, b["token"])
    pid = int((cluster / str(victim) / "redis.pid").read_text())
    try:
        # Killed while no write is in flight: a send whose version bump fails
        # turns the whole cache off until the bump settles (docs/cache.md), so
        # the per-node breaker is seen only by reads made before any write
        # reaches the dead master: the other master's keys keep hitting.
        t0 = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        # (within the cluster's node timeout of 1 s, before the cluster as a
        # whole reports the dead master's slots as failed)
        other_hits = 0
        while other_hits == 0 and time.monotonic() - t0 < 0.9:
            h0 = cache_metrics(r)["hits"]
            ra.history(b["token"], other["id"])
            other_hits = cache_metrics(r)["hits"] - h0
        # then sends and reads go on through the failover
        with Traffic(w, r, a["token"], b["token"], conv["id"]) as t:
            promoted = wait_for(lambda: owner_port(f"c:{conv['id']}")[0] != victim and
                                owner_port(f"c:{conv['id']}")[0], 20, interval=0.1,
                                what="a replica taking over")
            took = time.monotonic() - t0
            n = len(t.acked)
            wait_for(lambda: len(t.acked) >= n + 10, 15, what="traffic after the failover")
            # the cache comes back on the promoted replica
            hits = cache_metrics(r)["hits"]
            wait_for(lambda: (ra.history(b["token"], conv["id"]) and
                              cache_metrics(r)["hits"] > hits), 10, interval=0.1,
                     what="hits after the failover")
            back = time.monotonic() - t0
        assert t.bad == [], t.bad[:10]
        assert other_hits >= 1, "a live master's keys stopped hitting while another was down"
        assert set(t.acked) <= all_ids(api, a["token"], conv["id"])
        assert back - took < RECOVERY_S, f"cache back {back - took:.2f}s after the takeover"
        m = api.send(a["token"], conv["id"], "after the failover")
        deadline = time.monotonic() + 10
        while True:
            got = push_of(ws, max(0.1, deadline - time.monotonic()))
            if got["id"] == m["id"]:
                break
        print(f"\nkill -9 failover {victim}->{promoted}: promoted after {took:.2f}s, cache back after "
              f"{back:.2f}s, {len(t.acked)} sends acked, {t.reads} reads, none lost")
    finally:
        ws.close_socket()


def test_cluster_url_at_a_plain_redis_says_so(chatd_factory, stack):
    """A redis+cluster:// URL naming a Redis without cluster support: chatd
    serves from the database, says why in its log, and reports the cache down."""
    inst = chatd_factory(env={"REDIS_URL": f"redis+cluster://127.0.0.1:{stack.redis_port}"})
    inst.wait_log("event=redis_cluster_map_failed", timeout=10)
    assert inst.log_contains("cluster support disabled")
    api = Api(inst.base_url)
    a = api.signup()
    conv = api.create_conversation(a["token"])
    m = api.send(a["token"], conv["id"], "db only")
    assert api.history(a["token"], conv["id"])["messages"][0]["id"] == m["id"]
    ready = requests.get(inst.base_url + "/readyz", timeout=5).json()
    assert ready["cache"] == "down", ready
