/*
 * Redis pub/sub subscriber (see pubsub.h). The connection is a uv_tcp_t of
 * its own and replies are decoded with hiredis's reader, so every lifetime is
 * libuv's: a connection attempt owns a struct sconn freed in its close
 * callback, a host lookup frees itself (redis/url.c), and the subscriber is
 * freed when its last handle has closed.
 */
#include "redis/pubsub.h"
#include "core/buf.h"
#include "core/log.h"
#include "redis/shardsub.h"
#include "redis/url.h"

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RETRY_MS 500
#define READ_SIZE (64 * 1024)

typedef struct sconn {
    uv_tcp_t tcp;
    uv_connect_t creq;
    chat_pubsub_t *ps; /* NULL once the subscriber has let go of it */
    redisReader *reader;
} sconn_t;

struct chat_pubsub {
    uv_loop_t *loop;
    chat_shardsub_t *cluster; /* a redis+cluster:// URL: everything goes there */
    chat_redis_url_t url;
    chat_redis_resolve_t *resolving; /* the host lookup of this attempt, or NULL */
    chat_pubsub_handler_t h;
    void *arg;
    uv_timer_t retry;
    sconn_t *conn;  /* the live attempt, or NULL while waiting to retry */
    int handles;    /* open libuv handles: the timer and any connection */
    bool connected; /* the live attempt is connected and reading */
    bool closing;
    bool failing; /* an attempt failed, or the connection was lost, since the last connect */
    void (*done)(void *arg);
    void *done_arg;
};

static void start_connect(chat_pubsub_t *ps);

static void retry_cb(uv_timer_t *t)
{
    start_connect(t->data);
}

static void maybe_done(chat_pubsub_t *ps)
{
    if (!ps->closing || ps->handles > 0)
        return;
    void (*done)(void *) = ps->done;
    void *arg = ps->done_arg;
    free(ps);
    if (done)
        done(arg);
}

static void conn_closed_cb(uv_handle_t *h)
{
    sconn_t *sc = h->data;
    chat_pubsub_t *ps = sc->ps;
    redisReaderFree(sc->reader);
    free(sc);
    if (!ps)
        return;
    ps->handles--;
    if (ps->closing)
        maybe_done(ps);
    else
        uv_timer_start(&ps->retry, retry_cb, RETRY_MS, 0);
}

/* Logs the first failure of an outage. */
static void log_down(chat_pubsub_t *ps, const char *why)
{
    if (ps->connected || !ps->failing)
        chat_log_warn("event=pubsub_down reason=\"%s\"", why);
    ps->failing = true;
    ps->connected = false;
}

/* The connection failed or ended: close it; a retry follows once it is closed. */
static void conn_lost(chat_pubsub_t *ps, const char *why)
{
    sconn_t *sc = ps->conn;
    if (!sc)
        return;
    ps->conn = NULL;
    log_down(ps, why);
    uv_close((uv_handle_t *)&sc->tcp, conn_closed_cb);
}

/* A string element equal to word (whole: hiredis keeps a NUL inside a bulk string). */
static bool is_word(const redisReply *e, const char *word)
{
    size_t n = strlen(word);
    return e->type == REDIS_REPLY_STRING && e->len == n && memcmp(e->str, word, n) == 0;
}

void chat_pubsub_reply_parse(const redisReply *r, chat_pubsub_reply_t *out)
{
    memset(out, 0, sizeof *out);
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 ||
        r->element[1]->type != REDIS_REPLY_STRING)
        return;
    const redisReply *ch = r->element[1];
    if (is_word(r->element[0], "smessage") && r->element[2]->type == REDIS_REPLY_STRING) {
        out->kind = CHAT_PUBSUB_REPLY_MESSAGE;
        out->payload = r->element[2]->str;
        out->len = r->element[2]->len;
    } else if (is_word(r->element[0], "ssubscribe")) {
        out->kind = CHAT_PUBSUB_REPLY_SUBSCRIBED;
    } else if (is_word(r->element[0], "sunsubscribe")) {
        out->kind = CHAT_PUBSUB_REPLY_UNSUBSCRIBED;
    } else {
        return;
    }
    out->channel = ch->str;
    out->clen = ch->len;
}

static void on_reply(chat_pubsub_t *ps, redisReply *r)
{
    if (r->type == REDIS_REPLY_ERROR && ps->h.error) {
        ps->h.error(r->str, r->len, ps->arg);
        return;
    }
    chat_pubsub_reply_t m;
    chat_pubsub_reply_parse(r, &m);
    if (m.kind == CHAT_PUBSUB_REPLY_MESSAGE)
        ps->h.message(m.channel, m.clen, m.payload, m.len, ps->arg);
    else if (m.kind == CHAT_PUBSUB_REPLY_SUBSCRIBED && ps->h.subscribed)
        ps->h.subscribed(m.channel, m.clen, ps->arg);
    else if (m.kind == CHAT_PUBSUB_REPLY_UNSUBSCRIBED && ps->h.unsubscribed)
        ps->h.unsubscribed(m.channel, m.clen, ps->arg);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    *buf = uv_buf_init(chat_malloc(READ_SIZE), READ_SIZE);
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    sconn_t *sc = s->data;
    chat_pubsub_t *ps = sc->ps;
    if (nread > 0 && ps && ps->conn == sc) {
        if (redisReaderFeed(sc->reader, buf->base, (size_t)nread) != REDIS_OK) {
            conn_lost(ps, "unreadable reply");
        } else {
            void *reply;
            while (ps->conn == sc && !ps->closing) {
                if (redisReaderGetReply(sc->reader, &reply) != REDIS_OK) {
                    conn_lost(ps, "protocol error");
                    break;
                }
                if (!reply)
                    break;
                on_reply(ps, reply);
                freeReplyObject(reply);
            }
        }
    } else if (nread < 0 && ps && ps->conn == sc) {
        conn_lost(ps, nread == UV_EOF ? "closed by Redis" : uv_strerror((int)nread));
    }
    free(buf->base);
}

static void write_cb(uv_write_t *w, int status)
{
    free(w->data);
    free(w);
}

static void connect_cb(uv_connect_t *req, int status)
{
    sconn_t *sc = req->data;
    chat_pubsub_t *ps = sc->ps;
    if (!ps || ps->conn != sc)
        return; /* closed meanwhile */
    if (status < 0) {
        conn_lost(ps, uv_strerror(status));
        return;
    }
    int rc = uv_read_start((uv_stream_t *)&sc->tcp, alloc_cb, read_cb);
    if (rc != 0) {
        conn_lost(ps, uv_strerror(rc));
        return;
    }
    ps->connected = true;
    ps->failing = false;
    chat_log_info("event=pubsub_connected");
    if (ps->h.connected)
        ps->h.connected(ps->arg);
}

/* Writes one command of two arguments on the live connection. */
static bool send_cmd(chat_pubsub_t *ps, const char *cmd, const char *channel, size_t clen)
{
    if (!ps->connected || !ps->conn || ps->closing)
        return false;
    chat_buf_t b = CHAT_BUF_INIT;
    chat_buf_printf(&b, "*2\r\n$%zu\r\n%s\r\n$%zu\r\n", strlen(cmd), cmd, clen);
    chat_buf_append(&b, channel, clen);
    chat_buf_puts(&b, "\r\n");
    uv_write_t *w = chat_malloc(sizeof *w);
    size_t len;
    w->data = chat_buf_steal(&b, &len);
    uv_buf_t ub = uv_buf_init(w->data, (unsigned)len);
    int rc = uv_write(w, (uv_stream_t *)&ps->conn->tcp, &ub, 1, write_cb);
    if (rc != 0) {
        free(w->data);
        free(w);
        conn_lost(ps, uv_strerror(rc));
        return false;
    }
    return true;
}

bool chat_pubsub_subscribe(chat_pubsub_t *ps, const char *channel, size_t clen)
{
    if (ps->cluster)
        return chat_shardsub_subscribe(ps->cluster, channel, clen);
    return send_cmd(ps, "SSUBSCRIBE", channel, clen);
}

void chat_pubsub_unsubscribe(chat_pubsub_t *ps, const char *channel, size_t clen)
{
    if (ps->cluster)
        chat_shardsub_unsubscribe(ps->cluster, channel, clen);
    else
        (void)send_cmd(ps, "SUNSUBSCRIBE", channel, clen);
}

static void connect_addr(chat_pubsub_t *ps, const struct sockaddr *addr)
{
    sconn_t *sc = chat_calloc(1, sizeof *sc);
    sc->ps = ps;
    sc->reader = redisReaderCreate();
    if (!sc->reader)
        abort(); /* out of memory, as chat_malloc would */
    uv_tcp_init(ps->loop, &sc->tcp);
    sc->tcp.data = sc;
    sc->creq.data = sc;
    ps->conn = sc;
    ps->handles++;
    int rc = uv_tcp_connect(&sc->creq, &sc->tcp, addr, connect_cb);
    if (rc != 0)
        conn_lost(ps, uv_strerror(rc));
}

/* A lookup that failed is retried like a failed connect. */
static void lookup_failed(chat_pubsub_t *ps, int status)
{
    char why[CHAT_REDIS_HOST_MAX + 128];
    snprintf(why, sizeof why, "cannot resolve %s: %s", ps->url.host, uv_strerror(status));
    log_down(ps, why);
    uv_timer_start(&ps->retry, retry_cb, RETRY_MS, 0);
}

static void resolved_cb(int status, const struct sockaddr *addr, void *arg)
{
    chat_pubsub_t *ps = arg;
    ps->resolving = NULL;
    if (status != 0)
        lookup_failed(ps, status);
    else
        connect_addr(ps, addr);
}

static void start_connect(chat_pubsub_t *ps)
{
    if (ps->closing || ps->conn || ps->resolving)
        return;
    if (ps->url.numeric) {
        connect_addr(ps, (const struct sockaddr *)&ps->url.addr);
        return;
    }
    int rc = chat_redis_url_resolve(ps->loop, &ps->url, resolved_cb, ps, &ps->resolving);
    if (rc != 0)
        lookup_failed(ps, rc);
}

chat_pubsub_t *chat_pubsub_create(uv_loop_t *loop, const char *url, const chat_pubsub_handler_t *h,
                                  void *arg, char *err, size_t errlen)
{
    chat_pubsub_t *ps = chat_calloc(1, sizeof *ps);
    if (chat_redis_url_is_cluster(url)) {
        ps->cluster = chat_shardsub_create(loop, url, h, arg, err, errlen);
        if (!ps->cluster) {
            free(ps);
            return NULL;
        }
        return ps;
    }
    if (chat_redis_url_parse(&ps->url, url, err, errlen) != 0) {
        free(ps);
        return NULL;
    }
    ps->loop = loop;
    ps->h = *h;
    ps->arg = arg;
    uv_timer_init(loop, &ps->retry);
    ps->retry.data = ps;
    ps->handles = 1;
    start_connect(ps);
    return ps;
}

bool chat_pubsub_usable(const chat_pubsub_t *ps)
{
    if (ps->cluster)
        return chat_shardsub_usable(ps->cluster);
    return ps->connected || !ps->failing;
}

static void cluster_closed(void *arg)
{
    chat_pubsub_t *ps = arg;
    void (*done)(void *) = ps->done;
    void *done_arg = ps->done_arg;
    free(ps);
    if (done)
        done(done_arg);
}

static void timer_closed_cb(uv_handle_t *h)
{
    chat_pubsub_t *ps = h->data;
    ps->handles--;
    maybe_done(ps);
}

void chat_pubsub_close(chat_pubsub_t *ps, void (*done)(void *arg), void *arg)
{
    ps->closing = true;
    ps->done = done;
    ps->done_arg = arg;
    if (ps->cluster) {
        chat_shardsub_close(ps->cluster, cluster_closed, ps);
        return;
    }
    if (ps->resolving) {
        chat_redis_resolve_cancel(ps->resolving);
        ps->resolving = NULL;
    }
    sconn_t *sc = ps->conn;
    ps->connected = false;
    if (sc) {
        ps->conn = NULL;
        uv_close((uv_handle_t *)&sc->tcp, conn_closed_cb);
    }
    uv_close((uv_handle_t *)&ps->retry, timer_closed_cb);
}
