/*
 * Hash table from 64-bit ids to pointers, with open addressing and linear
 * probing, growing by doubling past half full and deleting by backward shift
 * (no tombstones). The one map of chatd for integer keys: subscribers by user,
 * followers by conversation, and so on. Not thread-safe: one owner thread.
 */
#ifndef CHAT_CORE_IDTABLE_H
#define CHAT_CORE_IDTABLE_H

#include <stddef.h>
#include <stdint.h>

typedef struct chat_idtable_slot {
    uint64_t key;
    void *val; /* NULL: empty slot */
} chat_idtable_slot_t;

typedef struct chat_idtable {
    chat_idtable_slot_t *slots;
    size_t mask; /* capacity - 1; capacity is 0 before the first insert */
    size_t len;
} chat_idtable_t;

/** An empty table; allocates nothing until the first insert. */
void chat_idtable_init(chat_idtable_t *t);
/** Frees the slots (not the values); t may be reused after chat_idtable_init. */
void chat_idtable_dispose(chat_idtable_t *t);

/** The value stored under key, or NULL. */
void *chat_idtable_get(const chat_idtable_t *t, uint64_t key);
/**
 * Stores val (not NULL) under key, replacing any earlier value, which is
 * returned (NULL when the key was new).
 */
void *chat_idtable_put(chat_idtable_t *t, uint64_t key, void *val);
/** Removes key; returns the value it had, or NULL. */
void *chat_idtable_del(chat_idtable_t *t, uint64_t key);

static inline size_t chat_idtable_len(const chat_idtable_t *t)
{
    return t->len;
}

/**
 * Iteration: for (size_t i = 0; (i = chat_idtable_next(t, i, &k, &v)) != 0;)
 * visits every entry once; the table must not change meanwhile.
 * Returns the position to pass next time, or 0 at the end.
 */
size_t chat_idtable_next(const chat_idtable_t *t, size_t pos, uint64_t *key, void **val);

#endif
