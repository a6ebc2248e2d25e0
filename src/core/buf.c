/*
 * Growable byte buffer (see buf.h).
 */
#include "core/buf.h"
#include "core/alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void chat_buf_init(chat_buf_t *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void chat_buf_dispose(chat_buf_t *b)
{
    free(b->data);
    chat_buf_init(b);
}

void chat_buf_reserve(chat_buf_t *b, size_t extra)
{
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    b->data = chat_realloc(b->data, cap);
    b->cap = cap;
    b->data[b->len] = '\0'; /* a first reservation too: the data is a C string at once */
}

void chat_buf_vprintf(chat_buf_t *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    char small[256];
    int n = vsnprintf(small, sizeof small, fmt, ap);
    if (n < 0) {
        va_end(ap2);
        return;
    }
    if ((size_t)n < sizeof small) {
        chat_buf_append(b, small, (size_t)n);
    } else {
        chat_buf_reserve(b, (size_t)n);
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap2);
        b->len += (size_t)n;
    }
    va_end(ap2);
}

void chat_buf_printf(chat_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    chat_buf_vprintf(b, fmt, ap);
    va_end(ap);
}

void chat_buf_put_u64(chat_buf_t *b, unsigned long long v)
{
    char tmp[24];
    int i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    chat_buf_append(b, tmp + i, sizeof tmp - (size_t)i);
}

void chat_buf_put_i64(chat_buf_t *b, long long v)
{
    if (v < 0) {
        chat_buf_putc(b, '-');
        chat_buf_put_u64(b, (unsigned long long)(-(v + 1)) + 1);
    } else {
        chat_buf_put_u64(b, (unsigned long long)v);
    }
}

void chat_buf_reset(chat_buf_t *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

char *chat_buf_steal(chat_buf_t *b, size_t *len)
{
    if (!b->data)
        chat_buf_reserve(b, 0), b->data[0] = '\0';
    char *p = b->data;
    if (len)
        *len = b->len;
    chat_buf_init(b);
    return p;
}
