/*
 * Parsing HTTP/1.1 requests (see http1_conn.h): http-parser callbacks that
 * keep only what a request needs (the target split into path and query,
 * Authorization, the upgrade headers, If-None-Match, the body), enforce the head and body
 * limits, answer "Expect: 100-continue", and pause after each complete
 * request so that net/http1.c hands it over outside of the parser. The
 * rules the parser lets through are checked here too: a single Host on
 * HTTP/1.1, no Transfer-Encoding but one "chunked" (and none beside a
 * Content-Length or on HTTP/1.0), origin-form targets only, and the byte
 * framing of net/http1_frame.c over everything the parser consumed.
 */
#include "net/http1_conn.h"
#include "core/alloc.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

typedef chat_http1_conn_t h1_t;
typedef chat_http1_req_t req_t;

enum hdr_id {
    HDR_OTHER,
    HDR_AUTHORIZATION,
    HDR_UPGRADE,
    HDR_EXPECT,
    HDR_CONNECTION,
    HDR_WS_KEY,
    HDR_WS_VERSION,
    HDR_HOST,
    HDR_TE,
    HDR_CONTENT_LENGTH,
    HDR_ORIGIN,
    HDR_IF_NONE_MATCH,
};
enum hstate { HS_NONE, HS_FIELD, HS_VALUE };

/* RFC 9110 tchar: what a header name is made of. */
static bool is_tchar(unsigned char ch)
{
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))
        return true;
    return ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

static bool method_is_safe(int m)
{
    return m == HTTP_GET || m == HTTP_HEAD || m == HTTP_OPTIONS || m == HTTP_TRACE;
}

chat_http1_req_t *chat_http1_req_new(chat_http1_conn_t *h)
{
    req_t *r = chat_calloc(1, sizeof *r);
    r->h = h;
    r->state = REQ_PARSING;
    r->pub.method = -1;
    r->pub.method_str = "UNKNOWN";
    r->pub.path = "";
    r->pub.body = "";
    r->pub.conn_id = h->conn.id;
    r->pub.server_data = chat_http1_conn_server(h)->cfg.handler_data;
    r->pub.route = "unmatched";
    chat_list_insert_tail(&h->queue, &r->link);
    h->nqueue++;
    return r;
}

void chat_http1_req_free(chat_http1_req_t *r)
{
    chat_buf_dispose(&r->url);
    chat_buf_dispose(&r->body);
    chat_buf_dispose(&r->auth);
    chat_buf_dispose(&r->upgrade);
    chat_buf_dispose(&r->connection);
    chat_buf_dispose(&r->ws_key);
    chat_buf_dispose(&r->ws_version);
    chat_buf_dispose(&r->origin);
    chat_buf_dispose(&r->if_none_match);
    free(r->rest);
    free(r->head);
    chat_http1_body_release(r->answer_body);
    free(r);
}

/*
 * Splits the request target into path and query in place (both NUL
 * terminated). Only the origin-form ("/path?query") is taken, and "*"
 * (which no route matches): the absolute-form is for proxies, and an origin
 * server that took it would serve a request meant for another host.
 */
static int split_target(req_t *r)
{
    chat_buf_t *u = &r->url;
    if (!u->data)
        chat_buf_append(u, "", 0);
    if (r->pub.method == HTTP_CONNECT) {
        r->pub.path = u->data;
        r->pub.path_len = u->len;
        return 0;
    }
    if (u->len == 0 || (u->data[0] != '/' && !(u->len == 1 && u->data[0] == '*')))
        return -1;
    char *s = u->data;
    char *hash = memchr(s, '#', u->len);
    size_t end = hash ? (size_t)(hash - s) : u->len;
    char *q = memchr(s, '?', end);
    r->pub.path = s;
    r->pub.path_len = q ? (size_t)(q - s) : end;
    if (q) {
        r->pub.query = q + 1;
        r->pub.query_len = end - r->pub.path_len - 1;
        *q = '\0';
    }
    s[end] = '\0';
    return 0;
}
/* ---- parser callbacks ---- */

static int parse_fail(h1_t *h, int status, const char *code, const char *msg)
{
    h->fail_status = status;
    h->fail_code = code;
    h->fail_msg = msg;
    return -1;
}

/*
 * A fault at byte at of the read: a framing fault before it is the earlier
 * one. The parser calls back at the end of a token, or of a read in its
 * middle, so where it stopped depends on how the bytes were split; the
 * fault's own byte does not.
 */
static int parse_fail_at(h1_t *h, const char *at, int status, const char *code, const char *msg)
{
    h->fault_at = at;
    return parse_fail(h, status, code, msg);
}

static int on_message_begin(http_parser *p)
{
    h1_t *h = p->data;
    h->cur = chat_http1_req_new(h);
    h->nreq++;
    h->hstate = HS_NONE;
    h->expect_len = 0;
    h->n_host = h->n_te = h->te_len = 0;
    h->has_length = false;
    if (h->nreq > 1)
        chat_conn_timer_set(
            &h->conn,
            CHAT_CONN_TIMER_HEAD); /* the first request's head is timed from the connect */
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    h1_t *h = p->data;
    h->cur->url_seen = true;
    chat_buf_append(&h->cur->url, at, len);
    return 0;
}

static int header_id(const h1_t *h)
{
    if (h->hflen == 13 && memcmp(h->hfield, "authorization", 13) == 0)
        return HDR_AUTHORIZATION;
    if (h->hflen == 7 && memcmp(h->hfield, "upgrade", 7) == 0)
        return HDR_UPGRADE;
    if (h->hflen == 6 && memcmp(h->hfield, "expect", 6) == 0)
        return HDR_EXPECT;
    if (h->hflen == 10 && memcmp(h->hfield, "connection", 10) == 0)
        return HDR_CONNECTION;
    if (h->hflen == 17 && memcmp(h->hfield, "sec-websocket-key", 17) == 0)
        return HDR_WS_KEY;
    if (h->hflen == 21 && memcmp(h->hfield, "sec-websocket-version", 21) == 0)
        return HDR_WS_VERSION;
    if (h->hflen == 4 && memcmp(h->hfield, "host", 4) == 0)
        return HDR_HOST;
    if (h->hflen == 17 && memcmp(h->hfield, "transfer-encoding", 17) == 0)
        return HDR_TE;
    if (h->hflen == 14 && memcmp(h->hfield, "content-length", 14) == 0)
        return HDR_CONTENT_LENGTH;
    if (h->hflen == 6 && memcmp(h->hfield, "origin", 6) == 0)
        return HDR_ORIGIN;
    if (h->hflen == 13 && memcmp(h->hfield, "if-none-match", 13) == 0)
        return HDR_IF_NONE_MATCH;
    return HDR_OTHER;
}

/* The buffer that keeps the value of a listed header (the handshake's, If-None-Match), or NULL. */
static chat_buf_t *handshake_buf(req_t *r, int hid)
{
    switch (hid) {
    case HDR_CONNECTION:
        return &r->connection;
    case HDR_WS_KEY:
        return &r->ws_key;
    case HDR_WS_VERSION:
        return &r->ws_version;
    case HDR_ORIGIN:
        return &r->origin;
    case HDR_IF_NONE_MATCH:
        return &r->if_none_match;
    default:
        return NULL;
    }
}

/*
 * The name of a header is complete: note which one its value belongs to,
 * whose first bytes are at at (NULL: it has none).
 */
static int header_value_begin(h1_t *h, req_t *r, const char *at)
{
    h->hid = (uint8_t)header_id(h);
    h->hstate = HS_VALUE;
    switch (h->hid) {
    case HDR_AUTHORIZATION:
        if (r->has_auth)
            return parse_fail_at(h, at, 400, "bad_request", "repeated Authorization header");
        r->has_auth = true;
        chat_buf_append(&r->auth, "", 0);
        break;
    case HDR_UPGRADE:
        if (r->has_upgrade)
            chat_buf_puts(&r->upgrade, ", ");
        r->has_upgrade = true;
        chat_buf_append(&r->upgrade, "", 0);
        break;
    case HDR_EXPECT:
        h->expect_len = 0;
        break;
    case HDR_HOST:
        if (h->n_host < UINT8_MAX)
            h->n_host++;
        break;
    case HDR_TE:
    case HDR_CONTENT_LENGTH:
        if (h->hid == HDR_TE) {
            if (h->n_te < UINT8_MAX)
                h->n_te++;
            h->te_len = 0;
        } else {
            h->has_length = true;
        }
        /* Which of the two frames the body is what a proxy and chatd could disagree on. */
        if (h->n_te && h->has_length)
            return parse_fail_at(h, at, 400, "bad_request",
                                 "Content-Length with Transfer-Encoding");
        break;
    case HDR_CONNECTION:
    case HDR_WS_KEY:
    case HDR_WS_VERSION:
    case HDR_ORIGIN:
    case HDR_IF_NONE_MATCH: {
        /* A repeated header joins the first as a list (a repeated key then fails its check). */
        chat_buf_t *b = handshake_buf(r, h->hid);
        if (b->data)
            chat_buf_puts(b, ", ");
        else
            chat_buf_append(b, "", 0);
        break;
    }
    }
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    h1_t *h = p->data;
    req_t *r = h->cur;
    if (r->head_done)
        return 0; /* a chunked trailer: ignored (net/http1_frame.c counts and checks it) */
    if (h->hstate != HS_FIELD) {
        h->hstate = HS_FIELD;
        h->hflen = 0;
    }
    /* http-parser in its lenient mode lets a space through; a name is a token (RFC 9110 5.1). */
    for (size_t i = 0; i < len; i++)
        if (!is_tchar((unsigned char)at[i]))
            return parse_fail_at(h, at + i, 400, "bad_request", "invalid header name");
    for (size_t i = 0; i < len && h->hflen < UINT8_MAX; i++, h->hflen++)
        if (h->hflen < sizeof h->hfield)
            h->hfield[h->hflen] = (char)(at[i] >= 'A' && at[i] <= 'Z' ? at[i] + 32 : at[i]);
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    h1_t *h = p->data;
    req_t *r = h->cur;
    if (r->head_done)
        return 0;
    if (h->hstate == HS_FIELD && header_value_begin(h, r, at))
        return -1;
    switch (h->hid) {
    case HDR_AUTHORIZATION:
        chat_buf_append(&r->auth, at, len);
        break;
    case HDR_UPGRADE:
        chat_buf_append(&r->upgrade, at, len);
        break;
    case HDR_EXPECT:
        for (size_t i = 0; i < len && h->expect_len < UINT8_MAX; i++, h->expect_len++)
            if (h->expect_len < sizeof h->expect)
                h->expect[h->expect_len] =
                    (char)(at[i] >= 'A' && at[i] <= 'Z' ? at[i] + 32 : at[i]);
        break;
    case HDR_TE:
        for (size_t i = 0; i < len && h->te_len < UINT8_MAX; i++, h->te_len++)
            if (h->te_len < sizeof h->te)
                h->te[h->te_len] = (char)(at[i] >= 'A' && at[i] <= 'Z' ? at[i] + 32 : at[i]);
        break;
    case HDR_CONNECTION:
    case HDR_WS_KEY:
    case HDR_WS_VERSION:
    case HDR_ORIGIN:
    case HDR_IF_NONE_MATCH:
        chat_buf_append(handshake_buf(r, h->hid), at, len);
        break;
    }
    return 0;
}

static void continue_cb(chat_conn_t *c, chat_conn_write_t *w, int status)
{
    free(w);
}

/* "100 Continue", unless an earlier answer still has to go out first. */
static void send_continue(h1_t *h, const req_t *r)
{
    static const char text[] = "HTTP/1.1 100 Continue\r\n\r\n";
    if (chat_http1_queue_first(h) != r)
        return; /* the client sends the body anyway after a while (RFC 9110 10.1.1) */
    chat_conn_write_t *w = chat_malloc(sizeof *w);
    uv_buf_t b = uv_buf_init((char *)text, sizeof text - 1);
    if (chat_conn_write(&h->conn, w, &b, 1, continue_cb) != 0)
        free(w); /* written at once, or refused (the connection is then closed) */
}

static int on_headers_complete(http_parser *p)
{
    h1_t *h = p->data;
    req_t *r = h->cur;
    if (h->hstate == HS_FIELD && header_value_begin(h, r, NULL))
        return -1;
    /*
     * The version itself (HTTP/1.0 or 1.1 only, a version-less request line
     * refused) is net/http1_frame.c's check, which reads the request line
     * as it was written.
     */
    bool http11 = p->http_major == 1 && p->http_minor == 1;
    if (h->n_host > 1)
        return parse_fail(h, 400, "bad_request", "repeated Host header");
    if (http11 && h->n_host == 0)
        return parse_fail(h, 400, "bad_request", "an HTTP/1.1 request needs a Host header");
    if (h->n_te) {
        if (p->http_major == 1 && p->http_minor == 0)
            return parse_fail(h, 400, "bad_request", "Transfer-Encoding in an HTTP/1.0 request");
        if (h->n_te > 1)
            return parse_fail(h, 400, "bad_request", "repeated Transfer-Encoding header");
        /* The value is exactly "chunked" (http-parser drops the spaces before it, not after). */
        size_t n = h->te_len <= sizeof h->te ? h->te_len : 0;
        while (n && (h->te[n - 1] == ' ' || h->te[n - 1] == '\t'))
            n--;
        if (n != 7 || memcmp(h->te, "chunked", 7) != 0)
            return parse_fail(h, 400, "bad_request", "unsupported Transfer-Encoding");
    }
    r->head_done = true;
    r->t_head = uv_hrtime();
    r->pub.method = (int)p->method;
    r->pub.method_str = http_method_str((enum http_method)p->method);
    r->unsafe = !method_is_safe(r->pub.method);
    /* After an upgrade or CONNECT the bytes that follow are another protocol: stop there. */
    r->keep_alive = http_should_keep_alive(p) && !p->upgrade;
    if (split_target(r) != 0)
        return parse_fail(h, 400, "bad_request", "the request target must be a path (origin-form)");
    r->pub.authorization = r->has_auth ? r->auth.data : NULL;
    r->pub.upgrade = r->has_upgrade ? r->upgrade.data : NULL;
    r->pub.connection = r->connection.data;
    r->pub.ws_key = r->ws_key.data;
    r->pub.ws_version = r->ws_version.data;
    r->pub.origin = r->origin.data;
    r->pub.if_none_match = r->if_none_match.data;
    r->pub.http_minor = p->http_minor;
    r->upgrade_req = p->upgrade && p->method == HTTP_GET;
    bool chunked = (p->flags & F_CHUNKED) != 0;
    bool has_length = p->content_length != ULLONG_MAX;
    chat_http1_frame_body(&h->frame, chunked);
    if (!chunked && has_length && p->content_length > chat_http1_conn_server(h)->cfg.max_body)
        return parse_fail(h, 413, "payload_too_large", "the request body exceeds the size limit");
    if (!chunked && has_length && p->content_length > 0)
        chat_buf_reserve(&r->body, (size_t)p->content_length);
    if (h->expect_len == 12 && memcmp(h->expect, "100-continue", 12) == 0 &&
        (chunked || (has_length && p->content_length > 0)))
        send_continue(h, r);
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    h1_t *h = p->data;
    req_t *r = h->cur;
    size_t max = chat_http1_conn_server(h)->cfg.max_body;
    if (r->body.len + len > max)
        return parse_fail_at(h, at + (max - r->body.len), 413, "payload_too_large",
                             "the request body exceeds the size limit");
    chat_buf_append(&r->body, at, len);
    return 0;
}

static int on_message_complete(http_parser *p)
{
    h1_t *h = p->data;
    req_t *r = h->cur;
    h->cur = NULL;
    h->done = r;
    r->state = REQ_HELD;
    if (r->body.data) {
        r->pub.body = r->body.data;
        r->pub.body_len = r->body.len;
    }
    /* Stop here so the request is handed over outside of the parser. */
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

void chat_http1_parser_init(h1_t *h)
{
    http_parser_init(&h->parser, HTTP_REQUEST);
    h->parser.data = h;
    chat_http1_frame_init(&h->frame, (uint32_t)chat_http1_conn_server(h)->cfg.max_head);
}

size_t chat_http1_parse(h1_t *h, const char *data, size_t len)
{
    size_t n = http_parser_execute(&h->parser, &settings, data, len);
    enum http_errno e = HTTP_PARSER_ERRNO(&h->parser);
    /*
     * The framing of the bytes the parser consumed is checked also when it
     * refused what follows them (its lenient build consumes bytes the
     * checker refuses): the earlier fault is the answer, however the bytes
     * were split into reads.
     */
    const char *why;
    size_t scan = n;
    if (h->fault_at && h->fault_at >= data && h->fault_at < data + n)
        scan = (size_t)(h->fault_at - data); /* a fault from there on is not the first */
    h->fault_at = NULL;
    int status = chat_http1_frame_scan(&h->frame, data, scan, &why);
    if (status == 0) {
        if (e == HPE_PAUSED)
            chat_http1_frame_next(&h->frame);
        return n; /* parsed, or the parser's own refusal */
    }
    /* Refused before it is handed over: a complete request is answered with the refusal. */
    if (h->done) {
        h->cur = h->done;
        h->done = NULL;
        h->cur->state = REQ_PARSING;
    }
    parse_fail(h, status,
               status == 505   ? "http_version_not_supported"
               : status == 431 ? "headers_too_large"
                               : "bad_request",
               why);
    h->parser.http_errno = HPE_STRICT; /* stopped for good, as after any error */
    return n;
}
