/*
 * Unit tests of cache/flight.c: coalescing of concurrent misses.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "cache/flight.h"
#include "core/metrics.h"

#include <stdio.h>
#include <string.h>

struct answer {
    int calls;
    int status;
    char val[32];
    const chat_blob_t *blob; /* the bytes shared with the other waiters */
};

static void answer_cb(int status, chat_blob_t *val, void *arg)
{
    struct answer *a = arg;
    a->calls++;
    a->status = status;
    a->blob = val;
    a->val[0] = '\0';
    if (val) {
        memcpy(a->val, val->data, val->len);
        a->val[val->len] = '\0';
    }
}

/* Lands with a value of the given text (status 0) or none, as the read path does. */
static void land(chat_flights_t *f, const char *key, int status, const char *text, int keep)
{
    chat_blob_t *v = status == 0 ? chat_blob_copy(text, strlen(text)) : NULL;
    chat_flight_land(f, key, status, v, keep);
    chat_blob_unref(v);
}

static void land_at(chat_flights_t *f, chat_flight_t *fl, int status, const char *text, int keep)
{
    chat_blob_t *v = status == 0 ? chat_blob_copy(text, strlen(text)) : NULL;
    chat_flight_land_at(f, fl, status, v, keep);
    chat_blob_unref(v);
}

/* The value of a metric the flight table registered (the registry returns the same one). */
static double metric(const char *name)
{
    return chat_metric_value(chat_metric_series(chat_metrics_counter(name, ""), ""));
}

static void test_flight_coalesces(void **state)
{
    chat_flights_t *f = chat_flights_create();
    struct answer a[5] = {{0}};
    double waiting = metric("chatd_cache_reads_waiting");
    double shared = metric("chatd_cache_coalesced_total");
    assert_int_equal(chat_flight_join(f, "k", answer_cb, &a[0]), CHAT_FLIGHT_LEADER);
    for (int i = 1; i < 4; i++)
        assert_int_equal(chat_flight_join(f, "k", answer_cb, &a[i]), CHAT_FLIGHT_JOINED);
    assert_int_equal(chat_flights_count(f), 1);
    assert_true(metric("chatd_cache_reads_waiting") == waiting + 4); /* the leader too */
    assert_true(metric("chatd_cache_coalesced_total") == shared + 3);
    land(f, "k", 0, "page", 1);
    assert_true(metric("chatd_cache_reads_waiting") == waiting);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(a[i].calls, 1);
        assert_string_equal(a[i].val, "page");
        assert_ptr_equal(a[i].blob, a[0].blob); /* one copy for every waiter */
    }
    /* A miss that raced the fill is answered from the landed value. */
    assert_int_equal(chat_flight_join(f, "k", answer_cb, &a[4]), CHAT_FLIGHT_LANDED);
    assert_int_equal(a[4].calls, 1);
    assert_true(metric("chatd_cache_coalesced_total") == shared + 4);
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
    land(f, "x", 7, "", 0);
    assert_int_equal(a.status, 7);
    assert_int_equal(b.status, 7);
    assert_int_equal(c.calls, 0);
    assert_int_equal(chat_flights_count(f), 1);
    /* Errors are not kept: the next miss loads again. */
    assert_int_equal(chat_flight_join(f, "x", answer_cb, &a), CHAT_FLIGHT_LEADER);
    land(f, "x", 0, "v", 0);
    land(f, "y", 0, "w", 0);
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
        land(f, key, 0, "x", 0);
    }
    assert_int_equal(chat_flights_count(f), 1500);
    chat_flights_destroy(f); /* with flights left: freed, nobody called */
}

struct started {
    int calls;
    chat_flight_t *fl;
};

static struct started last_started;

static void start_cb(chat_flight_t *fl, void *arg)
{
    (void)arg;
    last_started.calls++;
    last_started.fl = fl;
}

/*
 * The loading flight takes the reads that began before it started, and those
 * of its own version; later reads wait for the next flight, which starts
 * when the first lands.
 */
static void test_flight_joins_by_time_or_tag(void **state)
{
    chat_flights_t *f = chat_flights_create();
    struct answer a[6] = {{0}};
    chat_flight_t *first = NULL, *next = NULL, *fl = NULL;
    last_started = (struct started){0};
    assert_int_equal(
        chat_flight_join_at(f, "p", NULL, 1, false, answer_cb, &a[0], start_cb, &first),
        CHAT_FLIGHT_LEADER);
    /* Began before it started: joins, proven or not. */
    assert_int_equal(chat_flight_join_at(f, "p", NULL, 2, false, answer_cb, &a[1], start_cb, &fl),
                     CHAT_FLIGHT_JOINED);
    assert_ptr_equal(fl, first);
    /* Began after: leads the next flight, which waits. */
    assert_int_equal(
        chat_flight_join_at(f, "p", NULL, UINT64_MAX, true, answer_cb, &a[2], start_cb, &next),
        CHAT_FLIGHT_QUEUED);
    assert_ptr_not_equal(next, first);
    /* Another late one joins the next flight and gives it its version to fill. */
    assert_int_equal(
        chat_flight_join_at(f, "p", "p:v1", UINT64_MAX, true, answer_cb, &a[3], start_cb, &fl),
        CHAT_FLIGHT_JOINED);
    assert_ptr_equal(fl, next);
    assert_null(chat_flight_tag(first));
    assert_string_equal(chat_flight_tag(next), "p:v1");
    assert_int_equal(chat_flights_count(f), 2);
    assert_int_equal(last_started.calls, 0);
    /* The first lands: its two waiters are answered, the next one starts. */
    land_at(f, first, 0, "old", 1);
    assert_string_equal(a[0].val, "old");
    assert_string_equal(a[1].val, "old");
    assert_int_equal(a[2].calls, 0);
    assert_int_equal(last_started.calls, 1);
    assert_ptr_equal(last_started.fl, next);
    assert_int_equal(chat_flights_count(f), 1); /* no tag: nothing kept */
    /* A read of the same version joins it while it loads, however late it began. */
    assert_int_equal(
        chat_flight_join_at(f, "p", "p:v1", UINT64_MAX, false, answer_cb, &a[4], start_cb, &fl),
        CHAT_FLIGHT_JOINED);
    land_at(f, next, 0, "new", 1);
    assert_string_equal(a[2].val, "new");
    assert_string_equal(a[3].val, "new");
    assert_string_equal(a[4].val, "new");
    /* Landed under its version: taken at once only by a read that needs no check. */
    assert_int_equal(
        chat_flight_join_at(f, "p", "p:v1", UINT64_MAX, true, answer_cb, &a[5], start_cb, &fl),
        CHAT_FLIGHT_LANDED);
    assert_string_equal(a[5].val, "new");
    assert_int_equal(
        chat_flight_join_at(f, "p", "p:v1", UINT64_MAX, false, answer_cb, &a[5], start_cb, &fl),
        CHAT_FLIGHT_LEADER);
    land_at(f, fl, 7, "", 1);
    assert_int_equal(a[5].status, 7);
    chat_flight_remove(f, "p:v1");
    assert_int_equal(chat_flights_count(f), 0);
    chat_flights_destroy(f);
}

/* A read of another version that began after the load started waits for the next flight. */
static void test_flight_other_version_waits(void **state)
{
    chat_flights_t *f = chat_flights_create();
    struct answer a[3] = {{0}};
    chat_flight_t *first = NULL, *fl = NULL;
    assert_int_equal(
        chat_flight_join_at(f, "q", "q:v1", 0, true, answer_cb, &a[0], start_cb, &first),
        CHAT_FLIGHT_LEADER);
    assert_int_equal(
        chat_flight_join_at(f, "q", "q:v2", UINT64_MAX, true, answer_cb, &a[1], start_cb, &fl),
        CHAT_FLIGHT_QUEUED);
    assert_string_equal(chat_flight_tag(fl), "q:v2");
    chat_flights_destroy(f); /* with both left: freed, nobody called */
    assert_int_equal(a[0].calls + a[1].calls, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flight_coalesces),
        cmocka_unit_test(test_flight_error_ends_flight),
        cmocka_unit_test(test_flight_many_keys),
        cmocka_unit_test(test_flight_joins_by_time_or_tag),
        cmocka_unit_test(test_flight_other_version_waits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
