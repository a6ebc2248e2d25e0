"""Members: the list (GET …/members, paging by user id) and removal (DELETE
…/members/{user_id}: leave, the creator's removal, 403 vs 404), and that a
removed user gets 404 for the conversation at once, on every instance,
cached or not (docs/api.md, "Conversations")."""

import concurrent.futures
import time

import pytest

from chatlib import Api, assert_error, assert_user, json_body

MEMBERS_KEYS = {"conversation_id", "members", "next_after_id"}


def members_raw(api, token, cid, query=None, **params):
    path = f"/api/v1/conversations/{cid}/members"
    if query is not None:
        return api.req("GET", path + "?" + query, token=token)
    return api.req("GET", path, token=token, params=params or None)


def members(api, token, cid, **params):
    b = json_body(members_raw(api, token, cid, **params), 200)
    assert isinstance(b, dict) and set(b) == MEMBERS_KEYS, f"members keys: {b!r}"
    assert b["conversation_id"] == cid
    for u in b["members"]:
        assert_user(u)
    ids = [u["id"] for u in b["members"]]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), f"not by id: {ids}"
    return b


def remove(api, token, cid, uid):
    return api.req("DELETE", f"/api/v1/conversations/{cid}/members/{uid}", token=token)


@pytest.fixture
def group(api):
    """A creator and four members in one conversation."""
    users = [api.signup() for _ in range(5)]
    c = api.create_conversation(users[0]["token"], member_ids=[u["id"] for u in users[1:]])
    return {"users": users, "cid": c["id"], "creator": users[0]}


# --- the list -------------------------------------------------------------------


def test_list_exact_shape_and_order(api, group):
    b = members(api, group["creator"]["token"], group["cid"])
    want = sorted(group["users"], key=lambda u: u["id"])
    assert [u["id"] for u in b["members"]] == [u["id"] for u in want]
    assert [u["name"] for u in b["members"]] == [u["name"] for u in want]
    assert [u["created_at"] for u in b["members"]] == [u["created_at"] for u in want]
    assert b["next_after_id"] is None


def test_list_paging_by_after_id(api, group):
    tok, cid = group["users"][2]["token"], group["cid"]
    seen, after = [], 0
    for _ in range(10):
        b = members(api, tok, cid, limit=2, after_id=after)
        assert len(b["members"]) <= 2
        seen += [u["id"] for u in b["members"]]
        if b["next_after_id"] is None:
            break
        assert b["next_after_id"] == b["members"][-1]["id"]
        after = b["next_after_id"]
    assert seen == sorted(u["id"] for u in group["users"])
    # exactly a full last page: next_after_id null there
    b = members(api, tok, cid, limit=5)
    assert len(b["members"]) == 5 and b["next_after_id"] is None
    b = members(api, tok, cid, limit=4)
    assert len(b["members"]) == 4 and b["next_after_id"] == b["members"][-1]["id"]
    # past the end: empty page
    b = members(api, tok, cid, after_id=max(seen))
    assert b["members"] == [] and b["next_after_id"] is None


@pytest.mark.parametrize("query", [
    "limit=0", "limit=1001", "limit=abc", "limit=-1", "limit=", "limit=1&limit=2",
    "after_id=-1", "after_id=x", "after_id=1&after_id=2", "limit=1.5",
])
def test_list_bad_query_400(api, group, query):
    r = members_raw(api, group["creator"]["token"], group["cid"], query=query)
    assert_error(r, 400, "bad_request")


def test_list_limit_bounds_accepted(api, group):
    assert len(members(api, group["creator"]["token"], group["cid"], limit=1)["members"]) == 1
    assert len(members(api, group["creator"]["token"], group["cid"], limit=1000)["members"]) == 5


def test_list_non_member_404_identical_to_unknown(api, group):
    out = api.signup()
    r1 = members_raw(api, out["token"], group["cid"])
    r2 = members_raw(api, out["token"], 10**15)
    assert_error(r1, 404, "not_found")
    assert r1.content == r2.content
    for bad in ("abc", "0", "-1"):
        assert_error(members_raw(api, out["token"], bad), 404, "not_found")


def test_list_fresh_after_add_and_remove(api, group):
    tok, cid = group["creator"]["token"], group["cid"]
    for _ in range(2):
        members(api, tok, cid)  # cached
    new = api.signup()
    assert api.add_member(tok, cid, new["id"]).status_code == 204
    assert new["id"] in [u["id"] for u in members(api, tok, cid)["members"]]
    assert remove(api, tok, cid, new["id"]).status_code == 204
    assert new["id"] not in [u["id"] for u in members(api, tok, cid)["members"]]


# --- removal --------------------------------------------------------------------


def test_leave_204_and_member_count(api, group):
    u, cid = group["users"][1], group["cid"]
    r = remove(api, u["token"], cid, u["id"])
    assert r.status_code == 204 and r.content == b""
    meta = json_body(api.get_conversation(group["creator"]["token"], cid), 200)
    assert meta["member_count"] == 4
    assert_error(api.get_conversation(u["token"], cid), 404, "not_found")


def test_creator_removes_anyone(api, group):
    cid, tok = group["cid"], group["creator"]["token"]
    victim = group["users"][3]
    assert remove(api, tok, cid, victim["id"]).status_code == 204
    assert json_body(api.get_conversation(tok, cid), 200)["member_count"] == 4
    # again: no longer a member, nothing happens
    assert remove(api, tok, cid, victim["id"]).status_code == 204
    assert json_body(api.get_conversation(tok, cid), 200)["member_count"] == 4


def test_creator_removes_non_member_or_unknown_user_204_noop(api, group):
    cid, tok = group["cid"], group["creator"]["token"]
    out = api.signup()
    assert remove(api, tok, cid, out["id"]).status_code == 204
    assert remove(api, tok, cid, 10**15).status_code == 204
    assert json_body(api.get_conversation(tok, cid), 200)["member_count"] == 5


def test_member_removing_another_403(api, group):
    cid = group["cid"]
    a, b = group["users"][1], group["users"][2]
    assert_error(remove(api, a["token"], cid, b["id"]), 403, "forbidden")
    assert_error(remove(api, a["token"], cid, group["creator"]["id"]), 403, "forbidden")
    # even for a user who is not a member
    assert_error(remove(api, a["token"], cid, api.signup()["id"]), 403, "forbidden")
    assert json_body(api.get_conversation(a["token"], cid), 200)["member_count"] == 5


def test_non_member_caller_404_identical_to_unknown(api, group):
    out = api.signup()
    target = group["users"][1]["id"]
    r1 = remove(api, out["token"], group["cid"], target)
    r2 = remove(api, out["token"], 10**15, target)
    assert_error(r1, 404, "not_found")
    assert r1.content == r2.content
    # a bad user id in the path is 404 too
    assert_error(remove(api, group["creator"]["token"], group["cid"], "abc"), 404, "not_found")
    assert_error(remove(api, group["creator"]["token"], group["cid"], 0), 404, "not_found")
    assert json_body(api.get_conversation(group["creator"]["token"], group["cid"]), 200)["member_count"] == 5


def test_creator_may_leave(api, group):
    cid, c = group["cid"], group["creator"]
    assert remove(api, c["token"], cid, c["id"]).status_code == 204
    assert_error(api.get_conversation(c["token"], cid), 404, "not_found")
    # the others still see it, with one member less
    assert json_body(api.get_conversation(group["users"][1]["token"], cid), 200)["member_count"] == 4


def read_everything(api, token, cid):
    """Statuses of every read and write of the conversation for token."""
    return {
        "metadata": api.get_conversation(token, cid),
        "history": api.history_raw(token, cid),
        "count": api.count_raw(token, cid),
        "members": members_raw(api, token, cid),
        "send": api.send_raw(token, cid, "hello?"),
        "read": api.req("POST", f"/api/v1/conversations/{cid}/read", token=token, json={"seq": 0}),
        "add": api.add_member(token, cid, 1),
        "leave": api.req("DELETE", f"/api/v1/conversations/{cid}/members/1", token=token),
    }


def test_removed_user_gets_404_everywhere_at_once(api, group):
    cid = group["cid"]
    victim = group["users"][4]
    api.send(victim["token"], cid, "before")
    for _ in range(2):  # proofs remembered, pages cached
        assert api.get_conversation(victim["token"], cid).status_code == 200
        assert api.history_raw(victim["token"], cid).status_code == 200
        assert api.count_raw(victim["token"], cid).status_code == 200
        assert members_raw(api, victim["token"], cid).status_code == 200
    assert remove(api, group["creator"]["token"], cid, victim["id"]).status_code == 204
    unknown = api.get_conversation(victim["token"], 10**15).content
    for what, r in read_everything(api, victim["token"], cid).items():
        assert_error(r, 404, "not_found")
        if what == "metadata":
            assert r.content == unknown, what
    # nothing was written by those attempts
    assert api.count(group["creator"]["token"], cid) == 1
    inbox = json_body(api.req("GET", "/api/v1/conversations", token=victim["token"]), 200)
    assert cid not in [e["conversation"]["id"] for e in inbox["conversations"]]


def test_removal_ends_access_on_every_instance(chatd_factory):
    """Proofs of membership held by other instances (and their other
    workers) end with the removal, before it is acknowledged."""
    insts = [chatd_factory(workers=2), chatd_factory(workers=2)]
    apis = [Api(i.base_url) for i in insts]
    try:
        a = apis[0]
        creator, victim = a.signup(), a.signup()
        cid = a.create_conversation(creator["token"], member_ids=[victim["id"]])["id"]
        a.send(creator["token"], cid, "one")
        for _ in range(3):  # both workers of both instances prove and cache
            for x in apis:
                for path in ("", "/messages", "/messages/count", "/members"):
                    r = x.req("GET", f"/api/v1/conversations/{cid}{path}", token=victim["token"])
                    assert r.status_code == 200, r.text
        assert remove(apis[1], creator["token"], cid, victim["id"]).status_code == 204
        for x in apis:
            for _ in range(3):
                for path in ("", "/messages", "/messages/count", "/members"):
                    r = x.req("GET", f"/api/v1/conversations/{cid}{path}", token=victim["token"])
                    assert_error(r, 404, "not_found")
                assert_error(x.send_raw(victim["token"], cid, "x"), 404, "not_found")
        # added back: visible again, through either instance
        assert apis[0].add_member(creator["token"], cid, victim["id"]).status_code == 204
        for x in apis:
            assert x.get_conversation(victim["token"], cid).status_code == 200
    finally:
        for x in apis:
            x.close()


@pytest.mark.parametrize("env", [{"CACHE_BYPASS": "true"}, {"ENABLE_REDIS_CACHE": "false"}],
                         ids=["bypass", "disabled"])
def test_removal_without_cache_checks_the_database(chatd_factory, env):
    d = chatd_factory(env=env)
    a = Api(d.base_url)
    try:
        creator, victim = a.signup(), a.signup()
        cid = a.create_conversation(creator["token"], member_ids=[victim["id"]])["id"]
        for _ in range(2):
            assert a.get_conversation(victim["token"], cid).status_code == 200
            assert members_raw(a, victim["token"], cid).status_code == 200
        assert remove(a, creator["token"], cid, victim["id"]).status_code == 204
        assert_error(a.get_conversation(victim["token"], cid), 404, "not_found")
        assert_error(a.history_raw(victim["token"], cid), 404, "not_found")
        assert_error(members_raw(a, victim["token"], cid), 404, "not_found")
    finally:
        a.close()


def test_freshness_members_two_instances(chatd_factory):
    """Writer adds and removes members through one instance, a reader lists
    them through the other right after each 204: never an old list."""
    insts = [chatd_factory(workers=2), chatd_factory(workers=2)]
    setup = Api(insts[0].base_url)
    creator = setup.signup()
    pool = [setup.signup() for _ in range(6)]
    setup.close()

    def pair(i):
        w, r = Api(insts[i % 2].base_url), Api(insts[(i + 1) % 2].base_url)
        try:
            cid = w.create_conversation(creator["token"])["id"]
            now = {creator["id"]}
            stale = 0
            deadline = time.monotonic() + 3
            k = 0
            while time.monotonic() < deadline:
                u = pool[k % len(pool)]["id"]
                k += 1
                if u in now:
                    assert remove(w, creator["token"], cid, u).status_code == 204
                    now.discard(u)
                else:
                    assert w.add_member(creator["token"], cid, u).status_code == 204
                    now.add(u)
                for _ in range(2):
                    got = {x["id"] for x in members(r, creator["token"], cid, limit=1000)["members"]}
                    stale += got != now
                    meta = json_body(r.get_conversation(creator["token"], cid), 200)
                    stale += meta["member_count"] != len(now)
            return stale, k
        finally:
            w.close()
            r.close()

    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        results = list(ex.map(pair, range(4)))
    assert sum(s for s, _ in results) == 0, results
    assert all(k > 5 for _, k in results), results


def test_sends_keep_membership_proofs(chatd_factory, db):
    """Proofs are remembered under the membership version: sends (which move
    the conversation's version) cost readers no new membership check; a
    membership change does."""
    d = chatd_factory(workers=1)
    a = Api(d.base_url)
    try:
        owner, reader = a.signup(), a.signup()
        cid = a.create_conversation(owner["token"], member_ids=[reader["id"]])["id"]
        cur = db.cursor()
        cur.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")

        def checks():
            cur.execute("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
                        "WHERE query LIKE 'SELECT $% FROM members WHERE conversation_id = $1 AND user_id = $2'")
            return cur.fetchone()[0]

        for _ in range(3):  # proven once the cache is in use
            assert a.count_raw(reader["token"], cid).status_code == 200
        before = checks()
        for i in range(5):
            a.send(owner["token"], cid, f"m{i}")
            assert a.count(reader["token"], cid) == i + 1
            assert a.history(reader["token"], cid)["messages"][0]["body"] == f"m{i}"
        assert checks() == before
        assert a.add_member(owner["token"], cid, a.signup()["id"]).status_code == 204
        # The owner's miss loads the count (its statement proves the owner); the
        # reader's hit then needs a proof under the new membership version.
        assert a.count(owner["token"], cid) == 5
        assert a.count(reader["token"], cid) == 5
        assert checks() == before + 1
    finally:
        a.close()
