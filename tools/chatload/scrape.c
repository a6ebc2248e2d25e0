/*
 * Reads the few chatd metrics chatload records out of Prometheus text, and
 * computes a quantile of a histogram from two cumulative bucket snapshots.
 */
#include "run.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int name_is(const char *line, size_t n, const char *name)
{
    size_t k = strlen(name);
    return n > k && memcmp(line, name, k) == 0 && (line[k] == '{' || line[k] == ' ');
}

static double label_le(const char *line, size_t n)
{
    const char *p = memmem(line, n, "le=\"", 4);
    if (!p)
        return NAN;
    p += 4;
    if (strncmp(p, "+Inf", 4) == 0)
        return INFINITY;
    return strtod(p, NULL);
}

const char *const cl_kind_names[CL_NKINDS] = {"history", "count", "metadata", "profile",
                                              "events",  "inbox", "members"};

/* Index of the kind="…" label of a line in cl_kind_names, or -1. */
static int label_kind(const char *line, size_t n)
{
    const char *p = memmem(line, n, "kind=\"", 6);
    if (!p)
        return -1;
    p += 6;
    for (int k = 0; k < CL_NKINDS; k++) {
        size_t kl = strlen(cl_kind_names[k]);
        if ((size_t)(line + n - p) > kl && !strncmp(p, cl_kind_names[k], kl) && p[kl] == '"')
            return k;
    }
    return -1;
}

/* True when the line carries the label name="value". */
static int label_is(const char *line, size_t n, const char *label)
{
    return memmem(line, n, label, strlen(label)) != NULL;
}

void cl_scrape_parse(cl_scrape_t *s, const char *text, size_t len)
{
    s->ok = 0;
    s->ws_open = s->resumes_resumed = s->resumes_reset = s->gap_fills = s->stream_events = 0;
    s->hits = s->misses = s->queries = s->pool_waiting = 0;
    s->hit_ratio = NAN;
    memset(s->kind_hits, 0, sizeof s->kind_hits);
    memset(s->kind_misses, 0, sizeof s->kind_misses);
    s->nle = 0;
    const char *p = text, *end = text + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        const char *line = p;
        p = nl ? nl + 1 : end;
        if (!n || line[0] == '#')
            continue;
        /* the value follows the last space (no timestamps in chatd's output) */
        const char *sp = NULL;
        for (size_t i = n; i-- > 0;)
            if (line[i] == ' ') {
                sp = line + i;
                break;
            }
        if (!sp)
            continue;
        char num[64];
        size_t vl = (size_t)(line + n - sp - 1);
        if (vl == 0 || vl >= sizeof num)
            continue;
        memcpy(num, sp + 1, vl);
        num[vl] = 0;
        double v = strtod(num, NULL);
        if (name_is(line, n, "chatd_cache_hits_total")) {
            s->hits += v;
            int k = label_kind(line, n);
            if (k >= 0)
                s->kind_hits[k] += v;
            s->ok = 1;
        } else if (name_is(line, n, "chatd_cache_misses_total")) {
            s->misses += v;
            int k = label_kind(line, n);
            if (k >= 0)
                s->kind_misses[k] += v;
            s->ok = 1;
        } else if (name_is(line, n, "chatd_cache_hit_ratio")) {
            s->hit_ratio = v;
            s->ok = 1;
        } else if (name_is(line, n, "chatd_db_pool_waiting")) {
            s->pool_waiting += v;
            s->ok = 1;
        } else if (name_is(line, n, "chatd_db_queries_total")) {
            s->queries += v;
            s->ok = 1;
        } else if (name_is(line, n, "chatd_connections_open")) {
            if (label_is(line, n, "kind=\"websocket\""))
                s->ws_open += v;
            s->ok = 1;
        } else if (name_is(line, n, "chatd_stream_resumes_total")) {
            if (label_is(line, n, "result=\"resumed\""))
                s->resumes_resumed += v;
            else if (label_is(line, n, "result=\"reset\""))
                s->resumes_reset += v;
            s->ok = 1;
        } else if (name_is(line, n, "chatd_stream_gap_fills_total")) {
            s->gap_fills += v;
            s->ok = 1;
        } else if (name_is(line, n, "chatd_stream_events_total")) {
            s->stream_events += v;
            s->ok = 1;
        } else if (name_is(line, n, "chatd_db_tx_queue_wait_seconds_bucket")) {
            double le = label_le(line, n);
            if (isnan(le))
                continue;
            int i;
            for (i = 0; i < s->nle && s->le[i] != le; i++)
                ;
            if (i == s->nle) {
                if (s->nle == CL_MAX_LE)
                    continue;
                /* keep sorted by le */
                int j = s->nle++;
                while (j > 0 && s->le[j - 1] > le) {
                    s->le[j] = s->le[j - 1];
                    s->cum[j] = s->cum[j - 1];
                    j--;
                }
                s->le[j] = le;
                s->cum[j] = 0;
                i = j;
            }
            s->cum[i] += v;
            s->ok = 1;
        }
    }
}

double cl_scrape_wait_quantile(const cl_scrape_t *a, const cl_scrape_t *b, double q)
{
    if (!b->nle)
        return -1;
    double d[CL_MAX_LE] = {0};
    for (int i = 0; i < b->nle; i++) {
        double base = 0;
        for (int j = 0; a && j < a->nle; j++)
            if (a->le[j] == b->le[i])
                base = a->cum[j];
        d[i] = b->cum[i] - base;
    }
    double total = d[b->nle - 1];
    if (total <= 0)
        return -1;
    double rank = q * total, prev_le = 0, prev = 0;
    for (int i = 0; i < b->nle; i++) {
        if (d[i] >= rank) {
            if (isinf(b->le[i]))
                return prev_le; /* beyond the last finite bound: report that bound */
            double in = d[i] - prev;
            double frac = in > 0 ? (rank - prev) / in : 1.0;
            return prev_le + (b->le[i] - prev_le) * frac;
        }
        prev = d[i];
        prev_le = isinf(b->le[i]) ? prev_le : b->le[i];
    }
    return prev_le;
}
