/*
 * Cache-aside over Redis for one worker: versioned lookups, fills with the
 * contract's TTLs, invalidation after writes, the process-wide bypass switch,
 * and the chatd_cache_* metrics. Values are opaque bytes (encoded JSON).
 *
 * Freshness rests on two values kept in Redis: the cache epoch
 * (cache:epoch) and each conversation's version (conv:ver:{id}). A lookup
 * reads both and the entry in one round trip (a Lua script), so the key it
 * reads and later fills is prefix:e<epoch>:v<version>. A write changes the
 * version after it commits and before it is acknowledged, so every later
 * lookup uses a key no earlier fill could have written. Versions and epochs
 * are fresh random tokens, never counters, so an evicted version cannot come
 * back and resurrect an old entry. Whenever an invalidation did not reach
 * Redis, or may not have (Redis down, refused, error reply, connection lost
 * with it, bypass on), the process marks the cache dirty and changes the
 * epoch before it uses the cache again. One past its deadline stays
 * unsettled, the cache unused meanwhile, until its late reply (nothing to
 * do) or the end of its connection (dirty) says which.
 */
#ifndef CHAT_CACHE_CACHE_H
#define CHAT_CACHE_CACHE_H

#include "cache/flight.h"
#include "cache/keys.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct chat_cache chat_cache_t;

typedef struct chat_cache_config {
    const char *redis_url;
    int cmd_timeout_ms; /* deadline of every Redis command */
    int poll_info;      /* this worker polls INFO stats for evictions */
    size_t local_bytes; /* budget of the worker's copies of values (local.h); 0 = none */
} chat_cache_config_t;

/** Sets the process-wide bypass switch (CACHE_BYPASS, POST /api/cache/bypass). */
void chat_cache_set_bypass(bool on);
bool chat_cache_bypassed(void);

/**
 * Creates the worker's cache and starts connecting in the background.
 * Returns NULL with a message in err for a bad REDIS_URL.
 */
chat_cache_t *chat_cache_create(uv_loop_t *loop, const chat_cache_config_t *cfg, char *err,
                                size_t errlen);
void chat_cache_close(chat_cache_t *c, void (*cb)(void *arg), void *arg);

/** "up", "down" or "bypassed" for /readyz. c may be NULL (cache disabled). */
const char *chat_cache_state(const chat_cache_t *c);

/** The coalescing table of this worker. */
chat_flights_t *chat_cache_flights(chat_cache_t *c);

enum chat_cache_lookup_status {
    CHAT_CACHE_HIT = 0,
    CHAT_CACHE_MISS = 1,  /* key holds the versioned key to fill */
    CHAT_CACHE_ERROR = 2, /* Redis failed or timed out: read the database, do not fill */
};

typedef struct chat_cache_lookup {
    int status;
    const char *value; /* HIT: the bytes, valid during the callback */
    size_t len;
    const char *key; /* MISS: the full key to fill, valid during the callback */
} chat_cache_lookup_t;

typedef void (*chat_cache_lookup_cb)(const chat_cache_lookup_t *r, void *arg);

/**
 * Looks up prefix (from keys.h) under the current epoch and, when conv_id >
 * 0, that conversation's version. Returns 0 when started (cb fires once,
 * later), or -1 when the cache is not to be used now (bypassed, Redis down,
 * or dirty): cb is not called and the caller reads the database. Counts a
 * hit or a miss for kind.
 */
int chat_cache_lookup(chat_cache_t *c, int kind, const char *prefix, int64_t conv_id,
                      chat_cache_lookup_cb cb, void *arg);

/**
 * Stores val under key (a MISS key) with the kind's TTL. done (may be NULL)
 * fires once the fill is acknowledged or failed.
 */
void chat_cache_fill(chat_cache_t *c, const char *key, const char *val, size_t len, int ttl,
                     void (*done)(void *arg), void *arg);

/**
 * After a committed write to a conversation: gives it a new version. done
 * fires once, after Redis acknowledged, the attempt failed (then the cache
 * is marked dirty) or its deadline passed (then the bump is unsettled, see
 * above). Never fires before this returns.
 */
void chat_cache_invalidate_conv(chat_cache_t *c, int64_t conv_id, void (*done)(void *arg),
                                void *arg);

/** Marks the process cache dirty: the epoch changes before the next use. */
void chat_cache_mark_dirty(void);

/** Totals for /api/cache/metrics. */
typedef struct chat_cache_totals {
    double hits, misses, errors, evictions;
    bool bypass, healthy;
} chat_cache_totals_t;
void chat_cache_totals(chat_cache_t *c, chat_cache_totals_t *out);

/**
 * Deletes keys matching pattern with incremental SCAN + UNLINK, never
 * blocking Redis. cb gets the number deleted, or -1 if Redis failed.
 */
void chat_cache_delete_pattern(chat_cache_t *c, const char *pattern,
                               void (*cb)(long long deleted, void *arg), void *arg);

#endif
