/*
 * The payload codec of realtime messages (see msg.h). Written and read by
 * chatd only, but read from a shared Redis: anything that does not decode
 * whole is dropped by the caller.
 */
#include "realtime/msg.h"
#include "core/num.h"
#include "core/error.h"

#include <string.h>

void chat_rt_payload_encode(chat_buf_t *out, const char *origin, const chat_rt_msg_t *m)
{
    chat_buf_reserve(out, strlen(origin) + 64 + m->len);
    chat_buf_puts(out, origin);
    chat_buf_putc(out, ' ');
    chat_buf_put_i64(out, m->kind);
    chat_buf_putc(out, ' ');
    chat_buf_put_i64(out, m->id);
    chat_buf_putc(out, ' ');
    chat_buf_put_i64(out, m->a);
    chat_buf_putc(out, ' ');
    chat_buf_put_i64(out, m->b);
    chat_buf_putc(out, '\n');
    chat_buf_append(out, m->frame, m->len);
}

/* A decimal number ending at stop (a space or a newline); advances *pp past stop. */
static int number(const char **pp, const char *end, char stop, int64_t *v)
{
    const char *p = chat_scan_u64(*pp, end, INT64_MAX, v);
    if (!p || p == end || *p != stop)
        return CHAT_EINVAL;
    *pp = p + 1;
    return 0;
}

int chat_rt_payload_decode(const char *p, size_t len, const char **origin, size_t *origin_len,
                           chat_rt_msg_t *m)
{
    const char *end = p + len;
    const char *sp = memchr(p, ' ', len);
    if (!sp || sp == p || memchr(p, '\n', (size_t)(sp - p)))
        return CHAT_EINVAL;
    const char *q = sp + 1;
    int64_t kind;
    if (number(&q, end, ' ', &kind) || number(&q, end, ' ', &m->id) ||
        number(&q, end, ' ', &m->a) || number(&q, end, '\n', &m->b))
        return CHAT_EINVAL;
    if (kind < CHAT_RT_EVENT || kind > CHAT_RT_REMOVED || m->id <= 0)
        return CHAT_EINVAL;
    m->kind = (int)kind;
    m->frame = q;
    m->len = (size_t)(end - q);
    *origin = p;
    *origin_len = (size_t)(sp - p);
    return 0;
}
