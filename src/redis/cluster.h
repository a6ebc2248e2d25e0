/*
 * Redis Cluster routing for one libuv loop: the slot map (CLUSTER SLOTS),
 * one redis/client.c connection per node (so each node has its own deadlines
 * and circuit breaker), each command sent to the master of its key's slot,
 * MOVED and ASK followed, and the map read again after a redirect, a lost
 * node or a failover. Used through redis/client.h: a client created with a
 * redis+cluster:// URL is one of these.
 */
#ifndef CHAT_REDIS_CLUSTER_H
#define CHAT_REDIS_CLUSTER_H

#include "core/alloc.h"
#include "redis/client.h"

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

typedef struct chat_redis_cluster chat_redis_cluster_t;

/** Most redirects (MOVED or ASK) one command follows before its error reply is its answer. */
#define CHAT_REDIS_CLUSTER_MAX_REDIRECTS 5

/** How often the map is read while nothing asks for it, in ms. */
#define CHAT_REDIS_CLUSTER_REFRESH_MS 5000

/**
 * Creates the router: a client for each node of cfg->url
 * (redis+cluster://host:port[,...]), and the map read from the first that
 * answers; then a client for every node the map names, masters and replicas
 * (a replica's connection is ready when it takes over). cfg's other fields
 * apply to every node's client. NULL for a bad URL, with a message in err.
 */
chat_redis_cluster_t *chat_redis_cluster_create(uv_loop_t *loop, const chat_redis_config_t *cfg,
                                                char *err, size_t errlen) CHAT_MUSTCHECK;

/**
 * chat_redis_command_tracked for the cluster: the key (argv[1], or the first
 * key of EVAL/EVALSHA/FCALL; none for PING, INFO, SCAN, CLUSTER, SCRIPT,
 * TIME) picks the slot, the slot its master; a command without a key goes to
 * any master that is up. CHAT_EDOWN when the map is not known yet or the
 * node's client refuses (its circuit is open): nothing was sent. A MOVED
 * reply moves the slot in the map and sends the command again to the node
 * named; an ASK reply sends ASKING and the command to the node named, once.
 * The callback sees the final outcome only.
 */
int chat_redis_cluster_command(chat_redis_cluster_t *c, chat_redis_cb cb, chat_redis_late_cb late,
                               void *arg, int argc, const char **argv, const size_t *argvlen);

/** Masters in the current map (0 while it is unknown). */
size_t chat_redis_cluster_masters(const chat_redis_cluster_t *c);

/**
 * A command for the i-th master of the map (in the router's order), not
 * routed by key (SCAN). CHAT_EDOWN when there is no such master or its
 * client refuses.
 */
int chat_redis_cluster_command_master(chat_redis_cluster_t *c, size_t i, chat_redis_cb cb,
                                      void *arg, int argc, const char **argv,
                                      const size_t *argvlen);

/** True when the map is known and at least one master's client is up. */
bool chat_redis_cluster_healthy(const chat_redis_cluster_t *c);

/** True when every slot has a master in the map and every master's client is up. */
bool chat_redis_cluster_all_up(const chat_redis_cluster_t *c);

/** Commands whose callback has not run yet. */
size_t chat_redis_cluster_pending(const chat_redis_cluster_t *c);

/**
 * The master of key's slot as "host:port" (valid until the map changes),
 * or NULL when the map is not known or names no master for the slot.
 */
const char *chat_redis_cluster_master_of(const chat_redis_cluster_t *c, const char *key,
                                         size_t len);

/** A number that changes whenever a map read finds a slot on another master
 *  than the last map read said (and when the map is first read); a MOVED
 *  reply moves its slot at once and asks for that read. */
unsigned long chat_redis_cluster_map_gen(const chat_redis_cluster_t *c);

/** Asks for the map to be read again soon (at most every 100 ms). */
void chat_redis_cluster_refresh(chat_redis_cluster_t *c);

/**
 * Closes every node's client (their pending callbacks run with
 * CHAT_ECLOSED) and the timer; cb(arg) runs once all are closed, and the
 * router is freed then. Call once.
 */
void chat_redis_cluster_close(chat_redis_cluster_t *c, void (*cb)(void *arg), void *arg);

#endif
