"""Per-conversation seq (docs/api.md, "Messages"): concurrent sends from
several users to one conversation get seq 1..N with no gap and no repeat,
ids growing with seq, rev == N; history newest first by seq with before_id
keyset paging; after_seq catching up, oldest first, with its 400 rows."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from chatlib import Api, assert_error


@pytest.fixture(scope="module")
def trio(api):
    return [api.signup() for _ in range(3)]


@pytest.fixture(scope="module")
def filled(api, trio):
    """A conversation of 75 messages (seq 1..75), the 10th and 11th deleted."""
    a, b, _ = trio
    c = api.create_conversation(a["token"], member_ids=[b["id"]])
    msgs = [api.send((a, b)[i % 2]["token"], c["id"], f"f{i}") for i in range(75)]
    for m in msgs[9:11]:
        owner = a if m["sender_id"] == a["id"] else b
        api.delete(owner["token"], c["id"], m["id"])
    return c, [m["id"] for m in msgs]


def test_concurrent_sends_from_several_users(api, chatd):
    """4 users x 50 sends at once into one conversation, each user on its own
    threads and connections: seq is exactly 1..200, ids grow with seq, rev
    is 200 and every message event comes in seq order."""
    users = [api.signup() for _ in range(4)]
    conv = api.create_conversation(users[0]["token"], member_ids=[u["id"] for u in users[1:]])
    start = threading.Barrier(8)

    def work(k):
        u = users[k % 4]
        x = Api(chatd.base_url)
        try:
            start.wait(30)
            return [x.send(u["token"], conv["id"], f"u{k % 4}-{k}-{i}") for i in range(25)]
        finally:
            x.close()

    with ThreadPoolExecutor(8) as ex:
        sent = [m for ms in ex.map(work, range(8)) for m in ms]
    n = len(sent)
    assert n == 200
    assert sorted(m["seq"] for m in sent) == list(range(1, n + 1))  # no gap, no repeat
    by_seq = sorted(sent, key=lambda m: m["seq"])
    ids = [m["id"] for m in by_seq]
    assert ids == sorted(ids) and len(set(ids)) == n  # ids grow with seq
    # History agrees with the answers, newest first by seq.
    seen = []
    after = 0
    while True:
        page = api.catch_up(users[1]["token"], conv["id"], after, limit=100)["messages"]
        if not page:
            break
        seen += page
        after = page[-1]["seq"]
    assert seen == by_seq
    ev = api.events(users[2]["token"], conv["id"], limit=1000)
    assert ev["rev"] == n
    assert [e["rev"] for e in ev["events"]] == list(range(1, n + 1))
    assert [e["message"]["seq"] for e in ev["events"]] == list(range(1, n + 1))
    assert api.count(users[3]["token"], conv["id"]) == n


def test_history_newest_first_by_seq_with_tombstones(api, trio, filled):
    c, ids = filled
    h = api.history(trio[0]["token"], c["id"], limit=100)["messages"]
    assert [m["seq"] for m in h] == list(range(75, 0, -1))
    assert [m["id"] for m in h] == ids[::-1]
    assert [m["seq"] for m in h if m["deleted"]] == [11, 10]
    assert api.count(trio[0]["token"], c["id"]) == 73


def test_before_id_pages_by_seq(api, trio, filled):
    c, ids = filled
    seen = []
    before = None
    while True:
        params = {"limit": 8}
        if before is not None:
            params["before_id"] = before
        page = api.history(trio[1]["token"], c["id"], **params)["messages"]
        if not page:
            break
        seen += [m["id"] for m in page]
        before = page[-1]["id"]
    assert seen == ids[::-1]
    # A before_id that is no message of this conversation still cuts by id.
    between = ids[40] + 1 if ids[41] > ids[40] + 1 else ids[41]
    page = api.history(trio[1]["token"], c["id"], before_id=between, limit=3)["messages"]
    assert [m["id"] for m in page] == [i for i in ids[::-1] if i < between][:3]


def test_after_seq_paging_oldest_first(api, trio, filled):
    c, ids = filled
    a = trio[0]
    seen = []
    after = 0
    while True:
        b = api.catch_up(a["token"], c["id"], after, limit=7)
        assert b["limit"] == 7 and b["offset"] == 0
        page = b["messages"]
        if not page:
            break
        assert page[0]["seq"] == after + 1  # no gap between pages
        seen += page
        after = page[-1]["seq"]
    assert [m["id"] for m in seen] == ids
    assert [m["seq"] for m in seen] == list(range(1, 76))
    assert [m["seq"] for m in seen if m["deleted"]] == [10, 11]  # tombstones included
    b = api.catch_up(a["token"], c["id"], 70)
    assert b["limit"] == 50 and [m["seq"] for m in b["messages"]] == [71, 72, 73, 74, 75]
    assert api.catch_up(a["token"], c["id"], 75)["messages"] == []
    assert api.catch_up(a["token"], c["id"], 9_223_372_036_854_775_807)["messages"] == []


def test_after_seq_sees_new_messages(api, trio):
    a, b, _ = trio
    c = api.create_conversation(a["token"], member_ids=[b["id"]])
    assert api.catch_up(b["token"], c["id"], 0)["messages"] == []
    m1 = api.send(a["token"], c["id"], "one")
    assert api.catch_up(b["token"], c["id"], 0)["messages"] == [m1]
    m2 = api.send(a["token"], c["id"], "two")
    assert api.catch_up(b["token"], c["id"], 1)["messages"] == [m2]
    e = api.edit(a["token"], c["id"], m1["id"], "one!")
    assert api.catch_up(b["token"], c["id"], 0)["messages"] == [e, m2]


@pytest.mark.parametrize("query", [
    "after_seq=-1", "after_seq=abc", "after_seq=", "after_seq", "after_seq=1.5",
    "after_seq=99999999999999999999", "after_seq=1&after_seq=2",
    "after_seq=1&offset=0", "after_seq=1&offset=5", "offset=0&after_seq=0",
    "after_seq=1&before_id=5", "before_id=5&after_seq=1&limit=5", "after_seq=1&limit=101",
], ids=lambda q: q.replace("&", "+"))
def test_after_seq_bad_query_400(api, trio, filled, query):
    c, _ = filled
    assert_error(api.history_raw(trio[0]["token"], c["id"], query=query), 400, "bad_request")


def test_after_seq_non_member_404(api, trio, filled):
    c, _ = filled
    outsider = trio[2]
    r = api.history_raw(outsider["token"], c["id"], after_seq=0)
    assert_error(r, 404, "not_found")
    assert r.content == api.history_raw(outsider["token"], 9_000_000_000_000_000_000, after_seq=0).content
