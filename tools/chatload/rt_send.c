/*
 * Keep-alive POST connections of the realtime stage; see rt_send.h.
 */
#include "rt_send.h"

#include <arpa/inet.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RETRY_MS 50

/* A send; held by the queue or its connection until answered, and by each
 * write of it until libuv is done with the text (an answer may come first). */
typedef struct {
    uint64_t uid;
    int retried;
    int refs;
    size_t len;
    char text[];
} req_t;

typedef struct {
    uv_write_t w;
    req_t *r;
} wr_t;

typedef enum { S_DEAD, S_CONNECTING, S_IDLE, S_BUSY, S_CLOSING } sstate_t;

typedef struct {
    cl_rtsend_t *s;
    int idx;
    sstate_t state;
    uv_tcp_t tcp;
    uv_connect_t connect;
    http_parser parser;
    req_t *req; /* in flight */
    int got_bytes, served;
    uint64_t retry_at;
} sconn_t;

struct cl_rtsend {
    uv_loop_t *loop;
    cl_url_t url;
    int nconns, src_addrs, open, closing, handles;
    sconn_t *conns;
    req_t **queue;
    size_t cap, head, len;
    int inflight;
    cl_rtsend_cb cb;
    void *ud;
    uv_timer_t timer;
    http_parser_settings settings;
};

static void conn_open(sconn_t *c);
static void dispatch(cl_rtsend_t *s);

static void unref(req_t *r)
{
    if (--r->refs == 0)
        free(r);
}

static void answer(cl_rtsend_t *s, req_t *r, int status)
{
    s->cb(r->uid, status, s->ud);
    unref(r);
}

/* One handle less; the senders go with the last one once closed. */
static void release(cl_rtsend_t *s)
{
    if (--s->handles == 0 && s->closing) {
        free(s->conns);
        free(s->queue);
        free(s);
    }
}

static void on_closed(uv_handle_t *h)
{
    sconn_t *c = h->data;
    c->state = S_DEAD;
    c->retry_at = uv_hrtime() + RETRY_MS * 1000000ull;
    release(c->s);
}

static void conn_close(sconn_t *c)
{
    cl_rtsend_t *s = c->s;
    if (c->state == S_DEAD || c->state == S_CLOSING)
        return;
    if (c->state == S_IDLE || c->state == S_BUSY)
        s->open--;
    if (c->state == S_BUSY) {
        req_t *r = c->req;
        c->req = NULL;
        s->inflight--;
        if (!c->got_bytes && c->served > 0 && !r->retried && !s->closing && s->len < s->cap) {
            /* a keep-alive connection closed as the request went out: once more, first */
            r->retried = 1;
            s->head = (s->head + s->cap - 1) % s->cap;
            s->queue[s->head] = r;
            s->len++;
        } else {
            answer(s, r, 0);
        }
    }
    c->state = S_CLOSING;
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void alloc_cb(uv_handle_t *h, size_t sug, uv_buf_t *b)
{
    static char buf[65536];
    b->base = buf;
    b->len = sizeof buf;
}

static int on_complete(http_parser *p)
{
    sconn_t *c = p->data;
    cl_rtsend_t *s = c->s;
    if (c->state != S_BUSY)
        return 0;
    req_t *r = c->req;
    c->req = NULL;
    s->inflight--;
    c->served++;
    c->state = S_IDLE;
    answer(s, r, (int)p->status_code);
    if (!http_should_keep_alive(p))
        conn_close(c);
    return 0;
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    sconn_t *c = st->data;
    if (n == 0)
        return;
    if (n < 0) {
        conn_close(c);
        return;
    }
    if (c->state == S_BUSY)
        c->got_bytes = 1;
    size_t used = http_parser_execute(&c->parser, &c->s->settings, b->base, (size_t)n);
    if (c->parser.http_errno != HPE_OK || used != (size_t)n)
        conn_close(c);
    else
        dispatch(c->s);
}

static void on_connected(uv_connect_t *req, int status)
{
    sconn_t *c = req->data;
    if (c->state != S_CONNECTING)
        return;
    if (status != 0) {
        c->state = S_IDLE; /* counted open so that the close balances */
        c->s->open++;
        conn_close(c);
        return;
    }
    c->state = S_IDLE;
    c->s->open++;
    c->served = 0;
    http_parser_init(&c->parser, HTTP_RESPONSE);
    c->parser.data = c;
    if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, on_read) != 0)
        conn_close(c);
    else
        dispatch(c->s);
}

static void conn_open(sconn_t *c)
{
    cl_rtsend_t *s = c->s;
    uv_tcp_init(s->loop, &c->tcp);
    s->handles++;
    c->tcp.data = c;
    c->connect.data = c;
    c->state = S_CONNECTING;
    if (!s->url.ipv6 && s->src_addrs > 0) {
        struct sockaddr_in src;
        memset(&src, 0, sizeof src);
        src.sin_family = AF_INET;
        src.sin_addr.s_addr = htonl((127u << 24) | (uint32_t)(1 + c->idx % s->src_addrs));
        uv_tcp_bind(&c->tcp, (const struct sockaddr *)&src, 0);
    }
    uv_tcp_nodelay(&c->tcp, 1);
    if (uv_tcp_connect(&c->connect, &c->tcp, (const struct sockaddr *)&s->url.addr, on_connected) !=
        0) {
        c->state = S_CLOSING;
        uv_close((uv_handle_t *)&c->tcp, on_closed);
    }
}

static void on_written(uv_write_t *w, int status)
{
    sconn_t *c = w->data;
    wr_t *wr = (wr_t *)w;
    req_t *r = wr->r;
    free(wr);
    /* a failed write of the send still in flight ends its connection */
    if (status != 0 && status != UV_ECANCELED && c->state == S_BUSY && c->req == r)
        conn_close(c);
    unref(r);
}

static void dispatch(cl_rtsend_t *s)
{
    for (int i = 0; i < s->nconns && s->len; i++) {
        sconn_t *c = &s->conns[i];
        if (c->state != S_IDLE)
            continue;
        req_t *r = s->queue[s->head];
        s->head = (s->head + 1) % s->cap;
        s->len--;
        c->req = r;
        c->got_bytes = 0;
        c->state = S_BUSY;
        s->inflight++;
        wr_t *wr = malloc(sizeof *wr);
        if (!wr)
            abort();
        wr->w.data = c;
        wr->r = r;
        r->refs++;
        uv_buf_t b = uv_buf_init(r->text, (unsigned)r->len);
        if (uv_write(&wr->w, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) {
            free(wr);
            r->refs--;
            conn_close(c);
        }
    }
}

static void on_timer(uv_timer_t *t)
{
    cl_rtsend_t *s = t->data;
    uint64_t now = uv_hrtime();
    for (int i = 0; i < s->nconns; i++)
        if (s->conns[i].state == S_DEAD && s->conns[i].retry_at <= now)
            conn_open(&s->conns[i]);
    dispatch(s);
}

cl_rtsend_t *cl_rtsend_create(uv_loop_t *loop, const cl_url_t *u, int nconns, int src_addrs,
                              size_t queue_cap, cl_rtsend_cb cb, void *ud)
{
    cl_rtsend_t *s = calloc(1, sizeof *s);
    if (!s)
        abort();
    s->loop = loop;
    s->url = *u;
    s->nconns = nconns;
    s->src_addrs = src_addrs;
    s->cap = queue_cap;
    s->cb = cb;
    s->ud = ud;
    s->conns = calloc((size_t)nconns, sizeof *s->conns);
    s->queue = calloc(queue_cap, sizeof *s->queue);
    if (!s->conns || !s->queue)
        abort();
    http_parser_settings_init(&s->settings);
    s->settings.on_message_complete = on_complete;
    uv_timer_init(loop, &s->timer);
    s->timer.data = s;
    s->handles = 1;
    uv_timer_start(&s->timer, on_timer, 10, 10);
    for (int i = 0; i < nconns; i++) {
        s->conns[i].s = s;
        s->conns[i].idx = i;
        conn_open(&s->conns[i]);
    }
    return s;
}

int cl_rtsend_post(cl_rtsend_t *s, uint64_t uid, const char *path, const char *token,
                   const char *body)
{
    if (s->len >= s->cap || s->closing)
        return -1;
    char head[512];
    size_t blen = strlen(body);
    int n = snprintf(head, sizeof head,
                     "POST %s HTTP/1.1\r\nHost: %s:%d\r\nAuthorization: Bearer %s\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                     path, s->url.host, s->url.port, token, blen);
    if (n < 0 || (size_t)n >= sizeof head)
        return -1;
    req_t *r = malloc(sizeof *r + (size_t)n + blen);
    if (!r)
        abort();
    r->uid = uid;
    r->retried = 0;
    r->refs = 1; /* until answered */
    r->len = (size_t)n + blen;
    memcpy(r->text, head, (size_t)n);
    memcpy(r->text + n, body, blen);
    s->queue[(s->head + s->len) % s->cap] = r;
    s->len++;
    dispatch(s);
    return 0;
}

size_t cl_rtsend_pending(const cl_rtsend_t *s)
{
    return s->len + (size_t)s->inflight;
}

int cl_rtsend_open(const cl_rtsend_t *s)
{
    return s->open;
}

static void timer_closed(uv_handle_t *h)
{
    release(h->data);
}

void cl_rtsend_close(cl_rtsend_t *s)
{
    s->closing = 1;
    while (s->len) {
        req_t *r = s->queue[s->head];
        s->head = (s->head + 1) % s->cap;
        s->len--;
        answer(s, r, 0);
    }
    for (int i = 0; i < s->nconns; i++) {
        sconn_t *c = &s->conns[i];
        if (c->state == S_CONNECTING) {
            c->state = S_CLOSING;
            uv_close((uv_handle_t *)&c->tcp, on_closed);
        } else {
            conn_close(c);
        }
    }
    uv_timer_stop(&s->timer);
    uv_close((uv_handle_t *)&s->timer, timer_closed);
}
