/*
 * Rate limits over Redis with a local fallback (see ratelimit.h). A check is
 * one EVALSHA of the GCRA script on the worker's own Redis connection, under
 * that connection's deadline; when Redis has lost the script (NOSCRIPT,
 * after a restart or SCRIPT FLUSH) the check is sent once more as EVAL,
 * which loads it, unless its deadline has passed. Whatever the Redis
 * outcome, the caller has its answer by the deadline: a check resent as
 * EVAL is answered locally when its deadline passes first.
 */
#include "api/ratelimit.h"

#include "core/gcra.h"
#include "core/list.h"
#include "core/log.h"
#include "core/metrics.h"
#include "redis/client.h"

#include <hiredis/hiredis.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * KEYS[1] the subject's key; ARGV[1] the emission interval T, ARGV[2] the
 * tolerance BURST * T, both in microseconds. Time is Redis' own clock, the
 * same for every instance. The key holds the TAT (microseconds) and expires
 * when the TAT passes, when it would mean nothing any more: a key never
 * lives longer than BURST * T. Returns {1, 0} when the event conforms (and
 * is counted), {0, microseconds to wait} when it does not (nothing stored).
 */
static const char gcra_script[] = "local t = redis.call('TIME') "
                                  "local now = tonumber(t[1]) * 1000000 + tonumber(t[2]) "
                                  "local tat = tonumber(redis.call('GET', KEYS[1])) "
                                  "if not tat or tat < now then tat = now end "
                                  "local new = tat + tonumber(ARGV[1]) "
                                  "local wait = new - tonumber(ARGV[2]) - now "
                                  "if wait > 0 then return {0, wait} end "
                                  "redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX', "
                                  "  math.ceil((new - now) / 1000)) "
                                  "return {1, 0}";

static const char *const names[CHAT_RATE_NLIMITS] = {"send", "request", "signup"};
static const char *const key_parts[CHAT_RATE_NLIMITS] = {"send", "req", "signup"};

struct chat_ratelimit_shared {
    bool on[CHAT_RATE_NLIMITS];
    chat_gcra_t gcra[CHAT_RATE_NLIMITS];
    char interval[CHAT_RATE_NLIMITS][24]; /* ARGV[1] and ARGV[2] of the script */
    char tolerance[CHAT_RATE_NLIMITS][24];
    char sha[41]; /* SHA-1 of the script, hex: EVALSHA's argument */
    chat_gcra_table_t *local;
    chat_metric_t *limited[CHAT_RATE_NLIMITS];
    chat_metric_t *local_checks;
};

/*
 * Who holds a check: the Redis client while its EVALSHA or EVAL is out (its
 * callback frees it). A check resent as EVAL is also in rl->retrying until
 * it is answered, by its reply or by the timer at its deadline (cb is then
 * NULL, and the reply, when it comes, only frees it).
 */
typedef struct check {
    chat_list_t link; /* rl->retrying */
    chat_ratelimit_t *rl;
    chat_rate_limit_t which;
    uint64_t deadline_ms; /* uv_hrtime's clock */
    chat_ratelimit_cb cb; /* NULL once answered */
    void *arg;
    int resent;
    char key[CHAT_GCRA_KEY_MAX];
} check_t;

struct chat_ratelimit {
    uv_loop_t *loop;
    chat_ratelimit_shared_t *sh;
    chat_redis_t *redis; /* NULL: local only */
    int timeout_ms;
    chat_list_t retrying; /* checks resent as EVAL, oldest deadline first */
    uv_timer_t timer;     /* the deadline of the first of them */
    int handles;          /* the timer and the Redis client, until closed */
    int closing;
    int warned; /* an unexpected reply was logged; cleared by the next count */
    void (*close_cb)(void *arg);
    void *close_arg;
};

const char *chat_ratelimit_name(chat_rate_limit_t which)
{
    return names[which];
}

void chat_ratelimit_key(chat_rate_limit_t which, const char *subject, char *out, size_t cap)
{
    snprintf(out, cap, "rate:%s:{%s}", key_parts[which], subject);
}

static uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000u;
}

/* ---- the shared part ---- */

chat_ratelimit_shared_t *chat_ratelimit_shared_create(const chat_config_t *cfg)
{
    chat_ratelimit_shared_t *sh = chat_calloc(1, sizeof *sh);
    const chat_config_rate_t *rates[CHAT_RATE_NLIMITS] = {&cfg->rate_send, &cfg->rate_request,
                                                          &cfg->rate_signup};
    chat_metric_family_t *fam = chat_metrics_counter(
        "chatd_rate_limited_total", "Requests and stream sends refused by a rate limit.");
    for (int i = 0; i < CHAT_RATE_NLIMITS; i++) {
        const chat_config_rate_t *r = rates[i];
        sh->on[i] = r->rate > 0;
        if (sh->on[i]) {
            sh->gcra[i] = chat_gcra_make(r->rate, r->period_s, r->burst);
            snprintf(sh->interval[i], sizeof sh->interval[i], "%lld",
                     (long long)sh->gcra[i].interval_us);
            snprintf(sh->tolerance[i], sizeof sh->tolerance[i], "%lld",
                     (long long)sh->gcra[i].tolerance_us);
        }
        char labels[32];
        snprintf(labels, sizeof labels, "limit=\"%s\"", names[i]);
        sh->limited[i] = chat_metric_series(fam, labels);
    }
    sh->local_checks = chat_metric_counter(
        "chatd_rate_local_checks_total",
        "Rate-limit checks this process decided alone: Redis unreachable, late or not configured.");
    sh->local = chat_gcra_table_create(CHAT_RATELIMIT_LOCAL_KEYS);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (!EVP_Digest(gcra_script, strlen(gcra_script), md, &n, EVP_sha1(), NULL) || n != 20)
        n = 0; /* no SHA-1: every EVALSHA gets NOSCRIPT and the EVAL is sent */
    for (unsigned int i = 0; i < 20; i++)
        snprintf(sh->sha + 2 * i, 3, "%02x", i < n ? md[i] : 0);
    return sh;
}

void chat_ratelimit_shared_destroy(chat_ratelimit_shared_t *sh)
{
    if (!sh)
        return;
    chat_gcra_table_destroy(sh->local);
    free(sh);
}

/* Hands the answer over; a refusal is counted. */
static void deliver(chat_ratelimit_shared_t *sh, chat_rate_limit_t which, int retry_after_s,
                    chat_ratelimit_cb cb, void *arg)
{
    if (retry_after_s > 0)
        chat_metric_inc(sh->limited[which]);
    cb(retry_after_s, arg);
}

/* The process decides alone, on the monotonic clock. */
static void answer_local(chat_ratelimit_shared_t *sh, chat_rate_limit_t which, const char *key,
                         chat_ratelimit_cb cb, void *arg)
{
    int64_t now_us = (int64_t)(uv_hrtime() / 1000u);
    int64_t wait = chat_gcra_table_update(sh->local, &sh->gcra[which], key, now_us);
    chat_metric_inc(sh->local_checks);
    deliver(sh, which, wait > 0 ? chat_gcra_retry_after_s(wait) : 0, cb, arg);
}

/* ---- a worker's limiter ---- */

chat_ratelimit_t *chat_ratelimit_create(uv_loop_t *loop, const chat_ratelimit_config_t *cfg)
{
    chat_ratelimit_t *rl = chat_calloc(1, sizeof *rl);
    rl->loop = loop;
    rl->sh = cfg->shared;
    rl->timeout_ms = cfg->cmd_timeout_ms > 0 ? cfg->cmd_timeout_ms : 50;
    chat_list_init(&rl->retrying);
    uv_timer_init(loop, &rl->timer);
    rl->timer.data = rl;
    rl->handles = 1;
    bool any = false;
    for (int i = 0; i < CHAT_RATE_NLIMITS; i++)
        any = any || rl->sh->on[i];
    if (any && cfg->redis_url) {
        chat_redis_config_t rc = {
            .url = cfg->redis_url,
            .cmd_timeout_ms = rl->timeout_ms,
            .connect_timeout_ms = 200,
            .retry_interval_ms = 500,
            .max_pending = 20000,
        };
        char err[256];
        rl->redis = chat_redis_create(loop, &rc, err, sizeof err);
        if (rl->redis)
            rl->handles++;
        else
            chat_log_error("event=rate_limits_local_only reason=\"%s\"", err);
    }
    return rl;
}

bool chat_ratelimit_on(const chat_ratelimit_t *rl, chat_rate_limit_t which)
{
    return rl->sh->on[which];
}

/* Answers c: with retry_after_s from Redis, or locally when local is set. */
static void finish(check_t *c, int retry_after_s, int local)
{
    chat_ratelimit_cb cb = c->cb;
    c->cb = NULL;
    chat_list_remove(&c->link);
    if (local)
        answer_local(c->rl->sh, c->which, c->key, cb, c->arg);
    else
        deliver(c->rl->sh, c->which, retry_after_s, cb, c->arg);
}

static void timer_cb(uv_timer_t *t);

/* The timer at the deadline of the first check resent as EVAL (none: stopped). */
static void arm_timer(chat_ratelimit_t *rl)
{
    chat_list_t *e = chat_list_first(&rl->retrying);
    if (!e || rl->closing) {
        uv_timer_stop(&rl->timer);
        return;
    }
    const check_t *c = CHAT_CONTAINER_OF(e, check_t, link);
    uint64_t now = now_ms();
    uv_timer_start(&rl->timer, timer_cb, c->deadline_ms > now ? c->deadline_ms - now : 0, 0);
}

/* Checks resent as EVAL whose deadline passed are answered locally. */
static void timer_cb(uv_timer_t *t)
{
    chat_ratelimit_t *rl = t->data;
    uint64_t now = now_ms();
    chat_list_t *e;
    while ((e = chat_list_first(&rl->retrying)) != NULL) {
        check_t *c = CHAT_CONTAINER_OF(e, check_t, link);
        if (c->deadline_ms > now)
            break;
        finish(c, 0, 1);
    }
    arm_timer(rl);
}

static int send_script(check_t *c, int full);

int chat_ratelimit_reply_parse(const redisReply *r, long long *wait_us)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_INTEGER || r->element[1]->type != REDIS_REPLY_INTEGER)
        return -1;
    *wait_us = r->element[1]->integer;
    return r->element[0]->integer == 1 ? 1 : 0;
}

static void script_cb(chat_err_t status, redisReply *reply, void *arg)
{
    check_t *c = arg;
    chat_ratelimit_t *rl = c->rl;
    if (!c->cb) { /* answered at its deadline */
        free(c);
        return;
    }
    long long wait_us = 0;
    int allowed = status == CHAT_EOK ? chat_ratelimit_reply_parse(reply, &wait_us) : -1;
    if (allowed >= 0) {
        rl->warned = 0;
        finish(c, allowed ? 0 : chat_gcra_retry_after_s(wait_us), 0);
    } else if (status == CHAT_EREPLY && reply && reply->str &&
               !strncmp(reply->str, "NOSCRIPT", 8) && !c->resent && !rl->closing &&
               now_ms() < c->deadline_ms && send_script(c, 1) == 0) {
        /* Redis lost the script: EVAL loads it; the timer keeps the deadline. */
        c->resent = 1;
        int first = chat_list_empty(&rl->retrying);
        chat_list_insert_tail(&rl->retrying, &c->link);
        if (first)
            arm_timer(rl);
        return;
    } else {
        /* Redis answered, but not with a count (an OOM error, ...): said once until it does. */
        if ((status == CHAT_EREPLY || status == CHAT_EOK) && !rl->warned) {
            rl->warned = 1;
            chat_log_warn("event=rate_limit_local reason=\"%.80s\"",
                          status == CHAT_EREPLY && reply && reply->str ? reply->str
                                                                       : "unexpected reply");
        }
        finish(c, 0, 1);
    }
    int resent = c->resent;
    free(c);
    if (resent)
        arm_timer(rl); /* for the next deadline, or stopped */
}

/* EVALSHA (full 0) or EVAL (full 1) of the script for c. 0, or CHAT_EDOWN (nothing sent). */
static int send_script(check_t *c, int full)
{
    const chat_ratelimit_shared_t *sh = c->rl->sh;
    const char *argv[] = {full ? "EVAL" : "EVALSHA", full ? gcra_script : sh->sha, "1", c->key,
                          sh->interval[c->which],    sh->tolerance[c->which]};
    return chat_redis_command(c->rl->redis, script_cb, c, (int)CHAT_ARRAY_LEN(argv), argv, NULL);
}

void chat_ratelimit_check(chat_ratelimit_t *rl, chat_rate_limit_t which, const char *subject,
                          chat_ratelimit_cb cb, void *arg)
{
    chat_ratelimit_shared_t *sh = rl->sh;
    if (!sh->on[which]) {
        cb(0, arg);
        return;
    }
    char key[CHAT_GCRA_KEY_MAX];
    chat_ratelimit_key(which, subject, key, sizeof key);
    if (!rl->redis || rl->closing || !chat_redis_healthy(rl->redis)) {
        answer_local(sh, which, key, cb, arg);
        return;
    }
    check_t *c = chat_calloc(1, sizeof *c);
    chat_list_init(&c->link);
    c->rl = rl;
    c->which = which;
    c->deadline_ms = now_ms() + (uint64_t)rl->timeout_ms;
    c->cb = cb;
    c->arg = arg;
    memcpy(c->key, key, sizeof key);
    if (send_script(c, 0) != 0) {
        free(c);
        answer_local(sh, which, key, cb, arg);
    }
}

/* ---- closing ---- */

/* One of the timer and the Redis client is closed; the last frees rl. */
static void release(chat_ratelimit_t *rl)
{
    if (--rl->handles > 0)
        return;
    void (*cb)(void *) = rl->close_cb;
    void *arg = rl->close_arg;
    free(rl);
    if (cb)
        cb(arg);
}

static void timer_closed(uv_handle_t *h)
{
    release(h->data);
}

static void redis_closed(void *arg)
{
    chat_ratelimit_t *rl = arg;
    rl->redis = NULL;
    release(rl);
}

void chat_ratelimit_close(chat_ratelimit_t *rl, void (*cb)(void *arg), void *arg)
{
    rl->closing = 1;
    rl->close_cb = cb;
    rl->close_arg = arg;
    /* Every check still out is answered (locally) by its callback before this returns. */
    if (rl->redis)
        chat_redis_close(rl->redis, redis_closed, rl);
    uv_close((uv_handle_t *)&rl->timer, timer_closed);
}
