/*
 * The chat domain's cache key building and TTL rules (see keys.h).
 */
#include "chat/keys.h"

#include "cache/cache.h"

#include <stdio.h>

_Static_assert(CHAT_KEYS_MAX <= CHAT_CACHE_KEY_MAX, "the cache must take every chat key prefix");

const char *const chat_keys_kind_labels[CHAT_KEYS_NKINDS] = {
    "history", "count", "metadata", "profile", "events", "inbox", "members"};

size_t chat_keys_history(char *out, int64_t conv, int limit, int offset, int64_t before_id,
                         int64_t after_seq)
{
    int n;
    if (after_seq >= 0)
        n = snprintf(out, CHAT_KEYS_MAX, "msg:history:%lld:%d:%d:a%lld:{c:%lld}", (long long)conv,
                     limit, offset, (long long)after_seq, (long long)conv);
    else if (before_id > 0)
        n = snprintf(out, CHAT_KEYS_MAX, "msg:history:%lld:%d:%d:b%lld:{c:%lld}", (long long)conv,
                     limit, offset, (long long)before_id, (long long)conv);
    else
        n = snprintf(out, CHAT_KEYS_MAX, "msg:history:%lld:%d:%d:{c:%lld}", (long long)conv, limit,
                     offset, (long long)conv);
    return (size_t)n;
}

size_t chat_keys_count(char *out, int64_t conv)
{
    return (size_t)snprintf(out, CHAT_KEYS_MAX, "msg:count:%lld:{c:%lld}", (long long)conv,
                            (long long)conv);
}

size_t chat_keys_metadata(char *out, int64_t conv)
{
    return (size_t)snprintf(out, CHAT_KEYS_MAX, "conv:metadata:%lld:{c:%lld}", (long long)conv,
                            (long long)conv);
}

size_t chat_keys_profile(char *out, int64_t user)
{
    return (size_t)snprintf(out, CHAT_KEYS_MAX, "user:profile:%lld:{u:%lld}", (long long)user,
                            (long long)user);
}

size_t chat_keys_events(char *out, int64_t conv, int64_t after_rev, int limit)
{
    return (size_t)snprintf(out, CHAT_KEYS_MAX, "conv:events:%lld:%lld:%d:{c:%lld}",
                            (long long)conv, (long long)after_rev, limit, (long long)conv);
}

size_t chat_keys_members(char *out, int64_t conv, int64_t after_id, int limit)
{
    return (size_t)snprintf(out, CHAT_KEYS_MAX, "conv:members:%lld:%lld:%d:{c:%lld}",
                            (long long)conv, (long long)after_id, limit, (long long)conv);
}

size_t chat_keys_inbox(char *out, int64_t user, int limit, const char *cursor)
{
    return (size_t)snprintf(out, CHAT_KEYS_MAX, "user:inbox:%lld:%d:%s:{u:%lld}", (long long)user,
                            limit, cursor, (long long)user);
}

size_t chat_keys_user_version(char *out, int64_t user)
{
    return (size_t)snprintf(out, CHAT_KEYS_MAX,
                            CHAT_KEYS_USER_VERSION_PREFIX "%lld" CHAT_KEYS_SCOPE_SUFFIX,
                            (long long)user);
}

size_t chat_keys_conv_version(char *out, int64_t conv)
{
    return (size_t)snprintf(out, CHAT_KEYS_MAX,
                            CHAT_KEYS_VERSION_PREFIX "%lld" CHAT_KEYS_SCOPE_SUFFIX,
                            (long long)conv);
}

size_t chat_keys_members_version(char *out, int64_t conv)
{
    return (size_t)snprintf(out, CHAT_KEYS_MAX,
                            CHAT_KEYS_MEMBERS_VERSION_PREFIX "%lld" CHAT_KEYS_SCOPE_SUFFIX,
                            (long long)conv);
}

int chat_keys_ttl(enum chat_keys_kind kind, int offset, int64_t before_id)
{
    switch (kind) {
    case CHAT_KEYS_HISTORY:
        return offset == 0 && before_id == 0 ? 30 : 60;
    case CHAT_KEYS_COUNT:
        return 60;
    case CHAT_KEYS_METADATA:
        return 300;
    case CHAT_KEYS_PROFILE:
        return 600;
    case CHAT_KEYS_EVENTS:
        return 60;
    case CHAT_KEYS_INBOX:
        return 60;
    case CHAT_KEYS_MEMBERS:
        return 300;
    case CHAT_KEYS_NKINDS:
        break;
    }
    return 30;
}
