/*
 * The worker's copy of cached values (see local.h).
 */
#include "cache/local.h"

#include "core/alloc.h"
#include "core/hash.h"

#include <stdlib.h>
#include <string.h>

#define SWEEP_PER_PUT 2

typedef struct slot {
    char *mem; /* prefix \0 vkey \0 value, one allocation; NULL = empty */
    size_t plen, klen, vlen;
    uint64_t expires; /* loop ms */
} slot_t;

struct chat_cache_local {
    slot_t *slots;
    size_t mask;
    size_t bytes, max_bytes;
    size_t sweep; /* next slot the sweep looks at */
};

static size_t slot_size(const slot_t *s)
{
    return s->plen + s->klen + s->vlen + 2;
}

static void slot_clear(chat_cache_local_t *l, slot_t *s)
{
    if (!s->mem)
        return;
    l->bytes -= slot_size(s);
    free(s->mem);
    s->mem = NULL;
}

chat_cache_local_t *chat_cache_local_create(size_t slots, size_t max_bytes)
{
    size_t n = 1;
    while (n < slots)
        n <<= 1;
    chat_cache_local_t *l = chat_calloc(1, sizeof *l);
    l->slots = chat_calloc(n, sizeof *l->slots);
    l->mask = n - 1;
    l->max_bytes = max_bytes;
    return l;
}

void chat_cache_local_destroy(chat_cache_local_t *l)
{
    if (!l)
        return;
    for (size_t i = 0; i <= l->mask; i++)
        free(l->slots[i].mem);
    free(l->slots);
    free(l);
}

int chat_cache_local_get(chat_cache_local_t *l, const char *prefix, uint64_t now_ms,
                         chat_cache_local_entry_t *out)
{
    slot_t *s = &l->slots[chat_hash_str(prefix) & l->mask];
    if (!s->mem)
        return 0;
    if (s->expires <= now_ms) {
        slot_clear(l, s);
        return 0;
    }
    if (strcmp(s->mem, prefix) != 0)
        return 0;
    out->vkey = s->mem + s->plen + 1;
    out->val = out->vkey + s->klen + 1;
    out->len = s->vlen;
    return 1;
}

void chat_cache_local_put(chat_cache_local_t *l, const char *prefix, const char *vkey,
                          const char *val, size_t len, uint64_t now_ms, uint64_t expires_ms)
{
    for (int i = 0; i < SWEEP_PER_PUT; i++) {
        slot_t *x = &l->slots[l->sweep++ & l->mask];
        if (x->mem && x->expires <= now_ms)
            slot_clear(l, x);
    }
    slot_t *s = &l->slots[chat_hash_str(prefix) & l->mask];
    slot_clear(l, s);
    size_t plen = strlen(prefix), klen = strlen(vkey);
    size_t need = plen + klen + len + 2;
    if (expires_ms <= now_ms || l->bytes + need > l->max_bytes)
        return;
    char *m = malloc(need);
    if (!m)
        return; /* the copy is an optimisation: without memory, go without */
    memcpy(m, prefix, plen + 1);
    memcpy(m + plen + 1, vkey, klen + 1);
    memcpy(m + plen + 1 + klen + 1, val, len);
    s->mem = m;
    s->plen = plen;
    s->klen = klen;
    s->vlen = len;
    s->expires = expires_ms;
    l->bytes += need;
}

size_t chat_cache_local_bytes(const chat_cache_local_t *l)
{
    return l->bytes;
}
