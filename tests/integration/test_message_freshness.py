"""Freshness of history, events and count after edits and deletes, across
two chatd instances sharing the stack (docs/api.md, "Freshness"): writer and
reader loops for a few seconds, every read primed in the cache before the
write and checked after it; zero stale answers."""

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from chatlib import Api

PAIRS = 6
SECONDS = 5


def test_no_stale_reads_after_edits_and_deletes_on_two_instances(chatd_factory):
    inst = [chatd_factory(), chatd_factory()]
    stop_at = time.monotonic() + SECONDS
    stale = []
    lock = threading.Lock()

    def note(*what):
        with lock:
            stale.append(what)

    def pair(k):
        rnd = random.Random(k)
        apis = [Api(i.base_url) for i in inst]
        try:
            w = apis[0].signup()
            r = apis[1].signup()
            conv = apis[0].create_conversation(w["token"], member_ids=[r["id"]])["id"]
            sent = []  # the messages in seq order, as last answered
            live = 0
            rev = 0
            kinds = {"message": 0, "message_edited": 0, "message_deleted": 0}
            # the time, and on a slow run (sanitizers on a loaded machine) until this pair
            # made each kind of write twice, within twice the time
            while time.monotonic() < stop_at or (min(kinds.values()) < 2 and
                                                 time.monotonic() < stop_at + SECONDS):
                # The write goes through one instance, the reads through the other.
                writer, reader = (apis[0], apis[1]) if rev % 2 == 0 else (apis[1], apis[0])
                base = (rev // 16) * 16
                # Prime what the reader's instance may have cached (read twice: the second is a hit).
                for _ in range(2):
                    reader.history(r["token"], conv, limit=20)
                    reader.events(r["token"], conv, after_rev=base, limit=100)
                    reader.count(r["token"], conv)
                recent = [i for i in range(max(0, len(sent) - 10), len(sent)) if not sent[i]["deleted"]]
                op = rnd.random()
                if op < 0.4 or not recent:
                    m = writer.send(w["token"], conv, f"s{rev}")
                    sent.append(m)
                    live += 1
                    kind = "message"
                elif op < 0.7:
                    i = rnd.choice(recent)
                    m = writer.edit(w["token"], conv, sent[i]["id"], f"e{rev}")
                    sent[i] = m
                    kind = "message_edited"
                else:
                    i = rnd.choice(recent)
                    writer.delete(w["token"], conv, sent[i]["id"])
                    sent[i] = dict(sent[i], deleted=True, body="")
                    m = sent[i]
                    live -= 1
                    kind = "message_deleted"
                rev += 1
                kinds[kind] += 1
                # Every read after the acknowledged write reflects it.
                h = reader.history(r["token"], conv, limit=20)["messages"]
                got = next((x for x in h if x["id"] == m["id"]), None)
                if got is None or got["body"] != m["body"] or got["deleted"] != m["deleted"] or (
                        kind == "message_edited" and got != m):
                    note("history", kind, conv, m["id"], got)
                ev = reader.events(r["token"], conv, after_rev=base, limit=100)
                last = ev["events"][-1] if ev["events"] else None
                if ev["rev"] != rev or last is None or last["rev"] != rev or last["type"] != kind or \
                        last["message"]["id"] != m["id"] or last["message"]["deleted"] != m["deleted"] or \
                        last["message"]["body"] != m["body"]:
                    note("events", kind, conv, rev, ev["rev"], last)
                n = reader.count(r["token"], conv)
                if n != live:
                    note("count", kind, conv, live, n)
            return kinds
        finally:
            for a in apis:
                a.close()

    with ThreadPoolExecutor(PAIRS) as ex:
        results = list(ex.map(pair, range(PAIRS)))
    assert stale == [], stale[:5]
    totals = {k: sum(r[k] for r in results) for k in results[0]}
    assert all(v >= 10 for v in totals.values()), totals
    # The cache was in play: the primed reads were hits on both instances.
    for i in inst:
        assert i.metric("chatd_cache_hits_total", {"kind": "events"}) > 0
        assert i.metric("chatd_cache_hits_total", {"kind": "history"}) > 0
        assert i.metric("chatd_cache_hits_total", {"kind": "count"}) > 0
