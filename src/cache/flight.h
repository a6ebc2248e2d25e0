/*
 * Coalescing of concurrent cache misses: the first request that misses a key
 * becomes the leader of a "flight" and loads the value once; requests that
 * miss the same key meanwhile join the flight and are answered from the
 * leader's result. A landed flight keeps its value until the cache fill is
 * acknowledged, so a miss that raced the fill is still answered without a
 * second load. One table per worker loop: no locks.
 */
#ifndef CHAT_CACHE_FLIGHT_H
#define CHAT_CACHE_FLIGHT_H

#include <stddef.h>

typedef struct chat_flights chat_flights_t;

/**
 * A waiter's answer: status is the loader's (e.g. an HTTP-independent chat
 * status), val/len the bytes (valid only during the call).
 */
typedef void (*chat_flight_cb)(int status, const char *val, size_t len, void *arg);

chat_flights_t *chat_flights_create(void);
/** Frees the table; flights left in it are dropped, their waiters never called. */
void chat_flights_destroy(chat_flights_t *f);

enum chat_flight_join {
    CHAT_FLIGHT_LEADER = 0, /* caller must load, then chat_flight_land() */
    CHAT_FLIGHT_JOINED = 1, /* cb fires when the leader lands */
    CHAT_FLIGHT_LANDED = 2, /* cb already fired, before this returned */
};

/** Joins (or starts) the flight of key; cb is registered in every case but LANDED. */
int chat_flight_join(chat_flights_t *f, const char *key, chat_flight_cb cb, void *arg);

/**
 * Answers every waiter of key. With keep != 0 the value stays for late
 * joiners until chat_flight_remove(); otherwise the flight ends now.
 */
void chat_flight_land(chat_flights_t *f, const char *key, int status, const char *val, size_t len,
                      int keep);

/** Ends a landed flight (after the fill was acknowledged). No-op if absent. */
void chat_flight_remove(chat_flights_t *f, const char *key);

/** Number of flights in the table (tests). */
size_t chat_flights_count(const chat_flights_t *f);

#endif
