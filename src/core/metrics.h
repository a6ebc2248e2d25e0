/*
 * Prometheus metrics: a process-wide registry of counter, gauge and histogram
 * families, each holding series keyed by their label set, rendered in the text
 * exposition format 0.0.4. Updates are lock-free atomics, safe from every
 * worker thread; only looking up or creating a series takes a lock, so hot
 * paths look a series up once and keep the pointer.
 */
#ifndef CHAT_CORE_METRICS_H
#define CHAT_CORE_METRICS_H

#include "core/buf.h"

#include <stdint.h>

typedef struct chat_metric_family chat_metric_family_t;
typedef struct chat_metric chat_metric_t;

/**
 * Registers (or finds, if the name is already registered) a family. Names and
 * help texts must be string literals or otherwise outlive the process.
 */
chat_metric_family_t *chat_metrics_counter(const char *name, const char *help);
chat_metric_family_t *chat_metrics_gauge(const char *name, const char *help);
/** bounds: ascending upper bounds of the buckets, without +Inf; copied. */
chat_metric_family_t *chat_metrics_histogram(const char *name, const char *help,
                                             const double *bounds, int nbounds);

/**
 * The series of a family with the given labels, e.g. `route="/x",method="GET"`
 * (already escaped), or "" for none. Created on first use; the pointer stays
 * valid for the life of the process.
 */
chat_metric_t *chat_metric_series(chat_metric_family_t *f, const char *labels);

/** The one series of a counter or gauge without labels (registered on first use). */
chat_metric_t *chat_metric_counter(const char *name, const char *help);
chat_metric_t *chat_metric_gauge(const char *name, const char *help);

/** Counter or gauge: adds v (gauges may go down). */
void chat_metric_add(chat_metric_t *m, double v);
void chat_metric_inc(chat_metric_t *m);
/** Gauge: sets the value. */
void chat_metric_set(chat_metric_t *m, double v);
/** Counter or gauge: the current value. */
double chat_metric_value(const chat_metric_t *m);
/** Histogram: records one observation. */
void chat_metric_observe(chat_metric_t *m, double v);
/** Histogram: number of observations and the q-quantile estimated from buckets. */
uint64_t chat_metric_hist_count(const chat_metric_t *m);
double chat_metric_hist_quantile(const chat_metric_t *m, double q);

/** A hook run before each rendering of /metrics (to refresh gauges). */
typedef void (*chat_metrics_render_fn)(void *arg);

/** Hook called at the start of every render, e.g. to refresh derived gauges. */
void chat_metrics_on_render(chat_metrics_render_fn fn, void *arg);
/** Removes a hook added with the same fn and arg (before arg is freed). */
void chat_metrics_off_render(chat_metrics_render_fn fn, const void *arg);

/** Appends the whole registry in text format 0.0.4. */
void chat_metrics_render(chat_buf_t *out);

/** Default latency buckets in seconds (0.5 ms .. 60 s). */
extern const double chat_metrics_latency_bounds[];
extern const int chat_metrics_latency_nbounds;

#endif
