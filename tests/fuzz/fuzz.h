/*
 * Shared by the libFuzzer harnesses of tests/fuzz/: FUZZ_CHECK, the
 * invariant check that aborts with a message (libFuzzer keeps the input as a
 * crash), and the splitter that cuts an input into the pieces a socket or a
 * reader would deliver, from two control bytes the input starts with.
 */
#ifndef CHAT_FUZZ_FUZZ_H
#define CHAT_FUZZ_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz: invariant broken at %s:%d: %s\n", __FILE__, __LINE__, #cond);   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/*
 * Cuts len bytes into pieces of 1..max bytes, deterministically from seed:
 * the same input is always cut the same way, and a harness compares what
 * the pieces gave with what the whole gave.
 */
typedef struct fuzz_split {
    uint32_t state;
    size_t max;
    size_t off, len;
} fuzz_split_t;

static inline void fuzz_split_init(fuzz_split_t *s, uint16_t seed, size_t len)
{
    s->state = 0x9e3779b9u ^ ((uint32_t)seed * 2654435761u);
    if (s->state == 0)
        s->state = 1;
    /* Small pieces (1..8 bytes) half the time, up to 512 otherwise. */
    s->max = (seed & 1) ? 8 : 512;
    s->off = 0;
    s->len = len;
}

/* The length of the next piece, 0 at the end. */
static inline size_t fuzz_split_next(fuzz_split_t *s)
{
    if (s->off >= s->len)
        return 0;
    s->state ^= s->state << 13;
    s->state ^= s->state >> 17;
    s->state ^= s->state << 5;
    size_t n = 1 + s->state % s->max;
    if (n > s->len - s->off)
        n = s->len - s->off;
    s->off += n;
    return n;
}

#endif
