/*
 * Unit tests of chatload's latency histogram, Zipf sampler, /metrics parser
 * and the pure parts of the realtime stage (conversation shape, rev checker,
 * WebSocket client frames, stream frame scanner), compiled in directly from
 * tools/chatload so the test needs no extra library target.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../tools/chatload/hist.c"
#include "../../tools/chatload/zipf.c"
#include "../../tools/chatload/scrape.c"
#include "../../tools/chatload/rt_shape.c"
#include "../../tools/chatload/rt_check.c"
#include "../../tools/chatload/rt_frame.c"

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
                                "chatd_db_tx_queue_wait_seconds_count 10\n"
                                "chatd_connections_open{kind=\"http\"} 4\n"
                                "chatd_connections_open{kind=\"websocket\"} 50\n"
                                "chatd_stream_resumes_total{result=\"resumed\"} 48\n"
                                "chatd_stream_resumes_total{result=\"reset\"} 2\n"
                                "chatd_stream_gap_fills_total 7\n"
                                "chatd_stream_events_total{type=\"message\"} 100\n"
                                "chatd_stream_events_total{type=\"typing\"} 5\n";

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
    assert_true(a.ws_open == 50 && a.resumes_resumed == 48 && a.resumes_reset == 2);
    assert_true(a.gap_fills == 7 && a.stream_events == 105);
    assert_true(b.ws_open == 0 && b.gap_fills == 0);
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

/* ---- the realtime stage: conversation shape ---- */

static void test_rt_sizes(void **state)
{
    cl_rt_shape_opts_t o;
    cl_rt_shape_defaults(&o, 10000);
    assert_int_equal(o.max_members, 1000);
    /* a few of 1,000, then falling as 1/rank, never below 2 */
    assert_int_equal(cl_rt_size_of_rank(&o, 0), 1000);
    assert_int_equal(cl_rt_size_of_rank(&o, 2), 1000);
    assert_int_equal(cl_rt_size_of_rank(&o, 3), 750);
    assert_int_equal(cl_rt_size_of_rank(&o, 29), 100);
    assert_int_equal(cl_rt_size_of_rank(&o, 299), 10);
    assert_int_equal(cl_rt_size_of_rank(&o, 100000), 2);
    for (int k = 1; k < 5000; k++)
        assert_true(cl_rt_size_of_rank(&o, k) <= cl_rt_size_of_rank(&o, k - 1));
    cl_rt_shape_defaults(&o, 50);
    assert_int_equal(o.max_members, 5);
    cl_rt_shape_defaults(&o, 3);
    assert_int_equal(o.max_members, 2);
}

static void check_shape(const cl_rt_shape_t *sh)
{
    int *seen = calloc((size_t)sh->nusers, sizeof *seen);
    long total = 0;
    for (int c = 0; c < sh->nconvs; c++) {
        assert_true(sh->size[c] >= 1 && sh->size[c] <= sh->nusers);
        assert_int_equal(sh->off[c + 1] - sh->off[c], sh->size[c]);
        for (long m = sh->off[c]; m < sh->off[c + 1]; m++) {
            int u = sh->member[m];
            assert_true(u >= 0 && u < sh->nusers);
            assert_int_equal(sh->mconv[m], c);
            assert_true(seen[u] != c + 1); /* nobody twice in one conversation */
            seen[u] = c + 1;
            /* and the user's own list has it, at this membership */
            long k = cl_rt_shape_find(sh, u, c);
            assert_true(k >= 0);
            assert_int_equal(sh->upos[k], m);
        }
        total += sh->size[c];
    }
    assert_int_equal(total, sh->nmemberships);
    for (int u = 0; u < sh->nusers; u++) {
        assert_true(sh->uoff[u + 1] > sh->uoff[u]); /* everybody is somewhere */
        for (long k = sh->uoff[u] + 1; k < sh->uoff[u + 1]; k++)
            assert_true(sh->uconv[k - 1] < sh->uconv[k]);
    }
    assert_int_equal(sh->uoff[sh->nusers], sh->nmemberships);
    free(seen);
}

static void test_rt_shape(void **state)
{
    cl_rng_t r;
    cl_rng_init(&r, 42);
    cl_rt_shape_opts_t o;
    cl_rt_shape_defaults(&o, 10000);
    cl_rt_shape_t sh;
    assert_int_equal(cl_rt_shape_build(&sh, 10000, &o, &r), 0);
    check_shape(&sh);
    assert_true(sh.nmemberships >= 30000 && sh.nmemberships < 30000 + 1000);
    int of_1000 = 0, small = 0;
    for (int c = 0; c < sh.nconvs; c++) {
        of_1000 += sh.size[c] == 1000;
        small += sh.size[c] >= 2 && sh.size[c] <= 10;
    }
    assert_int_equal(of_1000, 3);
    assert_true(small > 0.9 * sh.nconvs); /* many of 2-10 */
    double f = cl_rt_shape_mean_fanout(&sh), sq = 0;
    for (int c = 0; c < sh.nconvs; c++)
        sq += (double)sh.size[c] * sh.size[c];
    assert_within(f, sq / (double)sh.nmemberships, 1e-12);
    assert_int_equal(cl_rt_shape_find(&sh, sh.member[0], sh.nconvs - 1) >= 0,
                     sh.member[sh.off[sh.nconvs - 1]] == sh.member[0] ||
                         sh.member[sh.off[sh.nconvs - 1] + 1] == sh.member[0]);
    cl_rt_shape_dispose(&sh);

    /* small runs, and one user */
    for (int n = 1; n <= 64; n++) {
        cl_rt_shape_defaults(&o, n);
        assert_int_equal(cl_rt_shape_build(&sh, n, &o, &r), 0);
        check_shape(&sh);
        cl_rt_shape_dispose(&sh);
    }
    o.per_user = 0;
    assert_int_equal(cl_rt_shape_build(&sh, 10, &o, &r), -1);
}

/* sends land on conversations in proportion to their size */
static void test_rt_draw_send(void **state)
{
    cl_rng_t r;
    cl_rng_init(&r, 7);
    cl_rt_shape_opts_t o;
    cl_rt_shape_defaults(&o, 200);
    cl_rt_shape_t sh;
    assert_int_equal(cl_rt_shape_build(&sh, 200, &o, &r), 0);
    uint64_t *n = calloc((size_t)sh.nconvs, sizeof *n);
    const int draws = 400000;
    for (int i = 0; i < draws; i++) {
        int c, u;
        cl_rt_shape_draw_send(&sh, &r, &c, &u);
        assert_true(c >= 0 && c < sh.nconvs);
        assert_true(cl_rt_shape_find(&sh, u, c) >= 0); /* the sender is a member */
        n[c]++;
    }
    double chi2 = 0;
    for (int c = 0; c < sh.nconvs; c++) {
        double e = (double)draws * sh.size[c] / (double)sh.nmemberships;
        chi2 += (n[c] - e) * (n[c] - e) / e;
    }
    /* well under the 0.999 quantile for this many degrees of freedom */
    if (chi2 > sh.nconvs + 6 * sqrt(2.0 * sh.nconvs))
        fail_msg("chi-square %.1f over %d conversations", chi2, sh.nconvs);
    free(n);
    cl_rt_shape_dispose(&sh);
}

/* ---- the realtime stage: rev checker ---- */

static cl_rev_result_t see(cl_rev_track_t *t, int64_t rev, int64_t want_skipped)
{
    int64_t skipped = -1;
    cl_rev_result_t r = cl_rev_track_see(t, rev, &skipped);
    assert_int_equal(skipped, want_skipped);
    return r;
}

static void test_rev_in_order_gap_late_dup(void **state)
{
    cl_rev_track_t t;
    cl_rev_track_init(&t, 0);
    assert_int_equal(see(&t, 1, 0), CL_REV_NEXT);
    assert_int_equal(see(&t, 2, 0), CL_REV_NEXT);
    assert_int_equal(see(&t, 2, 0), CL_REV_DUP);
    assert_int_equal(see(&t, 5, 2), CL_REV_GAP); /* 3 and 4 skipped */
    assert_int_equal(see(&t, 4, 0), CL_REV_LATE);
    assert_int_equal(see(&t, 4, 0), CL_REV_DUP);
    assert_int_equal(see(&t, 3, 0), CL_REV_LATE);
    assert_int_equal(see(&t, 6, 0), CL_REV_NEXT);
    assert_int_equal(see(&t, 1, 0), CL_REV_DUP);
    assert_int_equal(see(&t, 0, 0), CL_REV_DUP); /* at or below the start: held already */
    assert_int_equal(t.last, 6);

    cl_rev_counts_t c = {0};
    cl_rev_track_init(&t, 10); /* a resume position */
    int64_t sk;
    int64_t revs[] = {11, 13, 12, 12, 14, 10};
    for (size_t i = 0; i < sizeof revs / sizeof revs[0]; i++) {
        cl_rev_result_t r = cl_rev_track_see(&t, revs[i], &sk);
        cl_rev_counts_add(&c, r, sk);
    }
    assert_int_equal(c.in_order, 2); /* 11, 14 */
    assert_int_equal(c.gaps, 1);
    assert_int_equal(c.gap_revs, 1);
    assert_int_equal(c.late, 1);
    assert_int_equal(c.dups, 2); /* the second 12, and 10 */
    assert_int_equal(c.stale, 0);
}

/* the window slides by any amount, across its 64-bit words */
static void test_rev_window(void **state)
{
    cl_rev_track_t t;
    cl_rev_track_init(&t, 0);
    /* every third rev arrives, up to 999 */
    for (int64_t r = 3; r <= 999; r += 3)
        assert_int_equal(see(&t, r, 2), CL_REV_GAP);
    assert_int_equal(t.last, 999);
    /* inside the window: the skipped ones are late, the others repeats */
    for (int64_t r = 999 - CL_REV_WINDOW + 1; r <= 999; r++) {
        int64_t sk;
        cl_rev_result_t got = cl_rev_track_see(&t, r, &sk);
        if (r % 3 == 0)
            assert_int_equal(got, CL_REV_DUP);
        else
            assert_int_equal(got, CL_REV_LATE);
    }
    assert_int_equal(see(&t, 999 - CL_REV_WINDOW, 0), CL_REV_STALE);
    /* jumps of 64, 65 and more than the window keep what is still inside */
    int64_t jumps[] = {64, 65, 1, 127, 300};
    for (size_t i = 0; i < sizeof jumps / sizeof jumps[0]; i++) {
        int64_t before = t.last;
        assert_int_equal(see(&t, before + jumps[i], jumps[i] - 1),
                         jumps[i] == 1 ? CL_REV_NEXT : CL_REV_GAP);
        if (jumps[i] < CL_REV_WINDOW)
            assert_int_equal(see(&t, before, 0), CL_REV_DUP);
        if (jumps[i] > 1)
            assert_int_equal(see(&t, before + 1, 0),
                             jumps[i] <= CL_REV_WINDOW ? CL_REV_LATE : CL_REV_STALE);
    }
}

static void test_rev_reset(void **state)
{
    cl_rev_track_t t;
    cl_rev_track_init(&t, 0);
    assert_int_equal(see(&t, 1, 0), CL_REV_NEXT);
    assert_int_equal(cl_rev_track_reset(&t, 1480), 1479);
    assert_int_equal(t.last, 1480);
    assert_int_equal(see(&t, 1480, 0), CL_REV_DUP); /* reloaded by REST */
    assert_int_equal(see(&t, 1479, 0), CL_REV_DUP);
    assert_int_equal(see(&t, 1481, 0), CL_REV_NEXT);
    assert_int_equal(cl_rev_track_reset(&t, 100), 0); /* never backwards */
    assert_int_equal(t.last, 1481);
}

/* ---- the realtime stage: frames ---- */

static void test_ws_client_frames(void **state)
{
    const uint8_t mask[4] = {0x37, 0xfa, 0x21, 0x3d};
    uint8_t out[70000 + 14];
    /* RFC 6455 5.7: a masked "Hello" */
    size_t n = cl_ws_encode(out, CL_WS_TEXT, "Hello", 5, mask);
    const uint8_t want[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
    assert_int_equal(n, sizeof want);
    assert_memory_equal(out, want, sizeof want);
    assert_int_equal(cl_ws_frame_size(5), 11);
    /* the three length forms */
    static char big[70000];
    size_t lens[] = {125, 126, 65535, 65536};
    for (size_t i = 0; i < 4; i++) {
        n = cl_ws_encode(out, CL_WS_TEXT, big, lens[i], mask);
        assert_int_equal(n, cl_ws_frame_size(lens[i]));
        assert_true(out[1] & 0x80);
        assert_int_equal(out[1] & 0x7f, lens[i] < 126       ? (int)lens[i]
                                        : lens[i] <= 0xffff ? 126
                                                            : 127);
    }
}

static void test_ws_server_frames(void **state)
{
    cl_ws_frame_t f;
    const uint8_t hello[] = {0x81, 0x05, 'H', 'e', 'l', 'l', 'o'};
    assert_int_equal(cl_ws_parse(hello, sizeof hello, 1 << 20, &f), 7);
    assert_true(f.fin && f.opcode == CL_WS_TEXT && f.len == 5);
    assert_memory_equal(f.payload, "Hello", 5);
    for (size_t k = 0; k < sizeof hello; k++) /* incomplete: wait for more */
        assert_int_equal(cl_ws_parse(hello, k, 1 << 20, &f), 0);
    /* 16- and 64-bit lengths */
    static uint8_t buf[70010];
    buf[0] = 0x81, buf[1] = 126, buf[2] = 0x01, buf[3] = 0x00;
    assert_int_equal(cl_ws_parse(buf, 4 + 256, 1 << 20, &f), 260);
    assert_int_equal(f.len, 256);
    assert_int_equal(cl_ws_parse(buf, 4 + 255, 1 << 20, &f), 0);
    memset(buf, 0, 10);
    buf[0] = 0x82, buf[1] = 127, buf[7] = 0x01, buf[8] = 0x11, buf[9] = 0x70; /* 70,000 */
    assert_int_equal(cl_ws_parse(buf, 10 + 70000, 1 << 20, &f), 70010);
    assert_int_equal(f.len, 70000);
    assert_int_equal(cl_ws_parse(buf, 10 + 70000, 65536, &f), -1); /* over max */
    /* a fragment, then its continuation */
    const uint8_t frag[] = {0x01, 0x02, 'a', 'b', 0x80, 0x01, 'c'};
    assert_int_equal(cl_ws_parse(frag, sizeof frag, 100, &f), 4);
    assert_true(!f.fin && f.opcode == CL_WS_TEXT);
    assert_int_equal(cl_ws_parse(frag + 4, 3, 100, &f), 3);
    assert_true(f.fin && f.opcode == CL_WS_CONT);
    /* what a server must not send */
    const uint8_t masked[] = {0x81, 0x81, 1, 2, 3, 4, 'x'};
    const uint8_t rsv[] = {0xc1, 0x00};
    const uint8_t opcode[] = {0x83, 0x00};
    const uint8_t long_ping[] = {0x89, 126, 0x00, 0x7e};
    const uint8_t frag_ping[] = {0x09, 0x00};
    assert_int_equal(cl_ws_parse(masked, sizeof masked, 100, &f), -1);
    assert_int_equal(cl_ws_parse(rsv, sizeof rsv, 100, &f), -1);
    assert_int_equal(cl_ws_parse(opcode, sizeof opcode, 100, &f), -1);
    assert_int_equal(cl_ws_parse(long_ping, sizeof long_ping, 100, &f), -1);
    assert_int_equal(cl_ws_parse(frag_ping, sizeof frag_ping, 100, &f), -1);
    /* the accept key of RFC 6455 1.3 */
    char acc[29];
    cl_ws_accept_of("dGhlIHNhbXBsZSBub25jZQ==", acc);
    assert_string_equal(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

static int parse(const char *s, cl_rt_frame_t *f)
{
    return cl_rt_frame_parse(s, strlen(s), f);
}

static void test_rt_frame_parse(void **state)
{
    cl_rt_frame_t f;
    assert_int_equal(
        parse("{\"type\":\"message\",\"conversation_id\":7,\"rev\":13,\"message\":{\"id\":42,"
              "\"conversation_id\":7,\"seq\":12,\"sender_id\":1,\"body\":\"rt 0000abcd 5 "
              "123\",\"created_at\":\"2026-11-26T18:49:46.123456Z\",\"edited_at\":null,"
              "\"deleted\":false,\"client_msg_id\":null}}",
              &f),
        0);
    assert_int_equal(f.type, CL_RTF_MESSAGE);
    assert_int_equal(f.conv, 7);
    assert_int_equal(f.rev, 13);
    assert_int_equal(f.body_len, 17);
    assert_memory_equal(f.body, "rt 0000abcd 5 123", 17);
    /* any key order, white space, a nested "rev" or "body" elsewhere is not taken */
    assert_int_equal(parse(" { \"message\" : { \"body\" : \"a\\\"b}\" , \"x\": [1, {\"rev\": 9}] },"
                           " \"rev\" : 2 , \"conversation_id\" : 3 , \"type\" : "
                           "\"message_edited\" } ",
                           &f),
                     0);
    assert_int_equal(f.type, CL_RTF_EDITED);
    assert_int_equal(f.conv, 3);
    assert_int_equal(f.rev, 2);
    assert_int_equal(f.body_len, 5);
    assert_memory_equal(f.body, "a\\\"b}", 5);
    assert_int_equal(parse("{\"type\":\"reset\",\"conversation_id\":7,\"rev\":1480}", &f), 0);
    assert_true(f.type == CL_RTF_RESET && f.conv == 7 && f.rev == 1480 && !f.body);
    assert_int_equal(parse("{\"type\":\"error\",\"client_msg_id\":null,\"error\":{\"code\":"
                           "\"bad_request\",\"message\":\"unknown message type\"}}",
                           &f),
                     0);
    assert_int_equal(f.type, CL_RTF_ERROR);
    assert_int_equal(f.code_len, 11);
    assert_memory_equal(f.code, "bad_request", 11);
    assert_int_equal(parse("{\"type\":\"typing\",\"conversation_id\":7,\"user_id\":3}", &f), 0);
    assert_true(f.type == CL_RTF_TYPING && f.rev == -1);
    assert_int_equal(parse("{\"type\":\"something new\"}", &f), 0);
    assert_int_equal(f.type, CL_RTF_OTHER);
    /* not a frame */
    const char *bad[] = {"",
                         "[]",
                         "{\"rev\":1}",
                         "{\"type\":1}",
                         "{\"type\":\"message\"",
                         "{\"type\":\"message\",}",
                         "{\"type\":\"message\"} x",
                         "{\"type\":\"message\",\"message\":{\"body\":\"x}}",
                         "{\"type\":\"a\nb\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (parse(bad[i], &f) != -1)
            fail_msg("accepted %s", bad[i]);
    /* a rev or conversation id that is no count is not taken */
    assert_int_equal(parse("{\"type\":\"message\",\"conversation_id\":-7,\"rev\":1.5}", &f), 0);
    assert_true(f.conv == 0 && f.rev == -1);
}

static void test_rt_positions(void **state)
{
    cl_rt_frame_t f;
    assert_int_equal(
        parse("{\"type\":\"resumed\",\"positions\":{\"7\": 15, \"9\":3 ,\"12\":0}}", &f), 0);
    assert_int_equal(f.type, CL_RTF_RESUMED);
    const char *p = f.positions, *end = f.positions + f.positions_len;
    int64_t c, r, want[][2] = {{7, 15}, {9, 3}, {12, 0}};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(cl_rt_positions_next(&p, end, &c, &r), 1);
        assert_int_equal(c, want[i][0]);
        assert_int_equal(r, want[i][1]);
    }
    assert_int_equal(cl_rt_positions_next(&p, end, &c, &r), 0);
    const char *empty = "{ }";
    p = empty;
    assert_int_equal(cl_rt_positions_next(&p, empty + 3, &c, &r), 0);
    const char *bad[] = {"{\"x\":1}", "{\"7\":-1}", "{\"7\":\"1\"}", "{\"0\":1}", "{\"7\" 1}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        p = bad[i];
        assert_int_equal(cl_rt_positions_next(&p, bad[i] + strlen(bad[i]), &c, &r), -1);
    }
}

static void test_rt_body(void **state)
{
    char b[CL_RT_BODY_MAX];
    int n = cl_rt_body_format(b, sizeof b, 0xdeadbeef, 123456789012ULL, 98765432109876ULL);
    assert_true(n > 0);
    uint32_t tag;
    uint64_t uid, t;
    assert_int_equal(cl_rt_body_parse(b, (size_t)n, &tag, &uid, &t), 0);
    assert_true(tag == 0xdeadbeef && uid == 123456789012ULL && t == 98765432109876ULL);
    const char *bad[] = {"rt deadbeef 1",  "rt deadbeef 1 2 ", "rt DEADBEEF 1 2", "rx deadbeef 1 2",
                         "rt deadbee 1 2", "chatload 5",       "rt deadbeef x 2"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(cl_rt_body_parse(bad[i], strlen(bad[i]), &tag, &uid, &t), -1);
    volatile size_t small = 10; /* too small, known only at run time */
    assert_int_equal(cl_rt_body_format(b, small, 1, 2, 3), -1);
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
        cmocka_unit_test(test_rt_sizes),
        cmocka_unit_test(test_rt_shape),
        cmocka_unit_test(test_rt_draw_send),
        cmocka_unit_test(test_rev_in_order_gap_late_dup),
        cmocka_unit_test(test_rev_window),
        cmocka_unit_test(test_rev_reset),
        cmocka_unit_test(test_ws_client_frames),
        cmocka_unit_test(test_ws_server_frames),
        cmocka_unit_test(test_rt_frame_parse),
        cmocka_unit_test(test_rt_positions),
        cmocka_unit_test(test_rt_body),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
