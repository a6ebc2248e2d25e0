/*
 * Field validators (see validate.h): the same answers for POST .../messages
 * and the stream's "send", for sign-up, conversations and members.
 */
#include "api/validate.h"
#include "core/alloc.h"
#include "core/error.h"
#include "core/json.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((format(printf, 3, 4))) static int refuse(chat_err_t err, char *why, const char *fmt,
                                                        ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, CHAT_API_WHY_MAX, fmt, ap);
    va_end(ap);
    return err;
}

/* True when a string anywhere in v holds a NUL (parsed under JSON_ALLOW_NUL). */
static bool holds_nul(json_t *v)
{
    if (json_is_string(v))
        return strlen(json_string_value(v)) != json_string_length(v);
    if (json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e)
        {
            if (holds_nul(e))
                return true;
        }
    } else if (json_is_object(v)) {
        const char *k;
        json_t *e;
        json_object_foreach(v, k, e)
        {
            if (holds_nul(e))
                return true;
        }
    }
    return false;
}

int chat_api_valid_object(const char *text, size_t len, const char *what, json_t **out,
                          char why[CHAT_API_WHY_MAX])
{
    *out = NULL;
    if (chat_utf8_count(text, len) < 0)
        return refuse(CHAT_EBADREQUEST, why, "the %s is not valid UTF-8", what);
    /*
     * Duplicate keys are refused: which of the two a reader takes is where
     * two parsers of one request would disagree. NULs are let through the
     * parser (jansson's depth limit bounds the walk) only to be refused
     * with a message that says what is wrong.
     */
    json_error_t err;
    json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &err);
    if (!j) {
        switch (json_error_code(&err)) {
        case json_error_duplicate_key:
            return refuse(CHAT_EBADREQUEST, why, "the %s has a duplicate object key", what);
        case json_error_null_byte_in_key:
            return refuse(CHAT_EBADREQUEST, why, "strings must not contain NUL (\\u0000)");
        default:
            return refuse(CHAT_EBADREQUEST, why, "the %s is not valid JSON", what);
        }
    }
    if (!json_is_object(j)) {
        json_decref(j);
        return refuse(CHAT_EBADREQUEST, why, "the %s must be a JSON object", what);
    }
    if (holds_nul(j)) {
        json_decref(j);
        return refuse(CHAT_EBADREQUEST, why, "strings must not contain NUL (\\u0000)");
    }
    *out = j;
    return 0;
}

int chat_api_valid_string(json_t *obj, const char *name, long min, long max, const char **out,
                          size_t *out_len, char why[CHAT_API_WHY_MAX])
{
    json_t *v = json_object_get(obj, name);
    if (!v || !json_is_string(v))
        return refuse(CHAT_EBADREQUEST, why, "%s must be a string", name);
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    long n = chat_utf8_count(s, len);
    if (n < 0)
        return refuse(CHAT_EBADREQUEST, why, "strings must be valid UTF-8");
    if (n < min || n > max)
        return refuse(CHAT_EINVALID, why, "%s must be %ld to %ld characters long", name, min, max);
    *out = s;
    *out_len = len;
    return 0;
}

int chat_api_valid_client_msg_id(json_t *obj, const char **out, size_t *out_len,
                                 char why[CHAT_API_WHY_MAX])
{
    *out = NULL;
    *out_len = 0;
    json_t *v = json_object_get(obj, "client_msg_id");
    if (!v || json_is_null(v))
        return 0;
    return chat_api_valid_string(obj, "client_msg_id", 1, CHAT_API_CLIENT_MSG_ID_MAX, out, out_len,
                                 why);
}

int chat_api_valid_id(json_t *v, const char *name, int64_t *out, char why[CHAT_API_WHY_MAX])
{
    if (!v || !json_is_integer(v))
        return refuse(CHAT_EBADREQUEST, why, "%s must be an integer", name);
    json_int_t n = json_integer_value(v);
    if (n <= 0)
        return refuse(CHAT_EINVALID, why, "%s must be a positive id", name);
    *out = (int64_t)n;
    return 0;
}

int chat_api_valid_id_list(json_t *obj, const char *name, size_t max, int64_t **out, size_t *n,
                           char why[CHAT_API_WHY_MAX])
{
    *out = NULL;
    *n = 0;
    json_t *arr = json_object_get(obj, name);
    if (!arr || !json_is_array(arr))
        return refuse(CHAT_EBADREQUEST, why, "%s must be an array of ids", name);
    size_t len = json_array_size(arr);
    /* Types first (400), then rules (422). */
    for (size_t i = 0; i < len; i++)
        if (!json_is_integer(json_array_get(arr, i)))
            return refuse(CHAT_EBADREQUEST, why, "%s must be an array of ids", name);
    if (len > max)
        return refuse(CHAT_EINVALID, why, "%s holds more than %zu ids", name, max);
    int64_t *ids = chat_malloc(sizeof *ids * (len ? len : 1));
    char elem[64];
    snprintf(elem, sizeof elem, "%s[]", name);
    for (size_t i = 0; i < len; i++) {
        int err = chat_api_valid_id(json_array_get(arr, i), elem, &ids[i], why);
        if (err) {
            free(ids);
            return err;
        }
    }
    *out = ids;
    *n = len;
    return 0;
}
