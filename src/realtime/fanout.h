/*
 * The realtime fan-out between chatd instances sharing one Redis, by
 * conversation and by user: a conversation's events and typing frames go on
 * its own channel, a user's frames (read, added, removed) on the user's, and
 * a worker subscribes only to the channels of what its sockets follow — so an
 * instance's Redis and CPU cost follows its own users' traffic. Channels are
 * sharded pub/sub (SSUBSCRIBE/SPUBLISH) with a hash tag, so the same names
 * work on a Redis Cluster: "chatd:c:{c:7}" and "chatd:u:{u:3}".
 *
 * Delivery through Redis is at most once; what makes the stream gap-free is
 * above this (stream.c): every event carries its rev, a publisher that could
 * not reach Redis publishes a hint (the last rev) once it can, and every
 * (re)subscription is reported so the receiver can check the database.
 */
#ifndef CHAT_REALTIME_FANOUT_H
#define CHAT_REALTIME_FANOUT_H

#include "core/alloc.h"
#include "realtime/msg.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct chat_fanout chat_fanout_t;

/** What is followed: a conversation's channel or a user's. */
typedef enum chat_fanout_topic { CHAT_TOPIC_CONV = 0, CHAT_TOPIC_USER = 1 } chat_fanout_topic_t;

/** Room for a channel name and its NUL. */
#define CHAT_FANOUT_CHANNEL_LEN 48

/** Writes the channel of (topic, id) into out; returns its length. */
size_t chat_fanout_channel(char out[CHAT_FANOUT_CHANNEL_LEN], int topic, int64_t id);

/**
 * The id of a channel name chat_fanout_channel() writes ("chatd:c:{c:ID}",
 * topic CHAT_TOPIC_CONV, or "chatd:u:{u:ID}"), with its topic in *topic;
 * 0 for any other name.
 */
int64_t chat_fanout_channel_parse(const char *ch, size_t len, int *topic);

typedef struct chat_fanout_handler {
    /** A message of another instance (never this one's); m is valid during the call. */
    void (*message)(const chat_rt_msg_t *m, void *arg);
    /** Redis confirmed the subscription of the channel of (topic, id) (again after a reconnect). */
    void (*subscribed)(int topic, int64_t id, void *arg);
} chat_fanout_handler_t;

typedef struct chat_fanout_config {
    /** redis://host:port[/db] (the db does not matter to pub/sub). Copied. */
    const char *redis_url;
    /** This instance, from chat_fanout_origin_new; the same on every worker. Copied. */
    const char *origin;
    /** Deadline of a SPUBLISH in ms; <= 0 means the client's default. */
    int cmd_timeout_ms;
    /**
     * Fault injection for tests (CHATD_FAULT_DROP_EVENTS): received events
     * whose rev is a multiple of this are dropped as if pub/sub had lost
     * them. 0: none.
     */
    int drop_every;
} chat_fanout_config_t;

/** Writes a new random origin (UUID text) into out; never a space or a newline. */
void chat_fanout_origin_new(char out[CHAT_RT_ORIGIN_LEN]);

/** Registers chatd_stream_pubsub_total{direction} once per process (also without Redis). */
void chat_fanout_metrics_register(void);

/**
 * Creates a worker's fanout on loop and starts connecting (publisher and
 * subscriber, each reconnecting by itself). Never fails: a part whose URL
 * cannot be used is logged (event=stream_redis_disabled) and left out.
 * Free with chat_fanout_close.
 */
chat_fanout_t *chat_fanout_create(uv_loop_t *loop, const chat_fanout_config_t *cfg,
                                  const chat_fanout_handler_t *h, void *arg) CHAT_MUSTCHECK;

/**
 * Starts (watch) or stops (unwatch) receiving the channel of (topic, id).
 * The caller counts its own followers: one watch per (topic, id) at a time.
 * Watched channels are subscribed again after every reconnect.
 */
void chat_fanout_watch(chat_fanout_t *f, int topic, int64_t id);
void chat_fanout_unwatch(chat_fanout_t *f, int topic, int64_t id);

/**
 * SPUBLISHes m on its channel (a conversation's for events and typing, the
 * user's otherwise), at most once. An event that cannot be published now is
 * remembered (its conversation and rev) and a hint follows once Redis is
 * usable again. Returns 0 when the command was queued, CHAT_EDOWN otherwise.
 */
int chat_fanout_publish(chat_fanout_t *f, const chat_rt_msg_t *m);

/** True unless Redis is known to be away: publisher healthy, subscriber usable
 *  (chat_pubsub_usable: connected, or connecting for the first time). */
bool chat_fanout_ready(const chat_fanout_t *f);

/**
 * Closes both connections; no callback runs after this returns. done(arg)
 * (may be NULL) runs once every handle is closed, and the fanout is freed.
 */
void chat_fanout_close(chat_fanout_t *f, void (*done)(void *arg), void *arg);

#endif
