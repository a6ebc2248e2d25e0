/*
 * Unit tests of the pure parts of the read replicas' rule: PostgreSQL's LSN
 * text (db/walpos.c), the replica list (db/replica.c), and the WAL position
 * a versioned cache key or version token records (cache/cache.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "cache/cache.h"
#include "db/replica.h"
#include "db/walpos.h"

#include <string.h>

static void test_lsn_parse(void **state)
{
    (void)state;
    assert_int_equal(chat_db_lsn_parse("0/3000148"), 0x3000148);
    assert_int_equal(chat_db_lsn_parse("1A/FF"), ((uint64_t)0x1A << 32) | 0xFF);
    assert_int_equal(chat_db_lsn_parse("FFFFFFFF/FFFFFFFF"), UINT64_MAX);
    assert_int_equal(chat_db_lsn_parse(""), 0);
    assert_int_equal(chat_db_lsn_parse(NULL), 0);
    assert_int_equal(chat_db_lsn_parse("0/"), 0);
    assert_int_equal(chat_db_lsn_parse("/12"), 0);
    assert_int_equal(chat_db_lsn_parse("1/2x"), 0);
    assert_int_equal(chat_db_lsn_parse("100000000/0"), 0);
}

static void test_lsn_str_round_trip(void **state)
{
    (void)state;
    char buf[24];
    chat_cache_lsn_str(buf, 0x321A3C0);
    assert_string_equal(buf, "000000000321A3C0");
    char tok[64];
    snprintf(tok, sizeof tok, "5.25536a33c2c37e206L%s", buf);
    assert_int_equal(chat_cache_token_lsn(tok), 0x321A3C0);
}

static void test_token_lsn(void **state)
{
    (void)state;
    /* no position: installed by a lookup, or a plain bump */
    assert_int_equal(chat_cache_token_lsn("25536a33c2c37e203e"), 0);
    assert_int_equal(chat_cache_token_lsn("7.25536a33c2c37e203e"), 0);
    assert_int_equal(chat_cache_token_lsn("25536a33x3"), 0);
    assert_int_equal(chat_cache_token_lsn(NULL), 0);
    /* exactly 16 upper-case hex digits, at the end */
    assert_int_equal(chat_cache_token_lsn("abL0000000000000010"), 16);
    assert_int_equal(chat_cache_token_lsn("abL000000000000010"), 0);
    assert_int_equal(chat_cache_token_lsn("abL00000000000000100"), 0);
    assert_int_equal(chat_cache_token_lsn("abL000000000000001a"), 0);
}

static void test_key_lsn(void **state)
{
    (void)state;
    /* the version's position */
    assert_int_equal(
        chat_cache_key_lsn("msg:history:7:10:0:{c:7}:e25536a3:v3.2553L0000000000000100"), 0x100);
    /* the epoch's when higher */
    assert_int_equal(chat_cache_key_lsn("conv:events:7:0:100:{c:7}:eabcL0000000000000200"
                                        ":v3.2553L0000000000000100"),
                     0x200);
    /* the version's when higher */
    assert_int_equal(chat_cache_key_lsn("conv:events:7:0:100:{c:7}:eabcL0000000000000050"
                                        ":v3.2553L0000000000000100"),
                     0x100);
    /* a version without one: unknown, whatever the epoch says */
    assert_int_equal(chat_cache_key_lsn("conv:members:7:0:51:{c:7}:eabcL0000000000000200:v2553"),
                     0);
    assert_int_equal(chat_cache_key_lsn("user:profile:12:{u:12}:e2553"), 0);
    assert_int_equal(chat_cache_key_lsn(NULL), 0);
}

static void test_replicas_split(void **state)
{
    (void)state;
    char buf[256];
    const char *urls[CHAT_DB_REPLICAS_MAX];
    assert_int_equal(chat_db_replicas_split(NULL, buf, sizeof buf, urls), 0);
    assert_int_equal(chat_db_replicas_split("", buf, sizeof buf, urls), 0);
    assert_int_equal(chat_db_replicas_split("postgresql://a/x", buf, sizeof buf, urls), 1);
    assert_string_equal(urls[0], "postgresql://a/x");
    assert_int_equal(
        chat_db_replicas_split("postgresql://a/x , postgresql://b/x", buf, sizeof buf, urls), 2);
    assert_string_equal(urls[0], "postgresql://a/x");
    assert_string_equal(urls[1], "postgresql://b/x");
    assert_int_equal(chat_db_replicas_split("postgresql://a/x,", buf, sizeof buf, urls), -1);
    assert_int_equal(chat_db_replicas_split("a,,b", buf, sizeof buf, urls), -1);
    assert_int_equal(chat_db_replicas_split("a,b,c,d,e,f,g,h,i", buf, sizeof buf, urls), -1);
    assert_int_equal(chat_db_replicas_split("postgresql://a/x", buf, 8, urls), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lsn_parse),      cmocka_unit_test(test_lsn_str_round_trip),
        cmocka_unit_test(test_token_lsn),      cmocka_unit_test(test_key_lsn),
        cmocka_unit_test(test_replicas_split),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
