/*
 * The hiredis-libuv binding (see adapter.h). libuv reports POLLERR (a refused
 * connect, a reset connection) as status < 0 and stops the poll; hiredis is
 * then made to read or write anyway so that it meets the error itself: a
 * refused connect does not look like a connect timeout and a reset
 * connection does not hang until its commands time out.
 */
#include "redis/adapter.h"

#include <stdlib.h>

typedef struct adapter {
    uv_poll_t poll;
    uv_prepare_t flush;    /* writes hiredis's buffer before the loop polls */
    redisAsyncContext *ac; /* NULL once hiredis cleaned up */
    chat_redis_adapter_hooks_t hooks;
    int events;     /* what the poll handle waits for */
    int want_write; /* hiredis has bytes to write */
    int nopen;      /* handles not yet closed */
} adapter_t;

static void poll_cb(uv_poll_t *h, int status, int events);

/* Only a change reaches libuv: every uv_poll_start costs epoll_ctl calls. */
static void update(adapter_t *a, int add, int del)
{
    int events = (a->events | add) & ~del;
    if (events == a->events)
        return;
    a->events = events;
    if (a->events)
        uv_poll_start(&a->poll, a->events, poll_cb);
    else
        uv_poll_stop(&a->poll);
}

/* hiredis wrote what it could: wait for writability only if the socket filled up. */
static void wrote(adapter_t *a)
{
    if (!a->ac)
        return;
    if (!a->want_write) {
        update(a, 0, UV_WRITABLE);
        if (a->hooks.written)
            a->hooks.written(a->ac, a->hooks.arg);
    } else {
        update(a, UV_WRITABLE, 0);
    }
}

static void poll_cb(uv_poll_t *h, int status, int events)
{
    adapter_t *a = h->data;
    if (status < 0)
        events = a->events; /* libuv has stopped the poll: let hiredis find out why */
    if (a->ac && (events & UV_READABLE))
        redisAsyncHandleRead(a->ac);
    if (a->ac && (events & UV_WRITABLE)) {
        redisAsyncHandleWrite(a->ac);
        wrote(a);
    }
    if (status < 0 && a->ac && a->events)
        uv_poll_start(&a->poll, a->events, poll_cb);
}

/*
 * Commands of one pass of the loop are written together just before it
 * polls, straight to the socket, which is almost always writable: no poll
 * for writability, no epoll_ctl per command batch.
 */
static void prepare_cb(uv_prepare_t *h)
{
    adapter_t *a = h->data;
    uv_prepare_stop(&a->flush);
    if (!a->ac || !a->want_write)
        return;
    redisAsyncHandleWrite(a->ac);
    wrote(a);
}

static void add_read(void *p)
{
    update(p, UV_READABLE, 0);
}

static void del_read(void *p)
{
    update(p, 0, UV_READABLE);
}

static void add_write(void *p)
{
    adapter_t *a = p;
    a->want_write = 1;
    if (a->ac && (a->ac->c.flags & REDIS_CONNECTED))
        uv_prepare_start(&a->flush, prepare_cb);
    else
        update(a, UV_WRITABLE, 0); /* writable = the connect finished */
}

static void del_write(void *p)
{
    adapter_t *a = p;
    a->want_write = 0;
    uv_prepare_stop(&a->flush);
    update(a, 0, UV_WRITABLE);
}

static void handle_closed(uv_handle_t *h)
{
    adapter_t *a = h->data;
    if (--a->nopen > 0)
        return;
    chat_redis_adapter_hooks_t hooks = a->hooks;
    free(a);
    if (hooks.closed)
        hooks.closed(hooks.arg);
}

static void cleanup(void *p)
{
    adapter_t *a = p;
    if (a->ac == NULL)
        return; /* hiredis may clean up twice */
    a->ac = NULL;
    uv_close((uv_handle_t *)&a->poll, handle_closed);
    uv_close((uv_handle_t *)&a->flush, handle_closed);
}

int chat_redis_adapter_attach(uv_loop_t *loop, redisAsyncContext *ac,
                              const chat_redis_adapter_hooks_t *hooks)
{
    adapter_t *a = chat_calloc(1, sizeof *a);
    int rc = uv_poll_init(loop, &a->poll, ac->c.fd);
    if (rc != 0) {
        free(a);
        return rc;
    }
    uv_prepare_init(loop, &a->flush);
    a->poll.data = a;
    a->flush.data = a;
    a->ac = ac;
    a->hooks = *hooks;
    a->nopen = 2;
    ac->ev.data = a;
    ac->ev.addRead = add_read;
    ac->ev.delRead = del_read;
    ac->ev.addWrite = add_write;
    ac->ev.delWrite = del_write;
    ac->ev.cleanup = cleanup;
    return 0;
}

bool chat_redis_adapter_flush(redisAsyncContext *ac)
{
    adapter_t *a = ac->ev.data; /* outlives ac: freed when its handles have closed */
    if (a->want_write)
        redisAsyncHandleWrite(ac);
    return a->ac != NULL && !a->want_write;
}
