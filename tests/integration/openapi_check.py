"""Checks chatd's answers against docs/openapi.yaml (OpenAPI 3.1, JSON Schema 2020-12).

The integration suite calls these on every answer it receives from a chatd
it started: requests (through any requests.Session, chatlib.Api included:
install() wraps Session.send), the raw-socket helpers of chatlib (their
parsed responses) and the WebSocket client (handshake answers and every
text frame chatd pushes). An answer the document does not describe fails
the test with the route, the status and the JSON path of the violation.

How an answer is looked up (the rules the document states in its
info.description and its x-chatd-* extensions):
- the path is matched against the document's path templates, concrete
  segments before placeholders (`/messages/count` before `/messages/{message_id}`);
  a placeholder matches one non-empty segment whatever it holds, as chatd's
  router does (`/users/abc` is the user route, answered 404);
- HEAD is looked up as GET and has no body;
- no template matches: the answer must be x-chatd-unmatched.path (404);
  a template matches but the method is not listed: x-chatd-unmatched.method (405);
- a status the operation does not list is accepted only when it is one of
  x-chatd-connection-errors (400/408/413/431/505, refused before routing);
- required response headers must be present (and match their schema's
  const or pattern); the Content-Type must be one the response lists, and
  a JSON body must validate against its schema; a response without content
  must have an empty body.
Raw responses whose request is not known (a test sent bytes on a socket by
hand) are checked against every response the document gives for their
status ("generic"); those whose request is known (chatlib.raw_request,
mass_exchange) are checked fully.
"""

import decimal
import json
import re
import threading
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator, RefResolver, validators

SPEC_PATH = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


class Mismatch(AssertionError):
    """An answer the OpenAPI document does not describe."""


_lock = threading.Lock()
stats = {"responses": 0, "raw_paired": 0, "raw_generic": 0, "frames": 0, "seconds": 0.0}
violations = []  # every Mismatch raised, so a swallowed one still fails its test
_ports = {}  # port -> how many live chatd processes the suite started listen there


def serve(port):
    """Registers a chatd the suite started: requests to its port on loopback are checked."""
    with _lock:
        _ports[int(port)] = _ports.get(int(port), 0) + 1


def unserve(port):
    with _lock:
        n = _ports.get(int(port), 0) - 1
        if n > 0:
            _ports[int(port)] = n
        else:
            _ports.pop(int(port), None)


def is_chatd(host, port):
    if host not in ("127.0.0.1", "localhost", "::1"):
        return False
    with _lock:
        return int(port) in _ports


def _count(what):
    with _lock:
        stats[what] += 1


def _timed(fn):
    """Adds the thread CPU time the checks take to stats["seconds"]."""
    import functools
    import time

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        t0 = time.thread_time()
        try:
            return fn(*a, **kw)
        finally:
            with _lock:
                stats["seconds"] += time.thread_time() - t0
    return wrapper


def _fail(msg):
    e = Mismatch("OpenAPI: " + msg)
    with _lock:
        violations.append(str(e))
    raise e


class Spec:
    """The document, its routes and a validator per schema."""

    def __init__(self, path=SPEC_PATH):
        self.doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        # a RefResolver keeps a scope stack: one per thread (the suite's threads check too)
        self._local = threading.local()
        self.named = {}  # inlined object schemas of components/schemas, by name
        self.valid = set()  # (name, canonical JSON) of instances already found valid
        self.routes = []
        for template, item in self.doc["paths"].items():
            parts = re.split(r"(\{[^}/]+\})", template)
            rx = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
            literal = sum(len(p) for p in parts if not p.startswith("{"))
            self.routes.append((template, re.compile("^" + rx + "$"), literal, item))
        # concrete before templated: the longest literal part wins
        self.routes.sort(key=lambda r: -r[2])

    def deref(self, obj):
        while isinstance(obj, dict) and "$ref" in obj:
            ref = obj["$ref"]
            assert ref.startswith("#/"), ref
            node = self.doc
            for part in ref[2:].split("/"):
                node = node[part.replace("~1", "/").replace("~0", "~")]
            obj = node
        return obj

    ANNOTATIONS = {"description", "title", "summary", "examples", "deprecated"}

    def inline(self, schema):
        """schema with every $ref replaced by what it names (the document's schemas
        are not recursive): jsonschema resolves references slowly, once per use.
        A named object schema becomes {"x-chatd-memo": name}: see _memo."""
        if isinstance(schema, list):
            return [self.inline(x) for x in schema]
        if not isinstance(schema, dict):
            return schema
        if "$ref" in schema:
            ref = schema["$ref"]
            named = self.deref({"$ref": ref})
            name = ref[len("#/components/schemas/"):] if ref.startswith("#/components/schemas/") else None
            if name and named.get("type") == "object":
                if name not in self.named:
                    self.named[name] = None  # placed first: no schema of the document recurses
                    self.named[name] = self.inline(named)
                target = {"x-chatd-memo": name}
            else:
                target = self.inline(named)
            rest = {k: v for k, v in schema.items() if k != "$ref" and k not in self.ANNOTATIONS}
            if not rest:
                return target
            return {"allOf": [target], **self.inline(rest)}
        return {k: (v if k in ("enum", "const") else self.inline(v)) for k, v in schema.items()}

    def validator(self, schema):
        local = self._local
        if not hasattr(local, "validators"):
            local.resolver = RefResolver(base_uri="", referrer=self.doc)
            local.validators = {}
        key = json.dumps(schema, sort_keys=True)
        v = local.validators.get(key)
        if v is None:
            v = _Validator(self.inline(schema), resolver=local.resolver)
            local.validators[key] = v
        return v

    def match(self, path):
        """(template, path item) of the path, or (None, None)."""
        for template, rx, _lit, item in self.routes:
            if rx.match(path):
                return template, item
        return None, None

    def operation(self, template, method):
        item = self.deref(self.doc["paths"][template])
        m = method.lower()
        return item.get("get" if m == "head" else m)

    def responses_with_status(self, status):
        """Every response object the document gives for status (generic checks)."""
        out = []
        for _t, _rx, _lit, item in self.routes:
            for m in METHODS:
                op = item.get(m)
                if op and str(status) in op["responses"]:
                    out.append(self.deref(op["responses"][str(status)]))
        extra = self.doc.get("x-chatd-connection-errors", {}).get(str(status))
        if extra:
            out.append(self.deref(extra))
        un = self.doc["x-chatd-unmatched"]
        for k, st in (("path", 404), ("method", 405)):
            if status == st:
                out.append(self.deref(un[k]))
        return out

    def frame_schema(self, direction, frame):
        """The schema of a WebSocket frame (by its type, through the discriminator)."""
        name = "ServerFrame" if direction == "server" else "ClientFrame"
        union = self.doc["components"]["schemas"][name]
        t = frame.get("type") if isinstance(frame, dict) else None
        mapping = union["discriminator"]["mapping"]
        if not isinstance(t, str) or t not in mapping:
            return None, f"type {t!r} is none of {sorted(mapping)}"
        return {"$ref": mapping[t]}, None


def _memo(validator, name, instance, schema):
    """The keyword x-chatd-memo: instance against the named object schema, once
    per distinct instance (a message shows up in many pages; checking it again
    would cost the suite minutes)."""
    sp = spec()
    try:
        key = (name, json.dumps(instance, sort_keys=True, default=str))
    except (TypeError, ValueError):
        key = None
    if key is not None and key in sp.valid:
        return
    errors = list(validator.descend(instance, sp.named[name]))
    if not errors and key is not None:
        with _lock:
            if len(sp.valid) > 200000:
                sp.valid.clear()
            sp.valid.add(key)
    yield from errors


_Validator = validators.extend(Draft202012Validator, {"x-chatd-memo": _memo})

_spec = None


def spec():
    global _spec
    if _spec is None:
        _spec = Spec()
    return _spec


def _violation(v, schema, instance):
    errs = sorted(v.iter_errors(instance), key=lambda e: (len(list(e.absolute_path)), str(e.message)))
    if not errs:
        return None
    from jsonschema.exceptions import best_match
    e = best_match(errs)
    where = e.json_path if hasattr(e, "json_path") else "$" + "".join(f"[{p!r}]" for p in e.absolute_path)
    return f"{where}: {e.message} (schema {schema.get('$ref', schema)}; {len(errs)} violation(s))"


def _header(headers, name):
    name = name.lower()
    for k, v in headers.items():
        if k.lower() == name:
            return v
    return None


def _check_response(resp, label, status, headers, body, head):
    """Checks one answer against one response object; returns an error text or None."""
    sp = spec()
    for hname, h in (resp.get("headers") or {}).items():
        h = sp.deref(h)
        val = _header(headers, hname)
        if h.get("required") and val is None:
            return f"{label}: header {hname} missing"
        sch = h.get("schema", {})
        if val is not None and "const" in sch and val != sch["const"]:
            return f"{label}: header {hname}: {val!r}, want {sch['const']!r}"
        if val is not None and "pattern" in sch and not re.search(sch["pattern"], val):
            return f"{label}: header {hname}: {val!r} does not match {sch['pattern']}"
    content = resp.get("content")
    if not content:
        if body:
            return f"{label}: a body where the document has none: {body[:120]!r}"
        return None
    if head:
        return None
    ct = (_header(headers, "content-type") or "").split(";")[0].strip().lower()
    if ct not in content:
        return f"{label}: Content-Type {ct!r}, the document lists {sorted(content)}"
    if ct != "application/json":
        return None
    try:
        # a fraction is never an integer here: 7.0 is no id
        data = json.loads(body.decode("utf-8"), parse_float=decimal.Decimal)
    except (UnicodeDecodeError, ValueError):
        return f"{label}: the body is not JSON: {body[:120]!r}"
    schema = content[ct]["schema"]
    err = _violation(sp.validator(schema), schema, data)
    if err:
        return f"{label}: {err}; body {body[:300]!r}"
    return None


@_timed
def check_http(method, target, status, headers, body, head=None):
    """Checks one answer of chatd to `method target`; raises Mismatch when undocumented.

    headers: a mapping (any case) of the response headers; body: the bytes received.
    """
    sp = spec()
    path = target.split("?", 1)[0].split("#", 1)[0]
    head = method.upper() == "HEAD" if head is None else head
    label = f"{method.upper()} {path} → {status}"
    template, _item = sp.match(path)
    un = sp.doc["x-chatd-unmatched"]
    resp = None
    if template is None:
        if status == 404:
            resp = sp.deref(un["path"])
        label += " (no path of the document)"
    else:
        op = sp.operation(template, method)
        label = f"{method.upper()} {template} ({path}) → {status}"
        if op is None:
            if status == 405:
                resp = sp.deref(un["method"])
            label += " (method not in the document)"
        else:
            r = op["responses"].get(str(status))
            resp = sp.deref(r) if r is not None else None
    if resp is None:
        extra = sp.doc.get("x-chatd-connection-errors", {}).get(str(status))
        if extra is None:
            _fail(f"{label}: status not in the document; body {body[:300]!r}")
        resp = sp.deref(extra)
    err = _check_response(resp, label, status, headers, body, head)
    if err:
        _fail(err)
    _count("responses")


@_timed
def check_generic(status, headers, body):
    """An answer whose request is unknown: it must fit some response of its status."""
    sp = spec()
    cands = sp.responses_with_status(status)
    label = f"(raw, request unknown) → {status}"
    if not cands:
        _fail(f"{label}: status not in the document; body {body[:300]!r}")
    errs = []
    for resp in cands:
        # HEAD cannot be told apart here: an empty body is let through
        err = _check_response(resp, label, status, headers, body, head=not body)
        if err is None:
            _count("raw_generic")
            return
        errs.append(err)
    _fail(f"{label}: fits none of the {len(cands)} responses of that status; first: {errs[0]}")


def check_frame_text(payload, direction="server"):
    """Checks one WebSocket text message as received (bytes or str)."""
    if isinstance(payload, (bytes, bytearray)):
        payload = bytes(payload).decode("utf-8")
    try:
        frame = json.loads(payload, parse_float=decimal.Decimal)
    except ValueError:
        _fail(f"{direction} frame is not JSON: {payload[:300]!r}")
    check_frame(frame, direction)


@_timed
def check_frame(frame, direction="server"):
    """Checks one decoded WebSocket text message (server frames by default)."""
    sp = spec()
    schema, err = sp.frame_schema(direction, frame)
    if schema is not None:
        err = _violation(sp.validator(schema), schema, frame)
    if err:
        _fail(f"{direction} frame {json.dumps(frame)[:300]}: {err}")
    _count("frames")


# ---- the requests of a raw byte stream -------------------------------------------------

_REQ_LINE = re.compile(rb"^([A-Z]+) (\S+) HTTP/1\.[01]$")


def requests_in(data):
    """(method, target) of each well-formed request at the start of data, in order.

    Stops at the first request it cannot frame (its answer, and any after it, are
    then checked generically); an upgrade ends the HTTP part of the stream.
    """
    out = []
    pos = 0
    data = bytes(data)
    while pos < len(data):
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            break
        lines = data[pos:end].split(b"\r\n")
        m = _REQ_LINE.match(lines[0])
        if not m:
            break
        hdrs = {}
        ok = True
        for ln in lines[1:]:
            k, sep, v = ln.partition(b":")
            if not sep or not k or k != k.strip():
                ok = False
                break
            key = k.strip().lower()
            if key in hdrs:
                ok = False
                break
            hdrs[key] = v.strip()
        if not ok:
            break
        n = hdrs.get(b"content-length", b"0")
        if not n.isdigit():
            break
        out.append((m.group(1).decode(), m.group(2).decode("latin-1")))
        if b"upgrade" in hdrs or b"transfer-encoding" in hdrs:
            break  # another protocol follows, or a body not framed here
        pos = end + 4 + int(n)
    return out


def check_raw(responses, sent):
    """Checks parsed raw responses (objects with .status, .headers [(name, value)], .body).

    sent: the requests as requests_in() found them, or None when unknown: the
    i-th response answers the i-th request (HTTP/1.1 answers in order).
    """
    i = 0
    for r in responses:
        if 100 <= r.status < 200 and r.status != 101:
            continue  # an interim answer (100 Continue): the final one follows
        headers = {}
        for k, v in r.headers:
            headers.setdefault(k, v)
        i += 1
        if sent is not None and i <= len(sent):
            method, target = sent[i - 1]
            check_http(method, target, r.status, headers, r.body)
            _count("raw_paired")
        else:
            check_generic(r.status, headers, r.body)


# ---- requests.Session ----------------------------------------------------------------------


def install():
    """Wraps requests.Session.send: every answer of a registered chatd is checked."""
    import urllib.parse

    import requests

    if getattr(requests.Session.send, "_openapi_checked", False):
        return
    orig = requests.Session.send

    def send(self, request, **kw):
        resp = orig(self, request, **kw)
        u = urllib.parse.urlsplit(request.url)
        if u.hostname and u.port and is_chatd(u.hostname, u.port) and not kw.get("stream"):
            target = u.path or "/"
            check_http(request.method, target, resp.status_code, resp.headers, resp.content)
        return resp

    send._openapi_checked = True
    requests.Session.send = send
