/*
 * Where the rate limits apply (docs/api.md, "Rate limits"): who is counted
 * for each limit (a user, a token, a client address), the checks a call
 * passes after its authentication and before its handler, the 429 answer,
 * and the stream's send frame. The counting itself is api/ratelimit.c.
 */
#include "api/internal.h"
#include "core/alloc.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What a refusal says, by limit; the wait follows. */
static const char *const refusal_text[CHAT_RATE_NLIMITS] = {
    "too many messages sent or edited",
    "too many requests",
    "too many sign-ups from this address",
};

/* The token's subject is a hash under this prefix, never the token or its stored hash. */
#define TOKEN_SUBJECT_PREFIX "chatd rate limit\n"
#define TOKEN_MAX 512

void chat_api_rate_token_subject(const char *tok, size_t len, char out[CHAT_RATELIMIT_SUBJECT_MAX])
{
    static const char digits[] = "0123456789abcdef";
    char buf[sizeof TOKEN_SUBJECT_PREFIX + TOKEN_MAX];
    size_t plen = sizeof TOKEN_SUBJECT_PREFIX - 1;
    if (len > TOKEN_MAX)
        len = TOKEN_MAX; /* chat_api_bearer refuses longer ones */
    memcpy(buf, TOKEN_SUBJECT_PREFIX, plen);
    memcpy(buf + plen, tok, len);
    unsigned char h[32];
    chat_auth_token_hash(buf, plen + len, h);
    out[0] = 't';
    out[1] = ':';
    for (int i = 0; i < 16; i++) {
        out[2 + 2 * i] = digits[h[i] >> 4];
        out[3 + 2 * i] = digits[h[i] & 15];
    }
    out[34] = '\0';
}

int chat_api_rate_address_subject(const struct sockaddr *sa, char out[CHAT_RATELIMIT_SUBJECT_MAX])
{
    char text[INET6_ADDRSTRLEN];
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, text, sizeof text);
        snprintf(out, CHAT_RATELIMIT_SUBJECT_MAX, "a:%s", text);
        return 0;
    }
    if (sa->sa_family != AF_INET6)
        return -1;
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
        inet_ntop(AF_INET, in6->sin6_addr.s6_addr + 12, text, sizeof text);
        snprintf(out, CHAT_RATELIMIT_SUBJECT_MAX, "a:%s", text);
        return 0;
    }
    struct in6_addr prefix = in6->sin6_addr;
    memset(prefix.s6_addr + 8, 0, 8);
    inet_ntop(AF_INET6, &prefix, text, sizeof text);
    snprintf(out, CHAT_RATELIMIT_SUBJECT_MAX, "a:%s/64", text);
    return 0;
}

/* ---- a call's checks ---- */

static void call_rate_limited(chat_call_t *call, chat_rate_limit_t which, int retry_after_s)
{
    char headers[48], message[96];
    snprintf(headers, sizeof headers, "Retry-After: %d\r\n", retry_after_s);
    snprintf(message, sizeof message, "%s: retry in %d s", refusal_text[which], retry_after_s);
    chat_call_error(call, 429, "rate_limited", message, headers);
}

/* The call waiting on its checks: the handler to run once they all pass. */
typedef struct limits_op {
    chat_call_t *call;
    chat_handler_fn next;
    chat_rate_limit_t which; /* the check out */
} limits_op_t;

static void next_check(limits_op_t *op);

static void checked_cb(int retry_after_s, void *arg)
{
    limits_op_t *op = arg;
    if (retry_after_s > 0) {
        chat_call_t *call = op->call;
        chat_rate_limit_t which = op->which;
        free(op);
        call_rate_limited(call, which, retry_after_s);
        return;
    }
    next_check(op);
}

/* The subject of limit which for call, or -1 when there is none to count. */
static int subject_of(const chat_call_t *call, chat_rate_limit_t which,
                      char out[CHAT_RATELIMIT_SUBJECT_MAX])
{
    switch (which) {
    case CHAT_RATE_SEND:
        snprintf(out, CHAT_RATELIMIT_SUBJECT_MAX, "u:%lld", (long long)call->user_id);
        return 0;
    case CHAT_RATE_REQUEST:
        snprintf(out, CHAT_RATELIMIT_SUBJECT_MAX, "%s", call->token_subject);
        return 0;
    case CHAT_RATE_SIGNUP: {
        struct sockaddr_storage ss;
        if (chat_http_request_peer(call->req, &ss) != 0)
            return -1;
        return chat_api_rate_address_subject((const struct sockaddr *)&ss, out);
    }
    case CHAT_RATE_NLIMITS:
        break;
    }
    return -1;
}

/* The order of the checks: a request refused as such spends nothing of the send budget. */
static const chat_rate_limit_t check_order[] = {CHAT_RATE_REQUEST, CHAT_RATE_SEND,
                                                CHAT_RATE_SIGNUP};

static void next_check(limits_op_t *op)
{
    chat_call_t *call = op->call;
    for (size_t i = 0; i < CHAT_ARRAY_LEN(check_order) && call->limits; i++) {
        chat_rate_limit_t which = check_order[i];
        if (!(call->limits & (1u << which)))
            continue;
        call->limits &= ~(1u << which);
        char subject[CHAT_RATELIMIT_SUBJECT_MAX];
        if (subject_of(call, which, subject) < 0) {
            /* No address to count (the client has gone, or not TCP): nothing is done. */
            free(op);
            chat_call_fail(call, CHAT_EUNAVAILABLE, "the client's address is unknown");
            return;
        }
        op->which = which;
        /* The answer may come before this returns: checked_cb then goes on from there. */
        chat_ratelimit_check(call->api->rate, which, subject, checked_cb, op);
        return;
    }
    chat_handler_fn next = op->next;
    free(op);
    next(call);
}

void chat_call_check_limits(chat_call_t *call, chat_handler_fn next)
{
    chat_ratelimit_t *rl = call->api->rate;
    for (int i = 0; i < CHAT_RATE_NLIMITS; i++)
        if (!rl || !chat_ratelimit_on(rl, (chat_rate_limit_t)i))
            call->limits &= ~(1u << i);
    if (!call->limits) {
        next(call);
        return;
    }
    limits_op_t *op = chat_malloc(sizeof *op);
    op->call = call;
    op->next = next;
    next_check(op);
}

/* ---- the stream's send ---- */

typedef struct send_op {
    chat_api_t *api;
    int64_t user_id, conv_id;
    char *body;
    size_t body_len;
    char *client_msg_id; /* NULL: none */
    chat_reply_cb cb;
    void *arg;
} send_op_t;

static void send_checked_cb(int retry_after_s, void *arg)
{
    send_op_t *op = arg;
    if (retry_after_s > 0) {
        char message[96];
        snprintf(message, sizeof message, "%s: retry in %d s", refusal_text[CHAT_RATE_SEND],
                 retry_after_s);
        chat_reply_t r = {.err = CHAT_ERATELIMITED, .message = message};
        op->cb(&r, op->arg);
    } else {
        chat_msg_send(op->api->ctx, op->user_id, op->conv_id, op->body, op->body_len,
                      op->client_msg_id, op->cb, op->arg);
    }
    free(op->body);
    free(op->client_msg_id);
    free(op);
}

void chat_api_msg_send_limited(chat_api_t *api, int64_t user_id, int64_t conv_id, const char *body,
                               size_t body_len, const char *client_msg_id, chat_reply_cb cb,
                               void *arg)
{
    if (!api->rate || !chat_ratelimit_on(api->rate, CHAT_RATE_SEND)) {
        chat_msg_send(api->ctx, user_id, conv_id, body, body_len, client_msg_id, cb, arg);
        return;
    }
    send_op_t *op = chat_malloc(sizeof *op);
    op->api = api;
    op->user_id = user_id;
    op->conv_id = conv_id;
    op->body = chat_strndup(body, body_len);
    op->body_len = body_len;
    op->client_msg_id = client_msg_id ? chat_strdup(client_msg_id) : NULL;
    op->cb = cb;
    op->arg = arg;
    char subject[CHAT_RATELIMIT_SUBJECT_MAX];
    snprintf(subject, sizeof subject, "u:%lld", (long long)user_id);
    chat_ratelimit_check(api->rate, CHAT_RATE_SEND, subject, send_checked_cb, op);
}
