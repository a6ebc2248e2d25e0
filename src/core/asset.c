/*
 * Lookup in the table of embedded files, and the If-None-Match comparison
 * (RFC 9110 13.1.2: weak comparison, a list of tags or "*").
 */
#include "core/asset.h"

#include <string.h>

const chat_asset_t *chat_asset_find(const char *path, size_t len)
{
    for (int i = 0; i < chat_assets_count; i++) {
        const chat_asset_t *a = &chat_assets[i];
        if (strlen(a->path) == len && memcmp(a->path, path, len) == 0)
            return a;
    }
    return NULL;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t';
}

bool chat_asset_etag_matches(const char *h, const char *etag)
{
    if (!h || !etag)
        return false;
    size_t elen = strlen(etag);
    const char *p = h;
    for (;;) {
        while (is_space(*p) || *p == ',')
            p++;
        if (!*p)
            return false;
        if (*p == '*') {
            /* "*" alone matches any current representation. */
            const char *q = p + 1;
            while (is_space(*q))
                q++;
            if (!*q || *q == ',')
                return true;
        }
        if (p[0] == 'W' && p[1] == '/')
            p += 2;
        if (*p != '"') {
            /* Not an entity tag: skip to the next list member. */
            const char *comma = strchr(p, ',');
            if (!comma)
                return false;
            p = comma;
            continue;
        }
        const char *close = strchr(p + 1, '"');
        if (!close)
            return false;
        size_t tlen = (size_t)(close - p) + 1;
        if (tlen == elen && memcmp(p, etag, elen) == 0)
            return true;
        p = close + 1;
    }
}
