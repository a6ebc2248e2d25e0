/*
 * Per-worker table of in-flight cache loads (see flight.h): a fixed array of
 * buckets (FNV-1a of the key) holding lists of flights, each with a FIFO of
 * waiters.
 */
#include "cache/flight.h"
#include "core/alloc.h"
#include "core/hash.h"
#include "core/list.h"

#include <stdlib.h>
#include <string.h>

#define NBUCKETS 1024

typedef struct waiter {
    chat_list_t link; /* in the flight's waiters, in join order */
    chat_flight_cb cb;
    void *arg;
} waiter_t;

typedef struct flight {
    chat_list_t link; /* in its bucket */
    char *key;
    chat_list_t waiters;
    int landed;
    int status;
    char *val;
    size_t len;
} flight_t;

struct chat_flights {
    chat_list_t buckets[NBUCKETS];
    size_t count;
};

static chat_list_t *bucket(chat_flights_t *f, const char *key)
{
    return &f->buckets[chat_hash_str(key) & (NBUCKETS - 1)];
}

chat_flights_t *chat_flights_create(void)
{
    chat_flights_t *f = chat_calloc(1, sizeof(chat_flights_t));
    for (int i = 0; i < NBUCKETS; i++)
        chat_list_init(&f->buckets[i]);
    return f;
}

static void flight_free(chat_flights_t *f, flight_t *fl)
{
    chat_list_t *e;
    while ((e = chat_list_first(&fl->waiters)) != NULL) {
        chat_list_remove(e);
        free(CHAT_CONTAINER_OF(e, waiter_t, link)); /* only at destroy: never called */
    }
    chat_list_remove(&fl->link);
    f->count--;
    free(fl->key);
    free(fl->val);
    free(fl);
}

void chat_flights_destroy(chat_flights_t *f)
{
    /* Landed flights whose fill never completed may remain; nobody waits on them. */
    chat_list_t *e, *tmp;
    for (int i = 0; i < NBUCKETS; i++) {
        CHAT_LIST_FOREACH_SAFE(e, tmp, &f->buckets[i])
        {
            flight_free(f, CHAT_CONTAINER_OF(e, flight_t, link));
        }
    }
    free(f);
}

static flight_t *find(chat_flights_t *f, const char *key)
{
    chat_list_t *e, *b = bucket(f, key);
    CHAT_LIST_FOREACH(e, b)
    {
        flight_t *fl = CHAT_CONTAINER_OF(e, flight_t, link);
        if (strcmp(fl->key, key) == 0)
            return fl;
    }
    return NULL;
}

int chat_flight_join(chat_flights_t *f, const char *key, chat_flight_cb cb, void *arg)
{
    flight_t *fl = find(f, key);
    if (fl && fl->landed) {
        cb(fl->status, fl->val, fl->len, arg);
        return CHAT_FLIGHT_LANDED;
    }
    int role = CHAT_FLIGHT_JOINED;
    if (!fl) {
        fl = chat_calloc(1, sizeof *fl);
        fl->key = chat_strdup(key);
        chat_list_init(&fl->waiters);
        chat_list_insert_tail(bucket(f, key), &fl->link);
        f->count++;
        role = CHAT_FLIGHT_LEADER;
    }
    waiter_t *w = chat_malloc(sizeof *w);
    w->cb = cb;
    w->arg = arg;
    chat_list_insert_tail(&fl->waiters, &w->link);
    return role;
}

void chat_flight_land(chat_flights_t *f, const char *key, int status, const char *val, size_t len,
                      int keep)
{
    flight_t *fl = find(f, key);
    chat_list_t waiters, *e;
    if (!fl)
        return;
    /* Detach the waiters first: a callback may join or land this key again. */
    chat_list_init(&waiters);
    chat_list_splice_tail(&waiters, &fl->waiters);
    if (keep) {
        fl->landed = 1;
        fl->status = status;
        fl->val = chat_malloc(len + 1);
        memcpy(fl->val, val, len);
        fl->val[len] = '\0';
        fl->len = len;
        val = fl->val;
    } else {
        flight_free(f, fl);
    }
    while ((e = chat_list_first(&waiters)) != NULL) {
        waiter_t *w = CHAT_CONTAINER_OF(e, waiter_t, link);
        chat_list_remove(e);
        w->cb(status, val, len, w->arg);
        free(w);
    }
}

void chat_flight_remove(chat_flights_t *f, const char *key)
{
    flight_t *fl = find(f, key);
    if (fl && fl->landed && chat_list_empty(&fl->waiters))
        flight_free(f, fl);
}

size_t chat_flights_count(const chat_flights_t *f)
{
    return f->count;
}
