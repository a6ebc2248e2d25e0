/*
 * Allocation wrappers that abort on out-of-memory (see alloc.h).
 */
#include "core/alloc.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MMAP_THRESHOLD (1024 * 1024)

int chat_alloc_policy_init(void)
{
    return mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 ? 0 : -1;
}

static void oom(size_t size)
{
    fprintf(stderr, "level=fatal event=out_of_memory size=%zu\n", size);
    abort();
}

void *chat_malloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (!p)
        oom(size);
    return p;
}

void *chat_calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        oom(n * size);
    return p;
}

void *chat_realloc(void *p, size_t size)
{
    void *q = realloc(p, size ? size : 1);
    if (!q)
        oom(size);
    return q;
}

char *chat_strndup(const char *s, size_t n)
{
    char *p = chat_malloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *chat_strdup(const char *s)
{
    return chat_strndup(s, strlen(s));
}
