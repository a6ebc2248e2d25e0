/*
 * Unit tests of api/validate.c, the field rules shared by the REST handlers
 * and the stream's "send": 400 (CHAT_EBADREQUEST) for missing fields and
 * wrong JSON types, 422 (CHAT_EINVALID) for broken rules, lengths in code
 * points, and the exact client messages.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "api/validate.h"
#include "core/error.h"

#include <stdlib.h>
#include <string.h>

static json_t *obj(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, 0, &e);
    if (!j)
        fail_msg("bad test JSON %s: %s", text, e.text);
    return j;
}

/* A JSON object {"name": "<unit x n>"}. */
static json_t *repeated(const char *name, const char *unit, int n)
{
    size_t ul = strlen(unit);
    char *s = malloc(ul * (size_t)n + 1);
    for (int i = 0; i < n; i++)
        memcpy(s + ul * (size_t)i, unit, ul);
    s[ul * (size_t)n] = '\0';
    json_t *j = json_object();
    json_object_set_new(j, name, json_string(s));
    free(s);
    return j;
}

static int str(json_t *j, const char *name, long min, long max, char *why)
{
    const char *out = NULL;
    size_t len = 0;
    int err = chat_api_valid_string(j, name, min, max, &out, &len, why);
    if (err == 0)
        assert_non_null(out);
    json_decref(j);
    return err;
}

static void test_string_bounds(void **state)
{
    char why[CHAT_API_WHY_MAX];
    assert_int_equal(str(repeated("name", "a", 0), "name", 1, 64, why), CHAT_EINVALID);
    assert_string_equal(why, "name must be 1 to 64 characters long");
    assert_int_equal(str(repeated("name", "a", 1), "name", 1, 64, why), 0);
    assert_int_equal(str(repeated("name", "a", 64), "name", 1, 64, why), 0);
    assert_int_equal(str(repeated("name", "a", 65), "name", 1, 64, why), CHAT_EINVALID);
    assert_string_equal(why, "name must be 1 to 64 characters long");
    /* code points, not bytes: 2-, 3- and 4-byte sequences */
    assert_int_equal(str(repeated("name", "\xc3\xa9", 64), "name", 1, 64, why), 0);
    assert_int_equal(str(repeated("name", "\xc3\xa9", 65), "name", 1, 64, why), CHAT_EINVALID);
    assert_int_equal(str(repeated("name", "\xe2\x82\xac", 64), "name", 1, 64, why), 0);
    assert_int_equal(
        str(repeated("body", "\xf0\x9f\x98\x80", 4000), "body", 1, CHAT_API_BODY_MAX, why), 0);
    assert_int_equal(
        str(repeated("body", "\xf0\x9f\x98\x80", 4001), "body", 1, CHAT_API_BODY_MAX, why),
        CHAT_EINVALID);
    assert_string_equal(why, "body must be 1 to 4000 characters long");
    assert_int_equal(str(repeated("title", "t", 200), "title", 1, CHAT_API_TITLE_MAX, why), 0);
    assert_int_equal(str(repeated("title", "t", 201), "title", 1, CHAT_API_TITLE_MAX, why),
                     CHAT_EINVALID);
    assert_string_equal(why, "title must be 1 to 200 characters long");
}

static void test_string_types(void **state)
{
    char why[CHAT_API_WHY_MAX];
    const char *bad[] = {"{}",
                         "{\"name\":null}",
                         "{\"name\":1}",
                         "{\"name\":true}",
                         "{\"name\":[\"a\"]}",
                         "{\"name\":{}}",
                         "{\"Name\":\"a\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(why, 0, sizeof why);
        if (str(obj(bad[i]), "name", 1, 64, why) != CHAT_EBADREQUEST)
            fail_msg("accepted %s", bad[i]);
        assert_string_equal(why, "name must be a string");
    }
}

static int cmid(const char *text, const char **out, char *why)
{
    json_t *j = obj(text);
    size_t len;
    int err = chat_api_valid_client_msg_id(j, out, &len, why);
    if (*out)
        *out = "set"; /* the JSON is gone below */
    json_decref(j);
    return err;
}

static void test_client_msg_id(void **state)
{
    char why[CHAT_API_WHY_MAX];
    const char *out;
    assert_int_equal(cmid("{}", &out, why), 0);
    assert_null(out);
    assert_int_equal(cmid("{\"client_msg_id\":null}", &out, why), 0);
    assert_null(out);
    assert_int_equal(cmid("{\"client_msg_id\":\"c1\"}", &out, why), 0);
    assert_non_null(out);
    assert_int_equal(cmid("{\"client_msg_id\":\"\"}", &out, why), CHAT_EINVALID);
    assert_string_equal(why, "client_msg_id must be 1 to 64 characters long");
    assert_int_equal(cmid("{\"client_msg_id\":7}", &out, why), CHAT_EBADREQUEST);
    assert_string_equal(why, "client_msg_id must be a string");
    json_t *j = repeated("client_msg_id", "x", 64);
    size_t len;
    assert_int_equal(chat_api_valid_client_msg_id(j, &out, &len, why), 0);
    assert_int_equal(len, 64);
    json_decref(j);
    j = repeated("client_msg_id", "x", 65);
    assert_int_equal(chat_api_valid_client_msg_id(j, &out, &len, why), CHAT_EINVALID);
    assert_null(out);
    json_decref(j);
}

static int id(const char *text, int64_t *out, char *why)
{
    json_t *j = obj(text);
    int err = chat_api_valid_id(json_object_get(j, "user_id"), "user_id", out, why);
    json_decref(j);
    return err;
}

static void test_ids(void **state)
{
    char why[CHAT_API_WHY_MAX];
    int64_t v = 0;
    assert_int_equal(id("{\"user_id\":1}", &v, why), 0);
    assert_int_equal(v, 1);
    assert_int_equal(id("{\"user_id\":9223372036854775807}", &v, why), 0);
    assert_int_equal(v, INT64_MAX);
    assert_int_equal(id("{\"user_id\":0}", &v, why), CHAT_EINVALID);
    assert_string_equal(why, "user_id must be a positive id");
    assert_int_equal(id("{\"user_id\":-3}", &v, why), CHAT_EINVALID);
    const char *bad[] = {"{}",
                         "{\"user_id\":null}",
                         "{\"user_id\":\"1\"}",
                         "{\"user_id\":1.0}",
                         "{\"user_id\":true}",
                         "{\"user_id\":[1]}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (id(bad[i], &v, why) != CHAT_EBADREQUEST)
            fail_msg("accepted %s", bad[i]);
        assert_string_equal(why, "user_id must be an integer");
    }
}

static int ids(const char *text, size_t *n, char *why)
{
    json_t *j = obj(text);
    int64_t *out = (int64_t *)1;
    int err = chat_api_valid_id_list(j, "member_ids", CHAT_API_MEMBERS_MAX, &out, n, why);
    if (err)
        assert_null(out);
    else
        assert_non_null(out);
    free(out);
    json_decref(j);
    return err;
}

static json_t *id_array(size_t n, json_t *last)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, json_integer((json_int_t)i + 1));
    if (last)
        json_array_append_new(arr, last);
    json_t *j = json_object();
    json_object_set_new(j, "member_ids", arr);
    return j;
}

static void test_id_list(void **state)
{
    char why[CHAT_API_WHY_MAX];
    size_t n = 99;
    assert_int_equal(ids("{\"member_ids\":[]}", &n, why), 0);
    assert_int_equal(n, 0);
    assert_int_equal(ids("{\"member_ids\":[3,2,3]}", &n, why), 0);
    assert_int_equal(n, 3);
    const char *bad_type[] = {"{}", "{\"member_ids\":null}", "{\"member_ids\":7}",
                              "{\"member_ids\":[1,\"2\"]}", "{\"member_ids\":[1.5]}"};
    for (size_t i = 0; i < sizeof bad_type / sizeof bad_type[0]; i++) {
        if (ids(bad_type[i], &n, why) != CHAT_EBADREQUEST)
            fail_msg("accepted %s", bad_type[i]);
        assert_string_equal(why, "member_ids must be an array of ids");
    }
    assert_int_equal(ids("{\"member_ids\":[1,0]}", &n, why), CHAT_EINVALID);
    assert_string_equal(why, "member_ids[] must be a positive id");

    int64_t *out;
    json_t *j = id_array(CHAT_API_MEMBERS_MAX, NULL);
    assert_int_equal(chat_api_valid_id_list(j, "member_ids", CHAT_API_MEMBERS_MAX, &out, &n, why),
                     0);
    assert_int_equal(n, 1000);
    assert_int_equal(out[999], 1000);
    free(out);
    json_decref(j);
    j = id_array(CHAT_API_MEMBERS_MAX + 1, NULL);
    assert_int_equal(chat_api_valid_id_list(j, "member_ids", CHAT_API_MEMBERS_MAX, &out, &n, why),
                     CHAT_EINVALID);
    assert_string_equal(why, "member_ids holds more than 1000 ids");
    json_decref(j);
    /* types before rules: too many, and one of them a string */
    j = id_array(CHAT_API_MEMBERS_MAX + 1, json_string("x"));
    assert_int_equal(chat_api_valid_id_list(j, "member_ids", CHAT_API_MEMBERS_MAX, &out, &n, why),
                     CHAT_EBADREQUEST);
    json_decref(j);
}

static int object(const char *text, size_t len, const char *what, char *why)
{
    json_t *j = (json_t *)1;
    int err = chat_api_valid_object(text, len, what, &j, why);
    if (err)
        assert_null(j);
    json_decref(j);
    return err;
}

static void test_object(void **state)
{
    char why[CHAT_API_WHY_MAX];
    assert_int_equal(object("{\"a\":1}", 7, "body", why), 0);
    assert_int_equal(object(" {} ", 4, "body", why), 0);
    assert_int_equal(object("\xff{}", 3, "body", why), CHAT_EBADREQUEST);
    assert_string_equal(why, "the body is not valid UTF-8");
    assert_int_equal(object("{\"a\":", 5, "body", why), CHAT_EBADREQUEST);
    assert_string_equal(why, "the body is not valid JSON");
    assert_int_equal(object("", 0, "body", why), CHAT_EBADREQUEST);
    assert_string_equal(why, "the body is not valid JSON");
    assert_int_equal(object("[1]", 3, "body", why), CHAT_EBADREQUEST);
    assert_string_equal(why, "the body must be a JSON object");
    assert_int_equal(object("[]", 2, "message", why), CHAT_EBADREQUEST);
    assert_string_equal(why, "the message must be a JSON object");
    /* scalars are not JSON texts to the parser (no JSON_DECODE_ANY), as before */
    assert_int_equal(object("\"x\"", 3, "message", why), CHAT_EBADREQUEST);
    assert_string_equal(why, "the message is not valid JSON");
    assert_int_equal(object("nope", 4, "message", why), CHAT_EBADREQUEST);
    assert_string_equal(why, "the message is not valid JSON");
    /* issue 12: duplicate keys, at any depth, and NULs in strings say so */
    const char *dups[] = {"{\"a\":1,\"a\":2}", "{\"a\":{\"b\":1,\"b\":1}}",
                          "{\"x\":[{\"k\":1,\"k\":null}]}"};
    for (size_t i = 0; i < sizeof dups / sizeof dups[0]; i++) {
        assert_int_equal(object(dups[i], strlen(dups[i]), "body", why), CHAT_EBADREQUEST);
        assert_string_equal(why, "the body has a duplicate object key");
    }
    const char *nuls[] = {"{\"a\":\"x\\u0000y\"}", "{\"a\\u0000\":1}", "{\"a\":[\"\\u0000\"]}",
                          "{\"a\":{\"b\":\"\\u0000\"}}"};
    for (size_t i = 0; i < sizeof nuls / sizeof nuls[0]; i++) {
        assert_int_equal(object(nuls[i], strlen(nuls[i]), "message", why), CHAT_EBADREQUEST);
        assert_string_equal(why, "strings must not contain NUL (\\u0000)");
    }
    const char *nested = "{\"a\":1,\"b\":{\"a\":2}}"; /* one key in two objects: fine */
    assert_int_equal(object(nested, strlen(nested), "body", why), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_string_bounds), cmocka_unit_test(test_string_types),
        cmocka_unit_test(test_client_msg_id), cmocka_unit_test(test_ids),
        cmocka_unit_test(test_id_list),       cmocka_unit_test(test_object),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
