/*
 * Non-blocking host name resolution for libpq. libpq would call getaddrinfo()
 * itself and block the loop; instead the host name of a conninfo is looked up
 * on libuv's thread pool and libpq is handed the addresses as hostaddr.
 */
#ifndef CHAT_DB_RESOLVE_H
#define CHAT_DB_RESOLVE_H

#include <uv.h>

/** Most addresses handed to libpq from one lookup. */
#define CHAT_DB_RESOLVE_MAX_ADDRS 8

typedef struct chat_db_resolve chat_db_resolve_t;

/**
 * Fires exactly once per started lookup, on the loop. status 0: hosts and
 * addrs are matching comma-separated lists (the host name repeated, and its
 * addresses) for libpq's host and hostaddr. Otherwise a negative libuv code
 * and why, a sentence for logs; UV_ECANCELED after chat_db_resolve_cancel().
 * The strings live until the callback returns.
 */
typedef void (*chat_db_resolve_cb)(int status, const char *hosts, const char *addrs,
                                   const char *why, void *arg);

/**
 * The host name libpq would resolve with a blocking getaddrinfo(), as a copy
 * the caller frees, or NULL: none for socket directories, numeric addresses,
 * a given hostaddr, or a list of hosts (left to libpq). PGHOST from the
 * environment is not seen.
 */
char *chat_db_resolve_host(const char *conninfo);

/**
 * Starts looking host up. Returns 0 and sets *out (valid until cb fires), or
 * a negative libuv code, and then cb never fires. host must live until cb.
 */
int chat_db_resolve_start(uv_loop_t *loop, const char *host, chat_db_resolve_cb cb, void *arg,
                          chat_db_resolve_t **out);

/**
 * Abandons a lookup: its callback still fires once (maybe later, when the
 * thread pool is done with it), with UV_ECANCELED, so the owner knows when the
 * loop holds nothing of it any more.
 */
void chat_db_resolve_cancel(chat_db_resolve_t *r);

#endif
