/*
 * GET /api/v1/stream: the WebSocket session of a signed-in user. After the
 * handshake (checked here, once; answered by net/ws_conn.c) the socket is
 * registered with the worker's realtime stream, which pushes every event of
 * the user's conversations in rev order (realtime/stream.h). Client frames
 * are decoded by api/stream_frame.c (the validators of validate.h): "send"
 * goes through the same send rate limit and chat_msg_send() as POST
 * .../messages (chat_api_msg_send_limited), answered with an "ack" or an
 * "error" frame whose code comes from the status table (status.h); "typing"
 * and "resume" go to the stream. A malformed client message gets an "error"
 * frame and the connection stays up.
 */
#include "api/internal.h"
#include "api/status.h"
#include "api/stream_frame.h"
#include "api/validate.h"
#include "realtime/stream.h"
#include "core/alloc.h"
#include "core/json.h"
#include "core/log.h"
#include "net/ws.h"
#include "net/ws_conn.h"

#include <stdlib.h>
#include <string.h>

/* Sends of one connection waiting for the database; more are refused, as HTTP caps pipelining. */
#define MAX_INFLIGHT 32

/* One WebSocket of a user; freed once the socket is gone and no send is in flight. */
typedef struct session {
    chat_api_t *api;
    chat_call_t *call;  /* until the upgrade is answered */
    chat_ws_conn_t *ws; /* NULL before the upgrade and once gone */
    chat_stream_sub_t *sub;
    int64_t user_id;
    int inflight;
    chat_buf_t early; /* frames before the upgrade: 4-byte length, then the bytes */
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

/* An error frame with the code of err's row in the status table; message NULL: its default text. */
static void send_error(session_t *ss, const char *cmid, int err, const char *message)
{
    const chat_api_status_t *st = chat_api_status_of(err);
    const char *code = st->code;
    if (!message)
        message = st->message;
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

static void send_reply_cb(chat_reply_t *r, void *arg)
{
    ws_send_t *op = arg;
    session_t *ss = op->ss;
    ss->inflight--;
    if (ss->ws) {
        if (r->err == CHAT_EOK) {
            chat_buf_t b = CHAT_BUF_INIT;
            chat_buf_reserve(&b, r->body_len + 96);
            chat_buf_puts(&b, "{\"type\":\"ack\",\"client_msg_id\":");
            put_cmid(&b, op->client_msg_id);
            chat_buf_puts(&b, ",\"message\":");
            chat_buf_append(&b, r->body, r->body_len);
            chat_buf_putc(&b, '}');
            send_frame(ss, &b);
        } else {
            send_error(ss, op->client_msg_id, r->err, r->message);
        }
    }
    free(r->body);
    free(op->client_msg_id);
    free(op);
    session_maybe_free(ss);
}

static void handle_send(session_t *ss, const chat_api_frame_t *f)
{
    if (ss->inflight >= MAX_INFLIGHT) {
        send_error(ss, f->client_msg_id, CHAT_ERATELIMITED,
                   "too many sends waiting on this connection");
        return;
    }
    ws_send_t *op = chat_calloc(1, sizeof *op);
    op->ss = ss;
    op->client_msg_id =
        f->client_msg_id ? chat_strndup(f->client_msg_id, f->client_msg_id_len) : NULL;
    ss->inflight++;
    chat_api_msg_send_limited(ss->api, ss->user_id, f->conv_id, f->body, f->body_len,
                              op->client_msg_id, send_reply_cb, op);
}

static void on_message(chat_ws_conn_t *ws, const char *msg, size_t len, bool binary, void *ud)
{
    session_t *ss = ud;
    chat_api_frame_t f;
    char why[CHAT_API_WHY_MAX];
    int err = chat_api_frame_decode(msg, len, binary, &f, why);
    if (f.release)
        chat_stream_release(ss->api->ctx->stream, ss->sub);
    if (err)
        send_error(ss, f.client_msg_id, err, why);
    else if (f.type == CHAT_API_FRAME_SEND)
        handle_send(ss, &f);
    else if (f.type == CHAT_API_FRAME_TYPING)
        chat_stream_typing(ss->api->ctx->stream, ss->sub, f.conv_id);
    else if (chat_stream_resume(ss->api->ctx->stream, ss->sub, f.convs, f.revs, f.n_positions) != 0)
        send_error(ss, NULL, CHAT_ECONFLICT, "a resume of this connection is not finished yet");
    chat_api_frame_dispose(&f);
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
    if (ss->ws) {
        chat_ws_conn_send_text(ss->ws, frame, len);
    } else if (ss->call) {
        uint32_t n = (uint32_t)len;
        chat_buf_append(&ss->early, (const char *)&n, sizeof n);
        chat_buf_append(&ss->early, frame, len);
    }
}

/*
 * The user's conversations are followed: the upgrade is answered now, so
 * that every event committed after the client sees the 101 reaches it.
 */
static void ready_cb(int err, void *ud)
{
    static const chat_ws_conn_handler_t handler = {on_message, on_close};
    session_t *ss = ud;
    chat_call_t *call = ss->call;
    ss->call = NULL;
    if (err != 0) {
        chat_stream_unsubscribe(ss->api->ctx->stream, ss->sub);
        chat_buf_dispose(&ss->early);
        free(ss);
        chat_call_fail(call, CHAT_EUNAVAILABLE, "the conversations could not be read");
        return;
    }
    chat_http_request_t *req = chat_call_release(call);
    ss->ws = chat_ws_conn_accept(req, &handler, ss);
    if (!ss->ws) {
        chat_stream_unsubscribe(ss->api->ctx->stream, ss->sub);
        chat_buf_dispose(&ss->early);
        free(ss);
        return;
    }
    for (size_t off = 0; off + sizeof(uint32_t) <= ss->early.len;) {
        uint32_t n;
        memcpy(&n, ss->early.data + off, sizeof n);
        off += sizeof n;
        chat_ws_conn_send_text(ss->ws, ss->early.data + off, n);
        off += n;
    }
    chat_buf_dispose(&ss->early);
}

void chat_h_stream(chat_call_t *call)
{
    if (!chat_ws_origin_allowed(call->api->cfg->allowed_origins, call->req->origin)) {
        chat_call_fail(call, CHAT_EFORBIDDEN, "this Origin may not open the stream");
        return;
    }
    const char *why;
    int st = chat_ws_handshake_check(call->req, &why);
    if (st != 0) {
        chat_call_error(call, st, "bad_request", why,
                        st == 426 ? "Sec-WebSocket-Version: 13\r\n" : NULL);
        return;
    }
    chat_api_t *api = call->api;
    if (!api->ctx->stream) {
        chat_call_fail(call, CHAT_EUNAVAILABLE, "realtime delivery is not running");
        return;
    }
    session_t *ss = chat_calloc(1, sizeof *ss);
    ss->api = api;
    ss->user_id = call->user_id;
    ss->call = call;
    ss->sub = chat_stream_subscribe(api->ctx->stream, ss->user_id, deliver_cb, ready_cb, ss);
}
