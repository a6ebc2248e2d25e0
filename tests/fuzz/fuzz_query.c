/*
 * Fuzzes the parsers of a request's path and query (api/query.c, the router
 * and path ids of api/api.c, the decimal scanner of core/num.h, the bearer
 * header): each runs over the input as it would over a request, and every
 * accepted value must be in range and read back the same when written out
 * again in its canonical form.
 */
#include "api/api.h"
#include "core/num.h"
#include "fuzz.h"

#include <stdbool.h>
#include <string.h>
#include <strings.h>

/* Appends "name=value&" with value percent-encoded where it must be. */
static size_t put_param(char *out, size_t off, const char *name, const char *val, size_t vlen)
{
    static const char hex[] = "0123456789ABCDEF";
    off += (size_t)sprintf(out + off, "%s=", name);
    for (size_t i = 0; i < vlen; i++) {
        unsigned char c = (unsigned char)val[i];
        if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
            c == '-' || c == '_' || c == '.') {
            out[off++] = (char)c;
        } else {
            out[off++] = '%';
            out[off++] = hex[c >> 4];
            out[off++] = hex[c & 15];
        }
    }
    out[off++] = '&';
    out[off] = '\0';
    return off;
}

static void check_history(const char *q, size_t len)
{
    chat_api_history_params_t p;
    const char *why = NULL;
    if (chat_api_parse_history_query(q, len, &p, &why) != 0) {
        FUZZ_CHECK(why && why[0]);
        return;
    }
    FUZZ_CHECK(p.limit >= 1 && p.limit <= 100);
    FUZZ_CHECK(p.offset >= 0 && p.offset <= 100000);
    FUZZ_CHECK(p.before_id >= 0 && p.after_seq >= -1);
    FUZZ_CHECK(p.after_seq < 0 || (p.offset == 0 && p.before_id == 0));
    /* Written out canonically, read again: the same. */
    char buf[256];
    int n = snprintf(buf, sizeof buf, "limit=%d&offset=%d", p.limit, p.offset);
    if (p.before_id)
        n += snprintf(buf + n, sizeof buf - (size_t)n, "&before_id=%lld", (long long)p.before_id);
    if (p.after_seq >= 0)
        n = snprintf(buf, sizeof buf, "limit=%d&after_seq=%lld", p.limit, (long long)p.after_seq);
    chat_api_history_params_t p2;
    FUZZ_CHECK(chat_api_parse_history_query(buf, (size_t)n, &p2, &why) == 0);
    FUZZ_CHECK(p2.limit == p.limit && p2.offset == p.offset && p2.before_id == p.before_id &&
               p2.after_seq == p.after_seq);
}

static void check_events(const char *q, size_t len)
{
    chat_api_events_params_t p;
    const char *why = NULL;
    if (chat_api_parse_events_query(q, len, &p, &why) != 0) {
        FUZZ_CHECK(why && why[0]);
        return;
    }
    FUZZ_CHECK(p.after_rev >= 0 && p.limit >= 1 && p.limit <= 1000);
    char buf[128];
    int n = snprintf(buf, sizeof buf, "after_rev=%lld&limit=%d", (long long)p.after_rev, p.limit);
    chat_api_events_params_t p2;
    FUZZ_CHECK(chat_api_parse_events_query(buf, (size_t)n, &p2, &why) == 0);
    FUZZ_CHECK(p2.after_rev == p.after_rev && p2.limit == p.limit);
}

static void check_string(const char *q, size_t len)
{
    char out[64];
    const char *why = NULL;
    int found = chat_api_query_string(q, len, "cursor", out, sizeof out, &why);
    FUZZ_CHECK(found >= -1 && found <= 1);
    if (found < 0) {
        FUZZ_CHECK(why && why[0]);
        return;
    }
    if (found == 0)
        return;
    size_t olen = strlen(out);
    FUZZ_CHECK(olen > 0 && olen < sizeof out);
    /* Encoded again, among other pairs: the same value. */
    char buf[512], again[64];
    size_t n = put_param(buf, 0, "x", "1", 1);
    n = put_param(buf, n, "cursor", out, olen);
    FUZZ_CHECK(chat_api_query_string(buf, n, "cursor", again, sizeof again, &why) == 1);
    FUZZ_CHECK(strcmp(again, out) == 0);
}

static void check_int(const char *q, size_t len, long long lo, long long hi)
{
    long long v = -7;
    const char *why = NULL;
    int found = chat_api_query_int(q, len, "after_id", lo, hi, "range", &v, &why);
    FUZZ_CHECK(found >= -1 && found <= 1);
    if (found < 0) {
        FUZZ_CHECK(why && why[0]);
        return;
    }
    if (found == 0) {
        FUZZ_CHECK(v == -7); /* untouched when absent */
        return;
    }
    FUZZ_CHECK(v >= lo && v <= hi);
    char buf[64];
    int n = snprintf(buf, sizeof buf, "after_id=%lld", v);
    long long v2 = -7;
    FUZZ_CHECK(chat_api_query_int(buf, (size_t)n, "after_id", lo, hi, "range", &v2, &why) == 1);
    FUZZ_CHECK(v2 == v);
}

/* The id parser against a wider oracle: digits, no leading zero, 1..INT64_MAX. */
static void check_id(const char *s, size_t len)
{
    int64_t v = 0;
    int rc = chat_api_parse_id(s, len, &v);
    bool ok = len > 0 && len <= 20 && s[0] != '0';
    unsigned __int128 want = 0;
    for (size_t i = 0; ok && i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            ok = false;
        else
            want = want * 10 + (unsigned)(s[i] - '0');
    }
    ok = ok && want >= 1 && want <= (unsigned __int128)INT64_MAX;
    FUZZ_CHECK((rc == 0) == ok);
    if (ok) {
        FUZZ_CHECK((unsigned __int128)v == want);
        char buf[32];
        int n = snprintf(buf, sizeof buf, "%lld", (long long)v);
        FUZZ_CHECK((size_t)n == len && memcmp(buf, s, len) == 0);
    }
}

/* chat_scan_u64 against the same oracle, with a bound taken from the input. */
static void check_scan(const char *s, size_t len, int64_t max)
{
    int64_t v = -1;
    const char *end = s + len;
    const char *q = chat_scan_u64(s, end, max, &v);
    size_t nd = 0;
    unsigned __int128 want = 0;
    bool over = false;
    while (nd < len && s[nd] >= '0' && s[nd] <= '9') {
        want = want * 10 + (unsigned)(s[nd] - '0');
        if (want > (unsigned __int128)max)
            over = true;
        nd++;
    }
    if (nd == 0 || over) {
        FUZZ_CHECK(q == NULL);
        return;
    }
    FUZZ_CHECK(q == s + nd);
    FUZZ_CHECK(v >= 0 && v <= max && (unsigned __int128)v == want);
}

/* The router: a match, its placeholders put back into the template, gives the path again. */
static void check_route(const char *path, size_t len)
{
    const char *seg = NULL, *sub = NULL;
    size_t seglen = 0, sublen = 0;
    const chat_route_t *r = chat_api_route_match(path, len, &seg, &seglen, &sub, &sublen);
    if (!r)
        return;
    const char *t = chat_api_route_name(r);
    FUZZ_CHECK(t && t[0] == '/' && chat_api_route_allow(r)[0]);
    char *rebuilt = malloc(len + strlen(t) + 1);
    size_t n = 0;
    int k = 0;
    for (const char *p = t; *p;) {
        if (*p == '{') {
            const char *s = k == 0 ? seg : sub;
            size_t sl = k == 0 ? seglen : sublen;
            FUZZ_CHECK(s && sl > 0 && s >= path && s + sl <= path + len);
            FUZZ_CHECK(memchr(s, '/', sl) == NULL);
            memcpy(rebuilt + n, s, sl);
            n += sl;
            k++;
            p = strchr(p, '}') + 1;
        } else {
            rebuilt[n++] = *p++;
        }
    }
    FUZZ_CHECK(k >= 1 || seg == NULL);
    FUZZ_CHECK(k >= 2 || sub == NULL);
    FUZZ_CHECK(n == len && memcmp(rebuilt, path, len) == 0);
    free(rebuilt);
}

static void check_bearer(const char *h)
{
    const char *tok = NULL;
    size_t len = 0;
    if (chat_api_bearer(h, &tok, &len) != 0)
        return;
    FUZZ_CHECK(strncasecmp(h, "Bearer ", 7) == 0);
    FUZZ_CHECK(tok >= h + 7 && tok + len <= h + strlen(h));
    FUZZ_CHECK(len >= 1 && len <= 512);
    for (size_t i = 0; i < len; i++)
        FUZZ_CHECK((unsigned char)tok[i] > ' ' && (unsigned char)tok[i] < 0x7f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The input itself, not NUL-terminated: no parser may read past it. */
    const char *q = (const char *)data;
    check_history(q, size);
    check_events(q, size);
    check_string(q, size);
    check_int(q, size, 0, INT64_MAX);
    check_int(q, size, 1, 1000);
    check_id(q, size);
    check_route(q, size);
    /* The scanner with a bound of the first byte's choosing, over the rest. */
    if (size >= 1) {
        static const int64_t bounds[] = {0, 1, 5, 9, 10, 99, 100, 1000, INT64_MAX / 10, INT64_MAX};
        int64_t max = bounds[data[0] % (sizeof bounds / sizeof bounds[0])];
        check_scan(q + 1, size - 1, max);
    }
    char *h = malloc(size + 1);
    memcpy(h, data, size);
    h[size] = '\0';
    check_bearer(h);
    free(h);
    return 0;
}
