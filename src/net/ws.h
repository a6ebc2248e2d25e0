/*
 * WebSocket (RFC 6455) for the HTTP server: the opening handshake's checks and
 * accept key, and a protocol engine that turns received bytes into
 * whole, validated text messages and queued messages into frames. The engine
 * does no I/O of its own: net/ws_conn.c feeds it what the socket read and writes
 * what it outputs, so unit tests can drive it with plain buffers.
 */
#ifndef CHAT_NET_WS_H
#define CHAT_NET_WS_H

#include "core/alloc.h"
#include "net/http.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Largest message a client may send (after reassembly); a longer one fails with 1009. */
#define CHAT_WS_MAX_MESSAGE (64 * 1024)

/* Close codes chatd sends (RFC 6455 7.4.1). */
#define CHAT_WS_CLOSE_NORMAL 1000
#define CHAT_WS_CLOSE_GOING_AWAY 1001
#define CHAT_WS_CLOSE_PROTOCOL_ERROR 1002
#define CHAT_WS_CLOSE_INVALID_DATA 1007
#define CHAT_WS_CLOSE_TOO_BIG 1009

/** Length of a Sec-WebSocket-Accept value plus its NUL. */
#define CHAT_WS_ACCEPT_LEN 29

/**
 * Writes base64(SHA-1(key + RFC 6455 GUID)), the Sec-WebSocket-Accept value
 * for the client's Sec-WebSocket-Key, NUL-terminated, into out.
 */
void chat_ws_accept_key(const char *key, size_t len, char out[CHAT_WS_ACCEPT_LEN]);

/** True when key is the base64 text of exactly 16 bytes (RFC 6455 4.1). */
bool chat_ws_key_valid(const char *key, size_t len);

/**
 * Checks the opening handshake of req (RFC 6455 4.2.1): GET, HTTP/1.1,
 * Upgrade: websocket, Connection: Upgrade, a valid Sec-WebSocket-Key and
 * Sec-WebSocket-Version: 13. Returns 0 when it may be upgraded, else the
 * status to answer — 400, or 426 for a missing or unsupported version (then
 * the answer carries "Sec-WebSocket-Version: 13") — with a message for
 * clients in *why.
 */
int chat_ws_handshake_check(const chat_http_request_t *req, const char **why);

/**
 * True when a handshake with this Origin header (NULL: none was sent) may
 * open a WebSocket: allowed is a comma-separated list of origins
 * ("https://chat.example, http://localhost:8080"), compared with the header
 * whole and without regard to case; NULL or blank allows every origin. A
 * handshake without Origin does not come from a browser page and is
 * allowed: the check keeps other sites' pages from using a signed-in
 * browser's credentials, which only browsers send with an Origin.
 */
bool chat_ws_origin_allowed(const char *allowed, const char *origin);

typedef struct chat_ws_engine chat_ws_engine_t;

typedef struct chat_ws_engine_cbs {
    /** A complete text message in valid UTF-8; the bytes are valid during the call. */
    void (*on_text)(void *ud, const char *msg, size_t len);
    /** A complete binary message (chatd speaks JSON text: the caller answers an error). */
    void (*on_binary)(void *ud, const char *msg, size_t len);
    /** Frame bytes to send, in order; the callee copies them. */
    void (*on_output)(void *ud, const void *data, size_t len);
} chat_ws_engine_cbs_t;

/**
 * Creates a server-side engine: client frames must be masked, control frames
 * short and unfragmented, text valid UTF-8 (else close 1007) and messages at
 * most max_message bytes (else close 1009); any other breach of RFC 6455
 * closes with 1002. Pings are answered, a close is echoed. cbs is copied.
 */
chat_ws_engine_t *chat_ws_engine_create(const chat_ws_engine_cbs_t *cbs, void *ud,
                                        size_t max_message);
void chat_ws_engine_destroy(chat_ws_engine_t *e);

/**
 * Processes received bytes: complete messages go to on_text/on_binary
 * (which may queue answers), control frames are answered. Queued frames go
 * out only on chat_ws_engine_flush(). Returns 0, or -1 when the engine failed
 * hard: close the connection without a frame (today it always returns 0).
 */
int chat_ws_engine_feed(chat_ws_engine_t *e, const void *data, size_t len) CHAT_MUSTCHECK;

/** Queues a text message (copied). -1 once a close was queued or sent. */
int chat_ws_engine_send_text(chat_ws_engine_t *e, const char *msg, size_t len);
/** Queues a ping with an empty payload. -1 once a close was queued or sent. */
int chat_ws_engine_ping(chat_ws_engine_t *e);
/** Queues a close frame with code and a short reason (may be NULL); read stays open for the echo.
 */
int chat_ws_engine_close(chat_ws_engine_t *e, uint16_t code, const char *reason);
/** Serialises every queued frame through on_output. Returns 0 or -1 (hard failure). */
int chat_ws_engine_flush(chat_ws_engine_t *e) CHAT_MUSTCHECK;

/** True while the engine still reads frames (no close received, no failure). */
bool chat_ws_engine_want_read(const chat_ws_engine_t *e);
/** True when nothing more will be read or written: the connection may close. */
bool chat_ws_engine_finished(const chat_ws_engine_t *e);
/** True once a close frame was queued (by either side's doing). */
bool chat_ws_engine_closing(const chat_ws_engine_t *e);
/** The close code sent, 0 if none yet. */
uint16_t chat_ws_engine_close_code(const chat_ws_engine_t *e);

#endif
