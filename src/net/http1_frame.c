/*
 * The framing checker (see http1_frame.h): a small state machine over the
 * bytes of a connection, in the parts a request is made of.
 */
#include "net/http1_frame.h"

#include <string.h>

enum part {
    PART_START,    /* before the request line: empty lines (CRLF) are skipped */
    PART_REQLINE,  /* the request line */
    PART_HEADERS,  /* header lines, up to the empty line */
    PART_BODY,     /* no body, or a Content-Length one: the parser's alone */
    PART_SIZE,     /* a chunk-size line */
    PART_DATA,     /* chunk data: _left bytes to skip */
    PART_DATA_END, /* the CRLF after chunk data (_sub: 0 wants CR, 1 wants LF) */
    PART_TRAILERS, /* trailer lines after the last chunk, up to the empty line */
    PART_DONE,     /* the request is over: nothing more until the parser says so */
    PART_FAILED,
};

/* Steps of a chunk-size line (_sub). */
enum { SIZE_DIGITS, SIZE_BWS, SIZE_EXT };

void chat_http1_frame_init(chat_http1_frame_t *f, uint32_t max_head)
{
    memset(f, 0, sizeof *f);
    f->_part = PART_START;
    f->_max_head = max_head;
}

void chat_http1_frame_body(chat_http1_frame_t *f, bool chunked)
{
    f->_chunked = chunked;
}

void chat_http1_frame_next(chat_http1_frame_t *f)
{
    if (f->_part != PART_FAILED)
        chat_http1_frame_init(f, f->_max_head);
}

static int fail(chat_http1_frame_t *f, int status, const char **why, const char *reason)
{
    f->_part = PART_FAILED;
    *why = reason;
    return status;
}

static void begin_line(chat_http1_frame_t *f, enum part part)
{
    f->_part = (uint8_t)part;
    f->_line_len = 0;
    f->_sub = 0;
    f->_digits = 0;
    f->_left = 0;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* RFC 9110 tchar: what a field name is made of. */
static bool is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* One byte of a line, not CR or LF. */
static int line_byte(chat_http1_frame_t *f, unsigned char c, const char **why)
{
    switch (f->_part) {
    case PART_START: /* the first byte of the request line */
        f->_part = PART_REQLINE;
        /* fall through */
    case PART_REQLINE:
        if (c == ' ') {
            if (f->_line_len == 0 || f->_prev_sp)
                return fail(f, 400, why, "malformed request line");
            f->_spaces++;
            f->_method = true;
            f->_since_sp = 0;
            f->_prev_sp = true;
        } else if (c < ' ' || c == 0x7f) {
            return fail(f, 400, why, "malformed request line");
        } else {
            f->_prev_sp = false;
            f->_since_sp++;
            memmove(f->_ver, f->_ver + 1, sizeof f->_ver - 1);
            f->_ver[sizeof f->_ver - 1] = (char)c;
        }
        return 0;
    case PART_HEADERS:
    case PART_TRAILERS:
        if (f->_line_len == 0 && (c == ' ' || c == '\t'))
            return fail(f, 400, why, "folded header line (obs-fold)");
        /* http-parser lets a control character through at the start of a value. */
        if ((c < ' ' && c != '\t') || c == 0x7f)
            return fail(f, 400, why, "a control character in a header line");
        /* The name, up to its ':', is a token (_sub: 0 in the name, 1 in the value). */
        if (f->_sub == 0 && c == ':')
            f->_sub = 1;
        else if (f->_sub == 0 && !is_tchar(c))
            return fail(f, 400, why, "invalid header name");
        return 0;
    case PART_SIZE:
        if (f->_sub == SIZE_DIGITS) {
            int v = hexval(c);
            if (v >= 0) {
                /* 16 hex digits hold any size; the parser refuses an overflow first. */
                if (++f->_digits > 16)
                    return fail(f, 400, why, "invalid chunk size");
                f->_left = f->_left * 16 + (uint64_t)v;
                return 0;
            }
            if (f->_digits == 0)
                return fail(f, 400, why, "invalid chunk size");
            f->_sub = SIZE_BWS;
        }
        if (f->_sub == SIZE_BWS) {
            if (c == ';')
                f->_sub = SIZE_EXT;
            else if (c != ' ' && c != '\t')
                return fail(f, 400, why, "invalid chunk size");
        }
        return 0; /* an extension's text: the parser reads it, chatd ignores it */
    default:
        return 0;
    }
}

/* A CRLF ended the current line. */
static int end_line(chat_http1_frame_t *f, const char **why)
{
    switch (f->_part) {
    case PART_START:
        return 0; /* an empty line before the request (RFC 9112 2.2) */
    case PART_REQLINE: {
        const char *v = f->_ver;
        if (f->_spaces != 2 || f->_since_sp != sizeof f->_ver || memcmp(v, "HTTP/", 5) != 0 ||
            !is_digit(v[5]) || v[6] != '.' || !is_digit(v[7]))
            return fail(f, 400, why, "malformed request line");
        if (v[5] != '1' || (v[7] != '0' && v[7] != '1'))
            return fail(f, 505, why, "only HTTP/1.0 and HTTP/1.1 are supported");
        begin_line(f, PART_HEADERS);
        return 0;
    }
    case PART_HEADERS:
        if (f->_line_len > 0)
            begin_line(f, PART_HEADERS);
        else if (f->_chunked)
            begin_line(f, PART_SIZE);
        else
            f->_part = PART_BODY;
        return 0;
    case PART_SIZE:
        if (f->_digits == 0 || f->_sub == SIZE_BWS)
            return fail(f, 400, why, "invalid chunk size");
        if (f->_left == 0) {
            begin_line(f, PART_TRAILERS);
        } else {
            f->_part = PART_DATA;
        }
        return 0;
    case PART_TRAILERS:
        if (f->_line_len > 0)
            begin_line(f, PART_TRAILERS);
        else
            f->_part = PART_DONE;
        return 0;
    default:
        return 0;
    }
}

int chat_http1_frame_scan(chat_http1_frame_t *f, const char *p, size_t n, const char **why)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        switch (f->_part) {
        case PART_BODY:
        case PART_DONE:
            return 0; /* the rest of these bytes are the parser's alone */
        case PART_FAILED:
            *why = "malformed request";
            return 400;
        case PART_DATA: {
            uint64_t k = n - i < f->_left ? n - i : f->_left;
            f->_left -= k;
            i += (size_t)k - 1;
            if (f->_left == 0) {
                f->_part = PART_DATA_END;
                f->_sub = 0;
            }
            continue;
        }
        case PART_DATA_END:
            if (c != (f->_sub == 0 ? '\r' : '\n'))
                return fail(f, 400, why, "chunk data is not followed by CRLF");
            if (f->_sub++ == 1)
                begin_line(f, PART_SIZE);
            continue;
        default:
            break;
        }
        /* A line: request line, header, chunk size or trailer. */
        int st;
        bool head = f->_part == PART_REQLINE || f->_part == PART_HEADERS ||
                    f->_part == PART_TRAILERS ||
                    (f->_part == PART_START && c != '\r' && c != '\n' && !f->_cr);
        if (head && f->_max_head && ++f->_head > f->_max_head)
            return fail(f, 431, why, "the request line and headers exceed the size limit");
        if (f->_cr) {
            if (c != '\n')
                return fail(f, 400, why, "a CR not followed by LF");
            f->_cr = false;
            if ((st = end_line(f, why)) != 0)
                return st;
        } else if (c == '\r') {
            f->_cr = true;
        } else if (c == '\n') {
            return fail(f, 400, why, "a line ends in a bare LF, not CRLF");
        } else {
            if ((st = line_byte(f, c, why)) != 0)
                return st;
            f->_line_len++;
        }
    }
    return 0;
}
