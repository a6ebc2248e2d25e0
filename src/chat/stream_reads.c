/*
 * The reads the realtime stream makes of the chat domain
 * (chat_stream_loader_t, realtime/stream.h): a conversation's events (the
 * cached, coalesced /events read, as a member), the current rev of many
 * conversations, and a user's conversations with their revs. Each is one
 * index lookup per conversation. The stream is promised an answer from the
 * loop, never from inside the call (a cached read may know its answer at
 * once): such an answer waits for the next loop iteration.
 */
#include "chat/internal.h"
#include "core/alloc.h"
#include "realtime/stream.h"

#include <stdlib.h>

/* ---- events ---- */

struct events_op {
    chat_stream_events_cb cb;
    void *arg;
    bool in_call;  /* chat_events_list has not returned yet */
    bool answered; /* the reply came while in_call: kept for the timer */
    int err;
    chat_blob_t *body; /* the page, when err is CHAT_EOK */
    uv_timer_t later;
};

static void events_op_closed(uv_handle_t *h)
{
    free(h->data);
}

static void events_later(uv_timer_t *t)
{
    struct events_op *op = t->data;
    op->cb(op->err, op->body ? op->body->data : NULL, op->body ? op->body->len : 0, op->arg);
    chat_blob_unref(op->body);
    uv_close((uv_handle_t *)&op->later, events_op_closed);
}

static void events_reply(chat_reply_t *r, void *arg)
{
    struct events_op *op = arg;
    if (op->in_call) {
        op->answered = true;
        op->err = r->err;
        op->body = chat_reply_blob(r);
        return;
    }
    op->cb(r->err, r->body, r->body_len, op->arg);
    chat_reply_body_free(r);
    uv_close((uv_handle_t *)&op->later, events_op_closed);
}

static void load_events(void *ctx, int64_t conv, int64_t user, int64_t after, int limit,
                        chat_stream_events_cb cb, void *arg)
{
    chat_ctx_t *c = ctx;
    struct events_op *op = chat_calloc(1, sizeof *op);
    op->cb = cb;
    op->arg = arg;
    uv_timer_init(c->loop, &op->later);
    op->later.data = op;
    chat_events_query_t q = {.conv_id = conv, .after_rev = after, .limit = limit};
    op->in_call = true;
    chat_events_list(ctx, user, &q, events_reply, op);
    op->in_call = false;
    if (op->answered)
        uv_timer_start(&op->later, events_later, 0, 0);
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
