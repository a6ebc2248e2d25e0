/*
 * Hash slots of Redis Cluster (see slot.h): the CRC16 computed bit by bit
 * from its definition, the hash tag rule, and the table of one tag per slot,
 * built once per process from the decimal numbers in order.
 */
#include "redis/slot.h"

#include <stdio.h>
#include <string.h>
#include <uv.h>

uint16_t chat_redis_crc16(const char *p, size_t len)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)((uint16_t)(unsigned char)p[i] << 8);
        for (int bit = 0; bit < 8; bit++)
            crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc;
}

unsigned chat_redis_key_slot(const char *key, size_t len)
{
    const char *open = memchr(key, '{', len);
    if (open) {
        size_t rest = len - (size_t)(open - key) - 1;
        const char *close = memchr(open + 1, '}', rest);
        if (close && close > open + 1)
            return chat_redis_crc16(open + 1, (size_t)(close - open - 1)) & (CHAT_REDIS_SLOTS - 1);
    }
    return chat_redis_crc16(key, len) & (CHAT_REDIS_SLOTS - 1);
}

/* tags[s]: the smallest number whose decimal text hashes to slot s. */
static uint32_t tags[CHAT_REDIS_SLOTS];
static uv_once_t tags_once = UV_ONCE_INIT;

static void tags_build(void)
{
    unsigned found = 0;
    char text[CHAT_REDIS_SLOT_TAG_MAX];
    static unsigned char seen[CHAT_REDIS_SLOTS];
    /* About 16384 * ln 16384 numbers are needed; a 32-bit counter never runs out. */
    for (uint32_t n = 0; found < CHAT_REDIS_SLOTS; n++) {
        int len = snprintf(text, sizeof text, "%u", n);
        unsigned s = chat_redis_crc16(text, (size_t)len) & (CHAT_REDIS_SLOTS - 1);
        if (!seen[s]) {
            seen[s] = 1;
            tags[s] = n;
            found++;
        }
    }
}

size_t chat_redis_slot_tag(unsigned slot, char out[CHAT_REDIS_SLOT_TAG_MAX])
{
    uv_once(&tags_once, tags_build);
    return (size_t)snprintf(out, CHAT_REDIS_SLOT_TAG_MAX, "%u",
                            tags[slot & (CHAT_REDIS_SLOTS - 1)]);
}
