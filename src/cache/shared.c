/*
 * The process-wide state of the cache (see shared.h).
 */
#include "cache/shared.h"

#include "cache/cache.h"
#include "cache/internal.h"
#include "core/log.h"

#include <stdio.h>
#include <stdlib.h>

/* Derived gauges, brought up to date before every rendering of /metrics. */
static void refresh_gauges(void *arg)
{
    chat_cache_shared_t *sh = arg;
    double h = 0, mi = 0;
    for (int k = 0; k < sh->nkinds; k++) {
        h += chat_metric_value(sh->hits[k]);
        mi += chat_metric_value(sh->misses[k]);
    }
    chat_metric_set(sh->hit_ratio, h + mi > 0 ? h / (h + mi) : 0.0);
    chat_metric_set(sh->bypass_gauge, atomic_load(&sh->bypass) ? 1 : 0);
}

chat_cache_shared_t *chat_cache_shared_create(const char *const *kind_labels, int nkinds)
{
    chat_cache_shared_t *sh = chat_calloc(1, sizeof *sh);
    sh->kind_labels = kind_labels;
    sh->nkinds = nkinds;
    sh->hits = chat_calloc((size_t)nkinds, sizeof *sh->hits);
    sh->misses = chat_calloc((size_t)nkinds, sizeof *sh->misses);
    chat_metric_family_t *hits =
        chat_metrics_counter("chatd_cache_hits_total", "Cache lookups answered from Redis.");
    chat_metric_family_t *misses = chat_metrics_counter(
        "chatd_cache_misses_total", "Cache lookups that found nothing and went to the database.");
    for (int k = 0; k < nkinds; k++) {
        char labels[64];
        snprintf(labels, sizeof labels, "kind=\"%s\"", kind_labels[k]);
        sh->hits[k] = chat_metric_series(hits, labels);
        sh->misses[k] = chat_metric_series(misses, labels);
    }
    sh->errors = chat_metric_counter("chatd_cache_errors_total",
                                     "Redis commands that failed, timed out or were refused.");
    sh->late_reads =
        chat_metric_counter("chatd_cache_late_reads_total",
                            "Redis replies read after their command's deadline because the "
                            "worker's loop was busy; answered, not counted as timeouts");
    sh->hit_ratio = chat_metric_gauge("chatd_cache_hit_ratio", "Hits over lookups since start.");
    sh->bypass_gauge = chat_metric_gauge("chatd_cache_bypass", "1 while the cache is bypassed.");
    sh->healthy = chat_metric_gauge("chatd_cache_healthy", "Workers whose Redis connection is up.");
    sh->evictions =
        chat_metric_counter("chatd_cache_evictions_total",
                            "Keys Redis evicted under maxmemory (INFO stats evicted_keys).");
    sh->local_hits =
        chat_metric_counter("chatd_cache_local_hits_total",
                            "Hits whose value came from the worker's copy, Redis confirming it.");
    sh->local_bytes = chat_metric_gauge("chatd_cache_local_bytes",
                                        "Bytes of the workers' copies of cached values.");
    chat_metric_set(sh->bypass_gauge, 0);
    chat_metrics_on_render(refresh_gauges, sh);
    return sh;
}

void chat_cache_shared_destroy(chat_cache_shared_t *sh)
{
    if (!sh)
        return;
    chat_metrics_off_render(refresh_gauges, sh);
    free(sh->hits);
    free(sh->misses);
    free(sh);
}

void chat_cache_shared_set_bypass(chat_cache_shared_t *sh, bool on)
{
    bool was = atomic_exchange(&sh->bypass, on);
    if (was != on)
        chat_log_info("event=cache_bypass enabled=%s", on ? "true" : "false");
    /*
     * While bypassed, writes skip invalidation; the epoch must change before
     * the cache is trusted again.
     */
    if (was && !on)
        chat_cache_shared_mark_dirty(sh);
    chat_metric_set(sh->bypass_gauge, on ? 1 : 0);
}

bool chat_cache_shared_bypassed(const chat_cache_shared_t *sh)
{
    return atomic_load(&sh->bypass);
}

void chat_cache_shared_mark_dirty(chat_cache_shared_t *sh)
{
    atomic_fetch_add(&sh->dirty_gen, 1);
}

void chat_cache_shared_totals(const chat_cache_shared_t *sh, const struct chat_cache *c,
                              chat_cache_totals_t *out)
{
    out->hits = out->misses = 0;
    for (int k = 0; k < sh->nkinds; k++) {
        out->hits += chat_metric_value(sh->hits[k]);
        out->misses += chat_metric_value(sh->misses[k]);
    }
    out->errors = chat_metric_value(sh->errors);
    out->evictions = chat_metric_value(sh->evictions);
    /* ENABLE_REDIS_CACHE=false: every read goes to the database. */
    out->bypass = c == NULL || atomic_load(&sh->bypass);
    out->healthy = c != NULL && chat_cache_healthy(c);
}
