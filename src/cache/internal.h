/*
 * The shared state's layout, for the files of cache/ only: cache.c counts
 * into it and reads the switches, shared.c creates and reports it.
 */
#ifndef CHAT_CACHE_INTERNAL_H
#define CHAT_CACHE_INTERNAL_H

#include "cache/shared.h"
#include "core/metrics.h"

#include <stdatomic.h>

struct chat_cache_shared {
    atomic_bool bypass;
    /** Bumped whenever an invalidation did not land, or may not have. */
    atomic_ulong dirty_gen;
    /*
     * Invalidations that timed out and whose fate Redis has not told yet
     * (their late reply, or the end of their connection). Their writes are
     * already acknowledged, and a lookup on another worker's connection could
     * overtake the version bump, so while any is open no worker uses the
     * cache. One that turns out to have landed needs nothing more; one that
     * did not (or may not have) marks the cache dirty.
     */
    atomic_int unsettled;
    atomic_int healthy_workers;
    /*
     * The highest WAL position of a write this process bumped a version
     * for: a new epoch carries it (cache.c), so that a read after a bump
     * that did not land never trusts a replica behind that write.
     */
    _Atomic unsigned long long max_lsn;

    const char *const *kind_labels;
    int nkinds;
    chat_metric_t **hits; /* per kind */
    chat_metric_t **misses;
    chat_metric_t *errors;
    chat_metric_t *late_reads;
    chat_metric_t *hit_ratio;
    chat_metric_t *bypass_gauge;
    chat_metric_t *healthy;
    chat_metric_t *evictions;
    chat_metric_t *local_hits;
    chat_metric_t *local_bytes;
};

#endif
