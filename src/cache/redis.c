/*
 * Redis client for one libuv loop: one hiredis async connection, a deadline on
 * every command kept by a single timer, and a circuit breaker with a
 * background reconnect probe. See redis.h for the contract.
 *
 * Lifetimes. Each command sent to hiredis owns a small record (cmd_t) that
 * hiredis hands back exactly once, with a reply or, when the context dies,
 * with NULL; the record is freed there and nowhere else. While the caller's
 * callback is still owed, the record sits in r's FIFO (send order, hence
 * deadline order). A timeout, a lost connection or a close takes the record
 * out of the FIFO and runs the callback; hiredis's later call then only frees
 * the record, after telling the late callback of a timed-out command (if it
 * has one) how the command really ended; until then a timed-out record sits
 * in r's overdue list. A context is freed by hiredis itself (connect
 * failure, I/O error: we learn it from on_connect, on_disconnect or a NULL
 * reply) or by us
 * with redisAsyncFree, never from inside a hiredis callback: there it is
 * parked in r->dying and freed from conn_timer on the next iteration.
 * ac->data points at r while r still tracks the context, NULL once it does
 * not, so late hiredis callbacks on it do nothing but free records.
 */
#include "cache/redis.h"

#include "core/alloc.h"
#include "core/log.h"
#include "core/metrics.h"

#include <assert.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Who holds the client in each state:
 *  DOWN       no connection; conn_timer holds the next probe (and, for a
 *             moment, the deferred free of r->dying). Commands refused.
 *  CONNECTING r->ac is connecting; conn_timer holds the connect deadline.
 *  HANDSHAKE  r->ac is connected; SELECT (db > 0) and PING are in hiredis's
 *             queue; same deadline. Commands refused.
 *  UP         r->ac serves commands; the FIFO holds owed callbacks and
 *             cmd_timer the oldest deadline.
 *  CLOSING    chat_redis_close was called; the handles are closing and the
 *             last close callback frees r.
 */
typedef enum {
    ST_DOWN,
    ST_CONNECTING,
    ST_HANDSHAKE,
    ST_UP,
    ST_CLOSING,
} state_t;

static const char *const state_names[] = {"down", "connecting", "handshake", "up", "closing"};

enum { CMD_USER, CMD_SELECT, CMD_PING };

typedef struct cmd {
    struct cmd *prev, *next; /* in r's FIFO while owed, then in r's overdue list */
    chat_redis_t *r;
    chat_redis_cb cb;
    chat_redis_late_cb late; /* owed after a timeout, until the real outcome */
    void *arg;
    uint64_t deadline; /* ms on the clock of now_ms() */
    unsigned char kind;
    unsigned char owed;    /* the caller's callback has not run yet */
    unsigned char overdue; /* timed out, reply not come: in r's overdue list */
} cmd_t;

struct chat_redis {
    uv_loop_t *loop;
    state_t state;
    redisAsyncContext *ac;    /* the current connection, NULL when DOWN */
    redisAsyncContext *dying; /* dropped inside a hiredis callback, to free */
    uv_timer_t conn_timer;    /* probe, connect deadline, deferred work */
    uv_timer_t cmd_timer;     /* the oldest command deadline */
    cmd_t *head, *tail;       /* commands whose callback is owed, send order */
    cmd_t *unsent;            /* first of the FIFO's tail still in hiredis's buffer */
    cmd_t *overdue_head;      /* timed out, reply not come yet, send order */
    cmd_t *overdue_tail;
    size_t npending; /* length of the FIFO */
    size_t nlive;    /* records alive in hiredis, owed or not */
    int nhandles;    /* timers and poll handles not closed yet */
    int in_cb;       /* depth of hiredis callbacks on the stack */
    int consecutive_timeouts;
    int down_logged; /* redis_down logged since the last redis_up */
    uint64_t probe_at;

    char *host;
    char addr[300]; /* host:port, for logs */
    int port;
    int db;
    int cmd_timeout_ms;
    int connect_timeout_ms;
    int retry_interval_ms;
    size_t max_pending;

    chat_metric_t *errors;
    chat_metric_t *late_reads;
    void (*close_cb)(void *arg);
    void *close_arg;
};

static void on_conn_timer(uv_timer_t *t);
static void on_cmd_timer(uv_timer_t *t);
static void conn_drop(chat_redis_t *r, const char *reason);

const char *chat_redis_strerror(int status)
{
    switch (status) {
    case CHAT_REDIS_OK:
        return "ok";
    case CHAT_REDIS_ERR_DOWN:
        return "redis down";
    case CHAT_REDIS_ERR_TIMEOUT:
        return "redis timeout";
    case CHAT_REDIS_ERR_REPLY:
        return "redis error reply";
    case CHAT_REDIS_ERR_CLOSED:
        return "redis client closed";
    case CHAT_REDIS_ERR_DISCONNECTED:
        return "redis connection lost";
    default:
        return "unknown redis status";
    }
}

/* ---- URL ---- */

static int parse_url(const char *url, char **host, int *port, int *db, char *err, size_t errlen)
{
    const char *p, *h, *he;
    long v;

    if (url == NULL || strncmp(url, "redis://", 8) != 0) {
        snprintf(err, errlen, "redis URL must look like redis://host:port[/db], got \"%s\"",
                 url ? url : "(null)");
        return -1;
    }
    p = url + 8;
    if (strpbrk(p, "@?#") != NULL) {
        snprintf(err, errlen, "redis URL \"%s\": credentials and options are not supported", url);
        return -1;
    }
    if (*p == '[') { /* [IPv6 literal] */
        h = p + 1;
        he = strchr(h, ']');
        if (he == NULL) {
            snprintf(err, errlen, "redis URL \"%s\": unterminated [ in host", url);
            return -1;
        }
        p = he + 1;
    } else {
        h = p;
        he = p + strcspn(p, ":/");
        p = he;
    }
    if (he == h) {
        snprintf(err, errlen, "redis URL \"%s\": missing host", url);
        return -1;
    }
    *port = 6379;
    if (*p == ':') {
        const char *ps = ++p;
        v = 0;
        while (*p >= '0' && *p <= '9' && p - ps < 6)
            v = v * 10 + (*p++ - '0');
        if (p == ps || (*p != '\0' && *p != '/') || v < 1 || v > 65535) {
            snprintf(err, errlen, "redis URL \"%s\": port must be a number from 1 to 65535", url);
            return -1;
        }
        *port = (int)v;
    }
    *db = 0;
    if (*p == '/') {
        const char *ds = ++p;
        v = 0;
        while (*p >= '0' && *p <= '9' && p - ds < 7)
            v = v * 10 + (*p++ - '0');
        if (*p != '\0') {
            snprintf(err, errlen, "redis URL \"%s\": db must be a number from 0 to 999999", url);
            return -1;
        }
        *db = (int)v;
    }
    if (*p != '\0') {
        snprintf(err, errlen, "redis URL \"%s\": unexpected \"%s\" after the host", url, p);
        return -1;
    }
    *host = chat_strndup(h, (size_t)(he - h));
    return 0;
}

/* ---- the clock ---- */

/* Deadlines are kept on a clock read when needed, not on the loop's time,
 * which stands still while one iteration runs its callbacks: a busy worker
 * would otherwise date its commands from the start of a long iteration. */
static uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000u;
}

/* ---- the FIFO of owed callbacks ----
 * The FIFO is in send order, and so in deadline order: a command's deadline
 * counts from the call that queued it until hiredis has written it to the
 * socket, then again from that moment (see mark_written). The commands still
 * in hiredis's output buffer are a suffix of the FIFO starting at r->unsent.
 */

static void fifo_push(chat_redis_t *r, cmd_t *c)
{
    c->owed = 1;
    c->next = NULL;
    c->prev = r->tail;
    if (r->tail)
        r->tail->next = c;
    else
        r->head = c;
    r->tail = c;
    if (r->unsent == NULL)
        r->unsent = c;
    r->npending++;
}

static void fifo_unlink(chat_redis_t *r, cmd_t *c)
{
    assert(c->owed);
    if (r->unsent == c)
        r->unsent = c->next;
    if (c->prev)
        c->prev->next = c->next;
    else
        r->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        r->tail = c->prev;
    c->prev = c->next = NULL;
    c->owed = 0;
    r->npending--;
}

/* The overdue list: commands that timed out and whose reply has not come,
 * kept so that a connection where one goes unanswered far too long is judged
 * wedged even when no other command times out behind it. */
static void overdue_push(chat_redis_t *r, cmd_t *c)
{
    c->overdue = 1;
    c->next = NULL;
    c->prev = r->overdue_tail;
    if (r->overdue_tail)
        r->overdue_tail->next = c;
    else
        r->overdue_head = c;
    r->overdue_tail = c;
}

static void overdue_unlink(chat_redis_t *r, cmd_t *c)
{
    if (!c->overdue)
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        r->overdue_head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        r->overdue_tail = c->prev;
    c->prev = c->next = NULL;
    c->overdue = 0;
}

/* How long past its deadline a command may stay unanswered before its
 * connection is judged wedged: as long as the consecutive timeouts take. */
static uint64_t wedge_ms(const chat_redis_t *r)
{
    return (uint64_t)(CHAT_REDIS_MAX_CONSECUTIVE_TIMEOUTS - 1) * (uint64_t)r->cmd_timeout_ms;
}

/* Runs the callback of an owed command that ended without a reply. The record
 * itself stays alive until hiredis hands it back; after a timeout it waits in
 * the overdue list, its late callback (if any) still owed. */
static void finish_error(chat_redis_t *r, cmd_t *c, int status)
{
    fifo_unlink(r, c);
    if (status == CHAT_REDIS_ERR_TIMEOUT)
        overdue_push(r, c);
    else
        c->late = NULL;
    if (status != CHAT_REDIS_ERR_CLOSED)
        chat_metric_inc(r->errors);
    if (c->cb)
        c->cb(status, NULL, c->arg);
}

/* Fails every owed command. Safe against callbacks that close the client or
 * issue commands: each one is taken out before its callback runs. */
static void fail_all(chat_redis_t *r, int status)
{
    while (r->head)
        finish_error(r, r->head, status);
}

/* Every queued command is on the wire now: its deadline starts again. */
static void mark_written(chat_redis_t *r)
{
    uint64_t deadline = now_ms() + (uint64_t)r->cmd_timeout_ms;
    for (cmd_t *c = r->unsent; c; c = c->next)
        c->deadline = deadline;
    r->unsent = NULL;
}

/* The timer counts on the loop's time, which may lag the clock: then it
 * fires early, and on_cmd_timer arms it again. At least 1 ms, so that it
 * never runs twice in one pass of the loop's timers. */
static void arm_cmd_timer(chat_redis_t *r)
{
    uint64_t now = now_ms(), due = UINT64_MAX;
    if (r->head)
        due = r->head->deadline;
    if (r->overdue_head && r->overdue_head->deadline + wedge_ms(r) < due)
        due = r->overdue_head->deadline + wedge_ms(r);
    if (due == UINT64_MAX) {
        uv_timer_stop(&r->cmd_timer);
        return;
    }
    uv_timer_start(&r->cmd_timer, on_cmd_timer, due > now ? due - now : 1, 0);
}

/* ---- state ---- */

/* The one place the state changes; logs redis_down once per outage and
 * redis_up on every recovery. */
static void set_state(chat_redis_t *r, state_t to, const char *reason)
{
    state_t from = r->state;
    r->state = to;
    switch (to) {
    case ST_DOWN:
        uv_timer_stop(&r->cmd_timer);
        r->probe_at = uv_now(r->loop) + (uint64_t)r->retry_interval_ms;
        uv_timer_start(&r->conn_timer, on_conn_timer, (uint64_t)r->retry_interval_ms, 0);
        if (!r->down_logged) {
            r->down_logged = 1;
            chat_log_warn("event=redis_down addr=%s reason=\"%s\"", r->addr,
                          reason ? reason : "unknown");
        } else {
            chat_log_debug("event=redis_probe_failed addr=%s reason=\"%s\"", r->addr,
                           reason ? reason : "unknown");
        }
        break;
    case ST_CONNECTING:
        uv_timer_start(&r->conn_timer, on_conn_timer, (uint64_t)r->connect_timeout_ms, 0);
        break;
    case ST_HANDSHAKE:
        break; /* the connect deadline keeps running */
    case ST_UP:
        uv_timer_stop(&r->conn_timer);
        r->consecutive_timeouts = 0;
        r->down_logged = 0;
        chat_log_info("event=redis_up addr=%s db=%d", r->addr, r->db);
        break;
    case ST_CLOSING:
        uv_timer_stop(&r->conn_timer);
        uv_timer_stop(&r->cmd_timer);
        break;
    }
    chat_log_debug("event=redis_state addr=%s from=%s to=%s", r->addr, state_names[from],
                   state_names[to]);
}

/* Frees r->dying now, or on the next iteration when a hiredis callback is on
 * the stack (redisAsyncFree there would free the context under hiredis). */
static void reap(chat_redis_t *r)
{
    redisAsyncContext *ac = r->dying;
    if (ac == NULL)
        return;
    if (r->in_cb > 0) {
        uv_timer_start(&r->conn_timer, on_conn_timer, 0, 0);
        return;
    }
    r->dying = NULL;
    ac->data = NULL;
    redisAsyncFree(ac); /* hands back every record, with NULL replies */
}

/* hiredis is destroying ac (connect failure, I/O error, server closed):
 * forget it without freeing it. */
static void conn_lost(chat_redis_t *r, const redisAsyncContext *cac, const char *reason)
{
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    if (ac->data != r)
        return; /* already forgotten */
    ac->data = NULL;
    if (r->dying == ac) {
        r->dying = NULL;
        return;
    }
    if (r->ac != ac)
        return;
    r->ac = NULL;
    if (r->state == ST_CLOSING)
        return;
    set_state(r, ST_DOWN, reason);
    fail_all(r, CHAT_REDIS_ERR_DISCONNECTED);
}

/* We give up on the current connection: open the circuit, fail what is owed,
 * free the context (now or deferred). */
static void conn_drop(chat_redis_t *r, const char *reason)
{
    redisAsyncContext *ac = r->ac;
    r->ac = NULL;
    if (ac) {
        assert(r->dying == NULL);
        r->dying = ac;
    }
    set_state(r, ST_DOWN, reason);
    fail_all(r, CHAT_REDIS_ERR_DISCONNECTED);
    if (r->state == ST_DOWN)
        reap(r);
}

/* ---- hiredis callbacks ---- */

static void handshake_reply(chat_redis_t *r, redisAsyncContext *ac, cmd_t *c, redisReply *reply)
{
    char reason[200];
    if (ac != r->ac || r->state != ST_HANDSHAKE)
        return; /* a reply on a connection already given up */
    if (reply->type == REDIS_REPLY_ERROR) {
        snprintf(reason, sizeof reason, "%s failed: %.*s", c->kind == CMD_PING ? "PING" : "SELECT",
                 (int)(reply->len < 150 ? reply->len : 150), reply->str);
        conn_drop(r, reason);
        return;
    }
    if (c->kind == CMD_PING)
        set_state(r, ST_UP, NULL);
}

/* The real outcome of a command whose caller heard CHAT_REDIS_ERR_TIMEOUT. */
static void settle_late(cmd_t *c, int status)
{
    chat_redis_late_cb late = c->late;
    c->late = NULL;
    if (late)
        late(status, c->arg);
}

static void on_reply(redisAsyncContext *ac, void *reply_, void *privdata)
{
    cmd_t *c = privdata;
    chat_redis_t *r = c->r;
    redisReply *reply = reply_;

    r->in_cb++;
    overdue_unlink(r, c);
    if (reply == NULL) {
        /* hiredis only passes NULL while it tears the context down. */
        conn_lost(r, ac, ac->errstr ? ac->errstr : "connection lost");
        settle_late(c,
                    r->state == ST_CLOSING ? CHAT_REDIS_ERR_CLOSED : CHAT_REDIS_ERR_DISCONNECTED);
    } else if (c->kind != CMD_USER) {
        handshake_reply(r, ac, c, reply);
    } else if (c->owed) {
        int status = reply->type == REDIS_REPLY_ERROR ? CHAT_REDIS_ERR_REPLY : CHAT_REDIS_OK;
        fifo_unlink(r, c);
        c->late = NULL;
        r->consecutive_timeouts = 0;
        if (status != CHAT_REDIS_OK)
            chat_metric_inc(r->errors);
        if (now_ms() > c->deadline)
            chat_metric_inc(r->late_reads); /* in the socket in time, read late */
        if (c->cb)
            c->cb(status, reply, c->arg);
    } else {
        /* A late reply to a command already answered with a timeout. */
        settle_late(c, reply->type == REDIS_REPLY_ERROR ? CHAT_REDIS_ERR_REPLY : CHAT_REDIS_OK);
    }
    r->in_cb--;
    r->nlive--;
    free(c);
}

static int send_cmd(chat_redis_t *r, cmd_t *c, int argc, const char **argv, const size_t *argvlen)
{
    if (redisAsyncCommandArgv(r->ac, on_reply, c, argc, argv, argvlen) != REDIS_OK)
        return -1;
    r->nlive++;
    return 0;
}

static int send_handshake(chat_redis_t *r)
{
    cmd_t *c;
    if (r->db > 0) {
        char dbs[16];
        const char *argv[2] = {"SELECT", dbs};
        snprintf(dbs, sizeof dbs, "%d", r->db);
        c = chat_calloc(1, sizeof *c);
        c->r = r;
        c->kind = CMD_SELECT;
        if (send_cmd(r, c, 2, argv, NULL) != 0) {
            free(c);
            return -1;
        }
    }
    const char *ping[1] = {"PING"};
    c = chat_calloc(1, sizeof *c);
    c->r = r;
    c->kind = CMD_PING;
    if (send_cmd(r, c, 1, ping, NULL) != 0) {
        free(c);
        return -1;
    }
    return 0;
}

static void on_connect(const redisAsyncContext *cac, int status)
{
    chat_redis_t *r = cac->data;
    if (r == NULL)
        return;
    r->in_cb++;
    if (status != REDIS_OK) {
        conn_lost(r, cac, cac->errstr ? cac->errstr : "connect failed");
    } else if (cac == r->ac && r->state == ST_CONNECTING) {
        set_state(r, ST_HANDSHAKE, NULL);
        if (send_handshake(r) != 0)
            conn_drop(r, "cannot queue the handshake");
    }
    r->in_cb--;
}

static void on_disconnect(const redisAsyncContext *cac, int status)
{
    chat_redis_t *r = cac->data;
    if (r == NULL)
        return;
    r->in_cb++;
    conn_lost(r, cac,
              status == REDIS_OK ? "connection closed"
                                 : (cac->errstr ? cac->errstr : "connection lost"));
    r->in_cb--;
}

/* ---- event hooks ----
 * Our own binding of hiredis to libuv instead of hiredis 0.14's
 * adapters/libuv.h, which drops poll errors: libuv reports POLLERR (a refused
 * connect, a reset connection) as status < 0 and stops the poll, and that
 * adapter then returns without telling hiredis, so a refused connect looks
 * like a connect timeout and a reset connection hangs until its commands time
 * out. Here hiredis reads or writes anyway and so meets the error. The poll
 * handles are counted in r->nhandles so that close waits for them.
 */
typedef struct evw {
    uv_poll_t poll;
    uv_prepare_t flush;    /* writes hiredis's buffer before the loop polls */
    redisAsyncContext *ac; /* NULL once hiredis cleaned up */
    chat_redis_t *r;
    int events;     /* what the poll handle waits for */
    int want_write; /* hiredis has bytes to write */
    int nopen;      /* handles not yet closed */
} evw_t;

static void handle_closed(chat_redis_t *r);
static void ev_poll_cb(uv_poll_t *h, int status, int events);

/* Only a change reaches libuv: every uv_poll_start costs epoll_ctl calls. */
static void ev_update(evw_t *w, int add, int del)
{
    int events = (w->events | add) & ~del;
    if (events == w->events)
        return;
    w->events = events;
    if (w->events)
        uv_poll_start(&w->poll, w->events, ev_poll_cb);
    else
        uv_poll_stop(&w->poll);
}

/* hiredis wrote what it could; its commands' deadlines start now if all went. */
static void ev_wrote(evw_t *w)
{
    if (!w->ac)
        return;
    if (!w->want_write) {
        ev_update(w, 0, UV_WRITABLE);
        if (w->ac == w->r->ac)
            mark_written(w->r);
    } else {
        ev_update(w, UV_WRITABLE, 0); /* the socket is full: wait until it drains */
    }
}

static void ev_poll_cb(uv_poll_t *h, int status, int events)
{
    evw_t *w = h->data;
    if (status < 0)
        events = w->events; /* libuv has stopped the poll: let hiredis find out why */
    if (w->ac && (events & UV_READABLE))
        redisAsyncHandleRead(w->ac);
    if (w->ac && (events & UV_WRITABLE)) {
        redisAsyncHandleWrite(w->ac);
        ev_wrote(w);
    }
    if (status < 0 && w->ac && w->events)
        uv_poll_start(&w->poll, w->events, ev_poll_cb);
}

/*
 * Commands of one pass of the loop are written together just before it
 * polls, straight to the socket, which is almost always writable: no
 * poll for writability, no epoll_ctl per command batch.
 */
static void ev_flush_cb(uv_prepare_t *h)
{
    evw_t *w = h->data;
    uv_prepare_stop(&w->flush);
    if (!w->ac || !w->want_write)
        return;
    redisAsyncHandleWrite(w->ac);
    ev_wrote(w);
}

static void ev_add_read(void *p)
{
    ev_update(p, UV_READABLE, 0);
}

static void ev_del_read(void *p)
{
    ev_update(p, 0, UV_READABLE);
}

static void ev_add_write(void *p)
{
    evw_t *w = p;
    w->want_write = 1;
    if (w->ac && (w->ac->c.flags & REDIS_CONNECTED))
        uv_prepare_start(&w->flush, ev_flush_cb);
    else
        ev_update(w, UV_WRITABLE, 0); /* writable = the connect finished */
}

static void ev_del_write(void *p)
{
    evw_t *w = p;
    w->want_write = 0;
    uv_prepare_stop(&w->flush);
    ev_update(w, 0, UV_WRITABLE);
}

static void ev_closed(uv_handle_t *h)
{
    evw_t *w = h->data;
    chat_redis_t *r = w->r;
    if (--w->nopen == 0)
        free(w);
    handle_closed(r);
}

static void ev_cleanup(void *p)
{
    evw_t *w = p;
    if (w->ac == NULL)
        return; /* hiredis may clean up twice */
    w->ac = NULL;
    uv_close((uv_handle_t *)&w->poll, ev_closed);
    uv_close((uv_handle_t *)&w->flush, ev_closed);
}

static int ev_attach(chat_redis_t *r, redisAsyncContext *ac)
{
    evw_t *w = chat_calloc(1, sizeof *w);
    if (uv_poll_init(r->loop, &w->poll, ac->c.fd) != 0) {
        free(w);
        return -1;
    }
    uv_prepare_init(r->loop, &w->flush);
    w->poll.data = w;
    w->flush.data = w;
    w->ac = ac;
    w->r = r;
    w->nopen = 2;
    r->nhandles += 2;
    ac->ev.data = w;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    return 0;
}

/* ---- connecting ---- */

static void start_connect(chat_redis_t *r)
{
    char reason[200];
    redisAsyncContext *ac = redisAsyncConnect(r->host, r->port);
    if (ac == NULL) {
        set_state(r, ST_DOWN, "cannot allocate a connection");
        return;
    }
    if (ac->err) { /* e.g. refused at once, or the name does not resolve */
        snprintf(reason, sizeof reason, "%s", ac->errstr);
        redisAsyncFree(ac);
        set_state(r, ST_DOWN, reason);
        return;
    }
    if (ev_attach(r, ac) != 0) {
        redisAsyncFree(ac);
        set_state(r, ST_DOWN, "cannot attach the connection to the loop");
        return;
    }
    ac->data = r;
    r->ac = ac;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    set_state(r, ST_CONNECTING, NULL);
}

/* ---- closing ---- */

/* Every handle's close callback ends here; the last one of a closing client
 * frees it, so hiredis's poll handles are gone too when the caller hears. */
static void handle_closed(chat_redis_t *r)
{
    void (*cb)(void *);
    void *arg;

    if (--r->nhandles > 0 || r->state != ST_CLOSING)
        return;
    assert(r->nlive == 0 && r->npending == 0 && r->ac == NULL && r->dying == NULL);
    cb = r->close_cb;
    arg = r->close_arg;
    free(r->host);
    free(r);
    if (cb)
        cb(arg);
}

static void on_timer_closed(uv_handle_t *h)
{
    handle_closed(h->data);
}

static void finish_close(chat_redis_t *r)
{
    redisAsyncContext *ac = r->ac;
    assert(r->in_cb == 0);
    r->ac = NULL;
    if (ac) {
        ac->data = NULL;
        redisAsyncFree(ac); /* hands back every record, with NULL replies */
    }
    reap(r);
    uv_close((uv_handle_t *)&r->conn_timer, on_timer_closed);
    uv_close((uv_handle_t *)&r->cmd_timer, on_timer_closed);
}

/* ---- timers ---- */

static void on_conn_timer(uv_timer_t *t)
{
    chat_redis_t *r = t->data;
    uint64_t now;

    switch (r->state) {
    case ST_CLOSING:
        finish_close(r);
        break;
    case ST_DOWN:
        reap(r);
        now = uv_now(r->loop);
        if (now < r->probe_at)
            uv_timer_start(&r->conn_timer, on_conn_timer, r->probe_at - now, 0);
        else
            start_connect(r);
        break;
    case ST_CONNECTING:
        conn_drop(r, "connect timeout");
        break;
    case ST_HANDSHAKE:
        conn_drop(r, "handshake timeout");
        break;
    case ST_UP:
        break;
    }
}

/* Writes what hiredis holds for the current connection, now rather than in
 * the loop's next poll; the commands written get a fresh deadline. */
static void flush(chat_redis_t *r)
{
    evw_t *w = r->ac->ev.data;
    if (w->want_write)
        redisAsyncHandleWrite(r->ac);
    if (r->ac && !w->want_write)
        mark_written(r);
}

static int readable(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 0) > 0 && p.revents != 0;
}

/* Most reads of one drain (hiredis reads 16 KiB at a time). */
#define DRAIN_MAX_READS 1024

/*
 * Deadlines. libuv runs timers before it polls for I/O, so when a busy
 * worker comes back to its loop this timer fires first, with commands
 * maybe still in hiredis's buffer and their replies maybe waiting in the
 * socket unread. Neither is Redis being late. So the queued commands are
 * written first (their deadlines start again), the time is read, every reply
 * already in the socket is processed, and only then is a command whose
 * deadline had passed at that time judged late: its reply was not there.
 */
static void on_cmd_timer(uv_timer_t *t)
{
    chat_redis_t *r = t->data;
    uint64_t now;

    if (r->state != ST_UP || r->ac == NULL)
        return;
    flush(r);
    now = now_ms();
    for (int i = 0; i < DRAIN_MAX_READS && r->state == ST_UP && r->ac && readable(r->ac->c.fd); i++)
        redisAsyncHandleRead(r->ac);
    while (r->state == ST_UP && r->head && r->head->deadline <= now) {
        r->consecutive_timeouts++;
        finish_error(r, r->head, CHAT_REDIS_ERR_TIMEOUT);
    }
    if (r->state != ST_UP)
        return;
    if (r->consecutive_timeouts >= CHAT_REDIS_MAX_CONSECUTIVE_TIMEOUTS) {
        char reason[80];
        snprintf(reason, sizeof reason, "%d consecutive timeouts", r->consecutive_timeouts);
        conn_drop(r, reason);
        return;
    }
    if (r->overdue_head && r->overdue_head->deadline + wedge_ms(r) <= now) {
        char reason[80];
        snprintf(reason, sizeof reason, "no reply %llu ms past a deadline",
                 (unsigned long long)wedge_ms(r));
        conn_drop(r, reason);
        return;
    }
    arm_cmd_timer(r);
}

/* ---- public ---- */

chat_redis_t *chat_redis_create(uv_loop_t *loop, const chat_redis_config_t *cfg, char *err,
                                size_t errlen)
{
    char dummy[1];
    char *host;
    int port, db;

    if (err == NULL) {
        err = dummy;
        errlen = sizeof dummy;
    }
    if (parse_url(cfg->url, &host, &port, &db, err, errlen) != 0)
        return NULL;

    chat_redis_t *r = chat_calloc(1, sizeof *r);
    r->loop = loop;
    r->state = ST_DOWN;
    r->host = host;
    r->port = port;
    r->db = db;
    snprintf(r->addr, sizeof r->addr, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
    r->cmd_timeout_ms = cfg->cmd_timeout_ms > 0 ? cfg->cmd_timeout_ms : 50;
    r->connect_timeout_ms = cfg->connect_timeout_ms > 0 ? cfg->connect_timeout_ms : 200;
    r->retry_interval_ms = cfg->retry_interval_ms > 0 ? cfg->retry_interval_ms : 500;
    r->max_pending = cfg->max_pending > 0 ? (size_t)cfg->max_pending : 20000;
    r->errors = chat_metric_series(
        chat_metrics_counter("chatd_cache_errors_total",
                             "Cache operations that failed: Redis down, timed out, "
                             "error reply or connection lost"),
        "");
    r->late_reads = chat_metric_series(
        chat_metrics_counter("chatd_cache_late_reads_total",
                             "Redis replies read after their command's deadline because the "
                             "worker's loop was busy; answered, not counted as timeouts"),
        "");
    uv_timer_init(loop, &r->conn_timer);
    uv_timer_init(loop, &r->cmd_timer);
    r->conn_timer.data = r;
    r->cmd_timer.data = r;
    r->nhandles = 2;
    start_connect(r);
    return r;
}

int chat_redis_command(chat_redis_t *r, chat_redis_cb cb, void *arg, int argc, const char **argv,
                       const size_t *argvlen)
{
    return chat_redis_command_tracked(r, cb, NULL, arg, argc, argv, argvlen);
}

int chat_redis_command_tracked(chat_redis_t *r, chat_redis_cb cb, chat_redis_late_cb late,
                               void *arg, int argc, const char **argv, const size_t *argvlen)
{
    cmd_t *c;

    assert(argc >= 1);
    if (r->state != ST_UP || r->ac == NULL || r->nlive >= r->max_pending) {
        chat_metric_inc(r->errors);
        return CHAT_REDIS_ERR_DOWN;
    }
    c = chat_calloc(1, sizeof *c);
    c->r = r;
    c->kind = CMD_USER;
    c->cb = cb;
    c->late = late;
    c->arg = arg;
    c->deadline = now_ms() + (uint64_t)r->cmd_timeout_ms;
    if (send_cmd(r, c, argc, argv, argvlen) != 0) {
        free(c);
        chat_metric_inc(r->errors);
        return CHAT_REDIS_ERR_DOWN;
    }
    fifo_push(r, c);
    /* A new head may be due before the timer (armed for an overdue command). */
    if (r->head == c || !uv_is_active((uv_handle_t *)&r->cmd_timer))
        arm_cmd_timer(r);
    return CHAT_REDIS_OK;
}

int chat_redis_healthy(const chat_redis_t *r)
{
    return r->state == ST_UP;
}

size_t chat_redis_pending(const chat_redis_t *r)
{
    return r->npending;
}

void chat_redis_close(chat_redis_t *r, void (*cb)(void *arg), void *arg)
{
    assert(r->state != ST_CLOSING);
    r->close_cb = cb;
    r->close_arg = arg;
    set_state(r, ST_CLOSING, NULL);
    fail_all(r, CHAT_REDIS_ERR_CLOSED);
    if (r->in_cb > 0) {
        /* A hiredis callback is on the stack: free its context next time. */
        if (r->ac) {
            assert(r->dying == NULL);
            r->dying = r->ac;
            r->ac = NULL;
        }
        uv_timer_start(&r->conn_timer, on_conn_timer, 0, 0);
        return;
    }
    finish_close(r);
}
