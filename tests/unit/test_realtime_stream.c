/*
 * Unit tests of realtime/stream.c through its public API, on one worker
 * (a hub of one) without Redis, with an in-memory event log as the loader:
 * conversations whose events are frames as chat_encode_event writes them,
 * members, and the three reads answered from the loop a moment later (or
 * held until a test lets them go). Covered: events delivered in rev order
 * whatever order they come in, a lost event filled from the loader after
 * the grace with one read per conversation for every socket, a lost last
 * event found by the stream's own check of the conversation's rev, events
 * committed before the follow began read back, resumes (from the loader,
 * from the kept frames, more than 1000 missing, conversations not
 * followed, before the memberships are known, one at a time), typing
 * frames, added and removed, and sockets or the stream leaving while
 * reads are out (ASan checks the memory).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/buf.h"
#include "core/error.h"
#include "core/list.h"
#include "realtime/stream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the event log ---- */

#define NCONV 32
#define NUSER 256

enum { OP_EVENTS, OP_REVS, OP_MEMBERSHIPS };

typedef struct store {
    uv_loop_t *loop;
    bool exists[NCONV];
    int64_t rev[NCONV]; /* the conversation's rev: its events are 1..rev */
    bool member[NUSER][NCONV];
    int events_calls[NCONV];
    int revs_calls, memberships_calls;
    bool hold[3];     /* by OP_*: reads asked are kept until store_release */
    chat_list_t held; /* op_t.link */
    int held_n;
} store_t;

typedef struct op {
    uv_timer_t timer;
    store_t *st;
    int kind;
    int64_t conv, user, after;
    int limit;
    int64_t *convs, *revs;
    size_t n;
    chat_stream_events_cb ecb;
    chat_stream_revs_cb rcb;
    void *arg;
    chat_list_t link;
} op_t;

/* An event's frame, as chat_encode_event writes it (strings with braces and escapes inside). */
static void ev_frame(chat_buf_t *b, int64_t conv, int64_t rev)
{
    chat_buf_printf(b,
                    "{\"type\":\"message\",\"conversation_id\":%lld,\"rev\":%lld,\"message\":{"
                    "\"id\":\"m%lld-%lld\",\"seq\":%lld,\"body\":\"}{ \\\"q\\\" \\\\ %lld\"}}",
                    (long long)conv, (long long)rev, (long long)conv, (long long)rev,
                    (long long)rev, (long long)rev);
}

static bool can_read(const store_t *st, int64_t conv, int64_t user)
{
    return conv > 0 && conv < NCONV && user > 0 && user < NUSER && st->exists[conv] &&
           st->member[user][conv];
}

static void op_free(uv_handle_t *h)
{
    free(h->data);
}

/* Answers from the log as it is now, like a read of the database. */
static void answer(uv_timer_t *t)
{
    op_t *op = t->data;
    store_t *st = op->st;
    if (op->kind == OP_EVENTS) {
        if (!can_read(st, op->conv, op->user)) {
            op->ecb(CHAT_ENOTFOUND, NULL, 0, op->arg);
        } else {
            chat_buf_t b = CHAT_BUF_INIT;
            int64_t rev = st->rev[op->conv];
            chat_buf_printf(&b, "{\"conversation_id\":%lld,\"rev\":%lld,\"events\":[",
                            (long long)op->conv, (long long)rev);
            for (int64_t r = op->after + 1; r <= rev && r <= op->after + op->limit; r++) {
                if (r > op->after + 1)
                    chat_buf_putc(&b, ',');
                ev_frame(&b, op->conv, r);
            }
            chat_buf_puts(&b, "]}");
            op->ecb(0, b.data, b.len, op->arg);
            chat_buf_dispose(&b);
        }
    } else {
        int64_t convs[NCONV], revs[NCONV];
        size_t k = 0;
        if (op->kind == OP_REVS) {
            for (size_t i = 0; i < op->n; i++) {
                int64_t c = op->convs[i];
                if (c > 0 && c < NCONV && st->exists[c]) {
                    convs[k] = c;
                    revs[k++] = st->rev[c];
                }
            }
        } else {
            k = op->n;
            memcpy(convs, op->convs, k * sizeof *convs);
            memcpy(revs, op->revs, k * sizeof *revs);
        }
        op->rcb(0, convs, revs, k, op->arg);
    }
    uv_close((uv_handle_t *)&op->timer, op_free);
}

static void op_start(op_t *op)
{
    uv_timer_init(op->st->loop, &op->timer);
    op->timer.data = op;
    uv_timer_start(&op->timer, answer, 0, 0);
}

static void op_ask(store_t *st, op_t *op)
{
    op->st = st;
    chat_list_init(&op->link);
    if (st->hold[op->kind]) {
        chat_list_insert_tail(&st->held, &op->link);
        st->held_n++;
    } else {
        op_start(op);
    }
}

/* Lets every held read answer (from the loop) and holds no more. */
static void store_release(store_t *st)
{
    for (int i = 0; i < 3; i++)
        st->hold[i] = false;
    chat_list_t *e, *tmp;
    CHAT_LIST_FOREACH_SAFE(e, tmp, &st->held)
    {
        op_t *op = CHAT_CONTAINER_OF(e, op_t, link);
        chat_list_remove(e);
        st->held_n--;
        op_start(op);
    }
}

static void load_events(void *ctx, int64_t conv, int64_t user, int64_t after, int limit,
                        chat_stream_events_cb cb, void *arg)
{
    store_t *st = ctx;
    op_t *op = calloc(1, sizeof *op);
    assert_non_null(op);
    *op = (op_t){.kind = OP_EVENTS,
                 .conv = conv,
                 .user = user,
                 .after = after,
                 .limit = limit,
                 .ecb = cb,
                 .arg = arg};
    assert_true(conv > 0 && conv < NCONV);
    assert_true(limit > 0);
    st->events_calls[conv]++;
    op_ask(st, op);
}

/* The (conversation) arguments are copied: the caller's array is its own. */
static op_t *revs_op(int kind, chat_stream_revs_cb cb, void *arg)
{
    op_t *op = calloc(1, sizeof *op + 2 * NCONV * sizeof(int64_t));
    assert_non_null(op);
    op->kind = kind;
    op->rcb = cb;
    op->arg = arg;
    op->convs = (int64_t *)(op + 1);
    op->revs = op->convs + NCONV;
    return op;
}

static void load_revs(void *ctx, const int64_t *convs, size_t n, chat_stream_revs_cb cb, void *arg)
{
    store_t *st = ctx;
    op_t *op = revs_op(OP_REVS, cb, arg);
    assert_true(n > 0 && n <= NCONV);
    memcpy(op->convs, convs, n * sizeof *convs);
    op->n = n;
    st->revs_calls++;
    op_ask(st, op);
}

static void load_memberships(void *ctx, int64_t user, chat_stream_revs_cb cb, void *arg)
{
    store_t *st = ctx;
    op_t *op = revs_op(OP_MEMBERSHIPS, cb, arg);
    op->user = user;
    /* the read runs now; its answer comes later, maybe after changes it does not show */
    for (int64_t c = 1; c < NCONV; c++) {
        if (can_read(st, c, user)) {
            op->convs[op->n] = c;
            op->revs[op->n++] = st->rev[c];
        }
    }
    st->memberships_calls++;
    op_ask(st, op);
}

static void store_conv(store_t *st, int64_t conv, int64_t rev)
{
    st->exists[conv] = true;
    st->rev[conv] = rev;
}

/* ---- what a socket was sent ---- */

typedef struct rec {
    char **f;
    size_t *len;
    int n, cap;
    int ready; /* ready callbacks seen */
    int ready_err;
} rec_t;

static void ready_cb(int err, void *ud)
{
    rec_t *r = ud;
    r->ready++;
    r->ready_err = err;
}

static void write_cb(const char *frame, size_t len, void *ud)
{
    rec_t *r = ud;
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 16;
        r->f = realloc(r->f, (size_t)r->cap * sizeof *r->f);
        r->len = realloc(r->len, (size_t)r->cap * sizeof *r->len);
        assert_true(r->f && r->len);
    }
    r->f[r->n] = malloc(len + 1);
    assert_non_null(r->f[r->n]);
    memcpy(r->f[r->n], frame, len);
    r->f[r->n][len] = '\0';
    r->len[r->n++] = len;
}

static void rec_dispose(rec_t *r)
{
    for (int i = 0; i < r->n; i++)
        free(r->f[i]);
    free(r->f);
    free(r->len);
    memset(r, 0, sizeof *r);
}

static void expect_text(const rec_t *r, int i, const char *want)
{
    if (i >= r->n)
        fail_msg("frame %d missing (%d sent), wanted %s", i, r->n, want);
    if (r->len[i] != strlen(want) || memcmp(r->f[i], want, r->len[i]) != 0)
        fail_msg("frame %d is %s, wanted %s", i, r->f[i], want);
}

static void expect_event(const rec_t *r, int i, int64_t conv, int64_t rev)
{
    chat_buf_t b = CHAT_BUF_INIT;
    ev_frame(&b, conv, rev);
    expect_text(r, i, b.data);
    chat_buf_dispose(&b);
}

/* Frames from..from+n-1 of r are the events first..first+n-1 of conv. */
static void expect_events(const rec_t *r, int from, int64_t conv, int64_t first, int n)
{
    for (int k = 0; k < n; k++)
        expect_event(r, from + k, conv, first + k);
}

/* ---- a worker: loop, hub of one, stream ---- */

typedef struct env {
    uv_loop_t loop;
    uv_timer_t tick; /* keeps UV_RUN_ONCE from blocking more than 5 ms */
    chat_hub_t *hub;
    chat_stream_t *s;
    store_t st;
    int closed;
} env_t;

static void on_tick(uv_timer_t *t) {}

static void env_init(env_t *e)
{
    memset(e, 0, sizeof *e);
    assert_int_equal(uv_loop_init(&e->loop), 0);
    uv_timer_init(&e->loop, &e->tick);
    uv_timer_start(&e->tick, on_tick, 5, 5);
    e->st.loop = &e->loop;
    chat_list_init(&e->st.held);
    e->hub = chat_hub_create(1);
    chat_stream_config_t cfg = {
        .hub = e->hub,
        .index = 0,
        .redis_url = NULL,
        .origin = "test-origin",
        .cmd_timeout_ms = 100,
        .loader = {load_events, load_revs, load_memberships, &e->st},
    };
    e->s = chat_stream_create(&e->loop, &cfg);
    assert_non_null(e->s);
}

static double ms_since(uint64_t t0)
{
    return (double)(uv_hrtime() - t0) / 1e6;
}

#define RUN_UNTIL(e, cond)                                                                         \
    do {                                                                                           \
        uint64_t t0_ = uv_hrtime();                                                                \
        while (!(cond) && ms_since(t0_) < 5000)                                                    \
            uv_run(&(e)->loop, UV_RUN_ONCE);                                                       \
        if (!(cond))                                                                               \
            fail_msg("line %d: timed out waiting for: %s", __LINE__, #cond);                       \
    } while (0)

typedef struct timers {
    const uv_handle_t *skip;
    int active;
} timers_t;

static void count_timer(uv_handle_t *h, void *arg)
{
    timers_t *t = arg;
    if (h->type == UV_TIMER && uv_is_active(h) && h != t->skip)
        t->active++;
}

/*
 * No timer running but our tick: the stream waits for nothing by itself
 * (no grace, no retry, no check due) and no read is answering. Held reads
 * are not timers: they wait for the test.
 */
static bool idle(env_t *e)
{
    timers_t t = {(const uv_handle_t *)&e->tick, 0};
    uv_walk(&e->loop, count_timer, &t);
    return t.active == 0;
}

/* Lets what was posted arrive, then runs until the stream is idle. */
static void settle(env_t *e)
{
    uv_run(&e->loop, UV_RUN_ONCE);
    RUN_UNTIL(e, idle(e));
}

static void closed_cb(void *arg)
{
    ((env_t *)arg)->closed++;
}

/* Closes the stream (every socket gone), lets held reads answer: nothing may be left. */
static void env_done(env_t *e)
{
    chat_stream_close(e->s, closed_cb, e);
    store_release(&e->st);
    uv_close((uv_handle_t *)&e->tick, NULL);
    assert_int_equal(uv_run(&e->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(e->closed, 1);
    chat_hub_destroy(e->hub);
    assert_int_equal(uv_loop_close(&e->loop), 0);
}

/* A committed event, handed to the stream as the chat domain does after its commit. */
static void publish_event(env_t *e, int64_t conv, int64_t rev)
{
    chat_buf_t b = CHAT_BUF_INIT;
    ev_frame(&b, conv, rev);
    chat_rt_msg_t m = {CHAT_RT_EVENT, conv, rev, 0, b.data, b.len};
    chat_stream_publish(e->s, &m);
    chat_buf_dispose(&b);
}

static void publish_user(env_t *e, int kind, int64_t user, int64_t conv, int64_t rev,
                         const char *frame)
{
    chat_rt_msg_t m = {kind, user, conv, rev, frame, strlen(frame)};
    chat_stream_publish(e->s, &m);
}

static int resume1(env_t *e, chat_stream_sub_t *sub, int64_t conv, int64_t pos)
{
    return chat_stream_resume(e->s, sub, &conv, &pos, 1);
}

/* ---- order ---- */

static void test_out_of_order_delivered_in_rev_order(void **state)
{
    env_t e;
    env_init(&e);
    store_conv(&e.st, 1, 1);
    e.st.member[10][1] = e.st.member[11][1] = true;
    rec_t a = {0}, a2 = {0}, b = {0};
    chat_stream_sub_t *sa = chat_stream_subscribe(e.s, 10, write_cb, ready_cb, &a);
    chat_stream_sub_t *sa2 = chat_stream_subscribe(e.s, 10, write_cb, ready_cb, &a2);
    chat_stream_sub_t *sb = chat_stream_subscribe(e.s, 11, write_cb, ready_cb, &b);
    settle(&e);
    assert_true(chat_stream_follows(sa, 1) && chat_stream_follows(sa2, 1) &&
                chat_stream_follows(sb, 1));
    assert_false(chat_stream_follows(sa, 2));
    /* each told once that its memberships are read */
    assert_true(a.ready == 1 && a2.ready == 1 && b.ready == 1);
    assert_int_equal(a.ready_err, 0);

    /* Reads would wait: what arrives is the stream's own ordering. */
    e.st.hold[OP_EVENTS] = true;
    e.st.rev[1] = 3;
    publish_event(&e, 1, 3);
    publish_event(&e, 1, 2);
    settle(&e);
    rec_t *all[] = {&a, &a2, &b};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(all[i]->n, 2);
        expect_event(all[i], 0, 1, 2);
        expect_event(all[i], 1, 1, 3);
    }

    /* Again, twice, and an old one: each socket gets each rev once. */
    e.st.rev[1] = 4;
    publish_event(&e, 1, 4);
    publish_event(&e, 1, 4);
    publish_event(&e, 1, 3);
    publish_event(&e, 1, 1);
    settle(&e);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(all[i]->n, 3);
        expect_event(all[i], 2, 1, 4);
    }
    assert_int_equal(e.st.events_calls[1], 0);
    assert_int_equal(e.st.held_n, 0);

    /* A conversation nobody here follows: nothing. */
    publish_event(&e, 2, 1);
    settle(&e);
    for (int i = 0; i < 3; i++)
        assert_int_equal(all[i]->n, 3);

    chat_stream_unsubscribe(e.s, sa);
    chat_stream_unsubscribe(e.s, sa2);
    chat_stream_unsubscribe(e.s, sb);
    env_done(&e);
    rec_dispose(&a);
    rec_dispose(&a2);
    rec_dispose(&b);
}

#define NSOCK 9

static void test_lost_event_filled_once_per_conversation(void **state)
{
    env_t e;
    env_init(&e);
    store_conv(&e.st, 2, 5);
    rec_t r[NSOCK] = {0};
    chat_stream_sub_t *sub[NSOCK];
    for (int i = 0; i < NSOCK; i++) {
        int64_t user = 20 + (i < 2 ? 0 : i); /* user 20 has two sockets */
        e.st.member[user][2] = true;
        sub[i] = chat_stream_subscribe(e.s, user, write_cb, ready_cb, &r[i]);
    }
    settle(&e);
    for (int i = 0; i < NSOCK; i++)
        assert_true(chat_stream_follows(sub[i], 2));

    /* 6, 7 and 8 committed; 7 never comes. */
    e.st.rev[2] = 8;
    publish_event(&e, 2, 6);
    publish_event(&e, 2, 8);
    RUN_UNTIL(&e, r[0].n >= 1);
    for (int i = 0; i < NSOCK; i++) {
        assert_int_equal(r[i].n, 1); /* 8 waits for 7 */
        expect_event(&r[i], 0, 2, 6);
    }
    /* After the grace, one read fills the gap for every socket. */
    RUN_UNTIL(&e, r[NSOCK - 1].n >= 3);
    settle(&e);
    for (int i = 0; i < NSOCK; i++) {
        assert_int_equal(r[i].n, 3);
        expect_events(&r[i], 0, 2, 6, 3);
    }
    assert_int_equal(e.st.events_calls[2], 1);

    /* And on from there. */
    e.st.rev[2] = 9;
    publish_event(&e, 2, 9);
    settle(&e);
    for (int i = 0; i < NSOCK; i++) {
        assert_int_equal(r[i].n, 4);
        expect_event(&r[i], 3, 2, 9);
        chat_stream_unsubscribe(e.s, sub[i]);
    }
    assert_int_equal(e.st.events_calls[2], 1);
    env_done(&e);
    for (int i = 0; i < NSOCK; i++)
        rec_dispose(&r[i]);
}

/* An event lost with nothing after it: the stream's check of the rev finds it. */
static void test_lost_last_event_found(void **state)
{
    env_t e;
    env_init(&e);
    store_conv(&e.st, 13, 1);
    e.st.member[130][13] = true;
    rec_t a = {0};
    chat_stream_sub_t *sa = chat_stream_subscribe(e.s, 130, write_cb, ready_cb, &a);
    settle(&e);
    assert_true(chat_stream_follows(sa, 13));

    e.st.rev[13] = 3;
    publish_event(&e, 13, 2); /* 3 is lost, and no event comes after it */
    RUN_UNTIL(&e, a.n >= 2);
    settle(&e);
    assert_int_equal(a.n, 2);
    expect_events(&a, 0, 13, 2, 2);
    assert_int_equal(e.st.events_calls[13], 1);

    chat_stream_unsubscribe(e.s, sa);
    env_done(&e);
    rec_dispose(&a);
}

/* Committed after the memberships were read, before the conversation's rev was: read back. */
static void test_events_before_the_follow_read_back(void **state)
{
    env_t e;
    env_init(&e);
    store_conv(&e.st, 14, 5);
    e.st.member[140][14] = true;
    e.st.hold[OP_REVS] = true;
    rec_t a = {0};
    chat_stream_sub_t *sa = chat_stream_subscribe(e.s, 140, write_cb, ready_cb, &a);
    RUN_UNTIL(&e, chat_stream_follows(sa, 14) && e.st.held_n == 1);
    assert_int_equal(e.st.revs_calls, 1);
    e.st.rev[14] = 7; /* never published */
    store_release(&e.st);
    RUN_UNTIL(&e, a.n >= 2);
    settle(&e);
    assert_int_equal(a.n, 2);
    expect_events(&a, 0, 14, 6, 2);
    assert_int_equal(e.st.events_calls[14], 1);
    chat_stream_unsubscribe(e.s, sa);
    env_done(&e);
    rec_dispose(&a);
}

/* ---- resume ---- */

static void test_resume(void **state)
{
    env_t e;
    env_init(&e);
    store_conv(&e.st, 3, 10);
    store_conv(&e.st, 4, 2);
    e.st.member[30][3] = e.st.member[30][4] = true;
    e.st.member[31][3] = true;
    rec_t a = {0}, b = {0};
    chat_stream_sub_t *sa = chat_stream_subscribe(e.s, 30, write_cb, ready_cb, &a);
    settle(&e);
    assert_true(chat_stream_follows(sa, 3) && chat_stream_follows(sa, 4));

    /* From the loader: exactly what is missing, then the positions; 99 is not followed. */
    int64_t convs[] = {3, 4, 99}, pos[] = {6, 2, 0};
    assert_int_equal(chat_stream_resume(e.s, sa, convs, pos, 3), 0);
    RUN_UNTIL(&e, a.n >= 5);
    settle(&e);
    assert_int_equal(a.n, 5);
    expect_events(&a, 0, 3, 7, 4);
    expect_text(&a, 4, "{\"type\":\"resumed\",\"positions\":{\"3\":10,\"4\":2}}");
    assert_int_equal(e.st.events_calls[3], 1);
    assert_int_equal(e.st.events_calls[4], 0);

    /* Live events go on from there. */
    e.st.rev[3] = 12;
    publish_event(&e, 3, 11);
    publish_event(&e, 3, 12);
    settle(&e);
    assert_int_equal(a.n, 7);
    expect_events(&a, 5, 3, 11, 2);

    /* From the frames the worker kept: no read. */
    assert_int_equal(resume1(&e, sa, 3, 10), 0);
    RUN_UNTIL(&e, a.n >= 10);
    expect_events(&a, 7, 3, 11, 2);
    expect_text(&a, 9, "{\"type\":\"resumed\",\"positions\":{\"3\":12}}");
    /* At the current position: only the positions. */
    assert_int_equal(resume1(&e, sa, 3, 12), 0);
    RUN_UNTIL(&e, a.n >= 11);
    expect_text(&a, 10, "{\"type\":\"resumed\",\"positions\":{\"3\":12}}");
    /* Nothing followed: empty positions. */
    assert_int_equal(resume1(&e, sa, 99, 0), 0);
    RUN_UNTIL(&e, a.n >= 12);
    expect_text(&a, 11, "{\"type\":\"resumed\",\"positions\":{}}");
    settle(&e);
    assert_int_equal(a.n, 12);
    assert_int_equal(e.st.events_calls[3], 1);

    /* One resume at a time per socket. */
    e.st.hold[OP_EVENTS] = true;
    assert_int_equal(resume1(&e, sa, 3, 0), 0);
    assert_int_equal(e.st.held_n, 1);
    assert_int_equal(resume1(&e, sa, 3, 5), CHAT_ECONFLICT);
    settle(&e);
    assert_int_equal(a.n, 12);
    store_release(&e.st);
    RUN_UNTIL(&e, a.n >= 25);
    expect_events(&a, 12, 3, 1, 12);
    expect_text(&a, 24, "{\"type\":\"resumed\",\"positions\":{\"3\":12}}");
    /* and the next one is taken again */
    assert_int_equal(resume1(&e, sa, 3, 11), 0);
    RUN_UNTIL(&e, a.n >= 27);
    expect_event(&a, 25, 3, 12);
    expect_text(&a, 26, "{\"type\":\"resumed\",\"positions\":{\"3\":12}}");

    /* Asked before the memberships are known: done once they are. */
    e.st.hold[OP_MEMBERSHIPS] = true;
    chat_stream_sub_t *sb = chat_stream_subscribe(e.s, 31, write_cb, ready_cb, &b);
    assert_int_equal(e.st.held_n, 1);
    assert_int_equal(resume1(&e, sb, 3, 8), 0);
    assert_int_equal(resume1(&e, sb, 3, 8), CHAT_ECONFLICT);
    settle(&e);
    assert_int_equal(b.n, 0);
    store_release(&e.st);
    RUN_UNTIL(&e, b.n >= 5);
    settle(&e);
    assert_int_equal(b.n, 5);
    expect_events(&b, 0, 3, 9, 4);
    expect_text(&b, 4, "{\"type\":\"resumed\",\"positions\":{\"3\":12}}");

    chat_stream_unsubscribe(e.s, sa);
    chat_stream_unsubscribe(e.s, sb);
    env_done(&e);
    rec_dispose(&a);
    rec_dispose(&b);
}

static void test_resume_over_1000_missing_resets(void **state)
{
    env_t e;
    env_init(&e);
    store_conv(&e.st, 5, 1500);
    e.st.member[50][5] = true;
    rec_t a = {0};
    chat_stream_sub_t *sa = chat_stream_subscribe(e.s, 50, write_cb, ready_cb, &a);
    settle(&e);

    /* 1001 missing: a reset at the conversation's rev, no events. */
    assert_int_equal(resume1(&e, sa, 5, 499), 0);
    RUN_UNTIL(&e, a.n >= 2);
    settle(&e);
    assert_int_equal(a.n, 2);
    expect_text(&a, 0, "{\"type\":\"reset\",\"conversation_id\":5,\"rev\":1500}");
    expect_text(&a, 1, "{\"type\":\"resumed\",\"positions\":{\"5\":1500}}");
    assert_int_equal(e.st.events_calls[5], 0);

    /* Resumed at that rev: the next event follows. */
    e.st.rev[5] = 1501;
    publish_event(&e, 5, 1501);
    RUN_UNTIL(&e, a.n >= 3);
    expect_event(&a, 2, 5, 1501);

    /* Exactly 1000 missing: every one of them, in pages of the loader. */
    assert_int_equal(resume1(&e, sa, 5, 501), 0);
    RUN_UNTIL(&e, a.n >= 1004);
    settle(&e);
    assert_int_equal(a.n, 1004);
    expect_events(&a, 3, 5, 502, 1000);
    expect_text(&a, 1003, "{\"type\":\"resumed\",\"positions\":{\"5\":1501}}");
    assert_int_equal(e.st.events_calls[5], 5);

    chat_stream_unsubscribe(e.s, sa);
    env_done(&e);
    rec_dispose(&a);
}

/* Sockets resuming from the same position share one read. */
static void test_catch_up_reads_shared(void **state)
{
    env_t e;
    env_init(&e);
    store_conv(&e.st, 15, 9);
    rec_t r[3] = {0};
    chat_stream_sub_t *sub[3];
    for (int i = 0; i < 3; i++) {
        e.st.member[150 + i][15] = true;
        sub[i] = chat_stream_subscribe(e.s, 150 + i, write_cb, ready_cb, &r[i]);
    }
    settle(&e);
    e.st.hold[OP_EVENTS] = true;
    for (int i = 0; i < 3; i++)
        assert_int_equal(resume1(&e, sub[i], 15, 3), 0);
    assert_int_equal(e.st.events_calls[15], 1);
    store_release(&e.st);
    RUN_UNTIL(&e, r[0].n >= 7 && r[1].n >= 7 && r[2].n >= 7);
    settle(&e);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r[i].n, 7);
        expect_events(&r[i], 0, 15, 4, 6);
        expect_text(&r[i], 6, "{\"type\":\"resumed\",\"positions\":{\"15\":9}}");
        chat_stream_unsubscribe(e.s, sub[i]);
    }
    assert_int_equal(e.st.events_calls[15], 1);
    env_done(&e);
    for (int i = 0; i < 3; i++)
        rec_dispose(&r[i]);
}

/* ---- typing ---- */

static void test_typing(void **state)
{
    env_t e;
    env_init(&e);
    store_conv(&e.st, 6, 1);
    store_conv(&e.st, 7, 1);
    e.st.member[60][6] = e.st.member[61][6] = true;
    e.st.member[62][7] = true;
    rec_t a = {0}, a2 = {0}, b = {0}, c = {0};
    chat_stream_sub_t *sa = chat_stream_subscribe(e.s, 60, write_cb, ready_cb, &a);
    chat_stream_sub_t *sa2 = chat_stream_subscribe(e.s, 60, write_cb, ready_cb, &a2);
    chat_stream_sub_t *sb = chat_stream_subscribe(e.s, 61, write_cb, ready_cb, &b);
    chat_stream_sub_t *sc = chat_stream_subscribe(e.s, 62, write_cb, ready_cb, &c);
    settle(&e);

    chat_stream_typing(e.s, sa, 6);  /* to 61's socket, not to 60's own */
    chat_stream_typing(e.s, sa, 6);  /* throttled */
    chat_stream_typing(e.s, sa2, 6); /* the same user, throttled */
    chat_stream_typing(e.s, sc, 6);  /* 62 does not follow 6: dropped */
    chat_stream_typing(e.s, sb, 6);  /* to both of 60's sockets */
    chat_stream_typing(e.s, sb, 7);  /* not followed */
    /* then an event of each conversation: once it is there, the typing frames are too */
    e.st.rev[6] = e.st.rev[7] = 2;
    publish_event(&e, 6, 2);
    publish_event(&e, 7, 2);
    RUN_UNTIL(&e, a.n >= 2 && a2.n >= 2 && b.n >= 2 && c.n >= 1);
    settle(&e);
    const char *t60 = "{\"type\":\"typing\",\"conversation_id\":6,\"user_id\":60}";
    const char *t61 = "{\"type\":\"typing\",\"conversation_id\":6,\"user_id\":61}";
    assert_int_equal(b.n, 2);
    expect_text(&b, 0, t60);
    expect_event(&b, 1, 6, 2);
    rec_t *own[] = {&a, &a2};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(own[i]->n, 2);
        expect_text(own[i], 0, t61);
        expect_event(own[i], 1, 6, 2);
    }
    assert_int_equal(c.n, 1);
    expect_event(&c, 0, 7, 2);

    chat_stream_unsubscribe(e.s, sa);
    chat_stream_unsubscribe(e.s, sa2);
    chat_stream_unsubscribe(e.s, sb);
    chat_stream_unsubscribe(e.s, sc);
    env_done(&e);
    rec_dispose(&a);
    rec_dispose(&a2);
    rec_dispose(&b);
    rec_dispose(&c);
}

/* ---- membership ---- */

static void test_added_and_removed(void **state)
{
    env_t e;
    env_init(&e);
    store_conv(&e.st, 8, 3);
    e.st.member[80][8] = true;
    rec_t a = {0}, b = {0}, c = {0};
    chat_stream_sub_t *sa = chat_stream_subscribe(e.s, 80, write_cb, ready_cb, &a);
    chat_stream_sub_t *sb = chat_stream_subscribe(e.s, 81, write_cb, ready_cb, &b);
    chat_stream_sub_t *sc = chat_stream_subscribe(e.s, 82, write_cb, ready_cb, &c);
    settle(&e);
    assert_true(chat_stream_follows(sa, 8));
    assert_false(chat_stream_follows(sb, 8));
    e.st.rev[8] = 5;
    publish_event(&e, 8, 4);
    publish_event(&e, 8, 5);
    settle(&e);
    assert_int_equal(a.n, 2);
    assert_int_equal(b.n, 0);

    /* 81 joins at rev 4: the added frame, then what came after 4. */
    const char *added = "{\"type\":\"added\",\"conversation_id\":8}";
    e.st.member[81][8] = true;
    publish_user(&e, CHAT_RT_ADDED, 81, 8, 4, added);
    RUN_UNTIL(&e, b.n >= 2);
    assert_true(chat_stream_follows(sb, 8));
    expect_text(&b, 0, added);
    expect_event(&b, 1, 8, 5);
    e.st.rev[8] = 6;
    publish_event(&e, 8, 6);
    RUN_UNTIL(&e, a.n >= 3 && b.n >= 3);
    expect_event(&b, 2, 8, 6);

    /* 81 leaves: the removed frame, and nothing of the conversation after it. */
    const char *removed = "{\"type\":\"removed\",\"conversation_id\":8}";
    const char *read = "{\"type\":\"read\",\"conversation_id\":8,\"seq\":3}";
    e.st.member[81][8] = false;
    publish_user(&e, CHAT_RT_REMOVED, 81, 8, 0, removed);
    e.st.rev[8] = 7;
    publish_event(&e, 8, 7);
    publish_user(&e, CHAT_RT_USER, 81, 8, 0, read);
    RUN_UNTIL(&e, a.n >= 4 && b.n >= 5);
    assert_false(chat_stream_follows(sb, 8));
    expect_events(&a, 0, 8, 4, 4);
    expect_text(&b, 3, removed);
    expect_text(&b, 4, read);

    /* The creator of a conversation: followed from rev 0, with no frame. */
    store_conv(&e.st, 9, 0);
    e.st.member[82][9] = true;
    publish_user(&e, CHAT_RT_ADDED, 82, 9, 0, "");
    e.st.rev[9] = 1;
    publish_event(&e, 9, 1);
    RUN_UNTIL(&e, c.n >= 1);
    assert_true(chat_stream_follows(sc, 9));
    settle(&e);
    assert_int_equal(a.n, 4);
    assert_int_equal(b.n, 5);
    assert_int_equal(c.n, 1);
    expect_event(&c, 0, 9, 1);
    /* the kept frames served the late joiner */
    assert_int_equal(e.st.events_calls[8], 0);
    assert_int_equal(e.st.events_calls[9], 0);

    chat_stream_unsubscribe(e.s, sa);
    chat_stream_unsubscribe(e.s, sb);
    chat_stream_unsubscribe(e.s, sc);
    env_done(&e);
    rec_dispose(&a);
    rec_dispose(&b);
    rec_dispose(&c);
}

/*
 * A membership read that ran before a removal answers after the removed
 * frame: the conversation is not followed again (nor one added meanwhile
 * dropped).
 */
static void test_removed_while_memberships_read(void **state)
{
    env_t e;
    env_init(&e);
    store_conv(&e.st, 16, 2);
    store_conv(&e.st, 17, 1);
    e.st.member[160][16] = e.st.member[161][16] = true;
    rec_t a = {0}, b = {0};
    chat_stream_sub_t *sb = chat_stream_subscribe(e.s, 161, write_cb, ready_cb, &b);
    settle(&e);

    e.st.hold[OP_MEMBERSHIPS] = true;
    chat_stream_sub_t *sa = chat_stream_subscribe(e.s, 160, write_cb, ready_cb, &a);
    assert_int_equal(e.st.held_n, 1); /* it lists 16 */
    const char *removed = "{\"type\":\"removed\",\"conversation_id\":16}";
    const char *added = "{\"type\":\"added\",\"conversation_id\":17}";
    e.st.member[160][16] = false;
    publish_user(&e, CHAT_RT_REMOVED, 160, 16, 0, removed);
    e.st.member[160][17] = true;
    publish_user(&e, CHAT_RT_ADDED, 160, 17, 1, added);
    RUN_UNTIL(&e, a.n >= 2);
    store_release(&e.st);
    settle(&e);
    assert_false(chat_stream_follows(sa, 16));
    assert_true(chat_stream_follows(sa, 17));

    e.st.rev[16] = 3;
    publish_event(&e, 16, 3);
    e.st.rev[17] = 2;
    publish_event(&e, 17, 2);
    RUN_UNTIL(&e, b.n >= 1 && a.n >= 3);
    settle(&e);
    assert_int_equal(a.n, 3);
    expect_text(&a, 0, removed);
    expect_text(&a, 1, added);
    expect_event(&a, 2, 17, 2);
    assert_int_equal(b.n, 1);
    expect_event(&b, 0, 16, 3);

    /* the next read of the memberships is not affected by the earlier removal */
    e.st.member[160][16] = true;
    publish_user(&e, CHAT_RT_ADDED, 160, 16, 3, "");
    settle(&e);
    assert_true(chat_stream_follows(sa, 16));
    rec_t a2 = {0};
    chat_stream_sub_t *sa2 = chat_stream_subscribe(e.s, 160, write_cb, ready_cb, &a2);
    settle(&e);
    assert_true(chat_stream_follows(sa2, 16) && chat_stream_follows(sa2, 17));

    chat_stream_unsubscribe(e.s, sa);
    chat_stream_unsubscribe(e.s, sa2);
    chat_stream_unsubscribe(e.s, sb);
    env_done(&e);
    rec_dispose(&a);
    rec_dispose(&a2);
    rec_dispose(&b);
}

/* ---- leaving while reads are out ---- */

static void test_unsubscribe_during_reads(void **state)
{
    env_t e;
    env_init(&e);
    store_conv(&e.st, 10, 20);
    store_conv(&e.st, 11, 1);
    e.st.member[100][10] = e.st.member[101][11] = e.st.member[102][10] = true;
    rec_t a = {0}, b = {0}, x = {0};
    chat_stream_sub_t *sa = chat_stream_subscribe(e.s, 100, write_cb, ready_cb, &a);
    chat_stream_sub_t *sb = chat_stream_subscribe(e.s, 101, write_cb, ready_cb, &b);
    settle(&e);

    /* a leaves while its catch-up read is out */
    e.st.hold[OP_EVENTS] = true;
    assert_int_equal(resume1(&e, sa, 10, 5), 0);
    assert_int_equal(e.st.events_calls[10], 1);
    chat_stream_unsubscribe(e.s, sa);

    /* b, the only follower of 11, leaves while the fill of its gap is out */
    e.st.rev[11] = 3;
    publish_event(&e, 11, 3);
    RUN_UNTIL(&e, e.st.events_calls[11] == 1);
    chat_stream_unsubscribe(e.s, sb);

    /* x leaves while its memberships are being read */
    e.st.hold[OP_MEMBERSHIPS] = true;
    int m0 = e.st.memberships_calls;
    chat_stream_sub_t *sx = chat_stream_subscribe(e.s, 102, write_cb, ready_cb, &x);
    assert_int_equal(e.st.memberships_calls, m0 + 1);
    chat_stream_unsubscribe(e.s, sx);

    assert_int_equal(e.st.held_n, 3);
    store_release(&e.st);
    settle(&e);
    assert_int_equal(e.st.held_n, 0);
    assert_int_equal(a.n, 0);
    assert_int_equal(b.n, 0);
    assert_int_equal(x.n, 0);

    /* The same users come back: all is as new. */
    rec_t a2 = {0};
    chat_stream_sub_t *sa2 = chat_stream_subscribe(e.s, 100, write_cb, ready_cb, &a2);
    settle(&e);
    assert_true(chat_stream_follows(sa2, 10));
    e.st.rev[10] = 21;
    publish_event(&e, 10, 21);
    RUN_UNTIL(&e, a2.n >= 1);
    expect_event(&a2, 0, 10, 21);
    chat_stream_unsubscribe(e.s, sa2);
    env_done(&e);
    rec_dispose(&a2);
}

/* Closing while a read is out: the stream waits for its answer, then closes. */
static void test_close_during_read(void **state)
{
    env_t e;
    env_init(&e);
    store_conv(&e.st, 12, 5);
    e.st.member[120][12] = true;
    rec_t a = {0};
    chat_stream_sub_t *sa = chat_stream_subscribe(e.s, 120, write_cb, ready_cb, &a);
    settle(&e);
    e.st.hold[OP_EVENTS] = true;
    assert_int_equal(resume1(&e, sa, 12, 1), 0);
    chat_stream_unsubscribe(e.s, sa);
    chat_stream_close(e.s, closed_cb, &e);
    chat_stream_publish(e.s, &(chat_rt_msg_t){CHAT_RT_EVENT, 12, 6, 0, "x", 1}); /* ignored */
    settle(&e);
    assert_int_equal(e.closed, 0);
    store_release(&e.st);
    RUN_UNTIL(&e, e.closed == 1);
    uv_close((uv_handle_t *)&e.tick, NULL);
    assert_int_equal(uv_run(&e.loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(a.n, 0);
    chat_hub_destroy(e.hub);
    assert_int_equal(uv_loop_close(&e.loop), 0);
    /* no stream: nothing happens */
    chat_stream_publish(NULL, &(chat_rt_msg_t){CHAT_RT_EVENT, 12, 6, 0, "x", 1});
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_out_of_order_delivered_in_rev_order),
        cmocka_unit_test(test_lost_event_filled_once_per_conversation),
        cmocka_unit_test(test_lost_last_event_found),
        cmocka_unit_test(test_events_before_the_follow_read_back),
        cmocka_unit_test(test_resume),
        cmocka_unit_test(test_resume_over_1000_missing_resets),
        cmocka_unit_test(test_catch_up_reads_shared),
        cmocka_unit_test(test_typing),
        cmocka_unit_test(test_added_and_removed),
        cmocka_unit_test(test_removed_while_memberships_read),
        cmocka_unit_test(test_unsubscribe_during_reads),
        cmocka_unit_test(test_close_during_read),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
