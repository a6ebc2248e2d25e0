/*
 * The generic cell rate algorithm (GCRA) and a bounded table of its state
 * per key, for rate limits a process enforces by itself. A limit of RATE
 * events per period with bursts of BURST is an emission interval
 * T = period / RATE and a tolerance BURST * T; a key's whole state is one
 * time, its theoretical arrival time (TAT). No I/O, no clock: callers pass
 * the time in microseconds on a clock of their choice.
 */
#ifndef CHAT_CORE_GCRA_H
#define CHAT_CORE_GCRA_H

#include "core/alloc.h"

#include <stddef.h>
#include <stdint.h>

typedef struct chat_gcra {
    int64_t interval_us;  /* T: one event's share of the period, >= 1 */
    int64_t tolerance_us; /* BURST * T: how far ahead of now the TAT may run */
} chat_gcra_t;

/**
 * The parameters of rate events per period_s seconds with bursts of burst
 * (each >= 1): T = period_s / rate rounded to the microsecond (at least 1).
 */
chat_gcra_t chat_gcra_make(int rate, int period_s, int burst);

/**
 * One event at time now for a key whose TAT is *tat (0, or any time <= now,
 * for a key with no state). Returns 0 when the event conforms, *tat then
 * moved to its new value; otherwise the microseconds until it would
 * conform (> 0), *tat unchanged. A fresh key takes BURST events at once,
 * then one every T.
 */
int64_t chat_gcra_update(const chat_gcra_t *g, int64_t *tat, int64_t now);

/** Whole seconds to wait for wait_us microseconds: rounded up, at least 1. */
int chat_gcra_retry_after_s(int64_t wait_us);

/*
 * The table: a key (a string of at most CHAT_GCRA_KEY_MAX - 1 bytes) with
 * its TAT, at most max_keys of them. A key whose TAT has passed holds
 * nothing a fresh key would not, so it is dropped as soon as it is seen so
 * (the least recently used keys are looked at on each update); when the
 * table is full all the same, the least recently used key is dropped: its
 * next event starts from a full burst. Safe from every thread (one mutex).
 */
typedef struct chat_gcra_table chat_gcra_table_t;

#define CHAT_GCRA_KEY_MAX 128

/** Creates an empty table of at most max_keys keys (>= 1). */
chat_gcra_table_t *chat_gcra_table_create(size_t max_keys) CHAT_MUSTCHECK;
void chat_gcra_table_destroy(chat_gcra_table_t *t);

/**
 * chat_gcra_update for key under g at time now (the table's clock: every
 * caller must use the same one). A key longer than CHAT_GCRA_KEY_MAX - 1 is
 * cut there. Returns 0 or the wait in microseconds, as chat_gcra_update.
 */
int64_t chat_gcra_table_update(chat_gcra_table_t *t, const chat_gcra_t *g, const char *key,
                               int64_t now);

/** Keys held now. */
size_t chat_gcra_table_len(chat_gcra_table_t *t);

/** Keys dropped while their TAT was still ahead (the table was full), since creation. */
uint64_t chat_gcra_table_evictions(chat_gcra_table_t *t);

#endif
