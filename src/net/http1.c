/*
 * HTTP/1.1 on one connection (see http.h): requests are parsed
 * (net/http1_request.c) straight out of the server's shared read buffer; only
 * the unparsed tail of a read that arrived while the connection was paused is
 * copied here, so an idle keep-alive connection costs one small struct and no
 * buffers. Timeouts, pipelining with a barrier at unsafe methods, answers in
 * request order and the hand-over at a 101 live here; the socket, writing and
 * the end are net/conn.c's.
 *
 * Life of a connection: reading (requests queue up in arrival order and are
 * answered in that order) → draining (no more input; once every queued answer
 * is written it lingers and closes, net/conn.c) — or, after a 101, handed to
 * another protocol, after which nothing here runs for it again.
 */
#include "net/http1_conn.h"
#include "core/alloc.h"
#include "core/error.h"
#include "core/json.h"
#include "core/log.h"
#include "net/http_redact.h"
#include "net/http_status.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Requests a connection may have queued (parsed, not yet written) before we stop parsing. */
#define MAX_OUTSTANDING 32
/*
 * Requests of one connection with the handler at once. Their answers are
 * built before anyone knows their size, so this is what bounds the memory a
 * pipelining client that never reads can make chatd spend: at most
 * max_pending_output plus this many answers (see may_hand_over()).
 */
#define MAX_IN_HANDLER 4

typedef chat_http1_conn_t h1_t;
typedef chat_http1_req_t req_t;

static const chat_conn_proto_t http1_proto;

static void settle(h1_t *h, bool wrote);
static void pump(h1_t *h, bool wrote);
/* hold: the body is taken over or shared; all zero: it is copied. */
static void respond(req_t *r, int status, const char *headers, const char *body, size_t len,
                    chat_http1_body_hold_t hold);
static void answer_release(h1_t *h, req_t *r);

/* ---- small helpers ---- */

bool chat_http_request_cancelled(const chat_http_request_t *req)
{
    return ((const req_t *)req)->h == NULL;
}

int chat_http_request_peer(const chat_http_request_t *req, struct sockaddr_storage *out)
{
    const req_t *r = (const req_t *)req;
    if (!r->h)
        return UV_ENOTCONN;
    int len = (int)sizeof *out;
    return uv_tcp_getpeername(&r->h->conn.tcp, (struct sockaddr *)out, &len);
}

/* RFC 9110 IMF-fixdate, formatted once per second per server (so per loop). */
static const char *http_date(chat_http_server_t *srv)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t now = time(NULL);
    if (now != srv->date_sec || !srv->date[0]) {
        struct tm tm;
        gmtime_r(&now, &tm);
        snprintf(srv->date, sizeof srv->date, "%s, %02d %s %04d %02d:%02d:%02d GMT",
                 days[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900,
                 tm.tm_hour, tm.tm_min, tm.tm_sec);
        srv->date_sec = now;
    }
    return srv->date;
}

/* True when the header block (lines ending in CRLF) has a Content-Type line. */
static bool has_content_type(const char *hd)
{
    static const char name[] = "content-type:";
    while (hd && *hd) {
        if (strncasecmp(hd, name, sizeof name - 1) == 0)
            return true;
        hd = strchr(hd, '\n');
        if (hd)
            hd++;
    }
    return false;
}

/*
 * The deadline a connection waits on now: a head (since connecting, or since
 * the first byte of the request being parsed), a body (since the end of its
 * head), none while a request is with the handler, else the idle deadline
 * (since the connection last had something in flight). Each is set when the
 * connection enters that state and never extended by input: bytes that start
 * no request (blank lines between requests) do not keep a slot. Only writing
 * progress (wrote: an answer left for the socket) restarts the idle deadline,
 * while answers wait for a client that reads slowly.
 */
static void timer_update(h1_t *h, bool wrote)
{
    enum chat_conn_timer want;
    if ((h->cur && !h->cur->head_done) || (!h->cur && h->nreq == 0))
        want = CHAT_CONN_TIMER_HEAD;
    else if (h->cur)
        want = CHAT_CONN_TIMER_BODY;
    else if (h->unanswered > 0)
        want = CHAT_CONN_TIMER_NONE;
    else
        want = CHAT_CONN_TIMER_IDLE;
    if (want != chat_conn_timer_get(&h->conn) || (wrote && want == CHAT_CONN_TIMER_IDLE))
        chat_conn_timer_set(&h->conn, want);
}

/* ---- dispatch and parsing ---- */

/*
 * May one more request go to the handler, as far as the answers in flight
 * go? Not while the answers built and not yet written pass the bound; and
 * beside a request already with the handler, only when the bound would hold
 * even if every request with the handler answered as much as the largest
 * answer of this connection so far, and never more than MAX_IN_HANDLER.
 */
static bool may_hand_over(const h1_t *h)
{
    size_t cap = h->conn.set->max_pending_output;
    if (h->out_held > cap)
        return false;
    if (h->unanswered == 0)
        return true;
    return h->unanswered < MAX_IN_HANDLER &&
           h->out_held + (size_t)h->unanswered * h->out_max <= cap;
}

static bool can_dispatch(const h1_t *h, const req_t *r)
{
    if (!may_hand_over(h))
        return false;
    return r->unsafe ? h->unanswered == 0 : h->unsafe_unanswered == 0;
}

static void dispatch(h1_t *h, req_t *r)
{
    r->state = REQ_HANDLING;
    h->unanswered++;
    if (r->unsafe)
        h->unsafe_unanswered++;
    chat_http1_conn_server(h)->cfg.handler(&r->pub);
}

static void release_held(h1_t *h)
{
    if (h->held && !h->conn.closing && can_dispatch(h, h->held)) {
        req_t *r = h->held;
        h->held = NULL;
        dispatch(h, r);
    }
}

/* May a new request be parsed now? (A request already begun is always read to its end.) */
static bool may_start(h1_t *h)
{
    return !h->conn.closing && !h->no_more && !h->held && h->nqueue < MAX_OUTSTANDING &&
           h->out_held <= h->conn.set->max_pending_output;
}

static void drop_input(h1_t *h)
{
    free(h->in);
    h->in = NULL;
    h->in_len = 0;
}

/*
 * Answers the request being parsed (or a new one) with an error of the http
 * layer itself, and closes the connection after it.
 */
static void conn_fail(h1_t *h, int status, const char *code, const char *msg)
{
    req_t *r = h->cur;
    h->cur = NULL;
    if (!r)
        r = chat_http1_req_new(h);
    if (!r->head_done) {
        r->t_head = uv_hrtime();
        if (r->url.data)
            r->pub.path = r->url.data;
    }
    /*
     * The method, once the checker says it is over — not when the parser's
     * callbacks ran, which depends on where reads ended, nor when the parser
     * took a whole head past bytes the checker refused before its method
     * (bare LFs before the request line): a refused HEAD is answered
     * without a body however its bytes arrived.
     */
    if (!chat_http1_frame_method_seen(&h->frame)) {
        r->pub.method = -1;
        r->pub.method_str = "UNKNOWN";
    } else if (!r->head_done) {
        r->pub.method = (int)h->parser.method;
        r->pub.method_str = http_method_str((enum http_method)h->parser.method);
    }
    r->keep_alive = false;
    r->unsafe = false;
    r->pub.route = "none";
    r->state = REQ_HANDLING;
    h->unanswered++;
    h->no_more = true;
    h->drain_reason = code;
    drop_input(h);
    chat_buf_t b = CHAT_BUF_INIT;
    chat_json_error(&b, code, msg);
    size_t len;
    char *body = chat_buf_steal(&b, &len);
    respond(r, status, NULL, body, len, (chat_http1_body_hold_t){.owned = body});
}

static void parse_failed(h1_t *h, enum http_errno e)
{
    if (h->fail_status) {
        conn_fail(h, h->fail_status, h->fail_code, h->fail_msg);
        return;
    }
    switch (e) {
    case HPE_HEADER_OVERFLOW:
        conn_fail(h, 431, "headers_too_large",
                  "the request line and headers exceed the size limit");
        break;
    case HPE_INVALID_CONTENT_LENGTH:
        /* http-parser reports a chunk size that overflows with the Content-Length code. */
        conn_fail(h, 400, "bad_request",
                  h->parser.flags & F_CHUNKED ? "invalid chunk size" : "invalid Content-Length");
        break;
    case HPE_UNEXPECTED_CONTENT_LENGTH:
        conn_fail(h, 400, "bad_request", "invalid Content-Length");
        break;
    case HPE_INVALID_CHUNK_SIZE:
        conn_fail(h, 400, "bad_request", "invalid chunked body");
        break;
    case HPE_INVALID_TRANSFER_ENCODING:
        conn_fail(h, 400, "bad_request", "unsupported Transfer-Encoding");
        break;
    case HPE_INVALID_VERSION:
        conn_fail(h, 400, "bad_request", "invalid HTTP version");
        break;
    default:
        conn_fail(h, 400, "bad_request", "malformed request");
        break;
    }
}

/*
 * Parses requests from data while the connection may take them, handing each
 * complete one to the handler. Returns the bytes consumed; the rest must be
 * kept for later (or dropped when the connection no longer reads).
 */
static size_t feed(h1_t *h, const char *data, size_t len)
{
    size_t off = 0;
    while (off < len && !h->conn.closing && !h->no_more) {
        release_held(h);
        if (h->conn.closing)
            break;
        if (!h->cur && !may_start(h))
            break;
        size_t n = chat_http1_parse(h, data + off, len - off);
        off += n;
        enum http_errno e = HTTP_PARSER_ERRNO(&h->parser);
        if (e == HPE_PAUSED) {
            http_parser_pause(&h->parser, 0);
            req_t *r = h->done;
            h->done = NULL;
            if (!r->keep_alive) {
                h->no_more = true;
                h->drain_reason = r->pub.upgrade ? "upgrade" : "connection_close";
            }
            if (r->upgrade_req && off < len) {
                /* What follows an upgrade is another protocol's: kept for whoever takes over. */
                r->rest = chat_malloc(len - off);
                memcpy(r->rest, data + off, len - off);
                r->rest_len = len - off;
                off = len;
            }
            if (can_dispatch(h, r))
                dispatch(h, r);
            else
                h->held = r;
            continue;
        }
        if (e != HPE_OK) {
            parse_failed(h, e);
            return len;
        }
        if (n == 0)
            break;
    }
    return off;
}

/*
 * Brings reading and the timer in line with the connection's state, and
 * starts the end of a draining connection whose answers are all written.
 */
static void settle(h1_t *h, bool wrote)
{
    chat_conn_t *c = &h->conn;
    if (c->closing || c->lingering || h->in_process || h->upgraded)
        return;
    if (h->no_more) {
        drop_input(h);
        if (chat_list_empty(&h->queue) && c->writes_pending == 0) {
            chat_conn_linger(c, h->drain_reason);
            return;
        }
    }
    chat_conn_read(c, !h->no_more && !h->in && (h->cur || may_start(h)));
    if (!c->closing)
        timer_update(h, wrote);
}

/* Hands over held requests and parses kept input, as far as the connection may now. */
static void pump(h1_t *h, bool wrote)
{
    chat_conn_t *c = &h->conn;
    if (c->closing || c->lingering || h->in_process || h->upgraded)
        return;
    h->in_process = true;
    release_held(h);
    if (h->in && !c->closing && !h->no_more) {
        char *in = h->in;
        size_t len = h->in_len;
        h->in = NULL;
        h->in_len = 0;
        size_t n = feed(h, in, len);
        if (!c->closing && !h->no_more && n < len) {
            memmove(in, in + n, len - n);
            h->in = in;
            h->in_len = len - n;
        } else {
            free(in);
        }
    }
    h->in_process = false;
    settle(h, wrote);
}

/* ---- the connection's events ---- */

static void on_data(chat_conn_t *c, const char *data, size_t len)
{
    h1_t *h = chat_http1_conn_of(c);
    if (h->no_more)
        return; /* input we no longer want: discarded */
    if (h->in) {
        /* Not expected (reading stops while input is kept), but keep order if it happens. */
        h->in = chat_realloc(h->in, h->in_len + len);
        memcpy(h->in + h->in_len, data, len);
        h->in_len += len;
        pump(h, false);
        return;
    }
    h->in_process = true;
    size_t n = feed(h, data, len);
    h->in_process = false;
    if (!c->closing && !h->no_more && n < len) {
        h->in = chat_malloc(len - n);
        memcpy(h->in, data + n, len - n);
        h->in_len = len - n;
    }
    settle(h, false);
}

static void on_eof(chat_conn_t *c)
{
    h1_t *h = chat_http1_conn_of(c);
    if (h->cur) {
        chat_conn_close(c, "client_closed_mid_request");
    } else if (!chat_list_empty(&h->queue) || c->writes_pending) {
        /* A half-close after sending requests: answer them, then close. */
        if (!h->no_more)
            h->drain_reason = "client_closed";
        h->no_more = true;
        settle(h, false);
    } else {
        chat_conn_close(c, "client_closed");
    }
}

static void on_resume(chat_conn_t *c)
{
    h1_t *h = chat_http1_conn_of(c);
    bool wrote = h->wrote_now;
    h->wrote_now = false;
    pump(h, wrote);
}

static void on_timeout(chat_conn_t *c, enum chat_conn_timer timer)
{
    h1_t *h = chat_http1_conn_of(c);
    if (timer == CHAT_CONN_TIMER_HEAD) {
        if (h->cur && !h->cur->head_done) {
            conn_fail(h, 408, "request_timeout", "the request head was not received in time");
            settle(h, false);
        } else {
            chat_conn_close(c, "header_timeout");
        }
    } else if (timer == CHAT_CONN_TIMER_BODY) {
        if (h->cur) {
            conn_fail(h, 408, "request_timeout", "the request body was not received in time");
            settle(h, false);
        } else {
            chat_conn_close(c, "body_timeout");
        }
    } else if (timer == CHAT_CONN_TIMER_IDLE) {
        chat_conn_close(c, c->writes_pending || h->held ? "send_timeout" : "idle_timeout");
    }
}

static void on_shutdown(chat_conn_t *c)
{
    h1_t *h = chat_http1_conn_of(c);
    if (h->cur) {
        /* A request still arriving is not in flight: it goes. */
        chat_http1_queue_remove(h, h->cur);
        chat_http1_req_free(h->cur);
        h->cur = NULL;
    }
    if (chat_list_empty(&h->queue) && c->writes_pending == 0) {
        chat_conn_close(c, "server_closing");
    } else {
        /* Answer what is in flight (the last answer says close), then close. */
        if (!h->no_more)
            h->drain_reason = "server_closing";
        h->no_more = true;
        pump(h, false);
    }
}

static void hand_over(h1_t *h, req_t *r);

/*
 * The connection ends: requests the handler still holds are marked cancelled
 * (their answer will only free them); every other request goes now, and a
 * 101 that never went out still hands the connection over, so that the
 * protocol waiting for it learns of the end from its on_closed.
 */
static void on_close(chat_conn_t *c, const char *reason)
{
    h1_t *h = chat_http1_conn_of(c);
    req_t *switching = NULL;
    drop_input(h);
    chat_list_t *e, *tmp;
    CHAT_LIST_FOREACH_SAFE(e, tmp, &h->queue)
    {
        req_t *r = CHAT_CONTAINER_OF(e, req_t, link);
        chat_list_remove(e);
        answer_release(h, r);
        if (r->state == REQ_HANDLING)
            r->h = NULL;
        else if (r->switch_cb)
            switching = r;
        else
            chat_http1_req_free(r);
    }
    h->cur = h->held = h->done = NULL;
    h->nqueue = 0;
    if (switching) {
        hand_over(h, switching);
        chat_http1_req_free(switching);
    }
}

/* ---- answers ---- */

/* r's answer is written (or dropped): its bytes no longer count against h's bound. */
static void answer_release(h1_t *h, req_t *r)
{
    _Atomic size_t *total = chat_http1_conn_server(h)->cfg.unsent_bytes;
    if (total && r->out_len)
        atomic_fetch_sub(total, r->out_len);
    h->out_held -= r->out_len;
    r->out_len = 0;
}

/*
 * The process's answers not yet written are over its budget: an answer the
 * socket does not take at once is dropped with its connection instead of
 * kept, so clients that do not read cannot make chatd hold more than the
 * budget (plus one answer) however many they are.
 */
static bool over_budget(const h1_t *h)
{
    const chat_http_server_config_t *cfg = &chat_http1_conn_server(h)->cfg;
    return cfg->unsent_bytes && cfg->max_unsent_bytes > 0 &&
           atomic_load(cfg->unsent_bytes) > cfg->max_unsent_bytes;
}

static void write_cb(chat_conn_t *c, chat_conn_write_t *w, int status)
{
    req_t *r = CHAT_CONTAINER_OF(w, req_t, wr);
    h1_t *h = chat_http1_conn_of(c);
    answer_release(h, r);
    chat_http1_req_free(r);
    if (c->closing || status < 0)
        return;
    if (h->upgraded)
        chat_conn_kick(c); /* the 101 is written: its new protocol goes on */
    else
        pump(h, true);
}

/*
 * The 101 of r is on its way (or the connection is closing with it queued):
 * the connection leaves HTTP for whoever asked for the upgrade, with the
 * bytes the client sent after its request.
 */
static void hand_over(h1_t *h, req_t *r)
{
    chat_http1_switch_cb cb = r->switch_cb;
    char *rest = r->rest;
    size_t rest_len = r->rest_len;
    r->switch_cb = NULL;
    r->rest = NULL;
    r->rest_len = 0;
    h->upgraded = true;
    drop_input(h);
    chat_conn_timer_set(&h->conn, CHAT_CONN_TIMER_NONE);
    cb(&h->conn, rest, rest_len, r->switch_ud);
}

/* Hands every answered request at the front of the queue to the socket, in order. */
static void flush(h1_t *h)
{
    chat_conn_t *c = &h->conn;
    req_t *r;
    while ((r = chat_http1_queue_first(h)) && r->state == REQ_RESPONDED) {
        chat_http1_queue_remove(h, r);
        r->state = REQ_WRITING;
        if (!r->switch_cb && over_budget(h)) {
            /* Over the budget: what the socket does not take now is not kept. */
            int now = chat_conn_write_now(c, r->out, r->nout);
            answer_release(h, r);
            chat_http1_req_free(r);
            if (now != 1) {
                chat_log_debug("event=output_budget conn=%llu", (unsigned long long)c->id);
                chat_conn_close(c, now < 0 ? "write_error" : "output_budget");
                return;
            }
            h->wrote_now = true;
            chat_conn_kick(c);
            continue;
        }
        int rc = chat_conn_write(c, &r->wr, r->out, r->nout, write_cb);
        if (rc < 0)
            chat_conn_close(c, "write_error");
        if (r->switch_cb)
            hand_over(h, r); /* every later write follows the 101 */
        if (rc != 0) {
            answer_release(h, r);
            chat_http1_req_free(r);
            if (rc < 0)
                return;
            /* what write_cb would do, on the next pass of the loop */
            h->wrote_now = true;
            chat_conn_kick(c);
        }
        if (h->upgraded)
            return;
    }
}

static void record(h1_t *h, req_t *r, int status)
{
    const char *route = r->pub.route ? r->pub.route : "unmatched";
    double dur = (double)(uv_hrtime() - r->t_head) / 1e9;
    chat_http_metrics_record(&chat_http1_conn_server(h)->metrics, route, r->pub.method,
                             r->pub.method_str, status, dur);
    if (chat_log_level > CHAT_LOG_DEBUG)
        return;
    /*
     * The target as sent (a request refused before its head was complete
     * has only its raw target), never with a token in it: WebSocket clients
     * may send theirs as ?token=.
     */
    chat_buf_t raw = CHAT_BUF_INIT, t = CHAT_BUF_INIT;
    chat_buf_puts(&raw, r->pub.path);
    if (r->pub.query) {
        chat_buf_putc(&raw, '?');
        chat_buf_append(&raw, r->pub.query, r->pub.query_len);
    }
    chat_http_target_redact(&t, raw.data, raw.len);
    chat_buf_dispose(&raw);
    chat_log_debug("event=request conn=%llu method=%s target=%s status=%d dur_ms=%.2f",
                   (unsigned long long)h->conn.id, r->pub.method_str, t.data, status, dur * 1e3);
    chat_buf_dispose(&t);
}

static void respond(req_t *r, int status, const char *headers, const char *body, size_t len,
                    chat_http1_body_hold_t hold)
{
    h1_t *h = r->h;
    bool owned = hold.owned || hold.shared; /* written from where it is, not copied */
    if (!h) {
        chat_http1_body_release(hold);
        chat_http1_req_free(r);
        return;
    }
    chat_conn_t *c = &h->conn;
    if (r->state != REQ_HANDLING) {
        chat_log_error("event=http_respond_twice conn=%llu status=%d", (unsigned long long)c->id,
                       status);
        chat_http1_body_release(hold);
        return;
    }
    h->unanswered--;
    if (r->unsafe)
        h->unsafe_unanswered--;
    record(h, r, status);

    bool no_body = (status >= 100 && status < 200) || status == 204 || status == 304;
    bool send_body = !no_body && r->pub.method != HTTP_HEAD && len > 0;
    bool close = !r->keep_alive || (h->no_more && r->link.next == &h->queue);
    chat_buf_t b = CHAT_BUF_INIT;
    size_t hlen = headers ? strlen(headers) : 0;
    chat_buf_reserve(&b, 224 + hlen + (send_body && !owned ? len : 0));
    chat_buf_printf(&b, "HTTP/1.1 %d %s\r\n", status, chat_http_status_text(status));
    if (len > 0 && !no_body && !has_content_type(headers))
        chat_buf_puts(&b, "Content-Type: application/json\r\n");
    if (!no_body)
        chat_buf_printf(&b, "Content-Length: %zu\r\n", len);
    chat_buf_printf(&b, "Date: %s\r\nConnection: %s\r\n", http_date(chat_http1_conn_server(h)),
                    r->switch_cb ? "Upgrade"
                    : close      ? "close"
                                 : "keep-alive");
    if (status >= 200) {
        /* JSON is never to be read as anything else; private answers are never to be stored. */
        chat_buf_puts(&b, "X-Content-Type-Options: nosniff\r\n");
        if (r->pub.no_store)
            chat_buf_puts(&b, "Cache-Control: no-store\r\n");
    }
    if (hlen)
        chat_buf_append(&b, headers, hlen);
    chat_buf_puts(&b, "\r\n");
    if (send_body && !owned)
        chat_buf_append(&b, body, len);
    r->out[0] = uv_buf_init(b.data, (unsigned)b.len);
    r->nout = 1;
    r->out_len = b.len + (send_body && owned ? len : 0);
    h->out_held += r->out_len;
    if (chat_http1_conn_server(h)->cfg.unsent_bytes)
        atomic_fetch_add(chat_http1_conn_server(h)->cfg.unsent_bytes, r->out_len);
    if (r->out_len > h->out_max)
        h->out_max = r->out_len;
    r->head = chat_buf_steal(&b, NULL);
    if (owned) {
        if (send_body) {
            r->answer_body = hold;
            r->out[1] = uv_buf_init((char *)body, (unsigned)len);
            r->nout = 2;
        } else {
            chat_http1_body_release(hold);
        }
    }
    if (close && !h->no_more && !r->switch_cb) {
        h->no_more = true;
        h->drain_reason = "connection_close";
    }
    r->state = REQ_RESPONDED;
    flush(h);
    if (!c->closing && !h->in_process && (h->held || !c->reading || h->no_more))
        chat_conn_kick(c);
}

void chat_http_respond(chat_http_request_t *req, int status, const char *headers, const char *body,
                       size_t body_len)
{
    respond((req_t *)req, status, headers, body, body_len, (chat_http1_body_hold_t){0});
}

void chat_http_respond_owned(chat_http_request_t *req, int status, const char *headers, char *body,
                             size_t body_len)
{
    respond((req_t *)req, status, headers, body, body_len, (chat_http1_body_hold_t){.owned = body});
}

void chat_http_respond_shared(chat_http_request_t *req, int status, const char *headers,
                              chat_blob_t *body)
{
    respond((req_t *)req, status, headers, body->data, body->len,
            (chat_http1_body_hold_t){.shared = body});
}

int chat_http1_upgrade(chat_http_request_t *req, const char *headers, chat_http1_switch_cb cb,
                       void *ud)
{
    req_t *r = (req_t *)req;
    if (!r->h) {
        chat_http1_req_free(r);
        return CHAT_ECONNLOST;
    }
    int err = 0, status = 0;
    const char *code = NULL, *why = NULL;
    if (!r->upgrade_req) {
        /* http-parser read on after this request: what follows is HTTP, not ours to hand over. */
        err = CHAT_EBADREQUEST;
        status = 400;
        code = "bad_request";
        why = "not an upgrade request";
    } else if (r->h->conn.set->closing) {
        err = CHAT_EUNAVAILABLE;
        status = 503;
        code = "unavailable";
        why = "the server is shutting down";
    }
    if (err) {
        chat_buf_t b = CHAT_BUF_INIT;
        chat_json_error(&b, code, why);
        size_t len;
        char *body = chat_buf_steal(&b, &len);
        /* a 503 says when to come back, as every other 503 of chatd does */
        respond(r, status, status == 503 ? "Retry-After: 1\r\n" : NULL, body, len,
                (chat_http1_body_hold_t){.owned = body});
        return err;
    }
    r->switch_cb = cb;
    r->switch_ud = ud;
    respond(r, 101, headers, NULL, 0, (chat_http1_body_hold_t){0});
    return 0;
}

/* ---- the connection ---- */

chat_conn_t *chat_http1_conn_create(chat_http_server_t *srv)
{
    chat_conn_t *c = chat_conn_create(&srv->conns, sizeof(h1_t), &http1_proto, NULL);
    h1_t *h = chat_http1_conn_of(c);
    c->data = h;
    chat_list_init(&h->queue);
    return c;
}

void chat_http1_conn_begin(chat_conn_t *c)
{
    h1_t *h = chat_http1_conn_of(c);
    chat_http1_parser_init(h);
    chat_log_debug("event=conn_open conn=%llu", (unsigned long long)c->id);
    settle(h, false);
}

static const chat_conn_proto_t http1_proto = {
    .name = "http",
    .on_data = on_data,
    .on_eof = on_eof,
    .on_resume = on_resume,
    .on_timeout = on_timeout,
    .on_shutdown = on_shutdown,
    .on_close = on_close,
};
