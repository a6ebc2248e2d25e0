/*
 * The bounded memo (see memo.h): slots of a key and a non-zero value, linear
 * probing, cleared whole when half full.
 */
#include "core/memo.h"
#include "core/alloc.h"
#include "core/hash.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef struct slot {
    int64_t val; /* 0: empty */
    unsigned char key[CHAT_MEMO_MAX_KEY];
} slot_t;

struct chat_memo {
    slot_t *slots;
    size_t mask;
    size_t keylen;
    size_t used;
};

chat_memo_t *chat_memo_create(size_t slots, size_t keylen)
{
    size_t n = 16;
    while (n < slots)
        n <<= 1;
    if (keylen == 0 || keylen > CHAT_MEMO_MAX_KEY)
        abort();
    chat_memo_t *m = chat_calloc(1, sizeof *m);
    m->slots = chat_calloc(n, sizeof *m->slots);
    m->mask = n - 1;
    m->keylen = keylen;
    return m;
}

void chat_memo_destroy(chat_memo_t *m)
{
    if (!m)
        return;
    free(m->slots);
    free(m);
}

int64_t chat_memo_get(const chat_memo_t *m, const void *key)
{
    for (size_t i = chat_hash_bytes(key, m->keylen) & m->mask;; i = (i + 1) & m->mask) {
        const slot_t *s = &m->slots[i];
        if (!s->val)
            return 0;
        if (!memcmp(s->key, key, m->keylen))
            return s->val;
    }
}

static void store(chat_memo_t *m, const void *key, int64_t val, bool replace)
{
    if (!val)
        return;
    if ((m->used + 1) * 2 > m->mask + 1) { /* half full: forget everything */
        memset(m->slots, 0, (m->mask + 1) * sizeof *m->slots);
        m->used = 0;
    }
    for (size_t i = chat_hash_bytes(key, m->keylen) & m->mask;; i = (i + 1) & m->mask) {
        slot_t *s = &m->slots[i];
        if (!s->val) {
            memcpy(s->key, key, m->keylen);
            s->val = val;
            m->used++;
            return;
        }
        if (!memcmp(s->key, key, m->keylen)) {
            if (replace)
                s->val = val;
            return;
        }
    }
}

void chat_memo_put(chat_memo_t *m, const void *key, int64_t val)
{
    store(m, key, val, false);
}

void chat_memo_set(chat_memo_t *m, const void *key, int64_t val)
{
    store(m, key, val, true);
}

size_t chat_memo_len(const chat_memo_t *m)
{
    return m->used;
}
