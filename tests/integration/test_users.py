"""Users: sign-up, profiles, names, tokens (docs/api.md, "Users" and "Authentication")."""

import random
import re
import uuid

import pytest

from chatlib import (SIGNUP_KEYS, USER_KEYS, Api, assert_error, assert_json_ct, assert_time,
                     assert_user, is_pos_int, json_body, rand_chars, sha256, unique_name)


@pytest.fixture(scope="module")
def alice(api):
    return api.signup()


def post_user(api, payload=None, data=None):
    if data is not None:
        return api.req("POST", "/api/v1/users", data=data, headers={"Content-Type": "application/json"})
    return api.req("POST", "/api/v1/users", json=payload)


# --- sign-up ---------------------------------------------------------------


def test_signup_answers_201_with_exact_shape(api):
    name = unique_name()
    r = post_user(api, {"name": name})
    u = json_body(r, 201)
    assert set(u) == SIGNUP_KEYS
    assert is_pos_int(u["id"])
    assert u["name"] == name
    assert_time(u["created_at"])
    assert isinstance(u["token"], str) and u["token"]


def test_signup_ids_are_distinct(api):
    ids = [api.signup()["id"] for _ in range(5)]
    assert len(set(ids)) == 5


def test_tokens_are_long_random_and_distinct(api):
    tokens = [api.signup()["token"] for _ in range(30)]
    assert len(set(tokens)) == len(tokens), "tokens repeat"
    for t in tokens:
        # At least 128 bits: 32 hex digits, or 22 base64/base64url characters.
        assert re.fullmatch(r"[A-Za-z0-9._~+/=-]+", t), f"token has odd characters: {t!r}"
        if re.fullmatch(r"[0-9a-fA-F]+", t):
            assert len(t) >= 32, f"hex token shorter than 128 bits: {t!r}"
        else:
            assert len(t.rstrip("=")) >= 22, f"token shorter than 128 bits: {t!r}"


def test_signup_token_authenticates(api):
    u = api.signup()
    r = api.get_user(u["token"], u["id"])
    got = json_body(r, 200)
    assert_user(got, name=u["name"], uid=u["id"])
    assert got["created_at"] == u["created_at"]


def test_name_64_multibyte_code_points_ok(api):
    # 3-byte CJK characters: 64 code points, 192 bytes.
    name = rand_chars(64, 0x4E00, 0x9FA0)
    u = api.signup(name)
    assert u["name"] == name
    got = json_body(api.get_user(u["token"], u["id"]), 200)
    assert got["name"] == name


def test_name_64_four_byte_code_points_ok(api):
    # 4-byte characters (outside the BMP; two UTF-16 units each): 64 code points, 256 bytes.
    name = rand_chars(64, 0x1F300, 0x1F5FF)
    u = api.signup(name)
    assert u["name"] == name
    assert len(u["name"]) == 64


def test_name_64_ascii_ok(api):
    name = unique_name() + "a" * (64 - 13)
    assert len(name) == 64
    assert api.signup(name)["name"] == name


@pytest.mark.parametrize("lo,hi", [(0x61, 0x7B), (0x4E00, 0x9FA0), (0x1F300, 0x1F5FF)],
                         ids=["ascii", "3-byte", "4-byte"])
def test_name_65_code_points_422(api, lo, hi):
    name = rand_chars(65, lo, hi)
    assert_error(post_user(api, {"name": name}), 422, "invalid_field")


def test_name_empty_422(api):
    assert_error(post_user(api, {"name": ""}), 422, "invalid_field")


def test_name_one_code_point_ok(api):
    # A single random 4-byte character: rare enough to be free in a shared database.
    for _ in range(5):
        name = chr(random.randrange(0x20000, 0x2A6D0))
        r = post_user(api, {"name": name})
        if r.status_code == 409:
            continue
        u = json_body(r, 201)
        assert u["name"] == name
        return
    pytest.fail("five random one-character names all taken")


@pytest.mark.parametrize("value", [123, 1.5, None, True, [], ["alice"], {"a": 1}],
                         ids=["int", "float", "null", "bool", "empty-array", "array", "object"])
def test_name_not_a_string_400(api, value):
    assert_error(post_user(api, {"name": value}), 400, "bad_request")


def test_name_missing_400(api):
    assert_error(post_user(api, {}), 400, "bad_request")
    assert_error(post_user(api, {"nom": unique_name()}), 400, "bad_request")


@pytest.mark.parametrize("payload", [[], ["name"], "alice", 42, None, True],
                         ids=["array", "array-str", "string", "number", "null", "bool"])
def test_body_not_an_object_400(api, payload):
    assert_error(post_user(api, payload), 400, "bad_request")


def test_duplicate_name_409(api):
    name = unique_name()
    api.signup(name)
    assert_error(post_user(api, {"name": name}), 409, "conflict")


def test_duplicate_multibyte_name_409(api):
    name = rand_chars(20, 0x4E00, 0x9FA0)
    api.signup(name)
    assert_error(post_user(api, {"name": name}), 409, "conflict")


def test_names_are_case_sensitive(api):
    base = uuid.uuid4().hex[:12]
    a = api.signup("Bob" + base)
    b = api.signup("bob" + base)
    c = api.signup("BOB" + base)
    assert len({a["id"], b["id"], c["id"]}) == 3


def test_duplicate_after_conflict_does_not_break_signup(api):
    name = unique_name()
    api.signup(name)
    for _ in range(3):
        assert_error(post_user(api, {"name": name}), 409, "conflict")
    api.signup()


@pytest.mark.parametrize("raw", [
    b'{"name": "\xff\xfeab"}',
    b'{"name": "ab\xc0\xafcd"}',          # overlong encoding of '/'
    b'{"name": "ab\xed\xa0\x80cd"}',      # encoded UTF-16 surrogate
    b'{"name": "ab\xe4\xb8"}',            # truncated sequence
    b'{"name": "ab\xf8\x88\x80\x80\x80"}',  # 5-byte form
    b'{"name": "ab\xf4\x90\x80\x80"}',    # above U+10FFFF
    b'{"name": "ok", "x": "\x80"}',       # stray continuation byte elsewhere in the body
], ids=["ff-fe", "overlong", "surrogate", "truncated", "5-byte", "above-max", "other-field"])
def test_invalid_utf8_400(api, raw):
    assert_error(post_user(api, data=raw), 400, "bad_request")


@pytest.mark.parametrize("raw", [
    b'{"name": ',
    b'{"name": "abc"',
    b"not json",
    b"",
    b"{'name': 'abc'}",
    b'{"name": "abc",}',
    b'{"name": "abc"} {"name": "def"}',
    b'{"name": "abc"} x',
    b'{name: "abc"}',
    b'{"name": "a\\qb"}',
], ids=["truncated", "unclosed", "text", "empty", "single-quotes", "trailing-comma", "two-values",
        "trailing-junk", "bare-key", "bad-escape"])
def test_malformed_json_400(api, raw):
    assert_error(post_user(api, data=raw), 400, "bad_request")


def test_name_with_escapes_round_trips(api):
    name = unique_name() + ' "q" \\ / é 😀'
    u = api.signup(name)
    got = json_body(api.get_user(u["token"], u["id"]), 200)
    assert got["name"] == name


# --- profiles --------------------------------------------------------------


def test_get_user_200_exact_shape_no_token(api, alice):
    bob = api.signup()
    r = api.get_user(bob["token"], alice["id"])
    got = json_body(r, 200)
    assert set(got) == USER_KEYS
    assert "token" not in got
    assert got == {"id": alice["id"], "name": alice["name"], "created_at": alice["created_at"]}


def test_get_user_unknown_id_404(api, alice):
    assert_error(api.get_user(alice["token"], 9223372036854775807), 404, "not_found")
    assert_error(api.get_user(alice["token"], 9000000000000000000), 404, "not_found")


@pytest.mark.parametrize("bad", ["abc", "0", "-1", "99999999999999999999", "9223372036854775808",
                                 "1.5", "1abc", "0x10", "%20", "-0"])
def test_get_user_bad_path_id_404(api, alice, bad):
    r = api.req("GET", f"/api/v1/users/{bad}", token=alice["token"])
    assert_error(r, 404, "not_found")


def test_get_user_json_content_type(api, alice):
    r = api.get_user(alice["token"], alice["id"])
    assert r.status_code == 200
    assert_json_ct(r)


# --- tokens at rest ----------------------------------------------------------


def test_tokens_stored_only_as_sha256_hash(api, db):
    """The schema says tokens are stored as SHA-256 of the token string (UTF-8 bytes).

    The raw token must not be found in the tokens table, and its SHA-256 must be.
    """
    u = api.signup()
    token = u["token"]
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM tokens WHERE hash = %s", (token.encode("utf-8"),))
        assert cur.fetchone()[0] == 0, "raw token stored in tokens.hash"
        cur.execute("SELECT count(*) FROM tokens WHERE position(%s in hash) > 0", (token.encode("utf-8"),))
        assert cur.fetchone()[0] == 0, "raw token stored inside tokens.hash"
        cur.execute("SELECT user_id, length(hash) FROM tokens WHERE hash = %s", (sha256(token),))
        rows = cur.fetchall()
        assert rows == [(u["id"], 32)], f"sha256(token) row: {rows!r}"
        cur.execute("SELECT count(*) FROM tokens WHERE user_id = %s", (u["id"],))
        assert cur.fetchone()[0] == 1
        # The token appears in no text column of the schema either.
        cur.execute("SELECT count(*) FROM users WHERE name = %s", (token,))
        assert cur.fetchone()[0] == 0


def test_signup_created_at_matches_the_database(api, db):
    u = api.signup()
    with db.cursor() as cur:
        cur.execute("SELECT name, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') "
                    "FROM users WHERE id = %s", (u["id"],))
        assert cur.fetchone() == (u["name"], u["created_at"])


def test_racing_signups_for_one_name(chatd):
    """Ten clients take the same name at once: one 201, nine 409, never a 500."""
    import threading
    name = unique_name()
    clients = [Api(chatd.base_url) for _ in range(10)]
    for c in clients:
        assert c.req("GET", "/healthz").status_code == 200
    barrier = threading.Barrier(10)
    out = [None] * 10

    def run(i):
        barrier.wait(timeout=20)
        out[i] = clients[i].req("POST", "/api/v1/users", json={"name": name})

    threads = [threading.Thread(target=run, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    for c in clients:
        c.close()
    statuses = sorted(r.status_code for r in out if r is not None)
    assert statuses == [201] + [409] * 9, statuses
    for r in out:
        if r.status_code == 409:
            assert_error(r, 409, "conflict")
