/*
 * The rules for the fields of request bodies and stream messages, written
 * once for the REST handlers and the WebSocket "send": a missing field or a
 * wrong JSON type is CHAT_EBADREQUEST (400 bad_request); a well-typed value
 * that breaks a rule is CHAT_EINVALID (422 invalid_field). Lengths count
 * Unicode code points.
 */
#ifndef CHAT_API_VALIDATE_H
#define CHAT_API_VALIDATE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* The contract's limits, in code points or items. */
#define CHAT_API_NAME_MAX 64
#define CHAT_API_TITLE_MAX 200
#define CHAT_API_MEMBERS_MAX 1000
#define CHAT_API_BODY_MAX 4000
#define CHAT_API_CLIENT_MSG_ID_MAX 64

/** Room for the client message a validator writes on refusal. */
#define CHAT_API_WHY_MAX 160

#define CHAT_API_MUSTCHECK __attribute__((warn_unused_result))

/*
 * Every validator returns 0 with the value, or CHAT_EBADREQUEST or
 * CHAT_EINVALID with the client's message in why. Values handed out point
 * into the JSON and live as long as it.
 */

/**
 * Parses text as a JSON object (what names it in messages: "body",
 * "message"); the caller decrefs *out. Invalid UTF-8, invalid JSON, a
 * duplicate object key, a NUL (\u0000) in any string or key, and other
 * JSON values are refused with CHAT_EBADREQUEST, each with its own message.
 */
int chat_api_valid_object(const char *text, size_t len, const char *what, json_t **out,
                          char why[CHAT_API_WHY_MAX]) CHAT_API_MUSTCHECK;

/** Field name of obj: a string of min..max code points. */
int chat_api_valid_string(json_t *obj, const char *name, long min, long max, const char **out,
                          size_t *out_len, char why[CHAT_API_WHY_MAX]) CHAT_API_MUSTCHECK;

/**
 * The optional client_msg_id of obj: absent or null gives 0 with *out NULL;
 * else a string of 1..CHAT_API_CLIENT_MSG_ID_MAX code points.
 */
int chat_api_valid_client_msg_id(json_t *obj, const char **out, size_t *out_len,
                                 char why[CHAT_API_WHY_MAX]) CHAT_API_MUSTCHECK;

/** v (NULL: absent), named name in messages, is an id: an integer >= 1. */
int chat_api_valid_id(json_t *v, const char *name, int64_t *out,
                      char why[CHAT_API_WHY_MAX]) CHAT_API_MUSTCHECK;

/**
 * Field name of obj is an array of at most max ids: types first (400), then
 * the count and each id (422). *out is a new array the caller frees (also
 * when empty), *n its length; NULL on refusal.
 */
int chat_api_valid_id_list(json_t *obj, const char *name, size_t max, int64_t **out, size_t *n,
                           char why[CHAT_API_WHY_MAX]) CHAT_API_MUSTCHECK;

#endif
