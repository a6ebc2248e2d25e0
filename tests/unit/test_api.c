/*
 * Unit tests of api/ and chat/ pieces that need no server: routing, path
 * ids, query parsing, bearer parsing, token generation and hashing, the
 * decoding of a conversation's member ids.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "api/api.h"
#include "chat/chat.h"
#include "chat/internal.h"

#include <stdlib.h>

#include <string.h>

static const char *match(const char *path, char *id, size_t idcap)
{
    const char *seg = NULL;
    size_t len = 0;
    const chat_route_t *r = chat_api_route_match(path, strlen(path), &seg, &len, NULL, NULL);
    if (id) {
        id[0] = '\0';
        if (seg) {
            memcpy(id, seg, len < idcap - 1 ? len : idcap - 1);
            id[len < idcap - 1 ? len : idcap - 1] = '\0';
        }
    }
    return r ? chat_api_route_name(r) : NULL;
}

static void test_routes(void **state)
{
    char id[32];
    assert_string_equal(match("/healthz", NULL, 0), "/healthz");
    assert_string_equal(match("/api/v1/users", NULL, 0), "/api/v1/users");
    assert_string_equal(match("/api/v1/users/17", id, sizeof id), "/api/v1/users/{id}");
    assert_string_equal(id, "17");
    assert_string_equal(match("/api/v1/users/abc", id, sizeof id), "/api/v1/users/{id}");
    assert_string_equal(id, "abc");
    assert_string_equal(match("/api/v1/conversations/7/messages", id, sizeof id),
                        "/api/v1/conversations/{id}/messages");
    assert_string_equal(id, "7");
    assert_string_equal(match("/api/v1/conversations/7/messages/count", NULL, 0),
                        "/api/v1/conversations/{id}/messages/count");
    assert_string_equal(match("/api/v1/conversations/7/members", NULL, 0),
                        "/api/v1/conversations/{id}/members");
    assert_string_equal(match("/api/v1/conversations/7/read", NULL, 0),
                        "/api/v1/conversations/{id}/read");
    {
        const char *segs[2];
        size_t lens[2];
        const char *p = "/api/v1/conversations/7/members/42";
        const chat_route_t *r =
            chat_api_route_match(p, strlen(p), &segs[0], &lens[0], &segs[1], &lens[1]);
        assert_non_null(r);
        assert_string_equal(chat_api_route_name(r), "/api/v1/conversations/{id}/members/{user_id}");
        assert_int_equal(lens[0], 1);
        assert_memory_equal(segs[0], "7", 1);
        assert_int_equal(lens[1], 2);
        assert_memory_equal(segs[1], "42", 2);
        p = "/api/v1/conversations/7/members/";
        assert_null(chat_api_route_match(p, strlen(p), &segs[0], &lens[0], &segs[1], &lens[1]));
        p = "/api/v1/conversations/7";
        assert_non_null(chat_api_route_match(p, strlen(p), &segs[0], &lens[0], &segs[1], &lens[1]));
        assert_null(segs[1]);
    }
    assert_null(match("/api/v1/users/", NULL, 0));
    assert_null(match("/api/v1/users/1/", NULL, 0));
    assert_null(match("/api/v1/conversations//messages", NULL, 0));
    assert_null(match("/nope", NULL, 0));
    assert_null(match("", NULL, 0));
    /* the compiled-in files (static.c): one name segment under /app/ */
    assert_string_equal(match("/", NULL, 0), "/");
    assert_string_equal(match("/favicon.ico", NULL, 0), "/favicon.ico");
    assert_string_equal(match("/api/openapi.json", NULL, 0), "/api/openapi.json");
    assert_string_equal(match("/app/main.js", id, sizeof id), "/app/{asset}");
    assert_string_equal(id, "main.js");
    assert_null(match("/app/", NULL, 0));
    assert_null(match("/app", NULL, 0));
    assert_null(match("/app/x/main.js", NULL, 0));
    assert_null(match("//", NULL, 0));
    const char *seg;
    size_t len;
    const chat_route_t *r =
        chat_api_route_match("/api/v1/conversations/1/messages", 32, &seg, &len, NULL, NULL);
    assert_string_equal(chat_api_route_allow(r), "GET, POST");
}

static void test_routes_with_two_ids(void **state)
{
    const char *seg, *sub;
    size_t len, sublen;
    const char *path = "/api/v1/conversations/7/messages/42";
    const chat_route_t *r = chat_api_route_match(path, strlen(path), &seg, &len, &sub, &sublen);
    assert_non_null(r);
    assert_string_equal(chat_api_route_name(r), "/api/v1/conversations/{id}/messages/{message_id}");
    assert_string_equal(chat_api_route_allow(r), "PATCH, DELETE");
    assert_int_equal(len, 1);
    assert_memory_equal(seg, "7", 1);
    assert_int_equal(sublen, 2);
    assert_memory_equal(sub, "42", 2);
    /* count is its own route, listed first; a one-id route has no second segment */
    path = "/api/v1/conversations/7/messages/count";
    r = chat_api_route_match(path, strlen(path), &seg, &len, &sub, &sublen);
    assert_string_equal(chat_api_route_name(r), "/api/v1/conversations/{id}/messages/count");
    assert_null(sub);
    path = "/api/v1/conversations/7/events";
    r = chat_api_route_match(path, strlen(path), &seg, &len, &sub, &sublen);
    assert_string_equal(chat_api_route_name(r), "/api/v1/conversations/{id}/events");
    assert_null(sub);
    path = "/api/v1/conversations/7/messages/";
    assert_null(chat_api_route_match(path, strlen(path), &seg, &len, &sub, &sublen));
    path = "/api/v1/conversations/7/messages/1/2";
    assert_null(chat_api_route_match(path, strlen(path), &seg, &len, &sub, &sublen));
}

static void test_parse_id(void **state)
{
    int64_t v = 0;
    assert_int_equal(chat_api_parse_id("1", 1, &v), 0);
    assert_int_equal(v, 1);
    assert_int_equal(chat_api_parse_id("9223372036854775807", 19, &v), 0);
    assert_int_equal(v, INT64_MAX);
    assert_int_equal(chat_api_parse_id("9223372036854775808", 19, &v), -1);
    assert_int_equal(chat_api_parse_id("99999999999999999999", 20, &v), -1);
    assert_int_equal(chat_api_parse_id("0", 1, &v), -1);
    assert_int_equal(chat_api_parse_id("-1", 2, &v), -1);
    assert_int_equal(chat_api_parse_id("+1", 2, &v), -1);
    assert_int_equal(chat_api_parse_id("1a", 2, &v), -1);
    assert_int_equal(chat_api_parse_id("", 0, &v), -1);
    /* Plain decimal digits: a leading zero makes it another spelling, not an id (404). */
    assert_int_equal(chat_api_parse_id("01", 2, &v), -1);
    assert_int_equal(chat_api_parse_id("007", 3, &v), -1);
    assert_int_equal(chat_api_parse_id("0009223372036854775", 19, &v), -1);
}

static int parse(const char *q, chat_api_history_params_t *p)
{
    const char *why = NULL;
    int rc = chat_api_parse_history_query(q, q ? strlen(q) : 0, p, &why);
    if (rc < 0)
        assert_non_null(why);
    return rc;
}

static void test_history_query(void **state)
{
    chat_api_history_params_t p;
    assert_int_equal(parse(NULL, &p), 0);
    assert_int_equal(p.limit, 50);
    assert_int_equal(p.offset, 0);
    assert_int_equal(p.before_id, 0);
    assert_int_equal(parse("limit=100&offset=100000&before_id=42", &p), 0);
    assert_int_equal(p.limit, 100);
    assert_int_equal(p.offset, 100000);
    assert_int_equal(p.before_id, 42);
    assert_int_equal(parse("limit=1&x=y&&", &p), 0);
    assert_int_equal(p.limit, 1);
    assert_int_equal(parse("%6cimit=7", &p), 0); /* percent-encoded name */
    assert_int_equal(p.limit, 7);
    assert_int_equal(parse("offset=0&limit=10", &p), 0); /* "0" itself is no leading zero */
    assert_int_equal(p.offset, 0);
    /* unknown well-formed names are ignored, however long */
    assert_int_equal(parse("a_name_that_is_far_too_long_to_be_one_of_ours_even_after_decoding_"
                           "it=1&limit=3",
                           &p),
                     0);
    assert_int_equal(p.limit, 3);
    const char *bad[] = {
        "limit=0", "limit=101", "limit=abc", "limit=1.5", "limit=", "limit", "limit=-1",
        "limit=1&limit=2", "offset=-1", "offset=100001", "offset=1e3", "before_id=0", "before_id=x",
        "before_id=99999999999999999999", "limit=%zz", "limit=+5", "offset=1&offset=1",
        /* issue 12: a decoded NUL, malformed names and values, leading zeros */
        "limit=5%00junk", "limit=5%00", "limit=%35%00", "limit%00x=5", "%00=1", "l%zzimit=5",
        "limit=5&x=%zz", "limit=5&x=%4", "x%00y&limit=5", "limit=05", "limit=007", "offset=00",
        "offset=01", "before_id=007", "after_seq=00", "after_seq=01"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (parse(bad[i], &p) != -1)
            fail_msg("accepted %s", bad[i]);
}

static void test_history_query_after_seq(void **state)
{
    chat_api_history_params_t p;
    assert_int_equal(parse("limit=5", &p), 0);
    assert_int_equal(p.after_seq, -1); /* none */
    assert_int_equal(parse("after_seq=0", &p), 0);
    assert_int_equal(p.after_seq, 0);
    assert_int_equal(p.limit, 50);
    assert_int_equal(parse("after_seq=9223372036854775807&limit=3", &p), 0);
    assert_int_equal(p.after_seq, INT64_MAX);
    assert_int_equal(p.limit, 3);
    const char *bad[] = {"after_seq=-1",
                         "after_seq=x",
                         "after_seq=",
                         "after_seq",
                         "after_seq=1&after_seq=1",
                         "after_seq=1&offset=0",
                         "offset=5&after_seq=1",
                         "after_seq=1&before_id=9",
                         "after_seq=1.5",
                         "after_seq=9223372036854775808"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (parse(bad[i], &p) != -1)
            fail_msg("accepted %s", bad[i]);
}

static void test_events_query(void **state)
{
    chat_api_events_params_t p;
    const char *why = NULL;
    assert_int_equal(chat_api_parse_events_query(NULL, 0, &p, &why), 0);
    assert_int_equal(p.after_rev, 0);
    assert_int_equal(p.limit, 100);
    const char *q = "after_rev=17&limit=1000&other=x";
    assert_int_equal(chat_api_parse_events_query(q, strlen(q), &p, &why), 0);
    assert_int_equal(p.after_rev, 17);
    assert_int_equal(p.limit, 1000);
    const char *bad[] = {"limit=0",
                         "limit=1001",
                         "limit=x",
                         "after_rev=-1",
                         "after_rev=",
                         "after_rev",
                         "after_rev=1&after_rev=2",
                         "limit=1&limit=1",
                         "after_rev=1.0",
                         "after_rev=99999999999999999999",
                         "after_rev=01",
                         "limit=5%00junk",
                         "limit%00x=5"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        why = NULL;
        if (chat_api_parse_events_query(bad[i], strlen(bad[i]), &p, &why) != -1)
            fail_msg("accepted %s", bad[i]);
        assert_non_null(why);
    }
}

static void test_query_int_and_string(void **state)
{
    const char *why = NULL;
    long long v = 42;
    const char *q = "after_id=12&limit=5&name=a%20b+c";
    assert_int_equal(chat_api_query_int(q, strlen(q), "limit", 1, 10, "r", &v, &why), 1);
    assert_int_equal(v, 5);
    v = 42;
    assert_int_equal(chat_api_query_int(q, strlen(q), "missing", 1, 10, "r", &v, &why), 0);
    assert_int_equal(v, 42);
    assert_int_equal(chat_api_query_int(q, strlen(q), "after_id", 0, 10, "range", &v, &why), -1);
    assert_string_equal(why, "range");
    char out[16];
    assert_int_equal(chat_api_query_string(q, strlen(q), "name", out, sizeof out, &why), 1);
    assert_string_equal(out, "a b c");
    const char *bad[] = {"limit=010", "limit=5%00junk", "limit%00x=5", "limit=1&z=%g1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        why = NULL;
        if (chat_api_query_int(bad[i], strlen(bad[i]), "limit", 1, 100, "r", &v, &why) != -1)
            fail_msg("accepted %s", bad[i]);
        assert_non_null(why);
    }
    /* a malformed pair anywhere refuses a string parameter too; so does a NUL in its value */
    const char *badstr[] = {"token=abc&x=%zz", "token=ab%00c", "tok%00en=abc&token=x"};
    for (size_t i = 0; i < sizeof badstr / sizeof badstr[0]; i++)
        if (chat_api_query_string(badstr[i], strlen(badstr[i]), "token", out, sizeof out, &why) !=
            -1)
            fail_msg("accepted %s", badstr[i]);
}

static void test_bearer(void **state)
{
    const char *tok;
    size_t len;
    assert_int_equal(chat_api_bearer("Bearer abc", &tok, &len), 0);
    assert_int_equal(len, 3);
    assert_memory_equal(tok, "abc", 3);
    assert_int_equal(chat_api_bearer("bearer  abc ", &tok, &len), 0);
    assert_int_equal(len, 3);
    assert_int_equal(chat_api_bearer(NULL, &tok, &len), -1);
    assert_int_equal(chat_api_bearer("Bearer", &tok, &len), -1);
    assert_int_equal(chat_api_bearer("Bearer ", &tok, &len), -1);
    assert_int_equal(chat_api_bearer("Basic abc", &tok, &len), -1);
    assert_int_equal(chat_api_bearer("Bearer a b", &tok, &len), -1);
}

static void test_tokens(void **state)
{
    char a[64], b[64];
    assert_int_equal(chat_auth_token_new(a), 0);
    assert_int_equal(chat_auth_token_new(b), 0);
    assert_int_equal(strlen(a), 43); /* 256 bits in base64url */
    assert_string_not_equal(a, b);
    for (const char *p = a; *p; p++)
        assert_true((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                    (*p >= '0' && *p <= '9') || *p == '-' || *p == '_');
    unsigned char h[32];
    chat_auth_token_hash("abc", 3, h);
    /* SHA-256("abc") */
    static const unsigned char want[32] = {0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea,
                                           0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22, 0x23,
                                           0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c,
                                           0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad};
    assert_memory_equal(h, want, 32);
    /* the thread's context is reused: another input, then "abc" again */
    static const unsigned char empty[32] = {0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14,
                                            0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
                                            0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c,
                                            0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55};
    chat_auth_token_hash("", 0, h);
    assert_memory_equal(h, empty, 32);
    chat_auth_token_hash("abc", 3, h);
    assert_memory_equal(h, want, 32);
    assert_true(chat_auth_equal("secret", 6, "secret", 6));
    assert_false(chat_auth_equal("secret", 6, "secreT", 6));
    assert_false(chat_auth_equal("secret", 6, "secret2", 7));
}

static void test_member_ids(void **state)
{
    size_t n = 99;
    int64_t *ids = chat_i64_list_parse(NULL, &n);
    assert_null(ids);
    assert_int_equal(n, 0);
    ids = chat_i64_list_parse("{7}", &n);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], 7);
    free(ids);
    ids = chat_i64_list_parse("{1,22,9223372036854775807}", &n);
    assert_int_equal(n, 3);
    assert_int_equal(ids[0], 1);
    assert_int_equal(ids[1], 22);
    assert_int_equal(ids[2], INT64_MAX);
    free(ids);
    ids = chat_i64_list_parse("{}", &n);
    assert_int_equal(n, 0);
    free(ids);
    ids = chat_i64_list_parse("3,4", &n);
    assert_int_equal(n, 2);
    assert_int_equal(ids[1], 4);
    free(ids);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routes),
        cmocka_unit_test(test_routes_with_two_ids),
        cmocka_unit_test(test_parse_id),
        cmocka_unit_test(test_history_query),
        cmocka_unit_test(test_history_query_after_seq),
        cmocka_unit_test(test_events_query),
        cmocka_unit_test(test_query_int_and_string),
        cmocka_unit_test(test_bearer),
        cmocka_unit_test(test_tokens),
        cmocka_unit_test(test_member_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
