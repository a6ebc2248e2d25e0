/*
 * The stream's client messages (see stream_frame.h): the object, its type,
 * then the fields of that type, each refusal with the message the error
 * frame carries.
 */
#include "api/stream_frame.h"
#include "core/alloc.h"
#include "core/error.h"
#include "core/json.h"
#include "core/num.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Room for a client_msg_id echoed in an error frame, in bytes. */
#define ECHO_MAX 256

static int refuse(chat_api_frame_t *f, int err, char *why, const char *msg)
{
    f->type = CHAT_API_FRAME_NONE;
    snprintf(why, CHAT_API_WHY_MAX, "%s", msg);
    return err;
}

static int decode_send(json_t *o, chat_api_frame_t *f, char *why)
{
    /* The client_msg_id first, so that every answer can carry it. */
    int err = chat_api_valid_client_msg_id(o, &f->client_msg_id, &f->client_msg_id_len, why);
    if (err) {
        /* Refused, it is still echoed when it is text short enough to be. */
        json_t *c = json_object_get(o, "client_msg_id");
        if (c && json_is_string(c) && json_string_length(c) <= ECHO_MAX &&
            chat_utf8_count(json_string_value(c), json_string_length(c)) >= 0) {
            f->client_msg_id = json_string_value(c);
            f->client_msg_id_len = json_string_length(c);
        }
        f->type = CHAT_API_FRAME_NONE;
        return err;
    }
    err = chat_api_valid_id(json_object_get(o, "conversation_id"), "conversation_id", &f->conv_id,
                            why);
    if (!err)
        err = chat_api_valid_string(o, "body", 1, CHAT_API_BODY_MAX, &f->body, &f->body_len, why);
    if (err)
        f->type = CHAT_API_FRAME_NONE;
    return err;
}

/* A position's key: an id in plain decimal digits, no leading zero; -1 otherwise. */
static int64_t id_key(const char *k)
{
    int64_t v;
    const char *end = k + strlen(k);
    return k[0] != '0' && chat_scan_u64(k, end, INT64_MAX, &v) == end ? v : -1;
}

static int decode_resume(json_t *o, chat_api_frame_t *f, char *why)
{
    json_t *pos = json_object_get(o, "positions");
    if (!pos || !json_is_object(pos))
        return refuse(f, CHAT_EBADREQUEST, why, "positions must be an object");
    size_t n = json_object_size(pos), i = 0;
    f->convs = chat_malloc((n ? n : 1) * sizeof *f->convs);
    f->revs = chat_malloc((n ? n : 1) * sizeof *f->revs);
    const char *key;
    json_t *v;
    json_object_foreach(pos, key, v)
    {
        f->convs[i] = id_key(key);
        if (f->convs[i] < 0)
            return refuse(f, CHAT_EBADREQUEST, why, "positions keys must be conversation ids");
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            return refuse(f, CHAT_EBADREQUEST, why, "positions values must be integers >= 0");
        f->revs[i++] = json_integer_value(v);
    }
    f->n_positions = i;
    return 0;
}

int chat_api_frame_decode(const char *msg, size_t len, bool binary, chat_api_frame_t *out,
                          char why[CHAT_API_WHY_MAX])
{
    memset(out, 0, sizeof *out);
    if (binary)
        return refuse(out, CHAT_EBADREQUEST, why, "messages must be JSON text");
    int err = chat_api_valid_object(msg, len, "message", &out->_json, why);
    if (err)
        return err;
    json_t *type = json_object_get(out->_json, "type");
    const char *t = type && json_is_string(type) ? json_string_value(type) : NULL;
    out->release = !t || strcmp(t, "resume") != 0;
    if (!t)
        return refuse(out, CHAT_EBADREQUEST, why, "type must be a string");
    if (!strcmp(t, "send")) {
        out->type = CHAT_API_FRAME_SEND;
        return decode_send(out->_json, out, why);
    }
    if (!strcmp(t, "typing")) {
        out->type = CHAT_API_FRAME_TYPING;
        err = chat_api_valid_id(json_object_get(out->_json, "conversation_id"), "conversation_id",
                                &out->conv_id, why);
        if (err)
            out->type = CHAT_API_FRAME_NONE;
        return err;
    }
    if (!strcmp(t, "resume")) {
        out->type = CHAT_API_FRAME_RESUME;
        return decode_resume(out->_json, out, why);
    }
    return refuse(out, CHAT_EBADREQUEST, why, "unknown message type");
}

void chat_api_frame_dispose(chat_api_frame_t *f)
{
    free(f->convs);
    free(f->revs);
    if (f->_json)
        json_decref(f->_json);
    memset(f, 0, sizeof *f);
}
