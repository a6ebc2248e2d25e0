/*
 * Unit tests of db/path.c, the failover between the pooler and the direct
 * path, against real components: PostgreSQL from CHATD_TEST_PG (skipped
 * without it) as the direct path, and as the "pooler" a TCP proxy in front of
 * the same server, on this test's own loop, that can refuse connections and
 * cut the ones it carries. Every wait is for a condition, bounded by a guard.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test_pg.h"

#include "core/alloc.h"
#include "core/list.h"
#include "core/metrics.h"
#include "db/path.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- a TCP proxy on the loop ---- */

typedef struct proxy {
    uv_loop_t *loop;
    uv_tcp_t listener;
    int listening;
    int port;
    struct sockaddr_in target;
    chat_list_t links;
    int accepted;
} proxy_t;

/* One proxied connection: the client side and the server side. */
typedef struct link {
    chat_list_t node;
    proxy_t *p;
    uv_tcp_t client, server;
    uv_connect_t creq;
    int closing, closed;
} link_t;

typedef struct wreq {
    uv_write_t req;
    char data[];
} wreq_t;

static void link_closed_cb(uv_handle_t *h)
{
    link_t *l = h->data;
    if (++l->closed == 2)
        free(l);
}

static void link_cut(link_t *l)
{
    if (l->closing)
        return;
    l->closing = 1;
    chat_list_remove(&l->node);
    uv_close((uv_handle_t *)&l->client, link_closed_cb);
    uv_close((uv_handle_t *)&l->server, link_closed_cb);
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    buf->base = chat_malloc(65536);
    buf->len = 65536;
}

static void write_cb(uv_write_t *req, int status)
{
    free(req);
}

static void relay(link_t *l, uv_stream_t *from, ssize_t n, const uv_buf_t *buf)
{
    if (n < 0) {
        link_cut(l);
    } else if (n > 0 && !l->closing) {
        uv_stream_t *to = from == (uv_stream_t *)&l->client ? (uv_stream_t *)&l->server
                                                            : (uv_stream_t *)&l->client;
        wreq_t *w = chat_malloc(sizeof *w + (size_t)n);
        memcpy(w->data, buf->base, (size_t)n);
        uv_buf_t out = uv_buf_init(w->data, (unsigned)n);
        if (uv_write(&w->req, to, &out, 1, write_cb) != 0) {
            free(w);
            link_cut(l);
        }
    }
    free(buf->base);
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    relay(s->data, s, n, buf);
}

static void connected_cb(uv_connect_t *req, int status)
{
    link_t *l = req->data;
    if (l->closing)
        return;
    if (status != 0) {
        link_cut(l);
        return;
    }
    uv_read_start((uv_stream_t *)&l->client, alloc_cb, read_cb);
    uv_read_start((uv_stream_t *)&l->server, alloc_cb, read_cb);
}

static void accept_cb(uv_stream_t *server, int status)
{
    proxy_t *p = server->data;
    if (status != 0)
        return;
    link_t *l = chat_calloc(1, sizeof *l);
    l->p = p;
    uv_tcp_init(p->loop, &l->client);
    uv_tcp_init(p->loop, &l->server);
    l->client.data = l->server.data = l->creq.data = l;
    chat_list_insert_tail(&p->links, &l->node);
    if (uv_accept(server, (uv_stream_t *)&l->client) != 0 ||
        uv_tcp_connect(&l->creq, &l->server, (const struct sockaddr *)&p->target, connected_cb) !=
            0) {
        link_cut(l);
        return;
    }
    p->accepted++;
}

/* Listens (again) on 127.0.0.1, on the same port after the first time. */
static void proxy_listen(proxy_t *p)
{
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", p->port, &addr);
    assert_int_equal(uv_tcp_init(p->loop, &p->listener), 0);
    p->listener.data = p;
    assert_int_equal(uv_tcp_bind(&p->listener, (const struct sockaddr *)&addr, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&p->listener, 64, accept_cb), 0);
    struct sockaddr_storage got;
    int len = sizeof got;
    uv_tcp_getsockname(&p->listener, (struct sockaddr *)&got, &len);
    p->port = ntohs(((struct sockaddr_in *)&got)->sin_port);
    p->listening = 1;
}

/* Refuses new connections and cuts the ones it carries. */
static void proxy_refuse(proxy_t *p)
{
    if (p->listening)
        uv_close((uv_handle_t *)&p->listener, NULL);
    p->listening = 0;
    chat_list_t *e, *tmp;
    CHAT_LIST_FOREACH_SAFE(e, tmp, &p->links)
    link_cut(CHAT_CONTAINER_OF(e, link_t, node));
}

/* ---- the server and the two conninfos ---- */

typedef struct env {
    const char *direct; /* CHATD_TEST_PG */
    char pooler[1024];  /* the same, through the proxy */
    uv_loop_t loop;
    proxy_t proxy;
} env_t;

static void append_kv(char *dst, size_t cap, const char *key, const char *val)
{
    size_t n = strlen(dst);
    n += (size_t)snprintf(dst + n, cap - n, "%s%s='", n ? " " : "", key);
    for (; *val && n + 3 < cap; val++) {
        if (*val == '\'' || *val == '\\')
            dst[n++] = '\\';
        dst[n++] = *val;
    }
    snprintf(dst + n, cap - n, "'");
}

/* Sets the proxy's target and the pooler conninfo from CHATD_TEST_PG. */
static void env_setup(env_t *e)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(e->direct, &err);
    assert_non_null(opts);
    const char *host = "127.0.0.1";
    int port = 5432;
    e->pooler[0] = '\0';
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val || !*o->val)
            continue;
        if (!strcmp(o->keyword, "host") || !strcmp(o->keyword, "hostaddr")) {
            if (o->val[0] != '/' && strcmp(o->val, "localhost") != 0)
                host = o->val;
        } else if (!strcmp(o->keyword, "port")) {
            port = atoi(o->val);
        } else {
            append_kv(e->pooler, sizeof e->pooler, o->keyword, o->val);
        }
    }
    assert_int_equal(uv_ip4_addr(host, port, &e->proxy.target), 0);
    PQconninfoFree(opts);
    uv_loop_init(&e->loop);
    e->proxy.loop = &e->loop;
    chat_list_init(&e->proxy.links);
    proxy_listen(&e->proxy);
    char port_s[16];
    snprintf(port_s, sizeof port_s, "%d", e->proxy.port);
    append_kv(e->pooler, sizeof e->pooler, "host", "127.0.0.1");
    append_kv(e->pooler, sizeof e->pooler, "port", port_s);
}

/* ---- driving the loop ---- */

static void guard_cb(uv_timer_t *t)
{
    *(int *)t->data = 1;
}

/* Runs the loop until pred(arg) holds or ms pass (a bound, not a wait); returns pred(arg). */
static int run_until(uv_loop_t *loop, int (*pred)(void *), void *arg, int ms)
{
    uv_timer_t guard;
    int expired = 0;
    uv_timer_init(loop, &guard);
    guard.data = &expired;
    uv_timer_start(&guard, guard_cb, (uint64_t)ms, 0);
    while (!pred(arg) && !expired)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&guard, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return pred(arg);
}

typedef struct seen {
    int n;
    chat_err_t status[64];
    char text[64][32];
    int closed;
} seen_t;

typedef struct want {
    seen_t *s;
    int n;
} want_t;

static int have_n(void *arg)
{
    want_t *w = arg;
    return w->s->n >= w->n;
}

static int on_direct(void *arg)
{
    return chat_db_on_direct(arg);
}

static int on_pooler(void *arg)
{
    return !chat_db_on_direct(arg);
}

static int pooler_connected(void *arg)
{
    chat_db_pool_stats_t st;
    chat_db_stats(arg, &st);
    return !chat_db_on_direct(arg) && st.connected == st.size;
}

static int is_closed(void *arg)
{
    return ((seen_t *)arg)->closed;
}

static void record_cb(const chat_db_result_t *r, void *arg)
{
    seen_t *s = arg;
    assert_true(s->n < 64);
    s->status[s->n] = r->status;
    s->text[s->n][0] = '\0';
    if (r->status == CHAT_EOK && r->nres > 0 && PQntuples(r->res[r->nres - 1]) > 0)
        snprintf(s->text[s->n], sizeof s->text[0], "%s", PQgetvalue(r->res[r->nres - 1], 0, 0));
    s->n++;
}

static void closed_cb(void *arg)
{
    ((seen_t *)arg)->closed = 1;
}

static void exec_sql(chat_db_t *db, seen_t *s, const char *sql, int flags)
{
    chat_db_stmt_t st = {sql, 0, NULL};
    chat_db_exec(db, &st, 1, flags, record_cb, s);
}

static double metric(const char *family, const char *labels, int counter)
{
    chat_metric_family_t *f =
        counter ? chat_metrics_counter(family, "") : chat_metrics_gauge(family, "");
    return chat_metric_value(chat_metric_series(f, labels));
}

static double switches(const char *to, const char *reason)
{
    char labels[96];
    snprintf(labels, sizeof labels, "to=\"%s\",reason=\"%s\"", to, reason);
    return metric("chatd_db_path_switches_total", labels, 1);
}

static double gauge_path(const char *path)
{
    char labels[32];
    snprintf(labels, sizeof labels, "path=\"%s\"", path);
    return metric("chatd_db_path", labels, 0);
}

/* A path on the proxy, with the server itself as its direct path unless direct is NULL. */
static chat_db_t *path_create_with(env_t *e, int pooler_size, int error_percent, int queue_wait_ms,
                                   int hold_ms, const char *direct, int held_max_ms)
{
    chat_db_path_config_t cfg = {
        .pooler =
            {
                .conninfo = e->pooler,
                .size = pooler_size,
                .queue_timeout_ms = 10000,
                .connect_timeout_ms = 2000,
                .path_name = "pooler",
            },
        .direct_conninfo = direct,
        .direct_size = 1,
        .error_percent = error_percent,
        .queue_wait_ms = queue_wait_ms,
        .window_ms = 10000,
        .hold_ms = hold_ms,
        .held_max_ms = held_max_ms,
        .worker = 0,
    };
    chat_db_t *db = chat_db_create(&e->loop, &cfg);
    assert_true(run_until(&e->loop, pooler_connected, db, 5000));
    return db;
}

static chat_db_t *path_create(env_t *e, int pooler_size, int error_percent, int queue_wait_ms,
                              int hold_ms)
{
    return path_create_with(e, pooler_size, error_percent, queue_wait_ms, hold_ms, e->direct, 5000);
}

static void path_close(env_t *e, chat_db_t *db)
{
    seen_t s = {0};
    chat_db_close(db, closed_cb, &s);
    assert_true(run_until(&e->loop, is_closed, &s, 10000));
    proxy_refuse(&e->proxy);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&e->loop), 0);
}

static int setup(void **state)
{
    const char *pg = test_pg_conninfo();
    if (!pg) {
        *state = NULL;
        return 0;
    }
    env_t *e = chat_calloc(1, sizeof *e);
    e->direct = pg;
    env_setup(e);
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    free(*state);
    return 0;
}

/* ---- the tests ---- */

/*
 * The pooler refuses connections: the path moves to direct, a held retryable
 * transaction is answered there, a plain one fails; once the pooler is back
 * for the hold time, the path moves back.
 */
static void test_unreachable_pooler(void **state)
{
    env_t *e = *state;
    if (!e)
        skip();
    double left0 = switches("direct", "unreachable"), back0 = switches("pooler", "healthy");
    double retries0 = metric("chatd_db_path_retries_total", "", 1);
    chat_db_t *db = path_create(e, 2, 50, 0, 500);
    seen_t s = {0};
    want_t w = {&s, 1};
    exec_sql(db, &s, "SELECT 'pooler'", 0);
    assert_true(run_until(&e->loop, have_n, &w, 5000));
    assert_int_equal(s.status[0], CHAT_EOK);
    assert_true(gauge_path("pooler") == 1 && gauge_path("direct") == 0);

    proxy_refuse(&e->proxy);
    exec_sql(db, &s, "SELECT 'held'", CHAT_DB_RETRY_SENT);
    exec_sql(db, &s, "SELECT 'plain'", 0);
    assert_false(chat_db_on_direct(db));
    assert_true(run_until(&e->loop, on_direct, db, 5000));
    assert_true(switches("direct", "unreachable") - left0 == 1);
    assert_true(gauge_path("pooler") == 0 && gauge_path("direct") == 1);
    w.n = 3;
    assert_true(run_until(&e->loop, have_n, &w, 8000));
    /* The plain one failed on the pooler; the held one was sent again, on direct. */
    assert_true(s.status[1] == CHAT_EDOWN || s.status[1] == CHAT_ECONNLOST);
    assert_int_equal(s.status[2], CHAT_EOK);
    assert_string_equal(s.text[2], "held");
    assert_true(metric("chatd_db_path_retries_total", "", 1) - retries0 >= 1);
    assert_true(metric("chatd_db_path_held", "", 0) == 0);
    exec_sql(db, &s, "SELECT 'direct'", 0);
    w.n = 4;
    assert_true(run_until(&e->loop, have_n, &w, 5000));
    assert_int_equal(s.status[3], CHAT_EOK);

    /* The pooler is back: probes answer for the hold time, then the path returns. */
    int accepted0 = e->proxy.accepted;
    proxy_listen(&e->proxy);
    assert_true(run_until(&e->loop, on_pooler, db, 10000));
    assert_true(switches("pooler", "healthy") - back0 == 1);
    assert_true(gauge_path("pooler") == 1 && gauge_path("direct") == 0);
    exec_sql(db, &s, "SELECT 'pooler again'", 0);
    w.n = 5;
    assert_true(run_until(&e->loop, have_n, &w, 5000));
    assert_int_equal(s.status[4], CHAT_EOK);
    assert_true(e->proxy.accepted > accepted0);
    path_close(e, db);
}

/* Over the window, most pooler transactions fail with a path error (53xxx). */
static void test_error_ratio(void **state)
{
    env_t *e = *state;
    if (!e)
        skip();
    double left0 = switches("direct", "error_ratio");
    chat_db_t *db = path_create(e, 2, 50, 0, 60000);
    seen_t s = {0};
    int n = CHAT_DB_PATH_MIN_SAMPLES + 5;
    for (int i = 0; i < n; i++)
        exec_sql(db, &s, "DO $$ BEGIN RAISE EXCEPTION 'too many' USING ERRCODE = '53300'; END $$",
                 0);
    want_t w = {&s, n};
    assert_true(run_until(&e->loop, have_n, &w, 10000));
    for (int i = 0; i < n; i++)
        assert_int_equal(s.status[i], CHAT_EREPLY);
    assert_true(run_until(&e->loop, on_direct, db, 5000));
    assert_true(switches("direct", "error_ratio") - left0 == 1);
    path_close(e, db);
}

/* Over the window, most pooler transactions waited past the threshold for a connection. */
static void test_queue_wait(void **state)
{
    env_t *e = *state;
    if (!e)
        skip();
    double left0 = switches("direct", "queue_wait");
    chat_db_t *db = path_create(e, 1, 0, 100, 60000);
    seen_t s = {0};
    int n = CHAT_DB_PATH_MIN_SAMPLES + 1;
    /* The fault: one connection, held 300 ms by the first transaction. */
    exec_sql(db, &s, "SELECT pg_sleep(0.3)::text", 0);
    for (int i = 1; i < n; i++)
        exec_sql(db, &s, "SELECT 1", 0);
    want_t w = {&s, n};
    assert_true(run_until(&e->loop, have_n, &w, 10000));
    for (int i = 0; i < n; i++)
        assert_int_equal(s.status[i], CHAT_EOK);
    assert_true(run_until(&e->loop, on_direct, db, 5000));
    assert_true(switches("direct", "queue_wait") - left0 == 1);
    path_close(e, db);
}

static int held_some(void *arg)
{
    (void)arg;
    return metric("chatd_db_path_held", "", 0) >= 1;
}

/*
 * No direct path: the only server goes away (connections cut, new ones
 * refused), as in a PostgreSQL restart. A retryable transaction is held and
 * answered once the server is back; a plain one fails; a held one whose
 * server stays away past the hold fails, no sooner.
 */
static void test_hold_without_direct_path(void **state)
{
    env_t *e = *state;
    if (!e)
        skip();
    double retries0 = metric("chatd_db_path_retries_total", "", 1);
    double expired0 = metric("chatd_db_path_hold_expired_total", "", 1);
    chat_db_t *db = path_create_with(e, 2, 0, 0, 500, NULL, 1500);
    seen_t s = {0};
    want_t w = {&s, 1};
    exec_sql(db, &s, "SELECT 'up'", 0);
    assert_true(run_until(&e->loop, have_n, &w, 5000));
    assert_int_equal(s.status[0], CHAT_EOK);

    proxy_refuse(&e->proxy);
    exec_sql(db, &s, "SELECT 'plain'", 0);
    exec_sql(db, &s, "SELECT 'held'", CHAT_DB_RETRY_SENT);
    w.n = 2;
    assert_true(run_until(&e->loop, have_n, &w, 5000));
    assert_true(s.status[1] == CHAT_EDOWN || s.status[1] == CHAT_ECONNLOST);
    assert_true(run_until(&e->loop, held_some, NULL, 5000));
    assert_int_equal(s.n, 2); /* the retryable one is still held */
    proxy_listen(&e->proxy);
    w.n = 3;
    assert_true(run_until(&e->loop, have_n, &w, 5000));
    assert_int_equal(s.status[2], CHAT_EOK);
    assert_string_equal(s.text[2], "held");
    assert_true(metric("chatd_db_path_retries_total", "", 1) - retries0 >= 1);
    assert_true(metric("chatd_db_path_held", "", 0) == 0);

    /* Away for longer than the hold: failed after 1.5 s, not before. */
    proxy_refuse(&e->proxy);
    uint64_t t0 = uv_now(&e->loop);
    exec_sql(db, &s, "SELECT 'too late'", CHAT_DB_RETRY_SENT);
    w.n = 4;
    assert_true(run_until(&e->loop, have_n, &w, 8000));
    uint64_t took = uv_now(&e->loop) - t0;
    assert_true(s.status[3] == CHAT_EDOWN || s.status[3] == CHAT_ECONNLOST);
    assert_true(took >= 1500);
    assert_true(took < 1500 + 1000); /* the next tick after the hold, with slack */
    assert_true(metric("chatd_db_path_hold_expired_total", "", 1) - expired0 == 1);
    assert_true(metric("chatd_db_path_held", "", 0) == 0);
    path_close(e, db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_unreachable_pooler, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_ratio, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_wait, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hold_without_direct_path, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
