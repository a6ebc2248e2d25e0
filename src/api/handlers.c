/*
 * Handlers of the /api/v1 resources: decode and validate input, then hand
 * over to chat/. Missing fields and wrong JSON types answer 400; well-typed
 * values that break a rule answer 422.
 */
#include "api/internal.h"
#include "core/alloc.h"

#include <stdlib.h>
#include <string.h>

#define NAME_MAX_CHARS 64
#define TITLE_MAX_CHARS 200
#define MEMBERS_MAX 1000
#define BODY_MAX_CHARS 4000
#define CLIENT_MSG_ID_MAX_CHARS 64

void chat_h_signup(chat_call_t *call)
{
    json_t *j = chat_call_json_object(call);
    if (!j)
        return;
    const char *name;
    size_t len;
    if (chat_call_string_field(call, j, "name", 1, NAME_MAX_CHARS, &name, &len) == 0)
        chat_users_create(call->api->ctx, name, len, chat_call_reply_cb, call);
    json_decref(j);
}

void chat_h_user_get(chat_call_t *call)
{
    chat_users_get(call->api->ctx, call->id, chat_call_reply_cb, call);
}

/* An integer field that must name something: 400 if absent or not an integer, 422 if <= 0. */
static int id_value(chat_call_t *call, json_t *v, const char *what, int64_t *out)
{
    char msg[128];
    if (!v || !json_is_integer(v)) {
        snprintf(msg, sizeof msg, "%s must be an integer", what);
        chat_call_error(call, 400, "bad_request", msg, NULL);
        return -1;
    }
    json_int_t n = json_integer_value(v);
    if (n <= 0) {
        snprintf(msg, sizeof msg, "%s must be a positive id", what);
        chat_call_error(call, 422, "invalid_field", msg, NULL);
        return -1;
    }
    *out = (int64_t)n;
    return 0;
}

void chat_h_conv_create(chat_call_t *call)
{
    json_t *j = chat_call_json_object(call);
    if (!j)
        return;
    const char *title;
    size_t title_len;
    int64_t *ids = NULL;
    json_t *arr = json_object_get(j, "member_ids");
    if (chat_call_string_field(call, j, "title", 1, TITLE_MAX_CHARS, &title, &title_len) < 0)
        goto out;
    if (!arr || !json_is_array(arr)) {
        chat_call_error(call, 400, "bad_request", "member_ids must be an array of ids", NULL);
        goto out;
    }
    size_t n = json_array_size(arr);
    /* Types first (400), then rules (422). */
    for (size_t i = 0; i < n; i++) {
        if (!json_is_integer(json_array_get(arr, i))) {
            chat_call_error(call, 400, "bad_request", "member_ids must be an array of ids", NULL);
            goto out;
        }
    }
    if (n > MEMBERS_MAX) {
        chat_call_error(call, 422, "invalid_field", "member_ids holds more than 1000 ids", NULL);
        goto out;
    }
    ids = chat_malloc(sizeof *ids * (n ? n : 1));
    for (size_t i = 0; i < n; i++)
        if (id_value(call, json_array_get(arr, i), "member_ids[]", &ids[i]) < 0)
            goto out;
    chat_conv_create(call->api->ctx, call->user_id, title, title_len, ids, n, chat_call_reply_cb,
                     call);
out:
    free(ids);
    json_decref(j);
}

void chat_h_conv_get(chat_call_t *call)
{
    chat_conv_get(call->api->ctx, call->user_id, call->id, chat_call_reply_cb, call);
}

void chat_h_member_add(chat_call_t *call)
{
    json_t *j = chat_call_json_object(call);
    if (!j)
        return;
    int64_t uid;
    if (id_value(call, json_object_get(j, "user_id"), "user_id", &uid) == 0)
        chat_conv_add_member(call->api->ctx, call->user_id, call->id, uid, chat_call_reply_cb,
                             call);
    json_decref(j);
}

void chat_h_msg_send(chat_call_t *call)
{
    json_t *j = chat_call_json_object(call);
    if (!j)
        return;
    const char *body, *cmid = NULL;
    size_t body_len, cmid_len;
    if (chat_call_string_field(call, j, "body", 1, BODY_MAX_CHARS, &body, &body_len) < 0)
        goto out;
    json_t *c = json_object_get(j, "client_msg_id");
    if (c && !json_is_null(c) &&
        chat_call_string_field(call, j, "client_msg_id", 1, CLIENT_MSG_ID_MAX_CHARS, &cmid,
                               &cmid_len) < 0)
        goto out;
    chat_msg_send(call->api->ctx, call->user_id, call->id, body, body_len, cmid, chat_call_reply_cb,
                  call);
out:
    json_decref(j);
}

void chat_h_msg_history(chat_call_t *call)
{
    chat_api_history_params_t p;
    const char *why;
    if (chat_api_parse_history_query(call->req->query, call->req->query_len, &p, &why) < 0) {
        chat_call_error(call, 400, "bad_request", why, NULL);
        return;
    }
    chat_history_query_t q = {call->id, p.limit, p.offset, p.before_id};
    chat_msg_history(call->api->ctx, call->user_id, &q, chat_call_reply_cb, call);
}

void chat_h_msg_count(chat_call_t *call)
{
    chat_msg_count(call->api->ctx, call->user_id, call->id, chat_call_reply_cb, call);
}
