/*
 * Binds a hiredis async context to a libuv loop: a poll handle on its socket
 * and a prepare handle that writes hiredis's buffer just before the loop
 * polls, so a batch of commands costs one write and no epoll_ctl. Used
 * instead of hiredis 0.14's adapters/libuv.h, which drops poll errors.
 */
#ifndef CHAT_REDIS_ADAPTER_H
#define CHAT_REDIS_ADAPTER_H

#include "core/alloc.h"

#include <hiredis/async.h>
#include <stdbool.h>
#include <uv.h>

typedef struct chat_redis_adapter_hooks {
    /**
     * hiredis's output buffer for ac was just written out entirely, by the
     * prepare hook or by the poll (not by chat_redis_adapter_flush, whose
     * caller learns it from the return value). May be NULL.
     */
    void (*written)(const redisAsyncContext *ac, void *arg);
    /**
     * Both libuv handles are closed, which happens only after hiredis freed
     * the context; the adapter is freed then. Runs once per attached context.
     * May be NULL.
     */
    void (*closed)(void *arg);
    void *arg;
} chat_redis_adapter_hooks_t;

/**
 * Attaches ac (connecting or connected) to loop; hooks is copied. From here
 * on hiredis drives the handles through ac->ev and closes them when it frees
 * the context (redisAsyncFree, or an error or disconnect inside hiredis).
 * Returns 0, or a libuv error when the socket cannot be polled: nothing is
 * attached then and the caller still owns ac.
 */
int chat_redis_adapter_attach(uv_loop_t *loop, redisAsyncContext *ac,
                              const chat_redis_adapter_hooks_t *hooks) CHAT_MUSTCHECK;

/**
 * Writes what hiredis holds for ac now instead of before the next poll.
 * Returns true when nothing is left to write and the context is still alive
 * (a write error makes hiredis free it during this call).
 */
bool chat_redis_adapter_flush(redisAsyncContext *ac);

#endif
