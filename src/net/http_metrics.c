/*
 * Per-route request metrics (see http_metrics.h). The table is a core id
 * table keyed by a mixed hash of the route's address, the method and the
 * status; each entry keeps its own key fields, and a hash collision moves on
 * to the next key, so two series never share an entry.
 */
#include "net/http_metrics.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "core/hash.h"

#include <stdint.h>
#include <stdlib.h>

struct series {
    const char *route;
    int method;
    int status;
    chat_metric_t *count;
    chat_metric_t *duration;
};

void chat_http_metrics_init(chat_http_metrics_t *m)
{
    m->_requests = chat_metrics_counter("chatd_http_requests_total", "HTTP requests answered");
    m->_durations = chat_metrics_histogram(
        "chatd_http_request_duration_seconds", "Time from a complete request head to its answer",
        chat_metrics_latency_bounds, chat_metrics_latency_nbounds);
    chat_idtable_init(&m->_series);
}

void chat_http_metrics_dispose(chat_http_metrics_t *m)
{
    uint64_t key;
    void *val;
    for (size_t i = 0; (i = chat_idtable_next(&m->_series, i, &key, &val)) != 0;)
        free(val);
    chat_idtable_dispose(&m->_series);
}

static void put_label_value(chat_buf_t *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            chat_buf_putc(b, '\\');
        if (*s == '\n')
            chat_buf_puts(b, "\\n");
        else
            chat_buf_putc(b, *s);
    }
}

static struct series *series_new(chat_http_metrics_t *m, const char *route, int method,
                                 const char *method_str, int status)
{
    struct series *s = chat_malloc(sizeof *s);
    s->route = route;
    s->method = method;
    s->status = status;
    chat_buf_t b = CHAT_BUF_INIT;
    chat_buf_puts(&b, "route=\"");
    put_label_value(&b, route);
    size_t route_end = b.len;
    chat_buf_printf(&b, "\",method=\"%s\",status=\"%d\"", method_str, status);
    s->count = chat_metric_series(m->_requests, b.data);
    b.data[route_end] = '"';
    b.data[route_end + 1] = '\0';
    s->duration = chat_metric_series(m->_durations, b.data);
    chat_buf_dispose(&b);
    return s;
}

/* The table key of a series: its fields mixed; a collision moves on to the next key. */
static uint64_t series_key(const char *route, int method, int status)
{
    return chat_hash_u64((uint64_t)(uintptr_t)route ^
                         ((uint64_t)(unsigned)method << 48 | (uint64_t)(unsigned)status));
}

void chat_http_metrics_record(chat_http_metrics_t *m, const char *route, int method,
                              const char *method_str, int status, double seconds)
{
    uint64_t key = series_key(route, method, status);
    struct series *s;
    while ((s = chat_idtable_get(&m->_series, key)) &&
           !(s->route == route && s->method == method && s->status == status))
        key++; /* another series has this hash: the next key is ours */
    if (!s) {
        s = series_new(m, route, method, method_str, status);
        chat_idtable_put(&m->_series, key, s);
    }
    chat_metric_inc(s->count);
    chat_metric_observe(s->duration, seconds);
}
