/*
 * The realtime hub of one process: frames (opaque bytes) for users, carried
 * to every worker and handed to the subscribers of those users there. It
 * knows users and frames, not chat messages, sockets or Redis; the frames of
 * other instances come in through fanout.h.
 */
#ifndef CHAT_REALTIME_HUB_H
#define CHAT_REALTIME_HUB_H

#include "core/alloc.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/** The process-wide part: one mailbox per worker. Created by main.c. */
typedef struct chat_hub chat_hub_t;
/** The part of one worker: its mailbox handle and its subscribers by user. */
typedef struct chat_hub_worker chat_hub_worker_t;
/** One subscriber: a socket of a user, as far as the hub knows. */
typedef struct chat_hub_sub chat_hub_sub_t;

/**
 * Takes one frame for a subscriber; the bytes are valid during the call
 * only. The callback may unsubscribe its own subscriber, no other.
 */
typedef void (*chat_hub_deliver_cb)(const char *frame, size_t len, void *ud);

/** Creates the hub for nworkers workers (>= 1), before they start. */
chat_hub_t *chat_hub_create(int nworkers) CHAT_MUSTCHECK;

/**
 * Frees the hub. Every worker part must be closed (its done callback run);
 * frames still in flight are freed with it.
 */
void chat_hub_destroy(chat_hub_t *hub);

/**
 * On the thread of loop: creates worker index's part (0 <= index < nworkers,
 * one part per index at a time) and starts taking the frames posted to it.
 * Free with chat_hub_worker_close.
 */
chat_hub_worker_t *chat_hub_worker_create(chat_hub_t *hub, int index,
                                          uv_loop_t *loop) CHAT_MUSTCHECK;

/**
 * Leaves the hub: frames posted from now on skip this worker, frames queued
 * for it are dropped (freed now). Every subscriber must be gone. done(arg)
 * (may be NULL) runs from the loop once the wake-up handle is closed, and the
 * part is freed then.
 */
void chat_hub_worker_close(chat_hub_worker_t *hw, void (*done)(void *arg), void *arg);

/**
 * Registers a subscriber of user_id: cb(frame, len, ud) runs on this
 * worker's loop for every frame addressed to that user. A user may have
 * several subscribers (one per socket); each gets every frame once.
 * Returns the subscriber, owned by the hub until chat_hub_unsubscribe.
 */
chat_hub_sub_t *chat_hub_subscribe(chat_hub_worker_t *hw, int64_t user_id, chat_hub_deliver_cb cb,
                                   void *ud);

/** Removes and frees a subscriber: its callback never runs after this. */
void chat_hub_unsubscribe(chat_hub_worker_t *hw, chat_hub_sub_t *sub);

/**
 * From the thread of hw: hands frame to the subscribers of members (n user
 * ids) on every worker of the process, this one included, each from its own
 * loop a moment later (never from inside this call). frame and members are
 * copied once and shared read-only by the workers.
 */
void chat_hub_post(chat_hub_worker_t *hw, const int64_t *members, size_t n, const char *frame,
                   size_t len);

/**
 * Hands frame to the subscribers of members on this worker only, before
 * returning (the frames of other instances, which every worker receives by
 * itself). Returns the number of subscribers that got it.
 */
size_t chat_hub_deliver(chat_hub_worker_t *hw, const int64_t *members, size_t n, const char *frame,
                        size_t len);

/** Number of subscribers of this worker. */
size_t chat_hub_worker_subscribers(const chat_hub_worker_t *hw);

#endif
