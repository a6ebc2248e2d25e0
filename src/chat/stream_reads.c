/*
 * The reads the realtime stream makes of the chat domain
 * (chat_stream_loader_t, realtime/stream.h): a conversation's events (the
 * cached, coalesced /events read, as a member), the current rev of many
 * conversations, and a user's conversations with their revs. Each is one
 * index lookup per conversation.
 */
#include "chat/internal.h"
#include "core/alloc.h"
#include "realtime/stream.h"

#include <stdlib.h>

/* ---- events ---- */

struct events_op {
    chat_stream_events_cb cb;
    void *arg;
};

static void events_reply(chat_reply_t *r, void *arg)
{
    struct events_op *op = arg;
    op->cb(r->err, r->body, r->body_len, op->arg);
    free(r->body);
    free(op);
}

static void load_events(void *ctx, int64_t conv, int64_t user, int64_t after, int limit,
                        chat_stream_events_cb cb, void *arg)
{
    struct events_op *op = chat_malloc(sizeof *op);
    op->cb = cb;
    op->arg = arg;
    chat_events_query_t q = {.conv_id = conv, .after_rev = after, .limit = limit};
    chat_events_list(ctx, user, &q, events_reply, op);
}

/* ---- (conversation, rev) lists ---- */

struct revs_op {
    chat_stream_revs_cb cb;
    void *arg;
};

/* Rows of (id, rev) to the callback. */
static void revs_cb(const chat_db_result_t *r, void *arg)
{
    struct revs_op *op = arg;
    if (r->status != CHAT_EOK) {
        op->cb(r->status, NULL, NULL, 0, op->arg);
        free(op);
        return;
    }
    const PGresult *res = r->res[0];
    size_t n = (size_t)PQntuples(res);
    int64_t *ids = chat_malloc((n ? n : 1) * sizeof *ids);
    int64_t *revs = chat_malloc((n ? n : 1) * sizeof *revs);
    for (size_t i = 0; i < n; i++) {
        ids[i] = chat_pg_i64(res, (int)i, 0);
        revs[i] = chat_pg_i64(res, (int)i, 1);
    }
    op->cb(CHAT_EOK, ids, revs, n, op->arg);
    free(ids);
    free(revs);
    free(op);
}

static void load_revs(void *ctx, const int64_t *convs, size_t n, chat_stream_revs_cb cb, void *arg)
{
    chat_ctx_t *c = ctx;
    struct revs_op *op = chat_malloc(sizeof *op);
    op->cb = cb;
    op->arg = arg;
    chat_buf_t ids = CHAT_BUF_INIT;
    chat_buf_putc(&ids, '{');
    for (size_t i = 0; i < n; i++) {
        if (i)
            chat_buf_putc(&ids, ',');
        chat_buf_put_i64(&ids, convs[i]);
    }
    chat_buf_putc(&ids, '}');
    const char *params[] = {ids.data};
    chat_db_stmt_t st = {"SELECT id, rev FROM conversations WHERE id = ANY($1::bigint[])", 1,
                         params};
    chat_db_exec(c->db, &st, 1, CHAT_DB_RETRY_SENT, revs_cb, op);
    chat_buf_dispose(&ids);
}

static void load_memberships(void *ctx, int64_t user, chat_stream_revs_cb cb, void *arg)
{
    chat_ctx_t *c = ctx;
    struct revs_op *op = chat_malloc(sizeof *op);
    op->cb = cb;
    op->arg = arg;
    char u[24];
    const char *params[] = {chat_i64_str(u, user)};
    chat_db_stmt_t st = {"SELECT m.conversation_id, c.rev FROM members m "
                         "JOIN conversations c ON c.id = m.conversation_id WHERE m.user_id = $1",
                         1, params};
    chat_db_exec(c->db, &st, 1, CHAT_DB_RETRY_SENT, revs_cb, op);
}

chat_stream_loader_t chat_stream_reads(chat_ctx_t *ctx)
{
    return (chat_stream_loader_t){
        .events = load_events,
        .revs = load_revs,
        .memberships = load_memberships,
        .ctx = ctx,
    };
}
