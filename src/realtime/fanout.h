/*
 * The realtime fan-out between chatd instances sharing one Redis: frames for
 * users are PUBLISHed on one channel tagged with this instance's origin, and
 * a SUBSCRIBE connection hands the frames of every other origin to a
 * callback. One fanout per worker; it knows frames and user ids, not sockets.
 */
#ifndef CHAT_REALTIME_FANOUT_H
#define CHAT_REALTIME_FANOUT_H

#include "core/alloc.h"
#include "core/buf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/** Redis pub/sub channel shared by every instance. */
#define CHAT_FANOUT_CHANNEL "chatd:stream"

/** Room for an origin and its NUL (a UUID text is 36 characters). */
#define CHAT_FANOUT_ORIGIN_LEN 48

typedef struct chat_fanout chat_fanout_t;

/**
 * A frame of another instance for members (n >= 1 user ids); members and
 * frame are valid during the call only.
 */
typedef void (*chat_fanout_frame_cb)(const int64_t *members, size_t n, const char *frame,
                                     size_t len, void *arg);

typedef struct chat_fanout_config {
    /** redis://host:port[/db] (the db does not matter to pub/sub). Copied. */
    const char *redis_url;
    /** This instance, from chat_fanout_origin_new; the same on every worker. Copied. */
    const char *origin;
    /** Deadline of a PUBLISH in ms; <= 0 means the client's default. */
    int cmd_timeout_ms;
} chat_fanout_config_t;

/**
 * Writes a new random origin (UUID text) into out; without randomness, the
 * process id and the time, which still tell instances on one host apart.
 * Never contains a space or a newline.
 */
void chat_fanout_origin_new(char out[CHAT_FANOUT_ORIGIN_LEN]);

/**
 * Registers chatd_stream_pubsub_total{direction="published"|"received"} (at
 * 0) once per process. chat_fanout_create does it; a process without Redis
 * calls it so that the counters are rendered all the same.
 */
void chat_fanout_metrics_register(void);

/**
 * Creates worker's fanout on loop and starts connecting (publisher and
 * subscriber, each reconnecting by itself). cb(…, arg) runs on loop for each
 * frame of another origin received while subscribed. Never fails: a part
 * whose URL cannot be used is logged (event=stream_redis_disabled) and left
 * out, a fanout without publisher publishes nothing, one without subscriber
 * receives nothing. Free with chat_fanout_close.
 */
chat_fanout_t *chat_fanout_create(uv_loop_t *loop, const chat_fanout_config_t *cfg,
                                  chat_fanout_frame_cb cb, void *arg) CHAT_MUSTCHECK;

/**
 * PUBLISHes frame for members (n >= 1) to the other instances. At most once:
 * returns 0 when the command was queued (its outcome is not awaited and a
 * failure is not repeated), CHAT_EDOWN when Redis is not usable now (nothing
 * sent: the other instances miss this frame).
 */
int chat_fanout_publish(chat_fanout_t *f, const int64_t *members, size_t n, const char *frame,
                        size_t len);

/**
 * True while frames go both ways: the publisher is healthy (a PUBLISH would
 * be sent now) and the subscription is confirmed by Redis.
 */
bool chat_fanout_ready(const chat_fanout_t *f);

/**
 * Closes both connections; no frame callback runs after this returns.
 * done(arg) (may be NULL) runs once every handle is closed (possibly before
 * this returns, when there were none), and the fanout is freed then.
 */
void chat_fanout_close(chat_fanout_t *f, void (*done)(void *arg), void *arg);

/* ---- the payload codec: "<origin> <id>,<id>,...\n<frame>" ---- */

/**
 * Appends the payload of frame for members to out. origin holds neither a
 * space nor a newline; n >= 1; ids are positive.
 */
void chat_fanout_payload_encode(chat_buf_t *out, const char *origin, const int64_t *members,
                                size_t n, const char *frame, size_t len);

/** A decoded payload; origin and frame point into the payload, members is owned. */
typedef struct chat_fanout_payload {
    const char *origin;
    size_t origin_len;
    int64_t *members; /* n ids, freed by chat_fanout_payload_dispose */
    size_t n;
    const char *frame;
    size_t len;
} chat_fanout_payload_t;

/**
 * Decodes a payload. Returns 0, or CHAT_EINVAL with nothing allocated for a
 * payload that is not whole: no space or no newline, an empty origin, an
 * empty id list, or an id that is not a positive decimal int64 (sign, empty
 * item, stray byte, past INT64_MAX). The frame may be empty.
 */
int chat_fanout_payload_decode(const char *p, size_t len,
                               chat_fanout_payload_t *out) CHAT_MUSTCHECK;

/** Frees the members of a payload decoded with success. */
void chat_fanout_payload_dispose(chat_fanout_payload_t *pl);

#endif
