"""The schema upgrade of a database that today's chatd filled: a database
left at 002 (`chatd migrate --to 002_op_ids`) with 1,000,000 messages spread
over 1,000 conversations, interleaved in id order, is upgraded in place by
`chatd migrate`. Afterwards every conversation's messages carry seq 1..n in id
order, every message has exactly one "message" event with rev = seq, the
conversation counters match, read markers start at 0, and a second run
changes nothing."""

import subprocess
import time
import urllib.parse

import psycopg2
import pytest

from conftest import chatd_bin

DB = "chatd_upgrade"
MESSAGES = 1_000_000
CONVS = 1_000
USERS = 2_000


def dsn_for(stack, dbname):
    u = urllib.parse.urlsplit(stack.pg_admin_dsn)
    return urllib.parse.urlunsplit(u._replace(path="/" + dbname))


def migrate(url, *args):
    env = {"DATABASE_URL": url, "DATABASE_URL_DIRECT": url, "PATH": "/usr/bin:/bin"}
    p = subprocess.run([chatd_bin(), "migrate", *args], env=env, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    return p.stderr


@pytest.fixture(scope="module")
def old_db(stack):
    admin = psycopg2.connect(stack.pg_admin_dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {DB}")
        cur.execute(f"CREATE DATABASE {DB}")
    url = dsn_for(stack, DB)
    try:
        log = migrate(url, "--to", "002_op_ids")
        assert "version=002_op_ids" in log and "version=003" not in log
        yield url
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        admin.close()


def fill(url):
    """The shape chatd 002 writes: users, conversations with members and
    counters, messages whose ids interleave across conversations."""
    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM information_schema.columns "
                    "WHERE table_name = 'messages' AND column_name = 'seq'")
        assert cur.fetchone()[0] == 0, "the database must be at 002"
        cur.execute("INSERT INTO users (name) SELECT 'u' || g FROM generate_series(1, %s) g",
                    (USERS,))
        cur.execute("INSERT INTO conversations (title, created_by) "
                    "SELECT 'c' || g, 1 + g %% %s FROM generate_series(1, %s) g", (USERS, CONVS))
        cur.execute("INSERT INTO members (conversation_id, user_id) "
                    "SELECT c.id, 1 + (c.id + k) %% %s FROM conversations c, "
                    "generate_series(0, 1) k", (USERS,))
        cur.execute("UPDATE conversations c SET member_count = 2")
        # message i goes to conversation 1 + (i * 7919) % CONVS: ids interleave
        cur.execute("INSERT INTO messages (conversation_id, sender_id, body) "
                    "SELECT 1 + (g::bigint * 7919) %% %s, 1 + (1 + (g::bigint * 7919) %% %s) %% %s, 'm' || g "
                    "FROM generate_series(1, %s) g", (CONVS, CONVS, USERS, MESSAGES))
        cur.execute("UPDATE conversations c SET message_count = s.n, last_message_at = s.t "
                    "FROM (SELECT conversation_id, count(*) n, max(created_at) t "
                    "FROM messages GROUP BY conversation_id) s WHERE c.id = s.conversation_id")
    conn.close()


def test_upgrade_of_a_million_messages_in_place(old_db):
    fill(old_db)
    t = time.monotonic()
    log = migrate(old_db)
    took = time.monotonic() - t
    assert "version=003_chat_api" in log
    print(f"\nupgrade of {MESSAGES} messages: {took:.1f} s")

    conn = psycopg2.connect(old_db)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), count(seq) FROM messages")
        assert cur.fetchone() == (MESSAGES, MESSAGES)
        # seq is 1..n in id order in every conversation: no gap, no repeat
        cur.execute("SELECT count(*) FROM (SELECT seq, row_number() OVER "
                    "(PARTITION BY conversation_id ORDER BY id) AS want FROM messages) x "
                    "WHERE seq <> want")
        assert cur.fetchone()[0] == 0
        cur.execute("SELECT count(*) FROM conversations c WHERE last_seq <> message_count "
                    "OR rev <> last_seq OR last_seq <> (SELECT coalesce(max(seq), 0) "
                    "FROM messages m WHERE m.conversation_id = c.id)")
        assert cur.fetchone()[0] == 0
        # one "message" event per message, rev = seq
        cur.execute("SELECT count(*), count(*) FILTER (WHERE e.type = 1 AND e.rev = m.seq "
                    "AND e.conversation_id = m.conversation_id) FROM events e "
                    "JOIN messages m ON m.id = e.message_id")
        assert cur.fetchone() == (MESSAGES, MESSAGES)
        cur.execute("SELECT count(*) FROM messages WHERE deleted OR edited_at IS NOT NULL")
        assert cur.fetchone()[0] == 0
        cur.execute("SELECT count(*), count(*) FILTER (WHERE last_read_seq = 0) FROM members")
        n, zero = cur.fetchone()
        assert n == 2 * CONVS and zero == n
        # history by seq is an index range scan
        cur.execute("EXPLAIN SELECT * FROM messages WHERE conversation_id = 5 "
                    "ORDER BY seq DESC LIMIT 50")
        plan = "\n".join(r[0] for r in cur.fetchall())
        assert "messages_conversation_seq" in plan, plan
    conn.close()

    # a second run applies nothing
    assert "applied=0" in migrate(old_db)


def test_unknown_target_is_refused(stack):
    env = {"DATABASE_URL": stack.database_url_direct, "PATH": "/usr/bin:/bin"}
    p = subprocess.run([chatd_bin(), "migrate", "--to", "999_nope"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    assert "no migration named 999_nope" in p.stderr
