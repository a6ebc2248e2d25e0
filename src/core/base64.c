/*
 * Base64 encoder and strict decoder (see base64.h). The decoder accepts only
 * canonical text: right length, right padding, unused bits zero.
 */
#include "core/base64.h"

#include <stdint.h>

static const char std_alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char url_alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t chat_base64_encoded_len(size_t n, enum chat_base64_alphabet a)
{
    if (a == CHAT_BASE64_STD)
        return (n + 2) / 3 * 4;
    return n / 3 * 4 + (n % 3 ? n % 3 + 1 : 0);
}

size_t chat_base64_encode(char *out, const void *in, size_t n, enum chat_base64_alphabet a)
{
    const unsigned char *s = in;
    const char *alpha = a == CHAT_BASE64_STD ? std_alpha : url_alpha;
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        out[o++] = alpha[v >> 18 & 63];
        out[o++] = alpha[v >> 12 & 63];
        out[o++] = alpha[v >> 6 & 63];
        out[o++] = alpha[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)s[i] << 16;
        out[o++] = alpha[v >> 18 & 63];
        out[o++] = alpha[v >> 12 & 63];
        if (a == CHAT_BASE64_STD) {
            out[o++] = '=';
            out[o++] = '=';
        }
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8;
        out[o++] = alpha[v >> 18 & 63];
        out[o++] = alpha[v >> 12 & 63];
        out[o++] = alpha[v >> 6 & 63];
        if (a == CHAT_BASE64_STD)
            out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}

static int digit(char ch, enum chat_base64_alphabet a)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == (a == CHAT_BASE64_STD ? '+' : '-'))
        return 62;
    if (ch == (a == CHAT_BASE64_STD ? '/' : '_'))
        return 63;
    return -1;
}

long chat_base64_decode(void *out, const char *text, size_t len, enum chat_base64_alphabet a)
{
    unsigned char *d = out;
    size_t pad = 0;
    if (a == CHAT_BASE64_STD) {
        if (len % 4)
            return -1;
        while (pad < 2 && len > pad && text[len - 1 - pad] == '=')
            pad++;
        len -= pad;
    } else if (len % 4 == 1) {
        return -1;
    }
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = digit(text[i], a);
        if (v < 0)
            return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            d[o++] = (unsigned char)(acc >> bits);
        }
    }
    if (acc & ((1u << bits) - 1)) /* leftover bits must be zero */
        return -1;
    if (a == CHAT_BASE64_STD && pad != (size_t)(len % 4 ? 4 - len % 4 : 0))
        return -1;
    return (long)o;
}
