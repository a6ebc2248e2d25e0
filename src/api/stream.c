/*
 * GET /api/v1/stream: the WebSocket of a signed-in user. After the handshake
 * (checked here, once; answered by net/ws_conn.c) the socket is registered with the
 * worker's chat stream, which pushes every new message of the user's
 * conversations; the client's "send" messages go through the same
 * validation and chat_msg_send() as POST .../messages, answered with an
 * "ack" or an "error" frame. A malformed client message gets an "error"
 * frame and the connection stays up.
 */
#include "api/internal.h"
#include "chat/stream.h"
#include "core/alloc.h"
#include "core/json.h"
#include "core/log.h"
#include "net/ws.h"
#include "net/ws_conn.h"

#include <stdlib.h>
#include <string.h>

#define BODY_MAX_CHARS 4000
#define CLIENT_MSG_ID_MAX_CHARS 64
/* Sends of one connection waiting for the database; more are refused, as HTTP caps pipelining. */
#define MAX_INFLIGHT 32

/* One WebSocket of a user; freed once the socket is gone and no send is in flight. */
typedef struct session {
    chat_api_t *api;
    chat_ws_conn_t *ws; /* NULL once gone */
    chat_stream_sub_t *sub;
    int64_t user_id;
    int inflight;
} session_t;

/* One "send" waiting for chat_msg_send(). */
typedef struct ws_send {
    session_t *ss;
    char *client_msg_id; /* NULL: none */
} ws_send_t;

static void session_maybe_free(session_t *ss)
{
    if (!ss->ws && ss->inflight == 0)
        free(ss);
}

static void put_cmid(chat_buf_t *b, const char *cmid)
{
    if (cmid)
        chat_json_put_str(b, cmid, strlen(cmid));
    else
        chat_buf_puts(b, "null");
}

static void send_frame(session_t *ss, chat_buf_t *b)
{
    if (ss->ws)
        chat_ws_conn_send_text(ss->ws, b->data, b->len);
    chat_buf_dispose(b);
}

static void send_error(session_t *ss, const char *cmid, const char *code, const char *message)
{
    chat_buf_t b = CHAT_BUF_INIT;
    chat_buf_puts(&b, "{\"type\":\"error\",\"client_msg_id\":");
    put_cmid(&b, cmid);
    chat_buf_puts(&b, ",\"error\":{\"code\":");
    chat_json_put_str(&b, code, strlen(code));
    chat_buf_puts(&b, ",\"message\":");
    chat_json_put_str(&b, message, strlen(message));
    chat_buf_puts(&b, "}}");
    send_frame(ss, &b);
}

/* The same codes and texts as the REST answer of a send (api.c, chat_call_fail). */
static void send_chat_error(session_t *ss, const char *cmid, int status, const char *message)
{
    switch (status) {
    case CHAT_ERR_UNAUTHORIZED:
        send_error(ss, cmid, "unauthorized", message ? message : "missing or unknown token");
        break;
    case CHAT_ERR_NOT_FOUND:
        send_error(ss, cmid, "not_found", message ? message : "not found");
        break;
    case CHAT_ERR_CONFLICT:
        send_error(ss, cmid, "conflict", message ? message : "conflict");
        break;
    case CHAT_ERR_INVALID:
        send_error(ss, cmid, "invalid_field", message ? message : "invalid field");
        break;
    default:
        send_error(ss, cmid, "unavailable",
                   message ? message : "the service is temporarily unavailable");
        break;
    }
}

static void send_reply_cb(chat_reply_t *r, void *arg)
{
    ws_send_t *op = arg;
    session_t *ss = op->ss;
    ss->inflight--;
    if (ss->ws) {
        if (r->status == CHAT_OK || r->status == CHAT_CREATED) {
            chat_buf_t b = CHAT_BUF_INIT;
            chat_buf_reserve(&b, r->body_len + 96);
            chat_buf_puts(&b, "{\"type\":\"ack\",\"client_msg_id\":");
            put_cmid(&b, op->client_msg_id);
            chat_buf_puts(&b, ",\"message\":");
            chat_buf_append(&b, r->body, r->body_len);
            chat_buf_putc(&b, '}');
            send_frame(ss, &b);
        } else {
            send_chat_error(ss, op->client_msg_id, r->status, r->message);
        }
    }
    free(r->body);
    free(op->client_msg_id);
    free(op);
    session_maybe_free(ss);
}

/*
 * Reads a string field of 1..max code points: 0 with the value, or -1 after
 * answering (400 for a wrong type, 422 for the length). absent_ok: a missing
 * or null field gives 0 with *out NULL.
 */
static int string_field(session_t *ss, const char *cmid, json_t *o, const char *name, long max,
                        bool absent_ok, const char **out, size_t *out_len)
{
    json_t *v = json_object_get(o, name);
    char msg[96];
    *out = NULL;
    *out_len = 0;
    if (absent_ok && (!v || json_is_null(v)))
        return 0;
    if (!v || !json_is_string(v)) {
        snprintf(msg, sizeof msg, "%s must be a string", name);
        send_error(ss, cmid, "bad_request", msg);
        return -1;
    }
    long n = chat_utf8_count(json_string_value(v), json_string_length(v));
    if (n < 0) {
        send_error(ss, cmid, "bad_request", "strings must be valid UTF-8");
        return -1;
    }
    if (n < 1 || n > max) {
        snprintf(msg, sizeof msg, "%s must be 1 to %ld characters long", name, max);
        send_error(ss, cmid, "invalid_field", msg);
        return -1;
    }
    *out = json_string_value(v);
    *out_len = json_string_length(v);
    return 0;
}

static void handle_send(session_t *ss, json_t *o)
{
    /* The client_msg_id first, so that every answer can carry it. */
    const char *cmid, *body;
    size_t cmid_len, body_len;
    json_t *c = json_object_get(o, "client_msg_id");
    const char *echo = c && json_is_string(c) && json_string_length(c) <= 256 &&
                               chat_utf8_count(json_string_value(c), json_string_length(c)) >= 0
                           ? json_string_value(c)
                           : NULL;
    if (string_field(ss, echo, o, "client_msg_id", CLIENT_MSG_ID_MAX_CHARS, true, &cmid,
                     &cmid_len) < 0)
        return;
    json_t *cid = json_object_get(o, "conversation_id");
    if (!cid || !json_is_integer(cid)) {
        send_error(ss, cmid, "bad_request", "conversation_id must be an integer");
        return;
    }
    if (json_integer_value(cid) < 1) {
        send_error(ss, cmid, "invalid_field", "conversation_id must be a positive id");
        return;
    }
    if (string_field(ss, cmid, o, "body", BODY_MAX_CHARS, false, &body, &body_len) < 0)
        return;
    if (ss->inflight >= MAX_INFLIGHT) {
        send_error(ss, cmid, "rate_limited", "too many sends waiting on this connection");
        return;
    }
    ws_send_t *op = chat_calloc(1, sizeof *op);
    op->ss = ss;
    op->client_msg_id = cmid ? chat_strndup(cmid, cmid_len) : NULL;
    ss->inflight++;
    chat_msg_send(ss->api->ctx, ss->user_id, (int64_t)json_integer_value(cid), body, body_len,
                  op->client_msg_id, send_reply_cb, op);
}

static void on_message(chat_ws_conn_t *ws, const char *msg, size_t len, bool binary, void *ud)
{
    session_t *ss = ud;
    if (binary) {
        send_error(ss, NULL, "bad_request", "messages must be JSON text");
        return;
    }
    json_error_t err;
    json_t *o = json_loadb(msg, len, 0, &err);
    if (!o || !json_is_object(o)) {
        send_error(ss, NULL, "bad_request",
                   o ? "the message must be a JSON object" : "the message is not valid JSON");
        json_decref(o);
        return;
    }
    json_t *type = json_object_get(o, "type");
    if (!type || !json_is_string(type))
        send_error(ss, NULL, "bad_request", "type must be a string");
    else if (!strcmp(json_string_value(type), "send"))
        handle_send(ss, o);
    else
        send_error(ss, NULL, "bad_request", "unknown message type");
    json_decref(o);
}

static void on_close(chat_ws_conn_t *ws, void *ud)
{
    session_t *ss = ud;
    chat_stream_unsubscribe(ss->api->ctx->stream, ss->sub);
    ss->sub = NULL;
    ss->ws = NULL;
    session_maybe_free(ss);
}

static void deliver_cb(const char *frame, size_t len, void *ud)
{
    session_t *ss = ud;
    if (ss->ws)
        chat_ws_conn_send_text(ss->ws, frame, len);
}

void chat_h_stream(chat_call_t *call)
{
    static const chat_ws_conn_handler_t handler = {on_message, on_close};
    const char *why;
    int st = chat_ws_handshake_check(call->req, &why);
    if (st != 0) {
        chat_call_error(call, st, "bad_request", why,
                        st == 426 ? "Sec-WebSocket-Version: 13\r\n" : NULL);
        return;
    }
    chat_api_t *api = call->api;
    if (!api->ctx->stream) {
        chat_call_error(call, 503, "unavailable", "realtime delivery is not running",
                        "Retry-After: 1\r\n");
        return;
    }
    session_t *ss = chat_calloc(1, sizeof *ss);
    ss->api = api;
    ss->user_id = call->user_id;
    chat_http_request_t *req = chat_call_release(call);
    ss->ws = chat_ws_conn_accept(req, &handler, ss);
    if (!ss->ws) {
        free(ss);
        return;
    }
    ss->sub = chat_stream_subscribe(api->ctx->stream, ss->user_id, deliver_cb, ss);
}
