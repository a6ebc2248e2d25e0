/*
 * Unit tests of net/conn.c, the TCP connection: the bound on unsent output
 * (a client that does not read stops being served, and gets everything once
 * it reads) and the heap an idle keep-alive connection holds. A real server
 * and blocking client sockets (net_harness.h).
 */
#include "net_harness.h"

#include <malloc.h>
#include <sys/resource.h>

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

static void small_output_cfg(chat_http_server_config_t *cfg)
{
    cfg->max_pending_output = 64 * 1024;
}

static void test_slow_reader_backpressure(void **state)
{
    enum { N = 40, KB = 1024 };
    tserver_t *ts = server_start_with(small_output_cfg);
    cli_t c;
    cli_open(&c, ts->port);
    chat_buf_t b = CHAT_BUF_INIT;
    for (int i = 0; i < N; i++)
        chat_buf_printf(&b, "GET /big?kb=%d HTTP/1.1\r\nHost: x\r\n\r\n", KB);
    cli_send(&c, b.data, b.len);
    chat_buf_dispose(&b);
    /*
     * Without reading, the server stops taking requests once the kernel's
     * buffers and max_pending_output are full (40 MiB of answers is more than
     * loopback buffers hold).
     */
    int seen = wait_atomic_at_least(&ts->dispatched, N, 300);
    assert_true(seen < N);
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

/*
 * Heap held per idle keep-alive connection, measured with mallinfo2 while
 * the server runs with one malloc arena. Skipped under ASan, whose allocator
 * mallinfo does not see. CHATD_TEST_IDLE_CONNS sets the count (1000).
 */
static void many_cfg(chat_http_server_config_t *cfg)
{
    cfg->max_connections = 100000;
}

static void test_idle_connection_memory(void **state)
{
    if (UNDER_ASAN) {
        skip();
        return;
    }
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
    int n = getenv("CHATD_TEST_IDLE_CONNS") ? atoi(getenv("CHATD_TEST_IDLE_CONNS")) : 1000;
    if (n < 2)
        n = 2;
    if (rl.rlim_cur != RLIM_INFINITY && (rlim_t)(2 * n + 64) > rl.rlim_cur)
        n = ((int)rl.rlim_cur - 64) / 2;
    tserver_t *ts = server_start_with(many_cfg);
    cli_t *cs = chat_calloc((size_t)n, sizeof *cs);
    /* Warm up: one request so lazily created state (metrics, buffers) is there. */
    cli_open(&cs[0], ts->port);
    cli_sends(&cs[0], "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n");
    resp_t r;
    assert_int_equal(cli_read_response(&cs[0], &r), 0);
    resp_free(&r);
    usleep(20000);
    size_t before = mallinfo2().uordblks;
    for (int i = 1; i < n; i++)
        cli_open(&cs[i], ts->port);
    /* Each connection serves one request, then sits idle. */
    for (int i = 1; i < n; i++)
        cli_sends(&cs[i], "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n");
    for (int i = 1; i < n; i++) {
        assert_int_equal(cli_read_response(&cs[i], &r), 0);
        resp_free(&r);
        chat_buf_dispose(&cs[i].in);
    }
    assert_int_equal(wait_atomic_equal(&ts->open, n, 5000), n);
    usleep(20000);
    size_t after = mallinfo2().uordblks;
    /* The client side allocates nothing per connection by now (buffers disposed). */
    double per = (double)(after > before ? after - before : 0) / (n - 1);
    print_message("idle connection: %.0f bytes of heap each (%d connections)\n", per, n - 1);
    assert_true(per < 4096);
    for (int i = 0; i < n; i++)
        cli_close(&cs[i]);
    free(cs);
    assert_int_equal(wait_atomic_equal(&ts->open, 0, 5000), 0);
    server_stop(ts);
}

int main(int argc, char **argv)
{
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    signal(SIGPIPE, SIG_IGN);
    chat_log_level = CHAT_LOG_WARN;
    /* One arena, so mallinfo2 sees the server thread's allocations. */
    mallopt(M_ARENA_MAX, 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slow_reader_backpressure),
        cmocka_unit_test(test_idle_connection_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
