/*
 * Handlers of the /api/v1 resources: decode and validate input (bodies with
 * body.h, whose field rules are validate.h's: 400 for missing fields and
 * wrong JSON types, 422 for well-typed values that break a rule), then hand
 * over to chat/.
 */
#include "api/internal.h"
#include "api/validate.h"
#include "core/alloc.h"

#include <stdlib.h>
#include <string.h>

void chat_h_signup(chat_call_t *call)
{
    chat_api_body_t b;
    if (chat_call_body(call, CHAT_API_BODY_SIGNUP, &b) < 0)
        return;
    chat_users_create(call->api->ctx, b.text, b.text_len, chat_call_reply_cb, call);
    chat_api_body_dispose(&b);
}

void chat_h_user_get(chat_call_t *call)
{
    chat_users_get(call->api->ctx, call->id, chat_call_reply_cb, call);
}

void chat_h_conv_create(chat_call_t *call)
{
    chat_api_body_t b;
    if (chat_call_body(call, CHAT_API_BODY_CONV, &b) < 0)
        return;
    chat_conv_create(call->api->ctx, call->user_id, b.text, b.text_len, b.ids, b.n_ids,
                     chat_call_reply_cb, call);
    chat_api_body_dispose(&b);
}

void chat_h_conv_get(chat_call_t *call)
{
    chat_conv_get(call->api->ctx, call->user_id, call->id, chat_call_reply_cb, call);
}

void chat_h_member_add(chat_call_t *call)
{
    chat_api_body_t b;
    if (chat_call_body(call, CHAT_API_BODY_MEMBER, &b) < 0)
        return;
    chat_conv_add_member(call->api->ctx, call->user_id, call->id, b.id, chat_call_reply_cb, call);
    chat_api_body_dispose(&b);
}

void chat_h_msg_send(chat_call_t *call)
{
    chat_api_body_t b;
    if (chat_call_body(call, CHAT_API_BODY_SEND, &b) < 0)
        return;
    chat_msg_send(call->api->ctx, call->user_id, call->id, b.text, b.text_len, b.client_msg_id,
                  chat_call_reply_cb, call);
    chat_api_body_dispose(&b);
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
