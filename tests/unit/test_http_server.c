/*
 * Unit tests of net/http_server.c: the graceful close (idle connections go
 * at once, answers in flight still arrive, the last says close) and a close
 * with no connection at all. A real server and blocking client sockets
 * (net_harness.h).
 */
#include "net_harness.h"

static void test_server_close_finishes_in_flight(void **state)
{
    tserver_t *ts = server_start();
    cli_t busy, idle;
    cli_open(&idle, ts->port);
    cli_open(&busy, ts->port);
    cli_sends(&busy, "GET /defer?ms=200&tag=A HTTP/1.1\r\nHost: x\r\n\r\n"
                     "GET /defer?ms=50&tag=B HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(wait_atomic_at_least(&ts->dispatched, 2, 5000), 2);
    uv_async_send(&ts->stop);
    /* The idle connection goes at once; both answers in flight still arrive, the last says close.
     */
    assert_true(cli_wait_closed(&idle, 5000));
    cli_close(&idle);
    resp_t r;
    char v[32];
    assert_int_equal(cli_read_response(&busy, &r), 0);
    assert_non_null(strstr(r.body, "\"tag\":\"A\""));
    resp_free(&r);
    assert_int_equal(cli_read_response(&busy, &r), 0);
    assert_non_null(strstr(r.body, "\"tag\":\"B\""));
    assert_true(resp_header(&r, "Connection", v, sizeof v));
    assert_string_equal(v, "close");
    resp_free(&r);
    assert_true(cli_wait_closed(&busy, 5000));
    cli_close(&busy);
    pthread_join(ts->thread, NULL);
    assert_int_equal(ts->loop_close_rc, 0);
    assert_int_equal(atomic_load(&ts->open), 0);
    uv_sem_destroy(&ts->ready);
    pthread_mutex_destroy(&ts->mu);
    free(ts);
}

static void test_server_close_without_connections(void **state)
{
    tserver_t *ts = server_start();
    server_stop(ts);
}

int main(int argc, char **argv)
{
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    signal(SIGPIPE, SIG_IGN);
    chat_log_level = CHAT_LOG_WARN;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_server_close_finishes_in_flight),
        cmocka_unit_test(test_server_close_without_connections),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
