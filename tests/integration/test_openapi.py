"""docs/openapi.yaml against itself, chatd's router and a running chatd.

Every answer of the suite is checked against the document by openapi_check
(installed by chatlib, conftest and wsclient); these tests check the document
(its schemas are valid JSON Schema 2020-12, its references resolve, it is
strict) and that its paths are exactly the routes chatd serves. The document's
structure against the OpenAPI 3.1 schema is `make openapi-check`
(tools/openapi).
"""

import re
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

import openapi_check
from chatlib import unique_name

REPO = Path(__file__).resolve().parents[2]
ROUTER = REPO / "src" / "api" / "api.c"

# The web client's files and the embedded document (compiled in, static.c):
# the token-less probe below does not apply to them (an unknown asset is a 404);
# test_openapi_served.py and test_web.py check them against a running chatd.
WEB_PATHS = {"/", "/favicon.ico", "/app/{asset}", "/api/openapi.json"}

METHODS = openapi_check.METHODS


def _doc():
    return openapi_check.spec().doc


def _operations(doc):
    for path, item in doc["paths"].items():
        for m in METHODS:
            if m in item:
                yield path, m, item[m]


def _walk(node, where="$"):
    if isinstance(node, dict):
        yield where, node
        for k, v in node.items():
            yield from _walk(v, f"{where}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{where}/{i}")


# --- the document -----------------------------------------------------------------------


def test_every_schema_is_valid_json_schema_2020_12():
    doc = _doc()
    assert doc["openapi"].startswith("3.1.")
    for name, schema in doc["components"]["schemas"].items():
        Draft202012Validator.check_schema(schema)
    for path, m, op in _operations(doc):
        for status, resp in op["responses"].items():
            resp = openapi_check.spec().deref(resp)
            for ct, media in (resp.get("content") or {}).items():
                Draft202012Validator.check_schema(media["schema"])


def test_every_reference_resolves():
    sp = openapi_check.spec()
    refs = [(w, n["$ref"]) for w, n in _walk(sp.doc) if "$ref" in n]
    assert len(refs) > 100
    for where, ref in refs:
        assert ref.startswith("#/"), f"{where}: only local references: {ref}"
        try:
            sp.deref({"$ref": ref})
        except KeyError as e:
            raise AssertionError(f"{where}: {ref} does not resolve") from e


def test_every_object_schema_is_closed():
    """additionalProperties: false on every object with properties (maps give a value schema)."""
    open_objects = []
    for where, node in _walk(_doc()["components"]["schemas"], "#/components/schemas"):
        if node.get("type") == "object" and "properties" in node:
            if node.get("additionalProperties") is not False:
                open_objects.append(where)
            missing = set(node["properties"]) - set(node.get("required", []))
            optional = {"#/components/schemas/SendRequest": {"client_msg_id"},
                        "#/components/schemas/SendFrame": {"client_msg_id"},
                        "#/components/schemas/OpenApiDocument": None}
            if where in optional:
                allowed = optional[where]
                assert allowed is None or missing <= allowed, f"{where}: not required: {missing}"
            else:
                assert not missing, f"{where}: fields not in required: {missing}"
    assert open_objects == [], open_objects


def test_every_operation_lists_its_errors():
    """The statuses every route can give: 401 where a token is needed, 429/503 on
    /api/v1 (rate limit, database), 404 where the path holds an id, 413/422 where
    a body is read; and every error response is the error schema of its code."""
    sp = openapi_check.spec()
    ids = set()
    for path, m, op in _operations(sp.doc):
        codes = set(op["responses"])
        assert op["operationId"] not in ids
        ids.add(op["operationId"])
        if path.startswith("/api/v1/"):
            assert {"400", "401", "429", "503"} <= codes, (path, m, codes)
        if "{" in path and path.startswith("/api/v1/"):
            assert "404" in codes, (path, m)
        if "requestBody" in op:
            assert "413" in codes, (path, m)
            if path.startswith("/api/v1/"):
                assert "422" in codes, (path, m)
        for status, resp in op["responses"].items():
            shared = "$ref" in resp  # the error answers are components/responses
            resp = sp.deref(resp)
            if int(status) >= 400 and not (path == "/readyz" and status == "503"):
                assert shared, (path, m, status)
                schema = resp["content"]["application/json"]["schema"]
                target = sp.deref(schema)
                code = target["properties"]["error"]["properties"]["code"]["const"]
                assert code in sp.doc["components"]["schemas"]["ErrorCode"]["enum"]
                if status in ("429", "503"):
                    assert "Retry-After" in resp.get("headers", {}), (path, m, status)
        # path placeholders are declared as path parameters
        item = sp.doc["paths"][path]
        declared = {sp.deref(p)["name"] for p in item.get("parameters", []) + op.get("parameters", [])
                    if sp.deref(p)["in"] == "path"}
        assert declared == set(re.findall(r"\{([^}]+)\}", path)), (path, declared)


def test_the_checker_catches_a_wrong_answer():
    """The checks can fail: an extra field, a wrong type, an undocumented status."""
    msg = {"id": 1, "conversation_id": 7, "seq": 1, "sender_id": 1, "body": "hi",
           "created_at": "2026-11-26T18:49:46.123456Z", "edited_at": None, "deleted": False,
           "client_msg_id": None}
    ct = {"Content-Type": "application/json"}
    import json
    path = "/api/v1/conversations/7/messages"
    openapi_check.check_http("POST", path, 201, ct, json.dumps(msg).encode())
    bad = [
        (201, dict(msg, extra=1)),
        (201, dict(msg, id="1")),
        (201, dict(msg, seq=0)),
        (201, dict(msg, created_at="2026-11-26T18:49:46Z")),
        (201, {k: v for k, v in msg.items() if k != "client_msg_id"}),
        (202, msg),
        (404, {"error": {"code": "not_found", "message": "x", "detail": 1}}),
        (404, {"error": {"code": "forbidden", "message": "x"}}),
    ]
    before = len(openapi_check.violations)
    for status, body in bad:
        with pytest.raises(openapi_check.Mismatch):
            openapi_check.check_http("POST", path, status, ct, json.dumps(body).encode())
    with pytest.raises(openapi_check.Mismatch):  # 7.0 is no id
        openapi_check.check_http("POST", path, 201, ct, json.dumps(msg).replace('"id": 1', '"id": 1.0').encode())
    with pytest.raises(openapi_check.Mismatch):
        openapi_check.check_frame({"type": "typing", "conversation_id": 7})
    # the deliberate ones above are not this test's failures
    del openapi_check.violations[before:]


# --- the document against the router -------------------------------------------------------


def _router_routes():
    """(pattern, {methods}) of every row of the router's table in src/api/api.c."""
    src = ROUTER.read_text()
    table = re.search(r"static const chat_route_t routes\[\] = \{(.*?)\n\};", src, re.S)
    assert table, "the route table of src/api/api.c was not found"
    rows = re.findall(r'\{"(/[^"]*)",\s*"([A-Z, ]+)",', table.group(1))
    assert len(rows) >= 15, rows
    # HEAD is answered as GET where GET is (the document lists GET only, as
    # openapi_check looks HEAD up)
    out = {}
    for p, m in rows:
        ms = set(m.lower().split(", "))
        out[p] = ms - {"head"} if "get" in ms else ms
    return out


def test_router_table_and_document_have_the_same_routes():
    """Both directions from the source: every row of chatd's route table (its
    pattern and the methods of its Allow) is a path of the document with exactly
    those methods (HEAD counted as GET), and every path of the document is a row.
    The table is the only place chatd routes anything (chat_api_handle answers
    every other path 404)."""
    router_api = _router_routes()
    doc_api = {p: {m for m in METHODS if m in item} for p, item in _doc()["paths"].items()}
    assert set(router_api) - set(doc_api) == set(), "routes chatd serves that the document lacks"
    assert set(doc_api) - set(router_api) == set(), "paths of the document chatd does not route"
    for p in router_api:
        assert router_api[p] == doc_api[p], f"{p}: router {router_api[p]}, document {doc_api[p]}"


def _fill(path, ids):
    return re.sub(r"\{([^}]+)\}", lambda m: str(ids.get(m.group(1), 1)), path)


def test_every_documented_route_is_served(api):
    """By probing the running chatd: each documented method of each path (the
    placeholders filled with real ids) is answered by its route, not the
    router's 404 for unknown paths nor a 405; a method the document does not
    list is answered 405 with an Allow naming exactly the documented methods.
    Every answer is also checked against the document by openapi_check."""
    a = api.signup()
    b = api.signup()
    c = api.create_conversation(a["token"], member_ids=[b["id"]])
    m = api.send(a["token"], c["id"], "probe")
    ids = {"id": c["id"], "user_id": b["id"], "message_id": m["id"]}
    # the probe can tell: an unknown path is 404
    assert api.req("GET", "/api/v1/" + unique_name("nope")).status_code == 404
    for path, item in _doc()["paths"].items():
        if path in WEB_PATHS:
            continue
        methods = [x for x in METHODS if x in item]
        target = _fill(path, dict(ids, id=a["id"] if path == "/api/v1/users/{id}" else ids["id"]))
        for meth in methods:
            # a token-less probe: the route answers (401 where a token is needed)
            r = api.req(meth.upper(), target, data=b"{}" if meth in ("post", "patch") else None,
                        headers={"Upgrade": "websocket"} if path == "/api/v1/stream" else None)
            assert r.status_code not in (404, 405), (meth, target, r.status_code, r.text[:200])
        r = api.req("PUT", target, token=a["token"], data=b"{}")
        assert r.status_code == 405, (target, r.status_code)
        allow = {x.strip().lower() for x in r.headers["Allow"].split(",")}
        assert allow == set(methods), (path, allow, methods)
