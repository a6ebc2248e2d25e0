/*
 * Unit tests of db/conn.c: one connection's states as its owner sees them
 * through the ops table. A failing connect needs no server; the rest talks
 * to a real PostgreSQL when CHATD_TEST_PG holds a conninfo, else is skipped.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test_pg.h"

#include "db/conn.c"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_MOVES 64

typedef struct owner {
    int nmoves;
    chat_db_conn_state_t from[MAX_MOVES], to[MAX_MOVES];
    int finished;
    chat_err_t status;
    int sent;
    char text[64]; /* first column of the last result */
    int error;     /* a statement failed */
    int settled;
    int closed;
} owner_t;

static void moved(chat_db_conn_t *c, chat_db_conn_state_t from)
{
    owner_t *o = c->data;
    assert_true(o->nmoves < MAX_MOVES);
    o->from[o->nmoves] = from;
    o->to[o->nmoves] = c->state;
    o->nmoves++;
}

static void finished(chat_db_conn_t *c, chat_err_t status, PGresult **res, PGresult *error,
                     int sent, const char *detail)
{
    owner_t *o = c->data;
    o->finished++;
    o->status = status;
    o->sent = sent;
    o->error = error != NULL;
    o->text[0] = '\0';
    if (status == CHAT_EOK) {
        for (int i = 0; i < CHAT_DB_MAX_STMTS && res[i]; i++) {
            if (PQresultStatus(res[i]) == PGRES_TUPLES_OK && PQntuples(res[i]) > 0)
                snprintf(o->text, sizeof o->text, "%s", PQgetvalue(res[i], 0, 0));
            PQclear(res[i]); /* the owner's now */
        }
    }
}

static void settled(chat_db_conn_t *c)
{
    ((owner_t *)c->data)->settled++;
}

static void conn_closed(chat_db_conn_t *c)
{
    ((owner_t *)c->data)->closed++;
}

static const chat_db_conn_ops_t ops = {.moved = moved, .finished = finished, .settled = settled};

static void guard_cb(uv_timer_t *t)
{
    *(int *)t->data = 1;
}

/* Runs the loop until *flag >= want or ms pass (a bound, not a wait). */
static int run_until(uv_loop_t *loop, const int *flag, int want, int ms)
{
    uv_timer_t guard;
    int expired = 0;
    uv_timer_init(loop, &guard);
    guard.data = &expired;
    uv_timer_start(&guard, guard_cb, (uint64_t)ms, 0);
    while (*flag < want && !expired)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&guard, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return *flag >= want;
}

static int idle_count(const owner_t *o)
{
    int n = 0;
    for (int i = 0; i < o->nmoves; i++)
        n += o->to[i] == CHAT_DB_CONN_IDLE;
    return n;
}

static void test_connect_fails_then_closes(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    owner_t o = {0};
    chat_db_conn_config_t cfg = {
        .loop = &loop,
        .conninfo = "host=/nonexistent-chatd-test port=1",
        .path_name = "test",
        .connect_timeout_ms = 1000,
        .ops = &ops,
    };
    chat_db_conn_t c;
    chat_db_conn_init(&c, &cfg, 0, &o);
    assert_int_equal(c.state, CHAT_DB_CONN_BACKOFF);
    chat_db_conn_start(&c);
    /* A socket directory that does not exist fails inside PQconnectStart. */
    assert_int_equal(c.state, CHAT_DB_CONN_BACKOFF);
    assert_true(c.failed);
    assert_int_equal(o.nmoves, 2);
    assert_int_equal(o.to[0], CHAT_DB_CONN_CONNECTING);
    assert_int_equal(o.from[1], CHAT_DB_CONN_CONNECTING);
    assert_int_equal(o.to[1], CHAT_DB_CONN_BACKOFF);
    /* The back-off timer tries again, and fails again. */
    int moves = o.nmoves + 2;
    assert_true(run_until(&loop, &o.nmoves, moves, 2000));
    assert_int_equal(c.state, CHAT_DB_CONN_BACKOFF);
    assert_int_equal(o.finished, 0);
    chat_db_conn_close(&c, conn_closed);
    assert_int_equal(c.state, CHAT_DB_CONN_CLOSED);
    assert_int_equal(o.closed, 0); /* never from inside close */
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(o.closed, 1);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_real_server(void **state)
{
    const char *conninfo = test_pg_conninfo();
    if (!conninfo)
        skip();
    uv_loop_t loop;
    uv_loop_init(&loop);
    owner_t o = {0};
    chat_db_conn_config_t cfg = {
        .loop = &loop,
        .conninfo = conninfo,
        .path_name = "test",
        .connect_timeout_ms = 5000,
        .ops = &ops,
    };
    /* Looked up first when the conninfo names a host, as the pool does. */
    char *host = chat_db_resolve_host(conninfo);
    cfg.resolve_host = host;
    chat_db_conn_t c;
    chat_db_conn_init(&c, &cfg, 0, &o);
    chat_db_conn_start(&c);
    /* Each libuv callback on c ends in settled: step through them until IDLE. */
    for (int i = 0; i < 1000 && c.state != CHAT_DB_CONN_IDLE; i++)
        run_until(&loop, &o.settled, o.settled + 1, 100);
    assert_int_equal(c.state, CHAT_DB_CONN_IDLE);
    assert_false(c.failed);
    assert_true(chat_db_conn_is_up(c.state));
    assert_false(chat_db_conn_is_lent(c.state));
    assert_int_equal(idle_count(&o), 1);

    /* A pipeline of two statements: SENDING, READING, then IDLE with both results. */
    const char *params[] = {"7"};
    chat_db_stmt_t two[2] = {{"SELECT 1", 0, NULL}, {"SELECT ($1::int * 6)::text", 1, params}};
    chat_db_txn_t *txn = chat_db_txn_create(two, 2, 0);
    chat_db_conn_send(&c, txn);
    assert_true(chat_db_conn_is_lent(c.state));
    assert_true(run_until(&loop, &o.finished, 1, 5000));
    assert_int_equal(o.status, CHAT_EOK);
    assert_false(o.error);
    assert_string_equal(o.text, "42");
    assert_int_equal(c.state, CHAT_DB_CONN_IDLE);
    chat_db_txn_destroy(txn);

    /* A failing statement is a result, not a broken connection. */
    chat_db_stmt_t bad = {"SELECT 1/0", 0, NULL};
    txn = chat_db_txn_create(&bad, 1, 0);
    chat_db_conn_send(&c, txn);
    assert_true(run_until(&loop, &o.finished, 2, 5000));
    assert_int_equal(o.status, CHAT_EOK);
    assert_true(o.error);
    assert_int_equal(c.state, CHAT_DB_CONN_IDLE);
    chat_db_txn_destroy(txn);

    /* A close while lent waits for the transaction, which still reports. */
    chat_db_stmt_t slow = {"SELECT 'slow:' || (SELECT '' FROM pg_sleep(0.2))", 0, NULL};
    txn = chat_db_txn_create(&slow, 1, 0);
    chat_db_conn_send(&c, txn);
    chat_db_conn_close(&c, conn_closed);
    assert_true(chat_db_conn_is_lent(c.state));
    assert_true(run_until(&loop, &o.finished, 3, 5000));
    assert_int_equal(o.status, CHAT_EOK);
    assert_string_equal(o.text, "slow:");
    assert_int_equal(c.state, CHAT_DB_CONN_CLOSED);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(o.closed, 1);
    assert_int_equal(uv_loop_close(&loop), 0);
    chat_db_txn_destroy(txn);
    free(host);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect_fails_then_closes),
        cmocka_unit_test(test_real_server),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
