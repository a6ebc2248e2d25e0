"""deploy/docker-compose.cluster.yml really run: the cluster layout of `make
cluster` in containers (PostgreSQL primary + streaming replica behind their
PgBouncers, a Redis Cluster of 3 masters + 3 replicas, 3 chatd instances,
HAProxy in front), brought up with one `up -d`, used through HAProxy's
published port only, and taken down with nothing left behind.

Run by scripts/test-compose.sh after test_compose.py, in its own project
(COMPOSE_PROJECT_NAME + "cl") on the same private podman service; HAProxy is
published on CHATD_PUBLISH (free again once test_compose.py's project is
down) and its stats page on HAPROXY_STATS_PUBLISH.
"""

import csv
import io
import os
import re
import sys
import time
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "integration"))

from chatlib import Api  # noqa: E402
from composelib import Project, podman, timing, wait_for  # noqa: E402
from wsclient import WS  # noqa: E402

P = Project(REPO / "deploy" / "docker-compose.cluster.yml",
            os.environ["COMPOSE_PROJECT_NAME"] + "cl")
HA = os.environ["CHATD_PUBLISH"]
HA_HOST, HA_PORT = HA.rsplit(":", 1)[0], int(HA.rsplit(":", 1)[1])
STATS = os.environ["HAPROXY_STATS_PUBLISH"]
INSTANCES = ["chatd-1", "chatd-2", "chatd-3"]
REDIS = [f"redis-{i}" for i in range(1, 7)]
ONE_SHOTS = ["db-init", "chatd-migrate", "redis-cluster-init"]
REPLICA_READS = re.compile(r'^chatd_db_reads_total\{path="replica"\} (\S+)$', re.M)
# every long-running service with a health check
HEALTHY = (["postgres", "postgres-replica", "pgbouncer", "pgbouncer-replica"] + REDIS +
           INSTANCES + ["haproxy"])


def servers():
    """{server: row} of HAProxy's chatd backend, from its stats CSV."""
    text = requests.get(f"http://{STATS}/stats;csv", timeout=5).text.lstrip("# ")
    return {r["svname"]: r for r in csv.DictReader(io.StringIO(text))
            if r["pxname"] == "chatd" and r["svname"] not in ("FRONTEND", "BACKEND")}


def all_up():
    try:
        s = servers()
    except requests.RequestException:
        return False
    return len(s) == 3 and all(r["status"].startswith("UP") for r in s.values())


def redis_cli(service, *args):
    port = str(7000 + int(service.rsplit("-", 1)[1]))
    r = podman("exec", P.container(service), "redis-cli", "-p", port, *args, timeout=30)
    assert r.returncode == 0, r.stdout
    return r.stdout


@pytest.fixture(scope="module")
def cluster():
    assert not P.left_behind(), f"project {P.name} already has objects: {P.left_behind()}"
    try:
        t0 = time.monotonic()
        P.compose("up", "-d", timeout=600)
        timing("cluster: up -d (16 services)", time.monotonic() - t0)
        t0 = time.monotonic()
        for s in HEALTHY:
            wait_for(lambda s=s: P.healthy(s), 180, f"{s} healthy; its log:\n{P.logs(s)}")
        wait_for(all_up, 60, "HAProxy seeing the three instances up")
        timing("cluster: all healthy, HAProxy sees 3 instances up", time.monotonic() - t0)
        yield
    finally:
        if P.left_behind():
            P.down()


def test_one_shots_succeeded_and_the_engines_formed(cluster):
    for s in ONE_SHOTS:
        assert P.exited_ok(s), f"{s}:\n{P.logs(s)}"
    info = redis_cli("redis-1", "cluster", "info")
    assert "cluster_state:ok" in info and "cluster_known_nodes:6" in info, info
    assert "cluster_size:3" in info, info
    # the replica streams from the primary
    r = podman("exec", "-e", "PGPASSWORD=" + os.environ["CHATD_ADMIN_DB_PASSWORD"],
               P.container("postgres"), "psql", "-X", "-At", "-h", "127.0.0.1",
               "-U", "chat_admin", "-d", "chat", "-c",
               "SELECT state FROM pg_stat_replication", timeout=30)
    assert r.stdout.split() == ["streaming"], r.stdout


def test_rest_and_stream_through_haproxy(cluster):
    t0 = time.monotonic()
    api = Api(f"http://{HA}")
    try:
        a, b = api.signup(), api.signup()
        conv = api.create_conversation(a["token"], member_ids=[b["id"]])
        ws = WS.open(HA_HOST, HA_PORT, b["token"])
        try:
            sent = [api.send(a["token"], conv["id"], f"hello {i}") for i in range(6)]
            got = []
            deadline = time.monotonic() + 15
            while len(got) < len(sent):
                assert time.monotonic() < deadline, f"frames so far: {got}"
                f = ws.recv_json(max(0.1, deadline - time.monotonic()))
                if f.get("type") == "message" and f["conversation_id"] == conv["id"]:
                    got.append(f["message"]["id"])
            assert got == [m["id"] for m in sent]
        finally:
            ws.close_socket()
        # every read after its acknowledged write sees it, whichever instance answers
        for i in range(30):
            m = api.send(a["token"], conv["id"], f"fresh {i}")
            newest = api.history(b["token"], conv["id"], limit=5)["messages"]
            assert newest[0]["id"] == m["id"], (m, newest[:2])
        # the requests spread over the three instances
        counts = {n: int(r["stot"]) for n, r in servers().items()}
        assert all(v > 0 for v in counts.values()), counts
        # settled pages are read from the replica: new page sizes miss the cache
        def replica_reads():
            total = 0
            for _ in range(6):  # /metrics through HAProxy: each instance in turn
                text = api.req("GET", "/metrics").text
                m = REPLICA_READS.search(text)
                total = max(total, float(m.group(1)) if m else 0)
            return total
        limit = [6]

        def read_some():
            for _ in range(10):
                api.history(b["token"], conv["id"], limit=limit[0])
                limit[0] = limit[0] % 100 + 1
            return replica_reads() > 0
        wait_for(read_some, 30, "a read answered by the replica")
        # keys on more than one Redis master (the conversation's and the users')
        keys = {s: int(redis_cli(s, "dbsize").strip()) for s in REDIS[:3]}
        assert sum(1 for v in keys.values() if v > 0) >= 2, keys
    finally:
        api.close()
    timing("cluster: REST, stream, freshness and replica reads through HAProxy",
           time.monotonic() - t0)


def test_an_instance_stopped_and_started_fails_no_request(cluster):
    t0 = time.monotonic()
    api = Api(f"http://{HA}")
    try:
        a = api.signup()
        conv = api.create_conversation(a["token"])
        P.compose("stop", "--timeout", "20", "chatd-2")
        # SIGTERM: the instance drains (503 on /readyz), HAProxy takes it out first
        wait_for(lambda: servers()["chatd2"]["status"].startswith(("DOWN", "MAINT")), 30,
                 "HAProxy taking chatd2 out")
        for i in range(30):
            assert api.send_raw(a["token"], conv["id"], f"while one is away {i}").status_code == 201
        P.compose("start", "chatd-2")
        wait_for(all_up, 60, "chatd2 back in HAProxy")
        assert len(api.history(a["token"], conv["id"], limit=100)["messages"]) == 30
    finally:
        api.close()
    timing("cluster: chatd-2 stopped and started, 30 sends meanwhile", time.monotonic() - t0)


def test_down_leaves_nothing_behind(cluster):
    t0 = time.monotonic()
    P.down()
    timing("cluster: down -v", time.monotonic() - t0)
    assert P.left_behind() == {}, f"left behind: {P.left_behind()}"
