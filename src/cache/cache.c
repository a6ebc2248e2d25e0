/*
 * Cache-aside over Redis for one worker (see cache.h for the freshness
 * scheme): the epoch, lookups, fills, invalidation after writes, health
 * sampling and the operator's deletion by pattern.
 */
#include "cache/cache.h"
#include "cache/internal.h"
#include "cache/local.h"
#include "cache/reply.h"
#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"
#include "redis/client.h"
#include "redis/slot.h"

#include <hiredis/hiredis.h>
#include <openssl/rand.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * KEYS[1] epoch key, KEYS[2] (optional) version key, KEYS[3] (optional)
 * guard version key; ARGV[1] key prefix, ARGV[2]/ARGV[3] fresh tokens used
 * when the epoch/version (/guard) is missing, ARGV[4] the full key the
 * worker holds a copy of for this prefix, or "". Returns {full key, value or
 * false, guard}, or {full key, 1, guard} when the key is the one the worker
 * holds and it still exists: the value need not travel. guard is
 * "epoch:guard version", or false without KEYS[3].
 */
static const char lookup_script[] =
    "local e = redis.call('GET', KEYS[1]) "
    "if not e then e = ARGV[2] redis.call('SET', KEYS[1], e) end "
    "local k = ARGV[1] .. ':e' .. e "
    "if KEYS[2] then "
    "  local v = redis.call('GET', KEYS[2]) "
    "  if not v then v = ARGV[3] redis.call('SET', KEYS[2], v) end "
    "  k = k .. ':v' .. v "
    "end "
    "local g = false "
    "if KEYS[3] then "
    "  g = redis.call('GET', KEYS[3]) "
    "  if not g then g = ARGV[3] .. 'g' redis.call('SET', KEYS[3], g) end "
    "  g = e .. ':' .. g "
    "end "
    "if ARGV[4] == k and redis.call('EXISTS', k) == 1 then return {k, 1, g} end "
    "return {k, redis.call('GET', k), g}";

/* How long the worker keeps a copy it has not fetched again (memory only:
 * Redis decides, on every lookup, whether the copy may be used). */
#define LOCAL_LIFETIME_MS 30000
#define LOCAL_SLOTS 4096

#define VERSION_PREFIX_MAX 32

struct chat_cache {
    uv_loop_t *loop;
    chat_cache_shared_t *sh;
    chat_redis_t *redis;
    chat_flights_t *flights;
    chat_cache_local_t *local; /* NULL: no copies kept */
    char vprefix[VERSION_PREFIX_MAX];
    char gprefix[VERSION_PREFIX_MAX]; /* "": no guard versions */
    char vsuffix[8];                  /* after the id in version and guard keys */
    unsigned long map_gen;            /* the cluster map generation last seen */
    uint64_t token_prefix;
    uint64_t token_counter;
    unsigned long clean_gen; /* dirty generation this worker has cleaned */
    int epoch_bump_inflight;
    uint64_t epoch_tried_ms;   /* loop time of the last new epoch sent */
    struct epoch_op *epoch_op; /* a new epoch whose SETs are still being sent */
    int was_healthy;           /* last sampled Redis health, counted in sh->healthy_workers */
    int ever_up;               /* Redis answered at least once since start */
    uint64_t created_ms;       /* loop time at creation */
    int closing;
    int poll_info;
    uv_timer_t info_timer;
    void (*close_cb)(void *);
    void *close_arg;
};

/* Counts a hit or a miss of a kind the caller named. */
static void count_kind(chat_metric_t **series, const chat_cache_t *c, int kind)
{
    if (kind >= 0 && kind < c->sh->nkinds)
        chat_metric_inc(series[kind]);
}

/* A value never used before as an epoch or version: random prefix + counter. */
static void new_token(chat_cache_t *c, char out[40])
{
    snprintf(out, 40, "%016llx%llx", (unsigned long long)c->token_prefix,
             (unsigned long long)++c->token_counter);
}

/* ---- health sampling and INFO polling ---- */

static int last_healthy_state(chat_cache_t *c);

static void info_cb(chat_err_t status, redisReply *reply, void *arg)
{
    chat_cache_t *c = arg;
    if (status != CHAT_EOK || !reply || reply->type != REDIS_REPLY_STRING)
        return;
    const char *p = strstr(reply->str, "evicted_keys:");
    if (p)
        chat_metric_set(c->sh->evictions, strtod(p + strlen("evicted_keys:"), NULL));
}

static void tick_cb(uv_timer_t *t)
{
    chat_cache_t *c = t->data;
    last_healthy_state(c);
    if (c->poll_info && chat_redis_healthy(c->redis)) {
        const char *argv[] = {"INFO", "stats"};
        chat_redis_command(c->redis, info_cb, c, 2, argv, NULL);
    }
}

/* Samples this worker's Redis health into the process-wide gauge. */
static int last_healthy_state(chat_cache_t *c)
{
    int h = chat_redis_healthy(c->redis) ? 1 : 0;
    if (h)
        c->ever_up = 1;
    if (h != c->was_healthy) {
        atomic_fetch_add(&c->sh->healthy_workers, h ? 1 : -1);
        chat_metric_set(c->sh->healthy, atomic_load(&c->sh->healthy_workers));
        c->was_healthy = h;
    }
    return h;
}

chat_cache_t *chat_cache_create(uv_loop_t *loop, const chat_cache_config_t *cfg, char *err,
                                size_t errlen)
{
    chat_cache_shared_t *sh = cfg->shared;
    chat_redis_config_t rc = {
        .url = cfg->redis_url,
        .cmd_timeout_ms = cfg->cmd_timeout_ms > 0 ? cfg->cmd_timeout_ms : 50,
        .connect_timeout_ms = 200,
        .retry_interval_ms = 500,
        .max_pending = 20000,
        .errors = sh->errors,
        .late_reads = sh->late_reads,
    };
    chat_redis_t *r = chat_redis_create(loop, &rc, err, errlen);
    if (!r)
        return NULL;
    chat_cache_t *c = chat_calloc(1, sizeof *c);
    c->loop = loop;
    c->sh = sh;
    c->redis = r;
    snprintf(c->vprefix, sizeof c->vprefix, "%s", cfg->version_prefix ? cfg->version_prefix : "");
    snprintf(c->gprefix, sizeof c->gprefix, "%s", cfg->guard_prefix ? cfg->guard_prefix : "");
    snprintf(c->vsuffix, sizeof c->vsuffix, "%s", cfg->scope_suffix ? cfg->scope_suffix : "");
    c->flights = chat_flights_create();
    if (cfg->local_bytes > 0)
        c->local = chat_cache_local_create(LOCAL_SLOTS, cfg->local_bytes);
    c->poll_info = cfg->poll_info;
    if (RAND_bytes((unsigned char *)&c->token_prefix, sizeof c->token_prefix) != 1)
        c->token_prefix = (uint64_t)uv_hrtime() ^ ((uint64_t)(uintptr_t)c << 16);
    c->clean_gen = atomic_load(&sh->dirty_gen);
    c->created_ms = uv_now(loop);
    uv_timer_init(loop, &c->info_timer);
    c->info_timer.data = c;
    uv_timer_start(&c->info_timer, tick_cb, 1000, 1000);
    return c;
}

static void redis_closed_cb(void *arg)
{
    chat_cache_t *c = arg;
    void (*cb)(void *) = c->close_cb;
    void *cb_arg = c->close_arg;
    chat_flights_destroy(c->flights);
    if (c->local)
        chat_metric_add(c->sh->local_bytes, -(double)chat_cache_local_bytes(c->local));
    chat_cache_local_destroy(c->local);
    free(c);
    if (cb)
        cb(cb_arg);
}

static void timer_closed_cb(uv_handle_t *h)
{
    chat_cache_t *c = h->data;
    chat_redis_close(c->redis, redis_closed_cb, c);
}

static void epoch_abandon(chat_cache_t *c);
static void epoch_cb(chat_err_t status, redisReply *reply, void *arg);

void chat_cache_close(chat_cache_t *c, void (*cb)(void *arg), void *arg)
{
    c->closing = 1;
    c->close_cb = cb;
    c->close_arg = arg;
    if (c->was_healthy) {
        atomic_fetch_add(&c->sh->healthy_workers, -1);
        chat_metric_set(c->sh->healthy, atomic_load(&c->sh->healthy_workers));
        c->was_healthy = 0;
    }
    epoch_abandon(c);
    uv_close((uv_handle_t *)&c->info_timer, timer_closed_cb);
}

const char *chat_cache_state(const chat_cache_t *c)
{
    if (!c || atomic_load(&c->sh->bypass))
        return "bypassed";
    return chat_redis_healthy(c->redis) ? "up" : "down";
}

bool chat_cache_healthy(const chat_cache_t *c)
{
    return chat_redis_healthy(c->redis);
}

chat_flights_t *chat_cache_flights(chat_cache_t *c)
{
    return c->flights;
}

/* ---- the epoch ---- */

/*
 * The epoch key a script beside anchor (a key of the entry's scope) reads:
 * CHAT_CACHE_EPOCH_KEY on one Redis; on a cluster, where a script's keys
 * must share a slot, one epoch key per slot, cache:epoch:{tag} with the tag
 * of anchor's slot (redis/slot.h).
 */
static const char *epoch_key(const chat_cache_t *c, const char *anchor,
                             char out[CHAT_CACHE_EPOCH_KEY_MAX])
{
    char tag[CHAT_REDIS_SLOT_TAG_MAX];
    if (!chat_redis_is_cluster(c->redis))
        return CHAT_CACHE_EPOCH_KEY;
    chat_redis_slot_tag(chat_redis_key_slot(anchor, strlen(anchor)), tag);
    snprintf(out, CHAT_CACHE_EPOCH_KEY_MAX, CHAT_CACHE_EPOCH_KEY ":{%s}", tag);
    return out;
}

/*
 * A new epoch. KEYS[1] the epoch key; ARGV[1] a fresh token, ARGV[2] a WAL
 * position (16 hex digits). The epoch becomes "<token>L<position>", the
 * position the higher of ARGV[2] and the one the old epoch carried: every
 * instance's new epoch covers the writes whose bumps it lost.
 */
static const char epoch_script[] = "local old = redis.call('GET', KEYS[1]) "
                                   "local m = old and string.match(old, 'L(%x+)$') "
                                   "local keep = ARGV[2] "
                                   "if m and m > keep then keep = m end "
                                   "redis.call('SET', KEYS[1], ARGV[1] .. 'L' .. keep) "
                                   "return 1";

/* On a cluster, how long after a try a new epoch is tried again. */
#define EPOCH_RETRY_MS 100

/*
 * A new epoch: one script (epoch_script), or on a cluster one per slot
 * (16,384), all of them answered OK. A cluster's scripts are paced: at most
 * EPOCH_WINDOW unanswered at once, more sent as answers come, so that
 * neither the worker's loop nor a node's connection ever holds thousands at
 * once (their deadlines are those of every other command on that
 * connection).
 */
#define EPOCH_WINDOW 256

struct epoch_op {
    chat_cache_t *c;
    unsigned long gen;
    unsigned next, n; /* the next slot to send, and how many */
    unsigned inflight;
    int sending; /* scripts are still to be sent */
    int failed;
    char token[40], lsn[24];
};

static void epoch_end_maybe(struct epoch_op *op)
{
    if (op->sending || op->inflight > 0)
        return;
    op->c->epoch_bump_inflight = 0;
    if (!op->failed) {
        op->c->clean_gen = op->gen;
        chat_log_info("event=cache_epoch_changed");
    }
    free(op);
}

static void epoch_cb(chat_err_t status, redisReply *reply, void *arg);

/* Sends scripts until the window is full; a refusal ends the try (failed). */
static void epoch_fill(chat_cache_t *c, struct epoch_op *op)
{
    char key[CHAT_CACHE_EPOCH_KEY_MAX], tag[CHAT_REDIS_SLOT_TAG_MAX];
    while (op->inflight < EPOCH_WINDOW && op->next < op->n && !op->failed) {
        if (op->n > 1) {
            chat_redis_slot_tag(op->next, tag);
            snprintf(key, sizeof key, CHAT_CACHE_EPOCH_KEY ":{%s}", tag);
        }
        const char *argv[] = {"EVAL",    epoch_script, "1", op->n > 1 ? key : CHAT_CACHE_EPOCH_KEY,
                              op->token, op->lsn};
        if (chat_redis_command(c->redis, epoch_cb, op, 6, argv, NULL) != 0)
            op->failed = 1; /* the rest need not go: this try has failed */
        else
            op->inflight++;
        op->next++;
    }
    if (op->next >= op->n || op->failed) {
        op->sending = 0;
        c->epoch_op = NULL;
    }
}

static void epoch_cb(chat_err_t status, redisReply *reply, void *arg)
{
    struct epoch_op *op = arg;
    op->inflight--;
    if (status != CHAT_EOK)
        op->failed = 1;
    if (op->sending && !op->c->closing && op->inflight <= EPOCH_WINDOW / 2)
        epoch_fill(op->c, op);
    epoch_end_maybe(op);
}

/* Closing: no more scripts; the answers still owed end the try (as failed). */
static void epoch_abandon(chat_cache_t *c)
{
    struct epoch_op *op = c->epoch_op;
    if (!op)
        return;
    op->failed = 1;
    op->sending = 0;
    c->epoch_op = NULL;
    epoch_end_maybe(op);
}

static void epoch_send(chat_cache_t *c, unsigned long gen)
{
    struct epoch_op *op = chat_calloc(1, sizeof *op);
    new_token(c, op->token);
    chat_cache_lsn_str(op->lsn, atomic_load(&c->sh->max_lsn));
    op->c = c;
    op->gen = gen;
    op->n = chat_redis_is_cluster(c->redis) ? CHAT_REDIS_SLOTS : 1;
    op->sending = 1;
    c->epoch_bump_inflight = 1;
    c->epoch_op = op;
    epoch_fill(c, op);
    epoch_end_maybe(op);
}

/*
 * True when lookups may use the cache now. A dirty cache first gets a new
 * epoch (one command in flight at a time); until Redis acknowledges it,
 * reads go to the database.
 */
static int usable(chat_cache_t *c)
{
    if (atomic_load(&c->sh->bypass) || !last_healthy_state(c) || atomic_load(&c->sh->unsettled) > 0)
        return 0;
    unsigned long map_gen = chat_redis_map_gen(c->redis);
    if (map_gen != c->map_gen) {
        /* A slot changed master: a replica that took over may lack the last
         * bumps its master acknowledged (replication is asynchronous). */
        if (c->map_gen != 0)
            chat_cache_shared_mark_dirty(c->sh);
        c->map_gen = map_gen;
    }
    unsigned long gen = atomic_load(&c->sh->dirty_gen);
    if (gen == c->clean_gen)
        return 1;
    /* At most one try per EPOCH_RETRY_MS: on a cluster a try is 16384 SETs,
     * and none while a slot has no master that is up (its SETs would be
     * refused: a try would fail, having cost the others for nothing). */
    if (!c->epoch_bump_inflight && chat_redis_all_up(c->redis) &&
        (!chat_redis_is_cluster(c->redis) || c->epoch_tried_ms == 0 ||
         uv_now(c->loop) - c->epoch_tried_ms >= EPOCH_RETRY_MS)) {
        c->epoch_tried_ms = uv_now(c->loop);
        epoch_send(c, gen);
    }
    return 0;
}

/* ---- lookups ---- */

struct lookup_op {
    chat_cache_t *c;
    int kind;
    chat_cache_lookup_cb cb;
    void *arg;
    char prefix[CHAT_CACHE_KEY_MAX];
};

/* Keeps the value Redis sent as the worker's copy for the prefix. */
static void local_keep(chat_cache_t *c, const char *prefix, const char *key, const char *val,
                       size_t len)
{
    size_t before = chat_cache_local_bytes(c->local);
    uint64_t now = uv_now(c->loop);
    chat_cache_local_put(c->local, prefix, key, val, len, now, now + LOCAL_LIFETIME_MS);
    chat_metric_add(c->sh->local_bytes, (double)chat_cache_local_bytes(c->local) - (double)before);
}

static void lookup_cb(chat_err_t status, redisReply *reply, void *arg)
{
    struct lookup_op *op = arg;
    chat_cache_t *c = op->c;
    chat_cache_lookup_t r = {.status = CHAT_CACHE_ERROR};
    chat_cache_local_entry_t le;
    chat_cache_lookup_reply_t lr;
    if (status == CHAT_EOK && reply && chat_cache_lookup_reply_parse(reply, &lr) == 0) {
        r.key = lr.key;
        r.guard = lr.guard;
        if (lr.kind == CHAT_CACHE_REPLY_VALUE) {
            r.status = CHAT_CACHE_HIT;
            r.value = lr.value;
            r.len = lr.len;
            count_kind(c->sh->hits, c, op->kind);
            if (c->local && op->prefix[0])
                local_keep(c, op->prefix, lr.key, lr.value, lr.len);
        } else if (lr.kind == CHAT_CACHE_REPLY_SAME) {
            /* Redis confirmed the copy named in the lookup; it is still
             * here unless another lookup replaced it meanwhile. */
            if (c->local && chat_cache_local_get(c->local, op->prefix, uv_now(c->loop), &le) &&
                strcmp(le.vkey, lr.key) == 0) {
                r.status = CHAT_CACHE_HIT;
                r.value = le.val;
                r.len = le.len;
                count_kind(c->sh->hits, c, op->kind);
                chat_metric_inc(c->sh->local_hits);
            } else {
                r.key = NULL;
                count_kind(c->sh->misses, c, op->kind); /* read the database, no fill */
            }
        } else {
            r.status = CHAT_CACHE_MISS;
            count_kind(c->sh->misses, c, op->kind);
        }
    } else {
        /* A failed lookup is a miss that must not fill. */
        count_kind(c->sh->misses, c, op->kind);
    }
    op->cb(&r, op->arg);
    free(op);
}

/* The version key of a scope: the configured prefix and the id. */
static void version_key(const chat_cache_t *c, char out[CHAT_CACHE_KEY_MAX], int64_t scope_id)
{
    snprintf(out, CHAT_CACHE_KEY_MAX, "%s%lld%s", c->vprefix, (long long)scope_id, c->vsuffix);
}

int chat_cache_lookup(chat_cache_t *c, int kind, const char *prefix, int64_t scope_id,
                      chat_cache_lookup_cb cb, void *arg)
{
    if (!c)
        return CHAT_EDOWN;
    if (!usable(c)) {
        if (!atomic_load(&c->sh->bypass))
            count_kind(c->sh->misses, c, kind);
        return CHAT_EDOWN;
    }
    char vkey[CHAT_CACHE_KEY_MAX], gkey[CHAT_CACHE_KEY_MAX], t1[40], t2[40];
    char ekey[CHAT_CACHE_EPOCH_KEY_MAX];
    new_token(c, t1);
    new_token(c, t2);
    int guarded = scope_id > 0 && c->gprefix[0];
    const char *argv[10] = {"EVAL", lookup_script,
                            guarded        ? "3"
                            : scope_id > 0 ? "2"
                                           : "1",
                            epoch_key(c, prefix, ekey)};
    int argc = 4;
    if (scope_id > 0) {
        version_key(c, vkey, scope_id);
        argv[argc++] = vkey;
    }
    if (guarded) {
        snprintf(gkey, sizeof gkey, "%s%lld%s", c->gprefix, (long long)scope_id, c->vsuffix);
        argv[argc++] = gkey;
    }
    chat_cache_local_entry_t le;
    const char *held = "";
    if (c->local && chat_cache_local_get(c->local, prefix, uv_now(c->loop), &le))
        held = le.vkey;
    argv[argc++] = prefix;
    argv[argc++] = t1;
    argv[argc++] = t2;
    argv[argc++] = held;
    struct lookup_op *op = chat_malloc(sizeof *op);
    op->c = c;
    op->kind = kind;
    op->cb = cb;
    op->arg = arg;
    snprintf(op->prefix, sizeof op->prefix, "%s", prefix);
    if (chat_redis_command(c->redis, lookup_cb, op, argc, argv, NULL) != 0) {
        free(op);
        count_kind(c->sh->misses, c, kind);
        return CHAT_EDOWN;
    }
    return 0;
}

/* ---- entries that depend on other scopes' versions ---- */

/*
 * KEYS[1] epoch key, KEYS[2] the entry's own version key; ARGV[1] key
 * prefix, ARGV[2]/ARGV[3] fresh tokens for a missing epoch/version, ARGV[4]
 * the version key prefix of the scopes an entry depends on, ARGV[5] what
 * follows the id in their keys. The stored value
 * is "id=token id=token ...\n" and the bytes: the scopes and the versions it
 * was built under. Returns {full key, bytes} while every one still holds,
 * else {full key, false}.
 */
static const char lookup_deps_script[] =
    "local e = redis.call('GET', KEYS[1]) "
    "if not e then e = ARGV[2] redis.call('SET', KEYS[1], e) end "
    "local v = redis.call('GET', KEYS[2]) "
    "if not v then v = ARGV[3] redis.call('SET', KEYS[2], v) end "
    "local k = ARGV[1] .. ':e' .. e .. ':v' .. v "
    "local val = redis.call('GET', k) "
    "if not val then return {k, false} end "
    "local nl = string.find(val, '\\n', 1, true) "
    "if not nl then return {k, false} end "
    "for id, tok in string.gmatch(string.sub(val, 1, nl - 1), '(%d+)=([^ ]+)') do "
    "  if redis.call('GET', ARGV[4] .. id .. ARGV[5]) ~= tok then return {k, false} end "
    "end "
    "return {k, string.sub(val, nl + 1)}";

/*
 * KEYS: version keys; ARGV[1] a fresh token prefix. Returns the current
 * version of each, installing a fresh one where none is set (as a lookup
 * would).
 */
static const char versions_script[] =
    "local out = {} "
    "for i, key in ipairs(KEYS) do "
    "  local v = redis.call('GET', key) "
    "  if not v then v = ARGV[1] .. 'x' .. i redis.call('SET', key, v) end "
    "  out[i] = v "
    "end "
    "return out";

/*
 * On a cluster the versions an entry depends on live on other slots: the
 * entry is read first (the plain lookup script, on the owner's slot), then
 * each version it names is read by its own GET, all sent at once; a hit
 * only when every one still holds. A write acknowledged before the lookup
 * moved its version before that, so the GETs, sent after, see it.
 */
struct deps_op {
    chat_cache_t *c;
    int kind;
    chat_cache_lookup_cb cb;
    void *arg;
    char *key;        /* the versioned key */
    char *val;        /* the stored value: header, then the bytes */
    size_t len, body; /* the value's length, the offset of its bytes */
    size_t left;      /* GETs not answered yet, and this op's own reference */
    int stale, failed;
};

struct dep {
    struct deps_op *op;
    char tok[64];
};

static void deps_finish(struct deps_op *op)
{
    chat_cache_t *c = op->c;
    chat_cache_lookup_t r = {.status = CHAT_CACHE_ERROR};
    if (!op->failed && op->key) {
        r.key = op->key;
        r.status = op->val && !op->stale ? CHAT_CACHE_HIT : CHAT_CACHE_MISS;
        if (r.status == CHAT_CACHE_HIT) {
            r.value = op->val + op->body;
            r.len = op->len - op->body;
        }
    }
    count_kind(r.status == CHAT_CACHE_HIT ? c->sh->hits : c->sh->misses, c, op->kind);
    op->cb(&r, op->arg);
    free(op->key);
    free(op->val);
    free(op);
}

static void dep_cb(chat_err_t status, redisReply *reply, void *arg)
{
    struct dep *d = arg;
    struct deps_op *op = d->op;
    if (status != CHAT_EOK || !reply)
        op->failed = 1;
    else if (reply->type != REDIS_REPLY_STRING || strcmp(reply->str, d->tok) != 0)
        op->stale = 1;
    free(d);
    if (--op->left == 0)
        deps_finish(op);
}

static void deps_entry_cb(chat_err_t status, redisReply *reply, void *arg)
{
    struct deps_op *op = arg;
    chat_cache_t *c = op->c;
    op->left = 1; /* this function's own */
    if (status != CHAT_EOK || !reply || reply->type != REDIS_REPLY_ARRAY || reply->elements < 2 ||
        reply->element[0]->type != REDIS_REPLY_STRING) {
        op->failed = 1;
        deps_finish(op);
        return;
    }
    op->key = chat_strdup(reply->element[0]->str);
    redisReply *v = reply->element[1];
    const char *nl = v->type == REDIS_REPLY_STRING ? memchr(v->str, '\n', v->len) : NULL;
    if (!nl) { /* no entry (or not one of ours): a miss to fill */
        deps_finish(op);
        return;
    }
    op->val = chat_malloc(v->len + 1);
    memcpy(op->val, v->str, v->len);
    op->val[v->len] = '\0';
    op->len = v->len;
    op->body = (size_t)(nl - v->str) + 1;
    /* "id=token id=token ...\n": one GET of each scope's version key. */
    const char *p = op->val, *end = op->val + op->body - 1;
    while (p < end) {
        const char *sp = memchr(p, ' ', (size_t)(end - p));
        const char *e = sp ? sp : end, *eq = memchr(p, '=', (size_t)(e - p));
        char vkey[CHAT_CACHE_KEY_MAX];
        if (!eq || eq == p || (size_t)(eq - p) > 20 || (size_t)(e - eq - 1) >= 64) {
            op->stale = 1; /* not a header of ours: a miss */
            break;
        }
        struct dep *d = chat_malloc(sizeof *d);
        d->op = op;
        memcpy(d->tok, eq + 1, (size_t)(e - eq - 1));
        d->tok[e - eq - 1] = '\0';
        snprintf(vkey, sizeof vkey, "%s%.*s%s", c->vprefix, (int)(eq - p), p, c->vsuffix);
        const char *argv[] = {"GET", vkey};
        if (chat_redis_command(c->redis, dep_cb, d, 2, argv, NULL) != 0) {
            free(d);
            op->failed = 1;
            break;
        }
        op->left++;
        p = sp ? sp + 1 : end;
    }
    if (--op->left == 0)
        deps_finish(op);
}

static int lookup_deps_cluster(chat_cache_t *c, int kind, const char *prefix, const char *vkey,
                               chat_cache_lookup_cb cb, void *arg)
{
    char t1[40], t2[40], ekey[CHAT_CACHE_EPOCH_KEY_MAX];
    new_token(c, t1);
    new_token(c, t2);
    const char *argv[] = {
        "EVAL", lookup_script, "2", epoch_key(c, prefix, ekey), vkey, prefix, t1, t2, ""};
    struct deps_op *op = chat_calloc(1, sizeof *op);
    op->c = c;
    op->kind = kind;
    op->cb = cb;
    op->arg = arg;
    if (chat_redis_command(c->redis, deps_entry_cb, op, (int)CHAT_ARRAY_LEN(argv), argv, NULL) !=
        0) {
        free(op);
        count_kind(c->sh->misses, c, kind);
        return CHAT_EDOWN;
    }
    return 0;
}

int chat_cache_lookup_deps(chat_cache_t *c, int kind, const char *prefix, const char *vkey,
                           chat_cache_lookup_cb cb, void *arg)
{
    if (!c)
        return CHAT_EDOWN;
    if (chat_redis_is_cluster(c->redis) && usable(c))
        return lookup_deps_cluster(c, kind, prefix, vkey, cb, arg);
    if (!usable(c)) {
        if (!atomic_load(&c->sh->bypass))
            count_kind(c->sh->misses, c, kind);
        return CHAT_EDOWN;
    }
    char t1[40], t2[40];
    new_token(c, t1);
    new_token(c, t2);
    /* No worker copy ("" held): the dependencies are checked on every lookup. */
    const char *argv[] = {
        "EVAL", lookup_deps_script, "2",       CHAT_CACHE_EPOCH_KEY, vkey, prefix, t1,
        t2,     c->vprefix,         c->vsuffix};
    struct lookup_op *op = chat_malloc(sizeof *op);
    op->c = c;
    op->kind = kind;
    op->cb = cb;
    op->arg = arg;
    op->prefix[0] = '\0'; /* no copies kept for these entries */
    if (chat_redis_command(c->redis, lookup_cb, op, (int)CHAT_ARRAY_LEN(argv), argv, NULL) != 0) {
        free(op);
        count_kind(c->sh->misses, c, kind);
        return CHAT_EDOWN;
    }
    return 0;
}

struct versions_op {
    chat_cache_versions_cb cb;
    void *arg;
    size_t n;
};

static void versions_cb(chat_err_t status, redisReply *reply, void *arg)
{
    struct versions_op *op = arg;
    const char **tokens = chat_malloc((op->n ? op->n : 1) * sizeof *tokens);
    if (status != CHAT_EOK || !reply || chat_cache_versions_reply_parse(reply, op->n, tokens) != 0)
        op->cb(CHAT_EDOWN, NULL, op->arg);
    else
        op->cb(CHAT_EOK, tokens, op->arg);
    free(tokens);
    free(op);
}

/* chat_cache_versions on a cluster: the script once per key, all at once. */
struct vers_op {
    chat_cache_versions_cb cb;
    void *arg;
    size_t n, left;
    int failed;
    char **tokens;
};

struct ver {
    struct vers_op *op;
    size_t i;
};

static void vers_done(struct vers_op *op)
{
    op->cb(op->failed ? CHAT_EDOWN : CHAT_EOK, op->failed ? NULL : (const char *const *)op->tokens,
           op->arg);
    for (size_t i = 0; i < op->n; i++)
        free(op->tokens[i]);
    free(op->tokens);
    free(op);
}

static void ver_cb(chat_err_t status, redisReply *reply, void *arg)
{
    struct ver *v = arg;
    struct vers_op *op = v->op;
    if (status != CHAT_EOK || !reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 1 ||
        reply->element[0]->type != REDIS_REPLY_STRING)
        op->failed = 1;
    else
        op->tokens[v->i] = chat_strdup(reply->element[0]->str);
    free(v);
    if (--op->left == 0)
        vers_done(op);
}

static void versions_cluster(chat_cache_t *c, const int64_t *ids, size_t n,
                             chat_cache_versions_cb cb, void *arg)
{
    char token[40], vkey[CHAT_CACHE_KEY_MAX];
    struct vers_op *op = chat_calloc(1, sizeof *op);
    op->cb = cb;
    op->arg = arg;
    op->n = n;
    op->tokens = chat_calloc(n ? n : 1, sizeof *op->tokens);
    op->left = 1; /* this function's own */
    new_token(c, token);
    for (size_t i = 0; i < n; i++) {
        struct ver *v = chat_malloc(sizeof *v);
        v->op = op;
        v->i = i;
        version_key(c, vkey, ids[i]);
        const char *argv[] = {"EVAL", versions_script, "1", vkey, token};
        if (chat_redis_command(c->redis, ver_cb, v, 5, argv, NULL) != 0) {
            free(v);
            op->failed = 1;
            break;
        }
        op->left++;
    }
    if (--op->left == 0)
        vers_done(op);
}

void chat_cache_versions(chat_cache_t *c, const int64_t *ids, size_t n, chat_cache_versions_cb cb,
                         void *arg)
{
    if (chat_redis_is_cluster(c->redis)) {
        if (usable(c))
            versions_cluster(c, ids, n, cb, arg);
        else
            cb(CHAT_EDOWN, NULL, arg);
        return;
    }
    size_t argc = 3 + n + 1;
    const char **argv = chat_malloc(argc * sizeof *argv);
    char(*keys)[CHAT_CACHE_KEY_MAX] = chat_malloc((n ? n : 1) * sizeof *keys);
    char nkeys[24], token[40];
    snprintf(nkeys, sizeof nkeys, "%zu", n);
    new_token(c, token);
    argv[0] = "EVAL";
    argv[1] = versions_script;
    argv[2] = nkeys;
    for (size_t i = 0; i < n; i++) {
        version_key(c, keys[i], ids[i]);
        argv[3 + i] = keys[i];
    }
    argv[3 + n] = token;
    struct versions_op *op = chat_malloc(sizeof *op);
    op->cb = cb;
    op->arg = arg;
    op->n = n;
    int rc = usable(c) ? chat_redis_command(c->redis, versions_cb, op, (int)argc, argv, NULL) : -1;
    free(argv);
    free(keys);
    if (rc != 0) {
        free(op);
        cb(CHAT_EDOWN, NULL, arg);
    }
}

void chat_cache_fill_deps(chat_cache_t *c, const char *key, const int64_t *ids,
                          const char *const *tokens, size_t n, const char *val, size_t len, int ttl,
                          void (*done)(void *arg), void *arg)
{
    size_t cap = len + 1;
    for (size_t i = 0; i < n; i++)
        cap += 22 + strlen(tokens[i]);
    char *buf = chat_malloc(cap);
    size_t o = 0;
    for (size_t i = 0; i < n; i++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%lld=%s", i ? " " : "", (long long)ids[i],
                              tokens[i]);
    buf[o++] = '\n';
    memcpy(buf + o, val, len);
    chat_cache_fill(c, key, buf, o + len, ttl, done, arg);
    free(buf);
}

/* ---- fills and invalidation ---- */

struct done_op {
    chat_cache_shared_t *sh;
    void (*done)(void *);
    void *arg;
};

static void done_cb(chat_err_t status, redisReply *reply, void *arg)
{
    struct done_op *op = arg;
    if (op->done)
        op->done(op->arg);
    free(op);
}

void chat_cache_fill(chat_cache_t *c, const char *key, const char *val, size_t len, int ttl,
                     void (*done)(void *arg), void *arg)
{
    char ttlbuf[16];
    snprintf(ttlbuf, sizeof ttlbuf, "%d", ttl);
    const char *argv[] = {"SET", key, val, "EX", ttlbuf};
    size_t argvlen[] = {3, strlen(key), len, 2, strlen(ttlbuf)};
    struct done_op *op = chat_malloc(sizeof *op);
    op->done = done;
    op->arg = arg;
    if (chat_redis_command(c->redis, done_cb, op, 5, argv, argvlen) != 0) {
        free(op);
        if (done)
            done(arg);
    }
}

struct deferred {
    uv_timer_t timer;
    void (*done)(void *);
    void *arg;
};

static void deferred_closed_cb(uv_handle_t *h)
{
    free(h->data);
}

static void deferred_fire_cb(uv_timer_t *t)
{
    struct deferred *d = t->data;
    d->done(d->arg);
    uv_close((uv_handle_t *)&d->timer, deferred_closed_cb);
}

/* Calls done on the next loop iteration. */
static void defer(uv_loop_t *loop, void (*done)(void *), void *arg)
{
    struct deferred *d = chat_malloc(sizeof *d);
    d->done = done;
    d->arg = arg;
    uv_timer_init(loop, &d->timer);
    d->timer.data = d;
    uv_timer_start(&d->timer, deferred_fire_cb, 0, 0);
}

/* How long after start a write waits for the first Redis connection to invalidate. */
#define STARTUP_WAIT_MS 1000
#define STARTUP_RETRY_MS 10

struct retry {
    uv_timer_t timer;
    chat_cache_t *c;
    char **vkeys; /* owned copies */
    size_t n;
    uint64_t lsn;
    void (*done)(void *);
    void *arg;
};

static void retry_closed_cb(uv_handle_t *h)
{
    struct retry *r = h->data;
    for (size_t i = 0; i < r->n; i++)
        free(r->vkeys[i]);
    free(r->vkeys);
    free(r);
}

/*
 * The version bump of a write. Only a bump that did not reach Redis, or may
 * not have, makes the cache dirty: a refused command, an error reply, a
 * connection lost with the command on it. A bump past its deadline is
 * unsettled until its late reply or the end of its connection says which,
 * and the write waits for that: another instance's lookup could otherwise
 * overtake the bump in Redis after the write was acknowledged (a Redis late
 * by one deadline serves its ready clients in any order). Meanwhile no worker
 * of this process uses the cache either.
 */
static void bump_cb(chat_err_t status, redisReply *reply, void *arg)
{
    struct done_op *op = arg;
    void (*done)(void *) = op->done;
    void *done_arg = op->arg;
    if (status == CHAT_ETIMEDOUT) {
        atomic_fetch_add(&op->sh->unsettled, 1);
        return; /* bump_late_cb acknowledges the write */
    }
    if (status != CHAT_EOK)
        chat_cache_shared_mark_dirty(op->sh);
    free(op);
    if (done)
        done(done_arg);
}

static void bump_late_cb(chat_err_t status, void *arg)
{
    struct done_op *op = arg;
    void (*done)(void *) = op->done;
    void *done_arg = op->arg;
    if (status != CHAT_EOK)
        chat_cache_shared_mark_dirty(op->sh); /* before the lookups may resume */
    atomic_fetch_sub(&op->sh->unsettled, 1);
    free(op);
    if (done)
        done(done_arg);
}

/* Sends a version bump; one that cannot even be sent makes the cache dirty. */
static void send_bump(chat_cache_t *c, int argc, const char **argv, const size_t *argvlen,
                      void (*done)(void *), void *arg)
{
    struct done_op *op = chat_malloc(sizeof *op);
    op->sh = c->sh;
    op->done = done;
    op->arg = arg;
    if (chat_redis_command_tracked(c->redis, bump_cb, bump_late_cb, op, argc, argv, argvlen) != 0) {
        free(op);
        chat_cache_shared_mark_dirty(c->sh);
        defer(c->loop, done, arg);
    }
}

/* Several bumps answered as one: done runs after the last. */
struct join {
    size_t left;
    void (*done)(void *);
    void *arg;
};

static void join_done(void *arg)
{
    struct join *j = arg;
    if (--j->left > 0)
        return;
    void (*done)(void *) = j->done;
    void *done_arg = j->arg;
    free(j);
    if (done)
        done(done_arg);
}

static void retry_fire_cb(uv_timer_t *t)
{
    struct retry *r = t->data;
    chat_cache_invalidate_keys_lsn(r->c, (const char *const *)r->vkeys, r->n, r->lsn, r->done,
                                   r->arg);
    uv_close((uv_handle_t *)&r->timer, retry_closed_cb);
}

/*
 * A bump that records a write's WAL position. KEYS: version keys; ARGV[1] a
 * fresh token, ARGV[2] the position (16 hex digits). Each version becomes
 * "<token>L<position>", the position the higher of ARGV[2] and the one its
 * old version carried, so that it covers every write acknowledged under any
 * earlier version too.
 */
static const char bump_lsn_script[] = "for i = 1, #KEYS do "
                                      "  local old = redis.call('GET', KEYS[i]) "
                                      "  local m = old and string.match(old, 'L(%x+)$') "
                                      "  local keep = ARGV[2] "
                                      "  if m and m > keep then keep = m end "
                                      "  redis.call('SET', KEYS[i], ARGV[1] .. 'L' .. keep) "
                                      "end "
                                      "return 1";

void chat_cache_lsn_str(char out[24], uint64_t lsn)
{
    snprintf(out, 24, "%016llX", (unsigned long long)lsn);
}

/* The WAL position after the L of the token that starts at p and ends at end; 0: none. */
static uint64_t token_lsn(const char *p, const char *end)
{
    uint64_t best = 0;
    for (const char *q = p; q + 17 <= end; q++) {
        if (*q != 'L')
            continue;
        uint64_t v = 0;
        int i = 1;
        for (; i <= 16; i++) {
            char ch = q[i];
            int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
            if (d < 0)
                break;
            v = v << 4 | (uint64_t)d;
        }
        if (i == 17 && q + 17 == end)
            best = v;
    }
    return best;
}

uint64_t chat_cache_key_lsn(const char *key)
{
    if (!key)
        return 0;
    const char *v = strstr(key, ":v"), *next;
    while (v && (next = strstr(v + 2, ":v")) != NULL)
        v = next;
    if (!v)
        return 0;
    uint64_t need = chat_cache_token_lsn(v + 2);
    if (!need)
        return 0; /* the version records no write: unknown */
    /* the epoch: the last ":e" before the version */
    const char *e = NULL;
    for (const char *q = key; q + 1 < v; q++)
        if (q[0] == ':' && q[1] == 'e')
            e = q;
    if (e) {
        uint64_t el = token_lsn(e + 2, v);
        if (el > need)
            need = el;
    }
    return need;
}

uint64_t chat_cache_token_lsn(const char *token)
{
    return token ? token_lsn(token, token + strlen(token)) : 0;
}

static void note_lsn(chat_cache_t *c, uint64_t lsn)
{
    unsigned long long cur = atomic_load(&c->sh->max_lsn);
    while (cur < lsn && !atomic_compare_exchange_weak(&c->sh->max_lsn, &cur, lsn))
        ;
}

void chat_cache_invalidate_keys(chat_cache_t *c, const char *const *vkeys, size_t n,
                                void (*done)(void *arg), void *arg)
{
    chat_cache_invalidate_keys_lsn(c, vkeys, n, 0, done, arg);
}

void chat_cache_invalidate_keys_lsn(chat_cache_t *c, const char *const *vkeys, size_t n,
                                    uint64_t lsn, void (*done)(void *arg), void *arg)
{
    if (lsn)
        note_lsn(c, lsn);
    bool bypass = atomic_load(&c->sh->bypass);
    if (n == 0) {
        defer(c->loop, done, arg);
        return;
    }
    if (!bypass && !c->closing && !last_healthy_state(c) && !c->ever_up &&
        uv_now(c->loop) - c->created_ms < STARTUP_WAIT_MS) {
        /*
         * Just started and Redis not connected yet: other instances may hold
         * entries of this scope, so wait briefly for the connection rather
         * than acknowledge a write nobody invalidated.
         */
        struct retry *r = chat_malloc(sizeof *r);
        r->c = c;
        r->vkeys = chat_malloc(n * sizeof *r->vkeys);
        for (size_t i = 0; i < n; i++)
            r->vkeys[i] = chat_strdup(vkeys[i]);
        r->n = n;
        r->lsn = lsn;
        r->done = done;
        r->arg = arg;
        uv_timer_init(c->loop, &r->timer);
        r->timer.data = r;
        uv_timer_start(&r->timer, retry_fire_cb, STARTUP_RETRY_MS, 0);
        return;
    }
    if (bypass || c->closing || !chat_redis_healthy(c->redis)) {
        /* Cannot invalidate now: older entries must not be trusted later. */
        chat_cache_shared_mark_dirty(c->sh);
        defer(c->loop, done, arg);
        return;
    }
    /* One fresh token for every key: never used before by any of them. */
    char token[40], lsnbuf[24], nk[24];
    new_token(c, token);
    chat_cache_lsn_str(lsnbuf, lsn);
    /* On a cluster the keys may sit on several slots: one bump each, done after the last. */
    bool each = n > 1 && chat_redis_is_cluster(c->redis);
    struct join *j = NULL;
    if (each) {
        j = chat_malloc(sizeof *j);
        j->left = n;
        j->done = done;
        j->arg = arg;
    }
    size_t per = each ? 1 : n;
    snprintf(nk, sizeof nk, "%zu", per);
    const char **argv = chat_malloc((1 + 2 * per + 4) * sizeof *argv);
    for (size_t i = 0; i < n; i += per) {
        int argc = 0;
        if (lsn) { /* the position recorded too: bump_lsn_script */
            argv[argc++] = "EVAL";
            argv[argc++] = bump_lsn_script;
            argv[argc++] = nk;
            for (size_t k = 0; k < per; k++)
                argv[argc++] = vkeys[i + k];
            argv[argc++] = token;
            argv[argc++] = lsnbuf;
        } else {
            argv[argc++] = per == 1 ? "SET" : "MSET";
            for (size_t k = 0; k < per; k++) {
                argv[argc++] = vkeys[i + k];
                argv[argc++] = token;
            }
        }
        if (each)
            send_bump(c, argc, argv, NULL, join_done, j);
        else
            send_bump(c, argc, argv, NULL, done, arg);
    }
    free(argv);
}

/*
 * The bump of a write that took rev (write-through). KEYS[1] epoch key,
 * KEYS[2] version key; ARGV[1] a fresh token, ARGV[2] the write's rev,
 * ARGV[3] its WAL position (16 hex digits; "" for none, as in
 * bump_lsn_script otherwise), then (prefix, value, TTL) triples. The version becomes
 * "<rev>.<token>", rev being the highest rev any bump has recorded there; the values are stored
 * under the new version only when this write's rev is above the recorded
 * one — they were read in the write's own transaction, so they hold every
 * write of a lower rev, while a higher recorded rev means a later write was
 * acknowledged and these values may miss it. A version without a recorded
 * rev (new, evicted, or set by a plain bump) stores nothing. A missing epoch
 * is created as a lookup would create it.
 */
static const char bump_rev_script[] =
    "local old = redis.call('GET', KEYS[2]) "
    "local seen = old and tonumber(string.match(old, '^(%d+)%.')) "
    "local rev = tonumber(ARGV[2]) "
    "local keep = rev "
    "if seen and seen > rev then keep = seen end "
    "local v = string.format('%d', keep) .. '.' .. ARGV[1] "
    "if ARGV[3] ~= '' then "
    "  local m = old and string.match(old, 'L(%x+)$') "
    "  local l = ARGV[3] "
    "  if m and m > l then l = m end "
    "  v = v .. 'L' .. l "
    "end "
    "redis.call('SET', KEYS[2], v) "
    "if seen and rev > seen then "
    "  local e = redis.call('GET', KEYS[1]) "
    "  if not e then e = ARGV[1] .. 'e' redis.call('SET', KEYS[1], e) end "
    "  for i = 4, #ARGV, 3 do "
    "    redis.call('SET', ARGV[i] .. ':e' .. e .. ':v' .. v, ARGV[i + 1], 'EX', ARGV[i + 2]) "
    "  end "
    "end "
    "return 1";

void chat_cache_invalidate_conv_rev(chat_cache_t *c, int64_t conv_id, int64_t rev,
                                    const chat_cache_put_t *puts, size_t n, void (*done)(void *arg),
                                    void *arg)
{
    chat_cache_invalidate_conv_rev_lsn(c, conv_id, rev, 0, puts, n, done, arg);
}

void chat_cache_invalidate_conv_rev_lsn(chat_cache_t *c, int64_t conv_id, int64_t rev, uint64_t lsn,
                                        const chat_cache_put_t *puts, size_t n,
                                        void (*done)(void *arg), void *arg)
{
    if (rev <= 0 || !usable(c)) {
        /* Not now (bypassed, down, dirty, unsettled): the plain bump decides. */
        chat_cache_invalidate_conv_lsn(c, conv_id, lsn, done, arg);
        return;
    }
    if (lsn)
        note_lsn(c, lsn);
    char vkey[CHAT_CACHE_KEY_MAX], token[40], revbuf[24], ekey[CHAT_CACHE_EPOCH_KEY_MAX];
    char lsnbuf[24] = "";
    if (lsn)
        chat_cache_lsn_str(lsnbuf, lsn);
    char(*ttls)[16] = chat_malloc((n ? n : 1) * sizeof *ttls);
    version_key(c, vkey, conv_id);
    new_token(c, token);
    snprintf(revbuf, sizeof revbuf, "%lld", (long long)rev);
    size_t argc = 8 + 3 * n;
    const char **argv = chat_malloc(argc * sizeof *argv);
    size_t *argvlen = chat_malloc(argc * sizeof *argvlen);
    argv[0] = "EVAL";
    argv[1] = bump_rev_script;
    argv[2] = "2";
    argv[3] = epoch_key(c, vkey, ekey);
    argv[4] = vkey;
    argv[5] = token;
    argv[6] = revbuf;
    argv[7] = lsnbuf;
    for (size_t i = 0; i < 8; i++)
        argvlen[i] = strlen(argv[i]);
    for (size_t i = 0; i < n; i++) {
        snprintf(ttls[i], sizeof ttls[i], "%d", puts[i].ttl);
        argv[8 + 3 * i] = puts[i].prefix;
        argvlen[8 + 3 * i] = strlen(puts[i].prefix);
        argv[9 + 3 * i] = puts[i].val;
        argvlen[9 + 3 * i] = puts[i].len;
        argv[10 + 3 * i] = ttls[i];
        argvlen[10 + 3 * i] = strlen(ttls[i]);
    }
    send_bump(c, (int)argc, argv, argvlen, done, arg);
    free(argv);
    free(argvlen);
    free(ttls);
}

void chat_cache_invalidate_conv(chat_cache_t *c, int64_t conv_id, void (*done)(void *arg),
                                void *arg)
{
    chat_cache_invalidate_conv_lsn(c, conv_id, 0, done, arg);
}

void chat_cache_invalidate_conv_lsn(chat_cache_t *c, int64_t conv_id, uint64_t lsn,
                                    void (*done)(void *arg), void *arg)
{
    char vkey[CHAT_CACHE_KEY_MAX];
    version_key(c, vkey, conv_id);
    const char *keys[] = {vkey};
    chat_cache_invalidate_keys_lsn(c, keys, 1, lsn, done, arg);
}

/* ---- operator deletion by pattern ---- */

/*
 * SCAN walks one node: on a cluster every master in turn (chat_redis_masters),
 * and there the keys of one SCAN page may sit on several slots, so each is
 * unlinked by its own command; on one Redis a page is one UNLINK.
 */
struct scan_op {
    chat_cache_t *c;
    char *pattern;
    char cursor[CHAT_CACHE_CURSOR_MAX];
    size_t node;    /* the master being walked */
    size_t unlinks; /* UNLINKs of the page not answered yet */
    int failed;
    long long deleted;
    void (*cb)(long long, void *);
    void *arg;
};

static void scan_step(struct scan_op *op);

static void scan_finish(struct scan_op *op, long long n)
{
    op->cb(n, op->arg);
    free(op->pattern);
    free(op);
}

/* The page is done: the next one, the next master, or the end. */
static void scan_next(struct scan_op *op)
{
    if (strcmp(op->cursor, "0") != 0) {
        scan_step(op);
    } else if (op->node + 1 < chat_redis_masters(op->c->redis)) {
        op->node++;
        scan_step(op);
    } else {
        scan_finish(op, op->deleted);
    }
}

static void unlink_cb(chat_err_t status, redisReply *reply, void *arg)
{
    struct scan_op *op = arg;
    if (status != CHAT_EOK || !reply || reply->type != REDIS_REPLY_INTEGER)
        op->failed = 1;
    else
        op->deleted += reply->integer;
    if (--op->unlinks > 0)
        return;
    if (op->failed)
        scan_finish(op, -1);
    else
        scan_next(op);
}

static void scan_cb(chat_err_t status, redisReply *reply, void *arg)
{
    struct scan_op *op = arg;
    const char *cursor;
    const redisReply *keys;
    if (status != CHAT_EOK || !reply || chat_cache_scan_reply_parse(reply, &cursor, &keys) != 0) {
        scan_finish(op, -1);
        return;
    }
    snprintf(op->cursor, sizeof op->cursor, "%s", cursor);
    if (keys->elements == 0) {
        scan_next(op);
        return;
    }
    int one_each = chat_redis_is_cluster(op->c->redis);
    size_t n = one_each ? keys->elements : 1, per = one_each ? 1 : keys->elements;
    const char **argv = chat_malloc(sizeof *argv * (per + 1));
    size_t *lens = chat_malloc(sizeof *lens * (per + 1));
    argv[0] = "UNLINK";
    lens[0] = 6;
    op->unlinks = 1; /* this function's own, so that no answer ends op under the loop */
    for (size_t k = 0; k < n; k++) {
        for (size_t i = 0; i < per; i++) {
            argv[1 + i] = keys->element[k * per + i]->str;
            lens[1 + i] = keys->element[k * per + i]->len;
        }
        if (chat_redis_command(op->c->redis, unlink_cb, op, (int)per + 1, argv, lens) != 0) {
            op->failed = 1;
            break;
        }
        op->unlinks++;
    }
    free(argv);
    free(lens);
    unlink_cb(CHAT_EOK, &(redisReply){.type = REDIS_REPLY_INTEGER}, op);
}

static void scan_step(struct scan_op *op)
{
    const char *argv[] = {"SCAN", op->cursor, "MATCH", op->pattern, "COUNT", "1000"};
    if (chat_redis_command_master(op->c->redis, op->node, scan_cb, op, 6, argv, NULL) != 0)
        scan_finish(op, -1);
}

void chat_cache_delete_pattern(chat_cache_t *c, const char *pattern,
                               void (*cb)(long long deleted, void *arg), void *arg)
{
    struct scan_op *op = chat_calloc(1, sizeof *op);
    op->c = c;
    op->pattern = chat_strdup(pattern);
    strcpy(op->cursor, "0");
    op->cb = cb;
    op->arg = arg;
    scan_step(op);
}
