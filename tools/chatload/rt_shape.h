/*
 * Who is in which conversation in the realtime stage: Zipf-sized
 * conversations over the stage's users (a few as large as allowed, many of
 * 2-10 members), every user in at least one, and the draw of each send (a
 * random membership: the conversation in proportion to its size, the sender
 * one of its members).
 */
#ifndef CHATLOAD_RT_SHAPE_H
#define CHATLOAD_RT_SHAPE_H

#include "zipf.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int max_members; /* size of the largest conversations (capped at the users) */
    int min_members; /* smallest size (2, or 1 when there is one user) */
    int big;         /* conversations at max_members */
    double exponent; /* size of rank k >= big: max * (big / (k + 1))^exponent */
    double per_user; /* memberships per user on average: conversations are added until
                        their sizes add up to per_user * users */
    int max_convs;   /* upper bound on the number of conversations */
} cl_rt_shape_opts_t;

/** The defaults for n users: the largest conversations have min(1000, n/10)
 *  members (at least 2), 3 of them, exponent 1, 3 memberships per user, at
 *  most 100,000 conversations. */
void cl_rt_shape_defaults(cl_rt_shape_opts_t *o, int nusers);

/** Size of the conversation of rank k (0 the largest): never below
 *  min_members, never above max_members, non-increasing in k. */
int cl_rt_size_of_rank(const cl_rt_shape_opts_t *o, int k);

typedef struct {
    int nusers, nconvs;
    long nmemberships;
    int *size;        /* members of each conversation */
    long *off;        /* members of conversation c: member[off[c] .. off[c] + size[c]) */
    int *member;      /* user indices; the first of each conversation is its creator */
    int *mconv;       /* the conversation of each membership (parallel to member) */
    long *uoff;       /* conversations of user u: uconv[uoff[u] .. uoff[u + 1]) */
    int *uconv;       /* conversation indices, ascending for each user */
    long *upos;       /* for each entry of uconv, its index in member[] */
    int64_t *conv_id; /* chatd's id of each conversation, 0 until created */
} cl_rt_shape_t;

/**
 * Draws the shape for nusers users from rng: conversation sizes by rank
 * until they add up to per_user * nusers memberships (or max_convs), then
 * the members of each, taken in turn from shuffled passes over the users so
 * that every user is in at least one conversation when there are at least
 * as many memberships as users, and no conversation holds a user twice.
 * 0, or -1 for bad options (nothing allocated).
 */
int cl_rt_shape_build(cl_rt_shape_t *sh, int nusers, const cl_rt_shape_opts_t *o, cl_rng_t *rng);
void cl_rt_shape_dispose(cl_rt_shape_t *sh);

/** Frames a send makes on average when sends are drawn by cl_rt_shape_draw_send:
 *  sum of size^2 over sum of size. */
double cl_rt_shape_mean_fanout(const cl_rt_shape_t *sh);

/** One send: a uniformly drawn membership, its conversation in *conv and its
 *  member, the sender, in *user. */
void cl_rt_shape_draw_send(const cl_rt_shape_t *sh, cl_rng_t *rng, int *conv, int *user);

/** Index of conversation conv in the list of user u (uconv), or -1 when u is
 *  not a member. */
long cl_rt_shape_find(const cl_rt_shape_t *sh, int u, int conv);

#endif
