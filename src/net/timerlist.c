/*
 * Deadline lists under one libuv timer (see timerlist.h): the timer is armed
 * for the earliest head of any list and re-armed after each expiry pass. An
 * entry taken off a list does not disarm the timer; a pass that finds nothing
 * due only re-arms it.
 */
#include "net/timerlist.h"

static void timer_cb(uv_timer_t *t);

/* Makes the timer fire no later than the earliest deadline of any list. */
static void arm(chat_timerlist_t *tl)
{
    if (tl->_closed)
        return;
    uint64_t due = UINT64_MAX;
    for (int l = 0; l < tl->_nlists; l++) {
        chat_list_t *first = chat_list_first(&tl->_lists[l]);
        if (first) {
            chat_timerlist_entry_t *e = CHAT_CONTAINER_OF(first, chat_timerlist_entry_t, _link);
            if (e->_deadline < due)
                due = e->_deadline;
        }
    }
    if (due == UINT64_MAX) {
        if (tl->_due) {
            uv_timer_stop(&tl->_timer);
            tl->_due = 0;
        }
        return;
    }
    if (tl->_due && tl->_due <= due)
        return;
    uint64_t now = uv_now(tl->_loop);
    uv_timer_start(&tl->_timer, timer_cb, due > now ? due - now : 0, 0);
    tl->_due = due;
}

static void timer_cb(uv_timer_t *t)
{
    chat_timerlist_t *tl = t->data;
    uint64_t now = uv_now(tl->_loop);
    tl->_due = 0;
    for (int l = 0; l < tl->_nlists; l++) {
        chat_list_t *first;
        while ((first = chat_list_first(&tl->_lists[l]))) {
            chat_timerlist_entry_t *e = CHAT_CONTAINER_OF(first, chat_timerlist_entry_t, _link);
            if (e->_deadline > now)
                break;
            chat_timerlist_remove(e);
            tl->_cb(tl, e, l);
        }
    }
    arm(tl);
}

void chat_timerlist_init(chat_timerlist_t *tl, uv_loop_t *loop, const uint64_t *timeout_ms,
                         int nlists, chat_timerlist_cb cb)
{
    tl->_loop = loop;
    tl->_nlists = nlists < CHAT_TIMERLIST_MAX ? nlists : CHAT_TIMERLIST_MAX;
    for (int l = 0; l < tl->_nlists; l++) {
        chat_list_init(&tl->_lists[l]);
        tl->_timeout[l] = timeout_ms[l];
    }
    tl->_due = 0;
    tl->_closed = false;
    tl->_cb = cb;
    uv_timer_init(loop, &tl->_timer);
    tl->_timer.data = tl;
}

static void closed_cb(uv_handle_t *h)
{
    chat_timerlist_t *tl = h->data;
    tl->_close_cb(tl);
}

void chat_timerlist_close(chat_timerlist_t *tl, chat_timerlist_close_cb cb)
{
    tl->_closed = true;
    tl->_close_cb = cb;
    uv_close((uv_handle_t *)&tl->_timer, closed_cb);
}

void chat_timerlist_remove(chat_timerlist_entry_t *e)
{
    chat_list_remove(&e->_link);
    e->_list = -1;
}

void chat_timerlist_move(chat_timerlist_t *tl, chat_timerlist_entry_t *e, int list)
{
    chat_timerlist_remove(e);
    if (list < 0 || list >= tl->_nlists)
        return;
    chat_list_t *head = &tl->_lists[list];
    bool was_empty = chat_list_empty(head);
    e->_deadline = uv_now(tl->_loop) + tl->_timeout[list];
    e->_list = (signed char)list;
    chat_list_insert_tail(head, &e->_link);
    if (was_empty)
        arm(tl);
}
