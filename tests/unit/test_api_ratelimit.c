/*
 * Unit tests of the rate limits' parts that need no Redis: the subjects
 * (token hash, client address), the key names, and a worker's limiter
 * deciding alone — without Redis, and with a Redis that cannot be reached —
 * answering at once, counting refusals, and closing with no live handle.
 * Counting in Redis is tested against a real one in
 * tests/integration/test_rate_limits.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "api/api.h"
#include "api/ratelimit.h"
#include "core/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

static void test_token_subject(void **state)
{
    static const char tok[] = "Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5";
    char a[CHAT_RATELIMIT_SUBJECT_MAX], b[CHAT_RATELIMIT_SUBJECT_MAX];
    chat_api_rate_token_subject(tok, strlen(tok), a);
    chat_api_rate_token_subject(tok, strlen(tok), b);
    assert_string_equal(a, b);
    assert_int_equal(strlen(a), 34);
    assert_memory_equal(a, "t:", 2);
    assert_int_equal(strspn(a + 2, "0123456789abcdef"), 32);
    assert_null(strstr(a, "Zm9v"));
    /* not the hash the database stores either */
    unsigned char stored[32];
    char hex[65];
    chat_auth_token_hash(tok, strlen(tok), stored);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", stored[i]);
    assert_memory_not_equal(a + 2, hex, 32);
    chat_api_rate_token_subject(tok, strlen(tok) - 1, b);
    assert_string_not_equal(a, b);
}

static void test_address_subject(void **state)
{
    char out[CHAT_RATELIMIT_SUBJECT_MAX];
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons(4242)};
    inet_pton(AF_INET, "192.0.2.7", &in.sin_addr);
    assert_int_equal(chat_api_rate_address_subject((struct sockaddr *)&in, out), 0);
    assert_string_equal(out, "a:192.0.2.7"); /* no port: one budget per address */

    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, "::ffff:198.51.100.9", &in6.sin6_addr);
    assert_int_equal(chat_api_rate_address_subject((struct sockaddr *)&in6, out), 0);
    assert_string_equal(out, "a:198.51.100.9");

    inet_pton(AF_INET6, "2001:db8:1:2:aaaa:bbbb:cccc:dddd", &in6.sin6_addr);
    assert_int_equal(chat_api_rate_address_subject((struct sockaddr *)&in6, out), 0);
    assert_string_equal(out, "a:2001:db8:1:2::/64");
    inet_pton(AF_INET6, "2001:db8:1:2::1", &in6.sin6_addr); /* the same /64 */
    char same[CHAT_RATELIMIT_SUBJECT_MAX];
    assert_int_equal(chat_api_rate_address_subject((struct sockaddr *)&in6, same), 0);
    assert_string_equal(out, same);
    inet_pton(AF_INET6, "::1", &in6.sin6_addr);
    assert_int_equal(chat_api_rate_address_subject((struct sockaddr *)&in6, out), 0);
    assert_string_equal(out, "a:::/64");

    struct sockaddr un = {.sa_family = AF_UNIX};
    assert_int_equal(chat_api_rate_address_subject(&un, out), -1);
}

static void test_keys(void **state)
{
    char key[128];
    chat_ratelimit_key(CHAT_RATE_SEND, "u:42", key, sizeof key);
    assert_string_equal(key, "rate:send:{u:42}");
    chat_ratelimit_key(CHAT_RATE_REQUEST, "t:00ff", key, sizeof key);
    assert_string_equal(key, "rate:req:{t:00ff}");
    chat_ratelimit_key(CHAT_RATE_SIGNUP, "a:127.0.0.1", key, sizeof key);
    assert_string_equal(key, "rate:signup:{a:127.0.0.1}");
    assert_string_equal(chat_ratelimit_name(CHAT_RATE_REQUEST), "request");
}

/* ---- a limiter deciding alone ---- */

typedef struct answers {
    int n;
    int last;
} answers_t;

static void answer_cb(int retry_after_s, void *arg)
{
    answers_t *a = arg;
    a->n++;
    a->last = retry_after_s;
}

static double limited(const char *limit)
{
    char labels[32];
    snprintf(labels, sizeof labels, "limit=\"%s\"", limit);
    return chat_metric_value(chat_metric_series(
        chat_metrics_counter("chatd_rate_limited_total", "unused: registered already"), labels));
}

static void closed_cb(void *arg)
{
    (*(int *)arg)++;
}

/* Checks answered before chat_ratelimit_check returns: the caller sees n move at once. */
static void run_local(const char *redis_url)
{
    chat_config_t cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.rate_send = (chat_config_rate_t){1, 60, 2};
    cfg.rate_signup = (chat_config_rate_t){3, 1, 1};
    /* rate_request 0: no limit */
    chat_ratelimit_shared_t *sh = chat_ratelimit_shared_create(&cfg);
    uv_loop_t loop;
    uv_loop_init(&loop);
    chat_ratelimit_config_t rc = {.shared = sh, .redis_url = redis_url, .cmd_timeout_ms = 50};
    chat_ratelimit_t *rl = chat_ratelimit_create(&loop, &rc);
    assert_true(chat_ratelimit_on(rl, CHAT_RATE_SEND));
    assert_false(chat_ratelimit_on(rl, CHAT_RATE_REQUEST));
    double before = limited("send");
    answers_t a = {0, -1};
    for (int i = 0; i < 2; i++) {
        chat_ratelimit_check(rl, CHAT_RATE_SEND, "u:1", answer_cb, &a);
        assert_int_equal(a.n, i + 1);
        assert_int_equal(a.last, 0);
    }
    chat_ratelimit_check(rl, CHAT_RATE_SEND, "u:1", answer_cb, &a);
    assert_int_equal(a.n, 3);
    assert_true(a.last >= 59 && a.last <= 60);
    assert_true(limited("send") == before + 1);
    chat_ratelimit_check(rl, CHAT_RATE_SEND, "u:2", answer_cb, &a); /* another user */
    assert_int_equal(a.last, 0);
    for (int i = 0; i < 1000; i++) /* no limit: always, at once */
        chat_ratelimit_check(rl, CHAT_RATE_REQUEST, "t:ab", answer_cb, &a);
    assert_int_equal(a.n, 1004);
    assert_int_equal(a.last, 0);
    chat_ratelimit_check(rl, CHAT_RATE_SIGNUP, "a:192.0.2.1", answer_cb, &a);
    assert_int_equal(a.last, 0);
    chat_ratelimit_check(rl, CHAT_RATE_SIGNUP, "a:192.0.2.1", answer_cb, &a);
    assert_int_equal(a.last, 1); /* 333 ms, in whole seconds */
    int closed = 0;
    chat_ratelimit_close(rl, closed_cb, &closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(closed, 1);
    assert_int_equal(uv_loop_close(&loop), 0);
    chat_ratelimit_shared_destroy(sh);
}

static void test_local_without_redis(void **state)
{
    run_local(NULL);
}

/* Port 1: nothing listens there; the client is down from the start. */
static void test_local_with_redis_unreachable(void **state)
{
    run_local("redis://127.0.0.1:1");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token_subject),
        cmocka_unit_test(test_address_subject),
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_local_without_redis),
        cmocka_unit_test(test_local_with_redis_unreachable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
