/*
 * A worker's wiring and shutdown chain (see worker.h). Everything a worker
 * creates lives on its loop and is closed, in reverse order of need, from
 * that loop: the HTTP server first (no new requests, WebSockets closed), then
 * the rate limiter (no check is left), the stream (no subscriber is left),
 * the cache, the read replicas, the database path, and the stop handle, after which the loop
 * ends by itself.
 */
#include "worker.h"
#include "api/api.h"
#include "cache/cache.h"
#include "chat/chat.h"
#include "chat/keys.h"
#include "core/alloc.h"
#include "core/log.h"
#include "db/path.h"
#include "db/replica.h"
#include "net/http.h"
#include "realtime/stream.h"

#include <pthread.h>
#include <stdlib.h>

struct chat_worker {
    int index;
    chat_shared_t *sh;
    pthread_t thread;
    uv_loop_t loop;
    uv_async_t stop;
    uv_sem_t started;
    chat_http_server_t *http;
    chat_ctx_t ctx;
    chat_api_t api;
    int bind_error; /* set before started is posted */
    int stopping;
};

static void pool_closed(void *arg)
{
    chat_worker_t *w = arg;
    w->ctx.db = NULL;
    uv_close((uv_handle_t *)&w->stop, NULL);
}

static void replicas_closed(void *arg)
{
    chat_worker_t *w = arg;
    w->ctx.replicas = NULL;
    chat_db_close(w->ctx.db, pool_closed, w);
}

static void cache_closed(void *arg)
{
    chat_worker_t *w = arg;
    w->ctx.cache = NULL;
    chat_db_replicas_close(w->ctx.replicas, replicas_closed, w);
}

static void stream_closed(void *arg)
{
    chat_worker_t *w = arg;
    w->ctx.stream = NULL;
    if (w->ctx.cache)
        chat_cache_close(w->ctx.cache, cache_closed, w);
    else
        cache_closed(w);
}

static void rate_closed(void *arg)
{
    chat_worker_t *w = arg;
    w->api.rate = NULL;
    /* Every WebSocket is closed with the server: the stream has no subscriber left. */
    chat_stream_close(w->ctx.stream, stream_closed, w);
}

static void http_closed(void *arg)
{
    chat_worker_t *w = arg;
    w->http = NULL;
    /* No request is left to check a limit. */
    chat_ratelimit_close(w->api.rate, rate_closed, w);
}

static void stop_cb(uv_async_t *h)
{
    chat_worker_t *w = h->data;
    if (w->stopping)
        return;
    w->stopping = 1;
    if (w->http)
        chat_http_server_close(w->http, http_closed, w);
    else
        http_closed(w);
}

/* This worker's share of a pool of total connections (at least one). */
static int share_of(int total, int nworkers, int index)
{
    int n = total / nworkers + (index < total % nworkers);
    return n < 1 ? 1 : n;
}

static void wire(chat_worker_t *w)
{
    const chat_config_t *cfg = w->sh->cfg;
    int nworkers = w->sh->nworkers;
    chat_db_path_config_t pc = {
        .pooler =
            {
                .conninfo = cfg->database_url,
                .size = share_of(cfg->db_pool_size, nworkers, w->index),
                .queue_timeout_ms = cfg->db_queue_timeout_ms,
                .connect_timeout_ms = cfg->db_connect_timeout_ms,
                .path_name = "pooler",
            },
        .direct_conninfo = cfg->database_url_direct,
        .direct_size = share_of(cfg->db_pool_size_direct, nworkers, w->index),
        .error_percent = cfg->failover_error_percent,
        .queue_wait_ms = cfg->failover_queue_wait_ms,
        .window_ms = cfg->failover_window_ms,
        .hold_ms = cfg->failover_hold_ms,
        .held_max_ms = cfg->db_hold_ms,
        .worker = w->index,
    };
    w->ctx.loop = &w->loop;
    w->ctx.db = chat_db_create(&w->loop, &pc);
    chat_db_replicas_config_t rpc = {
        .urls = cfg->database_url_replicas,
        .size = share_of(cfg->db_pool_size_replica, nworkers, w->index),
        .max_lag_ms = cfg->replica_max_lag_ms,
        .poll_ms = cfg->replica_poll_ms,
        .queue_timeout_ms = cfg->db_queue_timeout_ms,
        .connect_timeout_ms = cfg->db_connect_timeout_ms,
        .worker = w->index,
    };
    w->ctx.replicas = chat_db_replicas_create(&w->loop, &rpc);
    w->ctx.tokens = chat_auth_memo_create();
    w->ctx.members = chat_members_memo_create();
    w->ctx.unknown_tokens = chat_auth_unknown_memo_create();
    w->ctx.non_members = chat_non_members_memo_create();
    w->ctx.reads = chat_flights_create();
    w->ctx.fill_delay_ms = cfg->cache_fill_delay_ms;
    w->ctx.read_wait_ms = cfg->db_queue_timeout_ms;
    if (cfg->enable_redis_cache) {
        chat_cache_config_t cc = {
            .shared = w->sh->cache,
            .redis_url = cfg->redis_url,
            .cmd_timeout_ms = cfg->cache_timeout_ms,
            .poll_info = w->index == 0,
            .local_bytes = (size_t)cfg->cache_local_mb * 1024 * 1024 / (size_t)nworkers,
            .version_prefix = CHAT_KEYS_VERSION_PREFIX,
            .guard_prefix = CHAT_KEYS_MEMBERS_VERSION_PREFIX,
            .scope_suffix = CHAT_KEYS_SCOPE_SUFFIX,
        };
        char err[256];
        w->ctx.cache = chat_cache_create(&w->loop, &cc, err, sizeof err);
        if (!w->ctx.cache)
            chat_log_error("event=cache_disabled reason=\"%s\"", err);
    }
    chat_stream_config_t sc = {
        .hub = w->sh->hub,
        .index = w->index,
        .redis_url = cfg->enable_redis_cache ? cfg->redis_url : NULL,
        .origin = w->sh->origin,
        .cmd_timeout_ms = cfg->cache_timeout_ms,
        .drop_every = cfg->fault_drop_events,
        .loader = chat_stream_reads(&w->ctx),
    };
    w->ctx.stream = chat_stream_create(&w->loop, &sc);
    w->api.ctx = &w->ctx;
    w->api.cfg = cfg;
    w->api.cache_shared = w->sh->cache;
    chat_ratelimit_config_t rc = {
        .shared = w->sh->rate,
        .redis_url = cfg->enable_redis_cache ? cfg->redis_url : NULL,
        .cmd_timeout_ms = cfg->cache_timeout_ms,
    };
    w->api.rate = chat_ratelimit_create(&w->loop, &rc);
    chat_http_server_config_t hc = {
        .host = cfg->listen_host,
        .port = cfg->listen_port,
        .header_timeout_ms = cfg->header_timeout_ms,
        .body_timeout_ms = cfg->body_timeout_ms,
        .idle_timeout_ms = cfg->idle_timeout_ms,
        .max_head = 16 * 1024,
        .max_body = 64 * 1024,
        .max_pending_output = (size_t)cfg->max_pending_output_kb * 1024,
        .tcp_notsent_lowat = cfg->tcp_notsent_lowat_kb * 1024,
        .tcp_sndbuf = cfg->tcp_sndbuf_kb * 1024,
        .ws_ping_interval_ms = cfg->ws_ping_interval_ms,
        .open_connections = &w->sh->open_connections,
        .unsent_bytes = &w->sh->unsent_bytes,
        .max_unsent_bytes = (size_t)cfg->max_pending_output_total_mb * 1024 * 1024,
        .max_connections = cfg->max_connections,
        .handler = chat_api_handle,
        .handler_data = &w->api,
    };
    int err = 0;
    w->http = chat_http_server_create(&w->loop, &hc, &err);
    w->bind_error = w->http ? 0 : (err ? err : -1);
}

static void *worker_main(void *arg)
{
    chat_worker_t *w = arg;
    uv_loop_init(&w->loop);
    uv_async_init(&w->loop, &w->stop, stop_cb);
    w->stop.data = w;
    wire(w);
    int failed = w->bind_error != 0;
    uv_sem_post(&w->started); /* w->bind_error is read by the starter from here on */
    if (failed)
        stop_cb(&w->stop);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    chat_memo_destroy(w->ctx.tokens);
    chat_memo_destroy(w->ctx.members);
    chat_memo_destroy(w->ctx.unknown_tokens);
    chat_memo_destroy(w->ctx.non_members);
    chat_flights_destroy(w->ctx.reads);
    if (uv_loop_close(&w->loop) != 0)
        chat_log_warn("event=worker_loop_busy worker=%d", w->index);
    if (w->sh->on_worker_exit)
        w->sh->on_worker_exit(w->sh->exit_arg);
    return NULL;
}

chat_worker_t *chat_worker_start(chat_shared_t *sh, int index, int *bind_error)
{
    chat_worker_t *w = chat_calloc(1, sizeof *w);
    w->index = index;
    w->sh = sh;
    uv_sem_init(&w->started, 0);
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
        chat_log_error("event=worker_thread_failed worker=%d", index);
        abort();
    }
    uv_sem_wait(&w->started);
    *bind_error = w->bind_error;
    return w;
}

void chat_worker_stop(chat_worker_t *w)
{
    uv_async_send(&w->stop);
}

void chat_worker_join(chat_worker_t *w)
{
    pthread_join(w->thread, NULL);
    uv_sem_destroy(&w->started);
    free(w);
}
