/*
 * The shape of a seed data set (who is in which conversation, where each
 * message goes), drawn the same way by both seeders so that one --seed gives
 * one shape, and the COPY seeder that writes it straight into PostgreSQL.
 */
#ifndef CHATLOAD_SEED_H
#define CHATLOAD_SEED_H

#include "chatload.h"
#include "zipf.h"

/** Draws the members of one conversation: 1..max_members distinct user
 *  indices (at most nusers), the first one the creator. Allocates
 *  cv->members (the caller frees it). */
void cl_seed_draw_members(cl_rng_t *rng, long nusers, long max_members, cl_conv_t *cv);

/** Draws, in order, the conversation (Zipf over convs) and the sender (a
 *  random member) of each of nmsgs messages into conv[] and sender[]. */
void cl_seed_draw_messages(cl_rng_t *rng, const cl_zipf_t *z, const cl_conv_t *convs, long nmsgs,
                           int *conv, int *sender);

typedef struct {
    const char *db_url; /* libpq URL or conninfo; loopback or a unix socket only */
    const char *out;    /* seed.json */
    long nusers, nconvs, nmsgs, members;
    double zipf_s;
    unsigned long long seed;
} cl_copy_opts_t;

/** `chatload seed --copy`: the data set written with COPY FROM STDIN in one
 *  transaction, then VACUUM ANALYZE. 0, 1 (failure, message on stderr) or 2
 *  (refused target). */
int cl_seed_copy(const cl_copy_opts_t *o);

/** 0 when every host of the libpq connection string is loopback (127.0.0.0/8,
 *  ::1, localhost) or a unix-socket directory; -1 with a message in err. */
int cl_db_url_check(const char *db_url, char *err, size_t errlen);

#endif
