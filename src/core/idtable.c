/*
 * Open-addressing id table (see idtable.h). Capacity is a power of two and
 * at most half the slots are used, so probes stay short; deletion shifts
 * later members of the probe run back instead of leaving tombstones.
 */
#include "core/idtable.h"
#include "core/alloc.h"
#include "core/hash.h"

#include <stdlib.h>

void chat_idtable_init(chat_idtable_t *t)
{
    t->slots = NULL;
    t->mask = 0;
    t->len = 0;
}

void chat_idtable_dispose(chat_idtable_t *t)
{
    free(t->slots);
    chat_idtable_init(t);
}

static size_t home(const chat_idtable_t *t, uint64_t key)
{
    return (size_t)chat_hash_u64(key) & t->mask;
}

void *chat_idtable_get(const chat_idtable_t *t, uint64_t key)
{
    if (!t->slots)
        return NULL;
    for (size_t i = home(t, key);; i = (i + 1) & t->mask) {
        const chat_idtable_slot_t *s = &t->slots[i];
        if (!s->val)
            return NULL;
        if (s->key == key)
            return s->val;
    }
}

static void grow(chat_idtable_t *t)
{
    size_t cap = t->slots ? (t->mask + 1) * 2 : 16;
    chat_idtable_slot_t *old = t->slots;
    size_t oldcap = t->slots ? t->mask + 1 : 0;
    t->slots = chat_calloc(cap, sizeof *t->slots);
    t->mask = cap - 1;
    for (size_t j = 0; j < oldcap; j++) {
        if (!old[j].val)
            continue;
        size_t i = home(t, old[j].key);
        while (t->slots[i].val)
            i = (i + 1) & t->mask;
        t->slots[i] = old[j];
    }
    free(old);
}

void *chat_idtable_put(chat_idtable_t *t, uint64_t key, void *val)
{
    if (!t->slots || (t->len + 1) * 2 > t->mask + 1)
        grow(t);
    for (size_t i = home(t, key);; i = (i + 1) & t->mask) {
        chat_idtable_slot_t *s = &t->slots[i];
        if (!s->val) {
            s->key = key;
            s->val = val;
            t->len++;
            return NULL;
        }
        if (s->key == key) {
            void *was = s->val;
            s->val = val;
            return was;
        }
    }
}

void *chat_idtable_del(chat_idtable_t *t, uint64_t key)
{
    if (!t->slots)
        return NULL;
    size_t i = home(t, key);
    for (;; i = (i + 1) & t->mask) {
        if (!t->slots[i].val)
            return NULL;
        if (t->slots[i].key == key)
            break;
    }
    void *was = t->slots[i].val;
    /* Backward shift: move every later member of the run whose home is not
     * between the hole and its own position into the hole. */
    size_t hole = i;
    for (size_t j = (i + 1) & t->mask; t->slots[j].val; j = (j + 1) & t->mask) {
        size_t h = home(t, t->slots[j].key);
        /* j may move into hole when h is cyclically outside (hole, j]. */
        if (hole <= j ? (h <= hole || h > j) : (h <= hole && h > j)) {
            t->slots[hole] = t->slots[j];
            hole = j;
        }
    }
    t->slots[hole].val = NULL;
    t->slots[hole].key = 0;
    t->len--;
    return was;
}

size_t chat_idtable_next(const chat_idtable_t *t, size_t pos, uint64_t *key, void **val)
{
    if (!t->slots)
        return 0;
    for (size_t i = pos; i <= t->mask; i++) {
        if (t->slots[i].val) {
            *key = t->slots[i].key;
            *val = t->slots[i].val;
            return i + 1;
        }
    }
    return 0;
}
