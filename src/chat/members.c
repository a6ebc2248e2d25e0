/*
 * The members of a conversation: the list, in user id order along the
 * members primary key and cached under the conversation's version, and
 * removal (a member leaving, or the creator removing someone). A removal
 * moves the conversation's version and the removed user's, so the user's
 * proofs of membership (read.c) and every cached page showing them end on
 * every instance before the removal is acknowledged.
 */
#include "chat/internal.h"
#include "chat/keys.h"
#include "core/alloc.h"
#include "core/json.h"

#include <stdlib.h>
#include <string.h>

struct members_op {
    chat_reply_cb cb;
    void *arg;
    chat_ctx_t *ctx;
    int64_t conv, caller, user;
    int limit;
    int removed; /* remove: the user was a member and is no longer */
};

static struct members_op *op_new(chat_ctx_t *ctx, chat_reply_cb cb, void *arg)
{
    struct members_op *op = chat_calloc(1, sizeof *op);
    op->ctx = ctx;
    op->cb = cb;
    op->arg = arg;
    return op;
}

/* ---- the list ---- */

static void list_cb(const chat_db_result_t *r, void *arg)
{
    struct members_op *op = arg;
    if (!chat_db_found(r, op->cb, op->arg, "no such conversation")) {
        free(op);
        return;
    }
    const PGresult *res = r->res[0];
    int n = PQntuples(res);
    chat_buf_t b = CHAT_BUF_INIT;
    chat_buf_reserve(&b, 64 + (size_t)n * 80);
    chat_buf_puts(&b, "{\"conversation_id\":");
    chat_buf_put_i64(&b, op->conv);
    chat_buf_puts(&b, ",\"members\":[");
    int shown = 0;
    const char *last = NULL;
    for (int i = 0; i < n && shown < op->limit; i++) {
        if (PQgetisnull(res, i, 0)) /* a member of an empty page: the one all-NULL row */
            continue;
        if (shown++)
            chat_buf_putc(&b, ',');
        last = PQgetvalue(res, i, 0);
        chat_buf_puts(&b, "{\"id\":");
        chat_buf_puts(&b, last);
        chat_buf_puts(&b, ",\"name\":");
        chat_json_put_str(&b, PQgetvalue(res, i, 1), (size_t)PQgetlength(res, i, 1));
        chat_buf_puts(&b, ",\"created_at\":\"");
        chat_buf_puts(&b, PQgetvalue(res, i, 2));
        chat_buf_puts(&b, "\"}");
    }
    /* The statement reads one row past the page: there is a next page when it came. */
    chat_buf_puts(&b, "],\"next_after_id\":");
    if (n > op->limit && last)
        chat_buf_puts(&b, last);
    else
        chat_buf_puts(&b, "null");
    chat_buf_putc(&b, '}');
    chat_reply_ok(op->cb, op->arg, CHAT_REPLY_OK, &b);
    free(op);
}

static void list_db(chat_ctx_t *ctx, int64_t caller, const chat_read_t *rd, chat_reply_cb cb,
                    void *arg)
{
    struct members_op *op = op_new(ctx, cb, arg);
    op->conv = rd->conv_id;
    op->limit = rd->limit;
    char a[24], b[24], c[24], d[24];
    const char *params[] = {chat_i64_str(a, rd->conv_id), chat_i64_str(b, caller),
                            chat_i64_str(c, rd->after_id), chat_i64_str(d, rd->limit + 1)};
    /*
     * The caller's membership row drives the page, as for history: no row
     * for a non-member, one all-NULL row for a member of an empty page, else
     * limit + 1 members read forward along the members primary key
     * (conversation_id, user_id) from after_id.
     */
    chat_db_stmt_t st = {
        "SELECT p.id, p.name, " CHAT_SQL_TS(
            "p.created_at") " FROM members me LEFT JOIN LATERAL ("
                            "  SELECT u.id, u.name, u.created_at FROM members m JOIN users u ON "
                            "u.id = m.user_id "
                            "  WHERE m.conversation_id = $1 AND m.user_id > $3::bigint "
                            "  ORDER BY m.user_id LIMIT $4::int) p ON true "
                            "WHERE me.conversation_id = $1 AND me.user_id = $2 ORDER BY p.id",
        4, params};
    chat_read_exec(ctx, rd, &st, 1, list_cb, op);
}

void chat_conv_members(chat_ctx_t *ctx, int64_t caller, int64_t conv_id, int64_t after_id,
                       int limit, chat_reply_cb cb, void *arg)
{
    chat_read_t rd = {
        .kind = CHAT_KEYS_MEMBERS,
        .conv_id = conv_id,
        .ttl = chat_keys_ttl(CHAT_KEYS_MEMBERS, 0, 0),
        .load = list_db,
        .after_id = after_id,
        .limit = limit,
    };
    chat_keys_members(rd.prefix, conv_id, after_id, limit);
    chat_read(ctx, caller, &rd, cb, arg);
}

/* ---- removal ---- */

static void removed_done(void *arg)
{
    struct members_op *op = arg;
    if (op->removed)
        chat_push_conv_frame(op->ctx, op->user, CHAT_RT_REMOVED, op->conv, 0,
                             op->user != op->caller);
    chat_reply_ok(op->cb, op->arg, CHAT_REPLY_NO_CONTENT, NULL);
    free(op);
}

static void remove_cb(const chat_db_result_t *r, void *arg)
{
    struct members_op *op = arg;
    if (r->status != CHAT_EOK) {
        chat_reply_db_err(op->cb, op->arg, r);
    } else if (chat_pg_i64(r->res[0], 0, 0) == 0) {
        chat_reply_err(op->cb, op->arg, CHAT_ENOTFOUND, "no such conversation");
    } else if (chat_pg_i64(r->res[0], 0, 1) == 0) {
        chat_reply_err(op->cb, op->arg, CHAT_EFORBIDDEN,
                       "only the creator may remove another member");
    } else {
        /*
         * The conversation's version (metadata, members, history... and the
         * proofs of membership) and the removed user's (their inbox) move
         * before the answer. A no-op moves them too: it may be the retry of
         * an attempt that died between its commit and its invalidation.
         */
        op->removed = chat_pg_i64(r->res[0], 0, 2) > 0;
        chat_after_write_users(op->ctx, op->conv, &op->user, 1, r->lsn, removed_done, op);
        return;
    }
    free(op);
}

void chat_conv_remove_member(chat_ctx_t *ctx, int64_t caller, int64_t conv_id, int64_t user_id,
                             chat_reply_cb cb, void *arg)
{
    struct members_op *op = op_new(ctx, cb, arg);
    op->conv = conv_id;
    op->caller = caller;
    op->user = user_id;
    char a[24], b[24], c[24];
    const char *params[] = {chat_i64_str(a, conv_id), chat_i64_str(b, caller),
                            chat_i64_str(c, user_id)};
    /*
     * One statement: whether the caller is a member, whether the removal is
     * theirs to make (themselves, or they created the conversation), and the
     * removal with member_count kept. Removing a non-member deletes nothing
     * and counts nothing, so the statement is safe to send again.
     */
    chat_db_stmt_t st = {
        "WITH me AS (SELECT c.created_by FROM conversations c JOIN members m "
        "  ON m.conversation_id = c.id AND m.user_id = $2 WHERE c.id = $1), "
        "allowed AS (SELECT 1 FROM me WHERE $3::bigint = $2::bigint OR me.created_by = $2), "
        "del AS (DELETE FROM members WHERE conversation_id = $1 AND user_id = $3 "
        "  AND EXISTS (SELECT 1 FROM allowed) RETURNING 1), "
        "upd AS (UPDATE conversations SET member_count = member_count - 1 "
        "  WHERE id = $1 AND EXISTS (SELECT 1 FROM del) RETURNING 1) "
        "SELECT (SELECT count(*) FROM me), (SELECT count(*) FROM allowed), "
        "(SELECT count(*) FROM upd)",
        3, params};
    chat_db_exec_lsn(ctx->db, &st, 1, CHAT_DB_RETRY_SENT, remove_cb, op);
}
