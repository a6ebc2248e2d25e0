/*
 * Decimal numbers in text: the one scanner behind chatd's parsers of ids,
 * revs and counts (query strings, stream frames, Redis payloads, channel
 * names). Each caller adds its own rules (what may follow, leading zeros).
 */
#ifndef CHAT_CORE_NUM_H
#define CHAT_CORE_NUM_H

#include <stdint.h>

/**
 * Reads the decimal digits at p (before end) into *out: at least one, no
 * sign, the value at most max (>= 0). Returns the first byte after the
 * digits, or NULL when there is no digit or the value is over max.
 */
static inline const char *chat_scan_u64(const char *p, const char *end, int64_t max, int64_t *out)
{
    const char *q = p;
    int64_t v = 0;
    for (; q < end && *q >= '0' && *q <= '9'; q++) {
        int d = *q - '0';
        /* d > max first: (max - d) / 10 rounds toward zero when negative. */
        if (d > max || v > (max - d) / 10)
            return NULL;
        v = v * 10 + d;
    }
    if (q == p)
        return NULL;
    *out = v;
    return q;
}

#endif
