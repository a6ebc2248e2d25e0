/*
 * Unit tests of db/txn.c: the one deep copy of a transaction's statements and
 * parameters made at submit.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "db/txn.c"

#include <string.h>

static void test_params_copied(void **state)
{
    char p1[] = "hello", p2[] = "world";
    const char *params[] = {p1, NULL, p2};
    chat_db_stmt_t st[2] = {{"SELECT $1, $2, $3", 3, params}, {"SELECT 1", 0, NULL}};
    chat_db_txn_t *txn = chat_db_txn_create(st, 2, CHAT_DB_RETRY_SENT);
    memset(p1, 'x', 5);
    memset(p2, 'y', 5);
    assert_true(chat_db_txn_valid(txn));
    assert_int_equal(txn->n, 2);
    assert_int_equal(txn->flags, CHAT_DB_RETRY_SENT);
    assert_string_equal(txn->stmts[0].params[0], "hello");
    assert_null(txn->stmts[0].params[1]);
    assert_string_equal(txn->stmts[0].params[2], "world");
    assert_int_equal(txn->stmts[1].nparams, 0);
    assert_ptr_equal(txn->stmts[1].sql, st[1].sql);
    assert_ptr_equal(txn->stmts[0].sql, st[0].sql); /* the sql is not copied */
    chat_db_txn_destroy(txn);
}

static void test_bad_count_gives_no_statements(void **state)
{
    chat_db_stmt_t st[CHAT_DB_MAX_STMTS + 1];
    for (int i = 0; i <= CHAT_DB_MAX_STMTS; i++)
        st[i] = (chat_db_stmt_t){"SELECT 1", 0, NULL};
    chat_db_txn_t *none = chat_db_txn_create(st, 0, 0);
    chat_db_txn_t *many = chat_db_txn_create(st, CHAT_DB_MAX_STMTS + 1, 0);
    chat_db_txn_t *max = chat_db_txn_create(st, CHAT_DB_MAX_STMTS, 0);
    assert_false(chat_db_txn_valid(none));
    assert_false(chat_db_txn_valid(many));
    assert_int_equal(many->n, 0);
    assert_true(chat_db_txn_valid(max));
    assert_int_equal(max->n, CHAT_DB_MAX_STMTS);
    chat_db_txn_destroy(none);
    chat_db_txn_destroy(many);
    chat_db_txn_destroy(max);
    chat_db_txn_destroy(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_params_copied),
        cmocka_unit_test(test_bad_count_gives_no_statements),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
