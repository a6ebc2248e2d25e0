/*
 * The REST API: routes each HTTP request to its handler, decodes and
 * validates input, calls chat/ and maps its answers to HTTP statuses and the
 * contract's error bodies. One chat_api_t per worker.
 */
#ifndef CHAT_API_API_H
#define CHAT_API_API_H

#include "api/ratelimit.h"
#include "cache/shared.h"
#include "chat/chat.h"
#include "core/config.h"
#include "net/http.h"

#include <stdint.h>

typedef struct chat_api {
    chat_ctx_t *ctx;
    const chat_config_t *cfg;
    chat_cache_shared_t *cache_shared; /* bypass switch and totals (ctx->cache may be NULL) */
    chat_ratelimit_t *rate;            /* the worker's rate limiter; NULL: no limits */
} chat_api_t;

/** The HTTP handler; req->server_data must point to a chat_api_t. */
void chat_api_handle(chat_http_request_t *req);

/* ---- pieces exposed for unit tests ---- */

typedef struct chat_route chat_route_t;

/**
 * Finds the route for a path. Returns the route or NULL (404). The raw text
 * of the route's first placeholder segment ({id}) is returned in *id_seg and
 * *id_len, that of a second one ({message_id}) in *sub_seg and *sub_len
 * (sub_seg may be NULL when the caller wants only the first); NULL when the
 * route has none.
 */
const chat_route_t *chat_api_route_match(const char *path, size_t len, const char **id_seg,
                                         size_t *id_len, const char **sub_seg, size_t *sub_len);
/** The route's template, e.g. "/api/v1/users/{id}". */
const char *chat_api_route_name(const chat_route_t *r);
/** Allow header value of the route, e.g. "GET, POST". */
const char *chat_api_route_allow(const chat_route_t *r);

/**
 * Parses a positive 64-bit decimal id (1..INT64_MAX, digits only, no leading
 * zero). 0 on success, -1 otherwise.
 */
int chat_api_parse_id(const char *s, size_t len, int64_t *out);

typedef struct chat_api_history_params {
    int limit, offset;
    int64_t before_id; /* 0: none */
    int64_t after_seq; /* -1: none */
} chat_api_history_params_t;

/**
 * Parses the history query (limit, offset, before_id, after_seq; defaults
 * 50, 0, none, none). after_seq beside offset or before_id is refused.
 * Returns 0, or -1 with a message for a 400 in *why.
 */
int chat_api_parse_history_query(const char *q, size_t len, chat_api_history_params_t *out,
                                 const char **why);

typedef struct chat_api_events_params {
    int64_t after_rev; /* 0.. (default 0) */
    int limit;         /* 1..1000 (default 100) */
} chat_api_events_params_t;

/** Parses the events query (after_rev, limit). Returns 0, or -1 with *why. */
int chat_api_parse_events_query(const char *q, size_t len, chat_api_events_params_t *out,
                                const char **why);

/**
 * Finds parameter name in a query string and percent-decodes its value into
 * out (size cap). Returns 1 when found, 0 when absent, -1 (with *why) when
 * repeated, empty, undecodable or too long, or when any pair of the query is
 * malformed (a bad percent escape, or one that decodes to a NUL).
 */
int chat_api_query_string(const char *q, size_t len, const char *name, char *out, size_t cap,
                          const char **why);

/**
 * The rate-limit subject of a bearer token (ratelimit.h): "t:" and 32 hex
 * digits of a SHA-256 of the token under a prefix of its own, so neither the
 * token nor the hash the database stores appears in Redis.
 */
void chat_api_rate_token_subject(const char *tok, size_t len, char out[CHAT_RATELIMIT_SUBJECT_MAX]);

/**
 * The rate-limit subject of a client address: "a:" and an IPv4 address
 * (an IPv4-mapped IPv6 address counts as its IPv4 address), or an IPv6
 * address's /64 prefix ("a:2001:db8:1:2::/64": one client is given a whole
 * /64). Returns 0, or -1 for another address family.
 */
int chat_api_rate_address_subject(const struct sockaddr *sa, char out[CHAT_RATELIMIT_SUBJECT_MAX]);

/**
 * The integer parameter name of a query: plain decimal digits, no leading
 * zero, from min to max. Returns 1 with *out when found, 0 when absent (*out
 * untouched), -1 with *why when repeated, malformed or out of range
 * (range_why then).
 */
int chat_api_query_int(const char *q, size_t len, const char *name, long long min, long long max,
                       const char *range_why, long long *out, const char **why);

/**
 * Extracts the token of an "Authorization: Bearer <token>" value. Returns 0
 * with the token span, or -1 when the header is malformed.
 */
int chat_api_bearer(const char *header, const char **tok, size_t *len);

#endif
