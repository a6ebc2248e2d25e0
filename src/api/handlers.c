/*
 * Handlers of the /api/v1 resources: decode and validate input with the
 * field validators (validate.h: 400 for missing fields and wrong JSON types,
 * 422 for well-typed values that break a rule), then hand over to chat/.
 */
#include "api/internal.h"
#include "api/validate.h"
#include "core/alloc.h"

#include <stdlib.h>
#include <string.h>

void chat_h_signup(chat_call_t *call)
{
    json_t *j = chat_call_json_object(call);
    if (!j)
        return;
    const char *name;
    size_t len;
    char why[CHAT_API_WHY_MAX];
    int err = chat_api_valid_string(j, "name", 1, CHAT_API_NAME_MAX, &name, &len, why);
    if (err)
        chat_call_fail(call, err, why);
    else
        chat_users_create(call->api->ctx, name, len, chat_call_reply_cb, call);
    json_decref(j);
}

void chat_h_user_get(chat_call_t *call)
{
    chat_users_get(call->api->ctx, call->id, chat_call_reply_cb, call);
}

void chat_h_conv_create(chat_call_t *call)
{
    json_t *j = chat_call_json_object(call);
    if (!j)
        return;
    const char *title;
    size_t title_len, n;
    int64_t *ids = NULL;
    char why[CHAT_API_WHY_MAX];
    int err = chat_api_valid_string(j, "title", 1, CHAT_API_TITLE_MAX, &title, &title_len, why);
    if (!err)
        err = chat_api_valid_id_list(j, "member_ids", CHAT_API_MEMBERS_MAX, &ids, &n, why);
    if (err)
        chat_call_fail(call, err, why);
    else
        chat_conv_create(call->api->ctx, call->user_id, title, title_len, ids, n,
                         chat_call_reply_cb, call);
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
    char why[CHAT_API_WHY_MAX];
    int err = chat_api_valid_id(json_object_get(j, "user_id"), "user_id", &uid, why);
    if (err)
        chat_call_fail(call, err, why);
    else
        chat_conv_add_member(call->api->ctx, call->user_id, call->id, uid, chat_call_reply_cb,
                             call);
    json_decref(j);
}

void chat_h_msg_send(chat_call_t *call)
{
    json_t *j = chat_call_json_object(call);
    if (!j)
        return;
    const char *body, *cmid;
    size_t body_len, cmid_len;
    char why[CHAT_API_WHY_MAX];
    int err = chat_api_valid_string(j, "body", 1, CHAT_API_BODY_MAX, &body, &body_len, why);
    if (!err)
        err = chat_api_valid_client_msg_id(j, &cmid, &cmid_len, why);
    if (err)
        chat_call_fail(call, err, why);
    else
        chat_msg_send(call->api->ctx, call->user_id, call->id, body, body_len, cmid,
                      chat_call_reply_cb, call);
    json_decref(j);
}

void chat_h_msg_history(chat_call_t *call)
{
    chat_api_history_params_t p;
    const char *why;
    if (chat_api_parse_history_query(call->req->query, call->req->query_len, &p, &why) < 0) {
        chat_call_fail(call, CHAT_EBADREQUEST, why);
        return;
    }
    chat_history_query_t q = {.conv_id = call->id,
                              .limit = p.limit,
                              .offset = p.offset,
                              .before_id = p.before_id,
                              .after_seq = p.after_seq};
    chat_msg_history(call->api->ctx, call->user_id, &q, chat_call_reply_cb, call);
}

void chat_h_msg_count(chat_call_t *call)
{
    chat_msg_count(call->api->ctx, call->user_id, call->id, chat_call_reply_cb, call);
}
