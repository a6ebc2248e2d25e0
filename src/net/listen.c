/*
 * The listening socket and the connection cap (see listen.h). Accepting
 * always takes the connection off the backlog, also at the cap, so that a
 * full server closes new clients at once rather than leaving them waiting.
 */
#include "net/listen.h"
#include "core/error.h"
#include "core/log.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define LISTEN_BACKLOG 4096

int chat_listen_socket(const char *host, int port, int *bound_port)
{
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    char hbuf[256];
    const char *node = host;
    if (!host || !host[0] || strcmp(host, "*") == 0) {
        node = NULL;
    } else if (host[0] == '[') {
        size_t n = strlen(host);
        if (n < 3 || host[n - 1] != ']' || n - 2 >= sizeof hbuf)
            return UV_EINVAL;
        memcpy(hbuf, host + 1, n - 2);
        hbuf[n - 2] = '\0';
        node = hbuf;
    }
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int gai = getaddrinfo(node, service, &hints, &res);
    if (gai != 0)
        return gai == EAI_SYSTEM ? -errno : UV_EADDRNOTAVAIL;
    int err = UV_EADDRNOTAVAIL;
    int fd = -1;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            err = -errno;
            continue;
        }
        int one = 1;
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
            bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, LISTEN_BACKLOG) != 0) {
            err = -errno;
            close(fd);
            fd = -1;
            continue;
        }
        break;
    }
    freeaddrinfo(res);
    if (fd < 0)
        return err;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    *bound_port = port;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET)
            *bound_port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        else if (ss.ss_family == AF_INET6)
            *bound_port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    return fd;
}

static void on_connection(uv_stream_t *s, int status)
{
    chat_listener_t *l = s->data;
    if (status < 0) {
        chat_log_warn("event=accept_error error=\"%s\"", uv_strerror(status));
        return;
    }
    l->_cb(l);
}

int chat_listener_init(chat_listener_t *l, uv_loop_t *loop, int fd, _Atomic int *open_connections,
                       int max_connections, chat_listener_cb cb)
{
    atomic_init(&l->_own, 0);
    l->_open = open_connections ? open_connections : &l->_own;
    l->_max = max_connections;
    l->_reject_log_sec = 0;
    l->_cb = cb;
    uv_tcp_init(loop, &l->_tcp);
    l->_tcp.data = l;
    int rc = uv_tcp_open(&l->_tcp, fd);
    if (rc != 0) {
        close(fd);
        return rc;
    }
    return uv_listen((uv_stream_t *)&l->_tcp, LISTEN_BACKLOG, on_connection);
}

/* Takes a slot of the shared connection counter unless it is at the cap. */
static bool slot_take(chat_listener_t *l)
{
    int cur = atomic_load(l->_open);
    do {
        if (l->_max > 0 && cur >= l->_max)
            return false;
    } while (!atomic_compare_exchange_weak(l->_open, &cur, cur + 1));
    return true;
}

int chat_listener_accept(chat_listener_t *l, uv_tcp_t *client)
{
    int rc = uv_accept((uv_stream_t *)&l->_tcp, (uv_stream_t *)client);
    if (rc != 0)
        return rc;
    if (!slot_take(l)) {
        time_t now = time(NULL);
        if (now != l->_reject_log_sec) {
            l->_reject_log_sec = now;
            chat_log_warn("event=max_connections_reached max_connections=%d", l->_max);
        }
        return CHAT_EUNAVAILABLE;
    }
    return 0;
}

void chat_listener_release(chat_listener_t *l)
{
    atomic_fetch_sub(l->_open, 1);
}

static void closed_cb(uv_handle_t *h)
{
    chat_listener_t *l = h->data;
    l->_close_cb(l);
}

void chat_listener_close(chat_listener_t *l, chat_listener_close_cb cb)
{
    l->_close_cb = cb;
    uv_close((uv_handle_t *)&l->_tcp, closed_cb);
}
