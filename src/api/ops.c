/*
 * Operations endpoints: liveness, readiness and the Prometheus exposition.
 */
#include "api/internal.h"
#include "cache/cache.h"
#include "core/alloc.h"
#include "core/drain.h"
#include "core/metrics.h"

#include <stdlib.h>
#include <string.h>

void chat_h_healthz(chat_call_t *call)
{
    static const char body[] = "{\"status\":\"ok\"}";
    chat_http_request_t *req = call->req;
    free(call);
    req->data = NULL;
    chat_http_respond(req, 200, NULL, body, sizeof body - 1);
}

void chat_h_readyz(chat_call_t *call)
{
    int db_up = chat_db_healthy(call->api->ctx->db);
    int draining = chat_drain_active();
    const char *cache = chat_cache_state(call->api->ctx->cache);
    const char *status = draining                ? "draining"
                         : !db_up                ? "unavailable"
                         : strcmp(cache, "down") ? "ready"
                                                 : "degraded";
    chat_buf_t b = CHAT_BUF_INIT;
    chat_buf_printf(&b, "{\"status\":\"%s\",\"db\":\"%s\",\"cache\":\"%s\"}", status,
                    db_up ? "up" : "down", cache);
    size_t len;
    char *body = chat_buf_steal(&b, &len);
    chat_call_ok(call, db_up && !draining ? 200 : 503, body, len);
}

void chat_h_metrics(chat_call_t *call)
{
    chat_buf_t b = CHAT_BUF_INIT;
    chat_metrics_render(&b);
    size_t len;
    char *body = chat_buf_steal(&b, &len);
    chat_http_request_t *req = call->req;
    free(call);
    req->data = NULL;
    chat_http_respond_owned(req, 200, "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n",
                            body, len);
}

static char *cache_metrics_body(chat_api_t *api, size_t *len)
{
    chat_cache_totals_t t;
    /* ENABLE_REDIS_CACHE=false (no cache): reported as bypassed. */
    chat_cache_shared_totals(api->cache_shared, api->ctx->cache, &t);
    double lookups = t.hits + t.misses;
    chat_buf_t b = CHAT_BUF_INIT;
    chat_buf_printf(&b,
                    "{\"hits\":%.0f,\"misses\":%.0f,\"hit_ratio\":%.6f,\"evictions\":%.0f,"
                    "\"errors\":%.0f,\"bypass\":%s,\"healthy\":%s}",
                    t.hits, t.misses, lookups > 0 ? t.hits / lookups : 0.0, t.evictions, t.errors,
                    t.bypass ? "true" : "false", t.healthy ? "true" : "false");
    return chat_buf_steal(&b, len);
}

void chat_h_cache_metrics(chat_call_t *call)
{
    size_t len;
    char *body = cache_metrics_body(call->api, &len);
    chat_call_ok(call, 200, body, len);
}

void chat_h_cache_bypass(chat_call_t *call)
{
    chat_api_body_t b;
    if (chat_call_body(call, CHAT_API_BODY_BYPASS, &b) < 0)
        return;
    chat_cache_shared_set_bypass(call->api->cache_shared, b.enabled);
    chat_api_body_dispose(&b);
    size_t len;
    char *body = cache_metrics_body(call->api, &len);
    chat_call_ok(call, 200, body, len);
}

static void deleted_cb(long long n, void *arg)
{
    chat_call_t *call = arg;
    if (n < 0) {
        chat_call_fail(call, CHAT_EUNAVAILABLE, "the cache is unavailable");
        return;
    }
    chat_buf_t b = CHAT_BUF_INIT;
    chat_buf_printf(&b, "{\"deleted\":%lld}", n);
    size_t len;
    char *body = chat_buf_steal(&b, &len);
    chat_call_ok(call, 200, body, len);
}

void chat_h_cache_keys_delete(chat_call_t *call)
{
    char pattern[512];
    const char *why = NULL;
    if (chat_api_query_string(call->req->query, call->req->query_len, "pattern", pattern,
                              sizeof pattern, &why) <= 0) {
        chat_call_fail(call, CHAT_EBADREQUEST, why ? why : "pattern is required");
        return;
    }
    if (!call->api->ctx->cache) {
        chat_call_fail(call, CHAT_EUNAVAILABLE, "the cache is disabled");
        return;
    }
    chat_cache_delete_pattern(call->api->ctx->cache, pattern, deleted_cb, call);
}
