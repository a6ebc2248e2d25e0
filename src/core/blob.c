/* Reference-counted immutable bytes (see blob.h). */
#include "core/blob.h"
#include "core/alloc.h"

#include <stdlib.h>

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
    return chat_blob_adopt(chat_strndup(data, len), len);
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
