/*
 * http_routes.c - the handlers of `stepq serve`: each turns one parsed
 * request into library calls on the thread's handle and one answer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "http_console.h"
#include "step_decode.h"

_Static_assert(HTTP_JSON_DEPTH_MAX == STEP_JSON_DEPTH_MAX, "one depth cap for POST /steps");

/* Answers with the library's error, mapped to an HTTP status. */
static void answer_lib_error(struct http_answer *ans, stepq *q)
{
    http_answer_error(ans, http_status_of(stepq_err(q)), "%s", stepq_errstr(q));
}

/* ---------------------------------------------------------------------------
 * POST /steps: the body is one JSON object (decoded by step_decode.c).
 * ------------------------------------------------------------------------- */

/* The path prefix of the request's queue into buf: "" on the old paths,
 * else /q/ and the namespace percent-encoded (all but A-Z a-z 0-9 - . _ ~ :). */
static void queue_prefix(const struct http_req *req, char *buf, size_t len)
{
    size_t n = 0;

    buf[0] = '\0';
    if (!req->route.has_ns || len < 8)
        return;
    n = (size_t)snprintf(buf, len, "/q/");
    for (const unsigned char *p = (const unsigned char *)req->route.ns; *p && n + 4 < len; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            strchr("-._~:", *p) != NULL)
            buf[n++] = (char)*p;
        else
            n += (size_t)snprintf(buf + n, len - n, "%%%02X", *p);
    }
    buf[n] = '\0';
}

static void route_submit(stepq *q, struct http_req *req, struct http_answer *ans)
{
    struct step_decoded d;
    char err[512], id[STEPQ_ID_MAX];

    if (stepq__step_decode(req->body, req->len, &d, err, sizeof(err)) != STEPQ_OK) {
        http_answer_error(ans, 400, "%s", err);
        return;
    }
    if (stepq_submit(q, &d.opts, id) != STEPQ_OK) {
        answer_lib_error(ans, q);
    } else {
        char prefix[200];
        queue_prefix(req, prefix, sizeof(prefix));
        snprintf(ans->location, sizeof(ans->location), "%s/steps/%s", prefix, id);
        http_answer_json(ans, 201, json_pack("{s:s}", "id", id));
    }
    stepq__step_decoded_release(&d);
}

/* ---------------------------------------------------------------------------
 * The other routes
 * ------------------------------------------------------------------------- */

/* A claim token lets its holder complete or fail the step: only a request
 * that carried the API token sees it. */
static void route_get(stepq *q, struct http_req *req, struct http_answer *ans)
{
    char *json;
    json_t *v;

    if (stepq_get(q, req->route.step_id, &json) != STEPQ_OK) {
        answer_lib_error(ans, q);
        return;
    }
    v = json_loads(json, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    stepq_str_free(json);
    if (v != NULL && !req->authed)
        json_object_del(v, "token");
    http_answer_json(ans, 200, v);
}

static void route_list(stepq *q, struct http_req *req, struct http_answer *ans)
{
    char *json;
    json_t *ids;

    if (stepq_list(q, req->route.state, req->route.limit, &json) != STEPQ_OK) {
        answer_lib_error(ans, q);
        return;
    }
    ids = json_loads(json, 0, NULL);
    stepq_str_free(json);
    http_answer_json(ans, 200,
                     ids ? json_pack("{s:s, s:I, s:o}", "state", req->route.state, "limit",
                                     (json_int_t)req->route.limit, "ids", ids)
                         : NULL);
}

static void route_cancel(stepq *q, struct http_req *req, struct http_answer *ans)
{
    if (stepq_cancel(q, req->route.step_id) != STEPQ_OK)
        answer_lib_error(ans, q);
    else
        http_answer_json(ans, 200,
                         json_pack("{s:s, s:b}", "id", req->route.step_id, "cancelled", 1));
}

/* A worker's instance token proves its registration: hidden likewise. */
static void route_workers(stepq *q, struct http_req *req, struct http_answer *ans)
{
    char *json;
    json_t *a, *w;
    size_t i;

    if (stepq_workers(q, &json) != STEPQ_OK) {
        answer_lib_error(ans, q);
        return;
    }
    a = json_loads(json, 0, NULL);
    stepq_str_free(json);
    json_array_foreach(a, i, w)
    {
        if (!req->authed)
            json_object_del(w, "instance");
    }
    http_answer_json(ans, 200, a ? json_pack("{s:o}", "workers", a) : NULL);
}

/* GET /health: Redis answers a PING, and the stored phase reads. */
static void route_health(stepq *q, struct http_answer *ans)
{
    stepq_phase ph;

    if (stepq_ping(q) != STEPQ_OK || stepq_phase_get(q, &ph) != STEPQ_OK) {
        http_answer_json(ans, 503,
                         json_pack("{s:s, s:s, s:s}", "status", "unavailable", "redis", "down",
                                   "error", stepq_errstr(q)));
        return;
    }
    int pin = stepq_phase_pin(q);
    http_answer_json(
        ans, 200,
        json_pack("{s:s, s:s, s:s, s:o}", "status", "ok", "redis", "up", "phase",
                  stepq_phase_name(ph), "pin",
                  pin >= 0 ? json_string(stepq_phase_name((stepq_phase)pin)) : json_null()));
}

static void route_metrics(struct http_server *s, stepq *q, struct http_answer *ans)
{
    char *text = NULL;

    if (http_metrics_render(s, q, &text) != STEPQ_OK) {
        http_answer_error(ans, 500, "out of memory; retry later");
        return;
    }
    ans->status = 200;
    ans->body = text;
    ans->content_type = "text/plain; version=0.0.4; charset=utf-8";
}

void http_dispatch(struct http_server *s, stepq *q, struct http_req *req, struct http_answer *ans)
{
    json_t *doc = NULL;
    int st;

    if (q == NULL) {
        http_answer_error(ans, 500, "out of memory; retry later");
        return;
    }
    switch (req->route.op) {
    case HTTP_OP_SUBMIT:
        route_submit(q, req, ans);
        break;
    case HTTP_OP_LIST:
        route_list(q, req, ans);
        break;
    case HTTP_OP_GET:
        route_get(q, req, ans);
        break;
    case HTTP_OP_CANCEL:
        route_cancel(q, req, ans);
        break;
    case HTTP_OP_WORKERS:
        route_workers(q, req, ans);
        break;
    case HTTP_OP_HEALTH:
        route_health(q, ans);
        break;
    case HTTP_OP_HEALTH_MIGRATION:
        st = http_health_migration(s, req->ns, q, &doc);
        http_answer_json(ans, st, doc);
        break;
    case HTTP_OP_METRICS:
        route_metrics(s, q, ans);
        break;
    case HTTP_OP_ASSET:
        http_console_asset(req, ans);
        break;
    case HTTP_OP_CONSOLE:
        http_console_feed(s, q, ans);
        break;
    case HTTP_OP_PHASE:
        http_console_phase(q, req, ans);
        break;
    case HTTP_OP_THROTTLE:
        http_console_throttle(q, req, ans);
        break;
    default:
        http_answer_error(ans, 404, "no such endpoint; see docs/http.md");
        break;
    }
}
