/*
 * Unit tests of api/body.c and api/stream_frame.c, the decoders of the REST
 * bodies and of the stream's client messages (also fuzzed by tests/fuzz):
 * the order of the checks, the refusals and their messages, what an error
 * frame echoes, and which frames end the stream's first wait.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "api/body.h"
#include "api/stream_frame.h"
#include "core/error.h"

#include <string.h>

static int body(chat_api_body_kind_t kind, const char *text, chat_api_body_t *b, char *why)
{
    why[0] = '\0';
    return chat_api_body_decode(kind, text, strlen(text), b, why);
}

static void test_bodies_decoded(void **state)
{
    char why[CHAT_API_WHY_MAX];
    chat_api_body_t b;
    assert_int_equal(body(CHAT_API_BODY_SIGNUP, "{\"name\":\"alice\"}", &b, why), 0);
    assert_int_equal(b.text_len, 5);
    assert_memory_equal(b.text, "alice", 5);
    chat_api_body_dispose(&b);
    assert_null(b.text);

    assert_int_equal(body(CHAT_API_BODY_CONV, "{\"title\":\"t\",\"member_ids\":[3,4]}", &b, why),
                     0);
    assert_int_equal(b.n_ids, 2);
    assert_int_equal(b.ids[1], 4);
    chat_api_body_dispose(&b);

    assert_int_equal(body(CHAT_API_BODY_SEND, "{\"body\":\"hi\",\"client_msg_id\":\"m\"}", &b, why),
                     0);
    assert_string_equal(b.client_msg_id, "m");
    chat_api_body_dispose(&b);

    assert_int_equal(body(CHAT_API_BODY_READ, "{\"seq\":0}", &b, why), 0);
    assert_int_equal(b.id, 0);
    chat_api_body_dispose(&b);

    assert_int_equal(body(CHAT_API_BODY_BYPASS, "{\"enabled\":false}", &b, why), 0);
    assert_false(b.enabled);
    chat_api_body_dispose(&b);
}

static void test_bodies_refused_in_order(void **state)
{
    char why[CHAT_API_WHY_MAX];
    chat_api_body_t b;
    /* The object first, then the fields in the contract's order, 400 before 422. */
    assert_int_equal(body(CHAT_API_BODY_SIGNUP, "[1]", &b, why), CHAT_EBADREQUEST);
    assert_string_equal(why, "the body must be a JSON object");
    assert_null(b._json);
    assert_int_equal(body(CHAT_API_BODY_CONV, "{\"title\":\"\",\"member_ids\":\"x\"}", &b, why),
                     CHAT_EINVALID);
    assert_string_equal(why, "title must be 1 to 200 characters long");
    assert_int_equal(body(CHAT_API_BODY_CONV, "{\"title\":\"t\",\"member_ids\":[0]}", &b, why),
                     CHAT_EINVALID);
    assert_null(b.ids);
    assert_int_equal(body(CHAT_API_BODY_MEMBER, "{\"user_id\":\"3\"}", &b, why), CHAT_EBADREQUEST);
    assert_string_equal(why, "user_id must be an integer");
    assert_int_equal(body(CHAT_API_BODY_READ, "{\"seq\":-1}", &b, why), CHAT_EINVALID);
    assert_string_equal(why, "seq must not be negative");
    assert_int_equal(body(CHAT_API_BODY_READ, "{\"seq\":1.5}", &b, why), CHAT_EBADREQUEST);
    assert_string_equal(why, "seq must be an integer");
    assert_int_equal(body(CHAT_API_BODY_BYPASS, "{\"enabled\":1}", &b, why), CHAT_EBADREQUEST);
    assert_string_equal(why, "enabled must be true or false");
    assert_int_equal(body(CHAT_API_BODY_EDIT, "{\"body\":\"a\",\"body\":\"b\"}", &b, why),
                     CHAT_EBADREQUEST);
    assert_string_equal(why, "the body has a duplicate object key");
}

static int frame(const char *text, chat_api_frame_t *f, char *why)
{
    why[0] = '\0';
    return chat_api_frame_decode(text, strlen(text), false, f, why);
}

static void test_frames(void **state)
{
    char why[CHAT_API_WHY_MAX];
    chat_api_frame_t f;
    assert_int_equal(
        frame("{\"type\":\"send\",\"conversation_id\":7,\"body\":\"hi\",\"client_msg_id\":\"c\"}",
              &f, why),
        0);
    assert_int_equal(f.type, CHAT_API_FRAME_SEND);
    assert_true(f.release);
    assert_int_equal(f.conv_id, 7);
    assert_string_equal(f.client_msg_id, "c");
    chat_api_frame_dispose(&f);

    /* A refused send still echoes its client_msg_id. */
    assert_int_equal(
        frame("{\"type\":\"send\",\"conversation_id\":0,\"body\":\"hi\",\"client_msg_id\":\"c\"}",
              &f, why),
        CHAT_EINVALID);
    assert_int_equal(f.type, CHAT_API_FRAME_NONE);
    assert_string_equal(f.client_msg_id, "c");
    chat_api_frame_dispose(&f);
    /* ... even one too long to be valid, when it is short enough to echo. */
    char text[512];
    snprintf(
        text, sizeof text,
        "{\"type\":\"send\",\"conversation_id\":1,\"body\":\"b\",\"client_msg_id\":\"%0100d\"}", 0);
    assert_int_equal(frame(text, &f, why), CHAT_EINVALID);
    assert_int_equal(f.client_msg_id_len, 100);
    chat_api_frame_dispose(&f);

    /* A resume does not end the first wait; its keys are ids without leading zeros. */
    assert_int_equal(frame("{\"type\":\"resume\",\"positions\":{\"7\":12,\"9\":0}}", &f, why), 0);
    assert_false(f.release);
    assert_int_equal(f.n_positions, 2);
    assert_int_equal(f.convs[1], 9);
    assert_int_equal(f.revs[0], 12);
    chat_api_frame_dispose(&f);
    assert_int_equal(frame("{\"type\":\"resume\",\"positions\":{\"07\":1}}", &f, why),
                     CHAT_EBADREQUEST);
    assert_string_equal(why, "positions keys must be conversation ids");
    assert_false(f.release);
    chat_api_frame_dispose(&f);

    assert_int_equal(frame("{\"type\":7}", &f, why), CHAT_EBADREQUEST);
    assert_string_equal(why, "type must be a string");
    assert_true(f.release);
    chat_api_frame_dispose(&f);
    assert_int_equal(frame("{\"type\":\"dance\"}", &f, why), CHAT_EBADREQUEST);
    assert_string_equal(why, "unknown message type");
    chat_api_frame_dispose(&f);
    assert_int_equal(frame("not json", &f, why), CHAT_EBADREQUEST);
    assert_false(f.release);
    chat_api_frame_dispose(&f);
    assert_int_equal(chat_api_frame_decode("{}", 2, true, &f, why), CHAT_EBADREQUEST);
    assert_string_equal(why, "messages must be JSON text");
    chat_api_frame_dispose(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bodies_decoded),
        cmocka_unit_test(test_bodies_refused_in_order),
        cmocka_unit_test(test_frames),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
