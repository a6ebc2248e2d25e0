/*
 * JSON output and UTF-8 validation (see json.h).
 */
#include "core/json.h"

#include <string.h>

void chat_json_put_str(chat_buf_t *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    chat_buf_reserve(b, len + 2);
    chat_buf_putc(b, '"');
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        chat_buf_append(b, s + start, i - start);
        start = i + 1;
        switch (c) {
        case '"':
            chat_buf_append(b, "\\\"", 2);
            break;
        case '\\':
            chat_buf_append(b, "\\\\", 2);
            break;
        case '\n':
            chat_buf_append(b, "\\n", 2);
            break;
        case '\r':
            chat_buf_append(b, "\\r", 2);
            break;
        case '\t':
            chat_buf_append(b, "\\t", 2);
            break;
        default: {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            chat_buf_append(b, esc, 6);
        }
        }
    }
    chat_buf_append(b, s + start, len - start);
    chat_buf_putc(b, '"');
}

void chat_json_put_cstr_or_null(chat_buf_t *b, const char *s)
{
    if (s)
        chat_json_put_str(b, s, strlen(s));
    else
        chat_buf_append(b, "null", 4);
}

long chat_utf8_count(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    long n = 0;
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
        } else if (c >= 0xC2 && c <= 0xDF) {
            if (i + 1 >= len || (s[i + 1] & 0xC0) != 0x80)
                return -1;
            i += 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            if (i + 2 >= len || (s[i + 1] & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80)
                return -1;
            unsigned cp = ((c & 0x0Fu) << 12) | ((s[i + 1] & 0x3Fu) << 6) | (s[i + 2] & 0x3Fu);
            if (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))
                return -1;
            i += 3;
        } else if (c >= 0xF0 && c <= 0xF4) {
            if (i + 3 >= len || (s[i + 1] & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80 ||
                (s[i + 3] & 0xC0) != 0x80)
                return -1;
            unsigned cp = ((c & 0x07u) << 18) | ((s[i + 1] & 0x3Fu) << 12) |
                          ((s[i + 2] & 0x3Fu) << 6) | (s[i + 3] & 0x3Fu);
            if (cp < 0x10000 || cp > 0x10FFFF)
                return -1;
            i += 4;
        } else {
            return -1;
        }
        n++;
    }
    return n;
}

void chat_json_error(chat_buf_t *b, const char *code, const char *message)
{
    chat_buf_puts(b, "{\"error\":{\"code\":");
    chat_json_put_str(b, code, strlen(code));
    chat_buf_puts(b, ",\"message\":");
    chat_json_put_str(b, message, strlen(message));
    chat_buf_puts(b, "}}");
}
