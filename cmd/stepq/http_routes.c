/*
 * http_routes.c - the handlers of `stepq serve`: each turns one parsed
 * request into library calls on the thread's handle and one answer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

/* Answers with the library's error, mapped to an HTTP status. */
static void answer_lib_error(struct http_answer *ans, stepq *q)
{
    http_answer_error(ans, http_status_of(stepq_err(q)), "%s", stepq_errstr(q));
}

/* Answers with a JSON text the library returned (freed here), or with
 * {key: value} when key is not NULL. */
static void answer_lib_json(struct http_answer *ans, int status, char *json, const char *key)
{
    json_t *v = json_loads(json, JSON_DECODE_ANY, NULL);

    stepq_str_free(json);
    if (v != NULL && key != NULL)
        v = json_pack("{s:o}", key, v);
    http_answer_json(ans, status, v);
}

/* ---------------------------------------------------------------------------
 * POST /steps: the body is one JSON object.
 * ------------------------------------------------------------------------- */

/* Checks that the text nests at most `max` levels; on failure writes where
 * it went too deep (1-based line and column, as jansson reports them). */
static int depth_ok(const char *s, size_t n, int max, int *line, int *col)
{
    int depth = 0, in_str = 0;

    *line = 1;
    *col = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        (*col)++;
        if (c == '\n') {
            (*line)++;
            *col = 0;
        } else if (in_str) {
            if (c == '\\')
                i++, (*col)++;
            else if (c == '"')
                in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '[' || c == '{') {
            if (++depth > max)
                return 0;
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return 1;
}

static const char submit_fields[] = "type, priority, requires, payload and max_attempts";

/* `requires` may be "a,b" or ["a", "b"]; returns a malloc'd list or NULL. */
static char *requires_list(const json_t *v, struct http_answer *ans)
{
    size_t i, len = 0;
    json_t *e;
    char *out;

    if (json_is_string(v))
        return strdup(json_string_value(v));
    if (!json_is_array(v))
        goto bad;
    json_array_foreach(v, i, e)
    {
        if (!json_is_string(e))
            goto bad;
        len += json_string_length(e) + 1;
    }
    out = calloc(1, len + 1);
    if (out == NULL)
        return NULL;
    len = 0;
    json_array_foreach(v, i, e)
    {
        if (i > 0)
            out[len++] = ',';
        memcpy(out + len, json_string_value(e), json_string_length(e));
        len += json_string_length(e);
    }
    return out;
bad:
    http_answer_error(ans, 400, "field 'requires' must be a string \"a,b\" or an array of strings");
    return NULL;
}

/* Fills o from the body object; returns 0, or -1 with ans set. The strings
 * in o point into obj; *payload and *reqs are malloc'd (free them). */
static int submit_opts(json_t *obj, stepq_submit_opts *o, char **payload, char **reqs,
                       struct http_answer *ans)
{
    const char *k;
    json_t *v;

    json_object_foreach(obj, k, v)
    {
        if (strcmp(k, "type") == 0 && json_is_string(v)) {
            o->type = json_string_value(v);
        } else if (strcmp(k, "priority") == 0 && json_is_integer(v)) {
            json_int_t p = json_integer_value(v);
            if (p < 0 || p > 1000000) {
                http_answer_error(ans, 400,
                                  "invalid priority %lld; use 0 to 1000000 (higher runs first)",
                                  (long long)p);
                return -1;
            }
            o->priority = (long)p;
        } else if (strcmp(k, "max_attempts") == 0 && json_is_integer(v)) {
            json_int_t m = json_integer_value(v);
            if (m < 1 || m > 1000) {
                http_answer_error(ans, 400, "invalid max_attempts %lld; use 1 to 1000",
                                  (long long)m);
                return -1;
            }
            o->max_attempts = (long)m;
        } else if (strcmp(k, "requires") == 0) {
            if ((*reqs = requires_list(v, ans)) == NULL)
                return -1;
            o->requires = *reqs;
        } else if (strcmp(k, "payload") == 0) {
            *payload = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
            o->payload = *payload;
        } else if (strcmp(k, "type") == 0 || strcmp(k, "priority") == 0 ||
                   strcmp(k, "max_attempts") == 0) {
            http_answer_error(ans, 400, "field '%s' must be a %s", k,
                              strcmp(k, "type") == 0 ? "string" : "whole number");
            return -1;
        } else {
            http_answer_error(ans, 400, "unknown field '%.64s'; a step takes %s", k, submit_fields);
            return -1;
        }
    }
    return 0;
}

static void route_submit(stepq *q, struct http_req *req, struct http_answer *ans)
{
    stepq_submit_opts o = {0};
    char *payload = NULL, *reqs = NULL, id[STEPQ_ID_MAX];
    json_error_t e;
    json_t *obj;
    int line, col;

    if (!depth_ok(req->body ? req->body : "", req->len, HTTP_JSON_DEPTH_MAX, &line, &col)) {
        http_answer_error(ans, 400,
                          "invalid JSON at line %d, column %d: nested deeper than %d levels; "
                          "flatten the payload",
                          line, col, HTTP_JSON_DEPTH_MAX);
        return;
    }
    obj = json_loadb(req->body ? req->body : "", req->len, JSON_REJECT_DUPLICATES, &e);
    if (obj == NULL) {
        http_answer_error(ans, 400, "invalid JSON at line %d, column %d: %s; send one JSON object",
                          e.line, e.column, e.text);
        return;
    }
    if (!json_is_object(obj)) {
        http_answer_error(ans, 400, "the body must be a JSON object with %s", submit_fields);
    } else if (submit_opts(obj, &o, &payload, &reqs, ans) == 0) {
        if (stepq_submit(q, &o, id) != STEPQ_OK) {
            answer_lib_error(ans, q);
        } else {
            snprintf(ans->location, sizeof(ans->location), "/steps/%s", id);
            http_answer_json(ans, 201, json_pack("{s:s}", "id", id));
        }
    }
    free(payload);
    free(reqs);
    json_decref(obj);
}

/* ---------------------------------------------------------------------------
 * The other routes
 * ------------------------------------------------------------------------- */

static void route_get(stepq *q, struct http_req *req, struct http_answer *ans)
{
    char *json;

    if (stepq_get(q, req->route.step_id, &json) != STEPQ_OK)
        answer_lib_error(ans, q);
    else
        answer_lib_json(ans, 200, json, NULL);
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

static void route_workers(stepq *q, struct http_answer *ans)
{
    char *json;

    if (stepq_workers(q, &json) != STEPQ_OK)
        answer_lib_error(ans, q);
    else
        answer_lib_json(ans, 200, json, "workers");
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
    http_answer_json(ans, 200,
                     json_pack("{s:s, s:s, s:s, s:s}", "status", "ok", "redis", "up", "phase",
                               stepq_phase_name(ph), "pin",
                               pin >= 0 ? stepq_phase_name((stepq_phase)pin) : "none"));
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
        route_workers(q, ans);
        break;
    case HTTP_OP_HEALTH:
        route_health(q, ans);
        break;
    case HTTP_OP_HEALTH_MIGRATION:
        st = http_health_migration(s, q, &doc);
        http_answer_json(ans, st, doc);
        break;
    case HTTP_OP_METRICS:
        route_metrics(s, q, ans);
        break;
    default:
        http_answer_error(ans, 404, "no such endpoint; see docs/http.md");
        break;
    }
}
