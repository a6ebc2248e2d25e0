/*
 * Coalescing of concurrent loads of the same value, one table per worker
 * loop (no locks). Each thing loaded (a key) has at most two flights: the
 * one loading now and the next one, which gathers the reads that may not
 * join the first and starts when it lands. A read joins the flight loading
 * now when it names the same tag (the versioned cache key it read: the same
 * data) or when it began before that flight started loading (so the load
 * cannot miss a write acknowledged before the read began); any other read
 * waits for the next flight. A landed flight with a tag keeps its value
 * until chat_flight_remove() (the cache fill was acknowledged), so a miss
 * that raced the fill is still answered without a second load.
 */
#ifndef CHAT_CACHE_FLIGHT_H
#define CHAT_CACHE_FLIGHT_H

#include "core/blob.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct chat_flights chat_flights_t;
typedef struct chat_flight chat_flight_t;

/**
 * A waiter's answer: status is the loader's (e.g. an HTTP-independent chat
 * status), val the bytes when status is 0 (else NULL), shared by every
 * waiter: valid during the call, kept past it with chat_blob_ref().
 */
typedef void (*chat_flight_cb)(int status, chat_blob_t *val, void *arg);

/** A queued flight's turn to load has come: its leader (arg) loads now. */
typedef void (*chat_flight_start_cb)(chat_flight_t *fl, void *arg);

chat_flights_t *chat_flights_create(void);
/** Frees the table; flights left in it are dropped, their waiters never called. */
void chat_flights_destroy(chat_flights_t *f);

enum chat_flight_join {
    CHAT_FLIGHT_LEADER = 0, /* caller must load now, then chat_flight_land_at() */
    CHAT_FLIGHT_JOINED = 1, /* cb fires when the flight lands */
    CHAT_FLIGHT_LANDED = 2, /* cb already fired, before this returned */
    CHAT_FLIGHT_QUEUED = 3, /* caller leads the next flight: start fires when it may load */
};

/**
 * Joins a flight of key (or starts one) for a read that began at since
 * (uv_hrtime()), having read tag (NULL: none). The caller is a waiter in
 * every case but LANDED; cb fires once. The flight loading now is joined
 * when it has the same tag or started at or after since; a landed value of
 * the same tag is used at once only when take_landed (the caller needs no
 * check before an answer). Otherwise the caller joins the next flight, or
 * leads it (QUEUED: start fires with arg once the flight before it landed;
 * LEADER when none was loading). The next flight takes the tag of its first
 * waiter that has one. *out (may be NULL) gets the flight joined or led.
 */
int chat_flight_join_at(chat_flights_t *f, const char *key, const char *tag, uint64_t since,
                        bool take_landed, chat_flight_cb cb, void *arg, chat_flight_start_cb start,
                        chat_flight_t **out);

/**
 * chat_flight_join_at(f, key, key, 0, true, cb, arg, NULL, NULL): the key is
 * its own tag, so every miss of it joins the flight loading it.
 */
int chat_flight_join(chat_flights_t *f, const char *key, chat_flight_cb cb, void *arg);

/**
 * Answers every waiter of fl with val (status 0; borrowed: the caller keeps
 * its reference) or status alone, then starts the next flight of its key,
 * if any. With keep != 0, status 0 and a tag, the value stays (a reference)
 * for late joiners of that tag until chat_flight_remove(); otherwise fl ends
 * now. fl is invalid afterwards.
 */
void chat_flight_land_at(chat_flights_t *f, chat_flight_t *fl, int status, chat_blob_t *val,
                         int keep);

/** chat_flight_land_at() of the flight loading key. No-op if none. */
void chat_flight_land(chat_flights_t *f, const char *key, int status, chat_blob_t *val, int keep);

/** Ends the landed value of tag (after the fill was acknowledged). No-op if absent. */
void chat_flight_remove(chat_flights_t *f, const char *tag);

/** The tag of fl (the key its value may be stored under), or NULL. */
const char *chat_flight_tag(const chat_flight_t *fl);

/**
 * From now on fl, loading, is joined only by reads of its own tag, not by
 * reads that began before it started (its load may then answer for its tag
 * only: e.g. a load from a database replica that is known to hold what that
 * version needs, and no more).
 */
void chat_flight_restrict(chat_flight_t *fl);

/** Calls fn(arg of each waiter, ud) in join order; fn must not join or land. */
void chat_flight_each_waiter(chat_flight_t *fl, void (*fn)(void *arg, void *ud), void *ud);

/** Number of flights in the table, landed values included (tests). */
size_t chat_flights_count(const chat_flights_t *f);

#endif
