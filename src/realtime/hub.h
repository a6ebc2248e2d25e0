/*
 * The realtime hub of one process: realtime messages (msg.h) carried to
 * every worker of the process and handed to each worker's callback there.
 * It knows messages, not sockets or Redis: routing them to sockets is the
 * stream's (stream.h); other instances' messages come in through fanout.h.
 * Also the process-wide throttle of typing frames.
 */
#ifndef CHAT_REALTIME_HUB_H
#define CHAT_REALTIME_HUB_H

#include "core/alloc.h"
#include "realtime/msg.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/** The process-wide part: one mailbox per worker. Created by main.c. */
typedef struct chat_hub chat_hub_t;
/** The part of one worker: its mailbox handle. */
typedef struct chat_hub_worker chat_hub_worker_t;

/** Takes one message on the worker's loop; m (and its frame) is valid during the call. */
typedef void (*chat_hub_cb)(const chat_rt_msg_t *m, void *arg);

/** Creates the hub for nworkers workers (>= 1), before they start. */
chat_hub_t *chat_hub_create(int nworkers) CHAT_MUSTCHECK;

/** Frees the hub. Every worker part must be closed; messages in flight are freed with it. */
void chat_hub_destroy(chat_hub_t *hub);

/**
 * On the thread of loop: creates worker index's part (0 <= index <
 * nworkers) and starts taking the messages posted to it: cb(m, arg) on
 * loop. Free with chat_hub_worker_close.
 */
chat_hub_worker_t *chat_hub_worker_create(chat_hub_t *hub, int index, uv_loop_t *loop,
                                          chat_hub_cb cb, void *arg) CHAT_MUSTCHECK;

/**
 * Leaves the hub: messages posted from now on skip this worker, queued ones
 * are dropped. done(arg) (may be NULL) runs from the loop once the wake-up
 * handle is closed, and the part is freed then.
 */
void chat_hub_worker_close(chat_hub_worker_t *hw, void (*done)(void *arg), void *arg);

/**
 * From the thread of hw: hands m to every worker of the process, this one
 * included, each from its own loop a moment later (never from inside this
 * call). m and its frame are copied once and shared read-only.
 */
void chat_hub_post(chat_hub_worker_t *hw, const chat_rt_msg_t *m);

/**
 * The typing throttle, shared by the workers: true when user may be shown
 * typing in conv now (nothing shown for them there in the last interval_ms),
 * and then remembered. Thread-safe.
 */
bool chat_hub_typing_allow(chat_hub_t *hub, int64_t user, int64_t conv, uint64_t now_ms,
                           uint64_t interval_ms);

#endif
