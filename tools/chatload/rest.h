/*
 * A blocking HTTP/1.1 client on one keep-alive connection that sends
 * requests in pipelined batches and reads every answer: what the seeder and
 * the realtime stage's set-up use. Each read waits at most
 * CL_REST_TIMEOUT_S, so a stalled server fails a batch instead of hanging.
 */
#ifndef CHATLOAD_REST_H
#define CHATLOAD_REST_H

#include "chatload.h"

#include <http_parser.h>
#include <stddef.h>

#define CL_REST_TIMEOUT_S 60

typedef struct {
    int status;
    char *body; /* NUL-terminated, owned */
    size_t len;
} cl_resp_t;

typedef struct {
    int fd;
    http_parser parser;
    http_parser_settings settings;
    cl_resp_t *resps;
    int want, got;
    char *cur;
    size_t curlen;
} cl_bconn_t;

/** A growing text buffer. */
typedef struct {
    char *data;
    size_t len, cap;
} cl_sbuf_t;

/** Connects to u. 0, or -1 with errno set. */
int cl_bconn_open(cl_bconn_t *c, const cl_url_t *u);
void cl_bconn_close(cl_bconn_t *c);

/** Sends n pipelined requests (already formatted, concatenated in req) and
 *  reads n answers into resps (bodies owned by the caller: cl_resps_free).
 *  0, or -1 on a transport or parse error or a timeout. */
int cl_bconn_batch(cl_bconn_t *c, const char *req, size_t reqlen, cl_resp_t *resps, int n);

/** Frees the bodies of n answers. */
void cl_resps_free(cl_resp_t *r, int n);

void cl_sbuf_printf(cl_sbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/** Appends one request with a JSON body (token NULL: no Authorization). */
void cl_sbuf_request(cl_sbuf_t *b, const cl_url_t *u, const char *method, const char *path,
                     const char *token, const char *body);

#endif
