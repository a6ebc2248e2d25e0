/*
 * GCRA arithmetic and the bounded per-key table (see gcra.h).
 */
#include "core/gcra.h"
#include "core/hash.h"
#include "core/list.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* Least recently used keys looked at on each update, dropped when their TAT has passed. */
#define SWEEP_PER_UPDATE 2

chat_gcra_t chat_gcra_make(int rate, int period_s, int burst)
{
    int64_t period_us = (int64_t)period_s * 1000000;
    int64_t t = (period_us + rate / 2) / rate;
    if (t < 1)
        t = 1;
    chat_gcra_t g = {t, t * burst};
    return g;
}

int64_t chat_gcra_update(const chat_gcra_t *g, int64_t *tat, int64_t now)
{
    int64_t start = *tat > now ? *tat : now;
    int64_t next = start + g->interval_us;
    /* Conforming while the new TAT runs at most the tolerance ahead of now. */
    int64_t wait = next - g->tolerance_us - now;
    if (wait > 0)
        return wait;
    *tat = next;
    return 0;
}

int chat_gcra_retry_after_s(int64_t wait_us)
{
    int64_t s = (wait_us + 999999) / 1000000;
    if (s < 1)
        s = 1;
    return s > 86400 * 365 ? 86400 * 365 : (int)s;
}

/* ---- the table ---- */

typedef struct entry {
    chat_list_t lru;    /* t->lru: most recently used first */
    struct entry *next; /* bucket chain */
    uint64_t hash;
    int64_t tat;
    char key[];
} entry_t;

struct chat_gcra_table {
    pthread_mutex_t lock;
    entry_t **buckets;
    size_t mask; /* number of buckets - 1 */
    size_t len, max_keys;
    uint64_t evictions;
    chat_list_t lru;
};

chat_gcra_table_t *chat_gcra_table_create(size_t max_keys)
{
    chat_gcra_table_t *t = chat_calloc(1, sizeof *t);
    size_t n = 16;
    while (n < max_keys)
        n <<= 1;
    t->buckets = chat_calloc(n, sizeof *t->buckets);
    t->mask = n - 1;
    t->max_keys = max_keys ? max_keys : 1;
    chat_list_init(&t->lru);
    pthread_mutex_init(&t->lock, NULL);
    return t;
}

void chat_gcra_table_destroy(chat_gcra_table_t *t)
{
    if (!t)
        return;
    chat_list_t *e;
    while ((e = chat_list_first(&t->lru)) != NULL) {
        chat_list_remove(e);
        free(CHAT_CONTAINER_OF(e, entry_t, lru));
    }
    pthread_mutex_destroy(&t->lock);
    free(t->buckets);
    free(t);
}

static void drop(chat_gcra_table_t *t, entry_t *victim)
{
    entry_t **pp = &t->buckets[victim->hash & t->mask];
    while (*pp != victim)
        pp = &(*pp)->next;
    *pp = victim->next;
    chat_list_remove(&victim->lru);
    t->len--;
    free(victim);
}

static entry_t *lru_tail(const chat_gcra_table_t *t)
{
    return chat_list_empty(&t->lru) ? NULL : CHAT_CONTAINER_OF(t->lru.prev, entry_t, lru);
}

int64_t chat_gcra_table_update(chat_gcra_table_t *t, const chat_gcra_t *g, const char *key,
                               int64_t now)
{
    size_t klen = strnlen(key, CHAT_GCRA_KEY_MAX - 1);
    uint64_t h = chat_hash_bytes(key, klen);
    pthread_mutex_lock(&t->lock);
    for (int i = 0; i < SWEEP_PER_UPDATE; i++) {
        entry_t *old = lru_tail(t);
        if (!old || old->tat > now)
            break;
        drop(t, old);
    }
    entry_t *e = t->buckets[h & t->mask];
    while (e && !(e->hash == h && strlen(e->key) == klen && !memcmp(e->key, key, klen)))
        e = e->next;
    int64_t wait;
    if (e) {
        wait = chat_gcra_update(g, &e->tat, now);
        chat_list_remove(&e->lru);
        chat_list_insert_head(&t->lru, &e->lru);
    } else {
        int64_t tat = 0;
        wait = chat_gcra_update(g, &tat, now);
        if (wait == 0) { /* always, with a burst of at least 1 */
            if (t->len >= t->max_keys) {
                entry_t *victim = lru_tail(t);
                if (victim->tat > now)
                    t->evictions++;
                drop(t, victim);
            }
            e = chat_malloc(sizeof *e + klen + 1);
            memcpy(e->key, key, klen);
            e->key[klen] = '\0';
            e->hash = h;
            e->tat = tat;
            e->next = t->buckets[h & t->mask];
            t->buckets[h & t->mask] = e;
            chat_list_insert_head(&t->lru, &e->lru);
            t->len++;
        }
    }
    pthread_mutex_unlock(&t->lock);
    return wait;
}

size_t chat_gcra_table_len(chat_gcra_table_t *t)
{
    pthread_mutex_lock(&t->lock);
    size_t n = t->len;
    pthread_mutex_unlock(&t->lock);
    return n;
}

uint64_t chat_gcra_table_evictions(chat_gcra_table_t *t)
{
    pthread_mutex_lock(&t->lock);
    uint64_t n = t->evictions;
    pthread_mutex_unlock(&t->lock);
    return n;
}
