/*
 * Fuzzes the decoding of every REST endpoint's JSON body (api/body.c over
 * the field rules of api/validate.c): the input is decoded as each kind of
 * body. A refusal is a 400 or a 422 with a message and leaves nothing
 * behind; an accepted body has its fields within the contract's limits,
 * and written out again as canonical JSON it decodes to the same fields.
 * A send and an edit share the body rule, so they agree on it.
 */
#include "api/body.h"
#include "core/buf.h"
#include "core/error.h"
#include "core/json.h"
#include "fuzz.h"

#include <string.h>

static void check_text(const chat_api_body_t *b, long max)
{
    FUZZ_CHECK(b->text && strlen(b->text) == b->text_len);
    long n = chat_utf8_count(b->text, b->text_len);
    FUZZ_CHECK(n >= 1 && n <= max);
}

/* The canonical JSON of a decoded body. */
static void encode(chat_api_body_kind_t kind, const chat_api_body_t *b, chat_buf_t *out)
{
    static const char *const text_field[] = {
        [CHAT_API_BODY_SIGNUP] = "name",
        [CHAT_API_BODY_CONV] = "title",
        [CHAT_API_BODY_SEND] = "body",
        [CHAT_API_BODY_EDIT] = "body",
    };
    chat_buf_putc(out, '{');
    if (b->text) {
        chat_buf_printf(out, "\"%s\":", text_field[kind]);
        chat_json_put_str(out, b->text, b->text_len);
        chat_buf_putc(out, ',');
    }
    if (b->client_msg_id) {
        chat_buf_puts(out, "\"client_msg_id\":");
        chat_json_put_str(out, b->client_msg_id, b->client_msg_id_len);
        chat_buf_putc(out, ',');
    }
    if (kind == CHAT_API_BODY_CONV) {
        chat_buf_puts(out, "\"member_ids\":[");
        for (size_t i = 0; i < b->n_ids; i++)
            chat_buf_printf(out, "%s%lld", i ? "," : "", (long long)b->ids[i]);
        chat_buf_puts(out, "],");
    }
    if (kind == CHAT_API_BODY_MEMBER)
        chat_buf_printf(out, "\"user_id\":%lld,", (long long)b->id);
    if (kind == CHAT_API_BODY_READ)
        chat_buf_printf(out, "\"seq\":%lld,", (long long)b->id);
    if (kind == CHAT_API_BODY_BYPASS)
        chat_buf_printf(out, "\"enabled\":%s,", b->enabled ? "true" : "false");
    chat_buf_puts(out, "\"ignored\":null}");
}

static bool same_body(const chat_api_body_t *a, const chat_api_body_t *b)
{
    if ((a->text == NULL) != (b->text == NULL) ||
        (a->client_msg_id == NULL) != (b->client_msg_id == NULL))
        return false;
    if (a->text && (a->text_len != b->text_len || memcmp(a->text, b->text, a->text_len)))
        return false;
    if (a->client_msg_id && (a->client_msg_id_len != b->client_msg_id_len ||
                             memcmp(a->client_msg_id, b->client_msg_id, a->client_msg_id_len)))
        return false;
    if (a->id != b->id || a->enabled != b->enabled || a->n_ids != b->n_ids)
        return false;
    return a->n_ids == 0 || memcmp(a->ids, b->ids, a->n_ids * sizeof *a->ids) == 0;
}

static int decode_one(chat_api_body_kind_t kind, const char *text, size_t len, chat_api_body_t *b)
{
    char why[CHAT_API_WHY_MAX];
    why[0] = '\0';
    int err = chat_api_body_decode(kind, text, len, b, why);
    if (err) {
        FUZZ_CHECK(err == CHAT_EBADREQUEST || err == CHAT_EINVALID);
        FUZZ_CHECK(why[0] != '\0' && strlen(why) < CHAT_API_WHY_MAX);
        FUZZ_CHECK(!b->text && !b->ids && !b->client_msg_id && !b->_json);
        return err;
    }
    switch (kind) {
    case CHAT_API_BODY_SIGNUP:
        check_text(b, CHAT_API_NAME_MAX);
        break;
    case CHAT_API_BODY_CONV:
        check_text(b, CHAT_API_TITLE_MAX);
        FUZZ_CHECK(b->n_ids <= CHAT_API_MEMBERS_MAX && (b->ids || b->n_ids == 0));
        for (size_t i = 0; i < b->n_ids; i++)
            FUZZ_CHECK(b->ids[i] >= 1);
        break;
    case CHAT_API_BODY_MEMBER:
        FUZZ_CHECK(b->id >= 1);
        break;
    case CHAT_API_BODY_SEND:
    case CHAT_API_BODY_EDIT:
        check_text(b, CHAT_API_BODY_MAX);
        if (b->client_msg_id) {
            FUZZ_CHECK(kind == CHAT_API_BODY_SEND);
            FUZZ_CHECK(strlen(b->client_msg_id) == b->client_msg_id_len);
            long n = chat_utf8_count(b->client_msg_id, b->client_msg_id_len);
            FUZZ_CHECK(n >= 1 && n <= CHAT_API_CLIENT_MSG_ID_MAX);
        }
        break;
    case CHAT_API_BODY_READ:
        FUZZ_CHECK(b->id >= 0);
        break;
    default:
        break;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    int errs[CHAT_API_BODY_KINDS];
    for (int k = 0; k < CHAT_API_BODY_KINDS; k++) {
        chat_api_body_t b;
        errs[k] = decode_one((chat_api_body_kind_t)k, text, size, &b);
        if (errs[k])
            continue;
        chat_buf_t out = CHAT_BUF_INIT;
        encode((chat_api_body_kind_t)k, &b, &out);
        chat_api_body_t again;
        FUZZ_CHECK(decode_one((chat_api_body_kind_t)k, out.data, out.len, &again) == 0);
        FUZZ_CHECK(same_body(&b, &again));
        chat_api_body_dispose(&again);
        chat_api_body_dispose(&b);
        FUZZ_CHECK(b.text == NULL && b._json == NULL);
        chat_buf_dispose(&out);
    }
    /* An edit checks the body as a send does, before the send's client_msg_id. */
    FUZZ_CHECK(errs[CHAT_API_BODY_EDIT] == 0 ||
               errs[CHAT_API_BODY_SEND] == errs[CHAT_API_BODY_EDIT]);
    if (errs[CHAT_API_BODY_SEND] == 0)
        FUZZ_CHECK(errs[CHAT_API_BODY_EDIT] == 0);
    /* Not a JSON object chatd takes: every kind refuses it alike. */
    json_t *j;
    char why[CHAT_API_WHY_MAX];
    if (chat_api_valid_object(text, size, "body", &j, why) != 0) {
        for (int k = 0; k < CHAT_API_BODY_KINDS; k++)
            FUZZ_CHECK(errs[k] == CHAT_EBADREQUEST);
    } else {
        json_decref(j);
    }
    return 0;
}
