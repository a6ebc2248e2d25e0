/*
 * Allocation that cannot fail. chatd treats out-of-memory as fatal: every
 * wrapper here aborts with a message instead of returning NULL, so callers
 * never carry NULL checks for allocation.
 */
#ifndef CHAT_CORE_ALLOC_H
#define CHAT_CORE_ALLOC_H

#include <stddef.h>

#define CHAT_MUSTCHECK __attribute__((warn_unused_result))
#define CHAT_UNUSED(x) ((void)(x))
#define CHAT_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/**
 * The process's allocation policy, called once at start: blocks of 1 MiB and
 * more (large answers, pages, Redis replies) are mapped on their own and
 * given back to the system when freed, rather than kept in the heap once the
 * peak that needed them is over (glibc's default threshold moves up to the
 * largest block freed, so a burst of multi-megabyte answers would stay
 * resident). Returns 0, or -1 when the allocator does not take the setting.
 */
int chat_alloc_policy_init(void);

/** malloc() that aborts on failure. The caller owns the memory. */
void *chat_malloc(size_t size);
/** calloc() that aborts on failure. */
void *chat_calloc(size_t n, size_t size);
/** realloc() that aborts on failure. */
void *chat_realloc(void *p, size_t size);
/** Copy of s (NUL-terminated); the caller frees. */
char *chat_strdup(const char *s);
/** Copy of the first n bytes of s plus a NUL; the caller frees. */
char *chat_strndup(const char *s, size_t n);

#endif
