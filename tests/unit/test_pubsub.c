/*
 * Unit tests of redis/pubsub.c against a private redis-server
 * (redis_server.h, ports 19400-19409): sharded subscriptions to several
 * channels, each message on its own channel, SPUBLISH from a plain hiredis
 * connection, unsubscribing, the subscribed and connected callbacks, the
 * owner subscribing again after Redis restarts, and closing (also from a
 * message callback, and while Redis is away) leaving nothing on the loop.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "redis/pubsub.h"

#define PORT_LO 19400
#define PORT_HI 19409
#include "redis_server.h"

#include <string.h>

#define MAXMSG 32
#define MAXCH 4

/* What the handler saw, and the channels its owner wants. */
typedef struct rec {
    chat_pubsub_t *ps;
    int connected;
    int nmsg;
    char chan[MAXMSG][32];
    char payload[MAXMSG][64];
    size_t plen[MAXMSG];
    const char *want[MAXCH]; /* subscribed again on every connected callback */
    int subscribed[MAXCH];   /* confirmations, by index of want */
    int subscribed_other;    /* confirmations of channels not in want */
    int subscribe_failed;    /* chat_pubsub_subscribe calls that wrote nothing */
    bool close_on_message;
    int closed;
} rec_t;

static void msg_cb(const char *ch, size_t clen, const char *p, size_t len, void *arg)
{
    rec_t *r = arg;
    assert_true(r->nmsg < MAXMSG);
    assert_true(clen < sizeof r->chan[0] && len < sizeof r->payload[0]);
    memcpy(r->chan[r->nmsg], ch, clen);
    r->chan[r->nmsg][clen] = '\0';
    memcpy(r->payload[r->nmsg], p, len);
    r->payload[r->nmsg][len] = '\0';
    r->plen[r->nmsg] = len;
    r->nmsg++;
    if (r->close_on_message) {
        r->close_on_message = false;
        chat_pubsub_close(r->ps, NULL, NULL);
        r->ps = NULL;
    }
}

static void subscribed_cb(const char *ch, size_t clen, void *arg)
{
    rec_t *r = arg;
    for (int i = 0; i < MAXCH; i++) {
        if (r->want[i] && strlen(r->want[i]) == clen && memcmp(r->want[i], ch, clen) == 0) {
            r->subscribed[i]++;
            return;
        }
    }
    r->subscribed_other++;
}

static void subscribe_all(rec_t *r)
{
    for (int i = 0; i < MAXCH; i++)
        if (r->want[i] && !chat_pubsub_subscribe(r->ps, r->want[i], strlen(r->want[i])))
            r->subscribe_failed++;
}

/* The owner's job on every new connection: its channels again. */
static void connected_cb(void *arg)
{
    rec_t *r = arg;
    r->connected++;
    assert_true(chat_pubsub_usable(r->ps));
    subscribe_all(r);
}

static const chat_pubsub_handler_t handler = {msg_cb, subscribed_cb, connected_cb, NULL, NULL};

static void on_tick(uv_timer_t *t) {}

static void closed_cb(void *arg)
{
    ((rec_t *)arg)->closed++;
}

/* ---- the loop: UV_RUN_ONCE with a 5 ms tick, until a condition holds or 5 s pass ---- */

typedef struct env {
    uv_loop_t loop;
    uv_timer_t tick;
    rec_t r;
} env_t;

static void env_init(env_t *e)
{
    memset(e, 0, sizeof *e);
    assert_int_equal(uv_loop_init(&e->loop), 0);
    uv_timer_init(&e->loop, &e->tick);
    uv_timer_start(&e->tick, on_tick, 5, 5);
}

/* Closes the tick and runs the loop dry: nothing may be left on it. */
static void env_done(env_t *e)
{
    uv_close((uv_handle_t *)&e->tick, NULL);
    assert_int_equal(uv_run(&e->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&e->loop), 0);
}

#define RUN_UNTIL(e, cond)                                                                         \
    do {                                                                                           \
        uint64_t t0_ = uv_hrtime();                                                                \
        while (!(cond) && ms_since(t0_) < 5000)                                                    \
            uv_run(&(e)->loop, UV_RUN_ONCE);                                                       \
        if (!(cond))                                                                               \
            fail_msg("timed out waiting for: %s", #cond);                                          \
    } while (0)

static chat_pubsub_t *mkps(env_t *e, int port)
{
    char url[64], err[256] = "";
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/2", port);
    e->r.ps = chat_pubsub_create(&e->loop, url, &handler, &e->r, err, sizeof err);
    assert_non_null(e->r.ps);
    assert_string_equal(err, "");
    return e->r.ps;
}

/* SPUBLISH from a connection of our own; the number of subscribers that got it. */
static long long spublish(const char *ch, const char *payload, size_t len)
{
    redisReply *rep = server_cmd("SPUBLISH %s %b", ch, payload, len);
    assert_int_equal(rep->type, REDIS_REPLY_INTEGER);
    long long n = rep->integer;
    freeReplyObject(rep);
    return n;
}

static long long spub(const char *ch, const char *payload)
{
    return spublish(ch, payload, strlen(payload));
}

static void assert_msg(const rec_t *r, int i, const char *ch, const char *payload)
{
    assert_true(i < r->nmsg);
    assert_string_equal(r->chan[i], ch);
    assert_string_equal(r->payload[i], payload);
}

static void test_channels_unsubscribe_and_restart(void **state)
{
    env_t e;
    env_init(&e);
    rec_t *r = &e.r;
    r->want[0] = "t:{one}";
    r->want[1] = "t:{two}";
    chat_pubsub_t *ps = mkps(&e, g_port);
    /* its first attempt under way: usable (worth waiting for), though not connected yet */
    assert_true(chat_pubsub_usable(ps));
    /* not connected yet: nothing is written, the connected callback asks again */
    assert_false(chat_pubsub_subscribe(ps, "t:{one}", 7));

    RUN_UNTIL(&e, r->subscribed[0] == 1 && r->subscribed[1] == 1);
    assert_int_equal(r->connected, 1);
    assert_int_equal(r->subscribe_failed, 0);
    assert_int_equal(r->subscribed_other, 0);
    assert_true(chat_pubsub_usable(ps));

    /* Each message on its own channel, payload bytes intact; other channels not seen. */
    assert_int_equal(spub("t:{one}", "first"), 1);
    assert_int_equal(spub("t:{nobody}", "lost"), 0);
    assert_int_equal(spublish("t:{two}", "a\0b\r\n c", 7), 1);
    assert_int_equal(spub("t:{one}", "third"), 1);
    RUN_UNTIL(&e, r->nmsg == 3);
    assert_msg(r, 0, "t:{one}", "first");
    assert_string_equal(r->chan[1], "t:{two}");
    assert_int_equal(r->plen[1], 7);
    assert_memory_equal(r->payload[1], "a\0b\r\n c", 7);
    assert_msg(r, 2, "t:{one}", "third");

    /*
     * Unsubscribe from one; a third channel subscribed after it on the same
     * connection, once confirmed, shows that Redis took the unsubscribe.
     */
    chat_pubsub_unsubscribe(ps, "t:{one}", 7);
    r->want[0] = NULL;
    r->want[2] = "t:{three}";
    assert_true(chat_pubsub_subscribe(ps, "t:{three}", 9));
    RUN_UNTIL(&e, r->subscribed[2] == 1);
    assert_int_equal(spub("t:{one}", "after unsubscribe"), 0);
    assert_int_equal(spub("t:{three}", "on three"), 1);
    assert_int_equal(spub("t:{two}", "on two"), 1);
    RUN_UNTIL(&e, r->nmsg == 5);
    assert_msg(r, 3, "t:{three}", "on three");
    assert_msg(r, 4, "t:{two}", "on two");

    /* Redis goes away: nothing can be subscribed meanwhile. */
    server_kill();
    RUN_UNTIL(&e, !chat_pubsub_usable(ps));
    assert_false(chat_pubsub_subscribe(ps, "t:{two}", 7));
    assert_int_equal(r->connected, 1);

    /* Back: connected fires again, the owner subscribes again, each is confirmed again. */
    assert_int_equal(server_start(g_port), 0);
    RUN_UNTIL(&e, r->subscribed[1] == 2 && r->subscribed[2] == 2);
    assert_int_equal(r->connected, 2);
    assert_int_equal(r->subscribe_failed, 0);
    assert_int_equal(r->subscribed_other, 0);
    assert_int_equal(spub("t:{one}", "never"), 0);
    assert_int_equal(spub("t:{two}", "two again"), 1);
    assert_int_equal(spub("t:{three}", "three again"), 1);
    RUN_UNTIL(&e, r->nmsg == 7);
    assert_msg(r, 5, "t:{two}", "two again");
    assert_msg(r, 6, "t:{three}", "three again");

    /* Closed: no callback after close returns, done runs once, the loop ends empty. */
    chat_pubsub_close(ps, closed_cb, r);
    (void)spub("t:{two}", "after close");
    env_done(&e);
    assert_int_equal(r->closed, 1);
    assert_int_equal(r->nmsg, 7);
    assert_int_equal(r->connected, 2);
}

/* A message callback may close the subscriber: what else was read is not handed out. */
static void test_close_from_message_callback(void **state)
{
    env_t e;
    env_init(&e);
    rec_t *r = &e.r;
    r->want[0] = "t:{close}";
    mkps(&e, g_port);
    RUN_UNTIL(&e, r->subscribed[0] == 1);
    r->close_on_message = true;

    /* Two messages in one go from one connection: most likely one read on our side. */
    redisContext *c = redisConnect("127.0.0.1", g_port);
    assert_true(c && !c->err);
    assert_int_equal(redisAppendCommand(c, "SPUBLISH t:{close} one"), REDIS_OK);
    assert_int_equal(redisAppendCommand(c, "SPUBLISH t:{close} two"), REDIS_OK);
    for (int i = 0; i < 2; i++) {
        void *rep = NULL;
        assert_int_equal(redisGetReply(c, &rep), REDIS_OK);
        assert_int_equal(((redisReply *)rep)->type, REDIS_REPLY_INTEGER);
        assert_int_equal(((redisReply *)rep)->integer, 1);
        freeReplyObject(rep);
    }
    redisFree(c);

    RUN_UNTIL(&e, r->nmsg >= 1);
    assert_null(r->ps);
    env_done(&e);
    assert_int_equal(r->nmsg, 1);
    assert_msg(r, 0, "t:{close}", "one");
}

static void count_timer(uv_handle_t *h, void *arg)
{
    if (h->type == UV_TCP)
        ((int *)arg)[0]++;
    else if (h->type == UV_TIMER && uv_is_active(h))
        ((int *)arg)[1]++;
}

/* No connection attempt open, and a timer besides our tick running: the subscriber's retry. */
static bool retry_waiting(env_t *e)
{
    int n[2] = {0, 0};
    uv_walk(&e->loop, count_timer, n);
    return n[0] == 0 && n[1] == 2;
}

/* Closed while Redis is away (between retries, and during an attempt): all of it closes. */
static void test_close_while_down(void **state)
{
    for (int round = 0; round < 2; round++) {
        env_t e;
        env_init(&e);
        rec_t *r = &e.r;
        r->want[0] = "t:{down}";
        int port = dead_port();
        mkps(&e, port);
        if (round == 1) /* the first attempt is refused: the retry timer waits */
            RUN_UNTIL(&e, retry_waiting(&e));
        /* usable until its first attempt has failed */
        assert_true(chat_pubsub_usable(r->ps) == (round == 0));
        assert_false(chat_pubsub_subscribe(r->ps, "t:{down}", 8));
        chat_pubsub_close(r->ps, closed_cb, r);
        env_done(&e);
        assert_int_equal(r->closed, 1);
        assert_int_equal(r->connected, 0);
        assert_int_equal(r->subscribed[0], 0);
    }
}

static void test_bad_url_refused(void **state)
{
    uv_loop_t loop;
    rec_t r = {0};
    char err[256] = "";
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_null(chat_pubsub_create(&loop, "http://127.0.0.1:6379", &handler, &r, err, sizeof err));
    assert_true(err[0] != '\0');
    assert_null(chat_pubsub_create(&loop, "redis://127.0.0.1:99999", &handler, &r, NULL, 0));
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_channels_unsubscribe_and_restart),
        cmocka_unit_test(test_close_from_message_callback),
        cmocka_unit_test(test_close_while_down),
        cmocka_unit_test(test_bad_url_refused),
    };
    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
