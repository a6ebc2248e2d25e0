/*
 * Redis URLs and the address they name: the one parser of
 * redis://host:port[/db] (and of redis+cluster://host:port,... for a
 * cluster) in chatd, and the resolution of the host, which
 * never blocks the loop: a numeric address is used as written, a name is
 * looked up on libuv's thread pool (uv_getaddrinfo).
 */
#ifndef CHAT_REDIS_URL_H
#define CHAT_REDIS_URL_H

#include "core/alloc.h"

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <uv.h>

/** Longest host accepted, NUL included. */
#define CHAT_REDIS_HOST_MAX 256

typedef struct chat_redis_url {
    /** The host without the brackets of an IPv6 literal. */
    char host[CHAT_REDIS_HOST_MAX];
    /** 1..65535; 6379 when the URL names none. */
    int port;
    /** 0..999999; 0 when the URL names none. */
    int db;
    /** The host is an IP address: addr holds it with the port, no lookup is needed. */
    bool numeric;
    struct sockaddr_storage addr;
    /** "host:port" ("[v6]:port"), for logs. */
    char text[CHAT_REDIS_HOST_MAX + 16];
} chat_redis_url_t;

/**
 * Parses url. The rules: the scheme is redis:// (not rediss://); no
 * credentials, query or fragment; the host is a name, an IPv4 address or an
 * [IPv6] literal, at most 255 bytes; the port, when present, is 1..65535 in
 * digits; the db, when present after a '/', is at most six digits. Returns 0,
 * or CHAT_EINVAL with a sentence naming the URL and the broken rule in err
 * (err may be NULL).
 */
int chat_redis_url_parse(chat_redis_url_t *out, const char *url, char *err,
                         size_t errlen) CHAT_MUSTCHECK;

/** The scheme of a URL naming a Redis Cluster by some of its nodes. */
#define CHAT_REDIS_CLUSTER_SCHEME "redis+cluster://"

/** True when url starts with redis+cluster://. */
bool chat_redis_url_is_cluster(const char *url);

/**
 * Parses redis+cluster://host:port[,host:port...]: each node under the rules
 * of chat_redis_url_parse (the port defaults to 6379; no db, or db 0), at
 * most max of them, into seeds[0..*n). Returns 0, or CHAT_EINVAL with a
 * sentence in err (may be NULL).
 */
int chat_redis_cluster_url_parse(chat_redis_url_t *seeds, int max, int *n, const char *url,
                                 char *err, size_t errlen) CHAT_MUSTCHECK;

typedef struct chat_redis_resolve chat_redis_resolve_t;

/**
 * The outcome of a lookup: status 0 and the address (the first IPv4 one
 * found, else the first; with the URL's port; valid during the call), or a
 * libuv error (UV_EAI_*) and NULL.
 */
typedef void (*chat_redis_resolve_cb)(int status, const struct sockaddr *addr, void *arg);

/**
 * Looks the host of u up on libuv's thread pool (for a name; a numeric u
 * needs no lookup: use u->addr). Returns 0 and the request in *out, cb then
 * runs exactly once, later, on loop, unless the request is cancelled first;
 * or a negative libuv error, cb never runs. The loop keeps running
 * meanwhile: the lookup is bounded by the system resolver's own timeouts.
 */
int chat_redis_url_resolve(uv_loop_t *loop, const chat_redis_url_t *u, chat_redis_resolve_cb cb,
                           void *arg, chat_redis_resolve_t **out) CHAT_MUSTCHECK;

/**
 * Gives up on a lookup: cb never runs; the request frees itself when the
 * thread pool hands it back (the loop stays alive until then).
 */
void chat_redis_resolve_cancel(chat_redis_resolve_t *q);

/** Writes the numeric text of addr's IP (no port) into out; 0 or a libuv error. */
int chat_redis_addr_ip(const struct sockaddr *addr, char *out, size_t len);

#endif
