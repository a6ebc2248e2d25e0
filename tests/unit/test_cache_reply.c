/*
 * Unit tests of the pure decoders of Redis replies (cache/reply.c, the
 * pub/sub push of redis/pubsub.c, the rate limiter's script reply), fed
 * replies decoded by hiredis from RESP text, as they arrive: the shapes
 * taken, and the ones refused whole (found by tests/fuzz/fuzz_redis).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "api/ratelimit.h"
#include "cache/reply.h"
#include "redis/pubsub.h"

#include <hiredis/hiredis.h>
#include <string.h>

static redisReply *resp(const char *text, size_t len)
{
    redisReader *rd = redisReaderCreate();
    assert_int_equal(redisReaderFeed(rd, text, len), REDIS_OK);
    void *r = NULL;
    assert_int_equal(redisReaderGetReply(rd, &r), REDIS_OK);
    assert_non_null(r);
    redisReaderFree(rd);
    return r;
}
#define RESP(s) resp(s, sizeof s - 1)

static void test_lookup(void **state)
{
    chat_cache_lookup_reply_t lr;
    redisReply *r = RESP("*3\r\n$4\r\nk:e1\r\n$2\r\n{}\r\n$5\r\ne1:g2\r\n");
    assert_int_equal(chat_cache_lookup_reply_parse(r, &lr), 0);
    assert_int_equal(lr.kind, CHAT_CACHE_REPLY_VALUE);
    assert_string_equal(lr.key, "k:e1");
    assert_int_equal(lr.len, 2);
    assert_string_equal(lr.guard, "e1:g2");
    freeReplyObject(r);
    r = RESP("*3\r\n$4\r\nk:e1\r\n:1\r\n$-1\r\n");
    assert_int_equal(chat_cache_lookup_reply_parse(r, &lr), 0);
    assert_int_equal(lr.kind, CHAT_CACHE_REPLY_SAME);
    assert_null(lr.guard);
    freeReplyObject(r);
    r = RESP("*2\r\n$4\r\nk:e1\r\n$-1\r\n");
    assert_int_equal(chat_cache_lookup_reply_parse(r, &lr), 0);
    assert_int_equal(lr.kind, CHAT_CACHE_REPLY_NONE);
    freeReplyObject(r);
    /* A key with a NUL inside would be filled under a shorter name: refused. */
    r = RESP("*2\r\n$3\r\nk\0x\r\n$1\r\nv\r\n");
    assert_int_equal(chat_cache_lookup_reply_parse(r, &lr), -1);
    freeReplyObject(r);
    r = RESP("*1\r\n$1\r\nk\r\n");
    assert_int_equal(chat_cache_lookup_reply_parse(r, &lr), -1);
    freeReplyObject(r);
}

static void test_scan_and_versions(void **state)
{
    const char *cursor;
    const redisReply *keys;
    redisReply *r = RESP("*2\r\n$2\r\n17\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n");
    assert_int_equal(chat_cache_scan_reply_parse(r, &cursor, &keys), 0);
    assert_string_equal(cursor, "17");
    assert_int_equal(keys->elements, 2);
    freeReplyObject(r);
    /* A cursor that is no string, a key that is none: the whole page is refused. */
    r = RESP("*2\r\n:17\r\n*0\r\n");
    assert_int_equal(chat_cache_scan_reply_parse(r, &cursor, &keys), -1);
    freeReplyObject(r);
    r = RESP("*2\r\n$1\r\n0\r\n*2\r\n$1\r\na\r\n:5\r\n");
    assert_int_equal(chat_cache_scan_reply_parse(r, &cursor, &keys), -1);
    freeReplyObject(r);
    r = RESP("*2\r\n$40\r\n1234567890123456789012345678901234567890\r\n*0\r\n");
    assert_int_equal(chat_cache_scan_reply_parse(r, &cursor, &keys), -1);
    freeReplyObject(r);

    const char *tokens[2];
    r = RESP("*2\r\n$1\r\na\r\n$1\r\nb\r\n");
    assert_int_equal(chat_cache_versions_reply_parse(r, 2, tokens), 0);
    assert_string_equal(tokens[1], "b");
    assert_int_equal(chat_cache_versions_reply_parse(r, 1, tokens), -1);
    freeReplyObject(r);
}

static void test_pubsub_and_rate(void **state)
{
    chat_pubsub_reply_t m;
    redisReply *r = RESP("*3\r\n$8\r\nsmessage\r\n$2\r\nch\r\n$3\r\nabc\r\n");
    chat_pubsub_reply_parse(r, &m);
    assert_int_equal(m.kind, CHAT_PUBSUB_REPLY_MESSAGE);
    assert_int_equal(m.clen, 2);
    assert_int_equal(m.len, 3);
    freeReplyObject(r);
    r = RESP("*3\r\n$10\r\nssubscribe\r\n$2\r\nch\r\n:1\r\n");
    chat_pubsub_reply_parse(r, &m);
    assert_int_equal(m.kind, CHAT_PUBSUB_REPLY_SUBSCRIBED);
    freeReplyObject(r);
    /* The kind is compared whole: a NUL inside is another word. */
    r = RESP("*3\r\n$9\r\nsmessage\0\r\n$2\r\nch\r\n$3\r\nabc\r\n");
    chat_pubsub_reply_parse(r, &m);
    assert_int_equal(m.kind, CHAT_PUBSUB_REPLY_OTHER);
    freeReplyObject(r);

    long long wait = 0;
    r = RESP("*2\r\n:0\r\n:2500\r\n");
    assert_int_equal(chat_ratelimit_reply_parse(r, &wait), 0);
    assert_int_equal(wait, 2500);
    freeReplyObject(r);
    r = RESP("*2\r\n:1\r\n$1\r\n0\r\n");
    assert_int_equal(chat_ratelimit_reply_parse(r, &wait), -1);
    freeReplyObject(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lookup),
        cmocka_unit_test(test_scan_and_versions),
        cmocka_unit_test(test_pubsub_and_rate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
