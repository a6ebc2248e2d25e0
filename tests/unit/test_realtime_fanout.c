/*
 * Unit tests of realtime/fanout.c and realtime/stream.c: the payload codec
 * (round trip, malformed payloads refused), and against a real redis-server
 * started here as a child, two hubs standing for two instances (one with two
 * workers) that see each other's frames once and never their own.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "realtime/stream.c"

#include "core/error.h"
#include "core/metrics.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- the codec ---- */

static void test_payload_round_trip(void **state)
{
    const int64_t ids[] = {1, 42, INT64_MAX, 7};
    const char frame[] = "{\"type\":\"message\",\"message\":{\"body\":\"a b\\nc\"}}\n two";
    chat_buf_t b = CHAT_BUF_INIT;
    chat_fanout_payload_encode(&b, "0f6c-origin", ids, 4, frame, sizeof frame - 1);
    const char *head = "0f6c-origin 1,42,9223372036854775807,7\n";
    assert_int_equal(memcmp(b.data, head, strlen(head)), 0);

    chat_fanout_payload_t pl;
    assert_int_equal(chat_fanout_payload_decode(b.data, b.len, &pl), 0);
    assert_int_equal(pl.origin_len, strlen("0f6c-origin"));
    assert_memory_equal(pl.origin, "0f6c-origin", pl.origin_len);
    assert_int_equal(pl.n, 4);
    assert_memory_equal(pl.members, ids, sizeof ids);
    assert_int_equal(pl.len, sizeof frame - 1);
    assert_memory_equal(pl.frame, frame, pl.len);
    chat_fanout_payload_dispose(&pl);
    assert_null(pl.members);

    /* One id and an empty frame. */
    chat_buf_reset(&b);
    chat_fanout_payload_encode(&b, "o", ids, 1, "", 0);
    assert_string_equal(b.data, "o 1\n");
    assert_int_equal(chat_fanout_payload_decode(b.data, b.len, &pl), 0);
    assert_int_equal(pl.n, 1);
    assert_int_equal(pl.members[0], 1);
    assert_int_equal(pl.len, 0);
    chat_fanout_payload_dispose(&pl);
    chat_buf_dispose(&b);
}

static void test_payload_malformed_refused(void **state)
{
    static const char *bad[] = {
        "",
        "no-space-at-all",
        "origin 1,2,3",                       /* no newline */
        " 1\nframe",                          /* empty origin */
        "origin \nframe",                     /* no ids */
        "origin 1,,2\nframe",                 /* empty item */
        "origin 1,\nframe",                   /* trailing comma */
        "origin ,1\nframe",                   /* leading comma */
        "origin -1\nframe",                   /* sign */
        "origin +1\nframe",                   /* sign */
        "origin 0\nframe",                    /* not a user id */
        "origin 1,0\nframe",                  /* likewise, after a good one */
        "origin 12a\nframe",                  /* stray byte */
        "origin 1 2\nframe",                  /* space in the list */
        "origin 1, 2\nframe",                 /* likewise */
        "origin 9223372036854775808\nframe",  /* INT64_MAX + 1 */
        "origin 18446744073709551617\nframe", /* past uint64 too */
        "origin 1,99999999999999999999999\nframe",
    };
    for (size_t i = 0; i < CHAT_ARRAY_LEN(bad); i++) {
        chat_fanout_payload_t pl = {0};
        if (chat_fanout_payload_decode(bad[i], strlen(bad[i]), &pl) != CHAT_EINVAL)
            fail_msg("accepted: %s", bad[i]);
        assert_null(pl.members);
    }
    /* The largest id is fine, and leading zeros are digits like any other. */
    chat_fanout_payload_t pl;
    const char *ok = "o 9223372036854775807,007\n";
    assert_int_equal(chat_fanout_payload_decode(ok, strlen(ok), &pl), 0);
    assert_int_equal(pl.members[0], INT64_MAX);
    assert_int_equal(pl.members[1], 7);
    chat_fanout_payload_dispose(&pl);
    /* A payload is bounded by its length, not by a NUL. */
    assert_int_equal(chat_fanout_payload_decode("o 12\nx", 4, &pl), CHAT_EINVAL);
}

static void test_origins_differ(void **state)
{
    char a[CHAT_FANOUT_ORIGIN_LEN], b[CHAT_FANOUT_ORIGIN_LEN];
    chat_fanout_origin_new(a);
    chat_fanout_origin_new(b);
    assert_int_equal(strlen(a), 36);
    assert_string_not_equal(a, b);
    assert_null(strpbrk(a, " \n"));
}

/* ---- a redis-server of our own ---- */

#define REDIS_SERVER "/usr/bin/redis-server"
/* CHATD_TEST_UNIT_REDIS_PORT names the port; else the first free one here. */
#define PORT_LO 26420
#define PORT_HI 26439

static int g_port;
static pid_t g_pid;

static int port_free(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int one = 1, ok, fd = socket(AF_INET, SOCK_STREAM, 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    ok = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

static redisContext *connect_sync(int port)
{
    struct timeval tv = {0, 200000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (c && c->err) {
        redisFree(c);
        return NULL;
    }
    return c;
}

static int server_start(int port)
{
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 1);
        dup2(devnull, 2);
        execl(REDIS_SERVER, "redis-server", "--port", ps, "--bind", "127.0.0.1", "--save", "",
              "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 250; i++) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid)
            return -1;
        redisContext *c = connect_sync(port);
        if (c) {
            redisFree(c);
            g_pid = pid;
            return 0;
        }
        usleep(20000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

static int group_setup(void **state)
{
    if (access(REDIS_SERVER, X_OK) != 0) {
        fprintf(stderr, "test_realtime_fanout: %s not found (Debian package redis-server)\n",
                REDIS_SERVER);
        return -1;
    }
    const char *env = getenv("CHATD_TEST_UNIT_REDIS_PORT");
    int lo = env ? atoi(env) : PORT_LO, hi = env ? lo : PORT_HI;
    for (int p = lo; p > 0 && p <= hi; p++) {
        if (port_free(p) && server_start(p) == 0) {
            g_port = p;
            return 0;
        }
    }
    fprintf(stderr, "test_realtime_fanout: no free port in %d-%d for redis-server\n", lo, hi);
    return -1;
}

static void server_kill(void)
{
    if (g_pid > 0) {
        kill(g_pid, SIGKILL);
        waitpid(g_pid, NULL, 0);
        g_pid = 0;
    }
}

static int group_teardown(void **state)
{
    server_kill();
    return 0;
}

/* Publishes a raw payload on the channel, as another instance (or anyone) would. */
static void publish_raw(const char *payload)
{
    redisContext *c = connect_sync(g_port);
    assert_non_null(c);
    redisReply *r = redisCommand(c, "PUBLISH %s %b", CHAT_FANOUT_CHANNEL, payload, strlen(payload));
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    freeReplyObject(r);
    redisFree(c);
}

/* ---- the loop ---- */

typedef struct seen {
    int count[128]; /* by the frame's first byte */
    int total;
} seen_t;

static void record_cb(const char *frame, size_t len, void *ud)
{
    seen_t *s = ud;
    if (len > 0)
        s->count[(unsigned char)frame[0] & 127]++;
    s->total++;
}

static void on_tick(uv_timer_t *t) {}

static double ms_since(uint64_t t0)
{
    return (double)(uv_hrtime() - t0) / 1e6;
}

typedef int (*pred_fn)(void *arg);

static int run_until(uv_loop_t *loop, pred_fn pred, void *arg, int ms)
{
    uint64_t t0 = uv_hrtime();
    while (!pred(arg) && ms_since(t0) < ms)
        uv_run(loop, UV_RUN_ONCE);
    return pred(arg);
}

typedef struct want {
    seen_t **seen;
    size_t n;
    char c;
} want_t;

static int all_got(void *arg)
{
    want_t *w = arg;
    for (size_t i = 0; i < w->n; i++)
        if (w->seen[i]->count[(int)w->c] == 0)
            return 0;
    return 1;
}

typedef struct streams {
    chat_stream_t **s;
    size_t n;
} streams_t;

static int all_ready(void *arg)
{
    streams_t *st = arg;
    for (size_t i = 0; i < st->n; i++)
        if (!chat_fanout_ready(st->s[i]->fanout))
            return 0;
    return 1;
}

static double counter(const char *labels)
{
    return chat_metric_value(
        chat_metric_series(chat_metrics_counter("chatd_stream_pubsub_total", ""), labels));
}

static void closed_count(void *arg)
{
    (*(int *)arg)++;
}

static chat_stream_t *mkstream(uv_loop_t *loop, chat_hub_t *hub, int index, const char *origin,
                               int port)
{
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
    chat_stream_config_t sc = {
        .hub = hub, .index = index, .redis_url = url, .origin = origin, .cmd_timeout_ms = 1000};
    return chat_stream_create(loop, &sc);
}

static void test_two_instances_see_each_other_once(void **state)
{
    uv_loop_t loop;
    uv_timer_t tick;
    assert_int_equal(uv_loop_init(&loop), 0);
    uv_timer_init(&loop, &tick);
    uv_timer_start(&tick, on_tick, 5, 5);

    /* Instance A has two workers, B one; all on this loop. */
    char oa[CHAT_FANOUT_ORIGIN_LEN], ob[CHAT_FANOUT_ORIGIN_LEN];
    chat_fanout_origin_new(oa);
    chat_fanout_origin_new(ob);
    chat_hub_t *ha = chat_hub_create(2), *hb = chat_hub_create(1);
    chat_stream_t *s[3] = {mkstream(&loop, ha, 0, oa, g_port), mkstream(&loop, ha, 1, oa, g_port),
                           mkstream(&loop, hb, 0, ob, g_port)};
    streams_t st = {s, 3};
    assert_true(run_until(&loop, all_ready, &st, 5000));

    seen_t a0 = {0}, a1 = {0}, b0 = {0}, b_other = {0};
    chat_stream_sub_t *subs[4] = {
        chat_stream_subscribe(s[0], 7, record_cb, &a0),
        chat_stream_subscribe(s[1], 7, record_cb, &a1),
        chat_stream_subscribe(s[2], 7, record_cb, &b0),
        chat_stream_subscribe(s[2], 8, record_cb, &b_other),
    };
    seen_t *all[] = {&a0, &a1, &b0};
    double pub0 = counter("direction=\"published\""), rcv0 = counter("direction=\"received\"");

    const int64_t to7[] = {7};
    chat_stream_publish(s[0], to7, 1, "a from A", 8);
    want_t wa = {all, 3, 'a'};
    assert_true(run_until(&loop, all_got, &wa, 3000));
    chat_stream_publish(s[2], to7, 1, "b from B", 8);
    want_t wb = {all, 3, 'b'};
    assert_true(run_until(&loop, all_got, &wb, 3000));
    chat_stream_publish(s[1], to7, 1, "c from A's other worker", 23);
    want_t wc = {all, 3, 'c'};
    assert_true(run_until(&loop, all_got, &wc, 3000));

    /* Another origin; then payloads that are not chatd's, ignored. */
    publish_raw("someone-else 7,8\nf from elsewhere");
    publish_raw("garbage");
    publish_raw("someone-else 7");
    publish_raw("someone-else 7,x\ng");
    /*
     * The last word, from outside: each subscription has read everything
     * before it, own echoes included, once this has arrived everywhere.
     */
    publish_raw("someone-else 7\nz");
    want_t wz = {all, 3, 'z'};
    assert_true(run_until(&loop, all_got, &wz, 3000));

    for (size_t i = 0; i < CHAT_ARRAY_LEN(all); i++) {
        for (const char *c = "abcfz"; *c; c++)
            if (all[i]->count[(int)*c] != 1)
                fail_msg("socket %zu got frame %c %d times", i, *c, all[i]->count[(int)*c]);
        assert_int_equal(all[i]->total, 5);
    }
    assert_int_equal(b_other.total, 1); /* f only */
    assert_int_equal(b_other.count['f'], 1);
    assert_true(counter("direction=\"published\"") - pub0 == 3);
    /* A's two workers: b, f, z each; B: a, c, f, z. Own echoes are not counted. */
    assert_true(counter("direction=\"received\"") - rcv0 == 10);

    for (int i = 0; i < 4; i++)
        chat_stream_unsubscribe(s[i < 3 ? i : 2], subs[i]);
    int closed = 0;
    for (int i = 0; i < 3; i++)
        chat_stream_close(s[i], closed_count, &closed);
    uv_close((uv_handle_t *)&tick, NULL);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(closed, 3);
    chat_hub_destroy(ha);
    chat_hub_destroy(hb);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static int got_any(void *arg)
{
    return ((seen_t *)arg)->total > 0;
}

static int none_ready(void *arg)
{
    streams_t *st = arg;
    for (size_t i = 0; i < st->n; i++)
        if (chat_fanout_ready(st->s[i]->fanout))
            return 0;
    return 1;
}

static void test_redis_lost_still_delivers_in_process(void **state)
{
    uv_loop_t loop;
    uv_timer_t tick;
    assert_int_equal(uv_loop_init(&loop), 0);
    uv_timer_init(&loop, &tick);
    uv_timer_start(&tick, on_tick, 5, 5);
    char o[CHAT_FANOUT_ORIGIN_LEN];
    chat_fanout_origin_new(o);
    chat_hub_t *hub = chat_hub_create(2);
    chat_stream_t *s[2] = {mkstream(&loop, hub, 0, o, g_port), mkstream(&loop, hub, 1, o, g_port)};
    streams_t st = {s, 2};
    assert_true(run_until(&loop, all_ready, &st, 5000));

    server_kill();
    assert_true(run_until(&loop, none_ready, &st, 5000));
    seen_t seen = {0};
    chat_stream_sub_t *sub = chat_stream_subscribe(s[1], 9, record_cb, &seen);
    const int64_t to9[] = {9};
    double pub0 = counter("direction=\"published\"");
    assert_int_equal(chat_fanout_publish(s[0]->fanout, to9, 1, "x", 1), CHAT_EDOWN);
    chat_stream_publish(s[0], to9, 1, "m", 1);
    chat_stream_publish(NULL, to9, 1, "n", 1); /* no realtime: nothing */
    assert_true(run_until(&loop, got_any, &seen, 3000));
    assert_int_equal(seen.count['m'], 1);
    assert_true(counter("direction=\"published\"") == pub0);

    /* Back: both ways again, by themselves. */
    assert_int_equal(server_start(g_port), 0);
    assert_true(run_until(&loop, all_ready, &st, 5000));

    chat_stream_unsubscribe(s[1], sub);
    int closed = 0;
    chat_stream_close(s[0], closed_count, &closed);
    chat_stream_close(s[1], closed_count, &closed);
    uv_close((uv_handle_t *)&tick, NULL);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(closed, 2);
    assert_int_equal(seen.total, 1);
    chat_hub_destroy(hub);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_no_redis_url_keeps_to_the_process(void **state)
{
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    chat_hub_t *hub = chat_hub_create(1);
    chat_stream_config_t sc = {.hub = hub, .index = 0};
    chat_stream_t *s = chat_stream_create(&loop, &sc);
    assert_null(s->fanout);
    /* The counters are rendered without Redis too (this test runs before any fanout exists). */
    chat_buf_t m = CHAT_BUF_INIT;
    chat_metrics_render(&m);
    assert_non_null(strstr(m.data, "chatd_stream_pubsub_total{direction=\"published\"} 0"));
    assert_non_null(strstr(m.data, "chatd_stream_pubsub_total{direction=\"received\"} 0"));
    assert_non_null(strstr(m.data, "chatd_stream_frames_delivered_total 0"));
    chat_buf_dispose(&m);
    seen_t seen = {0};
    chat_stream_sub_t *sub = chat_stream_subscribe(s, 9, record_cb, &seen);
    const int64_t to9[] = {9};
    chat_stream_publish(s, to9, 1, "m", 1);
    assert_int_equal(seen.total, 0); /* never from inside the publish */
    assert_true(run_until(&loop, got_any, &seen, 3000));
    chat_stream_unsubscribe(s, sub);
    int closed = 0;
    chat_stream_close(s, closed_count, &closed);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(closed, 1);
    chat_hub_destroy(hub);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest codec[] = {
        cmocka_unit_test(test_payload_round_trip),
        cmocka_unit_test(test_payload_malformed_refused),
        cmocka_unit_test(test_origins_differ),
        cmocka_unit_test(test_no_redis_url_keeps_to_the_process),
    };
    const struct CMUnitTest redis[] = {
        cmocka_unit_test(test_two_instances_see_each_other_once),
        cmocka_unit_test(test_redis_lost_still_delivers_in_process),
    };
    signal(SIGPIPE, SIG_IGN);
    int failed = cmocka_run_group_tests_name("codec", codec, NULL, NULL);
    return failed + cmocka_run_group_tests_name("redis", redis, group_setup, group_teardown);
}
