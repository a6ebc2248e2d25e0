/*
 * Conversations and their members. Every read checks membership in the same
 * statement, and a non-member is told exactly what a request for a missing
 * conversation is told.
 */
#include "chat/internal.h"
#include "chat/keys.h"
#include "core/alloc.h"
#include "core/json.h"
#include "realtime/stream.h"

#include <stdlib.h>
#include <string.h>

struct conv_op {
    chat_reply_cb cb;
    void *arg;
    chat_ctx_t *ctx;
    int64_t conv;
    int64_t caller;
    int64_t user;               /* add: the member added */
    int added;                  /* add: the user was not a member before */
    int64_t rev;                /* add: the conversation's rev when they joined */
    char op_id[CHAT_OP_ID_LEN]; /* create only */
    int64_t *members;           /* create: the members (the caller first), owned */
    size_t nmembers;
    chat_buf_t body; /* create: the answer */
    uint64_t lsn;    /* writes: the WAL position after the commit */
};

static struct conv_op *op_new(chat_reply_cb cb, void *arg)
{
    struct conv_op *op = chat_calloc(1, sizeof *op);
    op->cb = cb;
    op->arg = arg;
    return op;
}

static void op_free(struct conv_op *op)
{
    free(op->members);
    chat_buf_dispose(&op->body);
    free(op);
}

void chat_encode_conv(chat_buf_t *b, const PGresult *res, int row, int col)
{
    chat_buf_puts(b, "{\"id\":");
    chat_buf_puts(b, PQgetvalue(res, row, col));
    chat_buf_puts(b, ",\"title\":");
    chat_json_put_str(b, PQgetvalue(res, row, col + 1), (size_t)PQgetlength(res, row, col + 1));
    chat_buf_puts(b, ",\"created_by\":");
    chat_buf_puts(b, PQgetvalue(res, row, col + 2));
    chat_buf_puts(b, ",\"created_at\":\"");
    chat_buf_puts(b, PQgetvalue(res, row, col + 3));
    chat_buf_puts(b, "\",\"member_count\":");
    chat_buf_puts(b, PQgetvalue(res, row, col + 4));
    chat_buf_puts(b, ",\"last_message_at\":");
    const char *last = chat_pg_str(res, row, col + 5);
    if (last) {
        chat_buf_putc(b, '"');
        chat_buf_puts(b, last);
        chat_buf_putc(b, '"');
    } else {
        chat_buf_puts(b, "null");
    }
    chat_buf_putc(b, '}');
}

void chat_push_conv_frame(chat_ctx_t *ctx, int64_t user, int kind, int64_t conv, int64_t seq_or_rev,
                          bool frame)
{
    if (!ctx->stream)
        return;
    chat_buf_t f = CHAT_BUF_INIT;
    chat_rt_msg_t m = {.kind = kind, .id = user, .a = conv};
    if (kind == CHAT_RT_USER) {
        chat_buf_printf(&f, "{\"type\":\"read\",\"conversation_id\":%lld,\"seq\":%lld}",
                        (long long)conv, (long long)seq_or_rev);
    } else {
        if (kind == CHAT_RT_ADDED)
            m.b = seq_or_rev;
        if (frame)
            chat_buf_printf(&f, "{\"type\":\"%s\",\"conversation_id\":%lld}",
                            kind == CHAT_RT_ADDED ? "added" : "removed", (long long)conv);
    }
    m.frame = f.data ? f.data : "";
    m.len = f.len;
    chat_stream_publish(ctx->stream, &m);
    chat_buf_dispose(&f);
}

/*
 * A new conversation is answered once every member's inbox version and its
 * own versions have moved (one Redis command): their cached inboxes do not
 * list it yet.
 */
static void created_done(void *arg)
{
    struct conv_op *op = arg;
    /* every member's sockets follow it from rev 0; the creator's get no frame */
    for (size_t i = 0; i < op->nmembers; i++)
        chat_push_conv_frame(op->ctx, op->members[i], CHAT_RT_ADDED, op->conv, 0,
                             op->members[i] != op->caller);
    chat_reply_ok(op->cb, op->arg, CHAT_REPLY_CREATED, &op->body);
    op_free(op);
}

static void created_reply(struct conv_op *op, const PGresult *res, int col)
{
    op->conv = chat_pg_i64(res, 0, col);
    chat_encode_conv(&op->body, res, 0, col);
    /*
     * The new conversation's own versions move too: a reader may have looked
     * its id up before it existed (ids are sequential) and been told "not a
     * member" under the versions of then (read.c).
     */
    chat_after_write_users(op->ctx, op->conv, op->members, op->nmembers, op->lsn, created_done, op);
}

static void created_cb(const chat_db_result_t *r, void *arg)
{
    struct conv_op *op = arg;
    if (r->status != CHAT_EOK)
        chat_reply_db_err(op->cb, op->arg, r);
    else if (PQntuples(r->res[0]) == 0)
        /* The row that made our insert a no-op is committed, so this cannot happen. */
        chat_reply_err(op->cb, op->arg, CHAT_EUNAVAILABLE, "the conversation could not be stored");
    else {
        op->lsn = r->lsn;
        created_reply(op, r->res[0], 0);
        return;
    }
    op_free(op);
}

static void create_cb(const chat_db_result_t *r, void *arg)
{
    struct conv_op *op = arg;
    if (r->status != CHAT_EOK) {
        chat_reply_db_err(op->cb, op->arg, r);
    } else if (chat_pg_i64(r->res[0], 0, 0) > 0) {
        chat_reply_err(op->cb, op->arg, CHAT_EINVALID, "member_ids contains an unknown user id");
    } else if (PQgetisnull(r->res[0], 0, 1)) {
        /*
         * Our op_id is taken: this is a second attempt of a create whose
         * answer was lost. ON CONFLICT waited for the first to commit, so a
         * new statement sees it; answer with it.
         */
        const char *params[] = {op->op_id};
        chat_db_stmt_t st = {
            "SELECT " CONV_COLUMNS " FROM conversations c WHERE c.op_id = $1::uuid", 1, params};
        chat_db_exec_lsn(op->ctx->db, &st, 1, CHAT_DB_RETRY_SENT, created_cb, op);
        return;
    } else {
        op->lsn = r->lsn;
        created_reply(op, r->res[0], 1);
        return;
    }
    op_free(op);
}

void chat_conv_create(chat_ctx_t *ctx, int64_t caller, const char *title, size_t title_len,
                      const int64_t *member_ids, size_t n, chat_reply_cb cb, void *arg)
{
    /* The members travel as one bigint[] literal: {caller,id,id,...}. */
    chat_buf_t ids = CHAT_BUF_INIT;
    chat_buf_putc(&ids, '{');
    chat_buf_put_i64(&ids, caller);
    for (size_t i = 0; i < n; i++) {
        chat_buf_putc(&ids, ',');
        chat_buf_put_i64(&ids, member_ids[i]);
    }
    chat_buf_putc(&ids, '}');
    struct conv_op *op = op_new(cb, arg);
    op->ctx = ctx;
    op->caller = caller;
    op->members = chat_malloc((n + 1) * sizeof *op->members);
    op->members[0] = caller;
    memcpy(op->members + 1, member_ids, n * sizeof *member_ids);
    op->nmembers = n + 1;
    if (chat_op_id_new(op->op_id) < 0) {
        chat_reply_err(cb, arg, CHAT_EUNAVAILABLE, "no randomness for the operation id");
        chat_buf_dispose(&ids);
        op_free(op);
        return;
    }
    char callerbuf[24];
    char *title_z = chat_strndup(title, title_len);
    const char *params[] = {title_z, chat_i64_str(callerbuf, caller), ids.data, op->op_id};
    /*
     * One statement: the conversation is inserted only when every id names a
     * user, so an unknown id leaves nothing behind. The first column counts
     * unknown ids; the rest is the new conversation, or NULLs when the op_id
     * was already used (a second attempt: the pool may send it again).
     */
    chat_db_stmt_t st = {
        "WITH ids AS (SELECT DISTINCT unnest($3::bigint[]) AS id), "
        "bad AS (SELECT count(*) AS n FROM ids WHERE NOT EXISTS "
        "  (SELECT 1 FROM users u WHERE u.id = ids.id)), "
        "c AS (INSERT INTO conversations (title, created_by, member_count, op_id) "
        "  SELECT $1::text, $2::bigint, (SELECT count(*) FROM ids), $4::uuid "
        "  WHERE (SELECT n FROM bad) = 0 ON CONFLICT DO NOTHING RETURNING *), "
        "m AS (INSERT INTO members (conversation_id, user_id) SELECT c.id, ids.id FROM c, ids) "
        "SELECT (SELECT n FROM bad), " CONV_COLUMNS " FROM (SELECT 1) one LEFT JOIN c ON true",
        4, params};
    chat_db_exec_lsn(ctx->db, &st, 1, CHAT_DB_RETRY_SENT, create_cb, op);
    free(title_z);
    chat_buf_dispose(&ids);
}

static void get_cb(const chat_db_result_t *r, void *arg)
{
    struct conv_op *op = arg;
    if (chat_db_found(r, op->cb, op->arg, "no such conversation")) {
        chat_buf_t b = CHAT_BUF_INIT;
        chat_encode_conv(&b, r->res[0], 0, 0);
        chat_reply_ok(op->cb, op->arg, CHAT_REPLY_OK, &b);
    }
    op_free(op);
}

static void get_db(chat_ctx_t *ctx, int64_t caller, const chat_read_t *rd, chat_reply_cb cb,
                   void *arg)
{
    int64_t conv_id = rd->conv_id;
    char a[24], b[24];
    const char *params[] = {chat_i64_str(a, conv_id), chat_i64_str(b, caller)};
    chat_db_stmt_t st = {"SELECT " CONV_COLUMNS " FROM conversations c "
                         "JOIN members m ON m.conversation_id = c.id AND m.user_id = $2 "
                         "WHERE c.id = $1",
                         2, params};
    chat_db_exec(ctx->db, &st, 1, CHAT_DB_RETRY_SENT, get_cb, op_new(cb, arg));
}

void chat_conv_get(chat_ctx_t *ctx, int64_t caller, int64_t conv_id, chat_reply_cb cb, void *arg)
{
    chat_read_t rd = {
        .kind = CHAT_KEYS_METADATA,
        .conv_id = conv_id,
        .ttl = chat_keys_ttl(CHAT_KEYS_METADATA, 0, 0),
        .load = get_db,
    };
    chat_keys_metadata(rd.prefix, conv_id);
    chat_read(ctx, caller, &rd, cb, arg);
}

static void add_member_done(void *arg)
{
    struct conv_op *op = arg;
    if (op->added)
        chat_push_conv_frame(op->ctx, op->user, CHAT_RT_ADDED, op->conv, op->rev,
                             op->user != op->caller);
    chat_reply_ok(op->cb, op->arg, CHAT_REPLY_NO_CONTENT, NULL);
    op_free(op);
}

static void add_member_cb(const chat_db_result_t *r, void *arg)
{
    struct conv_op *op = arg;
    if (r->status != CHAT_EOK)
        chat_reply_db_err(op->cb, op->arg, r);
    else if (chat_pg_i64(r->res[0], 0, 0) == 0)
        chat_reply_err(op->cb, op->arg, CHAT_ENOTFOUND, "no such conversation");
    else if (chat_pg_i64(r->res[0], 0, 1) == 0)
        chat_reply_err(op->cb, op->arg, CHAT_EINVALID, "user_id names no user");
    else {
        /*
         * member_count is part of the cached metadata and of every member's
         * inbox (the conversation's version), and the new member's inbox
         * gains the conversation (their version). A no-op (already a member,
         * or a retry) invalidates too: a first attempt may have died between
         * its commit and its invalidation.
         */
        op->added = chat_pg_i64(r->res[0], 0, 2) > 0;
        op->rev = op->added ? chat_pg_i64(r->res[0], 0, 3) : 0;
        chat_after_write_users(op->ctx, op->conv, &op->user, 1, r->lsn, add_member_done, op);
        return;
    }
    op_free(op);
}

void chat_conv_add_member(chat_ctx_t *ctx, int64_t caller, int64_t conv_id, int64_t user_id,
                          chat_reply_cb cb, void *arg)
{
    char a[24], b[24], c[24];
    const char *params[] = {chat_i64_str(a, conv_id), chat_i64_str(b, caller),
                            chat_i64_str(c, user_id)};
    /*
     * Adding an existing member inserts nothing and leaves member_count alone,
     * so the statement is idempotent and safe to retry.
     */
    chat_db_stmt_t st = {
        "WITH ok AS (SELECT 1 FROM members WHERE conversation_id = $1 AND user_id = $2), "
        "u AS (SELECT 1 FROM users WHERE id = $3), "
        "ins AS (INSERT INTO members (conversation_id, user_id) SELECT $1::bigint, $3::bigint "
        "  WHERE EXISTS (SELECT 1 FROM ok) AND EXISTS (SELECT 1 FROM u) "
        "  ON CONFLICT DO NOTHING RETURNING 1), "
        "upd AS (UPDATE conversations SET member_count = member_count + 1 "
        "  WHERE id = $1 AND EXISTS (SELECT 1 FROM ins) RETURNING rev) "
        "SELECT (SELECT count(*) FROM ok), (SELECT count(*) FROM u), (SELECT count(*) FROM upd), "
        "(SELECT rev FROM upd)",
        3, params};
    struct conv_op *op = op_new(cb, arg);
    op->ctx = ctx;
    op->conv = conv_id;
    op->caller = caller;
    op->user = user_id;
    chat_db_exec_lsn(ctx->db, &st, 1, CHAT_DB_RETRY_SENT, add_member_cb, op);
}
