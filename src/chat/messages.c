/*
 * Messages: idempotent sends, edits and deletes (tombstones), each taking
 * the conversation's next rev under its row lock with its event; history
 * pages served by the (conversation, seq) index; counts kept on the
 * conversation row so they never scan.
 */
#include "chat/internal.h"
#include "chat/keys.h"
#include "core/alloc.h"
#include "core/json.h"
#include "realtime/stream.h"

#include <stdlib.h>
#include <string.h>

/*
 * A history page, newest first: $1 conversation, $2 the reader (no row for a
 * non-member, one all-NULL row for a member of an empty page), $3 limit,
 * $4 offset, $5 before_id or NULL. Also the send's write-through of the newest
 * page. The query is chat_history_page of sql/004_send_plans.sql, where
 * PL/pgSQL keeps its plan per server connection.
 */
#define HISTORY_SQL "SELECT * FROM chat_history_page($1, $2, $3, $4, $5)"

/*
 * Statement 1 of every change (send, edit, delete): the conversation's row
 * lock, taken for a member only ($1 conversation, $2 the caller; one row, or
 * none). chat_conv_lock of sql/004_send_plans.sql.
 */
#define LOCK_SQL "SELECT * FROM chat_conv_lock($1, $2)"

/* The page a send writes through: the newest 50, the contract's default page. */
#define WRITE_THROUGH_LIMIT 50

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
    chat_reply_kind_t kind; /* writes: the answer to give once the cache is invalidated */
    chat_buf_t body;        /* writes: the message object */
    char conv[24], sender[24];
    char *client_msg_id;        /* send only, owned */
    char op_id[CHAT_OP_ID_LEN]; /* send only */
    int type;                   /* writes: the event to push (enum chat_event_type); 0: none */
    int64_t rev;                /* writes: the conversation's rev taken by the change */
    uint64_t lsn;               /* writes: the WAL position after the commit (walpos.h) */
    int limit, offset;          /* history only */
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
    chat_buf_dispose(&op->body);
    free(op);
}

/*
 * Pushes the event of a change (a new, edited or deleted message) to the
 * conversation's followers (this process and, through Redis, the others):
 * the frame is the event object of /events, ordered by its rev.
 */
static void push_event(struct msg_op *op)
{
    if (!op->ctx->stream || op->rev <= 0)
        return;
    chat_buf_t frame = CHAT_BUF_INIT;
    chat_encode_event(&frame, op->type, op->conv, op->rev, op->body.data, op->body.len);
    chat_rt_msg_t m = {.kind = CHAT_RT_EVENT,
                       .id = op->conv_id,
                       .a = op->rev,
                       .frame = frame.data,
                       .len = frame.len};
    chat_stream_publish(op->ctx->stream, &m);
    chat_buf_dispose(&frame);
}

/* The cache is invalidated: push the change, then answer. */
static void write_done(void *arg)
{
    struct msg_op *op = arg;
    if (op->type)
        push_event(op); /* before the answer: a client told 2xx may expect the push */
    chat_reply_ok(op->cb, op->arg, op->kind, op->kind == CHAT_REPLY_NO_CONTENT ? NULL : &op->body);
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
        op->type = CHAT_EVENT_MESSAGE;
        /* After the message's columns: its rev. */
        op->rev = chat_pg_i64(res, 0, col + CHAT_MSG_NCOLUMNS);
    }
    chat_encode_message(&op->body, res, 0, col);
    chat_after_write(op->ctx, op->conv_id, op->lsn, write_done, op);
}

static void encode_page(chat_buf_t *b, const char *conv, int limit, int offset,
                        const PGresult *res);

/*
 * A new message: its answer, and the newest page and the count as the send's
 * own transaction read them after the insert, stored under the version the
 * send moves to (chat_after_write_rev) so the hot conversation's next reads
 * are hits, not misses.
 */
static void write_through(struct msg_op *op, const PGresult *res, const PGresult *page)
{
    const int count_col = 2 + CHAT_MSG_NCOLUMNS;
    op->kind = CHAT_REPLY_CREATED;
    op->type = CHAT_EVENT_MESSAGE;
    op->rev = chat_pg_i64(res, 0, 1 + CHAT_MSG_NCOLUMNS);
    chat_encode_message(&op->body, res, 0, 1);
    chat_buf_t pb = CHAT_BUF_INIT, cb = CHAT_BUF_INIT;
    chat_cache_put_t puts[2];
    size_t n = 0;
    /* puts point into these until chat_after_write_rev has copied them */
    // cppcheck-suppress variableScope ; the keys outlive the if blocks through puts[]
    char pkey[CHAT_KEYS_MAX], ckey[CHAT_KEYS_MAX];
    if (PQntuples(page) > 0) {
        encode_page(&pb, op->conv, WRITE_THROUGH_LIMIT, 0, page);
        chat_keys_history(pkey, op->conv_id, WRITE_THROUGH_LIMIT, 0, 0, -1);
        puts[n++] =
            (chat_cache_put_t){pkey, pb.data, pb.len, chat_keys_ttl(CHAT_KEYS_HISTORY, 0, 0)};
    }
    if (!PQgetisnull(res, 0, count_col)) {
        chat_buf_puts(&cb, "{\"conversation_id\":");
        chat_buf_puts(&cb, op->conv);
        chat_buf_puts(&cb, ",\"count\":");
        chat_buf_puts(&cb, PQgetvalue(res, 0, count_col));
        chat_buf_putc(&cb, '}');
        chat_keys_count(ckey, op->conv_id);
        puts[n++] = (chat_cache_put_t){ckey, cb.data, cb.len, chat_keys_ttl(CHAT_KEYS_COUNT, 0, 0)};
    }
    chat_after_write_rev(op->ctx, op->conv_id, op->rev, op->lsn, puts, n, write_done, op);
    chat_buf_dispose(&pb);
    chat_buf_dispose(&cb);
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
        op->lsn = r->lsn;
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
    op->lsn = r->lsn;
    if (chat_pg_i64(res, 0, 0) == 0) {
        chat_reply_err(op->cb, op->arg, CHAT_ENOTFOUND, "no such conversation");
        op_free(op);
    } else if (!PQgetisnull(res, 0, 1)) {
        write_through(op, res, r->res[2]);
    } else {
        /*
         * The (sender, conversation, client_msg_id) or this request's own
         * op_id is taken by a committed message: answer with it. The last
         * column says whether it is this request's own first attempt (its
         * answer was lost): then it is still a creation.
         */
        const char *params[] = {op->sender, op->conv, op->client_msg_id, op->op_id};
        chat_db_stmt_t st = {"SELECT " CHAT_MSG_COLUMNS(
                                 "") ", (SELECT e.rev FROM events e WHERE e.conversation_id = $2 "
                                     "AND e.message_id = messages.id AND e.type = 1), "
                                     "op_id IS NOT DISTINCT FROM $4::uuid "
                                     "FROM messages WHERE (sender_id = $1 AND "
                                     "conversation_id = $2 "
                                     "AND client_msg_id = $3) OR op_id = $4::uuid",
                             4, params};
        /* its position too: the bump that follows must cover the first attempt's commit */
        chat_db_exec_lsn(op->ctx->db, &st, 1, CHAT_DB_RETRY_SENT, existing_cb, op);
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
    const char *params[] = {op->conv, op->sender, body_z, op->client_msg_id, op->op_id};
    char lim[24];
    snprintf(lim, sizeof lim, "%d", WRITE_THROUGH_LIMIT);
    const char *page_params[] = {op->conv, op->sender, lim, "0", NULL};
    /*
     * One transaction of two statements (and a read for the cache). The first locks the
     * conversation row (for a member), so the sends, edits and deletes of a conversation run one at
     * a time. The second, whose snapshot sees every write committed before the lock was granted,
     * takes the next seq and rev, inserts the message and its event, counts it and moves the
     * sender's read marker — unless the client_msg_id or this request's op_id is already used (a
     * retry), when it changes nothing. So seq and rev have no gap and no repeat and follow commit
     * order. The answer: whether the caller is a member, the new message (NULLs for a retry)
     * and its rev. Each statement calls a function of sql/004_send_plans.sql holding it, so
     * PostgreSQL plans it once per server connection instead of once per send.
     */
    chat_db_stmt_t st[3] = {
        {LOCK_SQL, 2, params}, /* its first two */
        {"SELECT * FROM chat_send_insert($1, $2, $3, $4, $5)", 5, params},
        /* Still under the lock, after the insert: what a read of the newest
         * page would now answer, to write through (the count came with the insert). */
        {HISTORY_SQL, 5, page_params},
    };
    /* The op_id makes a repeated send harmless, so it may be sent again. */
    chat_db_exec_lsn(ctx->db, st, 3, CHAT_DB_RETRY_SENT, send_cb, op);
    free(body_z);
}

/* ---- edits and deletes ---- */

/* The one answer for a non-member, an unknown message and (for edits) a deleted one. */
#define NO_SUCH_MESSAGE "no such message"

/*
 * The columns of a change's answer (one row): whether the caller is a
 * member, the rev taken (NULL: nothing changed), then the message in its
 * current state (NULLs when the caller may not see it or it does not exist).
 */
#define CHANGE_SELECT                                                                              \
    "SELECT (SELECT count(*) FROM ok), (SELECT rev FROM upd), " CHAT_MSG_COLUMNS(                  \
        "cur.") " "                                                                                \
                "FROM (SELECT 1) one LEFT JOIN cur "                                               \
                "ON true"
#define CHANGE_COL_MEMBER 0
#define CHANGE_COL_REV 1
#define CHANGE_COL_MSG 2
/* Within the message's columns (chat_encode_message's order). */
#define MSG_COL_SENDER 3
#define MSG_COL_DELETED 7

/*
 * A change's statements share their start: the caller's membership, and the
 * message, found only for a member (so a non-member learns nothing), in
 * this conversation.
 */
#define CHANGE_WITH                                                                                \
    "WITH ok AS (SELECT 1 FROM members WHERE conversation_id = $1 AND user_id = $2), "             \
    "msg AS (SELECT * FROM messages WHERE id = $3 AND conversation_id = $1 "                       \
    "  AND EXISTS (SELECT 1 FROM ok)), "

static void change_cb(const chat_db_result_t *r, void *arg)
{
    struct msg_op *op = arg;
    if (r->status != CHAT_EOK) {
        chat_reply_db_err(op->cb, op->arg, r);
        op_free(op);
        return;
    }
    const PGresult *res = r->res[1];
    op->lsn = r->lsn;
    int m = CHANGE_COL_MSG;
    bool found = chat_pg_i64(res, 0, CHANGE_COL_MEMBER) > 0 && !PQgetisnull(res, 0, m);
    bool deleted = found && PQgetvalue(res, 0, m + MSG_COL_DELETED)[0] == 't';
    bool own = found && !strcmp(PQgetvalue(res, 0, m + MSG_COL_SENDER), op->sender);
    bool edit = op->type == CHAT_EVENT_EDITED;
    chat_err_t err = CHAT_EOK;
    const char *why = NULL;
    if (!found || (edit && deleted)) {
        err = CHAT_ENOTFOUND;
        why = NO_SUCH_MESSAGE;
    } else if (!own) {
        err = CHAT_EFORBIDDEN;
        why = edit ? "only the sender may edit a message" : "only the sender may delete a message";
    }
    if (err != CHAT_EOK) {
        chat_reply_err(op->cb, op->arg, err, why);
        op_free(op);
        return;
    }
    op->kind = edit ? CHAT_REPLY_OK : CHAT_REPLY_NO_CONTENT;
    if (PQgetisnull(res, 0, CHANGE_COL_REV)) {
        /*
         * Nothing changed (the same body, a second delete): no rev, no
         * event, nothing to push. The cache is invalidated all the same:
         * this may be the resend of an attempt that committed and lost its
         * invalidation.
         */
        op->type = 0;
    } else {
        op->rev = chat_pg_i64(res, 0, CHANGE_COL_REV);
    }
    chat_encode_message(&op->body, res, 0, m);
    /* A change that took a rev records it, so no earlier send's late
     * write-through can land after it. */
    chat_after_write_rev(op->ctx, op->conv_id, op->rev, op->lsn, NULL, 0, write_done, op);
}

static struct msg_op *change_new(chat_ctx_t *ctx, int64_t caller, int64_t conv_id, int type,
                                 chat_reply_cb cb, void *arg)
{
    struct msg_op *op = op_new(ctx, cb, arg);
    op->conv_id = conv_id;
    op->type = type;
    chat_i64_str(op->conv, conv_id);
    chat_i64_str(op->sender, caller);
    return op;
}

void chat_msg_edit(chat_ctx_t *ctx, int64_t caller, int64_t conv_id, int64_t message_id,
                   const char *body, size_t body_len, chat_reply_cb cb, void *arg)
{
    struct msg_op *op = change_new(ctx, caller, conv_id, CHAT_EVENT_EDITED, cb, arg);
    char mid[24];
    char *body_z = chat_strndup(body, body_len);
    const char *params[] = {op->conv, op->sender, chat_i64_str(mid, message_id), body_z};
    /*
     * Like a send: the conversation's row lock first, then one statement
     * that sees every change committed before it and, when the caller's
     * message is live and its body differs, takes the next rev, rewrites
     * the body, stamps edited_at and writes the message_edited event. Sent
     * twice (a lost answer), the second finds the body already there and
     * changes nothing.
     */
    chat_db_stmt_t st[2] = {
        {LOCK_SQL, 2, params}, /* its first two */
        {CHANGE_WITH "upd AS (UPDATE conversations c SET rev = c.rev + 1 WHERE c.id = $1 "
                     "  AND EXISTS (SELECT 1 FROM msg WHERE sender_id = $2 AND NOT deleted "
                     "  AND body <> $4::text) RETURNING c.rev), "
                     "ed AS (UPDATE messages m SET body = $4::text, edited_at = now() FROM upd "
                     "  WHERE m.id = $3 RETURNING m.*), "
                     "ev AS (INSERT INTO events (conversation_id, rev, type, message_id) "
                     "  SELECT $1::bigint, upd.rev, 2, $3::bigint FROM upd), "
                     "cur AS (SELECT * FROM ed UNION ALL SELECT * FROM msg WHERE NOT EXISTS "
                     "  (SELECT 1 FROM ed)) " CHANGE_SELECT,
         4, params},
    };
    chat_db_exec_lsn(ctx->db, st, 2, CHAT_DB_RETRY_SENT, change_cb, op);
    free(body_z);
}

void chat_msg_delete(chat_ctx_t *ctx, int64_t caller, int64_t conv_id, int64_t message_id,
                     chat_reply_cb cb, void *arg)
{
    struct msg_op *op = change_new(ctx, caller, conv_id, CHAT_EVENT_DELETED, cb, arg);
    char mid[24];
    const char *params[] = {op->conv, op->sender, chat_i64_str(mid, message_id)};
    /*
     * As an edit: when the caller's message is live, take the next rev,
     * count one message less, make the row a tombstone (no text kept,
     * edited_at the time of deletion) and write the message_deleted event.
     * A second delete finds the tombstone and changes nothing.
     */
    chat_db_stmt_t st[2] = {
        {LOCK_SQL, 2, params}, /* its first two */
        {CHANGE_WITH "upd AS (UPDATE conversations c SET rev = c.rev + 1, "
                     "  message_count = c.message_count - 1 WHERE c.id = $1 "
                     "  AND EXISTS (SELECT 1 FROM msg WHERE sender_id = $2 AND NOT deleted) "
                     "  RETURNING c.rev), "
                     "ed AS (UPDATE messages m SET deleted = true, body = '', edited_at = now() "
                     "  FROM upd WHERE m.id = $3 RETURNING m.*), "
                     "ev AS (INSERT INTO events (conversation_id, rev, type, message_id) "
                     "  SELECT $1::bigint, upd.rev, 3, $3::bigint FROM upd), "
                     "cur AS (SELECT * FROM ed UNION ALL SELECT * FROM msg WHERE NOT EXISTS "
                     "  (SELECT 1 FROM ed)) " CHANGE_SELECT,
         3, params},
    };
    chat_db_exec_lsn(ctx->db, st, 2, CHAT_DB_RETRY_SENT, change_cb, op);
}

/* ---- history and count ---- */

/* The page answer of a history read from its rows (CHAT_MSG_COLUMNS at 0). */
static void encode_page(chat_buf_t *b, const char *conv, int limit, int offset, const PGresult *res)
{
    int n = PQntuples(res);
    chat_buf_reserve(b, 96 + (size_t)n * 200);
    chat_buf_puts(b, "{\"conversation_id\":");
    chat_buf_puts(b, conv);
    chat_buf_puts(b, ",\"limit\":");
    chat_buf_put_i64(b, limit);
    chat_buf_puts(b, ",\"offset\":");
    chat_buf_put_i64(b, offset);
    chat_buf_puts(b, ",\"messages\":[");
    int first = 1;
    for (int i = 0; i < n; i++) {
        if (PQgetisnull(res, i, 0)) /* a member of an empty page: the one all-NULL row */
            continue;
        if (!first)
            chat_buf_putc(b, ',');
        first = 0;
        chat_encode_message(b, res, i, 0);
    }
    chat_buf_puts(b, "]}");
}

static void history_cb(const chat_db_result_t *r, void *arg)
{
    struct msg_op *op = arg;
    if (!chat_db_found(r, op->cb, op->arg, "no such conversation")) {
        op_free(op);
        return;
    }
    chat_buf_t b = CHAT_BUF_INIT;
    encode_page(&b, op->conv, op->limit, op->offset, r->res[0]);
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
    /*
     * The membership row drives the page: no row for a non-member, one
     * all-NULL row for a member of an empty page, else the page itself, a
     * range scan of messages_conversation_seq.
     */
    if (q->after_seq >= 0) {
        /* Catching up: the messages after a seq, oldest first. */
        char after[24];
        const char *params[] = {op->conv, op->sender, chat_i64_str(lim, q->limit),
                                chat_i64_str(after, q->after_seq)};
        chat_db_stmt_t st = {
            "SELECT " CHAT_MSG_COLUMNS("p.") " FROM members mem LEFT JOIN LATERAL ("
                                             "  SELECT * FROM messages WHERE conversation_id = $1 "
                                             "  AND seq > $4::bigint ORDER BY seq LIMIT $3::int) p "
                                             "ON true WHERE mem.conversation_id = $1 "
                                             "AND mem.user_id = $2 ORDER BY p.seq",
            4, params};
        chat_read_exec(ctx, rd, &st, 1, history_cb, op);
        return;
    }
    const char *params[] = {op->conv, op->sender, chat_i64_str(lim, q->limit),
                            chat_i64_str(off, q->offset),
                            q->before_id ? chat_i64_str(before, q->before_id) : NULL};
    chat_db_stmt_t st = {HISTORY_SQL, 5, params};
    chat_read_exec(ctx, rd, &st, 1, history_cb, op);
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
    chat_keys_history(rd.prefix, q->conv_id, q->limit, q->offset, q->before_id, q->after_seq);
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
