"""The stream's delivery guarantee (docs/api.md, "Realtime", Delivery): on one
connection the events of a conversation arrive in rev order, each once, with
no gap — across instances, through a lost pub/sub message and a Redis outage;
`resume` sends exactly what is missing, then `resumed`; past 1,000 missing a
`reset`. Also the typing frames."""

import threading
import time

import requests

from chatlib import Api
from test_cache import PrivateRedis
from wsclient import WS


def ws_of(inst, user):
    return WS.open(inst.host, inst.port, user["token"])


def events_until(ws, conv, last_rev, timeout=10, others=None):
    """Event frames of conv read until rev last_rev; frames of other types go to others."""
    got = []
    deadline = time.monotonic() + timeout
    while not got or got[-1]["rev"] < last_rev:
        left = deadline - time.monotonic()
        assert left > 0, f"timed out at {[f['rev'] for f in got][-3:]} waiting for rev {last_rev}"
        f = ws.recv_json(left)
        if f.get("type", "").startswith("message") and f["conversation_id"] == conv:
            got.append(f)
        elif others is not None:
            others.append(f)
        else:
            raise AssertionError(f"unexpected frame {f}")
    return got


def collect(ws, last_revs, timeout):
    """Event frames read until every conversation of last_revs reached its rev: conv -> frames."""
    got = {c: [] for c in last_revs}
    deadline = time.monotonic() + timeout
    while any(not got[c] or got[c][-1]["rev"] < r for c, r in last_revs.items()):
        left = deadline - time.monotonic()
        assert left > 0, f"timed out: {[(c, [f['rev'] for f in v][-3:]) for c, v in got.items()]}"
        f = ws.recv_json(left)
        assert f["type"].startswith("message") and f["conversation_id"] in got, f
        got[f["conversation_id"]].append(f)
    return got


def assert_contiguous(frames, first_rev):
    revs = [f["rev"] for f in frames]
    assert revs == list(range(first_rev, first_rev + len(revs))), revs


def resume(ws, positions):
    ws.send_json({"type": "resume", "positions": {str(k): v for k, v in positions.items()}})


def sends(api, token, conv, n, prefix):
    s = requests.Session()
    out = []
    for i in range(n):
        r = s.post(f"{api.base_url}/api/v1/conversations/{conv}/messages",
                   headers={"Authorization": f"Bearer {token}"},
                   json={"body": f"{prefix}{i}"}, timeout=30)
        assert r.status_code == 201, r.text
        out.append(r.json())
    s.close()
    return out


def test_rev_contiguous_under_concurrent_senders_on_two_instances(chatd_factory):
    a_inst, b_inst = chatd_factory(workers=2), chatd_factory(workers=2)
    api_a, api_b = Api(a_inst.base_url), Api(b_inst.base_url)
    senders = [api_a.signup() for _ in range(4)]
    reader = api_a.signup()
    conv = api_a.create_conversation(senders[0]["token"],
                                     member_ids=[u["id"] for u in senders[1:]] + [reader["id"]])["id"]
    socks = [ws_of(a_inst, reader), ws_of(b_inst, reader), ws_of(b_inst, reader)]
    try:
        n = 40
        threads = [threading.Thread(target=sends, args=(api, u["token"], conv, n, f"s{i}-"))
                   for i, (u, api) in enumerate(zip(senders, [api_a, api_b] * 2))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        total = n * len(senders)
        for s in socks:
            frames = events_until(s, conv, total, timeout=20)
            assert_contiguous(frames, 1)
            assert len({f["message"]["id"] for f in frames}) == total
    finally:
        for s in socks:
            s.close_socket()
        api_a.close()
        api_b.close()


def test_resume_sends_exactly_what_is_missing_then_resumed(chatd_factory):
    inst = chatd_factory(workers=2)
    api = Api(inst.base_url)
    a, b = api.signup(), api.signup()
    conv = api.create_conversation(a["token"], member_ids=[b["id"]])["id"]
    quiet = api.create_conversation(a["token"], member_ids=[b["id"]])["id"]
    other = api.create_conversation(a["token"])["id"]  # b is not a member
    first = sends(api, a["token"], conv, 3, "before-")
    ws = ws_of(inst, b)
    ws.close_socket()  # b goes away at rev 3
    missed = sends(api, a["token"], conv, 7, "missed-")
    ws = ws_of(inst, b)
    try:
        resume(ws, {conv: 3, quiet: 0, other: 0, 999999: 5})
        frames = events_until(ws, conv, 10)
        assert [f["message"]["id"] for f in frames] == [m["id"] for m in missed]
        assert_contiguous(frames, 4)
        assert ws.recv_json() == {"type": "resumed", "positions": {str(conv): 10, str(quiet): 0}}
        # live again, once each
        later = api.send(a["token"], conv, "later")
        f = ws.recv_json()
        assert f["rev"] == 11 and f["message"]["id"] == later["id"]
        # a second resume from an older position sends those again, in order
        resume(ws, {conv: 8})
        frames = events_until(ws, conv, 11)
        assert_contiguous(frames, 9)
        assert ws.recv_json() == {"type": "resumed", "positions": {str(conv): 11}}
        assert first[0]["seq"] == 1
    finally:
        ws.close_socket()
        api.close()


def test_resume_from_the_current_position_sends_only_resumed(chatd):
    api = Api(chatd.base_url)
    a, b = api.signup(), api.signup()
    conv = api.create_conversation(a["token"], member_ids=[b["id"]])["id"]
    sends(api, a["token"], conv, 2, "x")
    ws = ws_of(chatd, b)
    try:
        resume(ws, {conv: 2})
        assert ws.recv_json() == {"type": "resumed", "positions": {str(conv): 2}}
        # malformed resumes get an error frame and change nothing
        for bad in ({"type": "resume"}, {"type": "resume", "positions": []},
                    {"type": "resume", "positions": {"x": 1}},
                    {"type": "resume", "positions": {"07": 1}},
                    {"type": "resume", "positions": {str(conv): -1}},
                    {"type": "resume", "positions": {str(conv): "1"}}):
            ws.send_json(bad)
            f = ws.recv_json()
            assert f["type"] == "error" and f["error"]["code"] == "bad_request", (bad, f)
        m = api.send(a["token"], conv, "three")
        f = ws.recv_json()
        assert f["rev"] == 3 and f["message"]["id"] == m["id"]
    finally:
        ws.close_socket()
        api.close()


def test_more_than_1000_missing_is_a_reset(chatd):
    api = Api(chatd.base_url)
    a, b = api.signup(), api.signup()
    conv = api.create_conversation(a["token"], member_ids=[b["id"]])["id"]
    small = api.create_conversation(a["token"], member_ids=[b["id"]])["id"]
    sends(api, a["token"], conv, 1002, "m")
    sends(api, a["token"], small, 2, "s")
    ws = ws_of(chatd, b)
    try:
        resume(ws, {conv: 1, small: 0})  # 1,001 missing in conv, 2 in small
        frames = []
        while True:
            f = ws.recv_json()
            if f["type"] == "resumed":
                break
            frames.append(f)
        assert {"type": "reset", "conversation_id": conv, "rev": 1002} in frames
        small_frames = [f for f in frames if f.get("conversation_id") == small and "message" in f]
        assert [f["rev"] for f in small_frames] == [1, 2]
        assert not [f for f in frames if f.get("conversation_id") == conv and "message" in f]
        assert f == {"type": "resumed", "positions": {str(conv): 1002, str(small): 2}}
        m = api.send(a["token"], conv, "after the reset")
        f = ws.recv_json()
        assert f["rev"] == 1003 and f["message"]["id"] == m["id"]
        # exactly 1,000 missing is still caught up
        ws2 = ws_of(chatd, b)
        try:
            resume(ws2, {conv: 3})
            frames = events_until(ws2, conv, 1003, timeout=30)
            assert_contiguous(frames, 4)
            assert ws2.recv_json() == {"type": "resumed", "positions": {str(conv): 1003}}
        finally:
            ws2.close_socket()
        assert chatd.metric("chatd_stream_resumes_total", {"result": "reset"}) >= 1
    finally:
        ws.close_socket()
        api.close()


def test_lost_pubsub_message_is_filled_from_the_database(chatd_factory):
    """The fault hook drops every 3rd event arriving from Redis: the receiving
    instance fills each gap from the database before later events."""
    a_inst = chatd_factory()
    b_inst = chatd_factory(env={"CHATD_FAULT_DROP_EVENTS": "3"})
    api = Api(a_inst.base_url)
    a, b = api.signup(), api.signup()
    conv = api.create_conversation(a["token"], member_ids=[b["id"]])["id"]
    ws = ws_of(b_inst, b)
    try:
        fills0 = b_inst.metric("chatd_stream_gap_fills_total")
        sent = sends(api, a["token"], conv, 9, "m")  # revs 3, 6 and 9 are dropped on b's side
        frames = events_until(ws, conv, 9)
        assert_contiguous(frames, 1)
        assert [f["message"]["id"] for f in frames] == [m["id"] for m in sent]
        assert b_inst.metric("chatd_stream_gap_fills_total") > fills0
    finally:
        ws.close_socket()
        api.close()


def test_redis_outage_every_event_reaches_every_socket(chatd_factory, tmp_path):
    """Redis killed with sockets open on two instances and sends on both: once
    Redis is back, every socket has every event within 5 s, in order, once."""
    redis_srv = PrivateRedis(tmp_path)
    try:
        env = {"REDIS_URL": redis_srv.url}
        insts = [chatd_factory(env=env, workers=2), chatd_factory(env=env, workers=2)]
        apis = [Api(i.base_url) for i in insts]
        a, b = apis[0].signup(), apis[0].signup()
        convs = [apis[0].create_conversation(a["token"], member_ids=[b["id"]])["id"]
                 for _ in range(3)]
        socks = [ws_of(i, u) for i in insts for u in (a, b)]
        try:
            before = [apis[0].send(a["token"], c, "before") for c in convs]
            for s in socks:
                collect(s, {c: 1 for c in convs}, 10)
            redis_srv.kill()
            for k in range(4):
                for c in convs:
                    apis[k % 2].send(a["token"] if k % 2 else b["token"], c, f"down {k}")
            redis_srv.start()
            back = time.monotonic()
            for s in socks:
                got = collect(s, {c: 5 for c in convs}, 5 - (time.monotonic() - back) + 1)
                for c in convs:
                    assert_contiguous(got[c], 2)
            elapsed = time.monotonic() - back
            assert elapsed < 5, elapsed
            # and live across instances afterwards, once
            m = apis[1].send(b["token"], convs[0], "after")
            for s in socks:
                f = s.recv_json()
                assert f["rev"] == 6 and f["message"]["id"] == m["id"], f
            assert before[0]["seq"] == 1
        finally:
            for s in socks:
                s.close_socket()
            for x in apis:
                x.close()
    finally:
        if redis_srv.proc.poll() is None:
            redis_srv.kill()


def test_typing_relayed_throttled_and_only_to_members(chatd_factory):
    a_inst, b_inst = chatd_factory(), chatd_factory()
    api = Api(a_inst.base_url)
    a, b, c = api.signup(), api.signup(), api.signup()
    conv = api.create_conversation(a["token"], member_ids=[b["id"]])["id"]
    wa, wb, wb2, wc = ws_of(a_inst, a), ws_of(b_inst, b), ws_of(a_inst, b), ws_of(b_inst, c)
    try:
        wa.send_json({"type": "typing", "conversation_id": conv})
        want = {"type": "typing", "conversation_id": conv, "user_id": a["id"]}
        assert wb.recv_json() == want and wb2.recv_json() == want
        # throttled: a second one within 3 s is dropped; c (not a member) typing is dropped
        wa.send_json({"type": "typing", "conversation_id": conv})
        wc.send_json({"type": "typing", "conversation_id": conv})
        m = api.send(a["token"], conv, "marker")
        for w in (wb, wb2):
            f = w.recv_json()
            assert f["type"] == "message" and f["message"]["id"] == m["id"], f
        # the typist's own socket gets no typing frame, only the message
        f = wa.recv_json()
        assert f["type"] == "message" and f["message"]["id"] == m["id"], f
        # c got nothing at all: its next frame is one of its own conversation
        own = api.create_conversation(c["token"])["id"]
        mc = api.send(c["token"], own, "c's own")
        f = wc.recv_json()
        assert f["type"] == "message" and f["message"]["id"] == mc["id"], f
        # typing in an unknown conversation or with a bad id: dropped / error frame
        wa.send_json({"type": "typing", "conversation_id": "x"})
        f = wa.recv_json()
        assert f["type"] == "error" and f["error"]["code"] == "bad_request"
        # after 3 s b sees a's typing again
        time.sleep(3.1)  # the throttle's own interval, not a wait for a condition
        wa.send_json({"type": "typing", "conversation_id": conv})
        assert wb.recv_json() == want
    finally:
        for w in (wa, wb, wb2, wc):
            w.close_socket()
        api.close()


def test_frames_of_a_conversation_joined_later_start_at_the_join(chatd_factory):
    """b joins at rev 3 on another instance: the first event b's socket gets is rev 4."""
    a_inst, b_inst = chatd_factory(), chatd_factory()
    api = Api(a_inst.base_url)
    a, b = api.signup(), api.signup()
    conv = api.create_conversation(a["token"])["id"]
    wb = ws_of(b_inst, b)
    try:
        sends(api, a["token"], conv, 3, "before-")
        assert api.add_member(a["token"], conv, b["id"]).status_code == 204
        assert wb.recv_json() == {"type": "added", "conversation_id": conv}
        m = api.send(a["token"], conv, "after")
        f = wb.recv_json()
        assert f["rev"] == 4 and f["message"]["id"] == m["id"], f
        # removed: nothing more from conv
        assert api.req("DELETE", f"/api/v1/conversations/{conv}/members/{b['id']}",
                       token=a["token"]).status_code == 204
        assert wb.recv_json() == {"type": "removed", "conversation_id": conv}
        api.send(a["token"], conv, "not for b")
        own = api.create_conversation(b["token"])["id"]
        mb = api.send(b["token"], own, "b's own")
        f = wb.recv_json()
        assert f["conversation_id"] == own and f["message"]["id"] == mb["id"], f
    finally:
        wb.close_socket()
        api.close()


def test_events_right_after_the_upgrade_wait_for_the_resume(chatd):
    """An event committed between the 101 and the client's resume is not
    written before the resume's catch-up (no repeat, no reorder)."""
    api = Api(chatd.base_url)
    a, b = api.signup(), api.signup()
    conv = api.create_conversation(a["token"], member_ids=[b["id"]])["id"]
    sends(api, a["token"], conv, 3, "before-")
    ws = ws_of(chatd, b)
    try:
        live = api.send(a["token"], conv, "between the 101 and the resume")
        resume(ws, {conv: 0})
        frames = events_until(ws, conv, 4)
        assert_contiguous(frames, 1)
        assert frames[-1]["message"]["id"] == live["id"]
        assert ws.recv_json() == {"type": "resumed", "positions": {str(conv): 4}}
        m = api.send(a["token"], conv, "after")
        f = ws.recv_json()
        assert f["rev"] == 5 and f["message"]["id"] == m["id"], f
    finally:
        ws.close_socket()
        api.close()
