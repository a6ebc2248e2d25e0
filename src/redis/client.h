/*
 * Redis client for one libuv loop: a single multiplexed hiredis async
 * connection with a deadline on every command, a circuit breaker that refuses
 * commands at once while Redis is down or wedged, and a background probe that
 * reconnects by itself. A transport: it knows no keys and no caller.
 */
#ifndef CHAT_REDIS_CLIENT_H
#define CHAT_REDIS_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/metrics.h"

struct redisReply;

typedef struct chat_redis chat_redis_t;

typedef struct chat_redis_config {
    /** redis://host:port[/db]; port defaults to 6379, db to 0. Or
     *  redis+cluster://host:port[,host:port...]: a Redis Cluster, reached
     *  through redis/cluster.h behind this same interface. Copied. */
    const char *url;
    /** Deadline of each command in ms; <= 0 means 50. */
    int cmd_timeout_ms;
    /** Deadline of the connect, and again of the handshake (SELECT, PING)
     *  once connected, in ms; <= 0 means 200. */
    int connect_timeout_ms;
    /** The same deadlines until the first handshake has succeeded (a
     *  process starting is busier than one running); <= 0 means
     *  CHAT_REDIS_FIRST_CONNECT_FACTOR times connect_timeout_ms. */
    int first_connect_timeout_ms;
    /** Interval between reconnect probes while down, in ms; <= 0 means 500. */
    int retry_interval_ms;
    /** Most commands outstanding at once (callbacks not yet run and late
     *  replies not yet read); beyond it commands are refused; <= 0 means 20000. */
    int max_pending;
    /** Counted once per command that failed: refused, timed out, error reply
     *  or connection lost (not closed). May be NULL. Not owned. */
    chat_metric_t *errors;
    /** Counted once per reply read after its deadline because the loop was
     *  busy, answered in time all the same. May be NULL. Not owned. */
    chat_metric_t *late_reads;
} chat_redis_config_t;

/*
 * The statuses of a command, from core/error.h:
 *  0 (CHAT_EOK)    the reply.
 *  CHAT_EDOWN      returned by chat_redis_command only: circuit open, not
 *                  connected, too many pending, or closing. Nothing was sent
 *                  and the callback never runs.
 *  CHAT_ETIMEDOUT  the command's deadline passed and its reply was not in the
 *                  socket; a late reply is read and dropped (or passed to the
 *                  late callback).
 *  CHAT_EREPLY     Redis answered with an error reply, passed as the reply.
 *  CHAT_ECLOSED    chat_redis_close was called before the reply arrived.
 *  CHAT_ECONNLOST  the connection was lost (or dropped as wedged) before the
 *                  reply.
 */

/** First connect deadline over the later ones when none is configured. */
#define CHAT_REDIS_FIRST_CONNECT_FACTOR 10

/** Consecutive command timeouts after which the connection is judged wedged,
 *  dropped, and the circuit opened until a probe succeeds. A command whose
 *  reply is still missing this many deadlines after it was sent has the
 *  same effect, even alone. */
#define CHAT_REDIS_MAX_CONSECUTIVE_TIMEOUTS 20

/**
 * Completion of one command. status is one of the statuses above (never
 * CHAT_EDOWN). reply is the reply for 0, the error reply for CHAT_EREPLY,
 * NULL otherwise; it belongs to the client and is
 * valid only during the callback. The callback may issue new commands and may
 * call chat_redis_close.
 */
typedef void (*chat_redis_cb)(chat_err_t status, struct redisReply *reply, void *arg);

/**
 * The real outcome of a command whose callback got CHAT_ETIMEDOUT: 0 or
 * CHAT_EREPLY when its late reply arrived (Redis ran it), CHAT_ECONNLOST or
 * CHAT_ECLOSED when the connection ended first (whether Redis ran it is
 * unknown). May issue commands; must not call chat_redis_close.
 */
typedef void (*chat_redis_late_cb)(chat_err_t status, void *arg);

/**
 * Creates a client on loop and starts connecting in the background. A host
 * name is looked up again on every connect attempt, on libuv's thread pool
 * (redis/url.h), never on the loop; an IP address needs no lookup. The
 * client is not healthy until the connection is up and has answered PING
 * (and SELECT first when the URL names a db > 0).
 * Returns NULL only when cfg->url is not a valid redis:// URL, with a
 * message in err (if err is not NULL). Free with chat_redis_close.
 */
chat_redis_t *chat_redis_create(uv_loop_t *loop, const chat_redis_config_t *cfg, char *err,
                                size_t errlen) CHAT_MUSTCHECK;

/**
 * Queues one command (argv[0..argc) with lengths argvlen, or NUL-terminated
 * strings when argvlen is NULL; argc >= 1; the strings are copied at once).
 * Returns 0 when queued: cb (which may be NULL) then runs exactly once, later,
 * never from inside this call, with the reply, an error reply, a timeout, a
 * disconnect or CHAT_ECLOSED. Returns CHAT_EDOWN when the
 * circuit is open, the connection not yet up, max_pending reached or the
 * client closing: nothing was sent, cb is never called, and the caller should
 * fall back to the database at once. Pub/sub commands (SUBSCRIBE, MONITOR)
 * are not supported on this connection.
 *
 * The deadline is cmd_timeout_ms on a clock read at this call (not the
 * loop's time, which stands still during an iteration), and starts again
 * when the command is written to the socket, which happens when the loop
 * next polls or when a deadline is checked. A command times out only if its
 * reply is not in the socket when its deadline is checked: replies that
 * arrived while the loop was busy elsewhere are read first and count as in
 * time (cfg->late_reads counts them).
 */
int chat_redis_command(chat_redis_t *r, chat_redis_cb cb, void *arg, int argc, const char **argv,
                       const size_t *argvlen);

/**
 * chat_redis_command for commands whose effect matters after the caller
 * stopped waiting (a version bump after a write): when cb runs with
 * CHAT_ETIMEDOUT, late (if not NULL) runs exactly once afterwards
 * with the command's real outcome, then arg is no longer used. late never
 * runs after any other status.
 */
int chat_redis_command_tracked(chat_redis_t *r, chat_redis_cb cb, chat_redis_late_cb late,
                               void *arg, int argc, const char **argv, const size_t *argvlen);

/** 1 when connected, handshake done and the circuit closed; 0 otherwise.
 *  For a cluster: the slot map is known and a master's client is up (each
 *  node has its own circuit; a command for a node that is down is refused
 *  with CHAT_EDOWN). */
int chat_redis_healthy(const chat_redis_t *r);

/** chat_redis_healthy, and for a cluster more: every slot has a master in
 *  the map and every master's client is up (a command for any key would
 *  be sent). */
int chat_redis_all_up(const chat_redis_t *r);

/** True when r routes over a Redis Cluster (a redis+cluster:// URL). */
bool chat_redis_is_cluster(const chat_redis_t *r);

/**
 * For a cluster: the master of key's slot as "host:port" (valid until the
 * map changes), or NULL while unknown. NULL for a single Redis.
 */
const char *chat_redis_master_of(const chat_redis_t *r, const char *key, size_t len);

/** For a cluster: a number that changes whenever a slot changes master; 0 for a single Redis. */
unsigned long chat_redis_map_gen(const chat_redis_t *r);

/**
 * The nodes a command without a key can be sent to one by one (a SCAN walks
 * each): 1 for a single Redis; for a cluster, the masters of the current map
 * (0 while it is unknown).
 */
size_t chat_redis_masters(const chat_redis_t *r);

/**
 * chat_redis_command sent to the i-th of chat_redis_masters (i = 0 for a
 * single Redis); CHAT_EDOWN when there is no such master now.
 */
int chat_redis_command_master(chat_redis_t *r, size_t i, chat_redis_cb cb, void *arg, int argc,
                              const char **argv, const size_t *argvlen);

/** For a cluster: reads the slot map again soon; nothing for a single Redis. */
void chat_redis_map_refresh(chat_redis_t *r);

/** Number of queued commands whose callback has not run yet. */
size_t chat_redis_pending(const chat_redis_t *r);

/**
 * Closes the client: every pending command's callback runs with
 * CHAT_ECLOSED before this returns (and every late callback still
 * owed, before cb), later commands are refused, the
 * connection is freed (deferred to the next loop iteration when called from
 * inside a callback), and cb(arg) (may be NULL) runs once every libuv handle
 * of the client is closed, after which the client is freed. Call once.
 */
void chat_redis_close(chat_redis_t *r, void (*cb)(void *arg), void *arg);

#endif
