/* Reference-counted immutable bytes (see blob.h). */
#include "core/blob.h"
#include "core/alloc.h"

#include <stdlib.h>
#include <string.h>

chat_blob_t *chat_blob_adopt(char *data, size_t len)
{
    chat_blob_t *b = chat_malloc(sizeof *b);
    b->refs = 1;
    b->len = len;
    b->data = data;
    return b;
}

chat_blob_t *chat_blob_copy(const char *data, size_t len)
{
    char *d = chat_malloc(len + 1);
    if (len)
        memcpy(d, data, len);
    d[len] = '\0';
    return chat_blob_adopt(d, len);
}

chat_blob_t *chat_blob_ref(chat_blob_t *b)
{
    b->refs++;
    return b;
}

void chat_blob_unref(chat_blob_t *b)
{
    if (!b || --b->refs > 0)
        return;
    free(b->data);
    free(b);
}
