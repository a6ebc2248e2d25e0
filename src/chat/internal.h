/*
 * Helpers shared by the files of chat/: SQL fragments, result decoding,
 * reply construction and the read path. Not part of the module's public
 * interface.
 */
#ifndef CHAT_CHAT_INTERNAL_H
#define CHAT_CHAT_INTERNAL_H

#include "cache/cache.h"
#include "cache/flight.h"
#include "chat/keys.h"
#include "chat/chat.h"
#include "core/buf.h"
#include "db/walpos.h"

#include <libpq-fe.h>
#include "realtime/msg.h"

#include <stdbool.h>
#include <stdint.h>

/* RFC 3339 UTC with microseconds, formatted by PostgreSQL. */
#define CHAT_SQL_TS(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

/** Decimal text of v into buf (at least 24 bytes); returns buf. */
const char *chat_i64_str(char *buf, int64_t v);
/** Integer value of a result cell; 0 when NULL. */
int64_t chat_pg_i64(const PGresult *res, int row, int col);
/** Text of a result cell, NULL when the cell is NULL. */
const char *chat_pg_str(const PGresult *res, int row, int col);
/**
 * Decodes the text of a bigint[] ("{1,2,3}", or "1,2,3") into a new array
 * that the caller frees; *n gets its length. NULL text gives NULL and 0.
 */
int64_t *chat_i64_list_parse(const char *text, size_t *n);

/** Calls cb with a success reply whose body is taken from body (may be NULL). */
void chat_reply_ok(chat_reply_cb cb, void *arg, chat_reply_kind_t kind, chat_buf_t *body);
/** Calls cb with an error reply (no body); message NULL: the code's default text. */
void chat_reply_err(chat_reply_cb cb, void *arg, chat_err_t err, const char *message);
/**
 * Takes a success reply's body (owned or shared; none: empty) as a reference;
 * NULL for an error, whose body is released. r keeps no body.
 */
chat_blob_t *chat_reply_blob(chat_reply_t *r);
/** A shared answer (CHAT_REPLY_OK): the receiver takes over the reference val. */
void chat_reply_shared(chat_reply_cb cb, void *arg, chat_blob_t *val);
/** Calls cb with the reply for a failed database result. */
void chat_reply_db_err(chat_reply_cb cb, void *arg, const chat_db_result_t *res);
/**
 * For a statement that finds one thing: true when it succeeded with a row.
 * Otherwise answers cb (the database error, or CHAT_ENOTFOUND with the text
 * notfound) and returns false.
 */
bool chat_db_found(const chat_db_result_t *res, chat_reply_cb cb, void *arg, const char *notfound);
/** True when a failed statement broke a unique constraint (SQLSTATE 23505). */
bool chat_db_unique_violation(const chat_db_result_t *res);

/** A SHA-256 as PostgreSQL bytea hex input ("\\x" + 64 digits + NUL). */
#define CHAT_HASH_HEX_LEN 67
void chat_auth_hash_hex(const unsigned char hash[32], char out[CHAT_HASH_HEX_LEN]);

/*
 * The columns of a message object, in the order chat_encode_message() reads
 * them, each prefixed with t (a table alias and a dot, or "").
 */
#define CHAT_MSG_COLUMNS(t)                                                                        \
    t "id, " t "conversation_id, " t "seq, " t "sender_id, " t                                     \
      "body, " CHAT_SQL_TS(t "created_at") ", " CHAT_SQL_TS(t "edited_at") ", " t "deleted, " t    \
                                                                           "client_msg_id"
#define CHAT_MSG_NCOLUMNS 9

/** Appends the message object built from columns col.. of a row (see messages.c). */
void chat_encode_message(chat_buf_t *b, const PGresult *res, int row, int col);

/** The event types of the events table (sql/003_chat_api.sql). */
enum chat_event_type {
    CHAT_EVENT_MESSAGE = 1,
    CHAT_EVENT_EDITED = 2,
    CHAT_EVENT_DELETED = 3,
};

/**
 * Appends an event object, which is also the stream's frame:
 * {"type":…,"conversation_id":…,"rev":…,"message":<msg>} (events.c). msg is
 * an encoded message object. An unknown type is written as "message".
 */
void chat_encode_event(chat_buf_t *b, int type, const char *conv, int64_t rev, const char *msg,
                       size_t msg_len);

/* Conversation columns of alias c in the order chat_encode_conv() reads them: id, title,
 * created_by, created_at, member_count, last_message_at. */
#define CONV_COLUMNS                                                                               \
    "c.id, c.title, c.created_by, " CHAT_SQL_TS("c.created_at") ", c.member_count, " CHAT_SQL_TS(  \
        "c.last_message_at")
#define CONV_NCOLUMNS 6

/** Appends the conversation object built from columns col.. of a row (see conversations.c). */
void chat_encode_conv(chat_buf_t *b, const PGresult *res, int row, int col);

/**
 * Tells the sockets of user (realtime/stream.h) about conv: kind is
 * CHAT_RT_USER (a "read" frame with seq), CHAT_RT_ADDED (they follow conv
 * from rev on; an "added" frame if frame is true) or CHAT_RT_REMOVED (they
 * stop; a "removed" frame if frame is true). Nothing without a stream.
 */
void chat_push_conv_frame(chat_ctx_t *ctx, int64_t user, int kind, int64_t conv, int64_t seq_or_rev,
                          bool frame);

/* ---- the read path (read.c) ---- */

/** Answers cb from a flight's outcome: the shared bytes (a reference), or the code's default text.
 */
void chat_reply_flight(chat_reply_cb cb, void *arg, int status, chat_blob_t *val);
/**
 * The argument of a fill's completion that ends the key's flight once the
 * fill is acknowledged: pass chat_fill_done_cb with chat_fill_done_new(f, key),
 * which takes over key (malloc'd) and frees it.
 */
void *chat_fill_done_new(chat_flights_t *flights, char *key_owned);
void chat_fill_done_cb(void *arg);

typedef struct chat_read chat_read_t;

/**
 * Loads a value from the database for a read: the fields of rd it needs are
 * its parameters (valid only during the call); the reply's body is what the
 * cache may store.
 */
typedef void (*chat_read_load_fn)(chat_ctx_t *ctx, int64_t caller, const chat_read_t *rd,
                                  chat_reply_cb cb, void *arg);

/** What one read is: its cache key and lifetime, and how to load it. */
struct chat_read {
    int kind;                     /* enum chat_cache_kind: key family, metrics label */
    int64_t conv_id;              /* > 0: the caller must be a member; 0: none */
    char prefix[CHAT_KEYS_MAX];   /* the key without epoch and version (keys.h) */
    int ttl;                      /* seconds a loaded answer is kept */
    chat_read_load_fn load;       /* reads the database */
    int64_t user_id;              /* profile reads: whose */
    chat_history_query_t history; /* history reads: the page */
    chat_events_query_t events;   /* events reads: the page */

    int64_t after_id; /* members reads: the page starts after this user id */
    int limit;        /* members reads: the page's size */

    /* set by the read path for its load: the WAL position a replica must
     * have replayed to answer it (0: the primary answers; read.c) */
    uint64_t need_lsn;
};

/**
 * Answers a read: without a cache (disabled), straight from the database
 * through rd->load. With one, looks the key up, then proves that caller is a
 * member of rd->conv_id (when > 0): a proof is remembered per worker for the
 * membership version (and epoch) it was made under, so a removal, which
 * moves that version on, ends it everywhere at once. Then answers from the
 * cache, or loads once per key and stores the answer for rd->ttl seconds;
 * whenever the cache cannot be used, from the database (whose loaders check
 * membership themselves). rd is copied. cb fires exactly once.
 */
void chat_read(chat_ctx_t *ctx, int64_t caller, const chat_read_t *rd, chat_reply_cb cb, void *arg);

/**
 * A load's statements (read-only): on a replica when rd->need_lsn allows
 * (db/replica.h), else on the primary's path; cb as chat_db_exec().
 */
void chat_read_exec(chat_ctx_t *ctx, const chat_read_t *rd, const chat_db_stmt_t *stmts, int n,
                    chat_db_cb cb, void *arg);

/**
 * After a committed write to conv: invalidates its cached data, recording
 * lsn, the WAL position after the write's commit (chat_db_exec_lsn; the
 * replicas' rule, docs/architecture.md), then calls done. Without a cache,
 * done is called at once. Every write that moves a version passes its
 * position: a version moved without one sends reads to the primary. An
 * instance without replicas records it too: the new epoch it sets after a
 * lost bump must cover that write for the instances that have replicas.
 */
void chat_after_write(chat_ctx_t *ctx, int64_t conv, uint64_t lsn, void (*done)(void *arg),
                      void *arg);
/**
 * chat_after_write() for a change of the conversation's messages that took
 * rev: also stores puts (read in the change's own transaction) under the new
 * version when no later change was recorded before it (write-through; see
 * chat_cache_invalidate_conv_rev and docs/cache.md).
 */
void chat_after_write_rev(chat_ctx_t *ctx, int64_t conv, int64_t rev, uint64_t lsn,
                          const chat_cache_put_t *puts, size_t n, void (*done)(void *arg),
                          void *arg);

/**
 * After a committed write that changes what the inboxes of users[0..n) show
 * beyond the conversation's own data (a read marker, a membership): gives
 * the conversation conv (when > 0: its version and its membership version)
 * and each of those users a new version in one Redis command, then calls
 * done. Without a cache, done is called at
 * once.
 */
void chat_after_write_users(chat_ctx_t *ctx, int64_t conv, const int64_t *users, size_t n,
                            uint64_t lsn, void (*done)(void *arg), void *arg);

#endif
