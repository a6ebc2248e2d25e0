/*
 * JSON output helpers and UTF-8 checks. Responses are written straight into a
 * chat_buf_t (no intermediate tree); request bodies are parsed with jansson
 * elsewhere. Lengths in the contract count Unicode code points, so the
 * validator here also counts them.
 */
#ifndef CHAT_CORE_JSON_H
#define CHAT_CORE_JSON_H

#include "core/buf.h"

#include <stddef.h>

/** Appends s (len bytes, valid UTF-8) as a quoted, escaped JSON string. */
void chat_json_put_str(chat_buf_t *b, const char *s, size_t len);
/** Appends s as a JSON string, or null when s is NULL. */
void chat_json_put_cstr_or_null(chat_buf_t *b, const char *s);

/**
 * Number of code points in s if it is valid UTF-8 (no overlongs, no
 * surrogates, nothing above U+10FFFF), else -1.
 */
long chat_utf8_count(const char *s, size_t len);

/**
 * Writes the error body {"error": {"code": code, "message": message}}.
 * Both strings are plain ASCII literals chosen by the server.
 */
void chat_json_error(chat_buf_t *b, const char *code, const char *message);

#endif
