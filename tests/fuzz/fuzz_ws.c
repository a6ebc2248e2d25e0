/*
 * Fuzzes the WebSocket frame engine (net/ws.c) as net/ws_conn.c drives it:
 * client bytes fed whole and in pieces must give the same messages, the
 * same output and the same close; every message is within the size limit
 * (and valid UTF-8 when text); the output is well-formed server frames that
 * carry back exactly the messages echoed; and those messages, framed again
 * as a client would, come out of a fresh engine unchanged. The handshake
 * checks (key, Origin list) run over the input too.
 */
#include "core/buf.h"
#include "core/json.h"
#include "fuzz.h"
#include "net/ws.h"

#include <stdbool.h>
#include <string.h>

typedef struct run {
    chat_ws_engine_t *e;
    chat_buf_t msgs;   /* 'T' or 'B', a 4-byte length, the bytes: every message delivered */
    chat_buf_t echoed; /* the text messages queued back, same form */
    chat_buf_t out;    /* every byte the engine output */
    size_t max;
    bool echo;
} run_t;

static void put_record(chat_buf_t *b, char kind, const char *m, size_t len)
{
    uint32_t n = (uint32_t)len;
    chat_buf_putc(b, kind);
    chat_buf_append(b, &n, sizeof n);
    chat_buf_append(b, m, len);
}

static void on_text(void *ud, const char *msg, size_t len)
{
    run_t *r = ud;
    FUZZ_CHECK(len <= r->max);
    FUZZ_CHECK(chat_utf8_count(msg, len) >= 0);
    put_record(&r->msgs, 'T', msg, len);
    if (r->echo) {
        bool closing = chat_ws_engine_closing(r->e);
        int rc = chat_ws_engine_send_text(r->e, msg, len);
        FUZZ_CHECK((rc == 0) == !closing);
        if (rc == 0)
            put_record(&r->echoed, 'T', msg, len);
    }
}

static void on_binary(void *ud, const char *msg, size_t len)
{
    run_t *r = ud;
    FUZZ_CHECK(len <= r->max);
    put_record(&r->msgs, 'B', msg, len);
}

static void on_output(void *ud, const void *data, size_t len)
{
    run_t *r = ud;
    FUZZ_CHECK(len > 0);
    chat_buf_append(&r->out, data, len);
}

static const chat_ws_engine_cbs_t cbs = {on_text, on_binary, on_output};

static void run_init(run_t *r, size_t max, bool echo)
{
    memset(r, 0, sizeof *r);
    r->max = max;
    r->echo = echo;
    r->e = chat_ws_engine_create(&cbs, r, max);
}

static void run_dispose(run_t *r)
{
    chat_ws_engine_destroy(r->e);
    chat_buf_dispose(&r->msgs);
    chat_buf_dispose(&r->echoed);
    chat_buf_dispose(&r->out);
}

static void feed(run_t *r, const uint8_t *p, size_t n)
{
    FUZZ_CHECK(chat_ws_engine_feed(r->e, p, n) == 0);
    FUZZ_CHECK(chat_ws_engine_flush(r->e) == 0);
}

static bool same(const chat_buf_t *a, const chat_buf_t *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

/*
 * The engine's output, read as server frames: whole, unmasked, minimal
 * lengths, nothing after a close. The text frames must be exactly the
 * echoed messages.
 */
static void check_output(const run_t *r)
{
    static const uint8_t none[1];
    const uint8_t *p = r->out.data ? (const uint8_t *)r->out.data : none, *end = p + r->out.len;
    chat_buf_t texts = CHAT_BUF_INIT;
    bool closed = false;
    while (p < end) {
        FUZZ_CHECK(!closed);
        FUZZ_CHECK(end - p >= 2);
        FUZZ_CHECK((p[0] & 0xf0) == 0x80); /* FIN, no RSV bits */
        int op = p[0] & 0x0f;
        FUZZ_CHECK((p[1] & 0x80) == 0); /* server frames are not masked */
        uint64_t len = p[1] & 0x7f;
        size_t h = 2;
        if (len == 126) {
            FUZZ_CHECK(end - p >= 4);
            len = ((uint64_t)p[2] << 8) | p[3];
            FUZZ_CHECK(len >= 126);
            h = 4;
        } else if (len == 127) {
            FUZZ_CHECK(end - p >= 10);
            len = 0;
            for (int i = 0; i < 8; i++)
                len = (len << 8) | p[2 + i];
            FUZZ_CHECK(len > 0xffff && !(len >> 63));
            h = 10;
        }
        FUZZ_CHECK((uint64_t)(end - p) - h >= len);
        const uint8_t *pl = p + h;
        switch (op) {
        case 0x1:
            put_record(&texts, 'T', (const char *)pl, (size_t)len);
            break;
        case 0x8:
            closed = true;
            FUZZ_CHECK(len != 1 && len <= 125);
            if (len >= 2) {
                unsigned code = ((unsigned)pl[0] << 8) | pl[1];
                FUZZ_CHECK(code == chat_ws_engine_close_code(r->e));
                FUZZ_CHECK((code >= 1000 && code <= 1011) || (code >= 3000 && code <= 4999));
            } else {
                FUZZ_CHECK(chat_ws_engine_close_code(r->e) == 0);
            }
            break;
        case 0xA:
            FUZZ_CHECK(len <= 125);
            break;
        default:
            FUZZ_CHECK(!"an unexpected opcode in the output");
        }
        p = pl + len;
    }
    FUZZ_CHECK(closed == chat_ws_engine_closing(r->e));
    FUZZ_CHECK(same(&texts, &r->echoed));
    chat_buf_dispose(&texts);
}

/* Frames every delivered message again as a client would (masked, fragmented); b must read them
 * back. */
static void check_reframed(const run_t *a, uint16_t seed)
{
    run_t b;
    run_init(&b, a->max, false);
    chat_buf_t wire = CHAT_BUF_INIT;
    uint8_t key[4] = {(uint8_t)seed, (uint8_t)(seed >> 8), 0x5a, 0xc3};
    fuzz_split_t sp;
    for (size_t off = 0; off < a->msgs.len;) {
        char kind = a->msgs.data[off];
        uint32_t n;
        memcpy(&n, a->msgs.data + off + 1, sizeof n);
        const uint8_t *m = (const uint8_t *)a->msgs.data + off + 1 + sizeof n;
        off += 1 + sizeof n + n;
        fuzz_split_init(&sp, seed, n);
        size_t k, at = 0;
        bool first = true;
        do {
            k = fuzz_split_next(&sp);
            bool fin = at + k == n;
            uint8_t h[14];
            size_t hl = 0;
            h[hl++] = (uint8_t)((fin ? 0x80 : 0) | (first ? (kind == 'T' ? 1 : 2) : 0));
            if (k < 126) {
                h[hl++] = (uint8_t)(0x80 | k);
            } else {
                h[hl++] = 0x80 | 126;
                h[hl++] = (uint8_t)(k >> 8);
                h[hl++] = (uint8_t)k;
            }
            memcpy(h + hl, key, 4);
            hl += 4;
            chat_buf_append(&wire, h, hl);
            for (size_t i = 0; i < k; i++) {
                uint8_t c = m[at + i] ^ key[i & 3];
                chat_buf_append(&wire, &c, 1);
            }
            at += k;
            first = false;
        } while (at < n);
        /* A ping between messages is answered and changes nothing else. */
        static const uint8_t ping[] = {0x89, 0x80, 1, 2, 3, 4};
        chat_buf_append(&wire, ping, sizeof ping);
    }
    feed(&b, (const uint8_t *)wire.data, wire.len);
    FUZZ_CHECK(same(&b.msgs, &a->msgs));
    FUZZ_CHECK(!chat_ws_engine_closing(b.e) && chat_ws_engine_want_read(b.e));
    chat_buf_dispose(&wire);
    run_dispose(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint16_t seed = (uint16_t)(data[0] | data[1] << 8);
    data += 2;
    size -= 2;
    size_t max = (seed & 2) ? CHAT_WS_MAX_MESSAGE : 100;
    bool echo = (seed & 4) != 0;

    /* The handshake checks over the same bytes. */
    (void)chat_ws_key_valid((const char *)data, size);
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    char *comma = memchr(s, '\n', size);
    if (comma) {
        *comma = '\0';
        /* An origin is allowed by a list that holds it. */
        const char *origin = comma + 1;
        if (chat_ws_origin_allowed(s, origin) == false)
            FUZZ_CHECK(s[strspn(s, " \t,")] != '\0');
    }
    free(s);

    run_t whole, parts;
    run_init(&whole, max, echo);
    run_init(&parts, max, echo);
    feed(&whole, data, size);
    fuzz_split_t sp;
    fuzz_split_init(&sp, seed, size);
    size_t n, off = 0;
    while ((n = fuzz_split_next(&sp)) > 0) {
        feed(&parts, data + off, n);
        off += n;
    }
    FUZZ_CHECK(same(&whole.msgs, &parts.msgs));
    FUZZ_CHECK(same(&whole.echoed, &parts.echoed));
    FUZZ_CHECK(same(&whole.out, &parts.out));
    FUZZ_CHECK(chat_ws_engine_close_code(whole.e) == chat_ws_engine_close_code(parts.e));
    FUZZ_CHECK(chat_ws_engine_want_read(whole.e) == chat_ws_engine_want_read(parts.e));
    FUZZ_CHECK(chat_ws_engine_finished(whole.e) == chat_ws_engine_finished(parts.e));
    check_output(&whole);
    check_reframed(&whole, seed);
    run_dispose(&whole);
    run_dispose(&parts);
    return 0;
}
