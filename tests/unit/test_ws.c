/*
 * Unit tests of net/ws.c: the handshake checks and accept key, and the
 * protocol engine driven with hand-built client frames (masking,
 * fragmentation, control frames, the 1002/1007/1009 failures, the close
 * handshake). No sockets: the engine's output is collected in a buffer and
 * parsed back into frames.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/buf.h"
#include "net/ws.h"

#include <http_parser.h>
#include <stdlib.h>
#include <string.h>

/* ---- handshake ---- */

static void test_accept_key_rfc_example(void **state)
{
    /* RFC 6455 section 1.3. */
    static const char key[] = "dGhlIHNhbXBsZSBub25jZQ==";
    char out[CHAT_WS_ACCEPT_LEN];
    chat_ws_accept_key(key, sizeof key - 1, out);
    assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

static void test_key_valid(void **state)
{
    assert_true(chat_ws_key_valid("dGhlIHNhbXBsZSBub25jZQ==", 24));
    assert_false(chat_ws_key_valid("dGhlIHNhbXBsZSBub25jZQ=", 23));
    assert_false(chat_ws_key_valid("dGhlIHNhbXBsZSBub25jZQ==x", 25));
    assert_false(chat_ws_key_valid("dGhlIHNhbXBsZSBub25jZ*==", 24));
    assert_false(chat_ws_key_valid("dGhlIHNhbXBsZSBub25jZQAA", 24));
    assert_false(chat_ws_key_valid("", 0));
}

static chat_http_request_t good_request(void)
{
    chat_http_request_t r = {0};
    r.method = HTTP_GET;
    r.http_minor = 1;
    r.upgrade = "websocket";
    r.connection = "keep-alive, Upgrade";
    r.ws_key = "dGhlIHNhbXBsZSBub25jZQ==";
    r.ws_version = "13";
    return r;
}

static void test_handshake_check(void **state)
{
    const char *why;
    chat_http_request_t r = good_request();
    assert_int_equal(chat_ws_handshake_check(&r, &why), 0);
    r.upgrade = "WebSocket";
    r.connection = "upgrade";
    assert_int_equal(chat_ws_handshake_check(&r, &why), 0);

    r = good_request();
    r.upgrade = NULL;
    assert_int_equal(chat_ws_handshake_check(&r, &why), 400);
    assert_non_null(why);
    r = good_request();
    r.upgrade = "h2c";
    assert_int_equal(chat_ws_handshake_check(&r, &why), 400);
    r = good_request();
    r.connection = "keep-alive";
    assert_int_equal(chat_ws_handshake_check(&r, &why), 400);
    r = good_request();
    r.ws_key = NULL;
    assert_int_equal(chat_ws_handshake_check(&r, &why), 400);
    r = good_request();
    r.ws_key = "short==";
    assert_int_equal(chat_ws_handshake_check(&r, &why), 400);
    r = good_request();
    r.ws_key = "dGhlIHNhbXBsZSBub25jZQ==, dGhlIHNhbXBsZSBub25jZQ==";
    assert_int_equal(chat_ws_handshake_check(&r, &why), 400);
    r = good_request();
    r.ws_version = "8";
    assert_int_equal(chat_ws_handshake_check(&r, &why), 426);
    r = good_request();
    r.ws_version = NULL;
    assert_int_equal(chat_ws_handshake_check(&r, &why), 426);
    r = good_request();
    r.method = HTTP_POST;
    assert_int_equal(chat_ws_handshake_check(&r, &why), 400);
    r = good_request();
    r.http_minor = 0;
    assert_int_equal(chat_ws_handshake_check(&r, &why), 400);
}

/* ---- the engine ---- */

typedef struct sink {
    chat_buf_t out;
    char texts[8][256];
    size_t text_len[8];
    int ntext;
    int nbinary;
} sink_t;

static void on_text(void *ud, const char *msg, size_t len)
{
    sink_t *s = ud;
    assert_true(s->ntext < 8 && len < 256);
    memcpy(s->texts[s->ntext], msg, len);
    s->text_len[s->ntext++] = len;
}

static void on_binary(void *ud, const char *msg, size_t len)
{
    ((sink_t *)ud)->nbinary++;
}

static void on_output(void *ud, const void *data, size_t len)
{
    chat_buf_append(&((sink_t *)ud)->out, data, len);
}

static const chat_ws_engine_cbs_t cbs = {on_text, on_binary, on_output};

/* Appends one client frame to b: masked unless mask is false. */
static void frame(chat_buf_t *b, bool fin, int opcode, bool mask, const void *payload, size_t len)
{
    static const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
    uint8_t h[14];
    size_t n = 0;
    h[n++] = (uint8_t)((fin ? 0x80 : 0) | opcode);
    uint8_t m = mask ? 0x80 : 0;
    if (len < 126) {
        h[n++] = (uint8_t)(m | len);
    } else if (len < 65536) {
        h[n++] = m | 126;
        h[n++] = (uint8_t)(len >> 8);
        h[n++] = (uint8_t)len;
    } else {
        h[n++] = m | 127;
        for (int i = 7; i >= 0; i--)
            h[n++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    if (mask) {
        memcpy(h + n, key, 4);
        n += 4;
    }
    chat_buf_append(b, h, n);
    const uint8_t *p = payload;
    for (size_t i = 0; i < len; i++) {
        uint8_t ch = mask ? (uint8_t)(p[i] ^ key[i % 4]) : p[i];
        chat_buf_append(b, &ch, 1);
    }
}

typedef struct sframe {
    int fin, opcode, masked;
    size_t len;
    const uint8_t *payload;
} sframe_t;

/* Parses the server frame at *pos of out; returns false at the end. */
static bool next_frame(const chat_buf_t *out, size_t *pos, sframe_t *f)
{
    const uint8_t *d = (const uint8_t *)out->data;
    if (*pos + 2 > out->len)
        return false;
    size_t p = *pos;
    f->fin = d[p] >> 7;
    f->opcode = d[p] & 0x0f;
    f->masked = d[p + 1] >> 7;
    size_t len = d[p + 1] & 0x7f;
    p += 2;
    if (len == 126) {
        len = ((size_t)d[p] << 8) | d[p + 1];
        p += 2;
    } else if (len == 127) {
        len = 0;
        for (int i = 0; i < 8; i++)
            len = (len << 8) | d[p + i];
        p += 8;
    }
    assert_true(p + len <= out->len);
    f->len = len;
    f->payload = d + p;
    *pos = p + len;
    return true;
}

static uint16_t close_code(const sframe_t *f)
{
    assert_int_equal(f->opcode, 8);
    assert_true(f->len >= 2);
    return (uint16_t)((f->payload[0] << 8) | f->payload[1]);
}

typedef struct fixture {
    sink_t sink;
    chat_ws_engine_t *e;
    chat_buf_t in;
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    f->e = chat_ws_engine_create(&cbs, &f->sink, 1024);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    chat_ws_engine_destroy(f->e);
    chat_buf_dispose(&f->sink.out);
    chat_buf_dispose(&f->in);
    free(f);
    return 0;
}

static void feed_flush(fixture_t *f)
{
    assert_int_equal(chat_ws_engine_feed(f->e, f->in.data, f->in.len), 0);
    assert_int_equal(chat_ws_engine_flush(f->e), 0);
    chat_buf_reset(&f->in);
}

/* The only output is one close frame with code; the engine is then done. */
static void expect_failed(fixture_t *f, uint16_t code)
{
    size_t pos = 0;
    sframe_t fr;
    assert_true(next_frame(&f->sink.out, &pos, &fr));
    assert_int_equal(fr.masked, 0);
    assert_int_equal(close_code(&fr), code);
    assert_false(next_frame(&f->sink.out, &pos, &fr));
    assert_false(chat_ws_engine_want_read(f->e));
    assert_true(chat_ws_engine_finished(f->e));
    assert_int_equal(chat_ws_engine_close_code(f->e), code);
}

static void test_origin_allowed(void **state)
{
    const char *list = " https://chat.example , http://localhost:8080";
    assert_true(chat_ws_origin_allowed(NULL, "https://evil.example"));
    assert_true(chat_ws_origin_allowed("", "https://evil.example"));
    assert_true(chat_ws_origin_allowed(" , ", "https://evil.example"));
    assert_true(chat_ws_origin_allowed(list, NULL)); /* not a browser */
    assert_true(chat_ws_origin_allowed(list, "https://chat.example"));
    assert_true(chat_ws_origin_allowed(list, "HTTPS://Chat.Example"));
    assert_true(chat_ws_origin_allowed(list, "http://localhost:8080"));
    assert_true(chat_ws_origin_allowed("null", "null"));
    assert_false(chat_ws_origin_allowed(list, "https://evil.example"));
    assert_false(chat_ws_origin_allowed(list, "https://chat.example.evil"));
    assert_false(chat_ws_origin_allowed(list, "https://chat.exampl"));
    assert_false(chat_ws_origin_allowed(list, "http://localhost:808"));
    assert_false(chat_ws_origin_allowed(list, "http://localhost"));
    assert_false(chat_ws_origin_allowed(list, "null"));
    assert_false(chat_ws_origin_allowed(list, ""));
    /* two Origin lines joined by the HTTP layer match no single origin */
    assert_false(chat_ws_origin_allowed(list, "https://chat.example, https://evil.example"));
}

static void test_masked_text(void **state)
{
    fixture_t *f = *state;
    frame(&f->in, true, 1, true, "hello", 5);
    feed_flush(f);
    assert_int_equal(f->sink.ntext, 1);
    assert_int_equal(f->sink.text_len[0], 5);
    assert_memory_equal(f->sink.texts[0], "hello", 5);
    assert_int_equal(f->sink.out.len, 0);
    assert_true(chat_ws_engine_want_read(f->e));
}

static void test_byte_at_a_time(void **state)
{
    fixture_t *f = *state;
    frame(&f->in, true, 1, true, "{\"type\":\"send\"}", 15);
    for (size_t i = 0; i < f->in.len; i++)
        assert_int_equal(chat_ws_engine_feed(f->e, f->in.data + i, 1), 0);
    assert_int_equal(f->sink.ntext, 1);
    assert_memory_equal(f->sink.texts[0], "{\"type\":\"send\"}", 15);
}

static void test_unmasked_fails_1002(void **state)
{
    fixture_t *f = *state;
    frame(&f->in, true, 1, false, "hello", 5);
    feed_flush(f);
    assert_int_equal(f->sink.ntext, 0);
    expect_failed(f, CHAT_WS_CLOSE_PROTOCOL_ERROR);
}

static void test_fragments_with_ping_between(void **state)
{
    fixture_t *f = *state;
    frame(&f->in, false, 1, true, "Hel", 3);
    frame(&f->in, true, 9, true, "p1", 2);
    frame(&f->in, false, 0, true, "l", 1);
    frame(&f->in, true, 0, true, "o", 1);
    feed_flush(f);
    assert_int_equal(f->sink.ntext, 1);
    assert_int_equal(f->sink.text_len[0], 5);
    assert_memory_equal(f->sink.texts[0], "Hello", 5);
    size_t pos = 0;
    sframe_t fr;
    assert_true(next_frame(&f->sink.out, &pos, &fr));
    assert_int_equal(fr.opcode, 10); /* pong with the ping's payload */
    assert_int_equal(fr.masked, 0);
    assert_int_equal(fr.fin, 1);
    assert_int_equal(fr.len, 2);
    assert_memory_equal(fr.payload, "p1", 2);
    assert_false(next_frame(&f->sink.out, &pos, &fr));
}

static void test_continuation_without_start_1002(void **state)
{
    fixture_t *f = *state;
    frame(&f->in, true, 0, true, "x", 1);
    feed_flush(f);
    expect_failed(f, CHAT_WS_CLOSE_PROTOCOL_ERROR);
}

static void test_new_message_inside_fragments_1002(void **state)
{
    fixture_t *f = *state;
    frame(&f->in, false, 1, true, "a", 1);
    frame(&f->in, true, 1, true, "b", 1);
    feed_flush(f);
    assert_int_equal(f->sink.ntext, 0);
    expect_failed(f, CHAT_WS_CLOSE_PROTOCOL_ERROR);
}

static void test_long_control_frame_1002(void **state)
{
    fixture_t *f = *state;
    char big[126];
    memset(big, 'p', sizeof big);
    frame(&f->in, true, 9, true, big, sizeof big);
    feed_flush(f);
    expect_failed(f, CHAT_WS_CLOSE_PROTOCOL_ERROR);
}

static void test_fragmented_control_frame_1002(void **state)
{
    fixture_t *f = *state;
    frame(&f->in, false, 9, true, "p", 1);
    feed_flush(f);
    expect_failed(f, CHAT_WS_CLOSE_PROTOCOL_ERROR);
}

static void test_reserved_bits_and_opcodes_1002(void **state)
{
    fixture_t *f = *state;
    frame(&f->in, true, 3, true, "x", 1); /* reserved data opcode */
    feed_flush(f);
    expect_failed(f, CHAT_WS_CLOSE_PROTOCOL_ERROR);

    sink_t s2 = {0};
    chat_ws_engine_t *e = chat_ws_engine_create(&cbs, &s2, 1024);
    chat_buf_t in = CHAT_BUF_INIT;
    frame(&in, true, 1, true, "x", 1);
    in.data[0] |= 0x40; /* RSV1 without an extension */
    assert_int_equal(chat_ws_engine_feed(e, in.data, in.len), 0);
    assert_int_equal(chat_ws_engine_flush(e), 0);
    assert_int_equal(s2.ntext, 0);
    assert_int_equal(chat_ws_engine_close_code(e), CHAT_WS_CLOSE_PROTOCOL_ERROR);
    chat_ws_engine_destroy(e);
    chat_buf_dispose(&in);
    chat_buf_dispose(&s2.out);
}

static void test_invalid_utf8_1007(void **state)
{
    fixture_t *f = *state;
    frame(&f->in, true, 1, true, "ok \xc3\x28", 5);
    feed_flush(f);
    assert_int_equal(f->sink.ntext, 0);
    expect_failed(f, CHAT_WS_CLOSE_INVALID_DATA);
}

static void test_utf8_split_across_fragments(void **state)
{
    fixture_t *f = *state;
    frame(&f->in, false, 1, true, "\xe2\x82", 2); /* the euro sign, split */
    frame(&f->in, true, 0, true, "\xac", 1);
    feed_flush(f);
    assert_int_equal(f->sink.ntext, 1);
    assert_memory_equal(f->sink.texts[0], "\xe2\x82\xac", 3);
}

static void test_too_big_1009(void **state)
{
    fixture_t *f = *state;
    char big[1025];
    memset(big, 'a', sizeof big);
    frame(&f->in, true, 1, true, big, sizeof big);
    feed_flush(f);
    assert_int_equal(f->sink.ntext, 0);
    expect_failed(f, CHAT_WS_CLOSE_TOO_BIG);
}

static void test_too_big_across_fragments_1009(void **state)
{
    fixture_t *f = *state;
    char half[600];
    memset(half, 'a', sizeof half);
    frame(&f->in, false, 1, true, half, sizeof half);
    frame(&f->in, true, 0, true, half, sizeof half);
    feed_flush(f);
    assert_int_equal(f->sink.ntext, 0);
    expect_failed(f, CHAT_WS_CLOSE_TOO_BIG);
}

static void test_close_handshake_echo(void **state)
{
    fixture_t *f = *state;
    const uint8_t payload[] = {0x03, 0xe8, 'b', 'y', 'e'}; /* 1000 "bye" */
    frame(&f->in, true, 8, true, payload, sizeof payload);
    feed_flush(f);
    size_t pos = 0;
    sframe_t fr;
    assert_true(next_frame(&f->sink.out, &pos, &fr));
    assert_int_equal(fr.masked, 0);
    assert_int_equal(close_code(&fr), 1000);
    assert_true(chat_ws_engine_finished(f->e));
    assert_int_equal(chat_ws_engine_send_text(f->e, "late", 4), -1);
}

static void test_server_close_waits_for_echo(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(chat_ws_engine_close(f->e, CHAT_WS_CLOSE_GOING_AWAY, "bye"), 0);
    assert_int_equal(chat_ws_engine_flush(f->e), 0);
    assert_true(chat_ws_engine_closing(f->e));
    assert_false(chat_ws_engine_finished(f->e)); /* still reading for the client's close */
    const uint8_t payload[] = {0x03, 0xe9};
    frame(&f->in, true, 8, true, payload, sizeof payload);
    feed_flush(f);
    assert_true(chat_ws_engine_finished(f->e));
}

static void test_server_frames_unmasked(void **state)
{
    fixture_t *f = *state;
    char big[300];
    memset(big, 'z', sizeof big);
    assert_int_equal(chat_ws_engine_send_text(f->e, "{\"type\":\"ack\"}", 14), 0);
    assert_int_equal(chat_ws_engine_send_text(f->e, big, sizeof big), 0);
    assert_int_equal(chat_ws_engine_ping(f->e), 0);
    assert_int_equal(chat_ws_engine_flush(f->e), 0);
    size_t pos = 0;
    sframe_t fr;
    assert_true(next_frame(&f->sink.out, &pos, &fr));
    assert_int_equal(fr.opcode, 1);
    assert_int_equal(fr.fin, 1);
    assert_int_equal(fr.masked, 0);
    assert_memory_equal(fr.payload, "{\"type\":\"ack\"}", 14);
    assert_true(next_frame(&f->sink.out, &pos, &fr));
    assert_int_equal(fr.len, 300); /* 16-bit length form */
    assert_int_equal(fr.masked, 0);
    assert_true(next_frame(&f->sink.out, &pos, &fr));
    assert_int_equal(fr.opcode, 9);
    assert_false(next_frame(&f->sink.out, &pos, &fr));
}

static void test_binary_is_handed_over(void **state)
{
    fixture_t *f = *state;
    frame(&f->in, true, 2, true, "\x01\x02", 2);
    feed_flush(f);
    assert_int_equal(f->sink.nbinary, 1);
    assert_true(chat_ws_engine_want_read(f->e));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accept_key_rfc_example),
        cmocka_unit_test(test_key_valid),
        cmocka_unit_test(test_handshake_check),
        cmocka_unit_test(test_origin_allowed),
        cmocka_unit_test_setup_teardown(test_masked_text, setup, teardown),
        cmocka_unit_test_setup_teardown(test_byte_at_a_time, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unmasked_fails_1002, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fragments_with_ping_between, setup, teardown),
        cmocka_unit_test_setup_teardown(test_continuation_without_start_1002, setup, teardown),
        cmocka_unit_test_setup_teardown(test_new_message_inside_fragments_1002, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_control_frame_1002, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fragmented_control_frame_1002, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reserved_bits_and_opcodes_1002, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_utf8_1007, setup, teardown),
        cmocka_unit_test_setup_teardown(test_utf8_split_across_fragments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_big_1009, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_big_across_fragments_1009, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_handshake_echo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_close_waits_for_echo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_frames_unmasked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_binary_is_handed_over, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
