/*
 * What of a request target may be written to a log: the target with the
 * value of every query parameter that may carry a credential replaced.
 * WebSocket clients pass their bearer token as "?token=" (browsers cannot
 * set headers there), so a logged target would otherwise hold one.
 */
#ifndef CHAT_NET_HTTP_REDACT_H
#define CHAT_NET_HTTP_REDACT_H

#include "core/buf.h"

#include <stddef.h>

/** What a redacted value reads as. */
#define CHAT_HTTP_REDACTED "REDACTED"

/**
 * Appends target (len bytes: a path, maybe a query after '?', maybe cut
 * short) to out, with the value of each query parameter whose name,
 * percent-decoded, contains "token" in any case replaced by
 * CHAT_HTTP_REDACTED. A name that does not decode is taken as such a name:
 * only what cannot be a token is written as it came.
 */
void chat_http_target_redact(chat_buf_t *out, const char *target, size_t len);

#endif
