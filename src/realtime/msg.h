/*
 * What the realtime layer carries, within a process (hub.h) and between
 * instances (fanout.h): a frame for the sockets of a conversation or of a
 * user, with the few numbers the receiving worker needs to route and order
 * it. The frame bytes are what a socket is sent; the numbers never are.
 */
#ifndef CHAT_REALTIME_MSG_H
#define CHAT_REALTIME_MSG_H

#include "core/alloc.h"
#include "core/buf.h"

#include <stddef.h>
#include <stdint.h>

typedef enum chat_rt_kind {
    /*
     * A conversation's event: id = conversation, a = its rev. An empty frame
     * is a hint: "events up to rev a exist" (a publisher that could not
     * reach Redis says so once it can again), which makes receivers fill.
     */
    CHAT_RT_EVENT = 1,
    /* A typing frame: id = conversation, a = the user typing (not sent to them). */
    CHAT_RT_TYPING,
    /* A frame for every socket of user id (a "read" frame): a, b unused. */
    CHAT_RT_USER,
    /*
     * User id joined conversation a at its rev b: their sockets follow it
     * from there. The frame ("added") may be empty: the creator gets none.
     */
    CHAT_RT_ADDED,
    /* User id left conversation a: their sockets stop following it; frame may be empty. */
    CHAT_RT_REMOVED,
} chat_rt_kind_t;

typedef struct chat_rt_msg {
    int kind; /* chat_rt_kind_t */
    int64_t id;
    int64_t a, b;
    const char *frame;
    size_t len;
} chat_rt_msg_t;

/** Room for an instance's origin and its NUL (a UUID text is 36 characters). */
#define CHAT_RT_ORIGIN_LEN 48

/**
 * Appends the Redis payload of m from origin to out:
 * "<origin> <kind> <id> <a> <b>\n<frame>". origin holds neither a space nor
 * a newline.
 */
void chat_rt_payload_encode(chat_buf_t *out, const char *origin, const chat_rt_msg_t *m);

/**
 * Decodes a payload into *m (frame pointing into p) and the origin's span.
 * Returns 0, or CHAT_EINVAL for bytes that are not a whole payload: a
 * missing part, an empty origin, an unknown kind, a number that is not
 * plain decimal digits fitting an int64 (id > 0, a and b >= 0).
 */
int chat_rt_payload_decode(const char *p, size_t len, const char **origin, size_t *origin_len,
                           chat_rt_msg_t *m) CHAT_MUSTCHECK;

#endif
