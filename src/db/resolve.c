/*
 * Host name resolution for libpq on libuv's thread pool (see resolve.h): which
 * conninfos need it, the lookup, and the host/hostaddr lists handed to
 * PQconnectStartParams.
 */
#include "db/resolve.h"

#include "core/alloc.h"

#include <arpa/inet.h>
#include <libpq-fe.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct chat_db_resolve {
    uv_getaddrinfo_t req;
    const char *host;
    chat_db_resolve_cb cb;
    void *arg;
    int cancelled;
};

static int is_numeric_addr(const char *s)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

char *chat_db_resolve_host(const char *conninfo)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &err);
    PQfreemem(err);
    if (!opts)
        return NULL;
    const char *host = NULL, *hostaddr = NULL;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0)
            hostaddr = o->val;
    }
    char *name = NULL;
    if (host && *host && !(hostaddr && *hostaddr) && host[0] != '/' && host[0] != '@' &&
        !strchr(host, ',') && !is_numeric_addr(host))
        name = chat_strdup(host);
    PQconninfoFree(opts);
    return name;
}

static void resolved_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    chat_db_resolve_t *r = req->data;
    if (r->cancelled) {
        r->cb(UV_ECANCELED, NULL, NULL, "the lookup was abandoned", r->arg);
    } else {
        char addrs[CHAT_DB_RESOLVE_MAX_ADDRS * (INET6_ADDRSTRLEN + 1)] = "";
        size_t hlen = strlen(r->host) + 1;
        size_t hcap = CHAT_DB_RESOLVE_MAX_ADDRS * hlen + 1;
        char *hosts = chat_malloc(hcap);
        hosts[0] = '\0';
        int n = 0;
        for (struct addrinfo *a = status == 0 ? res : NULL; a && n < CHAT_DB_RESOLVE_MAX_ADDRS;
             a = a->ai_next) {
            char ip[INET6_ADDRSTRLEN];
            const void *src = a->ai_family == AF_INET
                                  ? (const void *)&((struct sockaddr_in *)a->ai_addr)->sin_addr
                                  : (const void *)&((struct sockaddr_in6 *)a->ai_addr)->sin6_addr;
            if ((a->ai_family != AF_INET && a->ai_family != AF_INET6) ||
                !inet_ntop(a->ai_family, src, ip, sizeof ip))
                continue;
            snprintf(addrs + strlen(addrs), sizeof addrs - strlen(addrs), "%s%s", n ? "," : "", ip);
            snprintf(hosts + strlen(hosts), hcap - strlen(hosts), "%s%s", n ? "," : "", r->host);
            n++;
        }
        if (n > 0) {
            r->cb(0, hosts, addrs, NULL, r->arg);
        } else {
            char why[300];
            snprintf(why, sizeof why, "could not resolve '%s': %s", r->host,
                     status ? uv_strerror(status) : "no address");
            r->cb(status ? status : UV_EAI_NODATA, NULL, NULL, why, r->arg);
        }
        free(hosts);
    }
    uv_freeaddrinfo(res);
    free(r);
}

int chat_db_resolve_start(uv_loop_t *loop, const char *host, chat_db_resolve_cb cb, void *arg,
                          chat_db_resolve_t **out)
{
    chat_db_resolve_t *r = chat_calloc(1, sizeof *r);
    r->host = host;
    r->cb = cb;
    r->arg = arg;
    r->req.data = r;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int rc = uv_getaddrinfo(loop, &r->req, resolved_cb, host, NULL, &hints);
    if (rc != 0) {
        free(r);
        return rc;
    }
    *out = r;
    return 0;
}

void chat_db_resolve_cancel(chat_db_resolve_t *r)
{
    r->cancelled = 1;
    (void)uv_cancel((uv_req_t *)&r->req);
}
