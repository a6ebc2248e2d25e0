/*
 * Redis client for one libuv loop: a single multiplexed hiredis async
 * connection with a deadline on every command, a circuit breaker that refuses
 * commands at once while Redis is down or wedged, and a background probe that
 * reconnects by itself. The transport under the cache; it knows no keys.
 */
#ifndef CHAT_CACHE_REDIS_H
#define CHAT_CACHE_REDIS_H

#include <stddef.h>
#include <uv.h>

#include "core/alloc.h"

struct redisReply;

typedef struct chat_redis chat_redis_t;

typedef struct chat_redis_config {
    /** redis://host:port[/db]; port defaults to 6379, db to 0. Copied. */
    const char *url;
    /** Deadline of each command in ms; <= 0 means 50. */
    int cmd_timeout_ms;
    /** Deadline of connect plus handshake (SELECT, PING) in ms; <= 0 means 200. */
    int connect_timeout_ms;
    /** Interval between reconnect probes while down, in ms; <= 0 means 500. */
    int retry_interval_ms;
    /** Most commands outstanding at once (callbacks not yet run and late
     *  replies not yet read); beyond it commands are refused; <= 0 means 20000. */
    int max_pending;
} chat_redis_config_t;

enum {
    CHAT_REDIS_OK = 0,
    /** Returned by chat_redis_command only: circuit open, not connected, too
     *  many pending, or closing. Nothing was sent and the callback never runs. */
    CHAT_REDIS_ERR_DOWN = -1,
    /** The command's deadline passed and its reply was not in the socket; a
     *  late reply is read and dropped (or passed to the late callback). */
    CHAT_REDIS_ERR_TIMEOUT = -2,
    /** Redis answered with an error reply, passed as the reply. */
    CHAT_REDIS_ERR_REPLY = -3,
    /** chat_redis_close was called before the reply arrived. */
    CHAT_REDIS_ERR_CLOSED = -4,
    /** The connection was lost (or dropped as wedged) before the reply. */
    CHAT_REDIS_ERR_DISCONNECTED = -5,
};

/** Consecutive command timeouts after which the connection is judged wedged,
 *  dropped, and the circuit opened until a probe succeeds. A command whose
 *  reply is still missing this many deadlines after it was sent has the
 *  same effect, even alone. */
#define CHAT_REDIS_MAX_CONSECUTIVE_TIMEOUTS 20

/**
 * Completion of one command. status is one of the CHAT_REDIS_* codes (never
 * CHAT_REDIS_ERR_DOWN). reply is the reply for CHAT_REDIS_OK, the error reply
 * for CHAT_REDIS_ERR_REPLY, NULL otherwise; it belongs to the client and is
 * valid only during the callback. The callback may issue new commands and may
 * call chat_redis_close.
 */
typedef void (*chat_redis_cb)(int status, struct redisReply *reply, void *arg);

/**
 * The real outcome of a command whose callback got CHAT_REDIS_ERR_TIMEOUT:
 * CHAT_REDIS_OK or CHAT_REDIS_ERR_REPLY when its late reply arrived (Redis
 * ran it), CHAT_REDIS_ERR_DISCONNECTED or CHAT_REDIS_ERR_CLOSED when the
 * connection ended first (whether Redis ran it is unknown). May issue
 * commands; must not call chat_redis_close.
 */
typedef void (*chat_redis_late_cb)(int status, void *arg);

/**
 * Creates a client on loop and starts connecting in the background (the host
 * name is resolved synchronously on each connect attempt: prefer an IP); the
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
 * disconnect or CHAT_REDIS_ERR_CLOSED. Returns CHAT_REDIS_ERR_DOWN when the
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
 * time (chatd_cache_late_reads_total counts them).
 */
int chat_redis_command(chat_redis_t *r, chat_redis_cb cb, void *arg, int argc, const char **argv,
                       const size_t *argvlen);

/**
 * chat_redis_command for commands whose effect matters after the caller
 * stopped waiting (a version bump after a write): when cb runs with
 * CHAT_REDIS_ERR_TIMEOUT, late (if not NULL) runs exactly once afterwards
 * with the command's real outcome, then arg is no longer used. late never
 * runs after any other status.
 */
int chat_redis_command_tracked(chat_redis_t *r, chat_redis_cb cb, chat_redis_late_cb late,
                               void *arg, int argc, const char **argv, const size_t *argvlen);

/** 1 when connected, handshake done and the circuit closed; 0 otherwise. */
int chat_redis_healthy(const chat_redis_t *r);

/** Number of queued commands whose callback has not run yet. */
size_t chat_redis_pending(const chat_redis_t *r);

/** A constant text for a CHAT_REDIS_* status, for logs. */
const char *chat_redis_strerror(int status);

/**
 * Closes the client: every pending command's callback runs with
 * CHAT_REDIS_ERR_CLOSED before this returns (and every late callback still
 * owed, before cb), later commands are refused, the
 * connection is freed (deferred to the next loop iteration when called from
 * inside a callback), and cb(arg) (may be NULL) runs once every libuv handle
 * of the client is closed, after which the client is freed. Call once.
 */
void chat_redis_close(chat_redis_t *r, void (*cb)(void *arg), void *arg);

#endif
