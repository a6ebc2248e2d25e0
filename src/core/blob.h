/*
 * Immutable bytes shared by reference within one worker loop (the count is
 * not atomic): one coalesced answer handed to every read that waited for it
 * and written to each of their connections, without a copy for each.
 */
#ifndef CHAT_CORE_BLOB_H
#define CHAT_CORE_BLOB_H

#include <stddef.h>

typedef struct chat_blob {
    unsigned refs;
    size_t len;
    char *data; /* len bytes, then a NUL */
} chat_blob_t;

/** Takes over data (malloc'd, len bytes followed by a NUL): no copy. One reference. */
chat_blob_t *chat_blob_adopt(char *data, size_t len);
/** A copy of len bytes of data (a NUL is added). One reference. */
chat_blob_t *chat_blob_copy(const char *data, size_t len);
/** Another reference to b; returns b. */
chat_blob_t *chat_blob_ref(chat_blob_t *b);
/** Drops a reference (NULL: nothing); the last one frees the bytes. */
void chat_blob_unref(chat_blob_t *b);

#endif
