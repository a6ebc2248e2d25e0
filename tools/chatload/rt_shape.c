/*
 * The conversation shape of the realtime stage; see rt_shape.h.
 */
#include "rt_shape.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p)
        abort();
    return p;
}

void cl_rt_shape_defaults(cl_rt_shape_opts_t *o, int nusers)
{
    int max = nusers / 10;
    if (max > 1000)
        max = 1000;
    if (max < 2)
        max = 2;
    o->max_members = max;
    o->min_members = 2;
    o->big = 3;
    o->exponent = 1.0;
    o->per_user = 3.0;
    o->max_convs = 100000;
}

int cl_rt_size_of_rank(const cl_rt_shape_opts_t *o, int k)
{
    double s =
        k < o->big ? o->max_members : o->max_members * pow((double)o->big / (k + 1), o->exponent);
    int n = (int)s;
    if (n > o->max_members)
        n = o->max_members;
    if (n < o->min_members)
        n = o->min_members;
    return n;
}

int cl_rt_shape_build(cl_rt_shape_t *sh, int nusers, const cl_rt_shape_opts_t *opts, cl_rng_t *rng)
{
    memset(sh, 0, sizeof *sh);
    if (nusers < 1 || opts->max_members < 1 || opts->big < 0 || !(opts->exponent >= 0) ||
        !(opts->per_user > 0) || opts->max_convs < 1)
        return -1;
    cl_rt_shape_opts_t o = *opts;
    if (o.max_members > nusers)
        o.max_members = nusers;
    if (o.min_members > o.max_members)
        o.min_members = o.max_members;
    if (o.min_members < 1)
        o.min_members = 1;
    /* sizes by rank, until the memberships are there */
    double want = o.per_user * nusers;
    if (want < nusers)
        want = nusers;
    int cap = 1024;
    sh->size = xcalloc((size_t)cap, sizeof *sh->size);
    long total = 0;
    while (total < want && sh->nconvs < o.max_convs) {
        if (sh->nconvs == cap) {
            cap *= 2;
            sh->size = realloc(sh->size, (size_t)cap * sizeof *sh->size);
            if (!sh->size)
                abort();
        }
        int s = cl_rt_size_of_rank(&o, sh->nconvs);
        sh->size[sh->nconvs++] = s;
        total += s;
    }
    sh->nusers = nusers;
    sh->nmemberships = total;
    sh->off = xcalloc((size_t)sh->nconvs + 1, sizeof *sh->off);
    sh->member = xcalloc((size_t)total, sizeof *sh->member);
    sh->mconv = xcalloc((size_t)total, sizeof *sh->mconv);
    sh->conv_id = xcalloc((size_t)sh->nconvs, sizeof *sh->conv_id);

    /* members: in turn from shuffled passes over all users, skipping one
     * already in the conversation (possible only across the end of a pass) */
    int *perm = xcalloc((size_t)nusers, sizeof *perm);
    int *stamp = xcalloc((size_t)nusers, sizeof *stamp); /* conversation + 1 that holds u */
    for (int i = 0; i < nusers; i++)
        perm[i] = i;
    int pos = nusers; /* forces a shuffle first */
    long m = 0;
    for (int c = 0; c < sh->nconvs; c++) {
        sh->off[c] = m;
        for (int j = 0; j < sh->size[c]; j++) {
            int u;
            do {
                if (pos == nusers) {
                    for (int i = nusers - 1; i > 0; i--) {
                        int r = (int)cl_rng_below(rng, (uint64_t)i + 1), t = perm[i];
                        perm[i] = perm[r];
                        perm[r] = t;
                    }
                    pos = 0;
                }
                u = perm[pos++];
            } while (stamp[u] == c + 1);
            stamp[u] = c + 1;
            sh->member[m] = u;
            sh->mconv[m] = c;
            m++;
        }
    }
    sh->off[sh->nconvs] = m;
    free(perm);
    free(stamp);

    /* the other direction: each user's conversations, ascending */
    sh->uoff = xcalloc((size_t)nusers + 1, sizeof *sh->uoff);
    sh->uconv = xcalloc((size_t)total, sizeof *sh->uconv);
    sh->upos = xcalloc((size_t)total, sizeof *sh->upos);
    for (long i = 0; i < total; i++)
        sh->uoff[sh->member[i] + 1]++;
    for (int u = 0; u < nusers; u++)
        sh->uoff[u + 1] += sh->uoff[u];
    long *fill = xcalloc((size_t)nusers, sizeof *fill);
    for (long i = 0; i < total; i++) { /* memberships are in conversation order */
        int u = sh->member[i];
        long k = sh->uoff[u] + fill[u]++;
        sh->uconv[k] = sh->mconv[i];
        sh->upos[k] = i;
    }
    free(fill);
    return 0;
}

void cl_rt_shape_dispose(cl_rt_shape_t *sh)
{
    free(sh->size);
    free(sh->off);
    free(sh->member);
    free(sh->mconv);
    free(sh->uoff);
    free(sh->uconv);
    free(sh->upos);
    free(sh->conv_id);
    memset(sh, 0, sizeof *sh);
}

double cl_rt_shape_mean_fanout(const cl_rt_shape_t *sh)
{
    double sq = 0, sum = 0;
    for (int c = 0; c < sh->nconvs; c++) {
        sq += (double)sh->size[c] * sh->size[c];
        sum += sh->size[c];
    }
    return sum > 0 ? sq / sum : 0;
}

void cl_rt_shape_draw_send(const cl_rt_shape_t *sh, cl_rng_t *rng, int *conv, int *user)
{
    long i = (long)cl_rng_below(rng, (uint64_t)sh->nmemberships);
    *conv = sh->mconv[i];
    *user = sh->member[i];
}

long cl_rt_shape_find(const cl_rt_shape_t *sh, int u, int conv)
{
    long lo = sh->uoff[u], hi = sh->uoff[u + 1];
    while (lo < hi) {
        long mid = lo + (hi - lo) / 2;
        if (sh->uconv[mid] < conv)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < sh->uoff[u + 1] && sh->uconv[lo] == conv ? lo : -1;
}
