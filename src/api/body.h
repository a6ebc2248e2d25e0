/*
 * The JSON bodies of the REST endpoints, decoded in one place: the object
 * and its fields checked by the rules of validate.h in the order the
 * contract answers them, into one struct. Pure (no I/O, no call state):
 * the handlers call it through chat_call_body() and tests/fuzz calls it
 * directly.
 */
#ifndef CHAT_API_BODY_H
#define CHAT_API_BODY_H

#include "api/validate.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum chat_api_body_kind {
    CHAT_API_BODY_SIGNUP, /* POST /api/v1/users: name */
    CHAT_API_BODY_CONV,   /* POST /api/v1/conversations: title, member_ids */
    CHAT_API_BODY_MEMBER, /* POST .../members: user_id */
    CHAT_API_BODY_SEND,   /* POST .../messages: body, client_msg_id */
    CHAT_API_BODY_EDIT,   /* PATCH .../messages/{message_id}: body */
    CHAT_API_BODY_READ,   /* POST .../read: seq */
    CHAT_API_BODY_BYPASS, /* POST /api/cache/bypass: enabled */
    CHAT_API_BODY_KINDS
} chat_api_body_kind_t;

/** A decoded body: the fields of its kind; strings point into _json. */
typedef struct chat_api_body {
    const char *text; /* name, title or body; NULL for the other kinds */
    size_t text_len;
    const char *client_msg_id; /* NULL: none */
    size_t client_msg_id_len;
    int64_t id;   /* user_id, or seq */
    int64_t *ids; /* member_ids (owned; freed by chat_api_body_dispose) */
    size_t n_ids;
    bool enabled;
    json_t *_json; /* holds the strings */
} chat_api_body_t;

/**
 * Decodes text as the body of kind into *out. Returns 0; or, with *out
 * empty, CHAT_EBADREQUEST (not a JSON object, a field missing or of
 * another type) or CHAT_EINVALID (a well-typed field breaks a rule) with
 * the client's message in why. chat_api_body_dispose() frees what a
 * decoded body holds.
 */
int chat_api_body_decode(chat_api_body_kind_t kind, const char *text, size_t len,
                         chat_api_body_t *out, char why[CHAT_API_WHY_MAX]) CHAT_API_MUSTCHECK;

/** Frees what b holds (also an empty b); b is empty afterwards. */
void chat_api_body_dispose(chat_api_body_t *b);

#endif
