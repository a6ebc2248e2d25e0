/*
 * HTTP/1.1 server on a libuv loop (see http.h). Bytes are parsed straight
 * from one shared read buffer per server: a connection owns only its parser
 * state and the requests it has not answered yet, so an idle keep-alive
 * connection costs a few hundred bytes. Responses leave in request order.
 */
#include "net/http.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "core/json.h"
#include "core/log.h"
#include "core/metrics.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <errno.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define READ_BUF_SIZE (64 * 1024)
#define MAX_OUTSTANDING 32 /* pipelined requests per connection being handled */
#define METRIC_SLOTS 256

typedef struct conn conn_t;

/* A request's life: parsing -> handling (handler owns it) -> answered -> written. */
enum req_state { REQ_PARSING, REQ_HANDLING, REQ_ANSWERED, REQ_WRITING };

typedef struct req {
    chat_http_request_t pub; /* first: handlers see only this part */
    conn_t *conn;
    struct req *next; /* the connection's queue, in request order */
    enum req_state state;
    int cancelled;
    int keep_alive;
    int head_only;
    int status;
    uint64_t start;
    chat_buf_t url, body, auth, upgrade;
    int auth_count;
    chat_buf_t out_head;
    char *out_body;
    size_t out_body_len;
    uv_write_t write;
} req_t;

struct conn {
    uv_tcp_t tcp; /* first: the handle's memory is the connection's */
    uv_timer_t timer;
    chat_http_server_t *srv;
    conn_t *prev, *next; /* the server's list */
    http_parser parser;
    uint64_t id;
    req_t *cur;               /* being parsed */
    req_t *head, *tail;       /* parsed, not yet written, in order */
    int outstanding;          /* requests parsed but not written */
    chat_buf_t field, value;  /* header being parsed */
    int last_was_value;
    size_t head_bytes;
    int in_message;
    int error_status;         /* 400/413/431: answer, then close */
    char *pending;            /* bytes read but not parsed (paused parser) */
    size_t pending_len;
    int reading;
    int closing;              /* uv_close called */
    int close_after;          /* close once every answer is written */
    int refs;                 /* handle + requests + writes */
    int counted;              /* counted in open_connections */
    int seen_request;
};

struct metric_slot {
    const char *route;
    int method;
    int status;
    chat_metric_t *count;
    chat_metric_t *duration;
};

struct chat_http_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    chat_http_server_config_t cfg;
    http_parser_settings settings;
    char *read_buf;
    int read_buf_busy;
    conn_t *conns;
    int nconns;
    int closing;
    int listener_closed;
    void (*close_cb)(void *);
    void *close_arg;
    char date[40];
    time_t date_sec;
    struct metric_slot slots[METRIC_SLOTS];
};

static _Atomic uint64_t next_conn_id = 1;
static chat_metric_family_t *fam_requests, *fam_duration, *fam_open;
static chat_metric_t *open_gauge;

static void conn_close(conn_t *c, const char *reason);
static void conn_read_more(conn_t *c);
static void conn_flush(conn_t *c);
static void conn_arm_timer(conn_t *c);
static void maybe_finish_close(chat_http_server_t *srv);

/* ---- status texts and dates ---- */

const char *chat_http_status_text(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Unknown";
    }
}

static const char *date_now(chat_http_server_t *srv)
{
    time_t now = time(NULL);
    if (now != srv->date_sec) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(srv->date, sizeof srv->date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        srv->date_sec = now;
    }
    return srv->date;
}

/* ---- metrics ---- */

static void metrics_init_once(void)
{
    fam_requests = chat_metrics_counter("chatd_http_requests_total", "HTTP requests answered.");
    fam_duration = chat_metrics_histogram("chatd_http_request_duration_seconds",
                                          "Time from a complete request head to its answer.",
                                          chat_metrics_latency_bounds,
                                          chat_metrics_latency_nbounds);
    fam_open = chat_metrics_gauge("chatd_connections_open", "Client connections open.");
    open_gauge = chat_metric_series(fam_open, "kind=\"http\"");
}

static void metrics_init(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, metrics_init_once);
}

static struct metric_slot *metric_slot(chat_http_server_t *srv, const char *route, int method,
                                       int status)
{
    unsigned h = (unsigned)(((uintptr_t)route >> 3) * 31u + (unsigned)method * 7u + (unsigned)status);
    for (int i = 0; i < 8; i++) {
        struct metric_slot *s = &srv->slots[(h + (unsigned)i) % METRIC_SLOTS];
        if (s->route == route && s->method == method && s->status == status)
            return s;
        if (!s->route) {
            char labels[512];
            snprintf(labels, sizeof labels, "route=\"%s\",method=\"%s\",status=\"%d\"", route,
                     http_method_str((enum http_method)method), status);
            s->count = chat_metric_series(fam_requests, labels);
            snprintf(labels, sizeof labels, "route=\"%s\"", route);
            s->duration = chat_metric_series(fam_duration, labels);
            s->route = route;
            s->method = method;
            s->status = status;
            return s;
        }
    }
    return NULL; /* table crowded: look up in the registry */
}

static void record(chat_http_server_t *srv, req_t *r)
{
    double dur = r->start ? (double)(uv_hrtime() - r->start) / 1e9 : 0.0;
    const char *route = r->pub.route ? r->pub.route : "unmatched";
    struct metric_slot *s = metric_slot(srv, route, r->pub.method, r->status);
    if (s) {
        chat_metric_inc(s->count);
        chat_metric_observe(s->duration, dur);
    } else {
        char labels[512];
        snprintf(labels, sizeof labels, "route=\"%s\",method=\"%s\",status=\"%d\"", route,
                 http_method_str((enum http_method)r->pub.method), r->status);
        chat_metric_inc(chat_metric_series(fam_requests, labels));
        snprintf(labels, sizeof labels, "route=\"%s\"", route);
        chat_metric_observe(chat_metric_series(fam_duration, labels), dur);
    }
    chat_log_debug("event=request conn=%llu method=%s path=%s status=%d dur_ms=%.3f",
                   (unsigned long long)r->conn->id, http_method_str((enum http_method)r->pub.method),
                   r->pub.path ? r->pub.path : "-", r->status, dur * 1000);
}

/* ---- connection lifetime ---- */

static void conn_unref(conn_t *c)
{
    if (--c->refs > 0)
        return;
    chat_http_server_t *srv = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    srv->nconns--;
    chat_buf_dispose(&c->field);
    chat_buf_dispose(&c->value);
    free(c->pending);
    free(c);
    maybe_finish_close(srv);
}

static void req_free(req_t *r)
{
    chat_buf_dispose(&r->url);
    chat_buf_dispose(&r->body);
    chat_buf_dispose(&r->auth);
    chat_buf_dispose(&r->upgrade);
    chat_buf_dispose(&r->out_head);
    free(r->out_body);
    conn_t *c = r->conn;
    free(r);
    conn_unref(c);
}

static void timer_closed_cb(uv_handle_t *h)
{
    conn_unref(h->data);
}

static void tcp_closed_cb(uv_handle_t *h)
{
    conn_t *c = h->data;
    uv_close((uv_handle_t *)&c->timer, timer_closed_cb);
}

/* The one way a connection ends. Requests still with their handler are cancelled. */
static void conn_close(conn_t *c, const char *reason)
{
    if (c->closing)
        return;
    c->closing = 1;
    chat_log_debug("event=conn_close conn=%llu reason=%s", (unsigned long long)c->id, reason);
    if (c->counted) {
        atomic_fetch_sub(c->srv->cfg.open_connections, 1);
        chat_metric_add(open_gauge, -1);
        c->counted = 0;
    }
    /* Unanswered requests are cancelled; answered, unwritten ones are dropped. */
    req_t *r = c->head;
    c->head = c->tail = NULL;
    while (r) {
        req_t *next = r->next;
        r->next = NULL;
        if (r->state == REQ_HANDLING)
            r->cancelled = 1; /* freed when its handler answers */
        else if (r->state != REQ_WRITING)
            req_free(r);      /* REQ_WRITING: freed by its write callback */
        r = next;
    }
    if (c->cur) {
        req_t *cur = c->cur;
        c->cur = NULL;
        req_free(cur);
    }
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->tcp, tcp_closed_cb);
}

static void maybe_finish_close(chat_http_server_t *srv)
{
    if (!srv->closing || !srv->listener_closed || srv->nconns > 0)
        return;
    void (*cb)(void *) = srv->close_cb;
    void *arg = srv->close_arg;
    free(srv->read_buf);
    free(srv);
    if (cb)
        cb(arg);
}

/* ---- timers ---- */

static void timer_cb(uv_timer_t *t)
{
    conn_t *c = t->data;
    conn_close(c, c->in_message || !c->seen_request ? "header_timeout" : "idle_timeout");
}

static void conn_arm_timer(conn_t *c)
{
    if (c->closing)
        return;
    const chat_http_server_config_t *cfg = &c->srv->cfg;
    if (c->in_message) {
        if (!uv_is_active((uv_handle_t *)&c->timer) || c->timer.timeout == 0)
            uv_timer_start(&c->timer, timer_cb, (uint64_t)cfg->header_timeout_ms, 0);
    } else if (c->outstanding == 0) {
        uv_timer_start(&c->timer, timer_cb, (uint64_t)cfg->idle_timeout_ms, 0);
    } else {
        uv_timer_stop(&c->timer);
    }
}

/* ---- writing ---- */

static void write_cb(uv_write_t *w, int status)
{
    req_t *r = w->data;
    conn_t *c = r->conn;
    c->outstanding--;
    int last_close = !r->keep_alive;
    req_free(r); /* c stays valid: the handle holds a reference until closed */
    if (c->closing)
        return;
    if (status < 0) {
        conn_close(c, "write_error");
        return;
    }
    if (last_close || (c->close_after && !c->head && c->outstanding == 0)) {
        conn_close(c, last_close ? "connection_close" : "draining");
        return;
    }
    conn_arm_timer(c);
    conn_read_more(c);
}

static void conn_flush(conn_t *c)
{
    while (!c->closing && c->head && c->head->state == REQ_ANSWERED) {
        req_t *r = c->head;
        c->head = r->next;
        if (!c->head)
            c->tail = NULL;
        r->next = NULL;
        r->state = REQ_WRITING;
        uv_buf_t bufs[2] = {uv_buf_init(r->out_head.data, (unsigned)r->out_head.len),
                            uv_buf_init(r->out_body, (unsigned)r->out_body_len)};
        r->write.data = r;
        int n = r->out_body_len && !r->head_only ? 2 : 1;
        if (uv_write(&r->write, (uv_stream_t *)&c->tcp, bufs, (unsigned)n, write_cb) < 0) {
            r->state = REQ_ANSWERED;
            c->outstanding--;
            req_free(r);
            conn_close(c, "write_error");
            return;
        }
        if (!r->keep_alive) {
            /* Nothing after a closing answer is sent: drop what is queued behind it. */
            req_t *rest = c->head;
            c->head = c->tail = NULL;
            while (rest) {
                req_t *next = rest->next;
                rest->next = NULL;
                if (rest->state == REQ_HANDLING) {
                    rest->cancelled = 1; /* its answer will account for it */
                } else {
                    c->outstanding--;
                    req_free(rest);
                }
                rest = next;
            }
            c->close_after = 1;
        }
    }
}

static int has_header(const char *headers, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = headers; p && *p;) {
        if (!strncasecmp(p, name, n) && p[n] == ':')
            return 1;
        p = strstr(p, "\r\n");
        if (p)
            p += 2;
    }
    return 0;
}

static void respond(req_t *r, int status, const char *headers, char *body, size_t len)
{
    conn_t *c = r->conn;
    if (r->cancelled) {
        free(body);
        c->outstanding--;
        req_free(r);
        return;
    }
    r->status = status;
    if (c->srv->closing)
        r->keep_alive = 0; /* shutting down: this connection ends after its answers */
    record(c->srv, r);
    chat_buf_t *h = &r->out_head;
    chat_buf_printf(h, "HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Length: %zu\r\nConnection: %s\r\n",
                    status, chat_http_status_text(status), date_now(c->srv), len,
                    r->keep_alive ? "keep-alive" : "close");
    if (len > 0 && !has_header(headers, "Content-Type"))
        chat_buf_puts(h, "Content-Type: application/json\r\n");
    if (headers)
        chat_buf_puts(h, headers);
    chat_buf_puts(h, "\r\n");
    r->out_body = body;
    r->out_body_len = len;
    r->state = REQ_ANSWERED;
    conn_flush(c);
}

void chat_http_respond_owned(chat_http_request_t *pub, int status, const char *headers, char *body,
                             size_t body_len)
{
    respond((req_t *)pub, status, headers, body, body_len);
}

void chat_http_respond(chat_http_request_t *pub, int status, const char *headers, const char *body,
                       size_t body_len)
{
    char *copy = NULL;
    if (body_len) {
        copy = chat_malloc(body_len);
        memcpy(copy, body, body_len);
    }
    respond((req_t *)pub, status, headers, copy, body_len);
}

bool chat_http_request_cancelled(const chat_http_request_t *pub)
{
    return ((const req_t *)pub)->cancelled;
}

/* ---- parsing ---- */

static req_t *req_new(conn_t *c)
{
    req_t *r = chat_calloc(1, sizeof *r);
    r->conn = c;
    r->state = REQ_PARSING;
    r->pub.route = "unmatched";
    r->pub.conn_id = c->id;
    r->pub.server_data = c->srv->cfg.handler_data;
    c->refs++;
    return r;
}

static void enqueue(conn_t *c, req_t *r)
{
    if (c->tail)
        c->tail->next = r;
    else
        c->head = r;
    c->tail = r;
    c->outstanding++;
}

/* An answer of the server's own (parse errors); the connection closes after it. */
static void answer_error(conn_t *c, int status)
{
    static const struct {
        int status;
        const char *code, *message;
    } errs[] = {
        {400, "bad_request", "the request is malformed"},
        {408, "request_timeout", "the request took too long to arrive"},
        {413, "payload_too_large", "the request body is larger than 64 KiB"},
        {431, "headers_too_large", "the request line and headers are larger than 16 KiB"},
    };
    const char *code = "bad_request", *msg = "the request is malformed";
    for (size_t i = 0; i < CHAT_ARRAY_LEN(errs); i++)
        if (errs[i].status == status) {
            code = errs[i].code;
            msg = errs[i].message;
        }
    req_t *r = c->cur;
    c->cur = NULL;
    if (!r)
        r = req_new(c);
    if (!r->pub.method_str) {
        r->pub.method = HTTP_GET;
        r->pub.method_str = "GET";
    }
    r->pub.route = "none";
    r->keep_alive = 0;
    r->start = r->start ? r->start : uv_hrtime();
    enqueue(c, r);
    r->state = REQ_HANDLING;
    chat_buf_t b = CHAT_BUF_INIT;
    chat_json_error(&b, code, msg);
    size_t len;
    char *body = chat_buf_steal(&b, &len);
    respond(r, status, NULL, body, len);
}

static int fail(http_parser *p, int status)
{
    conn_t *c = p->data;
    if (!c->error_status)
        c->error_status = status;
    return -1;
}

static int head_add(http_parser *p, size_t n)
{
    conn_t *c = p->data;
    c->head_bytes += n;
    return c->head_bytes > c->srv->cfg.max_head ? fail(p, 431) : 0;
}

static int on_message_begin(http_parser *p)
{
    conn_t *c = p->data;
    c->cur = req_new(c);
    c->head_bytes = 0;
    c->in_message = 1;
    c->last_was_value = 0;
    chat_buf_reset(&c->field);
    chat_buf_reset(&c->value);
    uv_timer_stop(&c->timer);
    conn_arm_timer(c);
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    conn_t *c = p->data;
    chat_buf_append(&c->cur->url, at, n);
    return head_add(p, n);
}

/* RFC 9110 token characters: what a header name may hold. */
static int is_token(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch <= ' ' || ch >= 0x7f || strchr("\"(),/:;<=>?@[\\]{}", ch))
            return 0;
    }
    return n > 0;
}

static int commit_header(conn_t *c)
{
    if (!c->field.len)
        return 0;
    if (!is_token(c->field.data, c->field.len))
        return -1;
    req_t *r = c->cur;
    const char *v = c->value.data ? c->value.data : "";
    if (!strcasecmp(c->field.data, "authorization")) {
        if (r->auth_count++)
            return -1;
        chat_buf_puts(&r->auth, v);
    } else if (!strcasecmp(c->field.data, "upgrade")) {
        chat_buf_reset(&r->upgrade);
        chat_buf_puts(&r->upgrade, v);
    } else if (!strcasecmp(c->field.data, "expect") && !strcasecmp(v, "100-continue")) {
        static char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        uv_buf_t b = uv_buf_init(cont, sizeof cont - 1);
        uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    }
    chat_buf_reset(&c->field);
    chat_buf_reset(&c->value);
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    conn_t *c = p->data;
    if (c->last_was_value && commit_header(c) < 0)
        return fail(p, 400);
    c->last_was_value = 0;
    chat_buf_append(&c->field, at, n);
    return head_add(p, n + 4);
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    conn_t *c = p->data;
    c->last_was_value = 1;
    chat_buf_append(&c->value, at, n);
    return head_add(p, n);
}

static int on_headers_complete(http_parser *p)
{
    conn_t *c = p->data;
    if (c->last_was_value && commit_header(c) < 0)
        return fail(p, 400);
    c->last_was_value = 0;
    if (p->http_major != 1)
        return fail(p, 400); /* HTTP/1.0 and 1.1 only */
    req_t *r = c->cur;
    r->start = uv_hrtime();
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > c->srv->cfg.max_body)
        return fail(p, 413);
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    conn_t *c = p->data;
    req_t *r = c->cur;
    if (r->body.len + n > c->srv->cfg.max_body)
        return fail(p, 413);
    chat_buf_append(&r->body, at, n);
    return 0;
}

static int on_message_complete(http_parser *p)
{
    conn_t *c = p->data;
    req_t *r = c->cur;
    c->cur = NULL;
    c->in_message = 0;
    r->pub.method = (int)p->method;
    r->pub.method_str = http_method_str((enum http_method)p->method);
    r->keep_alive = http_should_keep_alive(p) && !c->srv->closing;
    r->head_only = p->method == HTTP_HEAD;
    if (!r->url.data)
        chat_buf_puts(&r->url, "/");
    char *q = strchr(r->url.data, '?');
    if (q) {
        *q = '\0';
        r->pub.query = q + 1;
        r->pub.query_len = strlen(q + 1);
    }
    char *frag = strchr(r->url.data, '#');
    if (frag)
        *frag = '\0';
    r->pub.path = r->url.data;
    r->pub.path_len = strlen(r->url.data);
    if (!r->body.data)
        chat_buf_reserve(&r->body, 0), r->body.data[0] = '\0';
    r->pub.body = r->body.data;
    r->pub.body_len = r->body.len;
    r->pub.authorization = r->auth_count ? (r->auth.data ? r->auth.data : "") : NULL;
    r->pub.upgrade = r->upgrade.data;
    enqueue(c, r);
    if (c->outstanding >= MAX_OUTSTANDING || !r->keep_alive)
        http_parser_pause(p, 1);
    return 0;
}

/* ---- reading ---- */

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn_t *c = h->data;
    chat_http_server_t *srv = c->srv;
    if (srv->read_buf_busy) {
        buf->base = chat_malloc(READ_BUF_SIZE);
    } else {
        srv->read_buf_busy = 1;
        buf->base = srv->read_buf;
    }
    buf->len = READ_BUF_SIZE;
}

/* Handlers run only after parsing stops, never inside parser callbacks. */
static void dispatch(conn_t *c)
{
    c->refs++; /* a handler that answers at once must not free c under us */
    while (!c->closing) {
        req_t *r = c->head;
        while (r && r->state != REQ_PARSING)
            r = r->next;
        if (!r)
            break;
        r->state = REQ_HANDLING;
        c->seen_request = 1;
        c->srv->cfg.handler(&r->pub);
    }
    conn_unref(c);
}

/* Feeds bytes to the parser; keeps what it did not take when it paused. */
static void parse(conn_t *c, const char *data, size_t len)
{
    size_t done = http_parser_execute(&c->parser, &c->srv->settings, data, len);
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if (e == HPE_PAUSED) {
        http_parser_pause(&c->parser, 0);
        if (done < len) {
            char *rest = chat_malloc(len - done);
            memcpy(rest, data + done, len - done);
            free(c->pending);
            c->pending = rest;
            c->pending_len = len - done;
        }
        if (c->reading) {
            uv_read_stop((uv_stream_t *)&c->tcp);
            c->reading = 0;
        }
    } else if (e != HPE_OK || c->error_status) {
        if (c->reading) {
            uv_read_stop((uv_stream_t *)&c->tcp);
            c->reading = 0;
        }
        answer_error(c, c->error_status ? c->error_status : 400);
        c->close_after = 1;
        return;
    }
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    conn_t *c = s->data;
    chat_http_server_t *srv = c->srv;
    if (n > 0 && !c->closing) {
        c->refs++;
        parse(c, buf->base, (size_t)n);
        dispatch(c);
        conn_arm_timer(c);
        if (c->reading && !c->closing &&
            uv_stream_get_write_queue_size(s) > srv->cfg.max_pending_output) {
            uv_read_stop(s); /* a slow reader: resume when its answers drain */
            c->reading = 0;
        }
        conn_unref(c);
    } else if (n < 0) {
        conn_close(c, n == UV_EOF ? "eof" : "read_error");
    }
    if (buf->base == srv->read_buf)
        srv->read_buf_busy = 0;
    else
        free(buf->base);
}

static void conn_read_more(conn_t *c)
{
    if (c->closing || c->close_after || c->reading)
        return;
    if (c->outstanding >= MAX_OUTSTANDING)
        return;
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > c->srv->cfg.max_pending_output)
        return; /* a slow reader: wait until its answers drain */
    if (c->pending) {
        char *p = c->pending;
        size_t len = c->pending_len;
        c->pending = NULL;
        c->pending_len = 0;
        c->refs++;
        parse(c, p, len);
        free(p);
        dispatch(c);
        conn_arm_timer(c);
        conn_unref(c);
        if (c->closing || c->pending || c->close_after)
            return;
        if (c->outstanding >= MAX_OUTSTANDING)
            return;
    }
    if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) == 0)
        c->reading = 1;
}

/* ---- accepting ---- */

static void connection_cb(uv_stream_t *server, int status)
{
    chat_http_server_t *srv = server->data;
    if (status < 0 || srv->closing)
        return;
    conn_t *c = chat_calloc(1, sizeof *c);
    c->srv = srv;
    uv_tcp_init(srv->loop, &c->tcp);
    c->tcp.data = c;
    uv_timer_init(srv->loop, &c->timer);
    c->timer.data = c;
    c->refs = 1;
    c->id = atomic_fetch_add(&next_conn_id, 1);
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c, "accept_error");
        return;
    }
    int open = atomic_fetch_add(srv->cfg.open_connections, 1) + 1;
    c->counted = 1;
    chat_metric_add(open_gauge, 1);
    if (open > srv->cfg.max_connections) {
        conn_close(c, "max_connections");
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    /* Until the first request head starts, the header deadline applies. */
    uv_timer_start(&c->timer, timer_cb, (uint64_t)srv->cfg.header_timeout_ms, 0);
    conn_read_more(c);
}

static int bind_reuseport(chat_http_server_t *srv, int *fd_out)
{
    struct sockaddr_storage ss;
    socklen_t len;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, srv->cfg.host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)srv->cfg.port);
        len = sizeof *a4;
    } else if (inet_pton(AF_INET6, srv->cfg.host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)srv->cfg.port);
        len = sizeof *a6;
    } else {
        return UV_EINVAL;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0 ||
        bind(fd, (struct sockaddr *)&ss, len) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    *fd_out = fd;
    return 0;
}

chat_http_server_t *chat_http_server_create(uv_loop_t *loop, const chat_http_server_config_t *cfg,
                                            int *err)
{
    metrics_init();
    chat_http_server_t *srv = chat_calloc(1, sizeof *srv);
    srv->loop = loop;
    srv->cfg = *cfg;
    srv->read_buf = chat_malloc(READ_BUF_SIZE);
    http_parser_settings *s = &srv->settings;
    http_parser_settings_init(s);
    s->on_message_begin = on_message_begin;
    s->on_url = on_url;
    s->on_header_field = on_header_field;
    s->on_header_value = on_header_value;
    s->on_headers_complete = on_headers_complete;
    s->on_body = on_body;
    s->on_message_complete = on_message_complete;
    int fd = -1;
    int rc = bind_reuseport(srv, &fd);
    if (rc == 0) {
        uv_tcp_init(loop, &srv->listener);
        srv->listener.data = srv;
        rc = uv_tcp_open(&srv->listener, fd);
        if (rc == 0)
            rc = uv_listen((uv_stream_t *)&srv->listener, 4096, connection_cb);
        if (rc != 0) {
            /* The handle is initialised: it must be closed, then freed. */
            *err = rc;
            srv->closing = 1;
            srv->close_cb = NULL;
            uv_close((uv_handle_t *)&srv->listener, NULL);
            uv_run(loop, UV_RUN_NOWAIT);
            free(srv->read_buf);
            free(srv);
            return NULL;
        }
        return srv;
    }
    *err = rc;
    free(srv->read_buf);
    free(srv);
    return NULL;
}

int chat_http_server_port(chat_http_server_t *srv)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&ss, &len) != 0)
        return -1;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

static void listener_closed_cb(uv_handle_t *h)
{
    chat_http_server_t *srv = h->data;
    srv->listener_closed = 1;
    maybe_finish_close(srv);
}

void chat_http_server_close(chat_http_server_t *srv, void (*cb)(void *arg), void *arg)
{
    srv->closing = 1;
    srv->close_cb = cb;
    srv->close_arg = arg;
    conn_t *c = srv->conns;
    while (c) {
        conn_t *next = c->next;
        if (!c->closing) {
            if (!c->head && !c->in_message)
                conn_close(c, "shutdown");
            else
                c->close_after = 1;
        }
        c = next;
    }
    uv_close((uv_handle_t *)&srv->listener, listener_closed_cb);
}
