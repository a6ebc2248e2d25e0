/*
 * The REST API: routes each HTTP request to its handler, decodes and
 * validates input, calls chat/ and maps its answers to HTTP statuses and the
 * contract's error bodies. One chat_api_t per worker.
 */
#ifndef CHAT_API_API_H
#define CHAT_API_API_H

#include "cache/shared.h"
#include "chat/chat.h"
#include "core/config.h"
#include "net/http.h"

#include <stdint.h>

typedef struct chat_api {
    chat_ctx_t *ctx;
    const chat_config_t *cfg;
    chat_cache_shared_t *cache_shared; /* bypass switch and totals (ctx->cache may be NULL) */
} chat_api_t;

/** The HTTP handler; req->server_data must point to a chat_api_t. */
void chat_api_handle(chat_http_request_t *req);

/* ---- pieces exposed for unit tests ---- */

typedef struct chat_route chat_route_t;

/**
 * Finds the route for a path. Returns the route or NULL (404). When the
 * route has an {id} segment, its raw text is returned in *id_seg and *id_len.
 */
const chat_route_t *chat_api_route_match(const char *path, size_t len, const char **id_seg,
                                         size_t *id_len);
/**
 * chat_api_route_match for routes with up to two {id} segments: the raw text
 * of each in seg[i] and seglen[i] (NULL and 0 when absent).
 */
const chat_route_t *chat_api_route_match2(const char *path, size_t len, const char *seg[2],
                                          size_t seglen[2]);
/** The route's template, e.g. "/api/v1/users/{id}". */
const char *chat_api_route_name(const chat_route_t *r);
/** Allow header value of the route, e.g. "GET, POST". */
const char *chat_api_route_allow(const chat_route_t *r);

/** Parses a positive 64-bit decimal id (1..INT64_MAX, digits only). 0 on success, -1 otherwise. */
int chat_api_parse_id(const char *s, size_t len, int64_t *out);

typedef struct chat_api_history_params {
    int limit, offset;
    int64_t before_id;
} chat_api_history_params_t;

/**
 * Parses the history query (limit, offset, before_id; defaults 50, 0, none).
 * Returns 0, or -1 with a message for a 400 in *why.
 */
int chat_api_parse_history_query(const char *q, size_t len, chat_api_history_params_t *out,
                                 const char **why);

/**
 * Finds parameter name in a query string and percent-decodes its value into
 * out (size cap). Returns 1 when found, 0 when absent, -1 (with *why) when
 * repeated, undecodable or too long.
 */
int chat_api_query_string(const char *q, size_t len, const char *name, char *out, size_t cap,
                          const char **why);

/**
 * Extracts the token of an "Authorization: Bearer <token>" value. Returns 0
 * with the token span, or -1 when the header is malformed.
 */
int chat_api_bearer(const char *header, const char **tok, size_t *len);

#endif
