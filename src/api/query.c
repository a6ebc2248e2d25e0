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

/* One name=value pair of a query string: the name decoded, the value raw. */
typedef struct param {
    char key[64];
    const char *val; /* NULL: no '=' */
    size_t val_len;
} param_t;

/*
 * The next pair at or after *pos, skipping empty ones and names that do not
 * decode or are too long to be a parameter of ours. Returns 0 at the end.
 */
static int next_param(const char *q, size_t len, size_t *pos, param_t *p)
{
    while (q && *pos < len) {
        size_t start = *pos, i = start;
        while (i < len && q[i] != '&')
            i++;
        *pos = i + 1; /* past the '&' */
        size_t plen = i - start;
        const char *s = q + start;
        const char *eq = memchr(s, '=', plen);
        size_t klen = eq ? (size_t)(eq - s) : plen;
        if (plen == 0 || decode(s, klen, p->key, sizeof p->key) < 0)
            continue;
        p->val = eq ? eq + 1 : NULL;
        p->val_len = eq ? plen - klen - 1 : 0;
        return 1;
    }
    return 0;
}

int chat_api_parse_history_query(const char *q, size_t len, chat_api_history_params_t *out,
                                 const char **why)
{
    out->limit = 50;
    out->offset = 0;
    out->before_id = 0;
    int seen_limit = 0, seen_offset = 0, seen_before = 0;
    size_t pos = 0;
    param_t p;
    while (next_param(q, len, &pos, &p)) {
        int *seen;
        if (!strcmp(p.key, "limit"))
            seen = &seen_limit;
        else if (!strcmp(p.key, "offset"))
            seen = &seen_offset;
        else if (!strcmp(p.key, "before_id"))
            seen = &seen_before;
        else
            continue;
        if (*seen) {
            *why = "a query parameter is repeated";
            return -1;
        }
        *seen = 1;
        long long v;
        char val[64];
        if (!p.val || decode(p.val, p.val_len, val, sizeof val) < 0) {
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
    size_t pos = 0;
    param_t p;
    while (next_param(q, len, &pos, &p)) {
        if (strcmp(p.key, name) != 0)
            continue;
        if (found) {
            *why = "a query parameter is repeated";
            return -1;
        }
        found = 1;
        if (!p.val || decode(p.val, p.val_len, out, cap) <= 0) {
            *why = "a query parameter has no valid value";
            return -1;
        }
    }
    return found;
}
