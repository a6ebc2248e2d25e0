/*
 * Helpers shared by the files of chat/: SQL fragments, result decoding and
 * reply construction. Not part of the module's public interface.
 */
#ifndef CHAT_CHAT_INTERNAL_H
#define CHAT_CHAT_INTERNAL_H

#include "chat/chat.h"
#include "core/buf.h"

#include <libpq-fe.h>
#include <stdint.h>

/* RFC 3339 UTC with microseconds, formatted by PostgreSQL. */
#define CHAT_SQL_TS(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

/** Decimal text of v into buf (at least 24 bytes); returns buf. */
const char *chat_i64_str(char *buf, int64_t v);
/** Integer value of a result cell; 0 when NULL. */
int64_t chat_pg_i64(const PGresult *res, int row, int col);
/** Text of a result cell, NULL when the cell is NULL. */
const char *chat_pg_str(const PGresult *res, int row, int col);

/** Calls cb with a success reply whose body is taken from body. */
void chat_reply_ok(chat_reply_cb cb, void *arg, int status, chat_buf_t *body);
/** Calls cb with an error reply (no body). */
void chat_reply_err(chat_reply_cb cb, void *arg, int status, const char *message);
/** Calls cb with the reply for a failed database result. */
void chat_reply_db_err(chat_reply_cb cb, void *arg, const chat_db_result_t *res);

/** A SHA-256 as PostgreSQL bytea hex input ("\\x" + 64 digits + NUL). */
#define CHAT_HASH_HEX_LEN 67
void chat_auth_hash_hex(const unsigned char hash[32], char out[CHAT_HASH_HEX_LEN]);

/** Appends the message object built from columns col.. of a row (see messages.c). */
void chat_encode_message(chat_buf_t *b, const PGresult *res, int row, int col);

/**
 * Loads a value from the database for a cached read: params is the copy
 * given to chat_cached_read(); the reply's body is what gets cached.
 */
typedef void (*chat_loader_fn)(chat_ctx_t *ctx, int64_t caller, const void *params,
                               chat_reply_cb cb, void *arg);

/**
 * Cache-aside read (cached.c): checks that caller is a member of conv (when
 * conv > 0), then answers from the cache, or loads once per key with load
 * and stores the answer for ttl seconds. Requires ctx->cache.
 */
void chat_cached_read(chat_ctx_t *ctx, int64_t caller, int kind, int64_t conv, const char *prefix,
                      int ttl, chat_loader_fn load, const void *params, size_t params_size,
                      chat_reply_cb cb, void *arg);

/**
 * After a committed write to conv: invalidates its cached data, then calls
 * done. Without a cache, done is called at once.
 */
void chat_after_write(chat_ctx_t *ctx, int64_t conv, void (*done)(void *arg), void *arg);

#endif
