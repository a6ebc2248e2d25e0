/*
 * The cross-thread mailbox (see mailbox.h): a singly linked FIFO under a
 * mutex and a uv_async_t owned by the receiving loop. The async handle is
 * allocated so that its memory outlives the close, as libuv requires.
 */
#include "core/mailbox.h"
#include "core/alloc.h"

#include <stdlib.h>

int chat_mailbox_init(chat_mailbox_t *mb)
{
    mb->_head = mb->_tail = NULL;
    mb->_async = NULL;
    mb->_cb = NULL;
    mb->_data = NULL;
    return uv_mutex_init(&mb->_mu);
}

void chat_mailbox_dispose(chat_mailbox_t *mb)
{
    uv_mutex_destroy(&mb->_mu);
}

static void async_cb(uv_async_t *a)
{
    chat_mailbox_t *mb = a->data;
    mb->_cb(mb, mb->_data);
}

void chat_mailbox_open(chat_mailbox_t *mb, uv_loop_t *loop, chat_mailbox_cb cb, void *data)
{
    uv_async_t *a = chat_calloc(1, sizeof *a);
    if (uv_async_init(loop, a, async_cb) != 0)
        abort(); /* only fails for a loop that is not set up */
    a->data = mb;
    mb->_cb = cb;
    mb->_data = data;
    uv_mutex_lock(&mb->_mu);
    mb->_async = a;
    uv_mutex_unlock(&mb->_mu);
}

bool chat_mailbox_post(chat_mailbox_t *mb, chat_mailbox_node_t *node)
{
    node->next = NULL;
    uv_mutex_lock(&mb->_mu);
    uv_async_t *a = mb->_async;
    if (a) {
        if (mb->_tail)
            mb->_tail->next = node;
        else
            mb->_head = node;
        mb->_tail = node;
        /* Under the mutex: close cannot free the handle meanwhile. */
        uv_async_send(a);
    }
    uv_mutex_unlock(&mb->_mu);
    return a != NULL;
}

chat_mailbox_node_t *chat_mailbox_take(chat_mailbox_t *mb)
{
    uv_mutex_lock(&mb->_mu);
    chat_mailbox_node_t *n = mb->_head;
    mb->_head = mb->_tail = NULL;
    uv_mutex_unlock(&mb->_mu);
    return n;
}

typedef struct closing {
    void (*done)(void *data);
    void *data;
} closing_t;

static void closed_cb(uv_handle_t *h)
{
    closing_t *c = h->data;
    void (*done)(void *) = c->done;
    void *data = c->data;
    free(c);
    free(h);
    if (done)
        done(data);
}

void chat_mailbox_close(chat_mailbox_t *mb, void (*done)(void *data), void *data)
{
    uv_mutex_lock(&mb->_mu);
    uv_async_t *a = mb->_async;
    mb->_async = NULL;
    uv_mutex_unlock(&mb->_mu);
    if (!a) {
        if (done)
            done(data);
        return;
    }
    closing_t *c = chat_malloc(sizeof *c);
    c->done = done;
    c->data = data;
    a->data = c;
    uv_close((uv_handle_t *)a, closed_cb);
}
