/*
 * Per-route request metrics of the HTTP server: a count and a latency
 * histogram per route template, method and status. The series are looked up
 * in the process-wide registry once and kept in a per-server table, so that
 * recording an answer takes no lock and allocates nothing after warm-up.
 */
#ifndef CHAT_NET_HTTP_METRICS_H
#define CHAT_NET_HTTP_METRICS_H

#include "core/idtable.h"
#include "core/metrics.h"

/** The series of one server (one loop); not thread-safe. */
typedef struct chat_http_metrics {
    chat_metric_family_t *_requests;  /* chatd_http_requests_total */
    chat_metric_family_t *_durations; /* chatd_http_request_duration_seconds */
    chat_idtable_t _series;           /* hash of (route, method, status) -> struct series */
} chat_http_metrics_t;

/** Registers (or finds) the two families; allocates nothing else yet. */
void chat_http_metrics_init(chat_http_metrics_t *m);
/** Frees the table (the series stay in the registry, which outlives servers). */
void chat_http_metrics_dispose(chat_http_metrics_t *m);

/**
 * Counts one answer with status to a request of route (a string literal: its
 * address is the key) and method (enum http_method, named method_str), which
 * took seconds from its head to its answer.
 */
void chat_http_metrics_record(chat_http_metrics_t *m, const char *route, int method,
                              const char *method_str, int status, double seconds);

#endif
