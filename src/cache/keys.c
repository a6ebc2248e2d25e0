/*
 * Cache key building and TTL rules (see keys.h).
 */
#include "cache/keys.h"

#include <stdio.h>

static const char *const kind_names[CHAT_CACHE_NKINDS] = {"history", "count", "metadata",
                                                          "profile"};

const char *chat_cache_kind_name(int kind)
{
    return kind >= 0 && kind < CHAT_CACHE_NKINDS ? kind_names[kind] : "unknown";
}

size_t chat_cache_key_history(char *out, int64_t conv, int limit, int offset, int64_t before_id)
{
    int n;
    if (before_id > 0)
        n = snprintf(out, CHAT_CACHE_KEY_MAX, "msg:history:%lld:%d:%d:b%lld", (long long)conv,
                     limit, offset, (long long)before_id);
    else
        n = snprintf(out, CHAT_CACHE_KEY_MAX, "msg:history:%lld:%d:%d", (long long)conv, limit,
                     offset);
    return (size_t)n;
}

size_t chat_cache_key_count(char *out, int64_t conv)
{
    return (size_t)snprintf(out, CHAT_CACHE_KEY_MAX, "msg:count:%lld", (long long)conv);
}

size_t chat_cache_key_metadata(char *out, int64_t conv)
{
    return (size_t)snprintf(out, CHAT_CACHE_KEY_MAX, "conv:metadata:%lld", (long long)conv);
}

size_t chat_cache_key_profile(char *out, int64_t user)
{
    return (size_t)snprintf(out, CHAT_CACHE_KEY_MAX, "user:profile:%lld", (long long)user);
}

size_t chat_cache_key_version(char *out, int64_t conv)
{
    return (size_t)snprintf(out, CHAT_CACHE_KEY_MAX, "conv:ver:%lld", (long long)conv);
}

int chat_cache_ttl(int kind, int offset, int64_t before_id)
{
    switch (kind) {
    case CHAT_CACHE_HISTORY:
        return offset == 0 && before_id == 0 ? 30 : 60;
    case CHAT_CACHE_COUNT:
        return 60;
    case CHAT_CACHE_METADATA:
        return 300;
    case CHAT_CACHE_PROFILE:
        return 600;
    default:
        return 30;
    }
}
