/*
 * A bounded memory of facts that never become false, keyed by fixed-size
 * binary keys: "this token hash is user 42", "user 7 is a member of
 * conversation 3" (or, with chat_memo_set, facts that hold until a time the
 * value tells). Open addressing over a fixed power-of-two number of
 * slots; when half full it forgets everything and refills on demand, so its
 * memory is fixed and no entry is ever evicted one by one. Per worker, one
 * owner thread.
 */
#ifndef CHAT_CORE_MEMO_H
#define CHAT_CORE_MEMO_H

#include <stddef.h>
#include <stdint.h>

typedef struct chat_memo chat_memo_t;

/** Keys are at most this long. */
#define CHAT_MEMO_MAX_KEY 32

/**
 * A memo of slots (rounded up to a power of two) for keys of exactly keylen
 * bytes (1..CHAT_MEMO_MAX_KEY). Keys should be uniformly distributed or pass
 * through chat_hash first; the memo hashes them with FNV-1a.
 */
chat_memo_t *chat_memo_create(size_t slots, size_t keylen);
void chat_memo_destroy(chat_memo_t *m);

/** The value remembered for key, or 0. */
int64_t chat_memo_get(const chat_memo_t *m, const void *key);
/** Remembers val (not 0) for key; a key already present keeps its first value. */
void chat_memo_put(chat_memo_t *m, const void *key, int64_t val);
/**
 * Remembers val (not 0) for key, replacing what was there: for values that
 * are renewed, such as the time until which a "no" holds.
 */
void chat_memo_set(chat_memo_t *m, const void *key, int64_t val);
/** Entries held now. */
size_t chat_memo_len(const chat_memo_t *m);

#endif
