/*
 * Redis Cluster routing (see cluster.h). The map is a table of 16384 node
 * indexes; nodes are kept for the life of the router (a cluster has a few)
 * and each owns an ordinary client (redis/client.c), whose circuit breaker
 * is that node's. A command travels in an op_t that keeps a copy of its
 * arguments, so that a MOVED or ASK reply can send it again; the op is freed
 * when its final callback (or, after a timeout, its late outcome) has run.
 */
#include "redis/cluster.h"

#include "core/alloc.h"
#include "core/log.h"
#include "core/metrics.h"
#include "redis/slot.h"
#include "redis/url.h"

#include <hiredis/hiredis.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_SEEDS 16
#define MAX_NODES 256
#define TICK_MS 100
#define ADDR_MAX (CHAT_REDIS_HOST_MAX + 16)

typedef struct node {
    char addr[ADDR_MAX]; /* "host:port", as the map names it */
    chat_redis_t *client;
    bool master; /* a master in the last map read */
} node_t;

struct chat_redis_cluster {
    uv_loop_t *loop;
    chat_redis_config_t cfg; /* url unused: each node has its own */
    node_t *nodes;
    size_t nnodes;
    uint16_t owner[CHAT_REDIS_SLOTS];  /* node index + 1; 0: no master known */
    uint16_t mapped[CHAT_REDIS_SLOTS]; /* owner as the last map read said (MOVED aside) */
    bool have_map;
    bool all_slots; /* the last map read named a master for every slot */
    unsigned long gen;
    uv_timer_t timer;
    bool refresh_inflight;
    bool refresh_wanted;
    bool map_failed_logged; /* since the last map read that worked */
    uint64_t last_refresh;  /* loop time of the last map request */
    size_t npending;
    size_t next_any; /* rotation for commands without a key */
    bool closing;
    int nopen; /* node clients and the timer not closed yet */
    void (*close_cb)(void *arg);
    void *close_arg;
};

typedef struct op {
    chat_redis_cluster_t *c;
    chat_redis_cb cb;
    chat_redis_late_cb late;
    void *arg;
    int argc;
    int redirects;
    const char **argv; /* one block with argvlen and the bytes */
    size_t *argvlen;
} op_t;

static chat_metric_t *m_moved, *m_ask, *m_maps;

static void metrics_once(void)
{
    chat_metric_family_t *f = chat_metrics_counter(
        "chatd_redis_cluster_redirects_total", "MOVED and ASK replies followed to another node");
    m_moved = chat_metric_series(f, "kind=\"moved\"");
    m_ask = chat_metric_series(f, "kind=\"ask\"");
    m_maps = chat_metric_counter("chatd_redis_cluster_map_changes_total",
                                 "Slot maps read that moved a slot (the first one included)");
}

/* ---- nodes ---- */

static node_t *node_find(chat_redis_cluster_t *c, const char *addr)
{
    for (size_t i = 0; i < c->nnodes; i++)
        if (strcmp(c->nodes[i].addr, addr) == 0)
            return &c->nodes[i];
    return NULL;
}

/* The node at addr ("host:port"), its client created on first sight. NULL
 * when addr is not a usable address or the table is full. */
static node_t *node_get(chat_redis_cluster_t *c, const char *addr)
{
    node_t *n = node_find(c, addr);
    char url[ADDR_MAX + 16], err[256];
    if (n || c->closing || c->nnodes >= MAX_NODES)
        return n;
    snprintf(url, sizeof url, "redis://%s", addr);
    chat_redis_config_t cfg = c->cfg;
    cfg.url = url;
    chat_redis_t *client = chat_redis_create(c->loop, &cfg, err, sizeof err);
    if (!client) {
        chat_log_warn("event=redis_cluster_bad_node addr=\"%.100s\" reason=\"%s\"", addr, err);
        return NULL;
    }
    c->nodes = chat_realloc(c->nodes, (c->nnodes + 1) * sizeof *c->nodes);
    n = &c->nodes[c->nnodes++];
    memset(n, 0, sizeof *n);
    snprintf(n->addr, sizeof n->addr, "%s", addr);
    n->client = client;
    c->nopen++;
    return n;
}

static node_t *slot_node(const chat_redis_cluster_t *c, unsigned slot)
{
    uint16_t i = c->owner[slot];
    return i ? &c->nodes[i - 1] : NULL;
}

/* A master that is up, in turn, for commands without a key. */
static node_t *any_master(chat_redis_cluster_t *c)
{
    for (size_t k = 0; k < c->nnodes; k++) {
        node_t *n = &c->nodes[(c->next_any + k) % c->nnodes];
        if (n->master && chat_redis_healthy(n->client)) {
            c->next_any = (c->next_any + k + 1) % c->nnodes;
            return n;
        }
    }
    return NULL;
}

/* ---- the map ---- */

static void want_refresh(chat_redis_cluster_t *c)
{
    c->refresh_wanted = true;
}

/* "host:port" of a CLUSTER SLOTS node entry; an empty host means the node asked. */
static int entry_addr(const redisReply *e, const char *asked, char out[ADDR_MAX])
{
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 ||
        e->element[0]->type != REDIS_REPLY_STRING || e->element[1]->type != REDIS_REPLY_INTEGER)
        return -1;
    const char *host = e->element[0]->str;
    char asked_host[ADDR_MAX];
    if (host[0] == '\0' || strcmp(host, "?") == 0) {
        const char *colon = strrchr(asked, ':');
        snprintf(asked_host, sizeof asked_host, "%.*s", colon ? (int)(colon - asked) : 0, asked);
        host = asked_host;
    }
    snprintf(out, ADDR_MAX, strchr(host, ':') && host[0] != '[' ? "[%s]:%lld" : "%s:%lld", host,
             (long long)e->element[1]->integer);
    return 0;
}

typedef struct refresh_op {
    chat_redis_cluster_t *c;
    char asked[ADDR_MAX];
} refresh_op_t;

/* Applies a CLUSTER SLOTS reply: every range to its master, clients for all. */
static void apply_slots(chat_redis_cluster_t *c, const redisReply *r, const char *asked)
{
    uint16_t *owner = chat_calloc(CHAT_REDIS_SLOTS, sizeof *owner);
    char addr[ADDR_MAX];
    bool changed = !c->have_map;
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
            e->element[0]->type != REDIS_REPLY_INTEGER ||
            e->element[1]->type != REDIS_REPLY_INTEGER)
            continue;
        long long lo = e->element[0]->integer, hi = e->element[1]->integer;
        if (lo < 0 || hi >= CHAT_REDIS_SLOTS || lo > hi)
            continue;
        /* An index, not a pointer: node_get may move the table. */
        node_t *m = entry_addr(e->element[2], asked, addr) == 0 ? node_get(c, addr) : NULL;
        uint16_t mi = m ? (uint16_t)(m - c->nodes + 1) : 0;
        for (size_t k = 3; k < e->elements; k++) /* replicas: connected before they take over */
            if (entry_addr(e->element[k], asked, addr) == 0)
                (void)node_get(c, addr);
        for (long long s = lo; mi && s <= hi; s++)
            owner[s] = mi;
    }
    for (size_t i = 0; i < c->nnodes; i++)
        c->nodes[i].master = false;
    c->all_slots = true;
    for (unsigned s = 0; s < CHAT_REDIS_SLOTS; s++) {
        if (!owner[s])
            c->all_slots = false;
        if (owner[s] != c->mapped[s])
            changed = true;
        if (owner[s])
            c->nodes[owner[s] - 1].master = true;
    }
    memcpy(c->owner, owner, sizeof c->owner);
    memcpy(c->mapped, owner, sizeof c->mapped);
    free(owner);
    c->have_map = true;
    if (changed) {
        c->gen++;
        chat_metric_inc(m_maps);
        chat_log_info("event=redis_cluster_map nodes=%zu gen=%lu from=%s", c->nnodes, c->gen,
                      asked);
    }
    /* A master that is down: its replica may be about to take over. */
    for (size_t i = 0; i < c->nnodes; i++)
        if (c->nodes[i].master && !chat_redis_healthy(c->nodes[i].client))
            want_refresh(c);
}

static void slots_cb(chat_err_t status, redisReply *reply, void *arg)
{
    refresh_op_t *op = arg;
    chat_redis_cluster_t *c = op->c;
    c->refresh_inflight = false;
    if (status == CHAT_EOK && reply && reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 &&
        !c->closing) {
        apply_slots(c, reply, op->asked);
        c->map_failed_logged = false;
    } else if (!c->closing) {
        want_refresh(c);
        if (!c->map_failed_logged) { /* e.g. a Redis without cluster support */
            c->map_failed_logged = true;
            chat_log_warn("event=redis_cluster_map_failed addr=%s reason=\"%.120s\"", op->asked,
                          status == CHAT_EREPLY && reply && reply->str ? reply->str
                          : status == CHAT_EOK                         ? "no slots"
                                                                       : chat_strerror(status));
        }
    }
    free(op);
}

/* Asks a node that is up for the map, each node in turn. */
static void refresh_send(chat_redis_cluster_t *c)
{
    static const char *const argv[] = {"CLUSTER", "SLOTS"};
    for (size_t k = 0; k < c->nnodes; k++) {
        node_t *n = &c->nodes[(c->next_any + k) % c->nnodes];
        if (!chat_redis_healthy(n->client))
            continue;
        refresh_op_t *op = chat_malloc(sizeof *op);
        op->c = c;
        snprintf(op->asked, sizeof op->asked, "%s", n->addr);
        if (chat_redis_command(n->client, slots_cb, op, 2, (const char **)argv, NULL) == 0) {
            c->refresh_inflight = true;
            c->refresh_wanted = false;
            c->last_refresh = uv_now(c->loop);
            c->next_any = (c->next_any + k + 1) % c->nnodes;
            return;
        }
        free(op);
    }
}

static void tick_cb(uv_timer_t *t)
{
    chat_redis_cluster_t *c = t->data;
    uint64_t since = uv_now(c->loop) - c->last_refresh;
    if (c->closing || c->refresh_inflight)
        return;
    /* A master whose client is down: its replica may be taking over. */
    for (size_t i = 0; i < c->nnodes && !c->refresh_wanted; i++)
        if (c->nodes[i].master && !chat_redis_healthy(c->nodes[i].client))
            want_refresh(c);
    if (!c->have_map || (c->refresh_wanted && since >= TICK_MS) ||
        since >= CHAT_REDIS_CLUSTER_REFRESH_MS)
        refresh_send(c);
}

/* ---- commands ---- */

/* The key a command is routed by: 1 with *key, or 0 for a command without one. */
static int route_key(int argc, const char **argv, const size_t *argvlen, const char **key,
                     size_t *klen)
{
    static const char *const keyless[] = {"PING",   "INFO",   "SCAN",     "CLUSTER",
                                          "SCRIPT", "TIME",   "DBSIZE",   "ASKING",
                                          "CONFIG", "CLIENT", "FLUSHALL", "FUNCTION"};
    const char *cmd = argv[0];
    int ki = 1;
    if (!strcasecmp(cmd, "EVAL") || !strcasecmp(cmd, "EVALSHA") || !strcasecmp(cmd, "EVAL_RO") ||
        !strcasecmp(cmd, "EVALSHA_RO") || !strcasecmp(cmd, "FCALL") ||
        !strcasecmp(cmd, "FCALL_RO")) {
        if (argc < 4 || atoi(argv[2]) < 1)
            return 0;
        ki = 3;
    } else {
        for (size_t i = 0; i < sizeof keyless / sizeof keyless[0]; i++)
            if (!strcasecmp(cmd, keyless[i]))
                return 0;
    }
    if (argc <= ki)
        return 0;
    *key = argv[ki];
    *klen = argvlen ? argvlen[ki] : strlen(argv[ki]);
    return 1;
}

static op_t *op_new(chat_redis_cluster_t *c, int argc, const char **argv, const size_t *argvlen)
{
    size_t bytes = 0;
    for (int i = 0; i < argc; i++)
        bytes += (argvlen ? argvlen[i] : strlen(argv[i])) + 1;
    op_t *op = chat_malloc(sizeof *op + (size_t)argc * (sizeof(char *) + sizeof(size_t)) + bytes);
    op->c = c;
    op->argc = argc;
    op->redirects = 0;
    op->argv = (const char **)(op + 1);
    op->argvlen = (size_t *)(op->argv + argc);
    char *p = (char *)(op->argvlen + argc);
    for (int i = 0; i < argc; i++) {
        size_t len = argvlen ? argvlen[i] : strlen(argv[i]);
        memcpy(p, argv[i], len);
        p[len] = '\0';
        op->argv[i] = p;
        op->argvlen[i] = len;
        p += len + 1;
    }
    return op;
}

static void op_cb(chat_err_t status, redisReply *reply, void *arg);
static void op_late(chat_err_t status, void *arg);

static int op_send(op_t *op, node_t *n)
{
    return chat_redis_command_tracked(n->client, op_cb, op_late, op, op->argc, op->argv,
                                      op->argvlen);
}

/*
 * A MOVED or ASK error: "MOVED <slot> <host:port>". Sends the command again
 * and returns 1, or returns 0 when it cannot (the error is then the answer).
 */
static int redirect(op_t *op, const redisReply *reply)
{
    chat_redis_cluster_t *c = op->c;
    int ask = !strncmp(reply->str, "ASK ", 4);
    if (!ask && strncmp(reply->str, "MOVED ", 6) != 0)
        return 0;
    want_refresh(c);
    char addr[ADDR_MAX];
    unsigned slot;
    if (op->redirects >= CHAT_REDIS_CLUSTER_MAX_REDIRECTS || c->closing ||
        sscanf(reply->str + (ask ? 4 : 6), "%u %255s", &slot, addr) != 2 ||
        slot >= CHAT_REDIS_SLOTS)
        return 0;
    if (addr[0] == ':') { /* the node's host is unknown to itself: keep the one we used */
        node_t *cur = slot_node(c, slot);
        const char *colon = cur ? strrchr(cur->addr, ':') : NULL;
        char port[16];
        if (!colon || strlen(addr) >= sizeof port)
            return 0;
        memcpy(port, addr, strlen(addr) + 1);
        snprintf(addr, sizeof addr, "%.*s%s", (int)(colon - cur->addr), cur->addr, port);
    }
    node_t *n = node_get(c, addr);
    if (!n)
        return 0;
    op->redirects++;
    chat_metric_inc(ask ? m_ask : m_moved);
    if (!ask) {
        /* The map read this asks for counts the change once (map_gen). */
        c->owner[slot] = (uint16_t)(n - c->nodes + 1);
        n->master = true;
        return op_send(op, n) == 0;
    }
    static const char *const asking[] = {"ASKING"};
    /* ASKING and the command leave back to back on the node's one connection. */
    if (chat_redis_command(n->client, NULL, NULL, 1, (const char **)asking, NULL) != 0)
        return 0;
    return op_send(op, n) == 0;
}

static void op_cb(chat_err_t status, redisReply *reply, void *arg)
{
    op_t *op = arg;
    chat_redis_cluster_t *c = op->c;
    if (status == CHAT_EREPLY && reply && reply->type == REDIS_REPLY_ERROR && reply->str) {
        if (redirect(op, reply))
            return; /* the op travels on */
        if (!strncmp(reply->str, "CLUSTERDOWN", 11) || !strncmp(reply->str, "TRYAGAIN", 8))
            want_refresh(c);
    } else if (status == CHAT_ECONNLOST || status == CHAT_ETIMEDOUT) {
        want_refresh(c); /* the node may be gone, and its replica taking over */
    }
    c->npending--;
    if (op->cb)
        op->cb(status, reply, op->arg);
    if (status != CHAT_ETIMEDOUT)
        free(op); /* the node runs op_late only after a timeout */
}

static void op_late(chat_err_t status, void *arg)
{
    op_t *op = arg;
    if (op->late)
        op->late(status, op->arg);
    free(op);
}

int chat_redis_cluster_command(chat_redis_cluster_t *c, chat_redis_cb cb, chat_redis_late_cb late,
                               void *arg, int argc, const char **argv, const size_t *argvlen)
{
    const char *key;
    size_t klen;
    node_t *n;
    if (c->closing || !c->have_map)
        return CHAT_EDOWN;
    if (route_key(argc, argv, argvlen, &key, &klen))
        n = slot_node(c, chat_redis_key_slot(key, klen));
    else
        n = any_master(c);
    if (!n) {
        want_refresh(c);
        return CHAT_EDOWN;
    }
    op_t *op = op_new(c, argc, argv, argvlen);
    op->cb = cb;
    op->late = late;
    op->arg = arg;
    if (op_send(op, n) != 0) {
        free(op);
        if (!chat_redis_healthy(n->client))
            want_refresh(c);
        return CHAT_EDOWN;
    }
    c->npending++;
    return 0;
}

static node_t *nth_master(chat_redis_cluster_t *c, size_t i)
{
    for (size_t k = 0; c->have_map && k < c->nnodes; k++)
        if (c->nodes[k].master && i-- == 0)
            return &c->nodes[k];
    return NULL;
}

size_t chat_redis_cluster_masters(const chat_redis_cluster_t *c)
{
    size_t n = 0;
    for (size_t k = 0; c->have_map && k < c->nnodes; k++)
        n += c->nodes[k].master;
    return n;
}

int chat_redis_cluster_command_master(chat_redis_cluster_t *c, size_t i, chat_redis_cb cb,
                                      void *arg, int argc, const char **argv, const size_t *argvlen)
{
    node_t *n = c->closing ? NULL : nth_master(c, i);
    if (!n)
        return CHAT_EDOWN;
    op_t *op = op_new(c, argc, argv, argvlen);
    op->cb = cb;
    op->late = NULL;
    op->arg = arg;
    if (op_send(op, n) != 0) {
        free(op);
        return CHAT_EDOWN;
    }
    c->npending++;
    return 0;
}

/* ---- life ---- */ /* ---- life ---- */

chat_redis_cluster_t *chat_redis_cluster_create(uv_loop_t *loop, const chat_redis_config_t *cfg,
                                                char *err, size_t errlen)
{
    chat_redis_url_t seeds[MAX_SEEDS];
    int nseeds;
    if (chat_redis_cluster_url_parse(seeds, MAX_SEEDS, &nseeds, cfg->url, err, errlen) != 0)
        return NULL;
    static uv_once_t once = UV_ONCE_INIT;
    uv_once(&once, metrics_once);
    chat_redis_cluster_t *c = chat_calloc(1, sizeof *c);
    c->loop = loop;
    c->cfg = *cfg;
    c->cfg.url = NULL;
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    c->nopen = 1;
    for (int i = 0; i < nseeds; i++)
        (void)node_get(c, seeds[i].text);
    uv_timer_start(&c->timer, tick_cb, TICK_MS, TICK_MS);
    return c;
}

bool chat_redis_cluster_healthy(const chat_redis_cluster_t *c)
{
    if (!c->have_map || c->closing)
        return false;
    for (size_t i = 0; i < c->nnodes; i++)
        if (c->nodes[i].master && chat_redis_healthy(c->nodes[i].client))
            return true;
    return false;
}

bool chat_redis_cluster_all_up(const chat_redis_cluster_t *c)
{
    if (!c->have_map || c->closing || !c->all_slots)
        return false;
    for (size_t i = 0; i < c->nnodes; i++)
        if (c->nodes[i].master && !chat_redis_healthy(c->nodes[i].client))
            return false;
    return true;
}

size_t chat_redis_cluster_pending(const chat_redis_cluster_t *c)
{
    return c->npending;
}

const char *chat_redis_cluster_master_of(const chat_redis_cluster_t *c, const char *key, size_t len)
{
    const node_t *n = c->have_map ? slot_node(c, chat_redis_key_slot(key, len)) : NULL;
    return n ? n->addr : NULL;
}

unsigned long chat_redis_cluster_map_gen(const chat_redis_cluster_t *c)
{
    return c->gen;
}

void chat_redis_cluster_refresh(chat_redis_cluster_t *c)
{
    want_refresh(c);
}

static void part_closed(void *arg)
{
    chat_redis_cluster_t *c = arg;
    if (--c->nopen > 0)
        return;
    void (*cb)(void *) = c->close_cb;
    void *cb_arg = c->close_arg;
    free(c->nodes);
    free(c);
    if (cb)
        cb(cb_arg);
}

static void timer_closed(uv_handle_t *h)
{
    part_closed(h->data);
}

void chat_redis_cluster_close(chat_redis_cluster_t *c, void (*cb)(void *arg), void *arg)
{
    c->closing = true;
    c->close_cb = cb;
    c->close_arg = arg;
    c->nopen++; /* this call's own, so that nothing frees c under the loop below */
    for (size_t i = 0; i < c->nnodes; i++)
        chat_redis_close(c->nodes[i].client, part_closed, c);
    uv_close((uv_handle_t *)&c->timer, timer_closed);
    part_closed(c);
}
