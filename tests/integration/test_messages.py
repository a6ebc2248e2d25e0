"""Messages: send, history, count, freshness (docs/api.md, "Messages")."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from chatlib import (COUNT_KEYS, HISTORY_KEYS, MSG_KEYS, Api, assert_error, assert_message, assert_time,
                     is_pos_int, json_body, rand_chars, unique_name)


@pytest.fixture(scope="module")
def trio(api):
    return [api.signup() for _ in range(3)]


@pytest.fixture
def conv(api, trio):
    """A fresh conversation of trio[0] and trio[1] (trio[2] is an outsider)."""
    a, b, _ = trio
    return api.create_conversation(a["token"], member_ids=[b["id"]])


@pytest.fixture(scope="module")
def big(api, trio, chatd):
    """A conversation with 130 messages, sent in order; returns (conv, ids oldest first)."""
    a, b, _ = trio
    c = api.create_conversation(a["token"], member_ids=[b["id"]])
    ids = [api.send(a["token"] if i % 2 else b["token"], c["id"], f"m{i}")["id"] for i in range(130)]
    assert ids == sorted(ids)
    return c, ids


def send(api, token, cid, payload):
    return api.req("POST", f"/api/v1/conversations/{cid}/messages", token=token, json=payload)


# --- send ---------------------------------------------------------------------


def test_send_201_exact_shape_without_client_msg_id(api, trio, conv):
    a = trio[0]
    r = send(api, a["token"], conv["id"], {"body": "hi"})
    m = json_body(r, 201)
    assert set(m) == MSG_KEYS
    assert is_pos_int(m["id"])
    assert m["conversation_id"] == conv["id"]
    assert m["sender_id"] == a["id"]
    assert m["body"] == "hi"
    assert_time(m["created_at"])
    assert "client_msg_id" in m and m["client_msg_id"] is None


def test_send_201_with_client_msg_id(api, trio, conv):
    cm = unique_name("c")
    m = json_body(send(api, trio[1]["token"], conv["id"], {"body": "yo", "client_msg_id": cm}), 201)
    assert set(m) == MSG_KEYS
    assert m["client_msg_id"] == cm
    assert m["sender_id"] == trio[1]["id"]


def test_send_body_round_trips_exactly(api, trio, conv):
    a = trio[0]
    bodies = ['quote " backslash \\ slash /', "line\nbreak\ttab\r", "é ß 中文 😀 👩‍👩‍👧", "\u2028\u2029",
              " leading and trailing spaces ", "{\"json\": [1, 2]}", "<script>alert(1)</script>", "%s %d %n"]
    sent = [api.send(a["token"], conv["id"], b) for b in bodies]
    h = api.history(a["token"], conv["id"], limit=100)
    got = {m["id"]: m["body"] for m in h["messages"]}
    for m in sent:
        assert got[m["id"]] == m["body"]


def test_send_4000_code_points_ok(api, trio, conv):
    a = trio[0]
    for body in ["x" * 4000, "é" * 4000, rand_chars(4000, 0x1F300, 0x1F5FF)]:
        m = api.send(a["token"], conv["id"], body)
        assert len(m["body"]) == 4000
    h = api.history(a["token"], conv["id"], limit=3)
    assert all(len(m["body"]) == 4000 for m in h["messages"])


@pytest.mark.parametrize("body", ["", "x" * 4001, "é" * 4001, "😀" * 4001],
                         ids=["empty", "4001-ascii", "4001-2byte", "4001-4byte"])
def test_send_bad_body_length_422(api, trio, conv, body):
    assert_error(send(api, trio[0]["token"], conv["id"], {"body": body}), 422, "invalid_field")
    assert api.count(trio[0]["token"], conv["id"]) == 0


def test_send_client_msg_id_64_ok_65_422(api, trio, conv):
    a = trio[0]
    cm64 = unique_name("c") + "x" * (64 - 13)
    assert api.send(a["token"], conv["id"], "ok", client_msg_id=cm64)["client_msg_id"] == cm64
    cm64mb = rand_chars(64, 0x4E00, 0x9FA0)
    assert api.send(a["token"], conv["id"], "ok", client_msg_id=cm64mb)["client_msg_id"] == cm64mb
    assert_error(send(api, a["token"], conv["id"], {"body": "x", "client_msg_id": unique_name("c") + "x" * 52}),
                 422, "invalid_field")
    assert_error(send(api, a["token"], conv["id"], {"body": "x", "client_msg_id": rand_chars(65, 0x4E00, 0x9FA0)}),
                 422, "invalid_field")
    assert api.count(a["token"], conv["id"]) == 2


@pytest.mark.parametrize("cm", [123, 1.5, True, [], {"a": "b"}, ["x"]],
                         ids=["int", "float", "bool", "array", "object", "array-str"])
def test_send_client_msg_id_not_string_400(api, trio, conv, cm):
    assert_error(send(api, trio[0]["token"], conv["id"], {"body": "x", "client_msg_id": cm}), 400, "bad_request")


@pytest.mark.parametrize("body", [1, 1.5, None, True, [], {"text": "x"}, ["x"]],
                         ids=["int", "float", "null", "bool", "array", "object", "array-str"])
def test_send_body_not_string_400(api, trio, conv, body):
    assert_error(send(api, trio[0]["token"], conv["id"], {"body": body}), 400, "bad_request")


@pytest.mark.parametrize("payload", [{}, {"client_msg_id": "c1"}, [], "hi", None],
                         ids=["empty", "no-body", "array", "string", "null"])
def test_send_missing_body_or_not_object_400(api, trio, conv, payload):
    assert_error(send(api, trio[0]["token"], conv["id"], payload), 400, "bad_request")


@pytest.mark.parametrize("raw", [b'{"body": ', b'{"body": "x"', b"hi", b'{"body": "\xff"}',
                                 b'{"body": "a\xed\xa0\x80b"}', b'{"body": "x"} {"body": "y"}'],
                         ids=["truncated", "unclosed", "text", "invalid-utf8", "surrogate", "two-values"])
def test_send_malformed_400(api, trio, conv, raw):
    r = api.req("POST", f"/api/v1/conversations/{conv['id']}/messages", token=trio[0]["token"], data=raw,
                headers={"Content-Type": "application/json"})
    assert_error(r, 400, "bad_request")
    assert api.count(trio[0]["token"], conv["id"]) == 0


def test_send_nonmember_404(api, trio, conv):
    outsider = trio[2]
    assert_error(send(api, outsider["token"], conv["id"], {"body": "let me in"}), 404, "not_found")
    assert_error(send(api, outsider["token"], 9000000000000000000, {"body": "x"}), 404, "not_found")
    assert api.count(trio[0]["token"], conv["id"]) == 0


def test_send_ids_increase(api, trio, conv):
    ids = [api.send(trio[i % 2]["token"], conv["id"], f"n{i}")["id"] for i in range(10)]
    assert ids == sorted(ids) and len(set(ids)) == 10


# --- history ------------------------------------------------------------------


def test_history_envelope_exact_and_defaults(api, trio, big):
    c, ids = big
    r = api.history_raw(trio[0]["token"], c["id"])
    b = json_body(r, 200)
    assert set(b) == HISTORY_KEYS
    assert b["conversation_id"] == c["id"]
    assert b["limit"] == 50 and b["offset"] == 0
    assert [m["id"] for m in b["messages"]] == ids[::-1][:50]
    for m in b["messages"]:
        assert_message(m)
        assert set(m) == MSG_KEYS


def test_history_newest_first_bodies_and_senders(api, trio, big):
    c, ids = big
    b = api.history(trio[1]["token"], c["id"], limit=100)
    assert b["limit"] == 100 and b["offset"] == 0
    msgs = b["messages"]
    assert [m["id"] for m in msgs] == ids[::-1][:100]
    for m in msgs:
        i = ids.index(m["id"])
        assert m["body"] == f"m{i}"
        assert m["sender_id"] == (trio[0]["id"] if i % 2 else trio[1]["id"])
        assert m["client_msg_id"] is None


@pytest.mark.parametrize("limit", [1, 2, 49, 50, 51, 99, 100])
def test_history_limits(api, trio, big, limit):
    c, ids = big
    b = api.history(trio[0]["token"], c["id"], limit=limit)
    assert b["limit"] == limit
    assert [m["id"] for m in b["messages"]] == ids[::-1][:limit]


@pytest.mark.parametrize("offset", [0, 1, 50, 100, 129, 130, 131, 100000])
def test_history_offsets(api, trio, big, offset):
    c, ids = big
    b = api.history(trio[0]["token"], c["id"], limit=20, offset=offset)
    assert b["offset"] == offset and b["limit"] == 20
    assert [m["id"] for m in b["messages"]] == ids[::-1][offset:offset + 20]


def test_history_pages_cover_everything_once(api, trio, big):
    c, ids = big
    seen = []
    offset = 0
    while True:
        b = api.history(trio[0]["token"], c["id"], limit=17, offset=offset)
        if not b["messages"]:
            break
        seen += [m["id"] for m in b["messages"]]
        offset += 17
    assert seen == ids[::-1]


def test_history_before_id_keyset_paging(api, trio, big):
    c, ids = big
    seen = []
    before = None
    for _ in range(100):
        params = {"limit": 7}
        if before is not None:
            params["before_id"] = before
        b = api.history(trio[0]["token"], c["id"], **params)
        page = [m["id"] for m in b["messages"]]
        if not page:
            break
        if before is not None:
            assert all(i < before for i in page)
        seen += page
        before = page[-1]
    assert seen == ids[::-1]


def test_history_before_id_with_offset(api, trio, big):
    c, ids = big
    pivot = ids[100]
    older = [i for i in ids[::-1] if i < pivot]
    b = api.history(trio[0]["token"], c["id"], before_id=pivot, limit=10, offset=5)
    assert [m["id"] for m in b["messages"]] == older[5:15]
    assert b["offset"] == 5 and b["limit"] == 10
    # before_id past the newest returns from the newest; before the oldest returns nothing.
    b = api.history(trio[0]["token"], c["id"], before_id=ids[-1] + 1_000_000, limit=3)
    assert [m["id"] for m in b["messages"]] == ids[::-1][:3]
    b = api.history(trio[0]["token"], c["id"], before_id=ids[0], limit=3)
    assert b["messages"] == []


def test_history_empty_conversation(api, trio, conv):
    b = api.history(trio[0]["token"], conv["id"])
    assert b == {"conversation_id": conv["id"], "limit": 50, "offset": 0, "messages": []}


@pytest.mark.parametrize("query", [
    "limit=0", "limit=101", "limit=-1", "limit=abc", "limit=1.5", "limit=", "limit=1e2", "limit=10x",
    "limit=99999999999999999999", "limit=5&limit=5", "limit=5&limit=6",
    "offset=-1", "offset=100001", "offset=abc", "offset=1.5", "offset=", "offset=99999999999999999999",
    "offset=0&offset=0",
    "before_id=abc", "before_id=1.5", "before_id=5&before_id=6", "before_id=99999999999999999999",
], ids=lambda q: q.replace("&", "+"))
def test_history_bad_query_400(api, trio, big, query):
    c, _ = big
    assert_error(api.history_raw(trio[0]["token"], c["id"], query=query), 400, "bad_request")


def test_history_bad_query_also_400_on_empty_conversation(api, trio, conv):
    assert_error(api.history_raw(trio[0]["token"], conv["id"], query="limit=101"), 400, "bad_request")


def test_history_nonmember_404(api, trio, big):
    c, _ = big
    outsider = trio[2]
    assert_error(api.history_raw(outsider["token"], c["id"]), 404, "not_found")
    assert_error(api.history_raw(outsider["token"], c["id"], limit=5), 404, "not_found")
    assert_error(api.history_raw(outsider["token"], 9000000000000000000), 404, "not_found")


# --- count --------------------------------------------------------------------


def test_count_exact_shape(api, trio, big):
    c, ids = big
    r = api.count_raw(trio[0]["token"], c["id"])
    b = json_body(r, 200)
    assert set(b) == COUNT_KEYS
    assert b == {"conversation_id": c["id"], "count": len(ids)}


def test_count_after_n_sends(api, trio, conv):
    a, b, _ = trio
    assert api.count(a["token"], conv["id"]) == 0
    for i in range(1, 13):
        api.send((a if i % 3 else b)["token"], conv["id"], f"c{i}")
        assert api.count(b["token"], conv["id"]) == i


def test_count_nonmember_404(api, trio, big):
    c, _ = big
    assert_error(api.count_raw(trio[2]["token"], c["id"]), 404, "not_found")
    assert_error(api.count_raw(trio[2]["token"], 9000000000000000000), 404, "not_found")


def test_count_concurrent_sends(api, trio, conv, chatd):
    a = trio[0]

    def work(i):
        x = Api(chatd.base_url)
        try:
            return x.send(a["token"], conv["id"], f"p{i}")["id"]
        finally:
            x.close()

    with ThreadPoolExecutor(16) as ex:
        ids = list(ex.map(work, range(64)))
    assert len(set(ids)) == 64
    assert api.count(a["token"], conv["id"]) == 64
    h = api.history(a["token"], conv["id"], limit=100)
    assert sorted(m["id"] for m in h["messages"]) == sorted(ids)


# --- freshness ----------------------------------------------------------------


def test_freshness_after_each_send(api, trio, conv, chatd):
    """Once a send answered 201, the next history, count and metadata read include it."""
    a, b, _ = trio
    other = Api(chatd.base_url)  # a second client, its own connection
    try:
        for i in range(25):
            # Prime whatever caches exist.
            api.history(a["token"], conv["id"])
            api.history(a["token"], conv["id"], limit=10)
            other.history(b["token"], conv["id"])
            api.count(a["token"], conv["id"])
            json_body(other.get_conversation(b["token"], conv["id"]), 200)

            m = api.send(a["token"] if i % 2 else b["token"], conv["id"], f"fresh{i}")

            h = other.history(b["token"], conv["id"])
            assert h["messages"][0]["id"] == m["id"], f"history stale after send {i}"
            assert h["messages"][0] == m
            h = api.history(a["token"], conv["id"], limit=10)
            assert h["messages"][0]["id"] == m["id"]
            assert other.count(b["token"], conv["id"]) == i + 1
            assert api.count(a["token"], conv["id"]) == i + 1
            meta = json_body(other.get_conversation(b["token"], conv["id"]), 200)
            assert meta["last_message_at"] == m["created_at"]
    finally:
        other.close()


def test_freshness_of_older_pages(api, trio, conv):
    """Pages at an offset move by one after a send too."""
    a = trio[0]
    ids = [api.send(a["token"], conv["id"], f"o{i}")["id"] for i in range(12)]
    p = api.history(a["token"], conv["id"], limit=5, offset=5)
    assert [m["id"] for m in p["messages"]] == ids[::-1][5:10]
    new = api.send(a["token"], conv["id"], "newest")
    ids.append(new["id"])
    p = api.history(a["token"], conv["id"], limit=5, offset=5)
    assert [m["id"] for m in p["messages"]] == ids[::-1][5:10]


def test_large_history_page(api, trio, conv):
    """100 messages of 4,000 four-byte characters: a ~1.6 MB page arrives whole."""
    a = trio[0]
    bodies = [rand_chars(4000, 0x1F300, 0x1F5FF) for _ in range(100)]

    def work(i):
        x = Api(api.base_url)
        try:
            return x.send(a["token"], conv["id"], bodies[i])["id"]
        finally:
            x.close()

    with ThreadPoolExecutor(8) as ex:
        ids = list(ex.map(work, range(100)))
    h = api.history(a["token"], conv["id"], limit=100)
    assert len(h["messages"]) == 100
    got = {m["id"]: m["body"] for m in h["messages"]}
    assert all(got[i] == bodies[n] for n, i in enumerate(ids))


# --- freshness across instances ------------------------------------------------------


def test_freshness_across_instances(api, trio, chatd_factory):
    """A send acknowledged by one instance is seen at once by another sharing the stack."""
    other_inst = chatd_factory()
    b_api = Api(other_inst.base_url)
    try:
        a, b, c = trio
        conv = api.create_conversation(a["token"], member_ids=[b["id"]])
        for i in range(15):
            # Prime reads (and any caches) on instance B.
            b_api.history(b["token"], conv["id"])
            b_api.history(b["token"], conv["id"], limit=5, offset=1)
            b_api.count(b["token"], conv["id"])
            json_body(b_api.get_conversation(b["token"], conv["id"]), 200)

            m = api.send(a["token"], conv["id"], f"x{i}")

            h = b_api.history(b["token"], conv["id"])
            assert h["messages"][0]["id"] == m["id"], f"instance B stale after send {i}"
            assert b_api.count(b["token"], conv["id"]) == i + 1
            meta = json_body(b_api.get_conversation(b["token"], conv["id"]), 200)
            assert meta["last_message_at"] == m["created_at"]
            if i >= 1:
                p = b_api.history(b["token"], conv["id"], limit=5, offset=1)
                assert p["messages"][0]["id"] != m["id"]
                assert len(p["messages"]) == min(5, i)

        # Membership: added on A, usable on B at once (after B said 404 to the outsider).
        assert_error(b_api.get_conversation(c["token"], conv["id"]), 404, "not_found")
        assert_error(b_api.history_raw(c["token"], conv["id"]), 404, "not_found")
        assert api.add_member(a["token"], conv["id"], c["id"]).status_code == 204
        got = json_body(b_api.get_conversation(c["token"], conv["id"]), 200)
        assert got["member_count"] == 3
        assert b_api.history(c["token"], conv["id"])["messages"][0]["conversation_id"] == conv["id"]
        assert b_api.count(c["token"], conv["id"]) == 15
        m = b_api.send(c["token"], conv["id"], "c via B")
        assert api.history(a["token"], conv["id"])["messages"][0]["id"] == m["id"]
    finally:
        b_api.close()


def test_acknowledged_send_is_committed(api, trio, conv, db):
    """A 201 means the row is in the database, as answered."""
    a = trio[0]
    for cm in (None, unique_name("c")):
        m = api.send(a["token"], conv["id"], "durable ✓", client_msg_id=cm)
        with db.cursor() as cur:
            cur.execute("SELECT conversation_id, sender_id, body, client_msg_id, "
                        "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') "
                        "FROM messages WHERE id = %s", (m["id"],))
            row = cur.fetchone()
        assert row == (conv["id"], a["id"], "durable ✓", cm, m["created_at"])


def test_history_query_values_are_percent_decoded(api, trio, big):
    c, ids = big
    r = api.history_raw(trio[0]["token"], c["id"], query=f"limit=%35&offset=%31&before_id=%3{str(ids[50])[0]}"
                        f"{str(ids[50])[1:]}")
    body = json_body(r, 200)
    assert body["limit"] == 5 and body["offset"] == 1
    older = [i for i in ids[::-1] if i < ids[50]]
    assert [m["id"] for m in body["messages"]] == older[1:6]
