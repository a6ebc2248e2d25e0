/*
 * HTTP/1.1 on one connection (see http.h): requests are parsed with
 * http-parser straight out of the server's shared read buffer; only what a
 * request keeps (target, a few headers, body) and the unparsed tail of a
 * read that arrived while the connection was paused are copied, so an idle
 * keep-alive connection costs one small struct and no buffers. Limits and
 * timeouts, pipelining with a barrier at unsafe methods, and answers in
 * request order live here; the socket, writing and the end are net/conn.c's.
 *
 * Life of a connection: reading (requests queue up in arrival order and are
 * answered in that order) → draining (no more input; once every queued answer
 * is written it lingers and closes, net/conn.c) — or, after a 101, handed to
 * another protocol, after which nothing here runs for it again.
 */
#include "net/http1.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "core/error.h"
#include "core/json.h"
#include "core/log.h"
#include "net/http_status.h"

#include <http_parser.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Requests a connection may have queued (parsed, not yet written) before we stop parsing. */
#define MAX_OUTSTANDING 32
/* Bytes counted per header line besides its name and value (": " and CRLF). */
#define HEADER_LINE_OVERHEAD 4

typedef struct h1 h1_t;
typedef struct req req_t;

/* Who holds a request in each state. */
enum req_state {
    REQ_PARSING,   /* the parser: it is h->cur */
    REQ_HELD,      /* the connection: complete, waiting behind an unsafe request (h->held) */
    REQ_HANDLING,  /* the handler: it must call chat_http_respond() */
    REQ_RESPONDED, /* the queue: answered, waiting for earlier answers to go out */
    REQ_WRITING,   /* net/conn.c: being written, freed by write_cb */
};

enum hdr_id {
    HDR_OTHER,
    HDR_AUTHORIZATION,
    HDR_UPGRADE,
    HDR_EXPECT,
    HDR_CONNECTION,
    HDR_WS_KEY,
    HDR_WS_VERSION,
};
enum hstate { HS_NONE, HS_FIELD, HS_VALUE };

struct req {
    chat_http_request_t pub; /* first: the public pointer is the private one */
    chat_list_t link;        /* in h->queue until handed to the socket */
    h1_t *h;                 /* NULL once cancelled */
    enum req_state state;
    bool head_done;
    bool keep_alive;
    bool unsafe; /* not GET/HEAD/OPTIONS/TRACE: later requests wait for its answer */
    bool url_seen;
    bool has_auth;
    bool has_upgrade;
    bool upgrade_req; /* http-parser saw a GET with Upgrade and Connection: upgrade */
    uint64_t t_head;  /* uv_hrtime() when the head was complete */
    chat_buf_t url;   /* path NUL query NUL after the head is complete */
    chat_buf_t body;
    chat_buf_t auth;
    chat_buf_t upgrade;
    chat_buf_t connection; /* these three: data != NULL once the header was seen */
    chat_buf_t ws_key;
    chat_buf_t ws_version;
    char *rest; /* an upgrade request: what the client sent after it */
    size_t rest_len;
    /* The response, once answered. */
    chat_conn_write_t wr;
    uv_buf_t out[2];
    unsigned nout;
    char *head;                     /* status line and headers (and a copied body) */
    char *owned_body;               /* chat_http_respond_owned()'s body */
    chat_http1_switch_cb switch_cb; /* a 101: who takes the connection over */
    void *switch_ud;
};

struct h1 {
    chat_conn_t conn; /* first: the connection's memory is this struct */
    http_parser parser;
    chat_list_t queue; /* requests not yet handed to the socket, oldest first */
    req_t *cur;        /* request being parsed (the queue's tail) */
    req_t *held;       /* complete request waiting for the write barrier */
    req_t *done;       /* set by on_message_complete for feed() */
    char *in;          /* unparsed input kept while paused */
    size_t in_len;
    const char *drain_reason; /* why the connection is draining, for the close log */
    const char *fail_code;    /* set by a parser callback that rejects the request */
    const char *fail_msg;
    size_t head_bytes;
    int fail_status;
    int nqueue;
    int unanswered;        /* requests with the handler */
    int unsafe_unanswered; /* of which unsafe */
    uint32_t nreq;         /* requests started on this connection */
    uint8_t hstate, hid, hflen;
    uint8_t expect_len;
    char hfield[24]; /* lowercased start of the current header name */
    char expect[14];
    bool no_more;    /* read no further requests: close once the queue is written */
    bool wrote_now;  /* an answer went out in full inside uv_try_write */
    bool in_process; /* parsing or handing over: settle afterwards, not inside */
    bool upgraded;   /* handed to another protocol at a 101 */
};

static const http_parser_settings settings;
static const chat_conn_proto_t http1_proto;

static void settle(h1_t *h, bool activity);
static void pump(h1_t *h, bool activity);
static void respond(req_t *r, int status, const char *headers, const char *body, size_t len,
                    bool owned);

static inline h1_t *h1_of(chat_conn_t *c)
{
    return CHAT_CONTAINER_OF(c, h1_t, conn);
}

static inline chat_http_server_t *srv_of(h1_t *h)
{
    return chat_http1_server(h->conn.set);
}

/* ---- small helpers ---- */

bool chat_http_request_cancelled(const chat_http_request_t *req)
{
    return ((const req_t *)req)->h == NULL;
}

/* RFC 9110 IMF-fixdate, formatted once per second per server (so per loop). */
static const char *http_date(chat_http_server_t *srv)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t now = time(NULL);
    if (now != srv->date_sec || !srv->date[0]) {
        struct tm tm;
        gmtime_r(&now, &tm);
        snprintf(srv->date, sizeof srv->date, "%s, %02d %s %04d %02d:%02d:%02d GMT",
                 days[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900,
                 tm.tm_hour, tm.tm_min, tm.tm_sec);
        srv->date_sec = now;
    }
    return srv->date;
}

/* True when the header block (lines ending in CRLF) has a Content-Type line. */
static bool has_content_type(const char *hd)
{
    static const char name[] = "content-type:";
    while (hd && *hd) {
        if (strncasecmp(hd, name, sizeof name - 1) == 0)
            return true;
        hd = strchr(hd, '\n');
        if (hd)
            hd++;
    }
    return false;
}

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

/*
 * The timer a connection waits on now: a head (since connecting or since its
 * current request began), a body or the next request (inactivity), or none
 * while its requests are with the handler.
 */
static void timer_update(h1_t *h, bool activity)
{
    enum chat_conn_timer want;
    if ((h->cur && !h->cur->head_done) || (!h->cur && h->nreq == 0))
        want = CHAT_CONN_TIMER_HEAD;
    else if (h->cur || chat_list_empty(&h->queue))
        want = CHAT_CONN_TIMER_IDLE;
    else
        want = CHAT_CONN_TIMER_NONE;
    if (want != chat_conn_timer_get(&h->conn) || (activity && want == CHAT_CONN_TIMER_IDLE))
        chat_conn_timer_set(&h->conn, want);
}

/* ---- requests ---- */

static req_t *req_new(h1_t *h)
{
    req_t *r = chat_calloc(1, sizeof *r);
    r->h = h;
    r->state = REQ_PARSING;
    r->pub.method = -1;
    r->pub.method_str = "UNKNOWN";
    r->pub.path = "";
    r->pub.body = "";
    r->pub.conn_id = h->conn.id;
    r->pub.server_data = srv_of(h)->cfg.handler_data;
    r->pub.route = "unmatched";
    chat_list_insert_tail(&h->queue, &r->link);
    h->nqueue++;
    return r;
}

static void req_free(req_t *r)
{
    chat_buf_dispose(&r->url);
    chat_buf_dispose(&r->body);
    chat_buf_dispose(&r->auth);
    chat_buf_dispose(&r->upgrade);
    chat_buf_dispose(&r->connection);
    chat_buf_dispose(&r->ws_key);
    chat_buf_dispose(&r->ws_version);
    free(r->rest);
    free(r->head);
    free(r->owned_body);
    free(r);
}

/* Takes r off the queue (a request dropped before it was answered, or handed to the socket). */
static void queue_remove(h1_t *h, req_t *r)
{
    if (!chat_list_linked(&r->link))
        return;
    chat_list_remove(&r->link);
    h->nqueue--;
}

static req_t *queue_first(const h1_t *h)
{
    chat_list_t *e = chat_list_first(&h->queue);
    return e ? CHAT_CONTAINER_OF(e, req_t, link) : NULL;
}

/*
 * Splits the request target into path and query in place (both NUL
 * terminated). An absolute-form target keeps only its path and query.
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
    if (u->len == 0)
        return -1;
    if (u->data[0] != '/' && !(u->len == 1 && u->data[0] == '*')) {
        struct http_parser_url pu;
        http_parser_url_init(&pu);
        if (http_parser_parse_url(u->data, u->len, 0, &pu) != 0)
            return -1;
        chat_buf_t n = CHAT_BUF_INIT;
        if (pu.field_set & (1 << UF_PATH))
            chat_buf_append(&n, u->data + pu.field_data[UF_PATH].off, pu.field_data[UF_PATH].len);
        else
            chat_buf_putc(&n, '/');
        if (pu.field_set & (1 << UF_QUERY)) {
            chat_buf_putc(&n, '?');
            chat_buf_append(&n, u->data + pu.field_data[UF_QUERY].off, pu.field_data[UF_QUERY].len);
        }
        chat_buf_dispose(u);
        *u = n;
    }
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

static int head_grow(h1_t *h, size_t n)
{
    h->head_bytes += n;
    if (h->head_bytes > srv_of(h)->cfg.max_head)
        return parse_fail(h, 431, "headers_too_large",
                          "the request line and headers exceed the size limit");
    return 0;
}

static int on_message_begin(http_parser *p)
{
    h1_t *h = p->data;
    h->cur = req_new(h);
    h->nreq++;
    h->hstate = HS_NONE;
    h->head_bytes = 0;
    h->expect_len = 0;
    if (h->nreq > 1)
        chat_conn_timer_set(
            &h->conn,
            CHAT_CONN_TIMER_HEAD); /* the first request's head is timed from the connect */
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    h1_t *h = p->data;
    if (head_grow(h, len))
        return -1;
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
    return HDR_OTHER;
}

/* The buffer that keeps the value of a header of the handshake, or NULL. */
static chat_buf_t *handshake_buf(req_t *r, int hid)
{
    switch (hid) {
    case HDR_CONNECTION:
        return &r->connection;
    case HDR_WS_KEY:
        return &r->ws_key;
    case HDR_WS_VERSION:
        return &r->ws_version;
    default:
        return NULL;
    }
}

/* The name of a header is complete: note which one its value belongs to. */
static int header_value_begin(h1_t *h, req_t *r)
{
    h->hid = (uint8_t)header_id(h);
    h->hstate = HS_VALUE;
    switch (h->hid) {
    case HDR_AUTHORIZATION:
        if (r->has_auth)
            return parse_fail(h, 400, "bad_request", "repeated Authorization header");
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
    case HDR_CONNECTION:
    case HDR_WS_KEY:
    case HDR_WS_VERSION: {
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
    if (head_grow(h, len + (h->hstate != HS_FIELD ? HEADER_LINE_OVERHEAD : 0)))
        return -1;
    if (r->head_done)
        return 0; /* a chunked trailer: counted, otherwise ignored */
    if (h->hstate != HS_FIELD) {
        h->hstate = HS_FIELD;
        h->hflen = 0;
    }
    /* http-parser in its lenient mode lets a space through; a name is a token (RFC 9110 5.1). */
    for (size_t i = 0; i < len; i++)
        if (!is_tchar((unsigned char)at[i]))
            return parse_fail(h, 400, "bad_request", "invalid header name");
    for (size_t i = 0; i < len && h->hflen < UINT8_MAX; i++, h->hflen++)
        if (h->hflen < sizeof h->hfield)
            h->hfield[h->hflen] = (char)(at[i] >= 'A' && at[i] <= 'Z' ? at[i] + 32 : at[i]);
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    h1_t *h = p->data;
    req_t *r = h->cur;
    if (head_grow(h, len))
        return -1;
    if (r->head_done)
        return 0;
    if (h->hstate == HS_FIELD && header_value_begin(h, r))
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
    case HDR_CONNECTION:
    case HDR_WS_KEY:
    case HDR_WS_VERSION:
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
static void send_continue(h1_t *h, req_t *r)
{
    static const char text[] = "HTTP/1.1 100 Continue\r\n\r\n";
    if (queue_first(h) != r)
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
    if (h->hstate == HS_FIELD && header_value_begin(h, r))
        return -1;
    /* Only HTTP/1.x: http-parser also takes a version-less (0.9) request line. */
    if (p->http_major != 1)
        return parse_fail(h, 400, "bad_request", "unsupported HTTP version");
    r->head_done = true;
    r->t_head = uv_hrtime();
    r->pub.method = (int)p->method;
    r->pub.method_str = http_method_str((enum http_method)p->method);
    r->unsafe = !method_is_safe(r->pub.method);
    /* After an upgrade or CONNECT the bytes that follow are another protocol: stop there. */
    r->keep_alive = http_should_keep_alive(p) && !p->upgrade;
    if (split_target(r) != 0)
        return parse_fail(h, 400, "bad_request", "malformed request target");
    r->pub.authorization = r->has_auth ? r->auth.data : NULL;
    r->pub.upgrade = r->has_upgrade ? r->upgrade.data : NULL;
    r->pub.connection = r->connection.data;
    r->pub.ws_key = r->ws_key.data;
    r->pub.ws_version = r->ws_version.data;
    r->pub.http_minor = p->http_minor;
    r->upgrade_req = p->upgrade && p->method == HTTP_GET;
    bool chunked = (p->flags & F_CHUNKED) != 0;
    bool has_length = p->content_length != ULLONG_MAX;
    if (!chunked && has_length && p->content_length > srv_of(h)->cfg.max_body)
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
    if (r->body.len + len > srv_of(h)->cfg.max_body)
        return parse_fail(h, 413, "payload_too_large", "the request body exceeds the size limit");
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

/* ---- dispatch and parsing ---- */

static bool can_dispatch(const h1_t *h, const req_t *r)
{
    return r->unsafe ? h->unanswered == 0 : h->unsafe_unanswered == 0;
}

static void dispatch(h1_t *h, req_t *r)
{
    r->state = REQ_HANDLING;
    h->unanswered++;
    if (r->unsafe)
        h->unsafe_unanswered++;
    srv_of(h)->cfg.handler(&r->pub);
}

static void release_held(h1_t *h)
{
    if (h->held && !h->conn.closing && can_dispatch(h, h->held)) {
        req_t *r = h->held;
        h->held = NULL;
        dispatch(h, r);
    }
}

/* May a new request be parsed now? (A request already begun is always read to its end.) */
static bool may_start(h1_t *h)
{
    return !h->conn.closing && !h->no_more && !h->held && h->nqueue < MAX_OUTSTANDING &&
           !chat_conn_output_full(&h->conn);
}

static void drop_input(h1_t *h)
{
    free(h->in);
    h->in = NULL;
    h->in_len = 0;
}

/*
 * Answers the request being parsed (or a new one) with an error of the http
 * layer itself, and closes the connection after it.
 */
static void conn_fail(h1_t *h, int status, const char *code, const char *msg)
{
    req_t *r = h->cur;
    h->cur = NULL;
    if (!r)
        r = req_new(h);
    if (!r->head_done) {
        r->t_head = uv_hrtime();
        if (r->url.data)
            r->pub.path = r->url.data;
        if (r->url_seen) {
            r->pub.method = (int)h->parser.method;
            r->pub.method_str = http_method_str((enum http_method)h->parser.method);
        }
    }
    r->keep_alive = false;
    r->unsafe = false;
    r->pub.route = "none";
    r->state = REQ_HANDLING;
    h->unanswered++;
    h->no_more = true;
    h->drain_reason = code;
    drop_input(h);
    chat_buf_t b = CHAT_BUF_INIT;
    chat_json_error(&b, code, msg);
    size_t len;
    char *body = chat_buf_steal(&b, &len);
    respond(r, status, NULL, body, len, true);
}

static void parse_failed(h1_t *h, enum http_errno e)
{
    if (h->fail_status) {
        conn_fail(h, h->fail_status, h->fail_code, h->fail_msg);
        return;
    }
    switch (e) {
    case HPE_HEADER_OVERFLOW:
        conn_fail(h, 431, "headers_too_large",
                  "the request line and headers exceed the size limit");
        break;
    case HPE_INVALID_CONTENT_LENGTH:
    case HPE_UNEXPECTED_CONTENT_LENGTH:
        conn_fail(h, 400, "bad_request", "invalid Content-Length");
        break;
    case HPE_INVALID_CHUNK_SIZE:
        conn_fail(h, 400, "bad_request", "invalid chunked body");
        break;
    case HPE_INVALID_TRANSFER_ENCODING:
        conn_fail(h, 400, "bad_request", "unsupported Transfer-Encoding");
        break;
    case HPE_INVALID_VERSION:
        conn_fail(h, 400, "bad_request", "invalid HTTP version");
        break;
    default:
        conn_fail(h, 400, "bad_request", "malformed request");
        break;
    }
}

/*
 * Parses requests from data while the connection may take them, handing each
 * complete one to the handler. Returns the bytes consumed; the rest must be
 * kept for later (or dropped when the connection no longer reads).
 */
static size_t feed(h1_t *h, const char *data, size_t len)
{
    size_t off = 0;
    while (off < len && !h->conn.closing && !h->no_more) {
        release_held(h);
        if (h->conn.closing)
            break;
        if (!h->cur && !may_start(h))
            break;
        size_t n = http_parser_execute(&h->parser, &settings, data + off, len - off);
        off += n;
        enum http_errno e = HTTP_PARSER_ERRNO(&h->parser);
        if (e == HPE_PAUSED) {
            http_parser_pause(&h->parser, 0);
            req_t *r = h->done;
            h->done = NULL;
            if (!r->keep_alive) {
                h->no_more = true;
                h->drain_reason = r->pub.upgrade ? "upgrade" : "connection_close";
            }
            if (r->upgrade_req && off < len) {
                /* What follows an upgrade is another protocol's: kept for whoever takes over. */
                r->rest = chat_malloc(len - off);
                memcpy(r->rest, data + off, len - off);
                r->rest_len = len - off;
                off = len;
            }
            if (can_dispatch(h, r))
                dispatch(h, r);
            else
                h->held = r;
            continue;
        }
        if (e != HPE_OK) {
            parse_failed(h, e);
            return len;
        }
        if (n == 0)
            break;
    }
    return off;
}

/*
 * Brings reading and the timer in line with the connection's state, and
 * starts the end of a draining connection whose answers are all written.
 */
static void settle(h1_t *h, bool activity)
{
    chat_conn_t *c = &h->conn;
    if (c->closing || c->lingering || h->in_process || h->upgraded)
        return;
    if (h->no_more) {
        drop_input(h);
        if (chat_list_empty(&h->queue) && c->writes_pending == 0) {
            chat_conn_linger(c, h->drain_reason);
            return;
        }
    }
    chat_conn_read(c, !h->no_more && !h->in && (h->cur || may_start(h)));
    if (!c->closing)
        timer_update(h, activity);
}

/* Hands over held requests and parses kept input, as far as the connection may now. */
static void pump(h1_t *h, bool activity)
{
    chat_conn_t *c = &h->conn;
    if (c->closing || c->lingering || h->in_process || h->upgraded)
        return;
    h->in_process = true;
    release_held(h);
    if (h->in && !c->closing && !h->no_more) {
        char *in = h->in;
        size_t len = h->in_len;
        h->in = NULL;
        h->in_len = 0;
        size_t n = feed(h, in, len);
        if (!c->closing && !h->no_more && n < len) {
            memmove(in, in + n, len - n);
            h->in = in;
            h->in_len = len - n;
        } else {
            free(in);
        }
    }
    h->in_process = false;
    settle(h, activity);
}

/* ---- the connection's events ---- */

static void on_data(chat_conn_t *c, const char *data, size_t len)
{
    h1_t *h = h1_of(c);
    if (h->no_more)
        return; /* input we no longer want: discarded */
    if (h->in) {
        /* Not expected (reading stops while input is kept), but keep order if it happens. */
        h->in = chat_realloc(h->in, h->in_len + len);
        memcpy(h->in + h->in_len, data, len);
        h->in_len += len;
        pump(h, true);
        return;
    }
    h->in_process = true;
    size_t n = feed(h, data, len);
    h->in_process = false;
    if (!c->closing && !h->no_more && n < len) {
        h->in = chat_malloc(len - n);
        memcpy(h->in, data + n, len - n);
        h->in_len = len - n;
    }
    settle(h, true);
}

static void on_eof(chat_conn_t *c)
{
    h1_t *h = h1_of(c);
    if (h->cur) {
        chat_conn_close(c, "client_closed_mid_request");
    } else if (!chat_list_empty(&h->queue) || c->writes_pending) {
        /* A half-close after sending requests: answer them, then close. */
        if (!h->no_more)
            h->drain_reason = "client_closed";
        h->no_more = true;
        settle(h, false);
    } else {
        chat_conn_close(c, "client_closed");
    }
}

static void on_resume(chat_conn_t *c)
{
    h1_t *h = h1_of(c);
    bool wrote = h->wrote_now;
    h->wrote_now = false;
    pump(h, wrote);
}

static void on_timeout(chat_conn_t *c, enum chat_conn_timer timer)
{
    h1_t *h = h1_of(c);
    if (timer == CHAT_CONN_TIMER_HEAD) {
        if (h->cur && !h->cur->head_done) {
            conn_fail(h, 408, "request_timeout", "the request head was not received in time");
            settle(h, false);
        } else {
            chat_conn_close(c, "header_timeout");
        }
    } else if (timer == CHAT_CONN_TIMER_IDLE) {
        if (h->cur) {
            conn_fail(h, 408, "request_timeout", "the request body was not received in time");
            settle(h, false);
        } else {
            chat_conn_close(c, c->writes_pending ? "send_timeout" : "idle_timeout");
        }
    }
}

static void on_shutdown(chat_conn_t *c)
{
    h1_t *h = h1_of(c);
    if (h->cur) {
        /* A request still arriving is not in flight: it goes. */
        queue_remove(h, h->cur);
        req_free(h->cur);
        h->cur = NULL;
    }
    if (chat_list_empty(&h->queue) && c->writes_pending == 0) {
        chat_conn_close(c, "server_closing");
    } else {
        /* Answer what is in flight (the last answer says close), then close. */
        if (!h->no_more)
            h->drain_reason = "server_closing";
        h->no_more = true;
        pump(h, false);
    }
}

static void hand_over(h1_t *h, req_t *r);

/*
 * The connection ends: requests the handler still holds are marked cancelled
 * (their answer will only free them); every other request goes now, and a
 * 101 that never went out still hands the connection over, so that the
 * protocol waiting for it learns of the end from its on_closed.
 */
static void on_close(chat_conn_t *c, const char *reason)
{
    h1_t *h = h1_of(c);
    req_t *switching = NULL;
    drop_input(h);
    chat_list_t *e, *tmp;
    CHAT_LIST_FOREACH_SAFE(e, tmp, &h->queue)
    {
        req_t *r = CHAT_CONTAINER_OF(e, req_t, link);
        chat_list_remove(e);
        if (r->state == REQ_HANDLING)
            r->h = NULL;
        else if (r->switch_cb)
            switching = r;
        else
            req_free(r);
    }
    h->cur = h->held = h->done = NULL;
    h->nqueue = 0;
    if (switching) {
        hand_over(h, switching);
        req_free(switching);
    }
}

/* ---- answers ---- */

static void write_cb(chat_conn_t *c, chat_conn_write_t *w, int status)
{
    req_t *r = CHAT_CONTAINER_OF(w, req_t, wr);
    h1_t *h = h1_of(c);
    req_free(r);
    if (c->closing || status < 0)
        return;
    if (h->upgraded)
        chat_conn_kick(c); /* the 101 is written: its new protocol goes on */
    else
        pump(h, true);
}

/*
 * The 101 of r is on its way (or the connection is closing with it queued):
 * the connection leaves HTTP for whoever asked for the upgrade, with the
 * bytes the client sent after its request.
 */
static void hand_over(h1_t *h, req_t *r)
{
    chat_http1_switch_cb cb = r->switch_cb;
    char *rest = r->rest;
    size_t rest_len = r->rest_len;
    r->switch_cb = NULL;
    r->rest = NULL;
    r->rest_len = 0;
    h->upgraded = true;
    drop_input(h);
    chat_conn_timer_set(&h->conn, CHAT_CONN_TIMER_NONE);
    cb(&h->conn, rest, rest_len, r->switch_ud);
}

/* Hands every answered request at the front of the queue to the socket, in order. */
static void flush(h1_t *h)
{
    chat_conn_t *c = &h->conn;
    req_t *r;
    while ((r = queue_first(h)) && r->state == REQ_RESPONDED) {
        queue_remove(h, r);
        r->state = REQ_WRITING;
        int rc = chat_conn_write(c, &r->wr, r->out, r->nout, write_cb);
        if (rc < 0)
            chat_conn_close(c, "write_error");
        if (r->switch_cb)
            hand_over(h, r); /* every later write follows the 101 */
        if (rc != 0) {
            req_free(r);
            if (rc < 0)
                return;
            /* what write_cb would do, on the next pass of the loop */
            h->wrote_now = true;
            chat_conn_kick(c);
        }
        if (h->upgraded)
            return;
    }
}

static void record(h1_t *h, req_t *r, int status)
{
    const char *route = r->pub.route ? r->pub.route : "unmatched";
    double dur = (double)(uv_hrtime() - r->t_head) / 1e9;
    chat_http_metrics_record(&srv_of(h)->metrics, route, r->pub.method, r->pub.method_str, status,
                             dur);
    chat_log_debug("event=request conn=%llu method=%s path=%s status=%d dur_ms=%.2f",
                   (unsigned long long)h->conn.id, r->pub.method_str, r->pub.path, status,
                   dur * 1e3);
}

static void respond(req_t *r, int status, const char *headers, const char *body, size_t len,
                    bool owned)
{
    h1_t *h = r->h;
    if (!h) {
        if (owned)
            free((char *)body);
        req_free(r);
        return;
    }
    chat_conn_t *c = &h->conn;
    if (r->state != REQ_HANDLING) {
        chat_log_error("event=http_respond_twice conn=%llu status=%d", (unsigned long long)c->id,
                       status);
        if (owned)
            free((char *)body);
        return;
    }
    h->unanswered--;
    if (r->unsafe)
        h->unsafe_unanswered--;
    record(h, r, status);

    bool no_body = (status >= 100 && status < 200) || status == 204 || status == 304;
    bool send_body = !no_body && r->pub.method != HTTP_HEAD && len > 0;
    bool close = !r->keep_alive || (h->no_more && r->link.next == &h->queue);
    chat_buf_t b = CHAT_BUF_INIT;
    size_t hlen = headers ? strlen(headers) : 0;
    chat_buf_reserve(&b, 160 + hlen + (send_body && !owned ? len : 0));
    chat_buf_printf(&b, "HTTP/1.1 %d %s\r\n", status, chat_http_status_text(status));
    if (len > 0 && !no_body && !has_content_type(headers))
        chat_buf_puts(&b, "Content-Type: application/json\r\n");
    if (!no_body)
        chat_buf_printf(&b, "Content-Length: %zu\r\n", len);
    chat_buf_printf(&b, "Date: %s\r\nConnection: %s\r\n", http_date(srv_of(h)),
                    r->switch_cb ? "Upgrade"
                    : close      ? "close"
                                 : "keep-alive");
    if (hlen)
        chat_buf_append(&b, headers, hlen);
    chat_buf_puts(&b, "\r\n");
    if (send_body && !owned)
        chat_buf_append(&b, body, len);
    r->out[0] = uv_buf_init(b.data, (unsigned)b.len);
    r->nout = 1;
    r->head = chat_buf_steal(&b, NULL);
    if (owned) {
        if (send_body) {
            r->owned_body = (char *)body;
            r->out[1] = uv_buf_init(r->owned_body, (unsigned)len);
            r->nout = 2;
        } else {
            free((char *)body);
        }
    }
    if (close && !h->no_more && !r->switch_cb) {
        h->no_more = true;
        h->drain_reason = "connection_close";
    }
    r->state = REQ_RESPONDED;
    flush(h);
    if (!c->closing && !h->in_process && (h->held || !c->reading || h->no_more))
        chat_conn_kick(c);
}

void chat_http_respond(chat_http_request_t *req, int status, const char *headers, const char *body,
                       size_t body_len)
{
    respond((req_t *)req, status, headers, body, body_len, false);
}

void chat_http_respond_owned(chat_http_request_t *req, int status, const char *headers, char *body,
                             size_t body_len)
{
    respond((req_t *)req, status, headers, body, body_len, true);
}

int chat_http1_upgrade(chat_http_request_t *req, const char *headers, chat_http1_switch_cb cb,
                       void *ud)
{
    req_t *r = (req_t *)req;
    if (!r->h) {
        req_free(r);
        return CHAT_ECONNLOST;
    }
    int err = 0, status = 0;
    const char *code = NULL, *why = NULL;
    if (!r->upgrade_req) {
        /* http-parser read on after this request: what follows is HTTP, not ours to hand over. */
        err = CHAT_EBADREQUEST;
        status = 400;
        code = "bad_request";
        why = "not an upgrade request";
    } else if (r->h->conn.set->closing) {
        err = CHAT_EUNAVAILABLE;
        status = 503;
        code = "unavailable";
        why = "the server is shutting down";
    }
    if (err) {
        chat_buf_t b = CHAT_BUF_INIT;
        chat_json_error(&b, code, why);
        size_t len;
        char *body = chat_buf_steal(&b, &len);
        respond(r, status, NULL, body, len, true);
        return err;
    }
    r->switch_cb = cb;
    r->switch_ud = ud;
    respond(r, 101, headers, NULL, 0, false);
    return 0;
}

/* ---- the connection ---- */

chat_conn_t *chat_http1_conn_create(chat_http_server_t *srv)
{
    chat_conn_t *c = chat_conn_create(&srv->conns, sizeof(h1_t), &http1_proto, NULL);
    h1_t *h = h1_of(c);
    c->data = h;
    chat_list_init(&h->queue);
    return c;
}

void chat_http1_conn_begin(chat_conn_t *c)
{
    h1_t *h = h1_of(c);
    http_parser_init(&h->parser, HTTP_REQUEST);
    h->parser.data = h;
    chat_log_debug("event=conn_open conn=%llu", (unsigned long long)c->id);
    settle(h, false);
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

static const chat_conn_proto_t http1_proto = {
    .name = "http",
    .on_data = on_data,
    .on_eof = on_eof,
    .on_resume = on_resume,
    .on_timeout = on_timeout,
    .on_shutdown = on_shutdown,
    .on_close = on_close,
};
