/*
 * chatd start-up and shutdown: reads the configuration, raises the file
 * descriptor limit, creates what the workers share, starts one worker per
 * core (worker.c), and on SIGTERM/SIGINT stops them gracefully within the
 * shutdown timeout. `chatd migrate` applies the schema.
 */
#include "worker.h"
#include "cache/shared.h"
#include "chat/keys.h"
#include "core/alloc.h"
#include "core/config.h"
#include "core/drain.h"
#include "core/log.h"
#include "db/migrate.h"

#include <signal.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define CHATD_VERSION "0.1.0"

static chat_config_t cfg;
static chat_shared_t shared;
static chat_worker_t **workers;
static uv_loop_t *main_loop;
static uv_async_t worker_done;
static _Atomic int workers_running;

/* On a worker's thread, after its loop ended. */
static void worker_exited(void *arg)
{
    atomic_fetch_sub(&workers_running, 1);
    uv_async_send(&worker_done);
}

static void stop_workers(void)
{
    for (int i = 0; i < shared.nworkers; i++)
        chat_worker_stop(workers[i]);
}

static uv_signal_t sigterm, sigint;
static uv_timer_t shutdown_timer, drain_timer;
static int shutting_down;

static void shutdown_timeout_cb(uv_timer_t *t)
{
    chat_log_warn("event=shutdown_timeout timeout_ms=%d in_flight_abandoned=1",
                  cfg.shutdown_timeout_ms);
    _exit(0);
}

static void shut_down(const char *signame)
{
    if (shutting_down)
        return;
    shutting_down = 1;
    uv_timer_stop(&drain_timer);
    chat_log_info("event=shutdown signal=%s", signame);
    uv_timer_start(&shutdown_timer, shutdown_timeout_cb, (uint64_t)cfg.shutdown_timeout_ms, 0);
    uv_unref((uv_handle_t *)&shutdown_timer);
    stop_workers();
}

static void drain_done_cb(uv_timer_t *t)
{
    shut_down("drained");
}

/* The first signal drains for CHATD_DRAIN_MS (/readyz 503, everything else
 * served) when that is set, then shuts down; a second one shuts down at once. */
static void signal_cb(uv_signal_t *s, int signum)
{
    const char *name = signum == SIGTERM ? "SIGTERM" : "SIGINT";
    if (shutting_down)
        return;
    if (chat_drain_active() || cfg.drain_ms <= 0) {
        shut_down(name);
        return;
    }
    chat_drain_begin();
    chat_log_info("event=drain signal=%s drain_ms=%d", name, cfg.drain_ms);
    uv_timer_start(&drain_timer, drain_done_cb, (uint64_t)cfg.drain_ms, 0);
}

static void worker_done_cb(uv_async_t *h)
{
    if (atomic_load(&workers_running) > 0)
        return;
    uv_close((uv_handle_t *)&worker_done, NULL);
    uv_close((uv_handle_t *)&sigterm, NULL);
    uv_close((uv_handle_t *)&sigint, NULL);
    uv_close((uv_handle_t *)&shutdown_timer, NULL);
    uv_close((uv_handle_t *)&drain_timer, NULL);
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

static int cmd_migrate(const char *last)
{
    const char *url = cfg.database_url_direct ? cfg.database_url_direct : cfg.database_url;
    char err[512] = "";
    int n = chat_db_migrate_to(url, last, err, sizeof err);
    if (n < 0) {
        chat_log_error("event=migrate_failed message=\"%s\"", err);
        return 1;
    }
    chat_log_info("event=migrate_done applied=%d", n);
    return 0;
}

/* A rate limit as its setting reads: "20/s:40", or "0". */
static const char *rate_text(const chat_config_rate_t *r, char *buf, size_t cap)
{
    if (r->rate == 0)
        return "0";
    snprintf(buf, cap, "%d/%s:%d", r->rate, r->period_s == 1 ? "s" : "min", r->burst);
    return buf;
}

static void log_rate_limits(void)
{
    if (chat_log_level > CHAT_LOG_INFO)
        return;
    char rs[32], rr[32], ru[32];
    chat_log_write(
        CHAT_LOG_INFO, "event=rate_limits send=%s request=%s signup=%s counted_in=%s",
        rate_text(&cfg.rate_send, rs, sizeof rs), rate_text(&cfg.rate_request, rr, sizeof rr),
        rate_text(&cfg.rate_signup, ru, sizeof ru), cfg.enable_redis_cache ? "redis" : "process");
}

static int serve(void)
{
    if (chat_alloc_policy_init() != 0)
        chat_log_debug("event=alloc_policy_refused");
    raise_fd_limit();
    signal(SIGPIPE, SIG_IGN);
    int nworkers = cfg.workers > 0 ? cfg.workers : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (nworkers < 1)
        nworkers = 1;
    if (nworkers > cfg.db_pool_size)
        nworkers = cfg.db_pool_size; /* every worker needs at least one connection */

    shared.cache = chat_cache_shared_create(chat_keys_kind_labels, CHAT_KEYS_NKINDS);
    /* Without a cache every read goes to the database: report it as bypassed. */
    chat_cache_shared_set_bypass(shared.cache, cfg.cache_bypass || !cfg.enable_redis_cache);
    main_loop = uv_default_loop();
    uv_async_init(main_loop, &worker_done, worker_done_cb);
    uv_signal_init(main_loop, &sigterm);
    uv_signal_init(main_loop, &sigint);
    uv_signal_start(&sigterm, signal_cb, SIGTERM);
    uv_signal_start(&sigint, signal_cb, SIGINT);
    uv_timer_init(main_loop, &shutdown_timer);
    uv_timer_init(main_loop, &drain_timer);

    shared.cfg = &cfg;
    shared.nworkers = nworkers;
    shared.hub = chat_hub_create(nworkers);
    shared.rate = chat_ratelimit_shared_create(&cfg);
    log_rate_limits();
    chat_fanout_origin_new(shared.origin);
    shared.on_worker_exit = worker_exited;
    workers = chat_calloc((size_t)nworkers, sizeof *workers);
    atomic_store(&workers_running, nworkers);
    int failed = 0;
    for (int i = 0; i < nworkers; i++) {
        int bind_error = 0;
        workers[i] = chat_worker_start(&shared, i, &bind_error);
        if (bind_error && !failed) {
            chat_log_error("event=listen_failed host=%s port=%d error=\"%s\"", cfg.listen_host,
                           cfg.listen_port, uv_strerror(bind_error));
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
        chat_worker_join(workers[i]);
    uv_loop_close(main_loop);
    chat_hub_destroy(shared.hub);
    chat_cache_shared_destroy(shared.cache);
    chat_ratelimit_shared_destroy(shared.rate);
    free(workers);
    chat_log_info("event=stopped");
    return failed ? 1 : 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: chatd            serve the API (configured by the environment)\n"
               "       chatd migrate    apply database migrations and exit\n"
               "       chatd migrate --to VERSION\n"
               "                        apply them up to VERSION (e.g. 002_op_ids) only\n"
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
    bool migrate = argc >= 2 && !strcmp(argv[1], "migrate");
    const char *last = NULL;
    if (migrate && argc == 4 && !strcmp(argv[2], "--to"))
        last = argv[3];
    else if ((migrate && argc != 2) || (!migrate && argc != 1)) {
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
    int rc = migrate ? cmd_migrate(last) : serve();
    chat_config_dispose(&cfg);
    return rc;
}
