/*
 * WebSocket handshake checks and the protocol engine (see ws.h): a small
 * RFC 6455 frame decoder and encoder of chatd's own, strict on every client frame.
 */
#include "net/ws.h"
#include "core/alloc.h"
#include "core/json.h"

#include <http_parser.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

void chat_ws_accept_key(const char *key, size_t len, char out[CHAT_WS_ACCEPT_LEN])
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md || EVP_DigestInit_ex(md, EVP_sha1(), NULL) != 1 ||
        EVP_DigestUpdate(md, key, len) != 1 ||
        EVP_DigestUpdate(md, ws_guid, sizeof ws_guid - 1) != 1 ||
        EVP_DigestFinal_ex(md, digest, &dlen) != 1 || dlen != 20)
        abort(); /* SHA-1 is always there: only out of memory gets here */
    EVP_MD_CTX_free(md);
    EVP_EncodeBlock((unsigned char *)out, digest, 20); /* 28 characters and a NUL */
}

static bool is_b64(char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           ch == '+' || ch == '/';
}

bool chat_ws_key_valid(const char *key, size_t len)
{
    /* 16 bytes are 22 base64 digits and "==". */
    if (len != 24 || key[22] != '=' || key[23] != '=')
        return false;
    for (size_t i = 0; i < 22; i++)
        if (!is_b64(key[i]))
            return false;
    return true;
}

/* True when the comma-separated header value holds token (case-insensitive). */
static bool has_token(const char *value, const char *token)
{
    size_t tlen = strlen(token);
    const char *p = value;
    while (p && *p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *end = p;
        while (*end && *end != ',')
            end++;
        const char *e = end;
        while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if ((size_t)(e - p) == tlen && strncasecmp(p, token, tlen) == 0)
            return true;
        p = end;
    }
    return false;
}

static void trim(const char **s, size_t *len)
{
    while (*len && (**s == ' ' || **s == '\t')) {
        (*s)++;
        (*len)--;
    }
    while (*len && ((*s)[*len - 1] == ' ' || (*s)[*len - 1] == '\t'))
        (*len)--;
}

int chat_ws_handshake_check(const chat_http_request_t *req, const char **why)
{
    if (req->method != HTTP_GET) {
        *why = "a WebSocket handshake must be a GET";
        return 400;
    }
    if (req->http_minor < 1) {
        *why = "a WebSocket handshake needs HTTP/1.1";
        return 400;
    }
    if (!req->upgrade || !has_token(req->upgrade, "websocket")) {
        *why = "expected the header Upgrade: websocket";
        return 400;
    }
    if (!req->connection || !has_token(req->connection, "upgrade")) {
        *why = "expected the header Connection: Upgrade";
        return 400;
    }
    const char *v = req->ws_version;
    size_t vlen = v ? strlen(v) : 0;
    if (v)
        trim(&v, &vlen);
    if (!v || vlen != 2 || memcmp(v, "13", 2) != 0) {
        *why = "unsupported WebSocket version: only 13 is spoken";
        return 426;
    }
    const char *k = req->ws_key;
    size_t klen = k ? strlen(k) : 0;
    if (k)
        trim(&k, &klen);
    if (!k || !chat_ws_key_valid(k, klen)) {
        *why = "missing or malformed Sec-WebSocket-Key";
        return 400;
    }
    *why = NULL;
    return 0;
}

bool chat_ws_origin_allowed(const char *allowed, const char *origin)
{
    const char *p = allowed;
    while (p && (*p == ' ' || *p == '\t' || *p == ','))
        p++;
    if (!p || !*p || !origin)
        return true; /* no list, or not from a browser */
    const char *o = origin;
    size_t olen = strlen(o);
    trim(&o, &olen);
    while (*p) {
        const char *end = strchr(p, ',');
        if (!end)
            end = p + strlen(p);
        const char *e = p;
        size_t elen = (size_t)(end - p);
        trim(&e, &elen);
        if (elen && elen == olen && strncasecmp(e, o, olen) == 0)
            return true;
        p = *end ? end + 1 : end;
    }
    return false;
}

/* ---- the engine ---- */

enum {
    OP_CONT = 0x0,
    OP_TEXT = 0x1,
    OP_BINARY = 0x2,
    OP_CLOSE = 0x8,
    OP_PING = 0x9,
    OP_PONG = 0xA
};

/* Where the engine is in the client's byte stream. */
enum rstate { RS_HEADER, RS_PAYLOAD };

struct chat_ws_engine {
    chat_ws_engine_cbs_t cbs;
    void *ud;
    size_t max_message;
    enum rstate rs;
    uint8_t hdr[14]; /* the frame header being read */
    size_t hdr_len;
    bool fin;
    int opcode;
    uint8_t mask[4];
    uint64_t plen, pgot; /* payload length of the frame and bytes of it read */
    uint8_t ctrl[125];   /* payload of a control frame */
    int msg_opcode;      /* OP_TEXT/OP_BINARY while a message is being reassembled, else 0 */
    chat_buf_t msg;      /* the message so far */
    chat_buf_t out;      /* frames queued, not yet flushed */
    bool read_closed;    /* a close was received, or the client failed: read no more */
    bool close_queued;   /* our close frame is queued: nothing may follow it */
    uint16_t close_code; /* code of our close frame */
};

static void put_frame(chat_ws_engine_t *e, int opcode, const void *payload, size_t len)
{
    uint8_t h[10];
    size_t n = 0;
    h[n++] = (uint8_t)(0x80 | opcode); /* server frames are whole and unmasked */
    if (len < 126) {
        h[n++] = (uint8_t)len;
    } else if (len <= 0xffff) {
        h[n++] = 126;
        h[n++] = (uint8_t)(len >> 8);
        h[n++] = (uint8_t)len;
    } else {
        h[n++] = 127;
        for (int i = 7; i >= 0; i--)
            h[n++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    chat_buf_append(&e->out, h, n);
    if (len)
        chat_buf_append(&e->out, payload, len);
}

static void queue_close(chat_ws_engine_t *e, uint16_t code, const char *reason, size_t rlen)
{
    if (e->close_queued)
        return;
    e->close_queued = true;
    e->close_code = code;
    uint8_t p[125];
    size_t n = 0;
    if (code) {
        p[n++] = (uint8_t)(code >> 8);
        p[n++] = (uint8_t)code;
        if (rlen > sizeof p - 2)
            rlen = sizeof p - 2;
        if (rlen)
            memcpy(p + n, reason, rlen);
        n += rlen;
    }
    put_frame(e, OP_CLOSE, p, n);
}

/* The client broke the protocol: our close frame says why, and it is not read any further. */
static void fail(chat_ws_engine_t *e, uint16_t code, const char *reason)
{
    queue_close(e, code, reason, strlen(reason));
    e->read_closed = true;
}

/* Close codes a peer may send (RFC 6455 7.4). */
static bool close_code_valid(unsigned code)
{
    if (code >= 3000 && code <= 4999)
        return true;
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011);
}

/* The header is complete: check it against RFC 6455 5.2-5.5. */
static void header_done(chat_ws_engine_t *e)
{
    const uint8_t *h = e->hdr;
    e->fin = (h[0] & 0x80) != 0;
    e->opcode = h[0] & 0x0f;
    size_t len7 = h[1] & 0x7f, pos = 2;
    if (len7 == 126) {
        e->plen = ((uint64_t)h[2] << 8) | h[3];
        pos = 4;
    } else if (len7 == 127) {
        e->plen = 0;
        for (int i = 0; i < 8; i++)
            e->plen = (e->plen << 8) | h[2 + i];
        pos = 10;
    } else {
        e->plen = len7;
    }
    memcpy(e->mask, h + pos, 4);
    e->pgot = 0;
    bool control = (e->opcode & 0x8) != 0;
    if (h[0] & 0x70)
        return fail(e, CHAT_WS_CLOSE_PROTOCOL_ERROR, "reserved bits set");
    if (!(h[1] & 0x80))
        return fail(e, CHAT_WS_CLOSE_PROTOCOL_ERROR, "client frames must be masked");
    if (e->opcode != OP_CONT && e->opcode != OP_TEXT && e->opcode != OP_BINARY &&
        e->opcode != OP_CLOSE && e->opcode != OP_PING && e->opcode != OP_PONG)
        return fail(e, CHAT_WS_CLOSE_PROTOCOL_ERROR, "unknown opcode");
    if (e->plen >> 63)
        return fail(e, CHAT_WS_CLOSE_PROTOCOL_ERROR, "invalid payload length");
    if (control) {
        if (!e->fin || e->plen > 125)
            return fail(e, CHAT_WS_CLOSE_PROTOCOL_ERROR,
                        "control frames must be whole and at most 125 bytes");
    } else {
        if (e->opcode == OP_CONT && !e->msg_opcode)
            return fail(e, CHAT_WS_CLOSE_PROTOCOL_ERROR, "continuation without a message");
        if (e->opcode != OP_CONT && e->msg_opcode)
            return fail(e, CHAT_WS_CLOSE_PROTOCOL_ERROR, "new message inside a fragmented one");
        if (e->plen > e->max_message || e->msg.len + e->plen > e->max_message)
            return fail(e, CHAT_WS_CLOSE_TOO_BIG, "message too big");
        if (e->opcode != OP_CONT)
            e->msg_opcode = e->opcode;
    }
    e->rs = RS_PAYLOAD;
}

static void control_done(chat_ws_engine_t *e)
{
    size_t n = (size_t)e->plen;
    switch (e->opcode) {
    case OP_PING:
        if (!e->close_queued)
            put_frame(e, OP_PONG, e->ctrl, n);
        break;
    case OP_CLOSE: {
        unsigned code = 0;
        if (n == 1)
            return fail(e, CHAT_WS_CLOSE_PROTOCOL_ERROR, "truncated close code");
        if (n >= 2) {
            code = ((unsigned)e->ctrl[0] << 8) | e->ctrl[1];
            if (!close_code_valid(code))
                return fail(e, CHAT_WS_CLOSE_PROTOCOL_ERROR, "invalid close code");
            if (chat_utf8_count((const char *)e->ctrl + 2, n - 2) < 0)
                return fail(e, CHAT_WS_CLOSE_INVALID_DATA, "close reason is not valid UTF-8");
        }
        /* The echo carries the client's code (none if it sent none). */
        queue_close(e, (uint16_t)code, NULL, 0);
        e->read_closed = true;
        break;
    }
    default: /* pong */
        break;
    }
}

static void message_done(chat_ws_engine_t *e)
{
    int op = e->msg_opcode;
    e->msg_opcode = 0;
    const char *m = e->msg.data ? e->msg.data : "";
    size_t len = e->msg.len;
    if (!e->close_queued) {
        if (op == OP_TEXT && chat_utf8_count(m, len) < 0) {
            chat_buf_reset(&e->msg);
            return fail(e, CHAT_WS_CLOSE_INVALID_DATA, "text is not valid UTF-8");
        }
        if (op == OP_TEXT)
            e->cbs.on_text(e->ud, m, len);
        else
            e->cbs.on_binary(e->ud, m, len);
    }
    chat_buf_reset(&e->msg);
}

static void frame_done(chat_ws_engine_t *e)
{
    e->rs = RS_HEADER;
    e->hdr_len = 0;
    if (e->opcode & 0x8)
        control_done(e);
    else if (e->fin)
        message_done(e);
}

/* Header bytes still missing, given the bytes read so far. */
static size_t header_need(const chat_ws_engine_t *e)
{
    if (e->hdr_len < 2)
        return 2 - e->hdr_len;
    size_t len7 = e->hdr[1] & 0x7f;
    size_t full = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + ((e->hdr[1] & 0x80) ? 4 : 0);
    return full - e->hdr_len;
}

chat_ws_engine_t *chat_ws_engine_create(const chat_ws_engine_cbs_t *cbs, void *ud,
                                        size_t max_message)
{
    chat_ws_engine_t *e = chat_calloc(1, sizeof *e);
    e->cbs = *cbs;
    e->ud = ud;
    e->max_message = max_message;
    return e;
}

void chat_ws_engine_destroy(chat_ws_engine_t *e)
{
    if (!e)
        return;
    chat_buf_dispose(&e->msg);
    chat_buf_dispose(&e->out);
    free(e);
}

int chat_ws_engine_feed(chat_ws_engine_t *e, const void *data, size_t len)
{
    const uint8_t *p = data;
    while (len > 0 && !e->read_closed) {
        if (e->rs == RS_HEADER) {
            size_t need = header_need(e);
            size_t n = need < len ? need : len;
            memcpy(e->hdr + e->hdr_len, p, n);
            e->hdr_len += n;
            p += n;
            len -= n;
            if (header_need(e) > 0)
                continue;
            /* An unmasked header is judged as soon as its length is known. */
            header_done(e);
            if (e->rs == RS_PAYLOAD && e->plen == 0)
                frame_done(e);
            continue;
        }
        uint64_t left = e->plen - e->pgot;
        size_t n = left < len ? (size_t)left : len;
        uint8_t *dst;
        if (e->opcode & 0x8) {
            dst = e->ctrl + e->pgot;
        } else {
            chat_buf_reserve(&e->msg, n);
            dst = (uint8_t *)e->msg.data + e->msg.len;
            e->msg.len += n;
        }
        for (size_t i = 0; i < n; i++)
            dst[i] = p[i] ^ e->mask[(e->pgot + i) & 3];
        e->pgot += n;
        p += n;
        len -= n;
        if (e->pgot == e->plen)
            frame_done(e);
    }
    return 0;
}

int chat_ws_engine_send_text(chat_ws_engine_t *e, const char *msg, size_t len)
{
    if (e->close_queued)
        return -1;
    put_frame(e, OP_TEXT, msg, len);
    return 0;
}

int chat_ws_engine_ping(chat_ws_engine_t *e)
{
    if (e->close_queued)
        return -1;
    put_frame(e, OP_PING, NULL, 0);
    return 0;
}

int chat_ws_engine_close(chat_ws_engine_t *e, uint16_t code, const char *reason)
{
    if (e->close_queued)
        return -1;
    queue_close(e, code, reason, reason ? strlen(reason) : 0);
    return 0;
}

int chat_ws_engine_flush(chat_ws_engine_t *e)
{
    if (e->out.len == 0)
        return 0;
    e->cbs.on_output(e->ud, e->out.data, e->out.len);
    chat_buf_reset(&e->out);
    return 0;
}

bool chat_ws_engine_want_read(const chat_ws_engine_t *e)
{
    return !e->read_closed;
}

bool chat_ws_engine_finished(const chat_ws_engine_t *e)
{
    return e->read_closed && e->close_queued && e->out.len == 0;
}

bool chat_ws_engine_closing(const chat_ws_engine_t *e)
{
    return e->close_queued;
}

uint16_t chat_ws_engine_close_code(const chat_ws_engine_t *e)
{
    return e->close_queued ? e->close_code : 0;
}
