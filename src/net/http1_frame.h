/*
 * The framing rules of RFC 9112 that http-parser 2.9 lets through, checked
 * over the very bytes the parser consumed (net/http1_request.c runs it after
 * each parse, before a request is handed over): every line of a request
 * head, of a chunk-size line and of a trailer section ends in CRLF (no bare
 * LF); no header or trailer line is folded (obs-fold) or holds a control
 * character other than HTAB, and its name is a token; the request line is
 * "method SP request-target SP HTTP-version", the version HTTP/1.0 or
 * HTTP/1.1; a chunk size is hex digits, then nothing or an extension after
 * ";"; chunk data is followed by CRLF. Two parsers that disagree on where a
 * request ends are how requests are smuggled past a proxy, so chatd refuses
 * what a stricter parser would read differently.
 *
 * Debian's http-parser 2.9 has no run-time switch for any of this: its
 * HTTP_PARSER_STRICT is fixed when the library is built (Debian builds it
 * lenient: chunk data without its CRLF is taken), and even its strict build
 * takes folded lines and bare LFs. Hence these explicit checks.
 *
 * It also holds the head to its size limit: the bytes of the request line,
 * the header lines and a chunked body's trailer lines, CRLFs included, as
 * they were sent. Counted here, byte by byte, the limit is crossed at one
 * byte however the bytes were split into reads, so a fault before that byte
 * is refused as itself and one after it as a head too large.
 *
 * The checker follows a connection's requests across reads one byte at a
 * time and keeps no input; a Content-Length body and chunk data are skipped
 * in bulk.
 */
#ifndef CHAT_NET_HTTP1_FRAME_H
#define CHAT_NET_HTTP1_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct chat_http1_frame {
    uint8_t _part;      /* where in a request (http1_frame.c) */
    uint8_t _sub;       /* a step within that part */
    uint8_t _spaces;    /* request line: SPs seen */
    bool _cr;           /* the last byte was a CR that ends a line */
    bool _prev_sp;      /* request line: the last byte was a SP */
    bool _chunked;      /* the body of the request being read is chunked */
    bool _method;       /* the request line's method is over (its SP was seen) */
    uint8_t _digits;    /* chunk-size line: hex digits seen */
    char _ver[8];       /* request line: its last 8 bytes */
    uint32_t _line_len; /* bytes of the current line before its CRLF */
    uint32_t _since_sp; /* request line: bytes since its last SP */
    uint32_t _head;     /* bytes of this request's head (and trailers) so far */
    uint32_t _max_head; /* the limit on them; 0: none */
    uint64_t _left;     /* chunk data still to come */
} chat_http1_frame_t;

/**
 * A checker at the start of a connection (before its first request), whose
 * requests' heads may hold max_head bytes (0: no limit).
 */
void chat_http1_frame_init(chat_http1_frame_t *f, uint32_t max_head);

/**
 * Says how the body of the request whose head is being checked is framed:
 * called once the parser has the whole head (before the checker reaches its
 * end), chunked or not (a Content-Length body, or none, is the parser's).
 */
void chat_http1_frame_body(chat_http1_frame_t *f, bool chunked);

/**
 * Checks the next n bytes of the connection, as consumed by the parser.
 * Returns 0, or the HTTP status to refuse the request with (400, 431 for a
 * head past its limit, or 505 for an HTTP version other than 1.0 and 1.1)
 * and the reason in *why. After a refusal the checker is spent.
 */
int chat_http1_frame_scan(chat_http1_frame_t *f, const char *p, size_t n, const char **why);

/**
 * True once the request line's method is complete (the parser's method is
 * then this request's): known from the bytes alone, however they were split
 * into reads.
 */
static inline bool chat_http1_frame_method_seen(const chat_http1_frame_t *f)
{
    return f->_method;
}

/** The parser completed a request: the next bytes start the next one. */
void chat_http1_frame_next(chat_http1_frame_t *f);

#endif
