/*
 * Realtime fan-out (see stream.h). A new message becomes one frame, shared
 * read-only by every worker of the process through their mailboxes (a list
 * under a mutex and a uv_async_t each), and one PUBLISH whose payload is
 *
 *     <origin> <member id>,<member id>,...\n<frame>
 *
 * Every worker SUBSCRIBEs on its own connection and delivers frames of other
 * origins to its own sockets. Subscribers of a worker sit in a hash table
 * keyed by user id, so a frame costs one lookup per member.
 */
#include "chat/stream.h"
#include "redis/client.h"
#include "redis/pubsub.h"
#include "chat/chat.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/metrics.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BUCKETS 4096 /* power of two */

/* One frame on its way to the workers of this process. */
typedef struct item {
    _Atomic int refs;
    size_t n;
    int64_t *members;
    char *frame;
    size_t len;
} item_t;

typedef struct qnode {
    struct qnode *next;
    item_t *item;
} qnode_t;

typedef struct mailbox {
    uv_mutex_t mu;
    qnode_t *head, *tail;
    uv_async_t *async; /* NULL while its worker is not taking frames */
} mailbox_t;

struct chat_stream_hub {
    int n;
    mailbox_t *boxes;
    char origin[CHAT_OP_ID_LEN]; /* this instance, in published payloads */
};

struct chat_stream_sub {
    chat_stream_sub_t *prev, *next; /* in its bucket */
    int64_t user;
    chat_stream_deliver_cb cb;
    void *ud;
};

struct chat_stream {
    chat_stream_hub_t *hub;
    int index;
    uv_loop_t *loop;
    uv_async_t async;
    chat_redis_t *pub;
    chat_pubsub_t *sub;
    chat_stream_sub_t **buckets;
    size_t nsubs;
    int closing; /* pieces still closing */
    void (*done)(void *arg);
    void *done_arg;
};

static chat_metric_t *m_delivered, *m_published, *m_received;

static void item_unref(item_t *it)
{
    if (atomic_fetch_sub(&it->refs, 1) != 1)
        return;
    free(it->members);
    free(it->frame);
    free(it);
}

static unsigned bucket_of(int64_t user)
{
    return (unsigned)(((uint64_t)user * 0x9E3779B97F4A7C15ull) >> 40) & (BUCKETS - 1);
}

/* Hands frame to every local socket of the members. */
static void deliver(chat_stream_t *s, const int64_t *members, size_t n, const char *frame,
                    size_t len)
{
    if (s->nsubs == 0)
        return;
    for (size_t i = 0; i < n; i++) {
        chat_stream_sub_t *sub = s->buckets[bucket_of(members[i])];
        while (sub) {
            /* The callback may not unsubscribe (it only queues bytes), but be safe. */
            chat_stream_sub_t *next = sub->next;
            if (sub->user == members[i]) {
                sub->cb(frame, len, sub->ud);
                chat_metric_inc(m_delivered);
            }
            sub = next;
        }
    }
}

/* ---- the hub ---- */

static void metrics_init(void)
{
    m_delivered =
        chat_metric_series(chat_metrics_counter("chatd_stream_frames_delivered_total",
                                                "Message frames handed to WebSocket clients"),
                           "");
    chat_metric_family_t *f = chat_metrics_counter(
        "chatd_stream_pubsub_total", "Message frames published to and received from Redis");
    m_published = chat_metric_series(f, "direction=\"published\"");
    m_received = chat_metric_series(f, "direction=\"received\"");
}

chat_stream_hub_t *chat_stream_hub_create(int nworkers)
{
    static uv_once_t once = UV_ONCE_INIT;
    uv_once(&once, metrics_init);
    chat_stream_hub_t *hub = chat_calloc(1, sizeof *hub);
    hub->n = nworkers;
    hub->boxes = chat_calloc((size_t)nworkers, sizeof *hub->boxes);
    for (int i = 0; i < nworkers; i++)
        uv_mutex_init(&hub->boxes[i].mu);
    if (chat_op_id_new(hub->origin) < 0) {
        /* No randomness: the process id and time still tell instances apart on one host. */
        snprintf(hub->origin, sizeof hub->origin, "p%ld-%llu", (long)getpid(),
                 (unsigned long long)uv_hrtime());
    }
    return hub;
}

void chat_stream_hub_destroy(chat_stream_hub_t *hub)
{
    if (!hub)
        return;
    for (int i = 0; i < hub->n; i++) {
        mailbox_t *b = &hub->boxes[i];
        for (qnode_t *q = b->head, *next; q; q = next) {
            next = q->next;
            item_unref(q->item);
            free(q);
        }
        uv_mutex_destroy(&b->mu);
    }
    free(hub->boxes);
    free(hub);
}

/* Puts the frame into every worker's mailbox and wakes them. */
static void hub_post(chat_stream_hub_t *hub, item_t *it)
{
    atomic_store(&it->refs, hub->n + 1); /* + ours, dropped at the end */
    for (int i = 0; i < hub->n; i++) {
        mailbox_t *b = &hub->boxes[i];
        bool queued = false;
        uv_mutex_lock(&b->mu);
        if (b->async) {
            qnode_t *q = chat_malloc(sizeof *q);
            q->next = NULL;
            q->item = it;
            if (b->tail)
                b->tail->next = q;
            else
                b->head = q;
            b->tail = q;
            uv_async_send(b->async);
            queued = true;
        }
        uv_mutex_unlock(&b->mu);
        if (!queued)
            item_unref(it);
    }
    item_unref(it);
}

static qnode_t *mailbox_take(mailbox_t *b)
{
    uv_mutex_lock(&b->mu);
    qnode_t *q = b->head;
    b->head = b->tail = NULL;
    uv_mutex_unlock(&b->mu);
    return q;
}

static void async_cb(uv_async_t *h)
{
    chat_stream_t *s = h->data;
    qnode_t *q = mailbox_take(&s->hub->boxes[s->index]);
    while (q) {
        qnode_t *next = q->next;
        deliver(s, q->item->members, q->item->n, q->item->frame, q->item->len);
        item_unref(q->item);
        free(q);
        q = next;
    }
}

/* ---- Redis ---- */

/* A frame from Redis: "<origin> <ids>\n<frame>". Own frames were delivered already. */
static void pubsub_cb(const char *p, size_t len, void *arg)
{
    chat_stream_t *s = arg;
    const char *end = p + len;
    const char *sp = memchr(p, ' ', len);
    const char *nl = sp ? memchr(sp, '\n', (size_t)(end - sp)) : NULL;
    if (!sp || !nl)
        return; /* not ours */
    size_t olen = strlen(s->hub->origin);
    if ((size_t)(sp - p) == olen && memcmp(p, s->hub->origin, olen) == 0)
        return;
    chat_metric_inc(m_received);
    size_t cap = 16, n = 0;
    int64_t *ids = chat_malloc(cap * sizeof *ids);
    const char *q = sp + 1;
    while (q < nl) {
        int64_t v = 0;
        const char *d = q;
        while (q < nl && *q >= '0' && *q <= '9' && q - d < 19)
            v = v * 10 + (*q++ - '0');
        if (q == d || (q < nl && *q != ',') || v <= 0)
            break; /* malformed: deliver to the ids read so far */
        if (n == cap) {
            cap *= 2;
            ids = chat_realloc(ids, cap * sizeof *ids);
        }
        ids[n++] = v;
        if (q < nl)
            q++;
    }
    deliver(s, ids, n, nl + 1, (size_t)(end - nl - 1));
    free(ids);
}

/* ---- the worker's stream ---- */

chat_stream_t *chat_stream_create(chat_stream_hub_t *hub, int index, uv_loop_t *loop,
                                  const char *redis_url, int cmd_timeout_ms)
{
    chat_stream_t *s = chat_calloc(1, sizeof *s);
    s->hub = hub;
    s->index = index;
    s->loop = loop;
    s->buckets = chat_calloc(BUCKETS, sizeof *s->buckets);
    uv_async_init(loop, &s->async, async_cb);
    s->async.data = s;
    mailbox_t *b = &hub->boxes[index];
    uv_mutex_lock(&b->mu);
    b->async = &s->async;
    uv_mutex_unlock(&b->mu);
    if (redis_url) {
        char err[256];
        chat_redis_config_t rc = {.url = redis_url, .cmd_timeout_ms = cmd_timeout_ms};
        s->pub = chat_redis_create(loop, &rc, err, sizeof err);
        if (s->pub)
            s->sub = chat_pubsub_create(loop, redis_url, CHAT_STREAM_CHANNEL, pubsub_cb, s, err,
                                        sizeof err);
        if (!s->pub || !s->sub)
            chat_log_error("event=stream_redis_disabled reason=\"%s\"", err);
    }
    return s;
}

static void piece_closed(void *arg)
{
    chat_stream_t *s = arg;
    if (--s->closing > 0)
        return;
    void (*done)(void *) = s->done;
    void *darg = s->done_arg;
    free(s->buckets);
    free(s);
    if (done)
        done(darg);
}

static void async_closed_cb(uv_handle_t *h)
{
    piece_closed(h->data);
}

void chat_stream_close(chat_stream_t *s, void (*done)(void *arg), void *arg)
{
    s->done = done;
    s->done_arg = arg;
    mailbox_t *b = &s->hub->boxes[s->index];
    uv_mutex_lock(&b->mu);
    b->async = NULL;
    uv_mutex_unlock(&b->mu);
    for (qnode_t *q = mailbox_take(b), *next; q; q = next) {
        next = q->next;
        item_unref(q->item);
        free(q);
    }
    s->closing = 1 + (s->pub != NULL) + (s->sub != NULL);
    uv_close((uv_handle_t *)&s->async, async_closed_cb);
    if (s->sub)
        chat_pubsub_close(s->sub, piece_closed, s);
    if (s->pub)
        chat_redis_close(s->pub, piece_closed, s);
}

chat_stream_sub_t *chat_stream_subscribe(chat_stream_t *s, int64_t user_id,
                                         chat_stream_deliver_cb cb, void *ud)
{
    chat_stream_sub_t *sub = chat_calloc(1, sizeof *sub);
    sub->user = user_id;
    sub->cb = cb;
    sub->ud = ud;
    chat_stream_sub_t **head = &s->buckets[bucket_of(user_id)];
    sub->next = *head;
    if (*head)
        (*head)->prev = sub;
    *head = sub;
    s->nsubs++;
    return sub;
}

void chat_stream_unsubscribe(chat_stream_t *s, chat_stream_sub_t *sub)
{
    if (sub->prev)
        sub->prev->next = sub->next;
    else
        s->buckets[bucket_of(sub->user)] = sub->next;
    if (sub->next)
        sub->next->prev = sub->prev;
    s->nsubs--;
    free(sub);
}

void chat_stream_publish(chat_stream_t *s, const int64_t *members, size_t n, const char *msg,
                         size_t len)
{
    if (!s || n == 0)
        return;
    static const char head[] = "{\"type\":\"message\",\"message\":";
    item_t *it = chat_calloc(1, sizeof *it);
    it->n = n;
    it->members = chat_malloc(n * sizeof *members);
    memcpy(it->members, members, n * sizeof *members);
    it->len = sizeof head - 1 + len + 1;
    it->frame = chat_malloc(it->len);
    memcpy(it->frame, head, sizeof head - 1);
    memcpy(it->frame + sizeof head - 1, msg, len);
    it->frame[it->len - 1] = '}';
    if (s->pub && chat_redis_healthy(s->pub)) {
        chat_buf_t b = CHAT_BUF_INIT;
        chat_buf_reserve(&b, strlen(s->hub->origin) + n * 8 + it->len + 4);
        chat_buf_puts(&b, s->hub->origin);
        chat_buf_putc(&b, ' ');
        for (size_t i = 0; i < n; i++) {
            if (i)
                chat_buf_putc(&b, ',');
            chat_buf_put_i64(&b, members[i]);
        }
        chat_buf_putc(&b, '\n');
        chat_buf_append(&b, it->frame, it->len);
        const char *argv[] = {"PUBLISH", CHAT_STREAM_CHANNEL, b.data};
        const size_t argvlen[] = {7, sizeof CHAT_STREAM_CHANNEL - 1, b.len};
        /* At most once: a PUBLISH that fails or times out is not repeated. */
        if (chat_redis_command(s->pub, NULL, NULL, 3, argv, argvlen) == 0)
            chat_metric_inc(m_published);
        chat_buf_dispose(&b);
    }
    hub_post(s->hub, it);
}
