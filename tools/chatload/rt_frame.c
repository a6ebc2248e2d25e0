/*
 * Client-side WebSocket frames, the JSON scanner for chatd's stream frames
 * and the body text of the realtime stage; see rt_frame.h.
 */
#include "rt_frame.h"

#include "core/base64.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- RFC 6455 frames ---- */

long cl_ws_parse(const uint8_t *p, size_t n, size_t max, cl_ws_frame_t *f)
{
    if (n < 2)
        return 0;
    if (p[0] & 0x70)
        return -1; /* reserved bits: no extension was negotiated */
    if (p[1] & 0x80)
        return -1; /* a server never masks */
    f->fin = (p[0] & 0x80) != 0;
    f->opcode = p[0] & 0x0f;
    switch (f->opcode) {
    case CL_WS_CONT:
    case CL_WS_TEXT:
    case CL_WS_BINARY:
    case CL_WS_CLOSE:
    case CL_WS_PING:
    case CL_WS_PONG:
        break;
    default:
        return -1;
    }
    uint64_t len = p[1] & 0x7f;
    size_t pos = 2;
    if (len == 126) {
        if (n < 4)
            return 0;
        len = ((uint64_t)p[2] << 8) | p[3];
        pos = 4;
    } else if (len == 127) {
        if (n < 10)
            return 0;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = (len << 8) | p[2 + i];
        pos = 10;
    }
    if ((f->opcode & 0x8) && (!f->fin || len > 125))
        return -1;
    if (len > max)
        return -1;
    if (n - pos < len)
        return 0;
    f->payload = p + pos;
    f->len = (size_t)len;
    return (long)(pos + len);
}

size_t cl_ws_frame_size(size_t len)
{
    return 2 + (len < 126 ? 0 : len <= 0xffff ? 2 : 8) + 4 + len;
}

size_t cl_ws_encode(uint8_t *out, int opcode, const void *payload, size_t len,
                    const uint8_t mask[4])
{
    size_t n = 0;
    out[n++] = (uint8_t)(0x80 | opcode);
    if (len < 126) {
        out[n++] = (uint8_t)(0x80 | len);
    } else if (len <= 0xffff) {
        out[n++] = 0x80 | 126;
        out[n++] = (uint8_t)(len >> 8);
        out[n++] = (uint8_t)len;
    } else {
        out[n++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            out[n++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    memcpy(out + n, mask, 4);
    n += 4;
    const uint8_t *src = payload;
    for (size_t i = 0; i < len; i++)
        out[n + i] = src[i] ^ mask[i & 3];
    return n + len;
}

void cl_ws_accept_of(const char *key, char out[29])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md || EVP_DigestInit_ex(md, EVP_sha1(), NULL) != 1 ||
        EVP_DigestUpdate(md, key, strlen(key)) != 1 ||
        EVP_DigestUpdate(md, guid, sizeof guid - 1) != 1 ||
        EVP_DigestFinal_ex(md, digest, &dlen) != 1 || dlen != 20)
        abort();
    EVP_MD_CTX_free(md);
    chat_base64_encode(out, digest, 20, CHAT_BASE64_STD);
}

/* ---- a scanner for one JSON text ---- */

const char *const cl_rtf_names[CL_RTF_N] = {
    "other",   "message", "message_edited", "message_deleted", "typing", "read", "added",
    "removed", "ack",     "error",          "resumed",         "reset"};

#define MAX_DEPTH 32

static const char *ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* p at '"': returns the byte after the closing quote, or NULL. */
static const char *skip_string(const char *p, const char *end)
{
    for (p++; p < end; p++) {
        if (*p == '"')
            return p + 1;
        if (*p == '\\') {
            if (++p >= end)
                return NULL;
        } else if ((unsigned char)*p < 0x20) {
            return NULL;
        }
    }
    return NULL;
}

static const char *skip_value(const char *p, const char *end, int depth);

/* p at '{' or '['. */
static const char *skip_container(const char *p, const char *end, int depth)
{
    char close = *p == '{' ? '}' : ']';
    int object = *p == '{';
    if (depth > MAX_DEPTH)
        return NULL;
    p = ws(p + 1, end);
    if (p < end && *p == close)
        return p + 1;
    for (;;) {
        if (object) {
            if (p >= end || *p != '"' || !(p = skip_string(p, end)))
                return NULL;
            p = ws(p, end);
            if (p >= end || *p != ':')
                return NULL;
            p = ws(p + 1, end);
        }
        if (!(p = skip_value(p, end, depth + 1)))
            return NULL;
        p = ws(p, end);
        if (p < end && *p == ',') {
            p = ws(p + 1, end);
            continue;
        }
        return p < end && *p == close ? p + 1 : NULL;
    }
}

static const char *skip_value(const char *p, const char *end, int depth)
{
    if (p >= end)
        return NULL;
    if (*p == '"')
        return skip_string(p, end);
    if (*p == '{' || *p == '[')
        return skip_container(p, end, depth);
    const char *s = p;
    while (p < end && ((*p >= '0' && *p <= '9') || *p == '-' || *p == '+' || *p == '.' ||
                       (*p >= 'a' && *p <= 'z') || (*p == 'E')))
        p++;
    return p > s ? p : NULL;
}

/* A JSON integer spanning exactly [p, e): 0 and *v, or -1. */
static int int_of(const char *p, const char *e, int64_t *v)
{
    int neg = 0;
    if (p < e && *p == '-') {
        neg = 1;
        p++;
    }
    if (p >= e || e - p > 18)
        return -1;
    int64_t x = 0;
    for (; p < e; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        x = x * 10 + (*p - '0');
    }
    *v = neg ? -x : x;
    return 0;
}

static int key_is(const char *k, size_t kl, const char *name)
{
    return strlen(name) == kl && memcmp(k, name, kl) == 0;
}

/* Calls fn for every member of the object at p ('{'); returns the end of the
 * object, or NULL when it is malformed. Keys are given without quotes. */
typedef void (*member_fn)(void *ud, const char *k, size_t kl, const char *v, const char *ve);
static const char *walk_object(const char *p, const char *end, member_fn fn, void *ud)
{
    if (p >= end || *p != '{')
        return NULL;
    p = ws(p + 1, end);
    if (p < end && *p == '}')
        return p + 1;
    for (;;) {
        if (p >= end || *p != '"')
            return NULL;
        const char *k = p + 1, *ke = skip_string(p, end);
        if (!ke)
            return NULL;
        p = ws(ke, end);
        if (p >= end || *p != ':')
            return NULL;
        p = ws(p + 1, end);
        const char *v = p, *ve = skip_value(p, end, 1);
        if (!ve)
            return NULL;
        fn(ud, k, (size_t)(ke - 1 - k), v, ve);
        p = ws(ve, end);
        if (p < end && *p == ',') {
            p = ws(p + 1, end);
            continue;
        }
        return p < end && *p == '}' ? p + 1 : NULL;
    }
}

static void message_member(void *ud, const char *k, size_t kl, const char *v, const char *ve)
{
    cl_rt_frame_t *f = ud;
    if (key_is(k, kl, "body") && *v == '"') {
        f->body = v + 1;
        f->body_len = (size_t)(ve - v - 2);
    }
}

static void error_member(void *ud, const char *k, size_t kl, const char *v, const char *ve)
{
    cl_rt_frame_t *f = ud;
    if (key_is(k, kl, "code") && *v == '"') {
        f->code = v + 1;
        f->code_len = (size_t)(ve - v - 2);
    }
}

typedef struct {
    cl_rt_frame_t *f;
    const char *type, *msg, *msg_end, *err, *err_end;
    size_t type_len;
} top_t;

static void top_member(void *ud, const char *k, size_t kl, const char *v, const char *ve)
{
    top_t *t = ud;
    int64_t x;
    if (key_is(k, kl, "type") && *v == '"') {
        t->type = v + 1;
        t->type_len = (size_t)(ve - v - 2);
    } else if (key_is(k, kl, "conversation_id")) {
        if (int_of(v, ve, &x) == 0 && x > 0)
            t->f->conv = x;
    } else if (key_is(k, kl, "rev")) {
        if (int_of(v, ve, &x) == 0 && x >= 0)
            t->f->rev = x;
    } else if (key_is(k, kl, "message") && *v == '{') {
        t->msg = v;
        t->msg_end = ve;
    } else if (key_is(k, kl, "positions") && *v == '{') {
        t->f->positions = v;
        t->f->positions_len = (size_t)(ve - v);
    } else if (key_is(k, kl, "error") && *v == '{') {
        t->err = v;
        t->err_end = ve;
    }
}

int cl_rt_frame_parse(const char *s, size_t len, cl_rt_frame_t *f)
{
    memset(f, 0, sizeof *f);
    f->rev = -1;
    const char *end = s + len;
    top_t t = {.f = f};
    const char *p = walk_object(ws(s, end), end, top_member, &t);
    if (!p || ws(p, end) != end || !t.type)
        return -1;
    f->type = CL_RTF_OTHER;
    for (int i = 1; i < CL_RTF_N; i++)
        if (key_is(t.type, t.type_len, cl_rtf_names[i]))
            f->type = i;
    if (t.msg)
        walk_object(t.msg, t.msg_end, message_member, f);
    if (t.err)
        walk_object(t.err, t.err_end, error_member, f);
    return 0;
}

int cl_rt_positions_next(const char **pp, const char *end, int64_t *conv, int64_t *rev)
{
    const char *p = ws(*pp, end);
    if (p >= end)
        return -1;
    if (*p == '{') { /* the start */
        p = ws(p + 1, end);
        if (p < end && *p == '}') {
            *pp = p + 1;
            return 0;
        }
    } else if (*p == ',') {
        p = ws(p + 1, end);
    } else if (*p == '}') {
        *pp = p + 1;
        return 0;
    } else {
        return -1;
    }
    if (p >= end || *p != '"')
        return -1;
    const char *ke = skip_string(p, end);
    if (!ke || int_of(p + 1, ke - 1, conv) != 0 || *conv <= 0)
        return -1;
    p = ws(ke, end);
    if (p >= end || *p != ':')
        return -1;
    p = ws(p + 1, end);
    const char *ve = skip_value(p, end, 1);
    if (!ve || int_of(p, ve, rev) != 0 || *rev < 0)
        return -1;
    p = ws(ve, end);
    if (p >= end || (*p != ',' && *p != '}'))
        return -1;
    *pp = p;
    return 1;
}

/* ---- the body of a send ---- */

int cl_rt_body_format(char *out, size_t cap, uint32_t tag, uint64_t uid, uint64_t t_us)
{
    int n = snprintf(out, cap, "rt %08x %llu %llu", tag, (unsigned long long)uid,
                     (unsigned long long)t_us);
    return n > 0 && (size_t)n < cap ? n : -1;
}

/* Decimal digits at *p (at most 19): 0 and the value, moving *p past them. */
static int digits(const char **p, const char *end, uint64_t *v)
{
    const char *s = *p;
    uint64_t x = 0;
    while (*p < end && **p >= '0' && **p <= '9' && *p - s < 19)
        x = x * 10 + (uint64_t)(*(*p)++ - '0');
    *v = x;
    return *p > s ? 0 : -1;
}

int cl_rt_body_parse(const char *s, size_t len, uint32_t *tag, uint64_t *uid, uint64_t *t_us)
{
    const char *p = s, *end = s + len;
    if (len < 3 + 8 || memcmp(p, "rt ", 3) != 0)
        return -1;
    p += 3;
    uint32_t t = 0;
    for (int i = 0; i < 8; i++, p++) {
        int d = *p >= '0' && *p <= '9' ? *p - '0' : *p >= 'a' && *p <= 'f' ? *p - 'a' + 10 : -1;
        if (d < 0)
            return -1;
        t = t << 4 | (uint32_t)d;
    }
    if (p >= end || *p++ != ' ' || digits(&p, end, uid) != 0 || p >= end || *p++ != ' ' ||
        digits(&p, end, t_us) != 0 || p != end)
        return -1;
    *tag = t;
    return 0;
}
