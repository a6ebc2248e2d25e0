/*
 * Messages: idempotent sends, history pages served by the (conversation, id)
 * index, and counts kept on the conversation row so they never scan.
 */
#include "chat/internal.h"
#include "chat/keys.h"
#include "core/alloc.h"
#include "core/json.h"
#include "realtime/stream.h"

#include <stdlib.h>
#include <string.h>

/* The members of conversation conv as a bigint[]: whom a new message is pushed to. */
#define MEMBER_IDS(conv)                                                                           \
    "(SELECT array_agg(user_id) FROM members WHERE conversation_id = " conv "::bigint)"

/* A column that may be NULL: its text as a JSON string, or null. */
static void put_str_or_null(chat_buf_t *b, const PGresult *res, int row, int col, bool quoted)
{
    if (PQgetisnull(res, row, col)) {
        chat_buf_puts(b, "null");
    } else if (quoted) {
        chat_json_put_str(b, PQgetvalue(res, row, col), (size_t)PQgetlength(res, row, col));
    } else {
        chat_buf_putc(b, '"');
        chat_buf_puts(b, PQgetvalue(res, row, col));
        chat_buf_putc(b, '"');
    }
}

void chat_encode_message(chat_buf_t *b, const PGresult *res, int row, int col)
{
    bool deleted = PQgetvalue(res, row, col + 7)[0] == 't';
    chat_buf_puts(b, "{\"id\":");
    chat_buf_puts(b, PQgetvalue(res, row, col));
    chat_buf_puts(b, ",\"conversation_id\":");
    chat_buf_puts(b, PQgetvalue(res, row, col + 1));
    chat_buf_puts(b, ",\"seq\":");
    chat_buf_puts(b, PQgetvalue(res, row, col + 2));
    chat_buf_puts(b, ",\"sender_id\":");
    chat_buf_puts(b, PQgetvalue(res, row, col + 3));
    chat_buf_puts(b, ",\"body\":");
    if (deleted) /* a tombstone keeps no text */
        chat_buf_puts(b, "\"\"");
    else
        chat_json_put_str(b, PQgetvalue(res, row, col + 4), (size_t)PQgetlength(res, row, col + 4));
    chat_buf_puts(b, ",\"created_at\":\"");
    chat_buf_puts(b, PQgetvalue(res, row, col + 5));
    chat_buf_puts(b, "\",\"edited_at\":");
    put_str_or_null(b, res, row, col + 6, false);
    chat_buf_puts(b, deleted ? ",\"deleted\":true" : ",\"deleted\":false");
    chat_buf_puts(b, ",\"client_msg_id\":");
    put_str_or_null(b, res, row, col + 8, true);
    chat_buf_putc(b, '}');
}

struct msg_op {
    chat_reply_cb cb;
    void *arg;
    chat_ctx_t *ctx;
    int64_t conv_id;
    chat_reply_kind_t kind; /* send: the answer to give once the cache is invalidated */
    chat_buf_t body;        /* send: the message object */
    char conv[24], sender[24];
    char *client_msg_id;        /* send only, owned */
    char op_id[CHAT_OP_ID_LEN]; /* send only */
    int64_t rev;                /* send: the conversation's rev taken by the message */
    int64_t *members;           /* send: the members to push a new message to; owned */
    size_t nmembers;
    int limit, offset; /* history only */
};

static struct msg_op *op_new(chat_ctx_t *ctx, chat_reply_cb cb, void *arg)
{
    struct msg_op *op = chat_calloc(1, sizeof *op);
    op->ctx = ctx;
    op->cb = cb;
    op->arg = arg;
    return op;
}

static void op_free(struct msg_op *op)
{
    free(op->client_msg_id);
    free(op->members);
    chat_buf_dispose(&op->body);
    free(op);
}

/* Pushes a new message to the members' sockets (this process and, through Redis, the others). */
static void push_new(struct msg_op *op)
{
    if (!op->ctx->stream || !op->nmembers)
        return;
    /* The stream carries frames: this is the message event of the WebSocket protocol. */
    chat_buf_t frame = CHAT_BUF_INIT;
    chat_buf_reserve(&frame, op->body.len + 96);
    chat_buf_puts(&frame, "{\"type\":\"message\",\"conversation_id\":");
    chat_buf_puts(&frame, op->conv);
    chat_buf_puts(&frame, ",\"rev\":");
    chat_buf_put_i64(&frame, op->rev);
    chat_buf_puts(&frame, ",\"message\":");
    chat_buf_append(&frame, op->body.data, op->body.len);
    chat_buf_putc(&frame, '}');
    chat_stream_publish(op->ctx->stream, op->members, op->nmembers, frame.data, frame.len);
    chat_buf_dispose(&frame);
}

static void send_done(void *arg)
{
    struct msg_op *op = arg;
    if (op->kind == CHAT_REPLY_CREATED)
        push_new(op); /* before the answer: a client told 201 may expect the push */
    chat_reply_ok(op->cb, op->arg, op->kind, &op->body);
    op_free(op);
}

/*
 * A send is acknowledged only after the conversation's cached data is
 * invalidated, so no read that follows the answer can see an older page.
 * A retry (200) invalidates too: the first attempt may have died between
 * its commit and its invalidation.
 */
static void reply_message(struct msg_op *op, chat_reply_kind_t kind, const PGresult *res, int col)
{
    op->kind = kind;
    if (kind == CHAT_REPLY_CREATED) {
        /* After the message's columns: its rev, then the members to push it to. */
        op->rev = chat_pg_i64(res, 0, col + MSG_NCOLUMNS);
        op->members =
            chat_i64_list_parse(chat_pg_str(res, 0, col + MSG_NCOLUMNS + 1), &op->nmembers);
    }
    chat_encode_message(&op->body, res, 0, col);
    chat_after_write(op->ctx, op->conv_id, send_done, op);
}

static void existing_cb(const chat_db_result_t *r, void *arg)
{
    struct msg_op *op = arg;
    if (r->status != CHAT_EOK)
        chat_reply_db_err(op->cb, op->arg, r);
    else if (PQntuples(r->res[0]) == 0)
        /* The row that made our insert a no-op is committed, so this cannot happen. */
        chat_reply_err(op->cb, op->arg, CHAT_EUNAVAILABLE, "the message could not be stored");
    else {
        /*
         * The last column says whether the row is this request's own first
         * attempt (its answer was lost): then it is still a creation.
         */
        int own = !strcmp(PQgetvalue(r->res[0], 0, PQnfields(r->res[0]) - 1), "t");
        reply_message(op, own ? CHAT_REPLY_CREATED : CHAT_REPLY_OK, r->res[0], 0);
        return;
    }
    op_free(op);
}

static void send_cb(const chat_db_result_t *r, void *arg)
{
    struct msg_op *op = arg;
    if (r->status != CHAT_EOK) {
        chat_reply_db_err(op->cb, op->arg, r);
        op_free(op);
        return;
    }
    const PGresult *res = r->res[1];
    if (chat_pg_i64(res, 0, 0) == 0) {
        chat_reply_err(op->cb, op->arg, CHAT_ENOTFOUND, "no such conversation");
        op_free(op);
    } else if (!PQgetisnull(res, 0, 1)) {
        reply_message(op, CHAT_REPLY_CREATED, res, 1);
    } else {
        /*
         * The (sender, conversation, client_msg_id) or this request's own
         * op_id is taken by a committed message: answer with it. The last
         * column says whether it is this request's own first attempt (its
         * answer was lost): then it is still a creation.
         */
        const char *params[] = {op->sender, op->conv, op->client_msg_id, op->op_id};
        chat_db_stmt_t st = {
            "SELECT " MSG_COLUMNS("") ", (SELECT e.rev FROM events e WHERE e.conversation_id = $2 "
                                      "AND e.message_id = messages.id AND e.type = 1), " MEMBER_IDS(
                                          "$2") ", "
                                                "op_id IS NOT DISTINCT FROM $4::uuid "
                                                "FROM messages WHERE (sender_id = $1 AND "
                                                "conversation_id = $2 "
                                                "AND client_msg_id = $3) OR op_id = $4::uuid",
            4, params};
        chat_db_exec(op->ctx->db, &st, 1, CHAT_DB_RETRY_SENT, existing_cb, op);
    }
}

void chat_msg_send(chat_ctx_t *ctx, int64_t caller, int64_t conv_id, const char *body,
                   size_t body_len, const char *client_msg_id, chat_reply_cb cb, void *arg)
{
    struct msg_op *op = op_new(ctx, cb, arg);
    op->conv_id = conv_id;
    chat_i64_str(op->conv, conv_id);
    chat_i64_str(op->sender, caller);
    if (chat_op_id_new(op->op_id) < 0) {
        chat_reply_err(cb, arg, CHAT_EUNAVAILABLE, "no randomness for the operation id");
        op_free(op);
        return;
    }
    if (client_msg_id)
        op->client_msg_id = chat_strdup(client_msg_id);
    char *body_z = chat_strndup(body, body_len);
    const char *lock_params[] = {op->conv, op->sender};
    const char *params[] = {op->conv, op->sender, body_z, op->client_msg_id, op->op_id};
    /*
     * One transaction of two statements. The first locks the conversation
     * row (for a member), so the sends, edits and deletes of a conversation
     * run one at a time. The second, whose snapshot sees every write
     * committed before the lock was granted, takes the next seq and rev,
     * inserts the message and its event, counts it and moves the sender's
     * read marker — unless the client_msg_id or this request's op_id is
     * already used (a retry), when it changes nothing. So seq and rev have
     * no gap and no repeat and follow commit order. The answer: whether the
     * caller is a member, the new message (NULLs for a retry), its rev and
     * the members to push it to.
     */
    chat_db_stmt_t st[2] = {
        {"SELECT 1 FROM conversations c JOIN members m ON m.conversation_id = c.id "
         "AND m.user_id = $2 WHERE c.id = $1 FOR UPDATE OF c",
         2, lock_params},
        {"WITH ok AS (SELECT 1 FROM members WHERE conversation_id = $1 AND user_id = $2), "
         "dup AS (SELECT 1 FROM messages WHERE (sender_id = $2 AND conversation_id = $1 "
         "  AND client_msg_id = $4) OR op_id = $5::uuid), "
         "upd AS (UPDATE conversations c SET last_seq = c.last_seq + 1, rev = c.rev + 1, "
         "  message_count = c.message_count + 1, "
         "  last_message_at = GREATEST(c.last_message_at, now()) "
         "  WHERE c.id = $1 AND EXISTS (SELECT 1 FROM ok) AND NOT EXISTS (SELECT 1 FROM dup) "
         "  RETURNING c.last_seq, c.rev), "
         "ins AS (INSERT INTO messages (conversation_id, sender_id, body, client_msg_id, op_id, "
         "  seq) SELECT $1::bigint, $2::bigint, $3::text, $4::text, $5::uuid, upd.last_seq "
         "  FROM upd RETURNING *), "
         "ev AS (INSERT INTO events (conversation_id, rev, type, message_id) "
         "  SELECT $1::bigint, upd.rev, 1, ins.id FROM upd, ins), "
         "mark AS (UPDATE members SET last_read_seq = GREATEST(last_read_seq, ins.seq) FROM ins "
         "  WHERE members.conversation_id = $1 AND members.user_id = $2) "
         "SELECT (SELECT count(*) FROM ok), " MSG_COLUMNS(
             "ins.") ", (SELECT rev FROM upd), " MEMBER_IDS("$1") " FROM (SELECT 1) one LEFT JOIN "
                                                                  "ins ON true",
         5, params},
    };
    /* The op_id makes a repeated send harmless, so it may be sent again. */
    chat_db_exec(ctx->db, st, 2, CHAT_DB_RETRY_SENT, send_cb, op);
    free(body_z);
}

static void history_cb(const chat_db_result_t *r, void *arg)
{
    struct msg_op *op = arg;
    if (!chat_db_found(r, op->cb, op->arg, "no such conversation")) {
        op_free(op);
        return;
    }
    const PGresult *res = r->res[0];
    int n = PQntuples(res);
    chat_buf_t b = CHAT_BUF_INIT;
    chat_buf_reserve(&b, 96 + (size_t)n * 200);
    chat_buf_puts(&b, "{\"conversation_id\":");
    chat_buf_puts(&b, op->conv);
    chat_buf_puts(&b, ",\"limit\":");
    chat_buf_put_i64(&b, op->limit);
    chat_buf_puts(&b, ",\"offset\":");
    chat_buf_put_i64(&b, op->offset);
    chat_buf_puts(&b, ",\"messages\":[");
    int first = 1;
    for (int i = 0; i < n; i++) {
        if (PQgetisnull(res, i, 0)) /* a member of an empty page: the one all-NULL row */
            continue;
        if (!first)
            chat_buf_putc(&b, ',');
        first = 0;
        chat_encode_message(&b, res, i, 0);
    }
    chat_buf_puts(&b, "]}");
    chat_reply_ok(op->cb, op->arg, CHAT_REPLY_OK, &b);
    op_free(op);
}

static void history_db(chat_ctx_t *ctx, int64_t caller, const chat_read_t *rd, chat_reply_cb cb,
                       void *arg)
{
    const chat_history_query_t *q = &rd->history;
    struct msg_op *op = op_new(ctx, cb, arg);
    chat_i64_str(op->conv, q->conv_id);
    chat_i64_str(op->sender, caller);
    op->limit = q->limit;
    op->offset = q->offset;
    char lim[24], off[24], before[24];
    const char *params[] = {op->conv, op->sender, chat_i64_str(lim, q->limit),
                            chat_i64_str(off, q->offset),
                            q->before_id ? chat_i64_str(before, q->before_id) : NULL};
    /*
     * The membership row drives the page: no row for a non-member, one
     * all-NULL row for a member of an empty page, else the page itself, read
     * backwards along messages_conversation_id_id.
     */
    chat_db_stmt_t st = {
        "SELECT " MSG_COLUMNS(
            "p.") " FROM members mem LEFT JOIN LATERAL ("
                  "  SELECT * FROM messages WHERE conversation_id = $1 "
                  "  AND ($5::bigint IS NULL OR id < $5::bigint) "
                  "  ORDER BY id DESC LIMIT $3::int OFFSET $4::int) p ON true "
                  "WHERE mem.conversation_id = $1 AND mem.user_id = $2 ORDER BY p.id DESC",
        5, params};
    chat_db_exec(ctx->db, &st, 1, CHAT_DB_RETRY_SENT, history_cb, op);
}

void chat_msg_history(chat_ctx_t *ctx, int64_t caller, const chat_history_query_t *q,
                      chat_reply_cb cb, void *arg)
{
    chat_read_t rd = {
        .kind = CHAT_KEYS_HISTORY,
        .conv_id = q->conv_id,
        .ttl = chat_keys_ttl(CHAT_KEYS_HISTORY, q->offset, q->before_id),
        .load = history_db,
        .history = *q,
    };
    chat_keys_history(rd.prefix, q->conv_id, q->limit, q->offset, q->before_id);
    chat_read(ctx, caller, &rd, cb, arg);
}

static void count_cb(const chat_db_result_t *r, void *arg)
{
    struct msg_op *op = arg;
    if (chat_db_found(r, op->cb, op->arg, "no such conversation")) {
        chat_buf_t b = CHAT_BUF_INIT;
        chat_buf_puts(&b, "{\"conversation_id\":");
        chat_buf_puts(&b, op->conv);
        chat_buf_puts(&b, ",\"count\":");
        chat_buf_puts(&b, PQgetvalue(r->res[0], 0, 0));
        chat_buf_putc(&b, '}');
        chat_reply_ok(op->cb, op->arg, CHAT_REPLY_OK, &b);
    }
    op_free(op);
}

static void count_db(chat_ctx_t *ctx, int64_t caller, const chat_read_t *rd, chat_reply_cb cb,
                     void *arg)
{
    int64_t conv_id = rd->conv_id;
    struct msg_op *op = op_new(ctx, cb, arg);
    chat_i64_str(op->conv, conv_id);
    chat_i64_str(op->sender, caller);
    const char *params[] = {op->conv, op->sender};
    chat_db_stmt_t st = {"SELECT c.message_count FROM conversations c "
                         "JOIN members m ON m.conversation_id = c.id AND m.user_id = $2 "
                         "WHERE c.id = $1",
                         2, params};
    chat_db_exec(ctx->db, &st, 1, CHAT_DB_RETRY_SENT, count_cb, op);
}

void chat_msg_count(chat_ctx_t *ctx, int64_t caller, int64_t conv_id, chat_reply_cb cb, void *arg)
{
    chat_read_t rd = {
        .kind = CHAT_KEYS_COUNT,
        .conv_id = conv_id,
        .ttl = chat_keys_ttl(CHAT_KEYS_COUNT, 0, 0),
        .load = count_db,
    };
    chat_keys_count(rd.prefix, conv_id);
    chat_read(ctx, caller, &rd, cb, arg);
}
