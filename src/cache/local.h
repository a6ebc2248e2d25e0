/*
 * The worker's copy of cached values: for a key prefix, the last versioned
 * key seen in Redis and its bytes. A lookup names that key to Redis, which
 * answers "unchanged" instead of sending the value again when the prefix
 * still resolves to it (same epoch, same version) and the entry still
 * exists there. So Redis stays the judge of freshness and of the TTL; the
 * copy only saves moving the bytes. Bytes under one versioned key never
 * become wrong: a write moves the version before it is acknowledged.
 *
 * A direct-mapped table: a prefix hashes to one slot, a newcomer replaces the
 * slot's entry. Bounded by a byte budget; a value that does not fit is not
 * kept. Entries also carry a local expiry (the kind's TTL) after which they
 * are dropped, found by a lookup or by a small sweep on every put.
 */
#ifndef CHAT_CACHE_LOCAL_H
#define CHAT_CACHE_LOCAL_H

#include <stddef.h>
#include <stdint.h>

typedef struct chat_cache_local chat_cache_local_t;

/** slots is rounded up to a power of two; max_bytes bounds keys + values. */
chat_cache_local_t *chat_cache_local_create(size_t slots, size_t max_bytes);
void chat_cache_local_destroy(chat_cache_local_t *l);

/** The entry of prefix, alive at now_ms, or NULL. Pointers valid until the next put. */
typedef struct chat_cache_local_entry {
    const char *vkey;
    const char *val;
    size_t len;
} chat_cache_local_entry_t;
int chat_cache_local_get(chat_cache_local_t *l, const char *prefix, uint64_t now_ms,
                         chat_cache_local_entry_t *out);

/** Keeps val as prefix's value under vkey until expires_ms (replacing the slot). */
void chat_cache_local_put(chat_cache_local_t *l, const char *prefix, const char *vkey,
                          const char *val, size_t len, uint64_t now_ms, uint64_t expires_ms);

/** Bytes held (keys and values), for tests and the gauge. */
size_t chat_cache_local_bytes(const chat_cache_local_t *l);

#endif
