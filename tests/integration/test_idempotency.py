"""Idempotent sends: a retry with the same client_msg_id from the same sender
answers 200 with the original message and stores nothing new."""

import threading

import pytest

from chatlib import MSG_KEYS, Api, assert_message, json_body, unique_name


@pytest.fixture(scope="module")
def pair(api):
    return api.signup(), api.signup()


@pytest.fixture
def conv(api, pair):
    a, b = pair
    return api.create_conversation(a["token"], member_ids=[b["id"]])


def rows(db, sender_id, conv_id, cm):
    with db.cursor() as cur:
        cur.execute("SELECT id FROM messages WHERE sender_id = %s AND conversation_id = %s AND client_msg_id = %s",
                    (sender_id, conv_id, cm))
        return [r[0] for r in cur.fetchall()]


def test_retry_answers_200_with_the_original(api, pair, conv, db):
    a, _ = pair
    cm = unique_name("c")
    first = json_body(api.send_raw(a["token"], conv["id"], "hello", cm), 201)
    assert_message(first)
    for _ in range(3):
        r = api.send_raw(a["token"], conv["id"], "hello", cm)
        again = json_body(r, 200)
        assert set(again) == MSG_KEYS
        assert again == first
    assert rows(db, a["id"], conv["id"], cm) == [first["id"]]
    assert api.count(a["token"], conv["id"]) == 1
    h = api.history(a["token"], conv["id"])
    assert [m["id"] for m in h["messages"]] == [first["id"]]


def test_retry_with_a_different_body_still_returns_the_original(api, pair, conv, db):
    a, _ = pair
    cm = unique_name("c")
    first = api.send(a["token"], conv["id"], "original", cm)
    again = json_body(api.send_raw(a["token"], conv["id"], "changed", cm), 200)
    assert again == first
    assert again["body"] == "original"
    assert rows(db, a["id"], conv["id"], cm) == [first["id"]]
    assert api.count(a["token"], conv["id"]) == 1


def test_retry_leaves_last_message_at_alone(api, pair, conv):
    a, _ = pair
    cm = unique_name("c")
    first = api.send(a["token"], conv["id"], "x", cm)
    second = api.send(a["token"], conv["id"], "y")
    assert json_body(api.send_raw(a["token"], conv["id"], "x", cm), 200) == first
    meta = json_body(api.get_conversation(a["token"], conv["id"]), 200)
    assert meta["last_message_at"] == second["created_at"]
    assert api.count(a["token"], conv["id"]) == 2


def test_same_client_msg_id_other_sender_is_a_new_message(api, pair, conv, db):
    a, b = pair
    cm = unique_name("c")
    ma = api.send(a["token"], conv["id"], "from a", cm)
    mb = json_body(api.send_raw(b["token"], conv["id"], "from b", cm), 201)
    assert mb["id"] != ma["id"] and mb["sender_id"] == b["id"] and mb["client_msg_id"] == cm
    assert rows(db, a["id"], conv["id"], cm) == [ma["id"]]
    assert rows(db, b["id"], conv["id"], cm) == [mb["id"]]
    assert api.count(a["token"], conv["id"]) == 2


def test_same_client_msg_id_other_conversation_is_a_new_message(api, pair, conv):
    a, b = pair
    other = api.create_conversation(a["token"], member_ids=[b["id"]])
    cm = unique_name("c")
    m1 = api.send(a["token"], conv["id"], "one", cm)
    m2 = json_body(api.send_raw(a["token"], other["id"], "one", cm), 201)
    assert m2["id"] != m1["id"] and m2["conversation_id"] == other["id"]


def test_no_client_msg_id_means_no_dedup(api, pair, conv):
    a, _ = pair
    m1 = api.send(a["token"], conv["id"], "same")
    m2 = api.send(a["token"], conv["id"], "same")
    assert m1["id"] != m2["id"]
    assert api.count(a["token"], conv["id"]) == 2


def race(base_url, token, conv_id, cm, n=20):
    """n threads, each on its own connection, send the same message at the same moment."""
    clients = [Api(base_url) for _ in range(n)]
    # Open every connection first so the race is on the send, not on connect.
    for c in clients:
        assert c.req("GET", "/healthz").status_code == 200
    barrier = threading.Barrier(n)
    results = [None] * n

    def run(i):
        try:
            barrier.wait(timeout=20)
            r = clients[i].send_raw(token, conv_id, "racing", cm)
            results[i] = (r.status_code, r.json() if r.content else None, r.headers.get("Content-Type"))
        except Exception as e:  # reported below
            results[i] = ("exception", repr(e), None)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for c in clients:
        c.close()
    assert not any(t.is_alive() for t in threads), "a racing send hung"
    return results


def check_race(results, db, sender_id, conv_id, cm):
    statuses = sorted(r[0] for r in results if isinstance(r[0], int))
    assert len(statuses) == len(results), f"errors: {[r for r in results if not isinstance(r[0], int)]}"
    assert statuses.count(201) == 1, f"statuses {statuses}"
    assert statuses.count(200) == len(results) - 1, f"statuses {statuses}"
    bodies = [r[1] for r in results]
    for b in bodies:
        assert_message(b)
    assert len({b["id"] for b in bodies}) == 1, f"ids {[b['id'] for b in bodies]}"
    assert all(b == bodies[0] for b in bodies)
    assert rows(db, sender_id, conv_id, cm) == [bodies[0]["id"]]


def test_twenty_racing_retries_store_one_row(api, pair, conv, db, chatd):
    a, _ = pair
    for _ in range(5):
        cm = unique_name("race")
        results = race(chatd.base_url, a["token"], conv["id"], cm)
        check_race(results, db, a["id"], conv["id"], cm)
    assert api.count(a["token"], conv["id"]) == 5


def test_racing_retries_across_workers(api, pair, db, chatd_factory):
    """The same race with several worker threads, each with its own pool."""
    inst = chatd_factory(workers=4)
    x = Api(inst.base_url)
    try:
        a, b = pair
        c = x.create_conversation(a["token"], member_ids=[b["id"]])
        for _ in range(5):
            cm = unique_name("race")
            results = race(inst.base_url, a["token"], c["id"], cm)
            check_race(results, db, a["id"], c["id"], cm)
        assert x.count(a["token"], c["id"]) == 5
    finally:
        x.close()
