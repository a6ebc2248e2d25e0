/*
 * The client messages of the stream (GET /api/v1/stream), decoded in one
 * place: "send", "typing" and "resume" frames checked by the rules of
 * validate.h into one struct, with what an error frame needs when one is
 * refused. Pure (no I/O, no session state): api/ws_session.c acts on the
 * result and tests/fuzz calls it directly.
 */
#ifndef CHAT_API_STREAM_FRAME_H
#define CHAT_API_STREAM_FRAME_H

#include "api/validate.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum chat_api_frame_type {
    CHAT_API_FRAME_NONE, /* refused */
    CHAT_API_FRAME_SEND,
    CHAT_API_FRAME_TYPING,
    CHAT_API_FRAME_RESUME,
} chat_api_frame_type_t;

/** A decoded client message; strings point into _json. */
typedef struct chat_api_frame {
    int type; /* chat_api_frame_type_t */
    /*
     * The message is an object whose type is not "resume": it ends the
     * stream's wait for a first frame after the upgrade (also when refused).
     */
    bool release;
    /*
     * send: the client_msg_id (NULL: none). On refusal: the id the error
     * frame echoes (a string of at most 256 bytes of valid UTF-8), or NULL.
     */
    const char *client_msg_id;
    size_t client_msg_id_len;
    int64_t conv_id;  /* send, typing */
    const char *body; /* send */
    size_t body_len;
    int64_t *convs; /* resume: n_positions conversation ids and their revs (owned) */
    int64_t *revs;
    size_t n_positions;
    json_t *_json;
} chat_api_frame_t;

/**
 * Decodes one message of the stream's client (binary: it came in a binary
 * frame, which is refused). Returns 0, or CHAT_EBADREQUEST or CHAT_EINVALID
 * with the client's message in why (type then CHAT_API_FRAME_NONE). Either
 * way the caller calls chat_api_frame_dispose() once it no longer needs the
 * strings.
 */
int chat_api_frame_decode(const char *msg, size_t len, bool binary, chat_api_frame_t *out,
                          char why[CHAT_API_WHY_MAX]) CHAT_API_MUSTCHECK;

/** Frees what f holds; f is empty afterwards. */
void chat_api_frame_dispose(chat_api_frame_t *f);

#endif
