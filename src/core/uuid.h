/*
 * Random (version 4) UUIDs as text, from the system's random source: the
 * operation ids of creating writes and the origin id of an instance.
 */
#ifndef CHAT_CORE_UUID_H
#define CHAT_CORE_UUID_H

#include "core/alloc.h"

/** 36 characters and a NUL. */
#define CHAT_UUID_LEN 37

/** Writes a new UUID into out. Returns 0, or CHAT_ERANDOM when no randomness is available. */
int chat_uuid_new(char out[CHAT_UUID_LEN]) CHAT_MUSTCHECK;

/** Formats 16 bytes as a version 4 UUID (the version and variant bits are set). */
void chat_uuid_format(char out[CHAT_UUID_LEN], const unsigned char raw[16]);

#endif
