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
#include "db/replica.h"

#include <stdbool.h>
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

/* ---- one read ---- */

struct check;

struct cread {
    chat_ctx_t *ctx;
    int64_t caller;
    chat_read_t rd;      /* the spec, copied */
    uint64_t since;      /* uv_hrtime() when the read began */
    char *fill_key;      /* a miss: the versioned key the lookup read */
    chat_blob_t *hit;    /* a hit, or a flight's value, waiting for the membership check */
    uint64_t version;    /* hash of the epoch and version the lookup answered under; 0: none */
    bool proven;         /* the caller may see the data (or the read needs no membership) */
    bool leading;        /* this read loads its flight's value */
    struct check *check; /* the flight's check of its waiters that covers this one */
    int flight_status;   /* what the flight answered, while the check runs */
    chat_flight_t *fl;
    struct wait *wait; /* a queued leader's deadline */
    chat_reply_cb cb;
    void *arg;
};

/*
 * A load that waits for the one ahead of it waits no longer than a database
 * transaction waits in the pool's queue: then every read gathered for it is
 * answered as the pool would have (CHAT_ETIMEDOUT: 503 with Retry-After).
 */
struct wait {
    uv_timer_t timer;
    struct cread *op; /* NULL once its flight started */
};

/* One statement checking the memberships of a landed flight's unproven waiters. */
struct check {
    chat_ctx_t *ctx;
    int64_t conv_id;
    struct cread **ops;
    size_t n;
};

static void cread_free(struct cread *op)
{
    free(op->fill_key);
    chat_blob_unref(op->hit);
    free(op);
}

static void load(struct cread *op, chat_reply_cb cb)
{
    op->rd.load(op->ctx, op->caller, &op->rd, cb, op);
}

void chat_reply_flight(chat_reply_cb cb, void *arg, int status, chat_blob_t *val)
{
    if (status == CHAT_EOK) {
        chat_reply_shared(cb, arg, chat_blob_ref(val));
    } else {
        /* A flight carries the code only: every waiter, the leader's too, gets its default text. */
        chat_reply_err(cb, arg, (chat_err_t)status, NULL);
    }
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
    chat_blob_t *val;
    int ttl;
};

static void delayed_fill_closed_cb(uv_handle_t *h)
{
    struct delayed_fill *d = h->data;
    chat_blob_unref(d->val);
    free(d);
}

static void fill_now(chat_ctx_t *ctx, char *key_owned, const chat_blob_t *val, int ttl)
{
    chat_cache_fill(ctx->cache, key_owned, val->data, val->len, ttl, chat_fill_done_cb,
                    chat_fill_done_new(ctx->reads, key_owned));
}

static void delayed_fill_cb(uv_timer_t *t)
{
    struct delayed_fill *d = t->data;
    if (d->ctx->cache)
        fill_now(d->ctx, d->key, d->val, d->ttl);
    else
        free(d->key); /* shut down meanwhile: nothing to fill */
    uv_close((uv_handle_t *)&d->timer, delayed_fill_closed_cb);
}

/* Stores a flight's value under the versioned key it may fill (the key taken over). */
static void fill(chat_ctx_t *ctx, char *key, chat_blob_t *val, int ttl)
{
    if (ctx->fill_delay_ms > 0) {
        /* Fault injection for the freshness tests: a slow filler. */
        struct delayed_fill *d = chat_malloc(sizeof *d);
        d->ctx = ctx;
        d->key = key;
        d->val = chat_blob_ref(val);
        d->ttl = ttl;
        uv_timer_init(ctx->loop, &d->timer);
        d->timer.data = d;
        uv_timer_start(&d->timer, delayed_fill_cb, (uint64_t)ctx->fill_delay_ms, 0);
        return;
    }
    fill_now(ctx, key, val, ttl);
}

/* ---- coalescing: one load per flight, one membership check for its waiters ---- */

static void join(struct cread *op);

/* What the flight answered to a waiter that may see the data. */
static void answer_member(struct cread *op, int status)
{
    if (status == CHAT_ENOTFOUND && !op->leading && op->rd.conv_id) {
        /* The leader may not see the data, this caller may: a flight of its own. */
        op->proven = true;
        op->check = NULL;
        chat_blob_unref(op->hit);
        op->hit = NULL;
        join(op);
        return;
    }
    if (status == CHAT_EOK) {
        chat_blob_t *val = op->hit;
        op->hit = NULL;
        chat_reply_shared(op->cb, op->arg, val);
    } else {
        chat_reply_err(op->cb, op->arg, (chat_err_t)status, NULL);
    }
    cread_free(op);
}

/*
 * A waiter's answer. The leader gets what its own load said (its statement
 * checked its membership), a proven waiter the value; a waiter nothing
 * proved keeps the value until the flight's check says whether it may see it.
 */
static void waiter_cb(int status, chat_blob_t *val, void *arg)
{
    struct cread *op = arg;
    op->fl = NULL;
    op->hit = status == CHAT_EOK ? chat_blob_ref(val) : NULL;
    if (op->check) {
        op->flight_status = status;
        return; /* check_cb answers it */
    }
    if (!op->leading && !op->proven && (status == CHAT_EOK || status == CHAT_ENOTFOUND)) {
        /* Not expected (every such waiter is in its flight's check): its own statement decides. */
        chat_blob_unref(op->hit);
        op->rd.load(op->ctx, op->caller, &op->rd, op->cb, op->arg);
        op->hit = NULL;
        cread_free(op);
        return;
    }
    answer_member(op, status);
}

/*
 * The check answered: a member gets the flight's answer (and the proof is
 * remembered under the version its lookup read: the check ran after it), a
 * non-member 404, and every waiter the database error when it failed.
 */
static void check_cb(const chat_db_result_t *res, void *arg)
{
    struct check *ck = arg;
    for (size_t i = 0; i < ck->n; i++) {
        struct cread *op = ck->ops[i];
        bool member = false;
        if (res->status == CHAT_EOK) {
            const PGresult *pr = res->res[0];
            for (int row = 0; row < PQntuples(pr) && !member; row++)
                member = chat_pg_i64(pr, row, 0) == op->caller;
        }
        op->check = NULL;
        if (res->status != CHAT_EOK) {
            chat_reply_db_err(op->cb, op->arg, res);
            cread_free(op);
        } else if (!member) {
            chat_reply_err(op->cb, op->arg, CHAT_ENOTFOUND, "no such conversation");
            cread_free(op);
        } else {
            if (op->flight_status == CHAT_EOK && op->version)
                member_remember(op->ctx->members, op->rd.conv_id, op->caller, op->version);
            answer_member(op, op->flight_status);
        }
    }
    free(ck->ops);
    free(ck);
}

/* The waiters the flight must check: not proven, and not the leader. */
static void collect_unproven(void *arg, void *ud)
{
    struct cread *w = arg;
    struct check *ck = ud;
    if (w->leading || w->proven)
        return;
    ck->ops = chat_realloc(ck->ops, (ck->n + 1) * sizeof *ck->ops);
    ck->ops[ck->n++] = w;
    w->check = ck;
}

/*
 * The leader's value is in (its statement checked its own membership): the
 * waiters nothing proved yet are taken into one check, every waiter is
 * answered or handed to that check, the value is stored, and the check is
 * sent — after every waiter began, so it cannot miss a removal acknowledged
 * before a read began. A database error needs no check: every waiter gets it.
 */
static void leader_loaded_cb(chat_reply_t *r, void *arg)
{
    struct cread *op = arg;
    chat_ctx_t *ctx = op->ctx;
    struct check *ck = NULL;
    if (op->rd.conv_id && (r->err == CHAT_EOK || r->err == CHAT_ENOTFOUND)) {
        ck = chat_calloc(1, sizeof *ck);
        ck->ctx = ctx;
        ck->conv_id = op->rd.conv_id;
        chat_flight_each_waiter(op->fl, collect_unproven, ck);
    }
    const char *tag = chat_flight_tag(op->fl);
    char *key = tag && ctx->cache && r->err == CHAT_EOK ? chat_strdup(tag) : NULL;
    chat_blob_t *val = chat_reply_blob(r);
    int ttl = op->rd.ttl;
    if (r->err == CHAT_EOK && op->version && op->rd.conv_id)
        member_remember(ctx->members, op->rd.conv_id, op->caller, op->version);
    /*
     * Landing answers op too (and frees it): every waiter shares val. A value
     * with a key stays until its fill is acked.
     */
    chat_flight_land_at(ctx->reads, op->fl, r->err, val, key != NULL);
    if (key)
        fill(ctx, key, val, ttl);
    chat_blob_unref(val);
    if (ck && ck->n == 0) {
        free(ck);
    } else if (ck) {
        chat_buf_t ids = CHAT_BUF_INIT;
        chat_buf_putc(&ids, '{');
        for (size_t i = 0; i < ck->n; i++) {
            if (i)
                chat_buf_putc(&ids, ',');
            chat_buf_put_i64(&ids, ck->ops[i]->caller);
        }
        chat_buf_putc(&ids, '}');
        char a[24];
        const char *p[] = {chat_i64_str(a, ck->conv_id), ids.data};
        chat_db_stmt_t st = {"SELECT user_id FROM members WHERE conversation_id = $1 "
                             "AND user_id = ANY($2::bigint[])",
                             2, p};
        chat_db_exec(ctx->db, &st, 1, CHAT_DB_RETRY_SENT, check_cb, ck);
        chat_buf_dispose(&ids);
    }
}

struct same_key {
    const char *key;
    bool all;
};

static void same_key_cb(void *arg, void *ud)
{
    const struct cread *w = arg;
    struct same_key *sk = ud;
    if (!w->fill_key || strcmp(w->fill_key, sk->key) != 0)
        sk->all = false;
}

/*
 * The WAL position a replica must have replayed for this load, or 0 for the
 * primary (docs/architecture.md, "Read replicas"). A load may go to a
 * replica only when it answers reads that all looked up the same versioned
 * key (whose version and epoch record the position of every write
 * acknowledged before they were read), and the flight is then closed to
 * reads that would join it by time alone (they may need writes after it).
 */
static uint64_t replica_lsn(struct cread *op)
{
    if (!op->ctx->replicas || !op->fill_key || !op->fl)
        return 0;
    const char *tag = chat_flight_tag(op->fl);
    if (!tag || strcmp(tag, op->fill_key) != 0)
        return 0;
    uint64_t lsn = chat_cache_key_lsn(op->fill_key);
    if (!lsn)
        return 0;
    struct same_key sk = {op->fill_key, true};
    chat_flight_each_waiter(op->fl, same_key_cb, &sk);
    if (!sk.all)
        return 0;
    chat_flight_restrict(op->fl);
    return lsn;
}

void chat_read_exec(chat_ctx_t *ctx, const chat_read_t *rd, const chat_db_stmt_t *stmts, int n,
                    chat_db_cb cb, void *arg)
{
    chat_db_replicas_exec(ctx->replicas, ctx->db, rd->need_lsn, stmts, n, cb, arg);
}

/* The flight's turn: op loads the value as itself. */
static void lead(struct cread *op)
{
    op->leading = true;
    op->rd.need_lsn = replica_lsn(op);
    load(op, leader_loaded_cb);
}

static void wait_closed_cb(uv_handle_t *h)
{
    free(h->data);
}

static void wait_end(struct cread *op)
{
    struct wait *w = op->wait;
    if (!w)
        return;
    op->wait = NULL;
    w->op = NULL;
    uv_timer_stop(&w->timer);
    uv_close((uv_handle_t *)&w->timer, wait_closed_cb);
}

static void wait_expired_cb(uv_timer_t *t)
{
    struct wait *w = t->data;
    struct cread *op = w->op;
    if (!op)
        return;
    wait_end(op);
    /* Not started: every read it gathered (op too) gets the pool's answer to a long wait. */
    chat_flight_land_at(op->ctx->reads, op->fl, CHAT_ETIMEDOUT, NULL, 0);
}

static void start_cb(chat_flight_t *fl, void *arg)
{
    struct cread *op = arg;
    wait_end(op);
    op->fl = fl;
    lead(op);
}

/*
 * Joins the flight of the read's value (rd.prefix): the one loading now when
 * it read the same version, or when it began before that load did; else the
 * next flight of the key, whose load begins after it. A proven read may also
 * take a value that landed under its version at once.
 */
static void join(struct cread *op)
{
    chat_flight_t *fl = NULL;
    int role = chat_flight_join_at(op->ctx->reads, op->rd.prefix, op->fill_key, op->since,
                                   op->proven, waiter_cb, op, start_cb, &fl);
    if (role == CHAT_FLIGHT_LEADER) {
        op->fl = fl;
        lead(op);
    } else if (role == CHAT_FLIGHT_QUEUED) {
        op->fl = fl;
        if (op->ctx->read_wait_ms > 0) {
            struct wait *w = chat_malloc(sizeof *w);
            w->op = op;
            uv_timer_init(op->ctx->loop, &w->timer);
            w->timer.data = w;
            uv_timer_start(&w->timer, wait_expired_cb, (uint64_t)op->ctx->read_wait_ms, 0);
            op->wait = w;
        }
    }
}

/* ---- through the cache ---- */

/* The caller may see the data: answer the hit. */
static void answer_hit(struct cread *op)
{
    chat_blob_t *val = op->hit;
    op->hit = NULL;
    chat_reply_shared(op->cb, op->arg, val);
    cread_free(op);
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
        answer_hit(op);
    }
}

static void lookup_cb(const chat_cache_lookup_t *l, void *arg)
{
    struct cread *op = arg;
    if (l->status != CHAT_CACHE_HIT && l->status != CHAT_CACHE_MISS) {
        /* Redis failed or was late: the database, coalesced by time alone. */
        join(op);
        return;
    }
    if (l->status == CHAT_CACHE_HIT) {
        op->hit = chat_blob_copy(l->value, l->len);
    } else {
        op->fill_key = chat_strdup(l->key);
    }
    if (op->rd.conv_id) {
        /*
         * The epoch and membership version read in the same round trip (or,
         * without those, the epoch and version the key ends with).
         */
        size_t plen = strlen(op->rd.prefix);
        if (l->guard)
            op->version = chat_hash_str(l->guard);
        else
            op->version = l->key && strlen(l->key) > plen ? chat_hash_str(l->key + plen) : 0;
        op->proven =
            op->version && member_known(op->ctx->members, op->rd.conv_id, op->caller, op->version);
    }
    if (!op->hit) {
        /* A miss: the flight of the key checks the caller if nothing proved it yet. */
        join(op);
        return;
    }
    if (op->proven) {
        answer_hit(op);
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

void chat_read(chat_ctx_t *ctx, int64_t caller, const chat_read_t *rd, chat_reply_cb cb, void *arg)
{
    struct cread *op = chat_calloc(1, sizeof *op);
    op->ctx = ctx;
    op->caller = caller;
    op->rd = *rd;
    op->cb = cb;
    op->arg = arg;
    op->since = uv_hrtime();
    op->proven = rd->conv_id == 0; /* nothing to prove */
    /* Without a usable cache: the database, coalesced by time alone. */
    if (!ctx->cache ||
        chat_cache_lookup(ctx->cache, rd->kind, rd->prefix, rd->conv_id, lookup_cb, op) < 0)
        join(op);
}

void chat_after_write(chat_ctx_t *ctx, int64_t conv, uint64_t lsn, void (*done)(void *arg),
                      void *arg)
{
    if (!ctx->cache) {
        done(arg);
        return;
    }
    chat_cache_invalidate_conv_lsn(ctx->cache, conv, lsn, done, arg);
}

void chat_after_write_rev(chat_ctx_t *ctx, int64_t conv, int64_t rev, uint64_t lsn,
                          const chat_cache_put_t *puts, size_t n, void (*done)(void *arg),
                          void *arg)
{
    if (!ctx->cache) {
        done(arg);
        return;
    }
    chat_cache_invalidate_conv_rev_lsn(ctx->cache, conv, rev, lsn, puts, n, done, arg);
}

void chat_after_write_users(chat_ctx_t *ctx, int64_t conv, const int64_t *users, size_t n,
                            uint64_t lsn, void (*done)(void *arg), void *arg)
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
        chat_keys_conv_version(keys[k++], conv);
        chat_keys_members_version(keys[k++], conv);
    }
    for (size_t i = 0; i < n; i++)
        chat_keys_user_version(keys[k++], users[i]);
    for (size_t i = 0; i < nkeys; i++)
        argv[i] = keys[i];
    chat_cache_invalidate_keys_lsn(ctx->cache, argv, nkeys, lsn, done, arg);
    free(argv);
    free(keys);
}
