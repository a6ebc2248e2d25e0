"""A stampede of cold reads of one page (docs/cache.md, "Coalescing"): 3,000
clients of 20 members read the same page at once, with Redis up and with Redis
down. Coalescing does not depend on Redis answering in time: each worker loads
the page at most twice (the load in flight and the one gathering the reads
that began after it started), not once per read, and checks the readers'
memberships in one statement per load. Counted in pg_stat_statements, and in
chatd_cache_reads_waiting / chatd_cache_coalesced_total. Loopback only;
bounded in count."""

import socket

import psycopg2
import pytest

from chatlib import Api, wait_for
from conftest import free_port

READS = 3000
WORKERS = 2
HISTORY = "%chat_history_page(%"  # sql/004_send_plans.sql
CHECK = "%user_id = ANY($2::bigint[])%"


def calls(db, like):
    with db.cursor() as cur:
        cur.execute("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query LIKE %s", (like,))
        return int(cur.fetchone()[0])


def read_answer(s):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise AssertionError(f"closed before an answer: {data[:200]!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int([h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")][0]
                 .split(b":")[1])
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            raise AssertionError("closed in an answer")
        body += chunk
    return head.split(b"\r\n")[0], body


@pytest.mark.parametrize("redis", ["up", "late", "down"])
def test_cold_stampede_of_one_page(chatd_factory, stack, db, redis):
    """up: the defaults (under the burst some lookups pass their 50 ms deadline);
    late: a 1 ms deadline, so that most lookups are late; down: no Redis at all."""
    env = {"CHATD_RATE_REQUEST": "0", "CHATD_RATE_SEND": "0", "CHATD_RATE_SIGNUP": "0"}
    if redis == "late":
        env["CHATD_CACHE_TIMEOUT_MS"] = "1"
    if redis == "down":
        env["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}"  # nothing listens there
    inst = chatd_factory(workers=WORKERS, env=env)
    api = Api(inst.base_url)
    try:
        owner = api.signup()
        members = [api.signup() for _ in range(19)]
        conv = api.create_conversation(owner["token"], member_ids=[m["id"] for m in members])
        for i in range(100):
            api.send(owner["token"], conv["id"], f"{i:03d} " + "x" * 600)
        readers = [owner] + members
    finally:
        api.close()
    with db.cursor() as cur:
        cur.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        cur.execute("SELECT pg_stat_statements_reset()")
    # Every request but its last two bytes, on 3,000 connections; then the last
    # bytes of all. The first load of each worker is held by a lock on messages
    # until every read waits for a load, so that the count below does not depend
    # on how fast the burst arrives: a read that began after the load in flight
    # started waits for the next one, which starts when it lands.
    reqs = [(f"GET /api/v1/conversations/{conv['id']}/messages?limit=100 HTTP/1.1\r\n"
             f"Host: x\r\nAuthorization: Bearer {readers[i % 20]['token']}\r\n\r\n").encode()
            for i in range(READS)]
    waiting = "chatd_cache_reads_waiting"
    assert inst.metric(waiting) == 0
    socks = []
    lock = psycopg2.connect(stack.pg_admin_dsn, connect_timeout=10)
    try:
        for r in reqs:
            s = socket.create_connection((inst.host, inst.port), timeout=60)
            s.sendall(r[:-2])
            socks.append(s)
        with lock.cursor() as cur:
            cur.execute("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
        for s in socks:
            s.sendall(b"\r\n")
        wait_for(lambda: inst.metric(waiting) >= READS, 60, interval=0.05,
                 what=f"{READS} reads waiting for a load")
        lock.rollback()
        bodies = set()
        for s in socks:
            status, body = read_answer(s)
            assert status.startswith(b"HTTP/1.1 200"), status
            bodies.add(body)
    finally:
        lock.close()
        for s in socks:
            s.close()
    assert len(bodies) == 1
    assert inst.metric(waiting) == 0
    page = calls(db, HISTORY)
    checks = calls(db, CHECK)
    shared = inst.metric("chatd_cache_coalesced_total")
    errors = inst.metric("chatd_cache_errors_total")
    print(f"\n{READS} cold reads of one page by 20 members, Redis {redis}, {WORKERS} workers: "
          f"{page} page queries, {checks} membership checks, {shared:.0f} reads shared a load, "
          f"{errors:.0f} cache errors")
    # At most one load and one gathering load per key and worker (docs/cache.md,
    # "Coalescing"); every other read shares one. Without coalescing it was one
    # query per read (2,659-3,000 for these 3,000 reads).
    assert 1 <= page <= 2 * WORKERS, f"{page} page queries for {READS} reads on {WORKERS} workers"
    assert shared >= READS - page
    assert checks <= page
