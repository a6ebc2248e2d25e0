/*
 * Unit tests of db/resolve.c: which conninfos need a lookup, and the lookup
 * on libuv's thread pool (localhost, a name that cannot exist, a cancel).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/alloc.h"
#include "db/resolve.c"

#include <string.h>

static void test_host_to_resolve(void **state)
{
    struct {
        const char *conninfo, *want;
    } cases[] = {
        {"host=db.example port=5432", "db.example"},
        {"postgresql://chatd@pgbouncer:6432/chatd", "pgbouncer"},
        {"host=/tmp port=5432", NULL},
        {"host=127.0.0.1", NULL},
        {"postgresql://[::1]:5432/x", NULL},
        {"host=db.example hostaddr=10.0.0.1", NULL},
        {"host=a,b", NULL},
        {"dbname=x", NULL},
        {"not a conninfo '", NULL},
    };
    for (size_t i = 0; i < CHAT_ARRAY_LEN(cases); i++) {
        char *got = chat_db_resolve_host(cases[i].conninfo);
        if (cases[i].want)
            assert_string_equal(got, cases[i].want);
        else
            assert_null(got);
        free(got);
    }
}

typedef struct answer {
    int calls, status;
    char hosts[256], addrs[256], why[320];
} answer_t;

static void answer_cb(int status, const char *hosts, const char *addrs, const char *why, void *arg)
{
    answer_t *a = arg;
    a->calls++;
    a->status = status;
    snprintf(a->hosts, sizeof a->hosts, "%s", hosts ? hosts : "");
    snprintf(a->addrs, sizeof a->addrs, "%s", addrs ? addrs : "");
    snprintf(a->why, sizeof a->why, "%s", why ? why : "");
}

static void test_lookup_localhost(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    answer_t a = {0};
    chat_db_resolve_t *r;
    assert_int_equal(chat_db_resolve_start(&loop, "localhost", answer_cb, &a, &r), 0);
    assert_int_equal(a.calls, 0); /* never from inside start */
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.status, 0);
    /* One host name per address, in matching lists. */
    int commas_h = 0, commas_a = 0;
    for (char *p = a.hosts; *p; p++)
        commas_h += *p == ',';
    for (char *p = a.addrs; *p; p++)
        commas_a += *p == ',';
    assert_int_equal(commas_h, commas_a);
    assert_int_equal(strncmp(a.hosts, "localhost", 9), 0);
    assert_true(strstr(a.addrs, "127.0.0.1") || strstr(a.addrs, "::1"));
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_lookup_failure_and_cancel(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    answer_t bad = {0}, gone = {0};
    chat_db_resolve_t *r1, *r2;
    assert_int_equal(chat_db_resolve_start(&loop, "no-such-host.invalid", answer_cb, &bad, &r1), 0);
    assert_int_equal(chat_db_resolve_start(&loop, "localhost", answer_cb, &gone, &r2), 0);
    chat_db_resolve_cancel(r2);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(bad.calls, 1);
    assert_true(bad.status < 0);
    assert_non_null(strstr(bad.why, "could not resolve 'no-such-host.invalid'"));
    assert_int_equal(gone.calls, 1); /* a cancelled lookup still reports, once */
    assert_int_equal(gone.status, UV_ECANCELED);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_host_to_resolve),
        cmocka_unit_test(test_lookup_localhost),
        cmocka_unit_test(test_lookup_failure_and_cancel),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
