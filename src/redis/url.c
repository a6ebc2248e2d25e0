/*
 * Redis URL parsing and asynchronous host resolution (see url.h).
 */
#include "redis/url.h"

#include "core/error.h"

#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((format(printf, 3, 4))) static int fail(char *err, size_t errlen, const char *fmt,
                                                      ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return CHAT_EINVAL;
}

/* Reads at most max digits at *p into *v; the number of digits read. */
static int digits(const char **p, int max, long *v)
{
    int n = 0;
    *v = 0;
    while (**p >= '0' && **p <= '9' && n < max) {
        *v = *v * 10 + (**p - '0');
        (*p)++;
        n++;
    }
    return n;
}

/* Fills u->addr when the host is an IP address. */
static void numeric_addr(chat_redis_url_t *u)
{
    struct sockaddr_in *a4 = (struct sockaddr_in *)&u->addr;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&u->addr;
    memset(&u->addr, 0, sizeof u->addr);
    if (uv_ip4_addr(u->host, u->port, a4) == 0)
        u->numeric = true;
    else if (uv_ip6_addr(u->host, u->port, a6) == 0)
        u->numeric = true;
    else
        u->numeric = false;
}

int chat_redis_url_parse(chat_redis_url_t *u, const char *url, char *err, size_t errlen)
{
    const char *p, *h, *he;
    long v;

    memset(u, 0, sizeof *u);
    if (url == NULL || strncmp(url, "redis://", 8) != 0)
        return fail(err, errlen, "redis URL must look like redis://host:port[/db], got \"%s\"",
                    url ? url : "(null)");
    p = url + 8;
    if (strpbrk(p, "@?#") != NULL)
        return fail(err, errlen, "redis URL \"%s\": credentials and options are not supported",
                    url);
    if (*p == '[') { /* [IPv6 literal] */
        h = p + 1;
        he = strchr(h, ']');
        if (he == NULL)
            return fail(err, errlen, "redis URL \"%s\": unterminated [ in host", url);
        p = he + 1;
    } else {
        h = p;
        he = p + strcspn(p, ":/");
        p = he;
    }
    if (he == h)
        return fail(err, errlen, "redis URL \"%s\": missing host", url);
    if ((size_t)(he - h) >= sizeof u->host)
        return fail(err, errlen, "redis URL \"%s\": host longer than 255 bytes", url);
    u->port = 6379;
    if (*p == ':') {
        p++;
        if (digits(&p, 6, &v) == 0 || (*p != '\0' && *p != '/') || v < 1 || v > 65535)
            return fail(err, errlen, "redis URL \"%s\": port must be a number from 1 to 65535",
                        url);
        u->port = (int)v;
    }
    if (*p == '/') {
        p++;
        digits(&p, 6, &v);
        if (*p != '\0')
            return fail(err, errlen, "redis URL \"%s\": db must be a number from 0 to 999999", url);
        u->db = (int)v;
    }
    if (*p != '\0')
        return fail(err, errlen, "redis URL \"%s\": unexpected \"%s\" after the host", url, p);
    memcpy(u->host, h, (size_t)(he - h));
    u->host[he - h] = '\0';
    snprintf(u->text, sizeof u->text, strchr(u->host, ':') ? "[%s]:%d" : "%s:%d", u->host, u->port);
    numeric_addr(u);
    return 0;
}

bool chat_redis_url_is_cluster(const char *url)
{
    return url != NULL &&
           strncmp(url, CHAT_REDIS_CLUSTER_SCHEME, strlen(CHAT_REDIS_CLUSTER_SCHEME)) == 0;
}

int chat_redis_cluster_url_parse(chat_redis_url_t *seeds, int max, int *n, const char *url,
                                 char *err, size_t errlen)
{
    const char *p;
    *n = 0;
    if (!chat_redis_url_is_cluster(url))
        return fail(err, errlen,
                    "redis cluster URL must look like redis+cluster://host:port[,host:port...], "
                    "got \"%s\"",
                    url ? url : "(null)");
    p = url + strlen(CHAT_REDIS_CLUSTER_SCHEME);
    for (;;) {
        size_t len = strcspn(p, ",");
        char one[CHAT_REDIS_HOST_MAX + 32];
        if (len == 0)
            return fail(err, errlen, "redis cluster URL \"%s\": empty node", url);
        if (*n >= max)
            return fail(err, errlen, "redis cluster URL \"%s\": more than %d nodes", url, max);
        if (len + 9 > sizeof one)
            return fail(err, errlen, "redis cluster URL \"%s\": node longer than %zu bytes", url,
                        sizeof one - 9);
        snprintf(one, sizeof one, "redis://%.*s", (int)len, p);
        char why[CHAT_REDIS_HOST_MAX + 160];
        if (chat_redis_url_parse(&seeds[*n], one, why, sizeof why) != 0)
            return fail(err, errlen, "redis cluster URL \"%s\": node %d: %s", url, *n + 1, why);
        if (seeds[*n].db != 0)
            return fail(err, errlen, "redis cluster URL \"%s\": a cluster has no db but 0", url);
        (*n)++;
        p += len;
        if (*p == '\0')
            return 0;
        p++; /* the comma */
    }
}

/* ---- resolution ---- */

struct chat_redis_resolve {
    uv_getaddrinfo_t req;
    chat_redis_resolve_cb cb; /* NULL once cancelled */
    void *arg;
};

/* The first IPv4 address, else the first one: the choice hiredis makes. */
static const struct sockaddr *pick(const struct addrinfo *res)
{
    for (const struct addrinfo *a = res; a; a = a->ai_next)
        if (a->ai_family == AF_INET)
            return a->ai_addr;
    return res ? res->ai_addr : NULL;
}

static void resolved_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    chat_redis_resolve_t *q = req->data;
    const struct sockaddr *addr = status == 0 ? pick(res) : NULL;
    if (q->cb) {
        if (status == 0 && addr == NULL)
            status = UV_EAI_NONAME;
        q->cb(status, addr, q->arg);
    }
    uv_freeaddrinfo(res);
    free(q);
}

int chat_redis_url_resolve(uv_loop_t *loop, const chat_redis_url_t *u, chat_redis_resolve_cb cb,
                           void *arg, chat_redis_resolve_t **out)
{
    char port[8];
    struct addrinfo hints;
    chat_redis_resolve_t *q = chat_calloc(1, sizeof *q);
    int rc;

    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    snprintf(port, sizeof port, "%d", u->port);
    q->cb = cb;
    q->arg = arg;
    q->req.data = q;
    rc = uv_getaddrinfo(loop, &q->req, resolved_cb, u->host, port, &hints);
    if (rc != 0) {
        free(q);
        return rc;
    }
    *out = q;
    return 0;
}

void chat_redis_resolve_cancel(chat_redis_resolve_t *q)
{
    q->cb = NULL;
    uv_cancel((uv_req_t *)&q->req); /* may fail when running already: resolved_cb frees q */
}

int chat_redis_addr_ip(const struct sockaddr *addr, char *out, size_t len)
{
    if (addr->sa_family == AF_INET6)
        return uv_ip6_name((const struct sockaddr_in6 *)addr, out, len);
    return uv_ip4_name((const struct sockaddr_in *)addr, out, len);
}
