/*
 * REST set-up of the realtime stage; see rt_setup.h.
 */
#include "rt_setup.h"
#include "rest.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BATCH 64
#define MAX_PARALLEL 16

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

typedef struct job job_t;
/* Appends request i of the job to b. */
typedef void (*compose_fn)(job_t *j, long i, cl_sbuf_t *b);
/* Takes answer i (2xx); 0, or -1 when it is not what was expected. */
typedef int (*take_fn)(job_t *j, long i, const cl_resp_t *r);

struct job {
    const cl_url_t *u;
    const char *what;
    long n;
    int parallel;
    double deadline;
    compose_fn compose;
    take_fn take;
    uint32_t tag;
    cl_user_t *users;
    cl_rt_shape_t *sh;
    atomic_int failed;
    atomic_long done;
};

typedef struct {
    job_t *job;
    int index;
} worker_t;

/* Thread body: items index, index + parallel, … in pipelined batches. */
static void *work(void *arg)
{
    worker_t *w = arg;
    job_t *j = w->job;
    cl_bconn_t c;
    if (cl_bconn_open(&c, j->u) != 0) {
        fprintf(stderr, "chatload realtime: cannot connect: %s\n", strerror(errno));
        atomic_store(&j->failed, 1);
        return NULL;
    }
    cl_resp_t resps[BATCH];
    memset(resps, 0, sizeof resps);
    long idx[BATCH];
    cl_sbuf_t b = {0};
    long i = w->index;
    while (i < j->n && !atomic_load(&j->failed)) {
        if (mono() > j->deadline) {
            fprintf(stderr, "chatload realtime: creating %s took too long; giving up\n", j->what);
            atomic_store(&j->failed, 1);
            break;
        }
        int k = 0;
        b.len = 0;
        for (; k < BATCH && i < j->n; k++, i += j->parallel) {
            idx[k] = i;
            j->compose(j, i, &b);
        }
        if (cl_bconn_batch(&c, b.data, b.len, resps, k) != 0) {
            fprintf(stderr, "chatload realtime: connection failed while creating %s\n", j->what);
            atomic_store(&j->failed, 1);
            break;
        }
        for (int r = 0; r < k && !atomic_load(&j->failed); r++) {
            if (resps[r].status < 200 || resps[r].status > 299 ||
                j->take(j, idx[r], &resps[r]) != 0) {
                fprintf(stderr, "chatload realtime: creating %s answered %d: %.300s\n", j->what,
                        resps[r].status, resps[r].body);
                atomic_store(&j->failed, 1);
            }
        }
        cl_resps_free(resps, k);
        long d = atomic_fetch_add(&j->done, k) + k;
        if (d / 2000 != (d - k) / 2000)
            fprintf(stderr, "chatload realtime: %ld/%ld %s\n", d, j->n, j->what);
    }
    free(b.data);
    cl_bconn_close(&c);
    return NULL;
}

static int run(job_t *j)
{
    if (j->parallel < 1)
        j->parallel = 1;
    if (j->parallel > MAX_PARALLEL)
        j->parallel = MAX_PARALLEL;
    pthread_t th[MAX_PARALLEL];
    worker_t w[MAX_PARALLEL];
    for (int t = 0; t < j->parallel; t++) {
        w[t] = (worker_t){.job = j, .index = t};
        if (pthread_create(&th[t], NULL, work, &w[t]) != 0)
            abort();
    }
    for (int t = 0; t < j->parallel; t++)
        pthread_join(th[t], NULL);
    return atomic_load(&j->failed) ? -1 : 0;
}

static void compose_user(job_t *j, long i, cl_sbuf_t *b)
{
    char body[96];
    snprintf(body, sizeof body, "{\"name\":\"rt%08x-u%ld\"}", j->tag, i);
    cl_sbuf_request(b, j->u, "POST", "/api/v1/users", NULL, body);
}

static int take_user(job_t *j, long i, const cl_resp_t *r)
{
    json_t *o = json_loadb(r->body, r->len, 0, NULL);
    json_int_t id = json_integer_value(json_object_get(o, "id"));
    const char *t = json_string_value(json_object_get(o, "token"));
    int rc = id > 0 && t ? 0 : -1;
    if (rc == 0) {
        j->users[i].id = id;
        j->users[i].token = strdup(t);
    }
    json_decref(o);
    return rc;
}

int cl_rt_signup(const cl_url_t *u, int n, uint32_t tag, int parallel, double timeout_s,
                 cl_user_t *users)
{
    job_t j = {.u = u,
               .what = "users",
               .n = n,
               .parallel = parallel,
               .deadline = mono() + timeout_s,
               .compose = compose_user,
               .take = take_user,
               .tag = tag,
               .users = users};
    return run(&j);
}

static void compose_conv(job_t *j, long i, cl_sbuf_t *b)
{
    const cl_rt_shape_t *sh = j->sh;
    cl_sbuf_t body = {0};
    cl_sbuf_printf(&body, "{\"title\":\"rt %08x %ld\",\"member_ids\":[", j->tag, i);
    for (long m = sh->off[i] + 1; m < sh->off[i + 1]; m++)
        cl_sbuf_printf(&body, "%s%lld", m > sh->off[i] + 1 ? "," : "",
                       (long long)j->users[sh->member[m]].id);
    cl_sbuf_printf(&body, "]}");
    cl_sbuf_request(b, j->u, "POST", "/api/v1/conversations",
                    j->users[sh->member[sh->off[i]]].token, body.data);
    free(body.data);
}

static int take_conv(job_t *j, long i, const cl_resp_t *r)
{
    json_t *o = json_loadb(r->body, r->len, 0, NULL);
    json_int_t id = json_integer_value(json_object_get(o, "id"));
    json_int_t count = json_integer_value(json_object_get(o, "member_count"));
    json_decref(o);
    if (id <= 0 || count != j->sh->size[i])
        return -1;
    j->sh->conv_id[i] = id;
    return 0;
}

int cl_rt_create_convs(const cl_url_t *u, const cl_user_t *users, cl_rt_shape_t *sh, uint32_t tag,
                       int parallel, double timeout_s)
{
    job_t j = {.u = u,
               .what = "conversations",
               .n = sh->nconvs,
               .parallel = parallel,
               .deadline = mono() + timeout_s,
               .compose = compose_conv,
               .take = take_conv,
               .tag = tag,
               .users = (cl_user_t *)users,
               .sh = sh};
    return run(&j);
}
