/*
 * Cache keys and lifetimes. Every key starts with the prefix of the contract
 * (msg:history:{id}:{limit}:{offset}, msg:count:{id}, conv:metadata:{id},
 * user:profile:{id}); keys of a conversation's data then carry the cache
 * epoch and the conversation's version (":e<epoch>:v<version>") so a single
 * version change hides every older entry of that conversation at once.
 */
#ifndef CHAT_CACHE_KEYS_H
#define CHAT_CACHE_KEYS_H

#include <stddef.h>
#include <stdint.h>

enum chat_cache_kind {
    CHAT_CACHE_HISTORY = 0,
    CHAT_CACHE_COUNT,
    CHAT_CACHE_METADATA,
    CHAT_CACHE_PROFILE,
    CHAT_CACHE_NKINDS,
};

/** Label value of a kind in metrics: "history", "count", "metadata", "profile". */
const char *chat_cache_kind_name(int kind);

/** Longest key prefix written by the functions below, NUL included. */
#define CHAT_CACHE_KEY_MAX 128

/**
 * History page prefix: msg:history:{id}:{limit}:{offset}, plus ":b{before_id}"
 * when paging by keyset. Returns the length.
 */
size_t chat_cache_key_history(char *out, int64_t conv, int limit, int offset, int64_t before_id);
size_t chat_cache_key_count(char *out, int64_t conv);
size_t chat_cache_key_metadata(char *out, int64_t conv);
size_t chat_cache_key_profile(char *out, int64_t user);
/** The version key of a conversation: conv:ver:{id}. */
size_t chat_cache_key_version(char *out, int64_t conv);
/** The key holding the process-fleet cache epoch. */
#define CHAT_CACHE_EPOCH_KEY "cache:epoch"

/**
 * TTL in seconds: history 30 s for the newest page (offset 0 without
 * before_id) and 60 s for older pages, count 60 s, metadata 300 s, profile
 * 600 s.
 */
int chat_cache_ttl(int kind, int offset, int64_t before_id);

#endif
