/*
 * Unit tests of core/'s primitives: the intrusive list, the id table (with
 * deletion checked against a reference model), the bounded memo, base64,
 * the cross-thread mailbox and the error names.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/base64.h"
#include "core/error.h"
#include "core/hash.h"
#include "core/idtable.h"
#include "core/list.h"
#include "core/mailbox.h"
#include "core/memo.h"
#include "core/uuid.h"
#include "core/metrics.h"
#include "core/num.h"

#include <stdlib.h>
#include <string.h>

typedef struct item {
    int v;
    chat_list_t link;
} item_t;

static void test_list_order_and_removal(void **state)
{
    chat_list_t head, other;
    chat_list_init(&head);
    chat_list_init(&other);
    assert_true(chat_list_empty(&head));
    assert_null(chat_list_first(&head));
    item_t it[5];
    for (int i = 0; i < 5; i++) {
        it[i].v = i;
        chat_list_init(&it[i].link);
        assert_false(chat_list_linked(&it[i].link));
        if (i == 0)
            chat_list_insert_head(&head, &it[i].link);
        else
            chat_list_insert_tail(&head, &it[i].link);
        assert_true(chat_list_linked(&it[i].link));
    }
    chat_list_remove(&it[2].link);
    chat_list_remove(&it[2].link); /* harmless twice */
    int want[] = {0, 1, 3, 4}, n = 0;
    chat_list_t *e, *tmp;
    CHAT_LIST_FOREACH(e, &head)
    {
        assert_int_equal(CHAT_CONTAINER_OF(e, item_t, link)->v, want[n++]);
    }
    assert_int_equal(n, 4);
    chat_list_splice_tail(&other, &head);
    assert_true(chat_list_empty(&head));
    n = 0;
    CHAT_LIST_FOREACH_SAFE(e, tmp, &other)
    {
        assert_int_equal(CHAT_CONTAINER_OF(e, item_t, link)->v, want[n++]);
        chat_list_remove(e);
    }
    assert_int_equal(n, 4);
    assert_true(chat_list_empty(&other));
}

static void test_idtable_against_model(void **state)
{
    enum { N = 4000 };
    static void *model[N];
    memset(model, 0, sizeof model);
    chat_idtable_t t;
    chat_idtable_init(&t);
    assert_null(chat_idtable_get(&t, 1));
    assert_null(chat_idtable_del(&t, 1));
    srand(7);
    static int vals[N];
    for (int step = 0; step < 200000; step++) {
        /* keys collide in the low bits on purpose: multiples of 1024 */
        int k = rand() % N;
        uint64_t key = (uint64_t)k * 1024;
        int op = rand() % 3;
        if (op == 0) {
            void *was = chat_idtable_put(&t, key, &vals[k]);
            assert_ptr_equal(was, model[k]);
            model[k] = &vals[k];
        } else if (op == 1) {
            assert_ptr_equal(chat_idtable_del(&t, key), model[k]);
            model[k] = NULL;
        } else {
            assert_ptr_equal(chat_idtable_get(&t, key), model[k]);
        }
    }
    size_t live = 0;
    for (int k = 0; k < N; k++) {
        live += model[k] != NULL;
        assert_ptr_equal(chat_idtable_get(&t, (uint64_t)k * 1024), model[k]);
    }
    assert_int_equal(chat_idtable_len(&t), live);
    size_t seen = 0;
    uint64_t key;
    void *val;
    for (size_t i = 0; (i = chat_idtable_next(&t, i, &key, &val)) != 0;) {
        assert_ptr_equal(model[key / 1024], val);
        seen++;
    }
    assert_int_equal(seen, live);
    chat_idtable_dispose(&t);
}

static void test_memo_remembers_and_forgets_when_half_full(void **state)
{
    chat_memo_t *m = chat_memo_create(64, 16);
    int64_t key[2] = {3, 7};
    assert_int_equal(chat_memo_get(m, key), 0);
    chat_memo_put(m, key, 42);
    chat_memo_put(m, key, 43); /* first value stays */
    assert_int_equal(chat_memo_get(m, key), 42);
    for (int64_t i = 1; i < 32; i++) {
        int64_t k[2] = {100, i};
        chat_memo_put(m, k, i);
    }
    assert_int_equal(chat_memo_len(m), 32);
    assert_int_equal(chat_memo_get(m, key), 42);
    int64_t k[2] = {200, 1};
    chat_memo_put(m, k, 5); /* the 33rd entry: everything else is forgotten */
    assert_int_equal(chat_memo_len(m), 1);
    assert_int_equal(chat_memo_get(m, key), 0);
    assert_int_equal(chat_memo_get(m, k), 5);
    chat_memo_set(m, k, 6); /* replaced in place */
    assert_int_equal(chat_memo_len(m), 1);
    assert_int_equal(chat_memo_get(m, k), 6);
    chat_memo_set(m, key, 9); /* or added */
    assert_int_equal(chat_memo_len(m), 2);
    assert_int_equal(chat_memo_get(m, key), 9);
    chat_memo_destroy(m);
}

static void test_base64_round_trips_and_rejects(void **state)
{
    char out[64];
    assert_int_equal(chat_base64_encode(out, "foobar", 6, CHAT_BASE64_STD), 8);
    assert_string_equal(out, "Zm9vYmFy");
    chat_base64_encode(out, "fooba", 5, CHAT_BASE64_STD);
    assert_string_equal(out, "Zm9vYmE=");
    chat_base64_encode(out, "foob", 4, CHAT_BASE64_STD);
    assert_string_equal(out, "Zm9vYg==");
    chat_base64_encode(out, "\xfb\xff", 2, CHAT_BASE64_URL);
    assert_string_equal(out, "-_8");
    unsigned char raw[32], back[32];
    for (int i = 0; i < 32; i++)
        raw[i] = (unsigned char)(i * 37 + 1);
    for (size_t n = 0; n <= 32; n++) {
        for (int a = CHAT_BASE64_STD; a <= CHAT_BASE64_URL; a++) {
            size_t len = chat_base64_encode(out, raw, n, a);
            assert_int_equal(len, chat_base64_encoded_len(n, a));
            assert_int_equal(chat_base64_decode(back, out, len, a), (long)n);
            assert_memory_equal(back, raw, n);
        }
    }
    assert_int_equal(chat_base64_encoded_len(32, CHAT_BASE64_URL), 43);
    const char *bad[] = {"Zm9", "Zm9vYmE", "Zm9vYm==", "Zm9vYg=", "Zm9vY===", "Zm-v", "Zm9vYh=="};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(chat_base64_decode(back, bad[i], strlen(bad[i]), CHAT_BASE64_STD), -1);
    assert_int_equal(chat_base64_decode(back, "Zg=", 3, CHAT_BASE64_URL), -1);
    assert_int_equal(chat_base64_decode(back, "Zh", 2, CHAT_BASE64_URL), -1); /* unused bits */
}

typedef struct msg {
    chat_mailbox_node_t node;
    int v;
} msg_t;

typedef struct box_state {
    chat_mailbox_t mb;
    int got[64];
    int ngot;
    int closed;
} box_state_t;

static void on_mail(chat_mailbox_t *mb, void *data)
{
    box_state_t *s = data;
    for (chat_mailbox_node_t *n = chat_mailbox_take(mb), *next; n; n = next) {
        next = n->next;
        s->got[s->ngot++] = ((msg_t *)n)->v;
    }
}

static void on_closed(void *data)
{
    ((box_state_t *)data)->closed++;
}

static msg_t posted[48];

static void poster(void *arg)
{
    box_state_t *s = arg;
    for (int i = 16; i < 48; i++) {
        posted[i].v = i;
        assert_true(chat_mailbox_post(&s->mb, &posted[i].node));
    }
}

static void test_mailbox_across_threads(void **state)
{
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    box_state_t s = {0};
    assert_int_equal(chat_mailbox_init(&s.mb), 0);
    msg_t early = {.v = -1};
    assert_false(chat_mailbox_post(&s.mb, &early.node)); /* not open yet */
    chat_mailbox_open(&s.mb, &loop, on_mail, &s);
    for (int i = 0; i < 16; i++) {
        posted[i].v = i;
        assert_true(chat_mailbox_post(&s.mb, &posted[i].node));
    }
    uv_thread_t th;
    assert_int_equal(uv_thread_create(&th, poster, &s), 0);
    uv_thread_join(&th);
    while (s.ngot < 48)
        uv_run(&loop, UV_RUN_ONCE);
    for (int i = 0; i < 48; i++)
        assert_int_equal(s.got[i], i);
    chat_mailbox_close(&s.mb, on_closed, &s);
    assert_false(chat_mailbox_post(&s.mb, &early.node));
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(s.closed, 1);
    assert_null(chat_mailbox_take(&s.mb));
    chat_mailbox_dispose(&s.mb);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_error_names(void **state)
{
    assert_string_equal(chat_err_name(0), "OK");
    assert_string_equal(chat_err_name(CHAT_ETIMEDOUT), "ETIMEDOUT");
    assert_string_equal(chat_err_name(UV_ECONNREFUSED), "ECONNREFUSED");
    assert_string_equal(chat_strerror(CHAT_ENOTFOUND), "not found");
    assert_string_equal(chat_strerror(UV_EINVAL), uv_strerror(UV_EINVAL));
    assert_true(CHAT_EDOWN < -5000);
}

static void test_hash_spreads(void **state)
{
    assert_int_equal(chat_hash_bytes("", 0), 1469598103934665603ULL);
    assert_int_equal(chat_hash_str("abc"), chat_hash_bytes("abc", 3));
    assert_int_not_equal(chat_hash_u64(1) & 1023, chat_hash_u64(1025) & 1023);
}

static void count_render(void *arg)
{
    (*(int *)arg)++;
}

static void test_metrics_render_hook_off(void **state)
{
    int a = 0, b = 0;
    chat_buf_t out = CHAT_BUF_INIT;
    chat_metrics_on_render(count_render, &a);
    chat_metrics_on_render(count_render, &b);
    chat_metrics_render(&out);
    assert_int_equal(a, 1);
    assert_int_equal(b, 1);
    chat_metrics_off_render(count_render, &a);
    chat_metrics_render(&out);
    assert_int_equal(a, 1); /* removed: no longer called */
    assert_int_equal(b, 2);
    chat_metrics_off_render(count_render, &b);
    chat_metrics_off_render(count_render, &b); /* absent: nothing happens */
    chat_metrics_render(&out);
    assert_int_equal(b, 2);
    chat_buf_dispose(&out);
}

/* chat_scan_u64 s over its whole length; -2 when it stopped early, -1 when it refused. */
static int64_t scan(const char *s, int64_t max)
{
    int64_t v = -3;
    const char *end = s + strlen(s);
    const char *q = chat_scan_u64(s, end, max, &v);
    return !q ? -1 : q != end ? -2 : v;
}

/*
 * The bound holds for every max, also below 10 (found by tests/fuzz/fuzz_query:
 * with max 0, "1" read as 1, since (0 - 1) / 10 rounds toward zero).
 */
static void test_scan_u64_bounds(void **state)
{
    assert_int_equal(scan("0", 0), 0);
    assert_int_equal(scan("1", 0), -1);
    assert_int_equal(scan("00", 0), 0);
    assert_int_equal(scan("5", 5), 5);
    assert_int_equal(scan("6", 5), -1);
    assert_int_equal(scan("9", 8), -1);
    assert_int_equal(scan("10", 9), -1);
    assert_int_equal(scan("100", 100), 100);
    assert_int_equal(scan("101", 100), -1);
    assert_int_equal(scan("12x", 100), -2);
    assert_int_equal(scan("", 100), -1);
    assert_int_equal(scan("9223372036854775807", INT64_MAX), INT64_MAX);
    assert_int_equal(scan("9223372036854775808", INT64_MAX), -1);
    assert_int_equal(scan("99999999999999999999", INT64_MAX), -1);
}

static void test_uuid_shape(void **state)
{
    unsigned char raw[16];
    memset(raw, 0xff, sizeof raw);
    char u[CHAT_UUID_LEN];
    chat_uuid_format(u, raw);
    assert_string_equal(u, "ffffffff-ffff-4fff-bfff-ffffffffffff");
    memset(raw, 0, sizeof raw);
    chat_uuid_format(u, raw);
    assert_string_equal(u, "00000000-0000-4000-8000-000000000000");
    char a[CHAT_UUID_LEN], b[CHAT_UUID_LEN];
    assert_int_equal(chat_uuid_new(a), 0);
    assert_int_equal(chat_uuid_new(b), 0);
    assert_int_equal(strlen(a), 36);
    assert_true(a[14] == '4' && strchr("89ab", a[19]) != NULL);
    assert_string_not_equal(a, b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_list_order_and_removal),
        cmocka_unit_test(test_idtable_against_model),
        cmocka_unit_test(test_memo_remembers_and_forgets_when_half_full),
        cmocka_unit_test(test_base64_round_trips_and_rejects),
        cmocka_unit_test(test_mailbox_across_threads),
        cmocka_unit_test(test_error_names),
        cmocka_unit_test(test_hash_spreads),
        cmocka_unit_test(test_uuid_shape),
        cmocka_unit_test(test_scan_u64_bounds),
        cmocka_unit_test(test_metrics_render_hook_off),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
