/*
 * A client TCP connection and the set of them a server holds (see conn.h).
 * Reads land in the set's one read buffer (a second read in the same
 * callback, rare, gets its own); writes try uv_try_write first, so an answer
 * that fits the socket costs one writev and no epoll_ctl. chat_conn_close()
 * is the only way out and closed_cb() the only place a connection is freed.
 */
#include "net/conn.h"
#include "core/alloc.h"
#include "core/log.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define READ_BUF_SIZE (64 * 1024)
/* How long a connection we are done with keeps discarding input after our FIN. */
#define LINGER_MS 2000

static _Atomic uint64_t next_conn_id;

/* ---- the set ---- */

static void timer_expired(chat_timerlist_t *tl, chat_timerlist_entry_t *e, int list)
{
    chat_conn_t *c = CHAT_CONTAINER_OF(e, chat_conn_t, _timer);
    if (list == CHAT_CONN_TIMER_LINGER)
        chat_conn_close(c, c->_linger_reason);
    else if (c->proto->on_timeout)
        c->proto->on_timeout(c, (enum chat_conn_timer)list);
}

static void idle_cb(uv_idle_t *h)
{
    chat_conn_set_t *set = h->data;
    chat_list_t *e;
    while ((e = chat_list_first(&set->_resume))) {
        chat_list_remove(e);
        chat_conn_t *c = CHAT_CONTAINER_OF(e, chat_conn_t, _resume);
        if (!c->lingering && c->proto->on_resume)
            c->proto->on_resume(c);
    }
    uv_idle_stop(&set->_idle);
}

void chat_conn_set_init(chat_conn_set_t *set, uv_loop_t *loop, const chat_conn_limits_t *lim,
                        void (*freed_cb)(chat_conn_set_t *set, bool counted))
{
    memset(set, 0, sizeof *set);
    set->loop = loop;
    set->max_pending_output = lim->max_pending_output;
    set->tcp_sndbuf = lim->tcp_sndbuf;
    set->tcp_notsent_lowat = lim->tcp_notsent_lowat;
    set->_rbuf = chat_malloc(READ_BUF_SIZE);
    set->_freed_cb = freed_cb;
    chat_list_init(&set->_conns);
    chat_list_init(&set->_resume);
    uint64_t timeouts[CHAT_CONN_TIMER_COUNT];
    timeouts[CHAT_CONN_TIMER_HEAD] = lim->head_ms;
    timeouts[CHAT_CONN_TIMER_BODY] = lim->body_ms;
    timeouts[CHAT_CONN_TIMER_IDLE] = lim->idle_ms;
    timeouts[CHAT_CONN_TIMER_LINGER] = LINGER_MS;
    timeouts[CHAT_CONN_TIMER_PING] = lim->ping_ms;
    chat_timerlist_init(&set->_timers, loop, timeouts, CHAT_CONN_TIMER_COUNT, timer_expired);
    set->_timers.data = set;
    uv_idle_init(loop, &set->_idle);
    set->_idle.data = set;
}

void chat_conn_set_shutdown(chat_conn_set_t *set)
{
    set->closing = true;
    chat_list_t *e, *tmp;
    CHAT_LIST_FOREACH_SAFE(e, tmp, &set->_conns)
    {
        chat_conn_t *c = CHAT_CONTAINER_OF(e, chat_conn_t, _link);
        if (c->closing)
            continue;
        if (c->lingering || !c->proto->on_shutdown)
            chat_conn_close(c, "server_closing");
        else
            c->proto->on_shutdown(c);
    }
}

static void set_handle_closed(chat_conn_set_t *set)
{
    if (--set->_handles > 0)
        return;
    free(set->_rbuf);
    set->_rbuf = NULL;
    set->_close_cb(set);
}

static void timers_closed_cb(chat_timerlist_t *tl)
{
    set_handle_closed(tl->data);
}

static void idle_closed_cb(uv_handle_t *h)
{
    set_handle_closed(h->data);
}

void chat_conn_set_close(chat_conn_set_t *set, void (*cb)(chat_conn_set_t *set))
{
    set->_finished = true;
    set->_close_cb = cb;
    set->_handles = 2;
    chat_timerlist_close(&set->_timers, timers_closed_cb);
    uv_close((uv_handle_t *)&set->_idle, idle_closed_cb);
}

/* ---- a connection ---- */

chat_conn_t *chat_conn_create(chat_conn_set_t *set, size_t size, const chat_conn_proto_t *proto,
                              void *data)
{
    chat_conn_t *c = chat_calloc(1, size);
    c->set = set;
    c->proto = proto;
    c->data = data;
    c->id = atomic_fetch_add(&next_conn_id, 1) + 1;
    chat_list_init(&c->_resume);
    chat_timerlist_entry_init(&c->_timer);
    uv_tcp_init(set->loop, &c->tcp);
    c->tcp.data = c;
    chat_list_insert_head(&set->_conns, &c->_link);
    set->nconns++;
    return c;
}

chat_metric_t *chat_conn_gauge(const char *kind)
{
    char labels[64];
    snprintf(labels, sizeof labels, "kind=\"%s\"", kind);
    return chat_metric_series(
        chat_metrics_gauge("chatd_connections_open", "Client connections open"), labels);
}

/* Sets one option of c's socket; a refusal (another kind of socket, an old kernel) is not fatal. */
static void sockopt_set(chat_conn_t *c, int level, int name, const char *what, int value)
{
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0)
        return;
    if (setsockopt(fd, level, name, &value, sizeof value) != 0)
        chat_log_debug("event=sockopt_refused conn=%llu option=%s value=%d errno=%d",
                       (unsigned long long)c->id, what, value, errno);
}

void chat_conn_start(chat_conn_t *c, chat_metric_t *gauge)
{
    c->_gauge = gauge;
    chat_metric_add(gauge, 1);
    uv_tcp_nodelay(&c->tcp, 1);
    /*
     * The kernel's share of a connection's unsent output: without these a
     * client that never reads lets the kernel autotune its send buffer up
     * to tcp_wmem's maximum (4 MiB by default), per socket.
     */
    if (c->set->tcp_notsent_lowat > 0)
        sockopt_set(c, IPPROTO_TCP, TCP_NOTSENT_LOWAT, "TCP_NOTSENT_LOWAT",
                    c->set->tcp_notsent_lowat);
    if (c->set->tcp_sndbuf > 0)
        sockopt_set(c, SOL_SOCKET, SO_SNDBUF, "SO_SNDBUF", c->set->tcp_sndbuf);
}

void chat_conn_gauge_move(chat_conn_t *c, chat_metric_t *gauge)
{
    if (!c->_gauge || c->_gauge == gauge)
        return;
    chat_metric_add(c->_gauge, -1);
    chat_metric_add(gauge, 1);
    c->_gauge = gauge;
}

void chat_conn_switch(chat_conn_t *c, const chat_conn_proto_t *proto, void *data)
{
    c->proto = proto;
    c->data = data;
}

/* ---- reading ---- */

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    chat_conn_t *c = h->data;
    chat_conn_set_t *set = c->set;
    if (!set->_rbuf_busy) {
        set->_rbuf_busy = true;
        *buf = uv_buf_init(set->_rbuf, READ_BUF_SIZE);
    } else {
        *buf = uv_buf_init(chat_malloc(READ_BUF_SIZE), READ_BUF_SIZE);
    }
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    chat_conn_t *c = s->data;
    chat_conn_set_t *set = c->set;
    if (!c->closing) {
        if (nread > 0) {
            /* Input of a lingering connection is what we no longer want: discarded. */
            if (!c->lingering && c->proto->on_data)
                c->proto->on_data(c, buf->base, (size_t)nread);
        } else if (nread == UV_EOF) {
            c->peer_eof = true;
            if (c->lingering)
                chat_conn_close(c, c->_linger_reason);
            else if (c->proto->on_eof)
                c->proto->on_eof(c);
        } else if (nread < 0) {
            chat_conn_close(c, "read_error");
        }
    }
    if (buf->base == set->_rbuf)
        set->_rbuf_busy = false;
    else
        free(buf->base);
}

void chat_conn_read(chat_conn_t *c, bool want)
{
    if (want == c->reading || c->closing)
        return;
    if (want) {
        if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) != 0) {
            chat_conn_close(c, "read_error");
            return;
        }
    } else {
        uv_read_stop((uv_stream_t *)&c->tcp);
    }
    c->reading = want;
}

/* ---- writing ---- */

static void write_cb(uv_write_t *req, int status)
{
    chat_conn_write_t *w = CHAT_CONTAINER_OF(req, chat_conn_write_t, _req);
    chat_conn_t *c = req->handle->data;
    c->writes_pending--;
    if (status < 0 && !c->closing)
        chat_conn_close(c, "write_error");
    w->_cb(c, w, status);
}

int chat_conn_write_now(chat_conn_t *c, uv_buf_t *bufs, unsigned nbufs)
{
    if (c->writes_pending > 0 || c->set->_finished || c->closing)
        return 0;
    int n = uv_try_write((uv_stream_t *)&c->tcp, bufs, nbufs);
    if (n == UV_EAGAIN)
        return 0;
    if (n < 0)
        return n;
    size_t left = (size_t)n;
    unsigned i = 0;
    while (i < nbufs && left >= bufs[i].len)
        left -= bufs[i++].len;
    if (i == nbufs)
        return 1;
    bufs[i].base += left;
    bufs[i].len -= left;
    return 0;
}

int chat_conn_write(chat_conn_t *c, chat_conn_write_t *w, uv_buf_t *bufs, unsigned nbufs,
                    chat_conn_write_cb cb)
{
    /* Only with nothing queued in libuv, so that order holds. */
    if (c->writes_pending == 0 && !c->set->_finished) {
        int n = uv_try_write((uv_stream_t *)&c->tcp, bufs, nbufs);
        if (n >= 0) {
            size_t left = (size_t)n;
            unsigned i = 0;
            while (i < nbufs && left >= bufs[i].len)
                left -= bufs[i++].len;
            if (i == nbufs)
                return 1;
            /* partly written: the rest goes to uv_write from where it stopped */
            memmove(&bufs[0], &bufs[i], sizeof bufs[0] * (nbufs - i));
            nbufs -= i;
            bufs[0].base += left;
            bufs[0].len -= left;
        }
        /* else EAGAIN, or an error uv_write will report */
    }
    w->_cb = cb;
    int rc = uv_write(&w->_req, (uv_stream_t *)&c->tcp, bufs, nbufs, write_cb);
    if (rc != 0)
        return rc;
    c->writes_pending++;
    return 0;
}

bool chat_conn_output_full(const chat_conn_t *c)
{
    return uv_stream_get_write_queue_size((const uv_stream_t *)&c->tcp) >
           c->set->max_pending_output;
}

/* ---- scheduling and timers ---- */

void chat_conn_kick(chat_conn_t *c)
{
    chat_conn_set_t *set = c->set;
    if (chat_list_linked(&c->_resume) || c->closing || set->_finished)
        return;
    chat_list_insert_tail(&set->_resume, &c->_resume);
    uv_idle_start(&set->_idle, idle_cb);
}

void chat_conn_timer_set(chat_conn_t *c, enum chat_conn_timer timer)
{
    chat_timerlist_move(&c->set->_timers, &c->_timer, timer);
}

enum chat_conn_timer chat_conn_timer_get(const chat_conn_t *c)
{
    return (enum chat_conn_timer)chat_timerlist_entry_list(&c->_timer);
}

/* ---- the end ---- */

static void shutdown_cb(uv_shutdown_t *sr, int status)
{
    chat_conn_t *c = sr->data;
    free(sr);
    if (status < 0 && !c->closing)
        chat_conn_close(c, c->_linger_reason);
}

void chat_conn_linger(chat_conn_t *c, const char *reason)
{
    if (c->closing || c->lingering)
        return;
    c->_linger_reason = reason;
    if (c->peer_eof || c->set->closing) {
        chat_conn_close(c, reason);
        return;
    }
    uv_shutdown_t *sr = chat_malloc(sizeof *sr);
    sr->data = c;
    if (uv_shutdown(sr, (uv_stream_t *)&c->tcp, shutdown_cb) != 0) {
        free(sr);
        chat_conn_close(c, reason);
        return;
    }
    c->lingering = true;
    chat_conn_timer_set(c, CHAT_CONN_TIMER_LINGER);
    chat_conn_read(c, true);
}

static void closed_cb(uv_handle_t *h)
{
    chat_conn_t *c = h->data;
    chat_conn_set_t *set = c->set;
    bool counted = c->_gauge != NULL;
    chat_list_remove(&c->_link);
    set->nconns--;
    if (counted)
        chat_metric_add(c->_gauge, -1);
    if (c->proto->on_closed)
        c->proto->on_closed(c);
    free(c);
    set->_freed_cb(set, counted);
}

void chat_conn_close(chat_conn_t *c, const char *reason)
{
    if (c->closing)
        return;
    c->closing = true;
    chat_log_debug("event=conn_close conn=%llu proto=%s reason=%s", (unsigned long long)c->id,
                   c->proto->name, reason ? reason : "unknown");
    chat_timerlist_remove(&c->_timer);
    chat_list_remove(&c->_resume);
    if (c->proto->on_close)
        c->proto->on_close(c, reason);
    c->reading = false;
    uv_close((uv_handle_t *)&c->tcp, closed_cb);
}
