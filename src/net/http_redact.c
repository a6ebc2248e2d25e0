/*
 * Redacting request targets for logs (see http_redact.h).
 */
#include "net/http_redact.h"

#include <stdbool.h>
#include <string.h>

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* True when the name [s, s+len), percent-decoded and lowercased, contains "token" or does not
 * decode. */
static bool secret_name(const char *s, size_t len)
{
    static const char word[] = "token";
    size_t matched = 0; /* bytes of word matched so far (naive search: word has no repeats) */
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '%') {
            if (i + 2 >= len || hexval(s[i + 1]) < 0 || hexval(s[i + 2]) < 0)
                return true;
            c = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        }
        if (c >= 'A' && c <= 'Z')
            c = (char)(c + 32);
        if (c == word[matched])
            matched++;
        else
            matched = c == word[0] ? 1 : 0;
        if (matched == sizeof word - 1)
            return true;
    }
    return false;
}

void chat_http_target_redact(chat_buf_t *out, const char *target, size_t len)
{
    const char *q = memchr(target, '?', len);
    if (!q) {
        chat_buf_append(out, target, len);
        return;
    }
    size_t pos = (size_t)(q - target) + 1;
    chat_buf_append(out, target, pos);
    while (pos < len) {
        const char *s = target + pos;
        const char *amp = memchr(s, '&', len - pos);
        size_t plen = amp ? (size_t)(amp - s) : len - pos;
        const char *eq = memchr(s, '=', plen);
        if (eq && secret_name(s, (size_t)(eq - s))) {
            chat_buf_append(out, s, (size_t)(eq - s) + 1);
            chat_buf_puts(out, CHAT_HTTP_REDACTED);
        } else {
            chat_buf_append(out, s, plen);
        }
        pos += plen;
        if (amp) {
            chat_buf_putc(out, '&');
            pos++;
        }
    }
}
