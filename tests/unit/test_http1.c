/*
 * Unit tests of net/http1.c, HTTP/1.1 on a connection: keep-alive,
 * pipelining and the unsafe-method barrier, HTTP/1.0 and Connection: close,
 * the header and idle timeouts, and requests whose client left. A real
 * server and blocking client sockets (net_harness.h).
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

static void short_timeouts_cfg(chat_http_server_config_t *cfg)
{
    cfg->header_timeout_ms = 100;
    cfg->idle_timeout_ms = 150;
}

static void small_lowat_cfg(chat_http_server_config_t *cfg)
{
    cfg->tcp_notsent_lowat = 16 * 1024;
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

/*
 * Bytes that start no request do not keep a connection: blank lines sent
 * after a request, faster than the idle timeout, do not extend it.
 */
static void test_blank_lines_do_not_extend_idle(void **state)
{
    tserver_t *ts = server_start_with(short_timeouts_cfg);
    cli_t c;
    cli_open(&c, ts->port);
    cli_sends(&c, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n");
    resp_t r;
    assert_int_equal(cli_read_response(&c, &r), 0);
    resp_free(&r);
    /* A CRLF every 30 ms for up to 3 s (20 idle timeouts): closed long before. */
    bool closed = false;
    int sent = 0;
    for (; sent < 100 && !closed; sent++) {
        if (send(c.fd, "\r\n", 2, MSG_NOSIGNAL) != 2)
            break;
        closed = cli_fill(&c, 30) == 0;
    }
    assert_true(closed || cli_wait_closed(&c, 1000));
    assert_true(sent < 100);
    assert_int_equal(c.in.len, 0);
    cli_close(&c);
    server_stop(ts);
}

static void slow_body_cfg(chat_http_server_config_t *cfg)
{
    cfg->header_timeout_ms = 100;
    cfg->body_timeout_ms = 200;
    cfg->idle_timeout_ms = 150;
}

/* A body trickling in (a byte every 20 ms) is cut at the body timeout: 408, then the end. */
static void test_slow_body_times_out(void **state)
{
    tserver_t *ts = server_start_with(slow_body_cfg);
    cli_t c;
    cli_open(&c, ts->port);
    cli_sends(&c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n");
    int sent = 0;
    while (sent < 100 && !c.eof && c.in.len == 0) {
        if (send(c.fd, "a", 1, MSG_NOSIGNAL) != 1)
            break;
        sent++;
        cli_fill(&c, 20);
    }
    assert_true(sent < 100);
    resp_t r;
    assert_int_equal(cli_read_response(&c, &r), 0);
    assert_json_error(&r, 408, "request_timeout");
    resp_free(&r);
    assert_true(cli_wait_closed(&c, 5000));
    cli_close(&c);
    assert_int_equal(atomic_load(&ts->dispatched), 0);
    server_stop(ts);
}

/*
 * A pipelining client that does not read: answers come late (as from the
 * database) and are large. The server hands over a few, then none while
 * their bytes wait for the socket; reading them lets the rest through, in
 * order.
 */
static void test_pipelined_answers_in_flight_are_bounded(void **state)
{
    enum { N = 32, KB = 512 };
    tserver_t *ts = server_start_with(small_lowat_cfg);
    cli_t c;
    cli_open(&c, ts->port);
    chat_buf_t b = CHAT_BUF_INIT;
    for (int i = 0; i < N; i++)
        chat_buf_printf(&b, "GET /defer?ms=20&kb=%d HTTP/1.1\r\nHost: x\r\n\r\n", KB);
    cli_send(&c, b.data, b.len);
    chat_buf_dispose(&b);
    /* Four with the handler at once; their 2 MiB pass the 1 MiB bound: no more. */
    assert_true(wait_atomic_at_least(&ts->dispatched, 4, 5000) >= 4);
    assert_true(wait_atomic_at_least(&ts->dispatched, 6, 300) <= 5);
    for (int i = 0; i < N; i++) {
        resp_t r;
        assert_int_equal(cli_read_response(&c, &r), 0);
        assert_int_equal(r.status, 200);
        assert_int_equal(r.body_len, KB * 1024);
        resp_free(&r);
    }
    assert_int_equal(atomic_load(&ts->dispatched), N);
    cli_close(&c);
    server_stop(ts);
}

static _Atomic size_t budget_unsent;

static void budget_cfg(chat_http_server_config_t *cfg)
{
    cfg->tcp_notsent_lowat = 16 * 1024;
    cfg->unsent_bytes = &budget_unsent;
    cfg->max_unsent_bytes = 3 * 1024 * 1024;
}

/*
 * Clients that never read, each asking for a 2 MiB answer: the server holds
 * them until the process's budget (3 MiB) is passed, then closes a
 * connection rather than hold one more; a reading client is still served,
 * and every byte counted is released at the end.
 */
static void test_unsent_output_budget(void **state)
{
    enum { N = 6 };
    atomic_store(&budget_unsent, 0);
    tserver_t *ts = server_start_with(budget_cfg);
    cli_t c[N];
    for (int i = 0; i < N; i++) {
        cli_open(&c[i], ts->port);
        cli_sends(&c[i], "GET /big?kb=2048 HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_true(wait_atomic_at_least(&ts->dispatched, i + 1, 5000) >= i + 1);
    }
    /* The first holds its 2 MiB; each later one would pass 3 MiB: closed instead. */
    assert_int_equal(wait_atomic_equal(&ts->open, 1, 5000), 1);
    assert_true(atomic_load(&budget_unsent) <= 3 * 1024 * 1024);
    assert_true(atomic_load(&budget_unsent) >= 2 * 1024 * 1024);
    cli_t r;
    cli_open(&r, ts->port);
    cli_sends(&r, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n");
    resp_t resp;
    assert_int_equal(cli_read_response(&r, &resp), 0);
    assert_int_equal(resp.status, 200);
    resp_free(&resp);
    cli_close(&r);
    for (int i = 0; i < N; i++)
        cli_close(&c[i]);
    server_stop(ts);
    assert_int_equal(atomic_load(&budget_unsent), 0);
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
        cmocka_unit_test(test_pipelined_answers_in_order),
        cmocka_unit_test(test_unsafe_request_is_a_barrier),
        cmocka_unit_test(test_http10_and_connection_close),
        cmocka_unit_test(test_header_timeout),
        cmocka_unit_test(test_idle_timeout),
        cmocka_unit_test(test_blank_lines_do_not_extend_idle),
        cmocka_unit_test(test_slow_body_times_out),
        cmocka_unit_test(test_pipelined_answers_in_flight_are_bounded),
        cmocka_unit_test(test_unsent_output_budget),
        cmocka_unit_test(test_cancelled_when_client_leaves),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
