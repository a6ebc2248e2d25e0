/*
 * The database path of one worker: pooler pool, lazily created direct pool,
 * the switch between them, transactions held across a switch, and the
 * process-wide chatd_db_path gauge. See path.h for the rules. Everything but
 * the gauge runs on the worker's loop.
 */
#include "db/path.h"

#include "core/alloc.h"
#include "core/list.h"
#include "core/log.h"
#include "core/metrics.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TICK_MS 250           /* failover checks; held transactions are looked at as often */
#define BAD_TICKS 2           /* pooler unreachable this many ticks before leaving it */
#define MAX_WINDOW_TICKS 2400 /* 10 minutes */
#define HOLD_MAX_MS 300000    /* the hold time doubles up to this after relapses */
#define RELAPSE_MS 60000      /* leaving the pooler again this soon is a relapse */

enum reason { R_UNREACHABLE, R_ERRORS, R_QUEUE_WAIT, R_HEALTHY, R_COUNT };
static const char *const reason_label[R_COUNT] = {"unreachable", "error_ratio", "queue_wait",
                                                  "healthy"};

struct bucket {
    uint32_t total, errors, slow;
};

/*
 * A transaction on the path. Who holds it: the pool it was last sent to
 * (pool), or the held list (link linked) while it waits for a connection.
 */
typedef struct ptx {
    chat_list_t link; /* in the held list while held */
    chat_db_t *db;
    chat_db_pool_t *pool; /* where it was last sent */
    chat_db_txn_t *txn;   /* the one copy, sent again as it is */
    chat_db_cb cb;
    void *arg;
    chat_err_t last_status; /* of the last failed attempt */
    uint64_t deadline;      /* loop ms: no more sends after this (the queue deadline) */
    uint64_t hold_until;    /* loop ms: first failure + held_max_ms; 0 before one */
    double waited;          /* queue wait of the attempts so far, seconds */
} ptx_t;

struct chat_db {
    uv_loop_t *loop;
    chat_db_path_config_t cfg;
    char *direct_conninfo;
    chat_db_pool_t *pooler, *direct, *cur;
    uv_timer_t timer;
    int bad_ticks, good_ticks;
    int nbuckets, bucket;
    struct bucket *buckets;
    uint64_t hold_ms; /* current hold time */
    uint64_t back_at; /* loop ms of the last move back to the pooler */
    int probe_inflight, probe_ok;
    uint64_t probe_started;
    chat_list_t held; /* ptx_t waiting for a path, oldest first */
    int closing;
    void (*close_cb)(void *);
    void *close_arg;
};

static chat_metric_t *m_switches[R_COUNT], *m_retries, *m_held, *m_expired;

/*
 * chatd_db_path{path="pooler"|"direct"}: 1 while at least one worker's path
 * is on that side. Process-wide, so counted across the workers' threads.
 */
static chat_metric_t *m_path_pooler, *m_path_direct;
static _Atomic int paths_on_pooler, paths_on_direct;

static void gauge_move(int pooler_delta, int direct_delta)
{
    int p = atomic_fetch_add(&paths_on_pooler, pooler_delta) + pooler_delta;
    int d = atomic_fetch_add(&paths_on_direct, direct_delta) + direct_delta;
    chat_metric_set(m_path_pooler, p > 0 ? 1 : 0);
    chat_metric_set(m_path_direct, d > 0 ? 1 : 0);
}

static void metrics_init(void)
{
    chat_metric_family_t *path =
        chat_metrics_gauge("chatd_db_path", "1 on the database path in use");
    m_path_pooler = chat_metric_series(path, "path=\"pooler\"");
    m_path_direct = chat_metric_series(path, "path=\"direct\"");
    chat_metric_set(m_path_pooler, 1);
    chat_metric_set(m_path_direct, 0);
    chat_metric_family_t *f =
        chat_metrics_counter("chatd_db_path_switches_total", "Moves between the database paths");
    for (int i = 0; i < R_COUNT; i++) {
        char labels[64];
        snprintf(labels, sizeof labels, "to=\"%s\",reason=\"%s\"",
                 i == R_HEALTHY ? "pooler" : "direct", reason_label[i]);
        m_switches[i] = chat_metric_series(f, labels);
    }
    m_retries = chat_metric_counter(
        "chatd_db_path_retries_total",
        "Held transactions sent again after their database connection or path failed");
    m_held = chat_metric_gauge("chatd_db_path_held",
                               "Transactions held for a database connection or path");
    m_expired = chat_metric_counter(
        "chatd_db_path_hold_expired_total",
        "Held transactions failed because no connection answered within CHATD_DB_HOLD_MS");
}

/* ---- the window of pooler outcomes ---- */

static int is_path_error(const chat_db_result_t *r)
{
    if (r->status == CHAT_EDOWN || r->status == CHAT_ECONNLOST || r->status == CHAT_ETIMEDOUT)
        return 1;
    if (r->status != CHAT_EREPLY || !r->sqlstate)
        return 0;
    /* connection exceptions, insufficient resources, operator intervention */
    return !strncmp(r->sqlstate, "08", 2) || !strncmp(r->sqlstate, "53", 2) ||
           !strncmp(r->sqlstate, "57P", 3);
}

static void window_record(chat_db_t *db, const chat_db_result_t *r)
{
    if (!db->buckets || r->status == CHAT_ECLOSED)
        return;
    struct bucket *b = &db->buckets[db->bucket];
    b->total++;
    if (is_path_error(r))
        b->errors++;
    if (db->cfg.queue_wait_ms > 0 && r->queue_wait * 1000.0 > db->cfg.queue_wait_ms)
        b->slow++;
}

static void window_reset(chat_db_t *db)
{
    if (db->buckets)
        memset(db->buckets, 0, sizeof *db->buckets * (size_t)db->nbuckets);
}

/* The reason the pooler's window asks for a switch, or -1. */
static int window_verdict(chat_db_t *db, uint64_t *total, uint64_t *bad)
{
    uint64_t t = 0, e = 0, s = 0;
    for (int i = 0; i < db->nbuckets; i++) {
        t += db->buckets[i].total;
        e += db->buckets[i].errors;
        s += db->buckets[i].slow;
    }
    *total = t;
    if (t < CHAT_DB_PATH_MIN_SAMPLES)
        return -1;
    if (db->cfg.error_percent > 0 && e * 100 > (uint64_t)db->cfg.error_percent * t) {
        *bad = e;
        return R_ERRORS;
    }
    /* More than 5 % slower than the threshold: the p95 is past it. */
    if (db->cfg.queue_wait_ms > 0 && s * 20 > t) {
        *bad = s;
        return R_QUEUE_WAIT;
    }
    return -1;
}

/* ---- transactions ---- */

static void ptx_cb(const chat_db_result_t *r, void *arg);

static void ptx_send(ptx_t *t, chat_db_pool_t *pool)
{
    t->pool = pool;
    chat_db_pool_send(pool, t->txn, ptx_cb, t);
}

static void ptx_finish(ptx_t *t, const chat_db_result_t *r)
{
    chat_db_result_t copy = *r;
    copy.queue_wait += t->waited;
    t->cb(&copy, t->arg);
    chat_db_txn_destroy(t->txn);
    free(t);
}

static void ptx_fail(ptx_t *t, chat_err_t status, const char *message)
{
    chat_db_result_t r = {.status = status, .message = message};
    ptx_finish(t, &r);
}

/*
 * The transaction failed because its connection or the server went away, not
 * because of what it asked: no connection could be made (nothing was sent),
 * the connection broke, or the server or the pooler ended the session
 * (SQLSTATE class 08, and 57P: admin shutdown, crash shutdown, "the database
 * system is starting up / shutting down", PgBouncer's "server conn crashed?"
 * and its login failures while PostgreSQL is down).
 */
static int is_outage(const chat_db_result_t *r)
{
    if (r->status == CHAT_EDOWN || r->status == CHAT_ECONNLOST)
        return 1;
    return r->status == CHAT_EREPLY && r->sqlstate &&
           (!strncmp(r->sqlstate, "08", 2) || !strncmp(r->sqlstate, "57P", 3));
}

/*
 * Whether a failed attempt is held for another: only a transaction that may
 * run twice (CHAT_DB_RETRY_SENT: a lost answer may hide a commit), only for an
 * outage, and only until held_max_ms after its first failure (within its
 * queue deadline). Sets hold_until at the first failure.
 */
static int may_hold(chat_db_t *db, ptx_t *t, const chat_db_result_t *r)
{
    if (db->closing || db->cfg.held_max_ms <= 0 || !(t->txn->flags & CHAT_DB_RETRY_SENT) ||
        !is_outage(r))
        return 0;
    uint64_t now = uv_now(db->loop);
    if (!t->hold_until) {
        t->hold_until = now + (uint64_t)db->cfg.held_max_ms;
        if (t->hold_until > t->deadline)
            t->hold_until = t->deadline;
    }
    if (now < t->hold_until)
        return 1;
    chat_metric_inc(m_expired);
    return 0;
}

static void ptx_cb(const chat_db_result_t *r, void *arg)
{
    ptx_t *t = arg;
    chat_db_t *db = t->db;
    if (t->pool == db->pooler)
        window_record(db, r);
    if (r->status != CHAT_EOK && may_hold(db, t, r)) {
        t->waited += r->queue_wait;
        t->last_status = r->status;
        chat_list_insert_tail(&db->held, &t->link);
        chat_metric_add(m_held, 1);
        return;
    }
    ptx_finish(t, r);
}

void chat_db_exec(chat_db_t *db, const chat_db_stmt_t *stmts, int n, int flags, chat_db_cb cb,
                  void *arg)
{
    if (n < 1 || n > CHAT_DB_MAX_STMTS) {
        /* Nothing to hold: the pool fails it with CHAT_EINVAL. */
        chat_db_pool_exec(db->cur, stmts, n, flags, cb, arg);
        return;
    }
    ptx_t *t = chat_calloc(1, sizeof *t);
    chat_list_init(&t->link);
    t->db = db;
    t->cb = cb;
    t->arg = arg;
    t->txn = chat_db_txn_create(stmts, n, flags);
    t->deadline = uv_now(db->loop) + (uint64_t)db->cfg.pooler.queue_timeout_ms;
    ptx_send(t, db->cur);
}

/*
 * Sends held transactions again where they can go: to the path in use when
 * it changed since their last attempt or when its pool has a connection (or
 * its last connect worked); fails the ones whose hold is over.
 */
static void held_run(chat_db_t *db)
{
    uint64_t now = uv_now(db->loop);
    chat_list_t list;
    chat_list_init(&list);
    chat_list_splice_tail(&list, &db->held);
    int expired = 0, waiting = 0;
    chat_list_t *e;
    while ((e = chat_list_first(&list))) {
        ptx_t *t = CHAT_CONTAINER_OF(e, ptx_t, link);
        chat_list_remove(e);
        if (db->closing) {
            chat_metric_add(m_held, -1);
            ptx_fail(t, CHAT_ECLOSED, "the database pool is closing");
        } else if (now >= t->hold_until) {
            chat_metric_add(m_held, -1);
            chat_metric_inc(m_expired);
            expired++;
            /* Lost (maybe run) on the last attempt, or never sent anywhere. */
            ptx_fail(t, t->last_status == CHAT_ECONNLOST ? CHAT_ECONNLOST : CHAT_EDOWN,
                     "no database connection answered in time");
        } else if (db->cur != t->pool || chat_db_pool_healthy(db->cur)) {
            chat_metric_add(m_held, -1);
            chat_metric_inc(m_retries);
            ptx_send(t, db->cur);
        } else {
            chat_list_insert_tail(&db->held, e);
            waiting = 1;
        }
    }
    /* Something waits for this pool: one connection tries now, not after its back-off. */
    if (waiting)
        chat_db_pool_reconnect_now(db->cur);
    if (expired > 0)
        chat_log_warn("event=db_hold_expired worker=%d failed=%d hold_ms=%d", db->cfg.worker,
                      expired, db->cfg.held_max_ms);
}

/* ---- switching ---- */

static void switch_to(chat_db_t *db, int to_direct, int reason, const char *detail)
{
    uint64_t now = uv_now(db->loop);
    if (to_direct) {
        if (!db->direct) {
            chat_db_pool_config_t pc = db->cfg.pooler;
            pc.conninfo = db->direct_conninfo;
            pc.size = db->cfg.direct_size;
            pc.path_name = "direct";
            db->direct = chat_db_pool_create(db->loop, &pc);
        }
        db->cur = db->direct;
        db->good_ticks = 0;
        db->probe_ok = 0;
        if (db->back_at && now - db->back_at < RELAPSE_MS) {
            db->hold_ms *= 2;
            if (db->hold_ms > HOLD_MAX_MS)
                db->hold_ms = HOLD_MAX_MS;
        } else {
            db->hold_ms = (uint64_t)db->cfg.hold_ms;
        }
        chat_log_warn("event=db_path_switch worker=%d from=pooler to=direct reason=%s "
                      "detail=\"%s\" hold_ms=%llu",
                      db->cfg.worker, reason_label[reason], detail,
                      (unsigned long long)db->hold_ms);
    } else {
        db->cur = db->pooler;
        db->bad_ticks = 0;
        db->back_at = now;
        window_reset(db);
        chat_log_info(
            "event=db_path_switch worker=%d from=direct to=pooler reason=%s detail=\"%s\"",
            db->cfg.worker, reason_label[reason], detail);
    }
    chat_metric_inc(m_switches[reason]);
    gauge_move(to_direct ? -1 : 1, to_direct ? 1 : -1);
}

static void probe_cb(const chat_db_result_t *r, void *arg)
{
    chat_db_t *db = arg;
    db->probe_inflight = 0;
    uint64_t rtt = uv_now(db->loop) - db->probe_started;
    db->probe_ok = r->status == CHAT_EOK &&
                   (db->cfg.queue_wait_ms <= 0 || rtt < (uint64_t)db->cfg.queue_wait_ms);
}

/* One tick of the failover rules (with DATABASE_URL_DIRECT only). */
static void failover_tick(chat_db_t *db)
{
    uint64_t now = uv_now(db->loop);
    int healthy = chat_db_pool_healthy(db->pooler);
    if (db->cur == db->pooler) {
        db->bad_ticks = healthy ? 0 : db->bad_ticks + 1;
        uint64_t total = 0, bad = 0;
        int verdict = window_verdict(db, &total, &bad);
        char detail[128];
        if (db->bad_ticks >= BAD_TICKS) {
            snprintf(detail, sizeof detail, "the pooler refuses or drops connections for %d ms",
                     db->bad_ticks * TICK_MS);
            switch_to(db, 1, R_UNREACHABLE, detail);
        } else if (verdict == R_ERRORS) {
            snprintf(detail, sizeof detail, "%llu of %llu transactions failed in %d ms",
                     (unsigned long long)bad, (unsigned long long)total, db->cfg.window_ms);
            switch_to(db, 1, R_ERRORS, detail);
        } else if (verdict == R_QUEUE_WAIT) {
            snprintf(detail, sizeof detail,
                     "%llu of %llu transactions waited over %d ms for a connection in %d ms",
                     (unsigned long long)bad, (unsigned long long)total, db->cfg.queue_wait_ms,
                     db->cfg.window_ms);
            switch_to(db, 1, R_QUEUE_WAIT, detail);
        }
    } else {
        uint64_t limit = db->cfg.queue_wait_ms > 1000 ? (uint64_t)db->cfg.queue_wait_ms : 1000;
        if (!healthy || (db->probe_inflight && now - db->probe_started > limit) ||
            (!db->probe_inflight && !db->probe_ok))
            db->good_ticks = 0;
        else if (db->probe_ok)
            db->good_ticks++;
        if ((uint64_t)db->good_ticks * TICK_MS >= db->hold_ms) {
            char detail[96];
            snprintf(detail, sizeof detail, "the pooler answered probes for %llu ms",
                     (unsigned long long)db->hold_ms);
            switch_to(db, 0, R_HEALTHY, detail);
        } else if (!db->probe_inflight) {
            static const chat_db_stmt_t probe = {"SELECT 1", 0, NULL};
            db->probe_inflight = 1;
            db->probe_ok = 0;
            db->probe_started = now;
            chat_db_pool_exec(db->pooler, &probe, 1, 0, probe_cb, db);
        }
    }
    if (db->nbuckets) {
        db->bucket = (db->bucket + 1) % db->nbuckets;
        memset(&db->buckets[db->bucket], 0, sizeof db->buckets[0]);
    }
}

static void tick_cb(uv_timer_t *timer)
{
    chat_db_t *db = timer->data;
    if (db->direct_conninfo)
        failover_tick(db);
    if (!chat_list_empty(&db->held))
        held_run(db);
}

chat_db_t *chat_db_create(uv_loop_t *loop, const chat_db_path_config_t *cfg)
{
    static uv_once_t once = UV_ONCE_INIT;
    uv_once(&once, metrics_init);
    chat_db_t *db = chat_calloc(1, sizeof *db);
    db->loop = loop;
    db->cfg = *cfg;
    chat_list_init(&db->held);
    db->pooler = chat_db_pool_create(loop, &cfg->pooler);
    gauge_move(1, 0);
    db->cur = db->pooler;
    uv_timer_init(loop, &db->timer);
    db->timer.data = db;
    if (cfg->direct_conninfo && cfg->pooler.conninfo &&
        strcmp(cfg->direct_conninfo, cfg->pooler.conninfo) != 0) {
        db->direct_conninfo = chat_strdup(cfg->direct_conninfo);
        db->cfg.direct_conninfo = db->direct_conninfo;
        if (db->cfg.direct_size < 1)
            db->cfg.direct_size = 1;
        if (db->cfg.hold_ms < TICK_MS)
            db->cfg.hold_ms = TICK_MS;
        db->hold_ms = (uint64_t)db->cfg.hold_ms;
        int nb = db->cfg.window_ms / TICK_MS;
        db->nbuckets = nb < 1 ? 1 : nb > MAX_WINDOW_TICKS ? MAX_WINDOW_TICKS : nb;
        db->buckets = chat_calloc((size_t)db->nbuckets, sizeof *db->buckets);
    }
    /* A grace period at start: the pooler gets a moment to connect. */
    uv_timer_start(&db->timer, tick_cb, db->direct_conninfo ? 1000 : TICK_MS, TICK_MS);
    db->cfg.pooler.conninfo = NULL; /* not kept: the pool copied it */
    return db;
}

int chat_db_healthy(const chat_db_t *db)
{
    return chat_db_pool_healthy(db->cur);
}

int chat_db_on_direct(const chat_db_t *db)
{
    return db->cur != db->pooler;
}

void chat_db_stats(const chat_db_t *db, chat_db_pool_stats_t *out)
{
    chat_db_pool_stats(db->cur, out);
}

/* ---- close: timer, held transactions, pooler pool, direct pool ---- */

static void close_done(chat_db_t *db)
{
    void (*cb)(void *) = db->close_cb;
    void *arg = db->close_arg;
    if (db->cur == db->pooler)
        gauge_move(-1, 0);
    else
        gauge_move(0, -1);
    free(db->buckets);
    free(db->direct_conninfo);
    free(db);
    if (cb)
        cb(arg);
}

static void direct_closed(void *arg)
{
    close_done(arg);
}

static void pooler_closed(void *arg)
{
    chat_db_t *db = arg;
    if (db->direct)
        chat_db_pool_close(db->direct, direct_closed, db);
    else
        close_done(db);
}

static void timer_closed(uv_handle_t *h)
{
    chat_db_t *db = h->data;
    held_run(db); /* closing: every held transaction fails */
    chat_db_pool_close(db->pooler, pooler_closed, db);
}

void chat_db_close(chat_db_t *db, void (*cb)(void *arg), void *arg)
{
    db->closing = 1;
    db->close_cb = cb;
    db->close_arg = arg;
    uv_close((uv_handle_t *)&db->timer, timer_closed);
}
