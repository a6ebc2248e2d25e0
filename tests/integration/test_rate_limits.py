"""Rate limits (docs/api.md, "Rate limits"): sends and edits per user (REST
and stream together), /api/v1 requests per token, sign-ups per client
address; 429 rate_limited with Retry-After and nothing done, an error frame
on the stream; one budget for every instance on a Redis, each instance alone
while Redis is down; the admin token never counted; the metric.

Each test starts its own chatd with the limits it exercises (the fixtures
turn them all off otherwise). Limits are per minute so that no budget
refills while a test runs, except where a refill is what is tested.
"""

import hashlib
import http.client
import json
import time
import uuid

import pytest

import openapi_check
from chatlib import Api, assert_error, assert_message, json_body, unique_name, wait_for
from conftest import parse_metrics
from test_cache import PrivateRedis
from wsclient import WS, handshake

ADMIN = "admin-" + uuid.uuid4().hex
OFF = {"CHATD_RATE_SEND": "0", "CHATD_RATE_REQUEST": "0", "CHATD_RATE_SIGNUP": "0"}


def limits(**kw):
    """The limits a test exercises; requests get a budget no test reaches,
    by which wait_counting_in_redis sees an instance count in Redis."""
    env = dict(OFF, CHATD_RATE_REQUEST="1000/s")
    env.update({f"CHATD_RATE_{k.upper()}": v for k, v in kw.items()})
    return env


def limited_total(inst, limit):
    return sum(v for n, ls, v in parse_metrics(inst.metrics())
               if n == "chatd_rate_limited_total" and ls.get("limit") == limit)


def metric(inst, name):
    return sum(v for n, _, v in parse_metrics(inst.metrics()) if n == name)


def assert_rate_limited(r):
    """429 rate_limited with a Retry-After of whole seconds, at least 1; returns it."""
    assert_error(r, 429, "rate_limited")
    v = r.headers.get("Retry-After", "")
    assert v.isdigit() and int(v) >= 1, f"Retry-After {v!r}"
    return int(v)


def token_key(token):
    """The Redis key counting a token's requests: a hash of the token, never the token."""
    h = hashlib.sha256(("chatd rate limit\n" + token).encode()).hexdigest()[:32]
    return f"rate:req:{{t:{h}}}"


def wait_counting_in_redis(inst, rc):
    """Returns once inst counts in Redis rc: until its connection is up (or
    back), an instance decides alone. One sign-up, then requests of that
    token until its key appears."""
    api = Api(inst.base_url)
    try:
        u = api.signup()
        wait_for(lambda: api.get_user(u["token"], u["id"]).status_code in (200, 429)
                 and rc.exists(token_key(u["token"])), 10, what=f"{inst} counting in Redis")
    finally:
        api.close()


def start(chatd_factory, rc, env, **kw):
    """A chatd with env, counting in Redis rc."""
    d = chatd_factory(env=env, **kw)
    wait_counting_in_redis(d, rc)
    return d


@pytest.fixture
def private_redis(tmp_path):
    r = PrivateRedis(tmp_path)
    yield r
    if r.proc.poll() is None:
        r.kill()


# --- requests per token ----------------------------------------------------------


def test_requests_per_token(chatd_factory, redis_client):
    d = start(chatd_factory, redis_client, limits(request="1/min:5"))
    api = Api(d.base_url)
    try:
        a, b = api.signup(), api.signup()  # sign-ups carry no user token: not counted by one
        for _ in range(5):
            json_body(api.get_user(a["token"], a["id"]), 200)
        r = api.get_user(a["token"], a["id"])
        wait = assert_rate_limited(r)
        assert 59 <= wait <= 60  # 1/min: the next request's share of the minute
        # every /api/v1 route, the stream's handshake too; refusals do not move the budget
        assert_rate_limited(api.create_conversation_raw(a["token"], "t", []))
        hs = handshake(d.host, d.port, token=a["token"])
        try:
            assert hs.status == 429 and hs.json()["error"]["code"] == "rate_limited"
            assert int(hs.headers["retry-after"]) >= 1
        finally:
            hs.sock.close()
        # another token has its own budget; a request without a valid token is not counted
        json_body(api.get_user(b["token"], a["id"]), 200)
        assert_error(api.get_user(None, a["id"]), 401, "unauthorized")
        assert_error(api.get_user("nobody-" + uuid.uuid4().hex, a["id"]), 401, "unauthorized")
        assert limited_total(d, "request") == 3
        assert limited_total(d, "send") == 0 and limited_total(d, "signup") == 0
        # counted in Redis under a hash of the token, for no longer than the budget needs
        key = token_key(a["token"])
        assert redis_client.exists(key)
        assert 4 * 60_000 < redis_client.pttl(key) <= 5 * 60_000  # until its TAT: 5 requests on
        assert not [k for k in redis_client.scan_iter(match="rate:req:*", count=1000)
                    if a["token"].encode() in k]
    finally:
        api.close()


def test_retry_after_is_when_the_next_request_passes(chatd_factory, redis_client):
    d = start(chatd_factory, redis_client, limits(request="2/s:2"))
    api = Api(d.base_url)
    try:
        a = api.signup()
        for _ in range(2):
            json_body(api.get_user(a["token"], a["id"]), 200)
        r = api.get_user(a["token"], a["id"])
        t0 = time.monotonic()
        wait = assert_rate_limited(r)
        assert wait == 1  # 0.5 s rounded up to whole seconds
        wait_for(lambda: api.get_user(a["token"], a["id"]).status_code == 200, wait + 2,
                 what="a request allowed again")
        assert time.monotonic() - t0 <= wait + 0.5
    finally:
        api.close()


# --- sends and edits per user ----------------------------------------------------


def test_sends_and_edits_per_user_over_rest(chatd_factory, redis_client):
    d = start(chatd_factory, redis_client, limits(send="1/min:3"))
    api = Api(d.base_url)
    try:
        a, b = api.signup(), api.signup()
        conv = api.create_conversation(a["token"], member_ids=[b["id"]])["id"]
        sent = [api.send(a["token"], conv, f"m{i}") for i in range(3)]
        wait = assert_rate_limited(api.send_raw(a["token"], conv, "one too many", "over-1"))
        assert 59 <= wait <= 60
        # an edit is counted with the sends: refused, the message unchanged
        assert_rate_limited(api.edit_raw(a["token"], conv, sent[0]["id"], "edited"))
        hist = api.history(a["token"], conv)
        assert [m["body"] for m in hist["messages"]] == ["m2", "m1", "m0"]
        assert all(m["edited_at"] is None for m in hist["messages"])
        assert api.count(a["token"], conv) == 3
        # nothing stored under the refused client_msg_id: a later retry would be new
        assert all(m["client_msg_id"] != "over-1" for m in hist["messages"])
        # reads and deletes are not sends; another user has a budget of their own
        api.delete(a["token"], conv, sent[1]["id"])
        m = api.send(b["token"], conv, "from b")
        api.edit(b["token"], conv, m["id"], "from b, edited")
        api.send(b["token"], conv, "b again")
        assert_rate_limited(api.send_raw(b["token"], conv, "b over"))
        assert limited_total(d, "send") == 3
        assert limited_total(d, "request") == 0
    finally:
        api.close()


def _frames_until(ws, pred, n=4, timeout=10):
    """Reads frames until one matches pred (the sender's own pushes are skipped)."""
    deadline = time.monotonic() + timeout
    seen = []
    while len(seen) < n + 4:
        f = ws.recv_json(max(0.05, deadline - time.monotonic()))
        seen.append(f)
        if pred(f):
            return f
    raise AssertionError(f"no matching frame in {seen!r}")


def test_stream_sends_share_the_budget_and_get_an_error_frame(chatd_factory, redis_client):
    d = start(chatd_factory, redis_client, limits(send="1/min:3"))
    api = Api(d.base_url)
    a, b = api.signup(), api.signup()
    conv = api.create_conversation(a["token"], member_ids=[b["id"]])["id"]
    ws = WS.open(d.host, d.port, a["token"])
    try:
        api.send(a["token"], conv, "rest")  # REST and the stream spend one budget
        for cmid in ("s1", "s2"):
            ws.send_json({"type": "send", "conversation_id": conv, "body": cmid,
                          "client_msg_id": cmid})
            ack = _frames_until(ws, lambda f: f["type"] == "ack")
            assert ack["client_msg_id"] == cmid
            assert_message(ack["message"])
        ws.send_json({"type": "send", "conversation_id": conv, "body": "x", "client_msg_id": "s3"})
        err = _frames_until(ws, lambda f: f["type"] == "error")
        assert set(err) == {"type", "client_msg_id", "error"}
        assert err["client_msg_id"] == "s3"
        assert set(err["error"]) == {"code", "message"}
        assert err["error"]["code"] == "rate_limited" and err["error"]["message"]
        ws.send_json({"type": "send", "conversation_id": conv, "body": "x"})
        err = _frames_until(ws, lambda f: f["type"] == "error")
        assert err["client_msg_id"] is None and err["error"]["code"] == "rate_limited"
        assert_rate_limited(api.send_raw(a["token"], conv, "rest over"))
        # the connection stays up; nothing refused was stored
        ws.send_json({"type": "dance"})
        assert _frames_until(ws, lambda f: f["type"] == "error")["error"]["code"] == "bad_request"
        hist = api.history(a["token"], conv)
        assert [m["body"] for m in hist["messages"]] == ["s2", "s1", "rest"]
        assert limited_total(d, "send") == 3
    finally:
        ws.close_socket()
        api.close()


# --- sign-ups per client address --------------------------------------------------


def _signup_from(inst, source_ip, name, token=None):
    c = http.client.HTTPConnection(inst.host, inst.port, timeout=10, source_address=(source_ip, 0))
    try:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        c.request("POST", "/api/v1/users", body=json.dumps({"name": name}), headers=headers)
        r = c.getresponse()
        body = r.read()
        openapi_check.check_http("POST", "/api/v1/users", r.status, dict(r.getheaders()), body)
        return r.status, dict(r.getheaders()), json.loads(body or b"null")
    finally:
        c.close()


def _forget_signups(rc):
    for k in rc.scan_iter(match="rate:signup:*", count=1000):
        rc.delete(k)


def test_signups_per_address_admin_exempt(chatd_factory, redis_client, db):
    # every sign-up of the suite comes from 127.0.0.1: start from a full budget, leave one
    _forget_signups(redis_client)
    d = start(chatd_factory, redis_client, dict(limits(signup="1/min:3"), CHATD_ADMIN_TOKEN=ADMIN))
    _forget_signups(redis_client)  # start()'s own
    api = Api(d.base_url)
    try:
        for _ in range(3):
            api.signup()
        name = unique_name()
        r = api.req("POST", "/api/v1/users", json={"name": name})
        assert 59 <= assert_rate_limited(r) <= 60
        with db.cursor() as cur:  # nothing done: no such user
            cur.execute("SELECT count(*) FROM users WHERE name = %s", (name,))
            assert cur.fetchone()[0] == 0
        # the admin token is never counted, however spent the address is
        for _ in range(2):
            api.signup(token=ADMIN)
        # a user's token changes nothing: sign-ups count by address
        u = api.signup(token=ADMIN)
        assert_rate_limited(api.req("POST", "/api/v1/users", token=u["token"],
                                    json={"name": unique_name()}))
        # another address has its own budget
        status, headers, body = _signup_from(d, "127.0.0.2", unique_name())
        assert status == 201 and body["token"], (status, body)
        assert limited_total(d, "signup") == 2
        key = "rate:signup:{a:127.0.0.1}"
        assert 2 * 60_000 < redis_client.pttl(key) <= 3 * 60_000
        assert redis_client.exists("rate:signup:{a:127.0.0.2}")
    finally:
        api.close()
        _forget_signups(redis_client)


# --- one budget across instances; each alone while Redis is down ------------------


def test_one_budget_across_instances(chatd_factory, redis_client):
    env = limits(send="1/min:5")
    d1, d2 = start(chatd_factory, redis_client, env), start(chatd_factory, redis_client, env)
    a1, a2 = Api(d1.base_url), Api(d2.base_url)
    local = [metric(d, "chatd_rate_local_checks_total") for d in (d1, d2)]
    try:
        u = a1.signup()
        conv = a1.create_conversation(u["token"])["id"]
        codes = []
        for i in range(8):
            api = (a1, a2)[i % 2]
            codes.append(api.send_raw(u["token"], conv, f"m{i}").status_code)
        assert codes == [201] * 5 + [429] * 3, codes
        assert a1.count(u["token"], conv) == 5
        assert limited_total(d1, "send") + limited_total(d2, "send") == 3
        assert [metric(d, "chatd_rate_local_checks_total") for d in (d1, d2)] == local
    finally:
        a1.close()
        a2.close()


def test_each_instance_alone_while_redis_is_down(chatd_factory, private_redis):
    env = dict(limits(send="1/min:3"), REDIS_URL=private_redis.url)
    rc = private_redis.client()
    d1, d2 = start(chatd_factory, rc, env), start(chatd_factory, rc, env)
    a1, a2 = Api(d1.base_url), Api(d2.base_url)
    try:
        u = a1.signup()
        conv = a1.create_conversation(u["token"])["id"]
        private_redis.kill()
        # each instance enforces the limit alone: 3 here, 3 there
        t0 = time.monotonic()
        codes1 = [a1.send_raw(u["token"], conv, f"one{i}").status_code for i in range(4)]
        codes2 = [a2.send_raw(u["token"], conv, f"two{i}").status_code for i in range(4)]
        took = time.monotonic() - t0
        assert codes1 == [201, 201, 201, 429], codes1
        assert codes2 == [201, 201, 201, 429], codes2
        assert took < 5, f"8 sends took {took:.1f}s with Redis down"
        assert a1.count(u["token"], conv) == 6
        assert metric(d1, "chatd_rate_local_checks_total") >= 4
        assert metric(d2, "chatd_rate_local_checks_total") >= 4
        # Redis back (empty, its script gone): one budget again
        private_redis.start()
        for d in (d1, d2):
            wait_counting_in_redis(d, rc)
        v = a1.signup()
        conv2 = a1.create_conversation(v["token"])["id"]
        codes = [(a1, a2)[i % 2].send_raw(v["token"], conv2, f"m{i}").status_code for i in range(4)]
        assert codes == [201, 201, 201, 429], codes
        assert rc.exists(f"rate:send:{{u:{v['id']}}}")
    finally:
        a1.close()
        a2.close()


def test_without_redis_one_budget_per_process(chatd_factory):
    """ENABLE_REDIS_CACHE=false: the process counts alone, one budget for all
    its workers (each send on a new connection, spread by the kernel)."""
    d = chatd_factory(env=dict(limits(send="1/min:3"), ENABLE_REDIS_CACHE="false"), workers=2)
    api = Api(d.base_url)
    try:
        u = api.signup()
        conv = api.create_conversation(u["token"])["id"]
    finally:
        api.close()
    codes = []
    for i in range(10):
        one = Api(d.base_url)  # a connection of its own
        try:
            codes.append(one.send_raw(u["token"], conv, f"m{i}").status_code)
        finally:
            one.close()
    assert codes == [201] * 3 + [429] * 7, codes
    assert metric(d, "chatd_rate_local_checks_total") >= 10
    assert limited_total(d, "send") == 7
    assert "event=rate_limits send=1/min:3" in d.log_text() and "counted_in=process" in d.log_text()


def noscript_errors(rc):
    """NOSCRIPT error replies Redis has given ("errorstat_NOSCRIPT:count=1")."""
    v = rc.info("errorstats").get("errorstat_NOSCRIPT", 0)
    if isinstance(v, dict):
        return int(v.get("count", 0))
    return int(str(v).rpartition("=")[2] or 0)


def test_script_loaded_again_after_a_flush(chatd_factory, private_redis):
    rc = private_redis.client()
    d = start(chatd_factory, rc, dict(limits(send="1/min:4"), REDIS_URL=private_redis.url))
    api = Api(d.base_url)
    try:
        u = api.signup()
        conv = api.create_conversation(u["token"])["id"]
        local = metric(d, "chatd_rate_local_checks_total")
        # a fresh Redis had no script: the first check was resent as EVAL
        missed = noscript_errors(rc)
        assert missed >= 1
        json_body(api.send_raw(u["token"], conv, "first"), 201)
        json_body(api.send_raw(u["token"], conv, "second"), 201)
        # chatd's SHA-1 is the script's: loaded, it is found
        assert noscript_errors(rc) == missed
        rc.script_flush()  # NOSCRIPT next: the check is sent again as EVAL
        json_body(api.send_raw(u["token"], conv, "third"), 201)
        json_body(api.send_raw(u["token"], conv, "fourth"), 201)
        assert_rate_limited(api.send_raw(u["token"], conv, "fifth"))  # Redis counted all four
        assert noscript_errors(rc) == missed + 1  # one EVALSHA missed, its EVAL loaded the script
        assert metric(d, "chatd_rate_local_checks_total") == local
        key = f"rate:send:{{u:{u['id']}}}"
        assert 3 * 60_000 < rc.pttl(key) <= 4 * 60_000
    finally:
        api.close()
