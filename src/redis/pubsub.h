/*
 * A Redis sharded pub/sub subscriber on one libuv loop: one plain TCP
 * connection that SSUBSCRIBEs to the channels its owner asks for, hands every
 * message to a callback, and reconnects by itself (every 500 ms) while Redis
 * is away, asking its owner to subscribe again. Messages published
 * while it is disconnected are not seen: pub/sub keeps nothing. Separate from
 * redis/client.c because a subscribed connection can carry no other command.
 * For a redis+cluster:// URL it is a front for redis/shardsub.c.
 */
#ifndef CHAT_REDIS_PUBSUB_H
#define CHAT_REDIS_PUBSUB_H

#include "core/alloc.h"

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

typedef struct chat_pubsub chat_pubsub_t;

/** What a subscriber tells its owner; every callback runs on the loop. */
typedef struct chat_pubsub_handler {
    /** A message of a subscribed channel; both spans are valid during the call. */
    void (*message)(const char *channel, size_t clen, const char *payload, size_t len, void *arg);
    /**
     * Redis confirmed the subscription of channel: from now on its messages
     * arrive. Runs after every SSUBSCRIBE, so again after each reconnect.
     * May be NULL.
     */
    void (*subscribed)(const char *channel, size_t clen, void *arg);
    /**
     * A new connection is up (the first, or one after an outage): the owner
     * subscribes to every channel it wants again. May be NULL.
     */
    void (*connected)(void *arg);
    /**
     * Redis ended the subscription of channel: after a SUNSUBSCRIBE, or by
     * itself when the channel's slot moved to another node of a cluster.
     * The owner subscribes again when it still wants the channel. May be NULL.
     */
    void (*unsubscribed)(const char *channel, size_t clen, void *arg);
    /** Redis refused a command with an error (e.g. MOVED); may be NULL. */
    void (*error)(const char *msg, size_t len, void *arg);
} chat_pubsub_handler_t;

/**
 * Creates the subscriber and starts connecting in the background. url is
 * redis://host:port[/db] under the rules of redis/url.h (the db does not
 * matter to pub/sub), or redis+cluster://host:port[,...]: then each channel
 * is subscribed on the master of its slot, one connection per such node
 * (redis/shardsub.h), and the connected callback also runs when the slot map
 * changes, so that the owner subscribes again where the channels now live; a host name is looked up
 * again on every connect attempt, on libuv's thread pool, and a failed lookup is retried like a
 * failed connect. Returns NULL with a message in err (may be NULL) for a bad
 * URL. h is copied.
 */
chat_pubsub_t *chat_pubsub_create(uv_loop_t *loop, const char *url, const chat_pubsub_handler_t *h,
                                  void *arg, char *err, size_t errlen) CHAT_MUSTCHECK;

/**
 * True unless Redis is known to be away: the connection is up (its
 * subscriptions may still be on their way) or its first attempt is still
 * under way; false once an attempt failed or the connection was lost, until
 * one connects again. On a cluster: the map is known and no node subscriber
 * holding channels is away. A subscriber that is usable will confirm a
 * subscription soon, so it is worth waiting for.
 */
bool chat_pubsub_usable(const chat_pubsub_t *ps);

/**
 * Sends SSUBSCRIBE channel (sharded pub/sub: the same command on one Redis
 * and on a Redis Cluster) when connected; otherwise does nothing, and the
 * connected callback asks again. Returns true when the command was written.
 */
bool chat_pubsub_subscribe(chat_pubsub_t *ps, const char *channel, size_t clen);

/** Sends SUNSUBSCRIBE channel when connected (a lost connection forgets it anyway). */
void chat_pubsub_unsubscribe(chat_pubsub_t *ps, const char *channel, size_t clen);

/** What one reply of a subscribed connection is (chat_pubsub_reply_parse). */
typedef enum chat_pubsub_reply_kind {
    CHAT_PUBSUB_REPLY_OTHER,        /* anything else: ignored */
    CHAT_PUBSUB_REPLY_MESSAGE,      /* ["smessage", channel, payload] */
    CHAT_PUBSUB_REPLY_SUBSCRIBED,   /* ["ssubscribe", channel, count] */
    CHAT_PUBSUB_REPLY_UNSUBSCRIBED, /* ["sunsubscribe", channel, count]: dropped, e.g. its slot
                                       moved */
} chat_pubsub_reply_kind_t;

typedef struct chat_pubsub_reply {
    int kind;            /* chat_pubsub_reply_kind_t */
    const char *channel; /* MESSAGE, SUBSCRIBED: spans into the reply */
    size_t clen;
    const char *payload; /* MESSAGE */
    size_t len;
} chat_pubsub_reply_t;

struct redisReply;

/**
 * Reads one reply of a subscribed connection, as decoded by hiredis, into
 * *out (spans into r): a message, a confirmed subscription or something
 * else. Pure, for the subscriber and tests/fuzz.
 */
void chat_pubsub_reply_parse(const struct redisReply *r, chat_pubsub_reply_t *out);

/**
 * Closes the connection and the timer; no message callback runs after this
 * returns; done(arg) (may be NULL) runs once every handle is closed, and the
 * subscriber is freed then.
 */
void chat_pubsub_close(chat_pubsub_t *ps, void (*done)(void *arg), void *arg);

#endif
