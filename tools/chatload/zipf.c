/*
 * xoshiro256** generator and a table-driven Zipf sampler; see zipf.h.
 */
#include "zipf.h"

#include <math.h>
#include <stdlib.h>

static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void cl_rng_init(cl_rng_t *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix(&seed);
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t cl_rng_next(cl_rng_t *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double cl_rng_double(cl_rng_t *r)
{
    return (double)(cl_rng_next(r) >> 11) * 0x1.0p-53;
}

uint64_t cl_rng_below(cl_rng_t *r, uint64_t n)
{
    return (uint64_t)(cl_rng_double(r) * (double)n) % n;
}

int cl_zipf_init(cl_zipf_t *z, size_t n, double s)
{
    z->cdf = NULL;
    if (n < 1 || !(s >= 0.0))
        return -1;
    z->cdf = malloc(n * sizeof *z->cdf);
    if (!z->cdf)
        abort();
    z->n = n;
    z->s = s;
    double acc = 0;
    for (size_t k = 0; k < n; k++) {
        acc += pow((double)(k + 1), -s);
        z->cdf[k] = acc;
    }
    for (size_t k = 0; k < n; k++)
        z->cdf[k] /= acc;
    z->cdf[n - 1] = 1.0;
    return 0;
}

void cl_zipf_dispose(cl_zipf_t *z)
{
    free(z->cdf);
    z->cdf = NULL;
}

size_t cl_zipf_sample(const cl_zipf_t *z, cl_rng_t *r)
{
    double u = cl_rng_double(r);
    size_t lo = 0, hi = z->n - 1;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (z->cdf[mid] > u)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

double cl_zipf_prob(const cl_zipf_t *z, size_t k)
{
    return k == 0 ? z->cdf[0] : z->cdf[k] - z->cdf[k - 1];
}
