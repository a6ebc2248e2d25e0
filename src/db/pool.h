/*
 * Pool of non-blocking PostgreSQL connections on one libuv loop, lent for
 * exactly one transaction at a time, as PgBouncer's transaction mode does, so
 * the same code works through the pooler or straight to PostgreSQL. A
 * transaction is a list of statements sent as one libpq pipeline with a single
 * Sync: PostgreSQL runs them as one implicit transaction (all or nothing).
 * Callers that find no free connection wait in a FIFO queue with a deadline.
 * No session state is ever used: no SET, no named prepared statements.
 */
#ifndef CHAT_DB_POOL_H
#define CHAT_DB_POOL_H

#include <libpq-fe.h>
#include <stdint.h>
#include <uv.h>

typedef struct chat_db_pool chat_db_pool_t;

/** One statement: SQL with $1.. placeholders and text parameters. */
typedef struct chat_db_stmt {
    const char *sql; /* must outlive the transaction (a literal) */
    int nparams;
    const char *const *params; /* copied at submit; NULL entry = SQL NULL */
} chat_db_stmt_t;

enum chat_db_status {
    CHAT_DB_OK = 0,
    CHAT_DB_ERR_QUERY = -1,       /* the server rejected a statement: see sqlstate */
    CHAT_DB_ERR_TIMEOUT = -2,     /* waited in the queue past the deadline */
    CHAT_DB_ERR_UNAVAILABLE = -3, /* no connection could be made / it broke and retry failed */
    CHAT_DB_ERR_SHUTDOWN = -4,    /* the pool is closing */
};

typedef struct chat_db_result {
    int status;           /* enum chat_db_status */
    const char *sqlstate; /* CHAT_DB_ERR_QUERY: five-character SQLSTATE, else NULL */
    const char *message;  /* human text for logs (never sent to clients) */
    PGresult *const *res; /* one per statement when status == CHAT_DB_OK */
    int nres;
    double queue_wait; /* seconds spent waiting for a connection */
} chat_db_result_t;

/**
 * Called exactly once per transaction on the pool's loop. The results are
 * owned by the pool and cleared after the callback returns.
 */
typedef void (*chat_db_cb)(const chat_db_result_t *r, void *arg);

typedef struct chat_db_pool_config {
    const char *conninfo;   /* libpq URL or key=value string */
    int size;               /* connections held by this pool */
    int queue_timeout_ms;   /* deadline for a waiter */
    int connect_timeout_ms; /* longest time one connect may take */
    const char *path_name;  /* "pooler" or "direct": label for logs and metrics */
} chat_db_pool_config_t;

/**
 * Creates the pool and starts connecting all its connections in the
 * background. cfg is copied. Never fails: connection problems surface as
 * CHAT_DB_ERR_UNAVAILABLE results and reconnects with back-off.
 */
chat_db_pool_t *chat_db_pool_create(uv_loop_t *loop, const chat_db_pool_config_t *cfg);

/** Flags for chat_db_pool_exec(). */
enum chat_db_flags {
    /*
     * The transaction only reads (or is idempotent): if its connection breaks
     * after it was sent, it is retried once on another connection instead of
     * failing. Without the flag it is retried only if it had not been sent.
     */
    CHAT_DB_RETRY_SENT = 1,
};

/**
 * Queues a transaction of n statements (1 <= n <= 16; outside that range it
 * fails with CHAT_DB_ERR_QUERY and no sqlstate). cb fires exactly once,
 * later, never from inside this call. Parameters are copied here; the sql
 * strings are not. A waiter still queued after queue_timeout_ms gets
 * CHAT_DB_ERR_TIMEOUT. While no connection is up and the last connect attempt
 * of every connection failed, transactions fail at once (and the queue is
 * emptied) with CHAT_DB_ERR_UNAVAILABLE instead of waiting out the deadline.
 * A connection that breaks is replaced with back-off; work on it is retried
 * once as the flags allow, otherwise it fails with CHAT_DB_ERR_UNAVAILABLE.
 */
void chat_db_pool_exec(chat_db_pool_t *pool, const chat_db_stmt_t *stmts, int n, int flags,
                       chat_db_cb cb, void *arg);

/**
 * True while at least one connection is up, or the most recent connect
 * attempt succeeded. False from creation until the first connection is up.
 */
int chat_db_pool_healthy(const chat_db_pool_t *pool);

/** Most statements one transaction may hold. */
#define CHAT_DB_MAX_STMTS 16

/** A snapshot of one pool, for readiness checks and tests. */
typedef struct chat_db_pool_stats {
    int size;      /* connections configured */
    int connected; /* connections up (idle or lent out) */
    int active;    /* connections lent out to a transaction */
    int waiting;   /* transactions queued for a connection */
} chat_db_pool_stats_t;

/** Fills out with the pool's current counts. Never fails. */
void chat_db_pool_stats(const chat_db_pool_t *pool, chat_db_pool_stats_t *out);

/**
 * Closes the pool: waiters get CHAT_DB_ERR_SHUTDOWN, transactions in flight
 * finish, then connections close; cb fires when every handle is closed and the
 * pool is freed. No callback runs from inside this call. Until cb, exec still
 * accepts calls and fails them (later) with CHAT_DB_ERR_SHUTDOWN. A statement
 * that never returns holds the close up: bound it with statement_timeout.
 */
void chat_db_pool_close(chat_db_pool_t *pool, void (*cb)(void *arg), void *arg);

#endif
