/*
 * Per-conversation rev tracking of one socket; see rt_check.h.
 */
#include "rt_check.h"

#include <string.h>

#define WORDS (CL_REV_WINDOW / 64)

void cl_rev_track_init(cl_rev_track_t *t, int64_t pos)
{
    t->last = pos;
    memset(t->seen, 0xff, sizeof t->seen);
}

/* Moves the window up by n revs: bit i becomes bit i + n; the new bits are 0. */
static void shift(cl_rev_track_t *t, int64_t n)
{
    if (n >= CL_REV_WINDOW) {
        memset(t->seen, 0, sizeof t->seen);
        return;
    }
    int words = (int)(n / 64), bits = (int)(n % 64);
    for (int w = WORDS - 1; w >= 0; w--) {
        int from = w - words;
        uint64_t v = from >= 0 ? t->seen[from] << bits : 0;
        if (bits && from - 1 >= 0)
            v |= t->seen[from - 1] >> (64 - bits);
        t->seen[w] = v;
    }
}

static int bit(const cl_rev_track_t *t, int64_t i)
{
    return (int)((t->seen[i / 64] >> (i % 64)) & 1);
}

static void set_bit(cl_rev_track_t *t, int64_t i)
{
    t->seen[i / 64] |= (uint64_t)1 << (i % 64);
}

cl_rev_result_t cl_rev_track_see(cl_rev_track_t *t, int64_t rev, int64_t *skipped)
{
    *skipped = 0;
    if (rev > t->last) {
        int64_t n = rev - t->last;
        shift(t, n);
        set_bit(t, 0);
        t->last = rev;
        if (n == 1)
            return CL_REV_NEXT;
        *skipped = n - 1;
        return CL_REV_GAP;
    }
    int64_t i = t->last - rev;
    if (i >= CL_REV_WINDOW)
        return CL_REV_STALE;
    if (bit(t, i))
        return CL_REV_DUP;
    set_bit(t, i);
    return CL_REV_LATE;
}

int64_t cl_rev_track_reset(cl_rev_track_t *t, int64_t rev)
{
    if (rev <= t->last)
        return 0;
    int64_t skipped = rev - t->last;
    cl_rev_track_init(t, rev);
    return skipped;
}

void cl_rev_counts_add(cl_rev_counts_t *c, cl_rev_result_t r, int64_t skipped)
{
    switch (r) {
    case CL_REV_NEXT:
        c->in_order++;
        break;
    case CL_REV_GAP:
        c->gaps++;
        c->gap_revs += (uint64_t)skipped;
        break;
    case CL_REV_LATE:
        c->late++;
        break;
    case CL_REV_DUP:
        c->dups++;
        break;
    case CL_REV_STALE:
        c->stale++;
        break;
    }
}
