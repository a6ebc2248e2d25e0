/*
 * Operations endpoints: liveness, readiness and the Prometheus exposition.
 */
#include "api/internal.h"
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
    int db_up = chat_db_pool_healthy(call->api->ctx->db);
    /* The cache layer is not part of this build: reads always go to the database. */
    const char *cache = "bypassed";
    chat_buf_t b = CHAT_BUF_INIT;
    chat_buf_printf(&b, "{\"status\":\"%s\",\"db\":\"%s\",\"cache\":\"%s\"}",
                    db_up ? "ready" : "unavailable", db_up ? "up" : "down", cache);
    size_t len;
    char *body = chat_buf_steal(&b, &len);
    chat_call_ok(call, db_up ? 200 : 503, body, len);
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
