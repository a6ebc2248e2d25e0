/*
 * One worker: a thread with its own libuv loop, HTTP listener (SO_REUSEPORT),
 * database path, cache, realtime stream, rate limiter and API context.
 * main.c starts one per core and stops them; this file owns a worker's
 * wiring and the order in which its parts close (HTTP, rate limiter, stream,
 * cache, database, loop).
 */
#ifndef CHAT_WORKER_H
#define CHAT_WORKER_H

#include "api/ratelimit.h"
#include "cache/shared.h"
#include "core/config.h"
#include "realtime/fanout.h"
#include "realtime/hub.h"

#include <stdatomic.h>

/** What every worker of the process shares; created by main.c before the workers. */
typedef struct chat_shared {
    const chat_config_t *cfg;
    int nworkers;
    _Atomic int open_connections;  /* HTTP and WebSocket connections of all workers */
    chat_hub_t *hub;               /* realtime frames between the workers */
    chat_cache_shared_t *cache;    /* the cache's bypass switch, freshness state and metrics */
    chat_ratelimit_shared_t *rate; /* the rate limits, their local table and metrics */
    _Atomic size_t unsent_bytes;   /* HTTP answers built and not yet written, all workers */
    /** This instance on Redis pub/sub (fanout.h), the same on every worker. */
    char origin[CHAT_RT_ORIGIN_LEN];
    /** Runs on the worker's thread when its loop has ended (wakes main). */
    void (*on_worker_exit)(void *arg);
    void *exit_arg;
} chat_shared_t;

typedef struct chat_worker chat_worker_t;

/**
 * Starts worker index on its own thread and waits until its listener is bound
 * (or failed). Returns the worker; *bind_error is 0 or the libuv error of the
 * bind, in which case the worker is already stopping by itself.
 */
chat_worker_t *chat_worker_start(chat_shared_t *sh, int index, int *bind_error);

/** From any thread: starts the graceful stop (safe to call more than once). */
void chat_worker_stop(chat_worker_t *w);

/** Waits for the worker's thread to end and frees the worker. */
void chat_worker_join(chat_worker_t *w);

#endif
