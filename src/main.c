/*
 * chatd start-up and shutdown: reads the configuration, raises the file
 * descriptor limit, starts one worker thread per core (each with its own
 * loop, listener, database pool and API), and on SIGTERM/SIGINT stops them
 * gracefully within the shutdown timeout. `chatd migrate` applies the schema.
 */
#include "api/api.h"
#include "cache/cache.h"
#include "chat/chat.h"
#include "chat/stream.h"
#include "core/alloc.h"
#include "core/config.h"
#include "core/log.h"
#include "core/metrics.h"
#include "db/migrate.h"
#include "db/pool.h"
#include "net/http.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define CHATD_VERSION "0.1.0"

typedef struct worker {
    int index;
    pthread_t thread;
    uv_loop_t loop;
    uv_async_t stop;
    chat_http_server_t *http;
    chat_ctx_t ctx;
    chat_api_t api;
    int pool_size;
    int direct_size;
    int bind_error; /* set before start_sem is posted */
    int stopping;
} worker_t;

static chat_config_t cfg;
static _Atomic int open_connections;
static worker_t *workers;
static int nworkers;
static uv_sem_t start_sem;
static uv_loop_t *main_loop;
static uv_async_t worker_done;
static _Atomic int workers_running;
static chat_stream_hub_t *stream_hub;

static void worker_pool_closed(void *arg)
{
    worker_t *w = arg;
    w->ctx.db = NULL;
    uv_close((uv_handle_t *)&w->stop, NULL);
}

static void worker_cache_closed(void *arg)
{
    worker_t *w = arg;
    w->ctx.cache = NULL;
    chat_db_close(w->ctx.db, worker_pool_closed, w);
}

static void worker_stream_closed(void *arg)
{
    worker_t *w = arg;
    w->ctx.stream = NULL;
    if (w->ctx.cache)
        chat_cache_close(w->ctx.cache, worker_cache_closed, w);
    else
        worker_cache_closed(w);
}

static void worker_http_closed(void *arg)
{
    worker_t *w = arg;
    w->http = NULL;
    /* Every WebSocket is closed with the server: the stream has no subscriber left. */
    chat_stream_close(w->ctx.stream, worker_stream_closed, w);
}

static void worker_stop_cb(uv_async_t *h)
{
    worker_t *w = h->data;
    if (w->stopping)
        return;
    w->stopping = 1;
    if (w->http)
        chat_http_server_close(w->http, worker_http_closed, w);
    else
        worker_http_closed(w);
}

/* ---- the database path: which workers are on the direct fallback ---- */

static _Atomic int workers_on_direct;
static chat_metric_t *path_pooler, *path_direct;

static void path_switched(int to_direct, void *arg)
{
    (void)arg;
    int n = atomic_fetch_add(&workers_on_direct, to_direct ? 1 : -1) + (to_direct ? 1 : -1);
    chat_metric_set(path_direct, n > 0 ? 1 : 0);
    chat_metric_set(path_pooler, n < nworkers ? 1 : 0);
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    uv_loop_init(&w->loop);
    uv_async_init(&w->loop, &w->stop, worker_stop_cb);
    w->stop.data = w;
    chat_db_path_config_t pc = {
        .pooler =
            {
                .conninfo = cfg.database_url,
                .size = w->pool_size,
                .queue_timeout_ms = cfg.db_queue_timeout_ms,
                .connect_timeout_ms = cfg.db_connect_timeout_ms,
                .path_name = "pooler",
            },
        .direct_conninfo = cfg.database_url_direct,
        .direct_size = w->direct_size,
        .error_percent = cfg.failover_error_percent,
        .queue_wait_ms = cfg.failover_queue_wait_ms,
        .window_ms = cfg.failover_window_ms,
        .hold_ms = cfg.failover_hold_ms,
        .worker = w->index,
        .on_switch = path_switched,
    };
    w->ctx.loop = &w->loop;
    w->ctx.db = chat_db_create(&w->loop, &pc);
    w->ctx.auth = chat_auth_cache_create();
    w->ctx.members = chat_members_create();
    w->ctx.fill_delay_ms = cfg.cache_fill_delay_ms;
    if (cfg.enable_redis_cache) {
        chat_cache_config_t cc = {
            .redis_url = cfg.redis_url,
            .cmd_timeout_ms = cfg.cache_timeout_ms,
            .poll_info = w->index == 0,
            .local_bytes = (size_t)cfg.cache_local_mb * 1024 * 1024 / (size_t)nworkers,
        };
        char err[256];
        w->ctx.cache = chat_cache_create(&w->loop, &cc, err, sizeof err);
        if (!w->ctx.cache)
            chat_log_error("event=cache_disabled reason=\"%s\"", err);
    }
    w->ctx.stream =
        chat_stream_create(stream_hub, w->index, &w->loop,
                           cfg.enable_redis_cache ? cfg.redis_url : NULL, cfg.cache_timeout_ms);
    w->api.ctx = &w->ctx;
    w->api.cfg = &cfg;
    chat_http_server_config_t hc = {
        .host = cfg.listen_host,
        .port = cfg.listen_port,
        .header_timeout_ms = cfg.header_timeout_ms,
        .idle_timeout_ms = cfg.idle_timeout_ms,
        .max_head = 16 * 1024,
        .max_body = 64 * 1024,
        .max_pending_output = 1024 * 1024,
        .ws_ping_interval_ms = cfg.ws_ping_interval_ms,
        .open_connections = &open_connections,
        .max_connections = cfg.max_connections,
        .handler = chat_api_handle,
        .handler_data = &w->api,
    };
    int err = 0;
    w->http = chat_http_server_create(&w->loop, &hc, &err);
    w->bind_error = w->http ? 0 : (err ? err : -1);
    uv_sem_post(&start_sem);
    if (!w->http)
        worker_stop_cb(&w->stop);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    chat_auth_cache_destroy(w->ctx.auth);
    chat_members_destroy(w->ctx.members);
    if (uv_loop_close(&w->loop) != 0)
        chat_log_warn("event=worker_loop_busy worker=%d", w->index);
    atomic_fetch_sub(&workers_running, 1);
    uv_async_send(&worker_done);
    return NULL;
}

static void stop_workers(void)
{
    for (int i = 0; i < nworkers; i++)
        uv_async_send(&workers[i].stop);
}

static uv_signal_t sigterm, sigint;
static uv_timer_t shutdown_timer;
static int shutting_down;

static void shutdown_timeout_cb(uv_timer_t *t)
{
    chat_log_warn("event=shutdown_timeout timeout_ms=%d in_flight_abandoned=1",
                  cfg.shutdown_timeout_ms);
    _exit(0);
}

static void signal_cb(uv_signal_t *s, int signum)
{
    if (shutting_down)
        return;
    shutting_down = 1;
    chat_log_info("event=shutdown signal=%s", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    uv_timer_start(&shutdown_timer, shutdown_timeout_cb, (uint64_t)cfg.shutdown_timeout_ms, 0);
    uv_unref((uv_handle_t *)&shutdown_timer);
    stop_workers();
}

static void worker_done_cb(uv_async_t *h)
{
    if (atomic_load(&workers_running) > 0)
        return;
    uv_close((uv_handle_t *)&worker_done, NULL);
    uv_close((uv_handle_t *)&sigterm, NULL);
    uv_close((uv_handle_t *)&sigint, NULL);
    uv_close((uv_handle_t *)&shutdown_timer, NULL);
}

static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    rlim_t want = (rlim_t)cfg.max_connections + (rlim_t)cfg.db_pool_size + 256;
    rlim_t target = want;
    if (rl.rlim_max != RLIM_INFINITY && target > rl.rlim_max)
        target = rl.rlim_max;
    if (rl.rlim_cur < target) {
        rl.rlim_cur = target;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur < want)
        chat_log_warn("event=fd_limit_low soft=%llu hard=%llu wanted=%llu "
                      "hint=\"raise the hard limit (ulimit -Hn, LimitNOFILE) to hold "
                      "CHATD_MAX_CONNECTIONS clients\"",
                      (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max,
                      (unsigned long long)want);
    else
        chat_log_info("event=fd_limit soft=%llu", (unsigned long long)rl.rlim_cur);
}

static const char *env_get(const char *name)
{
    return getenv(name);
}

static int cmd_migrate(void)
{
    const char *url = cfg.database_url_direct ? cfg.database_url_direct : cfg.database_url;
    char err[512] = "";
    int n = chat_db_migrate(url, err, sizeof err);
    if (n < 0) {
        chat_log_error("event=migrate_failed message=\"%s\"", err);
        return 1;
    }
    chat_log_info("event=migrate_done applied=%d", n);
    return 0;
}

static int serve(void)
{
    raise_fd_limit();
    signal(SIGPIPE, SIG_IGN);
    nworkers = cfg.workers > 0 ? cfg.workers : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (nworkers < 1)
        nworkers = 1;
    if (nworkers > cfg.db_pool_size)
        nworkers = cfg.db_pool_size; /* every worker needs at least one connection */

    chat_metric_family_t *path =
        chat_metrics_gauge("chatd_db_path", "1 on the database path in use");
    path_pooler = chat_metric_series(path, "path=\"pooler\"");
    path_direct = chat_metric_series(path, "path=\"direct\"");
    chat_metric_set(path_pooler, 1);
    chat_metric_set(path_direct, 0);

    /* Without a cache every read goes to the database: report it as bypassed. */
    chat_cache_set_bypass(cfg.cache_bypass || !cfg.enable_redis_cache);
    main_loop = uv_default_loop();
    uv_async_init(main_loop, &worker_done, worker_done_cb);
    uv_signal_init(main_loop, &sigterm);
    uv_signal_init(main_loop, &sigint);
    uv_signal_start(&sigterm, signal_cb, SIGTERM);
    uv_signal_start(&sigint, signal_cb, SIGINT);
    uv_timer_init(main_loop, &shutdown_timer);
    uv_sem_init(&start_sem, 0);

    stream_hub = chat_stream_hub_create(nworkers);
    workers = chat_calloc((size_t)nworkers, sizeof *workers);
    atomic_store(&workers_running, nworkers);
    int failed = 0;
    for (int i = 0; i < nworkers; i++) {
        worker_t *w = &workers[i];
        w->index = i;
        w->pool_size = cfg.db_pool_size / nworkers + (i < cfg.db_pool_size % nworkers);
        w->direct_size =
            cfg.db_pool_size_direct / nworkers + (i < cfg.db_pool_size_direct % nworkers);
        if (w->direct_size < 1)
            w->direct_size = 1;
        pthread_create(&w->thread, NULL, worker_main, w);
        uv_sem_wait(&start_sem);
        if (w->bind_error && !failed) {
            chat_log_error("event=listen_failed host=%s port=%d error=\"%s\"", cfg.listen_host,
                           cfg.listen_port, uv_strerror(w->bind_error));
            failed = 1;
        }
    }
    if (failed) {
        shutting_down = 1;
        stop_workers();
    } else {
        chat_log_info("event=listening host=%s port=%d workers=%d db_pool_size=%d "
                      "max_connections=%d version=%s",
                      cfg.listen_host, cfg.listen_port, nworkers, cfg.db_pool_size,
                      cfg.max_connections, CHATD_VERSION);
    }
    uv_run(main_loop, UV_RUN_DEFAULT);
    for (int i = 0; i < nworkers; i++)
        pthread_join(workers[i].thread, NULL);
    uv_loop_close(main_loop);
    uv_sem_destroy(&start_sem);
    chat_stream_hub_destroy(stream_hub);
    free(workers);
    chat_log_info("event=stopped");
    return failed ? 1 : 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: chatd            serve the API (configured by the environment)\n"
               "       chatd migrate    apply database migrations and exit\n"
               "       chatd --version\n");
}

int main(int argc, char **argv)
{
    if (argc > 1 && (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V"))) {
        printf("chatd %s\n", CHATD_VERSION);
        return 0;
    }
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        usage(stdout);
        return 0;
    }
    if (argc > 2 || (argc == 2 && strcmp(argv[1], "migrate") != 0)) {
        usage(stderr);
        return 2;
    }
    char err[512];
    if (chat_config_load(&cfg, env_get, err, sizeof err) != 0) {
        chat_log_error("event=config_error message=\"%s\"", err);
        chat_config_dispose(&cfg);
        return 2;
    }
    chat_log_level = cfg.log_level;
    int rc = argc == 2 ? cmd_migrate() : serve();
    chat_config_dispose(&cfg);
    return rc;
}
