/*
 * Seeded pseudo-random numbers (xoshiro256**) and a Zipf sampler over ranks
 * 0..n-1 with P(k) proportional to 1/(k+1)^s, by binary search in a CDF table.
 */
#ifndef CHATLOAD_ZIPF_H
#define CHATLOAD_ZIPF_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t s[4];
} cl_rng_t;

/** Seeds r reproducibly from one number. */
void cl_rng_init(cl_rng_t *r, uint64_t seed);
uint64_t cl_rng_next(cl_rng_t *r);
/** Uniform double in [0, 1). */
double cl_rng_double(cl_rng_t *r);
/** Uniform integer in [0, n); n > 0. */
uint64_t cl_rng_below(cl_rng_t *r, uint64_t n);

typedef struct {
    size_t n;
    double s;
    double *cdf; /* owned, n entries, last == 1 */
} cl_zipf_t;

/** Builds the table for n >= 1 ranks and exponent s >= 0; 0 or -1 (bad args). */
int cl_zipf_init(cl_zipf_t *z, size_t n, double s);
void cl_zipf_dispose(cl_zipf_t *z);
/** A rank in [0, n), rank 0 the most likely. */
size_t cl_zipf_sample(const cl_zipf_t *z, cl_rng_t *r);
/** Theoretical probability of rank k. */
double cl_zipf_prob(const cl_zipf_t *z, size_t k);

#endif
