/*
 * A private redis-server for the unit tests that need one: started as a
 * child on a free port of PORT_LO..PORT_HI (a test may define its own range
 * before including this), killed, restarted and reached with a blocking
 * hiredis context. Header-only: each test executable includes it once.
 */
#ifndef CHAT_TEST_REDIS_SERVER_H
#define CHAT_TEST_REDIS_SERVER_H

#include <arpa/inet.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#define REDIS_SERVER "/usr/bin/redis-server"
#ifndef PORT_LO
#define PORT_LO 26380
#define PORT_HI 26399
#endif

static int g_port;  /* where our server listens */
static pid_t g_pid; /* our server, 0 when not running */

/* ---- the server ---- */

__attribute__((unused)) static double ms_since(uint64_t t0)
{
    return (double)(uv_hrtime() - t0) / 1e6;
}

__attribute__((unused)) static int port_free(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int one = 1, ok, fd = socket(AF_INET, SOCK_STREAM, 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    ok = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

__attribute__((unused)) static int server_ping(int port)
{
    struct timeval tv = {0, 200000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    int ok = 0;
    if (c && !c->err) {
        redisReply *rep = redisCommand(c, "PING");
        ok = rep && rep->type == REDIS_REPLY_STATUS;
        if (rep)
            freeReplyObject(rep);
    }
    if (c)
        redisFree(c);
    return ok;
}

/* Starts redis-server on port; 0 once it answers PING, -1 if it exited. */
__attribute__((unused)) static int server_start(int port)
{
    char ps[16];
    uint64_t t0 = uv_hrtime();
    pid_t pid;

    snprintf(ps, sizeof ps, "%d", port);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 1);
        dup2(devnull, 2);
        execl(REDIS_SERVER, "redis-server", "--port", ps, "--bind", "127.0.0.1", "--save", "",
              "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning", (char *)NULL);
        _exit(127);
    }
    while (ms_since(t0) < 5000) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid)
            return -1; /* could not bind, most likely */
        if (server_ping(port)) {
            g_pid = pid;
            return 0;
        }
        usleep(20000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

__attribute__((unused)) static void server_kill(void)
{
    if (g_pid > 0) {
        kill(g_pid, SIGKILL);
        waitpid(g_pid, NULL, 0);
        g_pid = 0;
    }
}

__attribute__((unused)) static int group_setup(void **state)
{
    if (access(REDIS_SERVER, X_OK) != 0) {
        fprintf(stderr,
                "%s not found; redis-server is a declared dependency "
                "(Debian package redis-server)\n",
                REDIS_SERVER);
        return -1;
    }
    for (int p = PORT_LO; p <= PORT_HI; p++) {
        if (port_free(p) && server_start(p) == 0) {
            g_port = p;
            return 0;
        }
    }
    fprintf(stderr, "no free port in %d-%d for redis-server\n", PORT_LO, PORT_HI);
    return -1;
}

__attribute__((unused)) static int group_teardown(void **state)
{
    server_kill();
    return 0;
}

/* A port in our range where nothing listens. */
__attribute__((unused)) static int dead_port(void)
{
    for (int p = PORT_HI; p >= PORT_LO; p--)
        if (p != g_port && port_free(p))
            return p;
    fail_msg("no free port");
    return 0;
}

/* Runs a command on a blocking connection of our own; the reply, to free. */
__attribute__((unused)) static redisReply *server_cmd(const char *fmt, ...)
{
    va_list ap;
    redisContext *c = redisConnect("127.0.0.1", g_port);
    assert_true(c && !c->err);
    va_start(ap, fmt);
    redisReply *rep = redisvCommand(c, fmt, ap);
    va_end(ap);
    assert_non_null(rep);
    redisFree(c);
    return rep;
}

__attribute__((unused)) static void pause_server(int ms)
{
    redisReply *rep = server_cmd("CLIENT PAUSE %d", ms);
    assert_int_equal(rep->type, REDIS_REPLY_STATUS);
    freeReplyObject(rep);
}

#endif
