/*
 * The inbox and read markers. The inbox is the caller's conversations, most
 * recently active first, each with its newest message, unread count and
 * marker: one statement over members_user_id and the conversation rows,
 * with the newest message found by messages_conversation_seq and unread
 * counts from last_seq minus the marker minus the tombstones above it
 * (messages_deleted_seq) — no conversation's messages are scanned. Pages
 * are keyset pages on (activity, id), the cursor opaque.
 *
 * Cached per user (docs/cache.md): a page is stored with the versions of
 * every conversation of the user it was built under, read before the
 * database; a lookup checks them all in the same Redis round trip, so a
 * send, edit or delete anywhere, which moves its conversation's version,
 * costs no write per member. The user's own version (read markers,
 * memberships) is part of the key.
 */
#include "chat/internal.h"
#include "chat/keys.h"
#include "cache/cache.h"
#include "core/alloc.h"
#include "core/base64.h"
#include "db/replica.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

/*
 * Above this many conversations an inbox page is not stored: every lookup
 * would check as many versions in Redis. Served from the database.
 */
#define INBOX_DEPS_MAX 1000

/* Activity: the newest message's time, or the creation time while none, in microseconds. */
#define ACTIVITY "(extract(epoch FROM COALESCE(c.last_message_at, c.created_at)) * 1000000)::bigint"

/* ---- the cursor: base64url of the last entry's activity and id, 8 bytes each ---- */

#define CURSOR_BYTES 16

static void put_be64(unsigned char *p, int64_t v)
{
    for (int i = 7; i >= 0; i--, v = (int64_t)((uint64_t)v >> 8))
        p[i] = (unsigned char)(v & 0xff);
}

static int64_t get_be64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return (int64_t)v;
}

static void cursor_encode(char out[CHAT_KEYS_CURSOR_MAX], int64_t act, int64_t id)
{
    unsigned char raw[CURSOR_BYTES];
    put_be64(raw, act);
    put_be64(raw + 8, id);
    chat_base64_encode(out, raw, sizeof raw, CHAT_BASE64_URL);
}

static int cursor_decode(const char *text, int64_t *act, int64_t *id)
{
    unsigned char raw[CHAT_KEYS_CURSOR_MAX];
    size_t len = strlen(text);
    if (len >= CHAT_KEYS_CURSOR_MAX ||
        chat_base64_decode(raw, text, len, CHAT_BASE64_URL) != CURSOR_BYTES)
        return -1;
    *act = get_be64(raw);
    *id = get_be64(raw + 8);
    return *act >= 0 && *id > 0 ? 0 : -1;
}

/* ---- one inbox read ---- */

struct inbox_op {
    chat_ctx_t *ctx;
    int64_t caller;
    int limit;
    int has_cursor;
    int64_t cur_act, cur_id;
    char *fill_key; /* a miss: the key to fill */
    int64_t *ids;   /* the leader of a miss: the user's conversations */
    size_t nids;
    char **tokens;     /* and their versions, read before the page */
    uint64_t need_lsn; /* a replica may answer the next statement from here (0: the primary) */
    uint64_t since;    /* uv_hrtime() when the read began */
    chat_reply_cb cb;  /* the page loaded: to the caller, or to the flight */
    void *arg;
    chat_reply_cb final_cb; /* the caller's */
    void *final_arg;
};

static void op_free(struct inbox_op *op)
{
    if (op->tokens)
        for (size_t i = 0; i < op->nids; i++)
            free(op->tokens[i]);
    free(op->tokens);
    free(op->ids);
    free(op->fill_key);
    free(op);
}

static void page_cb(const chat_db_result_t *r, void *arg)
{
    struct inbox_op *op = arg;
    if (r->status != CHAT_EOK) {
        chat_reply_db_err(op->cb, op->arg, r);
        return;
    }
    const PGresult *res = r->res[0];
    int n = PQntuples(res);
    int shown = n > op->limit ? op->limit : n;
    chat_buf_t b = CHAT_BUF_INIT;
    chat_buf_reserve(&b, 64 + (size_t)shown * 600);
    chat_buf_puts(&b, "{\"conversations\":[");
    const int c_read = CONV_NCOLUMNS, c_rev = c_read + 1, c_act = c_rev + 1, c_unread = c_act + 1,
              c_msg = c_unread + 1;
    for (int i = 0; i < shown; i++) {
        if (i)
            chat_buf_putc(&b, ',');
        chat_buf_puts(&b, "{\"conversation\":");
        chat_encode_conv(&b, res, i, 0);
        chat_buf_puts(&b, ",\"last_message\":");
        if (PQgetisnull(res, i, c_msg))
            chat_buf_puts(&b, "null");
        else
            chat_encode_message(&b, res, i, c_msg);
        chat_buf_puts(&b, ",\"unread_count\":");
        chat_buf_puts(&b, PQgetvalue(res, i, c_unread));
        chat_buf_puts(&b, ",\"last_read_seq\":");
        chat_buf_puts(&b, PQgetvalue(res, i, c_read));
        chat_buf_puts(&b, ",\"rev\":");
        chat_buf_puts(&b, PQgetvalue(res, i, c_rev));
        chat_buf_putc(&b, '}');
    }
    chat_buf_puts(&b, "],\"next_cursor\":");
    if (n > op->limit) {
        /* One row past the page came: the page's last entry is where the next starts. */
        char cur[CHAT_KEYS_CURSOR_MAX];
        cursor_encode(cur, chat_pg_i64(res, shown - 1, c_act), chat_pg_i64(res, shown - 1, 0));
        chat_buf_putc(&b, '"');
        chat_buf_puts(&b, cur);
        chat_buf_putc(&b, '"');
    } else {
        chat_buf_puts(&b, "null");
    }
    chat_buf_putc(&b, '}');
    chat_reply_ok(op->cb, op->arg, CHAT_REPLY_OK, &b);
}

/* Reads the page from the database; op->cb gets it. */
static void page_db(struct inbox_op *op)
{
    char a[24], b[24], c[24], d[24];
    const char *params[] = {chat_i64_str(a, op->caller), chat_i64_str(b, op->limit + 1),
                            op->has_cursor ? chat_i64_str(c, op->cur_act) : NULL,
                            op->has_cursor ? chat_i64_str(d, op->cur_id) : NULL};
    /*
     * The caller's conversations (members_user_id, then each conversation
     * row by its key) below the cursor in (activity, id) order, one past the
     * page; then for those only: the newest message (messages_conversation_seq)
     * and the tombstones above the marker (messages_deleted_seq). One
     * statement, one snapshot.
     */
    chat_db_stmt_t st = {
        "SELECT " CONV_COLUMNS ", c.last_read_seq, c.rev, c.act, "
        "  c.last_seq - c.last_read_seq - (SELECT count(*) FROM messages d "
        "    WHERE d.conversation_id = c.id AND d.deleted AND d.seq > c.last_read_seq), "
        "  " CHAT_MSG_COLUMNS(
            "lm.") " "
                   "FROM (SELECT c.*, m.last_read_seq, " ACTIVITY " AS act "
                   "  FROM members m JOIN conversations c ON c.id = m.conversation_id "
                   "  WHERE m.user_id = $1 AND ($3::bigint IS NULL OR (" ACTIVITY
                   ", c.id) < ($3::bigint, "
                   "  $4::bigint)) ORDER BY act DESC, id DESC LIMIT $2::int) c "
                   "LEFT JOIN messages lm ON lm.conversation_id = c.id AND lm.seq = c.last_seq "
                   "ORDER BY c.act DESC, c.id DESC",
        4, params};
    chat_db_replicas_exec(op->ctx->replicas, op->ctx->db, op->need_lsn, &st, 1, page_cb, op);
}

/* ---- without the cache ---- */

static void direct_cb(chat_reply_t *r, void *arg)
{
    struct inbox_op *op = arg;
    op->final_cb(r, op->final_arg);
    op_free(op);
}

static void load_direct(struct inbox_op *op)
{
    op->need_lsn = 0; /* nothing says what the page needs: the primary */
    op->cb = direct_cb;
    op->arg = op;
    page_db(op);
}

/* ---- through the cache: a flight per key, the leader loads ---- */

static void flight_answer_cb(int status, chat_blob_t *val, void *arg)
{
    struct inbox_op *op = arg;
    chat_reply_flight(op->final_cb, op->final_arg, status, val);
    op_free(op);
}

/* The leader's page: answer every waiter (op too), then store it with its versions. */
static void leader_loaded_cb(chat_reply_t *r, void *arg)
{
    struct inbox_op *op = arg;
    chat_ctx_t *ctx = op->ctx;
    chat_flights_t *flights = chat_cache_flights(ctx->cache);
    if (r->err != CHAT_EOK || !op->tokens) {
        /* An error, or versions that could not be read: answer, store nothing. */
        chat_blob_t *val = chat_reply_blob(r);
        chat_flight_land(flights, op->fill_key, r->err, val, 0);
        chat_blob_unref(val);
        return; /* op was a waiter of its own flight: freed by flight_answer_cb */
    }
    char *key = chat_strdup(op->fill_key);
    size_t n = op->nids;
    int64_t *ids = op->ids;
    char **tokens = op->tokens;
    op->ids = NULL;
    op->tokens = NULL;
    chat_blob_t *val = chat_reply_blob(r);
    chat_flight_land(flights, key, CHAT_EOK, val, 1); /* frees op */
    chat_cache_fill_deps(ctx->cache, key, ids, (const char *const *)tokens, n, val->data, val->len,
                         chat_keys_ttl(CHAT_KEYS_INBOX, 0, 0), chat_fill_done_cb,
                         chat_fill_done_new(flights, key));
    for (size_t i = 0; i < n; i++)
        free(tokens[i]);
    free(tokens);
    free(ids);
    chat_blob_unref(val);
}

static void versions_cb(int status, const char *const *tokens, void *arg)
{
    struct inbox_op *op = arg;
    if (status == CHAT_EOK) {
        op->tokens = chat_calloc(op->nids ? op->nids : 1, sizeof *op->tokens);
        for (size_t i = 0; i < op->nids; i++)
            op->tokens[i] = chat_strdup(tokens[i]);
        /*
         * The page shows every conversation's data: a replica must have
         * replayed the position of each version (and of the user's and the
         * epoch's, read in the lookup); one without a position: the primary.
         */
        for (size_t i = 0; i < op->nids && op->need_lsn; i++) {
            uint64_t t = chat_cache_token_lsn(tokens[i]);
            op->need_lsn = t > op->need_lsn ? t : t ? op->need_lsn : 0;
        }
    } else {
        op->need_lsn = 0;
    }
    op->cb = leader_loaded_cb;
    op->arg = op;
    page_db(op);
}

static void ids_cb(const chat_db_result_t *r, void *arg)
{
    struct inbox_op *op = arg;
    if (r->status != CHAT_EOK) {
        chat_reply_db_err(leader_loaded_cb, op, r);
        return;
    }
    op->ids = chat_i64_list_parse(chat_pg_str(r->res[0], 0, 0), &op->nids);
    if (op->nids > INBOX_DEPS_MAX) {
        op->need_lsn = 0;
        op->cb = leader_loaded_cb; /* no tokens: answered, not stored */
        op->arg = op;
        page_db(op);
        return;
    }
    /*
     * The versions are read after the conversation list and before the
     * page: a write committed after the page's snapshot moves a version
     * read here, so the stored page is never taken for fresh after it. A
     * conversation joined or left after the list moved the user's version,
     * which the key was read under.
     */
    chat_cache_versions(op->ctx->cache, op->ids, op->nids, versions_cb, op);
}

static void lead(struct inbox_op *op)
{
    char a[24];
    const char *params[] = {chat_i64_str(a, op->caller)};
    chat_db_stmt_t st = {"SELECT array_agg(conversation_id ORDER BY conversation_id) "
                         "FROM members WHERE user_id = $1",
                         1, params};
    /* the user's conversations: the user's version (and the epoch) record what they need */
    op->need_lsn = op->ctx->replicas ? chat_cache_key_lsn(op->fill_key) : 0;
    chat_db_replicas_exec(op->ctx->replicas, op->ctx->db, op->need_lsn, &st, 1, ids_cb, op);
}

/* The load before this one landed: op leads the next. */
static void start_cb(chat_flight_t *fl, void *arg)
{
    (void)fl;
    lead(arg);
}

static void lookup_cb(const chat_cache_lookup_t *l, void *arg)
{
    struct inbox_op *op = arg;
    if (l->status == CHAT_CACHE_HIT) {
        chat_reply_t r = {
            .kind = CHAT_REPLY_OK, .body = chat_strndup(l->value, l->len), .body_len = l->len};
        op->final_cb(&r, op->final_arg);
        op_free(op);
        return;
    }
    if (l->status != CHAT_CACHE_MISS) {
        load_direct(op);
        return;
    }
    op->fill_key = chat_strdup(l->key);
    chat_flights_t *flights = chat_cache_flights(op->ctx->cache);
    /*
     * A page also shows its conversations' last messages and counts, which
     * its key does not name: the same key is not the same data. So a miss
     * joins only a load that began after this read did (it cannot miss a
     * write acknowledged before the read), and waits for the next load
     * otherwise — never a load of the same key that began earlier.
     */
    int role = chat_flight_join_at(flights, op->fill_key, NULL, op->since, false, flight_answer_cb,
                                   op, start_cb, NULL);
    if (role == CHAT_FLIGHT_LEADER)
        lead(op);
}

void chat_inbox_list(chat_ctx_t *ctx, int64_t caller, int limit, const char *cursor,
                     chat_reply_cb cb, void *arg)
{
    struct inbox_op *op = chat_calloc(1, sizeof *op);
    op->ctx = ctx;
    op->caller = caller;
    op->limit = limit;
    op->final_cb = cb;
    op->final_arg = arg;
    op->since = uv_hrtime();
    char canon[CHAT_KEYS_CURSOR_MAX] = "";
    if (cursor) {
        if (cursor_decode(cursor, &op->cur_act, &op->cur_id) < 0) {
            chat_reply_err(cb, arg, CHAT_EBADREQUEST, "cursor is not a cursor of this inbox");
            op_free(op);
            return;
        }
        op->has_cursor = 1;
        cursor_encode(canon, op->cur_act, op->cur_id);
    }
    if (!ctx->cache) {
        load_direct(op);
        return;
    }
    char prefix[CHAT_KEYS_MAX], vkey[CHAT_KEYS_MAX];
    chat_keys_inbox(prefix, caller, limit, canon);
    chat_keys_user_version(vkey, caller);
    if (chat_cache_lookup_deps(ctx->cache, CHAT_KEYS_INBOX, prefix, vkey, lookup_cb, op) < 0)
        load_direct(op);
}

/* ---- read markers ---- */

struct mark_op {
    chat_ctx_t *ctx;
    int64_t caller, conv, seq;
    int moved;
    chat_reply_cb cb;
    void *arg;
};

static void mark_done(void *arg)
{
    struct mark_op *op = arg;
    if (op->moved)
        chat_push_conv_frame(op->ctx, op->caller, CHAT_RT_USER, op->conv, op->seq, true);
    chat_reply_ok(op->cb, op->arg, CHAT_REPLY_NO_CONTENT, NULL);
    free(op);
}

static void mark_cb(const chat_db_result_t *r, void *arg)
{
    struct mark_op *op = arg;
    if (r->status != CHAT_EOK) {
        chat_reply_db_err(op->cb, op->arg, r);
    } else if (chat_pg_i64(r->res[0], 0, 0) == 0) {
        chat_reply_err(op->cb, op->arg, CHAT_ENOTFOUND, "no such conversation");
    } else if (op->seq > chat_pg_i64(r->res[0], 0, 1)) {
        chat_reply_err(op->cb, op->arg, CHAT_EINVALID,
                       "seq is above the conversation's last message");
    } else {
        /*
         * Only the caller's inbox shows the marker: their version moves. A
         * marker that did not move moves it too: this may be the retry of an
         * attempt that died between its commit and its invalidation.
         */
        op->moved = chat_pg_i64(r->res[0], 0, 2) > 0;
        chat_after_write_users(op->ctx, 0, &op->caller, 1, r->lsn, mark_done, op);
        return;
    }
    free(op);
}

void chat_conv_mark_read(chat_ctx_t *ctx, int64_t caller, int64_t conv_id, int64_t seq,
                         chat_reply_cb cb, void *arg)
{
    struct mark_op *op = chat_calloc(1, sizeof *op);
    op->ctx = ctx;
    op->caller = caller;
    op->conv = conv_id;
    op->seq = seq;
    op->cb = cb;
    op->arg = arg;
    char a[24], b[24], c[24];
    const char *params[] = {chat_i64_str(a, conv_id), chat_i64_str(b, caller),
                            chat_i64_str(c, seq)};
    /*
     * Whether the caller is a member, the conversation's last seq, and the
     * marker moved only forward and never past last_seq. The UPDATE
     * rechecks last_read_seq < $3 on the newest row version, so concurrent
     * markers (and sends, which move the sender's) never move it back.
     */
    chat_db_stmt_t st = {
        "WITH me AS (SELECT c.last_seq FROM conversations c JOIN members m "
        "  ON m.conversation_id = c.id AND m.user_id = $2 WHERE c.id = $1), "
        "upd AS (UPDATE members SET last_read_seq = $3::bigint "
        "  WHERE conversation_id = $1 AND user_id = $2 AND last_read_seq < $3::bigint "
        "  AND $3::bigint <= (SELECT last_seq FROM me) RETURNING 1) "
        "SELECT (SELECT count(*) FROM me), (SELECT last_seq FROM me), (SELECT count(*) FROM upd)",
        3, params};
    chat_db_exec_lsn(ctx->db, &st, 1, CHAT_DB_RETRY_SENT, mark_cb, op);
}
