/*
 * Deadline lists under one libuv timer. Every entry of one list has the same
 * timeout, so appending keeps a list sorted by deadline and the timer only
 * needs the earliest head: moving an entry is O(1) and nothing is allocated.
 * The HTTP server keeps its connections' header, idle, linger and ping
 * deadlines this way (net/conn.c).
 */
#ifndef CHAT_NET_TIMERLIST_H
#define CHAT_NET_TIMERLIST_H

#include "core/list.h"

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

/* Lists one timer may carry. */
#define CHAT_TIMERLIST_MAX 5

typedef struct chat_timerlist chat_timerlist_t;

/** An entry, embedded in the object it times. On no list after chat_timerlist_entry_init(). */
typedef struct chat_timerlist_entry {
    chat_list_t _link;
    uint64_t _deadline; /* uv_now() ms */
    signed char _list;  /* -1: on no list */
} chat_timerlist_entry_t;

/**
 * The deadline of e passed. e has been taken off its list first; the callback
 * may put it back on any list (with a fresh deadline) or leave it off.
 */
typedef void (*chat_timerlist_cb)(chat_timerlist_t *tl, chat_timerlist_entry_t *e, int list);
/** The timer handle is closed: tl's memory may go. */
typedef void (*chat_timerlist_close_cb)(chat_timerlist_t *tl);

struct chat_timerlist {
    void *data; /* free for the owner */
    /* private */
    uv_timer_t _timer;
    uv_loop_t *_loop;
    chat_list_t _lists[CHAT_TIMERLIST_MAX];
    uint64_t _timeout[CHAT_TIMERLIST_MAX];
    int _nlists;
    uint64_t _due; /* when the timer fires; 0: not armed */
    bool _closed;
    chat_timerlist_cb _cb;
    chat_timerlist_close_cb _close_cb;
};

/**
 * Initialises tl with nlists (<= CHAT_TIMERLIST_MAX) lists whose timeouts in
 * ms are timeout_ms[0..nlists-1]; cb fires for every expired entry, the lists
 * taken in order. Starts a libuv timer handle: end with chat_timerlist_close().
 */
void chat_timerlist_init(chat_timerlist_t *tl, uv_loop_t *loop, const uint64_t *timeout_ms,
                         int nlists, chat_timerlist_cb cb);

/**
 * Stops arming and closes the timer handle; cb fires from its close
 * callback. Entries should all be off their lists by then.
 */
void chat_timerlist_close(chat_timerlist_t *tl, chat_timerlist_close_cb cb);

static inline void chat_timerlist_entry_init(chat_timerlist_entry_t *e)
{
    chat_list_init(&e->_link);
    e->_list = -1;
}

/** The list e is on, or -1. */
static inline int chat_timerlist_entry_list(const chat_timerlist_entry_t *e)
{
    return e->_list;
}

/**
 * Puts e at the tail of list with a deadline of now plus the list's timeout,
 * taking it off the list it was on; list -1 only takes it off.
 */
void chat_timerlist_move(chat_timerlist_t *tl, chat_timerlist_entry_t *e, int list);

/** Takes e off its list (harmless when on none). */
void chat_timerlist_remove(chat_timerlist_entry_t *e);

#endif
