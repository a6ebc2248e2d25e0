/*
 * One GET at a time on its own connection; see fetch.h.
 */
#include "fetch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cl_fetch_init(cl_fetch_t *f)
{
    memset(f, 0, sizeof *f);
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    cl_fetch_t *f = p->data;
    if (f->_len + n + 1 > f->_cap) {
        f->_cap = (f->_len + n + 1) * 2;
        f->_body = realloc(f->_body, f->_cap);
        if (!f->_body)
            abort();
    }
    memcpy(f->_body + f->_len, at, n);
    f->_len += n;
    f->_body[f->_len] = 0;
    return 0;
}

static int on_complete(http_parser *p)
{
    cl_fetch_t *f = p->data;
    f->_done = true;
    f->_status = (int)p->status_code;
    return 0;
}

static void on_closed(uv_handle_t *h)
{
    cl_fetch_t *f = h->data;
    f->_busy = false;
    f->_cb(f->_done ? f->_status : 0, f->_body ? f->_body : "", f->_len, f->_ud);
}

static void finish(cl_fetch_t *f)
{
    if (!uv_is_closing((uv_handle_t *)&f->_tcp))
        uv_close((uv_handle_t *)&f->_tcp, on_closed);
}

static void alloc_cb(uv_handle_t *h, size_t sug, uv_buf_t *b)
{
    static char buf[65536];
    b->base = buf;
    b->len = sizeof buf;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    cl_fetch_t *f = s->data;
    if (n == 0)
        return;
    if (n < 0) {
        if (n == UV_EOF)
            http_parser_execute(&f->_parser, &f->_settings, NULL, 0);
        finish(f);
        return;
    }
    http_parser_execute(&f->_parser, &f->_settings, b->base, (size_t)n);
    if (f->_done || f->_parser.http_errno != HPE_OK)
        finish(f);
}

static void on_written(uv_write_t *w, int status)
{
    cl_fetch_t *f = w->data;
    if (status != 0)
        finish(f);
}

static void on_connected(uv_connect_t *req, int status)
{
    cl_fetch_t *f = req->data;
    if (status != 0) {
        finish(f);
        return;
    }
    uv_buf_t b = uv_buf_init(f->_req, (unsigned)strlen(f->_req));
    f->_write.data = f;
    if (uv_read_start((uv_stream_t *)&f->_tcp, alloc_cb, on_read) != 0 ||
        uv_write(&f->_write, (uv_stream_t *)&f->_tcp, &b, 1, on_written) != 0)
        finish(f);
}

int cl_fetch_get(cl_fetch_t *f, uv_loop_t *loop, const cl_url_t *u, const char *path,
                 cl_fetch_cb cb, void *ud)
{
    if (f->_busy)
        return -1;
    f->_busy = true;
    f->_done = false;
    f->_status = 0;
    f->_len = 0;
    if (f->_body)
        f->_body[0] = 0;
    f->_cb = cb;
    f->_ud = ud;
    snprintf(f->_req, sizeof f->_req, "GET %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n",
             path, u->host, u->port);
    http_parser_settings_init(&f->_settings);
    f->_settings.on_body = on_body;
    f->_settings.on_message_complete = on_complete;
    http_parser_init(&f->_parser, HTTP_RESPONSE);
    f->_parser.data = f;
    uv_tcp_init(loop, &f->_tcp);
    f->_tcp.data = f;
    f->_connect.data = f;
    if (uv_tcp_connect(&f->_connect, &f->_tcp, (const struct sockaddr *)&u->addr, on_connected) !=
        0)
        finish(f);
    return 0;
}

bool cl_fetch_busy(const cl_fetch_t *f)
{
    return f->_busy;
}

void cl_fetch_cancel(cl_fetch_t *f)
{
    if (f->_busy) {
        f->_done = false;
        finish(f);
    }
}

void cl_fetch_dispose(cl_fetch_t *f)
{
    free(f->_body);
    f->_body = NULL;
    f->_len = f->_cap = 0;
}
