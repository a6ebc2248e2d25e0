/*
 * The replies of Redis the cache reads, decoded by pure functions: the
 * lookup script's {key, value | 1 | false, guard}, the version tokens of an
 * MGET, a SCAN page. cache.c acts on the result; tests/fuzz feeds them
 * whatever hiredis can decode. A reply that is not of the expected shape is
 * refused whole, never half read.
 */
#ifndef CHAT_CACHE_REPLY_H
#define CHAT_CACHE_REPLY_H

#include <stddef.h>

struct redisReply;

typedef enum chat_cache_reply_kind {
    CHAT_CACHE_REPLY_VALUE, /* the value of key */
    CHAT_CACHE_REPLY_SAME,  /* key is the one whose copy the worker named, and it still exists */
    CHAT_CACHE_REPLY_NONE,  /* key holds nothing */
} chat_cache_reply_kind_t;

/** A decoded lookup reply; strings point into the reply. */
typedef struct chat_cache_lookup_reply {
    int kind;          /* chat_cache_reply_kind_t */
    const char *key;   /* the full key, NUL-terminated (none inside) */
    const char *value; /* VALUE: the bytes */
    size_t len;
    const char *guard; /* "epoch:guard version", NUL-terminated, or NULL */
} chat_cache_lookup_reply_t;

/** Decodes the lookup script's reply into *out. Returns 0, or -1 for another shape. */
int chat_cache_lookup_reply_parse(const struct redisReply *r, chat_cache_lookup_reply_t *out);

/**
 * Decodes the reply to an MGET of n version keys: tokens[i] gets the i-th
 * (NUL-terminated). Returns 0, or -1 when the reply is not n strings.
 */
int chat_cache_versions_reply_parse(const struct redisReply *r, size_t n, const char **tokens);

/** Room for a SCAN cursor and its NUL. */
#define CHAT_CACHE_CURSOR_MAX 32

/**
 * Decodes a SCAN reply: the next cursor (decimal digits, shorter than
 * CHAT_CACHE_CURSOR_MAX) and the page's keys, an array of strings. Returns
 * 0, or -1 for anything else.
 */
int chat_cache_scan_reply_parse(const struct redisReply *r, const char **cursor,
                                const struct redisReply **keys);

#endif
