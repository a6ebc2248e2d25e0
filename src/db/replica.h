/*
 * The read replicas of one worker (DATABASE_URL_REPLICAS): a small pool per
 * replica, each replica's replay position and lag polled on its own
 * connection, and the choice, per read, of a replica that has replayed the
 * WAL position the read needs, else the primary's path. A replica that
 * fails, or lags past the bound, is left out until a poll finds it well.
 */
#ifndef CHAT_DB_REPLICA_H
#define CHAT_DB_REPLICA_H

#include "db/path.h"

#include <stdint.h>

typedef struct chat_db_replicas chat_db_replicas_t;

typedef struct chat_db_replicas_config {
    const char *urls;       /* comma-separated libpq URLs; NULL or "": none */
    int size;               /* connections per replica (the poll takes one in turn) */
    int max_lag_ms;         /* a replica further behind is left out */
    int poll_ms;            /* how often each replica's position is read */
    int queue_timeout_ms;   /* as the primary's pool */
    int connect_timeout_ms; /* as the primary's pool */
    int worker;             /* for logs */
} chat_db_replicas_config_t;

/** Most replicas in the list. */
#define CHAT_DB_REPLICAS_MAX 8

/**
 * Splits a comma-separated list into at most CHAT_DB_REPLICAS_MAX URLs
 * (written into buf, pointers in urls); returns their count, or -1 when the
 * list is too long or holds an empty item.
 */
int chat_db_replicas_split(const char *list, char *buf, size_t buflen,
                           const char *urls[CHAT_DB_REPLICAS_MAX]);

/** NULL when cfg names no replica. */
chat_db_replicas_t *chat_db_replicas_create(uv_loop_t *loop, const chat_db_replicas_config_t *cfg);

/**
 * A read (CHAT_DB_RETRY_SENT semantics) that needs every write up to WAL
 * position lsn: on a replica that is up, within the lag bound, and whose
 * last polled replay position is at or past lsn; otherwise — lsn 0 (not
 * known), no such replica, rs NULL — on the primary. A read that fails on
 * the replica is sent to the primary (the replica is left out until its
 * next good poll). cb as chat_db_exec().
 */
void chat_db_replicas_exec(chat_db_replicas_t *rs, chat_db_t *primary, uint64_t lsn,
                           const chat_db_stmt_t *stmts, int n, chat_db_cb cb, void *arg);

/** Closes the pools and timers; cb once all is closed. rs may be NULL (cb at once). */
void chat_db_replicas_close(chat_db_replicas_t *rs, void (*cb)(void *arg), void *arg);

#endif
