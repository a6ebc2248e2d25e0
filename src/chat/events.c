/*
 * A conversation's events: every change of its messages (a send, an edit, a
 * delete) took the next rev; /events lists them in rev order from a given
 * rev, each with its message in its current state. The event object is also
 * the frame pushed on the stream (chat_encode_event).
 */
#include "chat/internal.h"
#include "core/alloc.h"

#include <stdlib.h>

static const char *type_name(int type)
{
    switch (type) {
    case CHAT_EVENT_EDITED:
        return "message_edited";
    case CHAT_EVENT_DELETED:
        return "message_deleted";
    default:
        return "message";
    }
}

void chat_encode_event(chat_buf_t *b, int type, const char *conv, int64_t rev, const char *msg,
                       size_t msg_len)
{
    chat_buf_reserve(b, msg_len + 96);
    chat_buf_puts(b, "{\"type\":\"");
    chat_buf_puts(b, type_name(type));
    chat_buf_puts(b, "\",\"conversation_id\":");
    chat_buf_puts(b, conv);
    chat_buf_puts(b, ",\"rev\":");
    chat_buf_put_i64(b, rev);
    chat_buf_puts(b, ",\"message\":");
    chat_buf_append(b, msg, msg_len);
    chat_buf_putc(b, '}');
}

struct events_op {
    chat_reply_cb cb;
    void *arg;
    char conv[24];
};

/* The page's columns: the conversation's rev, then per event its type, rev and message. */
#define COL_CONV_REV 0
#define COL_TYPE 1
#define COL_REV 2
#define COL_MSG 3

static void events_cb(const chat_db_result_t *r, void *arg)
{
    struct events_op *op = arg;
    if (!chat_db_found(r, op->cb, op->arg, "no such conversation")) {
        free(op);
        return;
    }
    const PGresult *res = r->res[0];
    int n = PQntuples(res);
    chat_buf_t b = CHAT_BUF_INIT;
    chat_buf_reserve(&b, 96 + (size_t)n * 300);
    chat_buf_puts(&b, "{\"conversation_id\":");
    chat_buf_puts(&b, op->conv);
    chat_buf_puts(&b, ",\"rev\":");
    chat_buf_puts(&b, PQgetvalue(res, 0, COL_CONV_REV));
    chat_buf_puts(&b, ",\"events\":[");
    chat_buf_t msg = CHAT_BUF_INIT;
    int first = 1;
    for (int i = 0; i < n; i++) {
        if (PQgetisnull(res, i, COL_REV)) /* a member of an empty page: the one row without event */
            continue;
        if (!first)
            chat_buf_putc(&b, ',');
        first = 0;
        chat_buf_reset(&msg);
        chat_encode_message(&msg, res, i, COL_MSG);
        chat_encode_event(&b, (int)chat_pg_i64(res, i, COL_TYPE), op->conv,
                          chat_pg_i64(res, i, COL_REV), msg.data, msg.len);
    }
    chat_buf_dispose(&msg);
    chat_buf_puts(&b, "]}");
    chat_reply_ok(op->cb, op->arg, CHAT_REPLY_OK, &b);
    free(op);
}

static void events_db(chat_ctx_t *ctx, int64_t caller, const chat_read_t *rd, chat_reply_cb cb,
                      void *arg)
{
    const chat_events_query_t *q = &rd->events;
    struct events_op *op = chat_calloc(1, sizeof *op);
    op->cb = cb;
    op->arg = arg;
    chat_i64_str(op->conv, q->conv_id);
    char user[24], after[24], lim[24];
    const char *params[] = {op->conv, chat_i64_str(user, caller), chat_i64_str(after, q->after_rev),
                            chat_i64_str(lim, q->limit)};
    /*
     * One statement, one snapshot: the conversation (for a member only: no
     * row otherwise) with its latest rev, and the page, a range scan of the
     * events' primary key (conversation_id, rev), each event's message
     * looked up by id (the LIMIT keeps it a primary-key probe per event: a
     * plain join may be planned as a hash join over a small messages
     * table). A member of an empty page gets one row without event.
     */
    chat_db_stmt_t st = {
        "SELECT c.rev, e.type, e.rev, " CHAT_MSG_COLUMNS(
            "m.") " FROM conversations c "
                  "JOIN members mem ON mem.conversation_id = c.id AND mem.user_id = $2 "
                  "LEFT JOIN LATERAL (SELECT * FROM events WHERE conversation_id = $1 "
                  "  AND rev > $3::bigint ORDER BY rev LIMIT $4::int) e ON true "
                  "LEFT JOIN LATERAL (SELECT * FROM messages WHERE id = e.message_id LIMIT 1) m ON "
                  "true "
                  "WHERE c.id = $1 ORDER BY e.rev",
        4, params};
    chat_read_exec(ctx, rd, &st, 1, events_cb, op);
}

void chat_events_list(chat_ctx_t *ctx, int64_t caller, const chat_events_query_t *q,
                      chat_reply_cb cb, void *arg)
{
    chat_read_t rd = {
        .kind = CHAT_KEYS_EVENTS,
        .conv_id = q->conv_id,
        .ttl = chat_keys_ttl(CHAT_KEYS_EVENTS, 0, 0),
        .load = events_db,
        .events = *q,
    };
    chat_keys_events(rd.prefix, q->conv_id, q->after_rev, q->limit);
    chat_read(ctx, caller, &rd, cb, arg);
}
