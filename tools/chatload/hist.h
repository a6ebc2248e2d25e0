/*
 * Log-bucketed latency histogram (HdrHistogram-like): exact below 256,
 * then 128 linear sub-buckets per power of two, so any recorded value is
 * reported within 1/256 (< 0.4 %) of itself. Histograms add up with merge.
 */
#ifndef CHATLOAD_HIST_H
#define CHATLOAD_HIST_H

#include <stdint.h>

#define CL_HIST_SUB 128    /* sub-buckets per octave */
#define CL_HIST_LINEAR 256 /* exact values below this */
#define CL_HIST_OCTAVES 48 /* values up to ~2^55 */
#define CL_HIST_BUCKETS (CL_HIST_LINEAR + CL_HIST_OCTAVES * CL_HIST_SUB)

typedef struct {
    uint64_t count;
    uint64_t min, max;
    double sum;
    uint64_t buckets[CL_HIST_BUCKETS];
} cl_hist_t;

/** Empties h. */
void cl_hist_init(cl_hist_t *h);
/** Records one value (any unit; chatload uses microseconds). */
void cl_hist_record(cl_hist_t *h, uint64_t v);
/** Adds every value of src into dst. */
void cl_hist_merge(cl_hist_t *dst, const cl_hist_t *src);
/** The value at quantile q in [0,1] (q=1 gives max); 0 when empty. */
uint64_t cl_hist_quantile(const cl_hist_t *h, double q);
/** Mean of the recorded values; 0 when empty. */
double cl_hist_mean(const cl_hist_t *h);

/* exposed for tests */
int cl_hist_index(uint64_t v);
uint64_t cl_hist_lowest(int idx);
uint64_t cl_hist_highest(int idx);

#endif
