/*
 * Unit tests of core/gcra.c: the parameters of a rate, the GCRA step (bursts,
 * spacing, waits, the bound over any window), Retry-After rounding, and the
 * bounded table (stale keys dropped, the cap, long keys, one budget under
 * concurrent threads).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/gcra.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SEC 1000000LL

static void test_make(void **state)
{
    chat_gcra_t g = chat_gcra_make(20, 1, 40);
    assert_int_equal(g.interval_us, 50000);
    assert_int_equal(g.tolerance_us, 2 * SEC);
    g = chat_gcra_make(10, 60, 10);
    assert_int_equal(g.interval_us, 6 * SEC);
    assert_int_equal(g.tolerance_us, 60 * SEC);
    g = chat_gcra_make(7, 60, 7); /* 8.571428 s, rounded */
    assert_int_equal(g.interval_us, 8571429);
    g = chat_gcra_make(1000000, 1, 1);
    assert_int_equal(g.interval_us, 1);
    g = chat_gcra_make(3, 1, 1);
    assert_int_equal(g.interval_us, 333333);
}

static void test_burst_then_spacing(void **state)
{
    chat_gcra_t g = chat_gcra_make(1, 1, 5); /* 1/s, bursts of 5 */
    int64_t tat = 0, now = 1000 * SEC;
    for (int i = 0; i < 5; i++)
        assert_int_equal(chat_gcra_update(&g, &tat, now), 0);
    int64_t before = tat;
    assert_int_equal(chat_gcra_update(&g, &tat, now), SEC); /* one interval to wait */
    assert_int_equal(tat, before);                          /* a refusal changes nothing */
    assert_int_equal(chat_gcra_update(&g, &tat, now + SEC / 2), SEC / 2);
    assert_int_equal(chat_gcra_update(&g, &tat, now + SEC), 0); /* exactly then */
    assert_int_equal(chat_gcra_update(&g, &tat, now + SEC), SEC);
    /* idle for longer than the burst takes to refill: a full burst again */
    now += 100 * SEC;
    for (int i = 0; i < 5; i++)
        assert_int_equal(chat_gcra_update(&g, &tat, now), 0);
    assert_true(chat_gcra_update(&g, &tat, now) > 0);
}

static void test_burst_of_one_is_even_spacing(void **state)
{
    chat_gcra_t g = chat_gcra_make(4, 1, 1); /* one every 250 ms, none ahead */
    int64_t tat = 0, now = 5 * SEC;
    assert_int_equal(chat_gcra_update(&g, &tat, now), 0);
    assert_int_equal(chat_gcra_update(&g, &tat, now + 100000), 150000);
    assert_int_equal(chat_gcra_update(&g, &tat, now + 250000), 0);
    assert_int_equal(chat_gcra_update(&g, &tat, now + 499999), 1);
}

/* Random arrivals: over any window of length w, at most burst + w / T conform. */
static void test_bound_over_any_window(void **state)
{
    chat_gcra_t g = chat_gcra_make(10, 1, 4); /* T = 100 ms */
    enum { N = 20000 };
    static int64_t ok[N];
    int nok = 0;
    int64_t tat = 0, now = SEC;
    srand(7);
    for (int i = 0; i < N; i++) {
        now += rand() % 60000; /* 0-60 ms apart: about three times the rate */
        if (chat_gcra_update(&g, &tat, now) == 0)
            ok[nok++] = now;
    }
    int64_t span = ok[nok - 1] - ok[0];
    assert_true(nok > span / g.interval_us); /* the rate is reached, not just bounded */
    for (int i = 0; i < nok; i++) {
        for (int j = i; j < nok; j++) {
            int64_t w = ok[j] - ok[i];
            if (j - i + 1 > 4 + w / g.interval_us)
                fail_msg("%d events in %lld us", j - i + 1, (long long)w);
            if (w > 2 * SEC)
                break;
        }
    }
}

static void test_retry_after_rounding(void **state)
{
    assert_int_equal(chat_gcra_retry_after_s(1), 1);
    assert_int_equal(chat_gcra_retry_after_s(0), 1);
    assert_int_equal(chat_gcra_retry_after_s(SEC), 1);
    assert_int_equal(chat_gcra_retry_after_s(SEC + 1), 2);
    assert_int_equal(chat_gcra_retry_after_s(60 * SEC - 5), 60);
}

static void test_table_counts_per_key(void **state)
{
    chat_gcra_table_t *t = chat_gcra_table_create(100);
    chat_gcra_t g = chat_gcra_make(1, 60, 2);
    int64_t now = 10 * SEC;
    assert_int_equal(chat_gcra_table_update(t, &g, "rate:send:{u:1}", now), 0);
    assert_int_equal(chat_gcra_table_update(t, &g, "rate:send:{u:1}", now), 0);
    assert_int_equal(chat_gcra_table_update(t, &g, "rate:send:{u:1}", now), 60 * SEC);
    assert_int_equal(chat_gcra_table_update(t, &g, "rate:send:{u:2}", now), 0);
    assert_int_equal(chat_gcra_table_len(t), 2);
    /* a refused event of a new key is impossible (burst >= 1); one of a known key adds nothing */
    assert_true(chat_gcra_table_update(t, &g, "rate:send:{u:1}", now + SEC) > 0);
    assert_int_equal(chat_gcra_table_len(t), 2);
    chat_gcra_table_destroy(t);
}

static void test_table_drops_stale_keys(void **state)
{
    chat_gcra_table_t *t = chat_gcra_table_create(1000);
    chat_gcra_t g = chat_gcra_make(1, 1, 1); /* a key holds state for one second */
    char key[32];
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof key, "k%d", i);
        assert_int_equal(chat_gcra_table_update(t, &g, key, SEC), 0);
    }
    assert_int_equal(chat_gcra_table_len(t), 100);
    /* later, each update looks at the least recently used keys and drops the stale ones */
    for (int i = 0; i < 60; i++)
        assert_int_equal(chat_gcra_table_update(t, &g, "fresh", 3 * SEC + i * SEC), 0);
    assert_int_equal(chat_gcra_table_len(t), 1);
    assert_int_equal(chat_gcra_table_evictions(t), 0);
    chat_gcra_table_destroy(t);
}

static void test_table_cap(void **state)
{
    chat_gcra_table_t *t = chat_gcra_table_create(4);
    chat_gcra_t g = chat_gcra_make(1, 60, 1);
    char key[32];
    for (int i = 0; i < 10; i++) {
        snprintf(key, sizeof key, "k%d", i);
        assert_int_equal(chat_gcra_table_update(t, &g, key, SEC), 0);
        assert_true(chat_gcra_table_len(t) <= 4);
    }
    assert_int_equal(chat_gcra_table_len(t), 4);
    assert_int_equal(chat_gcra_table_evictions(t), 6);
    /* the most recent keys are still held and refused; the least recent was dropped */
    assert_true(chat_gcra_table_update(t, &g, "k9", SEC) > 0);
    assert_true(chat_gcra_table_update(t, &g, "k6", SEC) > 0);
    assert_int_equal(chat_gcra_table_update(t, &g, "k0", SEC), 0);
    chat_gcra_table_destroy(t);
}

static void test_table_long_keys_cut(void **state)
{
    chat_gcra_table_t *t = chat_gcra_table_create(8);
    chat_gcra_t g = chat_gcra_make(1, 60, 1);
    char a[300], b[300];
    memset(a, 'x', sizeof a - 1);
    a[sizeof a - 1] = '\0';
    memcpy(b, a, sizeof b);
    b[200] = 'y'; /* differs past the cut: the same key */
    assert_int_equal(chat_gcra_table_update(t, &g, a, SEC), 0);
    assert_true(chat_gcra_table_update(t, &g, b, SEC) > 0);
    assert_int_equal(chat_gcra_table_len(t), 1);
    chat_gcra_table_destroy(t);
}

#define THREADS 4
#define PER_THREAD 5000

static chat_gcra_table_t *shared_table;
static chat_gcra_t shared_g;

static void *hammer(void *arg)
{
    long allowed = 0;
    for (int i = 0; i < PER_THREAD; i++)
        if (chat_gcra_table_update(shared_table, &shared_g, "one", 42 * SEC) == 0)
            allowed++;
    return (void *)allowed;
}

/* Threads at the same instant share one budget: exactly the burst passes. */
static void test_table_threads_share_one_budget(void **state)
{
    shared_table = chat_gcra_table_create(16);
    shared_g = chat_gcra_make(1, 60, 1000);
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, hammer, NULL), 0);
    long total = 0;
    for (int i = 0; i < THREADS; i++) {
        void *r;
        pthread_join(th[i], &r);
        total += (long)r;
    }
    assert_int_equal(total, 1000);
    chat_gcra_table_destroy(shared_table);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_make),
        cmocka_unit_test(test_burst_then_spacing),
        cmocka_unit_test(test_burst_of_one_is_even_spacing),
        cmocka_unit_test(test_bound_over_any_window),
        cmocka_unit_test(test_retry_after_rounding),
        cmocka_unit_test(test_table_counts_per_key),
        cmocka_unit_test(test_table_drops_stale_keys),
        cmocka_unit_test(test_table_cap),
        cmocka_unit_test(test_table_long_keys_cut),
        cmocka_unit_test(test_table_threads_share_one_budget),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
