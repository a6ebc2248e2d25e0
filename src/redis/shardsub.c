/*
 * Sharded pub/sub on a Redis Cluster (see shardsub.h). The router's own
 * node connections carry only CLUSTER SLOTS. A timer watches the map's
 * generation; a change, or a MOVED refusal of an SSUBSCRIBE, asks the owner
 * to subscribe again (after the map was read anew). Node subscribers are
 * kept for the life of the object (a cluster has a few nodes).
 */
#include "redis/shardsub.h"

#include "core/alloc.h"
#include "core/log.h"
#include "redis/client.h"
#include "redis/url.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TICK_MS 50
#define MAX_NODES 256

typedef struct snode {
    chat_shardsub_t *s;
    char addr[CHAT_REDIS_HOST_MAX + 16];
    chat_pubsub_t *sub;
    bool used; /* a channel was sent here since the map last changed */
} snode_t;

struct chat_shardsub {
    uv_loop_t *loop;
    chat_redis_t *router;
    chat_pubsub_handler_t h;
    void *arg;
    snode_t **nodes;
    size_t nnodes;
    unsigned long gen; /* the map generation the owner last subscribed under */
    bool resubscribe;  /* ask the owner again at the next tick */
    uv_timer_t timer;
    bool closing;
    int nopen;
    void (*done)(void *arg);
    void *done_arg;
};

static void node_message(const char *ch, size_t clen, const char *p, size_t len, void *arg)
{
    snode_t *n = arg;
    n->s->h.message(ch, clen, p, len, n->s->arg);
}

static void node_subscribed(const char *ch, size_t clen, void *arg)
{
    snode_t *n = arg;
    if (n->s->h.subscribed)
        n->s->h.subscribed(ch, clen, n->s->arg);
}

static void tick_cb(uv_timer_t *t);

/* The channels waiting for this node go out at once: a new socket's upgrade waits for its
 * user channel's confirmation. From the timer, not inside the subscriber's callback. */
static void node_connected(void *arg)
{
    snode_t *n = arg;
    n->s->resubscribe = true;
    if (!n->s->closing)
        uv_timer_start(&n->s->timer, tick_cb, 0, TICK_MS);
}

static void node_unsubscribed(const char *ch, size_t clen, void *arg)
{
    snode_t *n = arg;
    if (n->s->h.unsubscribed)
        n->s->h.unsubscribed(ch, clen, n->s->arg);
}

/* A refused SSUBSCRIBE (MOVED: the map we routed by is old): read it again. */
static void node_error(const char *msg, size_t len, void *arg)
{
    snode_t *n = arg;
    chat_log_debug("event=shardsub_refused addr=%s reply=\"%.*s\"", n->addr,
                   (int)(len < 120 ? len : 120), msg);
    chat_redis_map_refresh(n->s->router);
    n->s->resubscribe = true;
}

static snode_t *node_get(chat_shardsub_t *s, const char *addr)
{
    static const chat_pubsub_handler_t nh = {node_message, node_subscribed, node_connected,
                                             node_unsubscribed, node_error};
    char url[CHAT_REDIS_HOST_MAX + 32], err[256];
    for (size_t i = 0; i < s->nnodes; i++)
        if (strcmp(s->nodes[i]->addr, addr) == 0)
            return s->nodes[i];
    if (s->closing || s->nnodes >= MAX_NODES)
        return NULL;
    snode_t *n = chat_calloc(1, sizeof *n);
    n->s = s;
    snprintf(n->addr, sizeof n->addr, "%s", addr);
    snprintf(url, sizeof url, "redis://%s", addr);
    n->sub = chat_pubsub_create(s->loop, url, &nh, n, err, sizeof err);
    if (!n->sub) {
        chat_log_warn("event=shardsub_bad_node addr=\"%.100s\" reason=\"%s\"", addr, err);
        free(n);
        return NULL;
    }
    s->nodes = chat_realloc(s->nodes, (s->nnodes + 1) * sizeof *s->nodes);
    s->nodes[s->nnodes++] = n;
    s->nopen++;
    return n;
}

static void tick_cb(uv_timer_t *t)
{
    chat_shardsub_t *s = t->data;
    unsigned long gen = chat_redis_map_gen(s->router);
    if (s->closing || gen == 0)
        return;
    if (gen != s->gen) {
        s->gen = gen;
        s->resubscribe = true;
        for (size_t i = 0; i < s->nnodes; i++)
            s->nodes[i]->used = false;
    }
    if (s->resubscribe) {
        s->resubscribe = false;
        if (s->h.connected)
            s->h.connected(s->arg);
    }
}

chat_shardsub_t *chat_shardsub_create(uv_loop_t *loop, const char *url,
                                      const chat_pubsub_handler_t *h, void *arg, char *err,
                                      size_t errlen)
{
    chat_redis_config_t rc = {.url = url};
    chat_redis_t *router = chat_redis_create(loop, &rc, err, errlen);
    if (!router)
        return NULL;
    chat_shardsub_t *s = chat_calloc(1, sizeof *s);
    s->loop = loop;
    s->router = router;
    s->h = *h;
    s->arg = arg;
    uv_timer_init(loop, &s->timer);
    s->timer.data = s;
    s->nopen = 2; /* the router and the timer */
    uv_timer_start(&s->timer, tick_cb, TICK_MS, TICK_MS);
    return s;
}

bool chat_shardsub_usable(const chat_shardsub_t *s)
{
    if (s->closing || chat_redis_map_gen(s->router) == 0)
        return false;
    for (size_t i = 0; i < s->nnodes; i++)
        if (s->nodes[i]->used && !chat_pubsub_usable(s->nodes[i]->sub))
            return false;
    return true;
}

static snode_t *route(chat_shardsub_t *s, const char *channel, size_t clen)
{
    const char *addr = chat_redis_master_of(s->router, channel, clen);
    return addr && !s->closing ? node_get(s, addr) : NULL;
}

bool chat_shardsub_subscribe(chat_shardsub_t *s, const char *channel, size_t clen)
{
    snode_t *n = route(s, channel, clen);
    if (!n)
        return false;
    n->used = true;
    return chat_pubsub_subscribe(n->sub, channel, clen);
}

void chat_shardsub_unsubscribe(chat_shardsub_t *s, const char *channel, size_t clen)
{
    snode_t *n = route(s, channel, clen);
    if (n)
        chat_pubsub_unsubscribe(n->sub, channel, clen);
}

static void part_closed(void *arg)
{
    chat_shardsub_t *s = arg;
    if (--s->nopen > 0)
        return;
    void (*done)(void *) = s->done;
    void *done_arg = s->done_arg;
    for (size_t i = 0; i < s->nnodes; i++)
        free(s->nodes[i]);
    free(s->nodes);
    free(s);
    if (done)
        done(done_arg);
}

static void timer_closed(uv_handle_t *h)
{
    part_closed(h->data);
}

void chat_shardsub_close(chat_shardsub_t *s, void (*done)(void *arg), void *arg)
{
    s->closing = true;
    s->done = done;
    s->done_arg = arg;
    s->nopen++; /* this call's own */
    for (size_t i = 0; i < s->nnodes; i++)
        chat_pubsub_close(s->nodes[i]->sub, part_closed, s);
    chat_redis_close(s->router, part_closed, s);
    uv_close((uv_handle_t *)&s->timer, timer_closed);
    part_closed(s);
}
