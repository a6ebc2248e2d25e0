"""Realtime: GET /api/v1/stream (docs/api.md, "Realtime").

Raw sockets (wsclient.py) for protocol strictness; every wait is for a frame
or a close with a deadline, never a sleep.
"""

import json
import struct

import pytest

from chatlib import Api, assert_message, get_metrics, wait_for
from wsclient import WS, handshake


@pytest.fixture
def users(api):
    return [api.signup() for _ in range(3)]


def ws_open(chatd, user, **kw):
    return WS.open(chatd.host, chatd.port, user["token"], **kw)


def push_of(ws, timeout=10):
    m = ws.recv_json(timeout)
    assert m["type"] == "message" and set(m) == {"type", "conversation_id", "rev", "message"}, m
    assert_message(m["message"])
    assert m["conversation_id"] == m["message"]["conversation_id"]
    assert isinstance(m["rev"], int) and m["rev"] >= m["message"]["seq"]
    return m["message"]


# --- handshake -----------------------------------------------------------------


def test_no_token_is_401_without_upgrade(chatd):
    hs = handshake(chatd.host, chatd.port)
    try:
        assert hs.status == 401
        assert "upgrade" not in hs.headers and "sec-websocket-accept" not in hs.headers
        assert hs.headers["content-type"].startswith("application/json")
        assert hs.json()["error"]["code"] == "unauthorized"
        assert set(hs.json()["error"]) == {"code", "message"}
    finally:
        hs.sock.close()


@pytest.mark.parametrize("how", ["header", "query"])
def test_unknown_token_is_401(chatd, how):
    kw = {"token": "nope" * 10} if how == "header" else {"query_token": "nope" * 10}
    hs = handshake(chatd.host, chatd.port, **kw)
    try:
        assert hs.status == 401
        assert hs.json()["error"]["code"] == "unauthorized"
    finally:
        hs.sock.close()


def test_upgrade_with_header_and_with_query_token(chatd, users):
    a = users[0]
    before = get_metrics(chatd.base_url).value("chatd_connections_open", {"kind": "websocket"})
    w1 = ws_open(chatd, a)
    w2 = WS(handshake(chatd.host, chatd.port, query_token=a["token"]))
    try:
        wait_for(lambda: get_metrics(chatd.base_url).value(
            "chatd_connections_open", {"kind": "websocket"}) >= before + 2,
                 10, what="two websocket connections in the gauge")
    finally:
        w1.close_socket()
        w2.close_socket()


def test_bad_handshakes(chatd, users):
    tok = users[0]["token"]
    hs = handshake(chatd.host, chatd.port, token=tok, key="")
    assert hs.status == 400 and hs.json()["error"]["code"] == "bad_request"
    hs.sock.close()
    hs = handshake(chatd.host, chatd.port, token=tok, key="not-a-key")
    assert hs.status == 400 and hs.json()["error"]["code"] == "bad_request"
    hs.sock.close()
    hs = handshake(chatd.host, chatd.port, token=tok, version="8")
    assert hs.status == 426 and hs.headers.get("sec-websocket-version") == "13"
    assert hs.json()["error"]["code"] == "bad_request"
    hs.sock.close()
    # a plain GET (no upgrade at all)
    r = Api(chatd.base_url).req("GET", "/api/v1/stream", token=tok)
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
    r = Api(chatd.base_url).req("POST", "/api/v1/stream", token=tok)
    assert r.status_code == 405 and r.headers["Allow"] == "GET"


def test_frames_pipelined_after_the_handshake_are_read(chatd, users):
    from wsclient import frame
    hs = handshake(chatd.host, chatd.port, token=users[0]["token"], after=frame(9, b"early"))
    ws = WS(hs)
    try:
        fin, op, payload = ws.recv_frame()
        assert (op, payload) == (10, b"early")
    finally:
        ws.close_socket()


# --- pushes --------------------------------------------------------------------


def test_rest_send_is_pushed_to_members_only(chatd, api, users):
    a, b, c = users
    conv = api.create_conversation(a["token"], member_ids=[b["id"]])
    other = api.create_conversation(a["token"], member_ids=[c["id"]])
    wb, wc = ws_open(chatd, b), ws_open(chatd, c)
    try:
        m = api.send(a["token"], conv["id"], "hello b", client_msg_id="k1")
        got = push_of(wb)
        assert got == m
        # c is not a member of conv: its first frame is the message of its own conversation
        m2 = api.send(a["token"], other["id"], "hello c")
        assert push_of(wc) == m2
        # a retry (200) stores nothing and pushes nothing new
        r = api.send_raw(a["token"], conv["id"], "hello b", client_msg_id="k1")
        assert r.status_code == 200
        m3 = api.send(a["token"], conv["id"], "after retry")
        assert push_of(wb) == m3
    finally:
        wb.close_socket()
        wc.close_socket()


def test_conversation_joined_after_connecting(chatd, api, users):
    a, b, _ = users
    wb = ws_open(chatd, b)
    try:
        conv = api.create_conversation(a["token"])
        assert api.add_member(a["token"], conv["id"], b["id"]).status_code == 204
        # added by someone else: told so first (docs/api.md, "Realtime")
        assert wb.recv_json() == {"type": "added", "conversation_id": conv["id"]}
        m = api.send(a["token"], conv["id"], "welcome")
        assert push_of(wb) == m
    finally:
        wb.close_socket()


def test_send_over_websocket_acks_and_pushes(chatd, api, users):
    a, b, _ = users
    conv = api.create_conversation(a["token"], member_ids=[b["id"]])
    wa, wb = ws_open(chatd, a), ws_open(chatd, b)
    try:
        wa.send_json({"type": "send", "conversation_id": conv["id"], "body": "via ws",
                      "client_msg_id": "ws-1"})
        frames = [wa.recv_json(), wa.recv_json()]  # the ack and the sender's own push
        ack = next(f for f in frames if f["type"] == "ack")
        assert set(ack) == {"type", "client_msg_id", "message"}
        assert ack["client_msg_id"] == "ws-1"
        msg = ack["message"]
        assert_message(msg)
        assert msg["body"] == "via ws" and msg["sender_id"] == a["id"]
        assert msg["client_msg_id"] == "ws-1"
        assert any(f["type"] == "message" and f["message"] == msg for f in frames)
        assert push_of(wb) == msg
        hist = api.history(a["token"], conv["id"])
        assert hist["messages"][0] == msg
        # the same client_msg_id again: the original, acknowledged, not pushed again
        wa.send_json({"type": "send", "conversation_id": conv["id"], "body": "via ws",
                      "client_msg_id": "ws-1"})
        ack2 = wa.recv_json()
        assert ack2["type"] == "ack" and ack2["message"] == msg
        # without a client_msg_id
        wa.send_json({"type": "send", "conversation_id": conv["id"], "body": "no id"})
        frames = [wa.recv_json(), wa.recv_json()]
        ack3 = next(f for f in frames if f["type"] == "ack")
        assert ack3["client_msg_id"] is None and ack3["message"]["client_msg_id"] is None
        assert push_of(wb) == ack3["message"]
    finally:
        wa.close_socket()
        wb.close_socket()


def assert_error_frame(f, code, cmid=None):
    assert f["type"] == "error" and set(f) == {"type", "client_msg_id", "error"}, f
    assert f["client_msg_id"] == cmid
    assert set(f["error"]) == {"code", "message"} and f["error"]["code"] == code, f


def test_malformed_messages_get_error_frames_and_the_connection_stays(chatd, api, users):
    a, b, c = users
    conv = api.create_conversation(a["token"], member_ids=[b["id"]])
    wa = ws_open(chatd, a)
    try:
        wa.send(1, "not json")
        assert_error_frame(wa.recv_json(), "bad_request")
        wa.send(1, "[1, 2]")
        assert_error_frame(wa.recv_json(), "bad_request")
        wa.send_json({"type": "dance"})
        assert_error_frame(wa.recv_json(), "bad_request")
        wa.send_json({"body": "no type"})
        assert_error_frame(wa.recv_json(), "bad_request")
        wa.send_json({"type": "send", "conversation_id": "7", "body": "x", "client_msg_id": "e1"})
        assert_error_frame(wa.recv_json(), "bad_request", "e1")
        wa.send_json({"type": "send", "conversation_id": conv["id"], "body": 5, "client_msg_id": "e2"})
        assert_error_frame(wa.recv_json(), "bad_request", "e2")
        wa.send_json({"type": "send", "conversation_id": conv["id"], "body": "x", "client_msg_id": 5})
        assert_error_frame(wa.recv_json(), "bad_request")
        wa.send_json({"type": "send", "conversation_id": conv["id"], "body": "", "client_msg_id": "e3"})
        assert_error_frame(wa.recv_json(), "invalid_field", "e3")
        wa.send_json({"type": "send", "conversation_id": conv["id"], "body": "x" * 4001})
        assert_error_frame(wa.recv_json(), "invalid_field")
        wa.send(2, b"\x00\x01")
        assert_error_frame(wa.recv_json(), "bad_request")
        # a conversation the caller is not in: 404 as in REST, no existence leak
        other = api.create_conversation(c["token"])
        wa.send_json({"type": "send", "conversation_id": other["id"], "body": "x", "client_msg_id": "e4"})
        assert_error_frame(wa.recv_json(), "not_found", "e4")
        wa.send_json({"type": "send", "conversation_id": 9_000_000_000, "body": "x"})
        assert_error_frame(wa.recv_json(), "not_found")
        # still up
        wa.send_json({"type": "send", "conversation_id": conv["id"], "body": "fine", "client_msg_id": "ok"})
        frames = [wa.recv_json(), wa.recv_json()]
        assert any(f["type"] == "ack" and f["client_msg_id"] == "ok" for f in frames)
    finally:
        wa.close_socket()


# --- protocol ------------------------------------------------------------------


def test_unmasked_frame_fails_with_1002(chatd, users):
    ws = ws_open(chatd, users[0])
    try:
        ws.send(1, '{"type":"send"}', mask=False)
        assert ws.recv_close() == 1002
        assert ws.wait_eof(10)
    finally:
        ws.close_socket()


@pytest.mark.parametrize("payload,code", [(b"\xc3\x28", 1007), (b"a" * 70000, 1009)])
def test_invalid_utf8_and_too_big(chatd, users, payload, code):
    ws = ws_open(chatd, users[0])
    try:
        ws.send(1, payload)
        assert ws.recv_close() == code
        assert ws.wait_eof(10)
    finally:
        ws.close_socket()


def test_ping_pong_and_fragments(chatd, api, users):
    a, b, _ = users
    conv = api.create_conversation(a["token"])
    ws = ws_open(chatd, a)
    try:
        ws.send(9, b"are you there")
        fin, op, payload = ws.recv_frame()
        assert (fin, op, payload) == (True, 10, b"are you there")
        text = json.dumps({"type": "send", "conversation_id": conv["id"], "body": "in parts"})
        ws.send(1, text[:10], fin=False)
        ws.send(9, b"between")
        ws.send(0, text[10:20], fin=False)
        ws.send(0, text[20:], fin=True)
        assert ws.recv_frame()[1:] == (10, b"between")
        frames = [ws.recv_json(), ws.recv_json()]
        assert any(f["type"] == "ack" and f["message"]["body"] == "in parts" for f in frames)
    finally:
        ws.close_socket()


def test_close_handshake(chatd, users):
    ws = ws_open(chatd, users[0])
    try:
        ws.send(8, struct.pack("!H", 1000) + b"bye")
        assert ws.recv_close() == 1000
        assert ws.wait_eof(10)
    finally:
        ws.close_socket()


def test_silent_client_is_pinged_then_dropped(chatd_factory, stack):
    inst = chatd_factory(env={"CHATD_WS_PING_INTERVAL_MS": "300"})
    a = Api(inst.base_url).signup()
    ws = WS.open(inst.host, inst.port, a["token"])
    try:
        fin, op, payload = ws.recv_frame(5)
        assert op == 9  # the server's ping
        # we answer nothing: the server drops us after another interval
        assert ws.wait_eof(5)
        ws2 = WS.open(inst.host, inst.port, a["token"])
        for _ in range(3):  # a client that answers stays
            fin, op, payload = ws2.recv_frame(5)
            assert op == 9
            ws2.send(10, payload)
        ws2.send(9, b"alive")
        assert ws2.recv_frame(5)[1:] == (10, b"alive")
        ws2.close_socket()
    finally:
        ws.close_socket()


# --- across workers and instances ----------------------------------------------


def test_delivery_across_workers_without_redis(chatd_factory, stack):
    """Cache disabled: one instance with two workers still delivers, exactly once per socket."""
    inst = chatd_factory(env={"ENABLE_REDIS_CACHE": "false"}, workers=2)
    api = Api(inst.base_url)
    a, b = api.signup(), api.signup()
    conv = api.create_conversation(a["token"], member_ids=[b["id"]])
    socks = [WS.open(inst.host, inst.port, b["token"]) for _ in range(6)]
    try:
        m1 = api.send(a["token"], conv["id"], "one")
        m2 = api.send(a["token"], conv["id"], "two")
        for s in socks:
            assert push_of(s) == m1
            assert push_of(s) == m2  # the next frame is m2, not m1 again
    finally:
        for s in socks:
            s.close_socket()


def test_send_on_one_instance_reaches_a_socket_on_another(chatd_factory, stack):
    a_inst = chatd_factory(workers=2)
    b_inst = chatd_factory(workers=2)
    api_a, api_b = Api(a_inst.base_url), Api(b_inst.base_url)
    alice, bob = api_a.signup(), api_a.signup()
    conv = api_a.create_conversation(alice["token"], member_ids=[bob["id"]])
    wb = [WS.open(b_inst.host, b_inst.port, bob["token"]) for _ in range(3)]
    wa = WS.open(a_inst.host, a_inst.port, bob["token"])
    wsend = WS.open(b_inst.host, b_inst.port, alice["token"])
    try:
        m = api_a.send(alice["token"], conv["id"], "from A")
        for s in wb + [wa]:
            assert push_of(s) == m
        # and back: a WebSocket send on B reaches bob's socket on A
        wsend.send_json({"type": "send", "conversation_id": conv["id"], "body": "from B"})
        frames = [wsend.recv_json(), wsend.recv_json()]
        ack = next(f for f in frames if f["type"] == "ack")
        assert push_of(wa) == ack["message"]
        for s in wb:
            assert push_of(s) == ack["message"]
    finally:
        for s in wb + [wa, wsend]:
            s.close_socket()


def test_redis_lost_and_back_with_sockets_open(chatd_factory, tmp_path):
    """Redis dies with sockets open: each instance still delivers its own sends;
    once Redis is back both subscribe again and deliver across instances, once."""
    from test_cache import PrivateRedis
    redis_srv = PrivateRedis(tmp_path)
    try:
        env = {"REDIS_URL": redis_srv.url}
        a_inst, b_inst = chatd_factory(env=env), chatd_factory(env=env)
        api = Api(a_inst.base_url)
        alice, bob = api.signup(), api.signup()
        conv = api.create_conversation(alice["token"], member_ids=[bob["id"]])
        wa = WS.open(a_inst.host, a_inst.port, bob["token"])
        wb = WS.open(b_inst.host, b_inst.port, bob["token"])
        try:
            m1 = api.send(alice["token"], conv["id"], "before")
            assert push_of(wa) == m1 and push_of(wb) == m1

            redis_srv.kill()
            m2 = api.send(alice["token"], conv["id"], "while Redis is down")
            assert push_of(wa) == m2  # the sending instance delivers by itself

            redis_srv.start()
            # b's instance missed m2 while Redis was away: it is filled within 5 s of Redis
            # coming back, before anything later, with no repeat
            assert push_of(wb, timeout=5) == m2
            m3 = api.send(alice["token"], conv["id"], "after")
            m4 = api.send(alice["token"], conv["id"], "after, again")
            assert push_of(wa) == m3 and push_of(wa) == m4  # once each, in order
            assert push_of(wb) == m3 and push_of(wb) == m4  # across instances again
        finally:
            wa.close_socket()
            wb.close_socket()
            api.close()
    finally:
        if redis_srv.proc.poll() is None:
            redis_srv.kill()
