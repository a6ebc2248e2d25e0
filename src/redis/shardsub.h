/*
 * Sharded pub/sub on a Redis Cluster: each channel is SSUBSCRIBEd on the
 * master that owns its slot, through one subscriber (redis/pubsub.c) per
 * such node, found with the slot map of a redis/cluster.c router. When the
 * map changes (a failover, a migrated slot) the owner is asked to subscribe
 * to its channels again, and they go to their new masters. Used through
 * redis/pubsub.h: a subscriber created with a redis+cluster:// URL is one.
 */
#ifndef CHAT_REDIS_SHARDSUB_H
#define CHAT_REDIS_SHARDSUB_H

#include "core/alloc.h"
#include "redis/pubsub.h"

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

typedef struct chat_shardsub chat_shardsub_t;

/**
 * Creates the cluster subscriber for url (redis+cluster://...). h's
 * callbacks keep the meaning of redis/pubsub.h; connected runs when the map
 * is first known, when it changes, and when a node's subscriber connects
 * (again). NULL with a message in err for a bad URL.
 */
chat_shardsub_t *chat_shardsub_create(uv_loop_t *loop, const char *url,
                                      const chat_pubsub_handler_t *h, void *arg, char *err,
                                      size_t errlen) CHAT_MUSTCHECK;

/** The map is known and no node subscriber holding channels is away (chat_pubsub_usable:
 *  one still making its first connection counts as usable). */
bool chat_shardsub_usable(const chat_shardsub_t *s);

/** SSUBSCRIBE on the channel's master; false when not sent (no map, node not connected yet). */
bool chat_shardsub_subscribe(chat_shardsub_t *s, const char *channel, size_t clen);

/** SUNSUBSCRIBE on the channel's master (when connected). */
void chat_shardsub_unsubscribe(chat_shardsub_t *s, const char *channel, size_t clen);

/** Closes every node's subscriber and the router; done(arg) once all are closed. */
void chat_shardsub_close(chat_shardsub_t *s, void (*done)(void *arg), void *arg);

#endif
