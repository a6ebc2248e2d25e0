/*
 * The realtime stage's set-up over chatd's REST API, before any socket
 * opens: users signed up (when no seed file gives them) and the
 * conversations of the shape, each created by its first member with the
 * others listed. Pipelined batches over a few blocking connections in
 * threads; bounded by a deadline.
 */
#ifndef CHATLOAD_RT_SETUP_H
#define CHATLOAD_RT_SETUP_H

#include "chatload.h"
#include "rt_shape.h"

#include <stdint.h>

/** Signs up n users named rt<tag>-u<i> into users[0..n) (ids and tokens,
 *  the tokens strdup'ed). 0, or -1 (message on stderr) on any non-2xx
 *  answer, transport error or when timeout_s passes. */
int cl_rt_signup(const cl_url_t *u, int n, uint32_t tag, int parallel, double timeout_s,
                 cl_user_t *users);

/** Creates every conversation of sh as its first member, filling
 *  sh->conv_id. 0, or -1 (message on stderr) as above. */
int cl_rt_create_convs(const cl_url_t *u, const cl_user_t *users, cl_rt_shape_t *sh, uint32_t tag,
                       int parallel, double timeout_s);

#endif
