"""chatload (tools/chatload): the scheduler against a tiny threaded HTTP
server, and a short seed + two-stage smoke run against a real chatd.
Timing targets are never asserted here; they are the benchmark's to report."""
import json
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg2
import pytest

import conftest


def chatload_bin():
    p = conftest.chatload_bin()
    if not p.exists():
        pytest.fail(f"chatload binary not found: {p} (cmake --build build, or set CHATLOAD_BIN)")
    return str(p)


def run_chatload(args, timeout):
    return subprocess.run([chatload_bin()] + args, capture_output=True, text=True, timeout=timeout)


class _Counting(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def _answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        if self.path != "/metrics":
            with self.server.lock:
                self.server.count += 1
        body = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *a):
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


@pytest.fixture
def tiny_server():
    srv = None
    for port in range(19500, 19600):
        try:
            srv = _Server(("127.0.0.1", port), _Counting)
            break
        except OSError:
            continue
    if srv is None:
        pytest.skip("no free port in 19500-19599")
    srv.count = 0
    srv.lock = threading.Lock()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _fake_seed(path):
    path.write_text(json.dumps({
        "users": [{"id": i + 1, "token": f"tok{i}"} for i in range(10)],
        "conversations": [{"id": c + 1, "members": [c % 10, (c + 1) % 10]} for c in range(20)],
    }))


def test_refuses_non_loopback(tmp_path):
    _fake_seed(tmp_path / "seed.json")
    r = run_chatload(["run", "--url", "http://192.0.2.1:3000", "--seedfile", str(tmp_path / "seed.json"),
                      "--stages", "1:1:1"], timeout=10)
    assert r.returncode != 0
    assert "loopback" in r.stderr
    for url in ("http://10.1.2.3:3000", "http://example.com:3000", "http://[2001:db8::1]:3000"):
        r = run_chatload(["seed", "--url", url, "--users", "1", "--conversations", "1", "--messages", "0",
                          "--out", str(tmp_path / "s2.json")], timeout=10)
        assert r.returncode != 0 and "refusing target" in r.stderr, (url, r.stderr)
    assert not (tmp_path / "s2.json").exists()


def test_scheduler_rate(tiny_server, tmp_path):
    _fake_seed(tmp_path / "seed.json")
    out = tmp_path / "out.json"
    port = tiny_server.server_address[1]
    r = run_chatload(["run", "--url", f"http://127.0.0.1:{port}", "--seedfile", str(tmp_path / "seed.json"),
                      "--stages", "20:200:3", "--json", str(out)], timeout=60)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    st = res["stages"][0]
    assert st["due"] == 600
    assert abs(tiny_server.count - 600) <= 30, (tiny_server.count, r.stderr)
    assert abs(st["completed"] - 600) <= 30
    assert st["sent"] == tiny_server.count
    assert st["errors"] == 0, st
    assert st["latency_ms"]["overall"]["count"] == st["completed"]
    assert set(st["latency_ms"]) >= {"overall", "history", "count", "metadata", "profile", "send"}


def test_seed_and_two_stage_smoke(chatd_factory, tmp_path):
    chatd = chatd_factory()
    url = f"http://{chatd.host}:{chatd.port}"
    seed = tmp_path / "seed.json"
    r = run_chatload(["seed", "--url", url, "--users", "30", "--conversations", "20", "--messages", "400",
                      "--seed", "42", "--out", str(seed)], timeout=120)
    assert r.returncode == 0, r.stderr
    data = json.loads(seed.read_text())
    assert len(data["users"]) == 30 and len(data["conversations"]) == 20
    assert all(u["token"] and u["id"] > 0 for u in data["users"])

    out, md = tmp_path / "out.json", tmp_path / "report.md"
    r = run_chatload(["run", "--url", url, "--seedfile", str(seed), "--stages", "50:100:3,200:200:3",
                      "--zipf", "1.1", "--json", str(out), "--report", str(md)], timeout=60)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert len(res["stages"]) == 2
    for st in res["stages"]:
        for k in ("connections", "target_rate", "achieved_rate", "latency_ms", "errors_by_status",
                  "cache_hit_ratio", "queue_wait_p95_ms", "db_queries_per_s_mean", "db_queries_per_s_cv"):
            assert k in st, k
        assert st["errors"] == 0, (st["errors_by_status"], r.stderr[-2000:])
        assert st["completed"] == st["due"]
        assert st["latency_ms"]["overall"]["p95"] >= st["latency_ms"]["overall"]["p50"]
        assert st["metrics_samples"] >= 1
    assert res["stages"][1]["connections"] == 200
    assert res["metrics"], "no /metrics scrape recorded"
    text = md.read_text()
    assert "| stage |" in text and "queue-wait p95" in text


CHAT_MIX = "history=70,inbox=12,count=4,metadata=2,profile=2,send=4,read=4,edit=1,delete=1"


def test_chat_api_mix(stack, chatd_factory, tmp_path):
    """The chat-API operations of the mix (inbox, read markers, edits and
    deletes of the run's own messages) all answer 2xx, each is measured, and
    the edits and deletes really happened."""
    chatd = chatd_factory()
    url = f"http://{chatd.host}:{chatd.port}"
    seed = tmp_path / "seed.json"
    r = run_chatload(["seed", "--url", url, "--users", "20", "--conversations", "10", "--messages", "100",
                      "--seed", "7", "--out", str(seed)], timeout=120)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out.json"
    r = run_chatload(["run", "--url", url, "--seedfile", str(seed), "--stages", "20:150:4",
                      "--mix", CHAT_MIX, "--json", str(out)], timeout=60)
    assert r.returncode == 0, r.stderr
    st = json.loads(out.read_text())["stages"][0]
    assert st["errors"] == 0, (st["errors_by_status"], r.stderr[-2000:])
    assert st["completed"] == st["due"]
    kinds = st["cache_hit_ratio_by_kind"]
    assert {"history", "inbox"} <= set(kinds), kinds
    assert all(0 <= v <= 1 for v in kinds.values()), kinds
    lat = st["latency_ms"]
    for op in ("history", "inbox", "count", "send", "read", "edit", "delete"):
        assert lat[op]["count"] > 0, (op, lat[op])
        assert lat[op]["p99"] >= lat[op]["p50"]
    ids = [c["id"] for c in json.loads(seed.read_text())["conversations"]]
    conn = psycopg2.connect(stack.database_url_direct)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FILTER (WHERE type = 2), count(*) FILTER (WHERE type = 3) "
                    "FROM events WHERE conversation_id = ANY(%s)", (ids,))
        edited, deleted = cur.fetchone()
        cur.execute("SELECT count(*) FROM messages WHERE conversation_id = ANY(%s) AND deleted",
                    (ids,))
        tombstones = cur.fetchone()[0]
    conn.close()
    assert edited > 0 and deleted > 0 and tombstones == deleted


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("CHATLOAD_SLOW"), reason="set CHATLOAD_SLOW=1 to run")
def test_many_connections_grow_and_shrink(chatd_factory, tmp_path):
    """5,000 connections (CHATLOAD_SLOW_CONNS) over source addresses, then fewer."""
    conns = int(os.environ.get("CHATLOAD_SLOW_CONNS", "5000"))
    rate = int(os.environ.get("CHATLOAD_SLOW_RATE", "1000"))
    chatd = chatd_factory()
    url = f"http://{chatd.host}:{chatd.port}"
    seed = tmp_path / "seed.json"
    r = run_chatload(["seed", "--url", url, "--users", "100", "--conversations", "100", "--messages", "2000", "--parallel", "4",
                      "--out", str(seed)], timeout=300)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out.json"
    r = run_chatload(["run", "--url", url, "--seedfile", str(seed), "--stages", f"{conns}:{rate}:5,300:{rate}:3",
                      "--json", str(out), "--report", str(tmp_path / "r.md")], timeout=120)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["connect_errors"] == 0, r.stderr[:1500] + "\n...\n" + r.stderr[-1500:]
    assert max(t["open_connections"] for t in res["timeline"]) == conns
    for st in res["stages"]:
        assert st["completed"] == st["due"]
        assert st["errors"] == 0, st["errors_by_status"]


def _copy_seed(stack, path, seed, users=40, convs=30, msgs=3000):
    return run_chatload(["seed", "--copy", "--db-url", stack.database_url_direct, "--users", str(users),
                         "--conversations", str(convs), "--messages", str(msgs), "--seed", str(seed),
                         "--out", str(path)], timeout=120)


def test_copy_seed_refuses_non_loopback_db(tmp_path):
    for url in ("postgresql://chat@10.1.2.3:5432/chat", "host=db.example.com dbname=chat",
                "postgresql://chat@127.0.0.1,192.0.2.7/chat"):
        r = run_chatload(["seed", "--copy", "--db-url", url, "--users", "1", "--conversations", "1",
                          "--messages", "1", "--out", str(tmp_path / "s.json")], timeout=10)
        assert r.returncode != 0 and "refusing database host" in r.stderr, (url, r.stderr)
    assert not (tmp_path / "s.json").exists()


def test_copy_seed_agrees_with_the_api(stack, chatd_factory, tmp_path):
    """A COPY-seeded set reads back through chatd as if the API had written it."""
    import requests

    seedfile = tmp_path / "seed.json"
    r = _copy_seed(stack, seedfile, seed=7)
    assert r.returncode == 0, r.stderr
    data = json.loads(seedfile.read_text())
    assert data["method"] == "copy" and data["messages"] == 3000
    assert len(data["users"]) == 40 and len(data["conversations"]) == 30
    assert sum(c["messages"] for c in data["conversations"]) == 3000
    assert all(len(u["token"]) == 43 for u in data["users"])

    chatd = chatd_factory()
    users, convs = data["users"], data["conversations"]

    def get(path, user):
        return requests.get(chatd.url(path), headers={"Authorization": "Bearer " + users[user]["token"]}, timeout=10)

    # tokens: every seeded token authenticates as its user; a made-up one does not
    for i in (0, len(users) // 2, len(users) - 1):
        assert get(f"/api/v1/users/{users[i]['id']}", i).json()["id"] == users[i]["id"]
    assert requests.get(chatd.url(f"/api/v1/users/{users[0]['id']}"),
                        headers={"Authorization": "Bearer " + "A" * 43}, timeout=10).status_code == 401

    member_sets = [set(c["members"]) for c in convs]
    for c, members in zip(convs, member_sets):
        who = c["members"][-1]
        count = get(f"/api/v1/conversations/{c['id']}/messages/count", who)
        assert count.status_code == 200 and count.json()["count"] == c["messages"], (c, count.text)
        meta = get(f"/api/v1/conversations/{c['id']}", who).json()
        assert meta["member_count"] == len(members)
        assert meta["created_by"] == users[c["members"][0]]["id"]
        assert (meta["last_message_at"] is None) == (c["messages"] == 0)
        outsider = next((u for u in range(len(users)) if u not in members), None)
        if outsider is not None:
            assert get(f"/api/v1/conversations/{c['id']}/messages/count", outsider).status_code == 404

    # history of the hottest conversation: newest first, pages continue each other
    hot = max(convs, key=lambda c: c["messages"])
    who = hot["members"][0]
    p1 = get(f"/api/v1/conversations/{hot['id']}/messages?limit=50", who).json()["messages"]
    p2 = get(f"/api/v1/conversations/{hot['id']}/messages?limit=50&offset=50", who).json()["messages"]
    assert len(p1) == min(50, hot["messages"])
    ids = [m["id"] for m in p1 + p2]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)
    stamps = [m["created_at"] for m in p1 + p2]
    assert stamps == sorted(stamps, reverse=True)
    assert all(m["conversation_id"] == hot["id"] for m in p1 + p2)
    senders = {users[u]["id"] for u in hot["members"]}
    assert all(m["sender_id"] in senders for m in p1 + p2)

    # a send through the API lands after the seeded rows and counts once
    r = requests.post(chatd.url(f"/api/v1/conversations/{hot['id']}/messages"),
                      headers={"Authorization": "Bearer " + users[who]["token"]}, json={"body": "after the seed"},
                      timeout=10)
    assert r.status_code == 201, r.text
    assert r.json()["id"] > ids[0]
    assert r.json()["created_at"] > stamps[0]
    assert get(f"/api/v1/conversations/{hot['id']}/messages/count", who).json()["count"] == hot["messages"] + 1
    newest = get(f"/api/v1/conversations/{hot['id']}/messages?limit=1", who).json()["messages"][0]
    assert newest["id"] == r.json()["id"]

    # the same --seed draws the same shape again (new ids, new tokens)
    again = tmp_path / "again.json"
    r = _copy_seed(stack, again, seed=7)
    assert r.returncode == 0, r.stderr
    d2 = json.loads(again.read_text())
    assert [c["members"] for c in d2["conversations"]] == [c["members"] for c in convs]
    assert [c["messages"] for c in d2["conversations"]] == [c["messages"] for c in convs]
    assert d2["users"][0]["id"] > users[-1]["id"]
    assert {u["token"] for u in d2["users"]}.isdisjoint(u["token"] for u in users)


# --- chatload realtime ----------------------------------------------------------

# the stage sets the limits it needs: sign-ups and sends of a load run are not
# what the defaults are for
RT_ENV = {"CHATD_RATE_SEND": "0", "CHATD_RATE_REQUEST": "0", "CHATD_RATE_SIGNUP": "0"}


def run_realtime(chatd, tmp_path, *extra, clients=50, rate=40, seconds=3, timeout=120):
    out, md = tmp_path / "rt.json", tmp_path / "rt.md"
    r = run_chatload(["realtime", "--url", f"http://{chatd.host}:{chatd.port}", "--clients", str(clients),
                      "--rate", str(rate), "--seconds", str(seconds), "--chatd-pid", str(chatd.pid),
                      "--drain-seconds", "5", "--resume-timeout", "15", "--connect-timeout", "20",
                      "--json", str(out), "--report", str(md), *extra], timeout=timeout)
    res = json.loads(out.read_text()) if out.exists() else None
    return r, res, md


def assert_delivered_exactly(st, where, stderr):
    """Every message reached every member's socket once, in rev order."""
    ctx = (where, {k: v for k, v in st.items() if k not in ("latency_ms", "send_latency_ms")}, stderr[-3000:])
    assert st["sends_ok"] > 0 and st["sends_failed"] == 0 and st["sends_dropped"] == 0, ctx
    assert st["frames_expected"] > 0, ctx
    assert st["lost"] == 0, ctx
    assert st["frames_received"] == st["frames_expected"], ctx
    assert st["duplicates"] == 0 and st["stale"] == 0, ctx
    assert st["gaps"] == 0 and st["out_of_order"] == 0, ctx
    assert st["drained"], ctx
    lat = st["latency_ms"]
    assert lat["count"] == st["frames_received"] and 0 < lat["p50"] <= lat["p99"] <= lat["max"], ctx


def test_realtime_refuses_non_loopback(tmp_path):
    r = run_chatload(["realtime", "--url", "http://192.0.2.1:3000", "--clients", "5", "--rate", "1"],
                     timeout=10)
    assert r.returncode != 0 and "loopback" in r.stderr


def test_realtime_small_run(chatd_factory, tmp_path):
    """50 clients (signed up by chatload) in Zipf-sized conversations on two
    workers, 3 s of sends: every frame arrives once, in order, and the
    figures are printed and written."""
    chatd = chatd_factory(env=RT_ENV, workers=2)
    r, res, md = run_realtime(chatd, tmp_path, "--no-reconnect")
    assert r.returncode == 0, r.stderr[-3000:]
    assert res["clients"] == 50 and res["setup"]["signed_up"] is True
    assert res["setup"]["in_sync_at_start"] == 50
    assert res["setup"]["handshake_failures"] == 0 and res["setup"]["unexpected_closes"] == 0
    shape = res["shape"]
    assert shape["conversations"] > 10 and shape["by_size"]["2-10"] > 0 and shape["size_max"] == 5
    assert shape["memberships"] >= 150
    st = res["stages"]["steady"]
    assert_delivered_exactly(st, "steady", r.stderr)
    assert st["delivered_frames_per_s"] > 0
    assert res["mass_reconnect"] is None and "reconnect" not in res["stages"]
    for k in ("bad_frames", "foreign_frames", "unexpected_frames", "rev_mismatch", "misrouted"):
        assert res[k] == 0, (k, res[k])
    assert res["frames_by_type"]["message"] == st["frames_received"]
    assert res["rss"]["per_socket_bytes"] is not None and res["rss"]["sockets"] == 50
    assert res["timeline"] and res["metrics"]
    # the figures, on stderr and in the report
    assert "steady:" in r.stderr and "frames/s delivered" in r.stderr and "lost 0" in r.stderr
    assert "bytes per idle socket" in r.stderr
    text = md.read_text()
    assert text.startswith("# chatload realtime report") and "| steady |" in text


def test_realtime_mass_reconnect_resumes_without_gap(chatd_factory, tmp_path):
    """All 50 sockets drop at once while the senders go on; each reconnects
    and resumes from the revs it holds: every client gets "resumed" with the
    positions it holds, and across the reconnect nothing is lost, repeated
    or out of order. Needs chatd's resume (issue 11): on a chatd without it
    the resumes are refused and the events sent meanwhile are lost."""
    chatd = chatd_factory(env=RT_ENV, workers=2)
    r, res, md = run_realtime(chatd, tmp_path)
    assert res is not None, r.stderr[-3000:]
    rc = res["mass_reconnect"]
    assert res["setup"]["resume_unsupported"] == 0, (rc, r.stderr[-3000:])
    assert rc["dropped"] == 50 and rc["resumed"] == 50, (rc, r.stderr[-3000:])
    assert rc["all_resumed_seconds"] is not None and rc["all_resumed_seconds"] < 15
    assert rc["resumed_mismatch"] == 0, rc
    assert rc["resets"] == 0, rc  # a few seconds of sends: far from 1,000 missing events
    assert_delivered_exactly(res["stages"]["steady"], "steady", r.stderr)
    assert_delivered_exactly(res["stages"]["reconnect"], "reconnect", r.stderr)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "## Mass reconnect" in md.read_text()
