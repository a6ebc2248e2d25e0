/*
 * Query-string parsing for the history endpoint: known parameters appear at
 * most once, hold plain decimal digits and stay within their range.
 */
#include "api/api.h"

#include <string.h>

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decodes [s, s+len) into out (size cap); returns the length or -1. */
static long decode(const char *s, size_t len, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '%') {
            if (i + 2 >= len)
                return -1;
            int h = hexval(s[i + 1]), l = hexval(s[i + 2]);
            if (h < 0 || l < 0)
                return -1;
            c = (char)(h * 16 + l);
            i += 2;
        } else if (c == '+') {
            c = ' ';
        }
        if (o + 1 >= cap)
            return -1;
        out[o++] = c;
    }
    out[o] = '\0';
    return (long)o;
}

static int parse_uint(const char *s, long long max, long long *out)
{
    if (!*s)
        return -1;
    long long v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        if (v > (max - (*s - '0')) / 10)
            return -1;
        v = v * 10 + (*s - '0');
    }
    *out = v;
    return 0;
}

int chat_api_parse_history_query(const char *q, size_t len, chat_api_history_params_t *out,
                                 const char **why)
{
    out->limit = 50;
    out->offset = 0;
    out->before_id = 0;
    int seen_limit = 0, seen_offset = 0, seen_before = 0;
    size_t i = 0;
    while (q && i < len) {
        size_t start = i;
        while (i < len && q[i] != '&')
            i++;
        size_t plen = i - start;
        i++; /* skip '&' */
        if (plen == 0)
            continue;
        const char *p = q + start;
        const char *eq = memchr(p, '=', plen);
        size_t klen = eq ? (size_t)(eq - p) : plen;
        char key[32], val[64];
        if (decode(p, klen, key, sizeof key) < 0) {
            /* A long or undecodable name is no parameter of ours. */
            continue;
        }
        int *seen;
        if (!strcmp(key, "limit"))
            seen = &seen_limit;
        else if (!strcmp(key, "offset"))
            seen = &seen_offset;
        else if (!strcmp(key, "before_id"))
            seen = &seen_before;
        else
            continue;
        if (*seen) {
            *why = "a query parameter is repeated";
            return -1;
        }
        *seen = 1;
        long long v;
        if (!eq || decode(eq + 1, plen - klen - 1, val, sizeof val) < 0) {
            *why = "a query parameter has no valid value";
            return -1;
        }
        if (seen == &seen_limit) {
            if (parse_uint(val, 1000000, &v) < 0 || v < 1 || v > 100) {
                *why = "limit must be an integer from 1 to 100";
                return -1;
            }
            out->limit = (int)v;
        } else if (seen == &seen_offset) {
            if (parse_uint(val, 1000000000, &v) < 0 || v > 100000) {
                *why = "offset must be an integer from 0 to 100000";
                return -1;
            }
            out->offset = (int)v;
        } else {
            if (parse_uint(val, INT64_MAX, &v) < 0 || v < 1) {
                *why = "before_id must be a positive id";
                return -1;
            }
            out->before_id = v;
        }
    }
    return 0;
}

int chat_api_query_string(const char *q, size_t len, const char *name, char *out, size_t cap,
                          const char **why)
{
    int found = 0;
    size_t i = 0;
    while (q && i < len) {
        size_t start = i;
        while (i < len && q[i] != '&')
            i++;
        size_t plen = i - start;
        i++;
        const char *p = q + start;
        const char *eq = memchr(p, '=', plen);
        size_t klen = eq ? (size_t)(eq - p) : plen;
        char key[64];
        if (plen == 0 || decode(p, klen, key, sizeof key) < 0 || strcmp(key, name) != 0)
            continue;
        if (found) {
            *why = "a query parameter is repeated";
            return -1;
        }
        found = 1;
        if (!eq || decode(eq + 1, plen - klen - 1, out, cap) <= 0) {
            *why = "a query parameter has no valid value";
            return -1;
        }
    }
    return found;
}
