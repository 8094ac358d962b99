/*
 * worker.c - worker registration, heartbeats and the reaper.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <jansson.h>

#include "stepq_private.h"

#define PRUNE_COUNT_DEFAULT 100
#define PRUNE_COUNT_MAX     10000
#define KEEP_MAX            1000000000L

/*
 * The instance token of this handle's worker registrations, made at the
 * first one: a random token per handle (per process, for `stepq worker`),
 * so that a registration, its heartbeat and its release are this
 * process's own and never another's that uses the same worker id.
 */
static int instance(stepq *q)
{
    if (q->instance[0] != '\0')
        return STEPQ_OK;
    if (stepq__random_hex(q->instance, 16) != STEPQ_OK) {
        q->instance[0] = '\0';
        stepq__set_error(q, STEPQ_E_IO, "cannot read random bytes for a worker instance token");
        return STEPQ_ERR;
    }
    return STEPQ_OK;
}

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
    if (instance(q) != STEPQ_OK)
        return STEPQ_ERR;
    snprintf(ttl, sizeof(ttl), "%ld", ttl_ms);
    snprintf(pid, sizeof(pid), "%d", (int)getpid());
    gethostname(host, sizeof(host) - 1);
    const char *args[] = {worker, capbuf, ttl, host, pid, q->instance, q->retention};
    redisReply *r = stepq__eval_queue(q, STEPQ_SCRIPT_WORKER_REGISTER, 7, args, NULL);
    if (r == NULL)
        return STEPQ_ERR;
    int rc = STEPQ_OK;
    if (r->type != REDIS_REPLY_INTEGER) {
        stepq__set_error(q, STEPQ_E_PROTOCOL, "unexpected reply to worker_register");
        rc = STEPQ_ERR;
    }
    freeReplyObject(r);
    if (rc == STEPQ_OK)
        stepq__ns_register(q);
    return rc;
}

int stepq_worker_heartbeat(stepq *q, const char *worker, long ttl_ms)
{
    char ttl[24];

    stepq__clear_error(q);
    snprintf(ttl, sizeof(ttl), "%ld", ttl_ms);
    const char *args[] = {worker, ttl, q->instance};
    redisReply *r = stepq__eval_queue(q, STEPQ_SCRIPT_WORKER_HEARTBEAT, 3, args, NULL);
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
    const char *args[] = {tmo, only, q->retention, q->instance};
    redisReply *r = stepq__eval_queue(q, STEPQ_SCRIPT_REAP, 4, args, NULL);
    if (r == NULL)
        return STEPQ_ERR;
    if (stepq__reply_shape(q, r, "iii", "reap.lua") != STEPQ_OK)
        goto out_free_reply;
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

/* Runs prune.lua once: a page of each ended set (see stepq_reap_pass).
 * Adds its counts to *ret. */
static int prune(stepq *q, const stepq_reap_opts *o, stepq_reap_result *ret)
{
    char count[24], kc[24], kf[24];

    snprintf(count, sizeof(count), "%ld", o->prune_count ? o->prune_count : PRUNE_COUNT_DEFAULT);
    snprintf(kc, sizeof(kc), "%ld", o->keep_completed);
    snprintf(kf, sizeof(kf), "%ld", o->keep_failed);
    const char *args[] = {count, kc, kf};
    redisReply *r = stepq__eval_queue(q, STEPQ_SCRIPT_PRUNE, 3, args, NULL);
    if (r == NULL)
        return STEPQ_ERR;
    int rc = stepq__reply_shape(q, r, "ii", "prune.lua");
    if (rc == STEPQ_OK) {
        ret->pruned = (long)r->element[0]->integer;
        ret->capped = (long)r->element[1]->integer;
    }
    freeReplyObject(r);
    return rc;
}

int stepq_reap_pass(stepq *q, const stepq_reap_opts *opts, stepq_reap_result *ret)
{
    stepq_reap_result res;

    if (opts == NULL || opts->timeout_ms < 0) {
        stepq__set_error(q, STEPQ_E_INVALID, "invalid reaper timeout '%ld' ms; use 0 or more",
                         opts ? opts->timeout_ms : -1L);
        return STEPQ_ERR;
    }
    if (opts->prune_count < 0 || opts->prune_count > PRUNE_COUNT_MAX) {
        stepq__set_error(q, STEPQ_E_INVALID, "invalid prune count %ld; use 1 to %d (0: %d)",
                         opts->prune_count, PRUNE_COUNT_MAX, PRUNE_COUNT_DEFAULT);
        return STEPQ_ERR;
    }
    if (opts->keep_completed < 0 || opts->keep_completed > KEEP_MAX || opts->keep_failed < 0 ||
        opts->keep_failed > KEEP_MAX) {
        stepq__set_error(q, STEPQ_E_INVALID,
                         "invalid cap of the ended sets (%ld completed, %ld failed); use 1 to %ld "
                         "steps, or 0 for none",
                         opts->keep_completed, opts->keep_failed, KEEP_MAX);
        return STEPQ_ERR;
    }
    if (reap(q, opts->timeout_ms, "", &res) != STEPQ_OK || prune(q, opts, &res) != STEPQ_OK)
        return STEPQ_ERR;
    if (ret != NULL)
        *ret = res;
    return STEPQ_OK;
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
        if (stepq__reply_shape(q, w, "sssia", "workers.lua") != STEPQ_OK) {
            freeReplyObject(r);
            json_decref(a);
            return STEPQ_ERR;
        }
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
