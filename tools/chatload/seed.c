/*
 * `chatload seed`: creates users, conversations and messages through the
 * public API (no direct database access) over one keep-alive connection,
 * pipelining requests in batches, and writes ids and tokens to a JSON file.
 * The shape (who is in which conversation, where each message goes, Zipf
 * popularity) follows from --seed; user names carry a run tag to stay unique.
 * With --copy the same shape goes straight into PostgreSQL (copy.c).
 */
#include "seed.h"
#include "rest.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define MAX_PARALLEL 64

typedef struct {
    const cl_url_t *u;
    const cl_user_t *users;
    const cl_conv_t *convs;
    unsigned tag;
    long nmsgs;
    int parallel;
    int *conv, *sender; /* per message: conversation index, user index */
    atomic_long done;
    atomic_int failed;
} msg_job_t;

typedef struct {
    msg_job_t *job;
    int index;
} msg_worker_t;

static int run_batch(cl_bconn_t *c, cl_sbuf_t *b, cl_resp_t *resps, int n, const char *what);

/* Thread body: sends messages index, index+parallel, ... on its own
 * keep-alive connection, BATCH pipelined at a time. */
static void *send_messages(void *arg)
{
    msg_worker_t *w = arg;
    msg_job_t *j = w->job;
    cl_bconn_t c;
    if (cl_bconn_open(&c, j->u) != 0) {
        fprintf(stderr, "chatload seed: cannot connect: %s\n", strerror(errno));
        atomic_store(&j->failed, 1);
        return NULL;
    }
    cl_resp_t resps[BATCH];
    memset(resps, 0, sizeof resps);
    cl_sbuf_t b = {0};
    char path[128], body[128];
    long i = w->index;
    while (i < j->nmsgs && !atomic_load(&j->failed)) {
        int n = 0;
        for (; n < BATCH && i < j->nmsgs; n++, i += j->parallel) {
            snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages",
                     (long long)j->convs[j->conv[i]].id);
            snprintf(body, sizeof body, "{\"body\":\"seed message %ld of run %06x\"}", i, j->tag);
            cl_sbuf_request(&b, j->u, "POST", path, j->users[j->sender[i]].token, body);
        }
        if (run_batch(&c, &b, resps, n, "messages") != 0) {
            atomic_store(&j->failed, 1);
            break;
        }
        cl_resps_free(resps, n);
        long d = atomic_fetch_add(&j->done, n) + n;
        if (d / 10000 != (d - n) / 10000)
            fprintf(stderr, "chatload seed: %ld/%ld messages\n", d, j->nmsgs);
    }
    cl_resps_free(resps, BATCH);
    free(b.data);
    cl_bconn_close(&c);
    return NULL;
}

static void usage(void)
{
    fprintf(
        stderr,
        "usage: chatload seed --url http://127.0.0.1:3000 --users N --conversations N\n"
        "                     --messages N [--members K] [--zipf S] [--seed N] [--parallel P]\n"
        "                     --out seed.json\n"
        "       chatload seed --copy --db-url postgresql://chat:...@127.0.0.1:5432/chat\n"
        "                     --users N --conversations N --messages N [--members K] [--zipf S]\n"
        "                     [--seed N] --out seed.json\n");
}

void cl_seed_draw_members(cl_rng_t *rng, long nusers, long max_members, cl_conv_t *cv)
{
    long want = 1 + (long)cl_rng_below(rng, (uint64_t)max_members);
    if (want > nusers)
        want = nusers;
    cv->nmembers = 0;
    cv->members = calloc((size_t)want, sizeof *cv->members);
    if (!cv->members)
        abort();
    while (cv->nmembers < want) {
        int cand = (int)cl_rng_below(rng, (uint64_t)nusers), dup = 0;
        for (int m = 0; m < cv->nmembers; m++)
            dup |= cv->members[m] == cand;
        if (!dup)
            cv->members[cv->nmembers++] = cand;
    }
}

void cl_seed_draw_messages(cl_rng_t *rng, const cl_zipf_t *z, const cl_conv_t *convs, long nmsgs,
                           int *conv, int *sender)
{
    for (long i = 0; i < nmsgs; i++) {
        conv[i] = (int)cl_zipf_sample(z, rng);
        const cl_conv_t *cv = &convs[conv[i]];
        sender[i] = cv->members[cl_rng_below(rng, (uint64_t)cv->nmembers)];
    }
}

/* Runs the batch in b against c; on any non-2xx answer, reports and fails. */
static int run_batch(cl_bconn_t *c, cl_sbuf_t *b, cl_resp_t *resps, int n, const char *what)
{
    if (cl_bconn_batch(c, b->data, b->len, resps, n) != 0) {
        fprintf(stderr, "chatload seed: connection failed while creating %s\n", what);
        return -1;
    }
    b->len = 0;
    for (int i = 0; i < n; i++) {
        if (resps[i].status < 200 || resps[i].status > 299) {
            fprintf(stderr, "chatload seed: creating %s answered %d: %.300s\n", what,
                    resps[i].status, resps[i].body);
            return -1;
        }
    }
    return 0;
}

static int64_t body_id(const cl_resp_t *r)
{
    json_t *j = json_loadb(r->body, r->len, 0, NULL);
    int64_t id = j ? json_integer_value(json_object_get(j, "id")) : 0;
    json_decref(j);
    return id;
}

int cl_cmd_seed(int argc, char **argv)
{
    const char *url = "http://127.0.0.1:3000", *out = NULL, *db_url = NULL;
    long nusers = 100, nconvs = 50, nmsgs = 1000, members = 4;
    int parallel = 8, copy = 0;
    double zipf_s = 1.1;
    unsigned long long seed = 42;
    static const struct option opts[] = {{"url", 1, 0, 'u'},
                                         {"users", 1, 0, 'U'},
                                         {"conversations", 1, 0, 'c'},
                                         {"messages", 1, 0, 'm'},
                                         {"members", 1, 0, 'k'},
                                         {"zipf", 1, 0, 'z'},
                                         {"seed", 1, 0, 's'},
                                         {"out", 1, 0, 'o'},
                                         {"parallel", 1, 0, 'p'},
                                         {"help", 0, 0, 'h'},
                                         {"copy", 0, 0, 'C'},
                                         {"db-url", 1, 0, 'D'},
                                         {0, 0, 0, 0}};
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'u':
            url = optarg;
            break;
        case 'U':
            nusers = atol(optarg);
            break;
        case 'c':
            nconvs = atol(optarg);
            break;
        case 'm':
            nmsgs = atol(optarg);
            break;
        case 'k':
            members = atol(optarg);
            break;
        case 'z':
            zipf_s = atof(optarg);
            break;
        case 's':
            seed = strtoull(optarg, NULL, 10);
            break;
        case 'o':
            out = optarg;
            break;
        case 'p':
            parallel = atoi(optarg);
            break;
        case 'C':
            copy = 1;
            break;
        case 'D':
            db_url = optarg;
            break;
        default:
            usage();
            return 2;
        }
    }
    if (copy || db_url) {
        if (!copy || !db_url || !out || nusers < 1 || nconvs < 1 || nmsgs < 0 || members < 1 ||
            nusers > INT_MAX || nconvs > INT_MAX) {
            usage();
            return 2;
        }
        cl_copy_opts_t co = {.db_url = db_url,
                             .out = out,
                             .nusers = nusers,
                             .nconvs = nconvs,
                             .nmsgs = nmsgs,
                             .members = members,
                             .zipf_s = zipf_s,
                             .seed = seed};
        return cl_seed_copy(&co);
    }
    if (!out || nusers < 1 || nconvs < 1 || nmsgs < 0 || members < 1 || parallel < 1 ||
        parallel > MAX_PARALLEL) {
        usage();
        return 2;
    }
    cl_url_t u;
    char err[256];
    if (cl_url_parse(&u, url, err, sizeof err) != 0) {
        fprintf(stderr, "chatload: %s\n", err);
        return 2;
    }
    cl_bconn_t c;
    if (cl_bconn_open(&c, &u) != 0) {
        fprintf(stderr, "chatload seed: cannot connect to %s: %s\n", url, strerror(errno));
        return 1;
    }
    cl_rng_t rng;
    cl_rng_init(&rng, seed);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    unsigned tag = (unsigned)((now.tv_sec * 1000003ULL + (unsigned long long)now.tv_nsec / 1000) ^
                              (unsigned)getpid()) &
                   0xffffff;

    cl_user_t *users = calloc((size_t)nusers, sizeof *users);
    cl_conv_t *convs = calloc((size_t)nconvs, sizeof *convs);
    cl_resp_t resps[BATCH];
    memset(resps, 0, sizeof resps);
    cl_sbuf_t b = {0};
    char body[512];
    int rc = 1;
    if (!users || !convs)
        abort();

    for (long i = 0; i < nusers; i += BATCH) {
        int n = (int)(nusers - i < BATCH ? nusers - i : BATCH);
        for (int k = 0; k < n; k++) {
            snprintf(body, sizeof body, "{\"name\":\"cl%llu-%06x-u%ld\"}", seed, tag, i + k);
            cl_sbuf_request(&b, &u, "POST", "/api/v1/users", NULL, body);
        }
        if (run_batch(&c, &b, resps, n, "users") != 0)
            goto done;
        for (int k = 0; k < n; k++) {
            json_t *j = json_loadb(resps[k].body, resps[k].len, 0, NULL);
            users[i + k].id = json_integer_value(json_object_get(j, "id"));
            const char *t = json_string_value(json_object_get(j, "token"));
            users[i + k].token = strdup(t ? t : "");
            json_decref(j);
        }
        cl_resps_free(resps, n);
    }

    for (long i = 0; i < nconvs; i += BATCH) {
        int n = (int)(nconvs - i < BATCH ? nconvs - i : BATCH);
        for (int k = 0; k < n; k++) {
            cl_conv_t *cv = &convs[i + k];
            cl_seed_draw_members(&rng, nusers, members, cv);
            int off =
                snprintf(body, sizeof body, "{\"title\":\"load %ld\",\"member_ids\":[", i + k);
            for (int m = 1; m < cv->nmembers; m++)
                off += snprintf(body + off, sizeof body - (size_t)off, "%s%lld", m > 1 ? "," : "",
                                (long long)users[cv->members[m]].id);
            snprintf(body + off, sizeof body - (size_t)off, "]}");
            cl_sbuf_request(&b, &u, "POST", "/api/v1/conversations", users[cv->members[0]].token,
                            body);
        }
        if (run_batch(&c, &b, resps, n, "conversations") != 0)
            goto done;
        for (int k = 0; k < n; k++)
            convs[i + k].id = body_id(&resps[k]);
        cl_resps_free(resps, n);
    }

    cl_zipf_t z;
    if (cl_zipf_init(&z, (size_t)nconvs, zipf_s) != 0) {
        fprintf(stderr, "chatload seed: bad --zipf\n");
        goto done;
    }
    msg_job_t job = {
        .u = &u, .users = users, .convs = convs, .tag = tag, .nmsgs = nmsgs, .parallel = parallel};
    job.conv = malloc((size_t)(nmsgs ? nmsgs : 1) * sizeof *job.conv);
    job.sender = malloc((size_t)(nmsgs ? nmsgs : 1) * sizeof *job.sender);
    if (!job.conv || !job.sender)
        abort();
    /* where each message goes is drawn here, in order, so it follows --seed
     * whatever the number of sending threads */
    cl_seed_draw_messages(&rng, &z, convs, nmsgs, job.conv, job.sender);
    pthread_t th[MAX_PARALLEL];
    msg_worker_t w[MAX_PARALLEL];
    for (int t = 0; t < parallel; t++) {
        w[t] = (msg_worker_t){.job = &job, .index = t};
        if (pthread_create(&th[t], NULL, send_messages, &w[t]) != 0)
            abort();
    }
    for (int t = 0; t < parallel; t++)
        pthread_join(th[t], NULL);
    free(job.conv);
    free(job.sender);
    if (atomic_load(&job.failed)) {
        cl_zipf_dispose(&z);
        goto done;
    }
    cl_zipf_dispose(&z);

    json_t *root = json_object(), *ju = json_array(), *jc = json_array();
    for (long i = 0; i < nusers; i++)
        json_array_append_new(
            ju, json_pack("{s:I,s:s}", "id", (json_int_t)users[i].id, "token", users[i].token));
    for (long i = 0; i < nconvs; i++) {
        json_t *m = json_array();
        for (int k = 0; k < convs[i].nmembers; k++)
            json_array_append_new(m, json_integer(convs[i].members[k]));
        json_array_append_new(jc,
                              json_pack("{s:I,s:o}", "id", (json_int_t)convs[i].id, "members", m));
    }
    json_object_set_new(root, "seed", json_integer((json_int_t)seed));
    json_object_set_new(root, "url", json_string(url));
    json_object_set_new(root, "messages", json_integer(nmsgs));
    json_object_set_new(root, "zipf", json_real(zipf_s));
    json_object_set_new(root, "users", ju);
    json_object_set_new(root, "conversations", jc);
    if (json_dump_file(root, out, JSON_COMPACT) != 0) {
        fprintf(stderr, "chatload seed: cannot write %s\n", out);
    } else {
        fprintf(stderr, "chatload seed: %ld users, %ld conversations, %ld messages -> %s\n", nusers,
                nconvs, nmsgs, out);
        rc = 0;
    }
    json_decref(root);

done:
    cl_resps_free(resps, BATCH);
    free(b.data);
    cl_bconn_close(&c);
    for (long i = 0; i < nusers; i++)
        free(users[i].token);
    for (long i = 0; i < nconvs; i++)
        free(convs[i].members);
    free(users);
    free(convs);
    return rc;
}
