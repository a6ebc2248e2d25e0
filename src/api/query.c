/*
 * Query-string parsing for every endpoint that takes parameters: the whole
 * query must be well-formed (every percent escape valid, nothing that
 * decodes to a NUL), known parameters appear at most once, and numbers are
 * plain decimal digits without leading zeros, within their range. Unknown
 * well-formed names are ignored. One iterator walks the pairs.
 */
#include "api/api.h"
#include "core/num.h"

#include <stdbool.h>
#include <stdint.h>
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

#define DECODE_MALFORMED (-1) /* a bad percent escape, or a NUL decoded */
#define DECODE_TOO_LONG (-2)  /* well-formed, but longer than the room given */

/*
 * Percent-decodes [s, s+len) into out (size cap, NUL-terminated): the
 * length, DECODE_MALFORMED or DECODE_TOO_LONG. The whole input is checked
 * even when it does not fit, so that a malformed pair is told apart from a
 * long one. A decoded NUL is malformed: "limit=5%00junk" must not read as 5.
 */
static long decode(const char *s, size_t len, char *out, size_t cap)
{
    size_t o = 0;
    bool fits = true;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '%') {
            if (i + 2 >= len)
                return DECODE_MALFORMED;
            int h = hexval(s[i + 1]), l = hexval(s[i + 2]);
            if (h < 0 || l < 0)
                return DECODE_MALFORMED;
            c = (char)(h * 16 + l);
            i += 2;
        } else if (c == '+') {
            c = ' ';
        }
        if (c == '\0')
            return DECODE_MALFORMED;
        if (o + 1 >= cap)
            fits = false;
        else
            out[o++] = c;
    }
    if (cap)
        out[o] = '\0';
    return fits ? (long)o : DECODE_TOO_LONG;
}

/* Plain decimal digits, no sign, no leading zero (but "0" itself), at most max. */
static int parse_uint(const char *s, long long max, long long *out)
{
    const char *end = s + strlen(s);
    int64_t v;
    if ((s[0] == '0' && s[1]) || chat_scan_u64(s, end, max, &v) != end)
        return -1;
    *out = v;
    return 0;
}

/* One name=value pair of a query string: the name decoded, the value raw. */
typedef struct param {
    char key[64];    /* "" for a name too long to be one of ours */
    const char *val; /* NULL: no '=' */
    size_t val_len;
} param_t;

static const char malformed_why[] = "the query string is malformed";

/*
 * The next pair at or after *pos, skipping empty ones: 1, 0 at the end, or
 * -1 for a pair whose name or value is not well-formed.
 */
static int next_param(const char *q, size_t len, size_t *pos, param_t *p)
{
    while (q && *pos < len) {
        size_t start = *pos, i = start;
        while (i < len && q[i] != '&')
            i++;
        *pos = i + 1; /* past the '&' */
        size_t plen = i - start;
        if (plen == 0)
            continue;
        const char *s = q + start;
        const char *eq = memchr(s, '=', plen);
        size_t klen = eq ? (size_t)(eq - s) : plen;
        long k = decode(s, klen, p->key, sizeof p->key);
        if (k == DECODE_MALFORMED)
            return -1;
        if (k == DECODE_TOO_LONG)
            p->key[0] = '\0';
        p->val = eq ? eq + 1 : NULL;
        p->val_len = eq ? plen - klen - 1 : 0;
        char none[1];
        if (p->val && decode(p->val, p->val_len, none, 0) == DECODE_MALFORMED)
            return -1;
        return 1;
    }
    return 0;
}

/* One integer parameter of an endpoint: its name, range and refusal. */
typedef struct int_param {
    const char *name;
    long long min, max;
    const char *why; /* the 400's message when the value is out of range or not digits */
    long long value; /* out: the value when seen */
    int seen;        /* out */
} int_param_t;

/*
 * Walks the query string once and fills the integer parameters named in ps
 * (others are ignored). A malformed query, or a parameter given twice,
 * without a value, or out of its range refuses the whole query: -1 with
 * *why.
 */
static int parse_ints(const char *q, size_t len, int_param_t *ps, size_t n, const char **why)
{
    size_t pos = 0;
    param_t p;
    int more;
    while ((more = next_param(q, len, &pos, &p)) != 0) {
        if (more < 0) {
            *why = malformed_why;
            return -1;
        }
        int_param_t *ip = NULL;
        for (size_t i = 0; i < n && !ip; i++)
            if (!strcmp(p.key, ps[i].name))
                ip = &ps[i];
        if (!ip)
            continue;
        if (ip->seen) {
            *why = "a query parameter is repeated";
            return -1;
        }
        ip->seen = 1;
        char val[64];
        if (!p.val || decode(p.val, p.val_len, val, sizeof val) < 0) {
            *why = "a query parameter has no valid value";
            return -1;
        }
        if (parse_uint(val, ip->max, &ip->value) < 0 || ip->value < ip->min) {
            *why = ip->why;
            return -1;
        }
    }
    return 0;
}

int chat_api_parse_history_query(const char *q, size_t len, chat_api_history_params_t *out,
                                 const char **why)
{
    enum { LIMIT, OFFSET, BEFORE, AFTER };
    int_param_t ps[] = {
        [LIMIT] = {"limit", 1, 100, "limit must be an integer from 1 to 100", 50, 0},
        [OFFSET] = {"offset", 0, 100000, "offset must be an integer from 0 to 100000", 0, 0},
        [BEFORE] = {"before_id", 1, INT64_MAX, "before_id must be a positive id", 0, 0},
        [AFTER] = {"after_seq", 0, INT64_MAX, "after_seq must be an integer from 0", -1, 0},
    };
    if (parse_ints(q, len, ps, sizeof ps / sizeof ps[0], why) < 0)
        return -1;
    if (ps[AFTER].seen && (ps[OFFSET].seen || ps[BEFORE].seen)) {
        *why = "after_seq cannot be combined with offset or before_id";
        return -1;
    }
    out->limit = (int)ps[LIMIT].value;
    out->offset = (int)ps[OFFSET].value;
    out->before_id = ps[BEFORE].value;
    out->after_seq = ps[AFTER].value;
    return 0;
}

int chat_api_parse_events_query(const char *q, size_t len, chat_api_events_params_t *out,
                                const char **why)
{
    enum { AFTER, LIMIT };
    int_param_t ps[] = {
        [AFTER] = {"after_rev", 0, INT64_MAX, "after_rev must be an integer from 0", 0, 0},
        [LIMIT] = {"limit", 1, 1000, "limit must be an integer from 1 to 1000", 100, 0},
    };
    if (parse_ints(q, len, ps, sizeof ps / sizeof ps[0], why) < 0)
        return -1;
    out->after_rev = ps[AFTER].value;
    out->limit = (int)ps[LIMIT].value;
    return 0;
}

int chat_api_query_string(const char *q, size_t len, const char *name, char *out, size_t cap,
                          const char **why)
{
    int found = 0;
    size_t pos = 0;
    param_t p;
    int more;
    while ((more = next_param(q, len, &pos, &p)) != 0) {
        if (more < 0) {
            *why = malformed_why;
            return -1;
        }
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

int chat_api_query_int(const char *q, size_t len, const char *name, long long min, long long max,
                       const char *range_why, long long *out, const char **why)
{
    int_param_t p = {name, min, max, range_why, 0, 0};
    if (parse_ints(q, len, &p, 1, why) < 0)
        return -1;
    if (p.seen)
        *out = p.value;
    return p.seen;
}
