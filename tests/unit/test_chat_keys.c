/*
 * Unit tests of chat/keys.c: the contract's key prefixes, the version key,
 * the TTL rules and the kinds' metric labels.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "chat/keys.h"

#include <string.h>

static void test_keys_have_contract_prefixes(void **state)
{
    char k[CHAT_KEYS_MAX];
    chat_keys_history(k, 7, 50, 0, 0, -1);
    assert_string_equal(k, "msg:history:7:50:0:{c:7}");
    chat_keys_history(k, 7, 20, 40, 0, -1);
    assert_string_equal(k, "msg:history:7:20:40:{c:7}");
    chat_keys_history(k, 7, 20, 0, 991, -1);
    assert_string_equal(k, "msg:history:7:20:0:b991:{c:7}");
    chat_keys_history(k, 7, 20, 0, 0, 0);
    assert_string_equal(k, "msg:history:7:20:0:a0:{c:7}");
    chat_keys_history(k, 7, 20, 0, 0, 12);
    assert_string_equal(k, "msg:history:7:20:0:a12:{c:7}");
    chat_keys_events(k, 7, 0, 100);
    assert_string_equal(k, "conv:events:7:0:100:{c:7}");
    chat_keys_count(k, 9223372036854775807LL);
    assert_string_equal(k, "msg:count:9223372036854775807:{c:9223372036854775807}");
    chat_keys_metadata(k, 3);
    assert_string_equal(k, "conv:metadata:3:{c:3}");
    chat_keys_profile(k, 12);
    assert_string_equal(k, "user:profile:12:{u:12}");
    chat_keys_conv_version(k, 3);
    assert_string_equal(k, "conv:ver:{c:3}");
    chat_keys_members_version(k, 3);
    assert_string_equal(k, "conv:mver:{c:3}");
    chat_keys_user_version(k, 12);
    assert_string_equal(k, "user:ver:{u:12}");
    chat_keys_inbox(k, 12, 50, "");
    assert_string_equal(k, "user:inbox:12:50::{u:12}");
    chat_keys_members(k, 3, 0, 100);
    assert_string_equal(k, "conv:members:3:0:100:{c:3}");
    /* The longest possible key fits. */
    size_t n = chat_keys_history(k, INT64_MAX, 100, 100000, INT64_MAX, -1);
    assert_true(n < CHAT_KEYS_MAX - 32); /* a margin below the buffer */
    n = chat_keys_history(k, INT64_MAX, 100, 0, 0, INT64_MAX);
    assert_true(n < CHAT_KEYS_MAX - 32);
    n = chat_keys_events(k, INT64_MAX, INT64_MAX, 1000);
    assert_true(n < CHAT_KEYS_MAX - 32);
}

static void test_ttl_rules(void **state)
{
    assert_int_equal(chat_keys_ttl(CHAT_KEYS_HISTORY, 0, 0), 30);
    assert_int_equal(chat_keys_ttl(CHAT_KEYS_HISTORY, 50, 0), 60);
    assert_int_equal(chat_keys_ttl(CHAT_KEYS_HISTORY, 0, 10), 60); /* an older page */
    assert_int_equal(chat_keys_ttl(CHAT_KEYS_COUNT, 0, 0), 60);
    assert_int_equal(chat_keys_ttl(CHAT_KEYS_METADATA, 0, 0), 300);
    assert_int_equal(chat_keys_ttl(CHAT_KEYS_PROFILE, 0, 0), 600);
    assert_string_equal(chat_keys_kind_labels[CHAT_KEYS_HISTORY], "history");
    assert_string_equal(chat_keys_kind_labels[CHAT_KEYS_COUNT], "count");
    assert_string_equal(chat_keys_kind_labels[CHAT_KEYS_METADATA], "metadata");
    assert_string_equal(chat_keys_kind_labels[CHAT_KEYS_PROFILE], "profile");
    assert_int_equal(chat_keys_ttl(CHAT_KEYS_EVENTS, 0, 0), 60);
    assert_string_equal(chat_keys_kind_labels[CHAT_KEYS_EVENTS], "events");
    assert_string_equal(chat_keys_kind_labels[CHAT_KEYS_INBOX], "inbox");
    assert_string_equal(chat_keys_kind_labels[CHAT_KEYS_MEMBERS], "members");
    char k[CHAT_KEYS_MAX];
    chat_keys_members(k, 7, 12, 100);
    assert_string_equal(k, "conv:members:7:12:100:{c:7}");
    chat_keys_inbox(k, 3, 20, "");
    assert_string_equal(k, "user:inbox:3:20::{u:3}");
    chat_keys_inbox(k, 3, 20, "AAAA");
    assert_string_equal(k, "user:inbox:3:20:AAAA:{u:3}");
    chat_keys_user_version(k, 3);
    assert_string_equal(k, "user:ver:{u:3}");
    assert_int_equal(chat_keys_ttl(CHAT_KEYS_INBOX, 0, 0), 60);
    assert_int_equal(chat_keys_ttl(CHAT_KEYS_MEMBERS, 0, 0), 300);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys_have_contract_prefixes),
        cmocka_unit_test(test_ttl_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
