/*
 * The database path of one worker: the pooler pool (PgBouncer) and, when
 * DATABASE_URL_DIRECT is set, a smaller direct pool to PostgreSQL created on
 * the first failover. Transactions go to the path in use; the path watches
 * the pooler and moves to the direct pool when the pooler refuses
 * connections, or when over a window its error ratio or its queue-wait p95
 * passes a threshold. It keeps probing the pooler and moves back after it
 * has been healthy for the hold time (doubled after each quick relapse).
 *
 * A transaction that may be repeated (CHAT_DB_RETRY_SENT) and fails because
 * its connection or server went away (no connection could be made, the
 * connection broke, SQLSTATE 08xxx or 57Pxx from PostgreSQL or the pooler) is
 * held, not failed, with or without a direct path: it is sent again once the
 * path changes or its pool has a connection again, every tick, until
 * held_max_ms after its first failure (within its queue deadline). So a
 * request caught in a switch, or in a PostgreSQL or PgBouncer restart shorter
 * than the hold, is answered instead of failing (docs/architecture.md,
 * "Database outages").
 *
 * The paths of all workers keep the process-wide gauge chatd_db_path: 1 for
 * "pooler" while any path is on the pooler, 1 for "direct" while any is on
 * the direct pool.
 */
#ifndef CHAT_DB_PATH_H
#define CHAT_DB_PATH_H

#include "db/pool.h"

typedef struct chat_db chat_db_t;

typedef struct chat_db_path_config {
    chat_db_pool_config_t pooler; /* the pooler pool (conninfo, size, timeouts) */
    const char *direct_conninfo;  /* NULL (or the same URL): no fallback */
    int direct_size;
    int error_percent; /* pooler error ratio that trips the switch; 0 = never */
    int queue_wait_ms; /* pooler queue-wait p95 that trips the switch; 0 = never */
    int window_ms;     /* window both are measured over */
    int hold_ms;       /* healthy time before moving back */
    int held_max_ms;   /* longest hold of a failed transaction for a resend; 0 = none */
    int worker;        /* for logs */
} chat_db_path_config_t;

/** Fewest pooler transactions in a window before its ratios count. */
#define CHAT_DB_PATH_MIN_SAMPLES 20

chat_db_t *chat_db_create(uv_loop_t *loop, const chat_db_path_config_t *cfg);

/**
 * chat_db_pool_exec() on the path in use, with holding as described above.
 * The parameters are copied once, here, into a transaction that the pools
 * send (and the path sends again) without copying.
 */
void chat_db_exec(chat_db_t *db, const chat_db_stmt_t *stmts, int n, int flags, chat_db_cb cb,
                  void *arg);

/** True while the path in use can reach the database (for /readyz). */
int chat_db_healthy(const chat_db_t *db);

/** 1 while on the direct path. */
int chat_db_on_direct(const chat_db_t *db);

/** Stats of the pool of the path in use. */
void chat_db_stats(const chat_db_t *db, chat_db_pool_stats_t *out);

/** Closes both pools; held transactions fail with CHAT_ECLOSED. */
void chat_db_close(chat_db_t *db, void (*cb)(void *arg), void *arg);

#endif
