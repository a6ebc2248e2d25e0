/*
 * Unit tests of redis/client.c against a real redis-server that the tests
 * start as a child on a private port (26380-26399, redis_server.h), kill,
 * restart and pause. Every test ends with the client closed and
 * uv_loop_close() == 0. The URL rules and host resolution are tested in
 * test_redis_url.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "redis/client.c"

#include <sys/ioctl.h>

#include "redis_server.h"

static int g_in_call; /* set around chat_redis_command: a callback then is a bug */

/* ---- the loop ---- */

typedef struct env {
    uv_loop_t loop;
    uv_timer_t tick; /* keeps UV_RUN_ONCE from blocking forever */
    chat_redis_t *r;
    int close_called;
    int closed;
} env_t;

static void on_tick(uv_timer_t *t) {}

/* The client counts into the series it is given; these are the tests' own. */
static chat_metric_t *errors_series(void)
{
    return chat_metric_series(chat_metrics_counter("test_redis_errors_total", "test"), "");
}

static chat_metric_t *late_reads_series(void)
{
    return chat_metric_series(chat_metrics_counter("test_redis_late_reads_total", "test"), "");
}

static chat_redis_t *mkclient(env_t *e, int port, int db, int cmd_timeout_ms, int max_pending)
{
    char url[64], err[256];
    chat_redis_config_t cfg = {.url = url,
                               .cmd_timeout_ms = cmd_timeout_ms,
                               .connect_timeout_ms = 200,
                               .retry_interval_ms = 200,
                               .max_pending = max_pending,
                               .errors = errors_series(),
                               .late_reads = late_reads_series()};
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/%d", port, db);
    e->r = chat_redis_create(&e->loop, &cfg, err, sizeof err);
    assert_non_null(e->r);
    return e->r;
}

static void env_init(env_t *e)
{
    memset(e, 0, sizeof *e);
    assert_int_equal(uv_loop_init(&e->loop), 0);
    uv_timer_init(&e->loop, &e->tick);
    uv_timer_start(&e->tick, on_tick, 5, 5);
}

typedef int (*pred_fn)(void *arg);

/* Runs the loop until pred(arg) holds or ms pass; returns pred(arg). */
static int run_until(env_t *e, pred_fn pred, void *arg, int ms)
{
    uint64_t t0 = uv_hrtime();
    while (!(pred && pred(arg)) && ms_since(t0) < ms)
        uv_run(&e->loop, UV_RUN_ONCE);
    return pred && pred(arg);
}

static int is_healthy(void *arg)
{
    return chat_redis_healthy(arg);
}

static void on_closed(void *arg)
{
    ((env_t *)arg)->closed++;
}

static void close_client(env_t *e)
{
    e->close_called = 1;
    chat_redis_close(e->r, on_closed, e);
}

/* Closes the client (if still open) and the loop; both must end cleanly. */
static void env_done(env_t *e)
{
    if (e->r && !e->close_called)
        chat_redis_close(e->r, on_closed, e);
    uv_close((uv_handle_t *)&e->tick, NULL);
    assert_int_equal(uv_run(&e->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(e->closed, 1);
    assert_int_equal(uv_loop_close(&e->loop), 0);
}

/* ---- recording callbacks ---- */

typedef struct rec {
    int calls;
    int status;
    int type;
    long long integer;
    char str[64];
    uint64_t t_sent, t_done;
    int *order; /* optional: appends idx here on completion */
    int *norder;
    int idx;
} rec_t;

static void rec_cb(chat_err_t status, struct redisReply *reply, void *arg)
{
    rec_t *x = arg;
    assert_false(g_in_call);
    x->calls++;
    x->status = status;
    x->t_done = uv_hrtime();
    x->type = reply ? reply->type : -1;
    if (reply && reply->type == REDIS_REPLY_INTEGER)
        x->integer = reply->integer;
    if (reply && reply->str)
        snprintf(x->str, sizeof x->str, "%.*s", (int)reply->len, reply->str);
    if (x->order)
        x->order[(*x->norder)++] = x->idx;
    if (status != CHAT_EOK)
        assert_true(status == CHAT_EREPLY ? reply != NULL : reply == NULL);
}

static int cmd(chat_redis_t *r, rec_t *x, int argc, const char **argv)
{
    int rc;
    if (x) {
        memset(x, 0, sizeof *x);
        x->t_sent = uv_hrtime();
    }
    g_in_call = 1;
    rc = chat_redis_command(r, x ? rec_cb : NULL, x, argc, argv, NULL);
    g_in_call = 0;
    return rc;
}

static int rec_done(void *arg)
{
    return ((rec_t *)arg)->calls > 0;
}

typedef struct many {
    rec_t *v;
    int n;
} many_t;

static int all_done(void *arg)
{
    many_t *m = arg;
    for (int i = 0; i < m->n; i++)
        if (m->v[i].calls == 0)
            return 0;
    return 1;
}

/* Runs one command to completion; returns its record. */
static rec_t run_cmd(env_t *e, int argc, const char **argv)
{
    rec_t x;
    assert_int_equal(cmd(e->r, &x, argc, argv), CHAT_EOK);
    assert_true(run_until(e, rec_done, &x, 3000));
    return x;
}

static double errors_total(void)
{
    return chat_metric_value(errors_series());
}

static double late_reads_total(void)
{
    return chat_metric_value(late_reads_series());
}

/* Keeps the loop from running for ms, as a worker busy with other clients
 * does; returns early only once until(arg) holds as well (until may be NULL). */
static void block_loop(int ms, pred_fn until, void *arg)
{
    uint64_t t0 = uv_hrtime();
    while (ms_since(t0) < ms || (until && !until(arg) && ms_since(t0) < 5000))
        ;
}

/* Bytes waiting unread in the client's socket. */
static int unread_bytes(chat_redis_t *r)
{
    int n = 0;
    assert_non_null(r->ac);
    assert_int_equal(ioctl(r->ac->c.fd, FIONREAD, &n), 0);
    return n;
}

typedef struct unread {
    chat_redis_t *r;
    int want;
} unread_t;

static int unread_at_least(void *arg)
{
    unread_t *u = arg;
    return unread_bytes(u->r) >= u->want;
}

/* ---- tests ---- */

static void test_set_get(void **state)
{
    env_t e;
    rec_t x;
    const char *set[] = {"SET", "t:k", "hello"};
    const char *get[] = {"GET", "t:k"};
    const char *bad[] = {"NOSUCHCOMMAND"};
    const char *nokey[] = {"GET", "t:missing"};

    env_init(&e);
    mkclient(&e, g_port, 0, 1000, 0);
    assert_false(chat_redis_healthy(e.r));
    assert_true(run_until(&e, is_healthy, e.r, 5000));

    x = run_cmd(&e, 3, set);
    assert_int_equal(x.status, CHAT_EOK);
    assert_string_equal(x.str, "OK");
    x = run_cmd(&e, 2, get);
    assert_int_equal(x.status, CHAT_EOK);
    assert_int_equal(x.type, REDIS_REPLY_STRING);
    assert_string_equal(x.str, "hello");
    x = run_cmd(&e, 2, nokey);
    assert_int_equal(x.status, CHAT_EOK);
    assert_int_equal(x.type, REDIS_REPLY_NIL);

    double before = errors_total();
    x = run_cmd(&e, 1, bad);
    assert_int_equal(x.status, CHAT_EREPLY);
    assert_int_equal(x.type, REDIS_REPLY_ERROR);
    assert_true(errors_total() == before + 1);

    /* fire and forget */
    assert_int_equal(cmd(e.r, NULL, 3, set), CHAT_EOK);
    x = run_cmd(&e, 2, get);
    assert_string_equal(x.str, "hello");
    assert_int_equal(chat_redis_pending(e.r), 0);
    env_done(&e);
}

static void test_select_db(void **state)
{
    env_t e;
    rec_t x;
    const char *set[] = {"SET", "t:db", "three"};
    redisContext *c;
    redisReply *rep;

    env_init(&e);
    mkclient(&e, g_port, 3, 1000, 0);
    assert_true(run_until(&e, is_healthy, e.r, 5000));
    x = run_cmd(&e, 3, set);
    assert_int_equal(x.status, CHAT_EOK);
    env_done(&e);

    c = redisConnect("127.0.0.1", g_port);
    assert_true(c && !c->err);
    rep = redisCommand(c, "EXISTS t:db");
    assert_int_equal(rep->integer, 0); /* not in db 0 */
    freeReplyObject(rep);
    freeReplyObject(redisCommand(c, "SELECT 3"));
    rep = redisCommand(c, "GET t:db");
    assert_int_equal(rep->type, REDIS_REPLY_STRING);
    assert_string_equal(rep->str, "three");
    freeReplyObject(rep);
    redisFree(c);
}

#define NINCR 1000

static void test_pipeline(void **state)
{
    env_t e;
    rec_t *v = calloc(NINCR, sizeof *v);
    int *order = calloc(NINCR, sizeof *order);
    int norder = 0;
    many_t m = {v, NINCR};
    const char *del[] = {"DEL", "t:incr"};
    const char *incr[] = {"INCR", "t:incr"};

    env_init(&e);
    mkclient(&e, g_port, 0, 2000, 0);
    assert_true(run_until(&e, is_healthy, e.r, 5000));
    run_cmd(&e, 2, del);
    for (int i = 0; i < NINCR; i++) {
        assert_int_equal(cmd(e.r, &v[i], 2, incr), CHAT_EOK);
        v[i].order = order;
        v[i].norder = &norder;
        v[i].idx = i;
    }
    assert_int_equal(chat_redis_pending(e.r), NINCR);
    assert_true(run_until(&e, all_done, &m, 5000));
    assert_int_equal(norder, NINCR);
    for (int i = 0; i < NINCR; i++) {
        assert_int_equal(v[i].calls, 1);
        assert_int_equal(v[i].status, CHAT_EOK);
        assert_int_equal(v[i].integer, i + 1);
        assert_int_equal(order[i], i);
    }
    assert_int_equal(chat_redis_pending(e.r), 0);
    env_done(&e);
    free(v);
    free(order);
}

static void test_max_pending(void **state)
{
    env_t e;
    rec_t v[4];
    many_t m = {v, 3};
    const char *get[] = {"GET", "t:k"};

    env_init(&e);
    mkclient(&e, g_port, 0, 1000, 3);
    assert_true(run_until(&e, is_healthy, e.r, 5000));
    for (int i = 0; i < 3; i++)
        assert_int_equal(cmd(e.r, &v[i], 2, get), CHAT_EOK);
    assert_int_equal(cmd(e.r, &v[3], 2, get), CHAT_EDOWN);
    assert_true(run_until(&e, all_done, &m, 3000));
    assert_int_equal(v[3].calls, 0);
    assert_int_equal(cmd(e.r, &v[3], 2, get), CHAT_EOK);
    assert_true(run_until(&e, rec_done, &v[3], 3000));
    env_done(&e);
}

static void test_down_is_fast(void **state)
{
    env_t e;
    rec_t x;
    const char *get[] = {"GET", "t:k"};
    double before = errors_total();

    env_init(&e);
    mkclient(&e, dead_port(), 0, 50, 0);
    for (int round = 0; round < 2; round++) {
        uint64_t t0 = uv_hrtime();
        assert_int_equal(cmd(e.r, &x, 2, get), CHAT_EDOWN);
        assert_true(ms_since(t0) < 5);
        assert_int_equal(x.calls, 0);
        assert_int_equal(chat_redis_pending(e.r), 0);
        assert_int_equal(e.r->nlive, 0);
        assert_false(chat_redis_healthy(e.r));
        /* let a few probes fail in the background */
        run_until(&e, NULL, NULL, 500);
        /* between probes, or a probe on its way to being refused */
        assert_true(e.r->state == ST_DOWN || e.r->state == ST_CONNECTING);
    }
    assert_int_equal(x.calls, 0);
    assert_true(errors_total() >= before + 2);
    env_done(&e);
}

#define NKILL 11

static void test_kill_and_restart(void **state)
{
    env_t e;
    rec_t v[NKILL], x;
    many_t m = {v, NKILL};
    const char *blpop[] = {"BLPOP", "t:nolist", "0"};
    const char *get[] = {"GET", "t:k"};
    const char *set[] = {"SET", "t:k", "again"};
    uint64_t t0;

    env_init(&e);
    mkclient(&e, g_port, 0, 3000, 0);
    assert_true(run_until(&e, is_healthy, e.r, 5000));
    /* BLPOP holds the connection, so everything behind it is in flight. */
    assert_int_equal(cmd(e.r, &v[0], 3, blpop), CHAT_EOK);
    for (int i = 1; i < NKILL; i++)
        assert_int_equal(cmd(e.r, &v[i], 2, get), CHAT_EOK);
    run_until(&e, NULL, NULL, 100);
    assert_int_equal(v[0].calls, 0);
    server_kill();
    assert_true(run_until(&e, all_done, &m, 2000));
    for (int i = 0; i < NKILL; i++) {
        assert_int_equal(v[i].calls, 1);
        assert_int_equal(v[i].status, CHAT_ECONNLOST);
    }
    assert_false(chat_redis_healthy(e.r));
    assert_int_equal(cmd(e.r, &x, 2, get), CHAT_EDOWN);
    run_until(&e, NULL, NULL, 700); /* several failed probes, logged once */
    assert_false(chat_redis_healthy(e.r));

    assert_int_equal(server_start(g_port), 0);
    t0 = uv_hrtime();
    assert_true(run_until(&e, is_healthy, e.r, 5000));
    assert_true(ms_since(t0) < 5000);
    x = run_cmd(&e, 3, set);
    assert_int_equal(x.status, CHAT_EOK);
    x = run_cmd(&e, 2, get);
    assert_string_equal(x.str, "again");
    run_until(&e, NULL, NULL, 50);
    for (int i = 0; i < NKILL; i++)
        assert_int_equal(v[i].calls, 1);
    env_done(&e);
}

#define NBURST 30

static void test_pause(void **state)
{
    env_t e;
    rec_t v[NBURST], x;
    many_t m = {v, NBURST};
    const char *get[] = {"GET", "t:k"};
    redisContext *c;
    redisReply *rep;
    uint64_t t_pause, t0;
    const int timeout_ms = 50;

    env_init(&e);
    mkclient(&e, g_port, 0, timeout_ms, 0);
    assert_true(run_until(&e, is_healthy, e.r, 5000));

    c = redisConnect("127.0.0.1", g_port);
    assert_true(c && !c->err);
    rep = redisCommand(c, "CLIENT PAUSE 2000");
    assert_non_null(rep);
    assert_int_equal(rep->type, REDIS_REPLY_STATUS);
    freeReplyObject(rep);
    redisFree(c);
    t_pause = uv_hrtime();

    /* One by one: each costs one deadline, no more. */
    for (int i = 0; i < 5; i++) {
        assert_int_equal(cmd(e.r, &x, 2, get), CHAT_EOK);
        assert_true(run_until(&e, rec_done, &x, 2000));
        assert_int_equal(x.status, CHAT_ETIMEDOUT);
        double took = (double)(x.t_done - x.t_sent) / 1e6;
        assert_true(took >= timeout_ms / 2);
        assert_true(took < 10 * timeout_ms);
    }
    assert_true(chat_redis_healthy(e.r));
    /* A burst past the consecutive-timeout limit trips the breaker. */
    for (int i = 0; i < NBURST; i++)
        assert_int_equal(cmd(e.r, &v[i], 2, get), CHAT_EOK);
    assert_true(run_until(&e, all_done, &m, 2000));
    for (int i = 0; i < NBURST; i++) {
        assert_int_equal(v[i].calls, 1);
        assert_int_equal(v[i].status, CHAT_ETIMEDOUT);
        assert_true((double)(v[i].t_done - v[i].t_sent) / 1e6 < 10 * timeout_ms);
    }
    assert_false(chat_redis_healthy(e.r));
    t0 = uv_hrtime();
    assert_int_equal(cmd(e.r, &x, 2, get), CHAT_EDOWN);
    assert_true(ms_since(t0) < 5);
    assert_int_equal(chat_redis_pending(e.r), 0);

    /* Recovers by itself once the pause ends. */
    assert_true(run_until(&e, is_healthy, e.r, 5000));
    assert_true(ms_since(t_pause) > 1500);
    x = run_cmd(&e, 2, get);
    assert_int_equal(x.status, CHAT_EOK);
    run_until(&e, NULL, NULL, 50);
    for (int i = 0; i < NBURST; i++)
        assert_int_equal(v[i].calls, 1);
    env_done(&e);
}

/* A short pause: a few timeouts, below the trip limit; the late replies
 * arrive afterwards and are dropped, the connection stays up. */
static void test_late_replies(void **state)
{
    env_t e;
    rec_t v[3], x;
    const char *get[] = {"GET", "t:k"};
    redisContext *c;
    redisReply *rep;

    env_init(&e);
    mkclient(&e, g_port, 0, 50, 0);
    assert_true(run_until(&e, is_healthy, e.r, 5000));
    c = redisConnect("127.0.0.1", g_port);
    assert_true(c && !c->err);
    rep = redisCommand(c, "CLIENT PAUSE 300");
    assert_non_null(rep);
    freeReplyObject(rep);
    redisFree(c);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(cmd(e.r, &v[i], 2, get), CHAT_EOK);
        assert_true(run_until(&e, rec_done, &v[i], 2000));
        assert_int_equal(v[i].status, CHAT_ETIMEDOUT);
    }
    assert_int_equal(e.r->nlive, 3); /* the late replies are still owed by hiredis */
    run_until(&e, NULL, NULL, 400);
    assert_int_equal(e.r->nlive, 0);
    assert_true(chat_redis_healthy(e.r));
    x = run_cmd(&e, 2, get);
    assert_int_equal(x.status, CHAT_EOK);
    for (int i = 0; i < 3; i++)
        assert_int_equal(v[i].calls, 1);
    env_done(&e);
}

/* A handshake that fails (SELECT of a db the server lacks) keeps the circuit
 * open; the connection is dropped from inside hiredis's callback, deferred. */
static void test_handshake_error(void **state)
{
    env_t e;
    rec_t x;
    const char *get[] = {"GET", "t:k"};

    env_init(&e);
    mkclient(&e, g_port, 100, 50, 0);
    run_until(&e, NULL, NULL, 700);
    assert_false(chat_redis_healthy(e.r));
    assert_int_equal(cmd(e.r, &x, 2, get), CHAT_EDOWN);
    env_done(&e);
}

#define NCLOSE 6

static void test_close_pending(void **state)
{
    env_t e;
    rec_t v[NCLOSE], x;
    const char *blpop[] = {"BLPOP", "t:nolist", "0"};
    const char *get[] = {"GET", "t:k"};

    env_init(&e);
    mkclient(&e, g_port, 0, 3000, 0);
    assert_true(run_until(&e, is_healthy, e.r, 5000));
    assert_int_equal(cmd(e.r, &v[0], 3, blpop), CHAT_EOK);
    for (int i = 1; i < NCLOSE; i++)
        assert_int_equal(cmd(e.r, &v[i], 2, get), CHAT_EOK);
    run_until(&e, NULL, NULL, 50);
    close_client(&e);
    for (int i = 0; i < NCLOSE; i++) {
        assert_int_equal(v[i].calls, 1);
        assert_int_equal(v[i].status, CHAT_ECLOSED);
    }
    assert_int_equal(cmd(e.r, &x, 2, get), CHAT_EDOWN);
    assert_int_equal(e.closed, 0); /* the close callback comes later */
    env_done(&e);
}

/* Closing from inside a reply callback: the rest get ERR_CLOSED, hiredis's
 * context is freed on a later iteration, nothing runs twice. */
typedef struct closer {
    env_t *e;
    rec_t *rest;
    int n;
    int calls;
} closer_t;

static void close_in_cb(chat_err_t status, struct redisReply *reply, void *arg)
{
    closer_t *cl = arg;
    cl->calls++;
    assert_int_equal(status, CHAT_EOK);
    close_client(cl->e);
    for (int i = 0; i < cl->n; i++) {
        assert_int_equal(cl->rest[i].calls, 1);
        assert_int_equal(cl->rest[i].status, CHAT_ECLOSED);
    }
}

static int closer_done(void *arg)
{
    return ((closer_t *)arg)->calls > 0;
}

static void test_close_in_callback(void **state)
{
    env_t e;
    rec_t v[5];
    closer_t cl = {&e, v, 5, 0};
    const char *get[] = {"GET", "t:k"};

    env_init(&e);
    mkclient(&e, g_port, 0, 3000, 0);
    assert_true(run_until(&e, is_healthy, e.r, 5000));
    assert_int_equal(chat_redis_command(e.r, close_in_cb, &cl, 2, get, NULL), CHAT_EOK);
    for (int i = 0; i < 5; i++)
        assert_int_equal(cmd(e.r, &v[i], 2, get), CHAT_EOK);
    assert_true(run_until(&e, closer_done, &cl, 3000));
    for (int i = 0; i < 5; i++)
        assert_int_equal(v[i].calls, 1);
    env_done(&e);
    assert_int_equal(cl.calls, 1);
}

/* A worker busy for three deadlines right after queuing commands: libuv
 * runs the deadline timer before it polls, so the commands are still in
 * hiredis's buffer when the timer fires. Redis was never late: no timeouts,
 * no trip. */
#define NBUSY (2 * CHAT_REDIS_MAX_CONSECUTIVE_TIMEOUTS + 10)

static void test_busy_loop_commands_not_sent_yet(void **state)
{
    env_t e;
    rec_t v[NBUSY];
    many_t m = {v, NBUSY};
    const char *get[] = {"GET", "t:k"};
    const int timeout_ms = 50;

    env_init(&e);
    mkclient(&e, g_port, 0, timeout_ms, 0);
    assert_true(run_until(&e, is_healthy, e.r, 5000));
    double errors = errors_total();
    for (int i = 0; i < NBUSY; i++)
        assert_int_equal(cmd(e.r, &v[i], 2, get), CHAT_EOK);
    block_loop(3 * timeout_ms, NULL, NULL);
    assert_true(run_until(&e, all_done, &m, 3000));
    for (int i = 0; i < NBUSY; i++) {
        assert_int_equal(v[i].calls, 1);
        assert_int_equal(v[i].status, CHAT_EOK);
    }
    assert_true(chat_redis_healthy(e.r));
    assert_int_equal(e.r->consecutive_timeouts, 0);
    assert_true(errors_total() == errors);
    env_done(&e);
}

/* The commands went out and Redis answered at once, more than hiredis reads
 * in one go (16 KiB), while the worker was busy for three deadlines: every
 * reply waiting in the socket is read before anybody is judged late. */
#define NBIG 40
#define BIG_LEN 1000

static void test_busy_loop_replies_waiting(void **state)
{
    env_t e;
    rec_t v[NBIG], x;
    many_t m = {v, NBIG};
    static char big[BIG_LEN + 1];
    const char *set[] = {"SET", "t:big", big};
    const char *get[] = {"GET", "t:big"};
    const int timeout_ms = 50;

    memset(big, 'b', BIG_LEN);
    env_init(&e);
    mkclient(&e, g_port, 0, timeout_ms, 0);
    assert_true(run_until(&e, is_healthy, e.r, 5000));
    x = run_cmd(&e, 3, set);
    assert_int_equal(x.status, CHAT_EOK);
    double errors = errors_total(), late = late_reads_total();

    for (int i = 0; i < NBIG; i++)
        assert_int_equal(cmd(e.r, &v[i], 2, get), CHAT_EOK);
    flush(e.r); /* written now, as the loop would before it polls, and nothing read yet */
    assert_null(e.r->unsent);
    unread_t u = {e.r, NBIG * (BIG_LEN + 7)}; /* "$1000\r\n" ... "\r\n" */
    assert_true(u.want > 16 * 1024);
    block_loop(3 * timeout_ms, unread_at_least, &u);
    assert_true(unread_at_least(&u));

    assert_true(run_until(&e, all_done, &m, 3000));
    for (int i = 0; i < NBIG; i++) {
        assert_int_equal(v[i].calls, 1);
        assert_int_equal(v[i].status, CHAT_EOK);
        assert_int_equal(strlen(v[i].str), sizeof v[i].str - 1); /* truncated copy of big */
    }
    assert_true(chat_redis_healthy(e.r));
    assert_true(errors_total() == errors);
    assert_true(late_reads_total() >= late + NBIG);
    env_done(&e);
}

static int socket_readable(void *arg)
{
    chat_redis_t *r = arg;
    return r->ac && readable(r->ac->c.fd);
}

/* Brings the connect or handshake deadline to within ms from now. */
static void conn_deadline_in(chat_redis_t *r, int ms)
{
    r->conn_deadline = now_ms() + (uint64_t)ms;
    uv_timer_start(&r->conn_timer, on_conn_timer, (uint64_t)ms, 0);
}

/* A loop busy past the connect deadline, then one busy past the handshake
 * deadline, while Redis had answered each in time: neither is judged late
 * (no redis_down, no reconnect, which would wait retry_interval_ms = 200),
 * and a first connect has the longer window. */
static void test_busy_loop_at_connect(void **state)
{
    env_t e;
    env_init(&e);
    mkclient(&e, g_port, 0, 50, 0);
    assert_int_equal(e.r->first_connect_timeout_ms, CHAT_REDIS_FIRST_CONNECT_FACTOR * 200);
    assert_int_equal(e.r->state, ST_CONNECTING);
    conn_deadline_in(e.r, 20);
    block_loop(300, NULL, NULL); /* the connect completes meanwhile, unseen */
    assert_true(run_until(&e, is_healthy, e.r, 100));
    assert_int_equal(e.r->down_logged, 0);
    assert_true(e.r->ever_up);
    env_done(&e);

    env_init(&e);
    mkclient(&e, g_port, 0, 50, 0);
    block_loop(300, NULL, NULL);
    flush(e.r); /* the connect seen done, PING written: as the loop would */
    assert_int_equal(e.r->state, ST_HANDSHAKE);
    block_loop(50, socket_readable, e.r); /* PONG comes while the loop is busy */
    conn_deadline_in(e.r, 1);
    block_loop(300, NULL, NULL);
    assert_true(run_until(&e, is_healthy, e.r, 100));
    assert_int_equal(e.r->down_logged, 0);
    env_done(&e);
}

/* Redis really late (paused) while the loop is busy as well: the commands
 * still time out, after one chance to be written and answered. */
static void test_busy_loop_and_redis_paused(void **state)
{
    env_t e;
    rec_t v[5];
    many_t m = {v, 5};
    const char *get[] = {"GET", "t:k"};
    redisContext *c;
    const int timeout_ms = 50;

    env_init(&e);
    mkclient(&e, g_port, 0, timeout_ms, 0);
    assert_true(run_until(&e, is_healthy, e.r, 5000));
    c = redisConnect("127.0.0.1", g_port);
    assert_true(c && !c->err);
    freeReplyObject(redisCommand(c, "CLIENT PAUSE 400"));
    redisFree(c);
    for (int i = 0; i < 5; i++)
        assert_int_equal(cmd(e.r, &v[i], 2, get), CHAT_EOK);
    block_loop(3 * timeout_ms, NULL, NULL);
    assert_true(run_until(&e, all_done, &m, 2000));
    for (int i = 0; i < 5; i++) {
        assert_int_equal(v[i].status, CHAT_ETIMEDOUT);
        double took = (double)(v[i].t_done - v[i].t_sent) / 1e6;
        assert_true(took >= 3 * timeout_ms + timeout_ms / 2); /* blocked, then one deadline */
        assert_true(took < 3 * timeout_ms + 10 * timeout_ms);
    }
    run_until(&e, NULL, NULL, 500); /* the late replies come and are dropped */
    assert_int_equal(e.r->nlive, 0);
    assert_true(chat_redis_healthy(e.r));
    env_done(&e);
}

/* A tracked command past its deadline learns its real outcome later: the
 * late reply, or CHAT_ECLOSED when the client closes first. */
typedef struct late_rec {
    int calls;
    int status;
} late_rec_t;

typedef struct tracked {
    rec_t rec;
    late_rec_t late;
} tracked_t;

static void tracked_cb(chat_err_t status, struct redisReply *reply, void *arg)
{
    rec_cb(status, reply, &((tracked_t *)arg)->rec);
}

static void tracked_late_cb(chat_err_t status, void *arg)
{
    tracked_t *t = arg;
    assert_int_equal(t->rec.calls, 1);
    assert_int_equal(t->rec.status, CHAT_ETIMEDOUT);
    t->late.calls++;
    t->late.status = status;
}

static int late_done(void *arg)
{
    return ((tracked_t *)arg)->late.calls > 0;
}

static int tracked(chat_redis_t *r, tracked_t *t, int argc, const char **argv)
{
    memset(t, 0, sizeof *t);
    return chat_redis_command_tracked(r, tracked_cb, tracked_late_cb, t, argc, argv, NULL);
}

static void test_tracked_late_outcome(void **state)
{
    env_t e;
    tracked_t t, quick, lost;
    rec_t x;
    const char *set[] = {"SET", "t:tracked", "landed"};
    const char *set2[] = {"SET", "t:tracked", "lost"};
    const char *get[] = {"GET", "t:tracked"};

    env_init(&e);
    mkclient(&e, g_port, 0, 50, 0);
    assert_true(run_until(&e, is_healthy, e.r, 5000));

    /* in time: no late callback */
    assert_int_equal(tracked(e.r, &quick, 3, set), CHAT_EOK);
    assert_true(run_until(&e, rec_done, &quick.rec, 2000));
    assert_int_equal(quick.rec.status, CHAT_EOK);

    /* late but landed */
    pause_server(300);
    assert_int_equal(tracked(e.r, &t, 3, set), CHAT_EOK);
    assert_true(run_until(&e, rec_done, &t.rec, 2000));
    assert_int_equal(t.rec.status, CHAT_ETIMEDOUT);
    assert_int_equal(t.late.calls, 0);
    assert_true(run_until(&e, late_done, &t, 2000));
    assert_int_equal(t.late.calls, 1);
    assert_int_equal(t.late.status, CHAT_EOK);
    x = run_cmd(&e, 2, get);
    assert_string_equal(x.str, "landed");

    /* late, and the client closes before the reply */
    pause_server(300);
    assert_int_equal(tracked(e.r, &lost, 3, set2), CHAT_EOK);
    assert_true(run_until(&e, rec_done, &lost.rec, 2000));
    assert_int_equal(lost.rec.status, CHAT_ETIMEDOUT);
    assert_int_equal(lost.late.calls, 0);
    close_client(&e);
    env_done(&e);
    assert_int_equal(lost.late.calls, 1);
    assert_int_equal(lost.late.status, CHAT_ECLOSED);
    assert_int_equal(quick.late.calls, 0);
    assert_int_equal(t.late.calls, 1);
}

/* One command past its deadline and nothing behind it: no run of timeouts
 * builds up, yet a Redis that leaves it unanswered for the wedge time gets
 * its connection dropped; the late callback hears DISCONNECTED. */
static void test_lone_overdue_command_drops_wedged_connection(void **state)
{
    env_t e;
    tracked_t t;
    const char *get[] = {"GET", "t:k"};
    const int timeout_ms = 50;

    env_init(&e);
    mkclient(&e, g_port, 0, timeout_ms, 0);
    assert_true(run_until(&e, is_healthy, e.r, 5000));
    pause_server(2500);
    uint64_t t0 = uv_hrtime();
    assert_int_equal(tracked(e.r, &t, 2, get), CHAT_EOK);
    assert_true(run_until(&e, rec_done, &t.rec, 2000));
    assert_int_equal(t.rec.status, CHAT_ETIMEDOUT);
    assert_true(chat_redis_healthy(e.r));
    assert_true(run_until(&e, late_done, &t, 3000));
    assert_int_equal(t.late.status, CHAT_ECONNLOST);
    assert_false(chat_redis_healthy(e.r));
    double took = ms_since(t0);
    assert_true(took >= CHAT_REDIS_MAX_CONSECUTIVE_TIMEOUTS * timeout_ms - 5);
    assert_true(took < 2500);
    assert_true(run_until(&e, is_healthy, e.r, 5000)); /* back after the pause */
    env_done(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set_get),
        cmocka_unit_test(test_select_db),
        cmocka_unit_test(test_pipeline),
        cmocka_unit_test(test_max_pending),
        cmocka_unit_test(test_down_is_fast),
        cmocka_unit_test(test_late_replies),
        cmocka_unit_test(test_busy_loop_commands_not_sent_yet),
        cmocka_unit_test(test_busy_loop_replies_waiting),
        cmocka_unit_test(test_busy_loop_and_redis_paused),
        cmocka_unit_test(test_tracked_late_outcome),
        cmocka_unit_test(test_lone_overdue_command_drops_wedged_connection),
        cmocka_unit_test(test_handshake_error),
        cmocka_unit_test(test_busy_loop_at_connect),
        cmocka_unit_test(test_close_pending),
        cmocka_unit_test(test_close_in_callback),
        cmocka_unit_test(test_kill_and_restart),
        cmocka_unit_test(test_pause),
    };
    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
