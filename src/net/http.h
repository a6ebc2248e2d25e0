/*
 * HTTP/1.1 server on a libuv loop, its public API: accepts connections on a
 * SO_REUSEPORT listener, parses requests, enforces the limits and timeouts,
 * and hands each complete request to one handler. Responses go out in
 * request order (pipelining); a handler may answer at once or later from
 * another callback (after a database query). The server knows nothing of
 * chat. Implemented by net/http_server.c and net/http1.c; a request may be
 * turned into a WebSocket with net/ws_conn.h.
 */
#ifndef CHAT_NET_HTTP_H
#define CHAT_NET_HTTP_H

#include "core/blob.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct chat_http_server chat_http_server_t;
typedef struct chat_http_request chat_http_request_t;

/**
 * One parsed request. Every pointer stays valid until chat_http_respond() is
 * called for it, which ends the request's life. Strings are NUL-terminated.
 */
struct chat_http_request {
    int method;             /* http_parser's enum http_method (HTTP_GET, ...) */
    const char *method_str; /* "GET", ... */
    const char *path;       /* raw path, without the query, e.g. "/api/v1/users/1" */
    size_t path_len;
    const char *query; /* raw query without '?', NULL when there is none */
    size_t query_len;
    const char *body; /* never NULL; "" when there is no body */
    size_t body_len;
    const char *authorization; /* value of the Authorization header, NULL if absent */
    const char *upgrade;       /* value of the Upgrade header, NULL if absent */
    const char *connection;    /* value of the Connection header(s), NULL if absent */
    const char *ws_key;        /* Sec-WebSocket-Key, NULL if absent */
    const char *ws_version;    /* Sec-WebSocket-Version, NULL if absent */
    const char *origin;        /* Origin (lines joined by ", "), NULL if absent */
    const char *if_none_match; /* If-None-Match (lines joined by ", "), NULL if absent */
    int http_minor;            /* 0 for HTTP/1.0, 1 for HTTP/1.1 */
    uint64_t conn_id;          /* id of the connection, for logs */
    void *server_data;         /* the handler_data given in the server config */
    /**
     * Route template for metrics and logs, e.g. "/api/v1/users/{id}". The
     * handler sets it (string literal); "unmatched" by default.
     */
    const char *route;
    /**
     * Set by the handler when the answer is private (it depends on who
     * asks): the answer then carries "Cache-Control: no-store".
     */
    bool no_store;
    void *data; /* free for the handler's own use */
    /* private fields follow in net/http1.c */
};

/**
 * Called once per complete request. Must eventually call chat_http_respond().
 * Pipelined requests are handed over as they complete (up to 4 with the
 * handler per connection, fewer while its answers not yet written are large,
 * none while they pass max_pending_output), except around a request whose method is not safe (POST,
 * PUT, PATCH, DELETE, ...): it is handed over only once every earlier request
 * is answered, and later ones wait for its answer, so a pipelined read sees
 * an earlier write. Answers always leave in request order.
 */
typedef void (*chat_http_handler_cb)(chat_http_request_t *req);

typedef struct chat_http_server_config {
    const char *host;
    int port;
    int header_timeout_ms; /* a request head must arrive within this from its first byte
                              (the first one from the connect): else 408 and close */
    int body_timeout_ms;   /* a request body must arrive within this from the end of its
                              head, however it trickles: else 408 and close (20000) */
    int idle_timeout_ms;   /* a connection with nothing in flight closes this long after
                              it became idle; bytes that start no request (blank lines)
                              do not extend it, nor does anything but writing progress
                              while answers wait for the socket */
    size_t max_head; /* request line, headers (and trailers) as sent, CRLFs included: over this ->
                        431 (16 KiB) */
    size_t max_body; /* body (also chunked, decoded): over this -> 413 (64 KiB) */
    size_t max_pending_output; /* answers of one connection not yet written (1 MiB): over
                                  this no further request is read or handed over until
                                  they drain; a WebSocket client past it is dropped */
    int tcp_sndbuf;            /* SO_SNDBUF of accepted sockets, bytes; 0: autotuned */
    int tcp_notsent_lowat;     /* TCP_NOTSENT_LOWAT of accepted sockets, bytes; 0: system */
    int ws_ping_interval_ms;   /* a WebSocket silent this long is pinged, and dropped when
                                  it stays silent as long again (default 30000) */
    /* Counter of open connections shared by all workers, and the cap. */
    _Atomic int *open_connections;
    int max_connections;
    /*
     * Bytes of answers built and not yet written, shared by all workers (NULL:
     * not counted), and the budget: while the count is over it, a connection
     * whose answer the socket does not take at once is closed (0: none).
     */
    _Atomic size_t *unsent_bytes;
    size_t max_unsent_bytes;
    chat_http_handler_cb handler;
    void *handler_data;
} chat_http_server_config_t;

/**
 * Binds a listener with SO_REUSEPORT on loop and starts accepting. Returns the
 * server, or NULL with a libuv error code in *err. cfg is copied.
 */
chat_http_server_t *chat_http_server_create(uv_loop_t *loop, const chat_http_server_config_t *cfg,
                                            int *err);

/** The port the server is bound to (useful with port 0), or -1. */
int chat_http_server_port(chat_http_server_t *srv);

/**
 * Graceful close: stops accepting, closes idle connections at once, lets
 * requests in flight finish (closing their connection after the response),
 * and calls cb when every handle of the server is closed. After cb the server
 * is freed.
 */
void chat_http_server_close(chat_http_server_t *srv, void (*cb)(void *arg), void *arg);

/** True when the client of req has gone away; the handler should respond anyway, to free it. */
bool chat_http_request_cancelled(const chat_http_request_t *req);

/**
 * The address of req's client (the TCP peer) in out. Returns 0, or a libuv
 * error (UV_ENOTCONN once the client has gone).
 */
int chat_http_request_peer(const chat_http_request_t *req, struct sockaddr_storage *out);

/**
 * Sends the response to req and ends its life (req is invalid afterwards).
 * headers: extra header lines, each ending in "\r\n", or NULL. Content-Length,
 * Date, Connection, "X-Content-Type-Options: nosniff" (on every answer but a
 * 1xx), "Cache-Control: no-store" (when req->no_store) and (when body_len > 0
 * and no Content-Type is in headers) "Content-Type: application/json" are
 * added. body is copied.
 * For a cancelled request it only frees.
 */
void chat_http_respond(chat_http_request_t *req, int status, const char *headers, const char *body,
                       size_t body_len);

/**
 * Like chat_http_respond(), but takes ownership of body (malloc'd, freed by
 * the server when written) to avoid a copy.
 */
void chat_http_respond_owned(chat_http_request_t *req, int status, const char *headers, char *body,
                             size_t body_len);

/**
 * Like chat_http_respond(), with a body shared with other answers: takes
 * over the reference, dropped when the answer is written.
 */
void chat_http_respond_shared(chat_http_request_t *req, int status, const char *headers,
                              chat_blob_t *body);

#endif
