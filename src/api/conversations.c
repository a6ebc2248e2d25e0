/*
 * Handlers of the inbox, the members list, member removal and read
 * markers: query parameters (each at most once, plain decimal digits within
 * range, else 400) and bodies checked here, the rest in chat/.
 */
#include "api/internal.h"
#include "api/validate.h"
#include "chat/keys.h"

#include <string.h>

/*
 * The integer parameter name of the query: *out keeps its default when
 * absent. Returns 0, or -1 after answering 400 (malformed, repeated, not
 * plain digits, out of lo..hi).
 */
static int query_int(chat_call_t *call, const char *name, long long lo, long long hi,
                     long long *out, const char *range_why)
{
    const char *why;
    if (chat_api_query_int(call->req->query, call->req->query_len, name, lo, hi, range_why, out,
                           &why) < 0) {
        chat_call_fail(call, CHAT_EBADREQUEST, why);
        return -1;
    }
    return 0;
}

void chat_h_inbox(chat_call_t *call)
{
    long long limit = 20;
    if (query_int(call, "limit", 1, 100, &limit, "limit must be an integer from 1 to 100") < 0)
        return;
    char cursor[CHAT_KEYS_CURSOR_MAX];
    const char *why;
    int found = chat_api_query_string(call->req->query, call->req->query_len, "cursor", cursor,
                                      sizeof cursor, &why);
    if (found < 0) {
        chat_call_fail(call, CHAT_EBADREQUEST, "cursor is not a cursor of this inbox");
        return;
    }
    chat_inbox_list(call->api->ctx, call->user_id, (int)limit, found ? cursor : NULL,
                    chat_call_reply_cb, call);
}

void chat_h_members_list(chat_call_t *call)
{
    long long limit = 100, after_id = 0;
    if (query_int(call, "limit", 1, 1000, &limit, "limit must be an integer from 1 to 1000") < 0 ||
        query_int(call, "after_id", 0, INT64_MAX, &after_id, "after_id must be an integer from 0") <
            0)
        return;
    chat_conv_members(call->api->ctx, call->user_id, call->id, after_id, (int)limit,
                      chat_call_reply_cb, call);
}

void chat_h_member_remove(chat_call_t *call)
{
    chat_conv_remove_member(call->api->ctx, call->user_id, call->id, call->sub_id,
                            chat_call_reply_cb, call);
}

void chat_h_conv_read(chat_call_t *call)
{
    chat_api_body_t b;
    if (chat_call_body(call, CHAT_API_BODY_READ, &b) < 0)
        return;
    chat_conv_mark_read(call->api->ctx, call->user_id, call->id, b.id, chat_call_reply_cb, call);
    chat_api_body_dispose(&b);
}
