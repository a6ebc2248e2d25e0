"""The test stack is the deployed configuration: PgBouncer in transaction mode
with SCRAM auth, PostgreSQL without trust, Redis as a bounded LRU cache."""

import re
import socket
import struct
import urllib.parse
from pathlib import Path

import psycopg2
import pytest
import redis

from conftest import REPO

# keys scripts/stack.sh may change in the runtime pgbouncer.ini (ports, paths)
STACK_KEYS = {"listen_port", "unix_socket_dir", "logfile", "pidfile", "auth_file"}


def _pgbouncer_show(stack, what):
    conn = psycopg2.connect(stack.pgbouncer_admin_dsn, connect_timeout=5)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f"SHOW {what}")
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, row)) for row in cur.fetchall()]
    finally:
        conn.close()


def _pid(path):
    return int(Path(path).read_text().split()[0])


def _nofile_soft(pid):
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open-files line")


def test_pgbouncer_config(stack_servers):
    cfg = {r["key"]: r["value"] for r in _pgbouncer_show(stack_servers, "CONFIG")}
    assert cfg["pool_mode"] == "transaction"
    assert cfg["default_pool_size"] == "20"
    assert cfg["max_client_conn"] == "10000"
    assert cfg["auth_type"] == "scram-sha-256"
    assert cfg["server_reset_query"] == ""
    assert cfg["query_wait_timeout"] == "120"
    assert cfg["listen_addr"] == "127.0.0.1"
    assert "chat_admin" in cfg["admin_users"]
    assert "extra_float_digits" in cfg["ignore_startup_parameters"]


def test_pgbouncer_database_points_at_stack_postgres(stack_servers):
    dbs = {r["name"]: r for r in _pgbouncer_show(stack_servers, "DATABASES")}
    assert dbs["chat"]["port"] == stack_servers.pg_port
    assert dbs["chat"]["host"] == "127.0.0.1"


def test_runtime_pgbouncer_ini_is_generated_from_deploy(stack_servers):
    deploy = (REPO / "deploy/pgbouncer/pgbouncer.ini").read_text().splitlines()
    runtime = (stack_servers.stack_dir / "pgbouncer/pgbouncer.ini").read_text().splitlines()
    header = [l for l in runtime if l.startswith(";; GENERATED") or l.startswith(";; sha256")]
    assert len(header) == 2, "runtime ini lacks the generated-by header"
    body = runtime[2:]
    assert len(body) == len(deploy)
    section = None
    for want, got in zip(deploy, body):
        if want.startswith("["):
            section = want.strip()
        key = want.split("=", 1)[0].strip()
        if section == "[pgbouncer]" and key in STACK_KEYS and not want.startswith(";"):
            assert got.split("=", 1)[0].strip() == key
        elif section == "[databases]" and re.match(r"^\w+\s*=", want):
            assert re.sub(r"port=\d+", "port=N", got) == re.sub(r"port=\d+", "port=N", want)
        else:
            assert got == want


def test_pgbouncer_auth_file_has_only_scram_verifiers(stack_servers):
    lines = [
        l for l in (stack_servers.stack_dir / "pgbouncer/userlist.txt").read_text().splitlines()
        if l.strip() and not l.startswith(";")
    ]
    assert lines
    for line in lines:
        assert re.fullmatch(r'"[^"]+" "SCRAM-SHA-256\$\d+:[^"]+"', line), line


def _connect_fails(dsn_parts, password, tmp_path):
    kw = dict(dsn_parts, connect_timeout=5, passfile=str(tmp_path / "no-passfile"))
    if password is not None:
        kw["password"] = password
    with pytest.raises(psycopg2.OperationalError) as ei:
        psycopg2.connect(**kw).close()
    return str(ei.value)


@pytest.mark.parametrize("via", ["pgbouncer", "direct"])
def test_auth_requires_the_password(stack_servers, via, tmp_path, monkeypatch):
    monkeypatch.delenv("PGPASSWORD", raising=False)
    url = stack_servers.database_url if via == "pgbouncer" else stack_servers.database_url_direct
    u = urllib.parse.urlsplit(url)
    parts = dict(host=u.hostname, port=u.port, user=u.username, dbname=u.path.lstrip("/"))
    err = _connect_fails(parts, None, tmp_path)
    assert "no password supplied" in err or "authentication failed" in err, err
    err = _connect_fails(parts, "wrong-password", tmp_path)
    assert "authentication failed" in err, err
    # and the right one works
    psycopg2.connect(url, connect_timeout=5).close()


def test_postgres_has_no_trust_and_scram_only(stack_servers):
    conn = psycopg2.connect(stack_servers.pg_admin_dsn, connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT DISTINCT auth_method FROM pg_hba_file_rules")
            assert {r[0] for r in cur.fetchall()} == {"scram-sha-256"}
            cur.execute("SHOW password_encryption")
            assert cur.fetchone()[0] == "scram-sha-256"
            cur.execute("SHOW max_connections")
            assert cur.fetchone()[0] == "200"
            cur.execute("SHOW listen_addresses")
            assert cur.fetchone()[0] == "127.0.0.1"
            cur.execute("SELECT rolname FROM pg_authid WHERE rolpassword NOT LIKE 'SCRAM-SHA-256$%'")
            assert cur.fetchall() == []
            cur.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'chat'")
            assert cur.fetchone()[0] == "chat"
    finally:
        conn.close()


def test_redis_is_a_bounded_lru_cache(stack_servers):
    r = redis.Redis.from_url(stack_servers.redis_url)
    try:
        cfg = r.config_get("*")
        assert int(cfg["maxmemory"]) == 512 * 1024 * 1024
        assert cfg["maxmemory-policy"] == "allkeys-lru"
        assert cfg["save"] == ""
        assert cfg["appendonly"] == "no"
        assert int(cfg["tcp-keepalive"]) > 0
        assert "127.0.0.1" in cfg["bind"]
    finally:
        r.close()


def test_servers_have_the_raised_fd_limit(stack_servers):
    d = stack_servers.stack_dir
    assert _nofile_soft(_pid(d / "run/pgbouncer.pid")) >= 10240
    assert _nofile_soft(_pid(d / "run/redis.pid")) >= 10240


def test_pgbouncer_takes_more_than_1024_clients(stack_servers):
    """1,500 clients at once each get PgBouncer's authentication request."""
    body = struct.pack("!I", 196608) + b"user\0chat\0database\0chat\0\0"
    startup = struct.pack("!I", len(body) + 4) + body
    socks = []
    try:
        for _ in range(1500):
            s = socket.create_connection(("127.0.0.1", stack_servers.pgbouncer_port), timeout=10)
            s.sendall(startup)
            socks.append(s)
        answered = sum(1 for s in socks if s.recv(1) == b"R")
        assert answered == len(socks)
    finally:
        for s in socks:
            s.close()
