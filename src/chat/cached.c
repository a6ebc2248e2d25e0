/*
 * Cache-aside reads of the chat domain. A read first makes sure the caller
 * may see the data (membership, remembered per worker once proven: members
 * are never removed), then looks the versioned key up in Redis; a hit is
 * answered with the stored bytes, a miss joins the key's flight so that
 * concurrent misses cost one database query, whose answer is then stored
 * with the kind's TTL. Whenever the cache cannot be used, the read goes
 * straight to the database.
 */
#include "chat/internal.h"
#include "cache/cache.h"
#include "core/alloc.h"

#include <stdlib.h>
#include <string.h>

#define MEMBER_SLOTS (1u << 16)
#define MEMBER_MAX (MEMBER_SLOTS / 2)

struct member_slot {
    int64_t conv, user; /* conv == 0: empty */
};

struct chat_members {
    struct member_slot *slots;
    unsigned used;
};

chat_members_t *chat_members_create(void)
{
    chat_members_t *s = chat_calloc(1, sizeof *s);
    s->slots = chat_calloc(MEMBER_SLOTS, sizeof *s->slots);
    return s;
}

void chat_members_destroy(chat_members_t *s)
{
    if (!s)
        return;
    free(s->slots);
    free(s);
}

static unsigned member_index(int64_t conv, int64_t user)
{
    uint64_t h = (uint64_t)conv * 0x9E3779B97F4A7C15ull ^ (uint64_t)user * 0xC2B2AE3D27D4EB4Full;
    return (unsigned)(h >> 40) & (MEMBER_SLOTS - 1);
}

static int member_known(const chat_members_t *s, int64_t conv, int64_t user)
{
    for (unsigned i = member_index(conv, user);; i = (i + 1) & (MEMBER_SLOTS - 1)) {
        const struct member_slot *m = &s->slots[i];
        if (!m->conv)
            return 0;
        if (m->conv == conv && m->user == user)
            return 1;
    }
}

static void member_remember(chat_members_t *s, int64_t conv, int64_t user)
{
    if (s->used >= MEMBER_MAX) {
        memset(s->slots, 0, MEMBER_SLOTS * sizeof *s->slots);
        s->used = 0;
    }
    for (unsigned i = member_index(conv, user);; i = (i + 1) & (MEMBER_SLOTS - 1)) {
        struct member_slot *m = &s->slots[i];
        if (m->conv == conv && m->user == user)
            return;
        if (!m->conv) {
            m->conv = conv;
            m->user = user;
            s->used++;
            return;
        }
    }
}

/* ---- one cached read ---- */

struct cread {
    chat_ctx_t *ctx;
    int64_t caller;
    int kind;
    int64_t conv; /* 0 for data outside conversations (profiles) */
    int ttl;
    char prefix[CHAT_CACHE_KEY_MAX];
    char *fill_key;
    chat_loader_fn load;
    void *params;
    chat_reply_cb cb;
    void *arg;
};

static void cread_free(struct cread *op)
{
    free(op->fill_key);
    free(op->params);
    free(op);
}

/* Answers the caller from a flight (bytes shared with other waiters). */
static void flight_answer_cb(int status, const char *val, size_t len, void *arg)
{
    struct cread *op = arg;
    if (status == CHAT_OK) {
        chat_reply_t r = {.status = CHAT_OK, .body = chat_strndup(val, len), .body_len = len};
        op->cb(&r, op->arg);
    } else {
        chat_reply_err(op->cb, op->arg, status, status == CHAT_ERR_NOT_FOUND ? "not found" : NULL);
    }
    cread_free(op);
}

struct fill_done {
    chat_flights_t *flights;
    char *key;
};

static void fill_done_cb(void *arg)
{
    struct fill_done *fd = arg;
    chat_flight_remove(fd->flights, fd->key);
    free(fd->key);
    free(fd);
}

struct delayed_fill {
    uv_timer_t timer;
    chat_ctx_t *ctx;
    char *key;
    char *val;
    size_t len;
    int ttl;
};

static void delayed_fill_closed_cb(uv_handle_t *h)
{
    struct delayed_fill *d = h->data;
    free(d->val);
    free(d);
}

static void fill_now(chat_ctx_t *ctx, char *key_owned, const char *val, size_t len, int ttl)
{
    struct fill_done *fd = chat_malloc(sizeof *fd);
    fd->flights = chat_cache_flights(ctx->cache);
    fd->key = key_owned;
    chat_cache_fill(ctx->cache, key_owned, val, len, ttl, fill_done_cb, fd);
}

static void delayed_fill_cb(uv_timer_t *t)
{
    struct delayed_fill *d = t->data;
    if (d->ctx->cache)
        fill_now(d->ctx, d->key, d->val, d->len, d->ttl);
    else
        free(d->key); /* shut down meanwhile: nothing to fill */
    uv_close((uv_handle_t *)&d->timer, delayed_fill_closed_cb);
}

/* The leader's load finished: answer every waiter, then store the answer. */
static void loaded_cb(chat_reply_t *r, void *arg)
{
    struct cread *op = arg;
    chat_flights_t *flights = chat_cache_flights(op->ctx->cache);
    if (r->status != CHAT_OK) {
        chat_flight_land(flights, op->fill_key, r->status, "", 0, 0);
        free(r->body);
        return; /* op was a waiter of its own flight: freed by flight_answer_cb */
    }
    char *key = chat_strdup(op->fill_key);
    chat_ctx_t *ctx = op->ctx;
    int ttl = op->ttl;
    /* Landing answers op too (and frees it); the value stays until the fill is acknowledged. */
    chat_flight_land(flights, key, CHAT_OK, r->body, r->body_len, 1);
    if (ctx->fill_delay_ms > 0) {
        /* Fault injection for the freshness tests: a slow filler. */
        struct delayed_fill *d = chat_malloc(sizeof *d);
        d->ctx = ctx;
        d->key = key;
        d->val = r->body;
        d->len = r->body_len;
        d->ttl = ttl;
        uv_timer_init(ctx->loop, &d->timer);
        d->timer.data = d;
        uv_timer_start(&d->timer, delayed_fill_cb, (uint64_t)ctx->fill_delay_ms, 0);
        return;
    }
    fill_now(ctx, key, r->body, r->body_len, ttl);
    free(r->body);
}

/* The cache could not be used: read the database and answer directly. */
static void direct_cb(chat_reply_t *r, void *arg)
{
    struct cread *op = arg;
    op->cb(r, op->arg);
    cread_free(op);
}

static void lookup_cb(const chat_cache_lookup_t *l, void *arg)
{
    struct cread *op = arg;
    if (l->status == CHAT_CACHE_HIT) {
        chat_reply_t r = {
            .status = CHAT_OK, .body = chat_strndup(l->value, l->len), .body_len = l->len};
        op->cb(&r, op->arg);
        cread_free(op);
        return;
    }
    if (l->status != CHAT_CACHE_MISS) {
        op->load(op->ctx, op->caller, op->params, direct_cb, op);
        return;
    }
    op->fill_key = chat_strdup(l->key);
    chat_flights_t *flights = chat_cache_flights(op->ctx->cache);
    if (chat_flight_join(flights, op->fill_key, flight_answer_cb, op) == CHAT_FLIGHT_LEADER)
        op->load(op->ctx, op->caller, op->params, loaded_cb, op);
}

static void start_lookup(struct cread *op)
{
    if (chat_cache_lookup(op->ctx->cache, op->kind, op->prefix, op->conv, lookup_cb, op) < 0)
        op->load(op->ctx, op->caller, op->params, direct_cb, op);
}

static void membership_cb(const chat_db_result_t *res, void *arg)
{
    struct cread *op = arg;
    if (res->status != CHAT_EOK) {
        chat_reply_db_err(op->cb, op->arg, res);
        cread_free(op);
    } else if (PQntuples(res->res[0]) == 0) {
        chat_reply_err(op->cb, op->arg, CHAT_ERR_NOT_FOUND, "no such conversation");
        cread_free(op);
    } else {
        member_remember(op->ctx->members, op->conv, op->caller);
        start_lookup(op);
    }
}

void chat_cached_read(chat_ctx_t *ctx, int64_t caller, int kind, int64_t conv, const char *prefix,
                      int ttl, chat_loader_fn load, const void *params, size_t params_size,
                      chat_reply_cb cb, void *arg)
{
    struct cread *op = chat_calloc(1, sizeof *op);
    op->ctx = ctx;
    op->caller = caller;
    op->kind = kind;
    op->conv = conv;
    op->ttl = ttl;
    snprintf(op->prefix, sizeof op->prefix, "%s", prefix);
    op->load = load;
    op->params = chat_malloc(params_size ? params_size : 1);
    memcpy(op->params, params, params_size);
    op->cb = cb;
    op->arg = arg;
    if (!conv || member_known(ctx->members, conv, caller)) {
        start_lookup(op);
        return;
    }
    char a[24], b[24];
    const char *p[] = {chat_i64_str(a, conv), chat_i64_str(b, caller)};
    chat_db_stmt_t st = {"SELECT 1 FROM members WHERE conversation_id = $1 AND user_id = $2", 2, p};
    chat_db_exec(ctx->db, &st, 1, CHAT_DB_RETRY_SENT, membership_cb, op);
}

void chat_after_write(chat_ctx_t *ctx, int64_t conv, void (*done)(void *arg), void *arg)
{
    if (!ctx->cache) {
        done(arg);
        return;
    }
    chat_cache_invalidate_conv(ctx->cache, conv, done, arg);
}
