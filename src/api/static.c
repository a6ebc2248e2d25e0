/*
 * The files compiled into chatd (core/asset.h): the web client at "/" and
 * "/app/{asset}", its icon at "/favicon.ico", and the OpenAPI document at
 * "/api/openapi.json". Each answer carries a strict Content-Security-Policy
 * and an ETag; a matching If-None-Match gets a 304 without the bytes.
 */
#include "api/internal.h"
#include "core/asset.h"

#include <stdio.h>
#include <string.h>

/*
 * The client's pages load only their own scripts, styles and images, talk
 * only to their own origin (CSP 3's 'self' covers ws: and wss: of it), and
 * may not be framed. Trusted Types make an HTML sink (innerHTML, ...) throw:
 * the client builds its DOM from nodes and text only.
 */
#define CSP                                                                                        \
    "Content-Security-Policy: default-src 'self'; script-src 'self'; style-src 'self'; "           \
    "img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "                     \
    "form-action 'self'; frame-ancestors 'none'; require-trusted-types-for 'script'; "             \
    "trusted-types 'none'\r\n"                                                                     \
    "Referrer-Policy: no-referrer\r\n"                                                             \
    "X-Frame-Options: DENY\r\n"                                                                    \
    "Cross-Origin-Opener-Policy: same-origin\r\n"

/*
 * The page itself is never stored, so a new build's page is the one that
 * loads; the files it loads are kept and revalidated on each use (their
 * names carry no version, so a max-age could mix the modules of two builds).
 */
#define CACHE_PAGE "Cache-Control: no-store\r\n"
#define CACHE_ASSET "Cache-Control: no-cache\r\n"

void chat_h_static(chat_call_t *call)
{
    chat_http_request_t *req = call->req;
    const chat_asset_t *a = chat_asset_find(req->path, req->path_len);
    if (!a) {
        chat_call_error(call, 404, "not_found", "no such file", CSP);
        return;
    }
    const char *cache = strcmp(a->path, "/") == 0 ? CACHE_PAGE : CACHE_ASSET;
    char headers[768];
    int status = 200;
    if (chat_asset_etag_matches(req->if_none_match, a->etag)) {
        status = 304;
        snprintf(headers, sizeof headers, "ETag: %s\r\n%s" CSP, a->etag, cache);
    } else {
        snprintf(headers, sizeof headers, "Content-Type: %s\r\nETag: %s\r\n%s" CSP, a->content_type,
                 a->etag, cache);
    }
    chat_http_request_t *r = chat_call_release(call);
    chat_http_respond(r, status, headers, status == 304 ? NULL : a->data,
                      status == 304 ? 0 : a->len);
}
