/*
 * The HTTP server of one worker loop (see http.h): its configuration, the
 * listener, the set of connections it accepted (each starts speaking
 * HTTP/1.1, net/http1.c) and the graceful close, which lets requests in
 * flight finish and frees the server once its last handle is closed.
 */
#include "net/http1.h"
#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"

#include <stdlib.h>
#include <unistd.h>

#define DEFAULT_HEADER_TIMEOUT_MS 10000
#define DEFAULT_BODY_TIMEOUT_MS 20000
#define DEFAULT_IDLE_TIMEOUT_MS 60000
#define DEFAULT_MAX_HEAD (16 * 1024)
#define DEFAULT_MAX_BODY (64 * 1024)
#define DEFAULT_MAX_PENDING_OUTPUT (1024 * 1024)
#define DEFAULT_WS_PING_INTERVAL_MS 30000

int chat_http_server_port(chat_http_server_t *srv)
{
    return srv->port;
}

static void on_accept(chat_listener_t *l)
{
    chat_http_server_t *srv = l->data;
    chat_conn_t *c = chat_http1_conn_create(srv);
    int rc = chat_listener_accept(l, &c->tcp);
    if (rc != 0) {
        chat_conn_close(c, rc == CHAT_EUNAVAILABLE ? "max_connections" : "accept_failed");
        return;
    }
    chat_conn_start(c, srv->gauge);
    chat_http1_conn_begin(c);
}

/* ---- closing ---- */

static void handle_closed(chat_http_server_t *srv)
{
    if (--srv->open_handles > 0)
        return;
    void (*cb)(void *) = srv->close_cb;
    void *arg = srv->close_arg;
    chat_http_metrics_dispose(&srv->metrics);
    free(srv->host);
    free(srv);
    if (cb)
        cb(arg);
}

static void listener_closed(chat_listener_t *l)
{
    handle_closed(l->data);
}

static void conns_closed(chat_conn_set_t *set)
{
    handle_closed(chat_http1_server(set));
}

static void maybe_finish(chat_http_server_t *srv)
{
    if (!srv->conns.closing || srv->conns.nconns > 0 || srv->finishing)
        return;
    srv->finishing = true;
    chat_conn_set_close(&srv->conns, conns_closed);
}

static void conn_freed(chat_conn_set_t *set, bool counted)
{
    chat_http_server_t *srv = chat_http1_server(set);
    if (counted)
        chat_listener_release(&srv->listener);
    maybe_finish(srv);
}

void chat_http_server_close(chat_http_server_t *srv, void (*cb)(void *arg), void *arg)
{
    if (srv->conns.closing)
        return;
    srv->close_cb = cb;
    srv->close_arg = arg;
    chat_listener_close(&srv->listener, listener_closed);
    chat_conn_set_shutdown(&srv->conns);
    maybe_finish(srv);
}

/* ---- creating ---- */

chat_http_server_t *chat_http_server_create(uv_loop_t *loop, const chat_http_server_config_t *cfg,
                                            int *err)
{
    int port = 0;
    int fd = chat_listen_socket(cfg->host, cfg->port, &port);
    if (fd < 0) {
        if (err)
            *err = fd;
        return NULL;
    }
    chat_http_server_t *srv = chat_calloc(1, sizeof *srv);
    srv->cfg = *cfg;
    srv->host = cfg->host ? chat_strdup(cfg->host) : NULL;
    srv->cfg.host = srv->host;
    srv->port = port;
    if (srv->cfg.header_timeout_ms <= 0)
        srv->cfg.header_timeout_ms = DEFAULT_HEADER_TIMEOUT_MS;
    if (srv->cfg.body_timeout_ms <= 0)
        srv->cfg.body_timeout_ms = DEFAULT_BODY_TIMEOUT_MS;
    if (srv->cfg.idle_timeout_ms <= 0)
        srv->cfg.idle_timeout_ms = DEFAULT_IDLE_TIMEOUT_MS;
    if (srv->cfg.max_head == 0)
        srv->cfg.max_head = DEFAULT_MAX_HEAD;
    if (srv->cfg.max_body == 0)
        srv->cfg.max_body = DEFAULT_MAX_BODY;
    if (srv->cfg.max_pending_output == 0)
        srv->cfg.max_pending_output = DEFAULT_MAX_PENDING_OUTPUT;
    if (srv->cfg.ws_ping_interval_ms <= 0)
        srv->cfg.ws_ping_interval_ms = DEFAULT_WS_PING_INTERVAL_MS;
    /* Both kinds are there from the start, at 0; net/ws_conn.c moves upgraded ones. */
    srv->gauge = chat_conn_gauge("http");
    chat_conn_gauge("websocket");
    chat_http_metrics_init(&srv->metrics);
    chat_conn_limits_t lim = {
        .head_ms = (uint64_t)srv->cfg.header_timeout_ms,
        .body_ms = (uint64_t)srv->cfg.body_timeout_ms,
        .idle_ms = (uint64_t)srv->cfg.idle_timeout_ms,
        .ping_ms = (uint64_t)srv->cfg.ws_ping_interval_ms,
        .max_pending_output = srv->cfg.max_pending_output,
        .tcp_sndbuf = srv->cfg.tcp_sndbuf,
        .tcp_notsent_lowat = srv->cfg.tcp_notsent_lowat,
    };
    chat_conn_set_init(&srv->conns, loop, &lim, conn_freed);
    srv->listener.data = srv;
    srv->open_handles = 2;
    int rc = chat_listener_init(&srv->listener, loop, fd, cfg->open_connections,
                                cfg->max_connections, on_accept);
    if (rc != 0) {
        /* The handles close on the next loop run, which frees the server. */
        chat_http_server_close(srv, NULL, NULL);
        if (err)
            *err = rc;
        return NULL;
    }
    chat_log_debug("event=http_listen host=%s port=%d", cfg->host ? cfg->host : "*", port);
    return srv;
}
