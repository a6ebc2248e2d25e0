/*
 * A worker's realtime stream: what chat/ and api/ call. It puts the worker's
 * part of the process hub (hub.h: every worker of this process) and its
 * fanout (fanout.h: every other instance, through Redis) behind one
 * publish and one subscribe. It carries frames for users, not messages.
 *
 * Delivery is at most once while a socket is connected: a frame is delivered
 * within the process straight away (never through Redis, so never twice) and
 * published to the other instances, which drop frames of their own origin.
 * Frames published while an instance's subscription is down are lost for it;
 * a client that reconnects reads the history to catch up.
 */
#ifndef CHAT_REALTIME_STREAM_H
#define CHAT_REALTIME_STREAM_H

#include "core/alloc.h"
#include "realtime/fanout.h"
#include "realtime/hub.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct chat_stream chat_stream_t;
/** A subscriber of the stream: a socket of a user. */
typedef chat_hub_sub_t chat_stream_sub_t;
/** Takes one frame for a subscriber; the bytes are valid during the call. */
typedef chat_hub_deliver_cb chat_stream_deliver_cb;

typedef struct chat_stream_config {
    chat_hub_t *hub; /* the process's hub, from chat_hub_create */
    int index;       /* this worker's index in the hub */
    /** NULL (cache disabled): delivery stays within the process. Copied. */
    const char *redis_url;
    /** This instance on Redis (chat_fanout_origin_new), the same on every worker. Copied. */
    const char *origin;
    /** Deadline of a PUBLISH in ms. */
    int cmd_timeout_ms;
} chat_stream_config_t;

/**
 * On the worker's thread: creates its stream on loop and joins the hub;
 * with a redis_url, frames are also published to and received from
 * CHAT_FANOUT_CHANNEL (reconnecting by itself). Free with chat_stream_close.
 */
chat_stream_t *chat_stream_create(uv_loop_t *loop, const chat_stream_config_t *cfg) CHAT_MUSTCHECK;

/**
 * Leaves the hub (frames for this worker are dropped from then on) and closes
 * the Redis connections; done(arg) runs from the loop once every handle is
 * closed, and the stream is freed then. Every subscriber must be gone.
 */
void chat_stream_close(chat_stream_t *s, void (*done)(void *arg), void *arg);

/**
 * Registers a socket of user_id: cb(frame, len, ud) on this worker's loop
 * for each frame for that user, from this process or another instance.
 * The subscriber is the stream's until chat_stream_unsubscribe.
 */
chat_stream_sub_t *chat_stream_subscribe(chat_stream_t *s, int64_t user_id,
                                         chat_stream_deliver_cb cb, void *ud);
/** Removes and frees a subscriber: no callback after this. */
void chat_stream_unsubscribe(chat_stream_t *s, chat_stream_sub_t *sub);

/**
 * After a committed send: hands frame (bytes, copied) to the sockets of
 * members (n user ids) on every worker of this process, and publishes it to
 * the other instances when Redis is usable. s may be NULL (no realtime, e.g.
 * in unit tests): nothing happens.
 */
void chat_stream_publish(chat_stream_t *s, const int64_t *members, size_t n, const char *frame,
                         size_t len);

#endif
