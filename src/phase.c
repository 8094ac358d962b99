/*
 * phase.c - the migration phase stored in Redis, its compare-and-set move
 * and the audit log. What a move must meet first is phase_rules.c's.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <jansson.h>

#include "stepq_private.h"

#define AUDIT_KEEP "10000"

static const char *const names[STEPQ_PHASE_COUNT] = {
    "job", "dual-write", "dual-read", "step-primary", "step",
};

const char *stepq_phase_name(stepq_phase p)
{
    return (unsigned)p < STEPQ_PHASE_COUNT ? names[p] : "unknown";
}

int stepq_phase_parse(const char *name, stepq_phase *ret, char *errbuf, size_t errlen)
{
    for (int i = 0; i < STEPQ_PHASE_COUNT; i++) {
        if (name != NULL && strcmp(name, names[i]) == 0) {
            *ret = (stepq_phase)i;
            return STEPQ_OK;
        }
    }
    if (errbuf != NULL)
        snprintf(errbuf, errlen,
                 "unknown phase '%s'; expected one of: job, dual-write, dual-read, step-primary, "
                 "step",
                 name ? name : "");
    return STEPQ_ERR;
}

int stepq_phase_get(stepq *q, stepq_phase *ret)
{
    redisReply *r = stepq__commandf(q, "HGET %b phase", q->k_phase, sdslen(q->k_phase));
    char err[STEPQ_ERRSTR_MAX];

    if (r == NULL)
        return STEPQ_ERR;
    if (r->type == REDIS_REPLY_NIL) {
        *ret = STEPQ_PHASE_JOB;
    } else if (r->type != REDIS_REPLY_STRING ||
               stepq_phase_parse(r->str, ret, err, sizeof(err)) != STEPQ_OK) {
        stepq__set_error(q, STEPQ_E_PROTOCOL, "the stored phase in '%s' is corrupt: %s", q->k_phase,
                         r->type == REDIS_REPLY_STRING ? err : "not a string");
        freeReplyObject(r);
        return STEPQ_ERR;
    }
    freeReplyObject(r);
    return STEPQ_OK;
}

static char *audit_entry(stepq_phase from, stepq_phase to, const char *who, const char *reason,
                         unsigned flags, const char *skipped)
{
    char host[256] = "";
    json_t *o;
    char *s;

    gethostname(host, sizeof(host) - 1);
    o = json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:i, s:b}", "ts", (json_int_t)stepq__now_ms(),
                  "from", stepq_phase_name(from), "to", stepq_phase_name(to), "who",
                  who ? who : "unknown", "reason", reason ? reason : "", "host", host, "pid",
                  (int)getpid(), "force", (flags & STEPQ_MOVE_FORCE) != 0);
    if (o == NULL)
        return NULL;
    if (skipped != NULL && *skipped != '\0')
        json_object_set_new(o, "skipped", json_string(skipped));
    s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

int stepq_phase_move(stepq *q, stepq_phase to, const char *who, const char *reason, unsigned flags)
{
    /* Only the public flags: no caller can claim a reconcile it did not do. */
    return stepq__phase_move(q, to, who, reason, flags & STEPQ_MOVE_FORCE, 0);
}

int stepq__phase_move(stepq *q, stepq_phase to, const char *who, const char *reason, unsigned flags,
                      int reconciled)
{
    stepq_phase from;

    if ((unsigned)to >= STEPQ_PHASE_COUNT) {
        stepq__set_error(q, STEPQ_E_INVALID, "unknown phase #%d", (int)to);
        return STEPQ_ERR;
    }
    if (stepq_phase_get(q, &from) != STEPQ_OK)
        return STEPQ_ERR;
    if (from == to) {
        stepq__set_error(q, STEPQ_E_CONFLICT, "the phase is already '%s'; nothing to do",
                         stepq_phase_name(to));
        return STEPQ_ERR;
    }
    int dist = (int)to - (int)from;
    if ((dist > 1 || dist < -1) && !(flags & STEPQ_MOVE_FORCE)) {
        stepq__set_error(q, STEPQ_E_CONFLICT,
                         "cannot move from '%s' to '%s': phases move one step at a time; "
                         "next is '%s'",
                         stepq_phase_name(from), stepq_phase_name(to),
                         stepq_phase_name(dist > 0 ? from + 1 : from - 1));
        return STEPQ_ERR;
    }
    /* The rules a move must meet (phase_rules.c): refused moves change
     * nothing; a forced move records the rule it skipped. */
    char skipped[STEPQ_ERRSTR_MAX];
    if (stepq__move_guard(q, from, to, who, flags, reconciled, skipped, sizeof(skipped)) !=
        STEPQ_OK)
        return STEPQ_ERR;
    char *entry = audit_entry(from, to, who, reason, flags, skipped);
    if (entry == NULL) {
        stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        return STEPQ_ERR;
    }
    const char *keys[] = {q->k_phase, q->k_audit, q->k_stats};
    const char *args[] = {stepq_phase_name(from), stepq_phase_name(to), entry, AUDIT_KEEP};
    redisReply *r = stepq__eval(q, STEPQ_SCRIPT_PHASE_MOVE, 3, keys, 4, args, NULL);
    free(entry);
    if (r == NULL)
        return STEPQ_ERR;
    freeReplyObject(r);
    if (stepq__move_done(q, from, to) != STEPQ_OK)
        return STEPQ_ERR;
    stepq__ns_register(q);
    return STEPQ_OK;
}

int stepq_audit_tail(stepq *q, long limit, char **ret_json)
{
    redisReply *r = stepq__commandf(q, "LRANGE %b %ld -1", q->k_audit, sdslen(q->k_audit),
                                    limit > 0 ? -limit : 0);
    json_t *arr;

    if (r == NULL)
        return STEPQ_ERR;
    arr = json_array();
    for (size_t i = 0; arr != NULL && r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        json_t *e = json_loadb(r->element[i]->str, r->element[i]->len, 0, NULL);
        json_array_append_new(arr, e ? e : json_stringn(r->element[i]->str, r->element[i]->len));
    }
    freeReplyObject(r);
    return stepq__ret_json(q, arr, ret_json);
}
