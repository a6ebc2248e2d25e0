/*
 * `chatload realtime` (rt.h): set-up over REST, then one libuv loop that
 * holds the WebSocket clients, the senders and a /metrics scraper, and moves
 * through the phases below with a 1 ms timer. Every event frame a client
 * receives goes through its conversation's rev tracker (rt_check.h) and is
 * matched to the message that caused it by the id in its body, so that at
 * the end each committed message counts the members that never got it.
 *
 *   connect   open every socket (a bounded number of handshakes at once);
 *             each sends "resume" with its positions (all 0) and is in sync
 *             at "resumed"
 *   settle    1 s idle, then chatd's RSS is read; the senders connect
 *   steady    sends at the rate for --seconds
 *   drain     until every frame of the stage arrived (bounded)
 *   rc-lead   sends again; after a moment a /metrics scrape, then every
 *             socket is dropped at once and reconnects at once
 *   rc        each socket resumes from the revs it holds, until all have
 *             "resumed" (bounded); a scrape
 *   rc-tail   sends for a little longer, then a last drain
 */
#include "rt.h"
#include "chatload.h"
#include "fetch.h"
#include "rt_send.h"
#include "rt_setup.h"
#include "rt_shape.h"
#include "rt_ws.h"
#include "zipf.h"

#include <arpa/inet.h>
#include <getopt.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

const char *const cl_rt_stage_names[CL_RT_NSTAGES] = {"steady", "reconnect"};

enum {
    PH_CONNECT,
    PH_SETTLE,
    PH_SENDERS,
    PH_STEADY,
    PH_DRAIN,
    PH_RC_LEAD,
    PH_RC_PRE,
    PH_RC,
    PH_RC_POST,
    PH_RC_TAIL,
    PH_RC_DRAIN,
    PH_DONE
};
const char *const cl_rt_phase_names[] = {"connect", "settle",  "senders",  "steady",
                                         "drain",   "rc-lead", "rc-pre",   "rc",
                                         "rc-post", "rc-tail", "rc-drain", "done"};

#define MAX_CLIENTS 20000
#define OPEN_PER_TICK 256
#define MAX_ATTEMPTS 10     /* connects of one client after a failure, per stage */
#define SETTLE_SECONDS 1.0  /* idle sockets before chatd's RSS is read */
#define SENDERS_SECONDS 5.0 /* longest wait for the senders to connect */

static const char DROPPED[] = "dropped by chatload";
static const char FINISHED[] = "run finished";

typedef struct {
    cl_wsc_t ws;
    int user;         /* index into the users and the shape */
    uint8_t awaiting; /* "resume" sent, "resumed" not yet received */
    uint8_t ready;    /* in sync on this connection */
    uint8_t queued;   /* in the connect queue */
    uint8_t was_open; /* the handshake of this connection succeeded */
    uint8_t rc_done;  /* resumed (or gave up) since the drop */
    uint8_t attempts;
    uint64_t retry_at;
} client_t;

typedef struct {
    uint64_t due_us; /* when it was due, µs since the run started */
    int conv;
    int32_t received; /* first arrivals on the members' sockets */
    int64_t rev;      /* learned from the first frame, 0 before */
    uint8_t stage;
    uint8_t counted; /* its frames are expected (committed, or a frame arrived) */
} msg_t;

typedef struct {
    int user, conv;
    int64_t from, to;
} reset_t;

typedef struct {
    int64_t id;
    int idx;
} conv_key_t;

static struct {
    uv_loop_t *loop;
    cl_url_t url;
    /* options */
    int src_addrs, max_connecting, nsenders, setup_parallel;
    double drain_s, connect_timeout_s, resume_timeout_s, lead_s, tail_s, setup_timeout_s;
    cl_rt_shape_opts_t shape_opts;
    /* the data */
    cl_seed_t seed; /* when users come from a seed file */
    cl_user_t *users;
    int nusers;
    cl_rt_shape_t sh;
    conv_key_t *conv_keys;
    cl_rev_track_t *track; /* per entry of sh.uconv */
    client_t *cl;
    int n;
    msg_t *msgs;
    uint64_t nmsgs, cap_msgs;
    reset_t *resets;
    size_t nresets, cap_resets;
    cl_rng_t rng;
    /* the loop */
    int phase;
    int *cq; /* connect queue of client indices */
    int cq_head, cq_len;
    int connecting, open, ready;
    uv_timer_t tick, second;
    uv_signal_t sigint, sigterm;
    cl_rtsend_t *sender;
    cl_fetch_t fetch;
    int scrape_purpose; /* of the fetch in flight: 0 periodic, 1 before the drop, 2 after */
    int want_scrape;    /* a forced scrape (1 or 2) to start when the fetch is free */
    cl_scrape_t pre, post;
    int have_pre, have_post;
    uint64_t t0, phase_t0;
    int sending;
    uint64_t send_t0, send_k;
    int64_t outstanding[CL_RT_NSTAGES];
    uint64_t t_drop, last_resumed;
    int rc_done;
    uint64_t cpu0;
    uint64_t hard_deadline;
    int finished;
    cl_hist_t *sec_hist;
    uint64_t sec_frames, sec_ok, sec_err;
    cl_rt_results_t res;
    size_t cap_ticks, cap_scrapes;
    char *rbuf; /* resume frame being built */
    size_t rcap;
} R;

static double now_s(void)
{
    return (double)(uv_hrtime() - R.t0) / 1e9;
}

static int stage_of_phase(int ph)
{
    return ph <= PH_DRAIN ? CL_RT_STEADY : CL_RT_RECONNECT;
}

static void set_phase(int ph)
{
    R.phase = ph;
    R.phase_t0 = uv_hrtime();
    fprintf(stderr, "chatload realtime: [%6.1fs] %s\n", now_s(), cl_rt_phase_names[ph]);
}

static void finish(void);
static void close_stage(int st, int last);

/* ---- chatd's process: memory and CPU ---- */

static long rss_kb(long pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

/* utime + stime of every thread, in clock ticks; 0 when unknown. */
static uint64_t cpu_ticks(long pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')');
    unsigned long long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return 0;
    return ut + st;
}

/* ---- conversations by id ---- */

static int key_cmp(const void *a, const void *b)
{
    int64_t x = ((const conv_key_t *)a)->id, y = ((const conv_key_t *)b)->id;
    return x < y ? -1 : x > y;
}

static int conv_index(int64_t id)
{
    int lo = 0, hi = R.sh.nconvs;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (R.conv_keys[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < R.sh.nconvs && R.conv_keys[lo].id == id ? R.conv_keys[lo].idx : -1;
}

/* ---- connecting ---- */

static void want_connect(int i, uint64_t delay_ms)
{
    client_t *c = &R.cl[i];
    if (c->queued || R.finished)
        return;
    c->queued = 1;
    c->retry_at = uv_hrtime() + delay_ms * 1000000ull;
    R.cq[(R.cq_head + R.cq_len++) % R.n] = i;
}

static void on_open(cl_wsc_t *ws);
static void on_text(cl_wsc_t *ws, const char *msg, size_t len);
static void on_closed(cl_wsc_t *ws, const char *reason, int status);
static const cl_wsc_cbs_t wsc_cbs = {on_open, on_text, on_closed};

static void connect_some(void)
{
    uint64_t now = uv_hrtime();
    int started = 0;
    /* each entry looked at once per tick; one not due yet goes to the back */
    for (int seen = R.cq_len;
         seen > 0 && R.connecting < R.max_connecting && started < OPEN_PER_TICK; seen--) {
        int i = R.cq[R.cq_head];
        client_t *c = &R.cl[i];
        R.cq_head = (R.cq_head + 1) % R.n;
        if (c->retry_at > now) {
            R.cq[(R.cq_head + R.cq_len - 1) % R.n] = i;
            continue;
        }
        R.cq_len--;
        c->queued = 0;
        if (c->ws.state != CL_WSC_DEAD)
            continue;
        struct sockaddr_in src;
        const struct sockaddr *srcp = NULL;
        if (!R.url.ipv6 && R.src_addrs > 0) {
            memset(&src, 0, sizeof src);
            src.sin_family = AF_INET;
            src.sin_addr.s_addr = htonl((127u << 24) | (uint32_t)(1 + i % R.src_addrs));
            srcp = (const struct sockaddr *)&src;
        }
        c->ws.data = c;
        c->ready = c->awaiting = c->was_open = 0;
        if (cl_wsc_connect(&c->ws, R.loop, (const struct sockaddr *)&R.url.addr, srcp, R.url.host,
                           R.url.port, R.users[c->user].token, &wsc_cbs) == 0) {
            R.connecting++;
            started++;
        } else {
            want_connect(i, 100);
        }
    }
}

/* {"type":"resume","positions":{"<conversation id>":<last rev held>,…}} */
static void send_resume(client_t *c)
{
    int u = c->user;
    size_t need = 64 + (size_t)(R.sh.uoff[u + 1] - R.sh.uoff[u]) * 44;
    if (need > R.rcap) {
        R.rcap = need * 2;
        R.rbuf = realloc(R.rbuf, R.rcap);
        if (!R.rbuf)
            abort();
    }
    size_t n = (size_t)snprintf(R.rbuf, R.rcap, "{\"type\":\"resume\",\"positions\":{");
    for (long k = R.sh.uoff[u]; k < R.sh.uoff[u + 1]; k++)
        n +=
            (size_t)snprintf(R.rbuf + n, R.rcap - n, "%s\"%lld\":%lld", k > R.sh.uoff[u] ? "," : "",
                             (long long)R.sh.conv_id[R.sh.uconv[k]], (long long)R.track[k].last);
    n += (size_t)snprintf(R.rbuf + n, R.rcap - n, "}}");
    c->awaiting = 1;
    cl_wsc_send_text(&c->ws, R.rbuf, n);
}

static void on_open(cl_wsc_t *ws)
{
    client_t *c = ws->data;
    R.connecting--;
    R.open++;
    c->was_open = 1;
    c->attempts = 0;
    send_resume(c);
}

/* The client is in sync: "resumed" (ok = 1), or an error frame answered its
 * resume (chatd without resume), or it gave up. */
static void synced(client_t *c, int ok)
{
    c->awaiting = 0;
    if (!c->ready && c->was_open) {
        c->ready = 1;
        R.ready++;
    }
    if (R.t_drop && !c->rc_done) {
        c->rc_done = 1;
        R.rc_done++;
        if (ok) {
            R.res.resumed_after_drop++;
            R.last_resumed = uv_hrtime();
            cl_hist_record(&R.res.resume_latency, (R.last_resumed - R.t_drop) / 1000);
        }
    }
}

static void on_closed(cl_wsc_t *ws, const char *reason, int status)
{
    client_t *c = ws->data;
    if (c->was_open)
        R.open--;
    else
        R.connecting--;
    if (c->ready)
        R.ready--;
    c->ready = c->awaiting = 0;
    if (R.finished)
        return;
    if (reason == DROPPED) {
        want_connect((int)(c - R.cl), 0);
        return;
    }
    if (!c->was_open) {
        R.res.handshake_failures++;
        if (reason == CL_WSC_REFUSED && status == 401)
            R.res.refused_401++;
        else if (reason == CL_WSC_REFUSED)
            R.res.refused_other++;
        if (R.res.handshake_failures <= 5)
            fprintf(stderr, "chatload realtime: client %d: %s%s%.0d\n", (int)(c - R.cl), reason,
                    status ? ", status " : "", status);
    } else {
        R.res.unexpected_closes++;
        if (R.res.unexpected_closes <= 5)
            fprintf(stderr, "chatload realtime: client %d: %s\n", (int)(c - R.cl), reason);
    }
    if (++c->attempts < MAX_ATTEMPTS)
        want_connect((int)(c - R.cl), 100u * c->attempts);
    else if (R.t_drop && !c->rc_done)
        synced(c, 0); /* gave up: the reconnect stage does not wait for it */
}

/* ---- frames ---- */

static void on_resumed(client_t *c, const cl_rt_frame_t *f)
{
    if (!c->awaiting) {
        R.res.resumed_mismatch++; /* a "resumed" nobody asked for */
        return;
    }
    int u = c->user;
    long listed = 0;
    const char *p = f->positions, *end = p ? p + f->positions_len : NULL;
    int64_t conv, rev;
    int rc;
    while (p && (rc = cl_rt_positions_next(&p, end, &conv, &rev)) == 1) {
        int ci = conv_index(conv);
        long k = ci >= 0 ? cl_rt_shape_find(&R.sh, u, ci) : -1;
        if (k < 0 || R.track[k].last != rev)
            R.res.resumed_mismatch++;
        listed++;
    }
    if (!p || rc < 0 || listed != R.sh.uoff[u + 1] - R.sh.uoff[u])
        R.res.resumed_mismatch++;
    synced(c, 1);
}

static void on_reset(client_t *c, const cl_rt_frame_t *f)
{
    R.res.resets++;
    int ci = conv_index(f->conv);
    long k = ci >= 0 ? cl_rt_shape_find(&R.sh, c->user, ci) : -1;
    if (k < 0 || f->rev < 0) {
        R.res.unexpected_frames++;
        return;
    }
    int64_t from = R.track[k].last, skipped = cl_rev_track_reset(&R.track[k], f->rev);
    if (skipped <= 0)
        return;
    R.res.reset_skipped += (uint64_t)skipped;
    R.outstanding[stage_of_phase(R.phase)] -= skipped;
    if (R.nresets == R.cap_resets) {
        R.cap_resets = R.cap_resets ? R.cap_resets * 2 : 256;
        R.resets = realloc(R.resets, R.cap_resets * sizeof *R.resets);
        if (!R.resets)
            abort();
    }
    R.resets[R.nresets++] = (reset_t){c->user, ci, from, f->rev};
}

static void count_committed(msg_t *m)
{
    if (m->counted)
        return;
    m->counted = 1;
    R.outstanding[m->stage] += R.sh.size[m->conv];
}

static void on_event(client_t *c, const cl_rt_frame_t *f)
{
    if (f->conv <= 0 || f->rev < 0) {
        R.res.bad_frames++;
        return;
    }
    int ci = conv_index(f->conv);
    if (ci < 0) {
        R.res.foreign_frames++; /* a conversation of another run */
        return;
    }
    long k = cl_rt_shape_find(&R.sh, c->user, ci);
    if (k < 0) {
        R.res.unexpected_frames++; /* not a member */
        return;
    }
    int64_t skipped;
    cl_rev_result_t r = cl_rev_track_see(&R.track[k], f->rev, &skipped);
    int st = stage_of_phase(R.phase);
    cl_rev_counts_add(&R.res.stage[st].revs, r, skipped);
    if (r == CL_REV_DUP || r == CL_REV_STALE || f->type != CL_RTF_MESSAGE || !f->body)
        return;
    uint32_t tag;
    uint64_t uid, t_us;
    if (cl_rt_body_parse(f->body, f->body_len, &tag, &uid, &t_us) != 0 || tag != R.res.tag ||
        uid >= R.nmsgs) {
        R.res.foreign_frames++;
        return;
    }
    msg_t *m = &R.msgs[uid];
    if (m->conv != ci)
        R.res.misrouted++;
    if (!m->rev)
        m->rev = f->rev;
    else if (m->rev != f->rev)
        R.res.rev_mismatch++;
    count_committed(m);
    m->received++;
    R.outstanding[m->stage]--;
    cl_rt_stage_t *s = &R.res.stage[m->stage];
    if (s->closed)
        return; /* arrived after its stage was counted: the stage's figures stay */
    uint64_t now_us = (uv_hrtime() - R.t0) / 1000;
    uint64_t lat = now_us > t_us ? now_us - t_us : 0;
    s->frames_received++;
    cl_hist_record(&s->latency, lat);
    cl_hist_record(R.sec_hist, lat);
    R.sec_frames++;
    if ((R.phase == PH_STEADY && m->stage == CL_RT_STEADY) ||
        (R.phase >= PH_RC_LEAD && R.phase <= PH_RC_TAIL && m->stage == CL_RT_RECONNECT))
        s->window_frames++;
}

static void on_text(cl_wsc_t *ws, const char *msg, size_t len)
{
    client_t *c = ws->data;
    cl_rt_frame_t f;
    if (cl_rt_frame_parse(msg, len, &f) != 0) {
        R.res.bad_frames++;
        return;
    }
    R.res.frames_by_type[f.type]++;
    switch (f.type) {
    case CL_RTF_MESSAGE:
    case CL_RTF_EDITED:
    case CL_RTF_DELETED:
        on_event(c, &f);
        break;
    case CL_RTF_RESUMED:
        on_resumed(c, &f);
        break;
    case CL_RTF_RESET:
        on_reset(c, &f);
        break;
    case CL_RTF_ERROR:
        if (c->awaiting && f.code && f.code_len == 11 && !memcmp(f.code, "bad_request", 11)) {
            R.res.resume_unsupported++; /* a chatd without resume */
            synced(c, 0);
        } else {
            R.res.error_frames++;
        }
        break;
    default:
        break;
    }
}

/* ---- sends ---- */

static void on_sent(uint64_t uid, int status, void *ud)
{
    msg_t *m = &R.msgs[uid];
    cl_rt_stage_t *s = &R.res.stage[m->stage];
    if (R.finished && status == 0) {
        s->sends_unanswered++; /* the run ended with it queued or in flight */
        return;
    }
    s->send_status[status > 0 && status < CL_STATUS_SLOTS ? status : 0]++;
    uint64_t now_us = (uv_hrtime() - R.t0) / 1000;
    if (status > 0)
        cl_hist_record(&s->send_latency, now_us > m->due_us ? now_us - m->due_us : 0);
    if (status >= 200 && status <= 299) {
        s->sends_ok++;
        R.sec_ok++;
        count_committed(m);
    } else {
        s->sends_failed++;
        R.sec_err++;
    }
}

static void send_due(void)
{
    uint64_t now = uv_hrtime();
    int st = stage_of_phase(R.phase);
    double rate = st == CL_RT_RECONNECT ? R.res.rate * R.res.rc_share : R.res.rate;
    cl_rt_stage_t *s = &R.res.stage[st];
    for (;;) {
        uint64_t due = R.send_t0 + (uint64_t)((double)R.send_k * 1e9 / rate);
        if (due > now)
            break;
        R.send_k++;
        s->sends_due++;
        if (R.nmsgs == R.cap_msgs) {
            s->sends_dropped++;
            continue;
        }
        int conv, user;
        cl_rt_shape_draw_send(&R.sh, &R.rng, &conv, &user);
        uint64_t uid = R.nmsgs++;
        R.msgs[uid] = (msg_t){.due_us = (due - R.t0) / 1000, .conv = conv, .stage = (uint8_t)st};
        char path[96], text[CL_RT_BODY_MAX], body[192];
        snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages",
                 (long long)R.sh.conv_id[conv]);
        cl_rt_body_format(text, sizeof text, R.res.tag, uid, R.msgs[uid].due_us);
        snprintf(body, sizeof body, "{\"body\":\"%s\",\"client_msg_id\":\"rt-%08x-%llu\"}", text,
                 R.res.tag, (unsigned long long)uid);
        if (cl_rtsend_post(R.sender, uid, path, R.users[user].token, body) != 0)
            s->sends_dropped++;
    }
}

/* ---- /metrics ---- */

static void on_scraped(int status, const char *body, size_t len, void *ud);

static void scrape(int purpose)
{
    if (cl_fetch_busy(&R.fetch) || R.finished)
        return;
    R.scrape_purpose = purpose;
    cl_fetch_get(&R.fetch, R.loop, &R.url, "/metrics", on_scraped, NULL);
}

static void on_scraped(int status, const char *body, size_t len, void *ud)
{
    if (R.finished)
        return;
    cl_scrape_t sc;
    memset(&sc, 0, sizeof sc);
    if (status == 200)
        cl_scrape_parse(&sc, body, len);
    sc.t = now_s();
    sc.stage = stage_of_phase(R.phase);
    if (sc.ok && R.res.nscrapes < R.cap_scrapes) {
        R.res.scrape_phase[R.res.nscrapes] = R.phase;
        R.res.scrapes[R.res.nscrapes++] = sc;
    }
    if (R.scrape_purpose == 1) {
        R.pre = sc;
        R.have_pre = sc.ok;
    } else if (R.scrape_purpose == 2) {
        R.post = sc;
        R.have_post = sc.ok;
    }
    R.scrape_purpose = 0;
    if (R.want_scrape) { /* a forced one waited for this */
        int p = R.want_scrape;
        R.want_scrape = 0;
        scrape(p);
    }
}

/* Queries per second between the scrapes taken at or after t0 and at or before t1. */
static double db_qps_between(double t0, double t1)
{
    const cl_scrape_t *a = NULL, *b = NULL;
    for (size_t j = 0; j < R.res.nscrapes; j++) {
        const cl_scrape_t *s = &R.res.scrapes[j];
        if (!a && s->t >= t0 - 0.5)
            a = s;
        if (s->t <= t1 + 0.5)
            b = s;
    }
    return a && b && b->t > a->t ? (b->queries - a->queries) / (b->t - a->t) : NAN;
}

/* ---- the phases ---- */

static void start_window(int st)
{
    cl_rt_stage_t *s = &R.res.stage[st];
    s->ran = 1;
    s->t_start = now_s();
    R.send_t0 = uv_hrtime();
    R.send_k = 0;
    R.sending = 1;
    R.cpu0 = R.res.chatd_pid > 0 ? cpu_ticks(R.res.chatd_pid) : 0;
}

static void end_window(int st)
{
    cl_rt_stage_t *s = &R.res.stage[st];
    R.sending = 0;
    s->t_end = now_s();
    if (R.res.chatd_pid > 0 && R.cpu0) {
        uint64_t c1 = cpu_ticks(R.res.chatd_pid);
        double secs = s->t_end - s->t_start;
        if (c1 >= R.cpu0 && secs > 0)
            s->cpu_chatd = (double)(c1 - R.cpu0) / (double)sysconf(_SC_CLK_TCK) / secs;
    }
}

static int drained(void)
{
    return R.outstanding[CL_RT_STEADY] <= 0 && R.outstanding[CL_RT_RECONNECT] <= 0 &&
           cl_rtsend_pending(R.sender) == 0;
}

static void drop_all(void)
{
    R.t_drop = uv_hrtime();
    R.rc_done = 0;
    R.res.dropped = 0;
    for (int i = 0; i < R.n; i++) {
        client_t *c = &R.cl[i];
        c->rc_done = 0;
        c->attempts = 0;
        if (c->ws.state != CL_WSC_DEAD && c->ws.state != CL_WSC_CLOSING) {
            R.res.dropped++;
            cl_wsc_close(&c->ws, DROPPED);
        } else {
            want_connect(i, 0); /* a client that was down reconnects with the others */
        }
    }
    fprintf(stderr, "chatload realtime: dropped %d sockets at once\n", R.res.dropped);
}

static void on_tick(uv_timer_t *t)
{
    uint64_t now = uv_hrtime();
    double in_phase = (double)(now - R.phase_t0) / 1e9;
    if (R.finished)
        return;
    if (now > R.hard_deadline) {
        snprintf(R.res.abort_reason, sizeof R.res.abort_reason,
                 "the run passed its time bound in phase %s", cl_rt_phase_names[R.phase]);
        R.res.aborted = 1;
        finish();
        return;
    }
    if (R.sending)
        send_due();
    switch (R.phase) {
    case PH_CONNECT:
        if (R.ready == R.n || in_phase >= R.connect_timeout_s) {
            if (R.ready == 0) {
                snprintf(R.res.abort_reason, sizeof R.res.abort_reason,
                         "no client got in sync with the stream in %.0f s", R.connect_timeout_s);
                R.res.aborted = 1;
                finish();
                return;
            }
            R.res.connect_seconds = in_phase;
            set_phase(PH_SETTLE);
        }
        break;
    case PH_SETTLE:
        if (in_phase >= SETTLE_SECONDS) {
            if (R.res.chatd_pid > 0)
                R.res.rss_after_kb = rss_kb(R.res.chatd_pid);
            R.res.rss_sockets = R.open;
            R.sender = cl_rtsend_create(R.loop, &R.url, R.nsenders, R.src_addrs,
                                        (size_t)(R.res.rate * 10) + 1024, on_sent, NULL);
            set_phase(PH_SENDERS);
        }
        break;
    case PH_SENDERS:
        if (cl_rtsend_open(R.sender) == R.nsenders || in_phase >= SENDERS_SECONDS) {
            R.res.ready_at_start = R.ready;
            set_phase(PH_STEADY);
            start_window(CL_RT_STEADY);
        }
        break;
    case PH_STEADY:
        if (in_phase >= R.res.seconds) {
            end_window(CL_RT_STEADY);
            set_phase(PH_DRAIN);
        }
        break;
    case PH_DRAIN:
    case PH_RC_DRAIN: {
        int st = R.phase == PH_DRAIN ? CL_RT_STEADY : CL_RT_RECONNECT;
        int done = drained();
        if (done || in_phase >= R.drain_s) {
            R.res.stage[st].drained = done;
            R.res.stage[st].drain_seconds = in_phase;
            close_stage(st, st == CL_RT_RECONNECT || !R.res.reconnect);
            if (R.phase == PH_DRAIN && R.res.reconnect) {
                set_phase(PH_RC_LEAD);
                start_window(CL_RT_RECONNECT);
            } else {
                set_phase(PH_DONE);
                finish();
                return;
            }
        }
        break;
    }
    case PH_RC_LEAD:
        if (in_phase >= R.lead_s) {
            set_phase(PH_RC_PRE);
            if (cl_fetch_busy(&R.fetch))
                R.want_scrape = 1;
            else
                scrape(1);
        }
        break;
    case PH_RC_PRE:
        if (R.have_pre || in_phase >= 5.0) { /* without /metrics, drop all the same */
            drop_all();
            set_phase(PH_RC);
        }
        break;
    case PH_RC:
        if (R.rc_done >= R.n || in_phase >= R.resume_timeout_s) {
            double secs = (double)(uv_hrtime() - R.t_drop) / 1e9;
            R.res.rc_seconds = secs;
            R.res.all_resumed_seconds = R.res.resumed_after_drop == R.n && R.last_resumed
                                            ? (double)(R.last_resumed - R.t_drop) / 1e9
                                            : -1;
            set_phase(PH_RC_POST);
            if (cl_fetch_busy(&R.fetch))
                R.want_scrape = 2;
            else
                scrape(2);
        }
        break;
    case PH_RC_POST:
        if (R.have_post || in_phase >= 5.0)
            set_phase(PH_RC_TAIL);
        break;
    case PH_RC_TAIL:
        if (in_phase >= R.tail_s) {
            end_window(CL_RT_RECONNECT);
            set_phase(PH_RC_DRAIN);
        }
        break;
    default:
        break;
    }
    connect_some();
}

static void on_second(uv_timer_t *t)
{
    if (R.finished)
        return;
    double db_qps = -1;
    if (R.res.nscrapes >= 2) {
        const cl_scrape_t *a = &R.res.scrapes[R.res.nscrapes - 2],
                          *b = &R.res.scrapes[R.res.nscrapes - 1];
        if (b->t > a->t)
            db_qps = (b->queries - a->queries) / (b->t - a->t);
    }
    if (R.res.nticks < R.cap_ticks) {
        cl_rt_tick_t *tk = &R.res.ticks[R.res.nticks++];
        tk->t = now_s();
        tk->phase = R.phase;
        tk->frames = R.sec_frames;
        tk->sends_ok = R.sec_ok;
        tk->send_errors = R.sec_err;
        tk->p50_ms = cl_hist_quantile(R.sec_hist, 0.5) / 1000.0;
        tk->p99_ms = cl_hist_quantile(R.sec_hist, 0.99) / 1000.0;
        tk->open = R.open;
        tk->ready = R.ready;
        tk->db_qps = db_qps;
    }
    fprintf(stderr,
            "[%6.1fs] %-8s open %d/%d in sync %d frames %llu/s p99 %.1f ms sends %llu/s "
            "errors %llu queued %zu db %.0f q/s\n",
            now_s(), cl_rt_phase_names[R.phase], R.open, R.n, R.ready,
            (unsigned long long)R.sec_frames, cl_hist_quantile(R.sec_hist, 0.99) / 1000.0,
            (unsigned long long)R.sec_ok, (unsigned long long)R.sec_err,
            R.sender ? cl_rtsend_pending(R.sender) : 0, db_qps);
    cl_hist_init(R.sec_hist);
    R.sec_frames = R.sec_ok = R.sec_err = 0;
    scrape(0);
}

static void finish(void)
{
    if (R.finished)
        return;
    R.finished = 1;
    if (R.sending)
        end_window(stage_of_phase(R.phase));
    for (int i = 0; i < R.n; i++)
        cl_wsc_close(&R.cl[i].ws, FINISHED);
    if (R.sender)
        cl_rtsend_close(R.sender);
    cl_fetch_cancel(&R.fetch);
    uv_timer_stop(&R.tick);
    uv_timer_stop(&R.second);
    uv_close((uv_handle_t *)&R.tick, NULL);
    uv_close((uv_handle_t *)&R.second, NULL);
    uv_close((uv_handle_t *)&R.sigint, NULL);
    uv_close((uv_handle_t *)&R.sigterm, NULL);
    R.res.duration = now_s();
}

static void on_signal(uv_signal_t *h, int signum)
{
    if (R.finished)
        return;
    fprintf(stderr, "chatload realtime: %s, stopping early\n", strsignal(signum));
    R.res.interrupted = 1;
    finish();
}

/* ---- the figures ---- */

/*
 * Counts the frames of stage st's messages: each committed one is expected
 * on every member's socket, and what has not arrived is lost, except the
 * revs a reset told a client to reload by REST. Called when the stage's
 * drain ends, so that a later resume's catch-up does not heal its losses;
 * last: also count the skipped revs no frame ever showed.
 */
static void close_stage(int st, int last)
{
    cl_rt_stage_t *s = &R.res.stage[st];
    if (s->closed)
        return;
    s->closed = 1;
    /* which message each rev of a conversation was, from the frames */
    int64_t *maxrev = calloc((size_t)R.sh.nconvs, sizeof *maxrev);
    uint64_t **byrev = calloc((size_t)R.sh.nconvs, sizeof *byrev);
    int32_t *excused = calloc(R.nmsgs ? R.nmsgs : 1, sizeof *excused);
    if (!maxrev || !byrev || !excused)
        abort();
    for (uint64_t u = 0; u < R.nmsgs; u++)
        if (R.msgs[u].rev > maxrev[R.msgs[u].conv])
            maxrev[R.msgs[u].conv] = R.msgs[u].rev;
    for (int c = 0; c < R.sh.nconvs; c++) {
        byrev[c] = calloc((size_t)maxrev[c] + 1, sizeof **byrev);
        if (!byrev[c])
            abort();
    }
    for (uint64_t u = 0; u < R.nmsgs; u++)
        if (R.msgs[u].rev > 0)
            byrev[R.msgs[u].conv][R.msgs[u].rev] = u + 1;
    for (size_t i = 0; i < R.nresets; i++) {
        const reset_t *rs = &R.resets[i];
        for (int64_t r = rs->from + 1; r <= rs->to; r++) {
            if (r <= maxrev[rs->conv] && byrev[rs->conv][r])
                excused[byrev[rs->conv][r] - 1]++;
            else if (last)
                R.res.reset_unmapped++;
        }
    }
    for (uint64_t u = 0; u < R.nmsgs; u++) {
        const msg_t *m = &R.msgs[u];
        if (!m->counted || m->stage != st)
            continue;
        int64_t expect = R.sh.size[m->conv];
        s->frames_expected += (uint64_t)expect;
        int64_t miss = expect - m->received - excused[u];
        if (miss > 0)
            s->lost += (uint64_t)miss;
    }
    for (int c = 0; c < R.sh.nconvs; c++)
        free(byrev[c]);
    free(byrev);
    free(maxrev);
    free(excused);
}

/* Once the loop is done. */
static void account(void)
{
    if (R.res.stage[CL_RT_STEADY].ran)
        close_stage(CL_RT_STEADY, !R.res.stage[CL_RT_RECONNECT].ran);
    if (R.res.stage[CL_RT_RECONNECT].ran)
        close_stage(CL_RT_RECONNECT, 1);
    for (int st = 0; st < CL_RT_NSTAGES; st++) {
        cl_rt_stage_t *s = &R.res.stage[st];
        if (s->ran)
            s->db_qps = db_qps_between(s->t_start, s->t_end);
    }
    if (R.have_pre && R.have_post && R.post.t > R.pre.t) {
        R.res.rc_db_qps = (R.post.queries - R.pre.queries) / (R.post.t - R.pre.t);
        R.res.rc_server_resumed = R.post.resumes_resumed - R.pre.resumes_resumed;
        R.res.rc_server_reset = R.post.resumes_reset - R.pre.resumes_reset;
        R.res.rc_gap_fills = R.post.gap_fills - R.pre.gap_fills;
        double mx = 0;
        for (size_t j = 1; j < R.res.nscrapes; j++) {
            const cl_scrape_t *a = &R.res.scrapes[j - 1], *b = &R.res.scrapes[j];
            if (a->t >= R.pre.t - 1e-9 && b->t <= R.post.t + 1e-9 && b->t > a->t) {
                double q = (b->queries - a->queries) / (b->t - a->t);
                if (q > mx)
                    mx = q;
            }
        }
        R.res.rc_db_qps_max = mx;
    } else {
        R.res.rc_db_qps = R.res.rc_db_qps_max = R.res.rc_server_resumed = R.res.rc_server_reset =
            R.res.rc_gap_fills = NAN;
    }
}

static void shape_summary(void)
{
    cl_rt_results_t *r = &R.res;
    r->nconvs = R.sh.nconvs;
    r->memberships = R.sh.nmemberships;
    r->size_max = R.sh.size[0];
    r->size_min = R.sh.size[R.sh.nconvs - 1];
    r->mean_fanout = cl_rt_shape_mean_fanout(&R.sh);
    for (int c = 0; c < R.sh.nconvs; c++) {
        int s = R.sh.size[c];
        int b = s >= 1000 || s == R.sh.size[0] ? 0 : s > 100 ? 1 : s > 10 ? 2 : 3;
        r->convs_by_size[b]++;
    }
}

/* ---- command line ---- */

static void usage(void)
{
    fprintf(
        stderr,
        "usage: chatload realtime --url http://127.0.0.1:3000 [--seedfile seed.json]\n"
        "         [--clients 10000] (--rate SENDS_PER_S | --frame-rate FRAMES_PER_S)\n"
        "         [--seconds 30] [--no-reconnect] [--rc-share 1] [--chatd-pid PID] [--seed 42]\n"
        "         [--senders 64] [--src-addrs 64] [--max-connecting 512]\n"
        "         [--max-members N] [--per-user 3] [--drain-seconds 10]\n"
        "         [--connect-timeout 60] [--resume-timeout 60] [--setup-timeout 300]\n"
        "         [--setup-parallel 4]\n"
        "         [--json out.json] [--report out.md]\n");
}

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int setup(void)
{
    cl_rt_results_t *r = &R.res;
    double t = mono();
    R.users = calloc((size_t)R.n, sizeof *R.users);
    if (!R.users)
        abort();
    if (r->seedfile) {
        if (cl_seed_load(&R.seed, r->seedfile) != 0)
            return -1;
        if ((int)R.seed.nusers < R.n) {
            fprintf(stderr, "chatload realtime: the seed file has %zu users, %d clients asked\n",
                    R.seed.nusers, R.n);
            return -1;
        }
        for (int i = 0; i < R.n; i++)
            R.users[i] = (cl_user_t){R.seed.users[i].id, strdup(R.seed.users[i].token)};
    } else {
        fprintf(stderr, "chatload realtime: signing up %d users\n", R.n);
        r->signed_up = 1;
        if (cl_rt_signup(&R.url, R.n, r->tag, R.setup_parallel, R.setup_timeout_s, R.users) != 0)
            return -1;
    }
    r->users_seconds = mono() - t;
    if (cl_rt_shape_build(&R.sh, R.n, &R.shape_opts, &R.rng) != 0) {
        fprintf(stderr, "chatload realtime: bad shape options\n");
        return -1;
    }
    shape_summary();
    fprintf(stderr,
            "chatload realtime: %d conversations (%d of %d members, %d of 2-10), %ld "
            "memberships, %.1f frames per send\n",
            r->nconvs, r->convs_by_size[0], r->size_max, r->convs_by_size[3], r->memberships,
            r->mean_fanout);
    t = mono();
    double left = R.setup_timeout_s - r->users_seconds;
    if (cl_rt_create_convs(&R.url, R.users, &R.sh, r->tag, R.setup_parallel, left > 1 ? left : 1) !=
        0)
        return -1;
    r->convs_seconds = mono() - t;
    fprintf(stderr, "chatload realtime: set-up done: users %.1f s, conversations %.1f s\n",
            r->users_seconds, r->convs_seconds);
    R.conv_keys = calloc((size_t)R.sh.nconvs, sizeof *R.conv_keys);
    if (!R.conv_keys)
        abort();
    for (int c = 0; c < R.sh.nconvs; c++)
        R.conv_keys[c] = (conv_key_t){R.sh.conv_id[c], c};
    qsort(R.conv_keys, (size_t)R.sh.nconvs, sizeof *R.conv_keys, key_cmp);
    return 0;
}

static void cleanup(void)
{
    cl_fetch_dispose(&R.fetch);
    for (int i = 0; i < R.n && R.users; i++)
        free(R.users[i].token);
    free(R.users);
    cl_seed_dispose(&R.seed);
    cl_rt_shape_dispose(&R.sh);
    free(R.conv_keys);
    free(R.track);
    free(R.cl);
    free(R.cq);
    free(R.msgs);
    free(R.resets);
    free(R.rbuf);
    free(R.sec_hist);
    free(R.res.ticks);
    free(R.res.scrapes);
    free(R.res.scrape_phase);
}

int cl_cmd_realtime(int argc, char **argv)
{
    const char *url = "http://127.0.0.1:3000", *json = NULL, *md = NULL;
    memset(&R, 0, sizeof R);
    cl_rt_results_t *r = &R.res;
    r->clients = 10000;
    r->seconds = 30;
    r->seed = 42;
    r->reconnect = 1;
    r->rc_share = 1.0;
    r->chatd_pid = -1;
    r->senders = 64;
    R.src_addrs = 64;
    R.max_connecting = 512;
    R.drain_s = 10;
    R.connect_timeout_s = 60;
    R.resume_timeout_s = 60;
    R.setup_timeout_s = 300;
    R.lead_s = 1;
    R.tail_s = 2;
    R.setup_parallel = 4;
    int max_members = 0;
    double per_user = 0;
    static const struct option opts[] = {{"url", 1, 0, 'u'},
                                         {"seedfile", 1, 0, 'f'},
                                         {"clients", 1, 0, 'c'},
                                         {"rate", 1, 0, 'r'},
                                         {"frame-rate", 1, 0, 'F'},
                                         {"seconds", 1, 0, 's'},
                                         {"no-reconnect", 0, 0, 'N'},
                                         {"chatd-pid", 1, 0, 'p'},
                                         {"seed", 1, 0, 'S'},
                                         {"senders", 1, 0, 'k'},
                                         {"src-addrs", 1, 0, 'a'},
                                         {"max-connecting", 1, 0, 'm'},
                                         {"max-members", 1, 0, 'M'},
                                         {"per-user", 1, 0, 'P'},
                                         {"drain-seconds", 1, 0, 'd'},
                                         {"connect-timeout", 1, 0, 'C'},
                                         {"resume-timeout", 1, 0, 'R'},
                                         {"setup-timeout", 1, 0, 'T'},
                                         {"setup-parallel", 1, 0, 'L'},
                                         {"rc-share", 1, 0, 'x'},
                                         {"json", 1, 0, 'j'},
                                         {"report", 1, 0, 'o'},
                                         {"help", 0, 0, 'h'},
                                         {0, 0, 0, 0}};
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'u':
            url = optarg;
            break;
        case 'f':
            r->seedfile = optarg;
            break;
        case 'c':
            r->clients = atoi(optarg);
            break;
        case 'r':
            r->rate = atof(optarg);
            break;
        case 'F':
            r->frame_rate = atof(optarg);
            break;
        case 's':
            r->seconds = atof(optarg);
            break;
        case 'N':
            r->reconnect = 0;
            break;
        case 'p':
            r->chatd_pid = atol(optarg);
            break;
        case 'S':
            r->seed = strtoull(optarg, NULL, 10);
            break;
        case 'k':
            r->senders = atoi(optarg);
            break;
        case 'a':
            R.src_addrs = atoi(optarg);
            break;
        case 'm':
            R.max_connecting = atoi(optarg);
            break;
        case 'M':
            max_members = atoi(optarg);
            break;
        case 'P':
            per_user = atof(optarg);
            break;
        case 'd':
            R.drain_s = atof(optarg);
            break;
        case 'C':
            R.connect_timeout_s = atof(optarg);
            break;
        case 'R':
            R.resume_timeout_s = atof(optarg);
            break;
        case 'T':
            R.setup_timeout_s = atof(optarg);
            break;
        case 'L':
            R.setup_parallel = atoi(optarg);
            break;
        case 'x':
            r->rc_share = atof(optarg);
            break;
        case 'j':
            json = optarg;
            break;
        case 'o':
            md = optarg;
            break;
        default:
            usage();
            return 2;
        }
    }
    if (r->clients < 1 || r->clients > MAX_CLIENTS || (r->rate > 0) == (r->frame_rate > 0) ||
        r->rate < 0 || r->frame_rate < 0 || !(r->seconds > 0) || r->seconds > 3600 ||
        r->senders < 1 || r->senders > 256 || R.max_connecting < 1 || R.drain_s < 0 ||
        !(r->rc_share > 0) || r->rc_share > 1 || R.connect_timeout_s <= 0 ||
        R.resume_timeout_s <= 0 || R.setup_timeout_s <= 0) {
        usage();
        return 2;
    }
    char err[256];
    if (cl_url_parse(&R.url, url, err, sizeof err) != 0) {
        fprintf(stderr, "chatload: %s\n", err);
        return 2;
    }
    if (R.src_addrs < 0 || R.src_addrs > 254)
        R.src_addrs = 64;
    /* a write to a socket chatd just closed fails with EPIPE instead of killing us */
    signal(SIGPIPE, SIG_IGN);
    R.n = r->clients;
    R.nsenders = r->senders;
    r->max_connecting = R.max_connecting;
    r->url = url;
    long nofile = cl_raise_nofile();
    /* sockets, senders, the scraper, stdio and the loop's own descriptors */
    if (nofile > 0 && R.n + r->senders + 64 > nofile) {
        fprintf(stderr,
                "chatload realtime: %d clients need %d descriptors; the limit is %ld "
                "(ulimit -Hn)\n",
                R.n, R.n + r->senders + 64, nofile);
        return 2;
    }
    cl_rng_init(&R.rng, r->seed);
    r->tag = (uint32_t)(((uint64_t)time(NULL) * 2654435761u) ^ (uint64_t)getpid() ^
                        (uint32_t)cl_rng_next(&R.rng));
    cl_rt_shape_defaults(&R.shape_opts, R.n);
    if (max_members > 0)
        R.shape_opts.max_members = max_members;
    if (per_user > 0)
        R.shape_opts.per_user = per_user;
    R.t0 = uv_hrtime();
    int rc = 0;
    if (setup() != 0) {
        cleanup();
        return 1;
    }
    if (r->frame_rate > 0)
        r->rate = r->frame_rate / r->mean_fanout;
    fprintf(stderr, "chatload realtime: %.1f sends/s, about %.0f frames/s offered\n", r->rate,
            r->rate * r->mean_fanout);

    /* the loop's state */
    R.track = calloc((size_t)R.sh.nmemberships, sizeof *R.track);
    R.cl = calloc((size_t)R.n, sizeof *R.cl);
    R.cq = calloc((size_t)R.n, sizeof *R.cq);
    double send_secs =
        r->seconds + (r->reconnect ? R.lead_s + R.resume_timeout_s + 10 + R.tail_s : 0);
    R.cap_msgs = (uint64_t)(r->rate * send_secs) + 1024;
    R.msgs = calloc(R.cap_msgs, sizeof *R.msgs);
    double total =
        R.connect_timeout_s + SETTLE_SECONDS + SENDERS_SECONDS + r->seconds + R.drain_s +
        (r->reconnect ? R.lead_s + 5 + R.resume_timeout_s + 5 + R.tail_s + R.drain_s : 0) + 30;
    R.hard_deadline = uv_hrtime() + (uint64_t)(total * 1e9);
    R.cap_ticks = R.cap_scrapes = (size_t)total + 16;
    r->ticks = calloc(R.cap_ticks, sizeof *r->ticks);
    r->scrapes = calloc(R.cap_scrapes, sizeof *r->scrapes);
    r->scrape_phase = calloc(R.cap_scrapes, sizeof *r->scrape_phase);
    R.sec_hist = malloc(sizeof *R.sec_hist);
    if (!R.track || !R.cl || !R.cq || !R.msgs || !r->ticks || !r->scrapes || !r->scrape_phase ||
        !R.sec_hist)
        abort();
    for (long k = 0; k < R.sh.nmemberships; k++)
        cl_rev_track_init(&R.track[k], 0); /* the conversations are new: rev 0 */
    cl_hist_init(R.sec_hist);
    cl_hist_init(&r->resume_latency);
    for (int st = 0; st < CL_RT_NSTAGES; st++) {
        cl_hist_init(&r->stage[st].latency);
        cl_hist_init(&r->stage[st].send_latency);
    }
    r->all_resumed_seconds = -1;
    r->rss_before_kb = r->rss_after_kb = -1;
    if (r->chatd_pid > 0) {
        r->rss_before_kb = rss_kb(r->chatd_pid);
        if (r->rss_before_kb < 0)
            fprintf(stderr, "chatload realtime: cannot read /proc/%ld/status\n", r->chatd_pid);
    }
    for (int i = 0; i < R.n; i++) {
        R.cl[i].user = i;
        want_connect(i, 0);
    }

    R.loop = uv_default_loop();
    cl_fetch_init(&R.fetch);
    uv_timer_init(R.loop, &R.tick);
    uv_timer_init(R.loop, &R.second);
    uv_signal_init(R.loop, &R.sigint);
    uv_signal_init(R.loop, &R.sigterm);
    uv_signal_start(&R.sigint, on_signal, SIGINT);
    uv_signal_start(&R.sigterm, on_signal, SIGTERM);
    set_phase(PH_CONNECT);
    scrape(0);
    uv_timer_start(&R.tick, on_tick, 1, 1);
    uv_timer_start(&R.second, on_second, 1000, 1000);
    uv_run(R.loop, UV_RUN_DEFAULT);
    uv_loop_close(R.loop);

    account();
    cl_rt_report_summary(r);
    if (r->interrupted || r->aborted)
        rc = 1;
    if (json && cl_rt_report_json(r, json) != 0)
        rc = 1;
    if (md && cl_rt_report_md(r, md) != 0)
        rc = 1;
    cleanup();
    return rc;
}
