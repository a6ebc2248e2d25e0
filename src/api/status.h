/*
 * The one table from chatd's error codes (core/error.h) to the answers of the
 * contract: HTTP status, error code string, default message and extra
 * headers; and from a success kind to 200/201/204. REST answers (api.c) and
 * the WebSocket session's error frames (ws_session.c) both read it.
 */
#ifndef CHAT_API_STATUS_H
#define CHAT_API_STATUS_H

#include "chat/chat.h"
#include "core/error.h"

/** One row of the table. */
typedef struct chat_api_status {
    int http;            /* HTTP status */
    const char *code;    /* the contract's error code: "not_found" */
    const char *message; /* default message when the caller gives none */
    const char *headers; /* extra response headers ("Retry-After: 1\r\n"), or NULL */
} chat_api_status_t;

/**
 * The row for err. Domain codes map one to one (CHAT_ENOTFOUND -> 404
 * not_found); every other value (transport codes, libuv codes, CHAT_EOK)
 * maps to 503 unavailable: a failure the client may retry. Never NULL.
 */
const chat_api_status_t *chat_api_status_of(int err);

/** The HTTP status of a success: 200, 201 or 204. */
int chat_api_status_ok(chat_reply_kind_t kind);

#endif
