/*
 * Fuzzes what chatd does with Redis replies: the input is a stream of RESP
 * bytes fed in pieces to hiredis's reader, as redis/pubsub.c and the client
 * do, and every reply (and every element of one) goes through each decoder
 * chatd has: pub/sub pushes (redis/pubsub.c), the realtime payload codec
 * (realtime/msg.c) and channel names (realtime/fanout.c) behind them, the
 * cache's lookup, version and SCAN replies (cache/reply.c) and the rate
 * limiter's script reply (api/ratelimit.c). The raw input also goes to the
 * payload and channel decoders directly, and to the parser of cached
 * /events pages (realtime/stream.c), alone and as the messages of a page
 * built the way chatd writes one.
 *
 * Checked: a decoder takes a reply only when it has the right shape, and
 * its spans point into the reply; an accepted payload or channel name,
 * written out again by chatd's own encoder, reads back the same (and no
 * longer: leading zeros are read, never written).
 */
#include "api/ratelimit.h"
#include "cache/reply.h"
#include "core/buf.h"
#include "core/json.h"
#include "fuzz.h"
#include "realtime/fanout.h"
#include "realtime/msg.h"
#include "realtime/stream.h"
#include "redis/pubsub.h"

#include <hiredis/hiredis.h>
#include <string.h>

static void check_payload(const char *p, size_t len)
{
    const char *origin;
    size_t olen;
    chat_rt_msg_t m;
    if (chat_rt_payload_decode(p, len, &origin, &olen, &m) != 0)
        return;
    FUZZ_CHECK(origin == p && olen > 0 && olen < len);
    FUZZ_CHECK(!memchr(origin, ' ', olen) && !memchr(origin, '\n', olen));
    FUZZ_CHECK(m.kind >= CHAT_RT_EVENT && m.kind <= CHAT_RT_REMOVED);
    FUZZ_CHECK(m.id > 0 && m.a >= 0 && m.b >= 0);
    FUZZ_CHECK(m.frame > p && m.frame + m.len == p + len);
    if (memchr(origin, '\0', olen))
        return; /* the encoder takes the origin as a C string */
    /* Written out again (numbers canonical: leading zeros are read, never written). */
    char *o = strndup(origin, olen);
    chat_buf_t b = CHAT_BUF_INIT;
    chat_rt_payload_encode(&b, o, &m);
    FUZZ_CHECK(b.len <= len);
    const char *o2;
    size_t olen2;
    chat_rt_msg_t m2;
    FUZZ_CHECK(chat_rt_payload_decode(b.data, b.len, &o2, &olen2, &m2) == 0);
    FUZZ_CHECK(olen2 == olen && memcmp(o2, origin, olen) == 0);
    FUZZ_CHECK(m2.kind == m.kind && m2.id == m.id && m2.a == m.a && m2.b == m.b);
    FUZZ_CHECK(m2.len == m.len && memcmp(m2.frame, m.frame, m.len) == 0);
    chat_buf_dispose(&b);
    free(o);
}

static void check_channel(const char *ch, size_t len)
{
    int topic = -1;
    int64_t id = chat_fanout_channel_parse(ch, len, &topic);
    FUZZ_CHECK(id >= 0);
    if (id == 0)
        return;
    FUZZ_CHECK(topic == CHAT_TOPIC_CONV || topic == CHAT_TOPIC_USER);
    char out[CHAT_FANOUT_CHANNEL_LEN];
    size_t n = chat_fanout_channel(out, topic, id);
    FUZZ_CHECK(n <= len);
    int topic2 = -1;
    FUZZ_CHECK(chat_fanout_channel_parse(out, n, &topic2) == id && topic2 == topic);
}

/* Any bytes as a cached /events page: the spans found are whole objects, in order, inside it. */
static void check_events_raw(const char *p, size_t len)
{
    chat_stream_event_span_t *ev = NULL;
    size_t n = 7;
    int64_t rev = chat_stream_events_parse(p, len, &ev, &n);
    FUZZ_CHECK(rev >= -1);
    if (rev < 0)
        FUZZ_CHECK(ev == NULL && n == 0);
    const char *prev = p;
    for (size_t i = 0; i < n; i++) {
        FUZZ_CHECK(ev[i].data >= prev && ev[i].len >= 2 && ev[i].data + ev[i].len <= p + len);
        FUZZ_CHECK(ev[i].data[0] == '{' && ev[i].data[ev[i].len - 1] == '}' && ev[i].rev >= 0);
        prev = ev[i].data + ev[i].len;
    }
    free(ev);
}

/*
 * An /events page as chatd writes it, its messages' bodies the input's
 * pieces: every event is found, with its rev and exactly its bytes.
 */
static void check_events_built(const uint8_t *data, size_t size, uint16_t seed)
{
    enum { MAX_EVENTS = 64 };
    size_t start[MAX_EVENTS], len[MAX_EVENTS], k = 0, off = 0, n;
    fuzz_split_t sp;
    fuzz_split_init(&sp, seed, size);
    chat_buf_t b = CHAT_BUF_INIT;
    chat_buf_puts(&b, "{\"conversation_id\":7,\"rev\":");
    size_t count = 0;
    for (fuzz_split_t c = sp; count < MAX_EVENTS && fuzz_split_next(&c) > 0;)
        count++;
    chat_buf_printf(&b, "%zu,\"events\":[", count);
    while (k < count && (n = fuzz_split_next(&sp)) > 0) {
        if (k)
            chat_buf_putc(&b, ',');
        start[k] = b.len;
        chat_buf_printf(&b,
                        "{\"type\":\"message\",\"conversation_id\":7,\"rev\":%zu,"
                        "\"message\":{\"id\":%zu,\"body\":",
                        k + 1, k + 1);
        chat_json_put_str(&b, (const char *)data + off, n);
        chat_buf_puts(&b, "}}");
        len[k] = b.len - start[k];
        off += n;
        k++;
    }
    chat_buf_puts(&b, "]}");
    chat_stream_event_span_t *ev = NULL;
    size_t got = 0;
    FUZZ_CHECK(chat_stream_events_parse(b.data, b.len, &ev, &got) == (int64_t)count);
    FUZZ_CHECK(got == count);
    for (size_t i = 0; i < got; i++) {
        FUZZ_CHECK(ev[i].rev == (int64_t)(i + 1));
        FUZZ_CHECK(ev[i].data == b.data + start[i] && ev[i].len == len[i]);
    }
    free(ev);
    chat_buf_dispose(&b);
}

static bool is_str(const redisReply *e)
{
    return e->type == REDIS_REPLY_STRING;
}

static void check_reply(const redisReply *r)
{
    chat_pubsub_reply_t m;
    chat_pubsub_reply_parse(r, &m);
    if (m.kind != CHAT_PUBSUB_REPLY_OTHER) {
        FUZZ_CHECK(r->type == REDIS_REPLY_ARRAY && r->elements >= 3 && is_str(r->element[1]));
        FUZZ_CHECK(m.channel == r->element[1]->str && m.clen == r->element[1]->len);
        check_channel(m.channel, m.clen);
    }
    if (m.kind == CHAT_PUBSUB_REPLY_MESSAGE) {
        FUZZ_CHECK(is_str(r->element[0]) && !strcmp(r->element[0]->str, "smessage"));
        FUZZ_CHECK(m.payload == r->element[2]->str && m.len == r->element[2]->len);
        check_payload(m.payload, m.len);
    } else if (m.kind == CHAT_PUBSUB_REPLY_SUBSCRIBED) {
        FUZZ_CHECK(is_str(r->element[0]) && !strcmp(r->element[0]->str, "ssubscribe"));
    }

    chat_cache_lookup_reply_t lr;
    if (chat_cache_lookup_reply_parse(r, &lr) == 0) {
        FUZZ_CHECK(r->type == REDIS_REPLY_ARRAY && r->elements >= 2);
        FUZZ_CHECK(lr.key == r->element[0]->str && strlen(lr.key) == r->element[0]->len);
        if (lr.kind == CHAT_CACHE_REPLY_VALUE)
            FUZZ_CHECK(lr.value == r->element[1]->str && lr.len == r->element[1]->len);
        else
            FUZZ_CHECK(lr.value == NULL);
        if (lr.kind == CHAT_CACHE_REPLY_SAME)
            FUZZ_CHECK(r->element[1]->type == REDIS_REPLY_INTEGER);
        if (lr.guard)
            FUZZ_CHECK(r->elements >= 3 && lr.guard == r->element[2]->str &&
                       strlen(lr.guard) == r->element[2]->len);
    }

    size_t n = r->type == REDIS_REPLY_ARRAY ? r->elements : 0;
    const char **tokens = malloc((n + 1) * sizeof *tokens);
    if (chat_cache_versions_reply_parse(r, n, tokens) == 0) {
        FUZZ_CHECK(r->type == REDIS_REPLY_ARRAY);
        for (size_t i = 0; i < n; i++)
            FUZZ_CHECK(tokens[i] == r->element[i]->str && strlen(tokens[i]) == r->element[i]->len);
    }
    FUZZ_CHECK(chat_cache_versions_reply_parse(r, n + 1, tokens) != 0);
    free(tokens);

    const char *cursor = NULL;
    const redisReply *keys = NULL;
    if (chat_cache_scan_reply_parse(r, &cursor, &keys) == 0) {
        FUZZ_CHECK(cursor && strlen(cursor) < CHAT_CACHE_CURSOR_MAX && cursor[0]);
        FUZZ_CHECK(strspn(cursor, "0123456789") == strlen(cursor));
        FUZZ_CHECK(keys && keys->type == REDIS_REPLY_ARRAY);
        for (size_t i = 0; i < keys->elements; i++)
            FUZZ_CHECK(is_str(keys->element[i]) && keys->element[i]->str);
    }

    long long wait = -1;
    int allowed = chat_ratelimit_reply_parse(r, &wait);
    FUZZ_CHECK(allowed >= -1 && allowed <= 1);
    if (allowed >= 0)
        FUZZ_CHECK(r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
                   wait == r->element[1]->integer);

    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++)
        check_reply(r->element[i]);
}

/*
 * hiredis 0.14 allocates a multi-bulk's element array up front from the
 * count it reads (up to INT_MAX): a count of millions is a request for
 * gigabytes that chatd's Redis never sends. Such inputs are skipped.
 */
static bool huge_count(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '*')
            continue;
        size_t d = 0;
        while (i + 1 + d < n && p[i + 1 + d] >= '0' && p[i + 1 + d] <= '9')
            d++;
        if (d >= 6)
            return true;
    }
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint16_t seed = (uint16_t)(data[0] | data[1] << 8);
    data += 2;
    size -= 2;
    check_payload((const char *)data, size);
    check_channel((const char *)data, size);
    check_events_raw((const char *)data, size);
    check_events_built(data, size, seed);
    if (huge_count(data, size))
        return 0;
    redisReader *rd = redisReaderCreate();
    fuzz_split_t sp;
    fuzz_split_init(&sp, seed, size);
    size_t n, off = 0;
    bool failed = false;
    while (!failed && (n = fuzz_split_next(&sp)) > 0) {
        if (redisReaderFeed(rd, (const char *)data + off, n) != REDIS_OK)
            break;
        off += n;
        for (;;) {
            void *reply = NULL;
            if (redisReaderGetReply(rd, &reply) != REDIS_OK) {
                failed = true; /* a protocol error: chatd drops the connection */
                break;
            }
            if (!reply)
                break;
            check_reply(reply);
            freeReplyObject(reply);
        }
    }
    redisReaderFree(rd);
    return 0;
}
