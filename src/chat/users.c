/*
 * Users: sign-up (which issues the user's token) and profiles.
 */
#include "chat/internal.h"
#include "chat/keys.h"
#include "core/alloc.h"
#include "core/json.h"

#include <stdlib.h>
#include <string.h>

struct user_op {
    chat_reply_cb cb;
    void *arg;
    char token[64];                   /* sign-up only: returned once, never stored */
    char hash_hex[CHAT_HASH_HEX_LEN]; /* sign-up only */
    chat_ctx_t *ctx;
};

static void encode_user(chat_buf_t *b, const PGresult *res, const char *token)
{
    chat_buf_puts(b, "{\"id\":");
    chat_buf_puts(b, PQgetvalue(res, 0, 0));
    chat_buf_puts(b, ",\"name\":");
    chat_json_put_str(b, PQgetvalue(res, 0, 1), (size_t)PQgetlength(res, 0, 1));
    chat_buf_puts(b, ",\"created_at\":\"");
    chat_buf_puts(b, PQgetvalue(res, 0, 2));
    chat_buf_putc(b, '"');
    if (token) {
        chat_buf_puts(b, ",\"token\":\"");
        chat_buf_puts(b, token);
        chat_buf_putc(b, '"');
    }
    chat_buf_putc(b, '}');
}

static void signed_up(struct user_op *op, const PGresult *res)
{
    chat_buf_t b = CHAT_BUF_INIT;
    encode_user(&b, res, op->token);
    chat_reply_ok(op->cb, op->arg, CHAT_REPLY_CREATED, &b);
}

static void own_cb(const chat_db_result_t *r, void *arg)
{
    struct user_op *op = arg;
    if (r->status != CHAT_EOK)
        chat_reply_db_err(op->cb, op->arg, r);
    else if (PQntuples(r->res[0]) == 0)
        chat_reply_err(op->cb, op->arg, CHAT_ECONFLICT, "a user with that name already exists");
    else
        signed_up(op, r->res[0]);
    memset(op->token, 0, sizeof op->token);
    free(op);
}

static void create_cb(const chat_db_result_t *r, void *arg)
{
    struct user_op *op = arg;
    if (chat_db_unique_violation(r)) {
        /*
         * The name is taken, perhaps by this very sign-up: the pool sends a
         * create again when the answer to the first attempt was lost. The
         * token minted for this request tells the two apart.
         */
        const char *params[] = {op->hash_hex};
        chat_db_stmt_t st = {"SELECT u.id, u.name, " CHAT_SQL_TS(
                                 "u.created_at") " FROM tokens t JOIN users u ON u.id = t.user_id "
                                                 "WHERE t.hash = $1::bytea",
                             1, params};
        chat_db_exec(op->ctx->db, &st, 1, CHAT_DB_RETRY_SENT, own_cb, op);
        return;
    } else if (r->status != CHAT_EOK) {
        chat_reply_db_err(op->cb, op->arg, r);
    } else {
        signed_up(op, r->res[0]);
    }
    memset(op->token, 0, sizeof op->token);
    free(op);
}

void chat_users_create(chat_ctx_t *ctx, const char *name, size_t len, chat_reply_cb cb, void *arg)
{
    struct user_op *op = chat_calloc(1, sizeof *op);
    op->cb = cb;
    op->arg = arg;
    op->ctx = ctx;
    if (chat_auth_token_new(op->token) < 0) {
        /* No randomness, no token: fail as unavailable rather than weaken it. */
        chat_reply_err(cb, arg, CHAT_EUNAVAILABLE, "the database is unavailable");
        free(op);
        return;
    }
    unsigned char hash[32];
    chat_auth_token_hash(op->token, strlen(op->token), hash);
    chat_auth_hash_hex(hash, op->hash_hex);
    char *name_z = chat_strndup(name, len);
    const char *params[] = {name_z, op->hash_hex};
    chat_db_stmt_t st = {
        "WITH u AS (INSERT INTO users (name) VALUES ($1) RETURNING id, name, created_at), "
        "t AS (INSERT INTO tokens (hash, user_id) SELECT $2::bytea, id FROM u) "
        "SELECT id, name, " CHAT_SQL_TS("created_at") " FROM u",
        2, params};
    /* A second attempt is told apart by its token (create_cb): it may be sent again. */
    chat_db_exec(ctx->db, &st, 1, CHAT_DB_RETRY_SENT, create_cb, op);
    free(name_z);
}

static void get_cb(const chat_db_result_t *r, void *arg)
{
    struct user_op *op = arg;
    if (chat_db_found(r, op->cb, op->arg, "no such user")) {
        chat_buf_t b = CHAT_BUF_INIT;
        encode_user(&b, r->res[0], NULL);
        chat_reply_ok(op->cb, op->arg, CHAT_REPLY_OK, &b);
    }
    free(op);
}

static void get_db(chat_ctx_t *ctx, int64_t caller, const chat_read_t *rd, chat_reply_cb cb,
                   void *arg)
{
    int64_t id = rd->user_id;
    struct user_op *op = chat_calloc(1, sizeof *op);
    op->cb = cb;
    op->arg = arg;
    char idbuf[24];
    const char *params[] = {chat_i64_str(idbuf, id)};
    chat_db_stmt_t st = {"SELECT id, name, " CHAT_SQL_TS("created_at") " FROM users WHERE id = $1",
                         1, params};
    chat_db_exec(ctx->db, &st, 1, CHAT_DB_RETRY_SENT, get_cb, op);
}

void chat_users_get(chat_ctx_t *ctx, int64_t id, chat_reply_cb cb, void *arg)
{
    /* Users never change once signed up: profiles need no version, nor a membership. */
    chat_read_t rd = {
        .kind = CHAT_KEYS_PROFILE,
        .ttl = chat_keys_ttl(CHAT_KEYS_PROFILE, 0, 0),
        .load = get_db,
        .user_id = id,
    };
    chat_keys_profile(rd.prefix, id);
    chat_read(ctx, 0, &rd, cb, arg);
}
