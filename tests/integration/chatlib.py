"""Client helpers for chatd's black-box integration tests.

Everything here speaks the public contract (docs/api.md) and nothing else:
an `Api` class over requests.Session for the JSON API, raw-socket helpers and
a small HTTP/1.1 response parser for the transport tests, a Prometheus text
parser/validator for /metrics, and the shape checks shared by every module.
"""

import hashlib
import json as _json
import math
import os
import random
import re
import socket
import time
import uuid

import openapi_check
import requests

# every answer of a chatd the suite started is checked against docs/openapi.yaml
openapi_check.install()

# --- shapes of the contract ------------------------------------------------

TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")

USER_KEYS = {"id", "name", "created_at"}
SIGNUP_KEYS = USER_KEYS | {"token"}
CONV_KEYS = {"id", "title", "created_by", "created_at", "member_count", "last_message_at"}
MSG_KEYS = {
    "id",
    "conversation_id",
    "seq",
    "sender_id",
    "body",
    "created_at",
    "edited_at",
    "deleted",
    "client_msg_id",
}
HISTORY_KEYS = {"conversation_id", "limit", "offset", "messages"}
COUNT_KEYS = {"conversation_id", "count"}
EVENTS_KEYS = {"conversation_id", "rev", "events"}
EVENT_KEYS = {"type", "conversation_id", "rev", "message"}
EVENT_TYPES = {"message", "message_edited", "message_deleted"}
ERROR_KEYS = {"error"}
ERROR_INNER_KEYS = {"code", "message"}

# Text that must never show up in an error message (no SQL, no internals).
LEAK_PATTERNS = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"SQL",
        r"postgres",
        r"\bpg_",
        r"ERROR:",
        r"libpq",
        r"pgbouncer",
        r"hiredis",
        r"traceback",
        r"stack trace",
        r"0x[0-9a-f]{6,}",
        r"\w\.c:\d+",
        r"segmentation",
        r"relation \"",
        r"duplicate key value",
        r"violates .*constraint",
        r"127\.0\.0\.1",
        r"\[::1\]",
        r"redis://",
        r"postgresql://",
    )
] + [
    # SQL keywords only in capitals: "from" is a fine English word.
    re.compile(p) for p in (r"\bSELECT\b", r"\bINSERT INTO\b", r"\bUPDATE\b", r"\bWHERE\b")
]

DEFAULT_TIMEOUT = 30


def unique_name(prefix="u"):
    """A fresh user name; the database is shared, so never reuse one."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def rand_chars(n, lo, hi):
    """n random code points in [lo, hi) — a fresh name each time."""
    return "".join(chr(random.randrange(lo, hi)) for _ in range(n))


def is_pos_int(v):
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def assert_time(v):
    assert isinstance(v, str), f"time is not a string: {v!r}"
    assert TIME_RE.match(v), f"time not RFC 3339 UTC with microseconds: {v!r}"


def assert_json_ct(resp):
    ct = resp.headers.get("Content-Type", "")
    assert ct.split(";")[0].strip().lower() == "application/json", (
        f"Content-Type is {ct!r}, want application/json; status {resp.status_code}, body {resp.content[:200]!r}"
    )


def json_body(resp, status=None):
    """Asserts the status (when given) and JSON content type, returns the decoded body."""
    if status is not None:
        assert resp.status_code == status, (
            f"{resp.request.method} {resp.request.url}: status {resp.status_code}, want {status}; "
            f"body {resp.content[:300]!r}"
        )
    assert_json_ct(resp)
    try:
        return resp.json()
    except ValueError as e:  # pragma: no cover - reported as a failure
        raise AssertionError(f"body is not JSON: {resp.content[:300]!r}") from e


def assert_no_leak(text):
    for p in LEAK_PATTERNS:
        assert not p.search(text), f"error message leaks internals ({p.pattern}): {text!r}"


def assert_error(resp, status, code):
    """Checks an error answer: status, JSON type, exact shape, code, no leak."""
    body = json_body(resp, status)
    assert isinstance(body, dict) and set(body) == ERROR_KEYS, f"error body shape: {body!r}"
    err = body["error"]
    assert isinstance(err, dict) and set(err) == ERROR_INNER_KEYS, f"error body shape: {body!r}"
    assert err["code"] == code, f"error code {err['code']!r}, want {code!r}; body {body!r}"
    assert isinstance(err["message"], str) and err["message"], f"error message: {body!r}"
    assert_no_leak(err["message"])
    return body


def assert_retry_after(resp):
    """Retry-After is present and valid: delay-seconds or an HTTP-date (RFC 9110)."""
    v = resp.headers.get("Retry-After")
    assert v is not None and v.strip(), f"{resp.status_code} without Retry-After: {dict(resp.headers)!r}"
    v = v.strip()
    if not v.isdigit():
        import email.utils
        assert email.utils.parsedate_to_datetime(v) is not None, f"bad Retry-After {v!r}"
    return v


def assert_user(u, name=None, uid=None):
    assert isinstance(u, dict) and set(u) == USER_KEYS, f"user keys: {u!r}"
    assert is_pos_int(u["id"])
    assert isinstance(u["name"], str)
    assert_time(u["created_at"])
    if name is not None:
        assert u["name"] == name
    if uid is not None:
        assert u["id"] == uid


def assert_conversation(c):
    assert isinstance(c, dict) and set(c) == CONV_KEYS, f"conversation keys: {c!r}"
    assert is_pos_int(c["id"])
    assert isinstance(c["title"], str)
    assert is_pos_int(c["created_by"])
    assert_time(c["created_at"])
    assert is_pos_int(c["member_count"])
    if c["last_message_at"] is not None:
        assert_time(c["last_message_at"])


def assert_message(m):
    assert isinstance(m, dict) and set(m) == MSG_KEYS, f"message keys: {m!r}"
    assert is_pos_int(m["id"])
    assert is_pos_int(m["conversation_id"])
    assert is_pos_int(m["seq"])
    assert is_pos_int(m["sender_id"])
    assert isinstance(m["body"], str)
    assert_time(m["created_at"])
    assert m["edited_at"] is None or assert_time(m["edited_at"]) is None
    assert isinstance(m["deleted"], bool)
    if m["deleted"]:
        assert m["body"] == "" and m["edited_at"] is not None
    assert m["client_msg_id"] is None or isinstance(m["client_msg_id"], str)


def sha256(s):
    return hashlib.sha256(s.encode("utf-8")).digest()


# --- the JSON API ------------------------------------------------------------

_MISSING = object()


def conversation_with_message(api, body):
    """Two fresh users, a conversation of the first with the second, and one
    message from the first: {"a", "b", "conv", "cid", "msg", "token"} (token and
    cid are the first user's token and the conversation's id)."""
    a = api.signup()
    b = api.signup()
    c = api.create_conversation(a["token"], member_ids=[b["id"]])
    m = api.send(a["token"], c["id"], body)
    return {"a": a, "b": b, "conv": c, "cid": c["id"], "msg": m, "token": a["token"]}


class Api:
    """A client of chatd's JSON API on one keep-alive requests.Session."""

    def __init__(self, base_url, timeout=DEFAULT_TIMEOUT):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.s = requests.Session()

    def close(self):
        self.s.close()

    def url(self, path):
        return self.base_url + path

    def req(self, method, path, token=None, json=_MISSING, data=None, headers=None, params=None,
            timeout=None):
        """Sends one request and returns the requests.Response, whatever its status.

        token: sent as "Authorization: Bearer <token>". json: any JSON value (None
        is sent as the JSON `null`); data: raw bytes or str sent as-is.
        """
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        kw = {}
        if json is not _MISSING:
            kw["data"] = _json.dumps(json).encode("utf-8")
            h.setdefault("Content-Type", "application/json")
        elif data is not None:
            kw["data"] = data.encode("utf-8") if isinstance(data, str) else data
        return self.s.request(method, self.url(path), headers=h, params=params,
                              timeout=timeout or self.timeout, **kw)

    # users
    def signup(self, name=None, token=None):
        """Signs up a fresh user (unique name by default); asserts 201 and the shape."""
        name = unique_name() if name is None else name
        r = self.req("POST", "/api/v1/users", token=token, json={"name": name})
        u = json_body(r, 201)
        assert isinstance(u, dict) and set(u) == SIGNUP_KEYS, f"sign-up keys: {u!r}"
        assert is_pos_int(u["id"]) and u["name"] == name
        assert_time(u["created_at"])
        assert isinstance(u["token"], str) and u["token"]
        return u

    def get_user(self, token, uid):
        return self.req("GET", f"/api/v1/users/{uid}", token=token)

    # conversations
    def create_conversation_raw(self, token, title, member_ids):
        return self.req("POST", "/api/v1/conversations", token=token,
                        json={"title": title, "member_ids": list(member_ids)})

    def create_conversation(self, token, title=None, member_ids=()):
        """Creates a conversation; asserts 201 and the shape, returns the object."""
        title = title if title is not None else unique_name("t")
        c = json_body(self.create_conversation_raw(token, title, member_ids), 201)
        assert_conversation(c)
        assert c["title"] == title
        assert c["last_message_at"] is None
        return c

    def get_conversation(self, token, cid):
        return self.req("GET", f"/api/v1/conversations/{cid}", token=token)

    def add_member(self, token, cid, user_id):
        return self.req("POST", f"/api/v1/conversations/{cid}/members", token=token,
                        json={"user_id": user_id})

    # messages
    def send_raw(self, token, cid, body, client_msg_id=None):
        payload = {"body": body}
        if client_msg_id is not None:
            payload["client_msg_id"] = client_msg_id
        return self.req("POST", f"/api/v1/conversations/{cid}/messages", token=token, json=payload)

    def send(self, token, cid, body, client_msg_id=None):
        """Sends a message; asserts 201 and the shape, returns the message."""
        m = json_body(self.send_raw(token, cid, body, client_msg_id), 201)
        assert_message(m)
        assert m["conversation_id"] == cid and m["body"] == body
        assert m["client_msg_id"] == client_msg_id
        return m

    def history_raw(self, token, cid, query=None, **params):
        """History request. query: a raw query string (for repeated/odd parameters)."""
        path = f"/api/v1/conversations/{cid}/messages"
        if query is not None:
            return self.req("GET", path + "?" + query, token=token)
        return self.req("GET", path, token=token, params=params or None)

    def history(self, token, cid, **params):
        """History page; asserts 200 and the envelope, returns the decoded body."""
        b = json_body(self.history_raw(token, cid, **params), 200)
        assert isinstance(b, dict) and set(b) == HISTORY_KEYS, f"history keys: {b!r}"
        assert b["conversation_id"] == cid
        assert isinstance(b["messages"], list)
        for m in b["messages"]:
            assert_message(m)
            assert m["conversation_id"] == cid
        ids = [m["id"] for m in b["messages"]]
        assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids), f"not newest first: {ids}"
        return b

    def count_raw(self, token, cid):
        return self.req("GET", f"/api/v1/conversations/{cid}/messages/count", token=token)

    def count(self, token, cid):
        b = json_body(self.count_raw(token, cid), 200)
        assert isinstance(b, dict) and set(b) == COUNT_KEYS, f"count keys: {b!r}"
        assert b["conversation_id"] == cid
        assert isinstance(b["count"], int) and not isinstance(b["count"], bool) and b["count"] >= 0
        return b["count"]

    def catch_up(self, token, cid, after_seq, **params):
        """History with after_seq; asserts 200 and oldest-first order, returns the body."""
        b = json_body(self.history_raw(token, cid, after_seq=after_seq, **params), 200)
        assert isinstance(b, dict) and set(b) == HISTORY_KEYS, f"history keys: {b!r}"
        for m in b["messages"]:
            assert_message(m)
            assert m["conversation_id"] == cid and m["seq"] > after_seq
        seqs = [m["seq"] for m in b["messages"]]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), f"not oldest first: {seqs}"
        return b

    def edit_raw(self, token, cid, mid, body):
        return self.req("PATCH", f"/api/v1/conversations/{cid}/messages/{mid}", token=token,
                        json={"body": body})

    def edit(self, token, cid, mid, body):
        """Edits a message; asserts 200 and the shape, returns the message."""
        m = json_body(self.edit_raw(token, cid, mid, body), 200)
        assert_message(m)
        assert m["id"] == mid and m["conversation_id"] == cid and m["body"] == body
        assert m["edited_at"] is not None and not m["deleted"]
        return m

    def delete_raw(self, token, cid, mid):
        return self.req("DELETE", f"/api/v1/conversations/{cid}/messages/{mid}", token=token)

    def delete(self, token, cid, mid):
        r = self.delete_raw(token, cid, mid)
        assert r.status_code == 204 and r.content == b"", (r.status_code, r.content[:200])

    def events_raw(self, token, cid, query=None, **params):
        path = f"/api/v1/conversations/{cid}/events"
        if query is not None:
            return self.req("GET", path + "?" + query, token=token)
        return self.req("GET", path, token=token, params=params or None)

    def events(self, token, cid, **params):
        """An events page; asserts 200, the shapes and ascending rev, returns the body."""
        b = json_body(self.events_raw(token, cid, **params), 200)
        assert isinstance(b, dict) and set(b) == EVENTS_KEYS, f"events keys: {b!r}"
        assert b["conversation_id"] == cid
        assert isinstance(b["rev"], int) and not isinstance(b["rev"], bool) and b["rev"] >= 0
        revs = []
        for e in b["events"]:
            assert isinstance(e, dict) and set(e) == EVENT_KEYS, f"event keys: {e!r}"
            assert e["type"] in EVENT_TYPES and e["conversation_id"] == cid
            assert_message(e["message"])
            assert e["message"]["conversation_id"] == cid
            assert e["rev"] <= b["rev"]
            revs.append(e["rev"])
        assert revs == sorted(revs) and len(set(revs)) == len(revs), f"not ascending: {revs}"
        return b


# --- raw sockets -------------------------------------------------------------


class RawResponse:
    def __init__(self, version, status, reason, headers, body):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (lower-case name, value)
        self.body = body

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k == name]

    def json(self):
        return _json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return f"<RawResponse {self.version} {self.status} {self.headers!r} {self.body[:200]!r}>"


class Incomplete(Exception):
    pass


def _parse_one(buf, pos, head_request=False):
    """Parses one response at buf[pos:]; returns (RawResponse, new_pos) or raises Incomplete."""
    end = buf.find(b"\r\n\r\n", pos)
    if end < 0:
        raise Incomplete()
    head = buf[pos:end].decode("latin-1")
    lines = head.split("\r\n")
    m = re.match(r"^(HTTP/\d\.\d) (\d{3})(?: (.*))?$", lines[0])
    if not m:
        raise ValueError(f"bad status line: {lines[0]!r}")
    version, status, reason = m.group(1), int(m.group(2)), m.group(3) or ""
    headers = []
    for line in lines[1:]:
        k, sep, v = line.partition(":")
        if not sep:
            raise ValueError(f"bad header line: {line!r}")
        headers.append((k.strip().lower(), v.strip()))
    p = end + 4
    hmap = {}
    for k, v in headers:
        hmap.setdefault(k, v)
    if head_request or status in (204, 304) or 100 <= status < 200:
        body = b""
    elif "chunked" in hmap.get("transfer-encoding", "").lower():
        body = b""
        while True:
            le = buf.find(b"\r\n", p)
            if le < 0:
                raise Incomplete()
            size = int(buf[p:le].split(b";")[0].strip(), 16)
            p = le + 2
            if size == 0:
                te = buf.find(b"\r\n\r\n", p - 2)
                if te < 0:
                    raise Incomplete()
                p = te + 4
                break
            if len(buf) < p + size + 2:
                raise Incomplete()
            body += buf[p:p + size]
            p += size + 2
    elif "content-length" in hmap:
        n = int(hmap["content-length"])
        if len(buf) < p + n:
            raise Incomplete()
        body = buf[p:p + n]
        p += n
    else:
        # Delimited by close: everything that is there.
        body = buf[p:]
        p = len(buf)
    return RawResponse(version, status, reason, headers, body), p


class SentBytes(bytes):
    """Bytes received on a connection, with the requests sent on it (.sent:
    [(method, target)], see openapi_check.requests_in) so that parse_responses
    can check each answer against the route it answers."""

    sent = None


def _with_sent(buf, data):
    b = SentBytes(buf)
    b.sent = openapi_check.requests_in(data)
    return b


def parse_responses(buf):
    """Parses every complete response in buf; returns (responses, leftover bytes).

    Every response is checked against docs/openapi.yaml: against its route when
    buf came from raw_request/mass_exchange (it knows the requests), else against
    every response the document gives for its status.
    """
    out = []
    pos = 0
    rest = None
    while pos < len(buf):
        try:
            r, pos2 = _parse_one(buf, pos)
        except Incomplete:
            break
        if r.header("content-length") is None and "chunked" not in (r.header("transfer-encoding") or "") \
                and r.status not in (204, 304) and not 100 <= r.status < 200:
            # close-delimited: only valid as the last response
            out.append(r)
            rest = b""
            break
        out.append(r)
        pos = pos2
    openapi_check.check_raw(out, getattr(buf, "sent", None))
    return out, (buf[pos:] if rest is None else rest)


def count_complete(buf):
    n = 0
    pos = 0
    while pos < len(buf):
        try:
            r, pos = _parse_one(buf, pos)
        except Incomplete:
            break
        if r.header("content-length") is None and "chunked" not in (r.header("transfer-encoding") or "") \
                and r.status not in (204, 304):
            break
        n += 1
    return n


class RecordingSocket(socket.socket):
    """A client socket that keeps what was sent and received on it, so that the
    answers read_until returns can be paired with their requests (SentBytes)."""

    sent_bytes = b""
    received = b""

    def send(self, data, *a):
        n = super().send(data, *a)
        self.sent_bytes += bytes(data[:n])
        return n

    def sendall(self, data, *a):
        super().sendall(data, *a)
        self.sent_bytes += bytes(data)

    def recv(self, n, *a):
        data = super().recv(n, *a)
        self.received += data
        return data


def connect(host, port, timeout=5, source=None):
    plain = socket.create_connection((host, port), timeout=timeout, source_address=source)
    s = RecordingSocket(plain.family, plain.type, plain.proto, fileno=plain.detach())
    s.settimeout(timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _answers_of(sock, buf):
    """buf (the last bytes read from sock) with the requests it answers, when that
    is known: the bytes received before it end on an answer's boundary."""
    buf = bytes(buf)
    total = getattr(sock, "received", None)
    if not isinstance(sock, RecordingSocket) or not total.endswith(buf):
        return buf
    before = total[:len(total) - len(buf)]
    pos = done = 0
    while pos < len(before):
        try:
            r, pos = _parse_one(before, pos)
        except (Incomplete, ValueError):
            return buf  # the earlier bytes end inside an answer: not aligned
        if r.header("content-length") is None and "chunked" not in (r.header("transfer-encoding") or "") \
                and r.status not in (204, 304) and not 100 <= r.status < 200:
            return buf  # close-delimited: nothing can follow it
        if not (100 <= r.status < 200 and r.status != 101):
            done += 1  # interim answers (100 Continue) answer no request of their own
    out = SentBytes(buf)
    out.sent = openapi_check.requests_in(sock.sent_bytes)[done:]
    return out


def send_all_tolerant(sock, data):
    """sendall that stops quietly when the peer has closed/reset (it may answer early)."""
    try:
        sock.sendall(data)
        return True
    except (BrokenPipeError, ConnectionResetError):
        return False


def read_until(sock, responses=None, timeout=5):
    """Reads from sock until `responses` complete responses are in, or EOF/reset, or timeout.

    Returns (bytes, eof) where eof says whether the peer closed (FIN or RST).
    """
    deadline = time.monotonic() + timeout
    buf = bytearray()
    pos = 0  # where the first response not yet seen complete starts
    done = 0
    while True:
        if responses is not None:
            while done < responses and pos < len(buf):
                try:
                    r, nxt = _parse_one(buf, pos)
                except Incomplete:
                    break
                if r.header("content-length") is None and "chunked" not in (r.header("transfer-encoding") or "") \
                        and r.status not in (204, 304):
                    break  # close-delimited: complete only at EOF
                done += 1
                pos = nxt
            if done >= responses:
                return _answers_of(sock, buf), False
        left = deadline - time.monotonic()
        if left <= 0:
            return _answers_of(sock, buf), False
        sock.settimeout(left)
        try:
            chunk = sock.recv(262144)
        except socket.timeout:
            return _answers_of(sock, buf), False
        except ConnectionResetError:
            return _answers_of(sock, buf), True
        if not chunk:
            return _answers_of(sock, buf), True
        buf += chunk


def raw_request(host, port, data, timeout=5, responses=None):
    """Opens a connection, sends data, and returns every byte received.

    Reads until the server closes, or until `responses` complete responses have
    arrived (for keep-alive), or until timeout.
    """
    s = connect(host, port, timeout=timeout)
    try:
        send_all_tolerant(s, data)
        buf, _ = read_until(s, responses=responses, timeout=timeout)
        return _with_sent(buf, data)
    finally:
        s.close()


def wait_closed(sock, timeout):
    """Waits for the peer to close sock; returns (seconds waited, bytes received) or (None, bytes)."""
    t0 = time.monotonic()
    buf, eof = read_until(sock, responses=None, timeout=timeout)
    if eof:
        return time.monotonic() - t0, buf
    return None, buf


def http_get(path, host="x", extra=""):
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


def http_req(method, path, body=b"", token=None, extra_headers=(), host="x"):
    if isinstance(body, str):
        body = body.encode("utf-8")
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    if body or method in ("POST", "PUT"):
        lines.append("Content-Type: application/json")
        lines.append(f"Content-Length: {len(body)}")
    lines.extend(extra_headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def raw_assert_error(r, status, code):
    """assert_error() for a RawResponse."""
    assert r.status == status, f"status {r.status}, want {status}: {r!r}"
    ct = (r.header("content-type") or "").split(";")[0].strip().lower()
    assert ct == "application/json", f"content-type {ct!r}: {r!r}"
    body = r.json()
    assert isinstance(body, dict) and set(body) == ERROR_KEYS, f"error shape {body!r}"
    assert set(body["error"]) == ERROR_INNER_KEYS and body["error"]["code"] == code, f"{body!r}"
    assert isinstance(body["error"]["message"], str)
    assert_no_leak(body["error"]["message"])
    return body


# --- Prometheus text format 0.0.4 ---------------------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
_SAMPLE_RE = re.compile(rf"^({_NAME})(\{{.*\}})?[ \t]+(\S+)(?:[ \t]+(-?\d+))?[ \t]*$")
_HELP_RE = re.compile(rf"^#[ \t]+HELP[ \t]+({_NAME})(?:[ \t]+(.*))?$")
_TYPE_RE = re.compile(rf"^#[ \t]+TYPE[ \t]+({_NAME})[ \t]+(counter|gauge|histogram|summary|untyped)[ \t]*$")


def _parse_labels(s):
    """Parses '{a="x",b="y"}' with the format's escapes; returns a dict. Raises ValueError."""
    assert s[0] == "{" and s[-1] == "}"
    s = s[1:-1]
    labels = {}
    i = 0
    while i < len(s):
        m = re.compile(rf"[ \t]*({_LABEL})[ \t]*=[ \t]*\"").match(s, i)
        if not m:
            raise ValueError(f"bad label at {s[i:]!r}")
        name = m.group(1)
        i = m.end()
        val = []
        while True:
            if i >= len(s):
                raise ValueError("unterminated label value")
            c = s[i]
            if c == "\\":
                if i + 1 >= len(s):
                    raise ValueError("dangling escape")
                e = s[i + 1]
                if e == "n":
                    val.append("\n")
                elif e in "\\\"":
                    val.append(e)
                else:
                    raise ValueError(f"bad escape \\{e}")
                i += 2
            elif c == '"':
                i += 1
                break
            elif c == "\n":
                raise ValueError("newline in label value")
            else:
                val.append(c)
                i += 1
        if name in labels:
            raise ValueError(f"duplicate label {name}")
        labels[name] = "".join(val)
        m = re.compile(r"[ \t]*(,|$)").match(s, i)
        if not m:
            raise ValueError(f"junk after label value: {s[i:]!r}")
        i = m.end()
    return labels


def _parse_value(v):
    if v in ("+Inf", "Inf"):
        return math.inf
    if v == "-Inf":
        return -math.inf
    if v == "NaN":
        return math.nan
    return float(v)


class Metrics:
    """A parsed /metrics page: types, and samples as (name, labels dict, value)."""

    def __init__(self, text):
        self.text = text
        self.types = {}
        self.helps = {}
        self.samples = []
        self.errors = []
        self._parse()

    def _family_of(self, name):
        if name in self.types:
            return name
        for suf in ("_bucket", "_sum", "_count"):
            if name.endswith(suf):
                base = name[: -len(suf)]
                if self.types.get(base) in ("histogram", "summary"):
                    if suf == "_bucket" and self.types[base] != "histogram":
                        continue
                    return base
        return name

    def _parse(self):
        seen_series = set()
        family_order = []
        closed = set()
        current = None
        if self.text and not self.text.endswith("\n"):
            self.errors.append("text does not end with a newline")
        for ln, line in enumerate(self.text.split("\n"), 1):
            if line == "":
                continue
            if line.startswith("#"):
                m = _TYPE_RE.match(line)
                if m:
                    name, typ = m.groups()
                    if name in self.types:
                        self.errors.append(f"line {ln}: second TYPE for {name}")
                    if any(fam == name for fam, _ in family_order):
                        self.errors.append(f"line {ln}: TYPE for {name} after its samples")
                    self.types[name] = typ
                    continue
                m = _HELP_RE.match(line)
                if m:
                    name = m.group(1)
                    if name in self.helps:
                        self.errors.append(f"line {ln}: second HELP for {name}")
                    self.helps[name] = m.group(2) or ""
                    continue
                if re.match(r"^#[ \t]+(HELP|TYPE)\b", line):
                    self.errors.append(f"line {ln}: malformed {line!r}")
                continue
            m = _SAMPLE_RE.match(line)
            if not m:
                self.errors.append(f"line {ln}: malformed sample {line!r}")
                continue
            name, lab, val, _ts = m.groups()
            try:
                labels = _parse_labels(lab) if lab else {}
            except ValueError as e:
                self.errors.append(f"line {ln}: {e}: {line!r}")
                continue
            try:
                value = _parse_value(val)
            except ValueError:
                self.errors.append(f"line {ln}: bad value {val!r}")
                continue
            fam = self._family_of(name)
            if fam != current:
                if fam in closed:
                    self.errors.append(f"line {ln}: samples of {fam} are not contiguous")
                if current is not None:
                    closed.add(current)
                current = fam
                family_order.append((fam, ln))
            key = (name, tuple(sorted(labels.items())))
            if key in seen_series:
                self.errors.append(f"line {ln}: duplicate series {line!r}")
            seen_series.add(key)
            typ = self.types.get(fam)
            if typ == "histogram" and name == fam:
                self.errors.append(f"line {ln}: histogram {fam} has a bare sample")
            if typ == "histogram" and name == fam + "_bucket" and "le" not in labels:
                self.errors.append(f"line {ln}: bucket without le")
            if typ == "counter" and not (value >= 0):
                self.errors.append(f"line {ln}: negative counter")
            self.samples.append((name, labels, value))
        self._check_histograms()

    def _check_histograms(self):
        for fam, typ in self.types.items():
            if typ != "histogram":
                continue
            groups = {}
            for name, labels, value in self.samples:
                if name not in (fam + "_bucket", fam + "_sum", fam + "_count"):
                    continue
                base = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
                g = groups.setdefault(base, {"buckets": [], "sum": None, "count": None})
                if name.endswith("_bucket"):
                    g["buckets"].append((_parse_value(labels["le"]) if "le" in labels else None, value))
                elif name.endswith("_sum"):
                    g["sum"] = value
                else:
                    g["count"] = value
            for base, g in groups.items():
                bs = [b for b in g["buckets"] if b[0] is not None]
                les = [b[0] for b in bs]
                if les != sorted(les):
                    self.errors.append(f"{fam}{dict(base)}: buckets not in increasing le order")
                bs.sort()
                if not bs or bs[-1][0] != math.inf:
                    self.errors.append(f"{fam}{dict(base)}: no +Inf bucket")
                counts = [c for _, c in bs]
                if counts != sorted(counts):
                    self.errors.append(f"{fam}{dict(base)}: buckets not cumulative")
                if g["count"] is None or g["sum"] is None:
                    self.errors.append(f"{fam}{dict(base)}: missing _sum or _count")
                elif bs and bs[-1][0] == math.inf and bs[-1][1] != g["count"]:
                    self.errors.append(f"{fam}{dict(base)}: +Inf bucket != _count")

    def series(self, name, labels=None):
        labels = labels or {}
        return [(lab, v) for n, lab, v in self.samples
                if n == name and all(lab.get(k) == str(v2) for k, v2 in labels.items())]

    def value(self, name, labels=None):
        """Sum of every series of name matching labels (0.0 when none)."""
        return sum(v for _, v in self.series(name, labels))

    def has(self, name, labels=None):
        return bool(self.series(name, labels))

    def buckets(self, name, labels=None):
        """Histogram buckets summed across series: sorted list of (le, cumulative count)."""
        acc = {}
        for lab, v in self.series(name + "_bucket", labels):
            le = _parse_value(lab["le"])
            acc[le] = acc.get(le, 0.0) + v
        return sorted(acc.items())


def get_metrics(base_url, timeout=10):
    r = requests.get(base_url.rstrip("/") + "/metrics", timeout=timeout)
    assert r.status_code == 200, f"/metrics status {r.status_code}"
    return Metrics(r.text)


def wait_for(cond, timeout, interval=0.02, what="condition"):
    """Polls cond() until it returns a truthy value or timeout; returns the value or fails."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def free_port():
    """A loopback port nobody listens on (bound and closed)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def read_vmrss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


# --- many connections at once (selectors/epoll) --------------------------------------

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def raise_nofile(want=None):
    """Raises this process' soft RLIMIT_NOFILE to the hard limit (or want); returns the new soft limit."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if want is None else min(want, hard)
    if hard == resource.RLIM_INFINITY and want is not None:
        target = want
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def mass_connect(host, port, n, source_of=None, in_flight=256, timeout=60):
    """Opens n non-blocking TCP connections, at most in_flight handshakes at a time.

    source_of(i) may give the source address to bind connection i to (port 0).
    Returns the list of connected sockets (non-blocking, TCP_NODELAY) or fails.
    """
    import errno
    import selectors
    sel = selectors.DefaultSelector()
    socks = []
    pending = 0
    nxt = 0
    done = 0
    deadline = time.monotonic() + timeout
    try:
        while done < n:
            while nxt < n and pending < in_flight:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                if source_of is not None:
                    try:
                        s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                    except OSError:
                        pass
                    s.bind((source_of(nxt), 0))
                rc = s.connect_ex((host, port))
                if rc not in (0, errno.EINPROGRESS):
                    s.close()
                    raise AssertionError(f"connect #{nxt} failed at once: {os.strerror(rc)}")
                socks.append(s)
                sel.register(s, selectors.EVENT_WRITE, nxt)
                pending += 1
                nxt += 1
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"only {done} of {n} connections established in {timeout}s")
            for key, _ in sel.select(timeout=min(left, 1.0)):
                s = key.fileobj
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                sel.unregister(s)
                pending -= 1
                if err:
                    raise AssertionError(f"connect #{key.data} failed: {os.strerror(err)}")
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                done += 1
        return socks
    except BaseException:
        for s in socks:
            s.close()
        raise
    finally:
        sel.close()


def mass_exchange(socks, request_of, timeout=60):
    """Sends request_of(i) on every socket first, then reads one response from each.

    Returns a list of raw response bytes (one complete response each, or what
    arrived before EOF / the deadline, with eof flags): [(bytes, eof), ...].
    """
    import selectors
    sel = selectors.DefaultSelector()
    n = len(socks)
    out = [b""] * n
    eof = [False] * n
    unsent = {}
    deadline = time.monotonic() + timeout
    try:
        sent = [b""] * n
        for i, s in enumerate(socks):
            data = request_of(i)
            sent[i] = data
            try:
                k = s.send(data)
            except BlockingIOError:
                k = 0
            except (BrokenPipeError, ConnectionResetError):
                eof[i] = True
                continue
            if k < len(data):
                unsent[i] = data[k:]
        for i, s in enumerate(socks):
            if eof[i]:
                continue
            ev = selectors.EVENT_READ | (selectors.EVENT_WRITE if i in unsent else 0)
            sel.register(s, ev, i)
        remaining = sum(1 for e in eof if not e)
        while remaining:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for key, mask in sel.select(timeout=min(left, 1.0)):
                i = key.data
                s = key.fileobj
                if mask & selectors.EVENT_WRITE and i in unsent:
                    try:
                        k = s.send(unsent[i])
                        unsent[i] = unsent[i][k:]
                    except BlockingIOError:
                        pass
                    except (BrokenPipeError, ConnectionResetError):
                        unsent[i] = b""
                    if not unsent[i]:
                        del unsent[i]
                        sel.modify(s, selectors.EVENT_READ, i)
                if mask & selectors.EVENT_READ:
                    try:
                        chunk = s.recv(65536)
                    except BlockingIOError:
                        continue
                    except ConnectionResetError:
                        chunk = b""
                    if not chunk:
                        eof[i] = True
                    else:
                        out[i] += chunk
                    if eof[i] or count_complete(out[i]) >= 1:
                        sel.unregister(s)
                        remaining -= 1
        return [(_with_sent(o, sent[i]), e) for i, (o, e) in enumerate(zip(out, eof))]
    finally:
        sel.close()


# --- a TCP forwarder the tests can cut -----------------------------------------------


class TcpProxy:
    """Forwards 127.0.0.1:<port> to target; stop() refuses new connections and cuts live ones."""

    def __init__(self, target_host, target_port, port=0):
        import threading
        self.target = (target_host, target_port)
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", port))
        self.port = self.lsock.getsockname()[1]
        self.lsock.listen(128)
        self.conns = []
        self.lock = threading.Lock()
        self.stopped = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        import threading
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(self.target, timeout=5)
                u.settimeout(None)
            except OSError:
                c.close()
                continue
            with self.lock:
                if self.stopped:
                    c.close()
                    u.close()
                    return
                self.conns += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                d = src.recv(65536)
                if not d:
                    break
                dst.sendall(d)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self):
        with self.lock:
            self.stopped = True
            conns, self.conns = self.conns, []
        try:
            self.lsock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.lsock.close()
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self.thread.join(timeout=5)

