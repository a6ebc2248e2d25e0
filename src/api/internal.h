/*
 * Shared by the files of api/: the state of one API call and the helpers to
 * answer it.
 */
#ifndef CHAT_API_INTERNAL_H
#define CHAT_API_INTERNAL_H

#include "api/api.h"
#include "api/body.h"

#include <jansson.h>

typedef struct chat_call chat_call_t;
typedef void (*chat_handler_fn)(chat_call_t *call);

/* AUTH_STREAM: a user's token from the Authorization header, else from ?token=. */
enum auth_mode { AUTH_NONE, AUTH_USER, AUTH_SIGNUP, AUTH_ADMIN, AUTH_STREAM };

struct chat_route {
    const char *pattern; /* "/api/v1/users/{id}" */
    const char *allow;   /* "GET, POST" */
    struct {
        int method; /* enum http_method */
        chat_handler_fn fn;
        enum auth_mode auth;
    } methods[2];
};

/** One API call: owned by the request (req->data) until it is answered. */
struct chat_call {
    chat_http_request_t *req;
    chat_api_t *api;
    const chat_route_t *route;
    chat_handler_fn fn;
    const char *id_seg; /* raw {id} segment, not yet validated */
    size_t id_len;
    const char *sub_seg; /* raw second segment ({message_id}), NULL when the route has none */
    size_t sub_len;
    int64_t id;      /* parsed {id} */
    int64_t sub_id;  /* parsed second segment */
    int64_t user_id; /* authenticated caller */
    /* Rate limits (limits.c) still to check before the handler: bit (1 << chat_rate_limit_t). */
    unsigned limits;
    char token_subject[CHAT_RATELIMIT_SUBJECT_MAX]; /* the token's subject, for the request limit */
};

/**
 * Answers with an error body for an HTTP status outside the status table
 * (405, 426); ends the call.
 */
void chat_call_error(chat_call_t *call, int status, const char *code, const char *message,
                     const char *headers);
/**
 * Answers with the contract's error for err (status.h: HTTP status, code,
 * headers); message NULL gives the code's default text. Ends the call.
 */
void chat_call_fail(chat_call_t *call, int err, const char *message);
/** Completion callback for chat/ operations: answers with the reply. */
void chat_call_reply_cb(chat_reply_t *reply, void *arg);
/**
 * Ends the call without answering and hands its request back, for a handler
 * that answers it another way (the WebSocket upgrade).
 */
chat_http_request_t *chat_call_release(chat_call_t *call);
/** Answers with a JSON body that is taken over; ends the call. */
void chat_call_ok(chat_call_t *call, int status, char *body, size_t len);

/**
 * Checks the limits in call->limits (request per call->token_subject, then
 * send per call->user_id, then sign-up per client address), then runs
 * next(call); or answers 429 rate_limited with Retry-After at the first
 * that refuses, and nothing else is done. next may run before this returns.
 */
void chat_call_check_limits(chat_call_t *call, chat_handler_fn next);

/**
 * chat_msg_send for the stream's send frame, counted by CHATD_RATE_SEND
 * first (body and client_msg_id are copied while the check waits): over the
 * limit, cb gets CHAT_ERATELIMITED with a message naming the wait, and
 * nothing is sent.
 */
void chat_api_msg_send_limited(chat_api_t *api, int64_t user_id, int64_t conv_id, const char *body,
                               size_t body_len, const char *client_msg_id, chat_reply_cb cb,
                               void *arg);

/**
 * Decodes the request body as the body of kind (body.h) into *out. Returns
 * 0 (the caller disposes *out), or -1 after answering 400 or 422.
 */
int chat_call_body(chat_call_t *call, chat_api_body_kind_t kind, chat_api_body_t *out);

/* Handlers (handlers.c, messages.c and ops.c). */
void chat_h_signup(chat_call_t *call);
void chat_h_user_get(chat_call_t *call);
void chat_h_conv_create(chat_call_t *call);
void chat_h_conv_get(chat_call_t *call);
void chat_h_member_add(chat_call_t *call);
void chat_h_msg_send(chat_call_t *call);
void chat_h_msg_history(chat_call_t *call);
void chat_h_msg_count(chat_call_t *call);
void chat_h_msg_edit(chat_call_t *call);      /* messages.c */
void chat_h_msg_delete(chat_call_t *call);    /* messages.c */
void chat_h_conv_events(chat_call_t *call);   /* messages.c */
void chat_h_inbox(chat_call_t *call);         /* conversations.c */
void chat_h_members_list(chat_call_t *call);  /* conversations.c */
void chat_h_member_remove(chat_call_t *call); /* conversations.c */
void chat_h_conv_read(chat_call_t *call);     /* conversations.c */
void chat_h_stream(chat_call_t *call);        /* ws_session.c */
void chat_h_healthz(chat_call_t *call);
void chat_h_readyz(chat_call_t *call);
void chat_h_metrics(chat_call_t *call);
void chat_h_cache_metrics(chat_call_t *call);
void chat_h_cache_bypass(chat_call_t *call);
void chat_h_cache_keys_delete(chat_call_t *call);
void chat_h_static(chat_call_t *call); /* static.c */

#endif
