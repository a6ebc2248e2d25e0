/*
 * Decoding the cache's Redis replies (see reply.h). Keys and tokens are used
 * as C strings afterwards, so a string with a NUL inside is refused.
 */
#include "cache/reply.h"

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <string.h>

/* A string reply usable as a C string. */
static bool is_cstring(const redisReply *e)
{
    return e->type == REDIS_REPLY_STRING && strlen(e->str) == e->len;
}

int chat_cache_lookup_reply_parse(const redisReply *r, chat_cache_lookup_reply_t *out)
{
    memset(out, 0, sizeof *out);
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 2 || !is_cstring(r->element[0]))
        return -1;
    out->key = r->element[0]->str;
    const redisReply *v = r->element[1];
    if (r->elements >= 3 && is_cstring(r->element[2]))
        out->guard = r->element[2]->str;
    if (v->type == REDIS_REPLY_STRING) {
        out->kind = CHAT_CACHE_REPLY_VALUE;
        out->value = v->str;
        out->len = v->len;
    } else if (v->type == REDIS_REPLY_INTEGER) {
        out->kind = CHAT_CACHE_REPLY_SAME;
    } else {
        out->kind = CHAT_CACHE_REPLY_NONE;
    }
    return 0;
}

int chat_cache_versions_reply_parse(const redisReply *r, size_t n, const char **tokens)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements != n)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (!is_cstring(r->element[i]))
            return -1;
        tokens[i] = r->element[i]->str;
    }
    return 0;
}

int chat_cache_scan_reply_parse(const redisReply *r, const char **cursor, const redisReply **keys)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2)
        return -1;
    const redisReply *c = r->element[0], *k = r->element[1];
    if (c->type != REDIS_REPLY_STRING || c->len == 0 || c->len >= CHAT_CACHE_CURSOR_MAX ||
        strspn(c->str, "0123456789") != c->len || k->type != REDIS_REPLY_ARRAY)
        return -1;
    for (size_t i = 0; i < k->elements; i++)
        if (k->element[i]->type != REDIS_REPLY_STRING)
            return -1;
    *cursor = c->str;
    *keys = k;
    return 0;
}
