/*
 * Unit tests of api/status.c: every domain code of chat_err_t answers the
 * contract's HTTP status, code and headers; everything else answers 503
 * unavailable, as the REST and stream answers always did.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "api/status.h"

#include <string.h>
#include <uv.h>

static void expect_row(int err, int http, const char *code, const char *headers)
{
    const chat_api_status_t *st = chat_api_status_of(err);
    assert_non_null(st);
    if (st->http != http || strcmp(st->code, code) != 0)
        fail_msg("%s: got %d %s, want %d %s", chat_err_name(err), st->http, st->code, http, code);
    assert_non_null(st->message);
    assert_true(st->message[0] != '\0');
    if (headers)
        assert_string_equal(st->headers, headers);
    else
        assert_null(st->headers);
}

static void test_domain_codes(void **state)
{
    expect_row(CHAT_EBADREQUEST, 400, "bad_request", NULL);
    expect_row(CHAT_EUNAUTHORIZED, 401, "unauthorized", "WWW-Authenticate: Bearer\r\n");
    expect_row(CHAT_EFORBIDDEN, 403, "forbidden", NULL);
    expect_row(CHAT_ENOTFOUND, 404, "not_found", NULL);
    expect_row(CHAT_ECONFLICT, 409, "conflict", NULL);
    expect_row(CHAT_EINVALID, 422, "invalid_field", NULL);
    expect_row(CHAT_ERATELIMITED, 429, "rate_limited", "Retry-After: 1\r\n");
    expect_row(CHAT_EUNAVAILABLE, 503, "unavailable", "Retry-After: 1\r\n");
}

/* The default texts the REST answers and the stream's error frames used. */
static void test_default_messages(void **state)
{
    assert_string_equal(chat_api_status_of(CHAT_EUNAUTHORIZED)->message,
                        "missing or unknown token");
    assert_string_equal(chat_api_status_of(CHAT_ENOTFOUND)->message, "not found");
    assert_string_equal(chat_api_status_of(CHAT_ECONFLICT)->message, "conflict");
    assert_string_equal(chat_api_status_of(CHAT_EINVALID)->message, "invalid field");
    assert_string_equal(chat_api_status_of(CHAT_EUNAVAILABLE)->message,
                        "the service is temporarily unavailable");
}

/* Every code of the enum, domain or not, has a row; only domain codes leave 503. */
static void test_every_code(void **state)
{
    static const struct {
        int err;
        int value;
    } all[] = {
#define ROW(name, value, text) {CHAT_##name, value},
        CHAT_ERR_MAP(ROW)
#undef ROW
    };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        const chat_api_status_t *st = chat_api_status_of(all[i].err);
        int domain = all[i].value <= -5100;
        if (!domain || all[i].err == CHAT_EUNAVAILABLE)
            expect_row(all[i].err, 503, "unavailable", "Retry-After: 1\r\n");
        else if (st->http < 400 || st->http > 499)
            fail_msg("%s maps to %d", chat_err_name(all[i].err), st->http);
    }
}

static void test_transport_and_unknown(void **state)
{
    const int others[] = {
        CHAT_EOK,    CHAT_EDOWN,   CHAT_ETIMEDOUT,  CHAT_EREPLY,  CHAT_ECLOSED, CHAT_ECONNLOST,
        CHAT_EINVAL, CHAT_ERANDOM, UV_ECONNREFUSED, UV_ETIMEDOUT, -1,           -4999,
        -6000};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++)
        expect_row(others[i], 503, "unavailable", "Retry-After: 1\r\n");
}

static void test_success_kinds(void **state)
{
    assert_int_equal(chat_api_status_ok(CHAT_REPLY_OK), 200);
    assert_int_equal(chat_api_status_ok(CHAT_REPLY_CREATED), 201);
    assert_int_equal(chat_api_status_ok(CHAT_REPLY_NO_CONTENT), 204);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_domain_codes),  cmocka_unit_test(test_default_messages),
        cmocka_unit_test(test_every_code),    cmocka_unit_test(test_transport_and_unknown),
        cmocka_unit_test(test_success_kinds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
