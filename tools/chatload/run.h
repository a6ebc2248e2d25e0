/*
 * Results of a `chatload run`: per-stage histograms and counters, the
 * per-second timeline and the /metrics scrapes; scrape parsing and the
 * JSON/Markdown writers that turn them into a report.
 */
#ifndef CHATLOAD_RUN_H
#define CHATLOAD_RUN_H

#include "hist.h"

#include <stddef.h>
#include <stdint.h>

enum {
    CL_OP_HISTORY,
    CL_OP_COUNT,
    CL_OP_METADATA,
    CL_OP_PROFILE,
    CL_OP_SEND,
    CL_OP_INBOX,  /* GET /api/v1/conversations?limit=20 */
    CL_OP_READ,   /* POST …/read with the newest seq this run has seen there */
    CL_OP_EDIT,   /* PATCH one of the messages this run sent, as its sender */
    CL_OP_DELETE, /* DELETE one of them (it is then forgotten) */
    CL_OP_N
};
extern const char *const cl_op_names[CL_OP_N];

#define CL_MAX_LE 64
#define CL_STATUS_SLOTS 600 /* HTTP status; slot 0 = transport error or timeout */

/* The cache kinds chatd labels its hit and miss counters with. */
#define CL_NKINDS 7
extern const char *const cl_kind_names[CL_NKINDS];

/* One read of chatd's /metrics, sums over label sets. */
typedef struct {
    double t;  /* seconds since the run started */
    int stage; /* stage running when it was taken, -1 before the first */
    int ok;    /* the chatd metrics were found */
    double hits, misses, hit_ratio, pool_waiting, queries;
    double kind_hits[CL_NKINDS], kind_misses[CL_NKINDS]; /* by the kind="…" label */
    /* the stream's counters (0 when chatd does not have them) */
    double ws_open;                        /* chatd_connections_open{kind="websocket"} */
    double resumes_resumed, resumes_reset; /* chatd_stream_resumes_total{result} */
    double gap_fills;                      /* chatd_stream_gap_fills_total */
    double stream_events;                  /* chatd_stream_events_total, every type */
    int nle;
    double le[CL_MAX_LE], cum[CL_MAX_LE]; /* queue-wait buckets, seconds; +Inf last */
} cl_scrape_t;

/** Fills s from Prometheus text exposition; s->ok = 0 when nothing matched. */
void cl_scrape_parse(cl_scrape_t *s, const char *text, size_t len);
/** Quantile q (seconds) of the queue-wait observations made between scrapes
 *  a and b, interpolated inside its bucket; -1 when none were made. */
double cl_scrape_wait_quantile(const cl_scrape_t *a, const cl_scrape_t *b, double q);

/* One progress second. */
typedef struct {
    double t;
    int stage;
    uint64_t completed, errors;
    double p50_ms, p95_ms, p99_ms;
    size_t queued;
    int open_conns;
} cl_tick_t;

typedef struct {
    int conns;
    double rate, seconds;
    uint64_t due, sent, completed, errors;
    uint64_t status[CL_STATUS_SLOTS];
    cl_hist_t hist[CL_OP_N + 1]; /* [CL_OP_N] = all operations */
    double t_start, t_end;
    double ramp_seconds; /* opening connections before the stage clock started */
    int open_at_start;
    int capped; /* connections lowered to fit the descriptor limit */
} cl_stage_t;

typedef struct {
    const char *url, *mix, *seedfile;
    double zipf;
    unsigned long long seed;
    int nstages;
    cl_stage_t *stages;
    size_t nticks, nscrapes;
    cl_tick_t *ticks;
    cl_scrape_t *scrapes;
    uint64_t connect_errors, dropped, retries;
    double duration;
    int interrupted; /* stopped early by a signal */
} cl_results_t;

int cl_report_json(const cl_results_t *r, const char *path);
int cl_report_md(const cl_results_t *r, const char *path);

#endif
