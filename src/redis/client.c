/*
 * Redis client for one libuv loop: one hiredis async connection (bound to the
 * loop by adapter.c), a deadline on every command kept by a single timer, and
 * a circuit breaker with a background reconnect probe. See client.h.
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
 * reply) or by us with redisAsyncFree, never from inside a hiredis callback:
 * there it is parked in r->dying and freed from conn_timer on the next
 * iteration. ac->data points at r while r still tracks the context, NULL once
 * it does not, so late hiredis callbacks on it do nothing but free records.
 */
#include "redis/client.h"

#include "core/alloc.h"
#include "core/list.h"
#include "core/log.h"
#include "redis/adapter.h"
#include "redis/cluster.h"
#include "redis/url.h"

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
 *  RESOLVING  r->resolving looks the host name up on the thread pool; its
 *             callback moves on to CONNECTING or back to DOWN.
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
    ST_RESOLVING,
    ST_CONNECTING,
    ST_HANDSHAKE,
    ST_UP,
    ST_CLOSING,
} state_t;

static const char *const state_names[] = {"down",      "resolving", "connecting",
                                          "handshake", "up",        "closing"};

enum { CMD_USER, CMD_SELECT, CMD_PING };

typedef struct cmd {
    chat_list_t link; /* in r's FIFO while owed, then in r's overdue list */
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
    chat_redis_cluster_t *cluster; /* a redis+cluster:// URL: everything goes there */
    state_t state;
    redisAsyncContext *ac;           /* the current connection, NULL when DOWN */
    redisAsyncContext *dying;        /* dropped inside a hiredis callback, to free */
    chat_redis_resolve_t *resolving; /* the host lookup in RESOLVING */
    uv_timer_t conn_timer;           /* probe, connect deadline, deferred work */
    uv_timer_t cmd_timer;            /* the oldest command deadline */
    chat_list_t fifo;                /* commands whose callback is owed, send order */
    cmd_t *unsent;                   /* first of the FIFO's tail still in hiredis's buffer */
    chat_list_t overdue;             /* timed out, reply not come yet, send order */
    size_t npending;                 /* length of the FIFO */
    size_t nlive;                    /* records alive in hiredis, owed or not */
    int nhandles;                    /* timers and attached contexts not closed yet */
    int in_cb;                       /* depth of hiredis callbacks on the stack */
    int consecutive_timeouts;
    int down_logged;        /* redis_down logged since the last redis_up */
    int ever_up;            /* the handshake has succeeded at least once */
    uint64_t conn_deadline; /* CONNECTING, HANDSHAKE: ms on the clock of now_ms() */
    uint64_t probe_at;

    chat_redis_url_t url;
    int cmd_timeout_ms;
    int connect_timeout_ms;
    int first_connect_timeout_ms;
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
static void handle_closed(void *arg);

static void count(chat_metric_t *m)
{
    if (m)
        chat_metric_inc(m);
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

static cmd_t *cmd_of(chat_list_t *e)
{
    return e ? CHAT_CONTAINER_OF(e, cmd_t, link) : NULL;
}

static cmd_t *fifo_head(const chat_redis_t *r)
{
    return cmd_of(chat_list_first(&r->fifo));
}

static void fifo_push(chat_redis_t *r, cmd_t *c)
{
    c->owed = 1;
    chat_list_insert_tail(&r->fifo, &c->link);
    if (r->unsent == NULL)
        r->unsent = c;
    r->npending++;
}

static void fifo_unlink(chat_redis_t *r, cmd_t *c)
{
    assert(c->owed);
    if (r->unsent == c)
        r->unsent = c->link.next == &r->fifo ? NULL : cmd_of(c->link.next);
    chat_list_remove(&c->link);
    c->owed = 0;
    r->npending--;
}

/* The overdue list: commands that timed out and whose reply has not come,
 * kept so that a connection where one goes unanswered far too long is judged
 * wedged even when no other command times out behind it. */
static void overdue_push(chat_redis_t *r, cmd_t *c)
{
    c->overdue = 1;
    chat_list_insert_tail(&r->overdue, &c->link);
}

static void overdue_unlink(cmd_t *c)
{
    if (!c->overdue)
        return;
    chat_list_remove(&c->link);
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
static void finish_error(chat_redis_t *r, cmd_t *c, chat_err_t status)
{
    fifo_unlink(r, c);
    if (status == CHAT_ETIMEDOUT)
        overdue_push(r, c);
    else
        c->late = NULL;
    if (status != CHAT_ECLOSED)
        count(r->errors);
    if (c->cb)
        c->cb(status, NULL, c->arg);
}

/* Fails every owed command. Safe against callbacks that close the client or
 * issue commands: each one is taken out before its callback runs. */
static void fail_all(chat_redis_t *r, chat_err_t status)
{
    cmd_t *c;
    while ((c = fifo_head(r)) != NULL)
        finish_error(r, c, status);
}

/* Every queued command is on the wire now: its deadline starts again. */
static void mark_written(chat_redis_t *r)
{
    uint64_t deadline = now_ms() + (uint64_t)r->cmd_timeout_ms;
    if (r->unsent == NULL)
        return;
    for (chat_list_t *e = &r->unsent->link; e != &r->fifo; e = e->next)
        cmd_of(e)->deadline = deadline;
    r->unsent = NULL;
}

/* The timer counts on the loop's time, which may lag the clock: then it
 * fires early, and on_cmd_timer arms it again. At least 1 ms, so that it
 * never runs twice in one pass of the loop's timers. */
static void arm_cmd_timer(chat_redis_t *r)
{
    uint64_t now = now_ms(), due = UINT64_MAX;
    cmd_t *head = fifo_head(r), *old = cmd_of(chat_list_first(&r->overdue));
    if (head)
        due = head->deadline;
    if (old && old->deadline + wedge_ms(r) < due)
        due = old->deadline + wedge_ms(r);
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
            chat_log_warn("event=redis_down addr=%s reason=\"%s\"", r->url.text,
                          reason ? reason : "unknown");
        } else {
            chat_log_debug("event=redis_probe_failed addr=%s reason=\"%s\"", r->url.text,
                           reason ? reason : "unknown");
        }
        break;
    case ST_RESOLVING:
        break; /* bounded by the system resolver; the probe timer has fired */
    case ST_CONNECTING:
    case ST_HANDSHAKE: {
        /* Connect and handshake have a window each; before the first
         * success a longer one: a process that is starting (many
         * connections at once, a slow build) is not a slow Redis. */
        int ms = r->ever_up ? r->connect_timeout_ms : r->first_connect_timeout_ms;
        r->conn_deadline = now_ms() + (uint64_t)ms;
        uv_timer_start(&r->conn_timer, on_conn_timer, (uint64_t)ms, 0);
        break;
    }
    case ST_UP:
        uv_timer_stop(&r->conn_timer);
        r->ever_up = 1;
        r->consecutive_timeouts = 0;
        r->down_logged = 0;
        chat_log_info("event=redis_up addr=%s db=%d", r->url.text, r->url.db);
        break;
    case ST_CLOSING:
        uv_timer_stop(&r->conn_timer);
        uv_timer_stop(&r->cmd_timer);
        break;
    }
    chat_log_debug("event=redis_state addr=%s from=%s to=%s", r->url.text, state_names[from],
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
    fail_all(r, CHAT_ECONNLOST);
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
    fail_all(r, CHAT_ECONNLOST);
    if (r->state == ST_DOWN)
        reap(r);
}

/* ---- hiredis callbacks ---- */

static void handshake_reply(chat_redis_t *r, const redisAsyncContext *ac, cmd_t *c,
                            redisReply *reply)
{
    if (ac != r->ac || r->state != ST_HANDSHAKE)
        return; /* a reply on a connection already given up */
    if (reply->type == REDIS_REPLY_ERROR) {
        char reason[200];
        snprintf(reason, sizeof reason, "%s failed: %.*s", c->kind == CMD_PING ? "PING" : "SELECT",
                 (int)(reply->len < 150 ? reply->len : 150), reply->str);
        conn_drop(r, reason);
        return;
    }
    if (c->kind == CMD_PING)
        set_state(r, ST_UP, NULL);
}

/* The real outcome of a command whose caller heard CHAT_ETIMEDOUT. */
static void settle_late(cmd_t *c, chat_err_t status)
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
    overdue_unlink(c);
    if (reply == NULL) {
        /* hiredis only passes NULL while it tears the context down. */
        conn_lost(r, ac, ac->errstr ? ac->errstr : "connection lost");
        settle_late(c, r->state == ST_CLOSING ? CHAT_ECLOSED : CHAT_ECONNLOST);
    } else if (c->kind != CMD_USER) {
        handshake_reply(r, ac, c, reply);
    } else if (c->owed) {
        chat_err_t status = reply->type == REDIS_REPLY_ERROR ? CHAT_EREPLY : CHAT_EOK;
        fifo_unlink(r, c);
        c->late = NULL;
        r->consecutive_timeouts = 0;
        if (status != CHAT_EOK)
            count(r->errors);
        if (now_ms() > c->deadline)
            count(r->late_reads); /* in the socket in time, read late */
        if (c->cb)
            c->cb(status, reply, c->arg);
    } else {
        /* A late reply to a command already answered with a timeout. */
        settle_late(c, reply->type == REDIS_REPLY_ERROR ? CHAT_EREPLY : CHAT_EOK);
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

static cmd_t *cmd_new(chat_redis_t *r, int kind)
{
    cmd_t *c = chat_calloc(1, sizeof *c);
    chat_list_init(&c->link);
    c->r = r;
    c->kind = (unsigned char)kind;
    return c;
}

static int send_handshake(chat_redis_t *r)
{
    cmd_t *c;
    if (r->url.db > 0) {
        char dbs[16];
        const char *argv[2] = {"SELECT", dbs};
        snprintf(dbs, sizeof dbs, "%d", r->url.db);
        c = cmd_new(r, CMD_SELECT);
        if (send_cmd(r, c, 2, argv, NULL) != 0) {
            free(c);
            return -1;
        }
    }
    const char *ping[1] = {"PING"};
    c = cmd_new(r, CMD_PING);
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

/* The adapter wrote hiredis's whole buffer: the commands' deadlines start now. */
static void on_written(const redisAsyncContext *ac, void *arg)
{
    chat_redis_t *r = arg;
    if (ac == r->ac)
        mark_written(r);
}

/* ---- connecting ---- */

/* Connects to ip (numeric, so hiredis's own lookup returns at once). */
static void connect_ip(chat_redis_t *r, const char *ip)
{
    chat_redis_adapter_hooks_t hooks = {.written = on_written, .closed = handle_closed, .arg = r};
    redisAsyncContext *ac = redisAsyncConnect(ip, r->url.port);
    if (ac == NULL) {
        set_state(r, ST_DOWN, "cannot allocate a connection");
        return;
    }
    if (ac->err) { /* e.g. refused at once */
        char reason[200];
        snprintf(reason, sizeof reason, "%s", ac->errstr);
        redisAsyncFree(ac);
        set_state(r, ST_DOWN, reason);
        return;
    }
    if (chat_redis_adapter_attach(r->loop, ac, &hooks) != 0) {
        redisAsyncFree(ac);
        set_state(r, ST_DOWN, "cannot attach the connection to the loop");
        return;
    }
    r->nhandles++; /* the adapter's handles, until hooks.closed */
    ac->data = r;
    r->ac = ac;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    set_state(r, ST_CONNECTING, NULL);
}

static void on_resolved(int status, const struct sockaddr *addr, void *arg)
{
    chat_redis_t *r = arg;
    char ip[64];
    r->resolving = NULL;
    if (status == 0)
        status = chat_redis_addr_ip(addr, ip, sizeof ip);
    if (status != 0) {
        char reason[CHAT_REDIS_HOST_MAX + 128];
        snprintf(reason, sizeof reason, "cannot resolve %s: %s", r->url.host, uv_strerror(status));
        set_state(r, ST_DOWN, reason);
        return;
    }
    connect_ip(r, ip);
}

static void start_connect(chat_redis_t *r)
{
    int rc;
    if (r->url.numeric) {
        connect_ip(r, r->url.host);
        return;
    }
    rc = chat_redis_url_resolve(r->loop, &r->url, on_resolved, r, &r->resolving);
    if (rc != 0) {
        char reason[CHAT_REDIS_HOST_MAX + 128];
        snprintf(reason, sizeof reason, "cannot resolve %s: %s", r->url.host, uv_strerror(rc));
        set_state(r, ST_DOWN, reason);
        return;
    }
    set_state(r, ST_RESOLVING, NULL);
}

/* ---- closing ---- */

/* Every handle's close callback (timers, and an adapter once per context)
 * ends here; the last one of a closing client frees it, so hiredis's poll
 * handles are gone too when the caller hears. */
static void handle_closed(void *arg)
{
    chat_redis_t *r = arg;
    void (*cb)(void *);
    void *cb_arg;

    if (--r->nhandles > 0 || r->state != ST_CLOSING)
        return;
    assert(r->nlive == 0 && r->npending == 0 && r->ac == NULL && r->dying == NULL);
    cb = r->close_cb;
    cb_arg = r->close_arg;
    free(r);
    if (cb)
        cb(cb_arg);
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

static void flush(chat_redis_t *r);
static int readable(int fd);

/*
 * The connect or handshake deadline's timer fired. As for commands, libuv
 * runs timers before it polls: after a long iteration the connection may
 * already be established and PONG waiting in the socket, which is not Redis
 * being late. So the timer is first checked against the clock (the loop's
 * time may lag), then what is ready is handled (the connect completed and
 * the handshake written, its reply read), and only a connection still not
 * through its current step is dropped.
 */
static void conn_deadline_passed(chat_redis_t *r)
{
    uint64_t now = now_ms();
    state_t before = r->state;
    if (now < r->conn_deadline) {
        uv_timer_start(&r->conn_timer, on_conn_timer, r->conn_deadline - now, 0);
        return;
    }
    flush(r); /* completes a connect that is done, writes the handshake */
    if (r->state == before && r->state == ST_HANDSHAKE && r->ac && readable(r->ac->c.fd))
        redisAsyncHandleRead(r->ac);
    if (r->state != before)
        return; /* up, or the next step with its own window, or down */
    conn_drop(r, before == ST_CONNECTING ? "connect timeout" : "handshake timeout");
}

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
    case ST_RESOLVING:
        reap(r); /* the deferred free of a context dropped before */
        break;
    case ST_CONNECTING:
    case ST_HANDSHAKE:
        conn_deadline_passed(r);
        break;
    case ST_UP:
        break;
    }
}

/* Writes what hiredis holds for the current connection, now rather than in
 * the loop's next poll; the commands written get a fresh deadline. */
static void flush(chat_redis_t *r)
{
    redisAsyncContext *ac = r->ac;
    if (!ac)
        return;
    /* False also when the write lost the connection: then nothing is marked. */
    if (chat_redis_adapter_flush(ac))
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
    cmd_t *c;

    if (r->state != ST_UP || r->ac == NULL)
        return;
    flush(r);
    now = now_ms();
    for (int i = 0; i < DRAIN_MAX_READS && r->state == ST_UP && r->ac && readable(r->ac->c.fd); i++)
        redisAsyncHandleRead(r->ac);
    while (r->state == ST_UP && (c = fifo_head(r)) != NULL && c->deadline <= now) {
        r->consecutive_timeouts++;
        finish_error(r, c, CHAT_ETIMEDOUT);
    }
    if (r->state != ST_UP)
        return;
    if (r->consecutive_timeouts >= CHAT_REDIS_MAX_CONSECUTIVE_TIMEOUTS) {
        char reason[80];
        snprintf(reason, sizeof reason, "%d consecutive timeouts", r->consecutive_timeouts);
        conn_drop(r, reason);
        return;
    }
    c = cmd_of(chat_list_first(&r->overdue));
    if (c && c->deadline + wedge_ms(r) <= now) {
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
    chat_redis_t *r = chat_calloc(1, sizeof *r);
    if (chat_redis_url_is_cluster(cfg->url)) {
        r->loop = loop;
        r->cluster = chat_redis_cluster_create(loop, cfg, err, errlen);
        if (!r->cluster) {
            free(r);
            return NULL;
        }
        return r;
    }
    if (chat_redis_url_parse(&r->url, cfg->url, err, errlen) != 0) {
        free(r);
        return NULL;
    }
    r->loop = loop;
    r->state = ST_DOWN;
    chat_list_init(&r->fifo);
    chat_list_init(&r->overdue);
    r->cmd_timeout_ms = cfg->cmd_timeout_ms > 0 ? cfg->cmd_timeout_ms : 50;
    r->connect_timeout_ms = cfg->connect_timeout_ms > 0 ? cfg->connect_timeout_ms : 200;
    r->first_connect_timeout_ms = cfg->first_connect_timeout_ms > 0
                                      ? cfg->first_connect_timeout_ms
                                      : CHAT_REDIS_FIRST_CONNECT_FACTOR * r->connect_timeout_ms;
    r->retry_interval_ms = cfg->retry_interval_ms > 0 ? cfg->retry_interval_ms : 500;
    r->max_pending = cfg->max_pending > 0 ? (size_t)cfg->max_pending : 20000;
    r->errors = cfg->errors;
    r->late_reads = cfg->late_reads;
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
    if (r->cluster)
        return chat_redis_cluster_command(r->cluster, cb, late, arg, argc, argv, argvlen);
    if (r->state != ST_UP || r->ac == NULL || r->nlive >= r->max_pending) {
        count(r->errors);
        return CHAT_EDOWN;
    }
    c = cmd_new(r, CMD_USER);
    c->cb = cb;
    c->late = late;
    c->arg = arg;
    c->deadline = now_ms() + (uint64_t)r->cmd_timeout_ms;
    if (send_cmd(r, c, argc, argv, argvlen) != 0) {
        free(c);
        count(r->errors);
        return CHAT_EDOWN;
    }
    fifo_push(r, c);
    /* A new head may be due before the timer (armed for an overdue command). */
    if (fifo_head(r) == c || !uv_is_active((uv_handle_t *)&r->cmd_timer))
        arm_cmd_timer(r);
    return 0;
}

int chat_redis_healthy(const chat_redis_t *r)
{
    if (r->cluster)
        return chat_redis_cluster_healthy(r->cluster);
    return r->state == ST_UP;
}

int chat_redis_all_up(const chat_redis_t *r)
{
    if (r->cluster)
        return chat_redis_cluster_all_up(r->cluster);
    return r->state == ST_UP;
}

size_t chat_redis_pending(const chat_redis_t *r)
{
    if (r->cluster)
        return chat_redis_cluster_pending(r->cluster);
    return r->npending;
}

bool chat_redis_is_cluster(const chat_redis_t *r)
{
    return r->cluster != NULL;
}

const char *chat_redis_master_of(const chat_redis_t *r, const char *key, size_t len)
{
    return r->cluster ? chat_redis_cluster_master_of(r->cluster, key, len) : NULL;
}

unsigned long chat_redis_map_gen(const chat_redis_t *r)
{
    return r->cluster ? chat_redis_cluster_map_gen(r->cluster) : 0;
}

size_t chat_redis_masters(const chat_redis_t *r)
{
    return r->cluster ? chat_redis_cluster_masters(r->cluster) : 1;
}

int chat_redis_command_master(chat_redis_t *r, size_t i, chat_redis_cb cb, void *arg, int argc,
                              const char **argv, const size_t *argvlen)
{
    if (r->cluster)
        return chat_redis_cluster_command_master(r->cluster, i, cb, arg, argc, argv, argvlen);
    return i == 0 ? chat_redis_command(r, cb, arg, argc, argv, argvlen) : CHAT_EDOWN;
}

void chat_redis_map_refresh(chat_redis_t *r)
{
    if (r->cluster)
        chat_redis_cluster_refresh(r->cluster);
}

static void cluster_closed(void *arg)
{
    chat_redis_t *r = arg;
    void (*cb)(void *) = r->close_cb;
    void *cb_arg = r->close_arg;
    free(r);
    if (cb)
        cb(cb_arg);
}

void chat_redis_close(chat_redis_t *r, void (*cb)(void *arg), void *arg)
{
    assert(r->state != ST_CLOSING);
    r->close_cb = cb;
    r->close_arg = arg;
    if (r->cluster) {
        r->state = ST_CLOSING;
        chat_redis_cluster_close(r->cluster, cluster_closed, r);
        return;
    }
    if (r->resolving) {
        chat_redis_resolve_cancel(r->resolving);
        r->resolving = NULL;
    }
    set_state(r, ST_CLOSING, NULL);
    fail_all(r, CHAT_ECLOSED);
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
