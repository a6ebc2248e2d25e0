/*
 * Fuzzes chatd's HTTP/1.1 request path whole: a real connection of a real
 * server (net/http1.c, http1_request.c, http1_frame.c, net/conn.c, and
 * net/ws_conn.c after an upgrade) on a libuv loop, its socket one end of a
 * socketpair, the input written to the other end — once in one write and
 * once in pieces — then a half-close. The handler answers at once or later
 * (in reverse order too), and the client reads eagerly or slowly.
 *
 * Checked: every request handed over is well-formed (a path, the strings
 * NUL-terminated, the raw target and a Content-Length body found verbatim
 * in the input, the body within the limit); the client reads well-formed
 * answers in request order, the answers of the handler first and at most
 * one error of the server's own, last; the connection always ends once the
 * client has half-closed; and, unless the half-close races the input, both
 * ways of writing the input give the same requests and the same answers
 * (Date, Connection and 100 Continue aside, which depend on timing).
 */
#include "core/buf.h"
#include "core/log.h"
#include "fuzz.h"
#include "net/http1.h"
#include "net/ws.h"
#include "net/ws_conn.h"

#include <errno.h>
#include <http_parser.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_HEAD 2048
#define MAX_BODY 1024
#define MAX_PENDING 64
#define MAX_INDEX 1024
#define BIG_BODY 3000

/*
 * The mode byte: answers later (after the loop ran) rather than in the
 * handler, later ones first, the client reading 256 bytes at a time, and
 * the half-close sent at once after the input rather than once the server
 * has taken it all in (what the server then does depends on timing: the
 * two runs are not compared).
 */
enum { MODE_DEFER = 1, MODE_REVERSE = 2, MODE_LAZY = 4, MODE_EARLY_EOF = 8 };

typedef struct run {
    int mode;
    const uint8_t *in;
    size_t in_len;
    chat_buf_t reqlog;     /* every request handed over, in order */
    chat_buf_t resp;       /* every byte the client read */
    char kinds[MAX_INDEX]; /* per request: 'R' answered, 'H' answered (HEAD), 'U' upgraded,
                              'X' refused by the upgrade */
    int nreq;
    chat_http_request_t *pending[MAX_PENDING];
    int npending;
    bool eof;
} run_t;

static uv_loop_t loop;
static chat_http_server_t *srv;
static _Atomic int open_count;
static run_t *cur;

/* ---- the server's side ---- */

static void log_str(chat_buf_t *b, const char *s)
{
    if (!s) {
        chat_buf_puts(b, "<none>");
    } else {
        chat_buf_puts(b, s);
    }
    chat_buf_putc(b, '\0');
}

static bool in_input(const run_t *r, const char *s, size_t len)
{
    return len == 0 || memmem(r->in, r->in_len, s, len) != NULL;
}

static void answer(chat_http_request_t *req, int index)
{
    if (chat_http_request_cancelled(req)) {
        chat_http_respond(req, 200, NULL, NULL, 0); /* only frees */
        return;
    }
    chat_buf_t b = CHAT_BUF_INIT;
    chat_buf_printf(&b, "k:%d", index);
    if (strstr(req->path, "big"))
        for (int i = 0; i < BIG_BODY; i++)
            chat_buf_putc(&b, ' ');
    chat_http_respond(req, 200, "X-Fuzz: 1\r\n", b.data, b.len);
    chat_buf_dispose(&b);
}

static void ws_message(chat_ws_conn_t *ws, const char *msg, size_t len, bool binary, void *ud)
{
    if (!binary)
        chat_ws_conn_send_text(ws, msg, len);
    else
        chat_ws_conn_close(ws, 1003, "text only");
}

static void ws_close(chat_ws_conn_t *ws, void *ud) {}

static void handler(chat_http_request_t *req)
{
    run_t *r = cur;
    FUZZ_CHECK(r && !chat_http_request_cancelled(req));
    FUZZ_CHECK(req->method >= 0 && req->method_str && req->method_str[0]);
    FUZZ_CHECK(req->path && strlen(req->path) == req->path_len);
    FUZZ_CHECK(req->method == HTTP_CONNECT || req->path[0] == '/' ||
               (req->path_len == 1 && req->path[0] == '*'));
    FUZZ_CHECK(in_input(r, req->path, req->path_len));
    if (req->query) {
        FUZZ_CHECK(strlen(req->query) == req->query_len);
        FUZZ_CHECK(in_input(r, req->query, req->query_len));
    }
    FUZZ_CHECK(req->body && req->body[req->body_len] == '\0');
    FUZZ_CHECK(req->body_len <= MAX_BODY);
    FUZZ_CHECK(req->http_minor == 0 || req->http_minor == 1);
    FUZZ_CHECK(r->nreq < MAX_INDEX);
    int index = r->nreq++;

    chat_buf_t *l = &r->reqlog;
    chat_buf_printf(l, "%d %s ", index, req->method_str);
    chat_buf_append(l, req->path, req->path_len);
    chat_buf_putc(l, '\0');
    log_str(l, req->query);
    chat_buf_printf(l, "%zu:", req->body_len);
    chat_buf_append(l, req->body, req->body_len);
    log_str(l, req->authorization);
    log_str(l, req->upgrade);
    log_str(l, req->connection);
    log_str(l, req->ws_key);
    log_str(l, req->ws_version);
    log_str(l, req->origin);

    const char *why;
    if (strncmp(req->path, "/ws", 3) == 0 && chat_ws_handshake_check(req, &why) == 0) {
        static const chat_ws_conn_handler_t wsh = {ws_message, ws_close};
        r->kinds[index] = 'U';
        if (!chat_ws_conn_accept(req, &wsh, NULL))
            r->kinds[index] = 'X';
        return;
    }
    r->kinds[index] = req->method == HTTP_HEAD ? 'H' : 'R';
    req->data = (void *)(intptr_t)index;
    if (r->mode & MODE_DEFER) {
        FUZZ_CHECK(r->npending < MAX_PENDING);
        r->pending[r->npending++] = req;
    } else {
        answer(req, index);
    }
}

static void answer_pending(run_t *r)
{
    while (r->npending > 0) {
        chat_http_request_t *req;
        if (r->mode & MODE_REVERSE) {
            req = r->pending[--r->npending];
        } else {
            req = r->pending[0];
            memmove(r->pending, r->pending + 1, (size_t)--r->npending * sizeof *r->pending);
        }
        answer(req, (int)(intptr_t)req->data);
    }
}

/* ---- the client's side ---- */

static void read_answers(run_t *r, int fd)
{
    char buf[65536];
    for (;;) {
        ssize_t n = read(fd, buf, (r->mode & MODE_LAZY) ? 256 : sizeof buf);
        if (n > 0) {
            chat_buf_append(&r->resp, buf, (size_t)n);
            if (r->mode & MODE_LAZY)
                return;
        } else if (n == 0) {
            r->eof = true;
            return;
        } else {
            FUZZ_CHECK(errno == EAGAIN || errno == ECONNRESET);
            if (errno == ECONNRESET)
                r->eof = true;
            return;
        }
    }
}

static void pump(run_t *r, int fd)
{
    uv_run(&loop, UV_RUN_NOWAIT);
    answer_pending(r);
    read_answers(r, fd);
}

/* Bytes written to fd that the server has not read yet. */
static int unread(int fd)
{
    int n = 0;
    FUZZ_CHECK(ioctl(fd, SIOCOUTQ, &n) == 0);
    return n;
}

/*
 * Runs the loop until the server has read all it will and nothing moves for
 * a few rounds (or the connection is gone), so that the half-close comes
 * after everything the input started.
 */
static void quiesce(run_t *r, int fd)
{
    int idle = 0;
    for (int i = 0; i < 200000 && idle < 4 && srv->conns.nconns > 0; i++) {
        int out = unread(fd);
        size_t got = r->resp.len;
        bool pending = r->npending > 0;
        pump(r, fd);
        idle = unread(fd) != out || r->resp.len != got || pending ? 0 : idle + 1;
    }
}

static void run_input(run_t *r, const uint8_t *data, size_t size, bool split, uint16_t seed)
{
    int sv[2];
    FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
    chat_conn_t *c = chat_http1_conn_create(srv);
    FUZZ_CHECK(uv_tcp_open(&c->tcp, sv[0]) == 0);
    atomic_fetch_add(&open_count, 1); /* what the listener counts for an accepted one */
    chat_conn_start(c, srv->gauge);
    chat_http1_conn_begin(c);
    cur = r;
    fuzz_split_t sp;
    fuzz_split_init(&sp, seed, size);
    size_t off = 0;
    int spins = 0;
    while (off < size) {
        size_t n = split ? fuzz_split_next(&sp) : size - off;
        size_t done = 0;
        while (done < n) {
            ssize_t w = write(sv[1], data + off + done, n - done);
            if (w > 0) {
                done += (size_t)w;
            } else if (w < 0 && errno == EAGAIN) {
                pump(r, sv[1]);
                FUZZ_CHECK(++spins < 200000);
            } else {
                break; /* the server is gone: the rest is not wanted */
            }
        }
        if (done < n)
            break;
        off += n;
        pump(r, sv[1]);
    }
    if (!(r->mode & MODE_EARLY_EOF))
        quiesce(r, sv[1]);
    shutdown(sv[1], SHUT_WR);
    /* A client that half-closed always sees the end of its connection. */
    while (srv->conns.nconns > 0 || !r->eof || r->npending > 0) {
        pump(r, sv[1]);
        FUZZ_CHECK(++spins < 200000);
    }
    close(sv[1]);
    cur = NULL;
}

/* ---- what the client read ---- */

static bool is_server_error(int status)
{
    return status == 400 || status == 408 || status == 413 || status == 431 || status == 505;
}

/* The server frames after a 101: the echoes of the client's text messages, a close at the end. */
static void check_frames(const uint8_t *p, const uint8_t *end)
{
    bool closed = false;
    while (p < end) {
        FUZZ_CHECK(!closed && end - p >= 2);
        FUZZ_CHECK((p[0] & 0xf0) == 0x80 && (p[1] & 0x80) == 0);
        int op = p[0] & 0x0f;
        uint64_t len = p[1] & 0x7f;
        size_t h = 2;
        if (len == 126) {
            FUZZ_CHECK(end - p >= 4);
            len = ((uint64_t)p[2] << 8) | p[3];
            h = 4;
        } else if (len == 127) {
            FUZZ_CHECK(end - p >= 10);
            len = 0;
            for (int i = 0; i < 8; i++)
                len = (len << 8) | p[2 + i];
            h = 10;
        }
        FUZZ_CHECK((uint64_t)(end - p) - h >= len);
        FUZZ_CHECK(op == 0x1 || op == 0x8 || op == 0x9 || op == 0xA);
        closed = op == 0x8;
        p += h + len;
    }
}

/*
 * Walks the answers the client read, checks them, and writes them into norm
 * without what depends on timing (Date and Connection lines, 100 Continue).
 */
static void check_answers(const run_t *r, chat_buf_t *norm)
{
    const char *p = r->resp.data ? r->resp.data : "", *end = p + r->resp.len;
    int next = 0;
    bool error_seen = false;
    while (p < end) {
        FUZZ_CHECK(!error_seen);
        const char *head_end = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
        FUZZ_CHECK(head_end);
        head_end += 4;
        FUZZ_CHECK(end - p > 13 && memcmp(p, "HTTP/1.1 ", 9) == 0);
        int status = atoi(p + 9);
        FUZZ_CHECK(status >= 100 && status <= 599);
        long clen = -1;
        bool ours = false, nosniff = false;
        const char *line = strstr(p, "\r\n") + 2;
        chat_buf_t h = CHAT_BUF_INIT;
        chat_buf_append(&h, p, (size_t)(line - p));
        while (line < head_end - 2) {
            const char *eol = memmem(line, (size_t)(head_end - line), "\r\n", 2);
            size_t ll = (size_t)(eol - line);
            if (!strncasecmp(line, "Content-Length: ", 16))
                clen = atol(line + 16);
            if (!strncasecmp(line, "X-Fuzz: 1", 9))
                ours = true;
            if (!strncasecmp(line, "X-Content-Type-Options: nosniff", 31))
                nosniff = true;
            if (strncasecmp(line, "Date: ", 6) && strncasecmp(line, "Connection: ", 12))
                chat_buf_append(&h, line, ll + 2);
            line = eol + 2;
        }
        chat_buf_puts(&h, "\r\n");
        p = head_end;
        if (status == 100) {
            chat_buf_dispose(&h);
            continue;
        }
        FUZZ_CHECK(nosniff == (status >= 200));
        size_t norm_at = norm->len;
        chat_buf_append(norm, h.data, h.len);
        chat_buf_dispose(&h);
        if (status == 101) {
            FUZZ_CHECK(next < r->nreq && r->kinds[next] == 'U');
            next++;
            chat_buf_append(norm, p, (size_t)(end - p));
            check_frames((const uint8_t *)p, (const uint8_t *)end);
            return;
        }
        FUZZ_CHECK(clen >= 0);
        size_t body = (size_t)clen;
        if (ours) {
            FUZZ_CHECK(status == 200 && next < r->nreq);
            char want[16];
            snprintf(want, sizeof want, "k:%d", next);
            if (r->kinds[next] == 'H') {
                body = 0;
            } else {
                FUZZ_CHECK(r->kinds[next] == 'R');
                FUZZ_CHECK((size_t)(end - p) >= body && body >= strlen(want));
                FUZZ_CHECK(memcmp(p, want, strlen(want)) == 0);
            }
            next++;
        } else if (next < r->nreq && r->kinds[next] == 'X') {
            FUZZ_CHECK(status == 400); /* the upgrade refused its request */
            next++;
        } else {
            /* The server's own refusal: the last answer, to a request not handed over. */
            FUZZ_CHECK(is_server_error(status));
            FUZZ_CHECK(next == r->nreq);
            error_seen = true;
            if (end == p)
                body = 0; /* the refused request was a HEAD */
            FUZZ_CHECK(body == 0 || memmem(p, body, "{\"error\":{\"code\":\"", 18));
            FUZZ_CHECK((size_t)(end - p) >= body);
            /*
             * Compared by status, code and whether it has a body: which of two
             * faults in one head is named first (the parser's, or a check in
             * its callbacks, which run where a read ended) may depend on the
             * reads.
             */
            norm->len = norm_at;
            chat_buf_printf(norm, "refused %d %s", status, body ? "with a body" : "without");
            const char *code = body ? memmem(p, body, "\"code\":\"", 8) : NULL;
            if (code)
                chat_buf_append(norm, code, (size_t)(strchr(code + 8, '"') - code));
            p += body;
            continue;
        }
        FUZZ_CHECK((size_t)(end - p) >= body);
        chat_buf_append(norm, p, body);
        p += body;
    }
}

static bool same(const chat_buf_t *a, const chat_buf_t *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

/* Shows what two runs disagree on before the check aborts. */
static void dump(const char *what, const chat_buf_t *b)
{
    fprintf(stderr, "fuzz_http: %s (%zu bytes): ", what, b->len);
    for (size_t i = 0; i < b->len; i++) {
        unsigned char c = (unsigned char)b->data[i];
        if (c >= ' ' && c < 0x7f && c != '\\')
            fputc(c, stderr);
        else
            fprintf(stderr, "\\x%02x", c);
    }
    fputc('\n', stderr);
}

static void run_dispose(run_t *r)
{
    chat_buf_dispose(&r->reqlog);
    chat_buf_dispose(&r->resp);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    chat_log_level = CHAT_LOG_WARN;
    signal(SIGPIPE, SIG_IGN);
    FUZZ_CHECK(uv_loop_init(&loop) == 0);
    chat_http_server_config_t cfg = {
        .host = "127.0.0.1",
        .port = 0,
        .max_head = MAX_HEAD,
        .max_body = MAX_BODY,
        .max_pending_output = 8192,
        .tcp_sndbuf = 4096,
        .open_connections = &open_count,
        .max_connections = 1000,
        .handler = handler,
    };
    int err = 0;
    srv = chat_http_server_create(&loop, &cfg, &err);
    FUZZ_CHECK(srv != NULL);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    uint16_t seed = (uint16_t)(data[0] | data[1] << 8);
    int mode = data[2];
    data += 3;
    size -= 3;
    run_t whole = {.mode = mode, .in = data, .in_len = size};
    run_t parts = {.mode = mode, .in = data, .in_len = size};
    run_input(&whole, data, size, false, seed);
    run_input(&parts, data, size, true, seed);
    chat_buf_t nw = CHAT_BUF_INIT, np = CHAT_BUF_INIT;
    check_answers(&whole, &nw);
    check_answers(&parts, &np);
    if (!(mode & MODE_EARLY_EOF)) {
        if (whole.nreq != parts.nreq || !same(&whole.reqlog, &parts.reqlog) || !same(&nw, &np)) {
            dump("requests, written whole", &whole.reqlog);
            dump("requests, written in pieces", &parts.reqlog);
            dump("answers, written whole", &nw);
            dump("answers, written in pieces", &np);
        }
        FUZZ_CHECK(whole.nreq == parts.nreq);
        FUZZ_CHECK(same(&whole.reqlog, &parts.reqlog));
        FUZZ_CHECK(same(&nw, &np));
    }
    chat_buf_dispose(&nw);
    chat_buf_dispose(&np);
    run_dispose(&whole);
    run_dispose(&parts);
    return 0;
}
