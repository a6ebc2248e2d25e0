/*
 * Unit tests of redis/url.c: the one set of URL rules (a bad URL refused by
 * the client and the subscriber alike, with a message naming the rule) and
 * host resolution, which runs off the loop: the loop keeps running timers
 * while a lookup waits, and a client given "localhost" connects through it
 * (against a private redis-server, redis_server.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/error.h"
#include "redis/client.h"
#include "redis/pubsub.h"
#include "redis/url.h"

#define PORT_LO 26420
#define PORT_HI 26439
#include "redis_server.h"

#include <stdlib.h>
#include <string.h>

static const char *bad[] = {
    "http://127.0.0.1:1", "redis://",
    "redis://:1",         "redis://h:0",
    "redis://h:70000",    "redis://h:12ab",
    "redis://h:",         "redis://h:1/x",
    "redis://u:p@h:1",    "rediss://h:1",
    "redis://[::1",       "redis://h:1?db=2",
    "redis://h:1/1/2",    "redis://h:1/1234567",
};

/* redis+cluster://: each node under the single-node rules, no db but 0. */
static void test_parse_cluster(void **state)
{
    chat_redis_url_t seeds[4];
    int n = -1;
    char err[256];
    assert_true(chat_redis_url_is_cluster("redis+cluster://h:1"));
    assert_false(chat_redis_url_is_cluster("redis://h:1"));
    assert_int_equal(chat_redis_cluster_url_parse(seeds, 4, &n,
                                                  "redis+cluster://127.0.0.1:7001,[::1]:7002,node",
                                                  err, sizeof err),
                     0);
    assert_int_equal(n, 3);
    assert_string_equal(seeds[0].text, "127.0.0.1:7001");
    assert_true(seeds[0].numeric);
    assert_string_equal(seeds[1].text, "[::1]:7002");
    assert_string_equal(seeds[2].text, "node:6379");
    assert_false(seeds[2].numeric);
    static const char *const bad_cluster[] = {
        "redis://h:1",          "redis+cluster://",         "redis+cluster://h:1,",
        "redis+cluster://,h:1", "redis+cluster://h:1,,h:2", "redis+cluster://h:1/2",
        "redis+cluster://h:0",  "redis+cluster://u:p@h:1",  "redis+cluster://a,b,c,d,e",
    };
    for (size_t i = 0; i < sizeof bad_cluster / sizeof bad_cluster[0]; i++) {
        err[0] = '\0';
        assert_int_equal(
            chat_redis_cluster_url_parse(seeds, 4, &n, bad_cluster[i], err, sizeof err),
            CHAT_EINVAL);
        assert_non_null(strstr(err, bad_cluster[i]));
    }
    /* The client and the subscriber refuse a bad cluster URL like any other. */
    uv_loop_t loop;
    uv_loop_init(&loop);
    chat_redis_config_t rc = {.url = "redis+cluster://h:1,"};
    assert_null(chat_redis_create(&loop, &rc, err, sizeof err));
    assert_non_null(strstr(err, "empty node"));
    uv_loop_close(&loop);
}

static void test_parse_good(void **state)
{
    chat_redis_url_t u;
    char err[256];

    assert_int_equal(chat_redis_url_parse(&u, "redis://localhost", err, sizeof err), 0);
    assert_string_equal(u.host, "localhost");
    assert_int_equal(u.port, 6379);
    assert_int_equal(u.db, 0);
    assert_false(u.numeric);
    assert_string_equal(u.text, "localhost:6379");

    assert_int_equal(chat_redis_url_parse(&u, "redis://10.1.2.3:7000/5", err, sizeof err), 0);
    assert_string_equal(u.host, "10.1.2.3");
    assert_int_equal(u.port, 7000);
    assert_int_equal(u.db, 5);
    assert_true(u.numeric); /* no lookup needed */
    assert_int_equal(u.addr.ss_family, AF_INET);
    assert_int_equal(ntohs(((struct sockaddr_in *)&u.addr)->sin_port), 7000);

    assert_int_equal(chat_redis_url_parse(&u, "redis://[::1]:7001/", err, sizeof err), 0);
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 7001);
    assert_int_equal(u.db, 0);
    assert_true(u.numeric);
    assert_int_equal(u.addr.ss_family, AF_INET6);
    assert_string_equal(u.text, "[::1]:7001");
}

static void test_parse_bad(void **state)
{
    chat_redis_url_t u;
    char err[256], host[400], long_err[700];

    for (size_t i = 0; i < CHAT_ARRAY_LEN(bad); i++) {
        err[0] = '\0';
        assert_int_equal(chat_redis_url_parse(&u, bad[i], err, sizeof err), CHAT_EINVAL);
        assert_true(strlen(err) > 10);
        assert_non_null(strstr(err, "redis"));
    }
    assert_int_equal(chat_redis_url_parse(&u, NULL, NULL, 0), CHAT_EINVAL);
    /* the message names the rule */
    assert_int_equal(chat_redis_url_parse(&u, "redis://h:0", err, sizeof err), CHAT_EINVAL);
    assert_string_equal(err, "redis URL \"redis://h:0\": port must be a number from 1 to 65535");
    /* a host of 256 bytes is too long */
    memset(host, 'a', sizeof host);
    memcpy(host, "redis://", 8);
    host[8 + 256] = '\0';
    assert_int_equal(chat_redis_url_parse(&u, host, long_err, sizeof long_err), CHAT_EINVAL);
    assert_non_null(strstr(long_err, "host longer"));
    host[8 + 255] = '\0'; /* 255 bytes fit */
    assert_int_equal(chat_redis_url_parse(&u, host, long_err, sizeof long_err), 0);
}

static void ignore_msg(const char *ch, size_t clen, const char *payload, size_t len, void *arg) {}

static const chat_pubsub_handler_t no_handler = {ignore_msg, NULL, NULL, NULL, NULL};

/* The client and the subscriber refuse the same URLs, each with the message. */
static void test_bad_url_refused_by_client_and_subscriber(void **state)
{
    uv_loop_t loop;
    char err[256];

    assert_int_equal(uv_loop_init(&loop), 0);
    for (size_t i = 0; i < CHAT_ARRAY_LEN(bad); i++) {
        chat_redis_config_t cfg = {.url = bad[i]};
        err[0] = '\0';
        assert_null(chat_redis_create(&loop, &cfg, err, sizeof err));
        assert_true(strlen(err) > 10);
        err[0] = '\0';
        assert_null(chat_pubsub_create(&loop, bad[i], &no_handler, NULL, err, sizeof err));
        assert_true(strlen(err) > 10);
    }
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- resolution off the loop ---- */

typedef struct lookup {
    int calls;
    int status;
    struct sockaddr_storage addr;
    int ticks_at_answer;
} lookup_t;

static int g_ticks;

static void tick_cb(uv_timer_t *t)
{
    g_ticks++;
}

static void resolved_cb(int status, const struct sockaddr *addr, void *arg)
{
    lookup_t *l = arg;
    l->calls++;
    l->status = status;
    l->ticks_at_answer = g_ticks;
    if (addr)
        memcpy(&l->addr, addr,
               addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                           : sizeof(struct sockaddr_in));
}

/* Occupies the thread pool's only thread (UV_THREADPOOL_SIZE=1, set in main). */
static void busy_work(uv_work_t *w)
{
    usleep(200 * 1000);
}

static void busy_done(uv_work_t *w, int status) {}

static void test_localhost_resolves_while_the_loop_runs(void **state)
{
    uv_loop_t loop;
    uv_timer_t tick;
    uv_work_t busy;
    chat_redis_url_t u;
    chat_redis_resolve_t *q;
    lookup_t l = {0};
    char ip[64];

    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(chat_redis_url_parse(&u, "redis://localhost:6390", NULL, 0), 0);
    assert_false(u.numeric);
    /* The lookup waits behind 200 ms of other work on the pool: the loop must
     * keep firing its timers meanwhile, and the call must return at once. */
    assert_int_equal(uv_queue_work(&loop, &busy, busy_work, busy_done), 0);
    uv_timer_init(&loop, &tick);
    uv_timer_start(&tick, tick_cb, 5, 5);
    uint64_t t0 = uv_hrtime();
    assert_int_equal(chat_redis_url_resolve(&loop, &u, resolved_cb, &l, &q), 0);
    assert_true(ms_since(t0) < 50);
    assert_int_equal(l.calls, 0); /* never from inside the call */
    while (l.calls == 0 && ms_since(t0) < 5000)
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(l.calls, 1);
    assert_int_equal(l.status, 0);
    assert_true(l.ticks_at_answer >= 10); /* ~40 ticks in 200 ms; the loop was not blocked */
    assert_int_equal(chat_redis_addr_ip((struct sockaddr *)&l.addr, ip, sizeof ip), 0);
    assert_true(!strcmp(ip, "127.0.0.1") || !strcmp(ip, "::1"));
    assert_int_equal(ntohs(((struct sockaddr_in *)&l.addr)->sin_port), 6390);
    uv_close((uv_handle_t *)&tick, NULL);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_cancelled_lookup_never_answers(void **state)
{
    uv_loop_t loop;
    uv_work_t busy;
    chat_redis_url_t u;
    chat_redis_resolve_t *q;
    lookup_t l = {0};

    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(chat_redis_url_parse(&u, "redis://localhost", NULL, 0), 0);
    assert_int_equal(uv_queue_work(&loop, &busy, busy_work, busy_done), 0);
    assert_int_equal(chat_redis_url_resolve(&loop, &u, resolved_cb, &l, &q), 0);
    chat_redis_resolve_cancel(q);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0); /* the request frees itself */
    assert_int_equal(l.calls, 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- a client and a subscriber given a host name ---- */

static int g_msgs, g_subscribed;
static chat_pubsub_t *g_ps;

static void msg_cb(const char *ch, size_t clen, const char *payload, size_t len, void *arg)
{
    g_msgs++;
}

static void subscribed_cb(const char *ch, size_t clen, void *arg)
{
    g_subscribed++;
}

static void connected_cb(void *arg)
{
    assert_true(chat_pubsub_subscribe(g_ps, "t:byname", 8));
}

static const chat_pubsub_handler_t by_name_handler = {msg_cb, subscribed_cb, connected_cb, NULL,
                                                      NULL};

static void closed_cb(void *arg)
{
    (*(int *)arg)++;
}

static void test_client_and_subscriber_connect_by_name(void **state)
{
    uv_loop_t loop;
    uv_timer_t tick;
    char url[64], err[256];
    int closed = 0;

    snprintf(url, sizeof url, "redis://localhost:%d", g_port);
    assert_int_equal(uv_loop_init(&loop), 0);
    uv_timer_init(&loop, &tick);
    uv_timer_start(&tick, tick_cb, 5, 5);
    chat_redis_config_t cfg = {.url = url, .connect_timeout_ms = 1000};
    chat_redis_t *r = chat_redis_create(&loop, &cfg, err, sizeof err);
    assert_non_null(r);
    assert_false(chat_redis_healthy(r)); /* the lookup has not even started answering */
    chat_pubsub_t *ps = g_ps =
        chat_pubsub_create(&loop, url, &by_name_handler, NULL, err, sizeof err);
    assert_non_null(ps);
    uint64_t t0 = uv_hrtime();
    while (!(chat_redis_healthy(r) && g_subscribed == 1) && ms_since(t0) < 5000)
        uv_run(&loop, UV_RUN_ONCE);
    assert_true(chat_redis_healthy(r));
    assert_int_equal(g_subscribed, 1);
    const char *pub[] = {"SPUBLISH", "t:byname", "hi"};
    assert_int_equal(chat_redis_command(r, NULL, NULL, 3, pub, NULL), 0);
    t0 = uv_hrtime();
    while (g_msgs == 0 && ms_since(t0) < 3000)
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(g_msgs, 1);
    chat_redis_close(r, closed_cb, &closed);
    chat_pubsub_close(ps, closed_cb, &closed);
    uv_close((uv_handle_t *)&tick, NULL);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(closed, 2);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* Closing while the lookup is still out: nothing is left behind. */
static void test_close_while_resolving(void **state)
{
    uv_loop_t loop;
    uv_work_t busy;
    char err[256];
    int closed = 0;

    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(uv_queue_work(&loop, &busy, busy_work, busy_done), 0);
    chat_redis_config_t cfg = {.url = "redis://localhost:1"};
    chat_redis_t *r = chat_redis_create(&loop, &cfg, err, sizeof err);
    assert_non_null(r);
    chat_pubsub_t *ps =
        chat_pubsub_create(&loop, "redis://localhost:1", &no_handler, NULL, err, sizeof err);
    assert_non_null(ps);
    chat_redis_close(r, closed_cb, &closed);
    chat_pubsub_close(ps, closed_cb, &closed);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(closed, 2);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_good),
        cmocka_unit_test(test_parse_cluster),
        cmocka_unit_test(test_parse_bad),
        cmocka_unit_test(test_bad_url_refused_by_client_and_subscriber),
        cmocka_unit_test(test_localhost_resolves_while_the_loop_runs),
        cmocka_unit_test(test_cancelled_lookup_never_answers),
        cmocka_unit_test(test_close_while_resolving),
        cmocka_unit_test(test_client_and_subscriber_connect_by_name),
    };
    /* One pool thread, so that a test can keep it busy and make a lookup wait. */
    setenv("UV_THREADPOOL_SIZE", "1", 1);
    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
