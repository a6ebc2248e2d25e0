/*
 * Shared helpers of the chat domain: replies, result decoding, and the one
 * place that reads the database's failure codes.
 */
#include "chat/internal.h"
#include "core/alloc.h"
#include "core/log.h"

#include <stdlib.h>
#include <string.h>

const char *chat_i64_str(char *buf, int64_t v)
{
    char tmp[24];
    int i = sizeof tmp;
    int neg = v < 0;
    uint64_t u = neg ? (uint64_t)(-(v + 1)) + 1 : (uint64_t)v;
    tmp[--i] = '\0';
    do {
        tmp[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (neg)
        tmp[--i] = '-';
    memcpy(buf, tmp + i, sizeof tmp - (size_t)i);
    return buf;
}

int64_t chat_pg_i64(const PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col))
        return 0;
    return strtoll(PQgetvalue(res, row, col), NULL, 10);
}

const char *chat_pg_str(const PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col))
        return NULL;
    return PQgetvalue(res, row, col);
}

int64_t *chat_i64_list_parse(const char *text, size_t *n)
{
    *n = 0;
    if (!text)
        return NULL;
    size_t cap = 1;
    for (const char *p = text; *p; p++)
        cap += *p == ',';
    int64_t *ids = chat_malloc(cap * sizeof *ids);
    const char *p = text + (*text == '{');
    while (*p && *p != '}') {
        char *end;
        long long v = strtoll(p, &end, 10);
        if (end == p)
            break;
        ids[(*n)++] = (int64_t)v;
        p = *end == ',' ? end + 1 : end;
    }
    return ids;
}

void chat_reply_ok(chat_reply_cb cb, void *arg, chat_reply_kind_t kind, chat_buf_t *body)
{
    chat_reply_t r = {.err = CHAT_EOK, .kind = kind};
    if (body)
        r.body = chat_buf_steal(body, &r.body_len);
    cb(&r, arg); /* the receiver owns r.body now */
}

void chat_reply_body_free(chat_reply_t *r)
{
    if (r->shared)
        chat_blob_unref(r->shared);
    else
        free(r->body);
    r->shared = NULL;
    r->body = NULL;
}

chat_blob_t *chat_reply_blob(chat_reply_t *r)
{
    chat_blob_t *b = NULL;
    if (r->err != CHAT_EOK)
        chat_reply_body_free(r);
    else if (r->shared)
        b = r->shared;
    else if (r->body)
        b = chat_blob_adopt(r->body, r->body_len);
    else
        b = chat_blob_copy("", 0);
    r->shared = NULL;
    r->body = NULL;
    r->body_len = 0;
    return b;
}

void chat_reply_shared(chat_reply_cb cb, void *arg, chat_blob_t *val)
{
    chat_reply_t r = {.err = CHAT_EOK,
                      .kind = CHAT_REPLY_OK,
                      .body = val->data,
                      .body_len = val->len,
                      .shared = val};
    cb(&r, arg); /* the receiver owns the reference now */
}

void chat_reply_err(chat_reply_cb cb, void *arg, chat_err_t err, const char *message)
{
    chat_reply_t r = {.err = err, .message = message};
    cb(&r, arg);
}

void chat_reply_from_db_error(chat_reply_t *r, const chat_db_result_t *res)
{
    *r = (chat_reply_t){.kind = CHAT_REPLY_OK};
    r->err = CHAT_EUNAVAILABLE;
    switch (res->status) {
    case CHAT_ETIMEDOUT:
        r->message = "the database is busy: timed out waiting for a connection";
        break;
    case CHAT_EREPLY:
    case CHAT_EINVAL:
        chat_log_error("event=db_query_error sqlstate=%s message=\"%s\"",
                       res->sqlstate ? res->sqlstate : "-", res->message ? res->message : "");
        r->message = "the database could not complete the request";
        break;
    default:
        r->message = "the database is unavailable";
        break;
    }
}

void chat_reply_db_err(chat_reply_cb cb, void *arg, const chat_db_result_t *res)
{
    chat_reply_t r = {0};
    chat_reply_from_db_error(&r, res);
    cb(&r, arg);
}

bool chat_db_found(const chat_db_result_t *res, chat_reply_cb cb, void *arg, const char *notfound)
{
    if (res->status != CHAT_EOK) {
        chat_reply_db_err(cb, arg, res);
        return false;
    }
    if (PQntuples(res->res[0]) == 0) {
        chat_reply_err(cb, arg, CHAT_ENOTFOUND, notfound);
        return false;
    }
    return true;
}

bool chat_db_unique_violation(const chat_db_result_t *res)
{
    return res->status == CHAT_EREPLY && res->sqlstate && !strcmp(res->sqlstate, "23505");
}
