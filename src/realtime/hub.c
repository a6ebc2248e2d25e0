/*
 * The realtime hub (see hub.h). A posted message is one allocation holding
 * the numbers, the frame bytes and one mailbox node per worker, shared
 * read-only and freed by whoever drops the last reference.
 */
#include "realtime/hub.h"
#include "core/mailbox.h"
#include "core/idtable.h"
#include "core/list.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* Typing throttle: (user, conversation) pairs remembered; all forgotten past this many. */
#define TYPING_MAX 16384

struct item;

/* An item's place in one worker's mailbox. */
typedef struct hub_node {
    chat_mailbox_node_t link;
    struct item *item;
} hub_node_t;

/* One message on its way to the workers of this process. */
typedef struct item {
    _Atomic int refs;
    chat_rt_msg_t m;    /* frame in the same allocation, after nodes */
    hub_node_t nodes[]; /* one per worker */
} item_t;

struct chat_hub {
    int n;
    chat_mailbox_t *boxes; /* one per worker, by index */
    uv_mutex_t typing_lock;
    chat_idtable_t typing; /* (user, conv) folded -> last time shown, ms, as a pointer */
};

struct chat_hub_worker {
    chat_hub_t *hub;
    int index;
    chat_hub_cb cb;
    void *arg;
    void (*done)(void *arg);
    void *done_arg;
};

static void item_unref(item_t *it)
{
    if (atomic_fetch_sub(&it->refs, 1) == 1)
        free(it);
}

/* Drops every item left in a mailbox (its worker is gone). */
static void drain(chat_mailbox_t *mb)
{
    for (chat_mailbox_node_t *q = chat_mailbox_take(mb), *next; q; q = next) {
        next = q->next;
        item_unref(CHAT_CONTAINER_OF(q, hub_node_t, link)->item);
    }
}

chat_hub_t *chat_hub_create(int nworkers)
{
    chat_hub_t *hub = chat_calloc(1, sizeof *hub);
    hub->n = nworkers;
    hub->boxes = chat_calloc((size_t)nworkers, sizeof *hub->boxes);
    for (int i = 0; i < nworkers; i++)
        if (chat_mailbox_init(&hub->boxes[i]) != 0)
            abort(); /* a mutex cannot be had: as out of memory */
    if (uv_mutex_init(&hub->typing_lock) != 0)
        abort();
    chat_idtable_init(&hub->typing);
    return hub;
}

void chat_hub_destroy(chat_hub_t *hub)
{
    if (!hub)
        return;
    for (int i = 0; i < hub->n; i++) {
        drain(&hub->boxes[i]);
        chat_mailbox_dispose(&hub->boxes[i]);
    }
    chat_idtable_dispose(&hub->typing);
    uv_mutex_destroy(&hub->typing_lock);
    free(hub->boxes);
    free(hub);
}

static void mail_cb(chat_mailbox_t *mb, void *data)
{
    chat_hub_worker_t *hw = data;
    for (chat_mailbox_node_t *q = chat_mailbox_take(mb), *next; q; q = next) {
        next = q->next;
        item_t *it = CHAT_CONTAINER_OF(q, hub_node_t, link)->item;
        hw->cb(&it->m, hw->arg);
        item_unref(it);
    }
}

chat_hub_worker_t *chat_hub_worker_create(chat_hub_t *hub, int index, uv_loop_t *loop,
                                          chat_hub_cb cb, void *arg)
{
    chat_hub_worker_t *hw = chat_calloc(1, sizeof *hw);
    hw->hub = hub;
    hw->index = index;
    hw->cb = cb;
    hw->arg = arg;
    chat_mailbox_open(&hub->boxes[index], loop, mail_cb, hw);
    return hw;
}

static void mailbox_closed(void *arg)
{
    chat_hub_worker_t *hw = arg;
    void (*done)(void *) = hw->done;
    void *darg = hw->done_arg;
    /* Posts stopped when the close began: what is queued now is all there will be. */
    drain(&hw->hub->boxes[hw->index]);
    free(hw);
    if (done)
        done(darg);
}

void chat_hub_worker_close(chat_hub_worker_t *hw, void (*done)(void *arg), void *arg)
{
    hw->done = done;
    hw->done_arg = arg;
    chat_mailbox_close(&hw->hub->boxes[hw->index], mailbox_closed, hw);
}

void chat_hub_post(chat_hub_worker_t *hw, const chat_rt_msg_t *m)
{
    chat_hub_t *hub = hw->hub;
    size_t nodes = (size_t)hub->n * sizeof(hub_node_t);
    item_t *it = chat_malloc(sizeof *it + nodes + m->len + 1);
    char *bytes = (char *)it->nodes + nodes;
    if (m->len)
        memcpy(bytes, m->frame, m->len);
    bytes[m->len] = '\0';
    it->m = *m;
    it->m.frame = bytes;
    atomic_init(&it->refs, hub->n + 1); /* + ours, dropped at the end */
    for (int i = 0; i < hub->n; i++) {
        it->nodes[i].item = it;
        if (!chat_mailbox_post(&hub->boxes[i], &it->nodes[i].link))
            item_unref(it); /* that worker is not taking messages */
    }
    item_unref(it);
}

bool chat_hub_typing_allow(chat_hub_t *hub, int64_t user, int64_t conv, uint64_t now_ms,
                           uint64_t interval_ms)
{
    /* Two ids folded into one key: a rare collision only throttles a typing frame. */
    uint64_t key = ((uint64_t)user << 32 ^ (uint64_t)conv) | 1u << 31;
    uv_mutex_lock(&hub->typing_lock);
    uintptr_t last = (uintptr_t)chat_idtable_get(&hub->typing, key);
    bool ok = last == 0 || now_ms + 1 - last >= interval_ms;
    if (ok) {
        if (chat_idtable_len(&hub->typing) >= TYPING_MAX) { /* forget all: memory stays bounded */
            chat_idtable_dispose(&hub->typing);
            chat_idtable_init(&hub->typing);
        }
        chat_idtable_put(&hub->typing, key, (void *)(uintptr_t)(now_ms + 1));
    }
    uv_mutex_unlock(&hub->typing_lock);
    return ok;
}
