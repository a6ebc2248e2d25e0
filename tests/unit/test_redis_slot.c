/*
 * Unit tests of redis/slot.c: the CRC16 against the check value of its
 * definition and the vectors of the Redis Cluster specification, the hash
 * tag rule with its edge cases, and the per-slot tags (each lands on its
 * slot, the same text every time).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "redis/slot.h"

#include <stdio.h>
#include <string.h>

static unsigned slot_of(const char *k)
{
    return chat_redis_key_slot(k, strlen(k));
}

static void test_crc16_vectors(void **state)
{
    (void)state;
    assert_int_equal(chat_redis_crc16("123456789", 9), 0x31C3);
    assert_int_equal(chat_redis_crc16("", 0), 0);
    assert_int_equal(chat_redis_crc16("A", 1), 0x58E5);
}

static void test_key_slots_of_the_spec(void **state)
{
    (void)state;
    /* CLUSTER KEYSLOT examples of the Redis documentation. */
    assert_int_equal(slot_of("somekey"), 11058);
    assert_int_equal(slot_of("foo{hash_tag}"), 2515);
    assert_int_equal(slot_of("foo"), 12182);
    assert_int_equal(slot_of("123456789"), 0x31C3 & 16383);
}

static void test_hash_tags(void **state)
{
    (void)state;
    /* Keys with one tag share its slot. */
    assert_int_equal(slot_of("{user1000}.following"), slot_of("{user1000}.followers"));
    assert_int_equal(slot_of("{user1000}.following"), slot_of("user1000"));
    /* Only the first '{' and the first '}' after it count. */
    assert_int_equal(slot_of("foo{bar}{zap}"), slot_of("bar"));
    assert_int_equal(slot_of("foo{{bar}}zap"), slot_of("{bar"));
    /* An empty tag or an unclosed brace: the whole key is hashed. */
    assert_int_equal(slot_of("foo{}{bar}"), chat_redis_crc16("foo{}{bar}", 10) & 16383);
    assert_int_equal(slot_of("foo{bar"), chat_redis_crc16("foo{bar", 7) & 16383);
    assert_int_equal(slot_of("}foo{"), chat_redis_crc16("}foo{", 5) & 16383);
    /* chatd's conversation keys and channel share their tag's slot. */
    assert_int_equal(slot_of("conv:ver:{c:7}"), slot_of("chatd:c:{c:7}"));
    assert_int_equal(slot_of("msg:history:7:50:0:{c:7}:eX:vY"), slot_of("c:7"));
    /* Length, not NUL, ends the key. */
    assert_int_equal(chat_redis_key_slot("{a}bc", 3), slot_of("a"));
}

static void test_slot_tags_land_on_their_slot(void **state)
{
    (void)state;
    char tag[CHAT_REDIS_SLOT_TAG_MAX], again[CHAT_REDIS_SLOT_TAG_MAX], key[64];
    for (unsigned s = 0; s < CHAT_REDIS_SLOTS; s++) {
        size_t n = chat_redis_slot_tag(s, tag);
        assert_true(n > 0 && n < CHAT_REDIS_SLOT_TAG_MAX);
        assert_int_equal(chat_redis_crc16(tag, n) & 16383, s);
        int kl = snprintf(key, sizeof key, "cache:epoch:{%s}", tag);
        assert_int_equal(chat_redis_key_slot(key, (size_t)kl), s);
    }
    chat_redis_slot_tag(12182, tag);
    chat_redis_slot_tag(12182, again);
    assert_string_equal(tag, again);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc16_vectors),
        cmocka_unit_test(test_key_slots_of_the_spec),
        cmocka_unit_test(test_hash_tags),
        cmocka_unit_test(test_slot_tags_land_on_their_slot),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
