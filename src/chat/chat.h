/*
 * The chat domain: users, tokens, conversations, members and messages. The
 * only code that knows the schema and the wire representation of resources.
 * Operations are asynchronous: each takes a completion callback that receives
 * a chat_reply_t with an error code (core/error.h) or a success kind and the
 * encoded JSON body. This module knows nothing of HTTP; api/status.c maps
 * replies to HTTP answers.
 */
#ifndef CHAT_CHAT_CHAT_H
#define CHAT_CHAT_CHAT_H

#include "core/blob.h"
#include "core/error.h"
#include "core/memo.h"
#include "core/uuid.h"
#include "db/path.h"
#include "realtime/stream.h"

#include <stddef.h>
#include <stdint.h>

struct chat_cache;
struct chat_flights;
struct chat_stream;

/** Per-worker context: everything an operation needs, owned by the worker. */
typedef struct chat_ctx {
    uv_loop_t *loop;
    chat_db_t *db;                     /* the database path: pooler or direct */
    struct chat_db_replicas *replicas; /* read replicas (db/replica.h); NULL: none */
    chat_memo_t *tokens;               /* token hash -> user id (chat_auth_memo_create) */
    chat_memo_t *members;              /* (conversation, user, version) -> 1, proven (read.c) */
    chat_memo_t *unknown_tokens; /* token hash -> until when "unknown" holds (auth.c); NULL: none */
    chat_memo_t *non_members;    /* (conversation, user, version) -> until when "not a member"
                                    holds (read.c); NULL: none */
    struct chat_cache *cache;    /* NULL when the cache is disabled */
    struct chat_stream *stream;  /* realtime/stream.h; NULL: none */
    struct chat_flights *reads;  /* reads in flight, coalesced (read.c; cache/flight.h) */
    int fill_delay_ms;           /* fault injection: delay cache fills (tests only) */
    int read_wait_ms;            /* longest a read waits for a load ahead of its own (read.c);
                                    the pool's queue timeout: then 503 as from the pool */
} chat_ctx_t;

/** What a successful operation answers (api/status.c maps it to 200, 201 or 204). */
typedef enum chat_reply_kind {
    CHAT_REPLY_OK = 0,    /* the resource: body */
    CHAT_REPLY_CREATED,   /* a new resource: body */
    CHAT_REPLY_NO_CONTENT /* done, nothing to show: no body */
} chat_reply_kind_t;

/**
 * The answer of an operation. err is CHAT_EOK or a domain code of
 * core/error.h: CHAT_EUNAUTHORIZED, CHAT_ENOTFOUND (absent, or the caller is
 * not a member), CHAT_ECONFLICT, CHAT_EINVALID (a value breaks a rule: the
 * message says which) or CHAT_EUNAVAILABLE (database unreachable, or the pool
 * queue timed out).
 */
typedef struct chat_reply {
    chat_err_t err;
    chat_reply_kind_t kind; /* err == CHAT_EOK: which success */
    const char *message;    /* error text for clients (a literal); NULL: the code's default */
    char *body;             /* success: encoded JSON, owned by the receiver; else NULL */
    size_t body_len;
    /*
     * Set on an answer shared with other reads (one coalesced load, one
     * cache hit): body is its bytes, and the receiver owns this reference
     * instead of body. chat_reply_body_free() releases either.
     */
    chat_blob_t *shared;
} chat_reply_t;

/** Releases a reply's body, owned or shared. */
void chat_reply_body_free(chat_reply_t *r);

/**
 * Completion of an operation; fires exactly once, on the worker's loop,
 * usually later but possibly before the starting call returns (an answer known
 * without the database). The receiver owns reply->body.
 */
typedef void (*chat_reply_cb)(chat_reply_t *reply, void *arg);

/* ---- tokens (auth.c) ---- */

/** The per-worker memory of tokens already resolved: 32-byte hash -> user id. */
chat_memo_t *chat_auth_memo_create(void);
/**
 * The per-worker memory of tokens the database did not know (auth.c): a
 * repeated unknown token is refused for a short while without a query.
 */
chat_memo_t *chat_auth_unknown_memo_create(void);

/**
 * Writes a new random token (256 bits, base64url, NUL-terminated) into out
 * (at least 44 bytes). Returns 0 or -1 if the system RNG failed.
 */
int chat_auth_token_new(char out[64]) __attribute__((warn_unused_result));

/**
 * A random operation id (UUID text) for a creating write: sent again after a
 * lost answer, the write finds its first attempt instead of repeating it.
 * -1 when no randomness is available.
 */
#define CHAT_OP_ID_LEN CHAT_UUID_LEN
int chat_op_id_new(char out[CHAT_OP_ID_LEN]) __attribute__((warn_unused_result));
/** SHA-256 of the token string, the only form in which tokens are stored. */
void chat_auth_token_hash(const char *token, size_t len, unsigned char out[32]);
/** Constant-time comparison of two strings. */
int chat_auth_equal(const char *a, size_t alen, const char *b, size_t blen);

/**
 * Resolves a bearer token to a user id: cb gets CHAT_EOK with the user id,
 * CHAT_EUNAUTHORIZED or CHAT_EUNAVAILABLE. The token is copied. A token
 * already seen by this worker is answered from memory before this returns:
 * tokens are never revoked, so a remembered answer cannot go stale. So is a
 * token the database did not know a moment ago (see auth.c for why that
 * "no" is safe to keep).
 */
typedef void (*chat_auth_cb)(chat_err_t err, int64_t user_id, void *arg);
void chat_auth_check(chat_ctx_t *ctx, const char *token, size_t len, chat_auth_cb cb, void *arg);

/**
 * The per-worker memory of proven memberships (read.c): (conv, user, hash of
 * the cache epoch and the conversation's membership version it was proven
 * under) -> 1.
 */
chat_memo_t *chat_members_memo_create(void);
/**
 * The per-worker memory of "not a member" answers (read.c), under the same
 * key as the proofs: -> the time until which it holds.
 */
chat_memo_t *chat_non_members_memo_create(void);

/* ---- users (users.c) ---- */

/** Signs a user up; name already validated (1-64 code points). 201 with the token. */
void chat_users_create(chat_ctx_t *ctx, const char *name, size_t len, chat_reply_cb cb, void *arg);
void chat_users_get(chat_ctx_t *ctx, int64_t id, chat_reply_cb cb, void *arg);

/* ---- conversations (conversations.c) ---- */

/** member_ids already validated as positive; the caller is added by this call. */
void chat_conv_create(chat_ctx_t *ctx, int64_t caller, const char *title, size_t title_len,
                      const int64_t *member_ids, size_t n, chat_reply_cb cb, void *arg);
void chat_conv_get(chat_ctx_t *ctx, int64_t caller, int64_t conv_id, chat_reply_cb cb, void *arg);
void chat_conv_add_member(chat_ctx_t *ctx, int64_t caller, int64_t conv_id, int64_t user_id,
                          chat_reply_cb cb, void *arg);

/* ---- members (members.c) ---- */

/**
 * A page of the members of conv_id (the caller must be one): users with an
 * id above after_id (>= 0), in id order, limit (1..1000) of them; 200
 * {"conversation_id", "members", "next_after_id"}. Cached under the
 * conversation's version.
 */
void chat_conv_members(chat_ctx_t *ctx, int64_t caller, int64_t conv_id, int64_t after_id,
                       int limit, chat_reply_cb cb, void *arg);
/**
 * Removes user_id from conv_id: 204 when the caller removes themselves or is
 * the creator (a non-member or unknown user: nothing happens, 204);
 * CHAT_EFORBIDDEN for another member; CHAT_ENOTFOUND for a non-member caller.
 */
void chat_conv_remove_member(chat_ctx_t *ctx, int64_t caller, int64_t conv_id, int64_t user_id,
                             chat_reply_cb cb, void *arg);

/* ---- inbox and read markers (inbox.c) ---- */

/**
 * The caller's inbox page: limit (1..100) entries, most recently active
 * first, after cursor (NULL: the first page; a text that is no cursor:
 * CHAT_EBADREQUEST). 200 {"conversations", "next_cursor"}.
 */
void chat_inbox_list(chat_ctx_t *ctx, int64_t caller, int limit, const char *cursor,
                     chat_reply_cb cb, void *arg);
/**
 * Moves the caller's read marker of conv_id forward to seq (>= 0; a lower
 * one is a no-op): 204; CHAT_EINVALID when seq is above the conversation's
 * last message; CHAT_ENOTFOUND for a non-member.
 */
void chat_conv_mark_read(chat_ctx_t *ctx, int64_t caller, int64_t conv_id, int64_t seq,
                         chat_reply_cb cb, void *arg);

/* ---- messages (messages.c) ---- */

/** client_msg_id may be NULL. 201 new, 200 for a retry of an existing client_msg_id. */
void chat_msg_send(chat_ctx_t *ctx, int64_t caller, int64_t conv_id, const char *body,
                   size_t body_len, const char *client_msg_id, chat_reply_cb cb, void *arg);

/**
 * Edits the caller's message message_id of conversation conv_id; body
 * already validated (1-4000 code points). 200 with the message object.
 * CHAT_ENOTFOUND when the caller is not a member, the message is unknown,
 * of another conversation or deleted (one answer for all); CHAT_EFORBIDDEN
 * when it is another member's. An edit to the body the message has changes
 * nothing and takes no rev. A change takes the conversation's next rev,
 * writes a message_edited event and pushes it to the members.
 */
void chat_msg_edit(chat_ctx_t *ctx, int64_t caller, int64_t conv_id, int64_t message_id,
                   const char *body, size_t body_len, chat_reply_cb cb, void *arg);

/**
 * Deletes the caller's message (a tombstone: deleted, empty body, edited_at
 * the time of deletion): 204. The same 404 rules as an edit, except that
 * deleting a deleted message of one's own is a 204 that changes nothing and
 * takes no rev; another member's message (deleted or not) is
 * CHAT_EFORBIDDEN. A change takes the next rev, writes a message_deleted
 * event, lowers message_count and pushes the event to the members.
 */
void chat_msg_delete(chat_ctx_t *ctx, int64_t caller, int64_t conv_id, int64_t message_id,
                     chat_reply_cb cb, void *arg);

typedef struct chat_history_query {
    int64_t conv_id;
    int limit;         /* 1..100 */
    int offset;        /* 0..100000 */
    int64_t before_id; /* 0 = none */
    int64_t after_seq; /* -1 = none: newest first; >= 0: seq > after_seq, oldest first */
} chat_history_query_t;

void chat_msg_history(chat_ctx_t *ctx, int64_t caller, const chat_history_query_t *q,
                      chat_reply_cb cb, void *arg);
void chat_msg_count(chat_ctx_t *ctx, int64_t caller, int64_t conv_id, chat_reply_cb cb, void *arg);

/* ---- events (events.c) ---- */

typedef struct chat_events_query {
    int64_t conv_id;
    int64_t after_rev; /* >= 0 */
    int limit;         /* 1..1000 */
} chat_events_query_t;

/**
 * The conversation's events from after_rev + 1, in rev order, each with its
 * message in its current state, and the conversation's latest rev. 404 for
 * non-members. Cached under conv:events:{id}:{after_rev}:{limit}.
 */
void chat_events_list(chat_ctx_t *ctx, int64_t caller, const chat_events_query_t *q,
                      chat_reply_cb cb, void *arg);

/* ---- the realtime stream's reads (stream_reads.c) ---- */

/** The reads the stream of a worker makes through ctx (events, revs, memberships). */
chat_stream_loader_t chat_stream_reads(chat_ctx_t *ctx);

/* ---- shared helpers (chat.c) ---- */

/** Maps a failed database result to CHAT_EUNAVAILABLE and a client message. */
void chat_reply_from_db_error(chat_reply_t *r, const chat_db_result_t *res);

#endif
