/*
 * A worker's realtime stream (see stream.h): its hub part and, when Redis is
 * configured, its fanout, whose frames from other instances go straight to
 * this worker's subscribers. A send is PUBLISHed first, then posted to the
 * workers of this process, so the other instances hear of it as early.
 */
#include "realtime/stream.h"

#include <stdlib.h>

struct chat_stream {
    chat_hub_worker_t *hw;
    chat_fanout_t *fanout; /* NULL: within the process only */
    int closing;           /* parts still closing */
    void (*done)(void *arg);
    void *done_arg;
};

/* A frame of another instance: this worker's sockets only (each worker subscribes). */
static void remote_frame_cb(const int64_t *members, size_t n, const char *frame, size_t len,
                            void *arg)
{
    chat_stream_t *s = arg;
    chat_hub_deliver(s->hw, members, n, frame, len);
}

chat_stream_t *chat_stream_create(uv_loop_t *loop, const chat_stream_config_t *cfg)
{
    chat_stream_t *s = chat_calloc(1, sizeof *s);
    s->hw = chat_hub_worker_create(cfg->hub, cfg->index, loop);
    chat_fanout_metrics_register(); /* rendered with or without Redis, as ever */
    if (cfg->redis_url) {
        chat_fanout_config_t fc = {
            .redis_url = cfg->redis_url,
            .origin = cfg->origin,
            .cmd_timeout_ms = cfg->cmd_timeout_ms,
        };
        s->fanout = chat_fanout_create(loop, &fc, remote_frame_cb, s);
    }
    return s;
}

static void part_closed(void *arg)
{
    chat_stream_t *s = arg;
    if (--s->closing > 0)
        return;
    void (*done)(void *) = s->done;
    void *darg = s->done_arg;
    free(s);
    if (done)
        done(darg);
}

void chat_stream_close(chat_stream_t *s, void (*done)(void *arg), void *arg)
{
    s->done = done;
    s->done_arg = arg;
    s->closing = 1 + (s->fanout != NULL);
    if (s->fanout)
        chat_fanout_close(s->fanout, part_closed, s);
    chat_hub_worker_close(s->hw, part_closed, s);
}

chat_stream_sub_t *chat_stream_subscribe(chat_stream_t *s, int64_t user_id,
                                         chat_stream_deliver_cb cb, void *ud)
{
    return chat_hub_subscribe(s->hw, user_id, cb, ud);
}

void chat_stream_unsubscribe(chat_stream_t *s, chat_stream_sub_t *sub)
{
    chat_hub_unsubscribe(s->hw, sub);
}

void chat_stream_publish(chat_stream_t *s, const int64_t *members, size_t n, const char *frame,
                         size_t len)
{
    if (!s || n == 0)
        return;
    if (s->fanout)
        (void)chat_fanout_publish(s->fanout, members, n, frame, len); /* at most once */
    chat_hub_post(s->hw, members, n, frame, len);
}
