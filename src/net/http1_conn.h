/*
 * Private to net/http1*.c: the HTTP/1.1 connection and request structs,
 * shared by http1.c (pipelining, dispatch, answers, the hand-over at a 101)
 * and http1_request.c (parsing a request with http-parser: the headers kept,
 * the target, the head and body limits, 100-continue).
 */
#ifndef CHAT_NET_HTTP1_CONN_H
#define CHAT_NET_HTTP1_CONN_H

#include "core/blob.h"
#include "core/buf.h"
#include "core/list.h"
#include "net/conn.h"
#include "net/http1.h"
#include "net/http1_frame.h"

#include <http_parser.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct chat_http1_conn chat_http1_conn_t;
typedef struct chat_http1_req chat_http1_req_t;

/* Who holds a request in each state. */
enum req_state {
    REQ_PARSING,   /* the parser: it is h->cur */
    REQ_HELD,      /* the connection: complete, waiting behind an unsafe request (h->held) */
    REQ_HANDLING,  /* the handler: it must call chat_http_respond() */
    REQ_RESPONDED, /* the queue: answered, waiting for earlier answers to go out */
    REQ_WRITING,   /* net/conn.c: being written, freed by write_cb */
};

/* An answer's body when it is not copied into the head: taken over (free), or shared. */
typedef struct chat_http1_body_hold {
    char *owned;
    chat_blob_t *shared;
} chat_http1_body_hold_t;

static inline void chat_http1_body_release(chat_http1_body_hold_t hold)
{
    free(hold.owned);
    chat_blob_unref(hold.shared);
}

struct chat_http1_req {
    chat_http_request_t pub; /* first: the public pointer is the private one */
    chat_list_t link;        /* in h->queue until handed to the socket */
    chat_http1_conn_t *h;    /* NULL once cancelled */
    enum req_state state;
    bool head_done;
    bool keep_alive;
    bool unsafe; /* not GET/HEAD/OPTIONS/TRACE: later requests wait for its answer */
    bool url_seen;
    bool has_auth;
    bool has_upgrade;
    bool upgrade_req; /* http-parser saw a GET with Upgrade and Connection: upgrade */
    uint64_t t_head;  /* uv_hrtime() when the head was complete */
    chat_buf_t url;   /* path NUL query NUL after the head is complete */
    chat_buf_t body;
    chat_buf_t auth;
    chat_buf_t upgrade;
    chat_buf_t connection; /* these three: data != NULL once the header was seen */
    chat_buf_t ws_key;
    chat_buf_t ws_version;
    chat_buf_t origin;
    chat_buf_t if_none_match;
    char *rest; /* an upgrade request: what the client sent after it */
    size_t rest_len;
    /* The response, once answered. */
    chat_conn_write_t wr;
    uv_buf_t out[2];
    unsigned nout;
    size_t out_len; /* bytes of the answer, counted in h->out_held until it is written */
    char *head;     /* status line and headers (and a copied body) */
    chat_http1_body_hold_t answer_body; /* the answer's body, written from where it is */
    chat_http1_switch_cb switch_cb;     /* a 101: who takes the connection over */
    void *switch_ud;
};

struct chat_http1_conn {
    chat_conn_t conn; /* first: the connection's memory is this struct */
    http_parser parser;
    chat_http1_frame_t frame; /* the framing rules http-parser does not check */
    chat_list_t queue;        /* requests not yet handed to the socket, oldest first */
    chat_http1_req_t *cur;    /* request being parsed (the queue's tail) */
    chat_http1_req_t *held;   /* complete request waiting for the write barrier */
    chat_http1_req_t *done;   /* set by on_message_complete for feed() */
    char *in;                 /* unparsed input kept while paused */
    size_t in_len;
    const char *drain_reason; /* why the connection is draining, for the close log */
    const char *fail_code;    /* set by a parser callback that rejects the request */
    const char *fail_msg;
    const char *fault_at; /* a callback's fault is at this byte of the read being parsed */
    size_t out_held;      /* bytes of answers built and not yet written (memory they hold) */
    size_t out_max;       /* the largest answer of this connection so far */
    int fail_status;
    int nqueue;
    int unanswered;        /* requests with the handler */
    int unsafe_unanswered; /* of which unsafe */
    uint32_t nreq;         /* requests started on this connection */
    uint8_t hstate, hid, hflen;
    uint8_t expect_len;
    uint8_t n_host, n_te, te_len; /* Host and Transfer-Encoding lines of this request */
    bool has_length;              /* it has a Content-Length line */
    char hfield[24];              /* lowercased start of the current header name */
    char expect[14];
    char te[16];     /* the Transfer-Encoding value, lowercased (te_len may pass its size) */
    bool no_more;    /* read no further requests: close once the queue is written */
    bool wrote_now;  /* an answer went out in full inside uv_try_write */
    bool in_process; /* parsing or handing over: settle afterwards, not inside */
    bool upgraded;   /* handed to another protocol at a 101 */
};

/** The HTTP/1.1 state of c (its memory starts with c). */
static inline chat_http1_conn_t *chat_http1_conn_of(chat_conn_t *c)
{
    return CHAT_CONTAINER_OF(c, chat_http1_conn_t, conn);
}

static inline chat_http_server_t *chat_http1_conn_server(const chat_http1_conn_t *h)
{
    return chat_http1_server(h->conn.set);
}

/** The oldest request of h not yet handed to the socket, or NULL. */
static inline chat_http1_req_t *chat_http1_queue_first(const chat_http1_conn_t *h)
{
    chat_list_t *e = chat_list_first(&h->queue);
    return e ? CHAT_CONTAINER_OF(e, chat_http1_req_t, link) : NULL;
}

/** Takes r off h's queue (dropped before its answer, or handed to the socket). */
static inline void chat_http1_queue_remove(chat_http1_conn_t *h, chat_http1_req_t *r)
{
    if (!chat_list_linked(&r->link))
        return;
    chat_list_remove(&r->link);
    h->nqueue--;
}

/** A new request at the tail of h's queue, being parsed. */
chat_http1_req_t *chat_http1_req_new(chat_http1_conn_t *h);
/** Frees r and everything it holds. */
void chat_http1_req_free(chat_http1_req_t *r);

/** Readies h's parser for its first request. */
void chat_http1_parser_init(chat_http1_conn_t *h);

/**
 * Runs the parser over data. It pauses after each complete request (left in
 * h->done, state REQ_HELD) and stops at an error: a limit or rule broken by
 * a callback leaves its answer in h->fail_status, fail_code and fail_msg.
 * Returns the bytes consumed; HTTP_PARSER_ERRNO(&h->parser) tells why it
 * stopped.
 */
size_t chat_http1_parse(chat_http1_conn_t *h, const char *data, size_t len);

#endif
