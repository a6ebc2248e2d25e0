/*
 * Unit tests of core/asset.c and the table cmake/embed_files.cmake writes:
 * lookup by exact path, the build-time ETags (a SHA-256 prefix of the bytes,
 * checked against the files of web/), and If-None-Match matching.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/asset.h"

#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_find(void **state)
{
    const chat_asset_t *a = chat_asset_find("/", 1);
    assert_non_null(a);
    assert_string_equal(a->content_type, "text/html; charset=utf-8");
    assert_true(a->len > 0);
    assert_int_equal(strlen(a->data), a->len); /* text, NUL-terminated */
    a = chat_asset_find("/app/main.js", 12);
    assert_non_null(a);
    assert_string_equal(a->content_type, "text/javascript; charset=utf-8");
    a = chat_asset_find("/app/app.css", 12);
    assert_non_null(a);
    assert_string_equal(a->content_type, "text/css; charset=utf-8");
    a = chat_asset_find("/api/openapi.json", 17);
    assert_non_null(a);
    assert_string_equal(a->content_type, "application/json");
    assert_non_null(chat_asset_find("/favicon.ico", 12));
    /* exact paths only */
    assert_null(chat_asset_find("/app/main.j", 11));
    assert_null(chat_asset_find("/app/main.jsx", 13));
    assert_null(chat_asset_find("", 0));
    assert_null(chat_asset_find("/index.html", 11));
}

/* Each row's ETag is "\"" + 32 hex digits of the SHA-256 of its bytes + "\"", all distinct. */
static void test_etags(void **state)
{
    assert_true(chat_assets_count >= 5);
    for (int i = 0; i < chat_assets_count; i++) {
        const chat_asset_t *a = &chat_assets[i];
        unsigned char md[SHA256_DIGEST_LENGTH];
        SHA256((const unsigned char *)a->data, a->len, md);
        char want[35];
        want[0] = '"';
        for (int j = 0; j < 16; j++)
            snprintf(want + 1 + 2 * j, 3, "%02x", md[j]);
        want[33] = '"';
        want[34] = '\0';
        assert_string_equal(a->etag, want);
        for (int k = 0; k < i; k++)
            if (strcmp(chat_assets[k].path, a->path) == 0)
                fail_msg("path %s twice in the table", a->path);
    }
}

/* The table holds the bytes of the files of web/ (CHATD_SOURCE_DIR is set by ctest). */
static void test_bytes_are_the_files(void **state)
{
    const char *src = getenv("CHATD_SOURCE_DIR");
    assert_non_null(src);
    static const char *pairs[][2] = {
        {"/", "web/index.html"},
        {"/app/main.js", "web/app/main.js"},
        {"/favicon.ico", "web/app/favicon.svg"},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", src, pairs[i][1]);
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        static char buf[1 << 20];
        size_t n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        const chat_asset_t *a = chat_asset_find(pairs[i][0], strlen(pairs[i][0]));
        assert_non_null(a);
        assert_int_equal(a->len, n);
        assert_memory_equal(a->data, buf, n);
    }
}

static void test_if_none_match(void **state)
{
    const char *tag = "\"abc123\"";
    assert_true(chat_asset_etag_matches("\"abc123\"", tag));
    assert_true(chat_asset_etag_matches("W/\"abc123\"", tag)); /* weak comparison */
    assert_true(chat_asset_etag_matches("\"x\", \"abc123\"", tag));
    assert_true(chat_asset_etag_matches("\"x\",\"abc123\"", tag));
    assert_true(chat_asset_etag_matches("  \"x\" ,  W/\"abc123\"  ", tag));
    assert_true(chat_asset_etag_matches("*", tag));
    assert_true(chat_asset_etag_matches(" * ", tag));
    assert_false(chat_asset_etag_matches(NULL, tag));
    assert_false(chat_asset_etag_matches("", tag));
    assert_false(chat_asset_etag_matches("\"abc12\"", tag));
    assert_false(chat_asset_etag_matches("\"abc1234\"", tag));
    assert_false(chat_asset_etag_matches("abc123", tag));   /* unquoted: not a tag */
    assert_false(chat_asset_etag_matches("\"abc123", tag)); /* unterminated */
    assert_false(chat_asset_etag_matches("\"x\", abc123", tag));
    assert_false(chat_asset_etag_matches("*x", tag));
    assert_false(chat_asset_etag_matches("\"a,b\"", "\"a\""));
    assert_true(chat_asset_etag_matches("\"a,b\", \"a\"", "\"a\""));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_find),
        cmocka_unit_test(test_etags),
        cmocka_unit_test(test_bytes_are_the_files),
        cmocka_unit_test(test_if_none_match),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
