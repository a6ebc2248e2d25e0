/*
 * HTTP/1.1 server on a libuv loop (see http.h). One server per worker loop,
 * each with its own SO_REUSEPORT listener. Requests are parsed with
 * http-parser straight out of one shared per-server read buffer; only the
 * pieces a request keeps (target, a few headers, body) and the unparsed tail
 * of a read that arrived while the connection was paused are copied, so an
 * idle keep-alive connection costs one small struct and no buffers.
 *
 * Life of a connection: accepted → reading (requests queue up in arrival
 * order, answered in that order) → draining (no more input; close once every
 * queued response is written) → lingering (FIN sent, unread input discarded
 * for a moment so the peer sees our last answer instead of a reset) →
 * closed. conn_close() is the only way out and conn_closed_cb() the only
 * place a connection is freed.
 */
#include "net/http.h"
#include "net/ws.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "core/json.h"
#include "core/log.h"
#include "core/metrics.h"

#include <errno.h>
#include <http_parser.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Requests a connection may have queued (parsed, not yet written) before we stop parsing. */
#define MAX_OUTSTANDING 32
/* How long a connection we are done with keeps discarding input after our FIN. */
#define LINGER_MS 2000
#define READ_BUF_SIZE (64 * 1024)
#define LISTEN_BACKLOG 4096
/* Bytes counted per header line besides its name and value (": " and CRLF). */
#define HEADER_LINE_OVERHEAD 4

#define DEFAULT_HEADER_TIMEOUT_MS 10000
#define DEFAULT_IDLE_TIMEOUT_MS 60000
#define DEFAULT_MAX_HEAD (16 * 1024)
#define DEFAULT_MAX_BODY (64 * 1024)
#define DEFAULT_MAX_PENDING_OUTPUT (1024 * 1024)
#define DEFAULT_WS_PING_INTERVAL_MS 30000

typedef struct conn conn_t;
typedef struct req req_t;

/* Who holds a request in each state. */
enum req_state {
    REQ_PARSING,   /* the parser: it is conn->cur */
    REQ_HELD,      /* the connection: complete, waiting behind an unsafe request (conn->held) */
    REQ_HANDLING,  /* the handler: it must call chat_http_respond() */
    REQ_RESPONDED, /* the queue: answered, waiting for earlier answers to go out */
    REQ_WRITING,   /* libuv: in uv_write, freed by write_cb */
};

/* Timer lists. Every entry of one list has the same timeout, so appending keeps it sorted. */
enum tlist { TL_NONE = -1, TL_HEAD, TL_IDLE, TL_LINGER, TL_WS, TL_COUNT };

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
    req_t *next;             /* in conn's queue */
    conn_t *conn;            /* NULL once cancelled */
    enum req_state state;
    bool head_done;
    bool keep_alive;
    bool unsafe; /* not GET/HEAD/OPTIONS/TRACE: later requests wait for its answer */
    bool url_seen;
    bool has_auth;
    bool has_upgrade;
    bool upgrade_req; /* http-parser saw a GET with Upgrade and Connection: upgrade */
    bool ws_accept;   /* answered 101 by chat_http_upgrade() */
    uint64_t t_head;  /* uv_hrtime() when the head was complete */
    chat_buf_t url;   /* path NUL query NUL after the head is complete */
    chat_buf_t body;
    chat_buf_t auth;
    chat_buf_t upgrade;
    chat_buf_t connection; /* these three: data != NULL once the header was seen */
    chat_buf_t ws_key;
    chat_buf_t ws_version;
    /* The response, once answered. */
    uv_write_t wr;
    uv_buf_t out[2];
    unsigned nout;
    char *head;       /* status line and headers (and a copied body) */
    char *owned_body; /* chat_http_respond_owned()'s body */
};

struct conn {
    uv_tcp_t tcp; /* first, and tcp.data points back here */
    http_parser parser;
    chat_http_server_t *srv;
    uint64_t id;
    conn_t *prev, *next;   /* srv->conns */
    conn_t *tprev, *tnext; /* srv->tl[tlist] */
    conn_t *rnext;         /* srv->resume list */
    uint64_t deadline;     /* uv_now() ms */
    req_t *qhead, *qtail;  /* requests not yet handed to uv_write, oldest first */
    req_t *cur;            /* request being parsed (the queue's tail) */
    req_t *held;           /* complete request waiting for the write barrier */
    req_t *done;           /* set by on_message_complete for feed() */
    char *in;              /* unparsed input kept while paused */
    size_t in_len;
    const char *drain_reason; /* why the connection is draining, for the close log */
    const char *fail_code;    /* set by a parser callback that rejects the request */
    const char *fail_msg;
    size_t head_bytes;
    int fail_status;
    int nqueue;
    int unanswered;        /* requests with the handler */
    int unsafe_unanswered; /* of which unsafe */
    int writes_pending;    /* uv_write requests not yet called back */
    uint32_t nreq;         /* requests started on this connection */
    signed char tlist;
    uint8_t hstate, hid, hflen;
    uint8_t expect_len;
    char hfield[24]; /* lowercased start of the current header name */
    char expect[14];
    bool reading;
    bool closing;
    bool no_more; /* read no further requests: close once the queue is written */
    bool lingering;
    bool wrote_now; /* an answer went out in full inside uv_try_write */
    bool peer_eof;
    bool counted; /* holds a slot of open_connections */
    bool in_process;
    bool resume_queued;
    /*
     * WebSocket mode, from chat_http_upgrade() on. Until the 101 is handed to
     * uv_write (ws_live) frames wait in the engine and bytes the client sent
     * after its handshake wait in ws_stash; then the connection reads frames
     * only, sits on the TL_WS timer list and never parses HTTP again.
     */
    chat_ws_engine_t *ws;
    chat_http_ws_handler_t ws_handler;
    void *ws_ud;
    char *ws_stash;
    size_t ws_stash_len;
    chat_buf_t ws_out; /* frames serialised by the engine, not yet given to uv_write */
    bool ws_live;      /* the 101 is on its way: frames may follow it */
    bool ws_ping_sent; /* a ping is out and the client has sent nothing since */
};

typedef struct mslot {
    const char *route; /* NULL: empty slot */
    int method;
    int status;
    chat_metric_t *count;
    chat_metric_t *duration;
} mslot_t;

struct chat_http_server {
    uv_loop_t *loop;
    chat_http_server_config_t cfg;
    char *host;
    int port;
    uv_tcp_t listener;
    uv_timer_t timer;
    uv_idle_t idle;
    int open_handles;
    bool closing;
    bool finishing;
    void (*close_cb)(void *arg);
    void *close_arg;
    conn_t *conns;
    int nconns;
    struct {
        conn_t *head, *tail;
    } tl[TL_COUNT];
    uint64_t timer_due; /* 0: not armed */
    conn_t *resume_head, *resume_tail;
    char *rbuf;
    bool rbuf_busy;
    _Atomic int own_counter; /* used when cfg.open_connections is NULL */
    chat_metric_t *gauge;
    chat_metric_t *ws_gauge;
    chat_metric_family_t *requests;
    chat_metric_family_t *durations;
    mslot_t *mc;
    size_t mc_cap, mc_len;
    time_t date_sec;
    char date[40];
    time_t reject_log_sec;
};

static _Atomic uint64_t next_conn_id;

static http_parser_settings settings;

static void conn_close(conn_t *c, const char *reason);
static void conn_settle(conn_t *c, bool activity);
static void conn_pump(conn_t *c, bool activity);
static void respond(req_t *r, int status, const char *headers, const char *body, size_t len,
                    bool owned);
static void ws_settle(conn_t *c);
static void ws_input(conn_t *c, const char *data, size_t len);
static void ws_go_live(conn_t *c);

/* ---- small helpers ---- */

const char *chat_http_status_text(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 206:
        return "Partial Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 406:
        return "Not Acceptable";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 411:
        return "Length Required";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Payload Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 416:
        return "Range Not Satisfiable";
    case 417:
        return "Expectation Failed";
    case 422:
        return "Unprocessable Entity";
    case 426:
        return "Upgrade Required";
    case 428:
        return "Precondition Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

bool chat_http_request_cancelled(const chat_http_request_t *req)
{
    return ((const req_t *)req)->conn == NULL;
}

int chat_http_server_port(chat_http_server_t *srv)
{
    return srv->port;
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
static bool has_content_type(const char *h)
{
    static const char name[] = "content-type:";
    while (h && *h) {
        if (strncasecmp(h, name, sizeof name - 1) == 0)
            return true;
        h = strchr(h, '\n');
        if (h)
            h++;
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

/* ---- metrics: series pointers cached per server, keyed by route pointer, method, status ---- */

static void put_label_value(chat_buf_t *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            chat_buf_putc(b, '\\');
        if (*s == '\n')
            chat_buf_puts(b, "\\n");
        else
            chat_buf_putc(b, *s);
    }
}

static size_t mslot_hash(const char *route, int method, int status)
{
    uint64_t h = (uint64_t)(uintptr_t)route;
    h ^= (uint64_t)(unsigned)method * 0x9e3779b97f4a7c15ULL;
    h ^= (uint64_t)(unsigned)status * 0xc2b2ae3d27d4eb4fULL;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 32;
    return (size_t)h;
}

static mslot_t *mslot_find(mslot_t *tab, size_t cap, const char *route, int method, int status)
{
    size_t i = mslot_hash(route, method, status) & (cap - 1);
    while (tab[i].route &&
           !(tab[i].route == route && tab[i].method == method && tab[i].status == status))
        i = (i + 1) & (cap - 1);
    return &tab[i];
}

static mslot_t *metrics_slot(chat_http_server_t *srv, const char *route, int method,
                             const char *method_str, int status)
{
    if (srv->mc_cap == 0 || (srv->mc_len + 1) * 2 > srv->mc_cap) {
        size_t cap = srv->mc_cap ? srv->mc_cap * 2 : 64;
        mslot_t *tab = chat_calloc(cap, sizeof *tab);
        for (size_t i = 0; i < srv->mc_cap; i++)
            if (srv->mc[i].route)
                *mslot_find(tab, cap, srv->mc[i].route, srv->mc[i].method, srv->mc[i].status) =
                    srv->mc[i];
        free(srv->mc);
        srv->mc = tab;
        srv->mc_cap = cap;
    }
    mslot_t *s = mslot_find(srv->mc, srv->mc_cap, route, method, status);
    if (s->route)
        return s;
    chat_buf_t b = CHAT_BUF_INIT;
    chat_buf_puts(&b, "route=\"");
    put_label_value(&b, route);
    size_t route_end = b.len;
    chat_buf_printf(&b, "\",method=\"%s\",status=\"%d\"", method_str, status);
    s->count = chat_metric_series(srv->requests, b.data);
    b.data[route_end] = '"';
    b.data[route_end + 1] = '\0';
    s->duration = chat_metric_series(srv->durations, b.data);
    chat_buf_dispose(&b);
    s->route = route;
    s->method = method;
    s->status = status;
    srv->mc_len++;
    return s;
}

/* ---- timer lists ---- */

static uint64_t tl_timeout(const chat_http_server_t *srv, int l)
{
    switch (l) {
    case TL_HEAD:
        return (uint64_t)srv->cfg.header_timeout_ms;
    case TL_IDLE:
        return (uint64_t)srv->cfg.idle_timeout_ms;
    case TL_WS:
        return (uint64_t)srv->cfg.ws_ping_interval_ms;
    default:
        return LINGER_MS;
    }
}

static void timer_cb(uv_timer_t *t);

/* Makes the server timer fire no later than the earliest deadline of any list. */
static void timer_arm(chat_http_server_t *srv)
{
    if (srv->finishing)
        return;
    uint64_t due = UINT64_MAX;
    for (int l = 0; l < TL_COUNT; l++)
        if (srv->tl[l].head && srv->tl[l].head->deadline < due)
            due = srv->tl[l].head->deadline;
    if (due == UINT64_MAX) {
        if (srv->timer_due) {
            uv_timer_stop(&srv->timer);
            srv->timer_due = 0;
        }
        return;
    }
    if (srv->timer_due && srv->timer_due <= due)
        return;
    uint64_t now = uv_now(srv->loop);
    uv_timer_start(&srv->timer, timer_cb, due > now ? due - now : 0, 0);
    srv->timer_due = due;
}

static void tl_remove(conn_t *c)
{
    if (c->tlist == TL_NONE)
        return;
    chat_http_server_t *srv = c->srv;
    if (c->tprev)
        c->tprev->tnext = c->tnext;
    else
        srv->tl[c->tlist].head = c->tnext;
    if (c->tnext)
        c->tnext->tprev = c->tprev;
    else
        srv->tl[c->tlist].tail = c->tprev;
    c->tprev = c->tnext = NULL;
    c->tlist = TL_NONE;
}

/* Puts c at the tail of list l with a fresh deadline (or on no list for TL_NONE). */
static void tl_move(conn_t *c, int l)
{
    chat_http_server_t *srv = c->srv;
    tl_remove(c);
    if (l == TL_NONE)
        return;
    c->deadline = uv_now(srv->loop) + tl_timeout(srv, l);
    c->tlist = (signed char)l;
    c->tprev = srv->tl[l].tail;
    if (c->tprev)
        c->tprev->tnext = c;
    else
        srv->tl[l].head = c;
    srv->tl[l].tail = c;
    if (!c->tprev)
        timer_arm(srv);
}

/*
 * The list a connection belongs on now: waiting for a head (since connecting
 * or since its current request began), receiving a body or idle (inactivity),
 * or none while its requests are with the handler.
 */
static void timer_update(conn_t *c, bool activity)
{
    int want;
    if (c->lingering)
        want = TL_LINGER;
    else if ((c->cur && !c->cur->head_done) || (!c->cur && c->nreq == 0))
        want = TL_HEAD;
    else if (c->cur || !c->qhead)
        want = TL_IDLE;
    else
        want = TL_NONE;
    if (want != c->tlist || (activity && want == TL_IDLE))
        tl_move(c, want);
}

/* ---- requests ---- */

static req_t *req_new(conn_t *c)
{
    req_t *r = chat_calloc(1, sizeof *r);
    r->conn = c;
    r->state = REQ_PARSING;
    r->pub.method = -1;
    r->pub.method_str = "UNKNOWN";
    r->pub.path = "";
    r->pub.body = "";
    r->pub.conn_id = c->id;
    r->pub.server_data = c->srv->cfg.handler_data;
    r->pub.route = "unmatched";
    if (c->qtail)
        c->qtail->next = r;
    else
        c->qhead = r;
    c->qtail = r;
    c->nqueue++;
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
    free(r->head);
    free(r->owned_body);
    free(r);
}

/* Removes r, the queue's tail, from the queue (a request dropped before it was answered). */
static void queue_drop_tail(conn_t *c, req_t *r)
{
    req_t **pp = &c->qhead;
    req_t *prev = NULL;
    while (*pp && *pp != r) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (!*pp)
        return;
    *pp = r->next;
    if (c->qtail == r)
        c->qtail = prev;
    c->nqueue--;
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

static int parse_fail(conn_t *c, int status, const char *code, const char *msg)
{
    c->fail_status = status;
    c->fail_code = code;
    c->fail_msg = msg;
    return -1;
}

static int head_grow(conn_t *c, size_t n)
{
    c->head_bytes += n;
    if (c->head_bytes > c->srv->cfg.max_head)
        return parse_fail(c, 431, "headers_too_large",
                          "the request line and headers exceed the size limit");
    return 0;
}

static int on_message_begin(http_parser *p)
{
    conn_t *c = p->data;
    c->cur = req_new(c);
    c->nreq++;
    c->hstate = HS_NONE;
    c->head_bytes = 0;
    c->expect_len = 0;
    if (c->nreq > 1)
        tl_move(c, TL_HEAD); /* the first request's head is timed from the connect */
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    if (head_grow(c, len))
        return -1;
    c->cur->url_seen = true;
    chat_buf_append(&c->cur->url, at, len);
    return 0;
}

static int header_id(const conn_t *c)
{
    if (c->hflen == 13 && memcmp(c->hfield, "authorization", 13) == 0)
        return HDR_AUTHORIZATION;
    if (c->hflen == 7 && memcmp(c->hfield, "upgrade", 7) == 0)
        return HDR_UPGRADE;
    if (c->hflen == 6 && memcmp(c->hfield, "expect", 6) == 0)
        return HDR_EXPECT;
    if (c->hflen == 10 && memcmp(c->hfield, "connection", 10) == 0)
        return HDR_CONNECTION;
    if (c->hflen == 17 && memcmp(c->hfield, "sec-websocket-key", 17) == 0)
        return HDR_WS_KEY;
    if (c->hflen == 21 && memcmp(c->hfield, "sec-websocket-version", 21) == 0)
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
static int header_value_begin(conn_t *c, req_t *r)
{
    c->hid = (uint8_t)header_id(c);
    c->hstate = HS_VALUE;
    switch (c->hid) {
    case HDR_AUTHORIZATION:
        if (r->has_auth)
            return parse_fail(c, 400, "bad_request", "repeated Authorization header");
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
        c->expect_len = 0;
        break;
    case HDR_CONNECTION:
    case HDR_WS_KEY:
    case HDR_WS_VERSION: {
        /* A repeated header joins the first as a list (a repeated key then fails its check). */
        chat_buf_t *b = handshake_buf(r, c->hid);
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
    conn_t *c = p->data;
    req_t *r = c->cur;
    if (head_grow(c, len + (c->hstate != HS_FIELD ? HEADER_LINE_OVERHEAD : 0)))
        return -1;
    if (r->head_done)
        return 0; /* a chunked trailer: counted, otherwise ignored */
    if (c->hstate != HS_FIELD) {
        c->hstate = HS_FIELD;
        c->hflen = 0;
    }
    /* http-parser in its lenient mode lets a space through; a name is a token (RFC 9110 5.1). */
    for (size_t i = 0; i < len; i++)
        if (!is_tchar((unsigned char)at[i]))
            return parse_fail(c, 400, "bad_request", "invalid header name");
    for (size_t i = 0; i < len && c->hflen < UINT8_MAX; i++, c->hflen++)
        if (c->hflen < sizeof c->hfield)
            c->hfield[c->hflen] = (char)(at[i] >= 'A' && at[i] <= 'Z' ? at[i] + 32 : at[i]);
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    req_t *r = c->cur;
    if (head_grow(c, len))
        return -1;
    if (r->head_done)
        return 0;
    if (c->hstate == HS_FIELD && header_value_begin(c, r))
        return -1;
    switch (c->hid) {
    case HDR_AUTHORIZATION:
        chat_buf_append(&r->auth, at, len);
        break;
    case HDR_UPGRADE:
        chat_buf_append(&r->upgrade, at, len);
        break;
    case HDR_EXPECT:
        for (size_t i = 0; i < len && c->expect_len < UINT8_MAX; i++, c->expect_len++)
            if (c->expect_len < sizeof c->expect)
                c->expect[c->expect_len] =
                    (char)(at[i] >= 'A' && at[i] <= 'Z' ? at[i] + 32 : at[i]);
        break;
    case HDR_CONNECTION:
    case HDR_WS_KEY:
    case HDR_WS_VERSION:
        chat_buf_append(handshake_buf(r, c->hid), at, len);
        break;
    }
    return 0;
}

static void continue_cb(uv_write_t *w, int status)
{
    conn_t *c = w->data;
    free(w);
    c->writes_pending--;
    if (c->closing)
        return;
    if (status < 0)
        conn_close(c, "write_error");
}

/* "100 Continue", unless an earlier answer still has to go out first. */
static void send_continue(conn_t *c, req_t *r)
{
    static const char text[] = "HTTP/1.1 100 Continue\r\n\r\n";
    if (c->qhead != r)
        return; /* the client sends the body anyway after a while (RFC 9110 10.1.1) */
    uv_write_t *w = chat_malloc(sizeof *w);
    w->data = c;
    uv_buf_t b = uv_buf_init((char *)text, sizeof text - 1);
    if (uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, continue_cb) != 0) {
        free(w);
        return;
    }
    c->writes_pending++;
}

static int on_headers_complete(http_parser *p)
{
    conn_t *c = p->data;
    req_t *r = c->cur;
    if (c->hstate == HS_FIELD && header_value_begin(c, r))
        return -1;
    /* Only HTTP/1.x: http-parser also takes a version-less (0.9) request line. */
    if (p->http_major != 1)
        return parse_fail(c, 400, "bad_request", "unsupported HTTP version");
    r->head_done = true;
    r->t_head = uv_hrtime();
    r->pub.method = (int)p->method;
    r->pub.method_str = http_method_str((enum http_method)p->method);
    r->unsafe = !method_is_safe(r->pub.method);
    /* After an upgrade or CONNECT the bytes that follow are another protocol: stop there. */
    r->keep_alive = http_should_keep_alive(p) && !p->upgrade;
    if (split_target(r) != 0)
        return parse_fail(c, 400, "bad_request", "malformed request target");
    r->pub.authorization = r->has_auth ? r->auth.data : NULL;
    r->pub.upgrade = r->has_upgrade ? r->upgrade.data : NULL;
    r->pub.connection = r->connection.data;
    r->pub.ws_key = r->ws_key.data;
    r->pub.ws_version = r->ws_version.data;
    r->pub.http_minor = p->http_minor;
    r->upgrade_req = p->upgrade && p->method == HTTP_GET;
    bool chunked = (p->flags & F_CHUNKED) != 0;
    bool has_length = p->content_length != ULLONG_MAX;
    if (!chunked && has_length && p->content_length > c->srv->cfg.max_body)
        return parse_fail(c, 413, "payload_too_large", "the request body exceeds the size limit");
    if (!chunked && has_length && p->content_length > 0)
        chat_buf_reserve(&r->body, (size_t)p->content_length);
    if (c->expect_len == 12 && memcmp(c->expect, "100-continue", 12) == 0 &&
        (chunked || (has_length && p->content_length > 0)))
        send_continue(c, r);
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    req_t *r = c->cur;
    if (r->body.len + len > c->srv->cfg.max_body)
        return parse_fail(c, 413, "payload_too_large", "the request body exceeds the size limit");
    chat_buf_append(&r->body, at, len);
    return 0;
}

static int on_message_complete(http_parser *p)
{
    conn_t *c = p->data;
    req_t *r = c->cur;
    c->cur = NULL;
    c->done = r;
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

static bool can_dispatch(const conn_t *c, const req_t *r)
{
    return r->unsafe ? c->unanswered == 0 : c->unsafe_unanswered == 0;
}

static void dispatch(conn_t *c, req_t *r)
{
    r->state = REQ_HANDLING;
    c->unanswered++;
    if (r->unsafe)
        c->unsafe_unanswered++;
    c->srv->cfg.handler(&r->pub);
}

static void release_held(conn_t *c)
{
    if (c->held && !c->closing && can_dispatch(c, c->held)) {
        req_t *r = c->held;
        c->held = NULL;
        dispatch(c, r);
    }
}

/* May a new request be parsed now? (A request already begun is always read to its end.) */
static bool may_start(conn_t *c)
{
    return !c->closing && !c->no_more && !c->held && c->nqueue < MAX_OUTSTANDING &&
           uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) <= c->srv->cfg.max_pending_output;
}

static void drop_input(conn_t *c)
{
    free(c->in);
    c->in = NULL;
    c->in_len = 0;
}

/*
 * Answers the request being parsed (or a new one) with an error of the http
 * layer itself, and closes the connection after it.
 */
static void conn_fail(conn_t *c, int status, const char *code, const char *msg)
{
    req_t *r = c->cur;
    c->cur = NULL;
    if (!r)
        r = req_new(c);
    if (!r->head_done) {
        r->t_head = uv_hrtime();
        if (r->url.data)
            r->pub.path = r->url.data;
        if (r->url_seen) {
            r->pub.method = (int)c->parser.method;
            r->pub.method_str = http_method_str((enum http_method)c->parser.method);
        }
    }
    r->keep_alive = false;
    r->unsafe = false;
    r->pub.route = "none";
    r->state = REQ_HANDLING;
    c->unanswered++;
    c->no_more = true;
    c->drain_reason = code;
    drop_input(c);
    chat_buf_t b = CHAT_BUF_INIT;
    chat_json_error(&b, code, msg);
    size_t len;
    char *body = chat_buf_steal(&b, &len);
    respond(r, status, NULL, body, len, true);
}

static void parse_failed(conn_t *c, enum http_errno e)
{
    if (c->fail_status) {
        conn_fail(c, c->fail_status, c->fail_code, c->fail_msg);
        return;
    }
    switch (e) {
    case HPE_HEADER_OVERFLOW:
        conn_fail(c, 431, "headers_too_large",
                  "the request line and headers exceed the size limit");
        break;
    case HPE_INVALID_CONTENT_LENGTH:
    case HPE_UNEXPECTED_CONTENT_LENGTH:
        conn_fail(c, 400, "bad_request", "invalid Content-Length");
        break;
    case HPE_INVALID_CHUNK_SIZE:
        conn_fail(c, 400, "bad_request", "invalid chunked body");
        break;
    case HPE_INVALID_TRANSFER_ENCODING:
        conn_fail(c, 400, "bad_request", "unsupported Transfer-Encoding");
        break;
    case HPE_INVALID_VERSION:
        conn_fail(c, 400, "bad_request", "invalid HTTP version");
        break;
    default:
        conn_fail(c, 400, "bad_request", "malformed request");
        break;
    }
}

/*
 * Parses requests from data while the connection may take them, handing each
 * complete one to the handler. Returns the bytes consumed; the rest must be
 * kept for later (or dropped when the connection no longer reads).
 */
static size_t feed(conn_t *c, const char *data, size_t len)
{
    size_t off = 0;
    while (off < len && !c->closing && !c->no_more) {
        release_held(c);
        if (c->closing)
            break;
        if (!c->cur && !may_start(c))
            break;
        size_t n = http_parser_execute(&c->parser, &settings, data + off, len - off);
        off += n;
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (e == HPE_PAUSED) {
            http_parser_pause(&c->parser, 0);
            req_t *r = c->done;
            c->done = NULL;
            if (!r->keep_alive) {
                c->no_more = true;
                c->drain_reason = r->pub.upgrade ? "upgrade" : "connection_close";
            }
            if (r->upgrade_req && off < len) {
                /* What follows a handshake is the client's first frames: kept for the WebSocket. */
                c->ws_stash = chat_malloc(len - off);
                memcpy(c->ws_stash, data + off, len - off);
                c->ws_stash_len = len - off;
                off = len;
            }
            if (can_dispatch(c, r))
                dispatch(c, r);
            else
                c->held = r;
            continue;
        }
        if (e != HPE_OK) {
            parse_failed(c, e);
            return len;
        }
        if (n == 0)
            break;
    }
    return off;
}

/* ---- reading ---- */

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn_t *c = h->data;
    chat_http_server_t *srv = c->srv;
    if (!srv->rbuf_busy) {
        srv->rbuf_busy = true;
        *buf = uv_buf_init(srv->rbuf, READ_BUF_SIZE);
    } else {
        *buf = uv_buf_init(chat_malloc(READ_BUF_SIZE), READ_BUF_SIZE);
    }
}

static void on_data(conn_t *c, const char *data, size_t len)
{
    if (c->ws && !c->lingering) {
        if (!c->ws_live) {
            /* Not expected (reading stops at the handshake), but keep the bytes in order. */
            c->ws_stash = chat_realloc(c->ws_stash, c->ws_stash_len + len);
            memcpy(c->ws_stash + c->ws_stash_len, data, len);
            c->ws_stash_len += len;
            return;
        }
        ws_input(c, data, len);
        ws_settle(c);
        return;
    }
    if (c->lingering || c->no_more)
        return; /* input we no longer want: discarded */
    if (c->in) {
        /* Not expected (reading stops while input is kept), but keep order if it happens. */
        c->in = chat_realloc(c->in, c->in_len + len);
        memcpy(c->in + c->in_len, data, len);
        c->in_len += len;
        conn_pump(c, true);
        return;
    }
    c->in_process = true;
    size_t n = feed(c, data, len);
    c->in_process = false;
    if (!c->closing && !c->no_more && n < len) {
        c->in = chat_malloc(len - n);
        memcpy(c->in, data + n, len - n);
        c->in_len = len - n;
    }
    conn_settle(c, true);
}

static void on_eof(conn_t *c)
{
    c->peer_eof = true;
    if (c->lingering) {
        conn_close(c, c->drain_reason);
    } else if (c->ws_live) {
        conn_close(c, "ws_client_gone");
    } else if (c->cur) {
        conn_close(c, "client_closed_mid_request");
    } else if (c->qhead || c->writes_pending) {
        /* A half-close after sending requests: answer them, then close. */
        if (!c->no_more)
            c->drain_reason = "client_closed";
        c->no_more = true;
        conn_settle(c, false);
    } else {
        conn_close(c, "client_closed");
    }
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn_t *c = s->data;
    chat_http_server_t *srv = c->srv;
    if (!c->closing) {
        if (nread > 0)
            on_data(c, buf->base, (size_t)nread);
        else if (nread == UV_EOF)
            on_eof(c);
        else if (nread < 0)
            conn_close(c, "read_error");
    }
    if (buf->base == srv->rbuf)
        srv->rbuf_busy = false;
    else
        free(buf->base);
}

static void set_reading(conn_t *c, bool want)
{
    if (want == c->reading)
        return;
    if (want) {
        int rc = uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
        if (rc != 0) {
            conn_close(c, "read_error");
            return;
        }
    } else {
        uv_read_stop((uv_stream_t *)&c->tcp);
    }
    c->reading = want;
}

static void shutdown_cb(uv_shutdown_t *sr, int status)
{
    conn_t *c = sr->data;
    free(sr);
    if (status < 0 && !c->closing)
        conn_close(c, c->drain_reason);
}

/*
 * Every answer is out: send FIN and discard input for a moment, so that a
 * client still sending (an oversized body) reads our answer rather than a
 * reset. The connection closes on the client's EOF or after LINGER_MS.
 */
static void start_linger(conn_t *c)
{
    if (c->peer_eof || c->srv->closing) {
        conn_close(c, c->drain_reason);
        return;
    }
    uv_shutdown_t *sr = chat_malloc(sizeof *sr);
    sr->data = c;
    if (uv_shutdown(sr, (uv_stream_t *)&c->tcp, shutdown_cb) != 0) {
        free(sr);
        conn_close(c, c->drain_reason);
        return;
    }
    c->lingering = true;
    tl_move(c, TL_LINGER);
    set_reading(c, true);
}

/*
 * Brings reading and the timer in line with the connection's state, and
 * starts the end of a draining connection whose answers are all written.
 */
static void conn_settle(conn_t *c, bool activity)
{
    if (c->ws) {
        ws_settle(c);
        return;
    }
    if (c->closing || c->in_process)
        return;
    if (c->lingering) {
        set_reading(c, true);
        return;
    }
    if (c->no_more) {
        drop_input(c);
        if (!c->qhead && c->writes_pending == 0) {
            start_linger(c);
            return;
        }
    }
    set_reading(c, !c->no_more && !c->in && (c->cur || may_start(c)));
    if (!c->closing)
        timer_update(c, activity);
}

/* Hands over held requests and parses kept input, as far as the connection may now. */
static void conn_pump(conn_t *c, bool activity)
{
    if (c->ws) {
        ws_settle(c);
        return;
    }
    if (c->closing || c->in_process)
        return;
    c->in_process = true;
    release_held(c);
    if (c->in && !c->closing && !c->no_more) {
        char *in = c->in;
        size_t len = c->in_len;
        c->in = NULL;
        c->in_len = 0;
        size_t n = feed(c, in, len);
        if (!c->closing && !c->no_more && n < len) {
            memmove(in, in + n, len - n);
            c->in = in;
            c->in_len = len - n;
        } else {
            free(in);
        }
    }
    c->in_process = false;
    conn_settle(c, activity);
}

static void idle_cb(uv_idle_t *h)
{
    chat_http_server_t *srv = h->data;
    conn_t *c;
    while ((c = srv->resume_head)) {
        srv->resume_head = c->rnext;
        if (!srv->resume_head)
            srv->resume_tail = NULL;
        c->rnext = NULL;
        c->resume_queued = false;
        bool wrote = c->wrote_now;
        c->wrote_now = false;
        conn_pump(c, wrote);
    }
    uv_idle_stop(&srv->idle);
}

/* Schedules conn_pump() on the next loop iteration (never inside a handler's call). */
static void conn_kick(conn_t *c)
{
    chat_http_server_t *srv = c->srv;
    if (c->resume_queued || c->closing || srv->finishing)
        return;
    c->resume_queued = true;
    c->rnext = NULL;
    if (srv->resume_tail)
        srv->resume_tail->rnext = c;
    else
        srv->resume_head = c;
    srv->resume_tail = c;
    uv_idle_start(&srv->idle, idle_cb);
}

static void resume_remove(conn_t *c)
{
    if (!c->resume_queued)
        return;
    chat_http_server_t *srv = c->srv;
    conn_t *prev = NULL;
    for (conn_t *x = srv->resume_head; x; prev = x, x = x->rnext) {
        if (x != c)
            continue;
        if (prev)
            prev->rnext = c->rnext;
        else
            srv->resume_head = c->rnext;
        if (srv->resume_tail == c)
            srv->resume_tail = prev;
        break;
    }
    c->rnext = NULL;
    c->resume_queued = false;
}

/* ---- writing ---- */

static void write_cb(uv_write_t *w, int status)
{
    req_t *r = w->data;
    conn_t *c = r->conn;
    req_free(r);
    c->writes_pending--;
    if (c->closing)
        return;
    if (status < 0) {
        conn_close(c, "write_error");
        return;
    }
    conn_pump(c, true);
}

/*
 * Writes what uv_try_write takes now; true when all of r went out. Only
 * with nothing queued in libuv, so order holds. A write done here costs one
 * writev and no epoll_ctl, where uv_write re-arms the socket's watcher.
 */
static bool write_now(conn_t *c, req_t *r)
{
    if (c->writes_pending > 0 || c->srv->finishing)
        return false;
    int n = uv_try_write((uv_stream_t *)&c->tcp, r->out, r->nout);
    if (n < 0)
        return false; /* EAGAIN, or an error uv_write will report */
    size_t left = (size_t)n;
    unsigned i = 0;
    while (i < r->nout && left >= r->out[i].len)
        left -= r->out[i++].len;
    if (i == r->nout)
        return true;
    /* partly written: the rest goes to uv_write from where it stopped */
    memmove(&r->out[0], &r->out[i], sizeof r->out[0] * (r->nout - i));
    r->nout -= i;
    r->out[0].base += left;
    r->out[0].len -= left;
    return false;
}

/* Hands every answered request at the front of the queue to the socket, in order. */
static void flush(conn_t *c)
{
    while (c->qhead && c->qhead->state == REQ_RESPONDED) {
        req_t *r = c->qhead;
        c->qhead = r->next;
        if (!c->qhead)
            c->qtail = NULL;
        r->next = NULL;
        c->nqueue--;
        r->state = REQ_WRITING;
        bool upgraded = r->ws_accept;
        if (write_now(c, r)) {
            req_free(r);
            /* what write_cb would do, on the next pass of the loop */
            c->wrote_now = true;
            conn_kick(c);
            if (upgraded)
                ws_go_live(c); /* every later write follows the 101 */
            continue;
        }
        r->wr.data = r;
        if (uv_write(&r->wr, (uv_stream_t *)&c->tcp, r->out, r->nout, write_cb) != 0) {
            req_free(r);
            conn_close(c, "write_error");
            return;
        }
        c->writes_pending++;
        if (upgraded)
            ws_go_live(c); /* every later write follows the 101 */
    }
}

static void record(conn_t *c, req_t *r, int status)
{
    chat_http_server_t *srv = c->srv;
    const char *route = r->pub.route ? r->pub.route : "unmatched";
    double dur = (double)(uv_hrtime() - r->t_head) / 1e9;
    mslot_t *s = metrics_slot(srv, route, r->pub.method, r->pub.method_str, status);
    chat_metric_inc(s->count);
    chat_metric_observe(s->duration, dur);
    chat_log_debug("event=request conn=%llu method=%s path=%s status=%d dur_ms=%.2f",
                   (unsigned long long)c->id, r->pub.method_str, r->pub.path, status, dur * 1e3);
}

static void respond(req_t *r, int status, const char *headers, const char *body, size_t len,
                    bool owned)
{
    conn_t *c = r->conn;
    if (!c) {
        if (owned)
            free((char *)body);
        req_free(r);
        return;
    }
    if (r->state != REQ_HANDLING) {
        chat_log_error("event=http_respond_twice conn=%llu status=%d", (unsigned long long)c->id,
                       status);
        if (owned)
            free((char *)body);
        return;
    }
    c->unanswered--;
    if (r->unsafe)
        c->unsafe_unanswered--;
    record(c, r, status);

    bool no_body = (status >= 100 && status < 200) || status == 204 || status == 304;
    bool send_body = !no_body && r->pub.method != HTTP_HEAD && len > 0;
    bool close = !r->keep_alive || (c->no_more && r->next == NULL);
    chat_buf_t h = CHAT_BUF_INIT;
    size_t hlen = headers ? strlen(headers) : 0;
    chat_buf_reserve(&h, 160 + hlen + (send_body && !owned ? len : 0));
    chat_buf_printf(&h, "HTTP/1.1 %d %s\r\n", status, chat_http_status_text(status));
    if (len > 0 && !no_body && !has_content_type(headers))
        chat_buf_puts(&h, "Content-Type: application/json\r\n");
    if (!no_body)
        chat_buf_printf(&h, "Content-Length: %zu\r\n", len);
    chat_buf_printf(&h, "Date: %s\r\nConnection: %s\r\n", http_date(c->srv),
                    r->ws_accept ? "Upgrade"
                    : close      ? "close"
                                 : "keep-alive");
    if (hlen)
        chat_buf_append(&h, headers, hlen);
    chat_buf_puts(&h, "\r\n");
    if (send_body && !owned)
        chat_buf_append(&h, body, len);
    r->out[0] = uv_buf_init(h.data, (unsigned)h.len);
    r->nout = 1;
    r->head = chat_buf_steal(&h, NULL);
    if (owned) {
        if (send_body) {
            r->owned_body = (char *)body;
            r->out[1] = uv_buf_init(r->owned_body, (unsigned)len);
            r->nout = 2;
        } else {
            free((char *)body);
        }
    }
    if (close && !c->no_more && !r->ws_accept) {
        c->no_more = true;
        c->drain_reason = "connection_close";
    }
    r->state = REQ_RESPONDED;
    flush(c);
    if (!c->closing && !c->in_process && (c->held || !c->reading || c->no_more))
        conn_kick(c);
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

/* ---- WebSocket mode ---- */

struct ws_write {
    uv_write_t w;
    conn_t *c;
    char *data;
};

static void ws_on_text(void *ud, const char *msg, size_t len)
{
    conn_t *c = ud;
    if (!c->closing && c->ws_handler.on_message)
        c->ws_handler.on_message((chat_ws_conn_t *)c, msg, len, false, c->ws_ud);
}

static void ws_on_binary(void *ud, const char *msg, size_t len)
{
    conn_t *c = ud;
    if (!c->closing && c->ws_handler.on_message)
        c->ws_handler.on_message((chat_ws_conn_t *)c, msg, len, true, c->ws_ud);
}

static void ws_on_output(void *ud, const void *data, size_t len)
{
    conn_t *c = ud;
    chat_buf_append(&c->ws_out, data, len);
}

static void ws_write_cb(uv_write_t *w, int status)
{
    struct ws_write *ww = (struct ws_write *)w;
    conn_t *c = ww->c;
    free(ww->data);
    free(ww);
    c->writes_pending--;
    if (c->closing)
        return;
    if (status < 0) {
        conn_close(c, "write_error");
        return;
    }
    ws_settle(c);
}

/* Serialises the engine's queued frames and hands them to uv_write as one write. */
static void ws_flush(conn_t *c)
{
    if (c->closing || c->lingering || !c->ws_live || c->in_process)
        return;
    if (chat_ws_engine_flush(c->ws) < 0) {
        conn_close(c, "ws_engine_error");
        return;
    }
    if (c->ws_out.len == 0)
        return;
    struct ws_write *ww = chat_malloc(sizeof *ww);
    size_t len;
    ww->c = c;
    ww->data = chat_buf_steal(&c->ws_out, &len);
    uv_buf_t b = uv_buf_init(ww->data, (unsigned)len);
    if (uv_write(&ww->w, (uv_stream_t *)&c->tcp, &b, 1, ws_write_cb) != 0) {
        free(ww->data);
        free(ww);
        conn_close(c, "write_error");
        return;
    }
    c->writes_pending++;
    /* A client that does not read is not given unbounded memory: it goes, as in HTTP. */
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > c->srv->cfg.max_pending_output)
        conn_close(c, "ws_slow_reader");
}

/* Frames from the client: any input proves it alive. */
static void ws_input(conn_t *c, const char *data, size_t len)
{
    c->ws_ping_sent = false;
    tl_move(c, TL_WS);
    c->in_process = true; /* sends from the handler are queued, flushed after */
    int rc = chat_ws_engine_feed(c->ws, data, len);
    c->in_process = false;
    if (rc < 0)
        conn_close(c, "ws_engine_error");
}

/*
 * Brings a WebSocket connection in line with its engine: feeds what came
 * with the handshake, writes queued frames, reads while the engine wants
 * frames, and ends the connection once the close handshake is over (or at
 * once after our close frame when the server is closing).
 */
static void ws_settle(conn_t *c)
{
    if (c->closing || c->in_process || !c->ws_live)
        return;
    if (c->lingering) {
        set_reading(c, true);
        return;
    }
    if (c->ws_stash) {
        char *in = c->ws_stash;
        size_t len = c->ws_stash_len;
        c->ws_stash = NULL;
        c->ws_stash_len = 0;
        ws_input(c, in, len);
        free(in);
        if (c->closing)
            return;
    }
    if (c->srv->closing && !chat_ws_engine_closing(c->ws))
        chat_ws_engine_close(c->ws, CHAT_WS_CLOSE_GOING_AWAY, "server shutting down");
    ws_flush(c);
    if (c->closing)
        return;
    if (chat_ws_engine_finished(c->ws) || (c->srv->closing && chat_ws_engine_closing(c->ws))) {
        if (c->writes_pending == 0) {
            c->drain_reason = c->srv->closing ? "server_closing" : "ws_closed";
            chat_log_debug("event=ws_close conn=%llu code=%u", (unsigned long long)c->id,
                           (unsigned)chat_ws_engine_close_code(c->ws));
            start_linger(c);
        } else {
            set_reading(c, false);
        }
        return;
    }
    set_reading(c, chat_ws_engine_want_read(c->ws));
}

/* The 101 is handed to uv_write: the connection is a WebSocket from here on. */
static void ws_go_live(conn_t *c)
{
    chat_http_server_t *srv = c->srv;
    c->ws_live = true;
    if (c->counted) {
        chat_metric_add(srv->gauge, -1);
        chat_metric_add(srv->ws_gauge, 1);
    }
    drop_input(c);
    tl_move(c, TL_WS);
    chat_log_debug("event=ws_open conn=%llu", (unsigned long long)c->id);
    conn_kick(c); /* the stash is fed on the next iteration, outside the handler */
}

chat_ws_conn_t *chat_http_upgrade(chat_http_request_t *req, const chat_http_ws_handler_t *h,
                                  void *ud)
{
    req_t *r = (req_t *)req;
    conn_t *c = r->conn;
    if (!c) {
        req_free(r);
        return NULL;
    }
    const char *why = NULL;
    int st = chat_ws_handshake_check(req, &why);
    if (st == 0 && !r->upgrade_req) {
        st = 400;
        why = "not an upgrade request";
    }
    if (st == 0 && c->srv->closing) {
        st = 503;
        why = "the server is shutting down";
    }
    if (st != 0) {
        chat_buf_t b = CHAT_BUF_INIT;
        chat_json_error(&b, st == 503 ? "unavailable" : "bad_request", why);
        size_t len;
        char *body = chat_buf_steal(&b, &len);
        respond(r, st, st == 426 ? "Sec-WebSocket-Version: 13\r\n" : NULL, body, len, true);
        return NULL;
    }
    const char *key = req->ws_key;
    size_t klen = strlen(key);
    while (*key == ' ' || *key == '\t') {
        key++;
        klen--;
    }
    while (klen && (key[klen - 1] == ' ' || key[klen - 1] == '\t'))
        klen--;
    char accept[CHAT_WS_ACCEPT_LEN];
    chat_ws_accept_key(key, klen, accept);
    static const chat_ws_engine_cbs_t cbs = {ws_on_text, ws_on_binary, ws_on_output};
    c->ws = chat_ws_engine_create(&cbs, c, CHAT_WS_MAX_MESSAGE);
    c->ws_handler = *h;
    c->ws_ud = ud;
    r->ws_accept = true;
    char headers[128];
    snprintf(headers, sizeof headers, "Upgrade: websocket\r\nSec-WebSocket-Accept: %s\r\n", accept);
    respond(r, 101, headers, NULL, 0, false);
    return (chat_ws_conn_t *)c;
}

int chat_ws_conn_send_text(chat_ws_conn_t *ws, const char *msg, size_t len)
{
    conn_t *c = (conn_t *)ws;
    if (c->closing || c->lingering || chat_ws_engine_send_text(c->ws, msg, len) < 0)
        return -1;
    ws_flush(c);
    return 0;
}

void chat_ws_conn_close(chat_ws_conn_t *ws, uint16_t code, const char *reason)
{
    conn_t *c = (conn_t *)ws;
    if (c->closing || c->lingering || chat_ws_engine_close(c->ws, code, reason) < 0)
        return;
    ws_settle(c);
}

uint64_t chat_ws_conn_id(const chat_ws_conn_t *ws)
{
    return ((const conn_t *)ws)->id;
}

/* ---- connections ---- */

static void maybe_finish(chat_http_server_t *srv);

static void conn_closed_cb(uv_handle_t *h)
{
    conn_t *c = h->data;
    chat_http_server_t *srv = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    srv->nconns--;
    if (c->counted) {
        atomic_fetch_sub(srv->cfg.open_connections, 1);
        chat_metric_add(c->ws_live ? srv->ws_gauge : srv->gauge, -1);
    }
    if (c->ws) {
        if (c->ws_handler.on_close)
            c->ws_handler.on_close((chat_ws_conn_t *)c, c->ws_ud);
        chat_ws_engine_destroy(c->ws);
    }
    free(c->ws_stash);
    chat_buf_dispose(&c->ws_out);
    free(c);
    maybe_finish(srv);
}

/*
 * The one way a connection ends. Requests the handler still holds are marked
 * cancelled (their answer will only free them); every other request goes now;
 * the struct itself is freed in conn_closed_cb.
 */
static void conn_close(conn_t *c, const char *reason)
{
    if (c->closing)
        return;
    c->closing = true;
    chat_log_debug("event=conn_close conn=%llu reason=%s requests=%u", (unsigned long long)c->id,
                   reason ? reason : "unknown", (unsigned)c->nreq);
    tl_remove(c);
    resume_remove(c);
    drop_input(c);
    req_t *r = c->qhead;
    while (r) {
        req_t *next = r->next;
        if (r->state == REQ_HANDLING) {
            r->conn = NULL;
            r->next = NULL;
        } else {
            req_free(r);
        }
        r = next;
    }
    c->qhead = c->qtail = c->cur = c->held = c->done = NULL;
    c->nqueue = 0;
    c->reading = false;
    uv_close((uv_handle_t *)&c->tcp, conn_closed_cb);
}

/* Takes a slot of the shared connection counter unless it is at the cap. */
static bool slot_take(chat_http_server_t *srv)
{
    _Atomic int *n = srv->cfg.open_connections;
    int cur = atomic_load(n);
    do {
        if (srv->cfg.max_connections > 0 && cur >= srv->cfg.max_connections)
            return false;
    } while (!atomic_compare_exchange_weak(n, &cur, cur + 1));
    return true;
}

static void on_connection(uv_stream_t *l, int status)
{
    chat_http_server_t *srv = l->data;
    if (status < 0) {
        chat_log_warn("event=accept_error error=\"%s\"", uv_strerror(status));
        return;
    }
    conn_t *c = chat_calloc(1, sizeof *c);
    c->srv = srv;
    c->id = atomic_fetch_add(&next_conn_id, 1) + 1;
    c->tlist = TL_NONE;
    uv_tcp_init(srv->loop, &c->tcp);
    c->tcp.data = c;
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;
    /* Always accept, so the backlog drains even at the cap. */
    int rc = uv_accept(l, (uv_stream_t *)&c->tcp);
    if (rc != 0) {
        conn_close(c, "accept_failed");
        return;
    }
    if (srv->closing) {
        conn_close(c, "server_closing");
        return;
    }
    if (!slot_take(srv)) {
        time_t now = time(NULL);
        if (now != srv->reject_log_sec) {
            srv->reject_log_sec = now;
            chat_log_warn("event=max_connections_reached max_connections=%d",
                          srv->cfg.max_connections);
        }
        conn_close(c, "max_connections");
        return;
    }
    c->counted = true;
    chat_metric_add(srv->gauge, 1);
    uv_tcp_nodelay(&c->tcp, 1);
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    chat_log_debug("event=conn_open conn=%llu", (unsigned long long)c->id);
    conn_settle(c, false);
}

static void timer_cb(uv_timer_t *t)
{
    chat_http_server_t *srv = t->data;
    uint64_t now = uv_now(srv->loop);
    srv->timer_due = 0;
    conn_t *c;
    while ((c = srv->tl[TL_HEAD].head) && c->deadline <= now) {
        tl_remove(c);
        if (c->cur && !c->cur->head_done) {
            conn_fail(c, 408, "request_timeout", "the request head was not received in time");
            conn_settle(c, false);
        } else {
            conn_close(c, "header_timeout");
        }
    }
    while ((c = srv->tl[TL_IDLE].head) && c->deadline <= now) {
        tl_remove(c);
        if (c->cur) {
            conn_fail(c, 408, "request_timeout", "the request body was not received in time");
            conn_settle(c, false);
        } else {
            conn_close(c, c->writes_pending ? "send_timeout" : "idle_timeout");
        }
    }
    while ((c = srv->tl[TL_LINGER].head) && c->deadline <= now)
        conn_close(c, c->drain_reason);
    while ((c = srv->tl[TL_WS].head) && c->deadline <= now) {
        if (c->ws_ping_sent) {
            /* Silent for two intervals, not even a pong: the peer is gone. */
            conn_close(c, "ws_ping_timeout");
            continue;
        }
        c->ws_ping_sent = true;
        tl_move(c, TL_WS);
        if (chat_ws_engine_ping(c->ws) == 0)
            ws_settle(c);
    }
    timer_arm(srv);
}

/* ---- server ---- */

static void server_free(chat_http_server_t *srv)
{
    free(srv->mc);
    free(srv->rbuf);
    free(srv->host);
    free(srv);
}

static void server_handle_closed(uv_handle_t *h)
{
    chat_http_server_t *srv = h->data;
    if (--srv->open_handles > 0)
        return;
    void (*cb)(void *) = srv->close_cb;
    void *arg = srv->close_arg;
    server_free(srv);
    if (cb)
        cb(arg);
}

static void maybe_finish(chat_http_server_t *srv)
{
    if (!srv->closing || srv->nconns > 0 || srv->finishing)
        return;
    srv->finishing = true;
    uv_close((uv_handle_t *)&srv->timer, server_handle_closed);
    uv_close((uv_handle_t *)&srv->idle, server_handle_closed);
}

void chat_http_server_close(chat_http_server_t *srv, void (*cb)(void *arg), void *arg)
{
    if (srv->closing)
        return;
    srv->closing = true;
    srv->close_cb = cb;
    srv->close_arg = arg;
    uv_close((uv_handle_t *)&srv->listener, server_handle_closed);
    conn_t *c = srv->conns;
    while (c) {
        conn_t *next = c->next;
        if (c->closing) {
            c = next;
            continue;
        }
        if (c->ws_live && !c->lingering) {
            ws_settle(c); /* says 1001 to the client, then closes */
            c = next;
            continue;
        }
        if (c->cur) {
            /* A request still arriving is not in flight: it goes. */
            queue_drop_tail(c, c->cur);
            req_free(c->cur);
            c->cur = NULL;
        }
        if (c->lingering || (!c->qhead && c->writes_pending == 0)) {
            conn_close(c, "server_closing");
        } else {
            /* Answer what is in flight (the last answer says close), then close. */
            if (!c->no_more)
                c->drain_reason = "server_closing";
            c->no_more = true;
            conn_pump(c, false);
        }
        c = next;
    }
    maybe_finish(srv);
}

/* Creates, binds and starts listening on a SO_REUSEPORT socket. Returns the fd or -errno. */
static int listen_socket(const char *host, int port, int *bound_port)
{
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    char hbuf[256];
    const char *node = host;
    if (!host || !host[0] || strcmp(host, "*") == 0) {
        node = NULL;
    } else if (host[0] == '[') {
        size_t n = strlen(host);
        if (n < 3 || host[n - 1] != ']' || n - 2 >= sizeof hbuf)
            return UV_EINVAL;
        memcpy(hbuf, host + 1, n - 2);
        hbuf[n - 2] = '\0';
        node = hbuf;
    }
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int gai = getaddrinfo(node, service, &hints, &res);
    if (gai != 0)
        return gai == EAI_SYSTEM ? -errno : UV_EADDRNOTAVAIL;
    int err = UV_EADDRNOTAVAIL;
    int fd = -1;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            err = -errno;
            continue;
        }
        int one = 1;
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
            bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, LISTEN_BACKLOG) != 0) {
            err = -errno;
            close(fd);
            fd = -1;
            continue;
        }
        break;
    }
    freeaddrinfo(res);
    if (fd < 0)
        return err;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    *bound_port = port;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET)
            *bound_port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        else if (ss.ss_family == AF_INET6)
            *bound_port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    return fd;
}

static void settings_init(void)
{
    /* Idempotent: every worker writes the same values. */
    settings.on_message_begin = on_message_begin;
    settings.on_url = on_url;
    settings.on_header_field = on_header_field;
    settings.on_header_value = on_header_value;
    settings.on_headers_complete = on_headers_complete;
    settings.on_body = on_body;
    settings.on_message_complete = on_message_complete;
}

chat_http_server_t *chat_http_server_create(uv_loop_t *loop, const chat_http_server_config_t *cfg,
                                            int *err)
{
    static uv_once_t once = UV_ONCE_INIT;
    uv_once(&once, settings_init);
    int port = 0;
    int fd = listen_socket(cfg->host, cfg->port, &port);
    if (fd < 0) {
        if (err)
            *err = fd;
        return NULL;
    }
    chat_http_server_t *srv = chat_calloc(1, sizeof *srv);
    srv->loop = loop;
    srv->cfg = *cfg;
    srv->host = cfg->host ? chat_strdup(cfg->host) : NULL;
    srv->cfg.host = srv->host;
    srv->port = port;
    if (srv->cfg.header_timeout_ms <= 0)
        srv->cfg.header_timeout_ms = DEFAULT_HEADER_TIMEOUT_MS;
    if (srv->cfg.idle_timeout_ms <= 0)
        srv->cfg.idle_timeout_ms = DEFAULT_IDLE_TIMEOUT_MS;
    if (srv->cfg.max_head == 0)
        srv->cfg.max_head = DEFAULT_MAX_HEAD;
    if (srv->cfg.max_body == 0)
        srv->cfg.max_body = DEFAULT_MAX_BODY;
    if (srv->cfg.max_pending_output == 0)
        srv->cfg.max_pending_output = DEFAULT_MAX_PENDING_OUTPUT;
    if (srv->cfg.ws_ping_interval_ms <= 0)
        srv->cfg.ws_ping_interval_ms = DEFAULT_WS_PING_INTERVAL_MS;
    if (!srv->cfg.open_connections)
        srv->cfg.open_connections = &srv->own_counter;
    srv->rbuf = chat_malloc(READ_BUF_SIZE);
    chat_metric_family_t *open =
        chat_metrics_gauge("chatd_connections_open", "Client connections open");
    srv->gauge = chat_metric_series(open, "kind=\"http\"");
    srv->ws_gauge = chat_metric_series(open, "kind=\"websocket\"");
    srv->requests = chat_metrics_counter("chatd_http_requests_total", "HTTP requests answered");
    srv->durations = chat_metrics_histogram(
        "chatd_http_request_duration_seconds", "Time from a complete request head to its answer",
        chat_metrics_latency_bounds, chat_metrics_latency_nbounds);
    uv_timer_init(loop, &srv->timer);
    srv->timer.data = srv;
    uv_idle_init(loop, &srv->idle);
    srv->idle.data = srv;
    uv_tcp_init(loop, &srv->listener);
    srv->listener.data = srv;
    srv->open_handles = 3;
    int rc = uv_tcp_open(&srv->listener, fd);
    if (rc != 0)
        close(fd);
    else
        rc = uv_listen((uv_stream_t *)&srv->listener, LISTEN_BACKLOG, on_connection);
    if (rc != 0) {
        /* The handles close on the next loop run, which frees the server. */
        chat_http_server_close(srv, NULL, NULL);
        if (err)
            *err = rc;
        return NULL;
    }
    chat_log_debug("event=http_listen host=%s port=%d", cfg->host ? cfg->host : "*", port);
    return srv;
}
