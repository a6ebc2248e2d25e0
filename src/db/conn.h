/*
 * One non-blocking PostgreSQL connection driven by uv_poll on its libpq
 * socket: resolve, connect, idle, send one transaction as a pipeline and read
 * its results, break and back off, close. Its owner (the pool) lends it and
 * learns of every change through a small table of callbacks.
 */
#ifndef CHAT_DB_CONN_H
#define CHAT_DB_CONN_H

#include "core/error.h"
#include "core/list.h"
#include "db/resolve.h"
#include "db/txn.h"

#include <libpq-fe.h>
#include <sys/types.h>
#include <uv.h>

/*
 * Who holds a connection in each state. set_state() in conn.c is
 * the one place it changes.
 */
typedef enum chat_db_conn_state {
    /* the back-off timer: no PGconn, a reconnect is scheduled (before the
     * first chat_db_conn_start(): nobody, nothing scheduled yet) */
    CHAT_DB_CONN_BACKOFF,
    /* the resolver: the host name is being looked up; connect timer armed */
    CHAT_DB_CONN_RESOLVING,
    /* libpq (PQconnectPoll), watched by uv_poll; connect timer armed */
    CHAT_DB_CONN_CONNECTING,
    /* the owner (the pool's idle list), waiting to be lent */
    CHAT_DB_CONN_IDLE,
    /* one transaction, part of its pipeline still in libpq's output buffer:
     * the Sync has not left, so the server cannot have committed it */
    CHAT_DB_CONN_SENDING,
    /* one transaction, the whole pipeline flushed, its results being read */
    CHAT_DB_CONN_READING,
    /* nobody: closed for good (its handles may still be closing) */
    CHAT_DB_CONN_CLOSED,
} chat_db_conn_state_t;

typedef struct chat_db_conn chat_db_conn_t;

/*
 * What the owner hears. Every callback runs on the loop; none runs from inside
 * chat_db_conn_init/start/close.
 */
typedef struct chat_db_conn_ops {
    /*
     * After every state change, with the state left; c->state is the new one.
     * Bookkeeping only (lists, counts, metrics): it must not call into c.
     */
    void (*moved)(chat_db_conn_t *c, chat_db_conn_state_t from);
    /*
     * The transaction lent with chat_db_conn_send() is over; c is IDLE (or
     * CLOSED when a close was waiting for it) on CHAT_EOK, BACKOFF (or CLOSED)
     * on CHAT_ECONNLOST.
     *   CHAT_EOK: the Sync result arrived. res holds one result per statement
     *     and error the first failing one (also in res) or NULL; both become
     *     the owner's, to PQclear.
     *   CHAT_ECONNLOST: the connection broke; sent says whether the whole
     *     pipeline (the Sync included) had left; detail is libpq's message
     *     on one line. res is NULL.
     * May fire from inside chat_db_conn_send() when sending fails at once.
     */
    void (*finished)(chat_db_conn_t *c, chat_err_t status, PGresult **res, PGresult *error,
                     int sent, const char *detail);
    /* The end of each libuv callback on c, after the above: the owner may lend now. */
    void (*settled)(chat_db_conn_t *c);
} chat_db_conn_ops_t;

/* Shared by every connection of one pool; must outlive them. */
typedef struct chat_db_conn_config {
    uv_loop_t *loop;
    const char *conninfo;     /* libpq URL or key=value string */
    const char *resolve_host; /* from chat_db_resolve_host(conninfo), or NULL */
    const char *path_name;    /* for logs */
    int connect_timeout_ms;   /* longest time one connect (lookup included) may take */
    const chat_db_conn_ops_t *ops;
} chat_db_conn_config_t;

struct chat_db_conn {
    /* public, read-only outside conn.c (link and data excepted) */
    int id;                     /* for logs */
    chat_db_conn_state_t state; /* who holds it */
    int failed;                 /* the last connect attempt failed */
    chat_list_t link;           /* the owner's, e.g. its idle list */
    void *data;                 /* the owner's */
    /* private */
    const chat_db_conn_config_t *_cfg;
    PGconn *_pg;
    uv_poll_t *_poll; /* heap: a new one per socket; freed in its close callback */
    int _poll_events;
    int _sock_fd; /* the socket _poll watches, told apart by its inode too */
    dev_t _sock_dev;
    ino_t _sock_ino;
    int _want_write;             /* PQflush left data to send */
    chat_db_resolve_t *_resolve; /* lookup in flight, while RESOLVING */
    uv_timer_t _timer;           /* connect timeout, or back-off */
    const chat_db_txn_t *_txn;   /* while SENDING or READING (borrowed) */
    int _expect;                 /* statement whose results are being read; n = the Sync */
    PGresult *_res[CHAT_DB_MAX_STMTS];
    PGresult *_error; /* first failing result (also in _res) */
    int _backoff_ms;
    int _failures; /* failed attempts since the last success */
    int _was_up;   /* connected before: the next success is a recovery */
    int _closing;  /* chat_db_conn_close() was called */
    int _handles;  /* open libuv handles and requests */
    void (*_close_cb)(chat_db_conn_t *c);
    uint64_t _rng;
};

/** Prepares c in BACKOFF with nothing scheduled; cfg is borrowed. Never fails. */
void chat_db_conn_init(chat_db_conn_t *c, const chat_db_conn_config_t *cfg, int id, void *data);

/** Starts the first connect attempt (c in BACKOFF, before any close). */
void chat_db_conn_start(chat_db_conn_t *c);

/**
 * Moves c's next connect attempt to now when c is waiting out a back-off
 * (the owner saw the server answer another connection again); otherwise does
 * nothing. A failure backs off as if the attempt had come on time.
 */
void chat_db_conn_retry_now(chat_db_conn_t *c);

/**
 * Lends c (IDLE) to txn, which must live until ops->finished: sends every
 * statement and one Sync as a pipeline. Failures arrive through
 * ops->finished (maybe from inside this call), never as a return value.
 */
void chat_db_conn_send(chat_db_conn_t *c, const chat_db_txn_t *txn);

/**
 * Closes c for good: at once, or, while a transaction is on it, when that
 * ends (ops->finished still fires). cb fires once every handle is closed;
 * c's memory may be freed from then on.
 */
void chat_db_conn_close(chat_db_conn_t *c, void (*cb)(chat_db_conn_t *c));

/** True in IDLE, SENDING and READING. */
int chat_db_conn_is_up(chat_db_conn_state_t s);

/** True in SENDING and READING: lent to a transaction. */
int chat_db_conn_is_lent(chat_db_conn_state_t s);

/** "idle", "reading", ... for logs. */
const char *chat_db_conn_state_name(chat_db_conn_state_t s);

#endif
