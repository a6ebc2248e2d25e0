/*
 * Unit tests of net/timerlist.c: entries of lists with different timeouts
 * fire in deadline order, moving an entry pushes its deadline back, a
 * removed entry never fires, an entry put back from its callback fires
 * again, and the timer stops once every list is empty (the loop ends).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "net/timerlist.h"

#include <string.h>

enum { L_SHORT, L_LONG, L_COUNT };

typedef struct item {
    chat_timerlist_entry_t e;
    char name;
    int again; /* times to put itself back on its list */
} item_t;

typedef struct run {
    chat_timerlist_t tl;
    char fired[32];
    int lists[32];
    uint64_t at[32];
    int n;
    uv_loop_t *loop;
    uint64_t t0;
    bool closed;
} run_t;

static void expired(chat_timerlist_t *tl, chat_timerlist_entry_t *e, int list)
{
    run_t *r = tl->data;
    item_t *it = CHAT_CONTAINER_OF(e, item_t, e);
    assert_int_equal(chat_timerlist_entry_list(e), -1); /* off its list during the call */
    if (r->n < 31) {
        r->fired[r->n] = it->name;
        r->lists[r->n] = list;
        r->at[r->n] = uv_now(r->loop) - r->t0;
        r->n++;
    }
    if (it->again > 0) {
        it->again--;
        chat_timerlist_move(tl, e, list);
    }
}

static void closed(chat_timerlist_t *tl)
{
    ((run_t *)tl->data)->closed = true;
}

static void run_init(run_t *r, uv_loop_t *loop)
{
    static const uint64_t timeouts[L_COUNT] = {20, 60};
    memset(r, 0, sizeof *r);
    uv_loop_init(loop);
    chat_timerlist_init(&r->tl, loop, timeouts, L_COUNT, expired);
    r->tl.data = r;
    r->loop = loop;
    r->t0 = uv_now(loop);
}

static void run_finish(run_t *r, uv_loop_t *loop)
{
    chat_timerlist_close(&r->tl, closed);
    uv_run(loop, UV_RUN_DEFAULT);
    assert_true(r->closed);
    assert_int_equal(uv_loop_close(loop), 0);
}

static void test_deadline_order(void **state)
{
    uv_loop_t loop;
    run_t r;
    run_init(&r, &loop);
    item_t a = {.name = 'a'}, b = {.name = 'b'}, c = {.name = 'c'};
    chat_timerlist_entry_init(&a.e);
    chat_timerlist_entry_init(&b.e);
    chat_timerlist_entry_init(&c.e);
    chat_timerlist_move(&r.tl, &a.e, L_LONG);
    chat_timerlist_move(&r.tl, &b.e, L_SHORT);
    chat_timerlist_move(&r.tl, &c.e, L_SHORT);
    assert_int_equal(chat_timerlist_entry_list(&a.e), L_LONG);
    /* The loop ends only when the timer stops: once every list is empty. */
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(r.n, 3);
    assert_memory_equal(r.fired, "bca", 3);
    assert_int_equal(r.lists[0], L_SHORT);
    assert_int_equal(r.lists[2], L_LONG);
    assert_true(r.at[0] >= 20);
    assert_true(r.at[2] >= 60);
    run_finish(&r, &loop);
}

typedef struct mover {
    uv_timer_t t;
    run_t *r;
    item_t *moved, *removed;
} mover_t;

static void mover_fire(uv_timer_t *t)
{
    mover_t *m = CHAT_CONTAINER_OF(t, mover_t, t);
    chat_timerlist_move(&m->r->tl, &m->moved->e, L_SHORT); /* pushed back by 10 ms */
    chat_timerlist_remove(&m->removed->e);
    chat_timerlist_remove(&m->removed->e); /* twice is harmless */
    uv_close((uv_handle_t *)t, NULL);
}

static void test_move_pushes_back_and_remove_cancels(void **state)
{
    uv_loop_t loop;
    run_t r;
    run_init(&r, &loop);
    item_t a = {.name = 'a'}, b = {.name = 'b'}, c = {.name = 'c'};
    chat_timerlist_entry_init(&a.e);
    chat_timerlist_entry_init(&b.e);
    chat_timerlist_entry_init(&c.e);
    chat_timerlist_move(&r.tl, &a.e, L_SHORT);
    chat_timerlist_move(&r.tl, &b.e, L_SHORT);
    chat_timerlist_move(&r.tl, &c.e, L_SHORT);
    mover_t m = {.r = &r, .moved = &a, .removed = &b};
    uv_timer_init(&loop, &m.t);
    uv_timer_start(&m.t, mover_fire, 10, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    /* c keeps its deadline, a moved behind it, b never fires. */
    assert_int_equal(r.n, 2);
    assert_memory_equal(r.fired, "ca", 2);
    assert_true(r.at[1] >= 30);
    run_finish(&r, &loop);
}

static void test_put_back_from_callback(void **state)
{
    uv_loop_t loop;
    run_t r;
    run_init(&r, &loop);
    item_t p = {.name = 'p', .again = 2};
    chat_timerlist_entry_init(&p.e);
    chat_timerlist_move(&r.tl, &p.e, L_SHORT);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(r.n, 3);
    assert_memory_equal(r.fired, "ppp", 3);
    assert_true(r.at[1] >= 40);
    assert_true(r.at[2] >= 60);
    assert_int_equal(chat_timerlist_entry_list(&p.e), -1);
    run_finish(&r, &loop);
}

static void test_close_with_nothing_armed(void **state)
{
    uv_loop_t loop;
    run_t r;
    run_init(&r, &loop);
    item_t a = {.name = 'a'};
    chat_timerlist_entry_init(&a.e);
    chat_timerlist_move(&r.tl, &a.e, L_LONG);
    chat_timerlist_move(&r.tl, &a.e, -1); /* off every list */
    assert_int_equal(chat_timerlist_entry_list(&a.e), -1);
    run_finish(&r, &loop);
    assert_int_equal(r.n, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deadline_order),
        cmocka_unit_test(test_move_pushes_back_and_remove_cancels),
        cmocka_unit_test(test_put_back_from_callback),
        cmocka_unit_test(test_close_with_nothing_armed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
