/*
 * Log-bucketed latency histogram; see hist.h for the bucket layout.
 */
#include "hist.h"

#include <string.h>

void cl_hist_init(cl_hist_t *h)
{
    memset(h, 0, sizeof *h);
    h->min = UINT64_MAX;
}

int cl_hist_index(uint64_t v)
{
    if (v < CL_HIST_LINEAR)
        return (int)v;
    int msb = 63 - __builtin_clzll(v); /* >= 8 */
    int shift = msb - 7;               /* v >> shift in [128, 255] */
    int octave = shift - 1;            /* 0 for [256, 511] */
    if (octave >= CL_HIST_OCTAVES)
        return CL_HIST_BUCKETS - 1;
    return CL_HIST_LINEAR + octave * CL_HIST_SUB + (int)((v >> shift) - CL_HIST_SUB);
}

uint64_t cl_hist_lowest(int idx)
{
    if (idx < CL_HIST_LINEAR)
        return (uint64_t)idx;
    int k = idx - CL_HIST_LINEAR;
    int shift = k / CL_HIST_SUB + 1;
    return (uint64_t)(CL_HIST_SUB + k % CL_HIST_SUB) << shift;
}

uint64_t cl_hist_highest(int idx)
{
    if (idx < CL_HIST_LINEAR)
        return (uint64_t)idx;
    int shift = (idx - CL_HIST_LINEAR) / CL_HIST_SUB + 1;
    return cl_hist_lowest(idx) + ((uint64_t)1 << shift) - 1;
}

void cl_hist_record(cl_hist_t *h, uint64_t v)
{
    h->buckets[cl_hist_index(v)]++;
    h->count++;
    h->sum += (double)v;
    if (v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
}

void cl_hist_merge(cl_hist_t *dst, const cl_hist_t *src)
{
    if (!src->count)
        return;
    for (int i = 0; i < CL_HIST_BUCKETS; i++)
        dst->buckets[i] += src->buckets[i];
    dst->count += src->count;
    dst->sum += src->sum;
    if (src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
}

uint64_t cl_hist_quantile(const cl_hist_t *h, double q)
{
    if (!h->count)
        return 0;
    if (q >= 1.0)
        return h->max;
    if (q <= 0.0)
        return h->min;
    uint64_t rank = (uint64_t)(q * (double)h->count + 0.5);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (int i = 0; i < CL_HIST_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen >= rank) {
            uint64_t lo = cl_hist_lowest(i), hi = cl_hist_highest(i);
            uint64_t mid = lo + (hi - lo) / 2;
            if (mid > h->max)
                mid = h->max;
            if (mid < h->min)
                mid = h->min;
            return mid;
        }
    }
    return h->max;
}

double cl_hist_mean(const cl_hist_t *h)
{
    return h->count ? h->sum / (double)h->count : 0.0;
}
