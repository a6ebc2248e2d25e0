/*
 * Unit tests of realtime/hub.c: worker loops on threads of their own (a
 * message posted on one reaches every worker's callback once, on that
 * worker's thread, never from inside the post, numbers and frame bytes
 * intact and in the order posted; posts from several threads at once), on
 * one thread the closing of workers (a closed worker is skipped and its
 * queue dropped, freed without leaks), and the typing throttle (once per
 * interval per (user, conversation), from several threads at once).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "realtime/hub.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* ---- what a worker's callback saw ---- */

typedef struct got {
    chat_rt_msg_t m; /* frame points at bytes */
    char *bytes;
} got_t;

typedef struct log {
    uv_mutex_t mu;
    uv_cond_t cond;
    got_t *v;
    size_t n, cap;
    int wrong_thread; /* callbacks that ran off the worker's thread */
    uv_thread_t owner;
    bool owner_set;
} log_t;

static void log_init(log_t *l)
{
    memset(l, 0, sizeof *l);
    assert_int_equal(uv_mutex_init(&l->mu), 0);
    assert_int_equal(uv_cond_init(&l->cond), 0);
}

static void log_dispose(log_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i].bytes);
    free(l->v);
    uv_cond_destroy(&l->cond);
    uv_mutex_destroy(&l->mu);
}

static size_t log_len(log_t *l)
{
    uv_mutex_lock(&l->mu);
    size_t n = l->n;
    uv_mutex_unlock(&l->mu);
    return n;
}

static void record_cb(const chat_rt_msg_t *m, void *arg)
{
    log_t *l = arg;
    uv_thread_t self = uv_thread_self();
    uv_mutex_lock(&l->mu);
    if (l->owner_set && !uv_thread_equal(&self, &l->owner))
        l->wrong_thread++;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 16;
        l->v = realloc(l->v, l->cap * sizeof *l->v);
        if (!l->v)
            abort(); /* no cmocka assertion off the test's thread */
    }
    got_t *g = &l->v[l->n++];
    g->m = *m;
    g->bytes = malloc(m->len + 1);
    if (!g->bytes)
        abort();
    if (m->len)
        memcpy(g->bytes, m->frame, m->len);
    g->bytes[m->len] = '\0';
    g->m.frame = g->bytes;
    uv_cond_broadcast(&l->cond);
    uv_mutex_unlock(&l->mu);
}

/* Waits (5 s at most) until l holds n messages; returns how many it holds. */
static size_t log_wait(log_t *l, size_t n)
{
    uint64_t deadline = uv_hrtime() + 5000000000ull;
    uv_mutex_lock(&l->mu);
    while (l->n < n) {
        uint64_t now = uv_hrtime();
        if (now >= deadline || uv_cond_timedwait(&l->cond, &l->mu, deadline - now) != 0)
            break;
    }
    size_t got = l->n;
    uv_mutex_unlock(&l->mu);
    return got;
}

static void assert_got(const got_t *g, int kind, int64_t id, int64_t a, int64_t b,
                       const char *frame, size_t len)
{
    assert_int_equal(g->m.kind, kind);
    assert_int_equal(g->m.id, id);
    assert_int_equal(g->m.a, a);
    assert_int_equal(g->m.b, b);
    assert_int_equal(g->m.len, len);
    assert_memory_equal(g->m.frame, frame, len);
}

/* ---- worker loops on threads ---- */

typedef struct wk wk_t;
typedef void (*wk_fn)(wk_t *w, void *arg);

struct wk {
    chat_hub_t *hub;
    int index;
    uv_thread_t th;
    uv_loop_t loop;
    uv_async_t cmd; /* runs fn on the worker's loop */
    uv_sem_t done;  /* posted after fn ran (and once at start) */
    wk_fn fn;
    void *arg;
    chat_hub_worker_t *hw;
    log_t log;
    int closed;
};

static void cmd_cb(uv_async_t *a)
{
    wk_t *w = a->data;
    w->fn(w, w->arg);
    uv_sem_post(&w->done);
}

static void wk_main(void *arg)
{
    wk_t *w = arg;
    uv_loop_init(&w->loop);
    uv_async_init(&w->loop, &w->cmd, cmd_cb);
    w->cmd.data = w;
    w->log.owner = uv_thread_self();
    w->log.owner_set = true;
    w->hw = chat_hub_worker_create(w->hub, w->index, &w->loop, record_cb, &w->log);
    uv_sem_post(&w->done);
    uv_run(&w->loop, UV_RUN_DEFAULT);
}

/* Runs fn(w, arg) on w's loop and waits for it. */
static void run_on(wk_t *w, wk_fn fn, void *arg)
{
    w->fn = fn;
    w->arg = arg;
    uv_async_send(&w->cmd);
    uv_sem_wait(&w->done);
}

static void wk_start(wk_t *w, chat_hub_t *hub, int index)
{
    memset(w, 0, sizeof *w);
    w->hub = hub;
    w->index = index;
    log_init(&w->log);
    assert_int_equal(uv_sem_init(&w->done, 0), 0);
    assert_int_equal(uv_thread_create(&w->th, wk_main, w), 0);
    uv_sem_wait(&w->done);
}

static void hw_closed(void *arg)
{
    ((wk_t *)arg)->closed++;
}

static void do_close(wk_t *w, void *arg)
{
    chat_hub_worker_close(w->hw, hw_closed, w);
    uv_close((uv_handle_t *)&w->cmd, NULL);
}

/* Closes the worker's part and waits for its loop to end with nothing left. */
static void wk_stop(wk_t *w)
{
    run_on(w, do_close, NULL);
    assert_int_equal(uv_thread_join(&w->th), 0);
    assert_int_equal(w->closed, 1);
    assert_int_equal(uv_loop_close(&w->loop), 0);
    uv_sem_destroy(&w->done);
    assert_int_equal(w->log.wrong_thread, 0);
    log_dispose(&w->log);
}

typedef struct post_req {
    chat_rt_msg_t m;
    size_t seen_before, seen_after; /* the poster's own log around the call */
} post_req_t;

static void do_post(wk_t *w, void *arg)
{
    post_req_t *p = arg;
    p->seen_before = log_len(&w->log);
    chat_hub_post(w->hw, &p->m);
    p->seen_after = log_len(&w->log);
}

static void post_on(wk_t *w, const chat_rt_msg_t *m)
{
    post_req_t p = {.m = *m};
    run_on(w, do_post, &p);
    /* never from inside the call, also not to the poster */
    assert_int_equal(p.seen_after, p.seen_before);
}

static const char frame_a[] = "{\"type\":\"message\",\"rev\":7}\n\0tail with a NUL";

static void test_post_reaches_every_worker(void **state)
{
    chat_hub_t *hub = chat_hub_create(3);
    wk_t w[3];
    for (int i = 0; i < 3; i++)
        wk_start(&w[i], hub, i);

    chat_rt_msg_t a = {CHAT_RT_EVENT, 5, 7, 0, frame_a, sizeof frame_a - 1};
    chat_rt_msg_t b = {CHAT_RT_USER, 3, 0, 0, "{\"type\":\"read\"}", 15};
    chat_rt_msg_t c = {CHAT_RT_ADDED, INT64_MAX, 9, 4, NULL, 0}; /* an empty frame */
    chat_rt_msg_t d = {CHAT_RT_TYPING, 5, 3, 0, "t", 1};
    post_on(&w[0], &a);
    post_on(&w[1], &b);
    post_on(&w[2], &c);
    post_on(&w[0], &d);

    for (int i = 0; i < 3; i++) {
        log_t *l = &w[i].log;
        assert_int_equal(log_wait(l, 4), 4);
        /* every worker, its own posts included, in the order they were posted */
        assert_got(&l->v[0], CHAT_RT_EVENT, 5, 7, 0, frame_a, sizeof frame_a - 1);
        assert_got(&l->v[1], CHAT_RT_USER, 3, 0, 0, "{\"type\":\"read\"}", 15);
        assert_got(&l->v[2], CHAT_RT_ADDED, INT64_MAX, 9, 4, "", 0);
        assert_got(&l->v[3], CHAT_RT_TYPING, 5, 3, 0, "t", 1);
    }
    /* A last message: once it is everywhere, nothing came twice. */
    chat_rt_msg_t z = {CHAT_RT_REMOVED, 1, 2, 0, "z", 1};
    post_on(&w[1], &z);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(log_wait(&w[i].log, 5), 5);
        assert_got(&w[i].log.v[4], CHAT_RT_REMOVED, 1, 2, 0, "z", 1);
    }
    for (int i = 0; i < 3; i++)
        wk_stop(&w[i]);
    chat_hub_destroy(hub);
}

/* ---- posts from every worker at once ---- */

#define BURST 300

static void do_burst(wk_t *w, void *arg)
{
    char frame[32];
    for (int i = 1; i <= BURST; i++) {
        int n = snprintf(frame, sizeof frame, "w%d-%d", w->index, i);
        chat_rt_msg_t m = {CHAT_RT_EVENT, w->index + 1, i, 0, frame, (size_t)n};
        chat_hub_post(w->hw, &m);
    }
}

static void test_posts_from_every_thread_at_once(void **state)
{
    enum { N = 3 };
    chat_hub_t *hub = chat_hub_create(N);
    wk_t w[N];
    for (int i = 0; i < N; i++)
        wk_start(&w[i], hub, i);
    /* all three post their bursts at the same time */
    for (int i = 0; i < N; i++) {
        w[i].fn = do_burst;
        uv_async_send(&w[i].cmd);
    }
    for (int i = 0; i < N; i++)
        uv_sem_wait(&w[i].done);

    for (int i = 0; i < N; i++) {
        log_t *l = &w[i].log;
        assert_int_equal(log_wait(l, N * BURST), N * BURST);
        int64_t last[N] = {0};
        for (size_t k = 0; k < l->n; k++) {
            const chat_rt_msg_t *m = &l->v[k].m;
            assert_true(m->id >= 1 && m->id <= N);
            /* each poster's messages in the order it posted them, none lost or repeated */
            assert_int_equal(m->a, last[m->id - 1] + 1);
            last[m->id - 1] = m->a;
            char want[32];
            int n = snprintf(want, sizeof want, "w%d-%d", (int)m->id - 1, (int)m->a);
            assert_int_equal(m->len, (size_t)n);
            assert_memory_equal(m->frame, want, (size_t)n);
        }
        for (int p = 0; p < N; p++)
            assert_int_equal(last[p], BURST);
    }
    for (int i = 0; i < N; i++)
        wk_stop(&w[i]);
    chat_hub_destroy(hub);
}

/* ---- closing, on one thread ---- */

static void closed_count(void *arg)
{
    (*(int *)arg)++;
}

/* Runs loop (on this thread) until l holds n messages or 5 s pass; how many it holds. */
static size_t run_until_len(uv_loop_t *loop, log_t *l, size_t n)
{
    uint64_t t0 = uv_hrtime();
    while (log_len(l) < n && uv_hrtime() - t0 < 5000000000ull)
        uv_run(loop, UV_RUN_NOWAIT);
    return log_len(l);
}

static void test_closed_worker_skipped_and_queue_dropped(void **state)
{
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    chat_hub_t *hub = chat_hub_create(3); /* worker 2 never joins: posts skip it */
    log_t la, lb;
    log_init(&la);
    log_init(&lb);
    chat_hub_worker_t *a = chat_hub_worker_create(hub, 0, &loop, record_cb, &la);
    chat_hub_worker_t *b = chat_hub_worker_create(hub, 1, &loop, record_cb, &lb);

    char big[4096];
    memset(big, 'x', sizeof big);
    for (int i = 0; i < 100; i++) {
        chat_rt_msg_t m = {CHAT_RT_EVENT, 1, i + 1, 0, big, sizeof big};
        chat_hub_post(a, &m);
    }
    /* b leaves with 100 messages queued: dropped, its callback never runs */
    int closed = 0;
    chat_hub_worker_close(b, closed_count, &closed);
    chat_rt_msg_t later = {CHAT_RT_USER, 2, 0, 0, "later", 5};
    chat_hub_post(a, &later); /* b is gone already: only a */
    assert_int_equal(run_until_len(&loop, &la, 101), 101);
    assert_int_equal(lb.n, 0);
    assert_got(&la.v[100], CHAT_RT_USER, 2, 0, 0, "later", 5);
    for (int i = 0; i < 100; i++)
        assert_int_equal(la.v[i].m.a, i + 1);

    /* a leaves with its own post still queued: dropped too */
    chat_hub_post(a, &later);
    chat_hub_worker_close(a, closed_count, &closed);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(closed, 2);
    assert_int_equal(la.n, 101);
    assert_int_equal(lb.n, 0);

    /* a worker index may join again after it left */
    log_t lc;
    log_init(&lc);
    chat_hub_worker_t *c = chat_hub_worker_create(hub, 1, &loop, record_cb, &lc);
    chat_hub_post(c, &later);
    assert_int_equal(run_until_len(&loop, &lc, 1), 1);
    /* closed with one more queued, then the hub with nothing left in it */
    chat_hub_post(c, &later);
    chat_hub_worker_close(c, closed_count, &closed);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(closed, 3);
    assert_int_equal(lc.n, 1);
    chat_hub_destroy(hub);
    chat_hub_destroy(NULL);
    assert_int_equal(uv_loop_close(&loop), 0);
    log_dispose(&la);
    log_dispose(&lb);
    log_dispose(&lc);
}

/* ---- the typing throttle ---- */

static void test_typing_throttle(void **state)
{
    chat_hub_t *hub = chat_hub_create(1);
    const uint64_t iv = 3000;
    assert_true(chat_hub_typing_allow(hub, 1, 10, 1000, iv));
    assert_false(chat_hub_typing_allow(hub, 1, 10, 1000, iv));
    assert_false(chat_hub_typing_allow(hub, 1, 10, 3999, iv));
    /* other pairs are their own, the swapped pair included */
    assert_true(chat_hub_typing_allow(hub, 2, 10, 1000, iv));
    assert_true(chat_hub_typing_allow(hub, 1, 11, 1000, iv));
    assert_true(chat_hub_typing_allow(hub, 10, 1, 1000, iv));
    assert_false(chat_hub_typing_allow(hub, 10, 1, 2000, iv));
    /* one interval later: allowed once again, from then on */
    assert_true(chat_hub_typing_allow(hub, 1, 10, 4000, iv));
    assert_false(chat_hub_typing_allow(hub, 1, 10, 4000, iv));
    assert_false(chat_hub_typing_allow(hub, 1, 10, 6999, iv));
    assert_true(chat_hub_typing_allow(hub, 1, 10, 7000, iv));
    /* the clock at 0 is a time like any other */
    assert_true(chat_hub_typing_allow(hub, 5, 5, 0, iv));
    assert_false(chat_hub_typing_allow(hub, 5, 5, 0, iv));
    assert_false(chat_hub_typing_allow(hub, 5, 5, 2999, iv));
    assert_true(chat_hub_typing_allow(hub, 5, 5, 3000, iv));
    /* large ids */
    assert_true(chat_hub_typing_allow(hub, INT64_MAX, INT64_MAX, 50, iv));
    assert_false(chat_hub_typing_allow(hub, INT64_MAX, INT64_MAX, 60, iv));
    chat_hub_destroy(hub);
}

#define TYPERS 4
#define TYPES 1000

typedef struct typer {
    chat_hub_t *hub;
    int index;
    uv_sem_t *go;
    int shared_ok; /* allowed for the pair all threads share */
    int own_ok;    /* allowed for this thread's own pairs */
} typer_t;

static void typer_main(void *arg)
{
    typer_t *t = arg;
    uv_sem_wait(t->go);
    for (int i = 0; i < TYPES; i++) {
        t->shared_ok += chat_hub_typing_allow(t->hub, 7, 9, 5000, 3000);
        t->own_ok += chat_hub_typing_allow(t->hub, 100 + t->index, i + 1, 5000, 3000);
        t->own_ok += chat_hub_typing_allow(t->hub, 100 + t->index, i + 1, 5001, 3000);
    }
}

static void test_typing_throttle_threads(void **state)
{
    chat_hub_t *hub = chat_hub_create(2);
    uv_sem_t go;
    assert_int_equal(uv_sem_init(&go, 0), 0);
    typer_t t[TYPERS];
    uv_thread_t th[TYPERS];
    for (int i = 0; i < TYPERS; i++) {
        t[i] = (typer_t){hub, i, &go, 0, 0};
        assert_int_equal(uv_thread_create(&th[i], typer_main, &t[i]), 0);
    }
    for (int i = 0; i < TYPERS; i++)
        uv_sem_post(&go);
    int shared = 0;
    for (int i = 0; i < TYPERS; i++) {
        assert_int_equal(uv_thread_join(&th[i]), 0);
        shared += t[i].shared_ok;
        assert_int_equal(t[i].own_ok, TYPES); /* each own pair once */
    }
    assert_int_equal(shared, 1); /* one thread won the shared pair, once */
    uv_sem_destroy(&go);
    chat_hub_destroy(hub);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_post_reaches_every_worker),
        cmocka_unit_test(test_posts_from_every_thread_at_once),
        cmocka_unit_test(test_closed_worker_skipped_and_queue_dropped),
        cmocka_unit_test(test_typing_throttle),
        cmocka_unit_test(test_typing_throttle_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
