/*
 * A database transaction as a caller submits it: a list of statements run as
 * one libpq pipeline with a single Sync (one implicit transaction, all or
 * nothing), the one deep copy of their parameters made at submit, and the
 * result handed to the caller's callback.
 */
#ifndef CHAT_DB_TXN_H
#define CHAT_DB_TXN_H

#include "core/error.h"

#include <libpq-fe.h>
#include <stdint.h>

/** Most statements one transaction may hold. */
#define CHAT_DB_MAX_STMTS 16

/** One statement: SQL with $1.. placeholders and text parameters. */
typedef struct chat_db_stmt {
    const char *sql; /* must outlive the transaction (a literal) */
    int nparams;
    const char *const *params; /* copied at submit; NULL entry = SQL NULL */
} chat_db_stmt_t;

/** Flags of a transaction. */
enum chat_db_flags {
    /*
     * The transaction only reads (or is idempotent): if its connection breaks
     * after it was sent, it is retried once on another connection, and the
     * path may hold it and send it again on the other path, instead of
     * failing. Without the flag it is retried only if it had not been sent.
     */
    CHAT_DB_RETRY_SENT = 1,
};

/**
 * The outcome of a transaction. status is one of:
 *   CHAT_EOK        every statement succeeded: res[0..nres-1], one per statement;
 *   CHAT_EREPLY     the server rejected a statement: sqlstate and message say why;
 *   CHAT_ETIMEDOUT  it waited in the queue past its deadline;
 *   CHAT_EDOWN      no connection could be made (nothing was sent);
 *   CHAT_ECONNLOST  its connection broke and it could not be retried;
 *   CHAT_ECLOSED    the pool or path is closing;
 *   CHAT_EINVAL     it had no statements or more than CHAT_DB_MAX_STMTS.
 */
typedef struct chat_db_result {
    chat_err_t status;
    const char *sqlstate; /* CHAT_EREPLY: five-character SQLSTATE, else NULL */
    const char *message;  /* human text for logs (never sent to clients) */
    PGresult *const *res; /* one per statement when status == CHAT_EOK */
    int nres;
    double queue_wait; /* seconds spent waiting for a connection */
    /* chat_db_exec_lsn: the WAL position after the commit (CHAT_EOK), else 0 */
    uint64_t lsn;
} chat_db_result_t;

/**
 * Called exactly once per transaction on the loop of the pool or path it was
 * given to. The result and its PGresults are owned by the caller of the
 * callback and cleared after it returns: copy what must outlive it.
 */
typedef void (*chat_db_cb)(const chat_db_result_t *r, void *arg);

/**
 * A submitted transaction: the statements and their parameters in one
 * allocation. Read-only once created; the path and the pool share it (the
 * path may send it again after a failure), so nothing is copied twice.
 */
typedef struct chat_db_txn {
    int n;                  /* statements, 0..CHAT_DB_MAX_STMTS (0 only for a rejected count) */
    int flags;              /* enum chat_db_flags */
    chat_db_stmt_t stmts[]; /* params point into the same allocation */
} chat_db_txn_t;

/**
 * Copies n statements and every parameter string into one allocation, which
 * the caller frees with chat_db_txn_destroy(). The sql strings are not
 * copied. A count outside 1..CHAT_DB_MAX_STMTS gives a transaction of no
 * statements, which every pool fails with CHAT_EINVAL. Never fails.
 */
chat_db_txn_t *chat_db_txn_create(const chat_db_stmt_t *stmts, int n, int flags);

/** True when the count of txn is one a pool accepts. */
int chat_db_txn_valid(const chat_db_txn_t *txn);

/** Frees a transaction made by chat_db_txn_create(); NULL is fine. */
void chat_db_txn_destroy(chat_db_txn_t *txn);

#endif
