/*
 * The fan-out between instances (see fanout.h): one Redis client for PUBLISH
 * and one subscriber connection per worker, both from redis/, and the codec
 * of the payload they carry. Every worker subscribes by itself and delivers
 * to its own sockets, so no frame crosses threads on the way in.
 */
#include "realtime/fanout.h"
#include "redis/pubsub.h"
#include "redis/client.h"
#include "core/uuid.h"
#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct chat_fanout {
    chat_redis_t *pub;  /* NULL: publishes nothing */
    chat_pubsub_t *sub; /* NULL: receives nothing */
    char *origin;
    size_t origin_len;
    chat_fanout_frame_cb cb;
    void *arg;
    int closing; /* parts still closing */
    void (*done)(void *arg);
    void *done_arg;
};

static chat_metric_t *m_published, *m_received;

static void metrics_once(void)
{
    chat_metric_family_t *f = chat_metrics_counter(
        "chatd_stream_pubsub_total", "Message frames published to and received from Redis");
    m_published = chat_metric_series(f, "direction=\"published\"");
    m_received = chat_metric_series(f, "direction=\"received\"");
}

void chat_fanout_metrics_register(void)
{
    static uv_once_t once = UV_ONCE_INIT;
    uv_once(&once, metrics_once);
}

/* ---- the payload codec ---- */

void chat_fanout_payload_encode(chat_buf_t *out, const char *origin, const int64_t *members,
                                size_t n, const char *frame, size_t len)
{
    chat_buf_reserve(out, strlen(origin) + n * 8 + len + 4);
    chat_buf_puts(out, origin);
    chat_buf_putc(out, ' ');
    for (size_t i = 0; i < n; i++) {
        if (i)
            chat_buf_putc(out, ',');
        chat_buf_put_i64(out, members[i]);
    }
    chat_buf_putc(out, '\n');
    chat_buf_append(out, frame, len);
}

/* One id of the list: 0 with *v, or CHAT_EINVAL. */
static int parse_id(const char *p, const char *end, int64_t *v)
{
    uint64_t x = 0;
    if (p == end)
        return CHAT_EINVAL;
    for (; p < end; p++) {
        if (*p < '0' || *p > '9')
            return CHAT_EINVAL;
        unsigned d = (unsigned)(*p - '0');
        if (x > ((uint64_t)INT64_MAX - d) / 10)
            return CHAT_EINVAL;
        x = x * 10 + d;
    }
    if (x == 0)
        return CHAT_EINVAL;
    *v = (int64_t)x;
    return 0;
}

int chat_fanout_payload_decode(const char *p, size_t len, chat_fanout_payload_t *out)
{
    const char *end = p + len;
    const char *sp = memchr(p, ' ', len);
    const char *nl = sp ? memchr(sp, '\n', (size_t)(end - sp)) : NULL;
    if (!sp || !nl || sp == p || nl == sp + 1)
        return CHAT_EINVAL;
    size_t n = 1;
    for (const char *q = sp + 1; q < nl; q++)
        n += *q == ',';
    int64_t *ids = chat_malloc(n * sizeof *ids);
    const char *q = sp + 1;
    for (size_t i = 0; i < n; i++) {
        const char *comma = memchr(q, ',', (size_t)(nl - q));
        const char *item_end = comma ? comma : nl;
        if (parse_id(q, item_end, &ids[i]) != 0) {
            free(ids);
            return CHAT_EINVAL;
        }
        q = item_end + 1;
    }
    out->origin = p;
    out->origin_len = (size_t)(sp - p);
    out->members = ids;
    out->n = n;
    out->frame = nl + 1;
    out->len = (size_t)(end - nl - 1);
    return 0;
}

void chat_fanout_payload_dispose(chat_fanout_payload_t *pl)
{
    free(pl->members);
    pl->members = NULL;
    pl->n = 0;
}

void chat_fanout_origin_new(char out[CHAT_FANOUT_ORIGIN_LEN])
{
    char uuid[CHAT_UUID_LEN];
    if (chat_uuid_new(uuid) == 0)
        snprintf(out, CHAT_FANOUT_ORIGIN_LEN, "%s", uuid);
    else /* no randomness: the process and the time still tell instances apart */
        snprintf(out, CHAT_FANOUT_ORIGIN_LEN, "p%ld-%llu", (long)getpid(),
                 (unsigned long long)uv_hrtime());
}

/* ---- the connections ---- */

/* A payload from the channel. Own frames were delivered in-process already. */
static void message_cb(const char *p, size_t len, void *arg)
{
    chat_fanout_t *f = arg;
    chat_fanout_payload_t pl;
    if (chat_fanout_payload_decode(p, len, &pl) != 0)
        return; /* not a payload of chatd's */
    if (pl.origin_len != f->origin_len || memcmp(pl.origin, f->origin, pl.origin_len) != 0) {
        chat_metric_inc(m_received);
        f->cb(pl.members, pl.n, pl.frame, pl.len, f->arg);
    }
    chat_fanout_payload_dispose(&pl);
}

chat_fanout_t *chat_fanout_create(uv_loop_t *loop, const chat_fanout_config_t *cfg,
                                  chat_fanout_frame_cb cb, void *arg)
{
    chat_fanout_metrics_register();
    chat_fanout_t *f = chat_calloc(1, sizeof *f);
    f->origin = chat_strdup(cfg->origin);
    f->origin_len = strlen(f->origin);
    f->cb = cb;
    f->arg = arg;
    char err[256];
    chat_redis_config_t rc = {.url = cfg->redis_url, .cmd_timeout_ms = cfg->cmd_timeout_ms};
    f->pub = chat_redis_create(loop, &rc, err, sizeof err);
    if (f->pub)
        f->sub = chat_pubsub_create(loop, cfg->redis_url, CHAT_FANOUT_CHANNEL, message_cb, f, err,
                                    sizeof err);
    if (!f->pub || !f->sub)
        chat_log_error("event=stream_redis_disabled reason=\"%s\"", err);
    return f;
}

int chat_fanout_publish(chat_fanout_t *f, const int64_t *members, size_t n, const char *frame,
                        size_t len)
{
    if (!f->pub || n == 0 || !chat_redis_healthy(f->pub))
        return CHAT_EDOWN;
    chat_buf_t b = CHAT_BUF_INIT;
    chat_fanout_payload_encode(&b, f->origin, members, n, frame, len);
    const char *argv[] = {"PUBLISH", CHAT_FANOUT_CHANNEL, b.data};
    const size_t argvlen[] = {7, sizeof CHAT_FANOUT_CHANNEL - 1, b.len};
    /* At most once: a PUBLISH that fails or times out is not repeated. */
    int rc = chat_redis_command(f->pub, NULL, NULL, 3, argv, argvlen) == 0 ? 0 : CHAT_EDOWN;
    if (rc == 0)
        chat_metric_inc(m_published);
    chat_buf_dispose(&b);
    return rc;
}

bool chat_fanout_ready(const chat_fanout_t *f)
{
    return f->pub && f->sub && chat_redis_healthy(f->pub) && chat_pubsub_subscribed(f->sub);
}

static void part_closed(void *arg)
{
    chat_fanout_t *f = arg;
    if (--f->closing > 0)
        return;
    void (*done)(void *) = f->done;
    void *darg = f->done_arg;
    free(f->origin);
    free(f);
    if (done)
        done(darg);
}

void chat_fanout_close(chat_fanout_t *f, void (*done)(void *arg), void *arg)
{
    f->done = done;
    f->done_arg = arg;
    /* One for this call, so that the last part closing now cannot free f under us. */
    f->closing = 1 + (f->pub != NULL) + (f->sub != NULL);
    if (f->sub)
        chat_pubsub_close(f->sub, part_closed, f);
    if (f->pub)
        chat_redis_close(f->pub, part_closed, f);
    part_closed(f);
}
