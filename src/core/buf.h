/*
 * Growable byte buffer. Used for response bodies, the metrics exposition and
 * anything else that is built piece by piece. The buffer always keeps a NUL
 * after its last byte so its data can be used as a C string.
 */
#ifndef CHAT_CORE_BUF_H
#define CHAT_CORE_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <string.h>

typedef struct chat_buf {
    char *data; /* NULL until the first append */
    size_t len;
    size_t cap;
} chat_buf_t;

#define CHAT_BUF_INIT                                                                              \
    {                                                                                              \
        NULL, 0, 0                                                                                 \
    }

void chat_buf_init(chat_buf_t *b);
/** Frees the storage; the buffer is empty and reusable afterwards. */
void chat_buf_dispose(chat_buf_t *b);
/** Makes room for at least extra more bytes (plus the trailing NUL). */
void chat_buf_reserve(chat_buf_t *b, size_t extra);

/*
 * Appending is on the path of every answer (JSON encoding), so the common
 * case — the bytes fit — is inline; growing goes through chat_buf_reserve.
 */
static inline void chat_buf_append(chat_buf_t *b, const void *data, size_t len)
{
    if (b->len + len + 1 > b->cap)
        chat_buf_reserve(b, len);
    if (len)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
}

static inline void chat_buf_puts(chat_buf_t *b, const char *s)
{
    chat_buf_append(b, s, strlen(s));
}

static inline void chat_buf_putc(chat_buf_t *b, char c)
{
    if (b->len + 2 > b->cap)
        chat_buf_reserve(b, 1);
    b->data[b->len++] = c;
    b->data[b->len] = '\0';
}

void chat_buf_printf(chat_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void chat_buf_vprintf(chat_buf_t *b, const char *fmt, va_list ap);
/** Appends a signed / unsigned decimal integer. */
void chat_buf_put_i64(chat_buf_t *b, long long v);
void chat_buf_put_u64(chat_buf_t *b, unsigned long long v);
/** Empties the buffer, keeping its storage. */
void chat_buf_reset(chat_buf_t *b);
/**
 * Hands the storage over to the caller (who frees it) and leaves the buffer
 * empty. Never returns NULL: an empty buffer yields an allocated "".
 */
char *chat_buf_steal(chat_buf_t *b, size_t *len);

#endif
