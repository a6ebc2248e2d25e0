"""Strictness and small abuse bounds (issue 12, findings 4-7), each case the
way a hostile client would try it, over raw sockets where the HTTP layer is
the subject:

- no bearer token ever reaches chatd's log, not even from a request cut
  before its head is complete (finding 4);
- framing that parsers disagree about is refused with 400 and a close:
  folded header lines, bare-LF line ends, chunk data without its CRLF,
  Transfer-Encoding other than one "chunked", Content-Length beside
  Transfer-Encoding, HTTP/1.1 without one Host, absolute-form targets; other
  HTTP versions get 505 (finding 5);
- query strings and path ids are plain decimal digits, nothing decoded into
  a NUL, no leading zeros (finding 6);
- duplicate JSON keys and NULs in JSON strings are refused and said so,
  a chunk-size overflow is called one, nosniff and no-store headers, the
  WebSocket Origin check, and remembered "no" answers for unknown tokens
  and non-members (finding 7).
"""

import json
import socket

import pytest

from chatlib import (Api, assert_error, connect, http_get, http_req, parse_responses, raw_assert_error,
                     read_until, send_all_tolerant, unique_name, wait_closed, wait_for)
from wsclient import WS, handshake


@pytest.fixture(scope="module")
def w(api):
    a, b = api.signup(), api.signup()
    cid = api.create_conversation(a["token"], member_ids=[b["id"]])["id"]
    msg = api.send(a["token"], cid, "hello")
    return {"a": a, "b": b, "token": a["token"], "cid": cid, "msg": msg}


def refused(chatd, data, status=400, code="bad_request"):
    """Sends data on a new connection: one error answer, then the close. Returns the error body."""
    s = connect(chatd.host, chatd.port)
    try:
        send_all_tolerant(s, data)
        t, buf = wait_closed(s, 5)
    finally:
        s.close()
    rs, _ = parse_responses(buf)
    assert rs, f"no answer to {data[:120]!r}: {buf[:200]!r}"
    body = raw_assert_error(rs[0], status, code)
    assert rs[0].header("connection") == "close", rs[0]
    assert t is not None, f"connection left open after {data[:120]!r}"
    return body


def one(chatd, data):
    s = connect(chatd.host, chatd.port)
    try:
        s.sendall(data)
        buf, _ = read_until(s, responses=1, timeout=5)
    finally:
        s.close()
    rs, _ = parse_responses(buf)
    assert rs, f"no answer to {data[:120]!r}: {buf[:200]!r}"
    return rs[0]


# --- finding 4: tokens in logs ------------------------------------------------------


def test_token_never_logged(chatd_factory):
    # long enough that a slow sanitizer loop reads each whole head before it
    d = chatd_factory(env={"CHATD_LOG_LEVEL": "debug", "CHATD_HEADER_TIMEOUT_MS": "1500"})
    secret = "S3cretT0ken" + unique_name("x")
    cases = [
        # fails before the head is complete: the raw target was logged
        f"GET /api/v1/stream?token={secret} HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n".encode(),
        f"GET /api/v1/stream?a=1&%74oken={secret}&b=2 HTTP/1.1\r\nHost: x\r\nX: \x01\r\n\r\n".encode(),
        # a complete request: its query is logged, the token's value is not
        f"GET /api/v1/stream?token={secret} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
    ]
    for data in cases:
        r = one(d, data)
        assert r.status in (400, 401), r
    # the head timeout: a request line, then nothing
    s = connect(d.host, d.port)
    try:
        s.sendall(f"GET /api/v1/stream?token={secret}&x=y HTTP/1.1\r\nHost: x\r\n".encode())
        t, buf = wait_closed(s, 5)
        assert t is not None and buf.startswith(b"HTTP/1.1 408"), buf[:200]
    finally:
        s.close()
    d.wait_log("status=408")
    log = d.log_text()
    assert log.count("event=request ") >= 4, d.log_tail()
    assert secret not in log, [ln for ln in log.splitlines() if secret in ln]
    assert "token=REDACTED" in log, d.log_tail()
    assert "%74oken=REDACTED" in log, d.log_tail()


# --- finding 5: strict HTTP --------------------------------------------------------


def test_folded_authorization_does_not_authenticate(chatd, w):
    """`Authorization: Bearer\\r\\n <token>` (obs-fold) used to sign the request in."""
    path = f"/api/v1/users/{w['a']['id']}"
    r = one(chatd, http_req("GET", path, token=w["token"]))
    assert r.status == 200, r
    body = refused(chatd, f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer\r\n {w['token']}\r\n\r\n"
                   .encode())
    assert "folded" in body["error"]["message"], body


STRICT_400 = {
    "obs-fold": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
    "obs-fold-tab": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tb\r\n\r\n",
    "bare-lf-everywhere": b"GET /healthz HTTP/1.1\nHost: x\n\n",
    "bare-lf-one-header": b"GET /healthz HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n",
    "bare-lf-end-of-head": b"GET /healthz HTTP/1.1\r\nHost: x\r\n\n",
    "chunk-data-without-crlf": b"POST /api/v1/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                               b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n",
    "chunk-data-bare-lf": b"POST /api/v1/users HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"2\r\n{}\n0\r\n\r\n",
    "chunk-size-bare-lf": b"POST /api/v1/users HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"2\n{}\r\n0\r\n\r\n",
    "chunk-size-space": b"POST /api/v1/users HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"2 \r\n{}\r\n0\r\n\r\n",
    "trailer-bare-lf": b"POST /api/v1/users HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"2\r\n{}\r\n0\r\nX-T: 1\n\r\n",
    "te-chunked-twice": b"POST /api/v1/users HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                        b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    "te-chunked-chunked": b"POST /api/v1/users HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"
                          b"0\r\n\r\n",
    "te-gzip-chunked": b"POST /api/v1/users HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                       b"0\r\n\r\n",
    "te-identity": b"POST /api/v1/users HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n",
    "te-in-http-1.0": b"POST /api/v1/users HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    "content-length-and-te": b"POST /api/v1/users HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te-and-content-length": b"POST /api/v1/users HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                             b"Content-Length: 2\r\n\r\n0\r\n\r\n",
    "http-1.1-without-host": b"GET /healthz HTTP/1.1\r\n\r\n",
    "two-hosts": b"GET /healthz HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
    "absolute-form": b"GET http://evil.example/healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    "absolute-form-same-host": b"GET http://x/healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    "two-spaces-in-request-line": b"GET  /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    "no-version": b"GET /healthz\r\nHost: x\r\n\r\n",
}


@pytest.mark.parametrize("kind", list(STRICT_400))
def test_lenient_framing_refused(chatd, kind):
    refused(chatd, STRICT_400[kind])


@pytest.mark.parametrize("version", ["HTTP/1.9", "HTTP/2.0", "HTTP/0.9", "HTTP/3.1"])
def test_other_http_versions_505(chatd, version):
    refused(chatd, f"GET /healthz {version}\r\nHost: x\r\n\r\n".encode(), 505, "http_version_not_supported")


def test_chunked_body_split_anywhere_still_accepted(chatd):
    """The framing checks follow the bytes across reads: a valid chunked body dribbled byte by byte."""
    body = json.dumps({"name": unique_name()}).encode()
    head = (b"POST /api/v1/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    chunks = b"".join(b"%x;e=1\r\n%s\r\n" % (len(body[i:i + 5]), body[i:i + 5]) for i in range(0, len(body), 5))
    data = head + chunks + b"0\r\nX-Trailer: 1\r\n\r\n" + http_get("/healthz")
    s = connect(chatd.host, chatd.port)
    try:
        for i in range(len(data)):
            s.send(data[i:i + 1])
        buf, _ = read_until(s, responses=2, timeout=10)
    finally:
        s.close()
    rs, _ = parse_responses(buf)
    assert [r.status for r in rs] == [201, 200], rs


def test_http_1_0_without_host_is_fine(chatd):
    r = one(chatd, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert r.status == 200, r


def test_leading_empty_line_before_the_request_is_fine(chatd):
    r = one(chatd, b"\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert r.status == 200, r


# --- finding 6: query strictness ---------------------------------------------------


@pytest.mark.parametrize("query", [
    "limit=5%00junk", "limit%00x=5", "limit=05", "limit=007", "offset=00", "offset=01",
    "before_id=007", "after_seq=00", "after_seq=01", "limit=5%00", "%00=1", "limit=%35%00",
    "l%zzimit=5", "limit=5&x=%zz",
])
def test_history_query_strict(chatd, w, query):
    # raw bytes: an HTTP library would re-encode "%zz"
    r = one(chatd, http_req("GET", f"/api/v1/conversations/{w['cid']}/messages?{query}", token=w["token"]))
    raw_assert_error(r, 400, "bad_request")


@pytest.mark.parametrize("path", [
    "/api/v1/conversations/{cid}/events?after_rev=01",
    "/api/v1/conversations/{cid}/events?limit=5%00junk",
    "/api/v1/conversations/{cid}/events?limit%00x=5",
    "/api/v1/conversations/{cid}/members?limit=010",
    "/api/v1/conversations/{cid}/members?after_id=00",
    "/api/v1/conversations/{cid}/members?limit=5%00junk",
    "/api/v1/conversations?limit=05",
    "/api/v1/conversations?limit=5%00junk",
    "/api/v1/conversations?limit%00x=5",
])
def test_other_queries_strict(chatd, w, path):
    r = one(chatd, http_req("GET", path.format(cid=w["cid"]), token=w["token"]))
    raw_assert_error(r, 400, "bad_request")


def test_plain_numbers_still_accepted(api, w):
    r = api.req("GET", f"/api/v1/conversations/{w['cid']}/messages?limit=10&offset=0&unknown=%41", token=w["token"])
    assert r.status_code == 200, r.content
    r = api.req("GET", f"/api/v1/conversations/{w['cid']}/messages?after_seq=0", token=w["token"])
    assert r.status_code == 200, r.content
    r = api.req("GET", f"/api/v1/conversations/{w['cid']}/events?after_rev=0&limit=1000", token=w["token"])
    assert r.status_code == 200, r.content


@pytest.mark.parametrize("path", [
    "/api/v1/users/0{a}", "/api/v1/users/00{a}", "/api/v1/conversations/0{cid}",
    "/api/v1/conversations/0{cid}/messages", "/api/v1/conversations/{cid}/messages/0{mid}",
])
def test_ids_with_leading_zeros_404(api, w, path):
    p = path.format(a=w["a"]["id"], cid=w["cid"], mid=w["msg"]["id"])
    method = "PATCH" if p.count("/messages/") else "GET"
    r = api.req(method, p, token=w["token"], **({"json": {"body": "x"}} if method == "PATCH" else {}))
    assert_error(r, 404, "not_found")


def test_stream_token_with_nul_401(chatd, w):
    h = handshake(chatd.host, chatd.port, path=f"/api/v1/stream?token={w['token']}%00junk")
    try:
        assert h.status == 401, (h.status, h.body)
    finally:
        h.sock.close()


# --- finding 7: JSON bodies --------------------------------------------------------


@pytest.mark.parametrize("where", ["signup", "send", "create", "read"])
def test_duplicate_json_keys_400(api, w, where):
    path, token, raw = {
        "signup": ("/api/v1/users", None, f'{{"name": "{unique_name()}", "name": "{unique_name()}"}}'),
        "send": (f"/api/v1/conversations/{w['cid']}/messages", w["token"], '{"body": "a", "body": "b"}'),
        "create": ("/api/v1/conversations", w["token"], '{"title": "t", "member_ids": [], "title": "u"}'),
        "read": (f"/api/v1/conversations/{w['cid']}/read", w["token"], '{"seq": 1, "x": {"k": 1, "k": 2}}'),
    }[where]
    r = api.req("POST", path, token=token, data=raw.encode(), headers={"Content-Type": "application/json"})
    body = assert_error(r, 400, "bad_request")
    assert "duplicate" in body["error"]["message"], body


@pytest.mark.parametrize("raw", [b'{"name": "a\\u0000b"}', b'{"na\\u0000me": "ab"}', b'{"x": ["\\u0000"], "name": "ab"}'])
def test_nul_in_json_strings_said_so(api, raw):
    r = api.req("POST", "/api/v1/users", data=raw, headers={"Content-Type": "application/json"})
    body = assert_error(r, 400, "bad_request")
    assert "NUL" in body["error"]["message"] and "not valid JSON" not in body["error"]["message"], body


def test_duplicate_keys_and_nul_in_stream_frames(chatd, w):
    ws = WS.open(chatd.host, chatd.port, w["token"])
    try:
        ws.send(1, f'{{"type": "send", "conversation_id": {w["cid"]}, "body": "a", "body": "b"}}')
        m = ws.recv_json()
        assert m["type"] == "error" and m["error"]["code"] == "bad_request", m
        assert "duplicate" in m["error"]["message"], m
        ws.send(1, f'{{"type": "send", "conversation_id": {w["cid"]}, "body": "a\\u0000b"}}')
        m = ws.recv_json()
        assert m["type"] == "error" and "NUL" in m["error"]["message"], m
        # the connection stays up
        ws.send_json({"type": "send", "conversation_id": w["cid"], "body": "fine", "client_msg_id": "ok1"})
        while (m := ws.recv_json())["type"] != "ack":
            pass
        assert m["message"]["body"] == "fine", m
    finally:
        ws.close_socket()



# --- finding 7: a chunk size that overflows -----------------------------------


def test_chunk_size_overflow_said_so(chatd):
    body = refused(chatd, b"POST /api/v1/users HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"fffffffffffffffffff\r\n")
    assert body["error"]["message"] == "invalid chunk size", body


# --- finding 7: headers ------------------------------------------------------------


def test_nosniff_on_every_answer(chatd, api, w):
    answers = [
        api.req("GET", "/healthz"),
        api.req("GET", "/nope"),
        api.req("GET", f"/api/v1/users/{w['a']['id']}", token=w["token"]),
        api.req("GET", f"/api/v1/users/{w['a']['id']}"),
        api.req("DELETE", "/healthz"),
    ]
    for r in answers:
        assert r.headers.get("X-Content-Type-Options") == "nosniff", (r.status_code, r.headers)
    r = one(chatd, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX A: 1\r\n\r\n")  # the HTTP layer's own 400
    assert r.status == 400 and r.header("x-content-type-options") == "nosniff", r


def test_no_store_on_private_answers(api, w):
    private = [
        api.req("GET", f"/api/v1/users/{w['a']['id']}", token=w["token"]),
        api.req("GET", f"/api/v1/conversations/{w['cid']}/messages", token=w["token"]),
        api.req("GET", "/api/v1/conversations", token=w["token"]),
        api.req("POST", "/api/v1/users", json={"name": unique_name()}),  # carries the new token
        api.req("GET", f"/api/v1/users/{w['a']['id']}"),  # 401 of a private route
        api.req("GET", f"/api/v1/conversations/{w['cid']}", token=api.signup()["token"]),  # 404
    ]
    assert [r.status_code for r in private] == [200, 200, 200, 201, 401, 404]
    for r in private:
        assert r.headers.get("Cache-Control") == "no-store", (r.status_code, r.url, r.headers)
    public = api.req("GET", "/healthz")
    assert "Cache-Control" not in public.headers, public.headers


# --- finding 7: WebSocket Origin ---------------------------------------------------


def test_any_origin_by_default(chatd, w):
    h = handshake(chatd.host, chatd.port, token=w["token"], extra_headers=["Origin: https://anything.example"])
    try:
        assert h.status == 101, (h.status, h.body)
    finally:
        h.sock.close()


def test_allowed_origins(chatd_factory):
    d = chatd_factory(env={"CHATD_ALLOWED_ORIGINS": "https://chat.example, http://localhost:8080"})
    a = Api(d.base_url)
    try:
        tok = a.signup()["token"]
        for origin, status in [("https://chat.example", 101), ("http://localhost:8080", 101),
                               ("HTTPS://CHAT.EXAMPLE", 101), (None, 101),
                               ("https://evil.example", 403), ("https://chat.example.evil", 403),
                               ("null", 403), ("https://chat.example, https://evil.example", 403)]:
            extra = [f"Origin: {origin}"] if origin is not None else []
            h = handshake(d.host, d.port, token=tok, extra_headers=extra)
            try:
                assert h.status == status, (origin, h.status, h.body)
                if status == 403:
                    body = h.json()
                    assert body["error"]["code"] == "forbidden", body
                    assert h.headers.get("content-type", "").startswith("application/json")
            finally:
                h.sock.close()
        # credentials are checked first: no token, a refused origin -> 401
        h = handshake(d.host, d.port, extra_headers=["Origin: https://evil.example"])
        try:
            assert h.status == 401, (h.status, h.body)
        finally:
            h.sock.close()
    finally:
        a.close()


# --- finding 7: remembered "no" answers ---------------------------------------------


def db_queries(d):
    return d.metric("chatd_db_queries_total")


def test_unknown_token_costs_no_query_each_time(chatd_factory):
    d = chatd_factory(workers=1)
    a = Api(d.base_url)
    try:
        u = a.signup()
        bogus = "x" * 43
        assert a.req("GET", f"/api/v1/users/{u['id']}", token=bogus).status_code == 401
        before = db_queries(d)
        s = connect(d.host, d.port, timeout=30)
        try:
            req = http_req("GET", f"/api/v1/users/{u['id']}", token=bogus)
            for _ in range(10):
                s.sendall(req * 100)
                buf, _ = read_until(s, responses=100, timeout=30)
                rs, _ = parse_responses(buf)
                assert len(rs) == 100 and all(r.status == 401 for r in rs), rs[:3]
        finally:
            s.close()
        spent = db_queries(d) - before
        print(f"\n1000 requests with one unknown token -> {spent:.0f} database statements")
        assert spent <= 3, spent
        # a new user's token works at once, though unknown tokens are remembered
        for _ in range(3):
            v = a.signup()
            assert a.req("GET", f"/api/v1/users/{v['id']}", token=v["token"]).status_code == 200
    finally:
        a.close()


def test_non_member_reads_cost_no_query_each_time(chatd_factory):
    d = chatd_factory(workers=1)
    a = Api(d.base_url)
    try:
        owner, outsider = a.signup(), a.signup()
        cid = a.create_conversation(owner["token"])["id"]
        a.send(owner["token"], cid, "secret")
        path = f"/api/v1/conversations/{cid}/messages"
        # the cache is in use once a member's repeated read is a hit
        hits = a.req("GET", "/api/cache/metrics").json()["hits"]
        wait_for(lambda: a.history(owner["token"], cid) and a.req("GET", "/api/cache/metrics").json()["hits"] > hits,
                 10, what="a cache hit")
        assert_error(a.req("GET", path, token=outsider["token"]), 404, "not_found")
        before = db_queries(d)
        s = connect(d.host, d.port, timeout=30)
        try:
            req = http_req("GET", path, token=outsider["token"])
            for _ in range(10):
                s.sendall(req * 100)
                buf, _ = read_until(s, responses=100, timeout=30)
                rs, _ = parse_responses(buf)
                assert len(rs) == 100 and all(r.status == 404 for r in rs), rs[:3]
        finally:
            s.close()
        spent = db_queries(d) - before
        print(f"\n1000 reads by a non-member -> {spent:.0f} database statements")
        assert spent <= 3, spent
        # membership begins with an add: the next read sees it at once
        assert a.add_member(owner["token"], cid, outsider["id"]).status_code == 204
        assert a.history(outsider["token"], cid)["messages"][0]["body"] == "secret"
        # ... and ends with a removal: the "no" is back
        assert a.req("DELETE", f"/api/v1/conversations/{cid}/members/{outsider['id']}",
                     token=outsider["token"]).status_code == 204
        assert_error(a.req("GET", path, token=outsider["token"]), 404, "not_found")
    finally:
        a.close()


def test_non_member_of_a_future_conversation(chatd_factory):
    """An id read before its conversation exists: the creation that lists the reader is seen at once."""
    d = chatd_factory(workers=1)
    a = Api(d.base_url)
    try:
        owner, reader = a.signup(), a.signup()
        last = a.create_conversation(owner["token"])["id"]
        hits = a.req("GET", "/api/cache/metrics").json()["hits"]
        wait_for(lambda: a.count_raw(owner["token"], last).status_code == 200
                 and a.req("GET", "/api/cache/metrics").json()["hits"] > hits, 10, what="a cache hit")
        ahead = range(last + 1, last + 6)
        for _ in range(2):
            for cid in ahead:
                assert_error(a.count_raw(reader["token"], cid), 404, "not_found")
        cid = a.create_conversation(owner["token"], member_ids=[reader["id"]])["id"]
        assert cid in ahead, (cid, list(ahead))
        assert a.count(reader["token"], cid) == 0
    finally:
        a.close()
