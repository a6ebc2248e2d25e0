/*
 * What the caches of all workers of a process share: the bypass switch, the
 * dirty generation (an invalidation that did not land), the invalidations
 * still unsettled, the number of workers whose Redis is up, and the
 * chatd_cache_* metrics. One object, created by main.c before the workers and
 * handed to every worker's chat_cache_create; safe from every thread.
 */
#ifndef CHAT_CACHE_SHARED_H
#define CHAT_CACHE_SHARED_H

#include "core/alloc.h"

#include <stdbool.h>

typedef struct chat_cache_shared chat_cache_shared_t;
struct chat_cache;

/**
 * Creates the shared state with the bypass switch off and registers the
 * chatd_cache_* metrics. kind_labels names, for the metrics' kind label,
 * each kind of data a caller passes to chat_cache_lookup (kinds are indexes
 * into it); the array and its strings must outlive the object.
 */
chat_cache_shared_t *chat_cache_shared_create(const char *const *kind_labels,
                                              int nkinds) CHAT_MUSTCHECK;

/** Frees the shared state; every cache created with it must be closed first. */
void chat_cache_shared_destroy(chat_cache_shared_t *sh);

/**
 * Sets the bypass switch (CACHE_BYPASS, POST /api/cache/bypass). Turning it
 * off marks the cache dirty: writes skipped invalidation meanwhile.
 */
void chat_cache_shared_set_bypass(chat_cache_shared_t *sh, bool on);
bool chat_cache_shared_bypassed(const chat_cache_shared_t *sh);

/** Marks the process cache dirty: every worker changes the epoch before its next use. */
void chat_cache_shared_mark_dirty(chat_cache_shared_t *sh);

/** Totals for /api/cache/metrics. */
typedef struct chat_cache_totals {
    double hits, misses, errors, evictions;
    bool bypass, healthy;
} chat_cache_totals_t;

/**
 * Fills out from the process-wide counters; healthy is the Redis health of
 * cache c. c may be NULL (cache disabled: every read goes to the database),
 * which is reported as bypassed and not healthy.
 */
void chat_cache_shared_totals(const chat_cache_shared_t *sh, const struct chat_cache *c,
                              chat_cache_totals_t *out);

#endif
