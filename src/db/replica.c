/*
 * Read replicas (replica.h): per replica a pool, a poll of
 * pg_last_wal_replay_lsn() and of its lag every poll_ms, its state, and the
 * routing of reads that know the WAL position they need, with the fall-back
 * to the primary. Metrics: chatd_db_reads_total{path}, and per replica
 * chatd_db_replica_up, _lag_seconds and _replay_lsn.
 */
#include "db/replica.h"
#include "core/alloc.h"
#include "core/log.h"
#include "core/metrics.h"
#include "db/walpos.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A poll unanswered this long leaves the replica out. */
#define POLL_TIMEOUT_MS 1000

struct replica {
    chat_db_replicas_t *rs;
    int index;
    chat_db_pool_t *pool;
    uint64_t replay;    /* last polled replay position; only grows */
    int up;             /* last poll answered and no read failed since */
    int polling;        /* a poll in flight */
    uint64_t poll_sent; /* loop time it was sent */
    char label[96];     /* replica="host:port" */
    chat_metric_t *m_up, *m_lag, *m_lsn;
};

struct chat_db_replicas {
    uv_loop_t *loop;
    int n;
    struct replica r[CHAT_DB_REPLICAS_MAX];
    int max_lag_ms;
    int worker;
    unsigned next;
    uv_timer_t timer;
    int closing, pending; /* pending: closes (timer, pools) not called back yet */
    void (*close_cb)(void *);
    void *close_arg;
    chat_metric_t *m_primary, *m_replica, *m_fallback;
};

int chat_db_replicas_split(const char *list, char *buf, size_t buflen,
                           const char *urls[CHAT_DB_REPLICAS_MAX])
{
    if (!list || !*list)
        return 0;
    if (strlen(list) >= buflen)
        return -1;
    strcpy(buf, list);
    int n = 0;
    for (char *p = buf;;) {
        char *comma = strchr(p, ',');
        if (comma)
            *comma = '\0';
        while (*p == ' ')
            p++;
        size_t len = strlen(p);
        while (len > 0 && p[len - 1] == ' ')
            p[--len] = '\0';
        if (!*p || n == CHAT_DB_REPLICAS_MAX)
            return -1;
        urls[n++] = p;
        if (!comma)
            break;
        p = comma + 1;
    }
    return n;
}

/* replica="host:port" from a URL, for metrics; the index when unparsable. */
static void make_label(struct replica *r, const char *url)
{
    char host[64] = "", port[16] = "";
    PQconninfoOption *opts = PQconninfoParse(url, NULL);
    for (PQconninfoOption *o = opts; o && o->keyword; o++) {
        if (!o->val)
            continue;
        if (strcmp(o->keyword, "host") == 0 || (strcmp(o->keyword, "hostaddr") == 0 && !*host))
            snprintf(host, sizeof host, "%s", o->val);
        else if (strcmp(o->keyword, "port") == 0)
            snprintf(port, sizeof port, "%s", o->val);
    }
    if (opts)
        PQconninfoFree(opts);
    /* label values: keep to characters that need no escaping */
    for (char *p = host; *p; p++)
        if (*p == '"' || *p == '\\' || *p == '\n')
            *p = '_';
    if (*host)
        snprintf(r->label, sizeof r->label, "replica=\"%s:%s\"", host, *port ? port : "5432");
    else
        snprintf(r->label, sizeof r->label, "replica=\"%d\"", r->index);
}

static void set_up(struct replica *r, int up, const char *why)
{
    if (r->up != up)
        chat_log_info("event=db_replica_%s worker=%d replica=%d%s%s", up ? "up" : "down",
                      r->rs->worker, r->index, why ? " why=" : "", why ? why : "");
    if (r->up != up)
        chat_metric_add(r->m_up, up ? 1 : -1); /* the workers using it */
    r->up = up;
}

/* ---- the poll ---- */

static void poll_cb(const chat_db_result_t *res, void *arg)
{
    struct replica *r = arg;
    chat_db_replicas_t *rs = r->rs;
    r->polling = 0;
    if (rs->closing)
        return; /* CHAT_ECLOSED, before the pool's close callback */
    if (res->status != CHAT_EOK || res->nres != 1 || PQntuples(res->res[0]) != 1 ||
        PQgetisnull(res->res[0], 0, 0)) {
        /* down, or not a replica (no replay position): not used */
        set_up(r, 0, res->status != CHAT_EOK ? "poll_failed" : "not_in_recovery");
        return;
    }
    uint64_t lsn = chat_db_lsn_parse(PQgetvalue(res->res[0], 0, 0));
    double lag = strtod(PQgetvalue(res->res[0], 0, 1), NULL);
    if (lsn > r->replay)
        r->replay = lsn;
    chat_metric_set(r->m_lag, lag);
    chat_metric_set(r->m_lsn, (double)r->replay);
    if (lag * 1000.0 > rs->max_lag_ms)
        set_up(r, 0, "lag");
    else
        set_up(r, 1, NULL);
}

/*
 * The replay position, and the lag: 0 while everything received is replayed,
 * else the time since the last transaction replayed was committed.
 */
static const char poll_sql[] =
    "SELECT pg_last_wal_replay_lsn()::text, "
    "CASE WHEN pg_last_wal_receive_lsn() IS NULL "
    "  OR pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0 "
    "  ELSE COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp()), 0) "
    "END::float8";

static void tick_cb(uv_timer_t *t)
{
    chat_db_replicas_t *rs = t->data;
    for (int i = 0; i < rs->n; i++) {
        struct replica *r = &rs->r[i];
        if (r->polling) {
            /* a replica that does not answer its poll is not read meanwhile */
            if (uv_now(rs->loop) - r->poll_sent > POLL_TIMEOUT_MS)
                set_up(r, 0, "poll_timeout");
            continue;
        }
        r->polling = 1;
        r->poll_sent = uv_now(rs->loop);
        chat_db_stmt_t st = {poll_sql, 0, NULL};
        chat_db_pool_exec(r->pool, &st, 1, CHAT_DB_RETRY_SENT, poll_cb, r);
    }
}

/* ---- reads ---- */

/*
 * A read on a replica. A replica that stops answering (its server gone
 * behind a pooler that still accepts) must not hold reads: past
 * READ_TIMEOUT_MS the primary answers, and the replica's late answer is
 * dropped. The op lives until both the replica's callback and the timer's
 * close have run.
 */
#define READ_TIMEOUT_MS 1000

struct read_op {
    chat_db_replicas_t *rs;
    struct replica *r;
    chat_db_t *primary;
    chat_db_txn_t *txn;
    chat_db_cb cb; /* NULL once answered */
    void *arg;
    uv_timer_t timer;
    int live; /* the replica's callback and the timer's close still to come */
};

static void read_op_release(struct read_op *op)
{
    if (--op->live > 0)
        return;
    chat_db_txn_destroy(op->txn);
    free(op);
}

static void timer_closed(uv_handle_t *h)
{
    read_op_release(h->data);
}

/* The primary answers op instead; the replica is left out until a poll finds it well. */
static void to_primary(struct read_op *op, const char *why, const chat_db_result_t *res)
{
    chat_db_replicas_t *rs = op->rs;
    chat_log_info("event=db_replica_read_failed worker=%d replica=%d why=%s status=%s "
                  "sqlstate=%s message=\"%s\"",
                  rs->worker, op->r->index, why, res ? chat_strerror(res->status) : "-",
                  res && res->sqlstate ? res->sqlstate : "-",
                  res && res->message ? res->message : "");
    set_up(op->r, 0, why);
    chat_metric_inc(rs->m_fallback);
    chat_metric_inc(rs->m_primary);
    chat_db_cb cb = op->cb;
    op->cb = NULL;
    chat_db_exec(op->primary, op->txn->stmts, op->txn->n, op->txn->flags, cb, op->arg);
}

static void read_timeout_cb(uv_timer_t *t)
{
    struct read_op *op = t->data;
    if (op->cb && !op->rs->closing)
        to_primary(op, "read_timeout", NULL);
}

static void replica_read_cb(const chat_db_result_t *res, void *arg)
{
    struct read_op *op = arg;
    uv_timer_stop(&op->timer);
    uv_close((uv_handle_t *)&op->timer, timer_closed);
    if (!op->cb) {
        /* answered by the primary already */
    } else if (res->status == CHAT_EOK || res->status == CHAT_ECLOSED) {
        chat_db_cb cb = op->cb;
        op->cb = NULL;
        cb(res, op->arg);
    } else {
        /*
         * Whatever failed here (the replica down, a statement cancelled by
         * recovery, a timeout) is the replica's: the primary answers.
         */
        to_primary(op, "read_failed", res);
    }
    read_op_release(op);
}

static struct replica *choose(chat_db_replicas_t *rs, uint64_t lsn)
{
    if (!rs || !lsn || rs->closing)
        return NULL;
    for (int k = 0; k < rs->n; k++) {
        struct replica *r = &rs->r[(rs->next + (unsigned)k) % (unsigned)rs->n];
        if (r->up && r->replay >= lsn) {
            rs->next = (unsigned)(r->index + 1);
            return r;
        }
    }
    return NULL;
}

void chat_db_replicas_exec(chat_db_replicas_t *rs, chat_db_t *primary, uint64_t lsn,
                           const chat_db_stmt_t *stmts, int n, chat_db_cb cb, void *arg)
{
    struct replica *r = choose(rs, lsn);
    if (!r) {
        if (rs)
            chat_metric_inc(rs->m_primary);
        chat_db_exec(primary, stmts, n, CHAT_DB_RETRY_SENT, cb, arg);
        return;
    }
    struct read_op *op = chat_malloc(sizeof *op);
    op->rs = rs;
    op->r = r;
    op->primary = primary;
    op->txn = chat_db_txn_create(stmts, n, CHAT_DB_RETRY_SENT);
    op->cb = cb;
    op->arg = arg;
    op->live = 2;
    uv_timer_init(rs->loop, &op->timer);
    op->timer.data = op;
    uv_timer_start(&op->timer, read_timeout_cb, READ_TIMEOUT_MS, 0);
    chat_metric_inc(rs->m_replica);
    chat_db_pool_send(r->pool, op->txn, replica_read_cb, op);
}

/* ---- life ---- */

chat_db_replicas_t *chat_db_replicas_create(uv_loop_t *loop, const chat_db_replicas_config_t *cfg)
{
    char buf[4096];
    const char *urls[CHAT_DB_REPLICAS_MAX];
    int n = chat_db_replicas_split(cfg->urls, buf, sizeof buf, urls);
    if (n <= 0)
        return NULL;
    chat_db_replicas_t *rs = chat_calloc(1, sizeof *rs);
    rs->loop = loop;
    rs->n = n;
    rs->max_lag_ms = cfg->max_lag_ms;
    rs->worker = cfg->worker;
    chat_metric_family_t *reads = chat_metrics_counter(
        "chatd_db_reads_total", "Cache-miss reads that could use a replica, by where they went");
    rs->m_primary = chat_metric_series(reads, "path=\"primary\"");
    rs->m_replica = chat_metric_series(reads, "path=\"replica\"");
    rs->m_fallback = chat_metric_counter("chatd_db_replica_fallbacks_total",
                                         "Reads that failed on a replica and went to the primary");
    chat_metric_family_t *f_up =
        chat_metrics_gauge("chatd_db_replica_up", "Workers reading a replica (0: left out)");
    chat_metric_family_t *f_lag =
        chat_metrics_gauge("chatd_db_replica_lag_seconds",
                           "Replica lag: time since its last replayed commit while WAL waits");
    chat_metric_family_t *f_lsn = chat_metrics_gauge(
        "chatd_db_replica_replay_lsn", "Replica replay position (WAL bytes), as last polled");
    for (int i = 0; i < n; i++) {
        struct replica *r = &rs->r[i];
        r->rs = rs;
        r->index = i;
        make_label(r, urls[i]);
        r->m_up = chat_metric_series(f_up, r->label);
        r->m_lag = chat_metric_series(f_lag, r->label);
        r->m_lsn = chat_metric_series(f_lsn, r->label);
        chat_db_pool_config_t pc = {
            .conninfo = urls[i],
            .size = cfg->size > 0 ? cfg->size : 2,
            .queue_timeout_ms = cfg->queue_timeout_ms,
            .connect_timeout_ms = cfg->connect_timeout_ms,
            .path_name = "replica",
        };
        r->pool = chat_db_pool_create(loop, &pc);
    }
    uv_timer_init(loop, &rs->timer);
    rs->timer.data = rs;
    uint64_t every = (uint64_t)(cfg->poll_ms > 0 ? cfg->poll_ms : 50);
    uv_timer_start(&rs->timer, tick_cb, every, every);
    return rs;
}

static void pool_closed_cb(void *arg)
{
    chat_db_replicas_t *rs = arg;
    if (--rs->pending > 0)
        return;
    void (*cb)(void *) = rs->close_cb;
    void *carg = rs->close_arg;
    free(rs);
    if (cb)
        cb(carg);
}

static void timer_closed_cb(uv_handle_t *h)
{
    pool_closed_cb(h->data);
}

void chat_db_replicas_close(chat_db_replicas_t *rs, void (*cb)(void *arg), void *arg)
{
    if (!rs) {
        if (cb)
            cb(arg);
        return;
    }
    rs->closing = 1;
    for (int i = 0; i < rs->n; i++)
        set_up(&rs->r[i], 0, "closing");
    rs->close_cb = cb;
    rs->close_arg = arg;
    rs->pending = rs->n + 1;
    uv_timer_stop(&rs->timer);
    uv_close((uv_handle_t *)&rs->timer, timer_closed_cb);
    for (int i = 0; i < rs->n; i++)
        chat_db_pool_close(rs->r[i].pool, pool_closed_cb, rs);
}
