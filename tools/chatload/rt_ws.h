/*
 * One WebSocket client connection to chatd's stream on a libuv loop: TCP
 * connect (from a chosen loopback source address), the opening handshake
 * (bearer token, a random key, the accept value checked), then whole text
 * messages to a callback. Pings are answered, a close is echoed, frames out
 * are masked. A connection ends only through cl_wsc_close, with a reason.
 */
#ifndef CHATLOAD_RT_WS_H
#define CHATLOAD_RT_WS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

/* Largest server message accepted (reassembled); a longer one ends the connection. */
#define CL_WSC_MAX_MESSAGE (1 << 20)

/* Who holds the connection: nobody (a slot to connect), libuv's connect,
 * the handshake, the open stream, libuv's close. */
typedef enum {
    CL_WSC_DEAD,
    CL_WSC_CONNECTING,
    CL_WSC_HANDSHAKE,
    CL_WSC_OPEN,
    CL_WSC_CLOSING
} cl_wsc_state_t;

typedef struct cl_wsc cl_wsc_t;

typedef struct {
    /** The handshake was answered 101 with the right accept value. */
    void (*on_open)(cl_wsc_t *c);
    /** A whole text message; the bytes are valid during the call. The callee
     *  may close the connection. */
    void (*on_text)(cl_wsc_t *c, const char *msg, size_t len);
    /** The connection is gone and its handle closed: reason is one of the
     *  CL_WSC_* strings below, http_status the status of a refused handshake
     *  (else 0). The slot may connect again from here. */
    void (*on_closed)(cl_wsc_t *c, const char *reason, int http_status);
} cl_wsc_cbs_t;

/* Reasons given to on_closed (compare the pointers). */
extern const char CL_WSC_CONNECT_FAILED[]; /* TCP connect failed */
extern const char CL_WSC_REFUSED[];        /* the handshake was not answered 101 */
extern const char CL_WSC_BAD_HANDSHAKE[];  /* a 101 without the right accept value */
extern const char CL_WSC_PROTOCOL[];       /* a server frame broke RFC 6455 */
extern const char CL_WSC_SERVER_CLOSED[];  /* a close frame, or EOF, from chatd */
extern const char CL_WSC_IO[];             /* a read or write failed */

struct cl_wsc {
    void *data;           /* the owner's */
    cl_wsc_state_t state; /* read only */
    /* private */
    uv_tcp_t _tcp;
    uv_connect_t _connect;
    const cl_wsc_cbs_t *_cbs;
    uint8_t *_pend; /* bytes of an incomplete frame (or handshake answer) */
    uint32_t _plen, _pcap;
    char *_frag; /* a fragmented message so far */
    uint32_t _flen;
    const char *_reason;
    int _http_status;
    char _key[25];
};

/**
 * Connects c (state DEAD) to dst, bound to src first when src is not NULL,
 * and sends the handshake for GET /api/v1/stream with the bearer token
 * (host:port for the Host header). 0, or -1 when the connect could not start
 * (c stays DEAD; no callback).
 */
int cl_wsc_connect(cl_wsc_t *c, uv_loop_t *loop, const struct sockaddr *dst,
                   const struct sockaddr *src, const char *host, int port, const char *token,
                   const cl_wsc_cbs_t *cbs);

/** Sends a text message (masked). 0, or -1 when the connection is not open. */
int cl_wsc_send_text(cl_wsc_t *c, const char *msg, size_t len);

/** Ends the connection now, without a close frame (a drop); on_closed runs
 *  with reason once the handle is closed. Nothing happens when it is
 *  already DEAD or CLOSING. */
void cl_wsc_close(cl_wsc_t *c, const char *reason);

#endif
