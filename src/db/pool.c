/*
 * Pool of PostgreSQL connections lent one transaction at a time (see
 * pool.h): the FIFO wait queue with deadlines, lending and returning, the
 * retry-once rule when a connection breaks, deferred callbacks, the pool's
 * metrics and its close. Each connection's own life is in conn.c.
 */
#include "db/pool.h"

#include "core/alloc.h"
#include "core/list.h"
#include "core/log.h"
#include "core/metrics.h"
#include "db/conn.h"
#include "db/resolve.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NO_DEADLINE UINT64_MAX

/*
 * Who holds a request (one transaction given to this pool) in each state:
 *   QUEUED  the pool's wait queue (deadline armed);
 *   LENT    a connection (req->conn), until it reports the transaction over;
 *   DONE    the completion path: its callback runs (maybe deferred), then free.
 */
enum req_state { REQ_QUEUED, REQ_LENT, REQ_DONE };

typedef struct req {
    chat_list_t link; /* in the wait queue or the deferred list */
    enum req_state state;
    const chat_db_txn_t *txn;
    chat_db_txn_t *owned; /* chat_db_pool_exec()'s copy, freed with the request */
    chat_db_conn_t *conn; /* while LENT */
    int retries;          /* times re-queued after its connection broke (at most 1) */
    int observed;         /* queue wait already recorded in the histogram */
    chat_db_cb cb;
    void *arg;
    uint64_t deadline; /* uv_now() ms after which a queued request times out */
    uint64_t enq_ns;   /* uv_hrtime() when it last entered the queue */
    double queue_wait; /* seconds spent queued so far */
    chat_err_t status;
    const char *message; /* for failures that are not a PGresult */
    char *message_owned; /* freed with the request */
    PGresult *error;     /* first failing result (also in res[]) */
    PGresult *res[CHAT_DB_MAX_STMTS];
} req_t;

/* A FIFO of requests on core/list.h, kept in deadline order. */
typedef struct queue {
    chat_list_t head;
    int count;
} queue_t;

struct chat_db_pool {
    uv_loop_t *loop;
    char *conninfo;
    char *resolve_host; /* the host name to look up before connecting, or NULL */
    char *path_name;
    int size;
    int queue_timeout_ms;
    chat_db_conn_config_t conn_cfg; /* shared by every connection */
    chat_db_conn_t *conns;
    req_t **lent;      /* by connection id: the request each lent connection holds */
    chat_list_t idle;  /* idle connections (LIFO keeps few server connections hot) */
    queue_t queue;     /* waiters */
    queue_t done;      /* completions deferred to the idle handle */
    uv_timer_t qtimer; /* armed for the queue head's deadline */
    uint64_t qtimer_due;
    uv_idle_t defer; /* delivers deferred completions */
    int handles;     /* the pool's own open handles (qtimer, defer) */
    int conns_open;  /* connections not yet fully closed */
    int api_depth;   /* > 0 inside a public call: callbacks are deferred */
    int nup, nbusy;
    int last_connect_ok;
    int reconnected; /* a connect just worked: the others waiting out a back-off try now */
    int closing, finishing;
    void (*close_cb)(void *);
    void *close_arg;
    /* Lends a connection; replaced by unit tests that have no server. */
    void (*send)(chat_db_conn_t *c, const chat_db_txn_t *txn);
    chat_metric_t *m_size, *m_active, *m_waiting, *m_queries, *m_errors, *m_wait;
};

static const char msg_timeout[] = "timed out waiting for a database connection";
static const char msg_unavailable[] = "no database connection could be made";
static const char msg_lost[] = "the database connection was lost";
static const char msg_shutdown[] = "the database pool is closing";
static const char msg_bad_count[] = "a transaction needs 1 to 16 statements";

static void dispatch(chat_db_pool_t *pool);
static void maybe_finish_close(chat_db_pool_t *pool);

/* ---- the wait queue: plain functions, no loop or server needed ---- */

static void queue_init(queue_t *q)
{
    chat_list_init(&q->head);
    q->count = 0;
}

static req_t *queue_req(chat_list_t *e)
{
    return e ? CHAT_CONTAINER_OF(e, req_t, link) : NULL;
}

static req_t *queue_head(const queue_t *q)
{
    return queue_req(chat_list_first(&q->head));
}

static void queue_push(queue_t *q, req_t *r)
{
    chat_list_insert_tail(&q->head, &r->link);
    q->count++;
}

/*
 * Puts a retried request back at the front, behind only older retries
 * (earlier deadlines), so the head always has the earliest deadline.
 */
static void queue_push_retry(queue_t *q, req_t *r)
{
    chat_list_t *at = q->head.next;
    while (at != &q->head && queue_req(at)->deadline < r->deadline)
        at = at->next;
    chat_list_insert_tail(at, &r->link); /* before at */
    q->count++;
}

static void queue_remove(queue_t *q, req_t *r)
{
    chat_list_remove(&r->link);
    q->count--;
}

static req_t *queue_pop(queue_t *q)
{
    req_t *r = queue_head(q);
    if (r)
        queue_remove(q, r);
    return r;
}

/* The head if its deadline has passed at now (ms), else NULL. */
static req_t *queue_pop_expired(queue_t *q, uint64_t now)
{
    req_t *r = queue_head(q);
    if (!r || r->deadline == NO_DEADLINE || r->deadline > now)
        return NULL;
    queue_remove(q, r);
    return r;
}

/* ---- requests ---- */

static req_t *req_new(const chat_db_txn_t *txn, chat_db_cb cb, void *arg)
{
    req_t *r = chat_calloc(1, sizeof *r);
    chat_list_init(&r->link);
    r->txn = txn;
    r->cb = cb;
    r->arg = arg;
    r->state = REQ_QUEUED;
    return r;
}

static void req_clear_results(req_t *r)
{
    for (int i = 0; i < CHAT_DB_MAX_STMTS; i++) {
        PQclear(r->res[i]);
        r->res[i] = NULL;
    }
    r->error = NULL;
}

static void req_set_message(req_t *r, const char *static_msg, const char *detail)
{
    free(r->message_owned);
    r->message_owned = NULL;
    r->message = static_msg;
    if (detail && *detail) {
        size_t len = strlen(static_msg) + strlen(detail) + 3;
        r->message_owned = chat_malloc(len);
        snprintf(r->message_owned, len, "%s: %s", static_msg, detail);
        /* libpq messages end in a newline; logs want one line. */
        for (char *p = r->message_owned; *p; p++)
            if (*p == '\n' || *p == '\r')
                *p = ' ';
        size_t l = strlen(r->message_owned);
        while (l > 0 && r->message_owned[l - 1] == ' ')
            r->message_owned[--l] = '\0';
        r->message = r->message_owned;
    }
}

/* Calls the callback, then clears the results and frees the request. */
static void req_deliver(req_t *r)
{
    chat_db_result_t res = {.status = r->status, .queue_wait = r->queue_wait};
    if (r->status == CHAT_EOK) {
        res.res = r->res;
        res.nres = r->txn->n;
    } else if (r->status == CHAT_EREPLY && r->error) {
        res.sqlstate = PQresultErrorField(r->error, PG_DIAG_SQLSTATE);
        res.message = PQresultErrorField(r->error, PG_DIAG_MESSAGE_PRIMARY);
        if (!res.message)
            res.message = PQresultErrorMessage(r->error);
    } else {
        res.message = r->message;
    }
    r->cb(&res, r->arg);
    req_clear_results(r);
    chat_db_txn_destroy(r->owned);
    free(r->message_owned);
    free(r);
}

static void defer_cb(uv_idle_t *h);

/*
 * Ends a request with status. The callback runs now, or from the idle handle
 * when we are inside a public call (send, close), which must never call back.
 */
static void req_complete(chat_db_pool_t *pool, req_t *r, chat_err_t status, const char *msg,
                         const char *detail)
{
    r->state = REQ_DONE;
    r->conn = NULL;
    r->status = status;
    if (msg)
        req_set_message(r, msg, detail);
    if (status != CHAT_EOK && status != CHAT_ECLOSED)
        chat_metric_inc(pool->m_errors);
    if (pool->api_depth > 0) {
        queue_push(&pool->done, r);
        uv_idle_start(&pool->defer, defer_cb);
        return;
    }
    req_deliver(r);
}

static void defer_cb(uv_idle_t *h)
{
    chat_db_pool_t *pool = h->data;
    uv_idle_stop(h);
    req_t *r;
    while ((r = queue_pop(&pool->done)))
        req_deliver(r);
    maybe_finish_close(pool);
}

/* ---- the pool's queue, with metrics and the deadline timer ---- */

static void qtimer_cb(uv_timer_t *t);

static void arm_qtimer(chat_db_pool_t *pool)
{
    req_t *head = queue_head(&pool->queue);
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

static void enqueue(chat_db_pool_t *pool, req_t *r, int retry)
{
    r->state = REQ_QUEUED;
    r->enq_ns = uv_hrtime();
    if (retry)
        queue_push_retry(&pool->queue, r);
    else
        queue_push(&pool->queue, r);
    chat_metric_add(pool->m_waiting, 1);
    arm_qtimer(pool);
}

/*
 * Accounts for r having been taken off the queue; observe says whether its
 * wait counts in the histogram (not for waits cut short by shutdown).
 */
static void left_queue(chat_db_pool_t *pool, req_t *r, int observe)
{
    chat_metric_add(pool->m_waiting, -1);
    r->queue_wait += (double)(uv_hrtime() - r->enq_ns) / 1e9;
    if (observe && !r->observed) {
        r->observed = 1;
        chat_metric_observe(pool->m_wait, r->queue_wait);
    }
}

static void qtimer_cb(uv_timer_t *t)
{
    chat_db_pool_t *pool = t->data;
    uint64_t now = uv_now(pool->loop);
    req_t *r;
    while ((r = queue_pop_expired(&pool->queue, now))) {
        left_queue(pool, r, 1);
        req_complete(pool, r, CHAT_ETIMEDOUT, msg_timeout, NULL);
    }
    arm_qtimer(pool);
}

/* Fails every waiter with status (fast failure when no connection can be made). */
static void fail_queue(chat_db_pool_t *pool, chat_err_t status, const char *msg, int observe)
{
    req_t *r;
    while ((r = queue_pop(&pool->queue))) {
        left_queue(pool, r, observe);
        req_complete(pool, r, status, msg, NULL);
    }
    uv_timer_stop(&pool->qtimer);
}

/* Every connection's last connect attempt failed and none is up. */
static int all_failed(const chat_db_pool_t *pool)
{
    if (pool->nup > 0)
        return 0;
    for (int i = 0; i < pool->size; i++)
        if (!pool->conns[i].failed)
            return 0;
    return 1;
}

/* ---- lending and returning ---- */

static void lend(chat_db_conn_t *c, req_t *r)
{
    chat_db_pool_t *pool = c->data;
    left_queue(pool, r, 1);
    r->state = REQ_LENT;
    r->conn = c;
    pool->lent[c->id] = r;
    chat_metric_add(pool->m_queries, r->txn->n);
    pool->send(c, r->txn);
}

/* Hands queued requests to idle connections, oldest first. */
static void dispatch(chat_db_pool_t *pool)
{
    while (!pool->closing && pool->queue.count > 0 && !chat_list_empty(&pool->idle)) {
        chat_db_conn_t *c = CHAT_CONTAINER_OF(chat_list_first(&pool->idle), chat_db_conn_t, link);
        lend(c, queue_pop(&pool->queue));
    }
    if (pool->queue.count == 0)
        uv_timer_stop(&pool->qtimer);
}

/* conn.c: every state change of a connection; keeps the lists and counts true. */
static void conn_moved(chat_db_conn_t *c, chat_db_conn_state_t from)
{
    chat_db_pool_t *pool = c->data;
    chat_db_conn_state_t to = c->state;
    if (from == CHAT_DB_CONN_IDLE)
        chat_list_remove(&c->link);
    if (chat_db_conn_is_lent(from) && !chat_db_conn_is_lent(to)) {
        pool->nbusy--;
        chat_metric_add(pool->m_active, -1);
    }
    if (!chat_db_conn_is_lent(from) && chat_db_conn_is_lent(to)) {
        pool->nbusy++;
        chat_metric_add(pool->m_active, 1);
    }
    if (chat_db_conn_is_up(from) && !chat_db_conn_is_up(to))
        pool->nup--;
    if (!chat_db_conn_is_up(from) && chat_db_conn_is_up(to))
        pool->nup++;
    if (to == CHAT_DB_CONN_IDLE)
        chat_list_insert_head(&pool->idle, &c->link);
    if (from == CHAT_DB_CONN_CONNECTING && to == CHAT_DB_CONN_IDLE) {
        pool->last_connect_ok = 1;
        pool->reconnected = 1;
    }
    if ((from == CHAT_DB_CONN_CONNECTING || from == CHAT_DB_CONN_RESOLVING) &&
        to == CHAT_DB_CONN_BACKOFF)
        pool->last_connect_ok = 0; /* a connect attempt failed */
}

/*
 * conn.c: the transaction on c is over. On CHAT_ECONNLOST it is re-queued once
 * if that is safe, else it fails.
 */
static void conn_finished(chat_db_conn_t *c, chat_err_t status, PGresult **res, PGresult *error,
                          int sent, const char *detail)
{
    chat_db_pool_t *pool = c->data;
    req_t *r = pool->lent[c->id];
    pool->lent[c->id] = NULL;
    r->conn = NULL;
    if (status == CHAT_EOK) {
        memcpy(r->res, res, sizeof r->res);
        r->error = error;
        req_complete(pool, r, error ? CHAT_EREPLY : CHAT_EOK, NULL, NULL);
        return;
    }
    int safe = !sent || (r->txn->flags & CHAT_DB_RETRY_SENT);
    /*
     * A retry keeps its first deadline: it goes to the front and is usually
     * lent at once; if the pool is saturated it may time out from there.
     */
    if (safe && r->retries == 0 && !pool->closing) {
        r->retries++;
        chat_log_info("event=db_tx_retry path=%s conn=%d sent=%d", pool->path_name, c->id, sent);
        enqueue(pool, r, 1);
    } else {
        req_complete(pool, r, safe && pool->closing ? CHAT_ECLOSED : CHAT_ECONNLOST, msg_lost,
                     detail);
    }
}

/*
 * A connection came up: the others whose last connect failed (the server was
 * down: restarting, crashed, cut off) try again now instead of at the end of
 * a back-off of up to 5 s, so the pool is whole again soon after the server.
 */
static void reconnect_others(chat_db_pool_t *pool)
{
    pool->reconnected = 0;
    if (pool->closing)
        return;
    for (int i = 0; i < pool->size; i++)
        if (pool->conns[i].state == CHAT_DB_CONN_BACKOFF && pool->conns[i].failed)
            chat_db_conn_retry_now(&pool->conns[i]);
}

/* conn.c: the end of an event on c; fail waiters fast if nothing can connect, then lend. */
static void conn_settled(chat_db_conn_t *c)
{
    chat_db_pool_t *pool = c->data;
    if (pool->reconnected)
        reconnect_others(pool);
    if (pool->queue.count > 0 && all_failed(pool)) {
        chat_log_warn("event=db_queue_failed path=%s waiting=%d reason=no_connection",
                      pool->path_name, pool->queue.count);
        fail_queue(pool, CHAT_EDOWN, msg_unavailable, 1);
    }
    dispatch(pool);
    maybe_finish_close(pool);
}

static const chat_db_conn_ops_t conn_ops = {
    .moved = conn_moved,
    .finished = conn_finished,
    .settled = conn_settled,
};

/* ---- metrics ---- */

static void metrics_init(chat_db_pool_t *pool)
{
    /* The default latency buckets plus 120 s, the longest queue deadline we expect. */
    double bounds[64];
    int nbounds = 0;
    for (int i = 0; i < chat_metrics_latency_nbounds && nbounds < 63; i++)
        bounds[nbounds++] = chat_metrics_latency_bounds[i];
    if (nbounds == 0 || bounds[nbounds - 1] < 120)
        bounds[nbounds++] = 120;
    pool->m_size = chat_metric_gauge("chatd_db_pool_size", "Database connections configured");
    pool->m_active =
        chat_metric_gauge("chatd_db_pool_active", "Database connections lent to a transaction");
    pool->m_waiting =
        chat_metric_gauge("chatd_db_pool_waiting", "Transactions waiting for a connection");
    pool->m_queries =
        chat_metric_counter("chatd_db_queries_total", "Statements sent to the database");
    pool->m_errors = chat_metric_counter(
        "chatd_db_errors_total", "Failed transactions: query errors, timeouts, unavailable");
    pool->m_wait = chat_metric_series(
        chat_metrics_histogram("chatd_db_tx_queue_wait_seconds",
                               "Time a transaction waited for a connection", bounds, nbounds),
        "");
}

/* ---- life of the pool ---- */

/* A handle of the pool or one of its connections finished closing: the last frees the pool. */
static void released(chat_db_pool_t *pool)
{
    if (pool->handles > 0 || pool->conns_open > 0 || !pool->finishing)
        return;
    void (*cb)(void *) = pool->close_cb;
    void *arg = pool->close_arg;
    free(pool->conns);
    free(pool->lent);
    free(pool->conninfo);
    free(pool->resolve_host);
    free(pool->path_name);
    free(pool);
    if (cb)
        cb(arg);
}

static void conn_closed_cb(chat_db_conn_t *c)
{
    chat_db_pool_t *pool = c->data;
    pool->conns_open--;
    released(pool);
}

static void pool_handle_closed_cb(uv_handle_t *h)
{
    chat_db_pool_t *pool = h->data;
    pool->handles--;
    released(pool);
}

/* Once every connection is closed and every callback delivered, close the pool's handles. */
static void maybe_finish_close(chat_db_pool_t *pool)
{
    if (!pool->closing || pool->finishing || pool->done.count > 0)
        return;
    for (int i = 0; i < pool->size; i++)
        if (pool->conns[i].state != CHAT_DB_CONN_CLOSED)
            return;
    pool->finishing = 1;
    chat_metric_add(pool->m_size, -pool->size);
    uv_close((uv_handle_t *)&pool->qtimer, pool_handle_closed_cb);
    uv_close((uv_handle_t *)&pool->defer, pool_handle_closed_cb);
}

/* Everything but connecting, so unit tests can drive a pool without a server. */
static chat_db_pool_t *pool_new(uv_loop_t *loop, const chat_db_pool_config_t *cfg)
{
    chat_db_pool_t *pool = chat_calloc(1, sizeof *pool);
    pool->loop = loop;
    pool->conninfo = chat_strdup(cfg->conninfo ? cfg->conninfo : "");
    pool->resolve_host = chat_db_resolve_host(pool->conninfo);
    pool->path_name = chat_strdup(cfg->path_name ? cfg->path_name : "db");
    pool->size = cfg->size > 0 ? cfg->size : 1;
    pool->queue_timeout_ms = cfg->queue_timeout_ms;
    pool->conn_cfg = (chat_db_conn_config_t){
        .loop = loop,
        .conninfo = pool->conninfo,
        .resolve_host = pool->resolve_host,
        .path_name = pool->path_name,
        .connect_timeout_ms = cfg->connect_timeout_ms > 0 ? cfg->connect_timeout_ms : 5000,
        .ops = &conn_ops,
    };
    pool->send = chat_db_conn_send;
    chat_list_init(&pool->idle);
    queue_init(&pool->queue);
    queue_init(&pool->done);
    metrics_init(pool);
    chat_metric_add(pool->m_size, pool->size);
    uv_timer_init(loop, &pool->qtimer);
    pool->qtimer.data = pool;
    uv_idle_init(loop, &pool->defer);
    pool->defer.data = pool;
    pool->handles = 2;
    pool->conns = chat_calloc((size_t)pool->size, sizeof *pool->conns);
    pool->lent = chat_calloc((size_t)pool->size, sizeof *pool->lent);
    for (int i = 0; i < pool->size; i++)
        chat_db_conn_init(&pool->conns[i], &pool->conn_cfg, i, pool);
    pool->conns_open = pool->size;
    return pool;
}

chat_db_pool_t *chat_db_pool_create(uv_loop_t *loop, const chat_db_pool_config_t *cfg)
{
    chat_db_pool_t *pool = pool_new(loop, cfg);
    pool->api_depth++;
    for (int i = 0; i < pool->size; i++)
        chat_db_conn_start(&pool->conns[i]);
    pool->api_depth--;
    return pool;
}

/* Queues txn; owned, when given, is freed with the request. */
static void submit(chat_db_pool_t *pool, const chat_db_txn_t *txn, chat_db_txn_t *owned,
                   chat_db_cb cb, void *arg)
{
    req_t *r = req_new(txn, cb, arg);
    r->owned = owned;
    pool->api_depth++;
    if (!chat_db_txn_valid(txn)) {
        req_complete(pool, r, CHAT_EINVAL, msg_bad_count, NULL);
    } else if (pool->closing) {
        req_complete(pool, r, CHAT_ECLOSED, msg_shutdown, NULL);
    } else if (all_failed(pool)) {
        req_complete(pool, r, CHAT_EDOWN, msg_unavailable, NULL);
    } else {
        r->deadline = pool->queue_timeout_ms > 0
                          ? uv_now(pool->loop) + (uint64_t)pool->queue_timeout_ms
                          : NO_DEADLINE;
        enqueue(pool, r, 0);
        dispatch(pool);
    }
    pool->api_depth--;
}

void chat_db_pool_exec(chat_db_pool_t *pool, const chat_db_stmt_t *stmts, int n, int flags,
                       chat_db_cb cb, void *arg)
{
    chat_db_txn_t *txn = chat_db_txn_create(stmts, n, flags);
    submit(pool, txn, txn, cb, arg);
}

void chat_db_pool_send(chat_db_pool_t *pool, const chat_db_txn_t *txn, chat_db_cb cb, void *arg)
{
    submit(pool, txn, NULL, cb, arg);
}

void chat_db_pool_reconnect_now(chat_db_pool_t *pool)
{
    if (pool->closing || pool->nup > 0)
        return;
    chat_db_conn_t *next = NULL;
    for (int i = 0; i < pool->size; i++) {
        chat_db_conn_t *c = &pool->conns[i];
        if (c->state == CHAT_DB_CONN_RESOLVING || c->state == CHAT_DB_CONN_CONNECTING)
            return; /* an attempt is under way: it will tell */
        if (c->state == CHAT_DB_CONN_BACKOFF && !next)
            next = c;
    }
    if (next) {
        pool->api_depth++; /* no callback from inside this call */
        chat_db_conn_retry_now(next);
        pool->api_depth--;
    }
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
    fail_queue(pool, CHAT_ECLOSED, msg_shutdown, 0);
    /* Idle and connecting ones close now, lent ones when their transaction ends. */
    for (int i = 0; i < pool->size; i++)
        chat_db_conn_close(&pool->conns[i], conn_closed_cb);
    pool->api_depth--;
    maybe_finish_close(pool);
}
