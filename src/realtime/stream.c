/*
 * A worker's realtime stream (see stream.h).
 *
 * State, all on the worker's loop:
 * - conv_t, one per conversation some socket here follows: head (the last
 *   rev delivered in order here), known (the highest rev known to exist),
 *   the last RING frames by rev, and the events that arrived ahead of
 *   their turn (pending, sorted);
 * - follow_t, one per (socket, conversation): pos, the last rev written to
 *   that socket. The one rule of delivery: an event is written to a socket
 *   only when its rev is pos + 1, and pos becomes its rev.
 * - user_t, one per user with sockets here: the user's channel and the
 *   reads of their memberships.
 * A socket whose pos is below head is catching up: from the ring when the
 * frames are there, otherwise from the database (a fetch, shared by every
 * socket at the same position). When head is below known (an event came
 * ahead of its turn, or the database or a hint said more exist), the
 * conversation waits GRACE_MS for pub/sub to bring the missing events, then
 * fills from the database: one fetch per conversation and worker. Fetches and
 * membership reads run at most JOBS_MAX at a time per worker; the rest queue.
 */
#include "realtime/stream.h"
#include "core/buf.h"
#include "core/error.h"
#include "core/idtable.h"
#include "core/list.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/num.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RING 64         /* frames kept per conversation (a power of two) */
#define PENDING_MAX 256 /* events held ahead of their turn per conversation */
#define GRACE_MS 40     /* how long a gap waits for pub/sub before the database */
#define TICK_MS 20      /* the worker's timer while something waits */
#define RETRY_MS 250    /* after a failed or fruitless read */
#define AUDIT_MS                                                                                   \
    500 /* a conversation quiet this long after moving is checked against the database */
#define FETCH_LIMIT 200      /* events per read */
#define JOBS_MAX 16          /* database reads in flight per worker */
#define REVS_BATCH 500       /* conversations per revs read */
#define CONFIRM_WAIT_MS 1000 /* longest wait for a user's channel before reading memberships */
#define TYPING_MS 3000
#define HOLD_MS 500 /* a new socket's events wait this long for its resume */

typedef struct conv conv_t;
typedef struct follow follow_t;
typedef struct fetch fetch_t;
typedef struct user user_t;

/* One event's frame, shared by the ring and the pending list. */
typedef struct frame {
    int refs;
    int64_t rev;
    size_t len;
    char data[];
} frame_t;

struct conv {
    chat_stream_t *s;
    int64_t id;
    int64_t head, known;
    chat_list_t follows; /* follow_t.conv_link */
    frame_t *ring[RING]; /* ring[r % RING]: rev r, if still there */
    frame_t **pending;   /* sorted by rev, each > head + 1 */
    size_t npending, cap;
    chat_list_t gap_link; /* in s->gaps while head < known or pending */
    uint64_t gap_since;   /* when the gap was seen (or the last fill ended) */
    bool filling;
    chat_list_t fetches;    /* fetch_t.conv_link, queued or running: joined; keep c alive */
    chat_list_t audit_link; /* in s->audits (by moved_at): moved since the last audit */
    uint64_t moved_at;
    bool revs_wanted;
};

struct follow {
    conv_t *c;
    chat_stream_sub_t *sub;
    chat_list_t conv_link;
    int64_t pos;
    int64_t target;        /* a resume: done once pos >= target; -1: none */
    uint64_t gen;          /* the user's membership read when it began */
    fetch_t *fetch;        /* the catch-up read it waits on */
    chat_list_t wait_link; /* fetch->waiters, or s->retries */
    uint64_t retry_at;
};

struct chat_stream_sub {
    chat_stream_t *s;
    user_t *u;
    chat_list_t user_link;
    chat_stream_write_cb cb;
    chat_stream_ready_cb ready_cb;
    void *ud;
    chat_idtable_t follows; /* conversation -> follow_t */
    uint64_t ready_gen;     /* ready once a membership read of this gen answered */
    bool ready;
    /*
     * Holding: a new socket's events wait for its first frame (a resume
     * then starts from the client's positions, in order, with no repeat)
     * or for HOLD_MS after ready, whichever comes first.
     */
    bool holding;
    uint64_t hold_until;
    chat_list_t hold_link; /* s->holds */
    /* a resume asked before ready */
    int64_t *wconvs, *wpos;
    size_t wn;
    bool waiting_resume;
    /* the running resume */
    int64_t *rconvs;
    size_t rn;
    int resume_left; /* follows still catching up, plus one while starting */
    bool resuming;
};

struct user {
    chat_stream_t *s;
    int64_t id;
    chat_list_t subs;
    size_t nsubs;
    bool confirmed;       /* the user's channel is subscribed (or there is no Redis) */
    uint64_t since;       /* when the first socket came, waiting for confirmation */
    uint64_t gen;         /* membership reads issued */
    bool loading;         /* one in flight */
    bool busy;            /* its answer is being applied: not freed meanwhile */
    chat_idtable_t left;  /* conversations left while it was: its answer may still list them */
    bool load_wanted;     /* queued, or again once the one in flight answers */
    chat_list_t job_link; /* s->loads */
    /* s->waits: for its channel (until since + CONFIRM_WAIT_MS), or a retry */
    chat_list_t wait_link;
    uint64_t retry_at; /* a failed read: again then; 0: waiting for the channel */
};

struct fetch {
    chat_stream_t *s;
    conv_t *c;
    int64_t after, user;
    bool fill;
    chat_list_t waiters;   /* follow_t.wait_link */
    chat_list_t conv_link; /* c->fetches */
    chat_list_t job_link;  /* s->queue while queued */
};

struct chat_stream {
    uv_loop_t *loop;
    chat_hub_t *hub;
    chat_hub_worker_t *hw;
    chat_fanout_t *fanout; /* NULL: within the process only */
    chat_stream_loader_t loader;
    chat_idtable_t convs; /* id -> conv_t */
    chat_idtable_t users; /* id -> user_t */
    chat_list_t gaps, audits, retries;
    chat_list_t queue; /* fetches waiting for a job slot */
    chat_list_t loads; /* users waiting for a membership read */
    chat_list_t waits; /* user_t.wait_link */
    chat_list_t holds; /* chat_stream_sub_t.hold_link, by hold_until */
    int64_t *revs_want;
    size_t nrevs_want, cap_revs_want;
    int jobs;  /* reads in flight */
    bool turn; /* start_jobs: whose turn, membership reads or fetches */
    uv_timer_t tick;
    bool ticking;
    int closing; /* parts still closing */
    bool closed;
    void (*done)(void *arg);
    void *done_arg;
};

/* ---- metrics ---- */

static chat_metric_t *m_frames, *m_fills, *m_fill_reads, *m_catchups, *m_resumed, *m_reset, *m_revs;

/* chatd_stream_events_total{type}: the frames pushed, by their "type" */
static const char *const frame_types[] = {
    "message", "message_edited", "message_deleted", "typing", "read",
    "added",   "removed",        "resumed",         "reset",  "other",
};
#define NFRAME_TYPES (sizeof frame_types / sizeof frame_types[0])
static chat_metric_t *m_types[NFRAME_TYPES];

static void metrics_once(void)
{
    m_frames = chat_metric_counter("chatd_stream_frames_delivered_total",
                                   "Frames written to WebSocket subscribers");
    m_fills = chat_metric_counter(
        "chatd_stream_gap_fills_total",
        "Events read from the database to close a gap (they did not arrive in order)");
    m_fill_reads = chat_metric_counter("chatd_stream_gap_fill_reads_total",
                                       "Reads of the database to close gaps");
    m_catchups = chat_metric_counter(
        "chatd_stream_catchup_reads_total",
        "Reads of events from the database for sockets behind (resumes, late joins)");
    chat_metric_family_t *r = chat_metrics_counter("chatd_stream_resumes_total",
                                                   "Conversations resumed by clients, by outcome");
    m_resumed = chat_metric_series(r, "result=\"resumed\"");
    m_reset = chat_metric_series(r, "result=\"reset\"");
    m_revs = chat_metric_counter("chatd_stream_rev_checks_total",
                                 "Conversations whose rev was read from the database");
    chat_metric_family_t *t =
        chat_metrics_counter("chatd_stream_events_total", "Frames pushed on the stream, by type");
    for (size_t i = 0; i < NFRAME_TYPES; i++) {
        char label[48];
        snprintf(label, sizeof label, "type=\"%s\"", frame_types[i]);
        m_types[i] = chat_metric_series(t, label);
    }
}

static void metrics_register(void)
{
    static uv_once_t once = UV_ONCE_INIT;
    uv_once(&once, metrics_once);
}

/* ---- small helpers ---- */

static uint64_t now_ms(const chat_stream_t *s)
{
    return uv_now(s->loop);
}

static void tick_cb(uv_timer_t *t);

static void arm(chat_stream_t *s)
{
    if (!s->ticking && !s->closed) {
        s->ticking = true;
        uv_timer_start(&s->tick, tick_cb, TICK_MS, TICK_MS);
    }
}

static frame_t *frame_new(int64_t rev, const char *data, size_t len)
{
    frame_t *f = chat_malloc(sizeof *f + len);
    f->refs = 1;
    f->rev = rev;
    f->len = len;
    memcpy(f->data, data, len);
    return f;
}

static void frame_unref(frame_t *f)
{
    if (f && --f->refs == 0)
        free(f);
}

/* Every frame chatd writes starts {"type":"<type>": the type's series. */
static chat_metric_t *type_metric(const char *data, size_t len)
{
    static const char pre[] = "{\"type\":\"";
    size_t n = sizeof pre - 1;
    if (len > n && memcmp(data, pre, n) == 0) {
        const char *end = memchr(data + n, '"', len - n);
        size_t tl = end ? (size_t)(end - data - n) : 0;
        for (size_t i = 0; end && i + 1 < NFRAME_TYPES; i++)
            if (strlen(frame_types[i]) == tl && memcmp(frame_types[i], data + n, tl) == 0)
                return m_types[i];
    }
    return m_types[NFRAME_TYPES - 1];
}

static void write_frame(chat_stream_sub_t *sub, const char *data, size_t len)
{
    chat_metric_inc(m_frames);
    chat_metric_inc(type_metric(data, len));
    sub->cb(data, len, sub->ud);
}

static void want_revs(chat_stream_t *s, conv_t *c)
{
    if (c->revs_wanted)
        return;
    c->revs_wanted = true;
    if (s->nrevs_want == s->cap_revs_want) {
        s->cap_revs_want = s->cap_revs_want ? s->cap_revs_want * 2 : 64;
        s->revs_want = chat_realloc(s->revs_want, s->cap_revs_want * sizeof *s->revs_want);
    }
    s->revs_want[s->nrevs_want++] = c->id;
    arm(s);
}

/* head < known or events held: the conversation waits for pub/sub, then fills. */
static void gap_check(conv_t *c, uint64_t since)
{
    if (c->head >= c->known && c->npending == 0) {
        chat_list_remove(&c->gap_link);
        return;
    }
    if (!chat_list_linked(&c->gap_link)) {
        c->gap_since = since;
        chat_list_insert_tail(&c->s->gaps, &c->gap_link);
        arm(c->s);
    } else if (since < c->gap_since) {
        c->gap_since = since;
    }
}

/* ---- resumes ---- */

static void send_resumed(chat_stream_sub_t *sub)
{
    chat_buf_t b = CHAT_BUF_INIT;
    chat_buf_puts(&b, "{\"type\":\"resumed\",\"positions\":{");
    bool first = true;
    for (size_t i = 0; i < sub->rn; i++) {
        follow_t *f = chat_idtable_get(&sub->follows, (uint64_t)sub->rconvs[i]);
        if (!f)
            continue; /* left the conversation meanwhile */
        chat_buf_printf(&b, "%s\"%lld\":%lld", first ? "" : ",", (long long)sub->rconvs[i],
                        (long long)f->pos);
        first = false;
    }
    chat_buf_puts(&b, "}}");
    free(sub->rconvs);
    sub->rconvs = NULL;
    sub->rn = 0;
    sub->resuming = false;
    write_frame(sub, b.data, b.len);
    chat_buf_dispose(&b);
}

static void resume_step_done(chat_stream_sub_t *sub)
{
    if (--sub->resume_left == 0)
        send_resumed(sub);
}

/* After f's pos moved: its part of a resume may be done. */
static void check_target(follow_t *f)
{
    if (f->target >= 0 && f->pos >= f->target) {
        f->target = -1;
        chat_metric_inc(m_resumed);
        resume_step_done(f->sub);
    }
}

/* ---- jobs: database reads, JOBS_MAX at a time ---- */

static void fetch_answer(int err, const char *body, size_t len, void *arg);
static void load_answer(int err, const int64_t *convs, const int64_t *revs, size_t n, void *arg);
static void revs_answer(int err, const int64_t *convs, const int64_t *revs, size_t n, void *arg);
static void conv_maybe_free(conv_t *c);
static void catch_up(follow_t *f);
static void release(chat_stream_sub_t *sub);

static void start_jobs(chat_stream_t *s)
{
    /* fetches and membership reads take turns, so neither starves the other */
    while (s->jobs < JOBS_MAX && !s->closed) {
        chat_list_t *fe = chat_list_first(&s->queue), *le = chat_list_first(&s->loads);
        if (!fe && !le)
            break;
        s->jobs++;
        s->turn = !s->turn;
        if (le && (!fe || s->turn)) {
            user_t *u = CHAT_CONTAINER_OF(le, user_t, job_link);
            chat_list_remove(le);
            u->load_wanted = false;
            u->loading = true;
            u->gen++;
            s->loader.memberships(s->loader.ctx, u->id, load_answer, u);
        } else {
            fetch_t *ft = CHAT_CONTAINER_OF(fe, fetch_t, job_link);
            chat_list_remove(fe);
            chat_metric_inc(ft->fill ? m_fill_reads : m_catchups);
            s->loader.events(s->loader.ctx, ft->c->id, ft->user, ft->after, FETCH_LIMIT,
                             fetch_answer, ft);
        }
    }
}

static fetch_t *fetch_new(conv_t *c, int64_t after, int64_t user, bool fill)
{
    fetch_t *ft = chat_calloc(1, sizeof *ft);
    ft->s = c->s;
    ft->c = c;
    ft->after = after;
    ft->user = user;
    ft->fill = fill;
    chat_list_init(&ft->waiters);
    chat_list_insert_tail(&c->fetches, &ft->conv_link);
    chat_list_insert_tail(&c->s->queue, &ft->job_link);
    start_jobs(c->s);
    return ft;
}

/* f waits for a read of its conversation after its pos: an identical one is joined. */
static void fetch_for(follow_t *f)
{
    conv_t *c = f->c;
    chat_list_t *e;
    fetch_t *ft = NULL;
    CHAT_LIST_FOREACH(e, &c->fetches)
    {
        fetch_t *x = CHAT_CONTAINER_OF(e, fetch_t, conv_link);
        if (x->after == f->pos) {
            ft = x;
            break;
        }
    }
    if (!ft)
        ft = fetch_new(c, f->pos, f->sub->u->id, false);
    f->fetch = ft;
    chat_list_insert_tail(&ft->waiters, &f->wait_link);
}

static void retry_later(follow_t *f)
{
    f->retry_at = now_ms(f->c->s) + RETRY_MS;
    chat_list_insert_tail(&f->c->s->retries, &f->wait_link);
    arm(f->c->s);
}

/* ---- a conversation's events ---- */

/* Event r in order: kept, and written to every socket at r - 1. */
/*
 * c moved: once it has been quiet for AUDIT_MS its rev is read from the
 * database, which finds a last event that pub/sub lost (nothing after it
 * would show the gap). The list stays in moved_at order.
 */
static void audit_later(conv_t *c)
{
    c->moved_at = now_ms(c->s);
    chat_list_remove(&c->audit_link);
    chat_list_insert_tail(&c->s->audits, &c->audit_link);
    arm(c->s); /* the timer may be idle */
}

static void advance(conv_t *c, frame_t *fr)
{
    int64_t r = fr->rev;
    frame_t **slot = &c->ring[(uint64_t)r % RING];
    frame_unref(*slot);
    *slot = fr;
    fr->refs++;
    c->head = r;
    audit_later(c);
    chat_list_t *e, *tmp;
    CHAT_LIST_FOREACH_SAFE(e, tmp, &c->follows)
    {
        follow_t *f = CHAT_CONTAINER_OF(e, follow_t, conv_link);
        if (f->pos == r - 1 && !f->sub->holding) {
            f->pos = r;
            write_frame(f->sub, fr->data, fr->len);
            check_target(f);
        }
    }
}

static void pending_insert(conv_t *c, frame_t *fr)
{
    size_t i = c->npending;
    while (i > 0 && c->pending[i - 1]->rev > fr->rev)
        i--;
    if (i > 0 && c->pending[i - 1]->rev == fr->rev)
        return; /* held already */
    if (c->npending == PENDING_MAX) {
        if (i == c->npending)
            return; /* the highest: the fill reads it (known covers it) */
        frame_unref(c->pending[--c->npending]);
    }
    if (c->npending == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 8;
        c->pending = chat_realloc(c->pending, c->cap * sizeof *c->pending);
    }
    memmove(c->pending + i + 1, c->pending + i, (c->npending - i) * sizeof *c->pending);
    c->pending[i] = fr;
    fr->refs++;
    c->npending++;
}

/* An event of c, from the hub, pub/sub or the database. */
static void conv_event(conv_t *c, int64_t r, const char *data, size_t len)
{
    if (r > c->known)
        c->known = r;
    if (r <= c->head)
        return;
    frame_t *fr = frame_new(r, data, len);
    if (r == c->head + 1) {
        advance(c, fr);
        size_t k = 0;
        while (k < c->npending && c->pending[k]->rev <= c->head + 1) {
            if (c->pending[k]->rev == c->head + 1)
                advance(c, c->pending[k]);
            frame_unref(c->pending[k]);
            k++;
        }
        if (k > 0) { /* pending is NULL until the first event is held */
            memmove(c->pending, c->pending + k, (c->npending - k) * sizeof *c->pending);
            c->npending -= k;
        }
    } else {
        pending_insert(c, fr);
    }
    frame_unref(fr);
    gap_check(c, now_ms(c->s));
}

/* Someone says revs up to r exist (a hint, the database). */
static void conv_known(conv_t *c, int64_t r, uint64_t since)
{
    if (r > c->known)
        c->known = r;
    gap_check(c, since);
}

/*
 * Writes what the ring holds of f's missing events; if that is not all,
 * f waits for a read from the database. Called when f->pos < head.
 */
static void catch_up(follow_t *f)
{
    conv_t *c = f->c;
    if (f->sub->holding)
        return; /* caught up when released */
    while (f->pos < c->head) {
        frame_t *fr = c->ring[(uint64_t)(f->pos + 1) % RING];
        if (!fr || fr->rev != f->pos + 1)
            break;
        f->pos++;
        write_frame(f->sub, fr->data, fr->len);
    }
    if (f->pos < c->head)
        fetch_for(f);
    else
        check_target(f);
}

static const char *find(const char *p, const char *end, const char *needle)
{
    size_t n = strlen(needle);
    for (; p + n <= end; p++)
        if (*p == needle[0] && memcmp(p, needle, n) == 0)
            return p + n;
    return NULL;
}

typedef chat_stream_event_span_t event_span_t;

/* The events of an /events body (see stream.h): braces are matched outside strings. */
int64_t chat_stream_events_parse(const char *body, size_t len, event_span_t **out, size_t *nout)
{
    const char *end = body + len;
    *out = NULL;
    *nout = 0;
    int64_t conv_rev;
    const char *p = find(body, end, "\"rev\":");
    if (!p || !(p = chat_scan_u64(p, end, INT64_MAX, &conv_rev)))
        return -1;
    p = find(p, end, "\"events\":[");
    if (!p)
        return -1;
    size_t n = 0, cap = 0;
    event_span_t *v = NULL;
    while (p < end && *p != ']') {
        if (*p == ',') {
            p++;
            continue;
        }
        if (*p != '{')
            break;
        /* one object: braces outside strings */
        const char *start = p;
        int depth = 0;
        bool in_str = false;
        for (; p < end; p++) {
            if (in_str) {
                if (*p == '\\')
                    p++;
                else if (*p == '"')
                    in_str = false;
            } else if (*p == '"') {
                in_str = true;
            } else if (*p == '{') {
                depth++;
            } else if (*p == '}' && --depth == 0) {
                p++;
                break;
            }
        }
        if (depth != 0)
            break;
        /* the event's own rev comes before its message (chat_encode_event) */
        int64_t r;
        const char *q = find(start, p, "\"rev\":");
        if (!q || !chat_scan_u64(q, p, INT64_MAX, &r))
            break;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            v = chat_realloc(v, cap * sizeof *v);
        }
        v[n++] = (event_span_t){r, start, (size_t)(p - start)};
    }
    *out = v;
    *nout = n;
    return conv_rev;
}

static void fetch_answer(int err, const char *body, size_t len, void *arg)
{
    fetch_t *ft = arg;
    chat_stream_t *s = ft->s;
    conv_t *c = ft->c;
    s->jobs--;
    chat_list_remove(&ft->conv_link);
    event_span_t *ev = NULL;
    size_t n = 0;
    int64_t conv_rev = -1;
    if (err == 0 && !s->closed)
        conv_rev = chat_stream_events_parse(body, len, &ev, &n);
    if (conv_rev >= 0) {
        int64_t head0 = c->head;
        size_t fresh = 0; /* events not had before: the ones this read brought */
        for (size_t i = 0; i < n; i++) {
            fresh += ev[i].rev > c->head;
            conv_event(c, ev[i].rev, ev[i].data, ev[i].len);
        }
        conv_known(c, conv_rev, now_ms(s));
        if (ft->fill) {
            chat_metric_add(m_fills, (double)fresh);
            c->filling = false;
            /* progress: go on at once; none: wait (a cached page behind its bump) */
            if (c->head > head0 && chat_list_linked(&c->gap_link))
                c->gap_since = 0;
            else if (chat_list_linked(&c->gap_link))
                c->gap_since = now_ms(s) + RETRY_MS - GRACE_MS;
        }
    } else if (ft->fill) {
        c->filling = false;
        if (chat_list_linked(&c->gap_link))
            c->gap_since = now_ms(s) + RETRY_MS - GRACE_MS;
    }
    chat_list_t *e, *tmp;
    CHAT_LIST_FOREACH_SAFE(e, tmp, &ft->waiters)
    {
        follow_t *f = CHAT_CONTAINER_OF(e, follow_t, wait_link);
        chat_list_remove(&f->wait_link);
        f->fetch = NULL;
        if (s->closed)
            continue;
        int64_t pos0 = f->pos;
        for (size_t i = 0; i < n; i++) {
            if (ev[i].rev == f->pos + 1) {
                f->pos = ev[i].rev;
                write_frame(f->sub, ev[i].data, ev[i].len);
            }
        }
        if (f->pos >= c->head)
            check_target(f);
        else if (f->pos > pos0)
            catch_up(f);
        else
            retry_later(f);
    }
    free(ev);
    free(ft);
    start_jobs(s);
    conv_maybe_free(c);
    if (s->closed)
        chat_stream_close(s, s->done, s->done_arg);
}

/* ---- conversations and follows ---- */

static conv_t *conv_get(chat_stream_t *s, int64_t id)
{
    return chat_idtable_get(&s->convs, (uint64_t)id);
}

static conv_t *conv_open(chat_stream_t *s, int64_t id, int64_t rev)
{
    conv_t *c = conv_get(s, id);
    if (c)
        return c;
    c = chat_calloc(1, sizeof *c);
    c->s = s;
    c->id = id;
    c->head = c->known = rev;
    chat_list_init(&c->follows);
    chat_list_init(&c->gap_link);
    chat_list_init(&c->fetches);
    chat_list_init(&c->audit_link);
    chat_idtable_put(&s->convs, (uint64_t)id, c);
    if (s->fanout)
        chat_fanout_watch(s->fanout, CHAT_TOPIC_CONV, id);
    /* What committed between the rev given and the channel's subscription is read back. */
    want_revs(s, c);
    return c;
}

static void conv_maybe_free(conv_t *c)
{
    if (!chat_list_empty(&c->follows) || !chat_list_empty(&c->fetches))
        return;
    chat_stream_t *s = c->s;
    chat_list_remove(&c->gap_link);
    chat_list_remove(&c->audit_link);
    for (int i = 0; i < RING; i++)
        frame_unref(c->ring[i]);
    for (size_t i = 0; i < c->npending; i++)
        frame_unref(c->pending[i]);
    free(c->pending);
    if (s->fanout && !s->closed)
        chat_fanout_unwatch(s->fanout, CHAT_TOPIC_CONV, c->id);
    chat_idtable_del(&s->convs, (uint64_t)c->id);
    free(c);
}

static void follow(chat_stream_sub_t *sub, int64_t conv, int64_t rev)
{
    if (chat_idtable_get(&sub->follows, (uint64_t)conv))
        return;
    conv_t *c = conv_open(sub->s, conv, rev);
    follow_t *f = chat_calloc(1, sizeof *f);
    f->c = c;
    f->sub = sub;
    f->pos = rev;
    f->target = -1;
    f->gen = sub->u->gen;
    chat_list_init(&f->wait_link);
    chat_list_insert_tail(&c->follows, &f->conv_link);
    chat_idtable_put(&sub->follows, (uint64_t)conv, f);
    if (rev > c->known)
        conv_known(c, rev, now_ms(sub->s));
    else if (f->pos < c->head)
        catch_up(f);
}

static void unfollow(follow_t *f)
{
    chat_stream_sub_t *sub = f->sub;
    conv_t *c = f->c;
    chat_list_remove(&f->conv_link);
    chat_list_remove(&f->wait_link);
    chat_idtable_del(&sub->follows, (uint64_t)c->id);
    bool step = f->target >= 0;
    free(f);
    if (step && sub->resuming)
        resume_step_done(sub);
    conv_maybe_free(c);
}

bool chat_stream_follows(const chat_stream_sub_t *sub, int64_t conv)
{
    return chat_idtable_get(&sub->follows, (uint64_t)conv) != NULL;
}

/* ---- users and their memberships ---- */

static void want_load(user_t *u)
{
    chat_list_remove(&u->wait_link);
    u->retry_at = 0;
    if (u->load_wanted)
        return;
    u->load_wanted = true;
    if (!u->loading)
        chat_list_insert_tail(&u->s->loads, &u->job_link);
    start_jobs(u->s);
}

static void user_free(user_t *u)
{
    chat_stream_t *s = u->s;
    chat_list_remove(&u->job_link);
    chat_list_remove(&u->wait_link);
    chat_idtable_dispose(&u->left);
    if (s->fanout && !s->closed)
        chat_fanout_unwatch(s->fanout, CHAT_TOPIC_USER, u->id);
    chat_idtable_del(&s->users, (uint64_t)u->id);
    free(u);
}

static void run_resume(chat_stream_sub_t *sub, const int64_t *convs, const int64_t *positions,
                       size_t n);

static void load_answer(int err, const int64_t *convs, const int64_t *revs, size_t n, void *arg)
{
    user_t *u = arg;
    chat_stream_t *s = u->s;
    s->jobs--;
    u->loading = false;
    if (u->load_wanted) /* asked for while this one ran */
        chat_list_insert_tail(&s->loads, &u->job_link);
    bool gone = u->nsubs == 0 || s->closed;
    if (gone) {
        user_free(u);
        goto out;
    }
    uint64_t g = u->gen;
    u->busy = true; /* a ready callback may unsubscribe */
    chat_list_t *e, *tmp;
    if (err != 0) {
        CHAT_LIST_FOREACH_SAFE(e, tmp, &u->subs)
        {
            chat_stream_sub_t *sub = CHAT_CONTAINER_OF(e, chat_stream_sub_t, user_link);
            if (!sub->ready && sub->ready_gen <= g)
                sub->ready_cb(err, sub->ud);
        }
        if (u->nsubs > 0 && !u->load_wanted) {
            u->retry_at = now_ms(s) + RETRY_MS;
            chat_list_insert_tail(&s->waits, &u->wait_link);
            arm(s);
        }
    } else {
        chat_idtable_t in;
        chat_idtable_init(&in);
        for (size_t i = 0; i < n; i++)
            chat_idtable_put(&in, (uint64_t)convs[i], (void *)1);
        CHAT_LIST_FOREACH_SAFE(e, tmp, &u->subs)
        {
            chat_stream_sub_t *sub = CHAT_CONTAINER_OF(e, chat_stream_sub_t, user_link);
            /* follows older than this read that it does not list have ended */
            uint64_t key;
            void *v;
            for (size_t i = 0; (i = chat_idtable_next(&sub->follows, i, &key, &v)) != 0;) {
                follow_t *f = v;
                if (f->gen < g && !chat_idtable_get(&in, key)) {
                    unfollow(f);
                    i = 0; /* the table changed: start over */
                }
            }
            for (size_t i = 0; i < n; i++)
                if (!chat_idtable_get(&u->left, (uint64_t)convs[i]))
                    follow(sub, convs[i], revs[i]);
            if (sub->ready)
                continue;
            if (sub->ready_gen > g) {
                want_load(u); /* came while this read ran: read again for it */
                continue;
            }
            sub->ready = true;
            sub->hold_until = now_ms(s) + HOLD_MS;
            chat_list_insert_tail(&s->holds, &sub->hold_link);
            arm(s);
            if (sub->waiting_resume) {
                sub->waiting_resume = false;
                run_resume(sub, sub->wconvs, sub->wpos, sub->wn);
                free(sub->wconvs);
                free(sub->wpos);
                sub->wconvs = sub->wpos = NULL;
            }
            sub->ready_cb(0, sub->ud);
        }
        chat_idtable_dispose(&in);
    }
    /* the next read runs after every removal seen so far */
    chat_idtable_dispose(&u->left);
    chat_idtable_init(&u->left);
    u->busy = false;
    if (u->nsubs == 0 && !u->loading)
        user_free(u);
out:
    start_jobs(s);
    if (s->closed)
        chat_stream_close(s, s->done, s->done_arg);
}

/* ---- the timer ---- */

static void flush_revs(chat_stream_t *s)
{
    while (s->nrevs_want > 0 && s->jobs < JOBS_MAX) {
        size_t n = s->nrevs_want < REVS_BATCH ? s->nrevs_want : REVS_BATCH;
        int64_t *batch = chat_malloc(n * sizeof *batch);
        size_t k = 0;
        for (size_t i = s->nrevs_want - n; i < s->nrevs_want; i++) {
            conv_t *c = conv_get(s, s->revs_want[i]);
            if (c && c->revs_wanted) {
                c->revs_wanted = false;
                batch[k++] = c->id;
            }
        }
        s->nrevs_want -= n;
        if (k == 0) {
            free(batch);
            continue;
        }
        s->jobs++;
        chat_metric_add(m_revs, (double)k);
        s->loader.revs(s->loader.ctx, batch, k, revs_answer, s);
        free(batch);
    }
}

static void revs_answer(int err, const int64_t *convs, const int64_t *revs, size_t n, void *arg)
{
    chat_stream_t *s = arg;
    s->jobs--;
    if (s->closed) {
        chat_stream_close(s, s->done, s->done_arg);
        return;
    }
    if (err != 0) {
        /* the database is away: every conversation is checked again soon */
        uint64_t key;
        void *v;
        for (size_t i = 0; (i = chat_idtable_next(&s->convs, i, &key, &v)) != 0;)
            audit_later(v);
    }
    uint64_t t = now_ms(s);
    for (size_t i = 0; i < n; i++) {
        conv_t *c = conv_get(s, convs[i]);
        if (c) /* the database's word: no grace */
            conv_known(c, revs[i], t > GRACE_MS ? t - GRACE_MS : 0);
    }
    start_jobs(s);
}

static void tick_cb(uv_timer_t *t)
{
    chat_stream_t *s = t->data;
    uint64_t now = now_ms(s);
    bool busy = false;
    chat_list_t *e, *tmp;
    /* gaps that waited long enough: one fill each */
    CHAT_LIST_FOREACH_SAFE(e, tmp, &s->gaps)
    {
        conv_t *c = CHAT_CONTAINER_OF(e, conv_t, gap_link);
        busy = true;
        if (c->filling || now < c->gap_since + GRACE_MS)
            continue;
        chat_list_t *fe = chat_list_first(&c->follows);
        if (!fe) {
            chat_list_remove(&c->gap_link);
            continue;
        }
        follow_t *any = CHAT_CONTAINER_OF(fe, follow_t, conv_link);
        c->filling = true;
        fetch_new(c, c->head, any->sub->u->id, true);
    }
    CHAT_LIST_FOREACH_SAFE(e, tmp, &s->holds)
    {
        chat_stream_sub_t *sub = CHAT_CONTAINER_OF(e, chat_stream_sub_t, hold_link);
        busy = true;
        if (now < sub->hold_until)
            break; /* the rest came later */
        release(sub);
    }
    CHAT_LIST_FOREACH_SAFE(e, tmp, &s->retries)
    {
        follow_t *f = CHAT_CONTAINER_OF(e, follow_t, wait_link);
        busy = true;
        if (now < f->retry_at)
            continue;
        chat_list_remove(&f->wait_link);
        if (f->pos < f->c->head)
            catch_up(f);
        else
            check_target(f);
    }
    /* users waiting for their channel, or to read their memberships again */
    CHAT_LIST_FOREACH_SAFE(e, tmp, &s->waits)
    {
        user_t *u = CHAT_CONTAINER_OF(e, user_t, wait_link);
        busy = true;
        if (now >= (u->retry_at ? u->retry_at : u->since + CONFIRM_WAIT_MS))
            want_load(u);
    }
    /* conversations that moved: their rev from the database, to find a lost last event */
    CHAT_LIST_FOREACH_SAFE(e, tmp, &s->audits)
    {
        conv_t *c = CHAT_CONTAINER_OF(e, conv_t, audit_link);
        busy = true;
        if (now < c->moved_at + AUDIT_MS)
            break; /* the rest moved later */
        chat_list_remove(e);
        want_revs(s, c);
    }
    flush_revs(s);
    if (s->nrevs_want > 0 || !chat_list_empty(&s->queue) || !chat_list_empty(&s->loads))
        busy = true;
    if (!busy) {
        uv_timer_stop(&s->tick);
        s->ticking = false;
    }
}

/* ---- messages from the hub and from other instances ---- */

static void on_message(const chat_rt_msg_t *m, void *arg)
{
    chat_stream_t *s = arg;
    if (s->closed)
        return;
    switch (m->kind) {
    case CHAT_RT_EVENT: {
        conv_t *c = conv_get(s, m->id);
        if (!c)
            return;
        if (m->len == 0)
            conv_known(c, m->a, now_ms(s));
        else
            conv_event(c, m->a, m->frame, m->len);
        return;
    }
    case CHAT_RT_TYPING: {
        conv_t *c = conv_get(s, m->id);
        if (!c)
            return;
        chat_list_t *e;
        CHAT_LIST_FOREACH(e, &c->follows)
        {
            follow_t *f = CHAT_CONTAINER_OF(e, follow_t, conv_link);
            if (f->sub->u->id != m->a)
                write_frame(f->sub, m->frame, m->len);
        }
        return;
    }
    default:
        break;
    }
    user_t *u = chat_idtable_get(&s->users, (uint64_t)m->id);
    if (!u)
        return;
    if (m->kind == CHAT_RT_REMOVED && u->loading) /* a read that ran before may still list it */
        chat_idtable_put(&u->left, (uint64_t)m->a, (void *)1);
    else if (m->kind == CHAT_RT_ADDED)
        chat_idtable_del(&u->left, (uint64_t)m->a);
    chat_list_t *e, *tmp;
    CHAT_LIST_FOREACH_SAFE(e, tmp, &u->subs)
    {
        chat_stream_sub_t *sub = CHAT_CONTAINER_OF(e, chat_stream_sub_t, user_link);
        if (m->kind == CHAT_RT_REMOVED) {
            follow_t *f = chat_idtable_get(&sub->follows, (uint64_t)m->a);
            if (f)
                unfollow(f);
        }
        if (m->len > 0)
            write_frame(sub, m->frame, m->len);
        if (m->kind == CHAT_RT_ADDED)
            follow(sub, m->a, m->b);
    }
}

static void on_subscribed(int topic, int64_t id, void *arg)
{
    chat_stream_t *s = arg;
    if (s->closed)
        return;
    if (topic == CHAT_TOPIC_CONV) {
        conv_t *c = conv_get(s, id);
        if (c)
            want_revs(s, c);
        return;
    }
    user_t *u = chat_idtable_get(&s->users, (uint64_t)id);
    if (!u)
        return;
    /*
     * From now on the user's "added" and "removed" reach this worker: their
     * memberships read now miss nothing (again after an outage of Redis).
     */
    u->confirmed = true;
    want_load(u);
}

/* ---- the API ---- */

chat_stream_t *chat_stream_create(uv_loop_t *loop, const chat_stream_config_t *cfg)
{
    metrics_register();
    chat_stream_t *s = chat_calloc(1, sizeof *s);
    s->loop = loop;
    s->hub = cfg->hub;
    s->loader = cfg->loader;
    chat_idtable_init(&s->convs);
    chat_idtable_init(&s->users);
    chat_list_init(&s->gaps);
    chat_list_init(&s->audits);
    chat_list_init(&s->retries);
    chat_list_init(&s->queue);
    chat_list_init(&s->loads);
    chat_list_init(&s->waits);
    chat_list_init(&s->holds);
    uv_timer_init(loop, &s->tick);
    s->tick.data = s;
    s->hw = chat_hub_worker_create(cfg->hub, cfg->index, loop, on_message, s);
    chat_fanout_metrics_register(); /* rendered with or without Redis */
    if (cfg->redis_url) {
        chat_fanout_config_t fc = {
            .redis_url = cfg->redis_url,
            .origin = cfg->origin,
            .cmd_timeout_ms = cfg->cmd_timeout_ms,
            .drop_every = cfg->drop_every,
        };
        static const chat_fanout_handler_t fh = {on_message, on_subscribed};
        s->fanout = chat_fanout_create(loop, &fc, &fh, s);
    }
    return s;
}

static void part_closed(void *arg)
{
    chat_stream_t *s = arg;
    if (--s->closing > 0)
        return;
    void (*done)(void *) = s->done;
    void *darg = s->done_arg;
    chat_idtable_dispose(&s->convs);
    chat_idtable_dispose(&s->users);
    free(s->revs_want);
    free(s);
    if (done)
        done(darg);
}

static void timer_closed(uv_handle_t *h)
{
    part_closed(h->data);
}

void chat_stream_close(chat_stream_t *s, void (*done)(void *arg), void *arg)
{
    s->done = done;
    s->done_arg = arg;
    if (!s->closed) {
        s->closed = true;
        uv_timer_stop(&s->tick);
        /* queued reads never start */
        chat_list_t *e, *tmp;
        CHAT_LIST_FOREACH_SAFE(e, tmp, &s->queue)
        {
            fetch_t *ft = CHAT_CONTAINER_OF(e, fetch_t, job_link);
            chat_list_remove(&ft->job_link);
            chat_list_remove(&ft->conv_link);

            conv_t *c = ft->c;
            free(ft);
            conv_maybe_free(c);
        }
        CHAT_LIST_FOREACH_SAFE(e, tmp, &s->loads)
        {
            user_t *u = CHAT_CONTAINER_OF(e, user_t, job_link);
            user_free(u);
        }
    }
    if (s->jobs > 0 || s->closing > 0)
        return; /* again from the last answer */
    s->closing = 2 + (s->fanout != NULL);
    if (s->fanout)
        chat_fanout_close(s->fanout, part_closed, s);
    chat_hub_worker_close(s->hw, part_closed, s);
    uv_close((uv_handle_t *)&s->tick, timer_closed);
}

chat_stream_sub_t *chat_stream_subscribe(chat_stream_t *s, int64_t user_id, chat_stream_write_cb cb,
                                         chat_stream_ready_cb ready, void *ud)
{
    chat_stream_sub_t *sub = chat_calloc(1, sizeof *sub);
    sub->s = s;
    sub->cb = cb;
    sub->ready_cb = ready;
    sub->ud = ud;
    chat_idtable_init(&sub->follows);
    sub->holding = true;
    chat_list_init(&sub->hold_link);
    user_t *u = chat_idtable_get(&s->users, (uint64_t)user_id);
    if (!u) {
        u = chat_calloc(1, sizeof *u);
        u->s = s;
        u->id = user_id;
        u->since = now_ms(s);
        chat_list_init(&u->subs);
        chat_list_init(&u->job_link);
        chat_list_init(&u->wait_link);
        chat_idtable_init(&u->left);
        chat_idtable_put(&s->users, (uint64_t)user_id, u);
        if (s->fanout)
            chat_fanout_watch(s->fanout, CHAT_TOPIC_USER, user_id);
        /*
         * Without a working Redis there is nothing to wait for. A subscriber still
         * making its first connection (a cluster node not used before) is worth
         * waiting for: the upgrade must not be answered before the user's channel
         * is subscribed, or an `added` published meanwhile is lost.
         */
        u->confirmed = !s->fanout || !chat_fanout_ready(s->fanout);
    }
    sub->u = u;
    chat_list_insert_tail(&u->subs, &sub->user_link);
    u->nsubs++;
    sub->ready_gen = u->gen + 1;
    if (u->confirmed || u->gen > 0 || u->loading) {
        want_load(u);
    } else if (!chat_list_linked(&u->wait_link)) {
        /* the timer stops waiting for the channel after CONFIRM_WAIT_MS */
        chat_list_insert_tail(&s->waits, &u->wait_link);
        arm(s);
    }
    return sub;
}

void chat_stream_unsubscribe(chat_stream_t *s, chat_stream_sub_t *sub)
{
    uint64_t key;
    void *v;
    sub->resuming = false;
    chat_list_remove(&sub->hold_link);
    for (size_t i = 0; (i = chat_idtable_next(&sub->follows, i, &key, &v)) != 0; i = 0)
        unfollow(v);
    chat_idtable_dispose(&sub->follows);
    user_t *u = sub->u;
    chat_list_remove(&sub->user_link);
    if (--u->nsubs == 0 && !u->loading && !u->busy)
        user_free(u);
    free(sub->wconvs);
    free(sub->wpos);
    free(sub->rconvs);
    free(sub);
    (void)s;
}

/* The socket's events flow: every follow behind its conversation catches up. */
static void release(chat_stream_sub_t *sub)
{
    if (!sub->holding)
        return;
    sub->holding = false;
    chat_list_remove(&sub->hold_link);
    uint64_t key;
    void *v;
    for (size_t i = 0; (i = chat_idtable_next(&sub->follows, i, &key, &v)) != 0;) {
        follow_t *f = v;
        if (!f->fetch && !chat_list_linked(&f->wait_link) && f->pos < f->c->head)
            catch_up(f);
    }
}

void chat_stream_release(chat_stream_t *s, chat_stream_sub_t *sub)
{
    (void)s;
    if (sub->ready)
        release(sub);
}

static void run_resume(chat_stream_sub_t *sub, const int64_t *convs, const int64_t *positions,
                       size_t n)
{
    /* the listed conversations start from the client's positions; the rest as they are */
    sub->holding = false;
    chat_list_remove(&sub->hold_link);
    sub->resuming = true;
    sub->rconvs = chat_malloc((n ? n : 1) * sizeof *sub->rconvs);
    sub->rn = 0;
    sub->resume_left = 1; /* until every pair is set out */
    for (size_t i = 0; i < n; i++) {
        follow_t *f = chat_idtable_get(&sub->follows, (uint64_t)convs[i]);
        if (!f)
            continue; /* not the user's (as far as this stream knows): left out */
        sub->rconvs[sub->rn++] = convs[i];
        conv_t *c = f->c;
        int64_t cur = c->known > c->head ? c->known : c->head;
        int64_t p = positions[i];
        if (cur - p > CHAT_STREAM_RESET_OVER) {
            chat_buf_t b = CHAT_BUF_INIT;
            chat_buf_printf(&b, "{\"type\":\"reset\",\"conversation_id\":%lld,\"rev\":%lld}",
                            (long long)c->id, (long long)cur);
            f->pos = cur;
            f->target = -1;
            chat_metric_inc(m_reset);
            write_frame(sub, b.data, b.len);
            chat_buf_dispose(&b);
            continue;
        }
        if (f->target < 0)
            sub->resume_left++;
        f->pos = p;
        f->target = cur;
    }
    for (size_t i = 0; i < sub->rn; i++) {
        follow_t *f = chat_idtable_get(&sub->follows, (uint64_t)sub->rconvs[i]);
        if (!f || f->target < 0 || f->fetch || chat_list_linked(&f->wait_link))
            continue; /* done, or its read answers for it */
        if (f->pos < f->c->head)
            catch_up(f);
        else
            check_target(f);
    }
    sub->holding = true; /* release() below catches up the conversations not listed */
    release(sub);
    resume_step_done(sub);
}

int chat_stream_resume(chat_stream_t *s, chat_stream_sub_t *sub, const int64_t *convs,
                       const int64_t *positions, size_t n)
{
    (void)s;
    if (sub->resuming || sub->waiting_resume)
        return CHAT_ECONFLICT;
    if (!sub->ready) {
        sub->waiting_resume = true;
        sub->wconvs = chat_malloc((n ? n : 1) * sizeof *sub->wconvs);
        sub->wpos = chat_malloc((n ? n : 1) * sizeof *sub->wpos);
        if (n) {
            memcpy(sub->wconvs, convs, n * sizeof *convs);
            memcpy(sub->wpos, positions, n * sizeof *positions);
        }
        sub->wn = n;
        return 0;
    }
    run_resume(sub, convs, positions, n);
    return 0;
}

void chat_stream_typing(chat_stream_t *s, chat_stream_sub_t *sub, int64_t conv)
{
    if (!chat_stream_follows(sub, conv))
        return;
    if (!chat_hub_typing_allow(s->hub, sub->u->id, conv, uv_hrtime() / 1000000, TYPING_MS))
        return;
    chat_buf_t b = CHAT_BUF_INIT;
    chat_buf_printf(&b, "{\"type\":\"typing\",\"conversation_id\":%lld,\"user_id\":%lld}",
                    (long long)conv, (long long)sub->u->id);
    chat_rt_msg_t m = {
        .kind = CHAT_RT_TYPING, .id = conv, .a = sub->u->id, .frame = b.data, .len = b.len};
    chat_stream_publish(s, &m);
    chat_buf_dispose(&b);
}

void chat_stream_publish(chat_stream_t *s, const chat_rt_msg_t *m)
{
    if (!s || s->closed)
        return;
    /* Redis first, so the other instances hear of it as early as this one's workers. */
    if (s->fanout)
        (void)chat_fanout_publish(s->fanout, m);
    chat_hub_post(s->hw, m);
}
