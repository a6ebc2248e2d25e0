"""Fixtures for chatd's integration tests: real PostgreSQL, PgBouncer and Redis.

Environment:
  CHATD_BIN             chatd binary (default build/chatd, relative to the repo)
  CHATD_TEST_DB_PATH    "pooler" (default): chatd's DATABASE_URL is PgBouncer;
                        "direct": it is PostgreSQL itself
  CHATD_TEST_STACK_DIR  the test stack (default var/test-stack). If its env file
                        exists and its servers answer, it is used as is;
                        otherwise the session starts it with scripts/stack.sh
                        (ports 15432/16432/16379) and stops it at the end.
  CHATD_TEST_EXTERNAL_URL  when set (e.g. http://127.0.0.1:3000, HAProxy of a
                        cluster), the module fixture `chatd` is that running
                        service instead of a process started here: `api` and
                        the tests talk to it (test_cluster.py runs modules so;
                        tests that read a log or start their own chatd don't fit)

Fixtures:
  stack          (session)  URLs/DSNs/ports of the stack; migrations applied
  chatd_factory  (function) chatd_factory(env=None, workers=1, wait_ready=True);
                            rate limits off (CHATD_RATE_*=0) unless env sets them
  chatd          (module)   one default chatd (workers=1) for a test module, started
                            afresh for each module
  api            (module)   chatlib.Api on that module's chatd
  db             (function) psycopg2 connection as superuser, autocommit
  redis_client   (function) redis.Redis on the stack's Redis

Helpers (from conftest import ...): REPO, chatd_bin(), chatload_bin(),
free_port(), parse_metrics(), lock_waiters(), with_port().
"""

import ctypes
import os
import random
import re
import resource
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

import psycopg2
import pytest
import redis
import openapi_check
import requests
from chatlib import Api

REPO = Path(__file__).resolve().parents[2]

TEST_PG_PORT = int(os.environ.get("CHATD_TEST_PG_PORT", "15432"))
TEST_PGBOUNCER_PORT = int(os.environ.get("CHATD_TEST_PGBOUNCER_PORT", "16432"))
TEST_REDIS_PORT = int(os.environ.get("CHATD_TEST_REDIS_PORT", "16379"))

SANITIZER_MARKERS = ("AddressSanitizer", "runtime error:", "LeakSanitizer")



def _raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


# tests open 10,000 sockets from this process
_raise_nofile()


def _repo_path(p):
    p = Path(p)
    return p if p.is_absolute() else REPO / p


def chatd_bin():
    return _repo_path(os.environ.get("CHATD_BIN", "build/chatd"))


def chatload_bin():
    """The load tool's binary (CHATLOAD_BIN, default build/chatload); may not exist."""
    return _repo_path(os.environ.get("CHATLOAD_BIN", "build/chatload"))


def _stack_dir():
    return _repo_path(os.environ.get("CHATD_TEST_STACK_DIR", "var/test-stack"))


# ---------------------------------------------------------------------------
# the stack


def _read_env_file(path):
    env = {}
    for line in Path(path).read_text().splitlines():
        m = re.match(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
        if not m:
            continue
        val = m.group(2).strip()
        if len(val) >= 2 and val[0] == val[-1] and val[0] in "'\"":
            val = val[1:-1]
        env[m.group(1)] = val
    return env


class Stack:
    """What a test needs to reach the servers."""

    def __init__(self, env, db_path):
        self.env = env
        self.database_url = env["DATABASE_URL"]
        self.database_url_direct = env["DATABASE_URL_DIRECT"]
        self.redis_url = env["REDIS_URL"]
        self.pg_admin_dsn = env["CHATD_TEST_PG_ADMIN"]
        self.pgbouncer_admin_dsn = env["CHATD_TEST_PGBOUNCER_ADMIN"]
        self.db_path = db_path
        self.chatd_database_url = (
            self.database_url_direct if db_path == "direct" else self.database_url
        )
        self.pg_port = urllib.parse.urlsplit(self.database_url_direct).port
        self.pgbouncer_port = urllib.parse.urlsplit(self.database_url).port
        self.redis_port = urllib.parse.urlsplit(self.redis_url).port or 6379
        self.stack_dir = _stack_dir()
        self.migrated = False

    def __repr__(self):
        return (
            f"Stack(db_path={self.db_path}, pg={self.pg_port}, "
            f"pgbouncer={self.pgbouncer_port}, redis={self.redis_port})"
        )


def _stack_answers(env):
    try:
        for dsn in (env["CHATD_TEST_PG_ADMIN"], env["DATABASE_URL"]):
            conn = psycopg2.connect(dsn, connect_timeout=3)
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
                    cur.fetchone()
            finally:
                conn.close()
        r = redis.Redis.from_url(env["REDIS_URL"], socket_timeout=3)
        r.ping()
        r.close()
        return True
    except Exception:
        return False


def _stack_script(cmd):
    env = dict(os.environ)
    env.update(
        CHATD_STACK_DIR=str(_stack_dir()),
        PG_PORT=str(TEST_PG_PORT),
        PGBOUNCER_PORT=str(TEST_PGBOUNCER_PORT),
        REDIS_PORT=str(TEST_REDIS_PORT),
    )
    res = subprocess.run(
        [str(REPO / "scripts" / "stack.sh"), cmd],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )
    if res.returncode != 0:
        raise RuntimeError(f"scripts/stack.sh {cmd} failed:\n{res.stdout}")
    return res.stdout


@pytest.fixture(scope="session")
def stack_servers():
    """The servers only, no migrations (used by test_stack.py)."""
    db_path = os.environ.get("CHATD_TEST_DB_PATH", "pooler")
    if db_path not in ("pooler", "direct"):
        pytest.exit(f"CHATD_TEST_DB_PATH must be pooler or direct, not {db_path!r}", 2)
    env_file = _stack_dir() / "env"
    started = False
    env = _read_env_file(env_file) if env_file.exists() else None
    if env is None or not _stack_answers(env):
        try:
            _stack_script("start")
        except Exception as e:  # noqa: BLE001
            pytest.exit(str(e), 3)
        started = True
        env = _read_env_file(env_file)
    try:
        yield Stack(env, db_path)
    finally:
        if started:
            _stack_script("stop")


def _run_migrations(stack):
    binary = chatd_bin()
    if not binary.exists():
        pytest.fail(f"chatd binary not found: {binary} (make build, or set CHATD_BIN)")
    env = dict(os.environ)
    env["DATABASE_URL"] = stack.database_url
    env["DATABASE_URL_DIRECT"] = stack.database_url_direct
    env["REDIS_URL"] = stack.redis_url
    res = subprocess.run(
        [str(binary), "migrate"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )
    if res.returncode != 0:
        pytest.fail(f"{binary} migrate exited {res.returncode}:\n{res.stdout[-4000:]}")
    for marker in SANITIZER_MARKERS:
        if marker in res.stdout:
            pytest.fail(f"{binary} migrate: sanitizer report:\n{res.stdout[-4000:]}")


@pytest.fixture(scope="session")
def stack(stack_servers):
    """The stack with chatd's migrations applied."""
    if not stack_servers.migrated:
        _run_migrations(stack_servers)
        stack_servers.migrated = True
    return stack_servers


# ---------------------------------------------------------------------------
# chatd processes

_PR_SET_PDEATHSIG = 1
try:
    _libc = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover
    _libc = None


def _child_setup_fn(die_with_parent):
    def setup():
        # soft fd limit = hard; and, when started from the main thread (the
        # signal follows the parent *thread*), die if the test process dies
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        if die_with_parent and _libc is not None:
            _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    return setup


def free_port(lo=20000, hi=30000):
    """A port in [lo, hi) that nothing listens on right now."""
    for _ in range(200):
        port = random.randrange(lo, hi)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            s.close()
        return port
    raise RuntimeError("no free port in range")


_LABEL_RE = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def _unescape_label(v):
    return v.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")


def parse_metrics(text):
    """Prometheus text format -> list of (name, {label: value}, float)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([A-Za-z_:][A-Za-z0-9_:]*)(\{.*\})?\s+(\S+)", line)
        if not m:
            continue
        name, labels_txt, value = m.groups()
        labels = {}
        if labels_txt:
            body = labels_txt[1:-1]
            pos = 0
            while pos < len(body):
                lm = _LABEL_RE.match(body, pos)
                if not lm:
                    break
                labels[lm.group(1)] = _unescape_label(lm.group(2))
                pos = lm.end()
        try:
            v = float(value)  # handles +Inf, -Inf, NaN
        except ValueError:
            continue
        out.append((name, labels, v))
    return out


class ChatdProcess:
    def __init__(self, proc, host, port, log_path, env):
        self.proc = proc
        self.pid = proc.pid
        self.host = host
        self.port = port
        self.base_url = f"http://{host}:{port}"
        self.log_path = log_path
        self.env = env
        # its answers are checked against docs/openapi.yaml while it runs
        openapi_check.serve(port)
        self._served = True

    def __repr__(self):
        return f"ChatdProcess(pid={self.pid}, {self.base_url})"

    # --- log
    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n=60):
        return "\n".join(self.log_text().splitlines()[-n:])

    def log_contains(self, s):
        return s in self.log_text()

    def wait_log(self, s, timeout=10):
        """Poll until the log contains s: True, or AssertionError with the log tail."""
        deadline = time.monotonic() + timeout
        while True:
            if s in self.log_text():
                return True
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"chatd log has no {s!r} after {timeout}s; tail:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    # --- process
    def running(self):
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Send sig, wait up to timeout; SIGKILL after that. Returns the exit code."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._served:
            openapi_check.unserve(self.port)
            self._served = False
        return self.proc.returncode

    # --- HTTP
    def url(self, path):
        return self.base_url + path

    def metrics(self):
        r = requests.get(self.base_url + "/metrics", timeout=5)
        r.raise_for_status()
        return r.text

    def metric(self, name, labels=None):
        """Sum of the series called name whose labels include labels; 0.0 if none."""
        want = labels or {}
        total = 0.0
        for n, ls, v in parse_metrics(self.metrics()):
            if n == name and all(ls.get(k) == str(val) for k, val in want.items()):
                total += v
        return total

    def wait_ready(self, timeout=15):
        deadline = time.monotonic() + timeout
        last = None
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"chatd exited with {self.proc.returncode} before /healthz answered; "
                    f"log tail:\n{self.log_tail()}"
                )
            try:
                r = requests.get(self.base_url + "/healthz", timeout=1)
                if r.status_code == 200:
                    return
                last = f"status {r.status_code}"
            except requests.RequestException as e:
                last = repr(e)
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"chatd /healthz not 200 after {timeout}s ({last}); log tail:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.05)


class _Factory:
    def __init__(self, stack, tmp_dir):
        self.stack = stack
        self.tmp_dir = Path(tmp_dir)
        self.started = []

    def __call__(self, env=None, workers=1, wait_ready=True):
        binary = chatd_bin()
        if not binary.exists():
            pytest.fail(f"chatd binary not found: {binary} (make build, or set CHATD_BIN)")
        for attempt in range(3):
            port = free_port()
            child_env = dict(os.environ)
            child_env.update(
                CHATD_LISTEN=f"127.0.0.1:{port}",
                DATABASE_URL=self.stack.chatd_database_url,
                DATABASE_URL_DIRECT=self.stack.database_url_direct,
                REDIS_URL=self.stack.redis_url,
                CHATD_WORKERS=str(workers),
                CHATD_LOG_LEVEL="info",
                # the suite signs up many users and sends fast: no rate limits
                # unless a test sets the ones it exercises (test_rate_limits.py)
                CHATD_RATE_SEND="0",
                CHATD_RATE_REQUEST="0",
                CHATD_RATE_SIGNUP="0",
            )
            for k, v in (env or {}).items():
                if v is None:
                    child_env.pop(k, None)
                else:
                    child_env[k] = str(v)
            # the port may be taken from the environment override
            listen = child_env.get("CHATD_LISTEN", f"127.0.0.1:{port}")
            host, _, p = listen.rpartition(":")
            host = host.strip("[]") or "127.0.0.1"
            n = len(self.started)
            log_path = self.tmp_dir / f"chatd-{n}-{port}.log"
            logf = open(log_path, "wb")
            try:
                proc = subprocess.Popen(
                    [str(binary)],
                    env=child_env,
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    preexec_fn=_child_setup_fn(
                        threading.current_thread() is threading.main_thread()
                    ),
                    cwd=str(REPO),
                )
            finally:
                logf.close()
            inst = ChatdProcess(proc, host, int(p) if p.isdigit() else port, log_path, child_env)
            self.started.append(inst)
            if not wait_ready:
                return inst
            try:
                inst.wait_ready()
                return inst
            except RuntimeError as e:
                text = inst.log_text().lower()
                port_taken = "address already in use" in text or "eaddrinuse" in text
                inst.stop(signal.SIGKILL)
                if port_taken and attempt < 2 and not (env and "CHATD_LISTEN" in env):
                    continue  # someone took the port between our check and the bind
                pytest.fail(str(e))
        raise AssertionError("unreachable")

    def teardown(self):
        problems = []
        for inst in self.started:
            if inst.running():
                inst.stop()
            text = inst.log_text()
            for marker in SANITIZER_MARKERS:
                if marker in text:
                    idx = text.index(marker)
                    problems.append(
                        f"{inst!r}: {marker!r} in its log ({inst.log_path}):\n"
                        f"{text[max(0, idx - 2000): idx + 6000]}"
                    )
                    break
        self.started = []
        if problems:
            pytest.fail("sanitizer report(s) in chatd log:\n" + "\n\n".join(problems))


# ---------------------------------------------------------------------------
# helpers on the stack (tests import them: from conftest import ...)


def lock_waiters(conn, user):
    """Backends of the database role `user` waiting on a lock right now."""
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND wait_event_type = 'Lock'",
                    (user,))
        return cur.fetchone()[0]


def with_port(url, port):
    """url (postgresql://, redis://) pointed at 127.0.0.1:port, credentials kept."""
    u = urllib.parse.urlsplit(url)
    netloc = u.netloc.rsplit("@", 1)
    hostport = f"127.0.0.1:{port}"
    netloc = f"{netloc[0]}@{hostport}" if len(netloc) == 2 else hostport
    return urllib.parse.urlunsplit((u.scheme, netloc, u.path, u.query, u.fragment))


@pytest.fixture
def chatd_factory(stack, tmp_path):
    f = _Factory(stack, tmp_path)
    yield f
    f.teardown()


@pytest.fixture(scope="module")
def _module_chatd_factory(stack, tmp_path_factory, request):
    name = re.sub(r"[^A-Za-z0-9_]+", "_", request.module.__name__)[-40:]
    f = _Factory(stack, tmp_path_factory.mktemp(f"chatd-{name}"))
    yield f
    f.teardown()


# fixtures that need chatd processes of this session or the lone stack's Redis
_NOT_EXTERNAL = {"chatd_factory", "_module_chatd_factory", "redis_client"}


def pytest_collection_modifyitems(config, items):
    """With CHATD_TEST_EXTERNAL_URL, the tests that start their own chatd or use
    the stack's Redis are deselected (they test a process, not the service)."""
    if not os.environ.get("CHATD_TEST_EXTERNAL_URL"):
        return
    keep, drop = [], []
    for item in items:
        (drop if _NOT_EXTERNAL & set(getattr(item, "fixturenames", ())) else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


class ExternalChatd(ChatdProcess):
    """A chatd service running elsewhere (CHATD_TEST_EXTERNAL_URL): HTTP only."""

    def __init__(self, base_url):
        u = urllib.parse.urlsplit(base_url)
        self.proc = None
        self.pid = None
        self.host = u.hostname
        self.port = u.port or 80
        self.base_url = base_url.rstrip("/")
        self.log_path = None
        self.env = {}
        openapi_check.serve(self.port)
        self._served = True

    def __repr__(self):
        return f"ExternalChatd({self.base_url})"

    def running(self):
        return True

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self._served:
            openapi_check.unserve(self.port)
            self._served = False

    def log_text(self):
        raise RuntimeError("an external chatd has no log here")


@pytest.fixture(scope="module")
def chatd(request):
    external = os.environ.get("CHATD_TEST_EXTERNAL_URL")
    if external:
        inst = ExternalChatd(external)
        yield inst
        inst.stop()
        return
    yield request.getfixturevalue("_module_chatd_factory")(workers=1)


@pytest.fixture(scope="module")
def api(chatd):
    """A client of the module's chatd, for as long as that chatd lives."""
    a = Api(chatd.base_url)
    yield a
    a.close()


@pytest.fixture
def db(stack):
    conn = psycopg2.connect(stack.pg_admin_dsn, connect_timeout=10)
    conn.autocommit = True
    yield conn
    conn.close()


@pytest.fixture
def redis_client(stack):
    r = redis.Redis.from_url(stack.redis_url)
    yield r
    r.close()


# ---------------------------------------------------------------------------
# every answer checked against docs/openapi.yaml (openapi_check.py)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item._openapi_call_failed = rep.failed


@pytest.fixture(autouse=True)
def _openapi_answers(request):
    """Fails a test during which an answer did not match the document, even when
    the Mismatch was raised in another thread or caught by the test."""
    before = len(openapi_check.violations)
    yield
    new = openapi_check.violations[before:]
    if new and not getattr(request.node, "_openapi_call_failed", False):
        pytest.fail(f"{len(new)} answer(s) not as docs/openapi.yaml describes; first: {new[0]}",
                    pytrace=False)


def pytest_terminal_summary(terminalreporter):
    st = openapi_check.stats
    terminalreporter.write_line(
        f"openapi: {st['responses']} HTTP answers checked against their route "
        f"({st['raw_paired']} of them raw), {st['raw_generic']} raw answers against their "
        f"status only, {st['frames']} WebSocket frames; {len(openapi_check.violations)} mismatches; "
        f"{st['seconds']:.2f} s of CPU"
    )
