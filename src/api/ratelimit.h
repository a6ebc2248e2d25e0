/*
 * Rate limits counted in Redis, so that every instance sharing a Redis
 * spends one budget: a GCRA (core/gcra.h) in one Lua script, one round trip
 * per check, run by EVALSHA (EVAL when Redis answers NOSCRIPT). While Redis
 * cannot answer in time (circuit open, error, deadline passed, or no Redis
 * configured) the process decides alone, from a bounded table of its own.
 * Knows limits, subjects and keys, nothing of HTTP: api/limits.c says who
 * is counted and answers the refusals.
 */
#ifndef CHAT_API_RATELIMIT_H
#define CHAT_API_RATELIMIT_H

#include "core/alloc.h"
#include "core/config.h"

#include <stdbool.h>
#include <uv.h>

/** The limits, in the order of the metric's label values. */
typedef enum chat_rate_limit {
    CHAT_RATE_SEND,    /* sends and edits, per user (subject "u:<id>") */
    CHAT_RATE_REQUEST, /* /api/v1 requests, per token (subject "t:<hash>") */
    CHAT_RATE_SIGNUP,  /* sign-ups, per client address (subject "a:<address>") */
    CHAT_RATE_NLIMITS
} chat_rate_limit_t;

/** Longest subject, NUL included. */
#define CHAT_RATELIMIT_SUBJECT_MAX 64

/** Most keys the process-local table holds (about 100 bytes each). */
#define CHAT_RATELIMIT_LOCAL_KEYS 65536

/**
 * What the workers of a process share: the limits of the configuration, the
 * local table used while Redis is unreachable, the metrics
 * (chatd_rate_limited_total{limit}, chatd_rate_local_checks_total). Created
 * by main.c before the workers; safe from every thread.
 */
typedef struct chat_ratelimit_shared chat_ratelimit_shared_t;

chat_ratelimit_shared_t *chat_ratelimit_shared_create(const chat_config_t *cfg) CHAT_MUSTCHECK;
/** Frees it; every limiter created with it must be closed first. */
void chat_ratelimit_shared_destroy(chat_ratelimit_shared_t *sh);

/** One worker's limiter: its own Redis connection on the worker's loop. */
typedef struct chat_ratelimit chat_ratelimit_t;

typedef struct chat_ratelimit_config {
    chat_ratelimit_shared_t *shared; /* not owned; outlives the limiter */
    const char *redis_url;           /* NULL: every check is decided locally */
    int cmd_timeout_ms; /* longest a check waits on Redis (the cache's deadline); <= 0: 50 */
} chat_ratelimit_config_t;

/**
 * Creates the limiter on loop; its Redis connection (when no limit is on, or
 * redis_url is NULL or unusable, none) comes up in the background, checks
 * being local until it does. Close with chat_ratelimit_close.
 */
chat_ratelimit_t *chat_ratelimit_create(uv_loop_t *loop,
                                        const chat_ratelimit_config_t *cfg) CHAT_MUSTCHECK;

/**
 * Closes the Redis connection and the timer: checks still waiting are
 * answered locally first; cb(arg) (may be NULL) runs once everything is
 * closed and the limiter freed. Call once.
 */
void chat_ratelimit_close(chat_ratelimit_t *rl, void (*cb)(void *arg), void *arg);

/** True when the limit is configured (not 0). */
bool chat_ratelimit_on(const chat_ratelimit_t *rl, chat_rate_limit_t which);

/**
 * The answer of a check: retry_after_s 0 when the event is allowed (and
 * counted), else the whole seconds (>= 1) until it would be.
 */
typedef void (*chat_ratelimit_cb)(int retry_after_s, void *arg);

/**
 * Counts one event of subject (a string shorter than
 * CHAT_RATELIMIT_SUBJECT_MAX: "u:42") against limit which. cb runs exactly
 * once: before this returns when the limit is off or the answer is local,
 * else from the loop, within the deadline. A refusal is counted in
 * chatd_rate_limited_total.
 */
void chat_ratelimit_check(chat_ratelimit_t *rl, chat_rate_limit_t which, const char *subject,
                          chat_ratelimit_cb cb, void *arg);

/** "send", "request" or "signup": the metric's label value and the key's part. */
const char *chat_ratelimit_name(chat_rate_limit_t which);

/**
 * Reads the script's reply {allowed, wait_us}: 1 (allowed) or 0 (refused,
 * the wait in *wait_us), or -1 when the reply is not that. Pure.
 */
struct redisReply;
int chat_ratelimit_reply_parse(const struct redisReply *r, long long *wait_us);

/** The Redis key of subject under limit which: "rate:send:{u:42}". cap >= 96. */
void chat_ratelimit_key(chat_rate_limit_t which, const char *subject, char *out, size_t cap);

#endif
