/*
 * Unit tests of core/: buffers, JSON encoding, UTF-8 counting, metrics
 * rendering and the configuration table (including its documentation).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/buf.h"
#include "core/config.h"
#include "core/json.h"
#include "core/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_buf_append_and_numbers(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;
    chat_buf_puts(&b, "x=");
    chat_buf_put_i64(&b, -9223372036854775807LL - 1);
    chat_buf_putc(&b, ' ');
    chat_buf_put_u64(&b, 18446744073709551615ULL);
    chat_buf_printf(&b, " %s", "end");
    assert_string_equal(b.data, "x=-9223372036854775808 18446744073709551615 end");
    size_t len;
    char *s = chat_buf_steal(&b, &len);
    assert_int_equal(len, strlen(s));
    assert_null(b.data);
    free(s);
    chat_buf_t e = CHAT_BUF_INIT;
    s = chat_buf_steal(&e, &len);
    assert_string_equal(s, "");
    free(s);
}

static void test_buf_large_printf(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;
    char big[1000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    chat_buf_printf(&b, "<%s>", big);
    assert_int_equal(b.len, 1001);
    assert_int_equal(b.data[0], '<');
    assert_int_equal(b.data[1000], '>');
    chat_buf_dispose(&b);
}

/* Storage reserved before anything is written is already an empty C string. */
static void test_buf_reserve_keeps_a_string(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;
    chat_buf_reserve(&b, 4096);
    assert_non_null(b.data);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.data, "");
    chat_buf_puts(&b, "ab");
    chat_buf_reserve(&b, 1 << 20);
    assert_string_equal(b.data, "ab");
    chat_buf_dispose(&b);
}

static void test_json_string_escaping(void **state)
{
    chat_buf_t b = CHAT_BUF_INIT;
    const char in[] = "a\"b\\c\n\t\x01\xc3\xa9";
    chat_json_put_str(&b, in, sizeof in - 1);
    assert_string_equal(b.data, "\"a\\\"b\\\\c\\n\\t\\u0001\xc3\xa9\"");
    chat_buf_reset(&b);
    chat_json_put_cstr_or_null(&b, NULL);
    assert_string_equal(b.data, "null");
    chat_buf_reset(&b);
    chat_json_error(&b, "not_found", "no such user");
    assert_string_equal(b.data,
                        "{\"error\":{\"code\":\"not_found\",\"message\":\"no such user\"}}");
    chat_buf_dispose(&b);
}

static void test_utf8_count(void **state)
{
    assert_int_equal(chat_utf8_count("abc", 3), 3);
    assert_int_equal(chat_utf8_count("\xc3\xa9", 2), 1);          /* é */
    assert_int_equal(chat_utf8_count("\xe2\x82\xac", 3), 1);      /* € */
    assert_int_equal(chat_utf8_count("\xf0\x9f\x98\x80", 4), 1);  /* emoji */
    assert_int_equal(chat_utf8_count("\xff", 1), -1);             /* invalid byte */
    assert_int_equal(chat_utf8_count("\xc0\xaf", 2), -1);         /* overlong */
    assert_int_equal(chat_utf8_count("\xed\xa0\x80", 3), -1);     /* surrogate */
    assert_int_equal(chat_utf8_count("\xf4\x90\x80\x80", 4), -1); /* > U+10FFFF */
    assert_int_equal(chat_utf8_count("\xe2\x82", 2), -1);         /* truncated */
    assert_int_equal(chat_utf8_count("", 0), 0);
}

static void test_metrics_render(void **state)
{
    chat_metric_family_t *c = chat_metrics_counter("t_requests_total", "Requests.");
    chat_metric_t *s = chat_metric_series(c, "route=\"/x\"");
    assert_ptr_equal(s, chat_metric_series(c, "route=\"/x\""));
    chat_metric_inc(s);
    chat_metric_add(s, 2);
    assert_true(chat_metric_value(s) == 3.0);
    static const double bounds[] = {0.1, 1};
    chat_metric_t *h =
        chat_metric_series(chat_metrics_histogram("t_wait_seconds", "Wait.", bounds, 2), "");
    chat_metric_observe(h, 0.05);
    chat_metric_observe(h, 0.5);
    chat_metric_observe(h, 5);
    assert_int_equal(chat_metric_hist_count(h), 3);
    double p50 = chat_metric_hist_quantile(h, 0.5);
    assert_true(p50 > 0.1 && p50 <= 1.0);
    chat_buf_t b = CHAT_BUF_INIT;
    chat_metrics_render(&b);
    assert_non_null(strstr(b.data, "# TYPE t_requests_total counter\n"));
    assert_non_null(strstr(b.data, "t_requests_total{route=\"/x\"} 3\n"));
    assert_non_null(strstr(b.data, "t_wait_seconds_bucket{le=\"0.1\"} 1\n"));
    assert_non_null(strstr(b.data, "t_wait_seconds_bucket{le=\"1\"} 2\n"));
    assert_non_null(strstr(b.data, "t_wait_seconds_bucket{le=\"+Inf\"} 3\n"));
    assert_non_null(strstr(b.data, "t_wait_seconds_sum 5.55\n"));
    assert_non_null(strstr(b.data, "t_wait_seconds_count 3\n"));
    chat_buf_dispose(&b);
}

/* A fake environment for the configuration loader. */
static const char *const *fake_env;

static const char *fake_getenv(const char *name)
{
    for (const char *const *p = fake_env; p && *p; p += 2)
        if (!strcmp(p[0], name))
            return p[1];
    return NULL;
}

static void test_config_defaults(void **state)
{
    static const char *const env[] = {NULL};
    fake_env = env;
    chat_config_t cfg;
    char err[256];
    assert_int_equal(chat_config_load(&cfg, fake_getenv, err, sizeof err), 0);
    assert_string_equal(cfg.database_url, "postgresql://chat@127.0.0.1:6432/chat");
    assert_null(cfg.database_url_direct);
    assert_string_equal(cfg.listen_host, "127.0.0.1");
    assert_int_equal(cfg.listen_port, 3000);
    assert_int_equal(cfg.db_pool_size, 20);
    assert_int_equal(cfg.db_queue_timeout_ms, 120000);
    assert_int_equal(cfg.max_connections, 20000);
    assert_true(cfg.enable_redis_cache);
    assert_false(cfg.cache_bypass);
    assert_true(cfg.signup_open);
    assert_int_equal(cfg.rate_send.rate, 20);
    assert_int_equal(cfg.rate_send.period_s, 1);
    assert_int_equal(cfg.rate_send.burst, 40);
    assert_int_equal(cfg.rate_request.rate, 100);
    assert_int_equal(cfg.rate_request.burst, 200);
    assert_int_equal(cfg.rate_signup.rate, 10);
    assert_int_equal(cfg.rate_signup.period_s, 60);
    assert_int_equal(cfg.rate_signup.burst, 10);
    chat_config_dispose(&cfg);
}

static void test_config_rate_forms(void **state)
{
    static const struct {
        const char *text;
        int rate, period_s, burst;
    } good[] = {
        {"0", 0, 0, 0},
        {"20/s:40", 20, 1, 40},
        {"10/min:10", 10, 60, 10},
        {"7/min", 7, 60, 7}, /* BURST defaults to RATE */
        {"1/s:1", 1, 1, 1},
        {"1000000/s:1000000", 1000000, 1, 1000000},
        {"3/s:100", 3, 1, 100},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        chat_config_rate_t r = {-1, -1, -1};
        if (chat_config_parse_rate(good[i].text, &r) != 0)
            fail_msg("\"%s\" refused", good[i].text);
        assert_int_equal(r.rate, good[i].rate);
        assert_int_equal(r.period_s, good[i].period_s);
        assert_int_equal(r.burst, good[i].burst);
    }
    static const char *const bad[] = {
        "",        "00",        "20",          "20/",
        "/s",      "20/h",      "20/S",        "20/sec",
        "20/mins", "20/m",      "20/s:",       "20/s:0",
        "0/s",     "0/s:5",     "-1",          "-1/s",
        "+5/s",    "05/s",      "5/s:05",      " 5/s",
        "5/s ",    "5 /s",      "5/s: 5",      "5/s:5:5",
        "5/s:5x",  "1000001/s", "5/s:1000001", "99999999999999999999/s",
        "5.5/s",   "5/min:",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        chat_config_rate_t r = {-1, -1, -1};
        if (chat_config_parse_rate(bad[i], &r) == 0)
            fail_msg("\"%s\" accepted", bad[i]);
        assert_int_equal(r.rate, -1); /* untouched */
    }
}

static void test_config_rejects_bad_values(void **state)
{
    static const char *const cases[][2] = {
        {"CHATD_DB_POOL_SIZE", "0"},
        {"CHATD_DB_POOL_SIZE", "abc"},
        {"CHATD_LISTEN", "nohost"},
        {"CHATD_LISTEN", "127.0.0.1:99999"},
        {"CACHE_BYPASS", "maybe"},
        {"CHATD_SIGNUP", "ajar"},
        {"CHATD_LOG_LEVEL", "loud"},
        {"CHATD_MAX_CONNECTIONS", "-5"},
        {"CHATD_RATE_SEND", "20"},
        {"CHATD_RATE_REQUEST", "100/s:0"},
        {"CHATD_RATE_SIGNUP", "10/hour"},
        {"CHATD_DB_POOL_SIZE", "0"},
        {"CHATD_DB_POOL_SIZE", "abc"},
        {"CHATD_LISTEN", "nohost"},
        {"CHATD_LISTEN", "127.0.0.1:99999"},
        {"CACHE_BYPASS", "maybe"},
        {"CHATD_SIGNUP", "ajar"},
        {"CHATD_LOG_LEVEL", "loud"},
        {"CHATD_MAX_CONNECTIONS", "-5"},
        /* origins as browsers send them: no path, no query, a scheme and a host */
        {"CHATD_ALLOWED_ORIGINS", "https://chat.example/"},
        {"CHATD_ALLOWED_ORIGINS", "chat.example"},
        {"CHATD_ALLOWED_ORIGINS", "https://"},
        {"CHATD_ALLOWED_ORIGINS", "https://a.example,,https://b.example"},
        {"CHATD_ALLOWED_ORIGINS", "https://a b.example"},
        {"CHATD_ALLOWED_ORIGINS", "https://a.example?x=1"},
        {"CHATD_ALLOWED_ORIGINS", "://a.example"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *env[] = {cases[i][0], cases[i][1], NULL};
        fake_env = env;
        chat_config_t cfg;
        char err[256] = "";
        assert_int_equal(chat_config_load(&cfg, fake_getenv, err, sizeof err), -1);
        assert_non_null(strstr(err, cases[i][0]));
        chat_config_dispose(&cfg);
    }
}

static void test_config_allowed_origins(void **state)
{
    static const char *const env[] = {"CHATD_ALLOWED_ORIGINS",
                                      " https://chat.example , http://localhost:8080,null", NULL};
    fake_env = env;
    chat_config_t cfg;
    char err[256];
    assert_int_equal(chat_config_load(&cfg, fake_getenv, err, sizeof err), 0);
    assert_string_equal(cfg.allowed_origins, " https://chat.example , http://localhost:8080,null");
    chat_config_dispose(&cfg);
    static const char *const none[] = {NULL};
    fake_env = none;
    assert_int_equal(chat_config_load(&cfg, fake_getenv, err, sizeof err), 0);
    assert_null(cfg.allowed_origins); /* any origin */
    chat_config_dispose(&cfg);
}

static void test_config_replicas(void **state)
{
    (void)state;
    chat_config_t cfg;
    char err[256];
    static const char *const none[] = {NULL};
    fake_env = none;
    assert_int_equal(chat_config_load(&cfg, fake_getenv, err, sizeof err), 0);
    assert_null(cfg.database_url_replicas);
    assert_int_equal(cfg.replica_max_lag_ms, 2000);
    assert_int_equal(cfg.replica_poll_ms, 50);
    assert_int_equal(cfg.db_pool_size_replica, 4);
    chat_config_dispose(&cfg);
    static const char *const two[] = {
        "DATABASE_URL_REPLICAS", "postgresql://u:p@r1:6432/chat, postgres://u:p@r2/chat", NULL};
    fake_env = two;
    assert_int_equal(chat_config_load(&cfg, fake_getenv, err, sizeof err), 0);
    assert_non_null(cfg.database_url_replicas);
    chat_config_dispose(&cfg);
    static const char *const bad[][3] = {
        {"DATABASE_URL_REPLICAS", "host=r1 dbname=chat", NULL},
        {"DATABASE_URL_REPLICAS", "postgresql://u:secret@r1/chat,", NULL},
        {"DATABASE_URL_REPLICAS", "postgresql://u:secret@r1/chat,,postgresql://r2/c", NULL},
        {"DATABASE_URL_REPLICAS",
         "postgres://a/c,postgres://a/c,postgres://a/c,postgres://a/c,postgres://a/c,"
         "postgres://a/c,postgres://a/c,postgres://a/c,postgres://a/c",
         NULL},
        {"CHATD_REPLICA_MAX_LAG_MS", "0", NULL},
        {"CHATD_REPLICA_POLL_MS", "5", NULL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fake_env = bad[i];
        assert_int_equal(chat_config_load(&cfg, fake_getenv, err, sizeof err), -1);
        /* the URLs hold passwords: never in the message */
        assert_null(strstr(err, "secret"));
        chat_config_dispose(&cfg);
    }
}

static void test_config_ipv6_listen(void **state)
{
    static const char *const env[] = {"CHATD_LISTEN", "[::1]:3100", "CHATD_SIGNUP", "closed", NULL};
    fake_env = env;
    chat_config_t cfg;
    char err[256];
    assert_int_equal(chat_config_load(&cfg, fake_getenv, err, sizeof err), 0);
    assert_string_equal(cfg.listen_host, "::1");
    assert_int_equal(cfg.listen_port, 3100);
    assert_false(cfg.signup_open);
    chat_config_dispose(&cfg);
}

/* Every setting of the table is documented in the README. */
static void test_config_documented_in_readme(void **state)
{
    const char *dir = getenv("CHATD_SOURCE_DIR");
    assert_non_null(dir);
    char path[1024];
    snprintf(path, sizeof path, "%s/README.md", dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    chat_buf_t b = CHAT_BUF_INIT;
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        chat_buf_append(&b, chunk, n);
    fclose(f);
    for (size_t i = 0; i < chat_config_nsettings; i++) {
        char needle[128];
        snprintf(needle, sizeof needle, "`%s`", chat_config_setting(i)->name);
        if (!strstr(b.data, needle))
            fail_msg("README.md does not document %s", chat_config_setting(i)->name);
    }
    assert_null(chat_config_setting(chat_config_nsettings));
    chat_buf_dispose(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf_append_and_numbers),
        cmocka_unit_test(test_buf_large_printf),
        cmocka_unit_test(test_buf_reserve_keeps_a_string),
        cmocka_unit_test(test_json_string_escaping),
        cmocka_unit_test(test_utf8_count),
        cmocka_unit_test(test_metrics_render),
        cmocka_unit_test(test_config_defaults),
        cmocka_unit_test(test_config_rate_forms),
        cmocka_unit_test(test_config_rejects_bad_values),
        cmocka_unit_test(test_config_ipv6_listen),
        cmocka_unit_test(test_config_replicas),
        cmocka_unit_test(test_config_allowed_origins),
        cmocka_unit_test(test_config_documented_in_readme),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
