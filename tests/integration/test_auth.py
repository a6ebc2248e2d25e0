"""Authentication: every /api/v1 endpoint but sign-up wants a valid bearer token,
and answers 401 `unauthorized` without one, whatever the body holds."""

import secrets

import pytest

from chatlib import Api, assert_error, conversation_with_message, json_body


@pytest.fixture(scope="module")
def world(api):
    """Two users, a conversation of the first with one message."""
    return conversation_with_message(api, "hello")


# (method, path template, JSON body or None) for every authenticated endpoint.
def endpoints(w):
    cid = w["conv"]["id"]
    return [
        ("GET", f"/api/v1/users/{w['a']['id']}", None),
        ("POST", "/api/v1/conversations", {"title": "t", "member_ids": [w["b"]["id"]]}),
        ("GET", f"/api/v1/conversations/{cid}", None),
        ("POST", f"/api/v1/conversations/{cid}/members", {"user_id": w["b"]["id"]}),
        ("POST", f"/api/v1/conversations/{cid}/messages", {"body": "x"}),
        ("GET", f"/api/v1/conversations/{cid}/messages", None),
        ("GET", f"/api/v1/conversations/{cid}/messages?limit=5", None),
        ("GET", f"/api/v1/conversations/{cid}/messages/count", None),
    ]


ENDPOINT_IDS = ["get-user", "create-conv", "get-conv", "add-member", "send", "history",
                "history-limit", "count"]

BAD_AUTH = {
    "none": None,
    "bearer-no-token": "Bearer",
    "bearer-empty": "Bearer ",
    "bearer-spaces": "Bearer    ",
    "basic": "Basic x",
    "basic-creds": "Basic YWxpY2U6c2VjcmV0",
    "unknown-token": "Bearer " + secrets.token_urlsafe(32),
    "unknown-hex": "Bearer " + secrets.token_hex(32),
    "token-only": "TOKEN_PLACEHOLDER",
    "other-scheme": "Token TOKEN_PLACEHOLDER",
    "token-with-suffix": "Bearer TOKEN_PLACEHOLDERx",
    "token-prefix": "Bearer TOKEN_PLACEHOLDER_PREFIX",
    "empty-header": "",
    "huge-token": "Bearer " + "A" * 8000,
    "token-and-junk": "Bearer TOKEN_PLACEHOLDER junk",
}


def auth_header(kind, token):
    v = BAD_AUTH[kind]
    if v is None:
        return {}
    v = v.replace("TOKEN_PLACEHOLDER_PREFIX", token[:-4]).replace("TOKEN_PLACEHOLDER", token)
    return {"Authorization": v}


@pytest.mark.parametrize("idx", range(8), ids=ENDPOINT_IDS)
@pytest.mark.parametrize("kind", list(BAD_AUTH))
def test_bad_credentials_401(api, world, idx, kind):
    method, path, body = endpoints(world)[idx]
    h = auth_header(kind, world["a"]["token"])
    r = api.req(method, path, json=body, headers=h) if body is not None else api.req(method, path, headers=h)
    assert_error(r, 401, "unauthorized")


BAD_BODIES = {
    "malformed-json": b'{"title": ',
    "not-json": b"garbage",
    "invalid-utf8": b'{"body": "\xff\xfe"}',
    "wrong-types": b'{"title": 1, "member_ids": "x", "body": 2, "user_id": "y"}',
    "empty": b"",
    "rule-breaking": b'{"title": "", "member_ids": [0], "body": "", "user_id": 0}',
}


@pytest.mark.parametrize("idx", [1, 3, 4], ids=["create-conv", "add-member", "send"])
@pytest.mark.parametrize("body", list(BAD_BODIES))
@pytest.mark.parametrize("kind", ["none", "unknown-token", "basic"])
def test_401_whatever_the_body_holds(api, world, idx, body, kind):
    method, path, _ = endpoints(world)[idx]
    h = auth_header(kind, world["a"]["token"])
    h["Content-Type"] = "application/json"
    r = api.req(method, path, data=BAD_BODIES[body], headers=h)
    assert_error(r, 401, "unauthorized")


@pytest.mark.parametrize("kind", ["none", "unknown-token"])
def test_401_for_nonexistent_resources_too(api, world, kind):
    """Without credentials the answer is 401 even where a member would get 404."""
    h = auth_header(kind, world["a"]["token"])
    for path in ["/api/v1/users/9000000000000000000", "/api/v1/conversations/9000000000000000000",
                 "/api/v1/conversations/9000000000000000000/messages",
                 "/api/v1/conversations/9000000000000000000/messages/count"]:
        assert_error(api.req("GET", path, headers=h), 401, "unauthorized")


def test_401_does_not_change_anything(api, world, db):
    """Rejected sends and adds leave no trace."""
    cid = world["conv"]["id"]
    before = api.count(world["a"]["token"], cid)
    h = auth_header("unknown-token", world["a"]["token"])
    for _ in range(3):
        assert_error(api.req("POST", f"/api/v1/conversations/{cid}/messages", json={"body": "sneaky"}, headers=h),
                     401, "unauthorized")
    assert api.count(world["a"]["token"], cid) == before
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM messages WHERE conversation_id = %s AND body = 'sneaky'", (cid,))
        assert cur.fetchone()[0] == 0


@pytest.mark.parametrize("idx", range(8), ids=ENDPOINT_IDS)
def test_valid_token_accepted(api, world, idx):
    method, path, body = endpoints(world)[idx]
    token = world["a"]["token"]
    r = api.req(method, path, token=token, json=body) if body is not None else api.req(method, path, token=token)
    assert r.status_code in (200, 201, 204), f"{method} {path}: {r.status_code} {r.content[:200]!r}"
    if r.status_code != 204:
        json_body(r)


def test_each_token_is_its_own_user(api, world):
    """A token identifies its user: b's token sends as b."""
    b = world["b"]
    m = api.send(b["token"], world["conv"]["id"], "from b")
    assert m["sender_id"] == b["id"]
    m = api.send(world["a"]["token"], world["conv"]["id"], "from a")
    assert m["sender_id"] == world["a"]["id"]


def test_signup_needs_no_token(api):
    u = api.signup()
    assert u["token"]


def test_token_of_one_user_cannot_act_as_another_on_the_same_connection(api, world):
    """Credentials are per request, not per connection (keep-alive must not leak auth)."""
    a = Api(api.base_url)
    try:
        r = a.get_user(world["a"]["token"], world["a"]["id"])
        assert r.status_code == 200
        r = a.req("GET", f"/api/v1/users/{world['a']['id']}")
        assert_error(r, 401, "unauthorized")
    finally:
        a.close()


def test_token_in_query_string_is_not_a_credential(api, world):
    """?token= is for WebSocket handshakes only; REST wants the Authorization header."""
    a = world["a"]
    r = api.req("GET", f"/api/v1/users/{a['id']}?token={a['token']}")
    assert_error(r, 401, "unauthorized")
    r = api.req("GET", f"/api/v1/conversations/{world['conv']['id']}?token={a['token']}")
    assert_error(r, 401, "unauthorized")


def test_bearer_scheme_is_case_insensitive(api, world):
    """RFC 9110 section 11.1: the authentication scheme name is case-insensitive."""
    a = world["a"]
    for scheme in ("bearer", "BEARER", "BeArEr"):
        r = api.req("GET", f"/api/v1/users/{a['id']}", headers={"Authorization": f"{scheme} {a['token']}"})
        assert r.status_code == 200, f"{scheme}: {r.status_code} {r.content[:200]!r}"
