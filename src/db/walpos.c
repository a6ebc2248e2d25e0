/*
 * chat_db_exec_lsn: a write transaction that also returns the WAL position
 * after its commit (walpos.h), and the parser of PostgreSQL's LSN text.
 */
#include "db/walpos.h"
#include "core/alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct walpos_op {
    int n; /* the caller's statements */
    chat_db_cb cb;
    void *arg;
};

uint64_t chat_db_lsn_parse(const char *text)
{
    if (!text)
        return 0;
    char *end;
    unsigned long long hi = strtoull(text, &end, 16);
    if (end == text || *end != '/')
        return 0;
    const char *lo_text = end + 1;
    unsigned long long lo = strtoull(lo_text, &end, 16);
    if (end == lo_text || *end != '\0' || hi > 0xffffffffULL || lo > 0xffffffffULL)
        return 0;
    return (uint64_t)hi << 32 | (uint64_t)lo;
}

static void walpos_cb(const chat_db_result_t *r, void *arg)
{
    struct walpos_op *op = arg;
    chat_db_result_t out = *r;
    if (r->status == CHAT_EOK) {
        out.nres = op->n;
        const PGresult *last = r->nres == op->n + 2 ? r->res[op->n + 1] : NULL;
        if (last && PQresultStatus(last) == PGRES_TUPLES_OK && PQntuples(last) == 1)
            out.lsn = chat_db_lsn_parse(PQgetvalue(last, 0, 0));
    }
    op->cb(&out, op->arg);
    free(op);
}

void chat_db_exec_lsn(chat_db_t *db, const chat_db_stmt_t *stmts, int n, int flags, chat_db_cb cb,
                      void *arg)
{
    chat_db_stmt_t all[CHAT_DB_MAX_STMTS];
    if (n < 1 || n > CHAT_DB_MAX_STMTS - 2) {
        chat_db_exec(db, stmts, n, flags, cb, arg); /* the pool rejects the count */
        return;
    }
    memcpy(all, stmts, (size_t)n * sizeof *all);
    /*
     * COMMIT in the pipeline's implicit transaction commits it (PostgreSQL
     * notes "there is no transaction in progress", which conn.c drops); the
     * SELECT then runs in a transaction of its own, after the commit.
     */
    all[n] = (chat_db_stmt_t){"COMMIT", 0, NULL};
    all[n + 1] = (chat_db_stmt_t){"SELECT pg_current_wal_insert_lsn()::text", 0, NULL};
    struct walpos_op *op = chat_malloc(sizeof *op);
    op->n = n;
    op->cb = cb;
    op->arg = arg;
    chat_db_exec(db, all, n + 2, flags, walpos_cb, op);
}
