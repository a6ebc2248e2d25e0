/*
 * The read path of the chat domain, decided here once: without a cache
 * straight to the database; with one, a read looks the versioned key up in
 * Redis, then makes sure the caller may see the data: a membership proven
 * under the same membership version (and epoch) is remembered per worker,
 * anything else is checked in the database first. A hit is answered with the
 * stored bytes, a miss joins the key's flight so that concurrent misses cost
 * one database query, whose answer is then stored with the read's TTL.
 * Whenever the cache cannot be used, the read goes straight to the database,
 * whose statements check membership themselves. Also the write side of
 * freshness: chat_after_write().
 */
#include "chat/internal.h"
#include "cache/cache.h"
#include "core/alloc.h"
#include "core/hash.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Same size as the token memo: 64 Ki slots, forgotten at 32 Ki entries. */
#define MEMBER_MEMO_SLOTS (1u << 16)

/*
 * A proof is (conversation, user, hash of the epoch and the conversation's
 * membership version, conv:mver:{id}, that the lookup read in its round
 * trip). Members can be removed: a removal changes the membership version
 * before it is acknowledged (and a change that did not reach Redis changes
 * the epoch before the cache is used again), so a proof made under an older
 * one is never found again — on any instance. Sends do not touch the
 * membership version: readers keep their proofs across them.
 */
#define MEMBER_KEY_LEN (3 * sizeof(int64_t))

chat_memo_t *chat_members_memo_create(void)
{
    return chat_memo_create(MEMBER_MEMO_SLOTS, MEMBER_KEY_LEN);
}

static void member_key(unsigned char key[MEMBER_KEY_LEN], int64_t conv, int64_t user,
                       uint64_t version)
{
    memcpy(key, &conv, sizeof conv);
    memcpy(key + 8, &user, sizeof user);
    memcpy(key + 16, &version, sizeof version);
}

static bool member_known(const chat_memo_t *m, int64_t conv, int64_t user, uint64_t version)
{
    unsigned char key[MEMBER_KEY_LEN];
    member_key(key, conv, user, version);
    return chat_memo_get(m, key) != 0;
}

static void member_remember(chat_memo_t *m, int64_t conv, int64_t user, uint64_t version)
{
    unsigned char key[MEMBER_KEY_LEN];
    member_key(key, conv, user, version);
    chat_memo_put(m, key, 1);
}

/*
 * A "not a member" answer is remembered under the same key, so that an
 * outsider reading a conversation again and again costs one query, not one
 * per read. Membership begins only by a creation that lists the user or by
 * an add, and both move the conversation's membership version (and its
 * version) before they are acknowledged — on every instance, through the
 * epoch when the move did not reach Redis — so a "no" is never found again
 * once the user may read. Its own time limit bounds anything outside that
 * argument (rows changed by hand); a separate memory, so that outsiders
 * cannot push the members' proofs out, forgotten whole when half full.
 */
#define NON_MEMBER_SLOTS (1u << 14) /* 512 KiB per worker, forgotten at 8 Ki answers */
#define NON_MEMBER_TTL_MS 60000

chat_memo_t *chat_non_members_memo_create(void)
{
    return chat_memo_create(NON_MEMBER_SLOTS, MEMBER_KEY_LEN);
}

static bool non_member_known(const chat_ctx_t *ctx, int64_t conv, int64_t user, uint64_t version)
{
    if (!ctx->non_members)
        return false;
    unsigned char key[MEMBER_KEY_LEN];
    member_key(key, conv, user, version);
    int64_t until = chat_memo_get(ctx->non_members, key);
    return until && (uint64_t)until > uv_now(ctx->loop);
}

static void non_member_remember(chat_ctx_t *ctx, int64_t conv, int64_t user, uint64_t version)
{
    if (!ctx->non_members || !version)
        return;
    unsigned char key[MEMBER_KEY_LEN];
    member_key(key, conv, user, version);
    chat_memo_set(ctx->non_members, key, (int64_t)(uv_now(ctx->loop) + NON_MEMBER_TTL_MS));
}

/* ---- one cached read ---- */

struct cread {
    chat_ctx_t *ctx;
    int64_t caller;
    chat_read_t rd; /* the spec, copied */
    char *fill_key;
    char *hit; /* a hit waiting for the membership check: its bytes */
    size_t hit_len;
    uint64_t version; /* hash of the epoch and version the lookup answered under */
    chat_reply_cb cb;
    void *arg;
};

static void cread_free(struct cread *op)
{
    free(op->fill_key);
    free(op->hit);
    free(op);
}

static void load(struct cread *op, chat_reply_cb cb)
{
    op->rd.load(op->ctx, op->caller, &op->rd, cb, op);
}

void chat_reply_flight(chat_reply_cb cb, void *arg, int status, const char *val, size_t len)
{
    if (status == CHAT_EOK) {
        chat_reply_t r = {.kind = CHAT_REPLY_OK, .body = chat_strndup(val, len), .body_len = len};
        cb(&r, arg);
    } else {
        /* A flight carries the code only: every waiter, the leader's too, gets its default text. */
        chat_reply_err(cb, arg, (chat_err_t)status, NULL);
    }
}

/* Answers the caller from a flight (bytes shared with other waiters). */
static void flight_answer_cb(int status, const char *val, size_t len, void *arg)
{
    struct cread *op = arg;
    chat_reply_flight(op->cb, op->arg, status, val, len);
    cread_free(op);
}

struct fill_done {
    chat_flights_t *flights;
    char *key;
};

void *chat_fill_done_new(chat_flights_t *flights, char *key_owned)
{
    struct fill_done *fd = chat_malloc(sizeof *fd);
    fd->flights = flights;
    fd->key = key_owned;
    return fd;
}

void chat_fill_done_cb(void *arg)
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
    chat_cache_fill(ctx->cache, key_owned, val, len, ttl, chat_fill_done_cb,
                    chat_fill_done_new(chat_cache_flights(ctx->cache), key_owned));
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
    if (r->err != CHAT_EOK) {
        chat_flight_land(flights, op->fill_key, r->err, "", 0, 0);
        free(r->body);
        return; /* op was a waiter of its own flight: freed by flight_answer_cb */
    }
    char *key = chat_strdup(op->fill_key);
    chat_ctx_t *ctx = op->ctx;
    int ttl = op->rd.ttl;
    /* Landing answers op too (and frees it); the value stays until the fill is acknowledged. */
    chat_flight_land(flights, key, CHAT_EOK, r->body, r->body_len, 1);
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

/* The caller may see the data: answer the hit, or join the miss's flight. */
static void proceed(struct cread *op)
{
    if (op->hit) {
        chat_reply_t r = {.kind = CHAT_REPLY_OK, .body = op->hit, .body_len = op->hit_len};
        op->hit = NULL;
        op->cb(&r, op->arg);
        cread_free(op);
        return;
    }
    chat_flights_t *flights = chat_cache_flights(op->ctx->cache);
    if (chat_flight_join(flights, op->fill_key, flight_answer_cb, op) == CHAT_FLIGHT_LEADER)
        load(op, loaded_cb);
}

static void membership_cb(const chat_db_result_t *res, void *arg)
{
    struct cread *op = arg;
    if (res->status != CHAT_EOK) {
        chat_reply_db_err(op->cb, op->arg, res);
        cread_free(op);
    } else if (PQntuples(res->res[0]) == 0) {
        /* Checked after the version was read, like a proof: valid for as long as it stays. */
        non_member_remember(op->ctx, op->rd.conv_id, op->caller, op->version);
        chat_reply_err(op->cb, op->arg, CHAT_ENOTFOUND, "no such conversation");
        cread_free(op);
    } else {
        /* Proven after the version was read: valid for as long as it stays. */
        member_remember(op->ctx->members, op->rd.conv_id, op->caller, op->version);
        proceed(op);
    }
}

static void lookup_cb(const chat_cache_lookup_t *l, void *arg)
{
    struct cread *op = arg;
    if (l->status != CHAT_CACHE_HIT && l->status != CHAT_CACHE_MISS) {
        load(op, direct_cb);
        return;
    }
    if (l->status == CHAT_CACHE_HIT) {
        op->hit = chat_strndup(l->value, l->len);
        op->hit_len = l->len;
    } else {
        op->fill_key = chat_strdup(l->key);
    }
    if (!op->rd.conv_id) {
        proceed(op);
        return;
    }
    /*
     * The epoch and membership version read in the same round trip (or,
     * without those, the epoch and version the key ends with).
     */
    size_t plen = strlen(op->rd.prefix);
    if (l->guard)
        op->version = chat_hash_str(l->guard);
    else
        op->version = l->key && strlen(l->key) > plen ? chat_hash_str(l->key + plen) : 0;
    if (op->version && member_known(op->ctx->members, op->rd.conv_id, op->caller, op->version)) {
        proceed(op);
        return;
    }
    if (op->version && non_member_known(op->ctx, op->rd.conv_id, op->caller, op->version)) {
        /* The very answer the membership check gives: no existence leak. */
        chat_reply_err(op->cb, op->arg, CHAT_ENOTFOUND, "no such conversation");
        cread_free(op);
        return;
    }
    /*
     * Checked after the version was read: a removal acknowledged before this
     * check is seen here; one acknowledged later has moved the version on,
     * so this proof is never used for the reads that follow it.
     */
    char a[24], b[24];
    const char *p[] = {chat_i64_str(a, op->rd.conv_id), chat_i64_str(b, op->caller)};
    chat_db_stmt_t st = {"SELECT 1 FROM members WHERE conversation_id = $1 AND user_id = $2", 2, p};
    chat_db_exec(op->ctx->db, &st, 1, CHAT_DB_RETRY_SENT, membership_cb, op);
}

static void start_lookup(struct cread *op)
{
    if (chat_cache_lookup(op->ctx->cache, op->rd.kind, op->rd.prefix, op->rd.conv_id, lookup_cb,
                          op) < 0)
        load(op, direct_cb);
}

void chat_read(chat_ctx_t *ctx, int64_t caller, const chat_read_t *rd, chat_reply_cb cb, void *arg)
{
    if (!ctx->cache) {
        /* The loaders check membership in their own statement. */
        rd->load(ctx, caller, rd, cb, arg);
        return;
    }
    struct cread *op = chat_calloc(1, sizeof *op);
    op->ctx = ctx;
    op->caller = caller;
    op->rd = *rd;
    op->cb = cb;
    op->arg = arg;
    start_lookup(op);
}

void chat_after_write(chat_ctx_t *ctx, int64_t conv, void (*done)(void *arg), void *arg)
{
    if (!ctx->cache) {
        done(arg);
        return;
    }
    chat_cache_invalidate_conv(ctx->cache, conv, done, arg);
}

void chat_after_write_rev(chat_ctx_t *ctx, int64_t conv, int64_t rev, const chat_cache_put_t *puts,
                          size_t n, void (*done)(void *arg), void *arg)
{
    if (!ctx->cache) {
        done(arg);
        return;
    }
    chat_cache_invalidate_conv_rev(ctx->cache, conv, rev, puts, n, done, arg);
}

void chat_after_write_users(chat_ctx_t *ctx, int64_t conv, const int64_t *users, size_t n,
                            void (*done)(void *arg), void *arg)
{
    if (!ctx->cache) {
        done(arg);
        return;
    }
    size_t nkeys = n + (conv > 0 ? 2 : 0);
    char(*keys)[CHAT_KEYS_MAX] = chat_malloc((nkeys ? nkeys : 1) * sizeof *keys);
    const char **argv = chat_malloc((nkeys ? nkeys : 1) * sizeof *argv);
    size_t k = 0;
    if (conv > 0) {
        snprintf(keys[k++], CHAT_KEYS_MAX, CHAT_KEYS_VERSION_PREFIX "%lld", (long long)conv);
        snprintf(keys[k++], CHAT_KEYS_MAX, CHAT_KEYS_MEMBERS_VERSION_PREFIX "%lld",
                 (long long)conv);
    }
    for (size_t i = 0; i < n; i++)
        chat_keys_user_version(keys[k++], users[i]);
    for (size_t i = 0; i < nkeys; i++)
        argv[i] = keys[i];
    chat_cache_invalidate_keys(ctx->cache, argv, nkeys, done, arg);
    free(argv);
    free(keys);
}
