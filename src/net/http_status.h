/*
 * The reason phrases of HTTP status codes, for status lines (RFC 9110
 * section 15). One table, shared by every answer chatd writes.
 */
#ifndef CHAT_NET_HTTP_STATUS_H
#define CHAT_NET_HTTP_STATUS_H

/** Reason phrase of a status code ("Not Found"); "Unknown" if not known. Never NULL. */
const char *chat_http_status_text(int status);

#endif
