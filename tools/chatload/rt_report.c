/*
 * The realtime stage's figures (rt.h) as JSON, as Markdown and as a few
 * summary lines on stderr. Delivered frames per second are the first
 * arrivals of message frames inside a stage's send window over its length;
 * latency runs from each message's due time to the frame's arrival.
 */
#include "rt.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static json_t *num_or_null(double v)
{
    return isnan(v) || isinf(v) ? json_null() : json_real(v);
}

static json_t *hist_json(const cl_hist_t *h)
{
    return json_pack("{s:I,s:f,s:f,s:f,s:f,s:f,s:f,s:f}", "count", (json_int_t)h->count, "mean",
                     cl_hist_mean(h) / 1000.0, "p50", cl_hist_quantile(h, 0.5) / 1000.0, "p90",
                     cl_hist_quantile(h, 0.9) / 1000.0, "p95", cl_hist_quantile(h, 0.95) / 1000.0,
                     "p99", cl_hist_quantile(h, 0.99) / 1000.0, "p999",
                     cl_hist_quantile(h, 0.999) / 1000.0, "max", cl_hist_quantile(h, 1.0) / 1000.0);
}

static double window(const cl_rt_stage_t *s)
{
    return s->t_end > s->t_start ? s->t_end - s->t_start : NAN;
}

static double per_socket_bytes(const cl_rt_results_t *r)
{
    if (r->rss_before_kb < 0 || r->rss_after_kb < 0 || r->rss_sockets <= 0)
        return NAN;
    return (double)(r->rss_after_kb - r->rss_before_kb) * 1024.0 / r->rss_sockets;
}

static json_t *stage_json(const cl_rt_stage_t *s)
{
    json_t *o = json_object(), *errs = json_object();
    for (int i = 0; i < CL_STATUS_SLOTS; i++) {
        if (!s->send_status[i] || (i >= 200 && i <= 299))
            continue;
        char k[16];
        snprintf(k, sizeof k, i ? "%d" : "transport", i);
        json_object_set_new(errs, k, json_integer((json_int_t)s->send_status[i]));
    }
    double w = window(s);
    json_object_set_new(o, "seconds", num_or_null(w));
    json_object_set_new(o, "sends_due", json_integer((json_int_t)s->sends_due));
    json_object_set_new(o, "sends_ok", json_integer((json_int_t)s->sends_ok));
    json_object_set_new(o, "sends_failed", json_integer((json_int_t)s->sends_failed));
    json_object_set_new(o, "sends_dropped", json_integer((json_int_t)s->sends_dropped));
    json_object_set_new(o, "sends_unanswered", json_integer((json_int_t)s->sends_unanswered));
    json_object_set_new(o, "send_errors_by_status", errs);
    json_object_set_new(o, "frames_expected", json_integer((json_int_t)s->frames_expected));
    json_object_set_new(o, "frames_received", json_integer((json_int_t)s->frames_received));
    json_object_set_new(o, "lost", json_integer((json_int_t)s->lost));
    json_object_set_new(o, "window_frames", json_integer((json_int_t)s->window_frames));
    json_object_set_new(o, "delivered_frames_per_s", num_or_null((double)s->window_frames / w));
    json_object_set_new(o, "drained", json_boolean(s->drained));
    json_object_set_new(o, "drain_seconds", json_real(s->drain_seconds));
    json_object_set_new(o, "latency_ms", hist_json(&s->latency));
    json_object_set_new(o, "send_latency_ms", hist_json(&s->send_latency));
    json_object_set_new(o, "in_order", json_integer((json_int_t)s->revs.in_order));
    json_object_set_new(o, "gaps", json_integer((json_int_t)s->revs.gaps));
    json_object_set_new(o, "gap_revs", json_integer((json_int_t)s->revs.gap_revs));
    json_object_set_new(o, "late", json_integer((json_int_t)s->revs.late));
    json_object_set_new(o, "duplicates", json_integer((json_int_t)s->revs.dups));
    json_object_set_new(o, "stale", json_integer((json_int_t)s->revs.stale));
    json_object_set_new(o, "out_of_order",
                        json_integer((json_int_t)(s->revs.late + s->revs.stale)));
    json_object_set_new(o, "db_queries_per_s", num_or_null(s->db_qps));
    json_object_set_new(o, "chatd_cpu_cores", num_or_null(s->cpu_chatd > 0 ? s->cpu_chatd : NAN));
    return o;
}

int cl_rt_report_json(const cl_rt_results_t *r, const char *path)
{
    json_t *root = json_object();
    json_object_set_new(root, "tool", json_string("chatload realtime"));
    json_object_set_new(root, "url", json_string(r->url));
    json_object_set_new(root, "seedfile", r->seedfile ? json_string(r->seedfile) : json_null());
    json_object_set_new(root, "seed", json_integer((json_int_t)r->seed));
    char tag[16];
    snprintf(tag, sizeof tag, "%08x", r->tag);
    json_object_set_new(root, "tag", json_string(tag));
    json_object_set_new(root, "clients", json_integer(r->clients));
    json_object_set_new(root, "senders", json_integer(r->senders));
    json_object_set_new(root, "max_connecting", json_integer(r->max_connecting));
    json_object_set_new(root, "rate", json_real(r->rate));
    json_object_set_new(root, "frame_rate_asked",
                        r->frame_rate > 0 ? json_real(r->frame_rate) : json_null());
    json_object_set_new(root, "seconds", json_real(r->seconds));
    json_object_set_new(root, "rc_rate", json_real(r->rate * r->rc_share));
    json_object_set_new(root, "reconnect", json_boolean(r->reconnect));

    json_t *by = json_object();
    json_object_set_new(by, "largest", json_integer(r->convs_by_size[0]));
    json_object_set_new(by, "101-999", json_integer(r->convs_by_size[1]));
    json_object_set_new(by, "11-100", json_integer(r->convs_by_size[2]));
    json_object_set_new(by, "2-10", json_integer(r->convs_by_size[3]));
    json_t *shape = json_object();
    json_object_set_new(shape, "conversations", json_integer(r->nconvs));
    json_object_set_new(shape, "memberships", json_integer(r->memberships));
    json_object_set_new(shape, "size_max", json_integer(r->size_max));
    json_object_set_new(shape, "size_min", json_integer(r->size_min));
    json_object_set_new(shape, "by_size", by);
    json_object_set_new(shape, "mean_fanout", json_real(r->mean_fanout));
    json_object_set_new(shape, "offered_frames_per_s", json_real(r->rate * r->mean_fanout));
    json_object_set_new(root, "shape", shape);

    json_t *setup = json_object();
    json_object_set_new(setup, "signed_up", json_boolean(r->signed_up));
    json_object_set_new(setup, "users_seconds", json_real(r->users_seconds));
    json_object_set_new(setup, "conversations_seconds", json_real(r->convs_seconds));
    json_object_set_new(setup, "connect_seconds", json_real(r->connect_seconds));
    json_object_set_new(setup, "in_sync_at_start", json_integer(r->ready_at_start));
    json_object_set_new(setup, "handshake_failures",
                        json_integer((json_int_t)r->handshake_failures));
    json_object_set_new(setup, "refused_401", json_integer((json_int_t)r->refused_401));
    json_object_set_new(setup, "refused_other", json_integer((json_int_t)r->refused_other));
    json_object_set_new(setup, "unexpected_closes", json_integer((json_int_t)r->unexpected_closes));
    json_object_set_new(setup, "resume_unsupported",
                        json_integer((json_int_t)r->resume_unsupported));
    json_object_set_new(root, "setup", setup);

    json_t *rss = json_object();
    json_object_set_new(rss, "chatd_pid",
                        r->chatd_pid > 0 ? json_integer(r->chatd_pid) : json_null());
    json_object_set_new(rss, "before_kb",
                        r->rss_before_kb >= 0 ? json_integer(r->rss_before_kb) : json_null());
    json_object_set_new(rss, "after_kb",
                        r->rss_after_kb >= 0 ? json_integer(r->rss_after_kb) : json_null());
    json_object_set_new(rss, "sockets", json_integer(r->rss_sockets));
    json_object_set_new(rss, "per_socket_bytes", num_or_null(per_socket_bytes(r)));
    json_object_set_new(root, "rss", rss);

    json_t *stages = json_object();
    for (int st = 0; st < CL_RT_NSTAGES; st++)
        if (r->stage[st].ran)
            json_object_set_new(stages, cl_rt_stage_names[st], stage_json(&r->stage[st]));
    json_object_set_new(root, "stages", stages);

    if (r->stage[CL_RT_RECONNECT].ran) {
        json_t *rc = json_object();
        json_object_set_new(rc, "dropped", json_integer(r->dropped));
        json_object_set_new(rc, "resumed", json_integer(r->resumed_after_drop));
        json_object_set_new(rc, "all_resumed_seconds",
                            r->all_resumed_seconds >= 0 ? json_real(r->all_resumed_seconds)
                                                        : json_null());
        json_object_set_new(rc, "resume_ms", hist_json(&r->resume_latency));
        json_object_set_new(rc, "seconds", json_real(r->rc_seconds));
        json_object_set_new(rc, "resets", json_integer((json_int_t)r->resets));
        json_object_set_new(rc, "reset_skipped", json_integer((json_int_t)r->reset_skipped));
        json_object_set_new(rc, "reset_unmapped", json_integer((json_int_t)r->reset_unmapped));
        json_object_set_new(rc, "resumed_mismatch", json_integer((json_int_t)r->resumed_mismatch));
        json_object_set_new(rc, "db_queries_per_s", num_or_null(r->rc_db_qps));
        json_object_set_new(rc, "db_queries_per_s_max", num_or_null(r->rc_db_qps_max));
        json_object_set_new(rc, "server_resumed", num_or_null(r->rc_server_resumed));
        json_object_set_new(rc, "server_reset", num_or_null(r->rc_server_reset));
        json_object_set_new(rc, "gap_fills", num_or_null(r->rc_gap_fills));
        json_object_set_new(root, "mass_reconnect", rc);
    } else {
        json_object_set_new(root, "mass_reconnect", json_null());
    }

    json_t *types = json_object();
    for (int t = 0; t < CL_RTF_N; t++)
        if (r->frames_by_type[t])
            json_object_set_new(types, cl_rtf_names[t],
                                json_integer((json_int_t)r->frames_by_type[t]));
    json_object_set_new(root, "frames_by_type", types);
    json_object_set_new(root, "bad_frames", json_integer((json_int_t)r->bad_frames));
    json_object_set_new(root, "foreign_frames", json_integer((json_int_t)r->foreign_frames));
    json_object_set_new(root, "unexpected_frames", json_integer((json_int_t)r->unexpected_frames));
    json_object_set_new(root, "rev_mismatch", json_integer((json_int_t)r->rev_mismatch));
    json_object_set_new(root, "misrouted", json_integer((json_int_t)r->misrouted));
    json_object_set_new(root, "error_frames", json_integer((json_int_t)r->error_frames));

    json_t *tl = json_array();
    for (size_t i = 0; i < r->nticks; i++) {
        const cl_rt_tick_t *t = &r->ticks[i];
        json_t *o =
            json_pack("{s:f,s:s,s:I,s:I,s:I,s:f,s:f,s:i,s:i}", "t", t->t, "phase",
                      cl_rt_phase_names[t->phase], "frames", (json_int_t)t->frames, "sends_ok",
                      (json_int_t)t->sends_ok, "send_errors", (json_int_t)t->send_errors, "p50_ms",
                      t->p50_ms, "p99_ms", t->p99_ms, "open", t->open, "in_sync", t->ready);
        json_object_set_new(o, "db_queries_per_s",
                            t->db_qps >= 0 ? json_real(t->db_qps) : json_null());
        json_array_append_new(tl, o);
    }
    json_object_set_new(root, "timeline", tl);
    json_t *ms = json_array();
    for (size_t i = 0; i < r->nscrapes; i++) {
        const cl_scrape_t *s = &r->scrapes[i];
        json_array_append_new(ms, json_pack("{s:f,s:s,s:f,s:f,s:f,s:f,s:f,s:f}", "t", s->t, "phase",
                                            cl_rt_phase_names[r->scrape_phase[i]], "db_queries",
                                            s->queries, "websockets_open", s->ws_open,
                                            "resumes_resumed", s->resumes_resumed, "resumes_reset",
                                            s->resumes_reset, "gap_fills", s->gap_fills,
                                            "stream_events", s->stream_events));
    }
    json_object_set_new(root, "metrics", ms);
    json_object_set_new(root, "duration_s", json_real(r->duration));
    json_object_set_new(root, "interrupted", json_boolean(r->interrupted));
    json_object_set_new(root, "aborted", json_boolean(r->aborted));
    json_object_set_new(root, "abort_reason",
                        r->aborted ? json_string(r->abort_reason) : json_null());
    int rc = json_dump_file(root, path, JSON_INDENT(1)) == 0 ? 0 : -1;
    if (rc)
        fprintf(stderr, "chatload: cannot write %s\n", path);
    json_decref(root);
    return rc;
}

static void ms_cell(FILE *f, const cl_hist_t *h, double q)
{
    if (h->count)
        fprintf(f, " %.2f |", cl_hist_quantile(h, q) / 1000.0);
    else
        fputs(" – |", f);
}

static void num_cell(FILE *f, double v, const char *fmt)
{
    if (isnan(v) || isinf(v)) {
        fputs(" – |", f);
        return;
    }
    fputc(' ', f);
    fprintf(f, fmt, v);
    fputs(" |", f);
}

int cl_rt_report_md(const cl_rt_results_t *r, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "chatload: cannot write %s\n", path);
        return -1;
    }
    fprintf(f, "# chatload realtime report\n\n");
    fprintf(f,
            "- target `%s`, %d WebSocket clients (one per user%s), %d senders over REST, seed "
            "%llu\n",
            r->url, r->clients, r->signed_up ? ", signed up for the run" : ", from the seed file",
            r->senders, r->seed);
    fprintf(f,
            "- %d conversations, %ld memberships: %d of %d members, %d of 101–999, %d of 11–100, "
            "%d of 2–10; %.1f frames per send on average\n",
            r->nconvs, r->memberships, r->convs_by_size[0], r->size_max, r->convs_by_size[1],
            r->convs_by_size[2], r->convs_by_size[3], r->mean_fanout);
    fprintf(f, "- %.1f sends/s (%.0f frames/s offered), %.0f s steady%s\n", r->rate,
            r->rate * r->mean_fanout, r->seconds, r->reconnect ? ", then the mass reconnect" : "");
    fprintf(f, "- set-up: users %.1f s, conversations %.1f s, sockets in sync %.1f s (%d of %d)\n",
            r->users_seconds, r->convs_seconds, r->connect_seconds, r->ready_at_start, r->clients);
    if (r->aborted)
        fprintf(f, "- **aborted**: %s\n", r->abort_reason);
    if (r->interrupted)
        fprintf(f, "- **interrupted** by a signal\n");
    fprintf(f, "\nLatency is from each message's due time to the frame's arrival, in ms.\n\n");
    fprintf(f, "| stage | seconds | sends ok | sends failed / dropped | frames expected | received "
               "| lost | "
               "delivered frames/s | p50 | p95 | p99 | max | gaps | out of order | duplicates | "
               "DB q/s | chatd CPU cores |\n");
    fprintf(f, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (int st = 0; st < CL_RT_NSTAGES; st++) {
        const cl_rt_stage_t *s = &r->stage[st];
        if (!s->ran)
            continue;
        double w = window(s);
        fprintf(f, "| %s |", cl_rt_stage_names[st]);
        num_cell(f, w, "%.1f");
        fprintf(f, " %llu | %llu / %llu | %llu | %llu | %llu |", (unsigned long long)s->sends_ok,
                (unsigned long long)s->sends_failed, (unsigned long long)s->sends_dropped,
                (unsigned long long)s->frames_expected, (unsigned long long)s->frames_received,
                (unsigned long long)s->lost);
        num_cell(f, (double)s->window_frames / w, "%.0f");
        ms_cell(f, &s->latency, 0.5);
        ms_cell(f, &s->latency, 0.95);
        ms_cell(f, &s->latency, 0.99);
        ms_cell(f, &s->latency, 1.0);
        fprintf(f, " %llu | %llu | %llu |", (unsigned long long)s->revs.gaps,
                (unsigned long long)(s->revs.late + s->revs.stale),
                (unsigned long long)s->revs.dups);
        num_cell(f, s->db_qps, "%.0f");
        num_cell(f, s->cpu_chatd > 0 ? s->cpu_chatd : NAN, "%.2f");
        fputc('\n', f);
    }
    for (int st = 0; st < CL_RT_NSTAGES; st++) {
        const cl_rt_stage_t *s = &r->stage[st];
        if (s->ran)
            fprintf(f,
                    "%s- %s: %s %.1f s after its window; sends left unanswered at the end: %llu; "
                    "send p99 %.2f ms\n",
                    st == 0 ? "\n" : "", cl_rt_stage_names[st],
                    s->drained ? "every expected frame had arrived"
                               : "the drain gave up on the frames still missing",
                    s->drain_seconds, (unsigned long long)s->sends_unanswered,
                    cl_hist_quantile(&s->send_latency, 0.99) / 1000.0);
    }
    double b = per_socket_bytes(r);
    fprintf(f, "\nchatd RSS: ");
    if (isnan(b))
        fprintf(f, "not measured (no --chatd-pid)\n");
    else
        fprintf(f, "%ld kB before the sockets, %ld kB with %d idle sockets: %.0f bytes each\n",
                r->rss_before_kb, r->rss_after_kb, r->rss_sockets, b);
    if (r->stage[CL_RT_RECONNECT].ran) {
        fprintf(f, "\n## Mass reconnect\n\n");
        fprintf(f,
                "%d sockets dropped at once while the senders went on; %d of %d got "
                "`resumed` ",
                r->dropped, r->resumed_after_drop, r->clients);
        if (r->all_resumed_seconds >= 0)
            fprintf(f, "— all within %.2f s of the drop", r->all_resumed_seconds);
        else
            fprintf(f, "— not all (waited %.1f s)", r->rc_seconds);
        fprintf(f, ". Per client, drop → `resumed`: p50 %.0f ms, p99 %.0f ms, max %.0f ms.\n\n",
                cl_hist_quantile(&r->resume_latency, 0.5) / 1000.0,
                cl_hist_quantile(&r->resume_latency, 0.99) / 1000.0,
                cl_hist_quantile(&r->resume_latency, 1.0) / 1000.0);
        fprintf(f,
                "- `reset` frames: %llu (%llu events to reload by REST); `resumed` positions "
                "not matching the frames received: %llu\n",
                (unsigned long long)r->resets, (unsigned long long)r->reset_skipped,
                (unsigned long long)r->resumed_mismatch);
        fprintf(f, "- DB queries/s from just before the drop to all resumed: ");
        if (isnan(r->rc_db_qps))
            fprintf(f, "–");
        else
            fprintf(f, "%.0f (highest second %.0f; steady stage %.0f)", r->rc_db_qps,
                    r->rc_db_qps_max, r->stage[CL_RT_STEADY].db_qps);
        fprintf(f, "\n- chatd's counters over it: resumes %.0f, resets %.0f, gap fills %.0f\n",
                r->rc_server_resumed, r->rc_server_reset, r->rc_gap_fills);
    }
    fprintf(f, "\n## Frames\n\n");
    for (int t = 0; t < CL_RTF_N; t++)
        if (r->frames_by_type[t])
            fprintf(f, "- `%s`: %llu\n", cl_rtf_names[t], (unsigned long long)r->frames_by_type[t]);
    fprintf(f,
            "\nNot JSON frames: %llu; of other runs: %llu; for conversations the user is not in: "
            "%llu; rev of a message differing between sockets: %llu; error frames: %llu. "
            "Handshakes failed: %llu (401: %llu); sockets closed by chatd: %llu; resumes "
            "answered by an error (no resume in chatd): %llu.\n",
            (unsigned long long)r->bad_frames, (unsigned long long)r->foreign_frames,
            (unsigned long long)r->unexpected_frames, (unsigned long long)r->rev_mismatch,
            (unsigned long long)r->error_frames, (unsigned long long)r->handshake_failures,
            (unsigned long long)r->refused_401, (unsigned long long)r->unexpected_closes,
            (unsigned long long)r->resume_unsupported);
    fclose(f);
    return 0;
}

void cl_rt_report_summary(const cl_rt_results_t *r)
{
    for (int st = 0; st < CL_RT_NSTAGES; st++) {
        const cl_rt_stage_t *s = &r->stage[st];
        if (!s->ran)
            continue;
        fprintf(stderr,
                "chatload realtime: %s: %.0f frames/s delivered, p50 %.2f p99 %.2f ms; sends "
                "%llu ok %llu failed %llu dropped %llu unanswered; frames %llu/%llu, lost %llu%s, "
                "gaps %llu, out of order %llu, duplicates %llu\n",
                cl_rt_stage_names[st], (double)s->window_frames / window(s),
                cl_hist_quantile(&s->latency, 0.5) / 1000.0,
                cl_hist_quantile(&s->latency, 0.99) / 1000.0, (unsigned long long)s->sends_ok,
                (unsigned long long)s->sends_failed, (unsigned long long)s->sends_dropped,
                (unsigned long long)s->sends_unanswered, (unsigned long long)s->frames_received,
                (unsigned long long)s->frames_expected, (unsigned long long)s->lost,
                s->drained ? "" : " (drain timed out)", (unsigned long long)s->revs.gaps,
                (unsigned long long)(s->revs.late + s->revs.stale),
                (unsigned long long)s->revs.dups);
    }
    double b = per_socket_bytes(r);
    if (!isnan(b))
        fprintf(stderr, "chatload realtime: chatd RSS %.0f bytes per idle socket (%d sockets)\n", b,
                r->rss_sockets);
    if (r->stage[CL_RT_RECONNECT].ran) {
        char all[64] = "not all";
        if (r->all_resumed_seconds >= 0)
            snprintf(all, sizeof all, "all within %.2f s", r->all_resumed_seconds);
        fprintf(stderr,
                "chatload realtime: mass reconnect: %d/%d resumed (%s), resets %llu, resumes "
                "refused %llu, DB %.0f q/s\n",
                r->resumed_after_drop, r->clients, all, (unsigned long long)r->resets,
                (unsigned long long)r->resume_unsupported, r->rc_db_qps);
    }
    if (r->aborted)
        fprintf(stderr, "chatload realtime: aborted: %s\n", r->abort_reason);
}
