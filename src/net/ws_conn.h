/*
 * A WebSocket connection of the HTTP server (RFC 6455): accepted from an
 * HTTP/1.1 upgrade request, it takes the connection over once the 101 is on
 * its way, turns the client's frames into messages with the engine of
 * net/ws.h, pings a client that falls silent and runs the close handshake.
 */
#ifndef CHAT_NET_WS_CONN_H
#define CHAT_NET_WS_CONN_H

#include "net/http.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** A connection upgraded to WebSocket; valid until its on_close callback returns. */
typedef struct chat_ws_conn chat_ws_conn_t;

typedef struct chat_ws_conn_handler {
    /**
     * A complete message from the client: text (valid UTF-8) or, with binary
     * set, a binary message. The bytes are valid during the call. May send
     * and close.
     */
    void (*on_message)(chat_ws_conn_t *ws, const char *msg, size_t len, bool binary, void *ud);
    /**
     * The connection is gone (closed by either side, failed, or the server
     * closing). Fires exactly once, from a libuv close callback, never from
     * inside another call of this API; ws is invalid after it returns.
     */
    void (*on_close)(chat_ws_conn_t *ws, void *ud);
} chat_ws_conn_handler_t;

/**
 * Accepts the WebSocket handshake of req. The caller has checked it with
 * chat_ws_handshake_check() (net/ws.h) and answered a failure itself: the
 * check is made there, once. Answers 101 with Sec-WebSocket-Accept (after
 * any earlier pipelined answers), after which the connection is a WebSocket:
 * bytes the client sent after the handshake are its first frames, the HTTP
 * timeouts no longer apply, it is pinged when silent and it is counted as
 * kind="websocket". Messages sent before the 101 is out wait for it. Ends
 * req's life like chat_http_respond(). Returns the connection, with h and ud
 * kept for its callbacks; or NULL when the client has gone, the request is
 * no upgrade request (answered 400) or the server is closing (answered 503):
 * no callback then ever fires.
 */
chat_ws_conn_t *chat_ws_conn_accept(chat_http_request_t *req, const chat_ws_conn_handler_t *h,
                                    void *ud);

/**
 * Queues a text message (copied) to the client and starts writing it.
 * Returns 0, or CHAT_ECLOSED when the connection is closing (nothing sent).
 * A client whose unsent output passes max_pending_output is dropped (its
 * on_close follows later).
 */
int chat_ws_conn_send_text(chat_ws_conn_t *ws, const char *msg, size_t len);

/** Starts the close handshake with code and a short reason (may be NULL). */
void chat_ws_conn_close(chat_ws_conn_t *ws, uint16_t code, const char *reason);

/** The id of the connection, for logs. */
uint64_t chat_ws_conn_id(const chat_ws_conn_t *ws);

#endif
