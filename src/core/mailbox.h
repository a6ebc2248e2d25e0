/*
 * A mailbox between threads: any thread posts nodes, the owner's loop is
 * woken (one uv_async_t) and takes them all at once, in the order they were
 * posted. The one cross-thread queue of chatd (the realtime hub's frames to
 * each worker). Nodes are intrusive and owned by the poster until taken.
 */
#ifndef CHAT_CORE_MAILBOX_H
#define CHAT_CORE_MAILBOX_H

#include <stdbool.h>
#include <uv.h>

typedef struct chat_mailbox_node {
    struct chat_mailbox_node *next;
} chat_mailbox_node_t;

typedef struct chat_mailbox chat_mailbox_t;
/** Runs on the owner's loop after one or more posts; call chat_mailbox_take. */
typedef void (*chat_mailbox_cb)(chat_mailbox_t *mb, void *data);

struct chat_mailbox {
    /* private */
    uv_mutex_t _mu;
    chat_mailbox_node_t *_head, *_tail;
    uv_async_t *_async; /* NULL while no loop takes the mail */
    chat_mailbox_cb _cb;
    void *_data;
};

/** A closed mailbox (posts are refused until it is opened). Returns 0 or a libuv error. */
int chat_mailbox_init(chat_mailbox_t *mb);
/** Frees the mutex; the mailbox must be closed and empty. */
void chat_mailbox_dispose(chat_mailbox_t *mb);

/** From the owner thread: posts are accepted from now on and wake cb on loop. */
void chat_mailbox_open(chat_mailbox_t *mb, uv_loop_t *loop, chat_mailbox_cb cb, void *data);

/**
 * From any thread: appends node and wakes the owner. Returns false when the
 * mailbox is not open; the node then stays the caller's.
 */
bool chat_mailbox_post(chat_mailbox_t *mb, chat_mailbox_node_t *node);

/** From the owner thread: every node posted so far, oldest first (NULL-terminated). */
chat_mailbox_node_t *chat_mailbox_take(chat_mailbox_t *mb);

/**
 * From the owner thread: refuses posts from now on and closes the wake-up
 * handle; done(data) runs from its close callback. Nodes still queued stay
 * for chat_mailbox_take.
 */
void chat_mailbox_close(chat_mailbox_t *mb, void (*done)(void *data), void *data);

#endif
