/*
 * A write's WAL position: chat_db_exec_lsn() runs a write transaction as
 * chat_db_exec() does, with two more statements in the same pipeline — COMMIT
 * (which ends the implicit transaction there) and SELECT
 * pg_current_wal_insert_lsn() — so the position returned is at or past the
 * end of the write's commit record, at no extra round trip. A replica whose
 * replay position has reached it shows the write (db/replica.h).
 */
#ifndef CHAT_DB_WALPOS_H
#define CHAT_DB_WALPOS_H

#include "db/path.h"

#include <stdint.h>

/**
 * chat_db_exec() of stmts[0..n) (n <= CHAT_DB_MAX_STMTS - 2), then COMMIT and
 * the position: cb sees the result of stmts only (nres == n), with r->lsn
 * set on CHAT_EOK (0 if the position could not be read).
 */
void chat_db_exec_lsn(chat_db_t *db, const chat_db_stmt_t *stmts, int n, int flags, chat_db_cb cb,
                      void *arg);

/** Parses PostgreSQL's "XXXXXXXX/XXXXXXXX" text form; 0 when malformed. */
uint64_t chat_db_lsn_parse(const char *text);

#endif
