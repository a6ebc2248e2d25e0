/*
 * Writes a run's results: JSON (every figure, per stage, per operation, the
 * per-second timeline) and a Markdown report with the per-stage table.
 * Server-side figures come from deltas of the /metrics scrapes of a stage.
 */
#include "run.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    double hit_ratio; /* NAN: no cache traffic seen */
    double kind_hit_ratio[CL_NKINDS];
    double wait_p95_ms;      /* NAN: no queue-wait observations */
    double qps_mean, qps_cv; /* NAN: fewer than two scrapes */
    double waiting_mean, waiting_max;
    int nsamples;
} server_t;

static void server_figures(const cl_results_t *r, int stage, server_t *o)
{
    o->hit_ratio = o->wait_p95_ms = o->qps_mean = o->qps_cv = NAN;
    for (int k = 0; k < CL_NKINDS; k++)
        o->kind_hit_ratio[k] = NAN;
    o->waiting_mean = o->waiting_max = NAN;
    o->nsamples = 0;
    const cl_scrape_t *base = NULL, *last = NULL;
    double qsum = 0, qsq = 0, wsum = 0, wmax = 0;
    int nq = 0, nw = 0;
    for (size_t j = 0; j < r->nscrapes; j++) {
        const cl_scrape_t *s = &r->scrapes[j];
        if (s->stage < stage)
            base = s;
        if (s->stage != stage)
            continue;
        if (j > 0 && s->t > r->scrapes[j - 1].t) {
            double q = (s->queries - r->scrapes[j - 1].queries) / (s->t - r->scrapes[j - 1].t);
            qsum += q;
            qsq += q * q;
            nq++;
        }
        wsum += s->pool_waiting;
        if (!nw || s->pool_waiting > wmax)
            wmax = s->pool_waiting;
        nw++;
        last = s;
    }
    o->nsamples = nw;
    if (nw) {
        o->waiting_mean = wsum / nw;
        o->waiting_max = wmax;
    }
    if (nq) {
        o->qps_mean = qsum / nq;
        double var = qsq / nq - o->qps_mean * o->qps_mean;
        o->qps_cv = o->qps_mean > 0 ? sqrt(var > 0 ? var : 0) / o->qps_mean : NAN;
    }
    if (!last)
        return;
    double h = last->hits - (base ? base->hits : 0), m = last->misses - (base ? base->misses : 0);
    if (h + m > 0)
        o->hit_ratio = h / (h + m);
    for (int k = 0; k < CL_NKINDS; k++) {
        double kh = last->kind_hits[k] - (base ? base->kind_hits[k] : 0);
        double km = last->kind_misses[k] - (base ? base->kind_misses[k] : 0);
        if (kh + km > 0)
            o->kind_hit_ratio[k] = kh / (kh + km);
    }
    double w = cl_scrape_wait_quantile(base, last, 0.95);
    if (w >= 0)
        o->wait_p95_ms = w * 1000.0;
}

static json_t *num_or_null(double v)
{
    return isnan(v) ? json_null() : json_real(v);
}

static json_t *hist_json(const cl_hist_t *h)
{
    return json_pack("{s:I,s:f,s:f,s:f,s:f,s:f,s:f,s:f}", "count", (json_int_t)h->count, "mean",
                     cl_hist_mean(h) / 1000.0, "p50", cl_hist_quantile(h, 0.5) / 1000.0, "p90",
                     cl_hist_quantile(h, 0.9) / 1000.0, "p95", cl_hist_quantile(h, 0.95) / 1000.0,
                     "p99", cl_hist_quantile(h, 0.99) / 1000.0, "p999",
                     cl_hist_quantile(h, 0.999) / 1000.0, "max", cl_hist_quantile(h, 1.0) / 1000.0);
}

static json_t *status_json(const cl_stage_t *st, int errors_only)
{
    json_t *o = json_object();
    for (int s = 0; s < CL_STATUS_SLOTS; s++) {
        if (!st->status[s] || (errors_only && s >= 200 && s <= 299))
            continue;
        char k[16];
        if (s == 0)
            snprintf(k, sizeof k, "transport");
        else
            snprintf(k, sizeof k, "%d", s);
        json_object_set_new(o, k, json_integer((json_int_t)st->status[s]));
    }
    return o;
}

int cl_report_json(const cl_results_t *r, const char *path)
{
    json_t *root = json_object(), *stages = json_array(), *timeline = json_array(),
           *scrapes = json_array();
    cl_hist_t all;
    cl_hist_init(&all);
    uint64_t sent = 0, completed = 0, errors = 0, due = 0;
    for (int i = 0; i < r->nstages; i++) {
        const cl_stage_t *st = &r->stages[i];
        server_t sv;
        server_figures(r, i, &sv);
        json_t *lat = json_object();
        json_object_set_new(lat, "overall", hist_json(&st->hist[CL_OP_N]));
        for (int op = 0; op < CL_OP_N; op++)
            json_object_set_new(lat, cl_op_names[op], hist_json(&st->hist[op]));
        cl_hist_merge(&all, &st->hist[CL_OP_N]);
        sent += st->sent;
        completed += st->completed;
        errors += st->errors;
        due += st->due;
        json_t *js = json_object();
        json_object_set_new(js, "stage", json_integer(i + 1));
        json_object_set_new(js, "connections", json_integer(st->conns));
        json_object_set_new(js, "target_rate", json_real(st->rate));
        json_object_set_new(js, "seconds", json_real(st->seconds));
        json_object_set_new(js, "connections_capped", json_boolean(st->capped));
        json_object_set_new(js, "ramp_seconds", json_real(st->ramp_seconds));
        json_object_set_new(js, "open_connections_at_start", json_integer(st->open_at_start));
        json_object_set_new(js, "due", json_integer((json_int_t)st->due));
        json_object_set_new(js, "sent", json_integer((json_int_t)st->sent));
        json_object_set_new(js, "completed", json_integer((json_int_t)st->completed));
        json_object_set_new(js, "errors", json_integer((json_int_t)st->errors));
        json_object_set_new(js, "achieved_rate",
                            json_real((double)(st->completed - st->errors) / st->seconds));
        json_object_set_new(js, "issued_rate", json_real((double)st->sent / st->seconds));
        json_object_set_new(js, "status", status_json(st, 0));
        json_object_set_new(js, "errors_by_status", status_json(st, 1));
        json_object_set_new(js, "latency_ms", lat);
        json_object_set_new(js, "cache_hit_ratio", num_or_null(sv.hit_ratio));
        json_t *kinds = json_object();
        for (int k = 0; k < CL_NKINDS; k++)
            if (!isnan(sv.kind_hit_ratio[k]))
                json_object_set_new(kinds, cl_kind_names[k], json_real(sv.kind_hit_ratio[k]));
        json_object_set_new(js, "cache_hit_ratio_by_kind", kinds);
        json_object_set_new(js, "queue_wait_p95_ms", num_or_null(sv.wait_p95_ms));
        json_object_set_new(js, "db_queries_per_s_mean", num_or_null(sv.qps_mean));
        json_object_set_new(js, "db_queries_per_s_cv", num_or_null(sv.qps_cv));
        json_object_set_new(js, "pool_waiting_mean", num_or_null(sv.waiting_mean));
        json_object_set_new(js, "pool_waiting_max", num_or_null(sv.waiting_max));
        json_object_set_new(js, "metrics_samples", json_integer(sv.nsamples));
        json_array_append_new(stages, js);
    }
    for (size_t j = 0; j < r->nticks; j++) {
        const cl_tick_t *t = &r->ticks[j];
        json_array_append_new(timeline,
                              json_pack("{s:f,s:i,s:I,s:I,s:f,s:f,s:f,s:I,s:i}", "t", t->t, "stage",
                                        t->stage + 1, "completed", (json_int_t)t->completed,
                                        "errors", (json_int_t)t->errors, "p50_ms", t->p50_ms,
                                        "p95_ms", t->p95_ms, "p99_ms", t->p99_ms, "queued",
                                        (json_int_t)t->queued, "open_connections", t->open_conns));
    }
    for (size_t j = 0; j < r->nscrapes; j++) {
        const cl_scrape_t *s = &r->scrapes[j];
        json_t *o = json_pack("{s:f,s:i,s:f,s:f,s:f,s:f}", "t", s->t, "stage", s->stage + 1,
                              "cache_hits", s->hits, "cache_misses", s->misses, "pool_waiting",
                              s->pool_waiting, "db_queries", s->queries);
        json_object_set_new(o, "cache_hit_ratio_gauge", num_or_null(s->hit_ratio));
        double w = j > 0 ? cl_scrape_wait_quantile(&r->scrapes[j - 1], s, 0.95) : -1;
        json_object_set_new(o, "queue_wait_p95_ms", w >= 0 ? json_real(w * 1000) : json_null());
        json_array_append_new(scrapes, o);
    }
    json_object_set_new(root, "tool", json_string("chatload"));
    json_object_set_new(root, "url", json_string(r->url));
    json_object_set_new(root, "seedfile", json_string(r->seedfile));
    json_object_set_new(root, "mix", json_string(r->mix));
    json_object_set_new(root, "zipf", json_real(r->zipf));
    json_object_set_new(root, "seed", json_integer((json_int_t)r->seed));
    json_object_set_new(root, "interrupted", json_boolean(r->interrupted));
    json_object_set_new(root, "duration_s", json_real(r->duration));
    json_object_set_new(root, "due", json_integer((json_int_t)due));
    json_object_set_new(root, "sent", json_integer((json_int_t)sent));
    json_object_set_new(root, "completed", json_integer((json_int_t)completed));
    json_object_set_new(root, "errors", json_integer((json_int_t)errors));
    json_object_set_new(root, "connect_errors", json_integer((json_int_t)r->connect_errors));
    json_object_set_new(root, "retries", json_integer((json_int_t)r->retries));
    json_object_set_new(root, "dropped", json_integer((json_int_t)r->dropped));
    json_object_set_new(root, "latency_ms", hist_json(&all));
    json_object_set_new(root, "stages", stages);
    json_object_set_new(root, "timeline", timeline);
    json_object_set_new(root, "metrics", scrapes);
    int rc = json_dump_file(root, path, JSON_INDENT(1)) == 0 ? 0 : -1;
    if (rc)
        fprintf(stderr, "chatload: cannot write %s\n", path);
    json_decref(root);
    return rc;
}

static void cell(FILE *f, double v, const char *fmt)
{
    if (isnan(v))
        fputs(" – |", f);
    else {
        fputc(' ', f);
        fprintf(f, fmt, v);
        fputs(" |", f);
    }
}

int cl_report_md(const cl_results_t *r, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "chatload: cannot write %s\n", path);
        return -1;
    }
    fprintf(f, "# chatload report\n\n");
    fprintf(f,
            "- target: `%s`, seed file `%s`, seed %llu\n- mix: `%s`, Zipf exponent %.2f\n- "
            "duration: %.1f s\n\n",
            r->url, r->seedfile, r->seed, r->mix, r->zipf, r->duration);
    fprintf(f, "Latency is measured from the moment each request was due (open model), in ms.\n\n");
    fprintf(
        f,
        "| stage | conns | target/s | achieved/s | p50 | p90 | p95 | p99 | p99.9 | max | errors |"
        " cache hit ratio | queue-wait p95 ms | DB q/s mean | DB q/s CV | pool waiting max |\n");
    fprintf(f, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < r->nstages; i++) {
        const cl_stage_t *st = &r->stages[i];
        const cl_hist_t *h = &st->hist[CL_OP_N];
        server_t sv;
        server_figures(r, i, &sv);
        fprintf(f, "| %d | %d%s | %.0f | %.1f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %llu |",
                i + 1, st->conns, st->capped ? " (capped)" : "", st->rate,
                (double)(st->completed - st->errors) / st->seconds,
                cl_hist_quantile(h, 0.5) / 1000.0, cl_hist_quantile(h, 0.9) / 1000.0,
                cl_hist_quantile(h, 0.95) / 1000.0, cl_hist_quantile(h, 0.99) / 1000.0,
                cl_hist_quantile(h, 0.999) / 1000.0, cl_hist_quantile(h, 1.0) / 1000.0,
                (unsigned long long)st->errors);
        cell(f, isnan(sv.hit_ratio) ? NAN : sv.hit_ratio * 100, "%.1f %%");
        cell(f, sv.wait_p95_ms, "%.2f");
        cell(f, sv.qps_mean, "%.1f");
        cell(f, sv.qps_cv, "%.3f");
        cell(f, sv.waiting_max, "%.0f");
        fputc('\n', f);
    }
    fprintf(f, "\n## Per operation (p50 / p95 / p99 ms, count)\n\n| stage |");
    for (int op = 0; op < CL_OP_N; op++)
        fprintf(f, " %s |", cl_op_names[op]);
    fprintf(f, "\n|---|");
    for (int op = 0; op < CL_OP_N; op++)
        fprintf(f, "---|");
    fputc('\n', f);
    for (int i = 0; i < r->nstages; i++) {
        fprintf(f, "| %d |", i + 1);
        for (int op = 0; op < CL_OP_N; op++) {
            const cl_hist_t *h = &r->stages[i].hist[op];
            fprintf(f, " %.2f / %.2f / %.2f (%llu) |", cl_hist_quantile(h, 0.5) / 1000.0,
                    cl_hist_quantile(h, 0.95) / 1000.0, cl_hist_quantile(h, 0.99) / 1000.0,
                    (unsigned long long)h->count);
        }
        fputc('\n', f);
    }
    fprintf(f, "\n## Errors by status\n\n");
    int any = 0;
    for (int i = 0; i < r->nstages; i++)
        for (int s = 0; s < CL_STATUS_SLOTS; s++)
            if (r->stages[i].status[s] && (s < 200 || s > 299)) {
                fprintf(f, "- stage %d: %s%.0d: %llu\n", i + 1,
                        s ? "" : "transport error or timeout", s,
                        (unsigned long long)r->stages[i].status[s]);
                any = 1;
            }
    if (!any)
        fprintf(f, "none\n");
    fprintf(f,
            "\nConnect errors: %llu; reads retried after a keep-alive close: %llu; "
            "requests dropped by a full queue: %llu.\n",
            (unsigned long long)r->connect_errors, (unsigned long long)r->retries,
            (unsigned long long)r->dropped);
    fclose(f);
    return 0;
}
