/*
 * Private to net/: the HTTP server's state, shared by http_server.c (the
 * listener, the connections, the graceful close) and http1.c (HTTP/1.1 on
 * one connection), and the hand-over of a connection at a 101 to another
 * protocol (net/ws_conn.c uses it).
 */
#ifndef CHAT_NET_HTTP1_H
#define CHAT_NET_HTTP1_H

#include "core/metrics.h"
#include "net/conn.h"
#include "net/http.h"
#include "net/http_metrics.h"
#include "net/listen.h"

#include <stdbool.h>
#include <time.h>

struct chat_http_server {
    chat_http_server_config_t cfg; /* defaults filled in */
    chat_listener_t listener;
    chat_conn_set_t conns; /* conns.closing: chat_http_server_close() was called */
    chat_http_metrics_t metrics;
    chat_metric_t *gauge; /* chatd_connections_open{kind="http"} */
    char *host;
    int port;
    int open_handles; /* the listener and the connection set */
    bool finishing;   /* no connection left: the handles are closing */
    void (*close_cb)(void *arg);
    void *close_arg;
    time_t date_sec; /* the Date header, formatted once a second */
    char date[40];
};

/** The server whose connection set is set. */
static inline chat_http_server_t *chat_http1_server(chat_conn_set_t *set)
{
    return CHAT_CONTAINER_OF(set, chat_http_server_t, conns);
}

/**
 * A new connection of srv speaking HTTP/1.1, its handle initialised: accept
 * into c->tcp, then chat_http1_conn_begin(), or end it with chat_conn_close().
 */
chat_conn_t *chat_http1_conn_create(chat_http_server_t *srv);

/** The connection is accepted and counted: waits for its first request. */
void chat_http1_conn_begin(chat_conn_t *c);

/**
 * Takes the connection over after a 101: c speaks the new protocol from now
 * on (the callee calls chat_conn_switch()). input holds the bytes the client
 * sent after its request, passed to the callee (NULL when none). When c is
 * already closing (it ended before the 101 could go out), the callee only
 * switches, so that its on_closed ends it.
 */
typedef void (*chat_http1_switch_cb)(chat_conn_t *c, char *input, size_t len, void *ud);

/**
 * Answers req, an upgrade request (GET with Upgrade and Connection: upgrade,
 * whose protocol the caller has checked), with 101 Switching Protocols,
 * "Connection: Upgrade" and headers (lines ending in CRLF), after any earlier
 * pipelined answers, and then hands the connection to cb (called exactly
 * once, perhaps before this returns). Ends req's life like
 * chat_http_respond(). Returns 0; or, with no callback ever: CHAT_ECONNLOST
 * when the client has gone (req is freed), CHAT_EBADREQUEST when req is not
 * an upgrade request (answered 400) and CHAT_EUNAVAILABLE when the server is
 * closing (answered 503).
 */
int chat_http1_upgrade(chat_http_request_t *req, const char *headers, chat_http1_switch_cb cb,
                       void *ud);

#endif
