/*
 * WebSocket connections (see ws_conn.h). chat_ws_conn_accept() answers the
 * handshake through net/http1.c, which hands the connection over once the
 * 101 is on its way (on_switch): from then on this file is the connection's
 * protocol. Until then frames wait in the engine; after it the connection
 * reads frames only, sits on the ping timer list and never parses HTTP again.
 */
#include "net/ws_conn.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "core/error.h"
#include "core/log.h"
#include "net/conn.h"
#include "net/http1.h"
#include "net/ws.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct chat_ws_conn {
    chat_conn_t *conn; /* NULL until the connection is handed over */
    chat_ws_engine_t *engine;
    chat_ws_conn_handler_t handler;
    void *ud;
    uint64_t id;
    char *input; /* the client's first frames, sent with its handshake */
    size_t input_len;
    chat_buf_t out;  /* frames serialised by the engine, not yet written */
    bool in_process; /* feeding the engine: sends are queued, flushed after */
    bool ping_sent;  /* a ping is out and the client has sent nothing since */
};

struct ws_write {
    chat_conn_write_t w;
    char *data;
};

static const chat_conn_proto_t ws_proto;

static void settle(chat_ws_conn_t *ws);

static uv_once_t gauge_once = UV_ONCE_INIT;
static chat_metric_t *gauge;

static void gauge_init(void)
{
    gauge = chat_conn_gauge("websocket");
}

/* ---- the engine's callbacks ---- */

static void on_text(void *ud, const char *msg, size_t len)
{
    chat_ws_conn_t *ws = ud;
    if (!ws->conn->closing && ws->handler.on_message)
        ws->handler.on_message(ws, msg, len, false, ws->ud);
}

static void on_binary(void *ud, const char *msg, size_t len)
{
    chat_ws_conn_t *ws = ud;
    if (!ws->conn->closing && ws->handler.on_message)
        ws->handler.on_message(ws, msg, len, true, ws->ud);
}

static void on_output(void *ud, const void *data, size_t len)
{
    chat_ws_conn_t *ws = ud;
    chat_buf_append(&ws->out, data, len);
}

/* ---- writing ---- */

static void write_cb(chat_conn_t *c, chat_conn_write_t *w, int status)
{
    struct ws_write *ww = CHAT_CONTAINER_OF(w, struct ws_write, w);
    free(ww->data);
    free(ww);
    if (!c->closing && status >= 0)
        settle(c->data);
}

/* Serialises the engine's queued frames and writes them as one write. */
static void flush(chat_ws_conn_t *ws)
{
    chat_conn_t *c = ws->conn;
    if (!c || c->closing || c->lingering || ws->in_process)
        return;
    if (chat_ws_engine_flush(ws->engine) < 0) {
        chat_conn_close(c, "ws_engine_error");
        return;
    }
    if (ws->out.len == 0)
        return;
    struct ws_write *ww = chat_malloc(sizeof *ww);
    size_t len;
    ww->data = chat_buf_steal(&ws->out, &len);
    uv_buf_t b = uv_buf_init(ww->data, (unsigned)len);
    int rc = chat_conn_write(c, &ww->w, &b, 1, write_cb);
    if (rc != 0) {
        free(ww->data);
        free(ww);
        if (rc < 0) {
            chat_conn_close(c, "write_error");
            return;
        }
    }
    /* A client that does not read is not given unbounded memory: it goes, as in HTTP. */
    if (chat_conn_output_full(c))
        chat_conn_close(c, "ws_slow_reader");
}

/* ---- reading ---- */

/* Frames from the client: any input proves it alive. */
static void input(chat_ws_conn_t *ws, const char *data, size_t len)
{
    chat_conn_t *c = ws->conn;
    ws->ping_sent = false;
    chat_conn_timer_set(c, CHAT_CONN_TIMER_PING);
    ws->in_process = true;
    int rc = chat_ws_engine_feed(ws->engine, data, len);
    ws->in_process = false;
    if (rc < 0)
        chat_conn_close(c, "ws_engine_error");
}

/*
 * Brings the connection in line with its engine: feeds what came with the
 * handshake, writes queued frames, reads while the engine wants frames, and
 * ends the connection once the close handshake is over (or at once after our
 * close frame when the server is closing).
 */
static void settle(chat_ws_conn_t *ws)
{
    chat_conn_t *c = ws->conn;
    if (!c || c->closing || c->lingering || ws->in_process)
        return;
    if (ws->input) {
        char *in = ws->input;
        size_t len = ws->input_len;
        ws->input = NULL;
        ws->input_len = 0;
        input(ws, in, len);
        free(in);
        if (c->closing)
            return;
    }
    bool server_closing = c->set->closing;
    if (server_closing && !chat_ws_engine_closing(ws->engine))
        chat_ws_engine_close(ws->engine, CHAT_WS_CLOSE_GOING_AWAY, "server shutting down");
    flush(ws);
    if (c->closing)
        return;
    if (chat_ws_engine_finished(ws->engine) ||
        (server_closing && chat_ws_engine_closing(ws->engine))) {
        if (c->writes_pending == 0) {
            chat_log_debug("event=ws_close conn=%llu code=%u", (unsigned long long)c->id,
                           (unsigned)chat_ws_engine_close_code(ws->engine));
            chat_conn_linger(c, server_closing ? "server_closing" : "ws_closed");
        } else {
            chat_conn_read(c, false);
        }
        return;
    }
    chat_conn_read(c, chat_ws_engine_want_read(ws->engine));
}

/* ---- the connection's events ---- */

static void on_data(chat_conn_t *c, const char *data, size_t len)
{
    chat_ws_conn_t *ws = c->data;
    input(ws, data, len);
    settle(ws);
}

static void on_eof(chat_conn_t *c)
{
    chat_conn_close(c, "ws_client_gone");
}

static void on_resume(chat_conn_t *c)
{
    settle(c->data);
}

static void on_timeout(chat_conn_t *c, enum chat_conn_timer timer)
{
    chat_ws_conn_t *ws = c->data;
    if (ws->ping_sent) {
        /* Silent for two intervals, not even a pong: the peer is gone. */
        chat_conn_close(c, "ws_ping_timeout");
        return;
    }
    ws->ping_sent = true;
    chat_conn_timer_set(c, CHAT_CONN_TIMER_PING);
    if (chat_ws_engine_ping(ws->engine) == 0)
        settle(ws);
}

/* The server is closing: settle() says 1001 to the client, then ends. */
static void on_shutdown(chat_conn_t *c)
{
    settle(c->data);
}

static void on_closed(chat_conn_t *c)
{
    chat_ws_conn_t *ws = c->data;
    if (ws->handler.on_close)
        ws->handler.on_close(ws, ws->ud);
    chat_ws_engine_destroy(ws->engine);
    free(ws->input);
    chat_buf_dispose(&ws->out);
    free(ws);
}

/* From net/http1.c: the 101 is on its way (or the connection is closing). */
static void on_switch(chat_conn_t *c, char *in, size_t len, void *ud)
{
    chat_ws_conn_t *ws = ud;
    ws->conn = c;
    ws->input = in;
    ws->input_len = len;
    chat_conn_switch(c, &ws_proto, ws);
    if (c->closing)
        return;
    uv_once(&gauge_once, gauge_init);
    chat_conn_gauge_move(c, gauge);
    chat_conn_timer_set(c, CHAT_CONN_TIMER_PING);
    chat_log_debug("event=ws_open conn=%llu", (unsigned long long)c->id);
    chat_conn_kick(c); /* the input is fed on the next iteration, outside the handler */
}

/* ---- the API ---- */

chat_ws_conn_t *chat_ws_conn_accept(chat_http_request_t *req, const chat_ws_conn_handler_t *h,
                                    void *ud)
{
    const char *key = req->ws_key ? req->ws_key : "";
    size_t klen = strlen(key);
    while (*key == ' ' || *key == '\t') {
        key++;
        klen--;
    }
    while (klen && (key[klen - 1] == ' ' || key[klen - 1] == '\t'))
        klen--;
    char accept[CHAT_WS_ACCEPT_LEN];
    chat_ws_accept_key(key, klen, accept);
    char headers[128];
    snprintf(headers, sizeof headers, "Upgrade: websocket\r\nSec-WebSocket-Accept: %s\r\n", accept);

    static const chat_ws_engine_cbs_t cbs = {on_text, on_binary, on_output};
    chat_ws_conn_t *ws = chat_calloc(1, sizeof *ws);
    ws->engine = chat_ws_engine_create(&cbs, ws, CHAT_WS_MAX_MESSAGE);
    ws->handler = *h;
    ws->ud = ud;
    ws->id = req->conn_id;
    if (chat_http1_upgrade(req, headers, on_switch, ws) < 0) {
        chat_ws_engine_destroy(ws->engine);
        free(ws);
        return NULL;
    }
    return ws;
}

int chat_ws_conn_send_text(chat_ws_conn_t *ws, const char *msg, size_t len)
{
    chat_conn_t *c = ws->conn;
    if ((c && (c->closing || c->lingering)) || chat_ws_engine_send_text(ws->engine, msg, len) < 0)
        return CHAT_ECLOSED;
    flush(ws);
    return 0;
}

void chat_ws_conn_close(chat_ws_conn_t *ws, uint16_t code, const char *reason)
{
    chat_conn_t *c = ws->conn;
    if ((c && (c->closing || c->lingering)) || chat_ws_engine_close(ws->engine, code, reason) < 0)
        return;
    settle(ws);
}

uint64_t chat_ws_conn_id(const chat_ws_conn_t *ws)
{
    return ws->id;
}

static const chat_conn_proto_t ws_proto = {
    .name = "websocket",
    .on_data = on_data,
    .on_eof = on_eof,
    .on_resume = on_resume,
    .on_timeout = on_timeout,
    .on_shutdown = on_shutdown,
    .on_closed = on_closed,
};
