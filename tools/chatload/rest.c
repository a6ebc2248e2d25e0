/*
 * Blocking pipelined HTTP client; see rest.h.
 */
#include "rest.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static int on_body(http_parser *p, const char *at, size_t n)
{
    cl_bconn_t *c = p->data;
    c->cur = realloc(c->cur, c->curlen + n + 1);
    if (!c->cur)
        abort();
    memcpy(c->cur + c->curlen, at, n);
    c->curlen += n;
    c->cur[c->curlen] = 0;
    return 0;
}

static int on_complete(http_parser *p)
{
    cl_bconn_t *c = p->data;
    if (c->got < c->want) {
        c->resps[c->got].status = (int)p->status_code;
        c->resps[c->got].body = c->cur ? c->cur : strdup("");
        c->resps[c->got].len = c->curlen;
        c->got++;
    } else {
        free(c->cur);
    }
    c->cur = NULL;
    c->curlen = 0;
    return 0;
}

int cl_bconn_open(cl_bconn_t *c, const cl_url_t *u)
{
    memset(c, 0, sizeof *c);
    c->fd = socket(u->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -1;
    struct timeval tv = {.tv_sec = CL_REST_TIMEOUT_S};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    socklen_t len = u->ipv6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (connect(c->fd, (const struct sockaddr *)&u->addr, len) != 0) {
        int e = errno;
        close(c->fd);
        c->fd = -1;
        errno = e;
        return -1;
    }
    http_parser_settings_init(&c->settings);
    c->settings.on_body = on_body;
    c->settings.on_message_complete = on_complete;
    http_parser_init(&c->parser, HTTP_RESPONSE);
    c->parser.data = c;
    return 0;
}

void cl_bconn_close(cl_bconn_t *c)
{
    free(c->cur);
    c->cur = NULL;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

int cl_bconn_batch(cl_bconn_t *c, const char *req, size_t reqlen, cl_resp_t *resps, int n)
{
    c->resps = resps;
    c->want = n;
    c->got = 0;
    size_t off = 0;
    while (off < reqlen) {
        ssize_t w = write(c->fd, req + off, reqlen - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        off += (size_t)w;
    }
    char buf[65536];
    while (c->got < n) {
        ssize_t r = read(c->fd, buf, sizeof buf);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        size_t used = http_parser_execute(&c->parser, &c->settings, buf, (size_t)r);
        if (c->parser.http_errno != HPE_OK || used != (size_t)r)
            return -1;
    }
    return 0;
}

void cl_resps_free(cl_resp_t *r, int n)
{
    for (int i = 0; i < n; i++) {
        free(r[i].body);
        r[i].body = NULL;
    }
}

void cl_sbuf_printf(cl_sbuf_t *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n =
            vsnprintf(b->data ? b->data + b->len : NULL, b->data ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (b->data && (size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        b->cap = (b->cap + (size_t)n + 1) * 2;
        b->data = realloc(b->data, b->cap);
        if (!b->data)
            abort();
    }
}

void cl_sbuf_request(cl_sbuf_t *b, const cl_url_t *u, const char *method, const char *path,
                     const char *token, const char *body)
{
    cl_sbuf_printf(b, "%s %s HTTP/1.1\r\nHost: %s:%d\r\n", method, path, u->host, u->port);
    if (token)
        cl_sbuf_printf(b, "Authorization: Bearer %s\r\n", token);
    cl_sbuf_printf(b, "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                   strlen(body), body);
}
