"""Configuration: bad values stop chatd at start with a message naming the
variable; CHATD_SIGNUP=closed lets only the admin token sign users up."""

import secrets
import subprocess

import pytest

from chatlib import SIGNUP_KEYS, Api, assert_error, json_body, unique_name

BAD = [
    ("CHATD_DB_POOL_SIZE", "abc"),
    ("CHATD_DB_POOL_SIZE", "0"),
    ("CHATD_DB_POOL_SIZE", "-3"),
    ("CHATD_DB_POOL_SIZE", "12abc"),
    ("CHATD_DB_POOL_SIZE", "99999999999999999999"),
    ("CHATD_DB_QUEUE_TIMEOUT_MS", "soon"),
    ("CHATD_DB_QUEUE_TIMEOUT_MS", "-1"),
    ("CHATD_MAX_CONNECTIONS", "0"),
    ("CHATD_MAX_CONNECTIONS", "lots"),
    ("CHATD_SIGNUP", "maybe"),
    ("ENABLE_REDIS_CACHE", "perhaps"),
    ("CACHE_BYPASS", "perhaps"),
    ("CHATD_LISTEN", "nonsense"),
    ("CHATD_LISTEN", "127.0.0.1:99999"),
    ("CHATD_LISTEN", "127.0.0.1:abc"),
    ("REDIS_URL", "http://127.0.0.1:6379"),
    ("CHATD_HEADER_TIMEOUT_MS", "abc"),
    ("CHATD_IDLE_TIMEOUT_MS", "-5"),
    ("CHATD_WORKERS", "-1"),
    ("CHATD_LOG_LEVEL", "loud"),
    ("CHATD_RATE_SEND", "20"),
    ("CHATD_RATE_SEND", "20/h"),
    ("CHATD_RATE_SEND", "20/s:"),
    ("CHATD_RATE_REQUEST", "0/s"),
    ("CHATD_RATE_REQUEST", "100/s:0"),
    ("CHATD_RATE_REQUEST", "100/sec"),
    ("CHATD_RATE_SIGNUP", " 10/min"),
    ("CHATD_RATE_SIGNUP", "-1"),
    ("CHATD_RATE_SIGNUP", "010/min"),
    ("CHATD_RATE_SIGNUP", "10/min:10:10"),
]


@pytest.mark.parametrize("var,value", BAD, ids=[f"{k}={v}" for k, v in BAD])
def test_bad_value_stops_chatd_naming_the_variable(chatd_factory, var, value):
    inst = chatd_factory(env={var: value}, wait_ready=False)
    try:
        rc = inst.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"chatd kept running with {var}={value!r}")
    assert rc != 0, f"chatd exited 0 with {var}={value!r}"
    log = inst.log_text()
    assert var in log, f"the message does not name {var}:\n{log[-2000:]}"
    assert "Sanitizer" not in log and "runtime error" not in log, log[-3000:]


def test_good_values_start(chatd_factory):
    inst = chatd_factory(env={"CHATD_DB_POOL_SIZE": "3", "CHATD_DB_QUEUE_TIMEOUT_MS": "5000",
                              "CHATD_MAX_CONNECTIONS": "100", "CHATD_SIGNUP": "open",
                              "ENABLE_REDIS_CACHE": "true", "CACHE_BYPASS": "false",
                              "CHATD_RATE_SEND": "20/s:40", "CHATD_RATE_REQUEST": "100/min"})
    x = Api(inst.base_url)
    try:
        assert x.req("GET", "/healthz").status_code == 200
        x.signup()
    finally:
        x.close()


# --- closed sign-up ------------------------------------------------------------------


@pytest.fixture(scope="module")
def open_user(chatd):
    """A user signed up on the default (open) instance."""
    a = Api(chatd.base_url)
    try:
        return a.signup()
    finally:
        a.close()


@pytest.fixture
def closed(chatd_factory):
    admin = secrets.token_urlsafe(32)
    inst = chatd_factory(env={"CHATD_SIGNUP": "closed", "CHATD_ADMIN_TOKEN": admin})
    x = Api(inst.base_url)
    yield x, admin
    x.close()


def test_closed_signup_without_token_401(closed):
    x, _ = closed
    name = unique_name()
    assert_error(x.req("POST", "/api/v1/users", json={"name": name}), 401, "unauthorized")


def test_closed_signup_with_wrong_tokens_401(closed, open_user):
    x, admin = closed
    for token in ["nope", secrets.token_urlsafe(32), open_user["token"], admin + "x", admin[:-1]]:
        assert_error(x.req("POST", "/api/v1/users", token=token, json={"name": unique_name()}),
                     401, "unauthorized")
    r = x.req("POST", "/api/v1/users", json={"name": unique_name()}, headers={"Authorization": f"Basic {admin}"})
    assert_error(r, 401, "unauthorized")


def test_closed_signup_401_whatever_the_body(closed):
    x, _ = closed
    for raw in [b"{", b"", b'{"name": 5}', b'{"name": ""}', b'{"name": "\xff"}']:
        r = x.req("POST", "/api/v1/users", data=raw, headers={"Content-Type": "application/json"})
        assert_error(r, 401, "unauthorized")


def test_closed_signup_stores_nothing(closed, db):
    x, _ = closed
    name = unique_name()
    assert_error(x.req("POST", "/api/v1/users", json={"name": name}), 401, "unauthorized")
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM users WHERE name = %s", (name,))
        assert cur.fetchone()[0] == 0


def test_closed_signup_with_admin_token_201(closed):
    x, admin = closed
    name = unique_name()
    r = x.req("POST", "/api/v1/users", token=admin, json={"name": name})
    u = json_body(r, 201)
    assert set(u) == SIGNUP_KEYS and u["name"] == name
    # The new user's own token works on the closed instance.
    got = json_body(x.get_user(u["token"], u["id"]), 200)
    assert got["name"] == name
    c = x.create_conversation(u["token"])
    x.send(u["token"], c["id"], "hi")


def test_closed_signup_admin_token_still_validates(closed):
    x, admin = closed
    assert_error(x.req("POST", "/api/v1/users", token=admin, json={"name": ""}), 422, "invalid_field")
    assert_error(x.req("POST", "/api/v1/users", token=admin, json={"name": 7}), 400, "bad_request")
    name = unique_name()
    x.signup(name, token=admin)
    assert_error(x.req("POST", "/api/v1/users", token=admin, json={"name": name}), 409, "conflict")


def test_closed_signup_other_endpoints_unchanged(closed, open_user):
    x, _ = closed
    got = json_body(x.get_user(open_user["token"], open_user["id"]), 200)
    assert got["id"] == open_user["id"]
    assert x.req("GET", "/healthz").status_code == 200


def test_open_signup_with_admin_token_configured(chatd_factory):
    admin = secrets.token_urlsafe(32)
    inst = chatd_factory(env={"CHATD_SIGNUP": "open", "CHATD_ADMIN_TOKEN": admin})
    x = Api(inst.base_url)
    try:
        x.signup()
        x.signup(token=admin)
    finally:
        x.close()
