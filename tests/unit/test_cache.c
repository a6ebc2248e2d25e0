/*
 * Unit tests of the cache's freshness scheme (cache/cache.c, cache/shared.c)
 * against a private redis-server (redis_server.h): a write's version bump
 * makes the next lookup miss; a fill that comes late, after an
 * invalidation, cannot be read; an invalidation that failed marks the cache
 * dirty and the epoch changes before the next use; one that is unsettled
 * holds the cache until its fate is known; the bypass switch; the worker's
 * copy confirmed by Redis. Every test ends with the cache closed and
 * uv_loop_close() == 0.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "cache/cache.c"

#define PORT_LO 26440
#define PORT_HI 26459
#include "redis_server.h"

#include <string.h>

static const char *const labels[] = {"page", "item"};
enum { K_PAGE, K_ITEM };

typedef struct env {
    uv_loop_t loop;
    uv_timer_t tick;
    chat_cache_shared_t *sh;
    chat_cache_t *c;
    int closed;
} env_t;

static void on_tick(uv_timer_t *t) {}

static void env_init(env_t *e, int cmd_timeout_ms, size_t local_bytes)
{
    char url[64], err[256];
    memset(e, 0, sizeof *e);
    freeReplyObject(server_cmd("FLUSHALL"));
    assert_int_equal(uv_loop_init(&e->loop), 0);
    uv_timer_init(&e->loop, &e->tick);
    uv_timer_start(&e->tick, on_tick, 5, 5);
    e->sh = chat_cache_shared_create(labels, 2);
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", g_port);
    chat_cache_config_t cfg = {.shared = e->sh,
                               .redis_url = url,
                               .cmd_timeout_ms = cmd_timeout_ms,
                               .local_bytes = local_bytes,
                               .version_prefix = "t:ver:"};
    e->c = chat_cache_create(&e->loop, &cfg, err, sizeof err);
    assert_non_null(e->c);
    uint64_t t0 = uv_hrtime();
    while (!chat_cache_healthy(e->c) && ms_since(t0) < 5000)
        uv_run(&e->loop, UV_RUN_ONCE);
    assert_true(chat_cache_healthy(e->c));
}

static void on_closed(void *arg)
{
    ((env_t *)arg)->closed++;
}

static void env_done(env_t *e)
{
    chat_cache_close(e->c, on_closed, e);
    uv_close((uv_handle_t *)&e->tick, NULL);
    assert_int_equal(uv_run(&e->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(e->closed, 1);
    assert_int_equal(uv_loop_close(&e->loop), 0);
    chat_cache_shared_destroy(e->sh);
}

/* ---- one operation at a time ---- */

typedef struct res {
    int calls;
    chat_cache_lookup_status_t status;
    char value[64];
    char key[CHAT_CACHE_KEY_MAX + 100];
} res_t;

static void lookup_done(const chat_cache_lookup_t *l, void *arg)
{
    res_t *r = arg;
    r->calls++;
    r->status = l->status;
    if (l->status == CHAT_CACHE_HIT)
        snprintf(r->value, sizeof r->value, "%.*s", (int)l->len, l->value);
    if (l->status == CHAT_CACHE_MISS)
        snprintf(r->key, sizeof r->key, "%s", l->key);
}

static void run_until_calls(env_t *e, int *calls)
{
    uint64_t t0 = uv_hrtime();
    while (*calls == 0 && ms_since(t0) < 5000)
        uv_run(&e->loop, UV_RUN_ONCE);
    assert_int_equal(*calls, 1);
}

/* One lookup: CHAT_EDOWN when refused, else 0 with its result in *r. */
static int lookup(env_t *e, int kind, const char *prefix, int64_t scope, res_t *r)
{
    memset(r, 0, sizeof *r);
    int rc = chat_cache_lookup(e->c, kind, prefix, scope, lookup_done, r);
    if (rc != 0) {
        assert_int_equal(rc, CHAT_EDOWN);
        assert_int_equal(r->calls, 0);
        return rc;
    }
    assert_int_equal(r->calls, 0); /* never from inside the call */
    run_until_calls(e, &r->calls);
    return 0;
}

/* Looks up until the cache is usable again (a dirty cache first changes its epoch). */
static int lookups_until_usable(env_t *e, int kind, const char *prefix, int64_t scope, res_t *r)
{
    int refused = 0;
    uint64_t t0 = uv_hrtime();
    while (lookup(e, kind, prefix, scope, r) != 0) {
        refused++;
        assert_true(ms_since(t0) < 5000);
        uv_run(&e->loop, UV_RUN_ONCE);
    }
    return refused;
}

static void op_done(void *arg)
{
    (*(int *)arg)++;
}

static void fill(env_t *e, const char *key, const char *val)
{
    int calls = 0;
    chat_cache_fill(e->c, key, val, strlen(val), 60, op_done, &calls);
    run_until_calls(e, &calls);
}

static void invalidate(env_t *e, int64_t scope)
{
    int calls = 0;
    chat_cache_invalidate_conv(e->c, scope, op_done, &calls);
    assert_int_equal(calls, 0); /* never before it returns */
    run_until_calls(e, &calls);
}

/* Caches val for prefix in scope: a miss, a fill, then a hit. Returns the key in key. */
static void cache_value(env_t *e, const char *prefix, int64_t scope, const char *val, char *key)
{
    res_t r;
    assert_int_equal(lookup(e, K_PAGE, prefix, scope, &r), 0);
    assert_int_equal(r.status, CHAT_CACHE_MISS);
    assert_non_null(strstr(r.key, ":e"));
    if (scope > 0)
        assert_non_null(strstr(r.key, ":v"));
    if (key)
        snprintf(key, CHAT_CACHE_KEY_MAX + 100, "%s", r.key);
    fill(e, r.key, val);
    assert_int_equal(lookup(e, K_PAGE, prefix, scope, &r), 0);
    assert_int_equal(r.status, CHAT_CACHE_HIT);
    assert_string_equal(r.value, val);
}

static char *redis_get(const char *key)
{
    static char out[128];
    redisReply *rep = server_cmd("GET %s", key);
    snprintf(out, sizeof out, "%s", rep->type == REDIS_REPLY_STRING ? rep->str : "(nil)");
    freeReplyObject(rep);
    return out;
}

static void invalidate_rev(env_t *e, int64_t scope, int64_t rev, const char *prefix,
                           const char *val)
{
    int calls = 0;
    chat_cache_put_t put = {prefix, val, val ? strlen(val) : 0, 60};
    chat_cache_invalidate_conv_rev(e->c, scope, rev, &put, prefix ? 1 : 0, op_done, &calls);
    assert_int_equal(calls, 0);
    run_until_calls(e, &calls);
}

/* ---- tests ---- */

static void test_write_bump_makes_next_lookup_miss(void **state)
{
    env_t e;
    res_t r;
    char k1[CHAT_CACHE_KEY_MAX + 100];
    double hits0, misses0;

    env_init(&e, 200, 0);
    hits0 = chat_metric_value(e.sh->hits[K_PAGE]);
    misses0 = chat_metric_value(e.sh->misses[K_PAGE]);
    assert_int_equal(lookup(&e, K_PAGE, "t:page:7", 7, &r), 0);
    assert_int_equal(r.status, CHAT_CACHE_MISS);
    snprintf(k1, sizeof k1, "%s", r.key);
    assert_int_equal(strncmp(k1, "t:page:7:e", 10), 0);
    fill(&e, k1, "v1");
    cache_value(&e, "t:page:8", 8, "other", NULL);
    assert_int_equal(lookup(&e, K_PAGE, "t:page:7", 7, &r), 0);
    assert_int_equal(r.status, CHAT_CACHE_HIT);
    assert_string_equal(r.value, "v1");
    char ver[128];
    snprintf(ver, sizeof ver, "%s", redis_get("t:ver:7"));

    invalidate(&e, 7);
    assert_string_not_equal(redis_get("t:ver:7"),
                            ver); /* a fresh token, under the caller's prefix */
    assert_int_equal(lookup(&e, K_PAGE, "t:page:7", 7, &r), 0);
    assert_int_equal(r.status, CHAT_CACHE_MISS);
    assert_string_not_equal(r.key, k1);
    assert_string_equal(redis_get(k1), "v1"); /* still there, never read again */
    /* another scope keeps its entries */
    assert_int_equal(lookup(&e, K_PAGE, "t:page:8", 8, &r), 0);
    assert_int_equal(r.status, CHAT_CACHE_HIT);
    assert_string_equal(r.value, "other");
    assert_true(chat_metric_value(e.sh->hits[K_PAGE]) == hits0 + 3);
    assert_true(chat_metric_value(e.sh->misses[K_PAGE]) == misses0 + 3);
    env_done(&e);
}

/*
 * Write-through: a bump that records a rev above the recorded one stores its
 * values under the new version; the first one (no rev recorded yet), one
 * arriving late with a lower rev, and one after a plain bump store nothing;
 * the version changes every time.
 */
static void test_write_through_only_for_the_newest_rev(void **state)
{
    env_t e;
    res_t r;
    char ver[128];

    env_init(&e, 200, 0);
    cache_value(&e, "t:page:9", 9, "old", NULL);
    /* no rev recorded yet: only the version moves (to "5.<token>") */
    snprintf(ver, sizeof ver, "%s", redis_get("t:ver:9"));
    invalidate_rev(&e, 9, 5, "t:page:9", "at-5");
    assert_string_not_equal(redis_get("t:ver:9"), ver);
    assert_int_equal(strncmp(redis_get("t:ver:9"), "5.", 2), 0);
    assert_int_equal(lookup(&e, K_PAGE, "t:page:9", 9, &r), 0);
    assert_int_equal(r.status, CHAT_CACHE_MISS);
    /* rev 6 above 5: stored under the new version, read as a hit */
    invalidate_rev(&e, 9, 6, "t:page:9", "at-6");
    assert_int_equal(strncmp(redis_get("t:ver:9"), "6.", 2), 0);
    assert_int_equal(lookup(&e, K_PAGE, "t:page:9", 9, &r), 0);
    assert_int_equal(r.status, CHAT_CACHE_HIT);
    assert_string_equal(r.value, "at-6");
    /* rev 4 arrives late: a new version, still recording 6, nothing stored */
    snprintf(ver, sizeof ver, "%s", redis_get("t:ver:9"));
    invalidate_rev(&e, 9, 4, "t:page:9", "at-4");
    assert_string_not_equal(redis_get("t:ver:9"), ver);
    assert_int_equal(strncmp(redis_get("t:ver:9"), "6.", 2), 0);
    assert_int_equal(lookup(&e, K_PAGE, "t:page:9", 9, &r), 0);
    assert_int_equal(r.status, CHAT_CACHE_MISS);
    /* a change with a rev and nothing to store (an edit) records it */
    invalidate_rev(&e, 9, 7, NULL, NULL);
    assert_int_equal(strncmp(redis_get("t:ver:9"), "7.", 2), 0);
    /* so a send's late write-through of rev 6 stores nothing */
    invalidate_rev(&e, 9, 6, "t:page:9", "at-6-late");
    assert_int_equal(lookup(&e, K_PAGE, "t:page:9", 9, &r), 0);
    assert_int_equal(r.status, CHAT_CACHE_MISS);
    /* a plain bump forgets the rev: the next write-through stores nothing */
    invalidate(&e, 9);
    invalidate_rev(&e, 9, 8, "t:page:9", "at-8");
    assert_int_equal(lookup(&e, K_PAGE, "t:page:9", 9, &r), 0);
    assert_int_equal(r.status, CHAT_CACHE_MISS);
    invalidate_rev(&e, 9, 9, "t:page:9", "at-9");
    assert_int_equal(lookup(&e, K_PAGE, "t:page:9", 9, &r), 0);
    assert_int_equal(r.status, CHAT_CACHE_HIT);
    assert_string_equal(r.value, "at-9");
    env_done(&e);
}

static void test_late_fill_after_invalidation_is_unreadable(void **state)
{
    env_t e;
    res_t r;
    char k1[CHAT_CACHE_KEY_MAX + 100];

    env_init(&e, 200, 0);
    assert_int_equal(lookup(&e, K_PAGE, "t:page:7", 7, &r), 0);
    assert_int_equal(r.status, CHAT_CACHE_MISS);
    snprintf(k1, sizeof k1, "%s", r.key);
    invalidate(&e, 7); /* a write commits while the read loads */
    fill(&e, k1, "stale");
    assert_int_equal(lookup(&e, K_PAGE, "t:page:7", 7, &r), 0);
    assert_int_equal(r.status, CHAT_CACHE_MISS);
    assert_string_not_equal(r.key, k1);
    fill(&e, r.key, "fresh");
    assert_int_equal(lookup(&e, K_PAGE, "t:page:7", 7, &r), 0);
    assert_int_equal(r.status, CHAT_CACHE_HIT);
    assert_string_equal(r.value, "fresh");
    env_done(&e);
}

/* Redis refuses the bump (an error reply): dirty, and the epoch changes
 * before the cache is used again, hiding every older entry, of every scope. */
static void test_failed_invalidation_changes_the_epoch(void **state)
{
    env_t e;
    res_t r;
    char k7[CHAT_CACHE_KEY_MAX + 100], k0[CHAT_CACHE_KEY_MAX + 100], epoch[128];

    env_init(&e, 200, 0);
    cache_value(&e, "t:page:7", 7, "v7", k7);
    cache_value(&e, "t:item:1", 0, "unversioned", k0);
    snprintf(epoch, sizeof epoch, "%s", redis_get(CHAT_CACHE_EPOCH_KEY));
    unsigned long gen = atomic_load(&e.sh->dirty_gen);

    freeReplyObject(server_cmd("CONFIG SET min-replicas-to-write 1")); /* writes refused */
    invalidate(&e, 7);
    freeReplyObject(server_cmd("CONFIG SET min-replicas-to-write 0"));
    assert_int_equal(atomic_load(&e.sh->dirty_gen), gen + 1);

    /* The first lookup is refused while the new epoch is set, then all miss. */
    assert_true(lookups_until_usable(&e, K_PAGE, "t:page:7", 7, &r) >= 1);
    assert_string_not_equal(redis_get(CHAT_CACHE_EPOCH_KEY), epoch);
    assert_int_equal(r.status, CHAT_CACHE_MISS);
    assert_string_not_equal(r.key, k7);
    assert_int_equal(lookup(&e, K_PAGE, "t:item:1", 0, &r), 0);
    assert_int_equal(r.status, CHAT_CACHE_MISS);
    assert_string_not_equal(r.key, k0);
    env_done(&e);
}

static void invalidate_lsn(env_t *e, int64_t scope, uint64_t lsn)
{
    int calls = 0;
    chat_cache_invalidate_conv_lsn(e->c, scope, lsn, op_done, &calls);
    assert_int_equal(calls, 0);
    run_until_calls(e, &calls);
}

/* The position a miss of scope 7 needs now (a fresh prefix each time: a miss). */
static uint64_t needed(env_t *e)
{
    static int n;
    char prefix[32];
    res_t r;
    snprintf(prefix, sizeof prefix, "t:page:7:%d", n++);
    lookups_until_usable(e, K_PAGE, prefix, 7, &r);
    assert_int_equal(r.status, CHAT_CACHE_MISS);
    return chat_cache_key_lsn(r.key);
}

/*
 * Read replicas' rule (docs/architecture.md): a version records the highest
 * WAL position of the bumps that moved it, whatever order they land in; a
 * version no write set records none; a write-through bump records it too;
 * several keys at once; and a new epoch after a lost bump carries the
 * process's highest position.
 */
static void test_versions_record_wal_positions(void **state)
{
    env_t e;
    res_t r;
    env_init(&e, 200, 0);
    assert_int_equal(needed(&e), 0); /* installed by the lookup: unknown */
    invalidate_lsn(&e, 7, 0x500);
    assert_int_equal(needed(&e), 0x500);
    invalidate_lsn(&e, 7, 0x300); /* a concurrent write's bump landing late */
    assert_int_equal(needed(&e), 0x500);
    invalidate_lsn(&e, 7, 0x900);
    assert_int_equal(needed(&e), 0x900);
    invalidate_rev(&e, 7, 3, NULL, NULL); /* a bump without a position: unknown again */
    assert_int_equal(needed(&e), 0);
    int calls = 0;
    chat_cache_invalidate_conv_rev_lsn(e.c, 7, 4, 0x800, NULL, 0, op_done, &calls);
    run_until_calls(&e, &calls);
    assert_int_equal(needed(&e), 0x800);
    assert_non_null(strstr(redis_get("t:ver:7"), "4."));
    calls = 0;
    const char *keys[] = {"t:ver:7", "t:ver:8"};
    chat_cache_invalidate_keys_lsn(e.c, keys, 2, 0xA00, op_done, &calls);
    run_until_calls(&e, &calls);
    assert_int_equal(needed(&e), 0xA00);
    assert_int_equal(chat_cache_token_lsn(redis_get("t:ver:8")), 0xA00);
    /* a lost bump: the new epoch carries the highest position, above the version's */
    freeReplyObject(server_cmd("CONFIG SET min-replicas-to-write 1"));
    invalidate_lsn(&e, 8, 0xB00);
    freeReplyObject(server_cmd("CONFIG SET min-replicas-to-write 0"));
    assert_true(lookups_until_usable(&e, K_PAGE, "t:page:7:x", 7, &r) >= 1);
    assert_int_equal(chat_cache_key_lsn(r.key), 0xB00);
    assert_int_equal(chat_cache_token_lsn(redis_get(CHAT_CACHE_EPOCH_KEY)), 0xB00);
    env_done(&e);
}

/* A bump past its deadline: the write is acknowledged, no worker uses the
 * cache until the late reply says it landed; then nothing more is needed. */
static void test_unsettled_invalidation_holds_the_cache(void **state)
{
    env_t e;
    res_t r;
    char k7[CHAT_CACHE_KEY_MAX + 100], epoch[128];

    env_init(&e, 50, 0);
    cache_value(&e, "t:page:7", 7, "v7", k7);
    snprintf(epoch, sizeof epoch, "%s", redis_get(CHAT_CACHE_EPOCH_KEY));
    unsigned long gen = atomic_load(&e.sh->dirty_gen);
    pause_server(400);
    invalidate(&e, 7); /* answered at its deadline */
    assert_int_equal(atomic_load(&e.sh->unsettled), 1);
    assert_int_equal(lookup(&e, K_PAGE, "t:page:7", 7, &r), CHAT_EDOWN);
    assert_int_equal(lookup(&e, K_PAGE, "t:page:8", 8, &r), CHAT_EDOWN);
    uint64_t t0 = uv_hrtime();
    while (atomic_load(&e.sh->unsettled) > 0 && ms_since(t0) < 3000)
        uv_run(&e.loop, UV_RUN_ONCE);
    assert_int_equal(atomic_load(&e.sh->unsettled), 0);
    assert_int_equal(atomic_load(&e.sh->dirty_gen), gen); /* it landed */
    assert_int_equal(lookup(&e, K_PAGE, "t:page:7", 7, &r), 0);
    assert_int_equal(r.status, CHAT_CACHE_MISS);
    assert_string_not_equal(r.key, k7);
    assert_string_equal(redis_get(CHAT_CACHE_EPOCH_KEY), epoch);
    env_done(&e);
}

/* An unsettled bump whose connection is dropped (Redis wedged past the
 * wedge time) may not have landed: dirty, and the epoch changes. */
static void test_unsettled_then_lost_marks_dirty(void **state)
{
    env_t e;
    res_t r;
    char k7[CHAT_CACHE_KEY_MAX + 100], epoch[128];

    env_init(&e, 50, 0);
    cache_value(&e, "t:page:7", 7, "v7", k7);
    snprintf(epoch, sizeof epoch, "%s", redis_get(CHAT_CACHE_EPOCH_KEY));
    unsigned long gen = atomic_load(&e.sh->dirty_gen);
    pause_server(1500);
    invalidate(&e, 7);
    assert_int_equal(atomic_load(&e.sh->unsettled), 1);
    uint64_t t0 = uv_hrtime();
    while (atomic_load(&e.sh->unsettled) > 0 && ms_since(t0) < 3000)
        uv_run(&e.loop, UV_RUN_ONCE);
    assert_int_equal(atomic_load(&e.sh->unsettled), 0);
    assert_int_equal(atomic_load(&e.sh->dirty_gen), gen + 1);
    assert_true(ms_since(t0) < 1500); /* dropped as wedged, before the pause ended */
    t0 = uv_hrtime();
    while (!chat_cache_healthy(e.c) && ms_since(t0) < 5000)
        uv_run(&e.loop, UV_RUN_ONCE);
    assert_true(lookups_until_usable(&e, K_PAGE, "t:page:7", 7, &r) >= 1);
    assert_string_not_equal(redis_get(CHAT_CACHE_EPOCH_KEY), epoch);
    assert_int_equal(r.status, CHAT_CACHE_MISS);
    assert_string_not_equal(r.key, k7);
    env_done(&e);
}

static void test_bypass(void **state)
{
    env_t e;
    res_t r;
    char k8[CHAT_CACHE_KEY_MAX + 100];
    chat_cache_totals_t t;

    env_init(&e, 200, 0);
    cache_value(&e, "t:page:8", 8, "v8", k8);
    assert_string_equal(chat_cache_state(e.c), "up");
    chat_cache_shared_set_bypass(e.sh, true);
    assert_true(chat_cache_shared_bypassed(e.sh));
    assert_string_equal(chat_cache_state(e.c), "bypassed");
    double misses = chat_metric_value(e.sh->misses[K_PAGE]);
    assert_int_equal(lookup(&e, K_PAGE, "t:page:8", 8, &r), CHAT_EDOWN);
    assert_true(chat_metric_value(e.sh->misses[K_PAGE]) == misses); /* not counted */
    unsigned long gen = atomic_load(&e.sh->dirty_gen);
    invalidate(&e, 7); /* skipped while bypassed: dirty */
    assert_int_equal(atomic_load(&e.sh->dirty_gen), gen + 1);
    chat_cache_shared_totals(e.sh, e.c, &t);
    assert_true(t.bypass);
    assert_true(t.healthy);

    chat_cache_shared_set_bypass(e.sh, false); /* dirty again: the epoch must change */
    assert_int_equal(atomic_load(&e.sh->dirty_gen), gen + 2);
    assert_string_equal(chat_cache_state(e.c), "up");
    assert_true(lookups_until_usable(&e, K_PAGE, "t:page:8", 8, &r) >= 1);
    assert_int_equal(r.status, CHAT_CACHE_MISS); /* scope 8 was not written, yet misses */
    assert_string_not_equal(r.key, k8);

    /* no cache at all (ENABLE_REDIS_CACHE=false): reported as bypassed */
    chat_cache_shared_totals(e.sh, NULL, &t);
    assert_true(t.bypass);
    assert_false(t.healthy);
    assert_string_equal(chat_cache_state(NULL), "bypassed");
    assert_int_equal(chat_cache_lookup(NULL, K_PAGE, "t:page:8", 8, lookup_done, &r), CHAT_EDOWN);
    env_done(&e);
}

/* With copies kept, a repeated hit does not move the value: Redis confirms it. */
static void test_local_copy_confirmed_by_redis(void **state)
{
    env_t e;
    res_t r;

    env_init(&e, 200, 1 << 20);
    double local_hits = chat_metric_value(e.sh->local_hits);
    cache_value(&e, "t:page:7", 7, "v7", NULL); /* the hit keeps a copy */
    assert_int_equal(lookup(&e, K_PAGE, "t:page:7", 7, &r), 0);
    assert_int_equal(r.status, CHAT_CACHE_HIT);
    assert_string_equal(r.value, "v7");
    assert_true(chat_metric_value(e.sh->local_hits) == local_hits + 1);
    invalidate(&e, 7);
    assert_int_equal(lookup(&e, K_PAGE, "t:page:7", 7, &r), 0);
    assert_int_equal(r.status, CHAT_CACHE_MISS); /* the copy is not used */
    env_done(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_bump_makes_next_lookup_miss),
        cmocka_unit_test(test_write_through_only_for_the_newest_rev),
        cmocka_unit_test(test_late_fill_after_invalidation_is_unreadable),
        cmocka_unit_test(test_failed_invalidation_changes_the_epoch),
        cmocka_unit_test(test_versions_record_wal_positions),
        cmocka_unit_test(test_unsettled_invalidation_holds_the_cache),
        cmocka_unit_test(test_unsettled_then_lost_marks_dirty),
        cmocka_unit_test(test_bypass),
        cmocka_unit_test(test_local_copy_confirmed_by_redis),
    };
    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
