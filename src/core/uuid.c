/*
 * Version 4 UUIDs (see uuid.h): 122 random bits from getrandom through
 * libuv, formatted 8-4-4-4-12 in lower-case hex.
 */
#include "core/uuid.h"
#include "core/error.h"

#include <uv.h>

void chat_uuid_format(char out[CHAT_UUID_LEN], const unsigned char raw[16])
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < 16; i++) {
        unsigned char b = raw[i];
        if (i == 6)
            b = (unsigned char)((b & 0x0f) | 0x40); /* version 4 */
        else if (i == 8)
            b = (unsigned char)((b & 0x3f) | 0x80); /* variant 1 */
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[b >> 4];
        out[o++] = hex[b & 15];
    }
    out[o] = '\0';
}

int chat_uuid_new(char out[CHAT_UUID_LEN])
{
    unsigned char raw[16];
    if (uv_random(NULL, NULL, raw, sizeof raw, 0, NULL) != 0)
        return CHAT_ERANDOM;
    chat_uuid_format(out, raw);
    return 0;
}
