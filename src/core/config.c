/*
 * The settings table and its loader (see config.h).
 */
#include "core/config.h"
#include "core/alloc.h"
#include "core/log.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum type { T_STR, T_BOOL, T_INT, T_SIGNUP, T_LOGLEVEL, T_RATE };

struct row {
    chat_config_setting_t doc;
    enum type type;
    size_t offset;
    long min, max; /* T_INT */
};

#define OFF(f) offsetof(chat_config_t, f)

static const struct row rows[] = {
    {{"DATABASE_URL", "libpq URL of the pooler (PgBouncer, transaction mode)",
      "postgresql://chat@127.0.0.1:6432/chat"},
     T_STR,
     OFF(database_url),
     0,
     0},
    {{"DATABASE_URL_DIRECT", "libpq URL straight to PostgreSQL, the fallback path", NULL},
     T_STR,
     OFF(database_url_direct),
     0,
     0},
    {{"DATABASE_URL_REPLICAS",
      "comma-separated libpq URLs of streaming read replicas (each behind its pooler); cache "
      "misses of history, events, members and inbox go to one that has replayed the data's last "
      "acknowledged write",
      NULL},
     T_STR,
     OFF(database_url_replicas),
     0,
     0},
    {{"CHATD_DB_POOL_SIZE_REPLICA",
      "database connections per process to each replica (split across workers, at least one "
      "each)",
      "4"},
     T_INT,
     OFF(db_pool_size_replica),
     1,
     10000},
    {{"CHATD_REPLICA_MAX_LAG_MS",
      "a replica further behind than this (time since its last replayed commit while WAL "
      "waits) is not read until it catches up",
      "2000"},
     T_INT,
     OFF(replica_max_lag_ms),
     1,
     3600000},
    {{"CHATD_REPLICA_POLL_MS", "how often each worker reads each replica's replay position", "50"},
     T_INT,
     OFF(replica_poll_ms),
     10,
     60000},
    {{"REDIS_URL", "redis://host:port[/db] or redis+cluster://host:port[,host:port...]",
      "redis://127.0.0.1:6379"},
     T_STR,
     OFF(redis_url),
     0,
     0},
    {{"ENABLE_REDIS_CACHE", "true/false: use the Redis cache at all", "true"},
     T_BOOL,
     OFF(enable_redis_cache),
     0,
     0},
    {{"CACHE_BYPASS", "true serves every read from the database, cache untouched", "false"},
     T_BOOL,
     OFF(cache_bypass),
     0,
     0},
    {{"CHATD_LISTEN", "host:port to listen on", "127.0.0.1:3000"}, T_STR, OFF(listen), 0, 0},
    {{"CHATD_WORKERS", "worker threads (event loops) sharing the port; 0 = number of cores", "0"},
     T_INT,
     OFF(workers),
     0,
     256},
    {{"CHATD_DB_POOL_SIZE", "database connections per process (split across workers)", "20"},
     T_INT,
     OFF(db_pool_size),
     1,
     10000},
    {{"CHATD_DB_POOL_SIZE_DIRECT", "database connections per process on the direct path", "10"},
     T_INT,
     OFF(db_pool_size_direct),
     1,
     10000},
    {{"CHATD_FAILOVER_ERROR_PERCENT",
      "pooler error ratio (percent, over the window) that moves to the direct path; 0 = never",
      "1"},
     T_INT,
     OFF(failover_error_percent),
     0,
     100},
    {{"CHATD_FAILOVER_QUEUE_WAIT_MS",
      "pooler queue-wait p95 (over the window) that moves to the direct path; 0 = never", "1000"},
     T_INT,
     OFF(failover_queue_wait_ms),
     0,
     3600000},
    {{"CHATD_FAILOVER_WINDOW_MS", "window of the two failover thresholds", "10000"},
     T_INT,
     OFF(failover_window_ms),
     250,
     600000},
    {{"CHATD_FAILOVER_HOLD_MS", "pooler healthy this long before moving back to it", "5000"},
     T_INT,
     OFF(failover_hold_ms),
     250,
     3600000},
    {{"CHATD_DB_QUEUE_TIMEOUT_MS", "longest wait for a pool connection before 503", "120000"},
     T_INT,
     OFF(db_queue_timeout_ms),
     1,
     3600000},
    {{"CHATD_DB_CONNECT_TIMEOUT_MS", "longest time to open one database connection", "5000"},
     T_INT,
     OFF(db_connect_timeout_ms),
     100,
     600000},
    {{"CHATD_DB_HOLD_MS",
      "a request whose database connection failed is held and sent again for this long before "
      "503; 0 = never",
      "10000"},
     T_INT,
     OFF(db_hold_ms),
     0,
     3600000},
    {{"CHATD_MAX_CONNECTIONS", "client connections held at once", "20000"},
     T_INT,
     OFF(max_connections),
     1,
     1000000},
    {{"CHATD_HEADER_TIMEOUT_MS", "time a client has to send a full request head", "10000"},
     T_INT,
     OFF(header_timeout_ms),
     10,
     3600000},
    {{"CHATD_IDLE_TIMEOUT_MS",
      "a connection with nothing in flight closes this long after it became idle", "60000"},
     T_INT,
     OFF(idle_timeout_ms),
     10,
     86400000},
    {{"CHATD_BODY_TIMEOUT_MS", "time a client has to send a whole request body after its head",
      "20000"},
     T_INT,
     OFF(body_timeout_ms),
     10,
     3600000},
    {{"CHATD_MAX_PENDING_OUTPUT_KB",
      "answers of one connection not yet written (KiB) past which it gets no more", "1024"},
     T_INT,
     OFF(max_pending_output_kb),
     16,
     1048576},
    {{"CHATD_MAX_PENDING_OUTPUT_TOTAL_MB",
      "answers not yet written, all connections (MiB): past it one the socket does not take "
      "closes its connection; 0 = no budget",
      "256"},
     T_INT,
     OFF(max_pending_output_total_mb),
     0,
     1048576},
    {{"CHATD_TCP_NOTSENT_LOWAT_KB",
      "TCP_NOTSENT_LOWAT of client sockets (KiB): unsent bytes the kernel holds; 0 = system's",
      "128"},
     T_INT,
     OFF(tcp_notsent_lowat_kb),
     0,
     65536},
    {{"CHATD_TCP_SNDBUF_KB", "SO_SNDBUF of client sockets (KiB); 0 = the kernel's autotuning", "0"},
     T_INT,
     OFF(tcp_sndbuf_kb),
     0,
     65536},
    {{"CHATD_WS_PING_INTERVAL_MS",
      "a WebSocket client silent this long is pinged, and dropped if silent as long again",
      "30000"},
     T_INT,
     OFF(ws_ping_interval_ms),
     100,
     3600000},
    {{"CHATD_SHUTDOWN_TIMEOUT_MS", "longest graceful shutdown before exit", "10000"},
     T_INT,
     OFF(shutdown_timeout_ms),
     0,
     600000},
    {{"CHATD_DRAIN_MS",
      "on SIGTERM/SIGINT, /readyz answers 503 draining this long before the listeners close", "0"},
     T_INT,
     OFF(drain_ms),
     0,
     600000},
    {{"CHATD_SIGNUP", "open or closed (closed: only the admin token may sign users up)", "open"},
     T_SIGNUP,
     OFF(signup_open),
     0,
     0},
    {{"CHATD_ADMIN_TOKEN", "token for sign-up when closed and the cache admin endpoints", NULL},
     T_STR,
     OFF(admin_token),
     0,
     0},
    {{"CHATD_ALLOWED_ORIGINS",
      "comma-separated origins (scheme://host[:port]) whose pages may open the WebSocket "
      "stream; a handshake with another Origin gets 403; empty = any",
      NULL},
     T_STR,
     OFF(allowed_origins),
     0,
     0},
    {{"CHATD_CACHE_TIMEOUT_MS",
      "deadline of every Redis command; then the read goes to the database", "50"},
     T_INT,
     OFF(cache_timeout_ms),
     1,
     60000},
    {{"CHATD_CACHE_LOCAL_MB",
      "memory per process for the workers' copies of cached values (Redis still checks each use); "
      "0 = none",
      "64"},
     T_INT,
     OFF(cache_local_mb),
     0,
     65536},
    {{"CHATD_CACHE_FILL_DELAY_MS", "fault injection for tests: delay every cache fill by this",
      "0"},
     T_INT,
     OFF(cache_fill_delay_ms),
     0,
     600000},
    {{"CHATD_FAULT_DROP_EVENTS",
      "fault injection for tests: drop every stream event from another instance whose rev is a "
      "multiple of this, as if pub/sub had lost it; 0 = none",
      "0"},
     T_INT,
     OFF(fault_drop_events),
     0,
     1000000},
    {{"CHATD_RATE_SEND",
      "sends and edits (REST and stream) per user: RATE/UNIT[:BURST], UNIT s or min; 0 = no limit",
      "20/s:40"},
     T_RATE,
     OFF(rate_send),
     0,
     0},
    {{"CHATD_RATE_REQUEST", "requests to /api/v1/* per token: RATE/UNIT[:BURST]; 0 = no limit",
      "100/s:200"},
     T_RATE,
     OFF(rate_request),
     0,
     0},
    {{"CHATD_RATE_SIGNUP", "sign-ups per client address: RATE/UNIT[:BURST]; 0 = no limit",
      "10/min:10"},
     T_RATE,
     OFF(rate_signup),
     0,
     0},
    {{"CHATD_LOG_LEVEL", "debug, info, warn or error (debug logs one line per request)", "info"},
     T_LOGLEVEL,
     OFF(log_level),
     0,
     0},
};

const size_t chat_config_nsettings = CHAT_ARRAY_LEN(rows);

const chat_config_setting_t *chat_config_setting(size_t i)
{
    return i < CHAT_ARRAY_LEN(rows) ? &rows[i].doc : NULL;
}

static int parse_bool(const char *v, bool *out)
{
    if (!strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes") || !strcmp(v, "on"))
        *out = true;
    else if (!strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "no") || !strcmp(v, "off"))
        *out = false;
    else
        return -1;
    return 0;
}

/* A decimal in 1..CHAT_CONFIG_RATE_MAX at *p, digits only, no leading zero; advances *p. */
static int parse_rate_number(const char **p, int *out)
{
    const char *s = *p;
    long n = 0;
    if (*s < '1' || *s > '9')
        return -1;
    for (; *s >= '0' && *s <= '9'; s++) {
        n = n * 10 + (*s - '0');
        if (n > CHAT_CONFIG_RATE_MAX)
            return -1;
    }
    *out = (int)n;
    *p = s;
    return 0;
}

int chat_config_parse_rate(const char *s, chat_config_rate_t *out)
{
    chat_config_rate_t r = {0, 0, 0};
    if (!strcmp(s, "0")) {
        *out = r;
        return 0;
    }
    const char *p = s;
    if (parse_rate_number(&p, &r.rate) < 0 || *p++ != '/')
        return -1;
    if (!strncmp(p, "min", 3)) {
        r.period_s = 60;
        p += 3;
    } else if (*p == 's') {
        r.period_s = 1;
        p++;
    } else {
        return -1;
    }
    r.burst = r.rate;
    if (*p == ':') {
        p++;
        if (parse_rate_number(&p, &r.burst) < 0)
            return -1;
    }
    if (*p)
        return -1;
    *out = r;
    return 0;
}

static int parse_listen(chat_config_t *cfg, char *err, size_t errlen)
{
    const char *colon = strrchr(cfg->listen, ':');
    if (!colon || colon == cfg->listen) {
        snprintf(err, errlen, "CHATD_LISTEN must be host:port, got \"%s\"", cfg->listen);
        return -1;
    }
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (errno || *end || end == colon + 1 || port < 0 || port > 65535) {
        snprintf(err, errlen, "CHATD_LISTEN has a bad port in \"%s\"", cfg->listen);
        return -1;
    }
    const char *host = cfg->listen;
    size_t hlen = (size_t)(colon - host);
    if (hlen >= 2 && host[0] == '[' && host[hlen - 1] == ']') {
        host++;
        hlen -= 2;
    }
    cfg->listen_host = chat_strndup(host, hlen);
    cfg->listen_port = (int)port;
    return 0;
}

/*
 * Each entry of CHATD_ALLOWED_ORIGINS is an origin as browsers send it —
 * scheme "://" host [":" port], nothing after — or "null": a typo such as
 * a trailing slash would otherwise refuse every browser silently.
 */
static bool origin_ok(const char *s, size_t n)
{
    if (n == 4 && memcmp(s, "null", 4) == 0)
        return true;
    size_t scheme = 0;
    while (scheme < n && s[scheme] != ':')
        scheme++;
    if (scheme == 0 || scheme + 3 >= n || memcmp(s + scheme, "://", 3) != 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((i > scheme + 2 && s[i] == '/') || s[i] == ' ' || s[i] == '\t' || s[i] == '?' ||
            s[i] == '#')
            return false;
    return true;
}

static int parse_origins(const char *list, char *err, size_t errlen)
{
    for (const char *p = list; p && *p;) {
        const char *end = strchr(p, ',');
        if (!end)
            end = p + strlen(p);
        const char *s = p, *e = end;
        while (s < e && (*s == ' ' || *s == '\t'))
            s++;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if (!origin_ok(s, (size_t)(e - s))) {
            snprintf(err, errlen,
                     "CHATD_ALLOWED_ORIGINS must list origins such as https://chat.example:8443, "
                     "got \"%.*s\"",
                     (int)(end - p), p);
            return -1;
        }
        p = *end ? end + 1 : end;
    }
    return 0;
}

/*
 * DATABASE_URL_REPLICAS: 1..CHAT_CONFIG_REPLICAS_MAX libpq URLs
 * (postgresql:// or postgres://), comma-separated; no empty item.
 */
static bool replica_url_ok(const char *s, size_t len)
{
    while (len > 0 && *s == ' ') {
        s++;
        len--;
    }
    if (len > 13 && strncmp(s, "postgresql://", 13) == 0)
        return true;
    return len > 11 && strncmp(s, "postgres://", 11) == 0;
}

static int parse_replicas(const char *list, char *err, size_t errlen)
{
    if (!list)
        return 0;
    int n = 0;
    const char *p = list;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        n++;
        if (!replica_url_ok(p, len) || n > CHAT_CONFIG_REPLICAS_MAX) {
            /* the URLs hold passwords: an item is named by its position only */
            snprintf(
                err, errlen,
                "DATABASE_URL_REPLICAS must list 1..%d URLs postgresql://user:pass@host:port/db "
                "separated by commas; item %d is not one",
                CHAT_CONFIG_REPLICAS_MAX, n);
            return -1;
        }
        if (!end)
            return 0;
        p = end + 1;
    }
}

int chat_config_load(chat_config_t *cfg, const char *(*getenv_fn)(const char *), char *err,
                     size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < CHAT_ARRAY_LEN(rows); i++) {
        const struct row *r = &rows[i];
        const char *v = getenv_fn(r->doc.name);
        if (v && !*v && r->type != T_STR)
            v = NULL;
        if (!v)
            v = r->doc.default_value;
        char *field = (char *)cfg + r->offset;
        switch (r->type) {
        case T_STR:
            *(char **)field = v && *v ? chat_strdup(v) : NULL;
            break;
        case T_BOOL:
            if (parse_bool(v, (bool *)field) < 0) {
                snprintf(err, errlen, "%s must be true or false, got \"%s\"", r->doc.name, v);
                return -1;
            }
            break;
        case T_INT: {
            char *end;
            errno = 0;
            long n = strtol(v, &end, 10);
            if (errno || *end || end == v || n < r->min || n > r->max) {
                snprintf(err, errlen, "%s must be an integer in %ld..%ld, got \"%s\"", r->doc.name,
                         r->min, r->max, v);
                return -1;
            }
            *(int *)field = (int)n;
            break;
        }
        case T_SIGNUP:
            if (strcmp(v, "open") && strcmp(v, "closed")) {
                snprintf(err, errlen, "%s must be open or closed, got \"%s\"", r->doc.name, v);
                return -1;
            }
            *(bool *)field = strcmp(v, "open") == 0;
            break;
        case T_LOGLEVEL: {
            int lvl = chat_log_level_parse(v);
            if (lvl < 0) {
                snprintf(err, errlen, "%s must be debug, info, warn or error, got \"%s\"",
                         r->doc.name, v);
                return -1;
            }
            *(int *)field = lvl;
            break;
        }
        case T_RATE:
            if (chat_config_parse_rate(v, (chat_config_rate_t *)field) < 0) {
                snprintf(err, errlen,
                         "%s must be RATE/UNIT[:BURST] with UNIT s or min and RATE, BURST in "
                         "1..%d (e.g. 20/s:40), or 0 for no limit; got \"%s\"",
                         r->doc.name, CHAT_CONFIG_RATE_MAX, v);
                return -1;
            }
            break;
        }
    }
    if (cfg->redis_url && strncmp(cfg->redis_url, "redis://", 8) != 0 &&
        strncmp(cfg->redis_url, "redis+cluster://", 16) != 0) {
        snprintf(err, errlen,
                 "REDIS_URL must look like redis://host:port[/db] or "
                 "redis+cluster://host:port[,host:port...], got \"%s\"",
                 cfg->redis_url);
        return -1;
    }
    if (parse_origins(cfg->allowed_origins, err, errlen) < 0)
        return -1;
    if (parse_replicas(cfg->database_url_replicas, err, errlen) < 0)
        return -1;
    if (!cfg->database_url) {
        snprintf(err, errlen, "DATABASE_URL must not be empty");
        return -1;
    }
    return parse_listen(cfg, err, errlen);
}

void chat_config_dispose(chat_config_t *cfg)
{
    free(cfg->database_url);
    free(cfg->database_url_direct);
    free(cfg->database_url_replicas);
    free(cfg->redis_url);
    free(cfg->listen);
    free(cfg->listen_host);
    free(cfg->admin_token);
    free(cfg->allowed_origins);
    memset(cfg, 0, sizeof *cfg);
}
