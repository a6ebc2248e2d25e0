/*
 * Unit tests of realtime/msg.c (the Redis payload of a realtime message:
 * round trip of every kind, malformed payloads refused) and of
 * realtime/fanout.c against a private redis-server (redis_server.h, ports
 * 19410-19420): two fanouts with two origins, each on a loop of its own
 * like two instances, see each other's messages on the channels they
 * watch and never their own; unwatching stops delivery; subscriptions of
 * conversation and user channels are reported, again after Redis
 * restarts; drop_every loses events as pub/sub could; events that could
 * not be published while Redis was away are hinted once it is back; and
 * chatd_stream_pubsub_total counts both directions.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/error.h"
#include "core/metrics.h"
#include "realtime/fanout.h"
#include "realtime/msg.h"

#define PORT_LO 19410
#define PORT_HI 19420
#include "redis_server.h"

#include <string.h>

/* ---- the payload codec ---- */

static void round_trip(int kind, int64_t id, int64_t a, int64_t b, const char *frame, size_t len,
                       const char *head)
{
    chat_rt_msg_t m = {kind, id, a, b, frame, len};
    chat_buf_t buf = CHAT_BUF_INIT;
    chat_rt_payload_encode(&buf, "0f6c-origin", &m);
    assert_int_equal(buf.len, strlen(head) + len);
    assert_memory_equal(buf.data, head, strlen(head));
    if (len)
        assert_memory_equal(buf.data + strlen(head), frame, len);

    const char *origin = NULL;
    size_t olen = 0;
    chat_rt_msg_t d;
    memset(&d, 0xa5, sizeof d);
    assert_int_equal(chat_rt_payload_decode(buf.data, buf.len, &origin, &olen, &d), 0);
    assert_ptr_equal(origin, buf.data);
    assert_int_equal(olen, strlen("0f6c-origin"));
    assert_int_equal(d.kind, kind);
    assert_int_equal(d.id, id);
    assert_int_equal(d.a, a);
    assert_int_equal(d.b, b);
    assert_int_equal(d.len, len);
    assert_ptr_equal(d.frame, buf.data + strlen(head)); /* into the payload, not copied */
    chat_buf_dispose(&buf);
}

static void test_payload_round_trip_every_kind(void **state)
{
    const char ev[] = "{\"type\":\"message\",\"rev\":7,\"message\":{\"body\":\"a b\\nc\"}}\n two";
    round_trip(CHAT_RT_EVENT, 42, 7, 0, ev, sizeof ev - 1, "0f6c-origin 1 42 7 0\n");
    round_trip(CHAT_RT_EVENT, 42, 9, 0, "", 0, "0f6c-origin 1 42 9 0\n"); /* a hint */
    round_trip(CHAT_RT_TYPING, 5, 3, 0, "{\"type\":\"typing\"}", 17, "0f6c-origin 2 5 3 0\n");
    round_trip(CHAT_RT_USER, 3, 0, 0, "r\0ad", 4, "0f6c-origin 3 3 0 0\n");
    round_trip(CHAT_RT_ADDED, 3, 9, 4, "{\"type\":\"added\"}", 16, "0f6c-origin 4 3 9 4\n");
    round_trip(CHAT_RT_ADDED, 3, 9, 0, "", 0, "0f6c-origin 4 3 9 0\n");
    round_trip(CHAT_RT_REMOVED, 3, 9, 0, "x", 1, "0f6c-origin 5 3 9 0\n");
    round_trip(CHAT_RT_EVENT, INT64_MAX, INT64_MAX, INT64_MAX, "m", 1,
               "0f6c-origin 1 9223372036854775807 9223372036854775807 9223372036854775807\n");
}

static void test_payload_malformed_refused(void **state)
{
    static const char *bad[] = {
        "",
        "origin",          /* no space at all */
        "o 1 7 3 0",       /* no newline */
        "o 1 7 3\nf",      /* b missing */
        "o 1 7\nf",        /* a and b missing */
        "o 1\nf",          /* only the kind */
        "o \nf",           /* nothing after the origin */
        "o 1 7 3 0 9\nf",  /* a part too many */
        " 1 7 3 0\nf",     /* empty origin */
        "o\nx 1 7 3 0\nf", /* a newline in the origin */
        "o 0 7 3 0\nf",    /* unknown kinds */
        "o 6 7 3 0\nf",    /* one past CHAT_RT_REMOVED */
        "o 99 7 3 0\nf",
        "o x 7 3 0\nf", /* not digits */
        "o 1 7a 3 0\nf",
        "o 1 -7 3 0\nf", /* a sign */
        "o 1 +7 3 0\nf",
        "o 1 7 -3 0\nf",
        "o 1 7 3 0x\nf",
        "o 1 7  3 0\nf", /* an empty number */
        "o 1 7 3 \nf",
        "o  1 7 3 0\nf",
        "o 1 7 3 0\rf",                   /* not a newline */
        "o 1 0 3 0\nf",                   /* id 0 */
        "o 1 00 3 0\nf",                  /* still 0 */
        "o 1 9223372036854775808 3 0\nf", /* INT64_MAX + 1 */
        "o 1 7 18446744073709551616 0\nf",
        "o 1 7 3 99999999999999999999999\nf",
        "o 18446744073709551617 7 3 0\nf", /* a kind that wraps to 1 */
    };
    for (size_t i = 0; i < CHAT_ARRAY_LEN(bad); i++) {
        const char *origin;
        size_t olen;
        chat_rt_msg_t m;
        if (chat_rt_payload_decode(bad[i], strlen(bad[i]), &origin, &olen, &m) != CHAT_EINVAL)
            fail_msg("accepted: \"%s\"", bad[i]);
    }
    /* The largest numbers are fine, and leading zeros are digits like any other. */
    const char *origin;
    size_t olen;
    chat_rt_msg_t m;
    const char *ok = "o 5 0009223372036854775807 007 0\n";
    assert_int_equal(chat_rt_payload_decode(ok, strlen(ok), &origin, &olen, &m), 0);
    assert_int_equal(m.kind, CHAT_RT_REMOVED);
    assert_int_equal(m.id, INT64_MAX);
    assert_int_equal(m.a, 7);
    assert_int_equal(m.b, 0);
    assert_int_equal(m.len, 0);
    assert_int_equal(olen, 1);
    /* A payload is bounded by its length, not by a NUL. */
    assert_int_equal(chat_rt_payload_decode("o 1 7 3 0\nx", 9, &origin, &olen, &m), CHAT_EINVAL);
    assert_int_equal(chat_rt_payload_decode("o 1 7 3 0\nx", 10, &origin, &olen, &m), 0);
    assert_int_equal(m.len, 0);
}

static void test_origins_and_channels(void **state)
{
    char a[CHAT_RT_ORIGIN_LEN], b[CHAT_RT_ORIGIN_LEN];
    chat_fanout_origin_new(a);
    chat_fanout_origin_new(b);
    assert_int_equal(strlen(a), 36);
    assert_string_not_equal(a, b);
    assert_null(strpbrk(a, " \n"));

    char ch[CHAT_FANOUT_CHANNEL_LEN];
    assert_int_equal(chat_fanout_channel(ch, CHAT_TOPIC_CONV, 7), 13);
    assert_string_equal(ch, "chatd:c:{c:7}");
    assert_int_equal(chat_fanout_channel(ch, CHAT_TOPIC_USER, 3), 13);
    assert_string_equal(ch, "chatd:u:{u:3}");
    assert_int_equal(chat_fanout_channel(ch, CHAT_TOPIC_CONV, INT64_MAX), 31);
    assert_string_equal(ch, "chatd:c:{c:9223372036854775807}");
    assert_int_equal(chat_fanout_channel(ch, CHAT_TOPIC_USER, INT64_MAX), 31);
    assert_string_equal(ch, "chatd:u:{u:9223372036854775807}");
}

/* ---- metrics ---- */

static double counter(const char *direction)
{
    char labels[64];
    snprintf(labels, sizeof labels, "direction=\"%s\"", direction);
    return chat_metric_value(
        chat_metric_series(chat_metrics_counter("chatd_stream_pubsub_total", ""), labels));
}

static void assert_rendered(void)
{
    chat_buf_t b = CHAT_BUF_INIT;
    chat_metrics_render(&b);
    assert_non_null(b.data);
    assert_non_null(strstr(b.data, "# TYPE chatd_stream_pubsub_total counter"));
    assert_non_null(strstr(b.data, "chatd_stream_pubsub_total{direction=\"published\"} "));
    assert_non_null(strstr(b.data, "chatd_stream_pubsub_total{direction=\"received\"} "));
    chat_buf_dispose(&b);
}

/* Runs before any fanout exists: registered alone, the counters render at 0. */
static void test_metrics_rendered_without_redis(void **state)
{
    chat_fanout_metrics_register();
    chat_fanout_metrics_register(); /* once per process, however often asked */
    chat_buf_t b = CHAT_BUF_INIT;
    chat_metrics_render(&b);
    assert_non_null(strstr(b.data, "chatd_stream_pubsub_total{direction=\"published\"} 0\n"));
    assert_non_null(strstr(b.data, "chatd_stream_pubsub_total{direction=\"received\"} 0\n"));
    chat_buf_dispose(&b);
    assert_rendered();
}

/* ---- two instances, each on a loop of its own ---- */

#define MAXMSG 32
#define MAXID 64

typedef struct got {
    chat_rt_msg_t m;
    char frame[64];
} got_t;

typedef struct peer {
    uv_loop_t loop;
    uv_timer_t tick; /* keeps UV_RUN_ONCE from blocking more than 5 ms */
    chat_fanout_t *f;
    char origin[CHAT_RT_ORIGIN_LEN];
    got_t msgs[MAXMSG];
    int n;
    int subscribed[2][MAXID]; /* by topic and id */
    int subscribed_other;
    int closed;
} peer_t;

static void message_cb(const chat_rt_msg_t *m, void *arg)
{
    peer_t *p = arg;
    assert_true(p->n < MAXMSG);
    assert_true(m->len < sizeof p->msgs[0].frame);
    got_t *g = &p->msgs[p->n++];
    g->m = *m;
    memcpy(g->frame, m->frame, m->len);
    g->frame[m->len] = '\0';
    g->m.frame = g->frame;
}

static void subscribed_cb(int topic, int64_t id, void *arg)
{
    peer_t *p = arg;
    if ((topic == CHAT_TOPIC_CONV || topic == CHAT_TOPIC_USER) && id > 0 && id < MAXID)
        p->subscribed[topic][id]++;
    else
        p->subscribed_other++;
}

static const chat_fanout_handler_t handler = {message_cb, subscribed_cb};

static void on_tick(uv_timer_t *t) {}

static void peer_start(peer_t *p, const char *url, int drop_every)
{
    memset(p, 0, sizeof *p);
    assert_int_equal(uv_loop_init(&p->loop), 0);
    uv_timer_init(&p->loop, &p->tick);
    uv_timer_start(&p->tick, on_tick, 5, 5);
    chat_fanout_origin_new(p->origin);
    chat_fanout_config_t cfg = {
        .redis_url = url, .origin = p->origin, .cmd_timeout_ms = 1000, .drop_every = drop_every};
    p->f = chat_fanout_create(&p->loop, &cfg, &handler, p);
    assert_non_null(p->f);
}

static void peer_start_redis(peer_t *p, int drop_every)
{
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", g_port);
    peer_start(p, url, drop_every);
}

static void closed_cb(void *arg)
{
    ((peer_t *)arg)->closed++;
}

/* Closes the fanout; its loop must then end with nothing left. */
static void peer_stop(peer_t *p)
{
    int n = p->n;
    chat_fanout_close(p->f, closed_cb, p);
    uv_close((uv_handle_t *)&p->tick, NULL);
    assert_int_equal(uv_run(&p->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(p->closed, 1);
    assert_int_equal(p->n, n); /* no callback after close */
    assert_int_equal(uv_loop_close(&p->loop), 0);
}

/* Runs the loops of the peers given in turn until cond holds; fails after 5 s. */
#define RUN_UNTIL(peers, np, cond)                                                                 \
    do {                                                                                           \
        uint64_t t0_ = uv_hrtime();                                                                \
        while (!(cond) && ms_since(t0_) < 5000)                                                    \
            for (int k_ = 0; k_ < (np); k_++)                                                      \
                uv_run(&(peers)[k_]->loop, UV_RUN_ONCE);                                           \
        if (!(cond))                                                                               \
            fail_msg("timed out waiting for: %s", #cond);                                          \
    } while (0)

static int publish(peer_t *p, int kind, int64_t id, int64_t a, int64_t b, const char *frame)
{
    chat_rt_msg_t m = {kind, id, a, b, frame, strlen(frame)};
    return chat_fanout_publish(p->f, &m);
}

static void assert_msg(const peer_t *p, int i, int kind, int64_t id, int64_t a, int64_t b,
                       const char *frame)
{
    assert_true(i < p->n);
    const chat_rt_msg_t *m = &p->msgs[i].m;
    assert_int_equal(m->kind, kind);
    assert_int_equal(m->id, id);
    assert_int_equal(m->a, a);
    assert_int_equal(m->b, b);
    assert_int_equal(m->len, strlen(frame));
    assert_string_equal(m->frame, frame);
}

/* SPUBLISH from a connection of our own; the number of subscribers that got it. */
static long long spublish(const char *ch, const char *payload)
{
    redisReply *rep = server_cmd("SPUBLISH %s %b", ch, payload, strlen(payload));
    assert_int_equal(rep->type, REDIS_REPLY_INTEGER);
    long long n = rep->integer;
    freeReplyObject(rep);
    return n;
}

static void test_two_origins(void **state)
{
    peer_t a, b;
    peer_t *both[] = {&a, &b};
    peer_start_redis(&a, 0);
    peer_start_redis(&b, 0);
    chat_fanout_watch(a.f, CHAT_TOPIC_CONV, 5);
    chat_fanout_watch(b.f, CHAT_TOPIC_CONV, 5);
    chat_fanout_watch(b.f, CHAT_TOPIC_CONV, 5); /* once per (topic, id): a no-op */
    chat_fanout_watch(b.f, CHAT_TOPIC_USER, 3);
    RUN_UNTIL(both, 2,
              chat_fanout_ready(a.f) && chat_fanout_ready(b.f) &&
                  a.subscribed[CHAT_TOPIC_CONV][5] == 1 && b.subscribed[CHAT_TOPIC_CONV][5] == 1 &&
                  b.subscribed[CHAT_TOPIC_USER][3] == 1);
    /* each channel confirmed under its own topic, nothing else */
    assert_int_equal(b.subscribed[CHAT_TOPIC_USER][5], 0);
    assert_int_equal(b.subscribed[CHAT_TOPIC_CONV][3], 0);
    assert_int_equal(a.subscribed[CHAT_TOPIC_USER][3], 0);
    assert_int_equal(a.subscribed_other + b.subscribed_other, 0);
    double pub0 = counter("published"), rcv0 = counter("received");

    /* Every kind from A; B watches conversation 5 and user 3, not conversation 6. */
    assert_int_equal(publish(&a, CHAT_RT_EVENT, 5, 1, 0, "ev1"), 0);
    assert_int_equal(publish(&a, CHAT_RT_EVENT, 6, 1, 0, "ev6"), 0);
    assert_int_equal(publish(&a, CHAT_RT_USER, 3, 0, 0, "read3"), 0);
    assert_int_equal(publish(&a, CHAT_RT_ADDED, 3, 9, 4, "added"), 0);
    assert_int_equal(publish(&a, CHAT_RT_REMOVED, 3, 9, 0, ""), 0);
    assert_int_equal(publish(&a, CHAT_RT_TYPING, 5, 3, 0, "typing"), 0);
    assert_int_equal(publish(&a, CHAT_RT_USER, 4, 0, 0, "read4"), 0); /* nobody's */
    RUN_UNTIL(both, 2, b.n == 5);
    assert_msg(&b, 0, CHAT_RT_EVENT, 5, 1, 0, "ev1");
    assert_msg(&b, 1, CHAT_RT_USER, 3, 0, 0, "read3");
    assert_msg(&b, 2, CHAT_RT_ADDED, 3, 9, 4, "added");
    assert_msg(&b, 3, CHAT_RT_REMOVED, 3, 9, 0, "");
    assert_msg(&b, 4, CHAT_RT_TYPING, 5, 3, 0, "typing");

    /*
     * From B on conversation 5: once A has it, A has read everything of its
     * own before it on that channel, and dropped it (A got none of ev1, typing).
     */
    assert_int_equal(publish(&b, CHAT_RT_EVENT, 5, 2, 0, "ev2 from b"), 0);
    RUN_UNTIL(both, 2, a.n == 1);
    assert_msg(&a, 0, CHAT_RT_EVENT, 5, 2, 0, "ev2 from b");
    /* and the other way: B never gets its own ev2 */
    assert_int_equal(publish(&a, CHAT_RT_EVENT, 5, 3, 0, "ev3"), 0);
    RUN_UNTIL(both, 2, b.n == 6);
    assert_msg(&b, 5, CHAT_RT_EVENT, 5, 3, 0, "ev3");

    /* From outside chatd: only whole payloads of another origin are handed on. */
    assert_int_equal(spublish("chatd:c:{c:5}", "garbage"), 2);
    assert_int_equal(spublish("chatd:c:{c:5}", "other 1 5 4 0"), 2);
    assert_int_equal(spublish("chatd:c:{c:5}", "other 9 5 4 0\nx"), 2);
    assert_int_equal(spublish("chatd:c:{c:5}", " 1 5 4 0\nx"), 2);
    assert_int_equal(spublish("chatd:c:{c:5}", "other 1 5 4 0\nraw"), 2);
    RUN_UNTIL(both, 2, a.n == 2 && b.n == 7);
    assert_msg(&a, 1, CHAT_RT_EVENT, 5, 4, 0, "raw");
    assert_msg(&b, 6, CHAT_RT_EVENT, 5, 4, 0, "raw");

    /* A: 8 published, 2 received; B: 1 published, 7 received. */
    assert_true(counter("published") - pub0 == 9);
    assert_true(counter("received") - rcv0 == 9);
    assert_rendered();

    /*
     * B unwatches conversation 5. Watching 8 after it, once confirmed, shows
     * Redis took the unsubscribe (the same connection, in order).
     */
    chat_fanout_unwatch(b.f, CHAT_TOPIC_CONV, 5);
    chat_fanout_unwatch(b.f, CHAT_TOPIC_CONV, 77); /* never watched: nothing */
    chat_fanout_watch(b.f, CHAT_TOPIC_CONV, 8);
    RUN_UNTIL(both, 2, b.subscribed[CHAT_TOPIC_CONV][8] == 1);
    assert_int_equal(spublish("chatd:c:{c:5}", "garbage"), 1); /* A's subscription only */
    assert_int_equal(publish(&a, CHAT_RT_EVENT, 5, 5, 0, "gone"), 0);
    assert_int_equal(publish(&a, CHAT_RT_EVENT, 8, 1, 0, "ev8"), 0);
    RUN_UNTIL(both, 2, b.n == 8);
    assert_msg(&b, 6, CHAT_RT_EVENT, 5, 4, 0, "raw");
    assert_msg(&b, 7, CHAT_RT_EVENT, 8, 1, 0, "ev8");

    peer_stop(&a);
    peer_stop(&b);
}

static void test_drop_every(void **state)
{
    peer_t a, b;
    peer_t *both[] = {&a, &b};
    peer_start_redis(&a, 0);
    peer_start_redis(&b, 3);
    chat_fanout_watch(b.f, CHAT_TOPIC_CONV, 11);
    RUN_UNTIL(both, 2,
              chat_fanout_ready(a.f) && chat_fanout_ready(b.f) &&
                  b.subscribed[CHAT_TOPIC_CONV][11] == 1);
    double rcv0 = counter("received");
    for (int r = 1; r <= 7; r++) {
        char frame[16];
        snprintf(frame, sizeof frame, "e%d", r);
        assert_int_equal(publish(&a, CHAT_RT_EVENT, 11, r, 0, frame), 0);
    }
    assert_int_equal(publish(&a, CHAT_RT_EVENT, 11, 9, 0, ""), 0);   /* a hint: never dropped */
    assert_int_equal(publish(&a, CHAT_RT_TYPING, 11, 3, 0, "t"), 0); /* not an event */
    assert_int_equal(publish(&a, CHAT_RT_EVENT, 11, 12, 0, "e12"), 0);
    assert_int_equal(publish(&a, CHAT_RT_EVENT, 11, 13, 0, "e13"), 0);
    RUN_UNTIL(both, 2, b.n == 8);
    assert_msg(&b, 0, CHAT_RT_EVENT, 11, 1, 0, "e1");
    assert_msg(&b, 1, CHAT_RT_EVENT, 11, 2, 0, "e2");
    assert_msg(&b, 2, CHAT_RT_EVENT, 11, 4, 0, "e4");
    assert_msg(&b, 3, CHAT_RT_EVENT, 11, 5, 0, "e5");
    assert_msg(&b, 4, CHAT_RT_EVENT, 11, 7, 0, "e7");
    assert_msg(&b, 5, CHAT_RT_EVENT, 11, 9, 0, "");
    assert_msg(&b, 6, CHAT_RT_TYPING, 11, 3, 0, "t");
    assert_msg(&b, 7, CHAT_RT_EVENT, 11, 13, 0, "e13");
    /* what was dropped was not counted as received */
    assert_true(counter("received") - rcv0 == 8);
    peer_stop(&a);
    peer_stop(&b);
}

static void test_hint_after_outage(void **state)
{
    peer_t a, b;
    peer_t *both[] = {&a, &b}, *only_b[] = {&b};
    peer_start_redis(&a, 0);
    peer_start_redis(&b, 0);
    chat_fanout_watch(b.f, CHAT_TOPIC_CONV, 21);
    chat_fanout_watch(b.f, CHAT_TOPIC_CONV, 22);
    chat_fanout_watch(b.f, CHAT_TOPIC_USER, 4);
    RUN_UNTIL(both, 2,
              chat_fanout_ready(a.f) && chat_fanout_ready(b.f) &&
                  b.subscribed[CHAT_TOPIC_CONV][21] == 1 &&
                  b.subscribed[CHAT_TOPIC_CONV][22] == 1 && b.subscribed[CHAT_TOPIC_USER][4] == 1);

    server_kill();
    RUN_UNTIL(both, 2, !chat_fanout_ready(a.f) && !chat_fanout_ready(b.f));
    double pub0 = counter("published");
    /* Nothing can be published; the events are remembered, the highest rev of each. */
    assert_int_equal(publish(&a, CHAT_RT_EVENT, 21, 7, 0, "x"), CHAT_EDOWN);
    assert_int_equal(publish(&a, CHAT_RT_EVENT, 21, 9, 0, "y"), CHAT_EDOWN);
    assert_int_equal(publish(&a, CHAT_RT_EVENT, 21, 8, 0, "z"), CHAT_EDOWN);
    assert_int_equal(publish(&a, CHAT_RT_EVENT, 22, 3, 0, "w"), CHAT_EDOWN);
    /* other kinds are not */
    assert_int_equal(publish(&a, CHAT_RT_TYPING, 21, 1, 0, "t"), CHAT_EDOWN);
    assert_int_equal(publish(&a, CHAT_RT_USER, 4, 0, 0, "r"), CHAT_EDOWN);
    assert_true(counter("published") == pub0);

    /*
     * Redis is back. B (its loop alone) subscribes again first, so that the
     * hints A publishes once it can are sure to find it.
     */
    assert_int_equal(server_start(g_port), 0);
    RUN_UNTIL(only_b, 1,
              b.subscribed[CHAT_TOPIC_CONV][21] == 2 && b.subscribed[CHAT_TOPIC_CONV][22] == 2 &&
                  b.subscribed[CHAT_TOPIC_USER][4] == 2);
    assert_int_equal(b.n, 0);
    RUN_UNTIL(both, 2, b.n == 2);
    /* one hint per conversation (in either order): an event with no frame at its highest rev */
    int i21 = b.msgs[0].m.id == 21 ? 0 : 1;
    assert_msg(&b, i21, CHAT_RT_EVENT, 21, 9, 0, "");
    assert_msg(&b, 1 - i21, CHAT_RT_EVENT, 22, 3, 0, "");

    /* Once: an event after them arrives next, with nothing between. */
    assert_int_equal(publish(&a, CHAT_RT_EVENT, 21, 10, 0, "m"), 0);
    RUN_UNTIL(both, 2, b.n == 3);
    assert_msg(&b, 2, CHAT_RT_EVENT, 21, 10, 0, "m");
    assert_true(counter("published") - pub0 == 3);
    peer_stop(&a);
    peer_stop(&b);
}

/* Redis not there at all (a URL that cannot be used): a fanout all the same, publishing nothing. */
static void test_without_redis(void **state)
{
    peer_t p;
    peer_start(&p, "http://127.0.0.1:1", 0);
    assert_false(chat_fanout_ready(p.f));
    chat_fanout_watch(p.f, CHAT_TOPIC_CONV, 1);
    chat_fanout_watch(p.f, CHAT_TOPIC_USER, 1);
    double pub0 = counter("published");
    assert_int_equal(publish(&p, CHAT_RT_EVENT, 1, 1, 0, "e"), CHAT_EDOWN);
    assert_int_equal(publish(&p, CHAT_RT_USER, 1, 0, 0, "u"), CHAT_EDOWN);
    chat_fanout_unwatch(p.f, CHAT_TOPIC_CONV, 1);
    assert_true(counter("published") == pub0);
    /* nothing is remembered for later: the loop ends once the fanout is closed */
    peer_stop(&p);
    assert_int_equal(p.n, 0);
}

int main(void)
{
    const struct CMUnitTest local[] = {
        cmocka_unit_test(test_metrics_rendered_without_redis),
        cmocka_unit_test(test_payload_round_trip_every_kind),
        cmocka_unit_test(test_payload_malformed_refused),
        cmocka_unit_test(test_origins_and_channels),
        cmocka_unit_test(test_without_redis),
    };
    const struct CMUnitTest redis[] = {
        cmocka_unit_test(test_two_origins),
        cmocka_unit_test(test_drop_every),
        cmocka_unit_test(test_hint_after_outage),
    };
    signal(SIGPIPE, SIG_IGN);
    int failed = cmocka_run_group_tests_name("local", local, NULL, NULL);
    return failed + cmocka_run_group_tests_name("redis", redis, group_setup, group_teardown);
}
