/*
 * Unit tests of cache/local.c: the worker's copies of values.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "cache/local.h"

#include <stdio.h>
#include <string.h>

static void test_local_keeps_and_replaces(void **state)
{
    chat_cache_local_t *l = chat_cache_local_create(16, 1 << 20);
    chat_cache_local_entry_t e;
    assert_int_equal(chat_cache_local_get(l, "msg:history:7:50:0", 0, &e), 0);
    chat_cache_local_put(l, "msg:history:7:50:0", "msg:history:7:50:0:ea:vb", "page-1", 6, 0, 1000);
    assert_int_equal(chat_cache_local_get(l, "msg:history:7:50:0", 10, &e), 1);
    assert_string_equal(e.vkey, "msg:history:7:50:0:ea:vb");
    assert_int_equal(e.len, 6);
    assert_memory_equal(e.val, "page-1", 6);
    /* a newer version replaces the copy */
    chat_cache_local_put(l, "msg:history:7:50:0", "msg:history:7:50:0:ea:vc", "page-2!", 7, 20,
                         1000);
    assert_int_equal(chat_cache_local_get(l, "msg:history:7:50:0", 30, &e), 1);
    assert_string_equal(e.vkey, "msg:history:7:50:0:ea:vc");
    assert_memory_equal(e.val, "page-2!", 7);
    /* another prefix is not this one, even in the same slot */
    assert_int_equal(chat_cache_local_get(l, "msg:history:8:50:0", 30, &e), 0);
    size_t b = chat_cache_local_bytes(l);
    assert_true(b > 0);
    chat_cache_local_destroy(l);
}

static void test_local_expires(void **state)
{
    chat_cache_local_t *l = chat_cache_local_create(4, 1 << 20);
    chat_cache_local_entry_t e;
    chat_cache_local_put(l, "user:profile:1", "user:profile:1:ex", "{}", 2, 0, 100);
    assert_int_equal(chat_cache_local_get(l, "user:profile:1", 99, &e), 1);
    assert_int_equal(chat_cache_local_get(l, "user:profile:1", 100, &e), 0);
    assert_int_equal(chat_cache_local_bytes(l), 0); /* dropped when found expired */
    /* the sweep on put frees expired entries of other slots */
    for (int i = 0; i < 4; i++) {
        char p[32];
        snprintf(p, sizeof p, "conv:metadata:%d", i);
        chat_cache_local_put(l, p, p, "x", 1, 0, 50);
    }
    size_t before = chat_cache_local_bytes(l);
    assert_true(before > 0);
    for (int i = 0; i < 4; i++)
        chat_cache_local_put(l, "msg:count:1", "msg:count:1:ex", "1", 1, 200,
                             100); /* already expired: not kept */
    assert_int_equal(chat_cache_local_bytes(l), 0);
    chat_cache_local_destroy(l);
}

static void test_local_byte_budget(void **state)
{
    chat_cache_local_t *l = chat_cache_local_create(64, 100);
    chat_cache_local_entry_t e;
    char big[200];
    memset(big, 'v', sizeof big);
    chat_cache_local_put(l, "msg:history:1:50:0", "k1", big, sizeof big, 0,
                         1000); /* over the budget */
    assert_int_equal(chat_cache_local_get(l, "msg:history:1:50:0", 1, &e), 0);
    assert_int_equal(chat_cache_local_bytes(l), 0);
    chat_cache_local_put(l, "msg:history:1:50:0", "k1", big, 40, 0, 1000);
    assert_int_equal(chat_cache_local_get(l, "msg:history:1:50:0", 1, &e), 1);
    assert_true(chat_cache_local_bytes(l) <= 100);
    chat_cache_local_put(l, "msg:history:2:50:0", "k2", big, 60, 0, 1000); /* would pass 100 */
    assert_int_equal(chat_cache_local_get(l, "msg:history:2:50:0", 1, &e), 0);
    assert_true(chat_cache_local_bytes(l) <= 100);
    chat_cache_local_destroy(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_local_keeps_and_replaces),
        cmocka_unit_test(test_local_expires),
        cmocka_unit_test(test_local_byte_budget),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
