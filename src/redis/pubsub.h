/*
 * A Redis pub/sub subscriber on one libuv loop: one plain TCP connection that
 * SUBSCRIBEs to a channel and hands every message to a callback, and
 * reconnects by itself (every 500 ms) while Redis is away. Messages published
 * while it is disconnected are not seen: pub/sub keeps nothing. Separate from
 * redis/client.c because a subscribed connection can carry no other command.
 */
#ifndef CHAT_REDIS_PUBSUB_H
#define CHAT_REDIS_PUBSUB_H

#include "core/alloc.h"

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

typedef struct chat_pubsub chat_pubsub_t;

/** One message of the channel; payload is valid during the call. */
typedef void (*chat_pubsub_message_cb)(const char *payload, size_t len, void *arg);

/**
 * Creates the subscriber and starts connecting in the background. url is
 * redis://host:port[/db] under the rules of redis/url.h (the db does not
 * matter to pub/sub); a host name is looked up again on every connect
 * attempt, on libuv's thread pool, and a failed lookup is retried like a
 * failed connect. Returns NULL with a message in err (may be NULL) for a bad
 * URL. channel is copied.
 */
chat_pubsub_t *chat_pubsub_create(uv_loop_t *loop, const char *url, const char *channel,
                                  chat_pubsub_message_cb cb, void *arg, char *err,
                                  size_t errlen) CHAT_MUSTCHECK;

/** True while the subscription is confirmed by Redis. */
bool chat_pubsub_subscribed(const chat_pubsub_t *ps);

/**
 * Closes the connection and the timer; no message callback runs after this
 * returns; done(arg) (may be NULL) runs once every handle is closed, and the
 * subscriber is freed then.
 */
void chat_pubsub_close(chat_pubsub_t *ps, void (*done)(void *arg), void *arg);

#endif
