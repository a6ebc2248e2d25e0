/*
 * Per-worker table of loads in flight (see flight.h): groups by key, each
 * with the flight loading now and the next one, and landed values by tag;
 * both in fixed arrays of buckets (FNV-1a), each flight with a FIFO of
 * waiters.
 */
#include "cache/flight.h"
#include "core/alloc.h"
#include "core/hash.h"
#include "core/list.h"
#include "core/metrics.h"

#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define NBUCKETS 1024

typedef struct waiter {
    chat_list_t link; /* in the flight's waiters, in join order */
    chat_flight_cb cb;
    void *arg;
} waiter_t;

typedef struct group group_t;

struct chat_flight {
    chat_list_t link; /* in its landed bucket, once landed and kept */
    group_t *group;   /* NULL once landed */
    char *tag;
    uint64_t started; /* uv_hrtime() when its load began; 0: not yet */
    bool tag_only;    /* joined only by reads of its tag (chat_flight_restrict) */
    chat_list_t waiters;
    chat_flight_start_cb start; /* a queued flight's leader */
    void *start_arg;
    int status;
    chat_blob_t *val; /* landed and kept: a reference */
};

struct group {
    chat_list_t link; /* in its bucket */
    char *key;
    chat_flight_t *cur;  /* loading */
    chat_flight_t *next; /* gathering: starts when cur lands */
    int busy;            /* landings running: freed only once none is */
};

struct chat_flights {
    chat_list_t groups[NBUCKETS];
    chat_list_t landed[NBUCKETS];
    size_t count;
    chat_metric_t *waiting; /* reads waiting for a load, the process's */
    chat_metric_t *shared;  /* reads answered by a load another read led */
};

static unsigned slot(const char *s)
{
    return (unsigned)(chat_hash_str(s) & (NBUCKETS - 1));
}

chat_flights_t *chat_flights_create(void)
{
    chat_flights_t *f = chat_calloc(1, sizeof(chat_flights_t));
    for (int i = 0; i < NBUCKETS; i++) {
        chat_list_init(&f->groups[i]);
        chat_list_init(&f->landed[i]);
    }
    f->waiting = chat_metric_gauge("chatd_cache_reads_waiting",
                                   "Reads waiting for a database load of their value, "
                                   "leaders included; each load answers all who wait on it.");
    f->shared = chat_metric_counter("chatd_cache_coalesced_total",
                                    "Reads answered by a database load another read led.");
    return f;
}

static void flight_free(chat_flights_t *f, chat_flight_t *fl)
{
    chat_list_t *e;
    while ((e = chat_list_first(&fl->waiters)) != NULL) {
        chat_list_remove(e);
        free(CHAT_CONTAINER_OF(e, waiter_t, link)); /* only at destroy: never called */
        chat_metric_add(f->waiting, -1);
    }
    if (chat_list_linked(&fl->link))
        chat_list_remove(&fl->link);
    f->count--;
    free(fl->tag);
    chat_blob_unref(fl->val);
    free(fl);
}

static void group_maybe_free(group_t *g)
{
    if (g->cur || g->next || g->busy)
        return;
    chat_list_remove(&g->link);
    free(g->key);
    free(g);
}

void chat_flights_destroy(chat_flights_t *f)
{
    /* Landed values whose fill never completed may remain; nobody waits on them. */
    chat_list_t *e, *tmp;
    for (int i = 0; i < NBUCKETS; i++) {
        CHAT_LIST_FOREACH_SAFE(e, tmp, &f->landed[i])
        {
            flight_free(f, CHAT_CONTAINER_OF(e, chat_flight_t, link));
        }
        CHAT_LIST_FOREACH_SAFE(e, tmp, &f->groups[i])
        {
            group_t *g = CHAT_CONTAINER_OF(e, group_t, link);
            if (g->cur)
                flight_free(f, g->cur);
            if (g->next)
                flight_free(f, g->next);
            g->cur = g->next = NULL;
            g->busy = 0;
            group_maybe_free(g);
        }
    }
    free(f);
}

static group_t *group_find(chat_flights_t *f, const char *key)
{
    chat_list_t *e;
    CHAT_LIST_FOREACH(e, &f->groups[slot(key)])
    {
        group_t *g = CHAT_CONTAINER_OF(e, group_t, link);
        if (strcmp(g->key, key) == 0)
            return g;
    }
    return NULL;
}

static chat_flight_t *landed_find(chat_flights_t *f, const char *tag)
{
    chat_list_t *e;
    CHAT_LIST_FOREACH(e, &f->landed[slot(tag)])
    {
        chat_flight_t *fl = CHAT_CONTAINER_OF(e, chat_flight_t, link);
        if (strcmp(fl->tag, tag) == 0)
            return fl;
    }
    return NULL;
}

static void waiter_add(chat_flights_t *f, chat_flight_t *fl, chat_flight_cb cb, void *arg)
{
    waiter_t *w = chat_malloc(sizeof *w);
    w->cb = cb;
    w->arg = arg;
    chat_list_insert_tail(&fl->waiters, &w->link);
    chat_metric_inc(f->waiting);
}

static chat_flight_t *flight_new(chat_flights_t *f, group_t *g, const char *tag)
{
    chat_flight_t *fl = chat_calloc(1, sizeof *fl);
    fl->group = g;
    fl->tag = tag ? chat_strdup(tag) : NULL;
    chat_list_init(&fl->waiters);
    chat_list_init(&fl->link);
    f->count++;
    return fl;
}

/* May a read that began at since, having read tag, join fl, which is loading? */
static bool joins_loading(const chat_flight_t *fl, const char *tag, uint64_t since)
{
    if (tag && fl->tag && strcmp(tag, fl->tag) == 0)
        return true; /* the same version: the data the read asked for */
    return !fl->tag_only && since <= fl->started;
}

int chat_flight_join_at(chat_flights_t *f, const char *key, const char *tag, uint64_t since,
                        bool take_landed, chat_flight_cb cb, void *arg, chat_flight_start_cb start,
                        chat_flight_t **out)
{
    chat_flight_t *fl;
    if (out)
        *out = NULL;
    if (take_landed && tag && (fl = landed_find(f, tag)) != NULL) {
        chat_metric_inc(f->shared);
        cb(fl->status, fl->val, arg);
        return CHAT_FLIGHT_LANDED;
    }
    group_t *g = group_find(f, key);
    int role = CHAT_FLIGHT_JOINED;
    if (g && g->cur && joins_loading(g->cur, tag, since)) {
        fl = g->cur;
    } else if (g && g->next) {
        fl = g->next;
        if (!fl->tag && tag)
            fl->tag = chat_strdup(tag); /* read before this flight's load: it may fill it */
    } else {
        if (!g) {
            g = chat_calloc(1, sizeof *g);
            g->key = chat_strdup(key);
            chat_list_insert_tail(&f->groups[slot(key)], &g->link);
        }
        fl = flight_new(f, g, tag);
        if (g->cur) {
            g->next = fl;
            fl->start = start;
            fl->start_arg = arg;
            role = CHAT_FLIGHT_QUEUED;
        } else {
            g->cur = fl;
            fl->started = uv_hrtime();
            role = CHAT_FLIGHT_LEADER;
        }
    }
    if (role == CHAT_FLIGHT_JOINED)
        chat_metric_inc(f->shared);
    waiter_add(f, fl, cb, arg);
    if (out)
        *out = fl;
    return role;
}

int chat_flight_join(chat_flights_t *f, const char *key, chat_flight_cb cb, void *arg)
{
    return chat_flight_join_at(f, key, key, 0, true, cb, arg, NULL, NULL);
}

void chat_flight_land_at(chat_flights_t *f, chat_flight_t *fl, int status, chat_blob_t *val,
                         int keep)
{
    group_t *g = fl->group;
    chat_list_t waiters, *e;
    /* Detach the waiters first: a callback may join or land this key again. */
    chat_list_init(&waiters);
    chat_list_splice_tail(&waiters, &fl->waiters);
    if (g->cur == fl)
        g->cur = NULL;
    else if (g->next == fl)
        g->next = NULL;
    g->busy++;
    fl->group = NULL;
    if (status != 0)
        val = NULL;
    if (keep && fl->tag && val) {
        chat_flight_t *old = landed_find(f, fl->tag);
        if (old)
            flight_free(f, old);
        fl->status = status;
        fl->val = chat_blob_ref(val);
        chat_list_insert_tail(&f->landed[slot(fl->tag)], &fl->link);
    } else {
        flight_free(f, fl);
        fl = NULL;
    }
    while ((e = chat_list_first(&waiters)) != NULL) {
        waiter_t *w = CHAT_CONTAINER_OF(e, waiter_t, link);
        chat_list_remove(e);
        chat_metric_add(f->waiting, -1);
        w->cb(status, val, w->arg);
        free(w);
    }
    /* The next flight's turn: it gathered the reads this one could not serve. */
    if (!g->cur && g->next) {
        chat_flight_t *nx = g->next;
        g->next = NULL;
        g->cur = nx;
        nx->started = uv_hrtime();
        nx->start(nx, nx->start_arg);
    }
    g->busy--;
    group_maybe_free(g);
}

void chat_flight_land(chat_flights_t *f, const char *key, int status, chat_blob_t *val, int keep)
{
    group_t *g = group_find(f, key);
    if (g && g->cur)
        chat_flight_land_at(f, g->cur, status, val, keep);
}

void chat_flight_remove(chat_flights_t *f, const char *tag)
{
    chat_flight_t *fl = landed_find(f, tag);
    if (fl)
        flight_free(f, fl);
}

const char *chat_flight_tag(const chat_flight_t *fl)
{
    return fl->tag;
}

void chat_flight_each_waiter(chat_flight_t *fl, void (*fn)(void *arg, void *ud), void *ud)
{
    chat_list_t *e;
    CHAT_LIST_FOREACH(e, &fl->waiters)
    {
        fn(CHAT_CONTAINER_OF(e, waiter_t, link)->arg, ud);
    }
}

size_t chat_flights_count(const chat_flights_t *f)
{
    return f->count;
}

void chat_flight_restrict(chat_flight_t *fl)
{
    fl->tag_only = true;
}
