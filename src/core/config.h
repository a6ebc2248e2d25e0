/*
 * Configuration: every setting is one row of one table (config.c) naming the
 * environment variable, its type, default and limits; chat_config_load() fills
 * one chat_config_t that is passed to whoever needs it. Nothing else reads the
 * environment.
 */
#ifndef CHAT_CORE_CONFIG_H
#define CHAT_CORE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

/**
 * A rate limit (CHATD_RATE_*): rate events per period_s seconds, with bursts
 * of up to burst events at once. rate 0 means no limit (the other fields are
 * then 0 too).
 */
typedef struct chat_config_rate {
    int rate;     /* 1..CHAT_CONFIG_RATE_MAX, or 0: no limit */
    int period_s; /* 1 (UNIT s) or 60 (UNIT min) */
    int burst;    /* 1..CHAT_CONFIG_RATE_MAX; RATE when the setting gives none */
} chat_config_rate_t;

/** Most read replicas DATABASE_URL_REPLICAS may list. */
#define CHAT_CONFIG_REPLICAS_MAX 8

/** Largest RATE and BURST a rate setting accepts. */
#define CHAT_CONFIG_RATE_MAX 1000000

typedef struct chat_config {
    char *database_url;              /* DATABASE_URL: the pooler path */
    char *database_url_direct;       /* DATABASE_URL_DIRECT: fallback path, NULL if unset */
    char *database_url_replicas;     /* DATABASE_URL_REPLICAS: read replicas, NULL if unset */
    int db_pool_size_replica;        /* CHATD_DB_POOL_SIZE_REPLICA: per replica, per process */
    int replica_max_lag_ms;          /* CHATD_REPLICA_MAX_LAG_MS */
    int replica_poll_ms;             /* CHATD_REPLICA_POLL_MS */
    char *redis_url;                 /* REDIS_URL */
    bool enable_redis_cache;         /* ENABLE_REDIS_CACHE */
    bool cache_bypass;               /* CACHE_BYPASS */
    char *listen;                    /* CHATD_LISTEN, host:port */
    char *listen_host;               /* derived from listen */
    int listen_port;                 /* derived from listen */
    int workers;                     /* CHATD_WORKERS, 0 = number of cores */
    int db_pool_size;                /* CHATD_DB_POOL_SIZE */
    int db_pool_size_direct;         /* CHATD_DB_POOL_SIZE_DIRECT */
    int db_queue_timeout_ms;         /* CHATD_DB_QUEUE_TIMEOUT_MS */
    int failover_error_percent;      /* CHATD_FAILOVER_ERROR_PERCENT */
    int failover_queue_wait_ms;      /* CHATD_FAILOVER_QUEUE_WAIT_MS */
    int failover_window_ms;          /* CHATD_FAILOVER_WINDOW_MS */
    int failover_hold_ms;            /* CHATD_FAILOVER_HOLD_MS */
    int db_connect_timeout_ms;       /* CHATD_DB_CONNECT_TIMEOUT_MS */
    int db_hold_ms;                  /* CHATD_DB_HOLD_MS */
    int max_connections;             /* CHATD_MAX_CONNECTIONS */
    int header_timeout_ms;           /* CHATD_HEADER_TIMEOUT_MS */
    int idle_timeout_ms;             /* CHATD_IDLE_TIMEOUT_MS */
    int body_timeout_ms;             /* CHATD_BODY_TIMEOUT_MS */
    int max_pending_output_kb;       /* CHATD_MAX_PENDING_OUTPUT_KB */
    int tcp_notsent_lowat_kb;        /* CHATD_TCP_NOTSENT_LOWAT_KB, 0 = system default */
    int tcp_sndbuf_kb;               /* CHATD_TCP_SNDBUF_KB, 0 = autotuned */
    int max_pending_output_total_mb; /* CHATD_MAX_PENDING_OUTPUT_TOTAL_MB, 0 = no budget */
    int ws_ping_interval_ms;         /* CHATD_WS_PING_INTERVAL_MS */
    int shutdown_timeout_ms;         /* CHATD_SHUTDOWN_TIMEOUT_MS */
    int drain_ms;                    /* CHATD_DRAIN_MS */
    bool signup_open;                /* CHATD_SIGNUP: open / closed */
    char *admin_token;               /* CHATD_ADMIN_TOKEN, NULL if unset */
    char *allowed_origins;           /* CHATD_ALLOWED_ORIGINS, NULL: any origin */
    int log_level;                   /* CHATD_LOG_LEVEL */
    int cache_timeout_ms;            /* CHATD_CACHE_TIMEOUT_MS */
    int cache_local_mb;              /* CHATD_CACHE_LOCAL_MB */
    int fault_drop_events;           /* CHATD_FAULT_DROP_EVENTS (fault injection for tests) */
    int cache_fill_delay_ms;         /* CHATD_CACHE_FILL_DELAY_MS (fault injection for tests) */
    chat_config_rate_t rate_send;    /* CHATD_RATE_SEND: sends and edits per user */
    chat_config_rate_t rate_request; /* CHATD_RATE_REQUEST: /api/v1 requests per token */
    chat_config_rate_t rate_signup;  /* CHATD_RATE_SIGNUP: sign-ups per client address */
} chat_config_t;

/** One row of the settings table, exported for the documentation test. */
typedef struct chat_config_setting {
    const char *name;
    const char *help;
    const char *default_value; /* NULL: unset */
} chat_config_setting_t;

/** The i-th row of the settings table, NULL past the end (chat_config_nsettings rows). */
const chat_config_setting_t *chat_config_setting(size_t i);
extern const size_t chat_config_nsettings;

/**
 * Fills cfg from the environment through getenv_fn (getenv in production).
 * Returns 0, or -1 with a message naming the variable in err (size errlen).
 * On failure cfg may be partly filled; call chat_config_dispose() either way.
 */
int chat_config_load(chat_config_t *cfg, const char *(*getenv_fn)(const char *), char *err,
                     size_t errlen) __attribute__((warn_unused_result));
void chat_config_dispose(chat_config_t *cfg);

/**
 * Parses a rate setting: "0" (no limit) or RATE/UNIT[:BURST] with RATE and
 * BURST decimal integers in 1..CHAT_CONFIG_RATE_MAX without sign, spaces or
 * leading zeros, and UNIT "s" or "min"; BURST defaults to RATE. Returns 0,
 * or -1 (out untouched) for anything else.
 */
int chat_config_parse_rate(const char *s, chat_config_rate_t *out)
    __attribute__((warn_unused_result));

#endif
