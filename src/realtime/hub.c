/*
 * The realtime hub (see hub.h). A posted frame is one allocation holding the
 * member ids, the bytes and one mailbox node per worker, shared read-only and
 * freed by whoever drops the last reference. A worker finds the subscribers
 * of a member with one lookup in its id table (user id -> list of sockets).
 */
#include "realtime/hub.h"
#include "core/idtable.h"
#include "core/list.h"
#include "core/mailbox.h"
#include "core/metrics.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct frame;

/* A frame's place in one worker's mailbox. */
typedef struct hub_node {
    chat_mailbox_node_t link;
    struct frame *frame;
} hub_node_t;

/* One frame on its way to the workers of this process. */
typedef struct frame {
    _Atomic int refs;
    size_t n;
    const int64_t *members; /* in the same allocation, after nodes */
    const char *bytes;      /* likewise, after members */
    size_t len;
    hub_node_t nodes[]; /* one per worker */
} frame_t;

struct chat_hub {
    int n;
    chat_mailbox_t *boxes; /* one per worker, by index */
};

/* The subscribers of one user on one worker. */
typedef struct user_subs {
    chat_list_t subs; /* of chat_hub_sub_t.link */
} user_subs_t;

struct chat_hub_sub {
    chat_list_t link; /* in its user's list */
    user_subs_t *u;
    int64_t user;
    chat_hub_deliver_cb cb;
    void *ud;
};

struct chat_hub_worker {
    chat_hub_t *hub;
    int index;
    chat_idtable_t users; /* user id -> user_subs_t */
    size_t nsubs;
    bool delivering; /* an empty user_subs_t is kept until the delivery ends */
    bool sweep;      /* ... and one was left behind */
    void (*done)(void *arg);
    void *done_arg;
};

static chat_metric_t *m_delivered;

static void metrics_init(void)
{
    m_delivered = chat_metric_counter("chatd_stream_frames_delivered_total",
                                      "Message frames handed to WebSocket clients");
}

static void frame_unref(frame_t *f)
{
    if (atomic_fetch_sub(&f->refs, 1) == 1)
        free(f);
}

/* Drops every frame left in a mailbox (its worker is gone). */
static void drain(chat_mailbox_t *mb)
{
    for (chat_mailbox_node_t *q = chat_mailbox_take(mb), *next; q; q = next) {
        next = q->next;
        frame_unref(CHAT_CONTAINER_OF(q, hub_node_t, link)->frame);
    }
}

/* ---- the process-wide part ---- */

chat_hub_t *chat_hub_create(int nworkers)
{
    static uv_once_t once = UV_ONCE_INIT;
    uv_once(&once, metrics_init);
    chat_hub_t *hub = chat_calloc(1, sizeof *hub);
    hub->n = nworkers;
    hub->boxes = chat_calloc((size_t)nworkers, sizeof *hub->boxes);
    for (int i = 0; i < nworkers; i++)
        if (chat_mailbox_init(&hub->boxes[i]) != 0)
            abort(); /* a mutex cannot be had: as out of memory */
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
    free(hub->boxes);
    free(hub);
}

/* ---- one worker's part ---- */

static void mail_cb(chat_mailbox_t *mb, void *data)
{
    chat_hub_worker_t *hw = data;
    for (chat_mailbox_node_t *q = chat_mailbox_take(mb), *next; q; q = next) {
        next = q->next;
        frame_t *f = CHAT_CONTAINER_OF(q, hub_node_t, link)->frame;
        chat_hub_deliver(hw, f->members, f->n, f->bytes, f->len);
        frame_unref(f);
    }
}

chat_hub_worker_t *chat_hub_worker_create(chat_hub_t *hub, int index, uv_loop_t *loop)
{
    chat_hub_worker_t *hw = chat_calloc(1, sizeof *hw);
    hw->hub = hub;
    hw->index = index;
    chat_idtable_init(&hw->users);
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
    uint64_t key;
    void *u;
    for (size_t i = 0; (i = chat_idtable_next(&hw->users, i, &key, &u)) != 0;)
        free(u); /* empty lists only: every subscriber is gone */
    chat_idtable_dispose(&hw->users);
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

size_t chat_hub_worker_subscribers(const chat_hub_worker_t *hw)
{
    return hw->nsubs;
}

chat_hub_sub_t *chat_hub_subscribe(chat_hub_worker_t *hw, int64_t user_id, chat_hub_deliver_cb cb,
                                   void *ud)
{
    chat_hub_sub_t *sub = chat_calloc(1, sizeof *sub);
    sub->user = user_id;
    sub->cb = cb;
    sub->ud = ud;
    user_subs_t *u = chat_idtable_get(&hw->users, (uint64_t)user_id);
    if (!u) {
        u = chat_malloc(sizeof *u);
        chat_list_init(&u->subs);
        chat_idtable_put(&hw->users, (uint64_t)user_id, u);
    }
    sub->u = u;
    chat_list_insert_tail(&u->subs, &sub->link);
    hw->nsubs++;
    return sub;
}

void chat_hub_unsubscribe(chat_hub_worker_t *hw, chat_hub_sub_t *sub)
{
    chat_list_remove(&sub->link);
    hw->nsubs--;
    if (chat_list_empty(&sub->u->subs)) { /* the user's last socket */
        if (hw->delivering)
            hw->sweep = true; /* the delivery loop may stand on it */
        else
            free(chat_idtable_del(&hw->users, (uint64_t)sub->user));
    }
    free(sub);
}

size_t chat_hub_deliver(chat_hub_worker_t *hw, const int64_t *members, size_t n, const char *frame,
                        size_t len)
{
    size_t got = 0;
    if (hw->nsubs == 0)
        return 0;
    hw->delivering = true;
    for (size_t i = 0; i < n; i++) {
        user_subs_t *u = chat_idtable_get(&hw->users, (uint64_t)members[i]);
        if (!u)
            continue;
        chat_list_t *e, *tmp;
        CHAT_LIST_FOREACH_SAFE(e, tmp, &u->subs)
        {
            chat_hub_sub_t *sub = CHAT_CONTAINER_OF(e, chat_hub_sub_t, link);
            sub->cb(frame, len, sub->ud);
            got++;
        }
    }
    hw->delivering = false;
    if (hw->sweep) { /* users whose last subscriber left during the delivery */
        hw->sweep = false;
        for (size_t i = 0; i < n; i++) {
            user_subs_t *u = chat_idtable_get(&hw->users, (uint64_t)members[i]);
            if (u && chat_list_empty(&u->subs))
                free(chat_idtable_del(&hw->users, (uint64_t)members[i]));
        }
    }
    if (got)
        chat_metric_add(m_delivered, (double)got);
    return got;
}

void chat_hub_post(chat_hub_worker_t *hw, const int64_t *members, size_t n, const char *frame,
                   size_t len)
{
    chat_hub_t *hub = hw->hub;
    if (n == 0)
        return;
    size_t nodes = (size_t)hub->n * sizeof(hub_node_t);
    frame_t *f = chat_malloc(sizeof *f + nodes + n * sizeof *members + len);
    int64_t *ids = (int64_t *)((char *)f->nodes + nodes);
    char *bytes = (char *)(ids + n);
    memcpy(ids, members, n * sizeof *members);
    memcpy(bytes, frame, len);
    f->n = n;
    f->members = ids;
    f->bytes = bytes;
    f->len = len;
    atomic_init(&f->refs, hub->n + 1); /* + ours, dropped at the end */
    for (int i = 0; i < hub->n; i++) {
        f->nodes[i].frame = f;
        if (!chat_mailbox_post(&hub->boxes[i], &f->nodes[i].link))
            frame_unref(f); /* that worker is not taking frames */
    }
    frame_unref(f);
}
