/*
 * The chat domain's cache keys and lifetimes: the key prefixes of the
 * contract (msg:history:{id}:{limit}:{offset}, msg:count:{id},
 * conv:metadata:{id}, user:profile:{id}, conv:events:{id}, user:inbox:{id},
 * conv:members:{id}), the keys of a conversation's and a user's version, the
 * TTL of each kind of data, and the kinds' metric labels. Every key of a
 * conversation carries the hash tag {c:ID} and every key of a user {u:ID}
 * (the realtime channels' tags too), so that on a Redis Cluster the keys one
 * script or one bump touches share a slot.
 */
#ifndef CHAT_CHAT_KEYS_H
#define CHAT_CHAT_KEYS_H

#include <stddef.h>
#include <stdint.h>

/** The kinds of cached data; the index of each in chat_keys_kind_labels. */
enum chat_keys_kind {
    CHAT_KEYS_HISTORY = 0,
    CHAT_KEYS_COUNT,
    CHAT_KEYS_METADATA,
    CHAT_KEYS_PROFILE,
    CHAT_KEYS_EVENTS,
    CHAT_KEYS_INBOX,
    CHAT_KEYS_MEMBERS,
    CHAT_KEYS_NKINDS,
};

/**
 * Metric label of each kind: "history", "count", "metadata", "profile",
 * "events", "inbox", "members".
 */
extern const char *const chat_keys_kind_labels[CHAT_KEYS_NKINDS];

/** Longest key prefix written by the functions below, NUL included. */
#define CHAT_KEYS_MAX 128

/**
 * History page prefix: msg:history:{id}:{limit}:{offset}, plus ":b{before_id}"
 * when paging by keyset (before_id > 0), or ":a{after_seq}" when catching up
 * (after_seq >= 0; -1: none). out holds CHAT_KEYS_MAX bytes. Returns the length.
 */
size_t chat_keys_history(char *out, int64_t conv, int limit, int offset, int64_t before_id,
                         int64_t after_seq);
size_t chat_keys_count(char *out, int64_t conv);
size_t chat_keys_metadata(char *out, int64_t conv);
size_t chat_keys_profile(char *out, int64_t user);
/** Events page prefix: conv:events:{id}:{after_rev}:{limit}. */
size_t chat_keys_events(char *out, int64_t conv, int64_t after_rev, int limit);
/** A members page: conv:members:{id}:{after_id}:{limit}. */
size_t chat_keys_members(char *out, int64_t conv, int64_t after_id, int limit);
/**
 * An inbox page: user:inbox:{id}:{limit}:{cursor} (cursor "" for the first
 * page; at most CHAT_KEYS_CURSOR_MAX bytes, which the caller checked).
 */
size_t chat_keys_inbox(char *out, int64_t user, int limit, const char *cursor);
#define CHAT_KEYS_CURSOR_MAX 64

/**
 * A user's version key is this prefix and the user's id (user:ver:{u:ID}): it
 * changes when the user's own read markers or memberships change, and every
 * cached inbox page of the user is read under it (docs/cache.md).
 */
#define CHAT_KEYS_USER_VERSION_PREFIX "user:ver:{u:"
/** What follows the id in a version key: the end of its hash tag. */
#define CHAT_KEYS_SCOPE_SUFFIX "}"
/** The user's version key into out (CHAT_KEYS_MAX bytes): user:ver:{u:ID}. */
size_t chat_keys_user_version(char *out, int64_t user);
/** The conversation's version key into out: conv:ver:{c:ID}. */
size_t chat_keys_conv_version(char *out, int64_t conv);
/** The conversation's membership version key into out: conv:mver:{c:ID}. */
size_t chat_keys_members_version(char *out, int64_t conv);

/**
 * A conversation's version key is this prefix and its id (conv:ver:{c:ID}):
 * every cached entry of the conversation is read under the current version.
 */
#define CHAT_KEYS_VERSION_PREFIX "conv:ver:{c:"

/**
 * A conversation's membership version key is this prefix and its id
 * (conv:mver:{c:ID}): it changes only when a member is added or removed, and
 * proofs of membership are remembered under it (chat/read.c), so sends do
 * not cost readers a membership check.
 */
#define CHAT_KEYS_MEMBERS_VERSION_PREFIX "conv:mver:{c:"

/**
 * TTL in seconds: history 30 s for the newest page (offset 0 without
 * before_id, an after_seq page included) and 60 s for older pages, count
 * 60 s, metadata 300 s, profile 600 s, events 60 s, inbox 60 s, members 300 s.
 */
int chat_keys_ttl(enum chat_keys_kind kind, int offset, int64_t before_id);

#endif
