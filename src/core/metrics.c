/*
 * Prometheus registry and text rendering (see metrics.h).
 */
#include "core/metrics.h"
#include "core/alloc.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

enum kind { COUNTER, GAUGE, HISTOGRAM };

struct chat_metric {
    chat_metric_t *next;
    chat_metric_family_t *family;
    char *labels;
    _Atomic uint64_t value;    /* bits of a double (counter, gauge, histogram sum) */
    _Atomic uint64_t count;    /* histogram only */
    _Atomic uint64_t *buckets; /* histogram only: one per bound, not cumulative */
};

struct chat_metric_family {
    chat_metric_family_t *next;
    const char *name;
    const char *help;
    enum kind kind;
    double *bounds;
    int nbounds;
    chat_metric_t *series;
    chat_metric_t *series_tail;
};

struct hook {
    void (*fn)(void *);
    void *arg;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static chat_metric_family_t *families, *families_tail;
static struct hook hooks[16];
static int nhooks;

const double chat_metrics_latency_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                              0.25,   0.5,   1,      2.5,   5,    10,    30,   60};
const int chat_metrics_latency_nbounds = (int)CHAT_ARRAY_LEN(chat_metrics_latency_bounds);

static double bits_to_double(uint64_t b)
{
    double d;
    memcpy(&d, &b, sizeof d);
    return d;
}

static uint64_t double_to_bits(double d)
{
    uint64_t b;
    memcpy(&b, &d, sizeof b);
    return b;
}

static chat_metric_family_t *family_get(const char *name, const char *help, enum kind kind,
                                        const double *bounds, int nbounds)
{
    pthread_mutex_lock(&lock);
    chat_metric_family_t *f;
    for (f = families; f; f = f->next)
        if (strcmp(f->name, name) == 0)
            break;
    if (!f) {
        f = chat_calloc(1, sizeof *f);
        f->name = name;
        f->help = help;
        f->kind = kind;
        if (nbounds > 0) {
            f->bounds = chat_malloc(sizeof(double) * (size_t)nbounds);
            memcpy(f->bounds, bounds, sizeof(double) * (size_t)nbounds);
            f->nbounds = nbounds;
        }
        if (families_tail)
            families_tail->next = f;
        else
            families = f;
        families_tail = f;
    }
    pthread_mutex_unlock(&lock);
    return f;
}

chat_metric_family_t *chat_metrics_counter(const char *name, const char *help)
{
    return family_get(name, help, COUNTER, NULL, 0);
}

chat_metric_family_t *chat_metrics_gauge(const char *name, const char *help)
{
    return family_get(name, help, GAUGE, NULL, 0);
}

chat_metric_family_t *chat_metrics_histogram(const char *name, const char *help,
                                             const double *bounds, int nbounds)
{
    return family_get(name, help, HISTOGRAM, bounds, nbounds);
}

chat_metric_t *chat_metric_series(chat_metric_family_t *f, const char *labels)
{
    pthread_mutex_lock(&lock);
    chat_metric_t *m;
    for (m = f->series; m; m = m->next)
        if (strcmp(m->labels, labels) == 0)
            break;
    if (!m) {
        m = chat_calloc(1, sizeof *m);
        m->family = f;
        m->labels = chat_strdup(labels);
        if (f->kind == HISTOGRAM)
            m->buckets = chat_calloc((size_t)f->nbounds, sizeof *m->buckets);
        if (f->series_tail)
            f->series_tail->next = m;
        else
            f->series = m;
        f->series_tail = m;
    }
    pthread_mutex_unlock(&lock);
    return m;
}

static void atomic_add_double(_Atomic uint64_t *p, double v)
{
    uint64_t old = atomic_load_explicit(p, memory_order_relaxed);
    for (;;) {
        uint64_t nv = double_to_bits(bits_to_double(old) + v);
        if (atomic_compare_exchange_weak_explicit(p, &old, nv, memory_order_relaxed,
                                                  memory_order_relaxed))
            return;
    }
}

chat_metric_t *chat_metric_counter(const char *name, const char *help)
{
    return chat_metric_series(chat_metrics_counter(name, help), "");
}

chat_metric_t *chat_metric_gauge(const char *name, const char *help)
{
    return chat_metric_series(chat_metrics_gauge(name, help), "");
}

void chat_metric_add(chat_metric_t *m, double v)
{
    atomic_add_double(&m->value, v);
}

void chat_metric_inc(chat_metric_t *m)
{
    atomic_add_double(&m->value, 1.0);
}

void chat_metric_set(chat_metric_t *m, double v)
{
    atomic_store_explicit(&m->value, double_to_bits(v), memory_order_relaxed);
}

double chat_metric_value(const chat_metric_t *m)
{
    return bits_to_double(atomic_load_explicit(&((chat_metric_t *)m)->value, memory_order_relaxed));
}

void chat_metric_observe(chat_metric_t *m, double v)
{
    const chat_metric_family_t *f = m->family;
    int lo = 0, hi = f->nbounds; /* first bound >= v, or nbounds for +Inf */
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (f->bounds[mid] >= v)
            hi = mid;
        else
            lo = mid + 1;
    }
    if (lo < f->nbounds)
        atomic_fetch_add_explicit(&m->buckets[lo], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->count, 1, memory_order_relaxed);
    atomic_add_double(&m->value, v);
}

uint64_t chat_metric_hist_count(const chat_metric_t *m)
{
    return atomic_load_explicit(&((chat_metric_t *)m)->count, memory_order_relaxed);
}

double chat_metric_hist_quantile(const chat_metric_t *m, double q)
{
    const chat_metric_family_t *f = m->family;
    uint64_t total = chat_metric_hist_count(m);
    if (total == 0)
        return 0.0;
    double rank = q * (double)total;
    uint64_t cum = 0;
    double prev_bound = 0.0;
    for (int i = 0; i < f->nbounds; i++) {
        uint64_t c = atomic_load_explicit(&((chat_metric_t *)m)->buckets[i], memory_order_relaxed);
        if ((double)(cum + c) >= rank && c > 0)
            return prev_bound + (f->bounds[i] - prev_bound) * ((rank - (double)cum) / (double)c);
        cum += c;
        prev_bound = f->bounds[i];
    }
    return f->nbounds ? f->bounds[f->nbounds - 1] : 0.0;
}

void chat_metrics_on_render(chat_metrics_render_fn fn, void *arg)
{
    pthread_mutex_lock(&lock);
    if (nhooks < (int)CHAT_ARRAY_LEN(hooks))
        hooks[nhooks++] = (struct hook){fn, arg};
    pthread_mutex_unlock(&lock);
}

void chat_metrics_off_render(chat_metrics_render_fn fn, const void *arg)
{
    pthread_mutex_lock(&lock);
    for (int i = 0; i < nhooks; i++) {
        if (hooks[i].fn == fn && hooks[i].arg == arg) {
            hooks[i] = hooks[--nhooks];
            break;
        }
    }
    pthread_mutex_unlock(&lock);
}

static void put_double(chat_buf_t *out, double v)
{
    if (isinf(v))
        chat_buf_puts(out, v > 0 ? "+Inf" : "-Inf");
    else if (isnan(v))
        chat_buf_puts(out, "NaN");
    else if (v == (double)(long long)v && fabs(v) < 1e15)
        chat_buf_put_i64(out, (long long)v);
    else
        chat_buf_printf(out, "%.9g", v);
}

static void put_name_labels(chat_buf_t *out, const char *name, const char *suffix,
                            const char *labels, const char *extra)
{
    chat_buf_puts(out, name);
    chat_buf_puts(out, suffix);
    int has = labels[0] != '\0';
    if (has || extra) {
        chat_buf_putc(out, '{');
        chat_buf_puts(out, labels);
        if (extra) {
            if (has)
                chat_buf_putc(out, ',');
            chat_buf_puts(out, extra);
        }
        chat_buf_putc(out, '}');
    }
    chat_buf_putc(out, ' ');
}

void chat_metrics_render(chat_buf_t *out)
{
    pthread_mutex_lock(&lock);
    int n = nhooks;
    struct hook hk[CHAT_ARRAY_LEN(hooks)];
    memcpy(hk, hooks, sizeof(struct hook) * (size_t)n);
    pthread_mutex_unlock(&lock);
    for (int i = 0; i < n; i++)
        hk[i].fn(hk[i].arg);

    static const char *const type_names[] = {"counter", "gauge", "histogram"};
    pthread_mutex_lock(&lock);
    for (chat_metric_family_t *f = families; f; f = f->next) {
        chat_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name,
                        type_names[f->kind]);
        for (chat_metric_t *m = f->series; m; m = m->next) {
            if (f->kind != HISTOGRAM) {
                put_name_labels(out, f->name, "", m->labels, NULL);
                put_double(out, chat_metric_value(m));
                chat_buf_putc(out, '\n');
                continue;
            }
            uint64_t cum = 0;
            char le[64];
            for (int i = 0; i < f->nbounds; i++) {
                cum += atomic_load_explicit(&m->buckets[i], memory_order_relaxed);
                chat_buf_t tmp = CHAT_BUF_INIT;
                put_double(&tmp, f->bounds[i]);
                snprintf(le, sizeof le, "le=\"%s\"", tmp.data);
                chat_buf_dispose(&tmp);
                put_name_labels(out, f->name, "_bucket", m->labels, le);
                chat_buf_put_u64(out, cum);
                chat_buf_putc(out, '\n');
            }
            uint64_t count = chat_metric_hist_count(m);
            put_name_labels(out, f->name, "_bucket", m->labels, "le=\"+Inf\"");
            chat_buf_put_u64(out, count);
            chat_buf_putc(out, '\n');
            put_name_labels(out, f->name, "_sum", m->labels, NULL);
            put_double(out, chat_metric_value(m));
            chat_buf_putc(out, '\n');
            put_name_labels(out, f->name, "_count", m->labels, NULL);
            chat_buf_put_u64(out, count);
            chat_buf_putc(out, '\n');
        }
    }
    pthread_mutex_unlock(&lock);
}
