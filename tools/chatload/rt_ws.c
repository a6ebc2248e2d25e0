/*
 * A WebSocket client connection on libuv; see rt_ws.h. Received bytes are
 * parsed straight from the loop's read buffer; only the tail of a frame cut
 * by a read is copied aside until the rest comes.
 */
#include "rt_ws.h"
#include "rt_frame.h"
#include "zipf.h"

#include "core/base64.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

const char CL_WSC_CONNECT_FAILED[] = "connect failed";
const char CL_WSC_REFUSED[] = "handshake refused";
const char CL_WSC_BAD_HANDSHAKE[] = "bad handshake answer";
const char CL_WSC_PROTOCOL[] = "protocol error";
const char CL_WSC_SERVER_CLOSED[] = "closed by the server";
const char CL_WSC_IO[] = "read or write failed";

#define MAX_HEAD 8192

/* Handshake keys and masks: unpredictable enough for a load generator. */
static cl_rng_t rng;
static int rng_ready;

static void random_bytes(uint8_t *out, size_t n)
{
    if (!rng_ready) {
        cl_rng_init(&rng, uv_hrtime() ^ ((uint64_t)getpid() << 32));
        rng_ready = 1;
    }
    for (size_t i = 0; i < n; i += 8) {
        uint64_t v = cl_rng_next(&rng);
        for (size_t j = 0; j < 8 && i + j < n; j++)
            out[i + j] = (uint8_t)(v >> (8 * j));
    }
}

/* ---- writes ---- */

typedef struct {
    uv_write_t w;
    size_t len;
    uint8_t data[];
} wreq_t;

static void on_written(uv_write_t *w, int status)
{
    cl_wsc_t *c = w->data;
    free(w);
    if (status != 0 && status != UV_ECANCELED)
        cl_wsc_close(c, CL_WSC_IO);
}

/* Writes bytes, straight away when the socket takes them, else from a copy. */
static int put(cl_wsc_t *c, const void *data, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    int n = uv_try_write((uv_stream_t *)&c->_tcp, &b, 1);
    if (n == (int)len)
        return 0;
    if (n < 0 && n != UV_EAGAIN)
        return -1;
    size_t done = n > 0 ? (size_t)n : 0;
    wreq_t *r = malloc(sizeof *r + len - done);
    if (!r)
        abort();
    r->len = len - done;
    memcpy(r->data, (const uint8_t *)data + done, r->len);
    r->w.data = c;
    b = uv_buf_init((char *)r->data, (unsigned)r->len);
    if (uv_write(&r->w, (uv_stream_t *)&c->_tcp, &b, 1, on_written) != 0) {
        free(r);
        return -1;
    }
    return 0;
}

static int put_frame(cl_wsc_t *c, int opcode, const void *payload, size_t len)
{
    uint8_t mask[4], small[256];
    random_bytes(mask, 4);
    size_t n = cl_ws_frame_size(len);
    uint8_t *out = n <= sizeof small ? small : malloc(n);
    if (!out)
        abort();
    cl_ws_encode(out, opcode, payload, len, mask);
    int rc = put(c, out, n);
    if (out != small)
        free(out);
    return rc;
}

int cl_wsc_send_text(cl_wsc_t *c, const char *msg, size_t len)
{
    if (c->state != CL_WSC_OPEN)
        return -1;
    if (put_frame(c, CL_WS_TEXT, msg, len) != 0) {
        cl_wsc_close(c, CL_WSC_IO);
        return -1;
    }
    return 0;
}

/* ---- the one way out ---- */

static void on_closed(uv_handle_t *h)
{
    cl_wsc_t *c = h->data;
    free(c->_pend);
    free(c->_frag);
    c->_pend = NULL;
    c->_frag = NULL;
    c->_plen = c->_pcap = c->_flen = 0;
    c->state = CL_WSC_DEAD;
    c->_cbs->on_closed(c, c->_reason, c->_http_status);
}

void cl_wsc_close(cl_wsc_t *c, const char *reason)
{
    if (c->state == CL_WSC_DEAD || c->state == CL_WSC_CLOSING)
        return;
    c->state = CL_WSC_CLOSING;
    c->_reason = reason;
    uv_close((uv_handle_t *)&c->_tcp, on_closed);
}

/* ---- reads ---- */

static void alloc_cb(uv_handle_t *h, size_t sug, uv_buf_t *b)
{
    static char buf[256 * 1024];
    b->base = buf;
    b->len = sizeof buf;
}

/* A header value of the answer head (NUL-terminated, lines end in \r\n),
 * case-insensitive name; NULL when absent. Writes a NUL after the value. */
static char *header(char *head, const char *name)
{
    size_t nl = strlen(name);
    for (char *p = strstr(head, "\r\n"); p; p = strstr(p, "\r\n")) {
        p += 2;
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            char *v = p + nl + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            char *e = strstr(v, "\r\n");
            if (!e)
                return NULL;
            while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
                e--;
            *e = 0;
            return v;
        }
    }
    return NULL;
}

/* The answer head is in data[0..n): returns its length once whole (and
 * opens or closes the connection), 0 while incomplete. */
static size_t handshake(cl_wsc_t *c, uint8_t *data, size_t n)
{
    uint8_t *end = memmem(data, n, "\r\n\r\n", 4);
    if (!end) {
        if (n > MAX_HEAD)
            cl_wsc_close(c, CL_WSC_BAD_HANDSHAKE);
        return 0;
    }
    size_t hl = (size_t)(end - data) + 4;
    char *head = malloc(hl + 1);
    if (!head)
        abort();
    memcpy(head, data, hl);
    head[hl] = 0;
    int status = 0;
    if (sscanf(head, "HTTP/1.%*d %d", &status) != 1 || status != 101) {
        c->_http_status = status;
        free(head);
        cl_wsc_close(c, CL_WSC_REFUSED);
        return hl;
    }
    char want[29];
    cl_ws_accept_of(c->_key, want);
    const char *got = header(head, "Sec-WebSocket-Accept");
    int ok = got && strcmp(got, want) == 0;
    free(head);
    if (!ok) {
        cl_wsc_close(c, CL_WSC_BAD_HANDSHAKE);
        return hl;
    }
    c->state = CL_WSC_OPEN;
    c->_cbs->on_open(c);
    return hl;
}

/* One whole frame. */
static void frame(cl_wsc_t *c, const cl_ws_frame_t *f)
{
    switch (f->opcode) {
    case CL_WS_PING:
        if (put_frame(c, CL_WS_PONG, f->payload, f->len) != 0)
            cl_wsc_close(c, CL_WSC_IO);
        return;
    case CL_WS_PONG:
        return;
    case CL_WS_CLOSE:
        /* echo the code, then go: the server closes the TCP connection after it */
        put_frame(c, CL_WS_CLOSE, f->payload, f->len >= 2 ? 2 : 0);
        cl_wsc_close(c, CL_WSC_SERVER_CLOSED);
        return;
    default:
        break;
    }
    if (f->opcode != CL_WS_CONT && c->_frag) {
        cl_wsc_close(c, CL_WSC_PROTOCOL); /* a new message inside a fragmented one */
        return;
    }
    if (f->opcode == CL_WS_CONT && !c->_frag) {
        cl_wsc_close(c, CL_WSC_PROTOCOL);
        return;
    }
    if (f->fin && !c->_frag) {
        if (f->opcode == CL_WS_TEXT)
            c->_cbs->on_text(c, (const char *)f->payload, f->len);
        return; /* binary: chatd speaks JSON text; not ours to judge further */
    }
    if ((size_t)c->_flen + f->len > CL_WSC_MAX_MESSAGE) {
        cl_wsc_close(c, CL_WSC_PROTOCOL);
        return;
    }
    /* the first fragment remembers the opcode in the first byte */
    size_t have = c->_frag ? c->_flen : 1;
    char *nf = realloc(c->_frag, have + f->len);
    if (!nf)
        abort();
    if (!c->_frag)
        nf[0] = (char)f->opcode;
    c->_frag = nf;
    memcpy(c->_frag + have, f->payload, f->len);
    c->_flen = (uint32_t)(have + f->len);
    if (f->fin) {
        char *m = c->_frag;
        size_t len = c->_flen - 1;
        c->_frag = NULL;
        c->_flen = 0;
        if (m[0] == CL_WS_TEXT)
            c->_cbs->on_text(c, m + 1, len);
        free(m);
    }
}

/* Parses what data[0..n) holds; returns the bytes used. */
static size_t process(cl_wsc_t *c, uint8_t *data, size_t n)
{
    size_t off = 0;
    if (c->state == CL_WSC_HANDSHAKE) {
        off = handshake(c, data, n);
        if (c->state != CL_WSC_OPEN)
            return off;
    }
    while (off < n && c->state == CL_WSC_OPEN) {
        cl_ws_frame_t f;
        long used = cl_ws_parse(data + off, n - off, CL_WSC_MAX_MESSAGE, &f);
        if (used < 0) {
            cl_wsc_close(c, CL_WSC_PROTOCOL);
            break;
        }
        if (used == 0)
            break;
        off += (size_t)used;
        frame(c, &f);
    }
    return off;
}

static void keep(cl_wsc_t *c, const uint8_t *data, size_t n)
{
    if (c->_plen + n > c->_pcap) {
        c->_pcap = (uint32_t)((c->_plen + n) * 2);
        c->_pend = realloc(c->_pend, c->_pcap);
        if (!c->_pend)
            abort();
    }
    memmove(c->_pend + c->_plen, data, n);
    c->_plen += (uint32_t)n;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    cl_wsc_t *c = s->data;
    if (nread == 0)
        return;
    if (nread < 0) {
        cl_wsc_close(c, nread == UV_EOF ? CL_WSC_SERVER_CLOSED : CL_WSC_IO);
        return;
    }
    if (c->state != CL_WSC_HANDSHAKE && c->state != CL_WSC_OPEN)
        return;
    uint8_t *data = (uint8_t *)b->base;
    size_t n = (size_t)nread;
    if (c->_plen) { /* the rest of a cut frame */
        keep(c, data, n);
        data = c->_pend;
        n = c->_plen;
    }
    size_t used = process(c, data, n);
    if (c->state != CL_WSC_HANDSHAKE && c->state != CL_WSC_OPEN)
        return;
    if (data == c->_pend) {
        memmove(c->_pend, c->_pend + used, n - used);
        c->_plen = (uint32_t)(n - used);
        if (c->_plen == 0 && c->_pcap > 4096) { /* a big message passed: give it back */
            free(c->_pend);
            c->_pend = NULL;
            c->_pcap = 0;
        }
    } else if (used < n) {
        keep(c, data + used, n - used);
    }
}

/* ---- connecting ---- */

static void on_connected(uv_connect_t *req, int status)
{
    cl_wsc_t *c = req->data;
    if (c->state != CL_WSC_CONNECTING)
        return;
    if (status != 0) {
        cl_wsc_close(c, CL_WSC_CONNECT_FAILED);
        return;
    }
    c->state = CL_WSC_HANDSHAKE;
    if (uv_read_start((uv_stream_t *)&c->_tcp, alloc_cb, on_read) != 0)
        cl_wsc_close(c, CL_WSC_IO);
}

int cl_wsc_connect(cl_wsc_t *c, uv_loop_t *loop, const struct sockaddr *dst,
                   const struct sockaddr *src, const char *host, int port, const char *token,
                   const cl_wsc_cbs_t *cbs)
{
    if (c->state != CL_WSC_DEAD)
        return -1;
    c->_cbs = cbs;
    c->_reason = NULL;
    c->_http_status = 0;
    uint8_t raw[16];
    random_bytes(raw, sizeof raw);
    chat_base64_encode(c->_key, raw, sizeof raw, CHAT_BASE64_STD);
    if (uv_tcp_init(loop, &c->_tcp) != 0)
        return -1;
    c->_tcp.data = c;
    c->_connect.data = c;
    c->state = CL_WSC_CONNECTING;
    if (src)
        uv_tcp_bind(&c->_tcp, src, 0);
    uv_tcp_nodelay(&c->_tcp, 1);
    if (uv_tcp_connect(&c->_connect, &c->_tcp, dst, on_connected) != 0) {
        c->state = CL_WSC_CLOSING;
        c->_reason = CL_WSC_CONNECT_FAILED;
        uv_close((uv_handle_t *)&c->_tcp, on_closed);
        return 0; /* reported through on_closed, like a failed connect */
    }
    /* The request goes out as soon as the socket connects: libuv queues it. */
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "GET /api/v1/stream HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\nAuthorization: Bearer %s\r\n\r\n",
                     host, port, c->_key, token);
    if (n < 0 || (size_t)n >= sizeof req) {
        cl_wsc_close(c, CL_WSC_IO);
        return 0;
    }
    wreq_t *r = malloc(sizeof *r + (size_t)n);
    if (!r)
        abort();
    r->len = (size_t)n;
    memcpy(r->data, req, (size_t)n);
    r->w.data = c;
    uv_buf_t b = uv_buf_init((char *)r->data, (unsigned)n);
    if (uv_write(&r->w, (uv_stream_t *)&c->_tcp, &b, 1, on_written) != 0) {
        free(r);
        cl_wsc_close(c, CL_WSC_IO);
    }
    return 0;
}
