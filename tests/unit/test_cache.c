/*
 * Unit tests of the cache pieces that need no Redis: key building, the TTL
 * rules, the coalescing table, and the worker's copies of values.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "cache/flight.h"
#include "cache/keys.h"
#include "cache/local.h"

#include <stdio.h>
#include <string.h>

static void test_keys_have_contract_prefixes(void **state)
{
    char k[CHAT_CACHE_KEY_MAX];
    chat_cache_key_history(k, 7, 50, 0, 0);
    assert_string_equal(k, "msg:history:7:50:0");
    chat_cache_key_history(k, 7, 20, 40, 0);
    assert_string_equal(k, "msg:history:7:20:40");
    chat_cache_key_history(k, 7, 20, 0, 991);
    assert_string_equal(k, "msg:history:7:20:0:b991");
    chat_cache_key_count(k, 9223372036854775807LL);
    assert_string_equal(k, "msg:count:9223372036854775807");
    chat_cache_key_metadata(k, 3);
    assert_string_equal(k, "conv:metadata:3");
    chat_cache_key_profile(k, 12);
    assert_string_equal(k, "user:profile:12");
    chat_cache_key_version(k, 3);
    assert_string_equal(k, "conv:ver:3");
    /* The longest possible key fits. */
    size_t n = chat_cache_key_history(k, INT64_MAX, 100, 100000, INT64_MAX);
    assert_true(n < CHAT_CACHE_KEY_MAX - 64); /* room for ":e<epoch>:v<version>" */
}

static void test_ttl_rules(void **state)
{
    assert_int_equal(chat_cache_ttl(CHAT_CACHE_HISTORY, 0, 0), 30);
    assert_int_equal(chat_cache_ttl(CHAT_CACHE_HISTORY, 50, 0), 60);
    assert_int_equal(chat_cache_ttl(CHAT_CACHE_HISTORY, 0, 10), 60); /* an older page */
    assert_int_equal(chat_cache_ttl(CHAT_CACHE_COUNT, 0, 0), 60);
    assert_int_equal(chat_cache_ttl(CHAT_CACHE_METADATA, 0, 0), 300);
    assert_int_equal(chat_cache_ttl(CHAT_CACHE_PROFILE, 0, 0), 600);
    assert_string_equal(chat_cache_kind_name(CHAT_CACHE_HISTORY), "history");
    assert_string_equal(chat_cache_kind_name(CHAT_CACHE_PROFILE), "profile");
}

struct answer {
    int calls;
    int status;
    char val[32];
};

static void answer_cb(int status, const char *val, size_t len, void *arg)
{
    struct answer *a = arg;
    a->calls++;
    a->status = status;
    memcpy(a->val, val, len);
    a->val[len] = '\0';
}

static void test_flight_coalesces(void **state)
{
    chat_flights_t *f = chat_flights_create();
    struct answer a[5] = {{0}};
    assert_int_equal(chat_flight_join(f, "k", answer_cb, &a[0]), CHAT_FLIGHT_LEADER);
    for (int i = 1; i < 4; i++)
        assert_int_equal(chat_flight_join(f, "k", answer_cb, &a[i]), CHAT_FLIGHT_JOINED);
    assert_int_equal(chat_flights_count(f), 1);
    chat_flight_land(f, "k", 0, "page", 4, 1);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(a[i].calls, 1);
        assert_string_equal(a[i].val, "page");
    }
    /* A miss that raced the fill is answered from the landed value. */
    assert_int_equal(chat_flight_join(f, "k", answer_cb, &a[4]), CHAT_FLIGHT_LANDED);
    assert_int_equal(a[4].calls, 1);
    assert_string_equal(a[4].val, "page");
    chat_flight_remove(f, "k");
    assert_int_equal(chat_flights_count(f), 0);
    chat_flights_destroy(f);
}

static void test_flight_error_ends_flight(void **state)
{
    chat_flights_t *f = chat_flights_create();
    struct answer a = {0}, b = {0}, c = {0};
    assert_int_equal(chat_flight_join(f, "x", answer_cb, &a), CHAT_FLIGHT_LEADER);
    assert_int_equal(chat_flight_join(f, "x", answer_cb, &b), CHAT_FLIGHT_JOINED);
    assert_int_equal(chat_flight_join(f, "y", answer_cb, &c), CHAT_FLIGHT_LEADER);
    chat_flight_land(f, "x", 7, "", 0, 0);
    assert_int_equal(a.status, 7);
    assert_int_equal(b.status, 7);
    assert_int_equal(c.calls, 0);
    assert_int_equal(chat_flights_count(f), 1);
    /* Errors are not kept: the next miss loads again. */
    assert_int_equal(chat_flight_join(f, "x", answer_cb, &a), CHAT_FLIGHT_LEADER);
    chat_flight_land(f, "x", 0, "v", 1, 0);
    chat_flight_land(f, "y", 0, "w", 1, 0);
    assert_int_equal(chat_flights_count(f), 0);
    chat_flights_destroy(f);
}

static void test_local_keeps_and_replaces(void **state)
{
    chat_local_t *l = chat_local_create(16, 1 << 20);
    chat_local_entry_t e;
    assert_int_equal(chat_local_get(l, "msg:history:7:50:0", 0, &e), 0);
    chat_local_put(l, "msg:history:7:50:0", "msg:history:7:50:0:ea:vb", "page-1", 6, 0, 1000);
    assert_int_equal(chat_local_get(l, "msg:history:7:50:0", 10, &e), 1);
    assert_string_equal(e.vkey, "msg:history:7:50:0:ea:vb");
    assert_int_equal(e.len, 6);
    assert_memory_equal(e.val, "page-1", 6);
    /* a newer version replaces the copy */
    chat_local_put(l, "msg:history:7:50:0", "msg:history:7:50:0:ea:vc", "page-2!", 7, 20, 1000);
    assert_int_equal(chat_local_get(l, "msg:history:7:50:0", 30, &e), 1);
    assert_string_equal(e.vkey, "msg:history:7:50:0:ea:vc");
    assert_memory_equal(e.val, "page-2!", 7);
    /* another prefix is not this one, even in the same slot */
    assert_int_equal(chat_local_get(l, "msg:history:8:50:0", 30, &e), 0);
    size_t b = chat_local_bytes(l);
    assert_true(b > 0);
    chat_local_destroy(l);
}

static void test_local_expires(void **state)
{
    chat_local_t *l = chat_local_create(4, 1 << 20);
    chat_local_entry_t e;
    chat_local_put(l, "user:profile:1", "user:profile:1:ex", "{}", 2, 0, 100);
    assert_int_equal(chat_local_get(l, "user:profile:1", 99, &e), 1);
    assert_int_equal(chat_local_get(l, "user:profile:1", 100, &e), 0);
    assert_int_equal(chat_local_bytes(l), 0); /* dropped when found expired */
    /* the sweep on put frees expired entries of other slots */
    for (int i = 0; i < 4; i++) {
        char p[32];
        snprintf(p, sizeof p, "conv:metadata:%d", i);
        chat_local_put(l, p, p, "x", 1, 0, 50);
    }
    size_t before = chat_local_bytes(l);
    assert_true(before > 0);
    for (int i = 0; i < 4; i++)
        chat_local_put(l, "msg:count:1", "msg:count:1:ex", "1", 1, 200,
                       100); /* already expired: not kept */
    assert_int_equal(chat_local_bytes(l), 0);
    chat_local_destroy(l);
}

static void test_local_byte_budget(void **state)
{
    chat_local_t *l = chat_local_create(64, 100);
    chat_local_entry_t e;
    char big[200];
    memset(big, 'v', sizeof big);
    chat_local_put(l, "msg:history:1:50:0", "k1", big, sizeof big, 0, 1000); /* over the budget */
    assert_int_equal(chat_local_get(l, "msg:history:1:50:0", 1, &e), 0);
    assert_int_equal(chat_local_bytes(l), 0);
    chat_local_put(l, "msg:history:1:50:0", "k1", big, 40, 0, 1000);
    assert_int_equal(chat_local_get(l, "msg:history:1:50:0", 1, &e), 1);
    assert_true(chat_local_bytes(l) <= 100);
    chat_local_put(l, "msg:history:2:50:0", "k2", big, 60, 0, 1000); /* would pass 100 */
    assert_int_equal(chat_local_get(l, "msg:history:2:50:0", 1, &e), 0);
    assert_true(chat_local_bytes(l) <= 100);
    chat_local_destroy(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys_have_contract_prefixes),
        cmocka_unit_test(test_ttl_rules),
        cmocka_unit_test(test_flight_coalesces),
        cmocka_unit_test(test_flight_error_ends_flight),
        cmocka_unit_test(test_local_keeps_and_replaces),
        cmocka_unit_test(test_local_expires),
        cmocka_unit_test(test_local_byte_budget),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
