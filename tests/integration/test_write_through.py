"""The send's write-through: a send stores the newest 50-message page and the
count it read in its own transaction under the version it moves the
conversation to, so the next reads of a busy conversation are hits; and what
they answer is byte for byte what the database gives (an instance with the
cache bypassed reads it). Edits and deletes record their rev, so no send's
write-through lands after them; freshness holds across two instances with
writers on both."""

import concurrent.futures
import re
import time

import requests

from test_cache import Client


def hits(c, kind):
    text = c.call("GET", "/metrics").text
    m = re.search(r'^chatd_cache_hits_total\{kind="%s"\} (\S+)$' % kind, text, re.M)
    return float(m.group(1)) if m else 0.0


def count(c, token, conv):
    r = c.call("GET", f"/api/v1/conversations/{conv}/messages/count", token)
    assert r.status_code == 200, r.text
    return r.text


def test_reads_after_a_send_are_hits_and_equal_the_database(chatd_factory):
    on = Client(chatd_factory().base_url)
    off = Client(chatd_factory(env={"CACHE_BYPASS": "true"}).base_url)
    u = on.signup()
    conv = on.conversation(u["token"])
    on.send(u["token"], conv, "first")  # records the first rev: nothing written through yet
    for i in range(5):
        on.send(u["token"], conv, f"m{i}")
        h0, c0 = hits(on, "history"), hits(on, "count")
        page = on.call("GET", f"/api/v1/conversations/{conv}/messages?limit=50", u["token"])
        n = count(on, u["token"], conv)
        assert hits(on, "history") == h0 + 1, "the newest page was not written through"
        assert hits(on, "count") == c0 + 1, "the count was not written through"
        truth = off.call("GET", f"/api/v1/conversations/{conv}/messages?limit=50", u["token"])
        assert page.content == truth.content
        assert n == count(off, u["token"], conv)
        assert page.json()["messages"][0]["body"] == f"m{i}"


def test_edit_and_delete_right_after_sends_are_never_hidden(chatd_factory):
    on = Client(chatd_factory().base_url)
    u = on.signup()
    conv = on.conversation(u["token"])
    for round_ in range(10):
        m = on.send(u["token"], conv, f"s{round_}")
        r = on.call("PATCH", f"/api/v1/conversations/{conv}/messages/{m['id']}", u["token"],
                    json={"body": f"e{round_}"})
        assert r.status_code == 200, r.text
        top = on.history(u["token"], conv, limit=50)["messages"][0]
        assert (top["id"], top["body"]) == (m["id"], f"e{round_}")
        r = on.call("DELETE", f"/api/v1/conversations/{conv}/messages/{m['id']}", u["token"])
        assert r.status_code == 204, r.text
        top = on.history(u["token"], conv, limit=50)["messages"][0]
        assert top["id"] == m["id"] and top["deleted"] is True


def test_writers_on_two_instances_never_leave_a_stale_page(chatd_factory):
    a, b = Client(chatd_factory().base_url), Client(chatd_factory().base_url)
    u = a.signup()
    conv = a.conversation(u["token"])
    a.send(u["token"], conv, "start")
    stale = []
    deadline = time.monotonic() + 4

    def writer(c, tag):
        sent = 0
        s = requests.Session()
        while time.monotonic() < deadline:
            r = s.post(f"{c.base}/api/v1/conversations/{conv}/messages",
                       headers={"Authorization": f"Bearer {u['token']}"},
                       json={"body": f"{tag}{sent}"}, timeout=30)
            assert r.status_code == 201, r.text
            acked = r.json()
            # every read after the answer, on either instance, shows it (or newer)
            for reader in (a, b):
                page = reader.history(u["token"], conv, limit=50)
                if page["messages"][0]["seq"] < acked["seq"]:
                    stale.append((tag, acked["seq"], page["messages"][0]["seq"]))
                cnt = reader.call("GET", f"/api/v1/conversations/{conv}/messages/count",
                                  u["token"]).json()["count"]
                if cnt < acked["seq"]:
                    stale.append((tag, "count", acked["seq"], cnt))
            sent += 1
        return sent

    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        sent = list(ex.map(lambda t: writer(*t), [(a, "a"), (b, "b"), (a, "c"), (b, "d")]))
    assert stale == []
    assert all(n > 5 for n in sent), sent
    assert hits(a, "history") + hits(b, "history") > 0
