/*
 * Base64 (RFC 4648): the standard alphabet with padding, as the WebSocket
 * handshake uses it, and the URL-safe alphabet without padding, as bearer
 * tokens use it.
 */
#ifndef CHAT_CORE_BASE64_H
#define CHAT_CORE_BASE64_H

#include <stdbool.h>
#include <stddef.h>

enum chat_base64_alphabet {
    CHAT_BASE64_STD, /* A-Z a-z 0-9 + /, padded with '=' */
    CHAT_BASE64_URL, /* A-Z a-z 0-9 - _, no padding */
};

/** Characters chat_base64_encode writes for n bytes (without the NUL). */
size_t chat_base64_encoded_len(size_t n, enum chat_base64_alphabet a);

/**
 * Encodes n bytes of in into out, which has room for
 * chat_base64_encoded_len(n, a) + 1 bytes; NUL-terminates. Returns the
 * length written (without the NUL).
 */
size_t chat_base64_encode(char *out, const void *in, size_t n, enum chat_base64_alphabet a);

/**
 * Decodes len characters of text in alphabet a (padding required for STD,
 * refused for URL) into out, which has room for len * 3 / 4 bytes. Returns
 * the number of bytes, or -1 when the text is not canonical base64 of a.
 */
long chat_base64_decode(void *out, const char *text, size_t len, enum chat_base64_alphabet a);

#endif
