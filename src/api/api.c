/*
 * Routing, authentication and error answers: the path every API call takes
 * before its handler, and the single place where a call ends.
 */
#include "api/internal.h"
#include "api/status.h"
#include "api/validate.h"
#include "core/alloc.h"
#include "core/json.h"
#include "core/log.h"

#include <http_parser.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const chat_route_t routes[] = {
    /* The web client and the OpenAPI document, compiled in (static.c). */
    {"/", "GET, HEAD", {{HTTP_GET, chat_h_static, AUTH_NONE}}},
    {"/favicon.ico", "GET, HEAD", {{HTTP_GET, chat_h_static, AUTH_NONE}}},
    {"/app/{asset}", "GET, HEAD", {{HTTP_GET, chat_h_static, AUTH_NONE}}},
    {"/api/openapi.json", "GET, HEAD", {{HTTP_GET, chat_h_static, AUTH_NONE}}},
    {"/healthz", "GET", {{HTTP_GET, chat_h_healthz, AUTH_NONE}}},
    {"/readyz", "GET", {{HTTP_GET, chat_h_readyz, AUTH_NONE}}},
    {"/metrics", "GET", {{HTTP_GET, chat_h_metrics, AUTH_NONE}}},
    {"/api/cache/metrics", "GET", {{HTTP_GET, chat_h_cache_metrics, AUTH_NONE}}},
    {"/api/cache/bypass", "POST", {{HTTP_POST, chat_h_cache_bypass, AUTH_ADMIN}}},
    {"/api/cache/keys", "DELETE", {{HTTP_DELETE, chat_h_cache_keys_delete, AUTH_ADMIN}}},
    {"/api/v1/users", "POST", {{HTTP_POST, chat_h_signup, AUTH_SIGNUP}}},
    {"/api/v1/users/{id}", "GET", {{HTTP_GET, chat_h_user_get, AUTH_USER}}},
    {"/api/v1/conversations",
     "GET, POST",
     {{HTTP_GET, chat_h_inbox, AUTH_USER}, {HTTP_POST, chat_h_conv_create, AUTH_USER}}},
    {"/api/v1/conversations/{id}", "GET", {{HTTP_GET, chat_h_conv_get, AUTH_USER}}},
    {"/api/v1/conversations/{id}/members",
     "GET, POST",
     {{HTTP_GET, chat_h_members_list, AUTH_USER}, {HTTP_POST, chat_h_member_add, AUTH_USER}}},
    {"/api/v1/conversations/{id}/members/{user_id}",
     "DELETE",
     {{HTTP_DELETE, chat_h_member_remove, AUTH_USER}}},
    {"/api/v1/conversations/{id}/read", "POST", {{HTTP_POST, chat_h_conv_read, AUTH_USER}}},
    {"/api/v1/conversations/{id}/messages",
     "GET, POST",
     {{HTTP_GET, chat_h_msg_history, AUTH_USER}, {HTTP_POST, chat_h_msg_send, AUTH_USER}}},
    {"/api/v1/conversations/{id}/messages/count", "GET", {{HTTP_GET, chat_h_msg_count, AUTH_USER}}},
    /* After .../messages/count, which the placeholder would match too. */
    {"/api/v1/conversations/{id}/messages/{message_id}",
     "PATCH, DELETE",
     {{HTTP_PATCH, chat_h_msg_edit, AUTH_USER}, {HTTP_DELETE, chat_h_msg_delete, AUTH_USER}}},
    {"/api/v1/conversations/{id}/events", "GET", {{HTTP_GET, chat_h_conv_events, AUTH_USER}}},
    {"/api/v1/stream", "GET", {{HTTP_GET, chat_h_stream, AUTH_STREAM}}},
};

/* The calls CHATD_RATE_SEND counts, besides the stream's send frames: sends and edits. */
static int counts_send(chat_handler_fn fn)
{
    return fn == chat_h_msg_send || fn == chat_h_msg_edit;
}

const char *chat_api_route_name(const chat_route_t *r)
{
    return r->pattern;
}

const char *chat_api_route_allow(const chat_route_t *r)
{
    return r->allow;
}

const chat_route_t *chat_api_route_match(const char *path, size_t len, const char **id_seg,
                                         size_t *id_len, const char **sub_seg, size_t *sub_len)
{
    for (size_t i = 0; i < CHAT_ARRAY_LEN(routes); i++) {
        const char *p = routes[i].pattern;
        size_t pi = 0, si = 0, plen = strlen(p);
        const char *seg[2] = {NULL, NULL};
        size_t seglen[2] = {0, 0};
        int nseg = 0;
        while (pi < plen && si < len) {
            if (p[pi] == '{') {
                /* A placeholder ({id}, {message_id}): one non-empty segment. */
                const char *close = strchr(p + pi, '}');
                size_t start = si;
                while (si < len && path[si] != '/')
                    si++;
                if (si == start || !close || nseg == 2)
                    break;
                seg[nseg] = path + start;
                seglen[nseg++] = si - start;
                pi = (size_t)(close - p) + 1;
            } else if (p[pi] == path[si]) {
                pi++;
                si++;
            } else {
                break;
            }
        }
        if (pi == plen && si == len) {
            *id_seg = seg[0];
            *id_len = seglen[0];
            if (sub_seg) {
                *sub_seg = seg[1];
                *sub_len = seglen[1];
            }
            return &routes[i];
        }
    }
    return NULL;
}

int chat_api_parse_id(const char *s, size_t len, int64_t *out)
{
    if (len == 0 || len > 19 || s[0] == '0')
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v == 0 || v > (uint64_t)INT64_MAX)
        return -1;
    *out = (int64_t)v;
    return 0;
}

int chat_api_bearer(const char *h, const char **tok, size_t *len)
{
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return -1;
    h += 7;
    while (*h == ' ')
        h++;
    size_t n = strlen(h);
    while (n && (h[n - 1] == ' ' || h[n - 1] == '\t'))
        n--;
    if (n == 0 || n > 512)
        return -1;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)h[i] <= ' ' || (unsigned char)h[i] >= 0x7f)
            return -1;
    *tok = h;
    *len = n;
    return 0;
}

/* ---- ending a call ---- */

static void call_end(chat_call_t *call, int status, const char *headers, char *body, size_t len)
{
    chat_http_request_t *req = call->req;
    free(call);
    req->data = NULL;
    if (body)
        chat_http_respond_owned(req, status, headers, body, len);
    else
        chat_http_respond(req, status, headers, NULL, 0);
}

chat_http_request_t *chat_call_release(chat_call_t *call)
{
    chat_http_request_t *req = call->req;
    free(call);
    req->data = NULL;
    return req;
}

void chat_call_ok(chat_call_t *call, int status, char *body, size_t len)
{
    call_end(call, status, NULL, body, len);
}

void chat_call_error(chat_call_t *call, int status, const char *code, const char *message,
                     const char *headers)
{
    chat_buf_t b = CHAT_BUF_INIT;
    chat_json_error(&b, code, message);
    size_t len;
    char *body = chat_buf_steal(&b, &len);
    call_end(call, status, headers, body, len);
}

void chat_call_fail(chat_call_t *call, int err, const char *message)
{
    const chat_api_status_t *st = chat_api_status_of(err);
    chat_call_error(call, st->http, st->code, message ? message : st->message, st->headers);
}

void chat_call_reply_cb(chat_reply_t *r, void *arg)
{
    chat_call_t *call = arg;
    if (r->err != CHAT_EOK) {
        chat_reply_body_free(r);
        chat_call_fail(call, r->err, r->message);
    } else if (r->kind == CHAT_REPLY_NO_CONTENT) {
        chat_reply_body_free(r);
        call_end(call, chat_api_status_ok(r->kind), NULL, NULL, 0);
    } else if (r->shared) {
        /* One answer shared by many reads: written from the same bytes, not copied. */
        chat_http_request_t *req = chat_call_release(call);
        chat_http_respond_shared(req, chat_api_status_ok(r->kind), NULL, r->shared);
    } else {
        chat_call_ok(call, chat_api_status_ok(r->kind), r->body, r->body_len);
    }
}

/* ---- request bodies ---- */

int chat_call_body(chat_call_t *call, chat_api_body_kind_t kind, chat_api_body_t *out)
{
    char why[CHAT_API_WHY_MAX];
    int err = chat_api_body_decode(kind, call->req->body, call->req->body_len, out, why);
    if (err) {
        chat_call_fail(call, err, why);
        return -1;
    }
    return 0;
}

/* ---- dispatch ---- */

static void run_handler(chat_call_t *call)
{
    if (call->fn == chat_h_static) {
        call->fn(call); /* its {asset} is a file name, not an id */
        return;
    }
    if ((call->id_seg && chat_api_parse_id(call->id_seg, call->id_len, &call->id) < 0) ||
        (call->sub_seg && chat_api_parse_id(call->sub_seg, call->sub_len, &call->sub_id) < 0)) {
        chat_call_fail(call, CHAT_ENOTFOUND, "not found");
        return;
    }
    call->fn(call);
}

/* A user's call: counted by its token, and a send or an edit by its user, before the handler. */
static void auth_cb(chat_err_t err, int64_t user_id, void *arg)
{
    chat_call_t *call = arg;
    if (err != CHAT_EOK) {
        chat_call_fail(call, err, NULL);
        return;
    }
    call->user_id = user_id;
    if (counts_send(call->fn))
        call->limits |= 1u << CHAT_RATE_SEND;
    chat_call_check_limits(call, run_handler);
}

/* Starts the token's check; the token's rate-limit subject is taken first (tok may not last). */
static void auth_start(chat_call_t *call, const char *tok, size_t len)
{
    chat_api_t *api = call->api;
    if (api->rate && chat_ratelimit_on(api->rate, CHAT_RATE_REQUEST)) {
        chat_api_rate_token_subject(tok, len, call->token_subject);
        call->limits |= 1u << CHAT_RATE_REQUEST;
    }
    chat_auth_check(api->ctx, tok, len, auth_cb, call);
}

static int is_admin(const chat_api_t *api, const char *tok, size_t len)
{
    const char *admin = api->cfg->admin_token;
    return admin && chat_auth_equal(tok, len, admin, strlen(admin));
}

void chat_api_handle(chat_http_request_t *req)
{
    chat_api_t *api = req->server_data;
    const char *seg, *sub;
    size_t seglen, sublen;
    const chat_route_t *route =
        chat_api_route_match(req->path, req->path_len, &seg, &seglen, &sub, &sublen);
    chat_call_t *call = chat_calloc(1, sizeof *call);
    call->req = req;
    call->api = api;
    req->data = call;
    if (!route) {
        chat_call_fail(call, CHAT_ENOTFOUND, "no such resource");
        return;
    }
    req->route = route->pattern;
    call->route = route;
    call->id_seg = seg;
    call->id_len = seglen;
    call->sub_seg = sub;
    call->sub_len = sublen;
    enum auth_mode auth = AUTH_NONE;
    int method = req->method == HTTP_HEAD ? HTTP_GET : req->method;
    for (size_t i = 0; i < CHAT_ARRAY_LEN(route->methods) && route->methods[i].fn; i++) {
        if (route->methods[i].method == method) {
            call->fn = route->methods[i].fn;
            auth = route->methods[i].auth;
        }
    }
    if (!call->fn) {
        char allow[96];
        snprintf(allow, sizeof allow, "Allow: %s\r\n", route->allow);
        chat_call_error(call, 405, "method_not_allowed", "method not allowed on this path", allow);
        return;
    }
    /* An answer to a signed-in route (its 401 too) depends on who asks: never stored. */
    req->no_store = auth != AUTH_NONE;
    const char *tok = NULL;
    size_t toklen = 0;
    int has_tok = chat_api_bearer(req->authorization, &tok, &toklen) == 0;
    switch (auth) {
    case AUTH_NONE:
        run_handler(call);
        return;
    case AUTH_SIGNUP: {
        int admin = has_tok && is_admin(api, tok, toklen);
        if (!api->cfg->signup_open && !admin) {
            chat_call_fail(call, CHAT_EUNAUTHORIZED,
                           "sign-up is closed: the admin token is required");
            return;
        }
        /* Counted by the client's address; the admin token never is. */
        if (!admin)
            call->limits |= 1u << CHAT_RATE_SIGNUP;
        chat_call_check_limits(call, run_handler);
        return;
    }
    case AUTH_ADMIN:
        if (!has_tok || !is_admin(api, tok, toklen)) {
            chat_call_fail(call, CHAT_EUNAUTHORIZED, "the admin token is required");
            return;
        }
        run_handler(call);
        return;
    case AUTH_STREAM:
        if (!has_tok && !req->authorization) {
            /* Browsers cannot set headers on a WebSocket: the token may be in the query. */
            char qtok[520];
            const char *why;
            if (chat_api_query_string(req->query, req->query_len, "token", qtok, sizeof qtok,
                                      &why) == 1 &&
                qtok[0]) {
                auth_start(call, qtok, strlen(qtok));
                return;
            }
        }
        /* fall through */
    case AUTH_USER:
        if (!has_tok) {
            chat_call_fail(call, CHAT_EUNAUTHORIZED, NULL);
            return;
        }
        auth_start(call, tok, toklen);
        return;
    }
}
