"""Every error row of the contract, and the edge cases it settles.

Each answer is checked for its status, `Content-Type: application/json`, the
exact body `{"error": {"code", "message"}}` and a message that leaks nothing.
429 `rate_limited` has no test: the contract defines no configurable limit to
exceed (no setting in its configuration table).
"""

import json
import random
import socket
import time

import pytest
import requests

from chatlib import (Api, Metrics, assert_error, assert_retry_after, connect, conversation_with_message, http_req, json_body, parse_responses,
                     raw_assert_error, read_until, send_all_tolerant, unique_name)


@pytest.fixture(scope="module")
def w(api):
    return conversation_with_message(api, "hi")


def alive(api):
    r = api.req("GET", "/healthz")
    assert r.status_code == 200


# --- 400 bad_request ------------------------------------------------------------


@pytest.mark.parametrize("where", ["signup", "create", "members", "send"])
@pytest.mark.parametrize("raw", [b"{", b"[1,", b"nul", b'{"a":1,}', b"\x00", b'{"a": 1} 2'],
                         ids=["open-brace", "open-array", "nul-literal", "trailing-comma", "nul-byte", "two-values"])
def test_400_malformed_json_everywhere(api, w, where, raw):
    path, token = {
        "signup": ("/api/v1/users", None),
        "create": ("/api/v1/conversations", w["token"]),
        "members": (f"/api/v1/conversations/{w['cid']}/members", w["token"]),
        "send": (f"/api/v1/conversations/{w['cid']}/messages", w["token"]),
    }[where]
    r = api.req("POST", path, token=token, data=raw, headers={"Content-Type": "application/json"})
    assert_error(r, 400, "bad_request")


# --- 401 unauthorized -------------------------------------------------------------


def test_401_row(api, w):
    assert_error(api.req("GET", f"/api/v1/conversations/{w['cid']}"), 401, "unauthorized")
    assert_error(api.req("GET", f"/api/v1/conversations/{w['cid']}", token="nope"), 401, "unauthorized")


# --- 404 not_found --------------------------------------------------------------


# ("/", "/favicon.ico" and "/app/{file}" are the web client's: test_web.py)
@pytest.mark.parametrize("path", ["/api", "/api/v1", "/api/v1/", "/api/v1/nope", "/api/v2/users",
                                  "/api/v1/userz", "/api/v1/users/1/extra", "/api/v1/conversations/1/nope",
                                  "/api/v1/conversations/1/messages/count/x", "/healthz/x", "/favicon.png",
                                  "/index.html", "/app", "/app/", "/app/a/main.js",
                                  "/api/v1/conversations/1/members/2/x", "/api/v1/conversations/1/read/x"])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_404_unknown_path(api, w, path, method):
    if method == "POST":
        r = api.req(method, path, token=w["token"], json={})
    else:
        r = api.req(method, path, token=w["token"])
    assert_error(r, 404, "not_found")


def test_404_unknown_path_without_token(api):
    assert_error(api.req("GET", "/nope"), 404, "not_found")


def test_404_not_a_member_looks_like_nonexistent(api, w):
    outsider = api.signup()
    for suffix in ["", "/messages", "/messages/count"]:
        r1 = api.req("GET", f"/api/v1/conversations/{w['cid']}{suffix}", token=outsider["token"])
        r2 = api.req("GET", f"/api/v1/conversations/9000000000000000000{suffix}", token=outsider["token"])
        b1 = assert_error(r1, 404, "not_found")
        b2 = assert_error(r2, 404, "not_found")
        m1 = b1["error"]["message"].replace(str(w["cid"]), "{id}")
        m2 = b2["error"]["message"].replace("9000000000000000000", "{id}")
        assert m1 == m2


# --- 405 method_not_allowed -------------------------------------------------------


def allowed(resp):
    v = resp.headers.get("Allow")
    assert v is not None, f"405 without an Allow header: {resp.headers!r}"
    return {m.strip().upper() for m in v.split(",") if m.strip()}


CASES_405 = [
    ("DELETE", "/api/v1/users/{uid}", {"GET"}),
    ("PUT", "/api/v1/users/{uid}", {"GET"}),
    ("POST", "/api/v1/users/{uid}", {"GET"}),
    ("GET", "/api/v1/users", {"POST"}),
    ("DELETE", "/api/v1/users", {"POST"}),
    ("PUT", "/api/v1/conversations", {"GET", "POST"}),
    ("PUT", "/api/v1/conversations/{cid}", {"GET"}),
    ("DELETE", "/api/v1/conversations/{cid}", {"GET"}),
    ("PATCH", "/api/v1/conversations/{cid}", {"GET"}),
    ("PUT", "/api/v1/conversations/{cid}/members", {"GET", "POST"}),
    ("DELETE", "/api/v1/conversations/{cid}/members", {"GET", "POST"}),
    ("GET", "/api/v1/conversations/{cid}/members/{uid}", {"DELETE"}),
    ("POST", "/api/v1/conversations/{cid}/members/{uid}", {"DELETE"}),
    ("GET", "/api/v1/conversations/{cid}/read", {"POST"}),
    ("PUT", "/api/v1/conversations/{cid}/messages", {"GET", "POST"}),
    ("DELETE", "/api/v1/conversations/{cid}/messages", {"GET", "POST"}),
    ("POST", "/api/v1/conversations/{cid}/messages/count", {"GET"}),
    ("POST", "/healthz", {"GET"}),
    ("POST", "/readyz", {"GET"}),
    ("DELETE", "/metrics", {"GET"}),
]


@pytest.mark.parametrize("method,path,expect", CASES_405, ids=[f"{m} {p}" for m, p, _ in CASES_405])
def test_405_with_allow(api, w, method, path, expect):
    path = path.format(uid=w["a"]["id"], cid=w["cid"])
    r = api.req(method, path, token=w["token"])
    assert_error(r, 405, "method_not_allowed")
    got = allowed(r)
    assert expect <= got, f"Allow {got}, want at least {expect}"
    assert method not in got
    assert got <= {"GET", "POST", "DELETE", "HEAD", "OPTIONS"}, f"Allow lists odd methods: {got}"


def test_405_does_not_change_anything(api, w):
    before = api.count(w["token"], w["cid"])
    r = api.req("PUT", f"/api/v1/conversations/{w['cid']}/messages", token=w["token"], json={"body": "x"})
    assert_error(r, 405, "method_not_allowed")
    assert api.count(w["token"], w["cid"]) == before


# --- 409 conflict -----------------------------------------------------------------


def test_409_conflict(api):
    name = unique_name()
    api.signup(name)
    assert_error(api.req("POST", "/api/v1/users", json={"name": name}), 409, "conflict")


# --- 413 payload_too_large --------------------------------------------------------


def padded(obj, size):
    """obj as JSON, padded with trailing whitespace (valid JSON) to exactly size bytes."""
    raw = json.dumps(obj).encode()
    assert len(raw) <= size
    return raw + b" " * (size - len(raw))


def raw_post(chatd, path, body, token=None, extra=()):
    s = connect(chatd.host, chatd.port, timeout=10)
    try:
        send_all_tolerant(s, http_req("POST", path, body=body, token=token, extra_headers=extra))
        buf, _ = read_until(s, responses=1, timeout=10)
    finally:
        s.close()
    rs, _ = parse_responses(buf)
    assert rs, f"no response: {buf[:200]!r}"
    return rs[0]


def test_body_of_exactly_64_kib_accepted(api, chatd):
    name = unique_name()
    r = raw_post(chatd, "/api/v1/users", padded({"name": name}, 65536))
    assert r.status == 201, r
    assert r.json()["name"] == name


def test_413_body_over_64_kib(api, chatd, w):
    name = unique_name()
    r = raw_post(chatd, "/api/v1/users", padded({"name": name}, 65537))
    raw_assert_error(r, 413, "payload_too_large")
    # Nothing was stored.
    r2 = api.req("POST", "/api/v1/users", json={"name": name})
    assert r2.status_code == 201


@pytest.mark.parametrize("size", [65537, 100_000, 1_000_000])
def test_413_send_message(api, chatd, w, size):
    body = padded({"body": "x" * 4000}, size)
    r = raw_post(chatd, f"/api/v1/conversations/{w['cid']}/messages", body, token=w["token"])
    raw_assert_error(r, 413, "payload_too_large")
    alive(api)


def test_413_announced_length_answered_before_the_body(chatd):
    """A huge Content-Length is refused from the head alone, without waiting for the body."""
    s = connect(chatd.host, chatd.port, timeout=10)
    try:
        s.sendall(b"POST /api/v1/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 10000000000\r\n\r\n{\"name\":")
        t0 = time.monotonic()
        buf, _ = read_until(s, responses=1, timeout=5)
        assert time.monotonic() - t0 < 4
    finally:
        s.close()
    rs, _ = parse_responses(buf)
    assert rs, f"no answer to a 10 GB Content-Length: {buf!r}"
    raw_assert_error(rs[0], 413, "payload_too_large")


# --- 422 invalid_field ------------------------------------------------------------


def test_422_row(api, w):
    r = api.req("POST", f"/api/v1/conversations/{w['cid']}/messages", token=w["token"], json={"body": ""})
    assert_error(r, 422, "invalid_field")
    r = api.req("POST", "/api/v1/conversations", token=w["token"],
                json={"title": "t", "member_ids": [9000000000000000000]})
    assert_error(r, 422, "invalid_field")


# --- 503 unavailable --------------------------------------------------------------


def test_503_when_the_database_cannot_be_reached(chatd_factory):
    # A port nobody listens on, kept bound (not listening) so nobody takes it meanwhile.
    hold = socket.socket()
    hold.bind(("127.0.0.1", 0))
    port = hold.getsockname()[1]
    try:
        inst = chatd_factory(env={
            "DATABASE_URL": f"postgresql://chat@127.0.0.1:{port}/chat",
            "DATABASE_URL_DIRECT": None,
            "CHATD_DB_QUEUE_TIMEOUT_MS": "2000",
        })
        x = Api(inst.base_url, timeout=20)
        try:
            # Liveness holds without a database.
            r = x.req("GET", "/healthz")
            assert r.status_code == 200 and json_body(r) == {"status": "ok"}
            t0 = time.monotonic()
            r = x.req("POST", "/api/v1/users", json={"name": unique_name()})
            assert time.monotonic() - t0 < 15
            assert_error(r, 503, "unavailable")
            assert_retry_after(r)
            # Readiness says so.
            r = x.req("GET", "/readyz")
            body = json_body(r, 503)
            assert body["status"] == "unavailable" and body["db"] == "down"
        finally:
            x.close()
    finally:
        hold.close()


# --- never 500 on bad input ---------------------------------------------------------


def status_ok_for_bad_input(r, allowed_ok=()):
    assert r.status_code < 500, f"{r.status_code} for bad input: {r.content[:300]!r}"
    if r.status_code >= 400:
        assert_error(r, r.status_code, {400: "bad_request", 401: "unauthorized", 404: "not_found",
                                        409: "conflict", 413: "payload_too_large",
                                        422: "invalid_field"}[r.status_code])
    else:
        assert r.status_code in allowed_ok, f"{r.status_code} for bad input: {r.content[:300]!r}"


@pytest.mark.parametrize("where", ["signup", "create", "send"])
def test_deeply_nested_json_400(api, w, where):
    nest = b"[" * 20000 + b"]" * 20000
    field, path, token = {
        "signup": (b"name", "/api/v1/users", None),
        "create": (b"member_ids", "/api/v1/conversations", w["token"]),
        "send": (b"body", f"/api/v1/conversations/{w['cid']}/messages", w["token"]),
    }[where]
    raw = b'{"' + field + b'": ' + nest + b"}"
    r = api.req("POST", path, token=token, data=raw, headers={"Content-Type": "application/json"})
    assert_error(r, 400, "bad_request")
    alive(api)


@pytest.mark.parametrize("raw", [
    b'{"name": "a\\u0000b"}',
    b'{"name": "\\ud800"}',
    b'{"name": "a\\udc00b"}',
    b'{"name": "\\ud800\\u0041"}',
], ids=["nul-escape", "lone-high-surrogate", "lone-low-surrogate", "broken-pair"])
def test_odd_escapes_in_name_rejected(api, raw):
    r = api.req("POST", "/api/v1/users", data=raw, headers={"Content-Type": "application/json"})
    assert r.status_code in (400, 422), r.content
    status_ok_for_bad_input(r)
    alive(api)


@pytest.mark.parametrize("raw", [b'{"body": "a\\u0000b"}', b'{"body": "\\ud800"}'], ids=["nul", "surrogate"])
def test_odd_escapes_in_body_rejected(api, w, raw):
    r = api.req("POST", f"/api/v1/conversations/{w['cid']}/messages", token=w["token"], data=raw,
                headers={"Content-Type": "application/json"})
    assert r.status_code in (400, 422), r.content
    status_ok_for_bad_input(r)


@pytest.mark.parametrize("ids", [b"[1e400]", b"[-1e400]", b"[1e2]", b"[18446744073709551616]",
                                 b"[-9223372036854775809]", b"[NaN]", b"[Infinity]", b"[0x10]", b"[01]"])
def test_odd_numbers_never_500(api, w, ids):
    raw = b'{"title": "t", "member_ids": ' + ids + b"}"
    r = api.req("POST", "/api/v1/conversations", token=w["token"], data=raw,
                headers={"Content-Type": "application/json"})
    assert r.status_code in (400, 422), r.content
    status_ok_for_bad_input(r)


def test_odd_user_id_never_500(api, w):
    for v in [b"1e400", b"18446744073709551616", b"-0", b"1.0e0", b'"1"']:
        r = api.req("POST", f"/api/v1/conversations/{w['cid']}/members", token=w["token"],
                    data=b'{"user_id": ' + v + b"}", headers={"Content-Type": "application/json"})
        assert r.status_code in (400, 422), (v, r.content)
        status_ok_for_bad_input(r)


def test_duplicate_keys_never_500(api):
    raw = f'{{"name": "{unique_name()}", "name": "{unique_name()}"}}'
    r = api.req("POST", "/api/v1/users", data=raw, headers={"Content-Type": "application/json"})
    status_ok_for_bad_input(r, allowed_ok=(201,))


def test_whitespace_only_body_400(api):
    r = api.req("POST", "/api/v1/users", data=b" " * 60000, headers={"Content-Type": "application/json"})
    assert_error(r, 400, "bad_request")


def test_mutation_fuzz_never_500(api, w):
    """Deterministic byte-level mutations of valid bodies: never a 5xx, always a proper body."""
    rnd = random.Random(20261126)
    seeds = [
        ("/api/v1/users", None, {"name": "fuzz"}),
        ("/api/v1/conversations", w["token"], {"title": "t", "member_ids": [w["b"]["id"]]}),
        (f"/api/v1/conversations/{w['cid']}/members", w["token"], {"user_id": w["b"]["id"]}),
        (f"/api/v1/conversations/{w['cid']}/messages", w["token"], {"body": "hello", "client_msg_id": "z"}),
    ]
    junk = [b"\x00", b"\xff", b"\\", b'"', b"{", b"}", b"[", b"]", b",", b":", b"\xc3", b"\xe2\x82",
            b"\\u", b"\\ud83d", b"1e999", b"-", b"null", b"true", b" ", b"\n", b"\t"]
    for i in range(300):
        path, token, obj = seeds[i % len(seeds)]
        raw = bytearray(json.dumps(obj).encode())
        for _ in range(rnd.randint(1, 4)):
            op = rnd.randrange(3)
            pos = rnd.randrange(len(raw) + 1)
            if op == 0 and raw:
                del raw[min(pos, len(raw) - 1)]
            elif op == 1:
                raw[pos:pos] = rnd.choice(junk)
            elif raw:
                raw[min(pos, len(raw) - 1)] = rnd.randrange(256)
        r = api.req("POST", path, token=token, data=bytes(raw), headers={"Content-Type": "application/json"})
        assert r.status_code < 500, f"{r.status_code} for {bytes(raw)!r}: {r.content[:200]!r}"
        if r.status_code >= 400:
            status_ok_for_bad_input(r)
    alive(api)


def test_error_bodies_are_exact_on_every_status(api, w):
    """One of each: the body has exactly the two keys inside "error", no more."""
    for r, status in [
        (api.req("POST", "/api/v1/users", data=b"{"), 400),
        (api.req("GET", "/api/v1/users/1"), 401),
        (api.req("GET", "/nope"), 404),
        (api.req("DELETE", f"/api/v1/users/{w['a']['id']}", token=w["token"]), 405),
        (api.req("POST", "/api/v1/users", json={"name": w["a"]["name"]}), 409),
        (api.req("POST", "/api/v1/users", json={"name": ""}), 422),
    ]:
        assert r.status_code == status
        b = json_body(r)
        assert list(b) == ["error"] and sorted(b["error"]) == ["code", "message"]


def test_no_500_in_metrics_after_this_module(chatd):
    """Nothing in this module made the server answer 500."""
    mm = Metrics(requests.get(chatd.base_url + "/metrics", timeout=10).text)
    bad = [(lab, v) for lab, v in mm.series("chatd_http_requests_total") if lab.get("status") == "500" and v > 0]
    assert not bad, f"500 answers counted: {bad}"
