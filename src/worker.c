/*
 * worker.c - worker registration, heartbeats and the reaper.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <jansson.h>

#include "stepq_private.h"

#define RETENTION_MS "604800000"

int stepq_worker_register(stepq *q, const char *worker, const char *const *caps, size_t ncaps,
                          long ttl_ms)
{
    char capbuf[4096] = "", ttl[24], pid[24], host[256] = "";
    size_t used = 0;

    stepq__clear_error(q);
    if (!stepq__valid_id(worker)) {
        stepq__set_error(q, STEPQ_E_INVALID,
                         "invalid worker id '%.64s'; use 1 to 63 characters of A-Z a-z 0-9 _ . -",
                         worker ? worker : "");
        return STEPQ_ERR;
    }
    for (size_t i = 0; i < ncaps; i++) {
        size_t l = strlen(caps[i]);
        if (!stepq__valid_id(caps[i]) || used + l + 2 > sizeof(capbuf)) {
            stepq__set_error(q, STEPQ_E_INVALID, "invalid capability '%.64s'", caps[i]);
            return STEPQ_ERR;
        }
        used += (size_t)snprintf(capbuf + used, sizeof(capbuf) - used, "%s%s", used ? "," : "",
                                 caps[i]);
    }
    if (ttl_ms < 100) {
        stepq__set_error(q, STEPQ_E_INVALID, "heartbeat ttl %ld ms is too short; use 100 or more",
                         ttl_ms);
        return STEPQ_ERR;
    }
    snprintf(ttl, sizeof(ttl), "%ld", ttl_ms);
    snprintf(pid, sizeof(pid), "%d", (int)getpid());
    gethostname(host, sizeof(host) - 1);
    const char *args[] = {worker, capbuf, ttl, host, pid};
    redisReply *r = stepq__eval_queue(q, STEPQ_SCRIPT_WORKER_REGISTER, 5, args, NULL);
    if (r == NULL)
        return STEPQ_ERR;
    freeReplyObject(r);
    return STEPQ_OK;
}

int stepq_worker_heartbeat(stepq *q, const char *worker, long ttl_ms)
{
    char ttl[24];

    stepq__clear_error(q);
    snprintf(ttl, sizeof(ttl), "%ld", ttl_ms);
    const char *args[] = {worker, ttl};
    redisReply *r = stepq__eval_queue(q, STEPQ_SCRIPT_WORKER_HEARTBEAT, 2, args, NULL);
    if (r == NULL)
        return STEPQ_ERR;
    freeReplyObject(r);
    return STEPQ_OK;
}

/*
 * Runs the reap script: with `only` "" the reaper pass (workers whose
 * heartbeat is older than timeout_ms), else the release of that worker
 * (deregister). Checks the reply's shape: {requeued, removed, stale}, three
 * integers. Writes *ret (may be NULL) only on success.
 */
static int reap(stepq *q, long timeout_ms, const char *only, stepq_reap_result *ret)
{
    char tmo[24];
    int rc = STEPQ_ERR;

    stepq__clear_error(q);
    snprintf(tmo, sizeof(tmo), "%ld", timeout_ms);
    const char *args[] = {tmo, only, RETENTION_MS};
    redisReply *r = stepq__eval_queue(q, STEPQ_SCRIPT_REAP, 3, args, NULL);
    if (r == NULL)
        return STEPQ_ERR;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3) {
        stepq__set_error(q, STEPQ_E_PROTOCOL,
                         "unexpected reply to reap; is another stepq version "
                         "loaded under the same script name?");
        goto out_free_reply;
    }
    for (size_t i = 0; i < 3; i++) {
        if (r->element[i]->type != REDIS_REPLY_INTEGER) {
            stepq__set_error(q, STEPQ_E_PROTOCOL,
                             "unexpected reply to reap: item %zu is not a "
                             "number",
                             i + 1);
            goto out_free_reply;
        }
    }
    if (ret != NULL) {
        memset(ret, 0, sizeof(*ret));
        ret->requeued = (long)r->element[0]->integer;
        ret->workers_removed = (long)r->element[1]->integer;
        ret->stale = (long)r->element[2]->integer;
    }
    rc = STEPQ_OK;
out_free_reply:
    freeReplyObject(r);
    return rc;
}

int stepq_worker_deregister(stepq *q, const char *worker)
{
    if (!stepq__valid_id(worker)) {
        stepq__set_error(q, STEPQ_E_INVALID,
                         "invalid worker id '%.64s'; use 1 to 63 characters of A-Z a-z 0-9 _ . -",
                         worker ? worker : "");
        return STEPQ_ERR;
    }
    return reap(q, 0, worker, NULL);
}

int stepq_reap_pass(stepq *q, const stepq_reap_opts *opts, stepq_reap_result *ret)
{
    if (opts == NULL || opts->timeout_ms < 0) {
        stepq__set_error(q, STEPQ_E_INVALID, "invalid reaper timeout '%ld' ms; use 0 or more",
                         opts ? opts->timeout_ms : -1L);
        return STEPQ_ERR;
    }
    return reap(q, opts->timeout_ms, "", ret);
}

int stepq_reap(stepq *q, long timeout_ms, long *ret_requeued)
{
    stepq_reap_opts o = {.timeout_ms = timeout_ms};
    stepq_reap_result res;

    if (stepq_reap_pass(q, &o, &res) != STEPQ_OK)
        return STEPQ_ERR;
    if (ret_requeued != NULL)
        *ret_requeued = res.requeued;
    return STEPQ_OK;
}

int stepq_workers(stepq *q, char **ret_json)
{
    redisReply *r;
    json_t *a;

    stepq__clear_error(q);
    r = stepq__eval_queue(q, STEPQ_SCRIPT_WORKERS, 0, NULL, NULL);
    if (r == NULL)
        return STEPQ_ERR;
    a = json_array();
    for (size_t i = 0; a != NULL && r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        redisReply *w = r->element[i];
        if (w->type != REDIS_REPLY_ARRAY || w->elements != 5)
            continue;
        json_t *o = stepq__step_object(w->element[4], NULL);
        if (o == NULL)
            break;
        json_object_set_new(o, "id", json_stringn(w->element[0]->str, w->element[0]->len));
        json_object_set_new(o, "state", json_stringn(w->element[1]->str, w->element[1]->len));
        json_object_set_new(o, "heartbeat", json_stringn(w->element[2]->str, w->element[2]->len));
        json_object_set_new(o, "steps", json_integer(w->element[3]->integer));
        json_array_append_new(a, o);
    }
    freeReplyObject(r);
    return stepq__ret_json(q, a, ret_json);
}
