"""The Redis cache: cache-aside per kind with the contract's keys and TTLs,
freshness after writes (also across instances and under the classic
fill-after-invalidate race), coalescing of concurrent misses, and the
failure modes: Redis down, paused, restarted empty, evicting, bypassed."""

import concurrent.futures
import shutil
import socket
import subprocess
import threading
import time
import uuid

import pytest
import redis
import requests

from chatlib import unique_name

ADMIN = "admin-" + uuid.uuid4().hex


class Client:
    def __init__(self, base):
        self.base = base
        self.s = requests.Session()

    def call(self, method, path, token=None, **kw):
        h = kw.pop("headers", {})
        if token:
            h["Authorization"] = f"Bearer {token}"
        return self.s.request(method, self.base + path, headers=h, timeout=30, **kw)

    def signup(self):
        r = self.call("POST", "/api/v1/users", json={"name": unique_name()})
        assert r.status_code == 201, r.text
        return r.json()

    def conversation(self, token, members=()):
        r = self.call("POST", "/api/v1/conversations", token,
                      json={"title": "t", "member_ids": list(members)})
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def send(self, token, conv, body="hi", cmid=None):
        r = self.call("POST", f"/api/v1/conversations/{conv}/messages", token,
                      json={"body": body, "client_msg_id": cmid})
        assert r.status_code in (200, 201), r.text
        return r.json()

    def history(self, token, conv, **params):
        r = self.call("GET", f"/api/v1/conversations/{conv}/messages", token, params=params)
        assert r.status_code == 200, r.text
        return r.json()

    def cache_metrics(self):
        r = self.call("GET", "/api/cache/metrics")
        assert r.status_code == 200
        return r.json()


def wait_for(cond, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def free_port():
    for port in range(26400, 26600):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port")


class PrivateRedis:
    """A redis-server of the test's own, to kill, pause and restart."""

    def __init__(self, tmp_path, extra=()):
        self.port = free_port()
        self.dir = tmp_path
        self.extra = list(extra)
        self.proc = None
        self.start()

    def start(self):
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir)] + self.extra,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        c = self.client()
        wait_for(lambda: self._ping(c), 10, "private redis")

    def _ping(self, c):
        try:
            return c.ping()
        except redis.exceptions.ConnectionError:
            return False

    def client(self):
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def kill(self):
        self.proc.kill()
        self.proc.wait(10)

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"


@pytest.fixture
def private_redis(tmp_path):
    r = PrivateRedis(tmp_path)
    yield r
    if r.proc.poll() is None:
        r.kill()


def commandstats(rc):
    stats = rc.info("commandstats")
    return {k: v["calls"] for k, v in stats.items()}


def cache_calls(rc):
    s = commandstats(rc)
    return sum(s.get(k, 0) for k in ("cmdstat_get", "cmdstat_set", "cmdstat_eval", "cmdstat_evalsha"))


def find_keys(rc, pattern):
    return [k.decode() for k in rc.scan_iter(match=pattern, count=1000)]


# ---- hit after miss, keys and TTLs ----

def test_hit_after_miss_for_every_kind_with_ttls(chatd_factory, redis_client):
    d = chatd_factory()
    c = Client(d.base_url)
    u = c.signup()
    other = c.signup()
    conv = c.conversation(u["token"], [other["id"]])
    c.send(u["token"], conv, "one")
    c.send(u["token"], conv, "two")
    # A send writes its newest page and count through (test_write_through.py);
    # a membership change moves the version plainly, so each read below starts
    # with a miss.
    third = c.signup()
    r = c.call("POST", f"/api/v1/conversations/{conv}/members", u["token"], json={"user_id": third["id"]})
    assert r.status_code == 204, r.text
    reads = [
        ("history", f"/api/v1/conversations/{conv}/messages", f"msg:history:{conv}:50:0:*", 30),
        ("history", f"/api/v1/conversations/{conv}/messages?limit=1&offset=1",
         f"msg:history:{conv}:1:1:*", 60),
        ("count", f"/api/v1/conversations/{conv}/messages/count", f"msg:count:{conv}:*", 60),
        ("metadata", f"/api/v1/conversations/{conv}", f"conv:metadata:{conv}:*", 300),
        ("profile", f"/api/v1/users/{other['id']}", f"user:profile:{other['id']}:*", 600),
    ]
    for kind, path, pattern, ttl in reads:
        before = c.cache_metrics()
        first = c.call("GET", path, u["token"])
        assert first.status_code == 200
        def current():
            ver = redis_client.get(f"conv:ver:{{c:{conv}}}")
            ks = find_keys(redis_client, pattern)
            # conversation keys: only those of its current version (a send's
            # write-through under an older one may still be there)
            return ks if "profile" in pattern else [k for k in ks if ver and k.endswith(":v" + ver.decode())]
        keys = wait_for(current, 5, f"fill of {pattern}")
        assert len(keys) == 1, keys
        t = redis_client.ttl(keys[0])
        assert ttl - 5 <= t <= ttl, (pattern, t)
        second = c.call("GET", path, u["token"])
        assert second.status_code == 200
        assert second.content == first.content
        assert second.headers["Content-Type"] == "application/json"
        after = c.cache_metrics()
        assert after["hits"] >= before["hits"] + 1, kind
        assert after["misses"] >= before["misses"] + 1, kind
        assert d.metric("chatd_cache_hits_total", {"kind": kind}) >= 1
    m = c.cache_metrics()
    assert set(m) == {"hits", "misses", "hit_ratio", "evictions", "errors", "bypass", "healthy"}
    assert 0.0 < m["hit_ratio"] <= 1.0
    assert m["healthy"] is True and m["bypass"] is False


def test_worker_copy_used_only_while_redis_confirms_it(chatd_factory, redis_client):
    """The worker keeps the value of a hit; later lookups name it and Redis answers
    "unchanged" without the value. A deleted key or a new version is never
    answered from the copy."""
    d = chatd_factory()
    c = Client(d.base_url)
    u = c.signup()
    conv = c.conversation(u["token"])
    c.send(u["token"], conv, "one")
    path = f"/api/v1/conversations/{conv}/messages"

    def local_hits():
        return d.metric("chatd_cache_local_hits_total") or 0

    first = c.call("GET", path, u["token"])                       # miss, fill
    key = wait_for(lambda: find_keys(redis_client, f"msg:history:{conv}:50:0:*"), 5, "the fill")[0]
    second = c.call("GET", path, u["token"])                      # hit: value from Redis, copy kept
    base = local_hits()
    third = c.call("GET", path, u["token"])                       # hit from the copy
    assert first.content == second.content == third.content
    assert local_hits() == base + 1
    assert d.metric("chatd_cache_local_bytes") > 0

    redis_client.delete(key)                                      # gone from Redis: no copy
    misses = c.cache_metrics()["misses"]
    fourth = c.call("GET", path, u["token"])
    assert fourth.content == first.content
    assert local_hits() == base + 1
    assert c.cache_metrics()["misses"] == misses + 1

    c.send(u["token"], conv, "two")                               # new version: no copy
    fifth = c.history(u["token"], conv)
    assert [m["body"] for m in fifth["messages"]] == ["two", "one"]
    assert local_hits() == base + 1


def test_no_worker_copies_when_disabled(chatd_factory):
    d = chatd_factory(env={"CHATD_CACHE_LOCAL_MB": "0"})
    c = Client(d.base_url)
    u = c.signup()
    conv = c.conversation(u["token"])
    c.send(u["token"], conv, "one")
    for _ in range(4):
        c.history(u["token"], conv)
    assert c.cache_metrics()["hits"] >= 2
    assert (d.metric("chatd_cache_local_hits_total") or 0) == 0


# ---- freshness ----

def test_freshness_concurrent_writers_and_readers(chatd_factory):
    d = chatd_factory(workers=2)
    c = Client(d.base_url)
    stale = []
    errors = []
    stop_at = time.monotonic() + 10

    def pair(i):
        cl = Client(d.base_url)
        w = cl.signup()
        r = cl.signup()
        conv = cl.conversation(w["token"], [r["id"]])
        n = 0
        while time.monotonic() < stop_at:
            msg = cl.send(w["token"], conv, f"m{n}", cmid=unique_name("c"))
            n += 1
            for _ in range(2):  # the second read of a page is normally a hit
                page = cl.history(r["token"], conv, limit=5)
                if not page["messages"] or page["messages"][0]["id"] < msg["id"]:
                    stale.append(("history", conv, msg["id"]))
            cnt = cl.call("GET", f"/api/v1/conversations/{conv}/messages/count", r["token"]).json()
            if cnt["count"] < n:
                stale.append(("count", conv, n, cnt["count"]))
            meta = cl.call("GET", f"/api/v1/conversations/{conv}", r["token"]).json()
            if meta["last_message_at"] is None or meta["last_message_at"] < msg["created_at"]:
                stale.append(("metadata", conv, msg["created_at"], meta["last_message_at"]))
        return n

    with concurrent.futures.ThreadPoolExecutor(20) as ex:
        futs = [ex.submit(pair, i) for i in range(20)]
        total = 0
        for f in futs:
            try:
                total += f.result(timeout=60)
            except Exception as e:  # noqa: BLE001 - collected and asserted below
                errors.append(repr(e))
    assert not errors, errors[:3]
    assert total > 20
    assert stale == [], stale[:5]
    assert c.cache_metrics()["hits"] > 0


def test_race_fill_after_invalidate_is_harmless(chatd_factory, redis_client):
    """Reader misses and loads the old page; the writer commits and
    invalidates; only then does the reader's fill land. The delay is
    injected, so the race happens every time."""
    d = chatd_factory(env={"CHATD_CACHE_FILL_DELAY_MS": "1500"})
    c = Client(d.base_url)
    u = c.signup()
    conv = c.conversation(u["token"])
    c.send(u["token"], conv, "old")
    old_page = c.history(u["token"], conv)  # miss: answered now, filled 1.5 s later
    assert [m["body"] for m in old_page["messages"]] == ["old"]
    assert find_keys(redis_client, f"msg:history:{conv}:50:0:*") == []  # not filled yet
    new = c.send(u["token"], conv, "new")  # commit + invalidate before the fill lands
    # The send wrote its own newest page through, under its new version; the
    # reader's late fill lands beside it, under the version it read.
    def late_fill():
        vals = [redis_client.get(k) or b"" for k in find_keys(redis_client, f"msg:history:{conv}:50:0:*")]
        return [v for v in vals if b'"old"' in v and b'"new"' not in v]
    assert wait_for(late_fill, 10, "the late fill")
    page = c.history(u["token"], conv)
    assert page["messages"][0]["id"] == new["id"], "the late fill hid the new message"


def test_freshness_across_two_instances(chatd_factory):
    a = chatd_factory()
    b = chatd_factory()
    ca, cb = Client(a.base_url), Client(b.base_url)
    u = ca.signup()
    conv = ca.conversation(u["token"])
    ca.send(u["token"], conv, "first")
    for _ in range(2):  # fill and hit on A
        assert len(ca.history(u["token"], conv)["messages"]) == 1
    count = ca.call("GET", f"/api/v1/conversations/{conv}/messages/count", u["token"]).json()
    assert count["count"] == 1
    new = cb.send(u["token"], conv, "second")  # through B
    assert ca.history(u["token"], conv)["messages"][0]["id"] == new["id"]
    count = ca.call("GET", f"/api/v1/conversations/{conv}/messages/count", u["token"]).json()
    assert count["count"] == 2
    meta = ca.call("GET", f"/api/v1/conversations/{conv}", u["token"]).json()
    assert meta["last_message_at"] == new["created_at"]
    other = cb.signup()
    r = cb.call("POST", f"/api/v1/conversations/{conv}/members", u["token"],
                json={"user_id": other["id"]})
    assert r.status_code == 204
    meta = ca.call("GET", f"/api/v1/conversations/{conv}", u["token"]).json()
    assert meta["member_count"] == 2


# ---- coalescing ----

def test_thousand_concurrent_cold_reads_make_one_query(chatd_factory, db):
    # A generous command deadline: this test is about coalescing, and a lookup
    # that times out under the burst goes to the database on its own by design.
    d = chatd_factory(workers=1, env={"CHATD_CACHE_TIMEOUT_MS": "2000"})
    c = Client(d.base_url)
    u = c.signup()
    conv = c.conversation(u["token"])
    for i in range(30):
        c.send(u["token"], conv, f"m{i}")
    limit = 37  # a page shape no other test reads
    cur = db.cursor()
    cur.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    req = (f"GET /api/v1/conversations/{conv}/messages?limit={limit} HTTP/1.1\r\n"
           f"Host: x\r\nAuthorization: Bearer {u['token']}\r\n\r\n").encode()
    # Prove membership once on a different page shape so the 1,000 go straight to the cache.
    c.history(u["token"], conv, limit=1)
    # Wait until the cache is in use (connected, epoch settled): a repeat read hits.
    hits = c.cache_metrics()["hits"]
    wait_for(lambda: c.history(u["token"], conv, limit=1) and c.cache_metrics()["hits"] > hits,
             10, "a cache hit")
    errors_before = c.cache_metrics()["errors"]
    cur.execute("SELECT pg_stat_statements_reset()")
    socks = []
    for i in range(1000):
        s = socket.create_connection(("127.0.0.1", d.port))
        socks.append(s)
    for s in socks:
        s.sendall(req)
    bodies = set()
    for s in socks:
        s.settimeout(30)
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0]
                     .split(b":")[1])
        while len(body) < length:
            body += s.recv(65536)
        bodies.add(body)
        s.close()
    assert len(bodies) == 1
    cur.execute("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
                "WHERE query LIKE '%chat_history_page(%'")
    calls = cur.fetchone()[0]
    errors = c.cache_metrics()["errors"] - errors_before
    print(f"\n1000 concurrent cold reads -> {calls} history queries ({errors:.0f} cache errors)")
    assert calls == 1


# ---- failures ----

def test_redis_killed_and_restarted_under_load(chatd_factory, private_redis):
    d = chatd_factory(env={"REDIS_URL": private_redis.url})
    c = Client(d.base_url)
    u = c.signup()
    conv = c.conversation(u["token"])
    sent = [c.send(u["token"], conv, "x")["id"]]
    bad = []
    done = threading.Event()

    def load():
        cl = Client(d.base_url)
        n = 0
        while not done.is_set() and n < 5000:
            n += 1
            acknowledged = sent[-1]  # before the read starts: later sends may race it
            r = cl.call("GET", f"/api/v1/conversations/{conv}/messages", u["token"])
            if r.status_code != 200:
                bad.append(r.status_code)
            elif r.json()["messages"][0]["id"] < acknowledged:
                bad.append(("stale", r.json()["messages"][0]["id"], acknowledged))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    wait_for(lambda: c.cache_metrics()["hits"] > 10, 10, "cache hits")
    private_redis.kill()
    wait_for(lambda: c.call("GET", "/readyz").json()["cache"] == "down", 5, "cache down")
    r = c.call("GET", "/readyz")
    assert r.status_code == 200 and r.json()["status"] == "degraded"
    sent.append(c.send(u["token"], conv, "while down")["id"])
    private_redis.start()  # back, empty
    t0 = time.monotonic()
    wait_for(lambda: c.call("GET", "/readyz").json()["cache"] == "up", 5, "cache recovery")
    print(f"\ncache recovered {time.monotonic() - t0:.2f}s after Redis returned")
    sent.append(c.send(u["token"], conv, "after")["id"])
    hits = c.cache_metrics()["hits"]
    wait_for(lambda: c.cache_metrics()["hits"] > hits + 10, 10, "hits after recovery")
    done.set()
    for t in threads:
        t.join(60)
    assert bad == [], bad[:10]
    assert c.history(u["token"], conv)["messages"][0]["id"] == sent[-1]


def test_redis_paused_requests_not_held(chatd_factory, private_redis):
    d = chatd_factory(env={"REDIS_URL": private_redis.url, "CHATD_CACHE_TIMEOUT_MS": "50"})
    c = Client(d.base_url)
    u = c.signup()
    conv = c.conversation(u["token"])
    c.send(u["token"], conv, "x")
    c.history(u["token"], conv)
    private_redis.client().execute_command("CLIENT", "PAUSE", "3000", "ALL")
    worst = 0.0
    for _ in range(20):
        t = time.monotonic()
        page = c.history(u["token"], conv)
        worst = max(worst, time.monotonic() - t)
        assert page["messages"][0]["body"] == "x"
    print(f"\nworst read while Redis paused: {worst * 1000:.1f} ms")
    assert worst < 1.0


# ---- the epoch changes only for invalidations that did not reach Redis ----

def _cached_page(c, u, conv):
    """Reads the page until a read is a hit; returns the hits count then."""
    def hit():
        before = c.cache_metrics()["hits"]
        c.history(u["token"], conv)
        after = c.cache_metrics()["hits"]
        return after if after > before else None
    return wait_for(hit, 10, "a cache hit")


def _cache_is(c, state):
    return c.call("GET", "/readyz").json()["cache"] == state


def test_circuit_trip_without_writes_keeps_the_epoch(chatd_factory, private_redis):
    d = chatd_factory(env={"REDIS_URL": private_redis.url, "CHATD_CACHE_TIMEOUT_MS": "50"})
    c = Client(d.base_url)
    u = c.signup()
    conv = c.conversation(u["token"])
    c.send(u["token"], conv, "x")
    _cached_page(c, u, conv)
    rc = private_redis.client()
    epoch = rc.get("cache:epoch")
    assert epoch
    rc.execute_command("CLIENT", "PAUSE", "3000", "ALL")

    def tripped():  # each read waits one deadline, then reads the database
        assert c.history(u["token"], conv)["messages"][0]["body"] == "x"
        return _cache_is(c, "down")

    wait_for(tripped, 10, "the circuit to open")
    wait_for(lambda: _cache_is(c, "up"), 10, "the cache back")
    hits = c.cache_metrics()["hits"]
    assert c.history(u["token"], conv)["messages"][0]["body"] == "x"
    assert c.cache_metrics()["hits"] == hits + 1, "the entry filled before the trip was lost"
    assert rc.get("cache:epoch") == epoch
    assert not d.log_contains("event=cache_epoch_changed")


def test_invalidation_past_its_deadline_that_landed_keeps_the_epoch(chatd_factory,
                                                                    private_redis):
    d = chatd_factory(env={"REDIS_URL": private_redis.url, "CHATD_CACHE_TIMEOUT_MS": "50"})
    c = Client(d.base_url)
    u = c.signup()
    conv = c.conversation(u["token"])
    c.send(u["token"], conv, "old")
    _cached_page(c, u, conv)
    rc = private_redis.client()
    epoch = rc.get("cache:epoch")
    errors = c.cache_metrics()["errors"]
    # Shorter than the 20 deadlines after which the connection would be dropped.
    rc.execute_command("CLIENT", "PAUSE", "400", "ALL")
    new = c.send(u["token"], conv, "new")  # its version bump misses its deadline
    assert c.cache_metrics()["errors"] > errors
    # Until Redis answers the bump, every read of this instance goes to the database.
    assert c.history(u["token"], conv)["messages"][0]["id"] == new["id"]
    # The bump lands once the pause ends: the cache is used again, epoch unchanged.
    _cached_page(c, u, conv)
    assert c.history(u["token"], conv)["messages"][0]["id"] == new["id"]
    assert rc.get("cache:epoch") == epoch
    assert not d.log_contains("event=cache_epoch_changed")


def test_lost_invalidation_changes_the_epoch(chatd_factory, private_redis):
    d = chatd_factory(env={"REDIS_URL": private_redis.url, "CHATD_CACHE_TIMEOUT_MS": "50"})
    c = Client(d.base_url)
    u = c.signup()
    conv = c.conversation(u["token"])
    c.send(u["token"], conv, "old")
    _cached_page(c, u, conv)
    rc = private_redis.client()
    epoch = rc.get("cache:epoch")
    errors = c.cache_metrics()["errors"]
    rc.execute_command("CLIENT", "PAUSE", "1500", "WRITE")
    new = c.send(u["token"], conv, "new")  # the version bump waits behind the pause
    assert c.cache_metrics()["errors"] > errors
    # chatd's connection is killed with the bump still unrun: it never lands.
    rc.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")

    def epoch_changed():  # the epoch changes before the cache is used again
        assert c.history(u["token"], conv)["messages"][0]["id"] == new["id"]
        return d.log_contains("event=cache_epoch_changed")

    wait_for(epoch_changed, 10, "the epoch to change")
    assert rc.get("cache:epoch") != epoch
    _cached_page(c, u, conv)
    assert c.history(u["token"], conv)["messages"][0]["id"] == new["id"]


def test_bypass_at_start_sends_no_cache_commands(chatd_factory, private_redis):
    for env in ({"CACHE_BYPASS": "true"}, {"ENABLE_REDIS_CACHE": "false"}):
        d = chatd_factory(env={"REDIS_URL": private_redis.url, **env})
        c = Client(d.base_url)
        u = c.signup()
        conv = c.conversation(u["token"])
        rc = private_redis.client()
        before = cache_calls(rc)
        for i in range(20):
            c.send(u["token"], conv, f"m{i}")
            assert c.history(u["token"], conv)["messages"][0]["body"] == f"m{i}"
        assert cache_calls(rc) == before
        assert c.call("GET", "/readyz").json()["cache"] == "bypassed"
        assert c.cache_metrics()["bypass"] is True
        d.stop()


def test_bypass_at_run_time(chatd_factory, private_redis):
    d = chatd_factory(env={"REDIS_URL": private_redis.url, "CHATD_ADMIN_TOKEN": ADMIN})
    c = Client(d.base_url)
    u = c.signup()
    conv = c.conversation(u["token"])
    c.send(u["token"], conv, "a")
    c.history(u["token"], conv)
    rc = private_redis.client()
    assert c.call("POST", "/api/cache/bypass", json={"enabled": True}).status_code == 401
    assert c.call("POST", "/api/cache/bypass", u["token"], json={"enabled": True}).status_code == 401
    r = c.call("POST", "/api/cache/bypass", ADMIN, json={"enabled": "yes"})
    assert r.status_code == 400
    r = c.call("POST", "/api/cache/bypass", ADMIN, json={"enabled": True})
    assert r.status_code == 200 and r.json()["bypass"] is True
    assert d.metric("chatd_cache_bypass") == 1
    before = cache_calls(rc)
    for i in range(10):
        c.send(u["token"], conv, f"b{i}")
        assert c.history(u["token"], conv)["messages"][0]["body"] == f"b{i}"
    assert cache_calls(rc) == before
    r = c.call("POST", "/api/cache/bypass", ADMIN, json={"enabled": False})
    assert r.status_code == 200 and r.json()["bypass"] is False
    # Writes made while bypassed did not invalidate: the cache must not serve older pages.
    for _ in range(3):
        assert c.history(u["token"], conv)["messages"][0]["body"] == "b9"
    wait_for(lambda: cache_calls(rc) > before, 5, "cache in use again")


def test_evictions_under_tiny_maxmemory(chatd_factory, tmp_path):
    r = PrivateRedis(tmp_path, ["--maxmemory", "2mb", "--maxmemory-policy", "allkeys-lru"])
    try:
        d = chatd_factory(env={"REDIS_URL": r.url})
        c = Client(d.base_url)
        u = c.signup()
        conv = c.conversation(u["token"])
        big = "x" * 3900
        for i in range(100):
            c.send(u["token"], conv, big + str(i))
        for rounds in range(3):
            for off in range(0, 100):
                page = c.history(u["token"], conv, limit=20, offset=off)
                assert page["messages"][0]["body"] == big + str(99 - off)
        wait_for(lambda: c.cache_metrics()["evictions"] > 0, 10, "evictions reported")
        assert d.metric("chatd_cache_evictions_total") > 0
    finally:
        r.kill()


def test_delete_keys_by_pattern(chatd_factory, redis_client):
    d = chatd_factory(env={"CHATD_ADMIN_TOKEN": ADMIN})
    c = Client(d.base_url)
    u = c.signup()
    conv = c.conversation(u["token"])
    c.send(u["token"], conv, "a")
    def filled():
        for lim in (1, 2, 3):  # reads repeat until the cache took all three pages
            c.history(u["token"], conv, limit=lim)
        return len(find_keys(redis_client, f"msg:history:{conv}:*")) == 3

    wait_for(filled, 10, "fills")
    assert c.call("DELETE", f"/api/cache/keys?pattern=msg:history:{conv}:*").status_code == 401
    assert c.call("DELETE", "/api/cache/keys", ADMIN).status_code == 400
    r = c.call("DELETE", f"/api/cache/keys?pattern=msg:history:{conv}:*", ADMIN)
    assert r.status_code == 200, r.text
    assert r.json() == {"deleted": 3}
    assert find_keys(redis_client, f"msg:history:{conv}:*") == []
    assert c.history(u["token"], conv, limit=1)["messages"][0]["body"] == "a"
