"""Conversations: create, read, add members (docs/api.md, "Conversations")."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from chatlib import (CONV_KEYS, Api, assert_conversation, assert_error, assert_time, is_pos_int,
                     json_body, rand_chars, unique_name)


@pytest.fixture(scope="module")
def users(api):
    return [api.signup() for _ in range(4)]


@pytest.fixture(scope="module")
def many_users(chatd):
    """1,001 fresh users, signed up in parallel."""

    def mk(_):
        a = Api(chatd.base_url)
        try:
            return a.signup()["id"]
        finally:
            a.close()

    with ThreadPoolExecutor(16) as ex:
        ids = list(ex.map(mk, range(1001)))
    assert len(set(ids)) == 1001
    return ids


def create(api, token, payload):
    return api.req("POST", "/api/v1/conversations", token=token, json=payload)


# --- create -------------------------------------------------------------------


def test_create_201_exact_shape(api, users):
    a, b, c, _ = users
    r = api.create_conversation_raw(a["token"], "team", [b["id"], c["id"]])
    conv = json_body(r, 201)
    assert set(conv) == CONV_KEYS
    assert is_pos_int(conv["id"])
    assert conv["title"] == "team"
    assert conv["created_by"] == a["id"]
    assert_time(conv["created_at"])
    assert conv["member_count"] == 3
    assert conv["last_message_at"] is None


def test_create_with_no_members_counts_the_caller(api, users):
    conv = api.create_conversation(users[0]["token"], member_ids=[])
    assert conv["member_count"] == 1


def test_create_duplicates_ignored(api, users):
    a, b, c, _ = users
    conv = api.create_conversation(a["token"], member_ids=[b["id"], b["id"], c["id"], c["id"], b["id"]])
    assert conv["member_count"] == 3


def test_create_caller_listed_ok(api, users):
    a, b, _, _ = users
    conv = api.create_conversation(a["token"], member_ids=[a["id"], b["id"], a["id"]])
    assert conv["member_count"] == 2
    conv2 = api.create_conversation(a["token"], member_ids=[a["id"]])
    assert conv2["member_count"] == 1


def test_create_members_can_read(api, users):
    a, b, c, d = users
    conv = api.create_conversation(a["token"], member_ids=[b["id"], c["id"]])
    for u in (a, b, c):
        got = json_body(api.get_conversation(u["token"], conv["id"]), 200)
        assert got == conv
    assert_error(api.get_conversation(d["token"], conv["id"]), 404, "not_found")


def test_create_ids_distinct(api, users):
    ids = {api.create_conversation(users[0]["token"])["id"] for _ in range(5)}
    assert len(ids) == 5


@pytest.mark.parametrize("bad", [9000000000000000000, 9223372036854775807, 0, -1, -9223372036854775808],
                         ids=["unknown", "max-int64", "zero", "negative", "min-int64"])
def test_create_unknown_member_422(api, users, db, bad):
    a, b, _, _ = users
    title = unique_name("t")
    r = create(api, a["token"], {"title": title, "member_ids": [b["id"], bad]})
    assert_error(r, 422, "invalid_field")
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM conversations WHERE title = %s", (title,))
        assert cur.fetchone()[0] == 0, "a rejected conversation was stored"


def test_create_member_id_beyond_int64_rejected(api, users):
    # A JSON integer no 64-bit id can be: "impossible id" (422), or a wrong type (400); never 500.
    r = api.req("POST", "/api/v1/conversations", token=users[0]["token"],
                data=b'{"title": "t", "member_ids": [99999999999999999999]}',
                headers={"Content-Type": "application/json"})
    assert r.status_code in (400, 422), r.content
    assert_error(r, r.status_code, "bad_request" if r.status_code == 400 else "invalid_field")


def test_create_1000_members_ok(api, users, many_users):
    conv = api.create_conversation(users[0]["token"], member_ids=many_users[:1000])
    assert conv["member_count"] == 1001


def test_create_1001_members_422(api, users, many_users):
    r = api.create_conversation_raw(users[0]["token"], "big", many_users[:1001])
    assert_error(r, 422, "invalid_field")


def test_create_title_200_ok(api, users):
    for title in ["x" * 200, rand_chars(200, 0x4E00, 0x9FA0), rand_chars(200, 0x1F300, 0x1F5FF)]:
        conv = api.create_conversation(users[0]["token"], title=title)
        assert conv["title"] == title
        got = json_body(api.get_conversation(users[0]["token"], conv["id"]), 200)
        assert got["title"] == title


@pytest.mark.parametrize("title", ["", "x" * 201, "é" * 201, "😀" * 201],
                         ids=["empty", "201-ascii", "201-2byte", "201-4byte"])
def test_create_title_bad_length_422(api, users, title):
    r = api.create_conversation_raw(users[0]["token"], title, [])
    assert_error(r, 422, "invalid_field")


@pytest.mark.parametrize("title", [1, 1.5, None, True, [], {"t": "x"}, ["team"]],
                         ids=["int", "float", "null", "bool", "array", "object", "array-str"])
def test_create_title_not_string_400(api, users, title):
    assert_error(create(api, users[0]["token"], {"title": title, "member_ids": []}), 400, "bad_request")


@pytest.mark.parametrize("member_ids", [
    "2", 2, {"a": 1}, None, True,
    ["2"], [1.5], [None], [True], [[1]], [{"id": 1}],
], ids=["string", "int", "object", "null", "bool",
        "array-of-str", "array-of-float", "array-of-null", "array-of-bool", "nested", "array-of-obj"])
def test_create_member_ids_not_int_array_400(api, users, member_ids):
    r = create(api, users[0]["token"], {"title": "t", "member_ids": member_ids})
    assert_error(r, 400, "bad_request")


def test_create_mixed_member_ids_400(api, users):
    r = create(api, users[0]["token"], {"title": "t", "member_ids": [users[1]["id"], "x"]})
    assert_error(r, 400, "bad_request")


@pytest.mark.parametrize("payload", [{"member_ids": []}, {"title": "t"}, {}],
                         ids=["no-title", "no-member-ids", "empty"])
def test_create_missing_fields_400(api, users, payload):
    assert_error(create(api, users[0]["token"], payload), 400, "bad_request")


@pytest.mark.parametrize("payload", [[], "t", 1, None], ids=["array", "string", "number", "null"])
def test_create_body_not_object_400(api, users, payload):
    assert_error(create(api, users[0]["token"], payload), 400, "bad_request")


def test_create_malformed_json_400(api, users):
    for raw in [b'{"title": "t", "member_ids": [', b"nope", b'{"title": "t", "member_ids": []} x',
                b'{"title": "\xff", "member_ids": []}']:
        r = api.req("POST", "/api/v1/conversations", token=users[0]["token"], data=raw,
                    headers={"Content-Type": "application/json"})
        assert_error(r, 400, "bad_request")


# --- read ---------------------------------------------------------------------


def test_get_200_shape_and_last_message_at(api, users):
    a, b, _, _ = users
    conv = api.create_conversation(a["token"], member_ids=[b["id"]])
    got = json_body(api.get_conversation(a["token"], conv["id"]), 200)
    assert set(got) == CONV_KEYS
    assert got == conv
    assert got["last_message_at"] is None

    m1 = api.send(a["token"], conv["id"], "one")
    got = json_body(api.get_conversation(b["token"], conv["id"]), 200)
    assert_conversation(got)
    assert got["last_message_at"] == m1["created_at"]

    m2 = api.send(b["token"], conv["id"], "two")
    got = json_body(api.get_conversation(a["token"], conv["id"]), 200)
    assert got["last_message_at"] == m2["created_at"]
    assert got["last_message_at"] >= m1["created_at"]
    # Everything else is unchanged by sends.
    for k in ("id", "title", "created_by", "created_at", "member_count"):
        assert got[k] == conv[k]


def test_get_nonmember_404_identical_to_nonexistent(api, users):
    a, b, c, _ = users
    conv = api.create_conversation(a["token"], member_ids=[b["id"]])
    r1 = api.get_conversation(c["token"], conv["id"])
    missing = 9000000000000000000
    r2 = api.get_conversation(c["token"], missing)
    assert_error(r1, 404, "not_found")
    assert_error(r2, 404, "not_found")
    # Same body, once the id that was asked for (if echoed) is set aside.
    b1 = r1.content.replace(str(conv["id"]).encode(), b"{id}")
    b2 = r2.content.replace(str(missing).encode(), b"{id}")
    assert b1 == b2, f"{r1.content!r} vs {r2.content!r}"
    assert r1.headers.get("Content-Type") == r2.headers.get("Content-Type")


@pytest.mark.parametrize("bad", ["abc", "0", "-1", "99999999999999999999", "9223372036854775808", "1.5", "1x"])
@pytest.mark.parametrize("suffix", ["", "/messages", "/messages/count"])
def test_get_bad_path_id_404(api, users, bad, suffix):
    r = api.req("GET", f"/api/v1/conversations/{bad}{suffix}", token=users[0]["token"])
    assert_error(r, 404, "not_found")


@pytest.mark.parametrize("bad", ["abc", "0", "-1", "99999999999999999999"])
def test_add_member_bad_path_id_404(api, users, bad):
    r = api.req("POST", f"/api/v1/conversations/{bad}/members", token=users[0]["token"],
                json={"user_id": users[1]["id"]})
    assert_error(r, 404, "not_found")


# --- members ------------------------------------------------------------------


def test_add_member_204_empty_and_new_member_can_read(api, users):
    a, b, c, _ = users
    conv = api.create_conversation(a["token"], member_ids=[b["id"]])
    m = api.send(a["token"], conv["id"], "before c joined")
    assert_error(api.get_conversation(c["token"], conv["id"]), 404, "not_found")
    assert_error(api.history_raw(c["token"], conv["id"]), 404, "not_found")

    r = api.add_member(a["token"], conv["id"], c["id"])
    assert r.status_code == 204, r.content
    assert r.content == b""
    assert r.headers.get("Content-Length") in (None, "0")

    got = json_body(api.get_conversation(c["token"], conv["id"]), 200)
    assert got["member_count"] == 3
    h = api.history(c["token"], conv["id"])
    assert [x["id"] for x in h["messages"]] == [m["id"]]
    assert api.count(c["token"], conv["id"]) == 1
    m2 = api.send(c["token"], conv["id"], "c is here")
    assert m2["sender_id"] == c["id"]


def test_add_member_is_idempotent(api, users):
    a, b, c, _ = users
    conv = api.create_conversation(a["token"], member_ids=[b["id"]])
    for _ in range(3):
        r = api.add_member(a["token"], conv["id"], c["id"])
        assert r.status_code == 204 and r.content == b""
    r = api.add_member(a["token"], conv["id"], b["id"])
    assert r.status_code == 204 and r.content == b""
    r = api.add_member(a["token"], conv["id"], a["id"])
    assert r.status_code == 204 and r.content == b""
    got = json_body(api.get_conversation(a["token"], conv["id"]), 200)
    assert got["member_count"] == 3


def test_any_member_may_add(api, users):
    a, b, c, _ = users
    conv = api.create_conversation(a["token"], member_ids=[b["id"]])
    r = api.add_member(b["token"], conv["id"], c["id"])
    assert r.status_code == 204
    assert json_body(api.get_conversation(c["token"], conv["id"]), 200)["member_count"] == 3


@pytest.mark.parametrize("bad", [9000000000000000000, 0, -1], ids=["unknown", "zero", "negative"])
def test_add_unknown_user_422(api, users, bad):
    a, b, _, _ = users
    conv = api.create_conversation(a["token"], member_ids=[b["id"]])
    assert_error(api.add_member(a["token"], conv["id"], bad), 422, "invalid_field")
    got = json_body(api.get_conversation(a["token"], conv["id"]), 200)
    assert got["member_count"] == 2


def test_add_by_nonmember_404(api, users):
    a, b, c, d = users
    conv = api.create_conversation(a["token"], member_ids=[b["id"]])
    r = api.add_member(c["token"], conv["id"], d["id"])
    assert_error(r, 404, "not_found")
    # Not even themself.
    assert_error(api.add_member(c["token"], conv["id"], c["id"]), 404, "not_found")
    assert_error(api.get_conversation(d["token"], conv["id"]), 404, "not_found")
    assert json_body(api.get_conversation(a["token"], conv["id"]), 200)["member_count"] == 2


def test_add_to_nonexistent_conversation_404(api, users):
    assert_error(api.add_member(users[0]["token"], 9000000000000000000, users[1]["id"]), 404, "not_found")


@pytest.mark.parametrize("payload", [{}, {"user_id": "5"}, {"user_id": None}, {"user_id": 1.5},
                                     {"user_id": [5]}, {"user_id": True}, [], "x"],
                         ids=["missing", "string", "null", "float", "array", "bool", "body-array", "body-string"])
def test_add_member_bad_types_400(api, users, payload):
    a, b, _, _ = users
    conv = api.create_conversation(a["token"], member_ids=[])
    r = api.req("POST", f"/api/v1/conversations/{conv['id']}/members", token=a["token"], json=payload)
    assert_error(r, 400, "bad_request")


def test_add_member_malformed_json_400(api, users):
    a = users[0]
    conv = api.create_conversation(a["token"], member_ids=[])
    r = api.req("POST", f"/api/v1/conversations/{conv['id']}/members", token=a["token"],
                data=b'{"user_id": ', headers={"Content-Type": "application/json"})
    assert_error(r, 400, "bad_request")


def test_member_count_fresh_after_add(api, users):
    a, b, c, d = users
    conv = api.create_conversation(a["token"], member_ids=[])
    assert json_body(api.get_conversation(a["token"], conv["id"]), 200)["member_count"] == 1
    for n, u in enumerate((b, c, d), start=2):
        assert api.add_member(a["token"], conv["id"], u["id"]).status_code == 204
        assert json_body(api.get_conversation(a["token"], conv["id"]), 200)["member_count"] == n


def test_concurrent_adds_count_each_member_once(api, users, chatd):
    """Twenty members added at once, each also added twice: member_count is exact."""
    a = users[0]
    newcomers = [api.signup() for _ in range(20)]
    conv = api.create_conversation(a["token"], member_ids=[])

    def add(u):
        x = Api(chatd.base_url)
        try:
            return x.add_member(a["token"], conv["id"], u["id"]).status_code
        finally:
            x.close()

    with ThreadPoolExecutor(20) as ex:
        statuses = list(ex.map(add, newcomers + newcomers))
    assert statuses == [204] * 40
    got = json_body(api.get_conversation(a["token"], conv["id"]), 200)
    assert got["member_count"] == 21
    for u in newcomers[:3]:
        assert json_body(api.get_conversation(u["token"], conv["id"]), 200)["member_count"] == 21
