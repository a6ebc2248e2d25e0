/*
 * `chatload realtime`: the realtime stage. N WebSocket clients, one per user,
 * in Zipf-sized conversations; senders POST messages at a fixed rate, each
 * body carrying its send time and a unique id; every client checks every
 * event frame (rev = previous + 1 per conversation, no repeat) and every
 * message must reach every member's socket. Then a mass reconnect: all
 * sockets drop at once while the senders go on, reconnect and resume from
 * the last rev they hold. These are the figures it records; rt_report.c
 * writes them as JSON and Markdown.
 */
#ifndef CHATLOAD_RT_H
#define CHATLOAD_RT_H

#include "hist.h"
#include "rt_check.h"
#include "rt_frame.h"
#include "run.h"

#include <stdint.h>

int cl_cmd_realtime(int argc, char **argv);

enum { CL_RT_STEADY, CL_RT_RECONNECT, CL_RT_NSTAGES };
extern const char *const cl_rt_stage_names[CL_RT_NSTAGES];

/* What one stage's messages did. */
typedef struct {
    int ran;
    int closed;            /* counted: frames arriving later no longer change it */
    double t_start, t_end; /* the send window, seconds since the run started */
    uint64_t sends_due, sends_ok, sends_failed, sends_dropped;
    uint64_t sends_unanswered;             /* still queued or in flight when the run ended */
    uint64_t send_status[CL_STATUS_SLOTS]; /* slot 0: transport error or timeout */
    uint64_t frames_expected;              /* members of each committed message's conversation */
    uint64_t frames_received;              /* first arrivals, until the stage is closed */
    uint64_t lost;                         /* expected, not arrived by the end of its drain */
    uint64_t window_frames;                /* message frames received inside the send window */
    double drain_seconds;   /* from the end of the window until all arrived (or gave up) */
    int drained;            /* every expected frame arrived before the drain deadline */
    cl_hist_t latency;      /* send due time -> frame received, µs */
    cl_hist_t send_latency; /* send due time -> REST answer, µs */
    cl_rev_counts_t revs;   /* rev checks of the frames received during the stage */
    double db_qps;          /* chatd_db_queries_total per second over the window */
    double cpu_chatd;       /* chatd's CPU seconds per second over the window */
} cl_rt_stage_t;

typedef struct {
    double t;  /* seconds since the run started */
    int phase; /* index into cl_rt_phase_names */
    uint64_t frames, sends_ok, send_errors;
    double p50_ms, p99_ms; /* frames received in that second */
    int open, ready;
    double db_qps; /* from the last two scrapes, -1 when unknown */
} cl_rt_tick_t;

extern const char *const cl_rt_phase_names[];

typedef struct {
    const char *url, *seedfile;
    int clients, senders, max_connecting;
    double rate, seconds, frame_rate; /* frame_rate 0: rate given */
    double rc_share;                  /* the reconnect stage sends at rc_share x rate */
    unsigned long long seed;
    uint32_t tag;
    int reconnect; /* the mass-reconnect stage ran (was asked for) */
    /* the shape */
    int nconvs;
    long memberships;
    int size_max, size_min;
    int convs_by_size[4]; /* 1000 or more (or the largest), 101-999, 11-100, 2-10 */
    double mean_fanout;
    /* set-up */
    int signed_up;
    double users_seconds, convs_seconds, connect_seconds;
    int ready_at_start; /* clients in sync when the steady stage began */
    uint64_t handshake_failures, refused_401, refused_other, unexpected_closes;
    uint64_t resume_unsupported; /* resumes answered by an error frame: no resume in chatd */
    /* chatd's memory */
    long chatd_pid;
    long rss_before_kb, rss_after_kb; /* -1 when unknown */
    int rss_sockets;
    cl_rt_stage_t stage[CL_RT_NSTAGES];
    /* the mass reconnect */
    int dropped, resumed_after_drop;
    double all_resumed_seconds; /* drop -> the last "resumed"; -1 when not all came */
    cl_hist_t resume_latency;   /* drop -> "resumed", µs, per client */
    uint64_t resets, reset_skipped, reset_unmapped, resumed_mismatch;
    double rc_db_qps, rc_db_qps_max, rc_seconds; /* scrapes just before the drop and after */
    double rc_server_resumed, rc_server_reset, rc_gap_fills; /* deltas of chatd's counters */
    /* every frame */
    uint64_t frames_by_type[CL_RTF_N];
    uint64_t bad_frames, foreign_frames, unexpected_frames, rev_mismatch, misrouted;
    uint64_t error_frames;
    /* time series */
    size_t nticks, nscrapes;
    cl_rt_tick_t *ticks;
    cl_scrape_t *scrapes;
    int *scrape_phase;
    double duration;
    int interrupted, aborted;
    char abort_reason[128];
} cl_rt_results_t;

int cl_rt_report_json(const cl_rt_results_t *r, const char *path);
int cl_rt_report_md(const cl_rt_results_t *r, const char *path);
/** The summary lines printed on stderr at the end of a run. */
void cl_rt_report_summary(const cl_rt_results_t *r);

#endif
