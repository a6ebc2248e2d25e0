/*
 * Shared declarations of the chatload load generator: the target URL, the
 * seed data set, the workload mix and the two commands (seed, run).
 */
#ifndef CHATLOAD_H
#define CHATLOAD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct {
    char host[64]; /* numeric, as given */
    int port;
    struct sockaddr_storage addr; /* resolved target */
    int ipv6;
} cl_url_t;

/** Parses http://127.x.x.x:port or http://[::1]:port (or localhost); refuses
 *  every non-loopback target. 0, or -1 with a message in err. */
int cl_url_parse(cl_url_t *u, const char *s, char *err, size_t errlen);

/** Raises RLIMIT_NOFILE to its hard limit; returns the new soft limit. */
long cl_raise_nofile(void);

typedef struct {
    int64_t id;
    char *token;
} cl_user_t;

typedef struct {
    int64_t id;
    int nmembers;
    int *members; /* indices into users */
} cl_conv_t;

typedef struct {
    size_t nusers, nconvs;
    cl_user_t *users;
    cl_conv_t *convs;
} cl_seed_t;

/** Loads a seed file written by `chatload seed`. 0 or -1 (message on stderr). */
int cl_seed_load(cl_seed_t *s, const char *path);
void cl_seed_dispose(cl_seed_t *s);

int cl_cmd_seed(int argc, char **argv);
int cl_cmd_run(int argc, char **argv);

#endif
