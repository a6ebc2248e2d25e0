"""Edits and deletes (docs/api.md, "Messages"): PATCH and DELETE
.../messages/{message_id}, their error rows, tombstones in history, counts
without tombstones, the rev each change takes (and the ones that take none),
and the frames pushed to the members' streams."""

import pytest

from chatlib import (assert_error, assert_message, json_body, rand_chars)
from wsclient import WS


@pytest.fixture(scope="module")
def trio(api):
    return [api.signup() for _ in range(3)]


@pytest.fixture
def conv(api, trio):
    """A fresh conversation of trio[0] and trio[1] (trio[2] is an outsider)."""
    a, b, _ = trio
    return api.create_conversation(a["token"], member_ids=[b["id"]])


def latest_rev(api, token, cid):
    return api.events(token, cid, after_rev=0, limit=1)["rev"]


def stored(db, mid):
    with db.cursor() as cur:
        cur.execute("SELECT body, deleted, edited_at IS NOT NULL FROM messages WHERE id = %s", (mid,))
        return cur.fetchone()


# --- edit ---------------------------------------------------------------------------


def test_edit_happy_path(api, trio, conv, db):
    a, b, _ = trio
    m = api.send(a["token"], conv["id"], "tpyo", client_msg_id="e1")
    e = api.edit(a["token"], conv["id"], m["id"], "typo ✓")
    assert e == dict(m, body="typo ✓", edited_at=e["edited_at"])
    assert e["edited_at"] >= m["created_at"]
    assert stored(db, m["id"]) == ("typo ✓", False, True)
    # Every read shows the new body, for every member.
    h = api.history(b["token"], conv["id"])
    assert h["messages"] == [e]
    assert api.catch_up(b["token"], conv["id"], 0)["messages"] == [e]
    # A second edit moves edited_at on.
    e2 = api.edit(a["token"], conv["id"], m["id"], "typo fixed")
    assert e2["edited_at"] >= e["edited_at"] and e2["seq"] == m["seq"]
    assert api.count(a["token"], conv["id"]) == 1


def test_edit_takes_the_next_rev_and_writes_an_event(api, trio, conv):
    a = trio[0]
    m = api.send(a["token"], conv["id"], "v1")
    assert latest_rev(api, a["token"], conv["id"]) == 1
    e = api.edit(a["token"], conv["id"], m["id"], "v2")
    ev = api.events(a["token"], conv["id"], after_rev=1)
    assert ev["rev"] == 2
    assert ev["events"] == [{"type": "message_edited", "conversation_id": conv["id"], "rev": 2, "message": e}]


def test_edit_to_the_same_body_takes_no_rev(api, trio, conv):
    a = trio[0]
    m = api.send(a["token"], conv["id"], "same")
    r = api.edit_raw(a["token"], conv["id"], m["id"], "same")
    got = json_body(r, 200)
    assert got == m  # nothing changed: no edited_at either
    assert latest_rev(api, a["token"], conv["id"]) == 1
    e = api.edit(a["token"], conv["id"], m["id"], "other")
    assert latest_rev(api, a["token"], conv["id"]) == 2
    # The same edit sent again (a retry): the message as it is, no rev.
    assert json_body(api.edit_raw(a["token"], conv["id"], m["id"], "other"), 200) == e
    assert latest_rev(api, a["token"], conv["id"]) == 2


def test_edit_by_another_member_403(api, trio, conv):
    a, b, _ = trio
    m = api.send(a["token"], conv["id"], "mine")
    assert_error(api.edit_raw(b["token"], conv["id"], m["id"], "yours now"), 403, "forbidden")
    assert api.history(a["token"], conv["id"])["messages"] == [m]
    assert latest_rev(api, a["token"], conv["id"]) == 1


def test_edit_404_rows_and_non_member_byte_identical(api, trio, conv):
    a, b, outsider = trio
    m = api.send(a["token"], conv["id"], "secret")
    other = api.create_conversation(a["token"], member_ids=[b["id"]])
    m_other = api.send(a["token"], other["id"], "elsewhere")
    unknown = api.edit_raw(a["token"], conv["id"], 9_000_000_000_000_000_000, "x")
    assert_error(unknown, 404, "not_found")
    # A non-member learns nothing: the answer is the same bytes as for an unknown id.
    non_member = api.edit_raw(outsider["token"], conv["id"], m["id"], "x")
    assert_error(non_member, 404, "not_found")
    assert non_member.content == unknown.content
    assert non_member.headers["Content-Type"] == unknown.headers["Content-Type"]
    assert non_member.headers["Content-Length"] == unknown.headers["Content-Length"]
    unknown_conv = api.edit_raw(outsider["token"], 9_000_000_000_000_000_000, m["id"], "x")
    assert unknown_conv.status_code == 404 and unknown_conv.content == unknown.content
    # A message of another conversation, named under this one.
    assert api.edit_raw(a["token"], conv["id"], m_other["id"], "x").content == unknown.content
    # Path ids that are not positive 64-bit integers.
    for bad in ("0", "abc", "-1", "99999999999999999999"):
        assert_error(api.edit_raw(a["token"], conv["id"], bad, "x"), 404, "not_found")
    assert api.history(a["token"], conv["id"])["messages"] == [m]
    assert api.history(a["token"], other["id"])["messages"] == [m_other]


def test_edit_deleted_message_404(api, trio, conv):
    a, b, _ = trio
    m = api.send(a["token"], conv["id"], "gone soon")
    api.delete(a["token"], conv["id"], m["id"])
    assert_error(api.edit_raw(a["token"], conv["id"], m["id"], "back?"), 404, "not_found")
    assert_error(api.edit_raw(b["token"], conv["id"], m["id"], "back?"), 404, "not_found")
    assert api.history(a["token"], conv["id"])["messages"][0]["deleted"] is True


@pytest.mark.parametrize("body", ["", "x" * 4001, "é" * 4001, "😀" * 4001],
                         ids=["empty", "4001-ascii", "4001-2byte", "4001-4byte"])
def test_edit_bad_body_length_422(api, trio, conv, body):
    a = trio[0]
    m = api.send(a["token"], conv["id"], "ok")
    assert_error(api.edit_raw(a["token"], conv["id"], m["id"], body), 422, "invalid_field")
    assert api.history(a["token"], conv["id"])["messages"] == [m]


def test_edit_4000_code_points_ok(api, trio, conv):
    a = trio[0]
    m = api.send(a["token"], conv["id"], "short")
    body = rand_chars(4000, 0x1F300, 0x1F5FF)
    assert api.edit(a["token"], conv["id"], m["id"], body)["body"] == body


@pytest.mark.parametrize("payload", [{}, {"body": 1}, {"body": None}, {"body": ["x"]}, [], "hi", None],
                         ids=["empty", "int", "null", "array-body", "array", "string", "null-doc"])
def test_edit_bad_payload_400(api, trio, conv, payload):
    a = trio[0]
    m = api.send(a["token"], conv["id"], "ok")
    r = api.req("PATCH", f"/api/v1/conversations/{conv['id']}/messages/{m['id']}", token=a["token"],
                json=payload)
    assert_error(r, 400, "bad_request")


@pytest.mark.parametrize("raw", [b'{"body": ', b"hi", b'{"body": "\xff"}'],
                         ids=["truncated", "text", "invalid-utf8"])
def test_edit_malformed_400(api, trio, conv, raw):
    a = trio[0]
    m = api.send(a["token"], conv["id"], "ok")
    r = api.req("PATCH", f"/api/v1/conversations/{conv['id']}/messages/{m['id']}", token=a["token"],
                data=raw, headers={"Content-Type": "application/json"})
    assert_error(r, 400, "bad_request")


def test_edit_and_delete_need_a_token(api, trio, conv):
    a = trio[0]
    m = api.send(a["token"], conv["id"], "ok")
    assert_error(api.edit_raw(None, conv["id"], m["id"], "x"), 401, "unauthorized")
    assert_error(api.delete_raw("nope", conv["id"], m["id"]), 401, "unauthorized")


def test_message_route_405_with_allow(api, trio, conv):
    a = trio[0]
    m = api.send(a["token"], conv["id"], "ok")
    for method in ("GET", "POST", "PUT"):
        r = api.req(method, f"/api/v1/conversations/{conv['id']}/messages/{m['id']}", token=a["token"])
        assert_error(r, 405, "method_not_allowed")
        assert r.headers["Allow"] == "PATCH, DELETE"
    r = api.req("POST", f"/api/v1/conversations/{conv['id']}/events", token=a["token"])
    assert_error(r, 405, "method_not_allowed")
    assert r.headers["Allow"] == "GET"


# --- delete ---------------------------------------------------------------------------


def test_delete_makes_a_tombstone(api, trio, conv, db):
    a, b, _ = trio
    keep = api.send(b["token"], conv["id"], "keep")
    m = api.send(a["token"], conv["id"], "oops", client_msg_id="d1")
    api.delete(a["token"], conv["id"], m["id"])
    assert stored(db, m["id"]) == ("", True, True)  # no text kept
    h = api.history(b["token"], conv["id"])
    tomb = h["messages"][0]
    assert tomb == dict(m, body="", deleted=True, edited_at=tomb["edited_at"])
    assert tomb["edited_at"] >= m["created_at"]
    assert h["messages"][1] == keep
    assert api.catch_up(b["token"], conv["id"], 0)["messages"] == [keep, tomb]
    assert api.count(b["token"], conv["id"]) == 1
    # The event carries the tombstone.
    ev = api.events(b["token"], conv["id"], after_rev=2)
    assert ev["events"] == [{"type": "message_deleted", "conversation_id": conv["id"], "rev": 3,
                             "message": tomb}]
    # The idempotent send of the same client_msg_id answers with the tombstone, stores nothing.
    r = api.send_raw(a["token"], conv["id"], "oops", client_msg_id="d1")
    assert json_body(r, 200) == tomb
    assert api.count(a["token"], conv["id"]) == 1


def test_second_delete_is_204_and_takes_no_rev(api, trio, conv):
    a = trio[0]
    m = api.send(a["token"], conv["id"], "x")
    api.delete(a["token"], conv["id"], m["id"])
    tomb = api.history(a["token"], conv["id"])["messages"][0]
    assert latest_rev(api, a["token"], conv["id"]) == 2
    api.delete(a["token"], conv["id"], m["id"])
    assert latest_rev(api, a["token"], conv["id"]) == 2
    assert api.history(a["token"], conv["id"])["messages"][0] == tomb  # edited_at unchanged
    assert api.count(a["token"], conv["id"]) == 0


def test_delete_by_another_member_403(api, trio, conv):
    a, b, _ = trio
    m = api.send(a["token"], conv["id"], "mine")
    assert_error(api.delete_raw(b["token"], conv["id"], m["id"]), 403, "forbidden")
    assert api.history(b["token"], conv["id"])["messages"] == [m]
    assert api.count(b["token"], conv["id"]) == 1
    api.delete(a["token"], conv["id"], m["id"])
    # Someone else's tombstone is still not theirs.
    assert_error(api.delete_raw(b["token"], conv["id"], m["id"]), 403, "forbidden")


def test_delete_404_rows_and_non_member_byte_identical(api, trio, conv):
    a, b, outsider = trio
    m = api.send(a["token"], conv["id"], "x")
    other = api.create_conversation(a["token"], member_ids=[b["id"]])
    m_other = api.send(a["token"], other["id"], "elsewhere")
    unknown = api.delete_raw(a["token"], conv["id"], 9_000_000_000_000_000_000)
    assert_error(unknown, 404, "not_found")
    non_member = api.delete_raw(outsider["token"], conv["id"], m["id"])
    assert_error(non_member, 404, "not_found")
    assert non_member.content == unknown.content
    assert non_member.headers["Content-Length"] == unknown.headers["Content-Length"]
    assert api.delete_raw(a["token"], conv["id"], m_other["id"]).content == unknown.content
    assert api.delete_raw(outsider["token"], 9_000_000_000_000_000_000, m["id"]).content == unknown.content
    assert_error(api.delete_raw(a["token"], conv["id"], "0"), 404, "not_found")
    assert api.count(a["token"], conv["id"]) == 1
    assert api.count(a["token"], other["id"]) == 1


def test_count_after_deletes(api, trio, conv):
    a, b, _ = trio
    ms = [api.send((a, b)[i % 2]["token"], conv["id"], f"c{i}") for i in range(10)]
    assert api.count(a["token"], conv["id"]) == 10
    for n, m in enumerate(ms[::2], 1):
        owner = a if m["sender_id"] == a["id"] else b
        api.delete(owner["token"], conv["id"], m["id"])
        api.delete(owner["token"], conv["id"], m["id"])  # a second delete counts nothing
        assert api.count(a["token"], conv["id"]) == 10 - n
    # Tombstones stay in history, in seq order.
    h = api.history(a["token"], conv["id"])
    assert [m["seq"] for m in h["messages"]] == list(range(10, 0, -1))
    assert [m["deleted"] for m in h["messages"]] == [i % 2 == 0 for i in range(9, -1, -1)]
    assert all(m["body"] == "" for m in h["messages"] if m["deleted"])


# --- the stream -----------------------------------------------------------------------


def test_stream_gets_edited_and_deleted_frames(chatd, api, trio, conv):
    a, b, outsider = trio
    wb = WS.open(chatd.host, chatd.port, b["token"])
    wo = WS.open(chatd.host, chatd.port, outsider["token"])
    try:
        m = api.send(a["token"], conv["id"], "hello")
        f = wb.recv_json()
        assert f == {"type": "message", "conversation_id": conv["id"], "rev": 1, "message": m}
        e = api.edit(a["token"], conv["id"], m["id"], "hello, edited")
        f = wb.recv_json()
        assert f == {"type": "message_edited", "conversation_id": conv["id"], "rev": 2, "message": e}
        # Changes that take no rev push nothing: the next frame is the delete's.
        api.edit(a["token"], conv["id"], m["id"], "hello, edited")
        api.delete(a["token"], conv["id"], m["id"])
        f = wb.recv_json()
        assert f["type"] == "message_deleted" and f["rev"] == 3 and set(f) == {"type", "conversation_id", "rev",
                                                                                 "message"}
        assert_message(f["message"])
        assert f["message"] == api.history(a["token"], conv["id"])["messages"][0]
        assert f["message"]["deleted"] is True and f["message"]["body"] == ""
        api.delete(a["token"], conv["id"], m["id"])
        m2 = api.send(a["token"], conv["id"], "after")
        assert wb.recv_json() == {"type": "message", "conversation_id": conv["id"], "rev": 4, "message": m2}
        # The outsider's stream carried none of it: its first frames are of its own
        # conversation (being added to it, then its message).
        mine = api.create_conversation(a["token"], member_ids=[outsider["id"]])
        m3 = api.send(a["token"], mine["id"], "for you")
        assert wo.recv_json() == {"type": "added", "conversation_id": mine["id"]}
        assert wo.recv_json()["message"] == m3
    finally:
        wb.close_socket()
        wo.close_socket()
