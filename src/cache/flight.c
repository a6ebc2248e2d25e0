/*
 * Per-worker table of in-flight cache loads (see flight.h).
 */
#include "cache/flight.h"
#include "core/alloc.h"

#include <stdlib.h>
#include <string.h>

#define NBUCKETS 1024

typedef struct waiter {
    struct waiter *next;
    chat_flight_cb cb;
    void *arg;
} waiter_t;

typedef struct flight {
    struct flight *next;
    char *key;
    waiter_t *waiters, *waiters_tail;
    int landed;
    int status;
    char *val;
    size_t len;
} flight_t;

struct chat_flights {
    flight_t *buckets[NBUCKETS];
    size_t count;
};

static unsigned hash(const char *s)
{
    unsigned h = 2166136261u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h & (NBUCKETS - 1);
}

chat_flights_t *chat_flights_create(void)
{
    return chat_calloc(1, sizeof(chat_flights_t));
}

void chat_flights_destroy(chat_flights_t *f)
{
    /* Landed flights whose fill never completed may remain; nobody waits on them. */
    for (int i = 0; i < NBUCKETS; i++) {
        flight_t *fl = f->buckets[i];
        while (fl) {
            flight_t *next = fl->next;
            free(fl->key);
            free(fl->val);
            free(fl);
            fl = next;
        }
    }
    free(f);
}

static flight_t **find(chat_flights_t *f, const char *key)
{
    flight_t **p = &f->buckets[hash(key)];
    while (*p && strcmp((*p)->key, key) != 0)
        p = &(*p)->next;
    return p;
}

int chat_flight_join(chat_flights_t *f, const char *key, chat_flight_cb cb, void *arg)
{
    flight_t **p = find(f, key);
    flight_t *fl = *p;
    if (fl && fl->landed) {
        cb(fl->status, fl->val, fl->len, arg);
        return CHAT_FLIGHT_LANDED;
    }
    int role = CHAT_FLIGHT_JOINED;
    if (!fl) {
        fl = chat_calloc(1, sizeof *fl);
        fl->key = chat_strdup(key);
        *p = fl;
        f->count++;
        role = CHAT_FLIGHT_LEADER;
    }
    waiter_t *w = chat_malloc(sizeof *w);
    w->next = NULL;
    w->cb = cb;
    w->arg = arg;
    if (fl->waiters_tail)
        fl->waiters_tail->next = w;
    else
        fl->waiters = w;
    fl->waiters_tail = w;
    return role;
}

static void unlink_flight(chat_flights_t *f, flight_t **p)
{
    flight_t *fl = *p;
    *p = fl->next;
    f->count--;
    free(fl->key);
    free(fl->val);
    free(fl);
}

void chat_flight_land(chat_flights_t *f, const char *key, int status, const char *val, size_t len,
                      int keep)
{
    flight_t **p = find(f, key);
    flight_t *fl = *p;
    if (!fl)
        return;
    /* Detach the waiters first: a callback may join or land this key again. */
    waiter_t *w = fl->waiters;
    fl->waiters = fl->waiters_tail = NULL;
    if (keep) {
        fl->landed = 1;
        fl->status = status;
        fl->val = chat_malloc(len + 1);
        memcpy(fl->val, val, len);
        fl->val[len] = '\0';
        fl->len = len;
        val = fl->val;
    } else {
        unlink_flight(f, p);
    }
    while (w) {
        waiter_t *next = w->next;
        w->cb(status, val, len, w->arg);
        free(w);
        w = next;
    }
}

void chat_flight_remove(chat_flights_t *f, const char *key)
{
    flight_t **p = find(f, key);
    if (*p && (*p)->landed && !(*p)->waiters)
        unlink_flight(f, p);
}

size_t chat_flights_count(const chat_flights_t *f)
{
    return f->count;
}
