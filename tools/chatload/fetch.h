/*
 * One HTTP GET at a time on a fresh connection (Connection: close) on a
 * libuv loop, its whole body handed to a callback: the realtime stage's
 * /metrics scrapes.
 */
#ifndef CHATLOAD_FETCH_H
#define CHATLOAD_FETCH_H

#include "chatload.h"

#include <http_parser.h>
#include <stdbool.h>
#include <uv.h>

/** The answer: status 0 on a transport error, a cancel or an incomplete answer;
 *  body valid during the call. Runs once the connection is closed, so the
 *  callback may start the next fetch. */
typedef void (*cl_fetch_cb)(int status, const char *body, size_t len, void *ud);

typedef struct {
    uv_tcp_t _tcp;
    uv_connect_t _connect;
    uv_write_t _write;
    http_parser _parser;
    http_parser_settings _settings;
    char _req[256];
    char *_body;
    size_t _len, _cap;
    bool _busy, _done;
    int _status;
    cl_fetch_cb _cb;
    void *_ud;
} cl_fetch_t;

/** Zeroes f. */
void cl_fetch_init(cl_fetch_t *f);
/** Starts GET path at u; cb runs once. -1 when one is already in flight. */
int cl_fetch_get(cl_fetch_t *f, uv_loop_t *loop, const cl_url_t *u, const char *path,
                 cl_fetch_cb cb, void *ud);
/** True while a GET is in flight (until its callback has run). */
bool cl_fetch_busy(const cl_fetch_t *f);
/** Stops a GET in flight: its callback runs with status 0. */
void cl_fetch_cancel(cl_fetch_t *f);
/** Frees the body buffer; f must not be busy. */
void cl_fetch_dispose(cl_fetch_t *f);

#endif
