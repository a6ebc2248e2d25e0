"""deploy/docker-compose.yml really run: podman runs the project's images
(scripts/images.sh), Debian's docker-compose drives it through podman's
Docker-compatible API, and chatd is used through its published port.

Run by scripts/test-compose.sh (`make test`, once), which builds the images,
starts a private podman API service and sets the environment below; the
module's fixture brings the stack up with the seed's commands and always takes
it down (`down -v`), and the script removes whatever is left by project name.

Environment (from scripts/test-compose.sh):
  DOCKER_HOST, CONTAINERS_CONF   the private podman service; podman's settings
  COMPOSE_PROJECT_NAME           the project: every container, volume, network
  COMPOSE_TEST_ENV_FILE          an empty env file (deploy/.env is not read)
  CHATD_PUBLISH, PROMETHEUS_PUBLISH, ALERTMANAGER_PUBLISH, GRAFANA_PUBLISH
                                 loopback host:port of the published services
  CHATD_DB_PASSWORD, CHATD_ADMIN_DB_PASSWORD, CHATD_ADMIN_TOKEN   secrets
  COMPOSE_TEST_TIMINGS           file that gets one line per step: "step seconds"
"""

import json
import os
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "integration"))

from chatlib import Api  # noqa: E402
from composelib import Project, podman, timing, wait_for  # noqa: E402
from wsclient import WS  # noqa: E402

COMPOSE_FILE = REPO / "deploy" / "docker-compose.yml"
PROJECT = os.environ["COMPOSE_PROJECT_NAME"]
CHATD = os.environ["CHATD_PUBLISH"]
PROM = os.environ["PROMETHEUS_PUBLISH"]
CHATD_HOST, CHATD_PORT = CHATD.rsplit(":", 1)[0], int(CHATD.rsplit(":", 1)[1])
# the services the test brings up, and those whose image has a HEALTHCHECK
CORE = ["postgres", "redis", "pgbouncer"]
MONITORING = ["prometheus", "alertmanager", "postgres-exporter", "redis-exporter",
              "pgbouncer-exporter"]
HEALTHY = ["postgres", "redis", "pgbouncer", "chatd"] + MONITORING


P = Project(COMPOSE_FILE, PROJECT, profiles=["monitoring"])
compose, container, logs, healthy, down, left_behind = (
    P.compose, P.container, P.logs, P.healthy, P.down, P.left_behind)


@pytest.fixture(scope="module")
def stack():
    assert not left_behind(), f"project {PROJECT} already has objects: {left_behind()}"
    try:
        t0 = time.monotonic()
        compose("up", "-d", *CORE)
        timing("up -d postgres redis pgbouncer", time.monotonic() - t0)
        t0 = time.monotonic()
        compose("up", "-d", "chatd")
        timing("up -d chatd (migrations first)", time.monotonic() - t0)
        t0 = time.monotonic()
        # the monitoring profile without Grafana, whose image is not built here
        compose("--profile", "monitoring", "up", "-d", *MONITORING)
        timing("--profile monitoring up -d prometheus alertmanager exporters",
               time.monotonic() - t0)
        t0 = time.monotonic()
        for s in HEALTHY:
            wait_for(lambda s=s: healthy(s), 120, f"{s} healthy; its log:\n{logs(s)}")
        timing("all healthy", time.monotonic() - t0)
        yield
    finally:
        if left_behind():
            down()


def test_one_shots_ran_once_and_succeeded(stack):
    for s in ("db-init", "chatd-migrate"):
        r = podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", container(s))
        assert r.stdout.split() == ["exited", "0"], f"{s}: {r.stdout}\n{logs(s)}"
    # the migrations are recorded once each
    r = podman("exec", "-e", "PGPASSWORD=" + os.environ["CHATD_ADMIN_DB_PASSWORD"],
               container("postgres"), "psql", "-X", "-At", "-h", "127.0.0.1",
               "-U", "chat_admin", "-d", "chat", "-c",
               "SELECT count(*) = count(DISTINCT version) AND count(*) >= 3 FROM schema_migrations",
               timeout=30)
    assert r.stdout.strip() == "t", r.stdout


def test_servers_run_as_non_root(stack):
    for s in HEALTHY:
        r = podman("exec", container(s), "id", "-u")
        assert r.returncode == 0 and r.stdout.strip() != "0", f"{s} runs as uid {r.stdout!r}"


def test_rest_and_websocket_smoke(stack):
    t0 = time.monotonic()
    api = Api(f"http://{CHATD}")
    try:
        assert api.req("GET", "/healthz").status_code == 200
        wait_for(lambda: api.req("GET", "/readyz").status_code == 200, 60, "chatd ready")
        a, b = api.signup(), api.signup()
        conv = api.create_conversation(a["token"], member_ids=[b["id"]])
        ws = WS.open(CHATD_HOST, CHATD_PORT, b["token"])
        try:
            sent = [api.send(a["token"], conv["id"], f"hello {i}") for i in range(3)]
            # a pushed frame: b's socket gets the message events
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
        h = api.history(b["token"], conv["id"])
        assert [m["id"] for m in h["messages"]] == [m["id"] for m in reversed(sent)]
        # a cache hit, visible in /api/cache/metrics
        before = api.req("GET", "/api/cache/metrics").json()["hits"]
        wait_for(lambda: api.history(b["token"], conv["id"])
                 and api.req("GET", "/api/cache/metrics").json()["hits"] > before,
                 30, "a cache hit")
        m = api.req("GET", "/api/cache/metrics").json()
        assert m["healthy"] is True and m["bypass"] is False, m
    finally:
        api.close()
    timing("REST + WebSocket smoke", time.monotonic() - t0)


def test_prometheus_scrapes_chatd(stack):
    t0 = time.monotonic()

    def chatd_up():
        r = requests.get(f"http://{PROM}/api/v1/query", params={"query": 'up{job="chatd"}'},
                         timeout=5)
        r.raise_for_status()
        res = r.json()["data"]["result"]
        return res and res[0]["value"][1] == "1"

    wait_for(chatd_up, 60, 'up{job="chatd"} == 1 in Prometheus')
    timing("Prometheus scrapes chatd (up == 1)", time.monotonic() - t0)

    # and every other target of deploy/prometheus/prometheus.yml: the exporters' images
    def all_up():
        r = requests.get(f"http://{PROM}/api/v1/query", params={"query": "up"}, timeout=5)
        return {x["metric"]["job"]: x["value"][1] for x in r.json()["data"]["result"]}

    want = {"chatd", "pgbouncer", "redis", "postgres", "prometheus"}
    wait_for(lambda: {j for j, v in all_up().items() if v == "1"} >= want, 60,
             f"every target up; now {all_up()}")
    # and its metrics are there under their names
    r = requests.get(f"http://{PROM}/api/v1/query",
                     params={"query": "chatd_http_requests_total"}, timeout=5)
    assert r.json()["data"]["result"], r.text
    rules = requests.get(f"http://{PROM}/api/v1/rules", timeout=5).json()
    assert rules["data"]["groups"], "alerts.yml not loaded"
    r = requests.get(f"http://{PROM}/api/v1/query",
                     params={"query": "pgbouncer_pools_client_waiting_connections"}, timeout=5)
    assert r.json()["data"]["result"], r.text
    timing("Prometheus scrapes every target (up == 1)", time.monotonic() - t0)


class Sender(threading.Thread):
    """Sends numbered messages until stopped; remembers each acknowledged one."""

    def __init__(self, api, token, cid):
        super().__init__(daemon=True)
        self.api, self.token, self.cid = api, token, cid
        self.acked, self.failed = {}, 0
        self.stop = threading.Event()

    def run(self):
        i = 0
        while not self.stop.is_set():
            body = f"m{i}-{uuid.uuid4().hex[:8]}"
            i += 1
            try:
                r = self.api.send_raw(self.token, self.cid, body, client_msg_id=body)
                if r.status_code == 201:
                    self.acked[body] = r.json()["id"]
                else:
                    self.failed += 1
            except requests.RequestException:
                self.failed += 1
            self.stop.wait(0.1)


def test_restarts_of_redis_and_pgbouncer_lose_nothing(stack):
    t0 = time.monotonic()
    api = Api(f"http://{CHATD}", timeout=30)
    reader = Api(f"http://{CHATD}")
    try:
        a = api.signup()
        conv = api.create_conversation(a["token"])
        s = Sender(api, a["token"], conv["id"])
        s.start()
        try:
            for service in ("redis", "pgbouncer"):
                n = len(s.acked)
                wait_for(lambda n=n: len(s.acked) >= n + 3, 30, f"sends before restarting {service}")
                started = podman("inspect", "--format", "{{.State.StartedAt}}", container(service))
                compose("restart", "--timeout", "10", service)
                again = podman("inspect", "--format", "{{.State.StartedAt}}", container(service))
                assert again.stdout != started.stdout, f"{service} was not restarted"
                n = len(s.acked)
                # chatd recovers: sends are acknowledged again
                wait_for(lambda n=n: len(s.acked) >= n + 5, 90,
                         f"sends after restarting {service}; chatd:\n{logs('chatd')}")
        finally:
            s.stop.set()
            s.join(30)
        acked = dict(s.acked)
        assert len(acked) >= 13
        seen = []
        offset = 0
        while True:
            page = reader.history(a["token"], conv["id"], limit=100, offset=offset)["messages"]
            seen.extend((m["body"], m["id"]) for m in page)
            if len(page) < 100:
                break
            offset += 100
        bodies = [b for b, _ in seen]
        assert len(bodies) == len(set(bodies)), "a message is stored twice"
        stored = dict(seen)
        missing = [b for b in acked if b not in stored]
        assert not missing, f"acknowledged but missing: {missing}"
        assert all(stored[b] == mid for b, mid in acked.items())
        timing(f"Redis + PgBouncer restarts under sends ({len(acked)} acked, {s.failed} refused)",
               time.monotonic() - t0)
    finally:
        api.close()
        reader.close()


def test_down_leaves_nothing_behind(stack):
    t0 = time.monotonic()
    r = down()
    assert r.returncode == 0, r.stdout
    timing("down -v", time.monotonic() - t0)
    assert left_behind() == {}, f"left behind: {json.dumps(left_behind())}"
