/*
 * Fuzzes the decoder of the stream's client messages (api/stream_frame.c):
 * "send", "typing" and "resume" frames. A refusal carries a message and at
 * most an echoable client_msg_id (text of at most 256 bytes); an accepted
 * frame has ids and lengths within the contract, ends the stream's first
 * wait unless it is a resume, and written out again as canonical JSON it
 * decodes to the same frame.
 */
#include "api/stream_frame.h"
#include "core/buf.h"
#include "core/error.h"
#include "core/json.h"
#include "fuzz.h"

#include <string.h>

static void check(const chat_api_frame_t *f, int err, const char *why)
{
    if (f->client_msg_id) {
        FUZZ_CHECK(strlen(f->client_msg_id) == f->client_msg_id_len);
        FUZZ_CHECK(f->client_msg_id_len <= 256);
        FUZZ_CHECK(chat_utf8_count(f->client_msg_id, f->client_msg_id_len) >= 0);
    }
    if (err) {
        FUZZ_CHECK(err == CHAT_EBADREQUEST || err == CHAT_EINVALID);
        FUZZ_CHECK(why[0] && strlen(why) < CHAT_API_WHY_MAX);
        FUZZ_CHECK(f->type == CHAT_API_FRAME_NONE);
        return;
    }
    switch (f->type) {
    case CHAT_API_FRAME_SEND: {
        FUZZ_CHECK(f->release && f->conv_id >= 1);
        FUZZ_CHECK(f->body && strlen(f->body) == f->body_len);
        long n = chat_utf8_count(f->body, f->body_len);
        FUZZ_CHECK(n >= 1 && n <= CHAT_API_BODY_MAX);
        if (f->client_msg_id) {
            n = chat_utf8_count(f->client_msg_id, f->client_msg_id_len);
            FUZZ_CHECK(n >= 1 && n <= CHAT_API_CLIENT_MSG_ID_MAX);
        }
        break;
    }
    case CHAT_API_FRAME_TYPING:
        FUZZ_CHECK(f->release && f->conv_id >= 1);
        break;
    case CHAT_API_FRAME_RESUME:
        FUZZ_CHECK(!f->release);
        for (size_t i = 0; i < f->n_positions; i++) {
            FUZZ_CHECK(f->convs[i] >= 1 && f->revs[i] >= 0);
            for (size_t k = 0; k < i; k++)
                FUZZ_CHECK(f->convs[k] != f->convs[i]);
        }
        break;
    default:
        FUZZ_CHECK(!"an accepted frame of no type");
    }
}

static void encode(const chat_api_frame_t *f, chat_buf_t *out)
{
    static const char *const names[] = {"", "send", "typing", "resume"};
    chat_buf_printf(out, "{\"type\":\"%s\"", names[f->type]);
    if (f->type == CHAT_API_FRAME_SEND || f->type == CHAT_API_FRAME_TYPING)
        chat_buf_printf(out, ",\"conversation_id\":%lld", (long long)f->conv_id);
    if (f->body) {
        chat_buf_puts(out, ",\"body\":");
        chat_json_put_str(out, f->body, f->body_len);
    }
    if (f->client_msg_id) {
        chat_buf_puts(out, ",\"client_msg_id\":");
        chat_json_put_str(out, f->client_msg_id, f->client_msg_id_len);
    }
    if (f->type == CHAT_API_FRAME_RESUME) {
        chat_buf_puts(out, ",\"positions\":{");
        for (size_t i = 0; i < f->n_positions; i++)
            chat_buf_printf(out, "%s\"%lld\":%lld", i ? "," : "", (long long)f->convs[i],
                            (long long)f->revs[i]);
        chat_buf_putc(out, '}');
    }
    chat_buf_putc(out, '}');
}

static bool same(const chat_api_frame_t *a, const chat_api_frame_t *b)
{
    if (a->type != b->type || a->release != b->release || a->conv_id != b->conv_id ||
        a->n_positions != b->n_positions || a->body_len != b->body_len ||
        a->client_msg_id_len != b->client_msg_id_len || (a->body == NULL) != (b->body == NULL) ||
        (a->client_msg_id == NULL) != (b->client_msg_id == NULL))
        return false;
    if (a->body && memcmp(a->body, b->body, a->body_len))
        return false;
    if (a->client_msg_id && memcmp(a->client_msg_id, b->client_msg_id, a->client_msg_id_len))
        return false;
    for (size_t i = 0; i < a->n_positions; i++)
        if (a->convs[i] != b->convs[i] || a->revs[i] != b->revs[i])
            return false;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char why[CHAT_API_WHY_MAX];
    chat_api_frame_t f;
    why[0] = '\0';
    int err = chat_api_frame_decode((const char *)data, size, false, &f, why);
    check(&f, err, why);
    if (!err) {
        chat_buf_t out = CHAT_BUF_INIT;
        encode(&f, &out);
        chat_api_frame_t g;
        FUZZ_CHECK(chat_api_frame_decode(out.data, out.len, false, &g, why) == 0);
        FUZZ_CHECK(same(&f, &g));
        chat_api_frame_dispose(&g);
        chat_buf_dispose(&out);
    }
    chat_api_frame_dispose(&f);
    /* The same bytes in a binary frame: refused, nothing held. */
    FUZZ_CHECK(chat_api_frame_decode((const char *)data, size, true, &f, why) == CHAT_EBADREQUEST);
    FUZZ_CHECK(f.type == CHAT_API_FRAME_NONE && !f.release && !f._json);
    chat_api_frame_dispose(&f);
    return 0;
}
