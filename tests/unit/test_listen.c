/*
 * Unit tests of net/listen.c: the connection cap (a client over it is
 * accepted and closed at once, a slot freed is a slot available), a host
 * that does not resolve, and IPv6 where the sandbox has it.
 */
#include "net_harness.h"

static void cap2_cfg(chat_http_server_config_t *cfg)
{
    cfg->max_connections = 2;
}

static void test_max_connections(void **state)
{
    tserver_t *ts = server_start_with(cap2_cfg);
    cli_t a, b, x;
    resp_t r;
    cli_open(&a, ts->port);
    cli_open(&b, ts->port);
    cli_sends(&a, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(cli_read_response(&a, &r), 0);
    resp_free(&r);
    cli_sends(&b, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(cli_read_response(&b, &r), 0);
    resp_free(&r);
    assert_int_equal(atomic_load(&ts->open), 2);
    /* The third is accepted and closed at once. */
    cli_open(&x, ts->port);
    assert_true(cli_wait_closed(&x, 5000));
    assert_int_equal(x.in.len, 0);
    cli_close(&x);
    assert_int_equal(atomic_load(&ts->open), 2);
    /* The first two still work. */
    cli_sends(&a, "GET /echo?tag=a2 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(cli_read_response(&a, &r), 0);
    assert_non_null(strstr(r.body, "a2"));
    resp_free(&r);
    cli_sends(&b, "GET /echo?tag=b2 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(cli_read_response(&b, &r), 0);
    assert_non_null(strstr(r.body, "b2"));
    resp_free(&r);
    /* A slot freed is a slot available. */
    cli_close(&a);
    assert_int_equal(wait_atomic_equal(&ts->open, 1, 5000), 1);
    cli_open(&x, ts->port);
    cli_sends(&x, "GET /echo?tag=x HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(cli_read_response(&x, &r), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    cli_close(&x);
    cli_close(&b);
    assert_int_equal(wait_atomic_equal(&ts->open, 0, 5000), 0);
    server_stop(ts);
}

static void test_listen_errors_and_ipv6(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    _Atomic int open = 0;
    chat_http_server_config_t cfg = {
        .host = "not-an-address.invalid",
        .port = 0,
        .open_connections = &open,
        .max_connections = 10,
        .handler = handler,
    };
    int err = 0;
    assert_null(chat_http_server_create(&loop, &cfg, &err));
    assert_true(err < 0);
    /* ::1 may be missing in some sandboxes; when it binds, the port is known. */
    cfg.host = "::1";
    err = 0;
    chat_http_server_t *srv = chat_http_server_create(&loop, &cfg, &err);
    if (srv) {
        assert_true(chat_http_server_port(srv) > 0);
        chat_http_server_close(srv, NULL, NULL);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(int argc, char **argv)
{
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    signal(SIGPIPE, SIG_IGN);
    chat_log_level = CHAT_LOG_WARN;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_max_connections),
        cmocka_unit_test(test_listen_errors_and_ipv6),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
