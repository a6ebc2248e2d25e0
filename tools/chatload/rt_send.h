/*
 * The senders of the realtime stage: a few keep-alive HTTP connections on
 * the loop that POST messages in the order they were handed over, one in
 * flight per connection, and report each answer's status. A connection that
 * closes is opened again; a send whose connection closed before any byte of
 * its answer arrived is tried once more (it carries a client_msg_id, so a
 * retry never stores it twice).
 */
#ifndef CHATLOAD_RT_SEND_H
#define CHATLOAD_RT_SEND_H

#include "chatload.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/** The answer to send uid: its HTTP status, 0 for a transport error, a
 *  timeout or a close of the senders. */
typedef void (*cl_rtsend_cb)(uint64_t uid, int status, void *ud);

typedef struct cl_rtsend cl_rtsend_t;

/**
 * Creates nconns connections to u (connection i bound to 127.0.0.(1 + i mod
 * src_addrs) when src_addrs > 0), opened at once; at most queue_cap sends
 * wait for a connection.
 */
cl_rtsend_t *cl_rtsend_create(uv_loop_t *loop, const cl_url_t *u, int nconns, int src_addrs,
                              size_t queue_cap, cl_rtsend_cb cb, void *ud);

/** Queues POST path with the JSON body as the user of token. 0, or -1 when
 *  the queue is full (nothing queued, no callback). */
int cl_rtsend_post(cl_rtsend_t *s, uint64_t uid, const char *path, const char *token,
                   const char *body);

/** Sends queued or in flight. */
size_t cl_rtsend_pending(const cl_rtsend_t *s);
/** Connections open now. */
int cl_rtsend_open(const cl_rtsend_t *s);

/** Closes every connection: each queued or in-flight send is answered with
 *  status 0. The senders are freed once their handles are closed. */
void cl_rtsend_close(cl_rtsend_t *s);

#endif
