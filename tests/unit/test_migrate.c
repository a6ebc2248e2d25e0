/*
 * Unit tests of db/migrate.c: versions from file names, the embedded list,
 * failure to connect, and (when CHATD_TEST_PG holds a conninfo) a real run
 * that applies every migration once and nothing on the second run.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test_pg.h"

#include "db/migrate.c"

#include <stdlib.h>
#include <string.h>

static void test_version_of(void **state)
{
    char v[16];
    version_of("001_schema.sql", v, sizeof v);
    assert_string_equal(v, "001_schema");
    version_of("002_noext", v, sizeof v);
    assert_string_equal(v, "002_noext");
    version_of("123456789012345678901.sql", v, sizeof v);
    assert_string_equal(v, "123456789012345");
}

static void test_embedded_in_order(void **state)
{
    assert_true(chat_migrations_count >= 1);
    for (int i = 0; i < chat_migrations_count; i++) {
        assert_non_null(chat_migrations[i].sql);
        assert_true(strlen(chat_migrations[i].sql) > 0);
        if (i > 0)
            assert_true(strcmp(chat_migrations[i - 1].name, chat_migrations[i].name) < 0);
    }
}

static void test_connect_failure(void **state)
{
    char err[256];
    int n = chat_db_migrate("host=/nonexistent-chatd-test port=1", err, sizeof err);
    assert_int_equal(n, CHAT_EDOWN);
    assert_non_null(strstr(err, "connect"));
    assert_null(strchr(err, '\n'));
}

static void test_unknown_target_refused_before_connecting(void **state)
{
    char err[256];
    assert_int_equal(
        chat_db_migrate_to("host=/nonexistent-chatd-test port=1", "999_nope", err, sizeof err),
        CHAT_EINVAL);
    assert_non_null(strstr(err, "999_nope"));
    /* a known name, with or without .sql, gets as far as connecting */
    assert_int_equal(
        chat_db_migrate_to("host=/nonexistent-chatd-test port=1", "002_op_ids", err, sizeof err),
        CHAT_EDOWN);
    assert_int_equal(chat_db_migrate_to("host=/nonexistent-chatd-test port=1", "001_schema.sql",
                                        err, sizeof err),
                     CHAT_EDOWN);
}

static void test_real_server(void **state)
{
    const char *conninfo = test_pg_conninfo();
    if (!conninfo)
        skip();
    char err[512] = "";
    int first = chat_db_migrate(conninfo, err, sizeof err);
    if (first < 0)
        fail_msg("migrate: %s", err);
    assert_true(first <= chat_migrations_count);
    assert_int_equal(chat_db_migrate(conninfo, err, sizeof err), 0);

    PGconn *pg = PQconnectdb(conninfo);
    assert_int_equal(PQstatus(pg), CONNECTION_OK);
    PGresult *r = PQexec(pg, "SELECT count(*) FROM schema_migrations");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_int_equal(atoi(PQgetvalue(r, 0, 0)), chat_migrations_count);
    PQclear(r);
    PQfinish(pg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_version_of),
        cmocka_unit_test(test_embedded_in_order),
        cmocka_unit_test(test_connect_failure),
        cmocka_unit_test(test_unknown_target_refused_before_connecting),
        cmocka_unit_test(test_real_server),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
