/*
 * Handlers of a conversation's message changes and its event log: PATCH and
 * DELETE .../messages/{message_id}, GET .../events. Input is checked with
 * the same validators as a send (validate.h) and the query iterator
 * (query.c); chat/ does the rest.
 */
#include "api/internal.h"
#include "api/validate.h"

void chat_h_msg_edit(chat_call_t *call)
{
    chat_api_body_t b;
    if (chat_call_body(call, CHAT_API_BODY_EDIT, &b) < 0)
        return;
    chat_msg_edit(call->api->ctx, call->user_id, call->id, call->sub_id, b.text, b.text_len,
                  chat_call_reply_cb, call);
    chat_api_body_dispose(&b);
}

void chat_h_msg_delete(chat_call_t *call)
{
    chat_msg_delete(call->api->ctx, call->user_id, call->id, call->sub_id, chat_call_reply_cb,
                    call);
}

void chat_h_conv_events(chat_call_t *call)
{
    chat_api_events_params_t p;
    const char *why;
    if (chat_api_parse_events_query(call->req->query, call->req->query_len, &p, &why) < 0) {
        chat_call_fail(call, CHAT_EBADREQUEST, why);
        return;
    }
    chat_events_query_t q = {.conv_id = call->id, .after_rev = p.after_rev, .limit = p.limit};
    chat_events_list(call->api->ctx, call->user_id, &q, chat_call_reply_cb, call);
}
