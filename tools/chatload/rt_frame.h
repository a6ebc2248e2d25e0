/*
 * The client side of chatd's stream, without I/O: RFC 6455 frames as a
 * client sends them (whole, masked) and as it must accept them from a server
 * (unmasked, no reserved bits); the fields of chatd's JSON frames that the
 * realtime stage checks, read by a small scanner that takes the keys in any
 * order; and the text chatload puts in each message body.
 */
#ifndef CHATLOAD_RT_FRAME_H
#define CHATLOAD_RT_FRAME_H

#include <stddef.h>
#include <stdint.h>

enum {
    CL_WS_CONT = 0x0,
    CL_WS_TEXT = 0x1,
    CL_WS_BINARY = 0x2,
    CL_WS_CLOSE = 0x8,
    CL_WS_PING = 0x9,
    CL_WS_PONG = 0xA
};

typedef struct {
    int fin, opcode;
    const uint8_t *payload; /* points into the parsed bytes */
    size_t len;
} cl_ws_frame_t;

/**
 * Parses the server frame at the start of p[0..n). Returns the bytes it
 * takes when it is whole, 0 when more are needed, -1 when it breaks RFC 6455
 * for a server frame: masked, reserved bits, an unknown opcode, a control
 * frame fragmented or over 125 bytes, or a payload over max.
 */
long cl_ws_parse(const uint8_t *p, size_t n, size_t max, cl_ws_frame_t *f);

/** Bytes of a client frame carrying len bytes of payload. */
size_t cl_ws_frame_size(size_t len);

/** Writes a whole client frame (FIN set, masked with mask) into out, which has
 *  room for cl_ws_frame_size(len) bytes; returns that size. */
size_t cl_ws_encode(uint8_t *out, int opcode, const void *payload, size_t len,
                    const uint8_t mask[4]);

/** The value of Sec-WebSocket-Accept for key (RFC 6455 4.2.2): 28 characters and a NUL. */
void cl_ws_accept_of(const char *key, char out[29]);

typedef enum {
    CL_RTF_OTHER,
    CL_RTF_MESSAGE,
    CL_RTF_EDITED,
    CL_RTF_DELETED,
    CL_RTF_TYPING,
    CL_RTF_READ,
    CL_RTF_ADDED,
    CL_RTF_REMOVED,
    CL_RTF_ACK,
    CL_RTF_ERROR,
    CL_RTF_RESUMED,
    CL_RTF_RESET,
    CL_RTF_N
} cl_rtf_type_t;
/* "message", "message_edited", … as the frames name them; "other" for the rest. */
extern const char *const cl_rtf_names[CL_RTF_N];

typedef struct {
    int type;         /* cl_rtf_type_t */
    int64_t conv;     /* conversation_id, 0 when absent or not a positive integer */
    int64_t rev;      /* rev, -1 when absent or not an integer >= 0 */
    const char *body; /* the message's body, its JSON text between the quotes; NULL if none */
    size_t body_len;
    const char *positions; /* the positions object of "resumed", braces included; NULL if none */
    size_t positions_len;
    const char *code; /* error.code of an "error" frame, between the quotes; NULL if none */
    size_t code_len;
} cl_rt_frame_t;

/**
 * Reads a frame's type and the fields above from one JSON text. Returns 0,
 * or -1 when the text is not a well-formed JSON object with a string "type".
 * The pointers point into s.
 */
int cl_rt_frame_parse(const char *s, size_t len, cl_rt_frame_t *f);

/**
 * Walks a positions object ({"7": 15, …}): *p starts at its '{'. Returns 1
 * with the next pair in *conv and *rev, 0 after the last one, -1 when the
 * object is malformed (a key that is not a positive integer, a value that is
 * not an integer >= 0).
 */
int cl_rt_positions_next(const char **p, const char *end, int64_t *conv, int64_t *rev);

/* Longest body cl_rt_body_format writes, with its NUL. */
#define CL_RT_BODY_MAX 64

/** The body of send uid of run tag, sent at t_us: "rt <tag hex> <uid> <t_us>". */
int cl_rt_body_format(char *out, size_t cap, uint32_t tag, uint64_t uid, uint64_t t_us);

/** Reads a body written by cl_rt_body_format: 0, or -1 when it is not one. */
int cl_rt_body_parse(const char *s, size_t len, uint32_t *tag, uint64_t *uid, uint64_t *t_us);

#endif
