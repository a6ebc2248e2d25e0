/*
 * Unit tests of db/pool.c (with db/conn.c under it). The queue, deadlines,
 * hand-over, retry and close logic run without a server: connections are put
 * in IDLE by hand and the send step is replaced. One test talks to a real
 * PostgreSQL when CHATD_TEST_PG holds a conninfo, and is skipped otherwise.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test_pg.h"

#include "db/conn.c"
#include "db/pool.c"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A socket directory that does not exist: every connect fails at once. */
#define NO_SERVER "host=/nonexistent-chatd-test port=1"

#define MAX_SEEN 32

typedef struct seen {
    int n;
    int order[MAX_SEEN]; /* the tag of each callback, in call order */
    int status[MAX_SEEN];
    double wait[MAX_SEEN];
    char sqlstate[MAX_SEEN][6];
    char text[MAX_SEEN][64]; /* first column of the last result, if any */
    int in_exec;             /* set around exec: a callback then is a bug */
    int closed;
} seen_t;

typedef struct tag {
    seen_t *seen;
    int id;
} tag_t;

static void record_cb(const chat_db_result_t *r, void *arg)
{
    tag_t *t = arg;
    seen_t *s = t->seen;
    assert_false(s->in_exec);
    assert_true(s->n < MAX_SEEN);
    s->order[s->n] = t->id;
    s->status[s->n] = r->status;
    s->wait[s->n] = r->queue_wait;
    s->sqlstate[s->n][0] = '\0';
    s->text[s->n][0] = '\0';
    if (r->sqlstate)
        snprintf(s->sqlstate[s->n], sizeof s->sqlstate[0], "%s", r->sqlstate);
    if (r->status == CHAT_EOK && r->nres > 0 && r->res[r->nres - 1] &&
        PQntuples(r->res[r->nres - 1]) > 0)
        snprintf(s->text[s->n], sizeof s->text[0], "%s", PQgetvalue(r->res[r->nres - 1], 0, 0));
    s->n++;
}

static void closed_cb(void *arg)
{
    ((seen_t *)arg)->closed = 1;
}

static void exec1(chat_db_pool_t *pool, seen_t *s, tag_t *t, const char *sql, int flags)
{
    chat_db_stmt_t st = {sql, 0, NULL};
    s->in_exec = 1;
    chat_db_pool_exec(pool, &st, 1, flags, record_cb, t);
    s->in_exec = 0;
}

/* ---- a pool without a server ---- */

static chat_db_conn_t *sent_on[MAX_SEEN];
static req_t *sent_tx[MAX_SEEN];
static int nsent;

/* Lends without a server: the connection stays SENDING until the test says. */
static void fake_send(chat_db_conn_t *c, const chat_db_txn_t *txn)
{
    chat_db_pool_t *pool = c->data;
    sent_on[nsent] = c;
    sent_tx[nsent] = pool->lent[c->id];
    assert_ptr_equal(sent_tx[nsent]->txn, txn);
    nsent++;
    c->_txn = txn;
    set_state(c, CHAT_DB_CONN_SENDING);
}

static chat_db_pool_t *fake_pool(uv_loop_t *loop, int size, int queue_timeout_ms)
{
    chat_db_pool_config_t cfg = {
        .conninfo = NO_SERVER,
        .size = size,
        .queue_timeout_ms = queue_timeout_ms,
        .connect_timeout_ms = 1000,
        .path_name = "test",
    };
    chat_db_pool_t *pool = pool_new(loop, &cfg);
    pool->send = fake_send;
    nsent = 0;
    return pool;
}

/* Pretends connection i is connected and idle (no PGconn behind it). */
static void fake_up(chat_db_pool_t *pool, int i)
{
    chat_db_conn_t *c = &pool->conns[i];
    uv_timer_stop(&c->_timer);
    set_state(c, CHAT_DB_CONN_IDLE);
    dispatch(pool);
}

/* Pretends the whole pipeline on c left (the Sync included). */
static void fake_sent(chat_db_conn_t *c)
{
    set_state(c, CHAT_DB_CONN_READING);
}

/* Pretends the Sync result of the transaction on c arrived. */
static void fake_finish(chat_db_conn_t *c)
{
    fake_sent(c);
    c->_expect = c->_txn->n;
    pipeline_done(c);
    conn_settled(c);
}

static void close_and_drain(uv_loop_t *loop, chat_db_pool_t *pool, seen_t *s)
{
    chat_db_pool_close(pool, closed_cb, s);
    assert_false(s->closed); /* never from inside close */
    uv_run(loop, UV_RUN_DEFAULT);
    assert_true(s->closed);
    assert_int_equal(uv_loop_close(loop), 0);
}

static chat_metric_t *gauge(const char *name)
{
    return chat_metric_series(chat_metrics_gauge(name, ""), "");
}

static chat_metric_t *counter(const char *name)
{
    return chat_metric_series(chat_metrics_counter(name, ""), "");
}

/* ---- the queue alone ---- */

static req_t *qtx(uint64_t deadline)
{
    req_t *r = req_new(NULL, NULL, NULL);
    r->deadline = deadline;
    return r;
}

static req_t *next_of(queue_t *q, req_t *r)
{
    return r->link.next == &q->head ? NULL : queue_req(r->link.next);
}

static void test_queue_fifo(void **state)
{
    queue_t q;
    queue_init(&q);
    req_t *a = qtx(10), *b = qtx(20), *c = qtx(30), *d = qtx(40);
    assert_null(queue_pop(&q));
    queue_push(&q, a);
    queue_push(&q, b);
    queue_push(&q, c);
    queue_push(&q, d);
    assert_int_equal(q.count, 4);
    queue_remove(&q, c); /* from the middle */
    assert_int_equal(q.count, 3);
    assert_ptr_equal(queue_pop(&q), a);
    assert_ptr_equal(queue_pop(&q), b);
    queue_remove(&q, d); /* the last one */
    assert_int_equal(q.count, 0);
    assert_null(queue_head(&q));
    assert_true(chat_list_empty(&q.head));
    queue_push(&q, c);
    assert_ptr_equal(queue_head(&q), c);
    assert_null(next_of(&q, c));
    assert_ptr_equal(queue_pop(&q), c);
    free(a), free(b), free(c), free(d);
}

static void test_queue_expiry_and_retry_order(void **state)
{
    queue_t q;
    queue_init(&q);
    req_t *a = qtx(100), *b = qtx(200), *c = qtx(300);
    queue_push(&q, a);
    queue_push(&q, b);
    queue_push(&q, c);
    assert_null(queue_pop_expired(&q, 99));
    assert_ptr_equal(queue_pop_expired(&q, 100), a);
    assert_null(queue_pop_expired(&q, 150));
    /* Retries go to the front, behind only older retries. */
    req_t *r1 = qtx(50), *r2 = qtx(70), *r3 = qtx(60);
    queue_push_retry(&q, r1);
    queue_push_retry(&q, r2);
    queue_push_retry(&q, r3);
    assert_ptr_equal(queue_head(&q), r1);
    assert_ptr_equal(next_of(&q, r1), r3);
    assert_ptr_equal(next_of(&q, r3), r2);
    assert_ptr_equal(next_of(&q, r2), b);
    /* Expiry takes them in deadline order, stopping at the first live one. */
    assert_ptr_equal(queue_pop_expired(&q, 250), r1);
    assert_ptr_equal(queue_pop_expired(&q, 250), r3);
    assert_ptr_equal(queue_pop_expired(&q, 250), r2);
    assert_ptr_equal(queue_pop_expired(&q, 250), b);
    assert_null(queue_pop_expired(&q, 250));
    assert_int_equal(q.count, 1);
    req_t *none = qtx(NO_DEADLINE);
    queue_push(&q, none);
    assert_ptr_equal(queue_pop_expired(&q, 1000), c);
    assert_null(queue_pop_expired(&q, UINT64_MAX - 1));
    assert_ptr_equal(queue_pop(&q), none);
    /* A retry behind every waiter goes to the tail. */
    req_t *late = qtx(500);
    queue_push(&q, a);
    queue_push_retry(&q, late);
    assert_ptr_equal(next_of(&q, a), late);
    assert_int_equal(q.count, 2);
    free(a), free(b), free(c), free(r1), free(r2), free(r3), free(none), free(late);
}

/* ---- a pool without a server ---- */

static void test_deadlines_time_out_in_order(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    seen_t s = {0};
    chat_metric_t *errors = counter("chatd_db_errors_total");
    double errors0 = chat_metric_value(errors);
    chat_db_pool_t *pool = fake_pool(&loop, 1, 30);
    /* Deadlines count from the loop's clock, as on a running worker: refresh it. */
    uv_update_time(&loop);
    tag_t t[3] = {{&s, 1}, {&s, 2}, {&s, 3}};
    for (int i = 0; i < 3; i++)
        exec1(pool, &s, &t[i], "SELECT 1", 0);
    assert_int_equal(s.n, 0);
    chat_db_pool_stats_t st;
    chat_db_pool_stats(pool, &st);
    assert_int_equal(st.waiting, 3);
    assert_int_equal(st.connected, 0);
    uv_run(&loop, UV_RUN_ONCE); /* the deadline timer is the only thing armed */
    while (s.n < 3)
        uv_run(&loop, UV_RUN_ONCE);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(s.order[i], i + 1);
        assert_int_equal(s.status[i], CHAT_ETIMEDOUT);
        assert_true(s.wait[i] >= 0.025);
    }
    assert_true(chat_metric_value(errors) - errors0 == 3);
    chat_db_pool_stats(pool, &st);
    assert_int_equal(st.waiting, 0);
    close_and_drain(&loop, pool, &s);
}

static void test_waiters_get_freed_connections_in_order(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    seen_t s = {0};
    chat_metric_t *active = gauge("chatd_db_pool_active");
    chat_metric_t *waiting = gauge("chatd_db_pool_waiting");
    chat_metric_t *size = gauge("chatd_db_pool_size");
    double size0 = chat_metric_value(size);
    chat_db_pool_t *pool = fake_pool(&loop, 2, 60000);
    assert_true(chat_metric_value(size) - size0 == 2);
    fake_up(pool, 0);
    fake_up(pool, 1);
    assert_true(chat_db_pool_healthy(pool));
    tag_t t[5] = {{&s, 1}, {&s, 2}, {&s, 3}, {&s, 4}, {&s, 5}};
    for (int i = 0; i < 5; i++)
        exec1(pool, &s, &t[i], "SELECT 1", 0);
    assert_int_equal(nsent, 2);
    chat_db_pool_stats_t st;
    chat_db_pool_stats(pool, &st);
    assert_int_equal(st.size, 2);
    assert_int_equal(st.connected, 2);
    assert_int_equal(st.active, 2);
    assert_int_equal(st.waiting, 3);
    assert_true(chat_metric_value(active) == 2);
    assert_true(chat_metric_value(waiting) == 3);

    /* The first connection freed goes to the oldest waiter, and so on. */
    chat_db_conn_t *c1 = sent_on[1];
    fake_finish(c1); /* tx 2 done: tx 3 gets c1 */
    assert_int_equal(nsent, 3);
    assert_ptr_equal(sent_on[2], c1);
    assert_ptr_equal(sent_tx[2]->arg, &t[2]);
    chat_db_conn_t *c0 = sent_on[0];
    fake_finish(c0); /* tx 1 done: tx 4 gets c0 */
    assert_ptr_equal(sent_on[3], c0);
    assert_ptr_equal(sent_tx[3]->arg, &t[3]);
    fake_finish(c0); /* tx 4 done: tx 5 gets c0 */
    assert_ptr_equal(sent_tx[4]->arg, &t[4]);
    fake_finish(c1);
    fake_finish(c0);
    assert_int_equal(s.n, 5);
    int want[5] = {2, 1, 4, 3, 5};
    for (int i = 0; i < 5; i++) {
        assert_int_equal(s.order[i], want[i]);
        assert_int_equal(s.status[i], CHAT_EOK);
    }
    chat_db_pool_stats(pool, &st);
    assert_int_equal(st.active, 0);
    assert_int_equal(st.waiting, 0);
    assert_int_equal(st.connected, 2);
    assert_true(chat_metric_value(active) == 0);
    assert_true(chat_metric_value(waiting) == 0);
    close_and_drain(&loop, pool, &s);
    assert_true(chat_metric_value(size) == size0);
}

static void test_retry_once(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    seen_t s = {0};
    chat_db_pool_t *pool = fake_pool(&loop, 2, 60000);
    fake_up(pool, 0);
    tag_t t[4] = {{&s, 1}, {&s, 2}, {&s, 3}, {&s, 4}};

    /* Not fully sent: re-queued at the head once, then it fails. */
    exec1(pool, &s, &t[0], "SELECT 1", 0);
    exec1(pool, &s, &t[1], "SELECT 2", 0);
    assert_int_equal(nsent, 1);
    req_t *tx = sent_tx[0];
    assert_int_equal(tx->state, REQ_LENT);
    assert_int_equal(sent_on[0]->state, CHAT_DB_CONN_SENDING);
    conn_broken(sent_on[0], "test");
    assert_int_equal(pool->conns[0].state, CHAT_DB_CONN_BACKOFF);
    assert_int_equal(tx->state, REQ_QUEUED);
    assert_int_equal(tx->retries, 1);
    assert_ptr_equal(queue_head(&pool->queue), tx);
    assert_int_equal(pool->queue.count, 2);
    fake_up(pool, 1);
    assert_int_equal(nsent, 2);
    assert_ptr_equal(sent_tx[1], tx);
    conn_broken(sent_on[1], "test");
    assert_int_equal(s.n, 1);
    assert_int_equal(s.order[0], 1);
    assert_int_equal(s.status[0], CHAT_ECONNLOST);

    /* Fully sent, without CHAT_DB_RETRY_SENT: fails at once. */
    fake_up(pool, 0);
    assert_int_equal(nsent, 3);
    assert_ptr_equal(sent_tx[2]->arg, &t[1]);
    fake_sent(sent_on[2]);
    conn_broken(sent_on[2], "test");
    assert_int_equal(s.n, 2);
    assert_int_equal(s.order[1], 2);
    assert_int_equal(s.status[1], CHAT_ECONNLOST);

    /* Fully sent, with CHAT_DB_RETRY_SENT: retried once, then succeeds. */
    fake_up(pool, 0);
    exec1(pool, &s, &t[2], "SELECT 3", CHAT_DB_RETRY_SENT);
    assert_int_equal(nsent, 4);
    fake_sent(sent_on[3]);
    conn_broken(sent_on[3], "test");
    assert_int_equal(s.n, 2);
    assert_int_equal(pool->queue.count, 1);
    fake_up(pool, 1);
    assert_int_equal(nsent, 5);
    fake_finish(sent_on[4]);
    assert_int_equal(s.n, 3);
    assert_int_equal(s.order[2], 3);
    assert_int_equal(s.status[2], CHAT_EOK);

    chat_db_pool_stats_t st;
    chat_db_pool_stats(pool, &st);
    assert_int_equal(st.connected, 1);
    assert_int_equal(st.active, 0);
    close_and_drain(&loop, pool, &s);
}

static void test_close_fails_waiters_and_finishes_in_flight(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    seen_t s = {0};
    chat_db_pool_t *pool = fake_pool(&loop, 1, 60000);
    fake_up(pool, 0);
    tag_t t[3] = {{&s, 1}, {&s, 2}, {&s, 3}};
    exec1(pool, &s, &t[0], "SELECT 1", 0);
    exec1(pool, &s, &t[1], "SELECT 2", 0);
    chat_db_pool_close(pool, closed_cb, &s);
    assert_int_equal(s.n, 0); /* never from inside close */
    exec1(pool, &s, &t[2], "SELECT 3", 0);
    assert_int_equal(s.n, 0);
    uv_run(&loop, UV_RUN_NOWAIT);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.order[0], 2);
    assert_int_equal(s.status[0], CHAT_ECLOSED);
    assert_int_equal(s.order[1], 3);
    assert_int_equal(s.status[1], CHAT_ECLOSED);
    assert_false(s.closed);
    assert_int_equal(pool->conns[0].state, CHAT_DB_CONN_SENDING);
    fake_finish(sent_on[0]);
    assert_int_equal(pool->conns[0].state, CHAT_DB_CONN_CLOSED);
    assert_int_equal(s.n, 3);
    assert_int_equal(s.order[2], 1);
    assert_int_equal(s.status[2], CHAT_EOK);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_true(s.closed);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_bad_statement_count_fails_later(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    seen_t s = {0};
    chat_db_pool_t *pool = fake_pool(&loop, 1, 60000);
    fake_up(pool, 0);
    tag_t t[2] = {{&s, 1}, {&s, 2}};
    chat_db_stmt_t st[CHAT_DB_MAX_STMTS + 1];
    for (int i = 0; i <= CHAT_DB_MAX_STMTS; i++)
        st[i] = (chat_db_stmt_t){"SELECT 1", 0, NULL};
    s.in_exec = 1;
    chat_db_pool_exec(pool, st, 0, 0, record_cb, &t[0]);
    chat_db_pool_exec(pool, st, CHAT_DB_MAX_STMTS + 1, 0, record_cb, &t[1]);
    s.in_exec = 0;
    assert_int_equal(nsent, 0);
    uv_run(&loop, UV_RUN_NOWAIT);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.status[0], CHAT_EINVAL);
    assert_int_equal(s.status[1], CHAT_EINVAL);
    assert_string_equal(s.sqlstate[0], "");
    close_and_drain(&loop, pool, &s);
}

static void stop_cb(uv_timer_t *t)
{
    *(int *)t->data = 1;
}

/* Runs the loop until *flag or ms pass; returns *flag. */
static int run_until(uv_loop_t *loop, int *flag, int ms)
{
    uv_timer_t guard;
    int expired = 0;
    uv_timer_init(loop, &guard);
    guard.data = &expired;
    uv_timer_start(&guard, stop_cb, (uint64_t)ms, 0);
    while (!*flag && !expired)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&guard, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return *flag;
}

static void test_no_server_fails_fast(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    seen_t s = {0};
    chat_db_pool_config_t cfg = {
        .conninfo = NO_SERVER,
        .size = 2,
        .queue_timeout_ms = 60000,
        .connect_timeout_ms = 1000,
        .path_name = "test",
    };
    chat_db_pool_t *pool = chat_db_pool_create(&loop, &cfg);
    tag_t t[2] = {{&s, 1}, {&s, 2}};
    exec1(pool, &s, &t[0], "SELECT 1", 0);
    exec1(pool, &s, &t[1], "SELECT 1", 0);
    assert_int_equal(s.n, 0);
    int two = 0;
    for (int i = 0; i < 100 && s.n < 2; i++)
        run_until(&loop, &two, 20);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.status[0], CHAT_EDOWN);
    assert_int_equal(s.status[1], CHAT_EDOWN);
    assert_false(chat_db_pool_healthy(pool));
    chat_db_pool_stats_t st;
    chat_db_pool_stats(pool, &st);
    assert_int_equal(st.connected, 0);
    assert_int_equal(st.waiting, 0);
    close_and_drain(&loop, pool, &s);
}

/* ---- against a real server (CHATD_TEST_PG) ---- */

static void exec_stmts(chat_db_pool_t *pool, seen_t *s, tag_t *t, const chat_db_stmt_t *st, int n,
                       int flags)
{
    s->in_exec = 1;
    chat_db_pool_exec(pool, st, n, flags, record_cb, t);
    s->in_exec = 0;
}

static int all_connected(chat_db_pool_t *pool, uv_loop_t *loop, int ms)
{
    chat_db_pool_stats_t st;
    int never = 0;
    for (int waited = 0; waited < ms; waited += 20) {
        chat_db_pool_stats(pool, &st);
        if (st.connected == st.size)
            return 1;
        run_until(loop, &never, 20);
    }
    return 0;
}

static void wait_for(uv_loop_t *loop, seen_t *s, int n, int ms)
{
    int never = 0;
    for (int waited = 0; waited < ms && s->n < n; waited += 10)
        run_until(loop, &never, 10);
    assert_int_equal(s->n, n);
}

/* Index in s of the callback of tag id, or -1. */
static int seen_index(const seen_t *s, int id)
{
    for (int i = 0; i < s->n; i++)
        if (s->order[i] == id)
            return i;
    return -1;
}

static void test_real_server(void **state)
{
    const char *conninfo = test_pg_conninfo();
    if (!conninfo)
        skip();
    uv_loop_t loop;
    uv_loop_init(&loop);
    seen_t s = {0};
    chat_db_pool_config_t cfg = {
        .conninfo = conninfo,
        .size = 2,
        .queue_timeout_ms = 10000,
        .connect_timeout_ms = 3000,
        .path_name = "test",
    };
    chat_db_pool_t *pool = chat_db_pool_create(&loop, &cfg);
    assert_true(all_connected(pool, &loop, 5000));
    assert_true(chat_db_pool_healthy(pool));
    tag_t t[8];
    for (int i = 0; i < 8; i++)
        t[i] = (tag_t){&s, i};

    /* A pipeline of three statements, parameters copied at submit. */
    char p[] = "41";
    const char *params[] = {p};
    chat_db_stmt_t ok[3] = {
        {"SELECT $1::int + 1", 1, params},
        {"SELECT 'x' || $1", 1, params},
        {"SELECT 'done'", 0, NULL},
    };
    exec_stmts(pool, &s, &t[0], ok, 3, 0);
    p[0] = '9';
    wait_for(&loop, &s, 1, 5000);
    assert_int_equal(s.status[0], CHAT_EOK);
    assert_string_equal(s.text[0], "done");

    /* The first error wins; the rest of the pipeline is aborted. */
    chat_db_stmt_t bad[3] = {{"SELECT 1", 0, NULL}, {"SELECT 1/0", 0, NULL}, {"SELECT 2", 0, NULL}};
    exec_stmts(pool, &s, &t[1], bad, 3, 0);
    wait_for(&loop, &s, 2, 5000);
    assert_int_equal(s.status[1], CHAT_EREPLY);
    assert_string_equal(s.sqlstate[1], "22012");

    /* One implicit transaction: the failed pipeline left nothing behind. */
    chat_db_stmt_t tmp[2] = {
        {"CREATE TEMP TABLE IF NOT EXISTS chatd_pool_t (x int)", 0, NULL},
        {"SELECT 1/0", 0, NULL},
    };
    exec_stmts(pool, &s, &t[2], tmp, 2, 0);
    wait_for(&loop, &s, 3, 5000);
    assert_int_equal(s.status[2], CHAT_EREPLY);

    /*
     * A read on a connection whose backend is killed mid-query is retried on
     * the other one (CHAT_DB_RETRY_SENT); the killed connection comes back.
     */
    chat_db_stmt_t slow = {"SELECT 'slow:' || (SELECT '' FROM pg_sleep(0.5))", 0, NULL};
    exec_stmts(pool, &s, &t[3], &slow, 1, CHAT_DB_RETRY_SENT);
    chat_db_stmt_t kill = {"SELECT count(pg_terminate_backend(pid))::text FROM pg_stat_activity "
                           "WHERE query LIKE 'SELECT ''slow:''%' AND pid <> pg_backend_pid()",
                           0, NULL};
    int never = 0;
    run_until(&loop, &never, 150);
    exec_stmts(pool, &s, &t[4], &kill, 1, 0);
    wait_for(&loop, &s, 5, 5000);
    int k = seen_index(&s, 4), v = seen_index(&s, 3);
    assert_int_equal(s.status[k], CHAT_EOK);
    assert_string_equal(s.text[k], "1");
    assert_int_equal(s.status[v], CHAT_EOK);
    assert_string_equal(s.text[v], "slow:");
    assert_true(all_connected(pool, &loop, 5000));

    /* Without the flag, a sent transaction on a killed connection fails. */
    exec_stmts(pool, &s, &t[5], &slow, 1, 0);
    run_until(&loop, &never, 150);
    exec_stmts(pool, &s, &t[6], &kill, 1, 0);
    wait_for(&loop, &s, 7, 5000);
    assert_int_equal(s.status[seen_index(&s, 6)], CHAT_EOK);
    assert_int_equal(s.status[seen_index(&s, 5)], CHAT_ECONNLOST);

    /* Idle connections killed under us are noticed and replaced. */
    assert_true(all_connected(pool, &loop, 5000));
    chat_db_stmt_t killall = {"SELECT count(pg_terminate_backend(pid))::text FROM pg_stat_activity "
                              "WHERE application_name = 'chatd' AND pid <> pg_backend_pid()",
                              0, NULL};
    exec_stmts(pool, &s, &t[7], &killall, 1, 0);
    wait_for(&loop, &s, 8, 5000);
    assert_int_equal(s.status[7], CHAT_EOK);
    run_until(&loop, &never, 50);
    assert_true(all_connected(pool, &loop, 5000));
    close_and_drain(&loop, pool, &s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_queue_fifo),
        cmocka_unit_test(test_queue_expiry_and_retry_order),
        cmocka_unit_test(test_deadlines_time_out_in_order),
        cmocka_unit_test(test_waiters_get_freed_connections_in_order),
        cmocka_unit_test(test_retry_once),
        cmocka_unit_test(test_close_fails_waiters_and_finishes_in_flight),
        cmocka_unit_test(test_bad_statement_count_fails_later),
        cmocka_unit_test(test_no_server_fails_fast),
        cmocka_unit_test(test_real_server),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
