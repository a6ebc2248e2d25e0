/*
 * A submitted transaction: the one deep copy of its statements' parameters,
 * laid out in a single allocation (statements, then parameter pointers, then
 * the strings), made once at submit and shared by the path and the pool.
 */
#include "db/txn.h"

#include "core/alloc.h"

#include <stdlib.h>
#include <string.h>

chat_db_txn_t *chat_db_txn_create(const chat_db_stmt_t *stmts, int n, int flags)
{
    if (n < 1 || n > CHAT_DB_MAX_STMTS)
        n = 0;
    size_t nptr = 0, nbytes = 0;
    for (int i = 0; i < n; i++) {
        nptr += (size_t)stmts[i].nparams;
        for (int j = 0; j < stmts[i].nparams; j++)
            if (stmts[i].params[j])
                nbytes += strlen(stmts[i].params[j]) + 1;
    }
    size_t size =
        sizeof(chat_db_txn_t) + (size_t)n * sizeof(chat_db_stmt_t) + nptr * sizeof(char *) + nbytes;
    chat_db_txn_t *txn = chat_calloc(1, size);
    const char **ptrs = (const char **)(void *)&txn->stmts[n];
    char *bytes = (char *)(ptrs + nptr);
    for (int i = 0; i < n; i++) {
        txn->stmts[i].sql = stmts[i].sql;
        txn->stmts[i].nparams = stmts[i].nparams;
        txn->stmts[i].params = ptrs;
        for (int j = 0; j < stmts[i].nparams; j++) {
            const char *p = stmts[i].params[j];
            if (p) {
                size_t len = strlen(p) + 1;
                memcpy(bytes, p, len);
                *ptrs = bytes;
                bytes += len;
            } else {
                *ptrs = NULL;
            }
            ptrs++;
        }
    }
    txn->n = n;
    txn->flags = flags;
    return txn;
}

int chat_db_txn_valid(const chat_db_txn_t *txn)
{
    return txn->n >= 1 && txn->n <= CHAT_DB_MAX_STMTS;
}

void chat_db_txn_destroy(chat_db_txn_t *txn)
{
    free(txn);
}
