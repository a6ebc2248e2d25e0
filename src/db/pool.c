/*
 * Pool of non-blocking PostgreSQL connections lent one transaction at a time
 * (see pool.h). Each connection is a small state machine driven by uv_poll on
 * its libpq socket; transactions wait in a FIFO queue with a deadline and are
 * sent as one libpq pipeline ending in a single Sync.
 */
#include "db/pool.h"
#include "core/alloc.h"
#include "core/log.h"
#include "core/metrics.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS 5000
#define NO_DEADLINE UINT64_MAX
#define MAX_ADDRS 8

typedef struct conn conn_t;
typedef struct tx tx_t;
typedef struct resolve resolve_t;

/*
 * Who holds a connection in each state:
 *   CONNECTING  the resolver, then libpq (PQconnectPoll), with the
 *               connect-timeout timer armed over both;
 *   IDLE        the pool's idle list, waiting to be lent;
 *   BUSY        one transaction (c->tx), until its Sync result is read;
 *   BACKOFF     the back-off timer: no PGconn, a reconnect is scheduled;
 *   CLOSED      nobody: the pool is closing.
 */
enum conn_state { CONN_CONNECTING, CONN_IDLE, CONN_BUSY, CONN_BACKOFF, CONN_CLOSED };

static const char *const conn_state_names[] = {"connecting", "idle", "busy", "backoff", "closed"};

/*
 * Who holds a transaction in each state:
 *   QUEUED   the pool's wait queue (deadline armed);
 *   SENDING  a connection, part of the pipeline still in libpq's output buffer
 *            (the Sync has not left: the server cannot have committed it);
 *   SENT     a connection, the whole pipeline flushed, results being read;
 *   DONE     the completion path: its callback runs (maybe deferred), then free.
 */
enum tx_state { TX_QUEUED, TX_SENDING, TX_SENT, TX_DONE };

typedef struct tx_stmt {
    const char *sql;
    int nparams;
    const char *const *params; /* points into the tx's own allocation */
} tx_stmt_t;

struct tx {
    tx_t *prev, *next; /* links in the wait queue or the deferred list */
    enum tx_state state;
    int flags;
    int retries;  /* times re-queued after its connection broke (at most 1) */
    int observed; /* queue wait already recorded in the histogram */
    int n;        /* statements */
    int expect;   /* statement whose results are being read; n = the Sync */
    chat_db_cb cb;
    void *arg;
    uint64_t deadline; /* uv_now() ms after which a queued tx times out */
    uint64_t enq_ns;   /* uv_hrtime() when it last entered the queue */
    double queue_wait; /* seconds spent queued so far */
    int status;
    const char *message; /* for failures that are not a PGresult */
    char *message_owned; /* freed with the tx */
    PGresult *error;     /* first failing result (also in res[]) */
    PGresult *res[CHAT_DB_MAX_STMTS];
    tx_stmt_t stmts[]; /* followed by the copied params */
};

/* Intrusive doubly linked FIFO of transactions, kept in deadline order. */
typedef struct chat_db_queue {
    tx_t *head, *tail;
    int count;
} chat_db_queue_t;

struct conn {
    chat_db_pool_t *pool;
    int id;
    enum conn_state state;
    conn_t *idle_next, *idle_prev; /* idle list links, while IDLE */
    PGconn *pg;
    uv_poll_t *poll; /* heap: a new one per socket; freed in its close callback */
    int poll_events;
    int sock_fd; /* the socket poll watches, identified by inode too */
    dev_t sock_dev;
    ino_t sock_ino;
    int want_write;     /* PQflush left data to send */
    resolve_t *resolve; /* host name lookup in flight, while CONNECTING */
    uv_timer_t timer;   /* connect timeout (CONNECTING) or back-off (BACKOFF) */
    tx_t *tx;           /* while BUSY */
    int backoff_ms;
    int failed;   /* the last connect attempt failed */
    int failures; /* failed attempts since the last success */
    int was_up;   /* connected before: the next success is a recovery */
};

/*
 * A host name lookup on libuv's thread pool. libpq would call getaddrinfo()
 * itself, blocking the loop; we resolve first and hand it hostaddr. If the
 * connect gives up first, c is cleared and the answer is dropped.
 */
struct resolve {
    uv_getaddrinfo_t req;
    conn_t *c;
    chat_db_pool_t *pool;
};

struct chat_db_pool {
    uv_loop_t *loop;
    char *conninfo;
    char *resolve_host; /* the host name to look up before connecting, or NULL */
    char *path_name;
    int size;
    int queue_timeout_ms;
    int connect_timeout_ms;
    conn_t *conns;
    conn_t *idle;          /* idle list head (LIFO keeps few server connections hot) */
    chat_db_queue_t queue; /* waiters */
    chat_db_queue_t done;  /* completions deferred to the idle handle */
    uv_timer_t qtimer;     /* armed for the queue head's deadline */
    uint64_t qtimer_due;
    uv_idle_t defer; /* delivers deferred completions */
    int handles;     /* open uv handles and requests; freed at 0 after close */
    int api_depth;   /* > 0 inside a public call: callbacks are deferred */
    int nup, nbusy, nfailed;
    int last_connect_ok;
    int closing, finishing;
    void (*close_cb)(void *);
    void *close_arg;
    uint64_t rng;
    /* Sends a lent transaction; replaced by unit tests that have no server. */
    int (*start_tx)(conn_t *c, tx_t *tx);
    chat_metric_t *m_size, *m_active, *m_waiting, *m_queries, *m_errors, *m_wait;
};

static const char msg_timeout[] = "timed out waiting for a database connection";
static const char msg_unavailable[] = "no database connection could be made";
static const char msg_lost[] = "the database connection was lost";
static const char msg_shutdown[] = "the database pool is closing";
static const char msg_bad_count[] = "a transaction needs 1 to 16 statements";

static void conn_connect(conn_t *c);
static void dispatch(chat_db_pool_t *pool);
static void maybe_finish_close(chat_db_pool_t *pool);

/* ---- the wait queue: plain functions, no loop or server needed ---- */

static void queue_push(chat_db_queue_t *q, tx_t *tx)
{
    tx->next = NULL;
    tx->prev = q->tail;
    if (q->tail)
        q->tail->next = tx;
    else
        q->head = tx;
    q->tail = tx;
    q->count++;
}

static void queue_insert_before(chat_db_queue_t *q, tx_t *at, tx_t *tx)
{
    if (!at) {
        queue_push(q, tx);
        return;
    }
    tx->next = at;
    tx->prev = at->prev;
    if (at->prev)
        at->prev->next = tx;
    else
        q->head = tx;
    at->prev = tx;
    q->count++;
}

/*
 * Puts a retried transaction back at the front, behind only older retries
 * (earlier deadlines), so the head always has the earliest deadline.
 */
static void queue_push_retry(chat_db_queue_t *q, tx_t *tx)
{
    tx_t *at = q->head;
    while (at && at->deadline < tx->deadline)
        at = at->next;
    queue_insert_before(q, at, tx);
}

static void queue_remove(chat_db_queue_t *q, tx_t *tx)
{
    if (tx->prev)
        tx->prev->next = tx->next;
    else
        q->head = tx->next;
    if (tx->next)
        tx->next->prev = tx->prev;
    else
        q->tail = tx->prev;
    tx->prev = tx->next = NULL;
    q->count--;
}

static tx_t *queue_pop(chat_db_queue_t *q)
{
    tx_t *tx = q->head;
    if (tx)
        queue_remove(q, tx);
    return tx;
}

/* The head if its deadline has passed at now (ms), else NULL. */
static tx_t *queue_pop_expired(chat_db_queue_t *q, uint64_t now)
{
    tx_t *tx = q->head;
    if (!tx || tx->deadline == NO_DEADLINE || tx->deadline > now)
        return NULL;
    queue_remove(q, tx);
    return tx;
}

/* ---- transactions ---- */

static tx_t *tx_new(const chat_db_stmt_t *stmts, int n, int flags, chat_db_cb cb, void *arg)
{
    size_t nptr = 0, nbytes = 0;
    for (int i = 0; i < n; i++) {
        nptr += (size_t)stmts[i].nparams;
        for (int j = 0; j < stmts[i].nparams; j++)
            if (stmts[i].params[j])
                nbytes += strlen(stmts[i].params[j]) + 1;
    }
    size_t size = sizeof(tx_t) + (size_t)n * sizeof(tx_stmt_t) + nptr * sizeof(char *) + nbytes;
    tx_t *tx = chat_calloc(1, size);
    const char **ptrs = (const char **)(void *)&tx->stmts[n];
    char *bytes = (char *)(ptrs + nptr);
    for (int i = 0; i < n; i++) {
        tx->stmts[i].sql = stmts[i].sql;
        tx->stmts[i].nparams = stmts[i].nparams;
        tx->stmts[i].params = ptrs;
        for (int j = 0; j < stmts[i].nparams; j++) {
            const char *p = stmts[i].params[j];
            if (p) {
                size_t len = strlen(p) + 1;
                memcpy(bytes, p, len);
                *ptrs = bytes;
                bytes += len;
            } else {
                *ptrs = NULL;
            }
            ptrs++;
        }
    }
    tx->n = n;
    tx->flags = flags;
    tx->cb = cb;
    tx->arg = arg;
    tx->state = TX_QUEUED;
    return tx;
}

static void tx_clear_results(tx_t *tx)
{
    for (int i = 0; i < tx->n; i++) {
        PQclear(tx->res[i]);
        tx->res[i] = NULL;
    }
    tx->error = NULL;
    tx->expect = 0;
}

static void tx_set_message(tx_t *tx, const char *static_msg, const char *detail)
{
    free(tx->message_owned);
    tx->message_owned = NULL;
    tx->message = static_msg;
    if (detail && *detail) {
        size_t len = strlen(static_msg) + strlen(detail) + 3;
        tx->message_owned = chat_malloc(len);
        snprintf(tx->message_owned, len, "%s: %s", static_msg, detail);
        /* libpq messages end in a newline; logs want one line. */
        for (char *p = tx->message_owned; *p; p++)
            if (*p == '\n' || *p == '\r')
                *p = ' ';
        size_t l = strlen(tx->message_owned);
        while (l > 0 && tx->message_owned[l - 1] == ' ')
            tx->message_owned[--l] = '\0';
        tx->message = tx->message_owned;
    }
}

/* Calls the callback, then clears the results and frees the transaction. */
static void tx_deliver(tx_t *tx)
{
    chat_db_result_t r = {.status = tx->status, .queue_wait = tx->queue_wait};
    if (tx->status == CHAT_DB_OK) {
        r.res = tx->res;
        r.nres = tx->n;
    } else if (tx->status == CHAT_DB_ERR_QUERY && tx->error) {
        r.sqlstate = PQresultErrorField(tx->error, PG_DIAG_SQLSTATE);
        r.message = PQresultErrorField(tx->error, PG_DIAG_MESSAGE_PRIMARY);
        if (!r.message)
            r.message = PQresultErrorMessage(tx->error);
    } else {
        r.message = tx->message;
    }
    tx->cb(&r, tx->arg);
    tx_clear_results(tx);
    free(tx->message_owned);
    free(tx);
}

static void defer_cb(uv_idle_t *h);

/*
 * Ends a transaction with status. The callback runs now, or from the idle
 * handle when we are inside a public call (exec, close), which must never
 * call back.
 */
static void tx_complete(chat_db_pool_t *pool, tx_t *tx, int status, const char *msg,
                        const char *detail)
{
    tx->state = TX_DONE;
    tx->status = status;
    if (msg)
        tx_set_message(tx, msg, detail);
    if (status == CHAT_DB_ERR_QUERY || status == CHAT_DB_ERR_TIMEOUT ||
        status == CHAT_DB_ERR_UNAVAILABLE)
        chat_metric_inc(pool->m_errors);
    if (pool->api_depth > 0) {
        queue_push(&pool->done, tx);
        uv_idle_start(&pool->defer, defer_cb);
        return;
    }
    tx_deliver(tx);
}

static void defer_cb(uv_idle_t *h)
{
    chat_db_pool_t *pool = h->data;
    uv_idle_stop(h);
    tx_t *tx;
    while ((tx = queue_pop(&pool->done)))
        tx_deliver(tx);
    maybe_finish_close(pool);
}

/* ---- the pool's queue, with metrics and the deadline timer ---- */

static void qtimer_cb(uv_timer_t *t);

static void arm_qtimer(chat_db_pool_t *pool)
{
    tx_t *head = pool->queue.head;
    if (!head) {
        uv_timer_stop(&pool->qtimer);
        return;
    }
    if (head->deadline == NO_DEADLINE)
        return;
    if (uv_is_active((uv_handle_t *)&pool->qtimer) && pool->qtimer_due <= head->deadline)
        return; /* fires early at worst, then re-arms */
    uint64_t now = uv_now(pool->loop);
    pool->qtimer_due = head->deadline;
    uv_timer_start(&pool->qtimer, qtimer_cb, head->deadline > now ? head->deadline - now : 0, 0);
}

static void enqueue(chat_db_pool_t *pool, tx_t *tx, int retry)
{
    tx->state = TX_QUEUED;
    tx->enq_ns = uv_hrtime();
    if (retry)
        queue_push_retry(&pool->queue, tx);
    else
        queue_push(&pool->queue, tx);
    chat_metric_add(pool->m_waiting, 1);
    arm_qtimer(pool);
}

/*
 * Accounts for tx having been taken off the queue; observe says whether its
 * wait counts in the histogram (not for waits cut short by shutdown).
 */
static void left_queue(chat_db_pool_t *pool, tx_t *tx, int observe)
{
    chat_metric_add(pool->m_waiting, -1);
    tx->queue_wait += (double)(uv_hrtime() - tx->enq_ns) / 1e9;
    if (observe && !tx->observed) {
        tx->observed = 1;
        chat_metric_observe(pool->m_wait, tx->queue_wait);
    }
}

static void qtimer_cb(uv_timer_t *t)
{
    chat_db_pool_t *pool = t->data;
    uint64_t now = uv_now(pool->loop);
    tx_t *tx;
    while ((tx = queue_pop_expired(&pool->queue, now))) {
        left_queue(pool, tx, 1);
        tx_complete(pool, tx, CHAT_DB_ERR_TIMEOUT, msg_timeout, NULL);
    }
    arm_qtimer(pool);
}

/* Fails every waiter with status (fast failure when no connection can be made). */
static void fail_queue(chat_db_pool_t *pool, int status, const char *msg, int observe)
{
    tx_t *tx;
    while ((tx = queue_pop(&pool->queue))) {
        left_queue(pool, tx, observe);
        tx_complete(pool, tx, status, msg, NULL);
    }
    uv_timer_stop(&pool->qtimer);
}

/* ---- connection states ---- */

static int is_up(enum conn_state s)
{
    return s == CONN_IDLE || s == CONN_BUSY;
}

/* The only place a connection changes state; keeps the lists and counts true. */
static void set_state(conn_t *c, enum conn_state s)
{
    chat_db_pool_t *pool = c->pool;
    enum conn_state old = c->state;
    if (old == s)
        return;
    if (old == CONN_IDLE) {
        if (c->idle_prev)
            c->idle_prev->idle_next = c->idle_next;
        else
            pool->idle = c->idle_next;
        if (c->idle_next)
            c->idle_next->idle_prev = c->idle_prev;
        c->idle_next = c->idle_prev = NULL;
    }
    if (old == CONN_BUSY) {
        pool->nbusy--;
        chat_metric_add(pool->m_active, -1);
    }
    if (is_up(old) && !is_up(s))
        pool->nup--;
    if (!is_up(old) && is_up(s))
        pool->nup++;
    if (s == CONN_IDLE) {
        c->idle_prev = NULL;
        c->idle_next = pool->idle;
        if (pool->idle)
            pool->idle->idle_prev = c;
        pool->idle = c;
    }
    if (s == CONN_BUSY) {
        pool->nbusy++;
        chat_metric_add(pool->m_active, 1);
    }
    c->state = s;
    chat_log_debug("event=db_conn_state path=%s conn=%d from=%s to=%s", pool->path_name, c->id,
                   conn_state_names[old], conn_state_names[s]);
}

static void set_failed(conn_t *c, int failed)
{
    if (c->failed != failed)
        c->pool->nfailed += failed ? 1 : -1;
    c->failed = failed;
}

/* Every connection's last connect attempt failed and none is up. */
static int all_failed(const chat_db_pool_t *pool)
{
    return pool->nup == 0 && pool->nfailed == pool->size;
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

static void notice_cb(void *arg, const char *message)
{
    conn_t *c = arg;
    char text[512];
    log_text(text, sizeof text, message);
    chat_log_info("event=db_notice path=%s conn=%d message=\"%s\"", c->pool->path_name, c->id,
                  text);
}

/* ---- sockets ---- */

static void on_poll(uv_poll_t *h, int status, int events);

/* A handle of the pool finished closing: the last one frees the pool. */
static void handle_released(chat_db_pool_t *pool)
{
    if (--pool->handles > 0 || !pool->finishing)
        return;
    void (*cb)(void *) = pool->close_cb;
    void *arg = pool->close_arg;
    free(pool->conns);
    free(pool->conninfo);
    free(pool->resolve_host);
    free(pool->path_name);
    free(pool);
    if (cb)
        cb(arg);
}

static void poll_closed_cb(uv_handle_t *h)
{
    chat_db_pool_t *pool = ((conn_t *)h->data)->pool;
    free(h);
    handle_released(pool);
}

static void poll_drop(conn_t *c)
{
    if (!c->poll)
        return;
    uv_close((uv_handle_t *)c->poll, poll_closed_cb);
    c->poll = NULL;
    c->poll_events = 0;
    c->sock_fd = -1;
}

/*
 * Makes the poll handle follow libpq's socket. During a connect libpq may
 * close its socket and open another (next host, SSL or GSS fallback), maybe
 * under the same number, so the socket is told apart by its inode too.
 */
static int poll_sync(conn_t *c)
{
    int fd = PQsocket(c->pg);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        poll_drop(c);
        return -1;
    }
    if (c->poll && c->sock_fd == fd && c->sock_dev == st.st_dev && c->sock_ino == st.st_ino)
        return 0;
    poll_drop(c);
    uv_poll_t *h = chat_malloc(sizeof *h);
    if (uv_poll_init(c->pool->loop, h, fd) != 0) {
        free(h);
        return -1;
    }
    h->data = c;
    c->pool->handles++;
    c->poll = h;
    c->sock_fd = fd;
    c->sock_dev = st.st_dev;
    c->sock_ino = st.st_ino;
    return 0;
}

static int watch(conn_t *c, int events)
{
    if (!c->poll)
        return -1;
    if (events == c->poll_events)
        return 0;
    int rc = events ? uv_poll_start(c->poll, events, on_poll) : uv_poll_stop(c->poll);
    if (rc == 0)
        c->poll_events = events;
    return rc;
}

/*
 * Abandons a lookup in flight, closes the poll handle (before libpq closes
 * its socket) and the PGconn.
 */
static void conn_drop(conn_t *c)
{
    if (c->resolve) {
        c->resolve->c = NULL;
        uv_cancel((uv_req_t *)&c->resolve->req);
        c->resolve = NULL;
    }
    poll_drop(c);
    PQfinish(c->pg);
    c->pg = NULL;
    c->want_write = 0;
}

static void conn_close(conn_t *c)
{
    uv_timer_stop(&c->timer);
    conn_drop(c);
    set_state(c, CONN_CLOSED);
}

static uint64_t rng_next(chat_db_pool_t *pool)
{
    uint64_t x = pool->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return pool->rng = x;
}

static void timer_cb(uv_timer_t *t);

/* Schedules the next connect attempt: 100 ms doubling to 5 s, half of it jittered. */
static void conn_backoff(conn_t *c)
{
    chat_db_pool_t *pool = c->pool;
    conn_drop(c);
    if (pool->closing) {
        conn_close(c);
        return;
    }
    c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : BACKOFF_FIRST_MS;
    if (c->backoff_ms > BACKOFF_MAX_MS)
        c->backoff_ms = BACKOFF_MAX_MS;
    uint64_t half = (uint64_t)c->backoff_ms / 2;
    uint64_t delay = half + rng_next(pool) % (half + 1);
    set_state(c, CONN_BACKOFF);
    uv_timer_start(&c->timer, timer_cb, delay, 0);
}

/*
 * A connect attempt failed: back off, and fail waiters fast if nothing is up.
 * why overrides libpq's message in the log.
 */
static void connect_failed_why(conn_t *c, const char *reason, const char *why)
{
    chat_db_pool_t *pool = c->pool;
    char detail[512];
    log_text(detail, sizeof detail, why ? why : c->pg ? PQerrorMessage(c->pg) : "");
    if (c->failures++ == 0)
        chat_log_warn("event=db_connect_failed path=%s conn=%d reason=%s detail=\"%s\"",
                      pool->path_name, c->id, reason, detail);
    else
        chat_log_debug("event=db_connect_failed path=%s conn=%d reason=%s attempt=%d detail=\"%s\"",
                       pool->path_name, c->id, reason, c->failures, detail);
    uv_timer_stop(&c->timer);
    set_failed(c, 1);
    pool->last_connect_ok = 0;
    conn_backoff(c);
    if (all_failed(pool) && pool->queue.count > 0) {
        chat_log_warn("event=db_queue_failed path=%s waiting=%d reason=no_connection",
                      pool->path_name, pool->queue.count);
        fail_queue(pool, CHAT_DB_ERR_UNAVAILABLE, msg_unavailable, 1);
    }
}

static void connect_failed(conn_t *c, const char *reason)
{
    connect_failed_why(c, reason, NULL);
}

static void connected(conn_t *c)
{
    chat_db_pool_t *pool = c->pool;
    uv_timer_stop(&c->timer);
    if (PQsetnonblocking(c->pg, 1) != 0 || PQenterPipelineMode(c->pg) != 1) {
        connect_failed(c, "setup_failed");
        return;
    }
    if (c->was_up || c->failures > 0)
        chat_log_info("event=db_connect path=%s conn=%d recovered=1 failed_attempts=%d",
                      pool->path_name, c->id, c->failures);
    else
        chat_log_info("event=db_connect path=%s conn=%d server_version=%d", pool->path_name, c->id,
                      PQserverVersion(c->pg));
    c->failures = 0;
    c->backoff_ms = 0;
    c->was_up = 1;
    set_failed(c, 0);
    pool->last_connect_ok = 1;
    set_state(c, CONN_IDLE);
    if (pool->closing)
        conn_close(c);
    else if (watch(c, UV_READABLE) != 0)
        connect_failed(c, "poll_failed");
}

/*
 * Starts libpq's non-blocking connect. hosts and addrs, when given, are
 * matching comma-separated lists of the host name and its addresses.
 */
static void connect_start(conn_t *c, const char *hosts, const char *addrs)
{
    chat_db_pool_t *pool = c->pool;
    const char *keys[] = {"dbname", "fallback_application_name", "host", "hostaddr", NULL};
    const char *vals[] = {pool->conninfo, "chatd", hosts, addrs, NULL};
    if (!addrs)
        keys[2] = NULL;
    c->pg = PQconnectStartParams(keys, vals, 1);
    if (!c->pg) {
        chat_log_error("event=db_connect_oom path=%s", pool->path_name);
        abort();
    }
    PQsetNoticeProcessor(c->pg, notice_cb, c);
    if (PQstatus(c->pg) == CONNECTION_BAD) {
        connect_failed(c, "connect_failed");
        return;
    }
    /* Before the first PQconnectPoll, wait as if it had said "writing". */
    if (poll_sync(c) != 0 || watch(c, UV_WRITABLE) != 0)
        connect_failed(c, "poll_failed");
}

static void resolved_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    resolve_t *r = req->data;
    chat_db_pool_t *pool = r->pool;
    conn_t *c = r->c;
    if (c) {
        c->resolve = NULL;
        char addrs[MAX_ADDRS * (INET6_ADDRSTRLEN + 1)] = "";
        size_t hlen = strlen(pool->resolve_host) + 1;
        char *hosts = chat_malloc(MAX_ADDRS * hlen + 1);
        hosts[0] = '\0';
        int n = 0;
        for (struct addrinfo *a = status == 0 ? res : NULL; a && n < MAX_ADDRS; a = a->ai_next) {
            char ip[INET6_ADDRSTRLEN];
            const void *src = a->ai_family == AF_INET
                                  ? (const void *)&((struct sockaddr_in *)a->ai_addr)->sin_addr
                                  : (const void *)&((struct sockaddr_in6 *)a->ai_addr)->sin6_addr;
            if ((a->ai_family != AF_INET && a->ai_family != AF_INET6) ||
                !inet_ntop(a->ai_family, src, ip, sizeof ip))
                continue;
            snprintf(addrs + strlen(addrs), sizeof addrs - strlen(addrs), "%s%s", n ? "," : "", ip);
            snprintf(hosts + strlen(hosts), MAX_ADDRS * hlen + 1 - strlen(hosts), "%s%s",
                     n ? "," : "", pool->resolve_host);
            n++;
        }
        if (n > 0) {
            connect_start(c, hosts, addrs);
        } else {
            char why[300];
            snprintf(why, sizeof why, "could not resolve '%s': %s", pool->resolve_host,
                     status ? uv_strerror(status) : "no address");
            connect_failed_why(c, "resolve_failed", why);
        }
        free(hosts);
        dispatch(pool);
        maybe_finish_close(pool);
    }
    uv_freeaddrinfo(res);
    free(r);
    handle_released(pool); /* the last thing: it may free the pool */
}

/* Starts a connect attempt: look the host name up first if libpq would block on it. */
static void conn_connect(conn_t *c)
{
    chat_db_pool_t *pool = c->pool;
    set_state(c, CONN_CONNECTING);
    uv_timer_start(&c->timer, timer_cb, (uint64_t)pool->connect_timeout_ms, 0);
    if (!pool->resolve_host) {
        connect_start(c, NULL, NULL);
        return;
    }
    resolve_t *r = chat_calloc(1, sizeof *r);
    r->c = c;
    r->pool = pool;
    r->req.data = r;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int rc = uv_getaddrinfo(pool->loop, &r->req, resolved_cb, pool->resolve_host, NULL, &hints);
    if (rc != 0) {
        free(r);
        connect_failed_why(c, "resolve_failed", uv_strerror(rc));
        return;
    }
    pool->handles++;
    c->resolve = r;
}

static void connect_step(conn_t *c)
{
    switch (PQconnectPoll(c->pg)) {
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

/* ---- lending and returning ---- */

/*
 * The connection broke while up: log it, close it, schedule a reconnect, and
 * re-queue its transaction once if that is safe, else fail it.
 */
static void conn_broken(conn_t *c, const char *reason)
{
    chat_db_pool_t *pool = c->pool;
    char detail[512];
    log_text(detail, sizeof detail, c->pg ? PQerrorMessage(c->pg) : "");
    tx_t *tx = c->tx;
    chat_log_warn("event=db_disconnect path=%s conn=%d reason=%s in_tx=%d detail=\"%s\"",
                  pool->path_name, c->id, reason, tx != NULL, detail);
    c->tx = NULL;
    c->backoff_ms = 0;
    conn_backoff(c);
    if (!tx)
        return;
    int safe = tx->state == TX_SENDING || (tx->flags & CHAT_DB_RETRY_SENT);
    tx_clear_results(tx);
    /*
     * A retry keeps its first deadline: it goes to the front and is usually
     * lent at once; if the pool is saturated it may time out from there.
     */
    if (safe && tx->retries == 0 && !pool->closing) {
        tx->retries++;
        chat_log_info("event=db_tx_retry path=%s conn=%d sent=%d", pool->path_name, c->id,
                      tx->state != TX_SENDING);
        enqueue(pool, tx, 1);
    } else {
        tx_complete(pool, tx,
                    safe && pool->closing ? CHAT_DB_ERR_SHUTDOWN : CHAT_DB_ERR_UNAVAILABLE,
                    msg_lost, detail);
    }
}

/* Sends tx as one pipeline: every statement, then one Sync. */
static int send_tx(conn_t *c, tx_t *tx)
{
    for (int i = 0; i < tx->n; i++) {
        const tx_stmt_t *s = &tx->stmts[i];
        if (!PQsendQueryParams(c->pg, s->sql, s->nparams, NULL, s->params, NULL, NULL, 0))
            return -1;
    }
    if (!PQpipelineSync(c->pg))
        return -1;
    chat_metric_add(c->pool->m_queries, tx->n);
    int rc = PQflush(c->pg);
    if (rc < 0)
        return -1;
    c->want_write = rc == 1;
    if (!c->want_write)
        tx->state = TX_SENT;
    return watch(c, UV_READABLE | (c->want_write ? UV_WRITABLE : 0));
}

static void lend(conn_t *c, tx_t *tx)
{
    chat_db_pool_t *pool = c->pool;
    left_queue(pool, tx, 1);
    tx->state = TX_SENDING;
    tx->expect = 0;
    c->tx = tx;
    set_state(c, CONN_BUSY);
    if (pool->start_tx(c, tx) != 0)
        conn_broken(c, "send_failed");
}

/* Hands queued transactions to idle connections, oldest first. */
static void dispatch(chat_db_pool_t *pool)
{
    while (!pool->closing && pool->queue.head && pool->idle)
        lend(pool->idle, queue_pop(&pool->queue));
    if (!pool->queue.head)
        uv_timer_stop(&pool->qtimer);
}

/* The transaction on c has its Sync result: give c back, then call back. */
static void conn_release(conn_t *c)
{
    chat_db_pool_t *pool = c->pool;
    tx_t *tx = c->tx;
    c->tx = NULL;
    set_state(c, CONN_IDLE);
    if (pool->closing)
        conn_close(c);
    if (tx)
        tx_complete(pool, tx, tx->error ? CHAT_DB_ERR_QUERY : CHAT_DB_OK, NULL, NULL);
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
static int read_results(conn_t *c, const char **reason)
{
    *reason = "server_closed";
    tx_t *tx = c->tx;
    for (;;) {
        if (PQisBusy(c->pg))
            return 0;
        PGresult *r = PQgetResult(c->pg);
        if (PQstatus(c->pg) == CONNECTION_BAD) {
            PQclear(r);
            return -1;
        }
        if (!r) {
            /* NULL ends one statement's results; anything else is "not yet". */
            if (tx->expect < tx->n && tx->res[tx->expect]) {
                tx->expect++;
                continue;
            }
            return 0;
        }
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            *reason = "protocol";
            return tx->expect == tx->n ? 1 : -1;
        }
        if (tx->expect >= tx->n || tx->res[tx->expect]) {
            PQclear(r); /* never expected: a statement yields one result */
            continue;
        }
        tx->res[tx->expect] = r;
        if ((st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE) && !tx->error) {
            if (fatal_sqlstate(r)) {
                *reason = "server_terminated";
                return -1;
            }
            tx->error = r;
        }
    }
}

static void busy_event(conn_t *c, int events)
{
    if ((events & UV_READABLE) && !PQconsumeInput(c->pg)) {
        conn_broken(c, "read_failed");
        return;
    }
    if (c->want_write) {
        int rc = PQflush(c->pg);
        if (rc < 0) {
            conn_broken(c, "write_failed");
            return;
        }
        c->want_write = rc == 1;
        if (!c->want_write && c->tx->state == TX_SENDING)
            c->tx->state = TX_SENT;
    }
    const char *reason;
    int rc = read_results(c, &reason);
    if (rc < 0) {
        conn_broken(c, reason);
        return;
    }
    if (rc == 1) {
        conn_release(c);
        return;
    }
    if (watch(c, UV_READABLE | (c->want_write ? UV_WRITABLE : 0)) != 0)
        conn_broken(c, "poll_failed");
}

/*
 * libuv stopped the handle on a socket error (POLLERR: a refused connect, a
 * reset). Let libpq read the error so the log says why.
 */
static void poll_error(conn_t *c, uv_poll_t *h)
{
    c->poll_events = 0;
    if (c->state == CONN_CONNECTING) {
        connect_step(c);
        /* libpq neither failed nor moved to another socket (next host): give up. */
        if (c->state == CONN_CONNECTING && c->poll == h)
            connect_failed(c, "poll_error");
    } else if (is_up(c->state)) {
        (void)PQconsumeInput(c->pg);
        conn_broken(c, "poll_error");
    }
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    conn_t *c = h->data;
    chat_db_pool_t *pool = c->pool;
    if (status < 0) {
        poll_error(c, h);
    } else {
        switch (c->state) {
        case CONN_CONNECTING:
            connect_step(c);
            break;
        case CONN_IDLE:
            /*
             * Nothing is expected: the server is going away (its FATAL message
             * is parsed by PQisBusy and logged as a notice) or sent a
             * ParameterStatus.
             */
            if (!PQconsumeInput(c->pg)) {
                conn_broken(c, "server_closed");
                break;
            }
            (void)PQisBusy(c->pg);
            if (PQstatus(c->pg) == CONNECTION_BAD)
                conn_broken(c, "server_closed");
            break;
        case CONN_BUSY:
            busy_event(c, events);
            break;
        default:
            break;
        }
    }
    dispatch(pool);
    maybe_finish_close(pool);
}

static void timer_cb(uv_timer_t *t)
{
    conn_t *c = t->data;
    chat_db_pool_t *pool = c->pool;
    if (c->state == CONN_CONNECTING) {
        char why[64];
        snprintf(why, sizeof why, "no answer within %d ms", pool->connect_timeout_ms);
        connect_failed_why(c, "connect_timeout", why);
    } else if (c->state == CONN_BACKOFF)
        conn_connect(c);
    dispatch(pool);
    maybe_finish_close(pool);
}

/* ---- public API ---- */

static void metrics_init(chat_db_pool_t *pool)
{
    /* The default latency buckets plus 120 s, the longest queue deadline we expect. */
    double bounds[64];
    int nbounds = 0;
    for (int i = 0; i < chat_metrics_latency_nbounds && nbounds < 63; i++)
        bounds[nbounds++] = chat_metrics_latency_bounds[i];
    if (bounds[nbounds - 1] < 120)
        bounds[nbounds++] = 120;
    pool->m_size = chat_metric_series(
        chat_metrics_gauge("chatd_db_pool_size", "Database connections configured"), "");
    pool->m_active = chat_metric_series(
        chat_metrics_gauge("chatd_db_pool_active", "Database connections lent to a transaction"),
        "");
    pool->m_waiting = chat_metric_series(
        chat_metrics_gauge("chatd_db_pool_waiting", "Transactions waiting for a connection"), "");
    pool->m_queries = chat_metric_series(
        chat_metrics_counter("chatd_db_queries_total", "Statements sent to the database"), "");
    pool->m_errors = chat_metric_series(
        chat_metrics_counter("chatd_db_errors_total",
                             "Failed transactions: query errors, timeouts, unavailable"),
        "");
    pool->m_wait = chat_metric_series(
        chat_metrics_histogram("chatd_db_tx_queue_wait_seconds",
                               "Time a transaction waited for a connection", bounds, nbounds),
        "");
}

static int is_numeric_addr(const char *s)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

/*
 * The host name libpq would resolve with a blocking getaddrinfo(), or NULL:
 * none for socket directories, numeric addresses, a given hostaddr, or a
 * list of hosts (left to libpq). PGHOST from the environment is not seen.
 */
static char *host_to_resolve(const char *conninfo)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &err);
    PQfreemem(err);
    if (!opts)
        return NULL;
    const char *host = NULL, *hostaddr = NULL;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0)
            hostaddr = o->val;
    }
    char *name = NULL;
    if (host && *host && !(hostaddr && *hostaddr) && host[0] != '/' && host[0] != '@' &&
        !strchr(host, ',') && !is_numeric_addr(host))
        name = chat_strdup(host);
    PQconninfoFree(opts);
    return name;
}

/* Everything but connecting, so unit tests can drive a pool without a server. */
static chat_db_pool_t *pool_new(uv_loop_t *loop, const chat_db_pool_config_t *cfg)
{
    chat_db_pool_t *pool = chat_calloc(1, sizeof *pool);
    pool->loop = loop;
    pool->conninfo = chat_strdup(cfg->conninfo ? cfg->conninfo : "");
    pool->resolve_host = host_to_resolve(pool->conninfo);
    pool->path_name = chat_strdup(cfg->path_name ? cfg->path_name : "db");
    pool->size = cfg->size > 0 ? cfg->size : 1;
    pool->queue_timeout_ms = cfg->queue_timeout_ms;
    pool->connect_timeout_ms = cfg->connect_timeout_ms > 0 ? cfg->connect_timeout_ms : 5000;
    pool->rng = (uv_hrtime() ^ (uint64_t)(uintptr_t)pool) | 1;
    pool->start_tx = send_tx;
    metrics_init(pool);
    chat_metric_add(pool->m_size, pool->size);
    uv_timer_init(loop, &pool->qtimer);
    pool->qtimer.data = pool;
    uv_idle_init(loop, &pool->defer);
    pool->defer.data = pool;
    pool->handles = 2;
    pool->conns = chat_calloc((size_t)pool->size, sizeof *pool->conns);
    for (int i = 0; i < pool->size; i++) {
        conn_t *c = &pool->conns[i];
        c->pool = pool;
        c->id = i;
        c->state = CONN_BACKOFF; /* "no PGconn yet" until the first connect starts */
        c->sock_fd = -1;
        uv_timer_init(loop, &c->timer);
        c->timer.data = c;
        pool->handles++;
    }
    return pool;
}

chat_db_pool_t *chat_db_pool_create(uv_loop_t *loop, const chat_db_pool_config_t *cfg)
{
    chat_db_pool_t *pool = pool_new(loop, cfg);
    pool->api_depth++;
    for (int i = 0; i < pool->size; i++)
        conn_connect(&pool->conns[i]);
    pool->api_depth--;
    return pool;
}

void chat_db_pool_exec(chat_db_pool_t *pool, const chat_db_stmt_t *stmts, int n, int flags,
                       chat_db_cb cb, void *arg)
{
    int bad = n < 1 || n > CHAT_DB_MAX_STMTS;
    tx_t *tx = tx_new(stmts, bad ? 0 : n, flags, cb, arg);
    pool->api_depth++;
    if (bad) {
        tx_complete(pool, tx, CHAT_DB_ERR_QUERY, msg_bad_count, NULL);
    } else if (pool->closing) {
        tx_complete(pool, tx, CHAT_DB_ERR_SHUTDOWN, msg_shutdown, NULL);
    } else if (all_failed(pool)) {
        tx_complete(pool, tx, CHAT_DB_ERR_UNAVAILABLE, msg_unavailable, NULL);
    } else {
        tx->deadline = pool->queue_timeout_ms > 0
                           ? uv_now(pool->loop) + (uint64_t)pool->queue_timeout_ms
                           : NO_DEADLINE;
        enqueue(pool, tx, 0);
        dispatch(pool);
    }
    pool->api_depth--;
}

int chat_db_pool_healthy(const chat_db_pool_t *pool)
{
    return pool->nup > 0 || pool->last_connect_ok;
}

void chat_db_pool_stats(const chat_db_pool_t *pool, chat_db_pool_stats_t *out)
{
    out->size = pool->size;
    out->connected = pool->nup;
    out->active = pool->nbusy;
    out->waiting = pool->queue.count;
}

static void conn_timer_closed_cb(uv_handle_t *h)
{
    handle_released(((conn_t *)h->data)->pool);
}

static void pool_handle_closed_cb(uv_handle_t *h)
{
    handle_released(h->data);
}

/* Once every connection is closed and every callback delivered, close the handles. */
static void maybe_finish_close(chat_db_pool_t *pool)
{
    if (!pool->closing || pool->finishing || pool->done.count > 0)
        return;
    for (int i = 0; i < pool->size; i++)
        if (pool->conns[i].state != CONN_CLOSED)
            return;
    pool->finishing = 1;
    chat_metric_add(pool->m_size, -pool->size);
    for (int i = 0; i < pool->size; i++)
        uv_close((uv_handle_t *)&pool->conns[i].timer, conn_timer_closed_cb);
    uv_close((uv_handle_t *)&pool->qtimer, pool_handle_closed_cb);
    uv_close((uv_handle_t *)&pool->defer, pool_handle_closed_cb);
}

void chat_db_pool_close(chat_db_pool_t *pool, void (*cb)(void *arg), void *arg)
{
    if (pool->closing)
        return;
    pool->closing = 1;
    pool->close_cb = cb;
    pool->close_arg = arg;
    pool->api_depth++;
    chat_log_info("event=db_pool_close path=%s waiting=%d active=%d", pool->path_name,
                  pool->queue.count, pool->nbusy);
    fail_queue(pool, CHAT_DB_ERR_SHUTDOWN, msg_shutdown, 0);
    for (int i = 0; i < pool->size; i++)
        if (pool->conns[i].state != CONN_BUSY)
            conn_close(&pool->conns[i]);
    pool->api_depth--;
    maybe_finish_close(pool);
}
