/*
 * A client TCP connection of the HTTP server, whatever protocol it speaks:
 * the socket, reading into the server's shared buffer, writing with
 * uv_try_write first, the bound on unsent output, the lingering end and the
 * one close path. The protocol is a small vtable the connection calls
 * (net/http1.c, then perhaps net/ws_conn.c, which takes the connection over
 * at the 101). Private to net/.
 */
#ifndef CHAT_NET_CONN_H
#define CHAT_NET_CONN_H

#include "core/list.h"
#include "core/metrics.h"
#include "net/timerlist.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct chat_conn chat_conn_t;
typedef struct chat_conn_set chat_conn_set_t;

/*
 * The deadlines a connection can wait for; each kind is one timer list of
 * its set, since every entry of a list has the same timeout.
 */
enum chat_conn_timer {
    CHAT_CONN_TIMER_NONE = -1,
    CHAT_CONN_TIMER_HEAD,   /* a request head is due (header timeout, from its first byte) */
    CHAT_CONN_TIMER_BODY,   /* a request body is due (body timeout, from the end of its head) */
    CHAT_CONN_TIMER_IDLE,   /* idle keep-alive, or answers the socket does not take */
    CHAT_CONN_TIMER_LINGER, /* our FIN is out; input is discarded until then */
    CHAT_CONN_TIMER_PING,   /* a silent peer is pinged, then dropped */
    CHAT_CONN_TIMER_COUNT
};

/*
 * What a protocol does with its connection's events, on the loop. Until
 * on_close, none runs for a closing connection or while it lingers (input is
 * then discarded and the end handled here). Any may be NULL.
 */
typedef struct chat_conn_proto {
    const char *name; /* "http", "websocket": for logs */
    /** Bytes read; valid only during the call. */
    void (*on_data)(chat_conn_t *c, const char *data, size_t len);
    /** The peer sent FIN. */
    void (*on_eof)(chat_conn_t *c);
    /** chat_conn_kick()'s deferred call: bring the connection up to date. */
    void (*on_resume)(chat_conn_t *c);
    /** The deadline of timer passed; c is off the timer lists. */
    void (*on_timeout)(chat_conn_t *c, enum chat_conn_timer timer);
    /** The server is closing: finish what is in flight, then end. */
    void (*on_shutdown)(chat_conn_t *c);
    /** From chat_conn_close(), before the handle closes: let go of pending work. */
    void (*on_close)(chat_conn_t *c, const char *reason);
    /** From the handle's close callback, last: free the protocol's state. c is freed next. */
    void (*on_closed)(chat_conn_t *c);
} chat_conn_proto_t;

struct chat_conn {
    uv_tcp_t tcp; /* first; tcp.data points back here */
    chat_conn_set_t *set;
    const chat_conn_proto_t *proto;
    void *data;  /* the protocol's state */
    uint64_t id; /* for logs, unique in the process */
    int writes_pending;
    bool closing;   /* chat_conn_close() ran: only the close callback is left */
    bool lingering; /* FIN sent, discarding input until the peer's FIN or a timeout */
    bool peer_eof;
    bool reading;
    /* private */
    chat_list_t _link;   /* set->_conns */
    chat_list_t _resume; /* set->_resume while a kick is pending */
    chat_timerlist_entry_t _timer;
    chat_metric_t *_gauge; /* counted here and in the listener's slots; NULL: not counted */
    const char *_linger_reason;
};

/** One write: embed it in whatever owns the bytes until they are written. */
typedef struct chat_conn_write chat_conn_write_t;
/**
 * A queued write finished (status 0) or failed (the connection is then closed
 * already). The callee frees the write's memory.
 */
typedef void (*chat_conn_write_cb)(chat_conn_t *c, chat_conn_write_t *w, int status);
struct chat_conn_write {
    uv_write_t _req;
    chat_conn_write_cb _cb;
};

/*
 * The connections of one server on one loop and what they share: one read
 * buffer, the timer lists, a queue of connections to resume on the next
 * loop iteration, the bound on unsent output and the server's closing state.
 */
/*
 * What a set bounds: the deadline of each timer list (lingering is fixed),
 * the unsent output of one connection, and the kernel's share of it.
 */
typedef struct chat_conn_limits {
    uint64_t head_ms; /* CHAT_CONN_TIMER_HEAD */
    uint64_t body_ms; /* CHAT_CONN_TIMER_BODY */
    uint64_t idle_ms; /* CHAT_CONN_TIMER_IDLE */
    uint64_t ping_ms; /* CHAT_CONN_TIMER_PING */
    size_t max_pending_output;
    int tcp_sndbuf;        /* SO_SNDBUF of accepted sockets in bytes; 0: the kernel's autotuning */
    int tcp_notsent_lowat; /* TCP_NOTSENT_LOWAT of accepted sockets in bytes; 0: the system's */
} chat_conn_limits_t;

struct chat_conn_set {
    uv_loop_t *loop;
    size_t max_pending_output;
    int tcp_sndbuf;
    int tcp_notsent_lowat;
    bool closing; /* the server is shutting down: no new work, end what is idle */
    int nconns;
    /* private */
    bool _finished;
    int _handles;
    char *_rbuf;
    bool _rbuf_busy;
    chat_list_t _conns;
    chat_list_t _resume;
    uv_idle_t _idle;
    chat_timerlist_t _timers;
    void (*_freed_cb)(chat_conn_set_t *set, bool counted);
    void (*_close_cb)(chat_conn_set_t *set);
};

/**
 * Initialises set on loop with the limits lim (copied). freed_cb fires after
 * each connection is freed, with whether it was counted (held a slot of the
 * cap). Starts two handles: end with chat_conn_set_close().
 */
void chat_conn_set_init(chat_conn_set_t *set, uv_loop_t *loop, const chat_conn_limits_t *lim,
                        void (*freed_cb)(chat_conn_set_t *set, bool counted));

/**
 * The server is closing: marks the set closing, ends lingering connections
 * and calls on_shutdown for every other open one.
 */
void chat_conn_set_shutdown(chat_conn_set_t *set);

/** Closes the set's handles once it has no connections; cb fires when they are closed. */
void chat_conn_set_close(chat_conn_set_t *set, void (*cb)(chat_conn_set_t *set));

/**
 * Allocates size bytes (>= sizeof(chat_conn_t), zeroed) whose start is a new
 * connection of set speaking proto with data, its handle initialised (not
 * yet connected: accept into c->tcp). Whatever happens next, it ends through
 * chat_conn_close(), and its memory is freed in the close callback.
 */
chat_conn_t *chat_conn_create(chat_conn_set_t *set, size_t size, const chat_conn_proto_t *proto,
                              void *data);

/**
 * The chatd_connections_open series of a kind of connection ("http",
 * "websocket"), created on first use; look it up once and keep it.
 */
chat_metric_t *chat_conn_gauge(const char *kind);

/**
 * Counts c in gauge and as holding a slot of the cap until it is freed;
 * sets TCP_NODELAY and the set's SO_SNDBUF and TCP_NOTSENT_LOWAT (a socket
 * option the kernel refuses is logged at debug level and left as it was).
 */
void chat_conn_start(chat_conn_t *c, chat_metric_t *gauge);

/** Moves c's count to another gauge series (when it is counted). */
void chat_conn_gauge_move(chat_conn_t *c, chat_metric_t *gauge);

/**
 * Hands c to another protocol: from now on its events go to proto with data
 * (also when c is already closing: proto's on_closed then ends it).
 */
void chat_conn_switch(chat_conn_t *c, const chat_conn_proto_t *proto, void *data);

/** Starts or stops reading; a failure closes c ("read_error"). */
void chat_conn_read(chat_conn_t *c, bool want);

/**
 * Writes bufs after every earlier write. When nothing is queued, what
 * uv_try_write takes goes out at once: 1 is returned when that was all of it
 * (w's callback never fires; the caller frees w). Otherwise the rest is
 * queued with uv_write and 0 is returned: w's callback fires later. A
 * negative libuv code means uv_write refused: the caller frees w (and
 * usually closes c). bufs is advanced past what was written.
 */
int chat_conn_write(chat_conn_t *c, chat_conn_write_t *w, uv_buf_t *bufs, unsigned nbufs,
                    chat_conn_write_cb cb);

/**
 * Writes what the socket takes of bufs now, queueing nothing: 1 when that
 * was all of it, 0 when not (or when earlier writes are still queued; bufs
 * is then advanced past what was written), a negative libuv code on error.
 */
int chat_conn_write_now(chat_conn_t *c, uv_buf_t *bufs, unsigned nbufs);

/** True when c's unsent output is over the set's bound: stop producing more for it. */
bool chat_conn_output_full(const chat_conn_t *c);

/** Schedules proto->on_resume(c) for the next loop iteration (once, however often asked). */
void chat_conn_kick(chat_conn_t *c);

/** Puts c on timer's list with a fresh deadline (CHAT_CONN_TIMER_NONE: on none). */
void chat_conn_timer_set(chat_conn_t *c, enum chat_conn_timer timer);
/** The list c is on. */
enum chat_conn_timer chat_conn_timer_get(const chat_conn_t *c);

/**
 * Every answer is written: sends FIN and discards input for a moment, so
 * that a peer still sending reads our last answer rather than a reset. The
 * connection then closes with reason on the peer's FIN or after a timeout
 * (at once when the peer already sent FIN or the server is closing).
 */
void chat_conn_linger(chat_conn_t *c, const char *reason);

/**
 * The one way a connection ends: logs reason, takes c off every list, lets
 * the protocol drop its pending work (on_close) and closes the handle; the
 * protocol's on_closed and the freeing follow in the close callback. Calling
 * it again does nothing.
 */
void chat_conn_close(chat_conn_t *c, const char *reason);

#endif
