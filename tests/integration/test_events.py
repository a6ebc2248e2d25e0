"""A conversation's events (docs/api.md, "Messages": GET .../events): every
send, edit and delete takes the next rev; pages in ascending rev from
after_rev + 1, each message in its current state; parameters and 404s."""

import random

import pytest

from chatlib import assert_error, json_body, wait_for


@pytest.fixture(scope="module")
def trio(api):
    return [api.signup() for _ in range(3)]


@pytest.fixture
def conv(api, trio):
    a, b, _ = trio
    return api.create_conversation(a["token"], member_ids=[b["id"]])


def all_events(api, token, cid, after_rev=0, limit=1000):
    out = []
    while True:
        page = api.events(token, cid, after_rev=after_rev, limit=limit)
        if not page["events"]:
            return out, page["rev"]
        out += page["events"]
        after_rev = page["events"][-1]["rev"]


def test_empty_conversation(api, trio, conv):
    r = api.events_raw(trio[0]["token"], conv["id"])
    assert json_body(r, 200) == {"conversation_id": conv["id"], "rev": 0, "events": []}


def test_events_contiguous_with_edits_and_deletes_interleaved(api, trio, conv):
    """A scripted mix of sends, edits, deletes and no-op changes: the log has
    exactly one event per change, revs 1..N, the right types, and every
    message in its current state."""
    a, b, _ = trio
    users = {a["id"]: a, b["id"]: b}
    rnd = random.Random(10)
    expected = []  # (type, message id) per rev
    live = {}      # id -> sender of the messages not deleted
    bodies = {}    # id -> body of the live messages
    dead = []      # (id, sender) of the deleted ones
    noops = 0
    for i in range(120):
        op = rnd.random()
        if op < 0.5 or not live:
            u = rnd.choice((a, b))
            m = api.send(u["token"], conv["id"], f"s{i}")
            live[m["id"]], bodies[m["id"]] = u["id"], m["body"]
            expected.append(("message", m["id"]))
        elif op < 0.75:
            mid = rnd.choice(sorted(live))
            bodies[mid] = api.edit(users[live[mid]]["token"], conv["id"], mid, f"e{i}")["body"]
            expected.append(("message_edited", mid))
        elif op < 0.9:
            mid = rnd.choice(sorted(live))
            dead.append((mid, live.pop(mid)))
            api.delete(users[dead[-1][1]]["token"], conv["id"], mid)
            expected.append(("message_deleted", mid))
        else:
            # No-op changes take no rev: an edit to the same body, a second delete.
            mid = rnd.choice(sorted(live))
            r = api.edit_raw(users[live[mid]]["token"], conv["id"], mid, bodies[mid])
            assert json_body(r, 200)["body"] == bodies[mid]
            if dead:
                mid, sender = rnd.choice(dead)
                api.delete(users[sender]["token"], conv["id"], mid)
            noops += 1
    assert noops > 0
    # Messages in their current state: from the catch-up history (oldest first).
    current = {}
    after = 0
    while True:
        page = api.catch_up(a["token"], conv["id"], after, limit=100)["messages"]
        if not page:
            break
        current.update({m["id"]: m for m in page})
        after = page[-1]["seq"]
    events, rev = all_events(api, b["token"], conv["id"], limit=7)
    assert rev == len(expected)
    assert [e["rev"] for e in events] == list(range(1, len(expected) + 1))
    assert [(e["type"], e["message"]["id"]) for e in events] == expected
    for e in events:
        assert e["message"] == current[e["message"]["id"]]
        assert e["message"]["deleted"] == (e["message"]["id"] not in live)
    # The "message" events come in seq order, seq 1..n.
    seqs = [e["message"]["seq"] for e in events if e["type"] == "message"]
    assert seqs == list(range(1, len(seqs) + 1))
    # From any after_rev: exactly the events above it, in order.
    for after_rev in (0, 1, 17, len(expected) - 1, len(expected), len(expected) + 5):
        page = api.events(a["token"], conv["id"], after_rev=after_rev, limit=1000)
        assert page["rev"] == len(expected)
        assert page["events"] == events[after_rev:]


def test_limit_and_defaults(api, trio, conv):
    a = trio[0]
    for i in range(105):
        api.send(a["token"], conv["id"], f"m{i}")
    page = api.events(a["token"], conv["id"])
    assert page["rev"] == 105
    assert [e["rev"] for e in page["events"]] == list(range(1, 101))
    page = api.events(a["token"], conv["id"], after_rev=100)
    assert [e["rev"] for e in page["events"]] == list(range(101, 106))
    assert [e["rev"] for e in api.events(a["token"], conv["id"], limit=1)["events"]] == [1]
    page = api.events(a["token"], conv["id"], limit=1000)
    assert len(page["events"]) == 105
    assert all(e["type"] == "message" for e in page["events"])
    assert [e["message"]["body"] for e in page["events"]] == [f"m{i}" for i in range(105)]


@pytest.mark.parametrize("query", [
    "limit=0", "limit=1001", "limit=-1", "limit=abc", "limit=1.5", "limit=", "limit",
    "limit=99999999999999999999", "limit=5&limit=5",
    "after_rev=-1", "after_rev=abc", "after_rev=", "after_rev=1e3", "after_rev=1&after_rev=1",
    "after_rev=99999999999999999999",
], ids=lambda q: q.replace("&", "+"))
def test_bad_query_400(api, trio, conv, query):
    assert_error(api.events_raw(trio[0]["token"], conv["id"], query=query), 400, "bad_request")


def test_non_member_404_like_an_unknown_conversation(api, trio, conv):
    a, _, outsider = trio
    api.send(a["token"], conv["id"], "private")
    unknown = api.events_raw(outsider["token"], 9_000_000_000_000_000_000)
    assert_error(unknown, 404, "not_found")
    r = api.events_raw(outsider["token"], conv["id"])
    assert_error(r, 404, "not_found")
    assert r.content == unknown.content
    assert_error(api.events_raw(a["token"], "0"), 404, "not_found")
    assert_error(api.events_raw(None, conv["id"]), 401, "unauthorized")


def test_member_added_later_sees_the_whole_log(api, trio, conv):
    a, b, c = trio
    m = api.send(a["token"], conv["id"], "before c")
    assert_error(api.events_raw(c["token"], conv["id"]), 404, "not_found")
    assert api.add_member(a["token"], conv["id"], c["id"]).status_code == 204
    page = api.events(c["token"], conv["id"])
    assert [e["message"] for e in page["events"]] == [m]


def test_events_and_after_seq_pages_are_cached_with_their_ttls(chatd, api, trio, conv, redis_client):
    """conv:events:{id}:{after_rev}:{limit} (60 s) and the after_seq history key
    (30 s, as the newest page): a miss fills, the same read then hits with the
    same bytes, and a write makes the next read fresh."""
    a = trio[0]
    cid = conv["id"]
    m = api.send(a["token"], cid, "one")
    reads = [
        ("events", f"/api/v1/conversations/{cid}/events", f"conv:events:{cid}:0:100:*", 60),
        ("events", f"/api/v1/conversations/{cid}/events?after_rev=0&limit=7", f"conv:events:{cid}:0:7:*", 60),
        ("history", f"/api/v1/conversations/{cid}/messages?after_seq=0", f"msg:history:{cid}:50:0:a0:*", 30),
    ]
    for kind, path, pattern, ttl in reads:
        hits = chatd.metric("chatd_cache_hits_total", {"kind": kind})
        first = api.req("GET", path, token=a["token"])
        assert first.status_code == 200
        keys = wait_for(lambda: [k.decode() for k in redis_client.scan_iter(match=pattern, count=1000)], 5,
                        what=f"fill of {pattern}")
        assert len(keys) == 1, keys
        assert ttl - 5 <= redis_client.ttl(keys[0]) <= ttl, pattern
        second = api.req("GET", path, token=a["token"])
        assert second.status_code == 200 and second.content == first.content
        assert chatd.metric("chatd_cache_hits_total", {"kind": kind}) >= hits + 1, kind
    api.edit(a["token"], cid, m["id"], "one, edited")
    for _, path, _, _ in reads:
        body = json_body(api.req("GET", path, token=a["token"]), 200)
        msgs = [e["message"] for e in body["events"]] if "events" in body else body["messages"]
        assert msgs[-1]["body"] == "one, edited", path
