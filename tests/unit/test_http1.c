/*
 * Unit tests of net/http1.c, HTTP/1.1 on a connection: request fields,
 * keep-alive, pipelining and the unsafe-method barrier, the head and body
 * limits, chunked bodies, malformed requests, HTTP/1.0, 100-continue, the
 * header and idle timeouts, and requests whose client left. A real server
 * and blocking client sockets (net_harness.h).
 */
#include "net_harness.h"

static void test_get_keep_alive(void **state)
{
    chat_log_level = CHAT_LOG_DEBUG; /* exercises the per-request and close log lines */
    tserver_t *ts = server_start();
    cli_t c;
    cli_open(&c, ts->port);
    for (int i = 0; i < 3; i++) {
        cli_sends(&c, "GET /echo?tag=k HTTP/1.1\r\nHost: x\r\n\r\n");
        resp_t r;
        assert_int_equal(cli_read_response(&c, &r), 0);
        assert_int_equal(r.status, 200);
        char v[128];
        assert_true(resp_header(&r, "Content-Type", v, sizeof v));
        assert_string_equal(v, "application/json");
        assert_true(resp_header(&r, "Connection", v, sizeof v));
        assert_string_equal(v, "keep-alive");
        assert_true(resp_header(&r, "Date", v, sizeof v));
        assert_non_null(strstr(v, " GMT"));
        assert_non_null(strstr(r.body, "\"path\":\"/echo\""));
        resp_free(&r);
    }
    /* Unknown path: the caller's headers follow ours, and its Content-Type is not doubled. */
    cli_sends(&c, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
    resp_t r;
    assert_int_equal(cli_read_response(&c, &r), 0);
    assert_int_equal(r.status, 404);
    assert_non_null(strstr(r.head, "\r\nX-Test: 1\r\n"));
    resp_free(&r);
    /* 204: no body, no Content-Length, connection still usable. */
    cli_sends(&c, "GET /nocontent HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(cli_read_response(&c, &r), 0);
    assert_int_equal(r.status, 204);
    assert_null(strstr(r.head, "Content-Length"));
    resp_free(&r);
    assert_int_equal(atomic_load(&ts->open), 1);
    cli_close(&c);
    server_stop(ts);
}

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
    resp_free(&r);
    cli_sends(&c, "GET /echo? HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(cli_read_response(&c, &r), 0);
    assert_non_null(strstr(r.body, "\"path\":\"/echo\",\"query\":\"\""));
    resp_free(&r);
    /* Absolute form: only the path and query are kept. */
    cli_sends(&c, "GET http://example.com/echo?x=2 HTTP/1.1\r\nHost: example.com\r\n\r\n");
    assert_int_equal(cli_read_response(&c, &r), 0);
    assert_non_null(strstr(r.body, "\"path\":\"/echo\",\"query\":\"x=2\""));
    resp_free(&r);
    cli_sends(&c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world");
    assert_int_equal(cli_read_response(&c, &r), 0);
    assert_non_null(strstr(r.body, "\"method\":\"POST\""));
    assert_non_null(strstr(r.body, "\"body_len\":11,\"body\":\"hello world\""));
    resp_free(&r);
    /* HEAD: Content-Length of the GET answer, no body; the next answer parses cleanly. */
    cli_sends(&c, "HEAD /echo HTTP/1.1\r\nHost: x\r\n\r\nGET /echo?tag=after HTTP/1.1\r\n\r\n");
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

static void test_pipelined_answers_in_order(void **state)
{
    tserver_t *ts = server_start();
    cli_t c;
    cli_open(&c, ts->port);
    /* The handler answers B at once, C after 30 ms and A after 150 ms. */
    cli_sends(&c, "GET /defer?ms=150&tag=A HTTP/1.1\r\nHost: x\r\n\r\n"
                  "GET /echo?tag=B HTTP/1.1\r\nHost: x\r\n\r\n"
                  "GET /defer?ms=30&tag=C HTTP/1.1\r\nHost: x\r\n\r\n");
    const char *tags[] = {"A", "B", "C"};
    for (int i = 0; i < 3; i++) {
        resp_t r;
        assert_int_equal(cli_read_response(&c, &r), 0);
        assert_int_equal(r.status, 200);
        char want[32];
        snprintf(want, sizeof want, "\"tag\":\"%s\"", tags[i]);
        assert_non_null(strstr(r.body, want));
        resp_free(&r);
    }
    pthread_mutex_lock(&ts->mu);
    assert_string_equal(ts->order, "BCA");
    pthread_mutex_unlock(&ts->mu);
    /* Many small requests in one write. */
    chat_buf_t b = CHAT_BUF_INIT;
    for (int i = 0; i < 100; i++)
        chat_buf_printf(&b, "GET /echo?tag=n%d HTTP/1.1\r\nHost: x\r\n\r\n", i);
    cli_send(&c, b.data, b.len);
    chat_buf_dispose(&b);
    for (int i = 0; i < 100; i++) {
        resp_t r;
        assert_int_equal(cli_read_response(&c, &r), 0);
        char want[32];
        snprintf(want, sizeof want, "\"tag\":\"n%d\"", i);
        assert_non_null(strstr(r.body, want));
        resp_free(&r);
    }
    cli_close(&c);
    server_stop(ts);
}

/* A request that is not safe (POST) is handled alone: later requests wait for its answer. */
static void test_unsafe_request_is_a_barrier(void **state)
{
    tserver_t *ts = server_start();
    cli_t c;
    cli_open(&c, ts->port);
    cli_sends(&c, "GET /defer?ms=60&tag=G1 HTTP/1.1\r\nHost: x\r\n\r\n"
                  "POST /defer?ms=60&tag=P HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
                  "GET /echo?tag=G2 HTTP/1.1\r\nHost: x\r\n\r\n");
    for (int i = 0; i < 3; i++) {
        resp_t r;
        assert_int_equal(cli_read_response(&c, &r), 0);
        resp_free(&r);
    }
    pthread_mutex_lock(&ts->mu);
    assert_string_equal(ts->order, "G1PG2");
    pthread_mutex_unlock(&ts->mu);
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
    cli_sends(&c, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
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
        "GET /echo HTTP/2.0\r\nHost: x\r\n\r\n",
        "GET /echo HTTP/1.1\r\nHost x\r\n\r\n",
        "GET /echo HTTP/1.1\r\nHost: x\r\nX Bad: y\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n{\"a\":1}",
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
        "chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        "GET /echo HTTP/1.1\r\nHost: x\r\nX-A: b\x01c\r\n\r\n",
        "GET /ec\x01ho HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /echo HTTP/1.1\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\n\r\n",
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

static void test_http10_and_connection_close(void **state)
{
    tserver_t *ts = server_start();
    cli_t c;
    resp_t r;
    char v[32];
    cli_open(&c, ts->port);
    cli_sends(&c, "GET /echo HTTP/1.0\r\n\r\n");
    assert_int_equal(cli_read_response(&c, &r), 0);
    assert_int_equal(r.status, 200);
    assert_true(resp_header(&r, "Connection", v, sizeof v));
    assert_string_equal(v, "close");
    resp_free(&r);
    assert_true(cli_wait_closed(&c, 5000));
    cli_close(&c);
    /* HTTP/1.0 with keep-alive stays open. */
    cli_open(&c, ts->port);
    for (int i = 0; i < 2; i++) {
        cli_sends(&c, "GET /echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert_int_equal(cli_read_response(&c, &r), 0);
        assert_true(resp_header(&r, "Connection", v, sizeof v));
        assert_string_equal(v, "keep-alive");
        resp_free(&r);
    }
    cli_close(&c);
    /* Connection: close; what follows it is not answered. */
    cli_open(&c, ts->port);
    cli_sends(&c, "GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                  "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(cli_read_response(&c, &r), 0);
    assert_true(resp_header(&r, "Connection", v, sizeof v));
    assert_string_equal(v, "close");
    resp_free(&r);
    assert_true(cli_wait_closed(&c, 5000));
    assert_int_equal(c.in.len, 0);
    cli_close(&c);
    /* A client that half-closes after its request still gets the answer. */
    cli_open(&c, ts->port);
    cli_sends(&c, "GET /defer?ms=30&tag=h HTTP/1.1\r\nHost: x\r\n\r\n");
    shutdown(c.fd, SHUT_WR);
    assert_int_equal(cli_read_response(&c, &r), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    assert_true(cli_wait_closed(&c, 5000));
    cli_close(&c);
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

static void short_timeouts_cfg(chat_http_server_config_t *cfg)
{
    cfg->header_timeout_ms = 100;
    cfg->idle_timeout_ms = 150;
}

static void test_header_timeout(void **state)
{
    tserver_t *ts = server_start_with(short_timeouts_cfg);
    cli_t c;
    /* Silent connection: closed, with nothing sent. */
    cli_open(&c, ts->port);
    uint64_t t0 = now_ms();
    assert_true(cli_wait_closed(&c, 5000));
    assert_true(now_ms() - t0 >= 80);
    assert_int_equal(c.in.len, 0);
    cli_close(&c);
    /* Half a head: closed, with a 408 at most. */
    cli_open(&c, ts->port);
    cli_sends(&c, "GET /echo HTTP/1.1\r\nHost: x\r\n");
    assert_true(cli_wait_closed(&c, 5000));
    if (c.in.len > 0)
        assert_int_equal(strncmp(c.in.data, "HTTP/1.1 408 ", 13), 0);
    cli_close(&c);
    /* A head trickling in byte by byte does not reset the deadline. */
    cli_open(&c, ts->port);
    const char *slow =
        "GET /echo HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    bool closed = false;
    for (size_t i = 0; slow[i] && !closed; i++) {
        if (send(c.fd, slow + i, 1, MSG_NOSIGNAL) != 1)
            break;
        closed = cli_fill(&c, 20) == 0;
    }
    assert_true(closed || cli_wait_closed(&c, 5000));
    cli_close(&c);
    assert_int_equal(atomic_load(&ts->dispatched), 0);
    server_stop(ts);
}

static void test_idle_timeout(void **state)
{
    tserver_t *ts = server_start_with(short_timeouts_cfg);
    cli_t c;
    cli_open(&c, ts->port);
    cli_sends(&c, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n");
    resp_t r;
    assert_int_equal(cli_read_response(&c, &r), 0);
    resp_free(&r);
    uint64_t t0 = now_ms();
    assert_true(cli_wait_closed(&c, 5000));
    assert_true(now_ms() - t0 >= 100);
    assert_int_equal(c.in.len, 0);
    cli_close(&c);
    /* A request in flight is not idle: the handler takes longer than the idle timeout. */
    cli_open(&c, ts->port);
    cli_sends(&c, "GET /defer?ms=400&tag=slow HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(cli_read_response(&c, &r), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    cli_close(&c);
    server_stop(ts);
}

static void test_cancelled_when_client_leaves(void **state)
{
    tserver_t *ts = server_start();
    cli_t c;
    cli_open(&c, ts->port);
    cli_sends(&c, "GET /defer?ms=150&tag=gone HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(wait_atomic_at_least(&ts->dispatched, 1, 5000), 1);
    cli_reset(&c);
    assert_int_equal(wait_atomic_equal(&ts->open, 0, 5000), 0);
    assert_int_equal(wait_atomic_at_least(&ts->cancelled_seen, 1, 5000), 1);
    server_stop(ts);
}

int main(int argc, char **argv)
{
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    signal(SIGPIPE, SIG_IGN);
    chat_log_level = CHAT_LOG_WARN;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_get_keep_alive, restore_log_level),
        cmocka_unit_test(test_request_fields),
        cmocka_unit_test(test_pipelined_answers_in_order),
        cmocka_unit_test(test_unsafe_request_is_a_barrier),
        cmocka_unit_test(test_head_too_large_431),
        cmocka_unit_test(test_body_too_large_413),
        cmocka_unit_test(test_chunked_body_decoded),
        cmocka_unit_test(test_malformed_400_and_close),
        cmocka_unit_test(test_http10_and_connection_close),
        cmocka_unit_test(test_expect_100_continue),
        cmocka_unit_test(test_header_timeout),
        cmocka_unit_test(test_idle_timeout),
        cmocka_unit_test(test_cancelled_when_client_leaves),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
