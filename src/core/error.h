/*
 * chatd's one error convention, after libuv's: a call that can fail returns
 * an int that is 0 or a negative code, and a status handed to a callback is
 * the same kind of value. libuv's own codes (UV_E*, negative errno values
 * above -5000) pass through unchanged; chatd's codes sit below -5000 in one
 * typed enum so that a switch over them is checked by -Wswitch.
 * chat_err_name() and chat_strerror() answer for both. A status field is
 * typed chat_err_t (libuv codes are converted where they enter) so that
 * switches over it are checked.
 */
#ifndef CHAT_CORE_ERROR_H
#define CHAT_CORE_ERROR_H

/*
 * X(name, value, text). Transport codes describe what happened to a command
 * or a transaction; domain codes describe why a request cannot be served and
 * map one to one to an HTTP status (api/status.c).
 */
#define CHAT_ERR_MAP(X)                                                                            \
    X(EDOWN, -5001, "peer unreachable or circuit open; nothing was sent")                          \
    X(ETIMEDOUT, -5002, "deadline passed before the answer")                                       \
    X(EREPLY, -5003, "the server answered with an error")                                          \
    X(ECLOSED, -5004, "closed by this process")                                                    \
    X(ECONNLOST, -5005, "connection lost before the answer")                                       \
    X(EINVAL, -5006, "invalid argument")                                                           \
    X(ERANDOM, -5007, "no randomness available")                                                   \
    X(EBADREQUEST, -5100, "malformed request")                                                     \
    X(EUNAUTHORIZED, -5101, "missing or unknown token")                                            \
    X(EFORBIDDEN, -5102, "not allowed")                                                            \
    X(ENOTFOUND, -5103, "not found")                                                               \
    X(ECONFLICT, -5104, "conflict")                                                                \
    X(EINVALID, -5105, "a value breaks a rule")                                                    \
    X(ERATELIMITED, -5106, "rate limited")                                                         \
    X(EUNAVAILABLE, -5107, "temporarily unavailable")

typedef enum chat_err {
    CHAT_EOK = 0, /* success: written 0 where an int is returned */
#define CHAT_ERR_ENUM(name, value, text) CHAT_##name = value,
    CHAT_ERR_MAP(CHAT_ERR_ENUM)
#undef CHAT_ERR_ENUM
} chat_err_t;

/** "ETIMEDOUT", or libuv's name ("ECONNREFUSED") for a libuv code; "OK" for 0. */
const char *chat_err_name(int err);
/** A sentence for logs; libuv's text for a libuv code; "success" for 0. */
const char *chat_strerror(int err);

#endif
