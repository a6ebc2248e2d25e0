/*
 * Unit tests of realtime/hub.c: three worker loops on their own threads (a
 * frame posted on one reaches each subscriber on every worker exactly once,
 * in order; unsubscribing stops delivery; several sockets of one user), and
 * on one thread the edge cases (a callback leaving, a close with frames
 * queued). Every loop ends with no live handle and ASan finds no leak.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "realtime/hub.c"

#include <string.h>
#include <unistd.h>

/* ---- what a subscriber saw ---- */

typedef struct seen {
    _Atomic int count[128]; /* by the frame's first byte */
    _Atomic int total;
    char seq[64]; /* first bytes in order; written by the subscriber's worker only */
} seen_t;

static void record_cb(const char *frame, size_t len, void *ud)
{
    seen_t *s = ud;
    int t = atomic_load(&s->total);
    if (len > 0 && t < (int)sizeof s->seq - 1)
        s->seq[t] = frame[0];
    if (len > 0)
        atomic_fetch_add(&s->count[(unsigned char)frame[0] & 127], 1);
    atomic_fetch_add(&s->total, 1);
}

static int wait_count(seen_t *s, char c, int n)
{
    for (int i = 0; i < 2000 && atomic_load(&s->count[(int)c]) < n; i++)
        usleep(1000);
    return atomic_load(&s->count[(int)c]);
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
    w->hw = chat_hub_worker_create(w->hub, w->index, &w->loop);
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
    uv_sem_init(&w->done, 0);
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
    uv_thread_join(&w->th);
    assert_int_equal(w->closed, 1);
    assert_int_equal(uv_loop_close(&w->loop), 0);
    uv_sem_destroy(&w->done);
}

typedef struct sub_req {
    int64_t user;
    seen_t *seen;
    chat_hub_sub_t *sub; /* out of subscribe, in of unsubscribe */
} sub_req_t;

static void do_subscribe(wk_t *w, void *arg)
{
    sub_req_t *r = arg;
    r->sub = chat_hub_subscribe(w->hw, r->user, record_cb, r->seen);
}

static void do_unsubscribe(wk_t *w, void *arg)
{
    sub_req_t *r = arg;
    chat_hub_unsubscribe(w->hw, r->sub);
    r->sub = NULL;
}

typedef struct post_req {
    const int64_t *members;
    size_t n;
    const char *frame;
} post_req_t;

static void do_post(wk_t *w, void *arg)
{
    post_req_t *p = arg;
    chat_hub_post(w->hw, p->members, p->n, p->frame, strlen(p->frame));
}

static void post_on(wk_t *w, const int64_t *members, size_t n, const char *frame)
{
    post_req_t p = {members, n, frame};
    run_on(w, do_post, &p);
}

static void test_frame_reaches_every_worker_once(void **state)
{
    chat_hub_t *hub = chat_hub_create(3);
    wk_t w[3];
    for (int i = 0; i < 3; i++)
        wk_start(&w[i], hub, i);
    /* user 7: one socket on worker 0 (the poster's), two on worker 2; user 8 on worker 1 */
    seen_t s7a = {0}, s7b = {0}, s7c = {0}, s8 = {0}, s9 = {0};
    sub_req_t r[] = {
        {7, &s7a, NULL}, {7, &s7b, NULL}, {7, &s7c, NULL}, {8, &s8, NULL}, {9, &s9, NULL}};
    run_on(&w[0], do_subscribe, &r[0]);
    run_on(&w[2], do_subscribe, &r[1]);
    run_on(&w[2], do_subscribe, &r[2]);
    run_on(&w[1], do_subscribe, &r[3]);
    run_on(&w[1], do_subscribe, &r[4]);

    const int64_t to78[] = {7, 8, 100};
    const int64_t to9[] = {9};
    post_on(&w[0], to78, 3, "a{frame}");
    post_on(&w[1], to78, 3, "b{frame}");
    post_on(&w[0], to9, 1, "c{frame}"); /* not for 7 or 8 */
    post_on(&w[0], to78, 3, "z{marker}");
    seen_t *all78[] = {&s7a, &s7b, &s7c, &s8};
    for (size_t i = 0; i < CHAT_ARRAY_LEN(all78); i++) {
        assert_int_equal(wait_count(all78[i], 'z', 1), 1);
        /* Each worker's mailbox keeps the order in which the frames were posted. */
        assert_int_equal(atomic_load(&all78[i]->count['a']), 1);
        assert_int_equal(atomic_load(&all78[i]->count['b']), 1);
        assert_int_equal(atomic_load(&all78[i]->count['c']), 0);
        assert_int_equal(atomic_load(&all78[i]->total), 3);
        assert_memory_equal(all78[i]->seq, "abz", 3);
    }
    assert_int_equal(wait_count(&s9, 'c', 1), 1);
    assert_int_equal(atomic_load(&s9.total), 1);

    for (size_t i = 0; i < CHAT_ARRAY_LEN(r); i++)
        run_on(&w[i == 0 ? 0 : i <= 2 ? 2 : 1], do_unsubscribe, &r[i]);
    for (int i = 0; i < 3; i++)
        wk_stop(&w[i]);
    chat_hub_destroy(hub);
}

static void test_unsubscribe_stops_delivery(void **state)
{
    chat_hub_t *hub = chat_hub_create(2);
    wk_t w[2];
    for (int i = 0; i < 2; i++)
        wk_start(&w[i], hub, i);
    seen_t gone = {0}, stays = {0}, other_user = {0};
    sub_req_t r1 = {5, &gone, NULL}, r2 = {5, &stays, NULL}, r3 = {6, &other_user, NULL};
    run_on(&w[1], do_subscribe, &r1);
    run_on(&w[1], do_subscribe, &r2);
    run_on(&w[1], do_subscribe, &r3);
    const int64_t to5[] = {5}, to56[] = {5, 6};
    post_on(&w[0], to5, 1, "a");
    assert_int_equal(wait_count(&gone, 'a', 1), 1);
    assert_int_equal(wait_count(&stays, 'a', 1), 1);

    run_on(&w[1], do_unsubscribe, &r1);
    post_on(&w[0], to5, 1, "b");
    assert_int_equal(wait_count(&stays, 'b', 1), 1);
    assert_int_equal(atomic_load(&gone.count['b']), 0);

    /* The user's last socket leaves: the user is forgotten, others stay. */
    run_on(&w[1], do_unsubscribe, &r2);
    post_on(&w[0], to56, 2, "c");
    assert_int_equal(wait_count(&other_user, 'c', 1), 1);
    assert_int_equal(atomic_load(&stays.count['c']), 0);
    assert_null(chat_idtable_get(&w[1].hw->users, 5));
    assert_int_equal(chat_hub_worker_subscribers(w[1].hw), 1);

    run_on(&w[1], do_unsubscribe, &r3);
    assert_int_equal(chat_idtable_len(&w[1].hw->users), 0);
    for (int i = 0; i < 2; i++)
        wk_stop(&w[i]);
    chat_hub_destroy(hub);
}

/* ---- on one thread ---- */

typedef struct leaver {
    chat_hub_worker_t *hw;
    chat_hub_sub_t *sub;
    int got;
} leaver_t;

/* A subscriber that leaves on its first frame. */
static void leave_cb(const char *frame, size_t len, void *ud)
{
    leaver_t *l = ud;
    l->got++;
    chat_hub_unsubscribe(l->hw, l->sub);
    l->sub = NULL;
}

static void closed_count(void *arg)
{
    (*(int *)arg)++;
}

static void test_callback_may_unsubscribe_itself(void **state)
{
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    chat_hub_t *hub = chat_hub_create(1);
    chat_hub_worker_t *hw = chat_hub_worker_create(hub, 0, &loop);
    leaver_t l1 = {hw, NULL, 0}, l2 = {hw, NULL, 0};
    seen_t stays = {0};
    l1.sub = chat_hub_subscribe(hw, 3, leave_cb, &l1);
    chat_hub_sub_t *s = chat_hub_subscribe(hw, 3, record_cb, &stays);
    l2.sub = chat_hub_subscribe(hw, 4, leave_cb, &l2); /* user 4's only socket */
    const int64_t to34[] = {3, 4};
    assert_int_equal(chat_hub_deliver(hw, to34, 2, "x", 1), 3);
    assert_int_equal(l1.got, 1);
    assert_int_equal(l2.got, 1);
    assert_int_equal(atomic_load(&stays.total), 1);
    assert_null(chat_idtable_get(&hw->users, 4)); /* swept after the delivery */
    assert_int_equal(chat_hub_deliver(hw, to34, 2, "y", 1), 1);
    assert_int_equal(l1.got, 1);
    chat_hub_unsubscribe(hw, s);
    assert_int_equal(chat_hub_worker_subscribers(hw), 0);
    int closed = 0;
    chat_hub_worker_close(hw, closed_count, &closed);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(closed, 1);
    chat_hub_destroy(hub);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_close_with_frames_queued_frees_them(void **state)
{
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    chat_hub_t *hub = chat_hub_create(3); /* worker 2 never joins */
    chat_hub_worker_t *a = chat_hub_worker_create(hub, 0, &loop);
    chat_hub_worker_t *b = chat_hub_worker_create(hub, 1, &loop);
    seen_t s = {0};
    chat_hub_sub_t *sub = chat_hub_subscribe(b, 1, record_cb, &s);
    const int64_t to1[] = {1, 2, 3};
    for (int i = 0; i < 100; i++)
        chat_hub_post(a, to1, 3, "queued frame", 12);
    chat_hub_unsubscribe(b, sub);
    /* Nothing ran: both mailboxes hold 100 frames when the workers leave. */
    int closed = 0;
    chat_hub_worker_close(a, closed_count, &closed);
    chat_hub_worker_close(b, closed_count, &closed);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(closed, 2);
    assert_int_equal(atomic_load(&s.total), 0);
    for (int i = 0; i < 3; i++)
        assert_null(chat_mailbox_take(&hub->boxes[i]));
    chat_hub_destroy(hub);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frame_reaches_every_worker_once),
        cmocka_unit_test(test_unsubscribe_stops_delivery),
        cmocka_unit_test(test_callback_may_unsubscribe_itself),
        cmocka_unit_test(test_close_with_frames_queued_frees_them),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
