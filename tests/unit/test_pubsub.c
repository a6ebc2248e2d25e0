/*
 * Unit tests of redis/pubsub.c against a private redis-server
 * (redis_server.h): messages arrive, the subscriber comes back by itself
 * after Redis restarts, and closing leaves nothing on the loop.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "redis/pubsub.h"

#define PORT_LO 26460
#define PORT_HI 26479
#include "redis_server.h"

#include <string.h>

typedef struct got {
    int n;
    char last[64];
} got_t;

static void msg_cb(const char *payload, size_t len, void *arg)
{
    got_t *g = arg;
    g->n++;
    snprintf(g->last, sizeof g->last, "%.*s", (int)len, payload);
}

static void on_tick(uv_timer_t *t) {}

static void closed_cb(void *arg)
{
    (*(int *)arg)++;
}

static int run_until_subscribed(uv_loop_t *loop, chat_pubsub_t *ps, bool want)
{
    uint64_t t0 = uv_hrtime();
    while (chat_pubsub_subscribed(ps) != want && ms_since(t0) < 5000)
        uv_run(loop, UV_RUN_ONCE);
    return chat_pubsub_subscribed(ps) == want;
}

static void publish(const char *msg)
{
    freeReplyObject(server_cmd("PUBLISH t:chan %s", msg));
}

static void run_until_n(uv_loop_t *loop, got_t *g, int n)
{
    uint64_t t0 = uv_hrtime();
    while (g->n < n && ms_since(t0) < 3000)
        uv_run(loop, UV_RUN_ONCE);
    assert_int_equal(g->n, n);
}

static void test_messages_and_reconnect(void **state)
{
    uv_loop_t loop;
    uv_timer_t tick;
    char url[64], err[256];
    got_t g = {0};
    int closed = 0;

    assert_int_equal(uv_loop_init(&loop), 0);
    uv_timer_init(&loop, &tick);
    uv_timer_start(&tick, on_tick, 5, 5);
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/3", g_port);
    chat_pubsub_t *ps = chat_pubsub_create(&loop, url, "t:chan", msg_cb, &g, err, sizeof err);
    assert_non_null(ps);
    assert_false(chat_pubsub_subscribed(ps));
    assert_true(run_until_subscribed(&loop, ps, true));
    publish("one");
    run_until_n(&loop, &g, 1);
    assert_string_equal(g.last, "one");

    server_kill();
    assert_true(run_until_subscribed(&loop, ps, false));
    assert_int_equal(server_start(g_port), 0);
    assert_true(run_until_subscribed(&loop, ps, true));
    publish("two");
    run_until_n(&loop, &g, 2);
    assert_string_equal(g.last, "two");

    chat_pubsub_close(ps, closed_cb, &closed);
    publish("three"); /* no callback after close */
    uv_close((uv_handle_t *)&tick, NULL);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(closed, 1);
    assert_int_equal(g.n, 2);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* Closed while Redis is away (between retries): the timer and any attempt close. */
static void test_close_while_down(void **state)
{
    uv_loop_t loop;
    char err[256];
    got_t g = {0};
    int closed = 0;

    assert_int_equal(uv_loop_init(&loop), 0);
    chat_pubsub_t *ps =
        chat_pubsub_create(&loop, "redis://127.0.0.1:1", "t:chan", msg_cb, &g, err, sizeof err);
    assert_non_null(ps);
    for (int i = 0; i < 5; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    chat_pubsub_close(ps, closed_cb, &closed);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(closed, 1);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_messages_and_reconnect),
        cmocka_unit_test(test_close_while_down),
    };
    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
