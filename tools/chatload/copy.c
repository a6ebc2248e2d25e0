/*
 * `chatload seed --copy`: writes a data set straight into PostgreSQL with
 * COPY FROM STDIN, in one transaction, in the shape `chatload seed` draws
 * from the same --seed. Users get real tokens (256 random bits, base64url)
 * whose SHA-256 goes into `tokens`; conversations carry their member_count,
 * message_count and last_message_at, as chatd's own writes keep them.
 */
#include "seed.h"

#include "core/base64.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define TOKEN_LEN 43 /* 32 bytes, base64url without padding */
#define FLUSH_AT (256 * 1024)

/* ---- the loopback rule --------------------------------------------------- */

static int host_is_local(const char *h)
{
    if (!*h || h[0] == '/' || h[0] == '@') /* unix-socket directory (or libpq's default: one) */
        return 1;
    if (strcasecmp(h, "localhost") == 0)
        return 1;
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, h, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, h, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6);
    return 0;
}

/* Every comma-separated entry of list must be local; 0 or -1. */
static int list_is_local(const char *list, char *bad, size_t badlen)
{
    const char *p = list;
    for (;;) {
        size_t n = strcspn(p, ",");
        char h[256];
        if (n >= sizeof h)
            n = sizeof h - 1;
        memcpy(h, p, n);
        h[n] = 0;
        if (!host_is_local(h)) {
            snprintf(bad, badlen, "%s", h);
            return -1;
        }
        if (!p[strcspn(p, ",")])
            return 0;
        p += strcspn(p, ",") + 1;
    }
}

int cl_db_url_check(const char *db_url, char *err, size_t errlen)
{
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(db_url, &perr);
    if (!opts) {
        snprintf(err, errlen, "--db-url: %s", perr ? perr : "cannot parse");
        PQfreemem(perr);
        return -1;
    }
    const char *host = NULL, *hostaddr = NULL;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (strcmp(o->keyword, "host") == 0 && o->val)
            host = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0 && o->val)
            hostaddr = o->val;
    }
    /* what libpq falls back on when the string names no host */
    if (!host || !*host)
        host = getenv("PGHOST");
    if (!hostaddr || !*hostaddr)
        hostaddr = getenv("PGHOSTADDR");
    char bad[256];
    int rc = 0;
    if ((host && list_is_local(host, bad, sizeof bad) != 0) ||
        (hostaddr && list_is_local(hostaddr, bad, sizeof bad) != 0)) {
        snprintf(err, errlen,
                 "refusing database host %s: chatload only writes to loopback (127.0.0.0/8, ::1, "
                 "localhost) "
                 "or a unix socket",
                 bad);
        rc = -1;
    }
    PQconninfoFree(opts);
    return rc;
}

/* ---- COPY plumbing ------------------------------------------------------- */

typedef struct {
    PGconn *pg;
    char *buf;
    size_t len, cap;
    int failed;
} copy_t;

static void put(copy_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(copy_t *c, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(c->buf + c->len, c->cap - c->len, fmt, ap);
        va_end(ap);
        if ((size_t)n < c->cap - c->len) {
            c->len += (size_t)n;
            break;
        }
        c->cap = c->cap * 2 + (size_t)n;
        c->buf = realloc(c->buf, c->cap);
        if (!c->buf)
            abort();
    }
    if (c->len >= FLUSH_AT && !c->failed) {
        if (PQputCopyData(c->pg, c->buf, (int)c->len) != 1)
            c->failed = 1;
        c->len = 0;
    }
}

static int exec_ok(PGconn *pg, const char *sql, ExecStatusType want)
{
    PGresult *r = PQexec(pg, sql);
    int ok = PQresultStatus(r) == want;
    if (!ok)
        fprintf(stderr, "chatload seed --copy: %s: %s", sql, PQerrorMessage(pg));
    PQclear(r);
    return ok ? 0 : -1;
}

static int copy_begin(copy_t *c, const char *sql)
{
    c->len = 0;
    c->failed = 0;
    return exec_ok(c->pg, sql, PGRES_COPY_IN);
}

static int copy_end(copy_t *c, const char *what, double t0)
{
    if (!c->failed && c->len && PQputCopyData(c->pg, c->buf, (int)c->len) != 1)
        c->failed = 1;
    c->len = 0;
    if (PQputCopyEnd(c->pg, c->failed ? "chatload: send failed" : NULL) != 1)
        c->failed = 1;
    PGresult *r;
    int ok = !c->failed;
    while ((r = PQgetResult(c->pg))) {
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            ok = 0;
        PQclear(r);
    }
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (!ok)
        fprintf(stderr, "chatload seed --copy: COPY %s failed: %s", what, PQerrorMessage(c->pg));
    else
        fprintf(stderr, "chatload seed --copy: %s copied (%.1f s)\n", what,
                now.tv_sec + now.tv_nsec / 1e9 - t0);
    return ok ? 0 : -1;
}

/* Reserves n consecutive ids of table's serial column; the first, or -1. The
 * caller holds a lock that keeps other writers from drawing ids meanwhile. */
static long long reserve_ids(PGconn *pg, const char *table, long n)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT nextval(pg_get_serial_sequence('%s', 'id'))", table);
    PGresult *r = PQexec(pg, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "chatload seed --copy: %s", PQerrorMessage(pg));
        PQclear(r);
        return -1;
    }
    long long first = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    if (n > 1) {
        snprintf(sql, sizeof sql, "SELECT setval(pg_get_serial_sequence('%s', 'id'), %lld)", table,
                 first + n - 1);
        if (exec_ok(pg, sql, PGRES_TUPLES_OK) != 0)
            return -1;
    }
    return first;
}

/* Formats microseconds since the epoch as a timestamptz literal in UTC. */
static void fmt_ts(char out[40], long long us)
{
    time_t s = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&s, &tm);
    size_t n = strftime(out, 40, "%Y-%m-%d %H:%M:%S", &tm);
    snprintf(out + n, 40 - n, ".%06u+00", (unsigned)(us % 1000000));
}

static void token_new(char out[TOKEN_LEN + 1])
{
    unsigned char raw[32];
    if (RAND_bytes(raw, sizeof raw) != 1)
        abort();
    chat_base64_encode(out, raw, sizeof raw, CHAT_BASE64_URL);
}

static double mono(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* ---- the command --------------------------------------------------------- */

int cl_seed_copy(const cl_copy_opts_t *o)
{
    char err[512];
    if (cl_db_url_check(o->db_url, err, sizeof err) != 0) {
        fprintf(stderr, "chatload: %s\n", err);
        return 2;
    }
    cl_zipf_t z;
    if (cl_zipf_init(&z, (size_t)o->nconvs, o->zipf_s) != 0) {
        fprintf(stderr, "chatload seed: bad --zipf\n");
        return 2;
    }
    double t0 = mono();
    PGconn *pg = PQconnectdb(o->db_url);
    if (PQstatus(pg) != CONNECTION_OK) {
        fprintf(stderr, "chatload seed --copy: cannot connect: %s", PQerrorMessage(pg));
        PQfinish(pg);
        cl_zipf_dispose(&z);
        return 1;
    }
    /* libpq may have used defaults the string did not show: check what it reached */
    const char *reached = PQhost(pg);
    if (reached && !host_is_local(reached)) {
        fprintf(stderr, "chatload: refusing database host %s: not loopback\n", reached);
        PQfinish(pg);
        cl_zipf_dispose(&z);
        return 2;
    }

    /* the shape, in the order `chatload seed` draws it */
    cl_rng_t rng;
    cl_rng_init(&rng, o->seed);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    unsigned tag = (unsigned)((now.tv_sec * 1000003ULL + (unsigned long long)now.tv_nsec / 1000) ^
                              (unsigned)getpid()) &
                   0xffffff;
    cl_user_t *users = calloc((size_t)o->nusers, sizeof *users);
    cl_conv_t *convs = calloc((size_t)o->nconvs, sizeof *convs);
    long nm = o->nmsgs ? o->nmsgs : 1;
    int *mconv = malloc((size_t)nm * sizeof *mconv),
        *msender = malloc((size_t)nm * sizeof *msender);
    long *count = calloc((size_t)o->nconvs, sizeof *count),
         *last = calloc((size_t)o->nconvs, sizeof *last);
    if (!users || !convs || !mconv || !msender || !count || !last)
        abort();
    for (long i = 0; i < o->nconvs; i++)
        cl_seed_draw_members(&rng, o->nusers, o->members, &convs[i]);
    cl_seed_draw_messages(&rng, &z, convs, o->nmsgs, mconv, msender);
    for (long i = 0; i < o->nmsgs; i++) {
        count[mconv[i]]++;
        last[mconv[i]] = i;
    }
    for (long i = 0; i < o->nusers; i++) {
        users[i].token = malloc(TOKEN_LEN + 1);
        if (!users[i].token)
            abort();
        token_new(users[i].token);
    }

    /* Times: users and conversations first, then one message a millisecond,
     * the newest one second ago, so chatd's later sends are newer still. */
    long long now_us = (long long)now.tv_sec * 1000000 + now.tv_nsec / 1000;
    long long msg0_us = now_us - 1000000 - o->nmsgs * 1000LL;
    long long users_us = msg0_us - 2000000, convs_us = msg0_us - 1000000;
    char ts_users[40], ts_convs[40], ts[40];
    fmt_ts(ts_users, users_us);
    fmt_ts(ts_convs, convs_us);

    int rc = 1;
    copy_t c = {.pg = pg, .cap = FLUSH_AT * 2};
    c.buf = malloc(c.cap);
    if (!c.buf)
        abort();
    double t;
    if (exec_ok(pg, "BEGIN", PGRES_COMMAND_OK) != 0 ||
        exec_ok(pg, "SET LOCAL synchronous_commit = off", PGRES_COMMAND_OK) != 0 ||
        /* inserts wait for the seed (and the seed for them): the reserved id ranges stay ours */
        exec_ok(pg,
                "LOCK TABLE users, tokens, conversations, members, messages, events IN SHARE ROW "
                "EXCLUSIVE "
                "MODE",
                PGRES_COMMAND_OK) != 0)
        goto done;
    long long uid0 = reserve_ids(pg, "users", o->nusers),
              cid0 = reserve_ids(pg, "conversations", o->nconvs);
    long long mid0 = o->nmsgs ? reserve_ids(pg, "messages", o->nmsgs) : 0;
    if (uid0 < 0 || cid0 < 0 || mid0 < 0)
        goto done;
    for (long i = 0; i < o->nusers; i++)
        users[i].id = uid0 + i;
    for (long i = 0; i < o->nconvs; i++)
        convs[i].id = cid0 + i;

    t = mono();
    if (copy_begin(&c, "COPY users (id, name, created_at) FROM STDIN") != 0)
        goto done;
    for (long i = 0; i < o->nusers; i++)
        put(&c, "%lld\tcl%llu-%06x-u%ld\t%s\n", (long long)users[i].id, o->seed, tag, i, ts_users);
    if (copy_end(&c, "users", t) != 0)
        goto done;

    t = mono();
    if (copy_begin(&c, "COPY tokens (hash, user_id, created_at) FROM STDIN") != 0)
        goto done;
    for (long i = 0; i < o->nusers; i++) {
        unsigned char h[SHA256_DIGEST_LENGTH];
        SHA256((const unsigned char *)users[i].token, TOKEN_LEN, h);
        char hex[2 * SHA256_DIGEST_LENGTH + 1];
        for (int k = 0; k < SHA256_DIGEST_LENGTH; k++)
            snprintf(hex + 2 * k, 3, "%02x", h[k]);
        put(&c, "\\\\x%s\t%lld\t%s\n", hex, (long long)users[i].id,
            ts_users); /* bytea hex, backslash escaped */
    }
    if (copy_end(&c, "tokens", t) != 0)
        goto done;

    t = mono();
    if (copy_begin(
            &c,
            "COPY conversations (id, title, created_by, created_at, member_count, message_count, "
            "last_message_at, last_seq, rev) FROM STDIN") != 0)
        goto done;
    for (long i = 0; i < o->nconvs; i++) {
        if (count[i])
            fmt_ts(ts, msg0_us + last[i] * 1000LL);
        /* every seeded message is one "message" event: seq and rev both end at the count */
        put(&c, "%lld\tload %ld\t%lld\t%s\t%d\t%ld\t%s\t%ld\t%ld\n", (long long)convs[i].id, i,
            (long long)users[convs[i].members[0]].id, ts_convs, convs[i].nmembers, count[i],
            count[i] ? ts : "\\N", count[i], count[i]);
    }
    if (copy_end(&c, "conversations", t) != 0)
        goto done;

    t = mono();
    if (copy_begin(&c, "COPY members (conversation_id, user_id, joined_at) FROM STDIN") != 0)
        goto done;
    for (long i = 0; i < o->nconvs; i++)
        for (int k = 0; k < convs[i].nmembers; k++)
            put(&c, "%lld\t%lld\t%s\n", (long long)convs[i].id,
                (long long)users[convs[i].members[k]].id, ts_convs);
    if (copy_end(&c, "members", t) != 0)
        goto done;

    t = mono();
    if (copy_begin(&c, "COPY messages (id, conversation_id, sender_id, body, client_msg_id, "
                       "created_at, seq) FROM STDIN") != 0)
        goto done;
    /* seq numbers each conversation's messages 1, 2, 3... in id order */
    long *seq = calloc((size_t)o->nconvs + 1, sizeof *seq);
    if (!seq)
        abort();
    long long last_sec = -1;
    for (long i = 0; i < o->nmsgs; i++) {
        long long us = msg0_us + i * 1000LL;
        if (us / 1000000 != last_sec) { /* the seconds part changes once in a thousand rows */
            fmt_ts(ts, us);
            last_sec = us / 1000000;
        }
        /* ts is "YYYY-MM-DD HH:MM:SS.uuuuuu+00": rewrite the microseconds only */
        snprintf(ts + 20, sizeof ts - 20, "%06u+00", (unsigned)(us % 1000000));
        put(&c, "%lld\t%lld\t%lld\tseed message %ld of run %06x\t\\N\t%s\t%ld\n", mid0 + i,
            (long long)convs[mconv[i]].id, (long long)users[msender[i]].id, i, tag, ts,
            ++seq[mconv[i]]);
        if ((i + 1) % 200000 == 0)
            fprintf(stderr, "chatload seed --copy: %ld/%ld messages\n", i + 1, o->nmsgs);
    }
    if (copy_end(&c, "messages", t) != 0) {
        free(seq);
        goto done;
    }
    t = mono();
    if (copy_begin(&c, "COPY events (conversation_id, rev, type, message_id) FROM STDIN") != 0) {
        free(seq);
        goto done;
    }
    memset(seq, 0, ((size_t)o->nconvs + 1) * sizeof *seq);
    for (long i = 0; i < o->nmsgs; i++)
        put(&c, "%lld\t%ld\t1\t%lld\n", (long long)convs[mconv[i]].id, ++seq[mconv[i]], mid0 + i);
    free(seq);
    if (copy_end(&c, "events", t) != 0)
        goto done;
    if (exec_ok(pg, "COMMIT", PGRES_COMMAND_OK) != 0)
        goto done;

    /* statistics and hint bits now, not during the first minutes of a benchmark */
    t = mono();
    if (exec_ok(pg, "VACUUM (ANALYZE) users, tokens, conversations, members, messages, events",
                PGRES_COMMAND_OK) != 0)
        goto done;
    fprintf(stderr, "chatload seed --copy: VACUUM ANALYZE (%.1f s)\n", mono() - t);

    json_t *root = json_object(), *ju = json_array(), *jc = json_array();
    for (long i = 0; i < o->nusers; i++)
        json_array_append_new(
            ju, json_pack("{s:I,s:s}", "id", (json_int_t)users[i].id, "token", users[i].token));
    for (long i = 0; i < o->nconvs; i++) {
        json_t *m = json_array();
        for (int k = 0; k < convs[i].nmembers; k++)
            json_array_append_new(m, json_integer(convs[i].members[k]));
        json_array_append_new(jc, json_pack("{s:I,s:o,s:I}", "id", (json_int_t)convs[i].id,
                                            "members", m, "messages", (json_int_t)count[i]));
    }
    json_object_set_new(root, "seed", json_integer((json_int_t)o->seed));
    json_object_set_new(root, "method", json_string("copy"));
    json_object_set_new(root, "messages", json_integer(o->nmsgs));
    json_object_set_new(root, "zipf", json_real(o->zipf_s));
    json_object_set_new(root, "users", ju);
    json_object_set_new(root, "conversations", jc);
    if (json_dump_file(root, o->out, JSON_COMPACT) != 0) {
        fprintf(stderr, "chatload seed --copy: cannot write %s\n", o->out);
    } else {
        fprintf(
            stderr,
            "chatload seed --copy: %ld users, %ld conversations, %ld messages in %.1f s -> %s\n",
            o->nusers, o->nconvs, o->nmsgs, mono() - t0, o->out);
        rc = 0;
    }
    json_decref(root);

done:
    free(c.buf);
    PQfinish(pg); /* an open transaction rolls back */
    for (long i = 0; i < o->nusers; i++)
        free(users[i].token);
    for (long i = 0; i < o->nconvs; i++)
        free(convs[i].members);
    free(users);
    free(convs);
    free(mconv);
    free(msender);
    free(count);
    free(last);
    cl_zipf_dispose(&z);
    return rc;
}
