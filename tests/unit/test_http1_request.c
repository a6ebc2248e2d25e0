/*
 * Unit tests of net/http1_request.c, parsing a request: the fields handed to
 * the handler (path, query, absolute form, Authorization, Upgrade, body,
 * HEAD), the head and body limits (431, 413, also chunked), chunked bodies
 * with extensions and trailers, malformed requests (400 and close; the
 * strict framing of net/http1_frame.c, Host, Transfer-Encoding, origin-form
 * targets), other HTTP versions (505), and "Expect: 100-continue". A real server and blocking
 * client sockets (net_harness.h).
 */
#include "net_harness.h"

static void test_request_fields(void **state)
{
    tserver_t *ts = server_start();
    cli_t c;
    cli_open(&c, ts->port);
    resp_t r;
    cli_sends(&c, "GET /echo?a=1&tag=q HTTP/1.1\r\nHost: x\r\nauthorization: Bearer tok\r\n"
                  "Upgrade: websocket\r\n\r\n");
    assert_int_equal(cli_read_response(&c, &r), 0);
    assert_non_null(
        strstr(r.body, "\"method\":\"GET\",\"path\":\"/echo\",\"query\":\"a=1&tag=q\""));
    assert_non_null(strstr(r.body, "\"auth\":\"Bearer tok\",\"upgrade\":\"websocket\""));
    resp_free(&r);
    cli_sends(&c, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(cli_read_response(&c, &r), 0);
    assert_non_null(strstr(r.body, "\"query\":null,\"auth\":null,\"upgrade\":null"));
    assert_non_null(strstr(r.body, "\"body_len\":0,\"body\":\"\""));
    assert_non_null(strstr(r.body, "\"inm\":null"));
    resp_free(&r);
    /* If-None-Match (for the compiled-in files): repeated lines join as one list */
    cli_sends(&c, "GET /echo HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"a\"\r\n"
                  "if-none-match: W/\"b\", \"c\"\r\n\r\n");
    assert_int_equal(cli_read_response(&c, &r), 0);
    assert_non_null(strstr(r.body, "\"inm\":\"\\\"a\\\", W/\\\"b\\\", \\\"c\\\"\""));
    resp_free(&r);
    cli_sends(&c, "GET /echo? HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(cli_read_response(&c, &r), 0);
    assert_non_null(strstr(r.body, "\"path\":\"/echo\",\"query\":\"\""));
    resp_free(&r);
    cli_sends(&c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world");
    assert_int_equal(cli_read_response(&c, &r), 0);
    assert_non_null(strstr(r.body, "\"method\":\"POST\""));
    assert_non_null(strstr(r.body, "\"body_len\":11,\"body\":\"hello world\""));
    resp_free(&r);
    /* HEAD: Content-Length of the GET answer, no body; the next answer parses cleanly. */
    cli_sends(
        &c,
        "HEAD /echo HTTP/1.1\r\nHost: x\r\n\r\nGET /echo?tag=after HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(cli_read_response_ex(&c, &r, true, 5000), 0);
    assert_int_equal(r.status, 200);
    char v[32];
    assert_true(resp_header(&r, "Content-Length", v, sizeof v));
    assert_true(atoi(v) > 0);
    resp_free(&r);
    assert_int_equal(cli_read_response(&c, &r), 0);
    assert_non_null(strstr(r.body, "\"tag\":\"after\""));
    resp_free(&r);
    cli_close(&c);
    server_stop(ts);
}

static void test_head_too_large_431(void **state)
{
    tserver_t *ts = server_start();
    cli_t c;
    cli_open(&c, ts->port);
    size_t n = 20 * 1024;
    char *big = chat_malloc(n + 128);
    int len = snprintf(big, 128, "GET /echo HTTP/1.1\r\nHost: x\r\nX-Pad: ");
    memset(big + len, 'a', n);
    memcpy(big + len + n, "\r\n\r\n", 4);
    cli_send_tolerant(&c, big, (size_t)len + n + 4);
    free(big);
    resp_t r;
    assert_int_equal(cli_read_response(&c, &r), 0);
    assert_json_error(&r, 431, "headers_too_large");
    char v[32];
    assert_true(resp_header(&r, "Connection", v, sizeof v));
    assert_string_equal(v, "close");
    resp_free(&r);
    assert_true(cli_wait_closed(&c, 5000));
    cli_close(&c);
    /* A head of a few KiB is fine. */
    cli_open(&c, ts->port);
    chat_buf_t b = CHAT_BUF_INIT;
    chat_buf_puts(&b, "GET /echo HTTP/1.1\r\nHost: x\r\n");
    for (int i = 0; i < 40; i++)
        chat_buf_printf(&b, "X-Pad-%d: %0100d\r\n", i, 0);
    chat_buf_puts(&b, "\r\n");
    cli_send(&c, b.data, b.len);
    chat_buf_dispose(&b);
    assert_int_equal(cli_read_response(&c, &r), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    cli_close(&c);
    server_stop(ts);
}

static void test_body_too_large_413(void **state)
{
    tserver_t *ts = server_start();
    size_t n = 70 * 1024;
    char *body = chat_malloc(n);
    memset(body, ' ', n);
    /* Content-Length over the limit: answered before the body is read. */
    cli_t c;
    cli_open(&c, ts->port);
    char head[128];
    snprintf(head, sizeof head, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n", n);
    cli_sends(&c, head);
    cli_send_tolerant(&c, body, n);
    resp_t r;
    assert_int_equal(cli_read_response(&c, &r), 0);
    assert_json_error(&r, 413, "payload_too_large");
    resp_free(&r);
    assert_true(cli_wait_closed(&c, 5000));
    cli_close(&c);
    /* Chunked: the decoded size counts. */
    cli_open(&c, ts->port);
    cli_sends(&c, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    chat_buf_t b = CHAT_BUF_INIT;
    for (size_t off = 0; off < n; off += 8192) {
        size_t k = n - off < 8192 ? n - off : 8192;
        chat_buf_printf(&b, "%zx\r\n", k);
        chat_buf_append(&b, body, k);
        chat_buf_puts(&b, "\r\n");
    }
    chat_buf_puts(&b, "0\r\n\r\n");
    cli_send_tolerant(&c, b.data, b.len);
    chat_buf_dispose(&b);
    assert_int_equal(cli_read_response(&c, &r), 0);
    assert_json_error(&r, 413, "payload_too_large");
    resp_free(&r);
    assert_true(cli_wait_closed(&c, 5000));
    cli_close(&c);
    free(body);
    server_stop(ts);
}

static void test_chunked_body_decoded(void **state)
{
    tserver_t *ts = server_start();
    cli_t c;
    cli_open(&c, ts->port);
    cli_sends(&c, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:  Chunked  \r\n\r\n"
                  "5;name=value\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: yes\r\n\r\n"
                  "GET /echo?tag=next HTTP/1.1\r\nHost: x\r\n\r\n");
    resp_t r;
    assert_int_equal(cli_read_response(&c, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"body_len\":11,\"body\":\"hello world\""));
    resp_free(&r);
    assert_int_equal(cli_read_response(&c, &r), 0);
    assert_non_null(strstr(r.body, "\"tag\":\"next\""));
    resp_free(&r);
    cli_close(&c);
    server_stop(ts);
}

static void test_malformed_400_and_close(void **state)
{
    static const char *bad[] = {
        "HELLO\r\n\r\n",
        "GET /echo\r\nHost: x\r\n\r\n",
        "GET /echo HTTP/1.1\r\nHost x\r\n\r\n",
        "GET /echo HTTP/1.1\r\nHost: x\r\nX Bad: y\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n{\"a\":1}",
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
        "chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        "GET /echo HTTP/1.1\r\nHost: x\r\nX-A: b\x01c\r\n\r\n",
        "GET /echo HTTP/1.1\r\nHost: x\r\nX-A: \x01c\r\n\r\n",
        "GET /echo HTTP/1.1\r\nHost: x\r\nX-A: c\x7f\r\n\r\n",
        "GET /ec\x01ho HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a\r\nAuthorization: Bearer "
        "b\r\n\r\n",
        /* issue 12: framing that parsers read differently (net/http1_frame.c) */
        "GET /echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer\r\n tok\r\n\r\n",
        "GET /echo HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tb\r\n\r\n",
        "GET /echo HTTP/1.1\nHost: x\n\n",
        "GET /echo HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n",
        "GET /echo HTTP/1.1\r\nHost: x\r\n\n",
        "\nGET /echo HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET  /echo HTTP/1.1\r\nHost: x\r\n\r\n",
        " GET /echo HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /echo HTTP/1.1 \r\nHost: x\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\n0\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\n{}\r\n0\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2 \r\n{}\r\n0\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: 1\r\n "
        "y\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: 1\n\r\n",
        /* Transfer-Encoding: one "chunked", never beside Content-Length, never on HTTP/1.0 */
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        "Content-Length: 2\r\n\r\n0\r\n\r\n",
        "POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        /* Host: exactly one on HTTP/1.1, at most one on 1.0; origin-form targets only */
        "GET /echo HTTP/1.1\r\n\r\n",
        "GET /echo HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
        "GET /echo HTTP/1.0\r\nHost: x\r\nHost: y\r\n\r\n",
        "GET http://example.com/echo HTTP/1.1\r\nHost: example.com\r\n\r\n",
        "GET echo HTTP/1.1\r\nHost: x\r\n\r\n",
    };
    tserver_t *ts = server_start();
    for (size_t i = 0; i < CHAT_ARRAY_LEN(bad); i++) {
        cli_t c;
        cli_open(&c, ts->port);
        cli_send_tolerant(&c, bad[i], strlen(bad[i]));
        resp_t r;
        if (cli_read_response(&c, &r) != 0)
            fail_msg("no answer to malformed request %zu", i);
        assert_json_error(&r, 400, "bad_request");
        resp_free(&r);
        if (!cli_wait_closed(&c, 5000))
            fail_msg("connection left open after malformed request %zu", i);
        cli_close(&c);
    }
    /* A good request pipelined before a bad one is still answered, first. */
    cli_t c;
    cli_open(&c, ts->port);
    cli_sends(&c, "GET /defer?ms=30&tag=ok HTTP/1.1\r\nHost: x\r\n\r\nBAD\r\n\r\n");
    resp_t r;
    assert_int_equal(cli_read_response(&c, &r), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    assert_int_equal(cli_read_response(&c, &r), 0);
    assert_json_error(&r, 400, "bad_request");
    resp_free(&r);
    assert_true(cli_wait_closed(&c, 5000));
    cli_close(&c);
    assert_int_equal(atomic_load(&ts->dispatched), 1);
    server_stop(ts);
}

/* Framing that is fine however it is cut into reads; other versions are 505. */
static void test_strict_framing_edges(void **state)
{
    tserver_t *ts = server_start();
    static const char req[] =
        "\r\nPOST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        "5;a=b\r\nhello\r\n6 ; c\r\n world\r\n0\r\nX-T: 1\r\n\r\n"
        "GET /echo?tag=two HTTP/1.0\r\n\r\n";
    cli_t c;
    cli_open(&c, ts->port);
    for (size_t i = 0; i < sizeof req - 1; i++)
        cli_send(&c, req + i, 1);
    resp_t r;
    assert_int_equal(cli_read_response(&c, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"body\":\"hello world\""));
    resp_free(&r);
    assert_int_equal(cli_read_response(&c, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"tag\":\"two\""));
    resp_free(&r);
    cli_close(&c);
    static const char *versions[] = {"HTTP/1.9", "HTTP/2.0", "HTTP/0.9", "HTTP/3.1"};
    for (size_t i = 0; i < CHAT_ARRAY_LEN(versions); i++) {
        char line[96];
        snprintf(line, sizeof line, "GET /echo %s\r\nHost: x\r\n\r\n", versions[i]);
        cli_open(&c, ts->port);
        cli_sends(&c, line);
        assert_int_equal(cli_read_response(&c, &r), 0);
        assert_json_error(&r, 505, "http_version_not_supported");
        resp_free(&r);
        assert_true(cli_wait_closed(&c, 5000));
        cli_close(&c);
    }
    /* A chunk size that overflows is called one. */
    cli_open(&c, ts->port);
    cli_sends(&c, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "fffffffffffffffffff\r\n");
    assert_int_equal(cli_read_response(&c, &r), 0);
    assert_json_error(&r, 400, "bad_request");
    assert_non_null(strstr(r.body, "\"invalid chunk size\""));
    resp_free(&r);
    cli_close(&c);
    assert_int_equal(atomic_load(&ts->dispatched), 2);
    server_stop(ts);
}

static void expect_continue_cfg(chat_http_server_config_t *cfg)
{
    cfg->header_timeout_ms = 10000;
}

static void test_expect_100_continue(void **state)
{
    tserver_t *ts = server_start_with(expect_continue_cfg);
    cli_t c;
    cli_open(&c, ts->port);
    cli_sends(&c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                  "Expect: 100-continue\r\n\r\n");
    resp_t r;
    assert_int_equal(cli_read_response(&c, &r), 0);
    assert_int_equal(r.status, 100);
    resp_free(&r);
    cli_sends(&c, "ping");
    assert_int_equal(cli_read_response(&c, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"body\":\"ping\""));
    resp_free(&r);
    cli_close(&c);
    server_stop(ts);
}

int main(int argc, char **argv)
{
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    signal(SIGPIPE, SIG_IGN);
    chat_log_level = CHAT_LOG_WARN;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_fields),          cmocka_unit_test(test_head_too_large_431),
        cmocka_unit_test(test_body_too_large_413),      cmocka_unit_test(test_chunked_body_decoded),
        cmocka_unit_test(test_malformed_400_and_close), cmocka_unit_test(test_expect_100_continue),
        cmocka_unit_test(test_strict_framing_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
