/*
 * Unit tests of net/http1_frame.c, the framing checks http-parser lets
 * through: each rule on its own, and the same verdict however the bytes are
 * cut into reads (every split point, and one byte at a time).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "net/http1_frame.h"

#include <stdio.h>
#include <string.h>

typedef struct fcase {
    const char *in;
    bool chunked; /* what the parser would say of the head */
    int status;   /* 0, 400 or 505 */
} fcase_t;

static const fcase_t cases[] = {
    {"GET / HTTP/1.1\r\nHost: x\r\n\r\n", false, 0},
    {"\r\n\r\nGET / HTTP/1.0\r\n\r\n", false, 0},
    {"GET /a?b=c HTTP/1.1\r\nHost: x\r\nX-A: a\tb\r\n\r\nbody bytes \n\n are the parser's", false,
     0},
    {"POST / HTTP/1.1\r\nHost: x\r\n\r\n5;a=b\r\nhello\r\n6 ; c\r\n world\r\n0\r\nT: 1\r\n\r\n",
     true, 0},
    {"POST / HTTP/1.1\r\nHost: x\r\n\r\n0\r\n\r\n", true, 0},
    {"POST / HTTP/1.1\r\nHost: x\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n", true, 0},
    /* bare LF, lone CR */
    {"GET / HTTP/1.1\nHost: x\r\n\r\n", false, 400},
    {"GET / HTTP/1.1\r\nHost: x\n\r\n", false, 400},
    {"GET / HTTP/1.1\r\nHost: x\r\n\n", false, 400},
    {"\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", false, 400},
    {"GET / HTTP/1.1\r\nHost: x\rY\r\n\r\n", false, 400},
    /* obs-fold, control characters */
    {"GET / HTTP/1.1\r\nHost: x\r\n y\r\n\r\n", false, 400},
    {"GET / HTTP/1.1\r\nHost: x\r\n\ty\r\n\r\n", false, 400},
    {"GET / HTTP/1.1\r\nHost: \x01x\r\n\r\n", false, 400},
    {"GET / HTTP/1.1\r\nHost: x\x7f\r\n\r\n", false, 400},
    /* the request line */
    {"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", false, 400},
    {" GET / HTTP/1.1\r\nHost: x\r\n\r\n", false, 400},
    {"GET / HTTP/1.1 \r\nHost: x\r\n\r\n", false, 400},
    {"GET /\r\n\r\n", false, 400},
    {"GET / HTTP/1.10\r\n\r\n", false, 400},
    {"GET / HTTX/1.1\r\n\r\n", false, 400},
    {"GET\t/ HTTP/1.1\r\n\r\n", false, 400},
    {"GET / HTTP/1.9\r\nHost: x\r\n\r\n", false, 505},
    {"GET / HTTP/2.0\r\nHost: x\r\n\r\n", false, 505},
    {"GET / HTTP/0.9\r\n\r\n", false, 505},
    /* chunked framing */
    {"POST / HTTP/1.1\r\nHost: x\r\n\r\n2\r\n{}XX0\r\n\r\n", true, 400},
    {"POST / HTTP/1.1\r\nHost: x\r\n\r\n2\r\n{}\n0\r\n\r\n", true, 400},
    {"POST / HTTP/1.1\r\nHost: x\r\n\r\n2\n{}\r\n0\r\n\r\n", true, 400},
    {"POST / HTTP/1.1\r\nHost: x\r\n\r\n2 \r\n{}\r\n0\r\n\r\n", true, 400},
    {"POST / HTTP/1.1\r\nHost: x\r\n\r\n;a\r\n", true, 400},
    {"POST / HTTP/1.1\r\nHost: x\r\n\r\n2x\r\n{}\r\n0\r\n\r\n", true, 400},
    {"POST / HTTP/1.1\r\nHost: x\r\n\r\n11111111111111111\r\n", true, 400},
    {"POST / HTTP/1.1\r\nHost: x\r\n\r\n0\r\nT: 1\r\n y\r\n\r\n", true, 400},
    {"POST / HTTP/1.1\r\nHost: x\r\n\r\n0\r\nT: 1\n\r\n", true, 400},
};

/* Scans in, cut at the given points (sorted, within in); returns the verdict. */
static int scan_cut(const fcase_t *c, const size_t *cuts, size_t ncuts)
{
    chat_http1_frame_t f;
    chat_http1_frame_init(&f, 0);
    chat_http1_frame_body(&f, c->chunked);
    size_t len = strlen(c->in), from = 0;
    const char *why = NULL;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t to = i < ncuts ? cuts[i] : len;
        int st = chat_http1_frame_scan(&f, c->in + from, to - from, &why);
        if (st) {
            assert_non_null(why);
            return st;
        }
        from = to;
    }
    return 0;
}

static void test_rules_whole_and_cut(void **state)
{
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const fcase_t *c = &cases[k];
        size_t len = strlen(c->in);
        if (scan_cut(c, NULL, 0) != c->status)
            fail_msg("case %zu (%s): whole, want %d", k, c->in, c->status);
        for (size_t at = 1; at < len; at++)
            if (scan_cut(c, &at, 1) != c->status)
                fail_msg("case %zu: cut at %zu, want %d", k, at, c->status);
        size_t bytes[512];
        assert_true(len <= sizeof bytes / sizeof bytes[0]);
        for (size_t i = 1; i < len; i++)
            bytes[i - 1] = i;
        if (scan_cut(c, bytes, len - 1) != c->status)
            fail_msg("case %zu: byte by byte, want %d", k, c->status);
    }
}

/* After a complete request the next one is checked from its start. */
static void test_next_request(void **state)
{
    chat_http1_frame_t f;
    chat_http1_frame_init(&f, 0);
    const char *why;
    const char *one = "POST / HTTP/1.1\r\nHost: x\r\n\r\n0\r\n\r\n";
    chat_http1_frame_body(&f, true);
    assert_int_equal(chat_http1_frame_scan(&f, one, strlen(one), &why), 0);
    chat_http1_frame_next(&f);
    const char *two = "GET / HTTP/1.1\nHost: x\r\n\r\n";
    assert_int_equal(chat_http1_frame_scan(&f, two, strlen(two), &why), 400);
    /* a refusal is final */
    chat_http1_frame_next(&f);
    assert_int_equal(chat_http1_frame_scan(&f, "G", 1, &why), 400);
}

/*
 * The head limit is crossed at one byte, split or not: a fault before it is
 * refused as itself, one after it as a head too large; trailers count too.
 */
static void test_head_limit(void **state)
{
    static const struct {
        const char *in;
        bool chunked;
        int status;
    } lim[] = {
        {"GET / HTTP/1.1\r\nHost: x\r\n\r\n", false, 0},              /* 27 bytes: fits */
        {"GET / HTTP/1.1\r\nHost: xyzw\r\nA: 1\r\n\r\n", false, 431}, /* 37 */
        {"GET / HTTP/1.1\r\nHost: x\x01yzw\r\nA: 1\r\n\r\n", false, 400},
        {"GET / HTTP/1.1\r\nHost: xyzw\r\nA: 1\x01\r\n\r\n", false, 431},
        {"POST / HTTP/1.1\r\nHost: x\r\n\r\n0\r\nT: 1\r\n\r\n", true, 431},
    };
    for (size_t k = 0; k < sizeof lim / sizeof lim[0]; k++) {
        size_t len = strlen(lim[k].in);
        for (size_t step = 1; step <= len; step++) {
            chat_http1_frame_t f;
            chat_http1_frame_init(&f, 32);
            chat_http1_frame_body(&f, lim[k].chunked);
            const char *why = NULL;
            int st = 0;
            for (size_t from = 0; from < len && st == 0; from += step)
                st = chat_http1_frame_scan(&f, lim[k].in + from,
                                           len - from < step ? len - from : step, &why);
            if (st != lim[k].status)
                fail_msg("limit case %zu in pieces of %zu: %d, want %d", k, step, st,
                         lim[k].status);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rules_whole_and_cut),
        cmocka_unit_test(test_next_request),
        cmocka_unit_test(test_head_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
