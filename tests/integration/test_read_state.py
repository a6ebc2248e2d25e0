"""Read state: POST …/read moves the caller's marker forward only (204),
422 above the last message, 404 for non-members, 400/422 for bad bodies; and
unread_count / last_read_seq in the inbox through a scripted story (others
send, I read, I send, someone deletes) (docs/api.md, "Read state")."""

import pytest

from chatlib import assert_error, json_body


def mark(api, token, cid, seq=None, body=None):
    return api.req("POST", f"/api/v1/conversations/{cid}/read", token=token,
                   json={"seq": seq} if body is None else body)


def entry(api, token, cid):
    """The caller's inbox entry of cid (walking every page)."""
    cursor = None
    while True:
        params = {"limit": 100}
        if cursor:
            params["cursor"] = cursor
        b = json_body(api.req("GET", "/api/v1/conversations", token=token, params=params), 200)
        for e in b["conversations"]:
            if e["conversation"]["id"] == cid:
                return e
        cursor = b["next_cursor"]
        if cursor is None:
            return None


@pytest.fixture
def trio(api):
    me, b, c = api.signup(), api.signup(), api.signup()
    cid = api.create_conversation(b["token"], member_ids=[me["id"], c["id"]])["id"]
    return {"me": me, "b": b, "c": c, "cid": cid}


def test_mark_204_forward_only(api, trio):
    me, cid = trio["me"], trio["cid"]
    for i in range(5):
        api.send(trio["b"]["token"], cid, f"m{i}")
    r = mark(api, me["token"], cid, 3)
    assert r.status_code == 204 and r.content == b""
    assert entry(api, me["token"], cid)["last_read_seq"] == 3
    assert mark(api, me["token"], cid, 1).status_code == 204  # lower: no-op
    assert entry(api, me["token"], cid)["last_read_seq"] == 3
    assert mark(api, me["token"], cid, 3).status_code == 204  # same: idempotent
    assert mark(api, me["token"], cid, 0).status_code == 204
    assert entry(api, me["token"], cid)["last_read_seq"] == 3
    assert mark(api, me["token"], cid, 5).status_code == 204  # the last message
    e = entry(api, me["token"], cid)
    assert e["last_read_seq"] == 5 and e["unread_count"] == 0


def test_mark_above_last_seq_422(api, trio):
    me, cid = trio["me"], trio["cid"]
    assert_error(mark(api, me["token"], cid, 1), 422, "invalid_field")  # no message yet
    api.send(trio["b"]["token"], cid, "one")
    assert_error(mark(api, me["token"], cid, 2), 422, "invalid_field")
    assert_error(mark(api, me["token"], cid, 2**62), 422, "invalid_field")
    assert entry(api, me["token"], cid)["last_read_seq"] == 0
    assert mark(api, me["token"], cid, 1).status_code == 204


@pytest.mark.parametrize("body", [
    {}, {"seq": "3"}, {"seq": 1.5}, {"seq": None}, {"seq": True}, {"seq": [1]}, {"other": 1},
], ids=["missing", "string", "float", "null", "bool", "array", "other-field"])
def test_mark_bad_body_400(api, trio, body):
    assert_error(mark(api, trio["me"]["token"], trio["cid"], body=body), 400, "bad_request")


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b"3", b"\xff\xfe"], ids=["empty", "broken", "array", "number", "utf8"])
def test_mark_malformed_json_400(api, trio, raw):
    r = api.req("POST", f"/api/v1/conversations/{trio['cid']}/read", token=trio["me"]["token"],
                data=raw, headers={"Content-Type": "application/json"})
    assert_error(r, 400, "bad_request")


def test_mark_negative_422(api, trio):
    assert_error(mark(api, trio["me"]["token"], trio["cid"], -1), 422, "invalid_field")


def test_mark_non_member_404_identical_to_unknown(api, trio):
    out = api.signup()
    api.send(trio["b"]["token"], trio["cid"], "x")
    r1 = mark(api, out["token"], trio["cid"], 1)
    r2 = mark(api, out["token"], 10**15, 1)
    assert_error(r1, 404, "not_found")
    assert r1.content == r2.content
    assert_error(mark(api, out["token"], "abc", 1), 404, "not_found")


def test_mark_needs_a_token(api, trio):
    assert_error(mark(api, None, trio["cid"], 0), 401, "unauthorized")


def test_sending_moves_the_senders_marker(api, trio):
    me, cid = trio["me"], trio["cid"]
    api.send(trio["b"]["token"], cid, "a")
    m = api.send(me["token"], cid, "b")
    e = entry(api, me["token"], cid)
    assert e["last_read_seq"] == m["seq"] == 2 and e["unread_count"] == 0


def try_delete(api, token, cid, mid):
    """Deletes a message through the contract's endpoint."""
    r = api.req("DELETE", f"/api/v1/conversations/{cid}/messages/{mid}", token=token)
    assert r.status_code == 204, r.text


def test_unread_story(api, trio):
    """Others send, I read, I send, others send, someone deletes."""
    me, b, c, cid = trio["me"], trio["b"], trio["c"], trio["cid"]
    e = entry(api, me["token"], cid)
    assert (e["unread_count"], e["last_read_seq"], e["last_message"]) == (0, 0, None)
    msgs = [api.send(b["token"], cid, "b1"), api.send(c["token"], cid, "c1"),
            api.send(b["token"], cid, "b2")]
    e = entry(api, me["token"], cid)
    assert (e["unread_count"], e["last_read_seq"]) == (3, 0)
    assert e["last_message"]["id"] == msgs[-1]["id"]
    assert mark(api, me["token"], cid, 2).status_code == 204
    e = entry(api, me["token"], cid)
    assert (e["unread_count"], e["last_read_seq"]) == (1, 2)
    # the others' counts are their own
    eb = entry(api, b["token"], cid)
    assert (eb["unread_count"], eb["last_read_seq"]) == (0, 3)
    ec = entry(api, c["token"], cid)
    assert (ec["unread_count"], ec["last_read_seq"]) == (1, 2)
    mine = api.send(me["token"], cid, "me1")
    e = entry(api, me["token"], cid)
    assert (e["unread_count"], e["last_read_seq"]) == (0, 4)
    assert e["last_message"]["id"] == mine["id"]
    later = [api.send(c["token"], cid, "c2"), api.send(b["token"], cid, "b3")]
    e = entry(api, me["token"], cid)
    assert (e["unread_count"], e["last_read_seq"]) == (2, 4)
    assert e["rev"] == 6
    # someone deletes one message above my marker, and one below it
    try_delete(api, c["token"], cid, later[0]["id"])
    try_delete(api, b["token"], cid, msgs[0]["id"])
    e = entry(api, me["token"], cid)
    assert (e["unread_count"], e["last_read_seq"]) == (1, 4)
    # the newest message deleted: last_message is its tombstone
    try_delete(api, b["token"], cid, later[1]["id"])
    e = entry(api, me["token"], cid)
    assert e["unread_count"] == 0
    assert e["last_message"]["id"] == later[1]["id"] and e["last_message"]["deleted"] is True
    assert e["last_message"]["body"] == ""
