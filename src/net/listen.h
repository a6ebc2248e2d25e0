/*
 * The listening side of the HTTP server: a SO_REUSEPORT socket per worker
 * loop (the kernel spreads new connections over the workers), accepting
 * them, and the cap on open connections that every worker shares through
 * one atomic counter.
 */
#ifndef CHAT_NET_LISTEN_H
#define CHAT_NET_LISTEN_H

#include <stdatomic.h>
#include <time.h>
#include <uv.h>

typedef struct chat_listener chat_listener_t;

/** A connection is waiting: the callee calls chat_listener_accept() for it. */
typedef void (*chat_listener_cb)(chat_listener_t *l);
/** The listener's handle is closed: its memory may go. */
typedef void (*chat_listener_close_cb)(chat_listener_t *l);

struct chat_listener {
    void *data; /* free for the owner */
    /* private */
    uv_tcp_t _tcp;
    _Atomic int *_open; /* connections holding a slot, across workers */
    _Atomic int _own;   /* the counter when the caller gave none */
    int _max;
    time_t _reject_log_sec;
    chat_listener_cb _cb;
    chat_listener_close_cb _close_cb;
};

/**
 * Creates, binds and starts listening on a SO_REUSEPORT, SO_REUSEADDR socket
 * for host ("*", "" or NULL: every address; "[::1]" or "::1" for IPv6) and
 * port (0: any; the bound port goes to *bound_port). Returns the socket, or
 * a negative libuv code (UV_EADDRNOTAVAIL for a host that does not resolve).
 */
int chat_listen_socket(const char *host, int port, int *bound_port);

/**
 * Starts accepting on fd (from chat_listen_socket(), taken over) on loop:
 * cb fires once per waiting connection. open_connections is the counter the
 * cap applies to (NULL: one of its own), max_connections the cap (0: none).
 * Returns 0 or a libuv code; either way the listener's handle exists and
 * must be closed with chat_listener_close().
 */
int chat_listener_init(chat_listener_t *l, uv_loop_t *loop, int fd, _Atomic int *open_connections,
                       int max_connections, chat_listener_cb cb);

/**
 * Accepts the waiting connection into client (a uv_tcp_init'ed handle) and
 * takes a slot of the cap for it. Returns 0; a libuv code when the accept
 * failed; or CHAT_EUNAVAILABLE when the cap is reached (logged at most once a
 * second). A connection that got a non-zero answer is accepted or not, but
 * holds no slot: the caller closes client.
 */
int chat_listener_accept(chat_listener_t *l, uv_tcp_t *client);

/** Gives back the slot of a connection accepted with 0. */
void chat_listener_release(chat_listener_t *l);

/** Stops accepting and closes the handle; cb fires from its close callback. */
void chat_listener_close(chat_listener_t *l, chat_listener_close_cb cb);

#endif
