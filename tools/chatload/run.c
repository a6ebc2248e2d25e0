/*
 * `chatload run`: the open-model scheduler. Request k of a stage is due at
 * start + k/rate; a 1 ms timer moves due requests into a FIFO and hands them
 * to idle keep-alive connections (at most one request in flight each).
 * Latency runs from the due time, so queueing inside chatload or a stalled
 * server shows up in the percentiles (no coordinated omission). A 1 s timer
 * prints progress and scrapes /metrics on a connection of its own.
 */
#include "chatload.h"
#include "run.h"
#include "zipf.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <http_parser.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

const char *const cl_op_names[CL_OP_N] = {"history", "count", "metadata", "profile", "send",
                                          "inbox",   "read",  "edit",     "delete"};

/* Messages this run sent (201 answers), to edit and delete as their sender. */
#define OWNED_CAP 4096
typedef struct {
    long long mid;
    int conv, user; /* indices into the seed */
} owned_t;

#define MAX_CONNS 20000
#define QUEUE_CAP (1u << 20)
#define OPEN_PER_TICK 200
#define MAX_CONNECTING 256 /* handshakes in progress at once, below listen backlogs */
#define DRAIN_SECONDS 10.0
#define RAMP_SECONDS 10.0 /* longest wait for a stage's connections to open */

typedef enum { C_DEAD, C_CONNECTING, C_IDLE, C_BUSY, C_CLOSING } conn_state_t;

typedef struct {
    uint64_t due;
    int stage;
    int retried; /* already retried once after a keep-alive close */
} due_t;

typedef struct conn {
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_write_t write;
    http_parser parser;
    int idx;
    conn_state_t state;
    int in_idle;
    int got_bytes;   /* some of the answer to the request in flight arrived */
    uint64_t served; /* answers received on this connection */
    uint64_t retry_at;
    due_t req;
    int op;
    int conv, user; /* the request's conversation and user (indices into the seed) */
    long long mid;  /* the message an edit or delete changes */
    char sbody[96]; /* the head of a send's answer: {"id":…,"conversation_id":…,"seq":… */
    size_t sblen;
    char wbuf[1024];
} conn_t;

typedef struct {
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_write_t write;
    http_parser parser;
    int busy;
    char *body;
    size_t len, cap;
    int done;
} scraper_t;

static struct {
    uv_loop_t *loop;
    cl_url_t url;
    cl_seed_t seed;
    cl_zipf_t zipf;
    cl_rng_t rng;
    int mix[CL_OP_N], mix_total;
    owned_t owned[OWNED_CAP];
    int nowned;
    long long *conv_seq; /* newest seq seen per conversation index (from send answers) */
    double older_share;
    int src_addrs;
    conn_t *conns;
    int nconns_alloc, target, open_conns;
    int *idle; /* FIFO ring of idle connections, nconns_alloc long */
    int ihead, nidle;
    due_t *queue;
    size_t qhead, qlen;
    uv_timer_t tick, second;
    uv_signal_t sigint, sigterm;
    int interrupted;
    scraper_t scr;
    uint64_t t0, stage_t0, next_due, k;
    int cur, finished;
    int ramping; /* stage clock not started: connections still opening */
    uint64_t ramp_deadline;
    double ramp_t0;
    int connecting;
    int unreachable;
    uint64_t drain_deadline;
    int inflight;
    cl_results_t res;
    size_t cap_ticks, cap_scrapes;
    cl_hist_t *sec_hist;
    uint64_t sec_completed, sec_errors;
    http_parser_settings psettings, ssettings;
    char rbuf[65536];
} R;

static double now_s(void)
{
    return (double)(uv_hrtime() - R.t0) / 1e9;
}

static void conn_close(conn_t *c);

static void push_idle(conn_t *c)
{
    if (c->in_idle)
        return;
    c->in_idle = 1;
    R.idle[(R.ihead + R.nidle++) % R.nconns_alloc] = c->idx;
}

static void record(int stage, int op, uint64_t due, int status)
{
    cl_stage_t *st = &R.res.stages[stage];
    uint64_t lat_us = (uv_hrtime() - due) / 1000;
    if (status < 0 || status >= CL_STATUS_SLOTS)
        status = 0;
    st->status[status]++;
    st->completed++;
    R.sec_completed++;
    if (status < 200 || status > 299) {
        st->errors++;
        R.sec_errors++;
    }
    if (status) {
        cl_hist_record(&st->hist[op], lat_us);
        cl_hist_record(&st->hist[CL_OP_N], lat_us);
        cl_hist_record(R.sec_hist, lat_us);
    }
}

static void alloc_cb(uv_handle_t *h, size_t sug, uv_buf_t *b)
{
    b->base = R.rbuf;
    b->len = sizeof R.rbuf;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    if (c->state == C_BUSY && c->op == CL_OP_SEND && c->sblen + 1 < sizeof c->sbody) {
        size_t n = len < sizeof c->sbody - 1 - c->sblen ? len : sizeof c->sbody - 1 - c->sblen;
        memcpy(c->sbody + c->sblen, at, n);
        c->sblen += n;
        c->sbody[c->sblen] = '\0';
    }
    return 0;
}

/* A new message of this run: remembered for edits and deletes, its seq for reads. */
static void own(long long mid, int conv, int user)
{
    owned_t o = {mid, conv, user};
    if (R.nowned < OWNED_CAP)
        R.owned[R.nowned++] = o;
    else
        R.owned[cl_rng_below(&R.rng, OWNED_CAP)] = o;
}

static void note_sent(const conn_t *c)
{
    long long mid, conv, seq;
    if (sscanf(c->sbody, "{\"id\":%lld,\"conversation_id\":%lld,\"seq\":%lld", &mid, &conv, &seq) !=
        3)
        return;
    if (seq > R.conv_seq[c->conv])
        R.conv_seq[c->conv] = seq;
    own(mid, c->conv, c->user);
}

static int on_response(http_parser *p)
{
    conn_t *c = p->data;
    if (c->state != C_BUSY)
        return 0;
    if (c->op == CL_OP_SEND && p->status_code == 201)
        note_sent(c);
    else if (c->op == CL_OP_EDIT && p->status_code == 200)
        own(c->mid, c->conv, c->user);
    record(c->req.stage, c->op, c->req.due, (int)p->status_code);
    R.inflight--;
    c->served++;
    c->state = C_IDLE;
    if (!http_should_keep_alive(p) || c->idx >= R.target)
        conn_close(c);
    else
        push_idle(c);
    return 0;
}

static void on_conn_closed(uv_handle_t *h)
{
    conn_t *c = h->data;
    c->state = C_DEAD;
    c->retry_at = uv_hrtime() + 50 * 1000000ull;
}

static void conn_close(conn_t *c)
{
    if (c->state == C_DEAD || c->state == C_CLOSING)
        return;
    if (c->state == C_BUSY) {
        R.inflight--;
        if (!c->got_bytes && c->served > 0 && c->op != CL_OP_SEND && !c->req.retried &&
            !R.finished && R.qlen < QUEUE_CAP) {
            /* the server closed a reused keep-alive connection as the request went
             * out: retry a read once elsewhere, its latency still counted from due */
            R.qhead = (R.qhead + QUEUE_CAP - 1) % QUEUE_CAP;
            R.queue[R.qhead] = c->req;
            R.queue[R.qhead].retried = 1;
            R.qlen++;
            R.res.retries++;
        } else {
            record(c->req.stage, c->op, c->req.due, 0);
        }
    }
    if (c->state == C_IDLE || c->state == C_BUSY)
        R.open_conns--;
    c->state = C_CLOSING;
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    conn_t *c = s->data;
    if (n == 0)
        return;
    if (n < 0) {
        conn_close(c);
        return;
    }
    if (c->state == C_BUSY)
        c->got_bytes = 1;
    size_t used = http_parser_execute(&c->parser, &R.psettings, b->base, (size_t)n);
    if (c->parser.http_errno != HPE_OK || used != (size_t)n) {
        if (c->state == C_BUSY) {
            record(c->req.stage, c->op, c->req.due, 0);
            R.inflight--;
            c->state = C_IDLE;
        }
        conn_close(c);
    }
}

static void on_connected(uv_connect_t *req, int status)
{
    conn_t *c = req->data;
    R.connecting--;
    if (c->state != C_CONNECTING)
        return;
    if (status != 0) {
        if (R.res.connect_errors++ < 5)
            fprintf(stderr, "chatload: connect (connection %d): %s\n", c->idx, uv_strerror(status));
        c->state = C_IDLE; /* so that close counts nothing in flight */
        R.open_conns++;
        conn_close(c);
        return;
    }
    R.open_conns++;
    c->state = C_IDLE;
    http_parser_init(&c->parser, HTTP_RESPONSE);
    c->parser.data = c;
    uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, on_read);
    push_idle(c);
}

static void conn_open(conn_t *c)
{
    uv_tcp_init(R.loop, &c->tcp);
    c->tcp.data = c;
    c->connect.data = c;
    c->served = 0;
    /* in_idle stays as it is: a stale entry left in the idle queue by the
     * previous connection in this slot is reused, never duplicated */
    c->state = C_CONNECTING;
    R.connecting++;
    if (!R.url.ipv6 && R.src_addrs > 0) {
        struct sockaddr_in src;
        memset(&src, 0, sizeof src);
        src.sin_family = AF_INET;
        src.sin_addr.s_addr = htonl((127u << 24) | (uint32_t)(1 + c->idx % R.src_addrs));
        uv_tcp_bind(&c->tcp, (const struct sockaddr *)&src, 0);
    }
    uv_tcp_nodelay(&c->tcp, 1);
    int rc =
        uv_tcp_connect(&c->connect, &c->tcp, (const struct sockaddr *)&R.url.addr, on_connected);
    if (rc != 0) {
        if (R.res.connect_errors++ < 5)
            fprintf(stderr, "chatload: connect (connection %d): %s\n", c->idx, uv_strerror(rc));
        R.connecting--;
        c->state = C_CLOSING;
        uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
    }
}

static void on_written(uv_write_t *w, int status)
{
    conn_t *c = w->data;
    if (status != 0 && c->state == C_BUSY)
        conn_close(c);
}

static void send_request(conn_t *c, due_t d)
{
    int ci = (int)cl_zipf_sample(&R.zipf, &R.rng);
    const cl_conv_t *cv = &R.seed.convs[ci];
    int ui = cv->members[cl_rng_below(&R.rng, (uint64_t)cv->nmembers)];
    int pick = (int)cl_rng_below(&R.rng, (uint64_t)R.mix_total), op = 0;
    while (pick >= R.mix[op])
        pick -= R.mix[op++];
    long long mid = 0;
    if ((op == CL_OP_EDIT || op == CL_OP_DELETE) && R.nowned == 0)
        op = CL_OP_SEND; /* nothing of ours to change yet: write something first */
    if (op == CL_OP_EDIT || op == CL_OP_DELETE) {
        int k = (int)cl_rng_below(&R.rng, (uint64_t)R.nowned);
        mid = R.owned[k].mid;
        ci = R.owned[k].conv;
        ui = R.owned[k].user;
        cv = &R.seed.convs[ci];
        /* Taken out while the change is in flight, so no two changes of one
         * message race (an edit after a delete would be a 404); an edit puts
         * it back when answered. */
        R.owned[k] = R.owned[--R.nowned];
    }
    const cl_user_t *u = &R.seed.users[ui];
    char path[160], body[128] = "";
    const char *method = "GET";
    long long cid = (long long)cv->id;
    switch (op) {
    case CL_OP_HISTORY: {
        int offset =
            cl_rng_double(&R.rng) < R.older_share ? 50 * (1 + (int)cl_rng_below(&R.rng, 4)) : 0;
        snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages?limit=50&offset=%d", cid,
                 offset);
        break;
    }
    case CL_OP_COUNT:
        snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages/count", cid);
        break;
    case CL_OP_METADATA:
        snprintf(path, sizeof path, "/api/v1/conversations/%lld", cid);
        break;
    case CL_OP_PROFILE:
        snprintf(path, sizeof path, "/api/v1/users/%lld",
                 (long long)R.seed.users[cl_rng_below(&R.rng, R.seed.nusers)].id);
        break;
    case CL_OP_INBOX:
        snprintf(path, sizeof path, "/api/v1/conversations?limit=20");
        break;
    case CL_OP_READ:
        method = "POST";
        snprintf(path, sizeof path, "/api/v1/conversations/%lld/read", cid);
        snprintf(body, sizeof body, "{\"seq\":%lld}", R.conv_seq[ci]);
        break;
    case CL_OP_EDIT:
        method = "PATCH";
        snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages/%lld", cid, mid);
        snprintf(body, sizeof body, "{\"body\":\"chatload edit %llu\"}", (unsigned long long)R.k);
        break;
    case CL_OP_DELETE:
        method = "DELETE";
        snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages/%lld", cid, mid);
        break;
    default:
        method = "POST";
        snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages", cid);
        snprintf(body, sizeof body, "{\"body\":\"chatload %llu\"}", (unsigned long long)R.k);
        break;
    }
    c->conv = ci;
    c->user = ui;
    c->mid = mid;
    c->sblen = 0;
    c->sbody[0] = '\0';
    int n = snprintf(c->wbuf, sizeof c->wbuf,
                     "%s %s HTTP/1.1\r\nHost: %s:%d\r\nAuthorization: Bearer %s\r\n%s"
                     "Content-Length: %zu\r\n\r\n%s",
                     method, path, R.url.host, R.url.port, u->token,
                     *body ? "Content-Type: application/json\r\n" : "", strlen(body), body);
    if (n < 0 || (size_t)n >= sizeof c->wbuf)
        n = (int)strlen(c->wbuf);
    c->req = d;
    c->op = op;
    c->got_bytes = 0;
    c->state = C_BUSY;
    R.inflight++;
    R.res.stages[d.stage].sent++;
    uv_buf_t b = uv_buf_init(c->wbuf, (unsigned)n);
    c->write.data = c;
    if (uv_write(&c->write, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0)
        conn_close(c);
}

static void dispatch(void)
{
    while (R.qlen && R.nidle) {
        /* the connection idle longest goes first, so every open connection
         * carries requests, as every connected client of a chat service does */
        conn_t *c = &R.conns[R.idle[R.ihead]];
        R.ihead = (R.ihead + 1) % R.nconns_alloc;
        R.nidle--;
        c->in_idle = 0;
        if (c->state != C_IDLE)
            continue;
        if (c->idx >= R.target) {
            conn_close(c);
            continue;
        }
        due_t d = R.queue[R.qhead];
        R.qhead = (R.qhead + 1) % QUEUE_CAP;
        R.qlen--;
        send_request(c, d);
    }
}

static void stage_begin(int i)
{
    cl_stage_t *st = &R.res.stages[i];
    R.cur = i;
    R.target = st->conns;
    R.ramping = 1;
    R.ramp_t0 = now_s();
    R.ramp_deadline = uv_hrtime() + (uint64_t)(RAMP_SECONDS * 1e9);
    for (int j = 0; j < R.nconns_alloc; j++)
        if (j >= R.target && R.conns[j].state == C_IDLE)
            conn_close(&R.conns[j]);
    fprintf(stderr, "chatload: stage %d: opening %d connections, then %.0f req/s for %.0f s\n",
            i + 1, st->conns, st->rate, st->seconds);
}

static void scrape_start(void);
static void finish(void);

static void on_tick(uv_timer_t *t)
{
    uint64_t now = uv_hrtime();
    if (R.finished)
        return;
    if (R.cur < R.res.nstages && R.ramping && now >= R.ramp_deadline && R.open_conns == 0) {
        fprintf(stderr, "chatload: no connection to %s:%d opened in %.0f s; giving up\n",
                R.url.host, R.url.port, RAMP_SECONDS);
        R.unreachable = 1;
        finish();
        return;
    }
    if (R.cur < R.res.nstages && R.ramping &&
        (R.open_conns >= R.target || now >= R.ramp_deadline)) {
        /* the stage clock starts once its connections are open (or the ramp timed out) */
        cl_stage_t *st = &R.res.stages[R.cur];
        R.ramping = 0;
        R.stage_t0 = now;
        R.k = 0;
        R.next_due = now;
        st->t_start = now_s();
        st->ramp_seconds = st->t_start - R.ramp_t0;
        st->open_at_start = R.open_conns;
    }
    if (R.cur < R.res.nstages && !R.ramping) {
        cl_stage_t *st = &R.res.stages[R.cur];
        uint64_t end = R.stage_t0 + (uint64_t)(st->seconds * 1e9);
        while (R.next_due <= now && R.next_due < end) {
            if (R.qlen == QUEUE_CAP) {
                R.res.dropped++;
                st->status[0]++;
                st->errors++;
            } else {
                R.queue[(R.qhead + R.qlen) % QUEUE_CAP] = (due_t){R.next_due, R.cur, 0};
                R.qlen++;
            }
            st->due++;
            R.k++;
            R.next_due = R.stage_t0 + (uint64_t)((double)R.k * 1e9 / st->rate);
        }
        if (now >= end) {
            st->t_end = now_s();
            if (R.cur + 1 < R.res.nstages) {
                stage_begin(R.cur + 1);
            } else {
                R.cur = R.res.nstages;
                R.drain_deadline = now + (uint64_t)(DRAIN_SECONDS * 1e9);
                fprintf(stderr, "chatload: stages done, draining %zu queued and %d in flight\n",
                        R.qlen, R.inflight);
            }
        }
    }
    int opened = 0;
    for (int j = 0; R.open_conns + R.connecting < R.target && j < R.target &&
                    opened < OPEN_PER_TICK && R.connecting < MAX_CONNECTING;
         j++) {
        conn_t *c = &R.conns[j];
        if (c->state == C_DEAD && c->retry_at <= now) {
            conn_open(c);
            opened++;
        }
    }
    dispatch();
    if (R.cur >= R.res.nstages && ((R.qlen == 0 && R.inflight == 0) || now >= R.drain_deadline))
        finish();
}

static void on_second(uv_timer_t *t)
{
    if (R.finished)
        return;
    if (R.res.nticks < R.cap_ticks) {
        cl_tick_t *tk = &R.res.ticks[R.res.nticks++];
        tk->t = now_s();
        tk->stage = R.cur < R.res.nstages ? R.cur : R.res.nstages - 1;
        tk->completed = R.sec_completed;
        tk->errors = R.sec_errors;
        tk->p50_ms = cl_hist_quantile(R.sec_hist, 0.5) / 1000.0;
        tk->p95_ms = cl_hist_quantile(R.sec_hist, 0.95) / 1000.0;
        tk->p99_ms = cl_hist_quantile(R.sec_hist, 0.99) / 1000.0;
        tk->queued = R.qlen;
        tk->open_conns = R.open_conns;
        const cl_stage_t *st = &R.res.stages[tk->stage];
        fprintf(
            stderr,
            "[%5.1fs] stage %d conns %d/%d rate %llu/s p95(stage) %.2f ms errors %llu queued %zu\n",
            tk->t, tk->stage + 1, R.open_conns, st->conns, (unsigned long long)R.sec_completed,
            cl_hist_quantile(&st->hist[CL_OP_N], 0.95) / 1000.0, (unsigned long long)st->errors,
            R.qlen);
    }
    cl_hist_init(R.sec_hist);
    R.sec_completed = R.sec_errors = 0;
    scrape_start();
}

/* ---- /metrics on its own connection, one at a time ---- */

static int scr_body(http_parser *p, const char *at, size_t n)
{
    scraper_t *s = &R.scr;
    if (s->len + n + 1 > s->cap) {
        s->cap = (s->len + n + 1) * 2;
        s->body = realloc(s->body, s->cap);
        if (!s->body)
            abort();
    }
    memcpy(s->body + s->len, at, n);
    s->len += n;
    return 0;
}

static int scr_done(http_parser *p)
{
    scraper_t *s = &R.scr;
    if (p->status_code == 200 && R.res.nscrapes < R.cap_scrapes) {
        cl_scrape_t *sc = &R.res.scrapes[R.res.nscrapes];
        cl_scrape_parse(sc, s->body ? s->body : "", s->len);
        sc->t = now_s();
        /* the first scrape is the baseline of the first stage */
        /* while a stage is still opening its connections, samples count as the
         * end of the previous stage (the baseline of this one) */
        sc->stage = R.res.nscrapes == 0      ? -1
                    : R.cur >= R.res.nstages ? R.res.nstages - 1
                    : R.ramping              ? R.cur - 1
                                             : R.cur;
        if (sc->ok)
            R.res.nscrapes++;
    }
    s->done = 1;
    return 0;
}

static void scr_closed(uv_handle_t *h)
{
    R.scr.busy = 0;
}

static void scr_close(void)
{
    if (!uv_is_closing((uv_handle_t *)&R.scr.tcp))
        uv_close((uv_handle_t *)&R.scr.tcp, scr_closed);
}

static void scr_alloc(uv_handle_t *h, size_t sug, uv_buf_t *b)
{
    static char buf[65536];
    b->base = buf;
    b->len = sizeof buf;
}

static void scr_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    if (n == 0)
        return;
    if (n < 0) {
        if (n == UV_EOF)
            http_parser_execute(&R.scr.parser, &R.ssettings, NULL, 0);
        scr_close();
        return;
    }
    http_parser_execute(&R.scr.parser, &R.ssettings, b->base, (size_t)n);
    if (R.scr.done || R.scr.parser.http_errno != HPE_OK)
        scr_close();
}

static void scr_written(uv_write_t *w, int status)
{
    if (status != 0)
        scr_close();
}

static void scr_connected(uv_connect_t *req, int status)
{
    if (status != 0) {
        scr_close();
        return;
    }
    static char reqbuf[256];
    int n = snprintf(reqbuf, sizeof reqbuf,
                     "GET /metrics HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n",
                     R.url.host, R.url.port);
    uv_buf_t b = uv_buf_init(reqbuf, (unsigned)n);
    uv_read_start((uv_stream_t *)&R.scr.tcp, scr_alloc, scr_read);
    if (uv_write(&R.scr.write, (uv_stream_t *)&R.scr.tcp, &b, 1, scr_written) != 0)
        scr_close();
}

static void scrape_start(void)
{
    scraper_t *s = &R.scr;
    if (s->busy || R.finished)
        return;
    s->busy = 1;
    s->done = 0;
    s->len = 0;
    http_parser_init(&s->parser, HTTP_RESPONSE);
    uv_tcp_init(R.loop, &s->tcp);
    if (uv_tcp_connect(&s->connect, &s->tcp, (const struct sockaddr *)&R.url.addr, scr_connected) !=
        0)
        scr_close();
}

static void finish(void)
{
    R.finished = 1;
    /* whatever is still queued or in flight never got an answer in time */
    while (R.qlen) {
        due_t d = R.queue[R.qhead];
        R.qhead = (R.qhead + 1) % QUEUE_CAP;
        R.qlen--;
        record(d.stage, 0, d.due, 0);
    }
    for (int j = 0; j < R.nconns_alloc; j++)
        if (R.conns[j].state != C_DEAD && R.conns[j].state != C_CLOSING) {
            if (R.conns[j].state == C_CONNECTING) {
                R.conns[j].state = C_CLOSING;
                uv_close((uv_handle_t *)&R.conns[j].tcp, on_conn_closed);
            } else {
                conn_close(&R.conns[j]);
            }
        }
    uv_timer_stop(&R.tick);
    uv_timer_stop(&R.second);
    uv_close((uv_handle_t *)&R.tick, NULL);
    uv_close((uv_handle_t *)&R.second, NULL);
    uv_close((uv_handle_t *)&R.sigint, NULL);
    uv_close((uv_handle_t *)&R.sigterm, NULL);
    if (R.scr.busy)
        scr_close();
    R.res.duration = now_s();
}

/* SIGINT/SIGTERM end the run early; the results so far are still written. */
static void on_signal(uv_signal_t *h, int signum)
{
    if (R.finished)
        return;
    fprintf(stderr, "chatload: %s, stopping early\n", strsignal(signum));
    R.interrupted = R.res.interrupted = 1;
    if (R.cur < R.res.nstages && !R.ramping)
        R.res.stages[R.cur].t_end = now_s();
    finish();
}

/* ---- command line ---- */

/* "@path": the mix is read from a file, weights separated by commas,
 * spaces or newlines, '#' starting a comment. */
static char *mix_text(const char *s)
{
    if (s[0] != '@')
        return strdup(s);
    FILE *f = fopen(s + 1, "r");
    if (!f)
        return NULL;
    char line[512], *out = calloc(1, 1);
    size_t len = 0;
    while (out && fgets(line, sizeof line, f)) {
        line[strcspn(line, "#")] = 0;
        for (char *tok = strtok(line, ", \t\r\n"); tok; tok = strtok(NULL, ", \t\r\n")) {
            size_t n = strlen(tok);
            out = realloc(out, len + n + 2);
            if (!out)
                abort();
            if (len)
                out[len++] = ',';
            memcpy(out + len, tok, n + 1);
            len += n;
        }
    }
    fclose(f);
    return out;
}

static int parse_mix(const char *s)
{
    memset(R.mix, 0, sizeof R.mix);
    char *dup = mix_text(s), *save = NULL;
    if (!dup)
        return -1;
    int rc = 0;
    for (char *tok = strtok_r(dup, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        int found = 0;
        if (eq) {
            *eq = 0;
            for (int i = 0; i < CL_OP_N; i++)
                if (strcmp(tok, cl_op_names[i]) == 0) {
                    R.mix[i] = atoi(eq + 1);
                    found = R.mix[i] >= 0;
                }
        }
        if (!found)
            rc = -1;
    }
    free(dup);
    R.mix_total = 0;
    for (int i = 0; i < CL_OP_N; i++)
        R.mix_total += R.mix[i];
    return rc == 0 && R.mix_total > 0 ? 0 : -1;
}

static int parse_stages(const char *s)
{
    int n = 1;
    for (const char *p = s; *p; p++)
        n += *p == ',';
    R.res.stages = calloc((size_t)n, sizeof *R.res.stages);
    if (!R.res.stages)
        abort();
    const char *p = s;
    for (int i = 0; i < n; i++) {
        int conns;
        double rate, secs;
        int used = 0;
        if (sscanf(p, "%d:%lf:%lf%n", &conns, &rate, &secs, &used) != 3 || conns < 1 ||
            conns > MAX_CONNS || rate <= 0 || secs <= 0 || secs > 86400)
            return -1;
        cl_stage_t *st = &R.res.stages[i];
        st->conns = conns;
        st->rate = rate;
        st->seconds = secs;
        for (int k = 0; k <= CL_OP_N; k++)
            cl_hist_init(&st->hist[k]);
        p += used;
        if (*p == ',')
            p++;
        else if (*p || i != n - 1)
            return -1;
    }
    R.res.nstages = n;
    return 0;
}

static void usage(void)
{
    fprintf(
        stderr,
        "usage: chatload run --url http://127.0.0.1:3000 --seedfile seed.json\n"
        "         --stages CONNS:RATE:SECONDS[,...]   e.g. 1000:2000:30,5000:4000:30\n"
        "         [--mix history=90,count=4,metadata=2,profile=2,send=2] [--older 0.2]\n"
        "         [--zipf 1.1] [--seed 42] [--src-addrs 64] [--json out.json] [--report out.md]\n");
}

int cl_cmd_run(int argc, char **argv)
{
    const char *url = "http://127.0.0.1:3000", *seedfile = NULL, *stages = NULL, *json = NULL,
               *md = NULL;
    const char *mix = "history=90,count=4,metadata=2,profile=2,send=2";
    memset(&R, 0, sizeof R);
    R.older_share = 0.2;
    R.src_addrs = 64;
    R.res.zipf = 1.1;
    R.res.seed = 42;
    static const struct option opts[] = {
        {"url", 1, 0, 'u'},       {"seedfile", 1, 0, 'f'}, {"stages", 1, 0, 'S'},
        {"mix", 1, 0, 'm'},       {"zipf", 1, 0, 'z'},     {"seed", 1, 0, 's'},
        {"json", 1, 0, 'j'},      {"report", 1, 0, 'r'},   {"older", 1, 0, 'o'},
        {"src-addrs", 1, 0, 'a'}, {"help", 0, 0, 'h'},     {0, 0, 0, 0}};
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'u':
            url = optarg;
            break;
        case 'f':
            seedfile = optarg;
            break;
        case 'S':
            stages = optarg;
            break;
        case 'm':
            mix = optarg;
            break;
        case 'z':
            R.res.zipf = atof(optarg);
            break;
        case 's':
            R.res.seed = strtoull(optarg, NULL, 10);
            break;
        case 'j':
            json = optarg;
            break;
        case 'r':
            md = optarg;
            break;
        case 'o':
            R.older_share = atof(optarg);
            break;
        case 'a':
            R.src_addrs = atoi(optarg);
            break;
        default:
            usage();
            return 2;
        }
    }
    char err[256];
    if (!seedfile || !stages) {
        usage();
        return 2;
    }
    if (cl_url_parse(&R.url, url, err, sizeof err) != 0) {
        fprintf(stderr, "chatload: %s\n", err);
        return 2;
    }
    if (parse_mix(mix) != 0) {
        fprintf(stderr,
                "chatload: bad --mix %s (names: history count metadata profile send inbox read "
                "edit delete)\n",
                mix);
        return 2;
    }
    if (parse_stages(stages) != 0) {
        fprintf(stderr, "chatload: bad --stages %s (CONNS:RATE:SECONDS, 1..%d connections)\n",
                stages, MAX_CONNS);
        free(R.res.stages);
        return 2;
    }
    if (R.src_addrs < 0 || R.src_addrs > 254)
        R.src_addrs = 64;
    if (cl_seed_load(&R.seed, seedfile) != 0) {
        free(R.res.stages);
        return 2;
    }
    R.conv_seq = calloc(R.seed.nconvs + 1, sizeof *R.conv_seq);
    if (!R.conv_seq)
        abort();
    if (cl_zipf_init(&R.zipf, R.seed.nconvs, R.res.zipf) != 0) {
        fprintf(stderr, "chatload: bad --zipf\n");
        return 2;
    }
    cl_rng_init(&R.rng, R.res.seed);
    R.res.url = url;
    R.res.mix = mix;
    R.res.seedfile = seedfile;

    int maxc = 0;
    double total = 0;
    for (int i = 0; i < R.res.nstages; i++) {
        if (R.res.stages[i].conns > maxc)
            maxc = R.res.stages[i].conns;
        total += R.res.stages[i].seconds;
    }
    long nofile = cl_raise_nofile();
    if (nofile > 0 && maxc + 64 > nofile) {
        /* 64 descriptors for the loop, the scraper and stdio */
        int cap = nofile > 128 ? (int)nofile - 64 : 64;
        fprintf(stderr,
                "chatload: WARNING: the descriptor hard limit is %ld; stages are capped at %d "
                "connections "
                "(raise ulimit -Hn for more)\n",
                nofile, cap);
        for (int i = 0; i < R.res.nstages; i++)
            if (R.res.stages[i].conns > cap) {
                R.res.stages[i].conns = cap;
                R.res.stages[i].capped = 1;
            }
        maxc = cap;
    }
    R.nconns_alloc = maxc;
    R.conns = calloc((size_t)maxc, sizeof *R.conns);
    R.idle = calloc((size_t)maxc, sizeof *R.idle);
    R.queue = malloc(QUEUE_CAP * sizeof *R.queue);
    R.cap_ticks = (size_t)(total + DRAIN_SECONDS) + 16;
    R.cap_scrapes = R.cap_ticks;
    R.res.ticks = calloc(R.cap_ticks, sizeof *R.res.ticks);
    R.res.scrapes = calloc(R.cap_scrapes, sizeof *R.res.scrapes);
    R.sec_hist = malloc(sizeof *R.sec_hist);
    if (!R.conns || !R.idle || !R.queue || !R.res.ticks || !R.res.scrapes || !R.sec_hist)
        abort();
    cl_hist_init(R.sec_hist);
    for (int j = 0; j < maxc; j++)
        R.conns[j].idx = j;

    http_parser_settings_init(&R.psettings);
    R.psettings.on_message_complete = on_response;
    R.psettings.on_body = on_body;
    http_parser_settings_init(&R.ssettings);
    R.ssettings.on_body = scr_body;
    R.ssettings.on_message_complete = scr_done;

    R.loop = uv_default_loop();
    R.t0 = uv_hrtime();
    R.cur = 0;
    uv_timer_init(R.loop, &R.tick);
    uv_timer_init(R.loop, &R.second);
    scrape_start(); /* the baseline for the first stage */
    stage_begin(0);
    uv_signal_init(R.loop, &R.sigint);
    uv_signal_init(R.loop, &R.sigterm);
    uv_signal_start(&R.sigint, on_signal, SIGINT);
    uv_signal_start(&R.sigterm, on_signal, SIGTERM);
    uv_timer_start(&R.tick, on_tick, 1, 1);
    uv_timer_start(&R.second, on_second, 1000, 1000);
    uv_run(R.loop, UV_RUN_DEFAULT);

    uint64_t errors = 0, completed = 0;
    for (int i = 0; i < R.res.nstages; i++) {
        errors += R.res.stages[i].errors;
        completed += R.res.stages[i].completed;
    }
    fprintf(stderr, "chatload: done in %.1f s: %llu requests answered or failed, %llu errors\n",
            R.res.duration, (unsigned long long)completed, (unsigned long long)errors);
    int rc = R.unreachable || R.interrupted ? 1 : 0;
    if (json && cl_report_json(&R.res, json) != 0)
        rc = 1;
    if (md && cl_report_md(&R.res, md) != 0)
        rc = 1;

    uv_loop_close(R.loop);
    cl_zipf_dispose(&R.zipf);
    cl_seed_dispose(&R.seed);
    free(R.conv_seq);
    free(R.scr.body);
    free(R.conns);
    free(R.idle);
    free(R.queue);
    free(R.res.ticks);
    free(R.res.scrapes);
    free(R.res.stages);
    free(R.sec_hist);
    return rc;
}
