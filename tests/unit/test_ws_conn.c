/*
 * Unit tests of net/ws_conn.c, the hand-over of a connection from HTTP/1.1
 * to WebSocket: a real loopback client sends an upgrade request with its
 * first frames pipelined behind it, reads the 101 and Sec-WebSocket-Accept,
 * exchanges frames, outlives the HTTP timeouts, is pinged when silent and
 * dropped when it stays silent, and runs the close handshake from either
 * side; the connection is counted once and freed once (run under ASan).
 */
#include "net_harness.h"
#include "net/conn.h"
#include "net/ws.h"
#include "net/ws_conn.h"

#define KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" /* RFC 6455 section 1.3 */
#define UPGRADE(target)                                                                            \
    "GET " target " HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"          \
    "Sec-WebSocket-Key: " KEY "\r\nSec-WebSocket-Version: 13\r\n\r\n"

enum { OP_TEXT = 0x1, OP_CLOSE = 0x8, OP_PING = 0x9, OP_PONG = 0xA };

/* What the WebSocket side of the test server saw; reset by each test. */
static struct {
    _Atomic int accepted; /* chat_ws_conn_accept() gave a connection */
    _Atomic int refused;  /* ... gave NULL */
    _Atomic int messages;
    _Atomic int closed; /* on_close calls */
} W;

/* ---- the server side ---- */

static void ws_on_message(chat_ws_conn_t *ws, const char *msg, size_t len, bool binary, void *ud)
{
    atomic_fetch_add(&W.messages, 1);
    if (len == 5 && memcmp(msg, "close", 5) == 0) {
        chat_ws_conn_close(ws, CHAT_WS_CLOSE_NORMAL, "bye");
        return;
    }
    char out[256];
    int n = snprintf(out, sizeof out, "echo:%.*s", (int)len, msg);
    if (chat_ws_conn_send_text(ws, out, (size_t)n) != 0)
        abort();
}

static void ws_on_close(chat_ws_conn_t *ws, void *ud)
{
    if (chat_ws_conn_id(ws) == 0)
        abort();
    atomic_fetch_add(&W.closed, 1);
}

static const chat_ws_conn_handler_t ws_handler = {ws_on_message, ws_on_close};

/* Checks the handshake, as the API does, and accepts it; ?hello=1 sends a message at once. */
static void ws_accept(chat_http_request_t *req)
{
    const char *why;
    int st = chat_ws_handshake_check(req, &why);
    if (st != 0) {
        chat_buf_t b = CHAT_BUF_INIT;
        chat_json_error(&b, "bad_request", why);
        size_t len;
        char *body = chat_buf_steal(&b, &len);
        chat_http_respond_owned(req, st, NULL, body, len);
        return;
    }
    char hello[8];
    query_get(req->query, "hello", hello, sizeof hello);
    chat_ws_conn_t *ws = chat_ws_conn_accept(req, &ws_handler, NULL);
    if (!ws) {
        atomic_fetch_add(&W.refused, 1);
        return;
    }
    atomic_fetch_add(&W.accepted, 1);
    if (hello[0] && chat_ws_conn_send_text(ws, "welcome", 7) != 0)
        abort();
}

static void ws_defer_cb(uv_timer_t *t)
{
    ws_accept(t->data);
    uv_close((uv_handle_t *)t, defer_closed_cb);
}

/* /ws upgrades (?defer=ms: after a while); everything else goes to the harness's handler. */
static void ws_test_handler(chat_http_request_t *req)
{
    tserver_t *ts = req->server_data;
    if (strcmp(req->path, "/ws") != 0) {
        handler(req);
        return;
    }
    atomic_fetch_add(&ts->dispatched, 1);
    req->route = "/ws";
    char ms[16] = "";
    if (req->query)
        query_get(req->query, "defer", ms, sizeof ms);
    if (!ms[0]) {
        ws_accept(req);
        return;
    }
    uv_timer_t *t = chat_malloc(sizeof *t);
    uv_timer_init(&ts->loop, t);
    t->data = req;
    uv_timer_start(t, ws_defer_cb, (uint64_t)atoi(ms), 0);
}

static void ws_cfg(chat_http_server_config_t *cfg)
{
    cfg->handler = ws_test_handler;
    cfg->header_timeout_ms = 100;
    cfg->idle_timeout_ms = 150;
    cfg->ws_ping_interval_ms = 1000;
}

static void fast_ping_cfg(chat_http_server_config_t *cfg)
{
    ws_cfg(cfg);
    cfg->ws_ping_interval_ms = 100;
}

static int setup(void **state)
{
    atomic_store(&W.accepted, 0);
    atomic_store(&W.refused, 0);
    atomic_store(&W.messages, 0);
    atomic_store(&W.closed, 0);
    return 0;
}

/* ---- the client side ---- */

/* Appends a masked client frame (FIN set). */
static void frame_put(chat_buf_t *b, int op, const void *payload, size_t n)
{
    static const unsigned char mask[4] = {0x12, 0x34, 0x56, 0x78};
    chat_buf_putc(b, (char)(0x80 | op));
    if (n < 126) {
        chat_buf_putc(b, (char)(0x80 | n));
    } else {
        chat_buf_putc(b, (char)(0x80 | 126));
        chat_buf_putc(b, (char)(n >> 8));
        chat_buf_putc(b, (char)(n & 0xff));
    }
    chat_buf_append(b, mask, 4);
    const unsigned char *p = payload;
    for (size_t i = 0; i < n; i++)
        chat_buf_putc(b, (char)(p[i] ^ mask[i % 4]));
}

static void send_frame(cli_t *c, int op, const void *payload, size_t n)
{
    chat_buf_t b = CHAT_BUF_INIT;
    frame_put(&b, op, payload, n);
    cli_send(c, b.data, b.len);
    chat_buf_dispose(&b);
}

static void send_text(cli_t *c, const char *s)
{
    send_frame(c, OP_TEXT, s, strlen(s));
}

static void send_close(cli_t *c, uint16_t code)
{
    unsigned char p[2] = {(unsigned char)(code >> 8), (unsigned char)(code & 0xff)};
    send_frame(c, OP_CLOSE, p, 2);
}

typedef struct frame {
    int op;
    char data[1024]; /* NUL-terminated payload */
    size_t len;
} frame_t;

/* Reads one server frame (unmasked, unfragmented). Returns 0, or -1 at EOF or timeout. */
static int read_frame(cli_t *c, frame_t *f, int timeout_ms)
{
    uint64_t end = now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        const unsigned char *p = (const unsigned char *)c->in.data;
        if (c->in.len >= 2) {
            assert_int_equal(p[0] & 0x80, 0x80); /* FIN */
            assert_int_equal(p[1] & 0x80, 0);    /* a server never masks */
            size_t n = p[1] & 0x7f, hl = 2;
            if (n == 126 && c->in.len >= 4) {
                n = (size_t)p[2] << 8 | p[3];
                hl = 4;
            }
            if (n < 126 && c->in.len >= hl + n) {
                assert_true(n < sizeof f->data);
                f->op = p[0] & 0x0f;
                memcpy(f->data, p + hl, n);
                f->data[n] = '\0';
                f->len = n;
                memmove(c->in.data, c->in.data + hl + n, c->in.len - hl - n);
                c->in.len -= hl + n;
                return 0;
            }
        }
        int left = (int)(end - now_ms());
        if (left <= 0 || cli_fill(c, left) <= 0)
            return -1;
    }
}

static void expect_text(cli_t *c, const char *want)
{
    frame_t f;
    if (read_frame(c, &f, 5000) != 0)
        fail_msg("no frame, want text \"%s\"", want);
    assert_int_equal(f.op, OP_TEXT);
    assert_string_equal(f.data, want);
}

static uint16_t close_code(const frame_t *f)
{
    return f->len >= 2 ? (uint16_t)((unsigned char)f->data[0] << 8 | (unsigned char)f->data[1]) : 0;
}

static void expect_101(cli_t *c)
{
    resp_t r;
    assert_int_equal(cli_read_response(c, &r), 0);
    assert_int_equal(r.status, 101);
    char v[64];
    assert_true(resp_header(&r, "Upgrade", v, sizeof v));
    assert_string_equal(v, "websocket");
    assert_true(resp_header(&r, "Connection", v, sizeof v));
    assert_string_equal(v, "Upgrade");
    assert_true(resp_header(&r, "Sec-WebSocket-Accept", v, sizeof v));
    assert_string_equal(v, ACCEPT);
    assert_false(resp_header(&r, "Content-Length", v, sizeof v));
    resp_free(&r);
}

static double gauge(const char *kind)
{
    return chat_metric_value(chat_conn_gauge(kind));
}

/* ---- tests ---- */

static void test_hand_over_with_pipelined_frames(void **state)
{
    chat_log_level = CHAT_LOG_DEBUG; /* exercises the open, close and hand-over log lines */
    double ws0 = gauge("websocket"), http0 = gauge("http");
    tserver_t *ts = server_start_with(ws_cfg);
    cli_t c;
    cli_open(&c, ts->port);
    /* The handshake and the first two frames in one write: they arrive in one read. */
    chat_buf_t b = CHAT_BUF_INIT;
    chat_buf_puts(&b, UPGRADE("/ws"));
    frame_put(&b, OP_TEXT, "one", 3);
    frame_put(&b, OP_TEXT, "two", 3);
    cli_send(&c, b.data, b.len);
    chat_buf_dispose(&b);
    expect_101(&c);
    expect_text(&c, "echo:one");
    expect_text(&c, "echo:two");
    /* Counted once, under its new kind. */
    assert_int_equal(atomic_load(&ts->open), 1);
    assert_true(gauge("websocket") == ws0 + 1);
    assert_true(gauge("http") == http0);
    /* Longer than the header and idle timeouts, shorter than the ping interval: still open. */
    usleep(250 * 1000);
    send_text(&c, "three");
    expect_text(&c, "echo:three");
    /* Silent: a ping comes; a pong keeps the connection. */
    frame_t f;
    uint64_t t0 = now_ms();
    assert_int_equal(read_frame(&c, &f, 3000), 0);
    assert_int_equal(f.op, OP_PING);
    assert_true(now_ms() - t0 >= 800);
    send_frame(&c, OP_PONG, f.data, f.len);
    send_text(&c, "four");
    expect_text(&c, "echo:four");
    /* The client closes: the server echoes the close, then ends the connection. */
    send_close(&c, CHAT_WS_CLOSE_NORMAL);
    assert_int_equal(read_frame(&c, &f, 5000), 0);
    assert_int_equal(f.op, OP_CLOSE);
    assert_int_equal(close_code(&f), CHAT_WS_CLOSE_NORMAL);
    assert_true(cli_wait_closed(&c, 5000));
    assert_int_equal(c.in.len, 0);
    cli_close(&c);
    assert_int_equal(wait_atomic_equal(&W.closed, 1, 5000), 1);
    assert_int_equal(wait_atomic_equal(&ts->open, 0, 5000), 0);
    assert_true(gauge("websocket") == ws0);
    assert_true(gauge("http") == http0);
    assert_int_equal(atomic_load(&W.accepted), 1);
    assert_int_equal(atomic_load(&W.messages), 4);
    server_stop(ts);
    assert_int_equal(atomic_load(&W.closed), 1); /* once, also after the server is gone */
}

/* A message sent at once waits for the 101, which waits for the earlier pipelined answer. */
static void test_101_in_order_and_messages_after_it(void **state)
{
    tserver_t *ts = server_start_with(ws_cfg);
    cli_t c;
    cli_open(&c, ts->port);
    cli_sends(&c, "GET /defer?ms=100&tag=A HTTP/1.1\r\nHost: x\r\n\r\n" UPGRADE("/ws?hello=1"));
    resp_t r;
    assert_int_equal(cli_read_response(&c, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"tag\":\"A\""));
    resp_free(&r);
    expect_101(&c);
    expect_text(&c, "welcome");
    send_text(&c, "x");
    expect_text(&c, "echo:x");
    cli_close(&c);
    assert_int_equal(wait_atomic_equal(&W.closed, 1, 5000), 1);
    server_stop(ts);
}

static void test_silent_client_is_dropped(void **state)
{
    tserver_t *ts = server_start_with(fast_ping_cfg);
    cli_t c;
    cli_open(&c, ts->port);
    cli_sends(&c, UPGRADE("/ws"));
    expect_101(&c);
    uint64_t t0 = now_ms();
    frame_t f;
    assert_int_equal(read_frame(&c, &f, 3000), 0);
    assert_int_equal(f.op, OP_PING);
    /* No pong: gone after a second interval, without a close frame. */
    assert_true(cli_wait_closed(&c, 5000));
    assert_true(now_ms() - t0 >= 150);
    assert_int_equal(c.in.len, 0);
    cli_close(&c);
    assert_int_equal(wait_atomic_equal(&W.closed, 1, 5000), 1);
    assert_int_equal(wait_atomic_equal(&ts->open, 0, 5000), 0);
    server_stop(ts);
}

static void test_server_starts_close_handshake(void **state)
{
    tserver_t *ts = server_start_with(ws_cfg);
    cli_t c;
    cli_open(&c, ts->port);
    cli_sends(&c, UPGRADE("/ws"));
    expect_101(&c);
    send_text(&c, "close");
    frame_t f;
    assert_int_equal(read_frame(&c, &f, 5000), 0);
    assert_int_equal(f.op, OP_CLOSE);
    assert_int_equal(close_code(&f), CHAT_WS_CLOSE_NORMAL);
    assert_string_equal(f.data + 2, "bye");
    /* The connection stays until the client answers the close. */
    assert_int_equal(cli_fill(&c, 100), -1);
    send_close(&c, CHAT_WS_CLOSE_NORMAL);
    assert_true(cli_wait_closed(&c, 5000));
    cli_close(&c);
    assert_int_equal(wait_atomic_equal(&W.closed, 1, 5000), 1);
    server_stop(ts);
}

static void test_server_shutdown_says_going_away(void **state)
{
    tserver_t *ts = server_start_with(ws_cfg);
    cli_t c;
    cli_open(&c, ts->port);
    cli_sends(&c, UPGRADE("/ws"));
    expect_101(&c);
    send_text(&c, "x");
    expect_text(&c, "echo:x");
    server_stop(ts); /* returns once the loop has closed every handle */
    frame_t f;
    assert_int_equal(read_frame(&c, &f, 5000), 0);
    assert_int_equal(f.op, OP_CLOSE);
    assert_int_equal(close_code(&f), CHAT_WS_CLOSE_GOING_AWAY);
    assert_true(cli_wait_closed(&c, 5000));
    cli_close(&c);
    assert_int_equal(atomic_load(&W.closed), 1);
}

static void test_protocol_error_closes_1002(void **state)
{
    tserver_t *ts = server_start_with(ws_cfg);
    cli_t c;
    cli_open(&c, ts->port);
    cli_sends(&c, UPGRADE("/ws"));
    expect_101(&c);
    static const char unmasked[] = {(char)0x81, 0x02, 'h', 'i'};
    cli_send(&c, unmasked, sizeof unmasked);
    frame_t f;
    assert_int_equal(read_frame(&c, &f, 5000), 0);
    assert_int_equal(f.op, OP_CLOSE);
    assert_int_equal(close_code(&f), CHAT_WS_CLOSE_PROTOCOL_ERROR);
    assert_true(cli_wait_closed(&c, 5000));
    cli_close(&c);
    assert_int_equal(wait_atomic_equal(&W.closed, 1, 5000), 1);
    assert_int_equal(atomic_load(&W.messages), 0);
    server_stop(ts);
}

/*
 * The client leaves before the handler accepts. The connection does not read
 * while its upgrade is with the handler, so the accept may still succeed and
 * the 101 then fails to go out; either way on_close fires as often as accept
 * gave a connection, and the slot is given back.
 */
static void test_client_gone_before_accept(void **state)
{
    tserver_t *ts = server_start_with(ws_cfg);
    cli_t c;
    cli_open(&c, ts->port);
    cli_sends(&c, UPGRADE("/ws?defer=100"));
    assert_int_equal(wait_atomic_at_least(&ts->dispatched, 1, 5000), 1);
    cli_reset(&c);
    uint64_t end = now_ms() + 5000;
    while (atomic_load(&W.accepted) + atomic_load(&W.refused) < 1 && now_ms() < end)
        usleep(2000);
    assert_int_equal(atomic_load(&W.accepted) + atomic_load(&W.refused), 1);
    int accepted = atomic_load(&W.accepted);
    assert_int_equal(wait_atomic_equal(&W.closed, accepted, 5000), accepted);
    assert_int_equal(wait_atomic_equal(&ts->open, 0, 5000), 0);
    server_stop(ts);
    assert_int_equal(atomic_load(&W.closed), accepted);
}

static void big_output_cfg(chat_http_server_config_t *cfg)
{
    ws_cfg(cfg);
    cfg->max_pending_output = 64 * 1024 * 1024;
}

/*
 * Accepted, but the connection ends while the 101 still waits behind an
 * earlier unanswered request (a big answer before it fails to go out): the
 * connection is handed over as it closes, and on_close fires once.
 */
static void test_connection_ends_before_101_is_out(void **state)
{
    tserver_t *ts = server_start_with(big_output_cfg);
    cli_t c;
    cli_open(&c, ts->port);
    /* 16 MiB: big enough to stay unwritten, small enough that the upgrade is handed over too. */
    cli_sends(&c, "GET /big?kb=16384 HTTP/1.1\r\nHost: x\r\n\r\n"
                  "GET /defer?ms=2000&tag=slow HTTP/1.1\r\nHost: x\r\n\r\n" UPGRADE("/ws"));
    assert_int_equal(wait_atomic_at_least(&W.accepted, 1, 5000), 1);
    cli_reset(&c); /* the big answer is still being written: its write fails */
    assert_int_equal(wait_atomic_equal(&W.closed, 1, 5000), 1);
    assert_int_equal(wait_atomic_equal(&ts->open, 0, 5000), 0);
    /* The slow answer then only frees its cancelled request. */
    assert_int_equal(wait_atomic_at_least(&ts->cancelled_seen, 1, 5000), 1);
    assert_int_equal(atomic_load(&W.closed), 1);
    server_stop(ts);
}

/* The server starts closing while the handler holds the upgrade: 503, and no connection. */
static void test_server_closing_refuses_upgrade(void **state)
{
    tserver_t *ts = server_start_with(ws_cfg);
    cli_t c;
    cli_open(&c, ts->port);
    cli_sends(&c, UPGRADE("/ws?defer=150"));
    assert_int_equal(wait_atomic_at_least(&ts->dispatched, 1, 5000), 1);
    uv_async_send(&ts->stop);
    resp_t r;
    assert_int_equal(cli_read_response(&c, &r), 0);
    assert_json_error(&r, 503, "unavailable");
    resp_free(&r);
    assert_true(cli_wait_closed(&c, 5000));
    cli_close(&c);
    pthread_join(ts->thread, NULL);
    assert_int_equal(ts->loop_close_rc, 0);
    assert_int_equal(atomic_load(&ts->open), 0);
    uv_sem_destroy(&ts->ready);
    pthread_mutex_destroy(&ts->mu);
    free(ts);
    assert_int_equal(atomic_load(&W.refused), 1);
    assert_int_equal(atomic_load(&W.accepted), 0);
    assert_int_equal(atomic_load(&W.closed), 0);
}

/* A handshake the caller's check refuses is an ordinary answer; the connection then ends. */
static void test_refused_handshake_stays_http(void **state)
{
    tserver_t *ts = server_start_with(ws_cfg);
    cli_t c;
    cli_open(&c, ts->port);
    cli_sends(&c, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  "Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n");
    resp_t r;
    assert_int_equal(cli_read_response(&c, &r), 0);
    assert_json_error(&r, 400, "bad_request");
    char v[32];
    assert_true(resp_header(&r, "Connection", v, sizeof v));
    assert_string_equal(v, "close");
    resp_free(&r);
    assert_true(cli_wait_closed(&c, 5000));
    cli_close(&c);
    assert_int_equal(atomic_load(&W.accepted), 0);
    server_stop(ts);
    assert_int_equal(atomic_load(&W.closed), 0);
}

int main(int argc, char **argv)
{
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    signal(SIGPIPE, SIG_IGN);
    chat_log_level = CHAT_LOG_WARN;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_hand_over_with_pipelined_frames, setup,
                                        restore_log_level),
        cmocka_unit_test_setup(test_101_in_order_and_messages_after_it, setup),
        cmocka_unit_test_setup(test_silent_client_is_dropped, setup),
        cmocka_unit_test_setup(test_server_starts_close_handshake, setup),
        cmocka_unit_test_setup(test_server_shutdown_says_going_away, setup),
        cmocka_unit_test_setup(test_protocol_error_closes_1002, setup),
        cmocka_unit_test_setup(test_client_gone_before_accept, setup),
        cmocka_unit_test_setup(test_connection_ends_before_101_is_out, setup),
        cmocka_unit_test_setup(test_server_closing_refuses_upgrade, setup),
        cmocka_unit_test_setup(test_refused_handshake_stays_http, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
