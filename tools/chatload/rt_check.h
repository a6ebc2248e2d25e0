/*
 * The delivery check of one socket for one conversation: every event frame
 * carries the conversation's rev, and on one connection (and across a
 * resume) the revs must come as previous + 1. The tracker remembers the
 * highest rev seen and which of the revs just below it arrived, so that it
 * tells a gap (a jump ahead) from a late frame (one of a gap, arriving
 * after) and from a repeat.
 */
#ifndef CHATLOAD_RT_CHECK_H
#define CHATLOAD_RT_CHECK_H

#include <stdint.h>

/* Revs below the highest one that the tracker still tells apart. */
#define CL_REV_WINDOW 256

typedef struct {
    int64_t last;                      /* highest rev seen (the position) */
    uint64_t seen[CL_REV_WINDOW / 64]; /* bit i: rev last - i arrived */
} cl_rev_track_t;

typedef enum {
    CL_REV_NEXT,  /* last + 1: in order */
    CL_REV_GAP,   /* above last + 1: revs were skipped (they may still come: late) */
    CL_REV_LATE,  /* below last, inside the window, not seen before: out of order */
    CL_REV_DUP,   /* seen before (or at or below the starting position) */
    CL_REV_STALE, /* further below last than the window: out of order or repeated */
} cl_rev_result_t;

/** Starts at position pos: every rev up to pos counts as held. */
void cl_rev_track_init(cl_rev_track_t *t, int64_t pos);

/**
 * Records rev. *skipped gets the number of revs jumped over by a GAP, else
 * 0. NEXT, GAP and LATE are first arrivals; DUP and STALE are not counted
 * as arrivals.
 */
cl_rev_result_t cl_rev_track_see(cl_rev_track_t *t, int64_t rev, int64_t *skipped);

/**
 * A reset frame: the client reloads the conversation and goes on from rev.
 * Returns the revs above the old position that it will not receive as
 * frames (0 when rev is not above it); the position becomes max(last, rev).
 */
int64_t cl_rev_track_reset(cl_rev_track_t *t, int64_t rev);

/** Counts of what a set of trackers saw. */
typedef struct {
    uint64_t in_order, gaps, gap_revs, late, dups, stale;
} cl_rev_counts_t;

/** Adds one result to c (skipped as returned by cl_rev_track_see). */
void cl_rev_counts_add(cl_rev_counts_t *c, cl_rev_result_t r, int64_t skipped);

#endif
