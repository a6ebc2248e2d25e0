/*
 * Unit tests of cache/flight.c: coalescing of concurrent misses.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "cache/flight.h"

#include <stdio.h>
#include <string.h>

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

static void test_flight_many_keys(void **state)
{
    chat_flights_t *f = chat_flights_create();
    struct answer a[300] = {{0}};
    char key[32];
    /* more keys than buckets share some buckets */
    for (int i = 0; i < 3000; i++) {
        snprintf(key, sizeof key, "k%d", i);
        assert_int_equal(chat_flight_join(f, key, answer_cb, &a[i % 300]), CHAT_FLIGHT_LEADER);
    }
    assert_int_equal(chat_flights_count(f), 3000);
    for (int i = 0; i < 3000; i += 2) {
        snprintf(key, sizeof key, "k%d", i);
        chat_flight_land(f, key, 0, "x", 1, 0);
    }
    assert_int_equal(chat_flights_count(f), 1500);
    chat_flights_destroy(f); /* with flights left: freed, nobody called */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flight_coalesces),
        cmocka_unit_test(test_flight_error_ends_flight),
        cmocka_unit_test(test_flight_many_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
