/*
 * One PostgreSQL connection's state machine (see conn.h): libpq's
 * non-blocking connect and pipeline mode driven by uv_poll, the connect
 * timeout and reconnect back-off on one timer, the reading of a pipeline's
 * results, and the single close path.
 */
#include "db/conn.h"

#include "core/alloc.h"
#include "core/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS 5000

static const char *const state_names[] = {
    [CHAT_DB_CONN_BACKOFF] = "backoff",       [CHAT_DB_CONN_RESOLVING] = "resolving",
    [CHAT_DB_CONN_CONNECTING] = "connecting", [CHAT_DB_CONN_IDLE] = "idle",
    [CHAT_DB_CONN_SENDING] = "sending",       [CHAT_DB_CONN_READING] = "reading",
    [CHAT_DB_CONN_CLOSED] = "closed",
};

const char *chat_db_conn_state_name(chat_db_conn_state_t s)
{
    return state_names[s];
}

int chat_db_conn_is_up(chat_db_conn_state_t s)
{
    return s == CHAT_DB_CONN_IDLE || s == CHAT_DB_CONN_SENDING || s == CHAT_DB_CONN_READING;
}

int chat_db_conn_is_lent(chat_db_conn_state_t s)
{
    return s == CHAT_DB_CONN_SENDING || s == CHAT_DB_CONN_READING;
}

static int is_connecting(chat_db_conn_state_t s)
{
    return s == CHAT_DB_CONN_RESOLVING || s == CHAT_DB_CONN_CONNECTING;
}

/* The only place a connection changes state; the owner keeps its books in moved. */
static void set_state(chat_db_conn_t *c, chat_db_conn_state_t s)
{
    chat_db_conn_state_t old = c->state;
    if (old == s)
        return;
    c->state = s;
    chat_log_debug("event=db_conn_state path=%s conn=%d from=%s to=%s", c->_cfg->path_name, c->id,
                   state_names[old], state_names[s]);
    c->_cfg->ops->moved(c, old);
}

/* One-line copy of a libpq message for a key="value" log field. */
static void log_text(char *dst, size_t cap, const char *src)
{
    size_t n = 0;
    for (; src && *src && n + 1 < cap; src++)
        dst[n++] = (*src == '"')                                    ? '\''
                   : (*src == '\n' || *src == '\r' || *src == '\t') ? ' '
                                                                    : *src;
    while (n > 0 && dst[n - 1] == ' ')
        n--;
    dst[n] = '\0';
}

static void notice_cb(void *arg, const PGresult *res)
{
    chat_db_conn_t *c = arg;
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    /* 25P01 "no transaction in progress": the COMMIT of chat_db_exec_lsn (walpos.c) */
    if (state && strcmp(state, "25P01") == 0)
        return;
    const char *message = PQresultErrorMessage(res);
    char text[512];
    log_text(text, sizeof text, message ? message : "");
    chat_log_info("event=db_notice path=%s conn=%d message=\"%s\"", c->_cfg->path_name, c->id,
                  text);
}

/* ---- handles and the close path ---- */

/* A handle or request of c is done; the last one after a close calls back. */
static void handle_done(chat_db_conn_t *c)
{
    if (--c->_handles == 0 && c->state == CHAT_DB_CONN_CLOSED && c->_close_cb)
        c->_close_cb(c);
}

static void poll_closed_cb(uv_handle_t *h)
{
    chat_db_conn_t *c = h->data;
    free(h);
    handle_done(c);
}

static void timer_closed_cb(uv_handle_t *h)
{
    handle_done(h->data);
}

static void poll_drop(chat_db_conn_t *c)
{
    if (!c->_poll)
        return;
    uv_close((uv_handle_t *)c->_poll, poll_closed_cb);
    c->_poll = NULL;
    c->_poll_events = 0;
    c->_sock_fd = -1;
}

static void on_poll(uv_poll_t *h, int status, int events);

/*
 * Makes the poll handle follow libpq's socket. During a connect libpq may
 * close its socket and open another (next host, SSL or GSS fallback), maybe
 * under the same number, so the socket is told apart by its inode too.
 */
static int poll_sync(chat_db_conn_t *c)
{
    int fd = PQsocket(c->_pg);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        poll_drop(c);
        return -1;
    }
    if (c->_poll && c->_sock_fd == fd && c->_sock_dev == st.st_dev && c->_sock_ino == st.st_ino)
        return 0;
    poll_drop(c);
    uv_poll_t *h = chat_malloc(sizeof *h);
    if (uv_poll_init(c->_cfg->loop, h, fd) != 0) {
        free(h);
        return -1;
    }
    h->data = c;
    c->_handles++;
    c->_poll = h;
    c->_sock_fd = fd;
    c->_sock_dev = st.st_dev;
    c->_sock_ino = st.st_ino;
    return 0;
}

static int watch(chat_db_conn_t *c, int events)
{
    if (!c->_poll)
        return -1;
    if (events == c->_poll_events)
        return 0;
    int rc = events ? uv_poll_start(c->_poll, events, on_poll) : uv_poll_stop(c->_poll);
    if (rc == 0)
        c->_poll_events = events;
    return rc;
}

static void clear_results(chat_db_conn_t *c)
{
    for (int i = 0; i < CHAT_DB_MAX_STMTS; i++) {
        PQclear(c->_res[i]);
        c->_res[i] = NULL;
    }
    c->_error = NULL;
    c->_expect = 0;
}

/*
 * Abandons a lookup in flight, closes the poll handle (before libpq closes
 * its socket) and the PGconn.
 */
static void conn_drop(chat_db_conn_t *c)
{
    if (c->_resolve) {
        chat_db_resolve_cancel(c->_resolve); /* its callback still comes, and only counts */
        c->_resolve = NULL;
    }
    poll_drop(c);
    PQfinish(c->_pg);
    c->_pg = NULL;
    c->_want_write = 0;
    c->_txn = NULL;
    clear_results(c);
}

/* The end of c: everything dropped, CLOSED, the timer closing. */
static void close_now(chat_db_conn_t *c)
{
    uv_timer_stop(&c->_timer);
    conn_drop(c);
    set_state(c, CHAT_DB_CONN_CLOSED);
    uv_close((uv_handle_t *)&c->_timer, timer_closed_cb);
}

void chat_db_conn_close(chat_db_conn_t *c, void (*cb)(chat_db_conn_t *c))
{
    if (c->_closing)
        return;
    c->_closing = 1;
    c->_close_cb = cb;
    if (!chat_db_conn_is_lent(c->state))
        close_now(c);
}

/* ---- connecting ---- */

static uint64_t rng_next(chat_db_conn_t *c)
{
    uint64_t x = c->_rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return c->_rng = x;
}

static void timer_cb(uv_timer_t *t);

/*
 * Drops the PGconn and schedules the next connect attempt: 100 ms doubling to
 * 5 s, half of it jittered. After a close request, closes instead.
 */
static void backoff(chat_db_conn_t *c)
{
    if (c->_closing) {
        close_now(c);
        return;
    }
    conn_drop(c);
    c->_backoff_ms = c->_backoff_ms ? c->_backoff_ms * 2 : BACKOFF_FIRST_MS;
    if (c->_backoff_ms > BACKOFF_MAX_MS)
        c->_backoff_ms = BACKOFF_MAX_MS;
    uint64_t half = (uint64_t)c->_backoff_ms / 2;
    uint64_t delay = half + rng_next(c) % (half + 1);
    uv_timer_start(&c->_timer, timer_cb, delay, 0);
    set_state(c, CHAT_DB_CONN_BACKOFF);
}

/* A connect attempt failed: back off. why overrides libpq's message in the log. */
static void connect_failed_why(chat_db_conn_t *c, const char *reason, const char *why)
{
    const char *path = c->_cfg->path_name;
    char detail[512];
    log_text(detail, sizeof detail, why ? why : c->_pg ? PQerrorMessage(c->_pg) : "");
    if (c->_failures++ == 0)
        chat_log_warn("event=db_connect_failed path=%s conn=%d reason=%s detail=\"%s\"", path,
                      c->id, reason, detail);
    else
        chat_log_debug("event=db_connect_failed path=%s conn=%d reason=%s attempt=%d detail=\"%s\"",
                       path, c->id, reason, c->_failures, detail);
    uv_timer_stop(&c->_timer);
    c->failed = 1;
    backoff(c);
}

static void connect_failed(chat_db_conn_t *c, const char *reason)
{
    connect_failed_why(c, reason, NULL);
}

static void connected(chat_db_conn_t *c)
{
    uv_timer_stop(&c->_timer);
    if (PQsetnonblocking(c->_pg, 1) != 0 || PQenterPipelineMode(c->_pg) != 1) {
        connect_failed(c, "setup_failed");
        return;
    }
    if (watch(c, UV_READABLE) != 0) {
        connect_failed(c, "poll_failed");
        return;
    }
    if (c->_was_up || c->_failures > 0)
        chat_log_info("event=db_connect path=%s conn=%d recovered=1 failed_attempts=%d",
                      c->_cfg->path_name, c->id, c->_failures);
    else
        chat_log_info("event=db_connect path=%s conn=%d server_version=%d", c->_cfg->path_name,
                      c->id, PQserverVersion(c->_pg));
    c->_failures = 0;
    c->_backoff_ms = 0;
    c->_was_up = 1;
    c->failed = 0;
    set_state(c, CHAT_DB_CONN_IDLE);
}

static void connect_step(chat_db_conn_t *c)
{
    switch (PQconnectPoll(c->_pg)) {
    case PGRES_POLLING_READING:
        if (poll_sync(c) != 0 || watch(c, UV_READABLE) != 0)
            connect_failed(c, "poll_failed");
        break;
    case PGRES_POLLING_WRITING:
        if (poll_sync(c) != 0 || watch(c, UV_WRITABLE) != 0)
            connect_failed(c, "poll_failed");
        break;
    case PGRES_POLLING_OK:
        connected(c);
        break;
    default:
        connect_failed(c, "connect_failed");
        break;
    }
}

/*
 * Starts libpq's non-blocking connect. hosts and addrs, when given, are
 * matching comma-separated lists of the host name and its addresses.
 */
static void connect_start(chat_db_conn_t *c, const char *hosts, const char *addrs)
{
    const char *keys[] = {"dbname", "fallback_application_name", "host", "hostaddr", NULL};
    const char *vals[] = {c->_cfg->conninfo, "chatd", hosts, addrs, NULL};
    if (!addrs)
        keys[2] = NULL;
    set_state(c, CHAT_DB_CONN_CONNECTING);
    c->_pg = PQconnectStartParams(keys, vals, 1);
    if (!c->_pg) {
        chat_log_error("event=db_connect_oom path=%s", c->_cfg->path_name);
        abort();
    }
    PQsetNoticeReceiver(c->_pg, notice_cb, c);
    if (PQstatus(c->_pg) == CONNECTION_BAD) {
        connect_failed(c, "connect_failed");
        return;
    }
    /* Before the first PQconnectPoll, wait as if it had said "writing". */
    if (poll_sync(c) != 0 || watch(c, UV_WRITABLE) != 0)
        connect_failed(c, "poll_failed");
}

static void resolved_cb(int status, const char *hosts, const char *addrs, const char *why,
                        void *arg)
{
    chat_db_conn_t *c = arg;
    if (status != UV_ECANCELED) {
        c->_resolve = NULL;
        if (status == 0)
            connect_start(c, hosts, addrs);
        else
            connect_failed_why(c, "resolve_failed", why);
        c->_cfg->ops->settled(c);
    }
    handle_done(c); /* the last thing: it may end the close */
}

/* Starts a connect attempt: look the host name up first if libpq would block on it. */
static void conn_connect(chat_db_conn_t *c)
{
    const chat_db_conn_config_t *cfg = c->_cfg;
    uv_timer_start(&c->_timer, timer_cb, (uint64_t)cfg->connect_timeout_ms, 0);
    if (!cfg->resolve_host) {
        connect_start(c, NULL, NULL);
        return;
    }
    set_state(c, CHAT_DB_CONN_RESOLVING);
    int rc = chat_db_resolve_start(cfg->loop, cfg->resolve_host, resolved_cb, c, &c->_resolve);
    if (rc != 0) {
        c->_resolve = NULL;
        connect_failed_why(c, "resolve_failed", uv_strerror(rc));
        return;
    }
    c->_handles++;
}

void chat_db_conn_start(chat_db_conn_t *c)
{
    conn_connect(c);
}

void chat_db_conn_retry_now(chat_db_conn_t *c)
{
    if (c->state != CHAT_DB_CONN_BACKOFF || c->_closing || !uv_is_active((uv_handle_t *)&c->_timer))
        return;
    uv_timer_stop(&c->_timer);
    conn_connect(c);
}

/* ---- a lent transaction ---- */

/*
 * The connection broke while up: log it and back off (or close, if asked);
 * a transaction on it is over, and the owner hears whether it had been sent.
 */
static void conn_broken(chat_db_conn_t *c, const char *reason)
{
    char detail[512];
    log_text(detail, sizeof detail, c->_pg ? PQerrorMessage(c->_pg) : "");
    const chat_db_txn_t *txn = c->_txn;
    int sent = c->state == CHAT_DB_CONN_READING;
    chat_log_warn("event=db_disconnect path=%s conn=%d reason=%s in_tx=%d detail=\"%s\"",
                  c->_cfg->path_name, c->id, reason, txn != NULL, detail);
    c->_backoff_ms = 0;
    backoff(c);
    if (txn)
        c->_cfg->ops->finished(c, CHAT_ECONNLOST, NULL, NULL, sent, detail);
}

/* The Sync result arrived: hand the results over, then idle (or close, if asked). */
static void pipeline_done(chat_db_conn_t *c)
{
    PGresult *res[CHAT_DB_MAX_STMTS];
    memcpy(res, c->_res, sizeof res);
    PGresult *error = c->_error;
    memset(c->_res, 0, sizeof c->_res);
    c->_error = NULL;
    c->_expect = 0;
    c->_txn = NULL;
    if (c->_closing)
        close_now(c);
    else
        set_state(c, CHAT_DB_CONN_IDLE);
    c->_cfg->ops->finished(c, CHAT_EOK, res, error, 1, NULL);
}

/* Sends the pipeline: every statement, then one Sync. */
static int send_pipeline(chat_db_conn_t *c, const chat_db_txn_t *txn)
{
    for (int i = 0; i < txn->n; i++) {
        const chat_db_stmt_t *s = &txn->stmts[i];
        if (!PQsendQueryParams(c->_pg, s->sql, s->nparams, NULL, s->params, NULL, NULL, 0))
            return -1;
    }
    if (!PQpipelineSync(c->_pg))
        return -1;
    int rc = PQflush(c->_pg);
    if (rc < 0)
        return -1;
    c->_want_write = rc == 1;
    if (!c->_want_write)
        set_state(c, CHAT_DB_CONN_READING);
    return watch(c, UV_READABLE | (c->_want_write ? UV_WRITABLE : 0));
}

void chat_db_conn_send(chat_db_conn_t *c, const chat_db_txn_t *txn)
{
    c->_txn = txn;
    c->_expect = 0;
    set_state(c, CHAT_DB_CONN_SENDING);
    if (send_pipeline(c, txn) != 0)
        conn_broken(c, "send_failed");
}

/* SQLSTATEs that mean the session is over: connection exceptions, admin shutdown. */
static int fatal_sqlstate(const PGresult *r)
{
    const char *s = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    return s && (strncmp(s, "08", 2) == 0 || strncmp(s, "57P", 3) == 0);
}

/*
 * Reads whatever results libpq has parsed. Returns 1 when the Sync result of
 * the transaction arrived, 0 when more input is needed, -1 when the
 * connection is unusable (*reason says why).
 */
static int read_results(chat_db_conn_t *c, const char **reason)
{
    *reason = "server_closed";
    int n = c->_txn->n;
    for (;;) {
        if (PQisBusy(c->_pg))
            return 0;
        PGresult *r = PQgetResult(c->_pg);
        if (PQstatus(c->_pg) == CONNECTION_BAD) {
            PQclear(r);
            return -1;
        }
        if (!r) {
            /* NULL ends one statement's results; anything else is "not yet". */
            if (c->_expect < n && c->_res[c->_expect]) {
                c->_expect++;
                continue;
            }
            return 0;
        }
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            *reason = "protocol";
            return c->_expect == n ? 1 : -1;
        }
        if (c->_expect >= n || c->_res[c->_expect]) {
            PQclear(r); /* never expected: a statement yields one result */
            continue;
        }
        c->_res[c->_expect] = r;
        if ((st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE) && !c->_error) {
            if (fatal_sqlstate(r)) {
                *reason = "server_terminated";
                return -1;
            }
            c->_error = r;
        }
    }
}

static void lent_event(chat_db_conn_t *c, int events)
{
    if ((events & UV_READABLE) && !PQconsumeInput(c->_pg)) {
        conn_broken(c, "read_failed");
        return;
    }
    if (c->_want_write) {
        int rc = PQflush(c->_pg);
        if (rc < 0) {
            conn_broken(c, "write_failed");
            return;
        }
        c->_want_write = rc == 1;
        if (!c->_want_write)
            set_state(c, CHAT_DB_CONN_READING);
    }
    const char *reason;
    int rc = read_results(c, &reason);
    if (rc < 0) {
        conn_broken(c, reason);
        return;
    }
    if (rc == 1) {
        pipeline_done(c);
        return;
    }
    if (watch(c, UV_READABLE | (c->_want_write ? UV_WRITABLE : 0)) != 0)
        conn_broken(c, "poll_failed");
}

/*
 * libuv stopped the handle on a socket error (POLLERR: a refused connect, a
 * reset). Let libpq read the error so the log says why.
 */
static void poll_error(chat_db_conn_t *c, const uv_poll_t *h)
{
    c->_poll_events = 0;
    if (c->state == CHAT_DB_CONN_CONNECTING) {
        connect_step(c);
        /* libpq neither failed nor moved to another socket (next host): give up. */
        if (c->state == CHAT_DB_CONN_CONNECTING && c->_poll == h)
            connect_failed(c, "poll_error");
    } else if (chat_db_conn_is_up(c->state)) {
        (void)PQconsumeInput(c->_pg);
        conn_broken(c, "poll_error");
    }
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    chat_db_conn_t *c = h->data;
    if (status < 0) {
        poll_error(c, h);
    } else {
        switch (c->state) {
        case CHAT_DB_CONN_CONNECTING:
            connect_step(c);
            break;
        case CHAT_DB_CONN_IDLE:
            /*
             * Nothing is expected: the server is going away (its FATAL message
             * is parsed by PQisBusy and logged as a notice) or sent a
             * ParameterStatus.
             */
            if (!PQconsumeInput(c->_pg)) {
                conn_broken(c, "server_closed");
                break;
            }
            (void)PQisBusy(c->_pg);
            if (PQstatus(c->_pg) == CONNECTION_BAD)
                conn_broken(c, "server_closed");
            break;
        case CHAT_DB_CONN_SENDING:
        case CHAT_DB_CONN_READING:
            lent_event(c, events);
            break;
        case CHAT_DB_CONN_BACKOFF:
        case CHAT_DB_CONN_RESOLVING:
        case CHAT_DB_CONN_CLOSED:
            break;
        }
    }
    c->_cfg->ops->settled(c);
}

static void timer_cb(uv_timer_t *t)
{
    chat_db_conn_t *c = t->data;
    if (is_connecting(c->state)) {
        char why[64];
        snprintf(why, sizeof why, "no answer within %d ms", c->_cfg->connect_timeout_ms);
        connect_failed_why(c, "connect_timeout", why);
    } else if (c->state == CHAT_DB_CONN_BACKOFF) {
        conn_connect(c);
    }
    c->_cfg->ops->settled(c);
}

void chat_db_conn_init(chat_db_conn_t *c, const chat_db_conn_config_t *cfg, int id, void *data)
{
    memset(c, 0, sizeof *c);
    c->id = id;
    c->data = data;
    c->state = CHAT_DB_CONN_BACKOFF; /* "no PGconn yet" until the first connect starts */
    chat_list_init(&c->link);
    c->_cfg = cfg;
    c->_sock_fd = -1;
    c->_rng = (uv_hrtime() ^ (uint64_t)(uintptr_t)c) | 1;
    uv_timer_init(cfg->loop, &c->_timer);
    c->_timer.data = c;
    c->_handles = 1;
}
