/*
 * Unit tests of net/http_metrics.c and net/http_status.c: answers counted
 * per route, method and status through a real server (net_harness.h), the
 * table itself (many series, a forced hash collision), and status texts.
 */
#include "net_harness.h"
#include "net/http_status.h"

/* The table under test, with its statics. */
#include "../../src/net/http_metrics.c"

static void test_metrics_recorded(void **state)
{
    tserver_t *ts = server_start();
    cli_t c;
    cli_open(&c, ts->port);
    cli_sends(&c, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\nDELETE /nope HTTP/1.1\r\nHost: x\r\n\r\n");
    resp_t r;
    assert_int_equal(cli_read_response(&c, &r), 0);
    resp_free(&r);
    assert_int_equal(cli_read_response(&c, &r), 0);
    resp_free(&r);
    chat_buf_t m = CHAT_BUF_INIT;
    chat_metrics_render(&m);
    assert_non_null(strstr(m.data, "chatd_http_requests_total{route=\"/echo\",method=\"GET\","
                                   "status=\"200\"}"));
    assert_non_null(strstr(m.data, "chatd_http_requests_total{route=\"unmatched\","
                                   "method=\"DELETE\",status=\"404\"}"));
    assert_non_null(strstr(m.data, "chatd_http_request_duration_seconds_count{route=\"/echo\"}"));
    assert_non_null(strstr(m.data, "chatd_connections_open{kind=\"http\"} 1"));
    chat_buf_dispose(&m);
    cli_close(&c);
    /* Errors of the http layer itself are counted under route "none". */
    cli_open(&c, ts->port);
    cli_sends(&c, "GET /x HTTP/1.1\r\nX Bad: 1\r\n\r\n");
    assert_int_equal(cli_read_response(&c, &r), 0);
    resp_free(&r);
    cli_close(&c);
    chat_metrics_render(&m);
    assert_non_null(strstr(m.data, "chatd_http_requests_total{route=\"none\",method=\"GET\","
                                   "status=\"400\"}"));
    chat_buf_dispose(&m);
    server_stop(ts);
}

static uint64_t series_count(chat_metric_family_t *f, const char *labels)
{
    return (uint64_t)chat_metric_value(chat_metric_series(f, labels));
}

/* Many series: the table grows and finds each again; a second answer adds to the first. */
static void test_table_many_series(void **state)
{
    static const char *routes[] = {"/t/a", "/t/b", "/t/c", "/t/d", "/t/e"};
    chat_http_metrics_t m;
    chat_http_metrics_init(&m);
    for (int round = 0; round < 2; round++)
        for (size_t i = 0; i < CHAT_ARRAY_LEN(routes); i++)
            for (int st = 200; st < 230; st++)
                chat_http_metrics_record(&m, routes[i], HTTP_GET, "GET", st, 0.001);
    assert_int_equal(chat_idtable_len(&m._series), CHAT_ARRAY_LEN(routes) * 30);
    assert_int_equal(series_count(m._requests, "route=\"/t/c\",method=\"GET\",status=\"217\""), 2);
    chat_http_metrics_record(&m, "/t/a", HTTP_POST, "POST", 200, 0.001);
    assert_int_equal(series_count(m._requests, "route=\"/t/a\",method=\"POST\",status=\"200\""), 1);
    assert_int_equal(series_count(m._requests, "route=\"/t/a\",method=\"GET\",status=\"200\""), 2);
    /* Labels are escaped. */
    chat_http_metrics_record(&m, "/t/\"q\"", HTTP_GET, "GET", 200, 0.001);
    assert_int_equal(
        series_count(m._requests, "route=\"/t/\\\"q\\\"\",method=\"GET\",status=\"200\""), 1);
    chat_http_metrics_dispose(&m);
}

/* Another series already holding a route's hash: the route gets the next key, both stay apart. */
static void test_table_hash_collision(void **state)
{
    static const char route[] = "/t/collide";
    chat_http_metrics_t m;
    chat_http_metrics_init(&m);
    uint64_t key = series_key(route, HTTP_GET, 200);
    struct series *other = series_new(&m, "/t/other", HTTP_GET, "GET", 201);
    chat_idtable_put(&m._series, key, other);
    chat_http_metrics_record(&m, route, HTTP_GET, "GET", 200, 0.001);
    chat_http_metrics_record(&m, route, HTTP_GET, "GET", 200, 0.001);
    assert_ptr_equal(chat_idtable_get(&m._series, key), other);
    struct series *mine = chat_idtable_get(&m._series, key + 1);
    assert_non_null(mine);
    assert_ptr_equal(mine->route, route);
    assert_int_equal(chat_idtable_len(&m._series), 2);
    assert_int_equal(
        series_count(m._requests, "route=\"/t/collide\",method=\"GET\",status=\"200\""), 2);
    assert_int_equal(series_count(m._requests, "route=\"/t/other\",method=\"GET\",status=\"201\""),
                     0);
    chat_http_metrics_dispose(&m);
}

static void test_status_text(void **state)
{
    assert_string_equal(chat_http_status_text(101), "Switching Protocols");
    assert_string_equal(chat_http_status_text(200), "OK");
    assert_string_equal(chat_http_status_text(404), "Not Found");
    assert_string_equal(chat_http_status_text(431), "Request Header Fields Too Large");
    assert_string_equal(chat_http_status_text(503), "Service Unavailable");
    assert_string_equal(chat_http_status_text(299), "Unknown");
    assert_string_equal(chat_http_status_text(-1), "Unknown");
}

int main(int argc, char **argv)
{
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    signal(SIGPIPE, SIG_IGN);
    chat_log_level = CHAT_LOG_WARN;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_recorded),
        cmocka_unit_test(test_table_many_series),
        cmocka_unit_test(test_table_hash_collision),
        cmocka_unit_test(test_status_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
