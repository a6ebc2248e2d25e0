/*
 * The fan-out between instances (see fanout.h): one Redis client for
 * SPUBLISH and one subscriber connection per worker, both from redis/. The
 * watched channels are kept in an id table (topic in the key's low bit) so
 * that a reconnect can subscribe to all of them again; events that could not
 * be published are kept as (conversation -> highest rev) until a hint for
 * each has been published.
 */
#include "realtime/fanout.h"
#include "redis/pubsub.h"
#include "redis/client.h"
#include "core/error.h"
#include "core/idtable.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/num.h"
#include "core/uuid.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* How often unpublished events are retried as hints. */
#define HINT_RETRY_MS 200

struct chat_fanout {
    chat_redis_t *pub;  /* NULL: publishes nothing */
    chat_pubsub_t *sub; /* NULL: receives nothing */
    char *origin;
    size_t origin_len;
    chat_fanout_handler_t h;
    void *arg;
    int drop_every;
    chat_idtable_t watched; /* (id << 1 | topic) -> (void *)1 */
    chat_idtable_t unsent;  /* conversation -> highest rev not published (as a pointer) */
    uv_timer_t hint_timer;
    bool timer_on;
    int closing; /* parts still closing */
    void (*done)(void *arg);
    void *done_arg;
};

static chat_metric_t *m_published, *m_received;

static void metrics_once(void)
{
    chat_metric_family_t *f = chat_metrics_counter(
        "chatd_stream_pubsub_total", "Realtime messages published to and received from Redis");
    m_published = chat_metric_series(f, "direction=\"published\"");
    m_received = chat_metric_series(f, "direction=\"received\"");
}

void chat_fanout_metrics_register(void)
{
    static uv_once_t once = UV_ONCE_INIT;
    uv_once(&once, metrics_once);
}

size_t chat_fanout_channel(char out[CHAT_FANOUT_CHANNEL_LEN], int topic, int64_t id)
{
    int n = topic == CHAT_TOPIC_CONV
                ? snprintf(out, CHAT_FANOUT_CHANNEL_LEN, "chatd:c:{c:%lld}", (long long)id)
                : snprintf(out, CHAT_FANOUT_CHANNEL_LEN, "chatd:u:{u:%lld}", (long long)id);
    return (size_t)n;
}

int64_t chat_fanout_channel_parse(const char *ch, size_t len, int *topic)
{
    static const char cpre[] = "chatd:c:{c:", upre[] = "chatd:u:{u:";
    const char *pre = cpre;
    *topic = CHAT_TOPIC_CONV;
    if (len >= sizeof upre && memcmp(ch, upre, sizeof upre - 1) == 0) {
        pre = upre;
        *topic = CHAT_TOPIC_USER;
    }
    if (len < sizeof cpre + 1 || memcmp(ch, pre, sizeof cpre - 1) != 0 || ch[len - 1] != '}')
        return 0;
    int64_t v;
    const char *end = ch + len - 1;
    return chat_scan_u64(ch + sizeof cpre - 1, end, INT64_MAX, &v) == end ? v : 0;
}

void chat_fanout_origin_new(char out[CHAT_RT_ORIGIN_LEN])
{
    char uuid[CHAT_UUID_LEN];
    if (chat_uuid_new(uuid) == 0)
        snprintf(out, CHAT_RT_ORIGIN_LEN, "%s", uuid);
    else /* no randomness: the process and the time still tell instances apart */
        snprintf(out, CHAT_RT_ORIGIN_LEN, "p%ld-%llu", (long)getpid(),
                 (unsigned long long)uv_hrtime());
}

/* ---- receiving ---- */

/* A payload from a channel. Own messages were delivered in-process already. */
static void message_cb(const char *ch, size_t clen, const char *p, size_t len, void *arg)
{
    chat_fanout_t *f = arg;
    const char *origin;
    size_t olen;
    chat_rt_msg_t m;
    if (chat_rt_payload_decode(p, len, &origin, &olen, &m) != 0)
        return; /* not a payload of chatd's */
    if (olen == f->origin_len && memcmp(origin, f->origin, olen) == 0)
        return;
    if (f->drop_every > 0 && m.kind == CHAT_RT_EVENT && m.len > 0 && m.a % f->drop_every == 0)
        return; /* the fault hook: as if pub/sub had lost it */
    chat_metric_inc(m_received);
    f->h.message(&m, f->arg);
}

static void subscribed_cb(const char *ch, size_t clen, void *arg)
{
    chat_fanout_t *f = arg;
    int topic;
    int64_t id = chat_fanout_channel_parse(ch, clen, &topic);
    if (id > 0 && f->h.subscribed)
        f->h.subscribed(topic, id, f->arg);
}

static void subscribe(chat_fanout_t *f, uint64_t key)
{
    char ch[CHAT_FANOUT_CHANNEL_LEN];
    size_t n = chat_fanout_channel(ch, (int)(key & 1), (int64_t)(key >> 1));
    (void)chat_pubsub_subscribe(f->sub, ch, n);
}

/* Redis ended a subscription; one still watched (its slot moved to another
 * node of a cluster) is subscribed again, where the channel now lives. */
static void unsubscribed_cb(const char *ch, size_t clen, void *arg)
{
    chat_fanout_t *f = arg;
    int topic;
    int64_t id = chat_fanout_channel_parse(ch, clen, &topic);
    uint64_t key = (uint64_t)id << 1 | (uint64_t)topic;
    if (id > 0 && chat_idtable_get(&f->watched, key))
        subscribe(f, key);
}

/* A new subscriber connection (or a new cluster map): every watched channel again. */
static void connected_cb(void *arg)
{
    chat_fanout_t *f = arg;
    uint64_t key;
    void *v;
    for (size_t i = 0; (i = chat_idtable_next(&f->watched, i, &key, &v)) != 0;)
        subscribe(f, key);
}

void chat_fanout_watch(chat_fanout_t *f, int topic, int64_t id)
{
    uint64_t key = (uint64_t)id << 1 | (uint64_t)topic;
    if (chat_idtable_get(&f->watched, key))
        return;
    chat_idtable_put(&f->watched, key, (void *)1);
    if (f->sub)
        subscribe(f, key);
}

void chat_fanout_unwatch(chat_fanout_t *f, int topic, int64_t id)
{
    uint64_t key = (uint64_t)id << 1 | (uint64_t)topic;
    if (!chat_idtable_del(&f->watched, key) || !f->sub)
        return;
    char ch[CHAT_FANOUT_CHANNEL_LEN];
    size_t n = chat_fanout_channel(ch, topic, id);
    chat_pubsub_unsubscribe(f->sub, ch, n);
}

/* ---- publishing ---- */

static void hint_cb(uv_timer_t *t);

/* An event that may not have reached Redis: a hint for it follows once Redis can be used. */
static void remember(chat_fanout_t *f, int64_t conv, int64_t rev)
{
    intptr_t had = (intptr_t)chat_idtable_get(&f->unsent, (uint64_t)conv);
    if (rev > had)
        chat_idtable_put(&f->unsent, (uint64_t)conv, (void *)(intptr_t)rev);
    if (!f->timer_on) {
        f->timer_on = true;
        uv_timer_start(&f->hint_timer, hint_cb, HINT_RETRY_MS, HINT_RETRY_MS);
    }
}

/* The SPUBLISH of an event, until its reply. */
typedef struct pub_op {
    chat_fanout_t *f;
    int64_t conv, rev;
} pub_op_t;

static void published_cb(chat_err_t status, struct redisReply *reply, void *arg)
{
    pub_op_t *op = arg;
    (void)reply;
    /* a failure or a timeout: receivers may have missed it (once closing, f is going) */
    if (status != CHAT_EOK && status != CHAT_ECLOSED)
        remember(op->f, op->conv, op->rev);
    free(op);
}

static int spublish(chat_fanout_t *f, const chat_rt_msg_t *m)
{
    if (!f->pub || !chat_redis_healthy(f->pub))
        return CHAT_EDOWN;
    char ch[CHAT_FANOUT_CHANNEL_LEN];
    int topic =
        m->kind == CHAT_RT_EVENT || m->kind == CHAT_RT_TYPING ? CHAT_TOPIC_CONV : CHAT_TOPIC_USER;
    size_t clen = chat_fanout_channel(ch, topic, m->id);
    chat_buf_t b = CHAT_BUF_INIT;
    chat_rt_payload_encode(&b, f->origin, m);
    const char *argv[] = {"SPUBLISH", ch, b.data};
    const size_t argvlen[] = {8, clen, b.len};
    pub_op_t *op = NULL;
    if (m->kind == CHAT_RT_EVENT) {
        op = chat_malloc(sizeof *op);
        *op = (pub_op_t){f, m->id, m->a};
    }
    /* At most once: a SPUBLISH that fails or times out is not repeated, an event's is hinted. */
    int rc = chat_redis_command(f->pub, op ? published_cb : NULL, op, 3, argv, argvlen) == 0
                 ? 0
                 : CHAT_EDOWN;
    if (rc == 0)
        chat_metric_inc(m_published);
    else
        free(op);
    chat_buf_dispose(&b);
    return rc;
}

/* Publishes a hint for every event kept back; what still cannot go stays. */
static void hint_cb(uv_timer_t *t)
{
    chat_fanout_t *f = t->data;
    if (!f->pub || !chat_redis_healthy(f->pub))
        return;
    uint64_t conv;
    void *v;
    for (size_t i = 0; (i = chat_idtable_next(&f->unsent, i, &conv, &v)) != 0;) {
        chat_rt_msg_t m = {.kind = CHAT_RT_EVENT, .id = (int64_t)conv, .a = (int64_t)(intptr_t)v};
        chat_idtable_del(&f->unsent, conv);
        if (spublish(f, &m) != 0) {
            chat_idtable_put(&f->unsent, conv, v);
            return;
        }
        i = 0; /* the table may have moved its entries: start over */
    }
    uv_timer_stop(&f->hint_timer);
    f->timer_on = false;
}

int chat_fanout_publish(chat_fanout_t *f, const chat_rt_msg_t *m)
{
    int rc = spublish(f, m);
    if (rc != 0 && m->kind == CHAT_RT_EVENT && f->pub)
        remember(f, m->id, m->a);
    return rc;
}

bool chat_fanout_ready(const chat_fanout_t *f)
{
    return f->pub && f->sub && chat_redis_healthy(f->pub) && chat_pubsub_usable(f->sub);
}

/* ---- life ---- */

chat_fanout_t *chat_fanout_create(uv_loop_t *loop, const chat_fanout_config_t *cfg,
                                  const chat_fanout_handler_t *h, void *arg)
{
    chat_fanout_metrics_register();
    chat_fanout_t *f = chat_calloc(1, sizeof *f);
    f->origin = chat_strdup(cfg->origin);
    f->origin_len = strlen(f->origin);
    f->h = *h;
    f->arg = arg;
    f->drop_every = cfg->drop_every;
    chat_idtable_init(&f->watched);
    chat_idtable_init(&f->unsent);
    uv_timer_init(loop, &f->hint_timer);
    f->hint_timer.data = f;
    char err[256];
    chat_redis_config_t rc = {.url = cfg->redis_url, .cmd_timeout_ms = cfg->cmd_timeout_ms};
    f->pub = chat_redis_create(loop, &rc, err, sizeof err);
    if (f->pub) {
        static const chat_pubsub_handler_t ph = {message_cb, subscribed_cb, connected_cb,
                                                 unsubscribed_cb, NULL};
        f->sub = chat_pubsub_create(loop, cfg->redis_url, &ph, f, err, sizeof err);
    }
    if (!f->pub || !f->sub)
        chat_log_error("event=stream_redis_disabled reason=\"%s\"", err);
    return f;
}

static void part_closed(void *arg)
{
    chat_fanout_t *f = arg;
    if (--f->closing > 0)
        return;
    void (*done)(void *) = f->done;
    void *darg = f->done_arg;
    chat_idtable_dispose(&f->watched);
    chat_idtable_dispose(&f->unsent);
    free(f->origin);
    free(f);
    if (done)
        done(darg);
}

static void timer_closed(uv_handle_t *h)
{
    part_closed(h->data);
}

void chat_fanout_close(chat_fanout_t *f, void (*done)(void *arg), void *arg)
{
    f->done = done;
    f->done_arg = arg;
    /* One for this call, so that the last part closing now cannot free f under us. */
    f->closing = 2 + (f->pub != NULL) + (f->sub != NULL);
    if (f->sub)
        chat_pubsub_close(f->sub, part_closed, f);
    if (f->pub)
        chat_redis_close(f->pub, part_closed, f);
    uv_close((uv_handle_t *)&f->hint_timer, timer_closed);
    part_closed(f);
}
