/*
 * Redis Cluster hash slots: the CRC16 of a key (CCITT/XMODEM: polynomial
 * 0x1021, initial value 0, no reflection), the hash tag rule that lets keys
 * share a slot, and one short tag per slot for keys that must sit beside
 * another key whose tag is not chatd's to choose (the cache's epoch).
 */
#ifndef CHAT_REDIS_SLOT_H
#define CHAT_REDIS_SLOT_H

#include <stddef.h>
#include <stdint.h>

/** Number of hash slots of a Redis Cluster. */
#define CHAT_REDIS_SLOTS 16384

/** Longest text of a slot tag (chat_redis_slot_tag), NUL included. */
#define CHAT_REDIS_SLOT_TAG_MAX 12

/** CRC16 (XMODEM) of len bytes at p; "123456789" gives 0x31C3. */
uint16_t chat_redis_crc16(const char *p, size_t len);

/**
 * The hash slot of a key: the CRC16 of its hash tag modulo 16384. The tag is
 * the text between the first '{' and the first '}' after it, when that text
 * is not empty; otherwise the whole key is hashed.
 */
unsigned chat_redis_key_slot(const char *key, size_t len);

/**
 * Writes into out (CHAT_REDIS_SLOT_TAG_MAX bytes) a short text whose slot is
 * slot (< 16384): "{" tag "}" in a key puts the key on that slot. The same
 * text every time, in every process. Returns its length.
 */
size_t chat_redis_slot_tag(unsigned slot, char out[CHAT_REDIS_SLOT_TAG_MAX]);

#endif
