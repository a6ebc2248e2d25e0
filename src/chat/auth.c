/*
 * Bearer tokens: generation, hashing, and resolution to a user id with a
 * per-worker memory of tokens already seen. Tokens are 256 random bits and
 * only their SHA-256 is stored; since tokens are never revoked and users
 * never deleted, a remembered token cannot become wrong.
 *
 * A token the database does not know is remembered too, for a short while,
 * so that a client repeating a bad token costs one query, not one per
 * request. That "no" cannot hide a new user: a token becomes known only by
 * a sign-up, which draws it from 256 random bits at that moment, so for a
 * remembered unknown token to become valid a sign-up would have to draw
 * exactly the token someone presented before it existed — a chance of
 * 2^-256 per sign-up. The time limit (UNKNOWN_TOKEN_TTL_MS) bounds the
 * harm of anything outside that argument, such as tokens restored into
 * the database by an operator. Memory is bounded like the other memo: the
 * whole memory is forgotten when half full, so a flood of random tokens
 * costs what it cost before and never grows chatd.
 */
#include "chat/internal.h"
#include "core/alloc.h"
#include "core/base64.h"
#include "core/uuid.h"
#include "db/pool.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>

/* 64 Ki slots, forgotten whole at 32 Ki tokens (core/memo.h): 2.5 MiB per worker. */
#define TOKEN_MEMO_SLOTS (1u << 16)

chat_memo_t *chat_auth_memo_create(void)
{
    return chat_memo_create(TOKEN_MEMO_SLOTS, 32);
}

/* 16 Ki slots, forgotten whole at 8 Ki tokens: 640 KiB per worker. */
#define UNKNOWN_TOKEN_SLOTS (1u << 14)
#define UNKNOWN_TOKEN_TTL_MS 60000

chat_memo_t *chat_auth_unknown_memo_create(void)
{
    return chat_memo_create(UNKNOWN_TOKEN_SLOTS, 32);
}

int chat_auth_token_new(char out[64])
{
    unsigned char raw[32];
    if (RAND_bytes(raw, sizeof raw) != 1)
        return -1;
    chat_base64_encode(out, raw, sizeof raw, CHAT_BASE64_URL); /* 43 characters */
    return 0;
}

int chat_op_id_new(char out[CHAT_OP_ID_LEN])
{
    return chat_uuid_new(out) == 0 ? 0 : -1;
}

/*
 * Every request hashes its token. OpenSSL 3's one-shot SHA256() looks the
 * algorithm up and allocates a context on each call; here the algorithm is
 * fetched once and each thread keeps its context (freed at thread exit).
 */
static EVP_MD *sha256_md;
static pthread_key_t md_ctx_key;
static pthread_once_t md_once = PTHREAD_ONCE_INIT;

static void md_ctx_free(void *p)
{
    EVP_MD_CTX_free(p);
}

static void md_init(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
    pthread_key_create(&md_ctx_key, md_ctx_free);
}

void chat_auth_token_hash(const char *token, size_t len, unsigned char out[32])
{
    pthread_once(&md_once, md_init);
    EVP_MD_CTX *ctx = pthread_getspecific(md_ctx_key);
    if (!ctx && (ctx = EVP_MD_CTX_new()) != NULL)
        pthread_setspecific(md_ctx_key, ctx);
    unsigned int n = 0;
    if (!sha256_md || !ctx || !EVP_DigestInit_ex2(ctx, sha256_md, NULL) ||
        !EVP_DigestUpdate(ctx, token, len) || !EVP_DigestFinal_ex(ctx, out, &n) || n != 32)
        SHA256((const unsigned char *)token, len, out); /* without them, the slow way */
}

void chat_auth_hash_hex(const unsigned char hash[32], char out[CHAT_HASH_HEX_LEN])
{
    static const char digits[] = "0123456789abcdef";
    out[0] = '\\';
    out[1] = 'x';
    for (int i = 0; i < 32; i++) {
        out[2 + 2 * i] = digits[hash[i] >> 4];
        out[3 + 2 * i] = digits[hash[i] & 15];
    }
    out[66] = '\0';
}

int chat_auth_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    unsigned char ha[32], hb[32];
    /* Comparing hashes keeps the time independent of where the strings differ. */
    chat_auth_token_hash(a, alen, ha);
    chat_auth_token_hash(b, blen, hb);
    return CRYPTO_memcmp(ha, hb, 32) == 0 && alen == blen;
}

struct auth_op {
    chat_memo_t *tokens;
    chat_memo_t *unknown; /* may be NULL */
    uv_loop_t *loop;
    unsigned char hash[32];
    chat_auth_cb cb;
    void *arg;
};

static void auth_db_cb(const chat_db_result_t *r, void *arg)
{
    struct auth_op *op = arg;
    if (r->status != CHAT_EOK) {
        op->cb(CHAT_EUNAVAILABLE, 0, op->arg);
    } else if (PQntuples(r->res[0]) == 0) {
        /* Only the database's "no" is kept: a failure above is never remembered. */
        if (op->unknown)
            chat_memo_set(op->unknown, op->hash,
                          (int64_t)(uv_now(op->loop) + UNKNOWN_TOKEN_TTL_MS));
        op->cb(CHAT_EUNAUTHORIZED, 0, op->arg);
    } else {
        int64_t uid = chat_pg_i64(r->res[0], 0, 0);
        chat_memo_put(op->tokens, op->hash, uid);
        op->cb(CHAT_EOK, uid, op->arg);
    }
    free(op);
}

void chat_auth_check(chat_ctx_t *ctx, const char *token, size_t len, chat_auth_cb cb, void *arg)
{
    unsigned char hash[32];
    chat_auth_token_hash(token, len, hash);
    int64_t uid = chat_memo_get(ctx->tokens, hash);
    if (uid) {
        cb(CHAT_EOK, uid, arg);
        return;
    }
    int64_t until = ctx->unknown_tokens ? chat_memo_get(ctx->unknown_tokens, hash) : 0;
    if (until && (uint64_t)until > uv_now(ctx->loop)) {
        cb(CHAT_EUNAUTHORIZED, 0, arg);
        return;
    }
    struct auth_op *op = chat_malloc(sizeof *op);
    op->tokens = ctx->tokens;
    op->unknown = ctx->unknown_tokens;
    op->loop = ctx->loop;
    memcpy(op->hash, hash, 32);
    op->cb = cb;
    op->arg = arg;
    char hex[CHAT_HASH_HEX_LEN];
    chat_auth_hash_hex(hash, hex);
    const char *params[] = {hex};
    chat_db_stmt_t st = {"SELECT user_id FROM tokens WHERE hash = $1::bytea", 1, params};
    chat_db_exec(ctx->db, &st, 1, CHAT_DB_RETRY_SENT, auth_db_cb, op);
}
