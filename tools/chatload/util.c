/*
 * Target URL parsing with the loopback-only rule, the descriptor limit and
 * the seed file reader.
 */
#include "chatload.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

int cl_url_parse(cl_url_t *u, const char *s, char *err, size_t errlen)
{
    memset(u, 0, sizeof *u);
    if (strncmp(s, "http://", 7) != 0) {
        snprintf(err, errlen, "url %s: only http:// is supported", s);
        return -1;
    }
    const char *h = s + 7, *end;
    char host[64];
    if (*h == '[') {
        end = strchr(h, ']');
        if (!end || (size_t)(end - h - 1) >= sizeof host) {
            snprintf(err, errlen, "url %s: bad IPv6 address", s);
            return -1;
        }
        memcpy(host, h + 1, (size_t)(end - h - 1));
        host[end - h - 1] = 0;
        end++;
    } else {
        end = h + strcspn(h, ":/");
        if ((size_t)(end - h) >= sizeof host || end == h) {
            snprintf(err, errlen, "url %s: bad host", s);
            return -1;
        }
        memcpy(host, h, (size_t)(end - h));
        host[end - h] = 0;
    }
    int port = 80;
    if (*end == ':') {
        char *pe;
        long p = strtol(end + 1, &pe, 10);
        if (p < 1 || p > 65535 || (*pe && *pe != '/')) {
            snprintf(err, errlen, "url %s: bad port", s);
            return -1;
        }
        port = (int)p;
    } else if (*end && *end != '/') {
        snprintf(err, errlen, "url %s: bad url", s);
        return -1;
    }
    if (strcmp(host, "localhost") == 0)
        strcpy(host, "127.0.0.1");
    struct sockaddr_in *a4 = (struct sockaddr_in *)&u->addr;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&u->addr;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        if ((ntohl(a4->sin_addr.s_addr) >> 24) != 127) {
            snprintf(err, errlen,
                     "refusing target %s: chatload only loads loopback (127.0.0.0/8 or ::1)", host);
            return -1;
        }
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
    } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        if (!IN6_IS_ADDR_LOOPBACK(&a6->sin6_addr)) {
            snprintf(err, errlen,
                     "refusing target %s: chatload only loads loopback (127.0.0.0/8 or ::1)", host);
            return -1;
        }
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        u->ipv6 = 1;
    } else {
        snprintf(err, errlen,
                 "refusing target %s: give a numeric loopback address (127.x.x.x or [::1])", host);
        return -1;
    }
    snprintf(u->host, sizeof u->host, "%s", host);
    u->port = port;
    return 0;
}

long cl_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -1;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            getrlimit(RLIMIT_NOFILE, &rl);
    }
    return (long)rl.rlim_cur;
}

int cl_seed_load(cl_seed_t *s, const char *path)
{
    memset(s, 0, sizeof *s);
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root) {
        fprintf(stderr, "chatload: seed file %s: %s (line %d)\n", path, jerr.text, jerr.line);
        return -1;
    }
    json_t *users = json_object_get(root, "users"), *convs = json_object_get(root, "conversations");
    if (!json_is_array(users) || !json_is_array(convs) || !json_array_size(users) ||
        !json_array_size(convs)) {
        fprintf(stderr,
                "chatload: seed file %s: needs non-empty \"users\" and \"conversations\" arrays\n",
                path);
        json_decref(root);
        return -1;
    }
    s->nusers = json_array_size(users);
    s->nconvs = json_array_size(convs);
    s->users = calloc(s->nusers, sizeof *s->users);
    s->convs = calloc(s->nconvs, sizeof *s->convs);
    if (!s->users || !s->convs)
        abort();
    for (size_t i = 0; i < s->nusers; i++) {
        json_t *u = json_array_get(users, i);
        const char *tok = json_string_value(json_object_get(u, "token"));
        s->users[i].id = json_integer_value(json_object_get(u, "id"));
        s->users[i].token = strdup(tok ? tok : "");
    }
    for (size_t i = 0; i < s->nconvs; i++) {
        json_t *c = json_array_get(convs, i), *m = json_object_get(c, "members");
        cl_conv_t *cv = &s->convs[i];
        cv->id = json_integer_value(json_object_get(c, "id"));
        cv->nmembers = json_is_array(m) ? (int)json_array_size(m) : 0;
        cv->members = calloc(cv->nmembers ? (size_t)cv->nmembers : 1, sizeof *cv->members);
        if (!cv->members)
            abort();
        for (int k = 0; k < cv->nmembers; k++) {
            json_int_t idx = json_integer_value(json_array_get(m, (size_t)k));
            cv->members[k] = (idx >= 0 && (size_t)idx < s->nusers) ? (int)idx : 0;
        }
        if (!cv->nmembers) {
            cv->nmembers = 1;
            cv->members[0] = 0;
        }
    }
    json_decref(root);
    return 0;
}

void cl_seed_dispose(cl_seed_t *s)
{
    for (size_t i = 0; i < s->nusers; i++)
        free(s->users[i].token);
    for (size_t i = 0; i < s->nconvs; i++)
        free(s->convs[i].members);
    free(s->users);
    free(s->convs);
    memset(s, 0, sizeof *s);
}
