"""Stream frames of membership and read state (docs/api.md, "Realtime"):
`added` / `removed` to a user added or removed by someone else (members
listed at creation included, not the creator), `read` to every connection of
a user whose marker moved."""

import pytest

from chatlib import Api
from wsclient import WS


def ws_open(chatd, user):
    return WS.open(chatd.host, chatd.port, user["token"])


@pytest.fixture
def users(api):
    return [api.signup() for _ in range(3)]


def test_added_at_creation_and_by_add_not_to_the_creator(chatd, api, users):
    a, b, c = users
    wa, wb, wc = ws_open(chatd, a), ws_open(chatd, b), ws_open(chatd, c)
    try:
        conv = api.create_conversation(a["token"], member_ids=[b["id"]])["id"]
        assert wb.recv_json() == {"type": "added", "conversation_id": conv}
        assert api.add_member(b["token"], conv, c["id"]).status_code == 204
        assert wc.recv_json() == {"type": "added", "conversation_id": conv}
        # adding an existing member: nothing new; the creator got no frame at all
        assert api.add_member(b["token"], conv, c["id"]).status_code == 204
        m = api.send(a["token"], conv, "hi")
        for w in (wa, wb, wc):
            f = w.recv_json()
            assert f["type"] == "message" and f["message"]["id"] == m["id"], f
    finally:
        for w in (wa, wb, wc):
            w.close_socket()


def test_removed_by_the_creator_and_not_on_leave(chatd, api, users):
    a, b, c = users
    conv = api.create_conversation(a["token"], member_ids=[b["id"], c["id"]])["id"]
    wb, wc = ws_open(chatd, b), ws_open(chatd, c)
    try:
        r = api.req("DELETE", f"/api/v1/conversations/{conv}/members/{b['id']}", token=a["token"])
        assert r.status_code == 204
        assert wb.recv_json() == {"type": "removed", "conversation_id": conv}
        r = api.req("DELETE", f"/api/v1/conversations/{conv}/members/{c['id']}", token=c["token"])
        assert r.status_code == 204
        # the stream no longer carries the conversation to either of them
        m = api.send(a["token"], conv, "after")
        other = api.create_conversation(a["token"], member_ids=[b["id"], c["id"]])["id"]
        assert wb.recv_json() == {"type": "added", "conversation_id": other}
        assert wc.recv_json() == {"type": "added", "conversation_id": other}
        assert m["conversation_id"] == conv
    finally:
        wb.close_socket()
        wc.close_socket()


def test_read_frame_to_every_connection_of_the_user(chatd, api, users):
    a, b, _ = users
    conv = api.create_conversation(a["token"], member_ids=[b["id"]])["id"]
    api.send(a["token"], conv, "one")
    m2 = api.send(a["token"], conv, "two")
    w1, w2, wa = ws_open(chatd, b), ws_open(chatd, b), ws_open(chatd, a)
    try:
        r = api.req("POST", f"/api/v1/conversations/{conv}/read", token=b["token"], json={"seq": 2})
        assert r.status_code == 204
        for w in (w1, w2):
            assert w.recv_json() == {"type": "read", "conversation_id": conv, "seq": 2}
        # a marker that does not move sends nothing: the next frame is a's new message
        api.req("POST", f"/api/v1/conversations/{conv}/read", token=b["token"], json={"seq": 1})
        m3 = api.send(a["token"], conv, "three")
        f = w1.recv_json()
        assert f["type"] == "message" and f["message"]["id"] == m3["id"], f
        f = wa.recv_json()
        assert f["type"] == "message" and f["message"]["id"] == m3["id"], f
        assert m2["seq"] == 2
    finally:
        for w in (w1, w2, wa):
            w.close_socket()
