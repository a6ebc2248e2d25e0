/*
 * Pool of non-blocking PostgreSQL connections on one libuv loop, lent for
 * exactly one transaction at a time, as PgBouncer's transaction mode does, so
 * the same code works through the pooler or straight to PostgreSQL.
 * Callers that find no free connection wait in a FIFO queue with a deadline.
 * No session state is ever used: no SET, no named prepared statements.
 */
#ifndef CHAT_DB_POOL_H
#define CHAT_DB_POOL_H

#include "db/txn.h"

#include <stdint.h>
#include <uv.h>

typedef struct chat_db_pool chat_db_pool_t;

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
 * CHAT_EDOWN results and reconnects with back-off.
 */
chat_db_pool_t *chat_db_pool_create(uv_loop_t *loop, const chat_db_pool_config_t *cfg);

/**
 * Queues txn, which stays the caller's and must live until cb. cb fires
 * exactly once, later, never from inside this call (see txn.h for the
 * statuses). A transaction with a bad statement count fails with CHAT_EINVAL.
 * A waiter still queued after queue_timeout_ms gets CHAT_ETIMEDOUT. While no
 * connection is up and the last connect attempt of every connection failed,
 * transactions fail at once (and the queue is emptied) with CHAT_EDOWN
 * instead of waiting out the deadline. A connection that breaks is replaced
 * with back-off; a transaction on it is retried once if it had not been sent
 * or carries CHAT_DB_RETRY_SENT, otherwise it fails with CHAT_ECONNLOST.
 */
void chat_db_pool_send(chat_db_pool_t *pool, const chat_db_txn_t *txn, chat_db_cb cb, void *arg);

/**
 * chat_db_pool_send() of a transaction of n statements made here (the
 * parameters are copied; the sql strings are not) and freed after cb.
 */
void chat_db_pool_exec(chat_db_pool_t *pool, const chat_db_stmt_t *stmts, int n, int flags,
                       chat_db_cb cb, void *arg);

/**
 * True while at least one connection is up, or the most recent connect
 * attempt succeeded. False from creation until the first connection is up.
 */
int chat_db_pool_healthy(const chat_db_pool_t *pool);

/**
 * While no connection is up and none is connecting, starts one connection's
 * next connect attempt now instead of at the end of its back-off (for a
 * caller that has transactions waiting for this pool); when it succeeds the
 * others follow. Does nothing otherwise, or while closing.
 */
void chat_db_pool_reconnect_now(chat_db_pool_t *pool);

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
 * Closes the pool: waiters get CHAT_ECLOSED, transactions in flight finish,
 * then connections close; cb fires when every handle is closed and the pool
 * is freed. No callback runs from inside this call. Until cb, send and exec
 * still accept calls and fail them (later) with CHAT_ECLOSED. A statement
 * that never returns holds the close up: bound it with statement_timeout.
 */
void chat_db_pool_close(chat_db_pool_t *pool, void (*cb)(void *arg), void *arg);

#endif
