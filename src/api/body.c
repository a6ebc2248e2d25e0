/*
 * The REST bodies (see body.h): one switch over the kinds, each a short
 * sequence of the field validators of validate.c.
 */
#include "api/body.h"
#include "core/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int refuse(int err, char *why, const char *msg)
{
    snprintf(why, CHAT_API_WHY_MAX, "%s", msg);
    return err;
}

static int decode_fields(chat_api_body_kind_t kind, json_t *j, chat_api_body_t *out, char *why)
{
    int err;
    json_t *v;
    switch (kind) {
    case CHAT_API_BODY_SIGNUP:
        return chat_api_valid_string(j, "name", 1, CHAT_API_NAME_MAX, &out->text, &out->text_len,
                                     why);
    case CHAT_API_BODY_CONV:
        err = chat_api_valid_string(j, "title", 1, CHAT_API_TITLE_MAX, &out->text, &out->text_len,
                                    why);
        if (!err)
            err = chat_api_valid_id_list(j, "member_ids", CHAT_API_MEMBERS_MAX, &out->ids,
                                         &out->n_ids, why);
        return err;
    case CHAT_API_BODY_MEMBER:
        return chat_api_valid_id(json_object_get(j, "user_id"), "user_id", &out->id, why);
    case CHAT_API_BODY_SEND:
        err =
            chat_api_valid_string(j, "body", 1, CHAT_API_BODY_MAX, &out->text, &out->text_len, why);
        if (!err)
            err =
                chat_api_valid_client_msg_id(j, &out->client_msg_id, &out->client_msg_id_len, why);
        return err;
    case CHAT_API_BODY_EDIT:
        return chat_api_valid_string(j, "body", 1, CHAT_API_BODY_MAX, &out->text, &out->text_len,
                                     why);
    case CHAT_API_BODY_READ:
        v = json_object_get(j, "seq");
        if (!v || !json_is_integer(v))
            return refuse(CHAT_EBADREQUEST, why, "seq must be an integer");
        if (json_integer_value(v) < 0)
            return refuse(CHAT_EINVALID, why, "seq must not be negative");
        out->id = json_integer_value(v);
        return 0;
    case CHAT_API_BODY_BYPASS:
        v = json_object_get(j, "enabled");
        if (!v || !json_is_boolean(v))
            return refuse(CHAT_EBADREQUEST, why, "enabled must be true or false");
        out->enabled = json_is_true(v);
        return 0;
    default:
        return refuse(CHAT_EBADREQUEST, why, "no such body");
    }
}

int chat_api_body_decode(chat_api_body_kind_t kind, const char *text, size_t len,
                         chat_api_body_t *out, char why[CHAT_API_WHY_MAX])
{
    memset(out, 0, sizeof *out);
    int err = chat_api_valid_object(text, len, "body", &out->_json, why);
    if (err)
        return err;
    err = decode_fields(kind, out->_json, out, why);
    if (err)
        chat_api_body_dispose(out);
    return err;
}

void chat_api_body_dispose(chat_api_body_t *b)
{
    free(b->ids);
    if (b->_json)
        json_decref(b->_json);
    memset(b, 0, sizeof *b);
}
