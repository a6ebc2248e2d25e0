/*
 * Realtime fan-out of new messages to the sockets of the members of a
 * conversation, on every worker of this process and, through Redis pub/sub,
 * of every other chatd instance sharing the same Redis. It knows users and
 * frames, not sockets: a subscriber is a callback that takes frame bytes.
 *
 * Delivery is at most once while a socket is connected: a frame is delivered
 * within the process straight away (never through Redis, so never twice) and
 * published to the other instances, which drop frames of their own origin.
 * Frames published while an instance's subscription is down are lost for it;
 * a client that reconnects reads the history to catch up.
 */
#ifndef CHAT_CHAT_STREAM_H
#define CHAT_CHAT_STREAM_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/** The process-wide part: one mailbox per worker and the instance's origin id. */
typedef struct chat_stream_hub chat_stream_hub_t;
/** The part of one worker: its subscribers, mailbox handle and Redis connections. */
typedef struct chat_stream chat_stream_t;
typedef struct chat_stream_sub chat_stream_sub_t;

/** Takes one frame for a subscriber; the bytes are valid during the call. */
typedef void (*chat_stream_deliver_cb)(const char *frame, size_t len, void *ud);

/** Redis pub/sub channel shared by every instance. */
#define CHAT_STREAM_CHANNEL "chatd:stream"

/** Creates the hub for nworkers workers (before they start). */
chat_stream_hub_t *chat_stream_hub_create(int nworkers);
/** Frees the hub once every worker's stream is closed. */
void chat_stream_hub_destroy(chat_stream_hub_t *hub);

/**
 * Creates worker index's stream on loop and joins the hub. redis_url NULL
 * (cache disabled) keeps delivery within the process; else frames are
 * published to and received from CHAT_STREAM_CHANNEL, reconnecting by
 * itself. cmd_timeout_ms is the deadline of a PUBLISH.
 */
chat_stream_t *chat_stream_create(chat_stream_hub_t *hub, int index, uv_loop_t *loop,
                                  const char *redis_url, int cmd_timeout_ms);

/**
 * Leaves the hub (frames for this worker are dropped from then on) and closes
 * the Redis connections; done(arg) runs once every handle is closed, and the
 * stream is freed then. Every subscriber must be gone.
 */
void chat_stream_close(chat_stream_t *s, void (*done)(void *arg), void *arg);

/** Registers a socket of user_id: cb(frame, len, ud) for each frame for that user. */
chat_stream_sub_t *chat_stream_subscribe(chat_stream_t *s, int64_t user_id,
                                         chat_stream_deliver_cb cb, void *ud);
/** Removes a subscriber (no callback after this); sub is freed. */
void chat_stream_unsubscribe(chat_stream_t *s, chat_stream_sub_t *sub);

/**
 * After a committed send: builds {"type":"message","message":msg} and
 * delivers it to the sockets of members (user ids) on every worker of this
 * process, and publishes it to the other instances. s may be NULL (no
 * realtime, e.g. in unit tests): nothing happens.
 */
void chat_stream_publish(chat_stream_t *s, const int64_t *members, size_t n, const char *msg,
                         size_t len);

#endif
