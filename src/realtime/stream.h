/*
 * A worker's realtime stream: the sockets of this worker, the conversations
 * they follow, and the order of every conversation's events on them.
 *
 * Each socket follows the conversations of its user from a rev on. For each
 * conversation followed here the worker keeps `head`, the last rev it
 * delivered in order, and the last few frames; an event is written to a
 * socket only when its rev is exactly one above the socket's position, so a
 * socket never sees a gap, a repeat or a reorder. An event that arrives
 * ahead of its turn is held, and after a short grace the missing ones are
 * read from the database — one read per worker and conversation, shared by
 * every socket waiting at the same position ("fill"). A socket behind the
 * worker (a resume, a socket that joined late) catches up from the kept
 * frames or from the database the same way. Events reach a worker from the
 * process (hub.h) and from other instances (fanout.h); when a conversation's
 * channel is subscribed (again, after an outage) its rev is read from the
 * database, so what Redis lost is filled.
 */
#ifndef CHAT_REALTIME_STREAM_H
#define CHAT_REALTIME_STREAM_H

#include "core/alloc.h"
#include "realtime/fanout.h"
#include "realtime/hub.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct chat_stream chat_stream_t;
/** A subscriber of the stream: a socket of a user. */
typedef struct chat_stream_sub chat_stream_sub_t;

/** Writes one frame to a socket; the bytes are valid during the call. */
typedef void (*chat_stream_write_cb)(const char *frame, size_t len, void *ud);
/**
 * A subscriber's memberships are read (err 0): from now on every event of
 * its conversations is written to it. err != 0: they could not be read;
 * the caller unsubscribes (it may do so inside this call).
 */
typedef void (*chat_stream_ready_cb)(int err, void *ud);

/** The answer of a loader's events read: an /events body, or err != 0. */
typedef void (*chat_stream_events_cb)(int err, const char *body, size_t len, void *arg);
/** The answer of a loader's revs read: n (conversation, rev) pairs, or err != 0. */
typedef void (*chat_stream_revs_cb)(int err, const int64_t *convs, const int64_t *revs, size_t n,
                                    void *arg);

/** The reads the stream needs from the chat domain; each answers once, on the loop. */
typedef struct chat_stream_loader {
    /** Events of conv above after (at most limit), read as its member user. */
    void (*events)(void *ctx, int64_t conv, int64_t user, int64_t after, int limit,
                   chat_stream_events_cb cb, void *arg);
    /** The current rev of n conversations (those that exist). */
    void (*revs)(void *ctx, const int64_t *convs, size_t n, chat_stream_revs_cb cb, void *arg);
    /** The conversations of user and the current rev of each. */
    void (*memberships)(void *ctx, int64_t user, chat_stream_revs_cb cb, void *arg);
    void *ctx;
} chat_stream_loader_t;

typedef struct chat_stream_config {
    chat_hub_t *hub; /* the process's hub, from chat_hub_create */
    int index;       /* this worker's index in the hub */
    /** NULL (cache disabled): delivery stays within the process. Copied. */
    const char *redis_url;
    /** This instance on Redis (chat_fanout_origin_new), the same on every worker. Copied. */
    const char *origin;
    /** Deadline of a SPUBLISH in ms. */
    int cmd_timeout_ms;
    /** Fault injection for tests: see chat_fanout_config_t.drop_every. */
    int drop_every;
    chat_stream_loader_t loader;
} chat_stream_config_t;

/** Most events missing for one conversation that a resume sends; more: a reset. */
#define CHAT_STREAM_RESET_OVER 1000

/** On the worker's thread: creates its stream on loop and joins the hub. */
chat_stream_t *chat_stream_create(uv_loop_t *loop, const chat_stream_config_t *cfg) CHAT_MUSTCHECK;

/**
 * Leaves the hub and closes the Redis connections; done(arg) runs from the
 * loop once every handle is closed, and the stream is freed then. Every
 * subscriber must be gone.
 */
void chat_stream_close(chat_stream_t *s, void (*done)(void *arg), void *arg);

/**
 * Registers a socket of user_id; frames go to cb(…, ud), which must not
 * unsubscribe from inside. The stream reads the user's memberships (once
 * the user's channel is subscribed, so that no "added" can slip between),
 * follows each conversation from its rev then, and calls ready(0, ud) (or
 * ready(err, ud)), later, from the loop. A conversation the user joins
 * later is followed from the rev it was joined at. Frames may come before
 * ready ("added", "removed", "read"): the caller keeps them in order.
 */
chat_stream_sub_t *chat_stream_subscribe(chat_stream_t *s, int64_t user_id, chat_stream_write_cb cb,
                                         chat_stream_ready_cb ready, void *ud);

/** Removes and frees a subscriber: no callback after this. */
void chat_stream_unsubscribe(chat_stream_t *s, chat_stream_sub_t *sub);

/** True when the socket follows conv (its user is a member, as far as the stream knows). */
bool chat_stream_follows(const chat_stream_sub_t *sub, int64_t conv);

/**
 * A client's resume: for each of the n (conversation, position) pairs the
 * socket follows, every event above the position is written, in order,
 * (a "reset" frame instead when more than CHAT_STREAM_RESET_OVER are
 * missing), then one "resumed" frame with the positions reached. Pairs of
 * conversations not followed are left out. Before the memberships are read
 * the resume waits for them. Returns CHAT_ECONFLICT while an earlier
 * resume of this socket is not finished (nothing done).
 */
int chat_stream_resume(chat_stream_t *s, chat_stream_sub_t *sub, const int64_t *convs,
                       const int64_t *positions, size_t n);

/**
 * The client spoke (a frame other than "resume"): a new socket's events,
 * held until its first frame or for a moment after ready (so that a resume
 * sent right after the upgrade starts from the client's positions with no
 * repeat and in order), flow from now on.
 */
void chat_stream_release(chat_stream_t *s, chat_stream_sub_t *sub);

/**
 * A typing frame of the socket's user in conv, to the other members'
 * sockets: dropped silently unless the socket follows conv and the user
 * was not shown typing there in the last 3 s (on this instance).
 */
void chat_stream_typing(chat_stream_t *s, chat_stream_sub_t *sub, int64_t conv);

/**
 * After a committed change: hands m to the sockets of this process and
 * publishes it to the other instances. s may be NULL: nothing happens.
 */
void chat_stream_publish(chat_stream_t *s, const chat_rt_msg_t *m);

/** One event of an /events body: its rev and its bytes (a span of the body). */
typedef struct chat_stream_event_span {
    int64_t rev;
    const char *data;
    size_t len;
} chat_stream_event_span_t;

/**
 * The events of an /events body as chatd writes it (a cached page may come
 * from Redis), in order: *out gets the rev and the bytes of every element
 * of "events" (the caller frees *out; NULL when none); returns the body's
 * "rev" (the conversation's), or -1 when the body is not one chatd wrote.
 * Pure: the stream's fills use it, and tests/fuzz.
 */
int64_t chat_stream_events_parse(const char *body, size_t len, chat_stream_event_span_t **out,
                                 size_t *nout);

#endif
