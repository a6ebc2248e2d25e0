/*
 * Hash functions for chatd's in-memory tables: FNV-1a over bytes and a
 * 64-bit finaliser for integer keys. Not for anything an attacker could
 * exploit through collisions of chosen keys beyond a slower lookup: tables
 * keyed by client input use uniformly random keys (token hashes) or ids.
 */
#ifndef CHAT_CORE_HASH_H
#define CHAT_CORE_HASH_H

#include <stddef.h>
#include <stdint.h>

/** FNV-1a, 64 bits, of n bytes. */
static inline uint64_t chat_hash_bytes(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/** FNV-1a, 64 bits, of a NUL-terminated string. */
static inline uint64_t chat_hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

/** Mixes an integer key so that consecutive ids spread over a table (splitmix64's finaliser). */
static inline uint64_t chat_hash_u64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

#endif
