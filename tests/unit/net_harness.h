/*
 * The harness of the unit tests of net/: a real HTTP server on its own libuv
 * loop in a thread, bound to 127.0.0.1 port 0, with a test handler (echo,
 * deferred answers, big bodies), and a blocking client socket driven from
 * the test thread. Every test ends by closing the server and checking that
 * its loop closes with no live handle. Included by each test_*.c of net/.
 */
#ifndef CHAT_TESTS_NET_HARNESS_H
#define CHAT_TESTS_NET_HARNESS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/json.h"
#include "core/log.h"
#include "core/metrics.h"
#include "net/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Each test file uses part of the harness. */
#define HARNESS static __attribute__((unused))

/* ---- the server under test, on its own thread ---- */

typedef struct tserver {
    uv_loop_t loop;
    uv_async_t stop;
    chat_http_server_t *srv;
    chat_http_server_config_t cfg;
    _Atomic int open;
    pthread_t thread;
    uv_sem_t ready;
    int port;
    int create_err;
    int loop_close_rc;
    _Atomic int dispatched;
    _Atomic int cancelled_seen;
    pthread_mutex_t mu;
    char order[256]; /* tags in the order the handler answered them */
} tserver_t;

HARNESS void defer_closed_cb(uv_handle_t *h)
{
    free(h);
}

HARNESS void note_answer(tserver_t *ts, const char *tag)
{
    pthread_mutex_lock(&ts->mu);
    if (strlen(ts->order) + strlen(tag) + 1 < sizeof ts->order)
        strcat(ts->order, tag);
    pthread_mutex_unlock(&ts->mu);
}

/* Value of key in a query string, copied into out (empty when absent). */
HARNESS void query_get(const char *q, const char *key, char *out, size_t cap)
{
    out[0] = '\0';
    size_t kl = strlen(key);
    for (const char *p = q; p && *p;) {
        if (strncmp(p, key, kl) == 0 && p[kl] == '=') {
            p += kl + 1;
            size_t n = strcspn(p, "&");
            if (n >= cap)
                n = cap - 1;
            memcpy(out, p, n);
            out[n] = '\0';
            return;
        }
        p = strchr(p, '&');
        if (p)
            p++;
    }
}

HARNESS void answer_echo(chat_http_request_t *req, const char *tag)
{
    chat_buf_t b = CHAT_BUF_INIT;
    chat_buf_puts(&b, "{\"method\":");
    chat_json_put_str(&b, req->method_str, strlen(req->method_str));
    chat_buf_puts(&b, ",\"path\":");
    chat_json_put_str(&b, req->path, req->path_len);
    chat_buf_puts(&b, ",\"query\":");
    chat_json_put_cstr_or_null(&b, req->query);
    chat_buf_puts(&b, ",\"auth\":");
    chat_json_put_cstr_or_null(&b, req->authorization);
    chat_buf_puts(&b, ",\"upgrade\":");
    chat_json_put_cstr_or_null(&b, req->upgrade);
    chat_buf_puts(&b, ",\"inm\":");
    chat_json_put_cstr_or_null(&b, req->if_none_match);
    chat_buf_printf(&b, ",\"tag\":\"%s\",\"body_len\":%zu,\"body\":", tag, req->body_len);
    chat_json_put_str(&b, req->body, req->body_len);
    chat_buf_puts(&b, "}");
    size_t len;
    char *body = chat_buf_steal(&b, &len);
    chat_http_respond_owned(req, 200, NULL, body, len);
}

HARNESS void defer_fire_cb(uv_timer_t *t)
{
    chat_http_request_t *req = t->data;
    tserver_t *ts = req->server_data;
    char tag[32];
    query_get(req->query, "tag", tag, sizeof tag);
    if (chat_http_request_cancelled(req))
        atomic_fetch_add(&ts->cancelled_seen, 1);
    note_answer(ts, tag);
    char kb[16] = "";
    query_get(req->query, "kb", kb, sizeof kb);
    if (kb[0]) {
        /* /defer?ms=…&kb=N: a late answer of N KiB, as a database page would come. */
        size_t len = (size_t)atoi(kb) * 1024;
        char *body = chat_malloc(len);
        memset(body, 'y', len);
        chat_http_respond_owned(req, 200, "Content-Type: text/plain\r\n", body, len);
    } else {
        answer_echo(req, tag);
    }
    uv_close((uv_handle_t *)t, defer_closed_cb);
}

HARNESS void handler(chat_http_request_t *req)
{
    tserver_t *ts = req->server_data;
    /* cmocka asserts belong to the test thread: check invariants the blunt way here. */
    if (!req->body || req->body[req->body_len] != '\0' || req->data || !req->path ||
        !req->method_str)
        abort();
    atomic_fetch_add(&ts->dispatched, 1);
    char tag[32] = "";
    if (req->query)
        query_get(req->query, "tag", tag, sizeof tag);
    if (strcmp(req->path, "/echo") == 0) {
        req->route = "/echo";
        char priv[4] = "";
        if (req->query)
            query_get(req->query, "private", priv, sizeof priv);
        req->no_store = priv[0] == '1'; /* a private answer */
        note_answer(ts, tag);
        answer_echo(req, tag);
    } else if (strcmp(req->path, "/defer") == 0) {
        /* Answers later, from a timer on the server's loop. */
        req->route = "/defer";
        char ms[16];
        query_get(req->query, "ms", ms, sizeof ms);
        uv_timer_t *t = chat_malloc(sizeof *t);
        uv_timer_init(&ts->loop, t);
        t->data = req;
        uv_timer_start(t, defer_fire_cb, (uint64_t)atoi(ms), 0);
    } else if (strcmp(req->path, "/big") == 0) {
        req->route = "/big";
        char kb[16];
        query_get(req->query, "kb", kb, sizeof kb);
        size_t len = (size_t)atoi(kb) * 1024;
        char *body = chat_malloc(len);
        memset(body, 'x', len);
        chat_http_respond_owned(req, 200, "Content-Type: text/plain\r\n", body, len);
    } else if (strcmp(req->path, "/nocontent") == 0) {
        chat_http_respond(req, 204, NULL, NULL, 0);
    } else {
        static const char nf[] = "{\"error\": {\"code\": \"not_found\", \"message\": \"no\"}}";
        chat_http_respond(req, 404, "X-Test: 1\r\n", nf, sizeof nf - 1);
    }
}

HARNESS void server_closed_cb(void *arg)
{
    tserver_t *ts = arg;
    ts->srv = NULL;
    uv_close((uv_handle_t *)&ts->stop, NULL);
}

HARNESS void stop_cb(uv_async_t *a)
{
    tserver_t *ts = a->data;
    if (ts->srv)
        chat_http_server_close(ts->srv, server_closed_cb, ts);
}

HARNESS void *server_main(void *arg)
{
    tserver_t *ts = arg;
    uv_loop_init(&ts->loop);
    uv_async_init(&ts->loop, &ts->stop, stop_cb);
    ts->stop.data = ts;
    int err = 0;
    ts->srv = chat_http_server_create(&ts->loop, &ts->cfg, &err);
    ts->create_err = err;
    ts->port = ts->srv ? chat_http_server_port(ts->srv) : -1;
    if (!ts->srv)
        uv_close((uv_handle_t *)&ts->stop, NULL);
    uv_sem_post(&ts->ready);
    uv_run(&ts->loop, UV_RUN_DEFAULT);
    ts->loop_close_rc = uv_loop_close(&ts->loop);
    return NULL;
}

HARNESS tserver_t *server_start_with(void (*tweak)(chat_http_server_config_t *))
{
    tserver_t *ts = chat_calloc(1, sizeof *ts);
    pthread_mutex_init(&ts->mu, NULL);
    uv_sem_init(&ts->ready, 0);
    ts->cfg = (chat_http_server_config_t){
        .host = "127.0.0.1",
        .port = 0,
        .header_timeout_ms = 10000,
        .idle_timeout_ms = 60000,
        .max_head = 16 * 1024,
        .max_body = 64 * 1024,
        .max_pending_output = 1024 * 1024,
        .open_connections = &ts->open,
        .max_connections = 1000,
        .handler = handler,
        .handler_data = ts,
    };
    if (tweak)
        tweak(&ts->cfg);
    pthread_create(&ts->thread, NULL, server_main, ts);
    uv_sem_wait(&ts->ready);
    assert_int_equal(ts->create_err, 0);
    assert_true(ts->port > 0);
    return ts;
}

HARNESS tserver_t *server_start(void)
{
    return server_start_with(NULL);
}

/* Closes the server gracefully and checks that nothing is left on its loop. */
HARNESS void server_stop(tserver_t *ts)
{
    uv_async_send(&ts->stop);
    pthread_join(ts->thread, NULL);
    assert_int_equal(ts->loop_close_rc, 0);
    assert_int_equal(atomic_load(&ts->open), 0);
    uv_sem_destroy(&ts->ready);
    pthread_mutex_destroy(&ts->mu);
    free(ts);
}

HARNESS uint64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

/* Waits (up to timeout_ms) until *v reaches at least want; returns the last value seen. */
HARNESS int wait_atomic_at_least(_Atomic int *v, int want, int timeout_ms)
{
    uint64_t end = now_ms() + (uint64_t)timeout_ms;
    int x;
    while ((x = atomic_load(v)) < want && now_ms() < end)
        usleep(2000);
    return x;
}

HARNESS int wait_atomic_equal(_Atomic int *v, int want, int timeout_ms)
{
    uint64_t end = now_ms() + (uint64_t)timeout_ms;
    int x;
    while ((x = atomic_load(v)) != want && now_ms() < end)
        usleep(2000);
    return x;
}

/* ---- a blocking client ---- */

typedef struct cli {
    int fd;
    chat_buf_t in; /* received, not yet consumed */
    bool eof;
} cli_t;

typedef struct resp {
    int status;
    char head[8192];
    char *body; /* NUL-terminated copy, owned */
    size_t body_len;
} resp_t;

HARNESS void cli_open(cli_t *c, int port)
{
    memset(c, 0, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(c->fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    assert_int_equal(connect(c->fd, (struct sockaddr *)&a, sizeof a), 0);
}

HARNESS void cli_close(cli_t *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    chat_buf_dispose(&c->in);
}

/* Closes with a reset (SO_LINGER 0), as a client that goes away abruptly. */
HARNESS void cli_reset(cli_t *c)
{
    struct linger l = {.l_onoff = 1, .l_linger = 0};
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    cli_close(c);
}

HARNESS void cli_send(cli_t *c, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        assert_true(n > 0);
        p += n;
        len -= (size_t)n;
    }
}

HARNESS void cli_sends(cli_t *c, const char *s)
{
    cli_send(c, s, strlen(s));
}

/* Sends what the server takes; stops quietly when it closes or resets. */
HARNESS void cli_send_tolerant(cli_t *c, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        p += n;
        len -= (size_t)n;
    }
}

/* Reads more bytes, waiting up to timeout_ms. Returns bytes read, 0 at EOF or reset, -1 on timeout.
 */
HARNESS int cli_fill(cli_t *c, int timeout_ms)
{
    if (c->eof)
        return 0;
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    int rc = poll(&p, 1, timeout_ms);
    if (rc == 0)
        return -1;
    char buf[65536];
    ssize_t n = recv(c->fd, buf, sizeof buf, 0);
    if (n <= 0) {
        c->eof = true;
        return 0;
    }
    chat_buf_append(&c->in, buf, (size_t)n);
    return (int)n;
}

/* Value of a response header (case-insensitive name), copied into out; false if absent. */
HARNESS bool resp_header(const resp_t *r, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    const char *p = strstr(r->head, "\r\n");
    while (p && p[2] != '\r' && p[2] != '\0') {
        p += 2;
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            size_t n = strcspn(v, "\r");
            if (n >= cap)
                n = cap - 1;
            memcpy(out, v, n);
            out[n] = '\0';
            return true;
        }
        p = strstr(p, "\r\n");
    }
    return false;
}

HARNESS void resp_free(resp_t *r)
{
    free(r->body);
    r->body = NULL;
}

/*
 * Reads one response. no_body: the request was HEAD. Returns 0, or -1 when
 * the connection ended (or nothing came within timeout_ms) first.
 */
HARNESS int cli_read_response_ex(cli_t *c, resp_t *r, bool no_body, int timeout_ms)
{
    memset(r, 0, sizeof *r);
    uint64_t end = now_ms() + (uint64_t)timeout_ms;
    char *hend;
    while (!c->in.data || !(hend = strstr(c->in.data, "\r\n\r\n"))) {
        int left = (int)(end - now_ms());
        if (left <= 0 || cli_fill(c, left) <= 0)
            return -1;
    }
    size_t hlen = (size_t)(hend - c->in.data) + 4;
    assert_true(hlen < sizeof r->head);
    memcpy(r->head, c->in.data, hlen);
    r->head[hlen] = '\0';
    assert_int_equal(strncmp(r->head, "HTTP/1.1 ", 9), 0);
    r->status = atoi(r->head + 9);
    char v[64];
    size_t blen = 0;
    if (!no_body && r->status >= 200 && r->status != 204 && r->status != 304) {
        assert_true(resp_header(r, "Content-Length", v, sizeof v));
        blen = (size_t)strtoull(v, NULL, 10);
    }
    while (c->in.len < hlen + blen) {
        int left = (int)(end - now_ms());
        if (left <= 0 || cli_fill(c, left) <= 0)
            return -1;
    }
    r->body = chat_malloc(blen + 1);
    memcpy(r->body, c->in.data + hlen, blen);
    r->body[blen] = '\0';
    r->body_len = blen;
    size_t rest = c->in.len - hlen - blen;
    memmove(c->in.data, c->in.data + hlen + blen, rest);
    c->in.len = rest;
    c->in.data[rest] = '\0';
    return 0;
}

HARNESS int cli_read_response(cli_t *c, resp_t *r)
{
    return cli_read_response_ex(c, r, false, 5000);
}

/* True when the server ends the connection (EOF or reset) within timeout_ms; data is kept. */
HARNESS bool cli_wait_closed(cli_t *c, int timeout_ms)
{
    uint64_t end = now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        int left = (int)(end - now_ms());
        if (left <= 0)
            return false;
        int n = cli_fill(c, left);
        if (n == 0)
            return true;
        if (n < 0)
            return false;
    }
}

HARNESS void assert_json_error(const resp_t *r, int status, const char *code)
{
    assert_int_equal(r->status, status);
    char ct[64];
    assert_true(resp_header(r, "Content-Type", ct, sizeof ct));
    assert_string_equal(ct, "application/json");
    /* {"error": {"code": "...", "message": "..."}}, whatever the spacing. */
    char *flat = chat_malloc(r->body_len + 1);
    size_t n = 0;
    for (size_t i = 0; i < r->body_len; i++)
        if (r->body[i] != ' ')
            flat[n++] = r->body[i];
    flat[n] = '\0';
    char want[128];
    snprintf(want, sizeof want, "{\"error\":{\"code\":\"%s\",\"message\":\"", code);
    if (strncmp(flat, want, strlen(want)) != 0 || n < 4 || strcmp(flat + n - 3, "\"}}") != 0)
        fail_msg("error body %s, want code %s", r->body, code);
    free(flat);
}

HARNESS int restore_log_level(void **state)
{
    chat_log_level = CHAT_LOG_WARN;
    return 0;
}

#endif
