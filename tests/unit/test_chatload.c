/*
 * Unit tests of chatload's latency histogram and Zipf sampler, compiled in
 * directly from tools/chatload so the test needs no extra library target.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>

#include "../../tools/chatload/hist.c"
#include "../../tools/chatload/zipf.c"
#include "../../tools/chatload/scrape.c"

static void assert_within(double got, double want, double rel)
{
    double err = fabs(got - want) / want;
    if (err > rel)
        fail_msg("got %.3f want %.3f (relative error %.4f > %.4f)", got, want, err, rel);
}

static const double QS[] = {0.5, 0.9, 0.95, 0.99, 0.999};

/* every bucket is narrow: width / lowest value <= 1/128 */
static void test_bucket_layout(void **state)
{
    for (uint64_t v = 0; v < 5000000; v += 1 + v / 97) {
        int i = cl_hist_index(v);
        assert_true(cl_hist_lowest(i) <= v && v <= cl_hist_highest(i));
        if (v >= CL_HIST_LINEAR)
            assert_true((double)(cl_hist_highest(i) - cl_hist_lowest(i) + 1) /
                            (double)cl_hist_lowest(i) <=
                        1.0 / 128 + 1e-12);
    }
    assert_int_equal(cl_hist_index(255), 255);
    assert_int_equal(cl_hist_index(256), 256);
    assert_int_equal(cl_hist_index(UINT64_MAX), CL_HIST_BUCKETS - 1);
}

static void test_uniform(void **state)
{
    cl_hist_t *h = malloc(sizeof *h);
    cl_hist_init(h);
    const uint64_t n = 1000000;
    for (uint64_t v = 1; v <= n; v++)
        cl_hist_record(h, v);
    for (size_t i = 0; i < sizeof QS / sizeof QS[0]; i++)
        assert_within((double)cl_hist_quantile(h, QS[i]), QS[i] * (double)n, 0.01);
    assert_int_equal(cl_hist_quantile(h, 1.0), n);
    assert_int_equal(h->count, n);
    assert_within(cl_hist_mean(h), (n + 1) / 2.0, 1e-9);
    free(h);
}

/* exponential with mean 10 ms in microseconds, sampled at evenly spaced
 * points of the inverse CDF so the true quantiles are known exactly */
static void test_exponential(void **state)
{
    cl_hist_t *h = malloc(sizeof *h);
    cl_hist_init(h);
    const int n = 200000;
    const double mean = 10000.0;
    for (int i = 0; i < n; i++) {
        double u = (i + 0.5) / n;
        cl_hist_record(h, (uint64_t)llround(-mean * log(1.0 - u)));
    }
    for (size_t i = 0; i < sizeof QS / sizeof QS[0]; i++)
        assert_within((double)cl_hist_quantile(h, QS[i]), -mean * log(1.0 - QS[i]), 0.01);
    free(h);
}

/* merging two halves gives the same answer as one histogram of all values */
static void test_merge(void **state)
{
    cl_hist_t *a = malloc(sizeof *a), *b = malloc(sizeof *b), *all = malloc(sizeof *all);
    cl_hist_init(a);
    cl_hist_init(b);
    cl_hist_init(all);
    cl_rng_t r;
    cl_rng_init(&r, 7);
    for (int i = 0; i < 100000; i++) {
        uint64_t v = 100 + cl_rng_below(&r, 2000000);
        cl_hist_record(i % 2 ? a : b, v);
        cl_hist_record(all, v);
    }
    cl_hist_t *empty = malloc(sizeof *empty);
    cl_hist_init(empty);
    cl_hist_merge(a, empty);
    cl_hist_merge(a, b);
    assert_int_equal(a->count, all->count);
    assert_int_equal(a->min, all->min);
    assert_int_equal(a->max, all->max);
    for (size_t i = 0; i < sizeof QS / sizeof QS[0]; i++)
        assert_int_equal(cl_hist_quantile(a, QS[i]), cl_hist_quantile(all, QS[i]));
    assert_int_equal(cl_hist_quantile(empty, 0.5), 0);
    free(a);
    free(b);
    free(all);
    free(empty);
}

/* chi-square goodness of fit of 1e6 samples against P(k) ~ 1/(k+1)^1.1 */
static void test_zipf_frequencies(void **state)
{
    const size_t n = 100;
    cl_zipf_t z;
    assert_int_equal(cl_zipf_init(&z, n, 1.1), 0);
    cl_rng_t r;
    cl_rng_init(&r, 42);
    uint64_t counts[100] = {0};
    const int draws = 1000000;
    for (int i = 0; i < draws; i++) {
        size_t k = cl_zipf_sample(&z, &r);
        assert_true(k < n);
        counts[k]++;
    }
    double chi2 = 0, psum = 0;
    for (size_t k = 0; k < n; k++) {
        double p = cl_zipf_prob(&z, k);
        psum += p;
        double e = p * draws;
        chi2 += (counts[k] - e) * (counts[k] - e) / e;
    }
    assert_within(psum, 1.0, 1e-9);
    /* 99 degrees of freedom: the 0.999 quantile of chi-square is ~148 */
    if (chi2 > 148.0)
        fail_msg("chi-square %.1f over 148", chi2);
    /* the head: P(0)/P(1) = 2^1.1 */
    assert_within(cl_zipf_prob(&z, 0) / cl_zipf_prob(&z, 1), pow(2, 1.1), 1e-9);
    assert_within((double)counts[0] / (double)counts[1], pow(2, 1.1), 0.03);
    cl_zipf_dispose(&z);
    assert_int_equal(cl_zipf_init(&z, 0, 1.1), -1);
}

static void test_rng_reproducible(void **state)
{
    cl_rng_t a, b;
    cl_rng_init(&a, 42);
    cl_rng_init(&b, 42);
    for (int i = 0; i < 1000; i++)
        assert_true(cl_rng_next(&a) == cl_rng_next(&b));
    for (int i = 0; i < 1000; i++) {
        double d = cl_rng_double(&a);
        assert_true(d >= 0.0 && d < 1.0);
        assert_true(cl_rng_below(&a, 10) < 10);
    }
}

static const char METRICS_A[] = "# HELP chatd_cache_hits_total hits\n"
                                "# TYPE chatd_cache_hits_total counter\n"
                                "chatd_cache_hits_total{kind=\"history\"} 10\n"
                                "chatd_cache_hits_total{kind=\"count\"} 5\n"
                                "chatd_cache_misses_total{kind=\"history\"} 5\n"
                                "chatd_cache_hit_ratio 0.75\n"
                                "chatd_db_pool_waiting 3\n"
                                "chatd_db_queries_total 100\n"
                                "chatd_db_queries_total_other 7\n"
                                "chatd_db_tx_queue_wait_seconds_bucket{le=\"0.001\"} 10\n"
                                "chatd_db_tx_queue_wait_seconds_bucket{le=\"0.01\"} 10\n"
                                "chatd_db_tx_queue_wait_seconds_bucket{le=\"0.1\"} 10\n"
                                "chatd_db_tx_queue_wait_seconds_bucket{le=\"+Inf\"} 10\n"
                                "chatd_db_tx_queue_wait_seconds_count 10\n";

/* 100 more observations after A: 50 in (0.001, 0.01], 50 in (0.01, 0.1] */
static const char METRICS_B[] = "chatd_cache_hits_total{kind=\"history\"} 40\n"
                                "chatd_cache_misses_total{kind=\"history\"} 15\n"
                                "chatd_db_queries_total 250\n"
                                "chatd_db_tx_queue_wait_seconds_bucket{le=\"0.01\"} 60\n"
                                "chatd_db_tx_queue_wait_seconds_bucket{le=\"0.001\"} 10\n"
                                "chatd_db_tx_queue_wait_seconds_bucket{le=\"+Inf\"} 110\n"
                                "chatd_db_tx_queue_wait_seconds_bucket{le=\"0.1\"} 110\n";

static void test_scrape_parse_and_wait_quantile(void **state)
{
    cl_scrape_t a, b;
    cl_scrape_parse(&a, METRICS_A, sizeof METRICS_A - 1);
    cl_scrape_parse(&b, METRICS_B, sizeof METRICS_B - 1);
    assert_true(a.ok && b.ok);
    assert_true(a.hits == 15 && a.misses == 5 && a.hit_ratio == 0.75);
    assert_true(a.pool_waiting == 3 && a.queries == 100);
    assert_int_equal(b.nle, 4);
    assert_true(b.le[0] == 0.001 && isinf(b.le[3])); /* sorted whatever the input order */
    /* p50 of the 100 new observations: the top of (0.001, 0.01] */
    assert_within(cl_scrape_wait_quantile(&a, &b, 0.5), 0.01, 1e-9);
    /* p95: 45 of the 50 in (0.01, 0.1] -> 0.01 + 0.09 * 0.9 */
    assert_within(cl_scrape_wait_quantile(&a, &b, 0.95), 0.091, 1e-9);
    /* no new observation between a scrape and itself */
    assert_true(cl_scrape_wait_quantile(&b, &b, 0.95) < 0);
    cl_scrape_t empty;
    cl_scrape_parse(&empty, "{}", 2);
    assert_false(empty.ok);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bucket_layout),
        cmocka_unit_test(test_uniform),
        cmocka_unit_test(test_exponential),
        cmocka_unit_test(test_merge),
        cmocka_unit_test(test_zipf_frequencies),
        cmocka_unit_test(test_rng_reproducible),
        cmocka_unit_test(test_scrape_parse_and_wait_quantile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
