/*
 * Cache-aside over Redis for one worker: versioned lookups, fills with the
 * caller's TTLs, invalidation after writes, the worker's copies of values
 * and its share of the process-wide state (shared.h). Values are opaque
 * bytes; key prefixes, TTLs and kinds come from the caller.
 *
 * Freshness rests on two values kept in Redis: the cache epoch
 * (cache:epoch) and the version of each versioned scope (a conversation:
 * version_prefix{id}). A lookup reads both and the entry in one round trip
 * (a Lua script), so the key it reads and later fills is
 * prefix:e<epoch>:v<version>. A write changes the version after it commits
 * and before it is acknowledged, so every later lookup uses a key no earlier
 * fill could have written. Versions and epochs are fresh random tokens,
 * never counters, so an evicted version cannot come back and resurrect an
 * old entry. Whenever an invalidation did not reach Redis, or may not have
 * (Redis down, refused, error reply, connection lost with it, bypass on),
 * the process marks the cache dirty and changes the epoch before it uses the
 * cache again. One past its deadline stays unsettled, the cache unused
 * meanwhile, until its late reply (nothing to do) or the end of its
 * connection (dirty) says which.
 *
 * On a Redis Cluster (redis/client.h) a script's keys must share a slot: the
 * caller's prefixes and version keys of one scope carry one hash tag, the
 * epoch is one key per slot (cache:epoch:{tag of the prefix's slot}), a bump
 * of several keys is one SET each, a change of a slot's master marks the
 * cache dirty (a promoted replica may lack acknowledged bumps), and an
 * entry that depends on other scopes (chat_cache_lookup_deps) is read first,
 * then each version it names by its own GET.
 */
#ifndef CHAT_CACHE_CACHE_H
#define CHAT_CACHE_CACHE_H

#include "cache/flight.h"
#include "cache/shared.h"
#include "core/alloc.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct chat_cache chat_cache_t;

/** Longest key prefix a lookup takes, NUL included. */
#define CHAT_CACHE_KEY_MAX 128
/** The key holding the process fleet's cache epoch. */
#define CHAT_CACHE_EPOCH_KEY "cache:epoch"
/** Longest epoch key, NUL included: on a Redis Cluster one per slot, cache:epoch:{tag}. */
#define CHAT_CACHE_EPOCH_KEY_MAX 32

typedef struct chat_cache_config {
    /** The process-wide state (not owned; outlives the cache). Required. */
    chat_cache_shared_t *shared;
    const char *redis_url;
    int cmd_timeout_ms; /* deadline of every Redis command; <= 0 means 50 */
    int poll_info;      /* this worker polls INFO stats for evictions */
    size_t local_bytes; /* budget of the worker's copies of values (local.h); 0 = none */
    /** Key of a scope's version: this prefix followed by the scope id. Copied; at most 31 bytes. */
    const char *version_prefix;
    /**
     * Key of a scope's guard version (this prefix and the scope id; NULL or
     * "": none): a second version that the caller changes only when who may
     * read the scope changes, returned by lookups (with the epoch) so the
     * caller can remember an access check for as long as it holds. Copied;
     * at most 31 bytes.
     */
    const char *guard_prefix;
    /**
     * What follows the scope id in a version or guard key (e.g. "}" closing
     * a hash tag the prefix opened); NULL or "": nothing. Copied; at most 7
     * bytes.
     */
    const char *scope_suffix;
} chat_cache_config_t;

/**
 * Creates the worker's cache and starts connecting in the background.
 * Returns NULL with a message in err for a bad REDIS_URL.
 */
chat_cache_t *chat_cache_create(uv_loop_t *loop, const chat_cache_config_t *cfg, char *err,
                                size_t errlen) CHAT_MUSTCHECK;

/**
 * Closes the Redis connection and the timers; pending callbacks run first
 * (as failures), then cb(arg) (may be NULL) once everything is closed and
 * the cache freed. Call once.
 */
void chat_cache_close(chat_cache_t *c, void (*cb)(void *arg), void *arg);

/** "up", "down" or "bypassed" for /readyz. c may be NULL (cache disabled: "bypassed"). */
const char *chat_cache_state(const chat_cache_t *c);

/** True while the worker's Redis connection is up. */
bool chat_cache_healthy(const chat_cache_t *c);

/** The coalescing table of this worker. */
chat_flights_t *chat_cache_flights(chat_cache_t *c);

typedef enum chat_cache_lookup_status {
    CHAT_CACHE_HIT = 0,
    CHAT_CACHE_MISS = 1,  /* key holds the versioned key to fill */
    CHAT_CACHE_ERROR = 2, /* Redis failed or timed out: read the database, do not fill */
} chat_cache_lookup_status_t;

typedef struct chat_cache_lookup {
    chat_cache_lookup_status_t status;
    const char *value; /* HIT: the bytes, valid during the callback */
    size_t len;
    /*
     * MISS: the full key to fill; HIT: the full key answered (its epoch and
     * version suffix proves what the caller saw). Valid during the callback.
     */
    const char *key;
    /*
     * HIT or MISS of a scope with guard versions: "epoch:guard version" as
     * read in the same round trip, else NULL. Valid during the callback.
     */
    const char *guard;
} chat_cache_lookup_t;

typedef void (*chat_cache_lookup_cb)(const chat_cache_lookup_t *r, void *arg);

/**
 * Looks prefix (shorter than CHAT_CACHE_KEY_MAX) up under the current epoch
 * and, when scope_id > 0, that scope's version. Returns 0 when started (cb
 * fires once, later), or CHAT_EDOWN when the cache is not to be used now
 * (bypassed, Redis down, or dirty): cb is not called and the caller reads
 * the database. Counts a hit or a miss for kind (an index into the labels
 * given to chat_cache_shared_create).
 */
int chat_cache_lookup(chat_cache_t *c, int kind, const char *prefix, int64_t scope_id,
                      chat_cache_lookup_cb cb, void *arg);

/**
 * A lookup of an entry that depends on other scopes: the key is
 * prefix:e<epoch>:v<version of vkey> (vkey: a full version key, e.g. a
 * user's), and the entry, stored by chat_cache_fill_deps, names the scopes
 * (ids under the configured version prefix) and their versions it was built
 * under; it is a hit only while every one of them is unchanged, all checked
 * in the same round trip (on a cluster: in a second one, a GET each). Returns and calls back as
 * chat_cache_lookup; no worker copies are kept for these entries.
 */
int chat_cache_lookup_deps(chat_cache_t *c, int kind, const char *prefix, const char *vkey,
                           chat_cache_lookup_cb cb, void *arg);

/**
 * The current versions of scopes ids[0..n) (installing fresh ones where none
 * is set), read after a MISS of chat_cache_lookup_deps and before the
 * database: cb(CHAT_EOK, tokens) with n strings valid during the call, or
 * cb(CHAT_EDOWN, NULL) (then do not fill). May fire before this returns.
 */
typedef void (*chat_cache_versions_cb)(int status, const char *const *tokens, void *arg);
void chat_cache_versions(chat_cache_t *c, const int64_t *ids, size_t n, chat_cache_versions_cb cb,
                         void *arg);

/**
 * chat_cache_fill for an entry of chat_cache_lookup_deps: stores val under
 * key with the scopes ids[0..n) and the versions tokens[0..n) read by
 * chat_cache_versions before the value was loaded.
 */
void chat_cache_fill_deps(chat_cache_t *c, const char *key, const int64_t *ids,
                          const char *const *tokens, size_t n, const char *val, size_t len, int ttl,
                          void (*done)(void *arg), void *arg);

/**
 * Stores val under key (a MISS key) for ttl seconds. done (may be NULL)
 * fires once the fill is acknowledged or failed (at once when refused).
 */
void chat_cache_fill(chat_cache_t *c, const char *key, const char *val, size_t len, int ttl,
                     void (*done)(void *arg), void *arg);

/** A value a write stores along with its version bump (write-through). */
typedef struct chat_cache_put {
    const char *prefix; /* the key without epoch and version */
    const char *val;
    size_t len;
    int ttl;
} chat_cache_put_t;

/**
 * After a committed write that took rev (> 0) of conversation conv_id: the
 * version bump of chat_cache_invalidate_conv(), recording rev, which also
 * stores puts under the new version when rev is above every rev recorded by
 * an earlier bump (the values must be read in the write's own transaction).
 * Otherwise — or whenever the cache is not usable now — it is the plain
 * bump. done fires as for chat_cache_invalidate_conv(). puts are copied.
 */
void chat_cache_invalidate_conv_rev(chat_cache_t *c, int64_t conv_id, int64_t rev,
                                    const chat_cache_put_t *puts, size_t n, void (*done)(void *arg),
                                    void *arg);

/**
 * After a committed write to a scope (a conversation): gives it a new
 * version. done fires once, after Redis acknowledged, the attempt failed
 * (then the cache is marked dirty) or its deadline passed (then the bump is
 * unsettled, see above). Never fires before this returns.
 */
void chat_cache_invalidate_conv(chat_cache_t *c, int64_t scope_id, void (*done)(void *arg),
                                void *arg);

/**
 * chat_cache_invalidate_conv for any n >= 1 full version keys at once (one
 * command, one fresh token for all), e.g. the user versions of every member
 * of a new conversation. Same failure rules; done never fires before this
 * returns.
 */
void chat_cache_invalidate_keys(chat_cache_t *c, const char *const *vkeys, size_t n,
                                void (*done)(void *arg), void *arg);

/*
 * WAL positions (docs/architecture.md, "Read replicas"). A bump may record
 * the position a write's transaction returned after its commit: the version
 * becomes "<token>L<16 hex digits>", the higher of that position and the one
 * the old version carried, so a version's position is at or past the commit
 * of every write acknowledged before it was read. A new epoch carries the
 * highest position of any bump of the process (also max-merged), so the
 * writes whose bumps were lost are covered once it lands.
 */

/** The _lsn variants: as without, recording lsn (0: none, as without). */
void chat_cache_invalidate_conv_lsn(chat_cache_t *c, int64_t scope_id, uint64_t lsn,
                                    void (*done)(void *arg), void *arg);
void chat_cache_invalidate_conv_rev_lsn(chat_cache_t *c, int64_t conv_id, int64_t rev, uint64_t lsn,
                                        const chat_cache_put_t *puts, size_t n,
                                        void (*done)(void *arg), void *arg);
void chat_cache_invalidate_keys_lsn(chat_cache_t *c, const char *const *vkeys, size_t n,
                                    uint64_t lsn, void (*done)(void *arg), void *arg);

/**
 * The WAL position a read of the full key (a lookup's MISS key) must see:
 * the one its version records, or the epoch's when higher; 0 when the
 * version records none (unknown: read the primary).
 */
uint64_t chat_cache_key_lsn(const char *key);

/** The position a version token (e.g. of chat_cache_versions) records; 0: none. */
uint64_t chat_cache_token_lsn(const char *token);

/** lsn as the 16 upper-case hex digits the scripts compare. */
void chat_cache_lsn_str(char out[24], uint64_t lsn);

/**
 * Deletes keys matching pattern with incremental SCAN + UNLINK, never
 * blocking Redis. cb gets the number deleted, or -1 if Redis failed.
 */
void chat_cache_delete_pattern(chat_cache_t *c, const char *pattern,
                               void (*cb)(long long deleted, void *arg), void *arg);

#endif
