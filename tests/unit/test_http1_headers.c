/*
 * Unit tests of the headers net/http1.c puts on every answer (issue 12,
 * finding 7): "X-Content-Type-Options: nosniff" on every final answer — the
 * handler's, the HTTP layer's own refusals, bodiless ones — and
 * "Cache-Control: no-store" exactly on the answers the handler marks
 * private. A real server and blocking client sockets (net_harness.h).
 */
#include "net_harness.h"

static void expect_headers(resp_t *r, int status, bool no_store)
{
    char v[64];
    assert_int_equal(r->status, status);
    assert_true(resp_header(r, "X-Content-Type-Options", v, sizeof v));
    assert_string_equal(v, "nosniff");
    if (no_store) {
        assert_true(resp_header(r, "Cache-Control", v, sizeof v));
        assert_string_equal(v, "no-store");
    } else {
        assert_false(resp_header(r, "Cache-Control", v, sizeof v));
    }
}

static void test_nosniff_and_no_store(void **state)
{
    tserver_t *ts = server_start();
    cli_t c;
    cli_open(&c, ts->port);
    cli_sends(&c, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n"
                  "GET /echo?private=1 HTTP/1.1\r\nHost: x\r\n\r\n"
                  "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
                  "GET /nocontent HTTP/1.1\r\nHost: x\r\n\r\n"
                  "HEAD /echo?private=1 HTTP/1.1\r\nHost: x\r\n\r\n");
    static const struct {
        int status;
        bool no_store, head;
    } want[] = {{200, false, false},
                {200, true, false},
                {404, false, false},
                {204, false, false},
                {200, true, true}};
    for (size_t i = 0; i < CHAT_ARRAY_LEN(want); i++) {
        resp_t r;
        assert_int_equal(cli_read_response_ex(&c, &r, want[i].head, 5000), 0);
        expect_headers(&r, want[i].status, want[i].no_store);
        resp_free(&r);
    }
    cli_close(&c);
    /* The HTTP layer's own answer: a malformed request. */
    cli_open(&c, ts->port);
    cli_sends(&c, "GET /echo HTTP/1.1\r\nHost x\r\n\r\n");
    resp_t r;
    assert_int_equal(cli_read_response(&c, &r), 0);
    expect_headers(&r, 400, false);
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
        cmocka_unit_test(test_nosniff_and_no_store),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
