/*
 * The status table (see status.h). The switch names every code of
 * chat_err_t, so a new code does not compile until it is given an answer.
 */
#include "api/status.h"

/* One static row per answer; ROW returns it. */
#define ROW(http, code, message, headers)                                                          \
    do {                                                                                           \
        static const chat_api_status_t row = {http, code, message, headers};                       \
        return &row;                                                                               \
    } while (0)

#define RETRY_AFTER "Retry-After: 1\r\n"

const chat_api_status_t *chat_api_status_of(int err)
{
    switch ((chat_err_t)err) {
    case CHAT_EBADREQUEST:
        ROW(400, "bad_request", "malformed request", NULL);
    case CHAT_EUNAUTHORIZED:
        ROW(401, "unauthorized", "missing or unknown token", "WWW-Authenticate: Bearer\r\n");
    case CHAT_EFORBIDDEN:
        ROW(403, "forbidden", "not allowed", NULL);
    case CHAT_ENOTFOUND:
        ROW(404, "not_found", "not found", NULL);
    case CHAT_ECONFLICT:
        ROW(409, "conflict", "conflict", NULL);
    case CHAT_EINVALID:
        ROW(422, "invalid_field", "invalid field", NULL);
    case CHAT_ERATELIMITED:
        ROW(429, "rate_limited", "too many requests", RETRY_AFTER);
    case CHAT_EUNAVAILABLE:
    /* Not domain codes: whatever failed below, the client may try again. */
    case CHAT_EOK:
    case CHAT_EDOWN:
    case CHAT_ETIMEDOUT:
    case CHAT_EREPLY:
    case CHAT_ECLOSED:
    case CHAT_ECONNLOST:
    case CHAT_EINVAL:
    case CHAT_ERANDOM:
        break;
    }
    /* Also libuv's codes. */
    ROW(503, "unavailable", "the service is temporarily unavailable", RETRY_AFTER);
}

int chat_api_status_ok(chat_reply_kind_t kind)
{
    switch (kind) {
    case CHAT_REPLY_OK:
        break;
    case CHAT_REPLY_CREATED:
        return 201;
    case CHAT_REPLY_NO_CONTENT:
        return 204;
    }
    return 200;
}
