/*
 * rollback.c - `stepq migrate rollback`, one phase back, and the reconcile
 * out of 'step' it needs: the old keys are made equal to the new ones
 * before the move, and once more after it (writers in 'step' wrote only the
 * new keys until the move took effect). `reconciling` in the phase hash
 * spans both passes, so a run killed between them is seen (backfill and
 * every other move refuse) and finished by running the rollback again.
 * The rules a move must meet, and the guard that runs these passes around
 * a move out of 'step', are phase_rules.c's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "stepq_private.h"

/* ---------------------------------------------------------------------------
 * The reconcile out of 'step', in two passes
 * ------------------------------------------------------------------------- */

int stepq__reconciling(stepq *q, int *ret)
{
    redisReply *r = stepq__commandf(q, "HEXISTS %s reconciling", q->k_phase);

    if (r == NULL)
        return STEPQ_ERR;
    *ret = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    freeReplyObject(r);
    return STEPQ_OK;
}

/* The names of an rc result as a JSON array. */
static json_t *rc_names(const stepq__rc_result *res)
{
    json_t *a = json_array();

    for (size_t i = 0; a != NULL && i < res->nnames; i++)
        json_array_append_new(a, json_string(res->names[i]));
    return a;
}

/* Before the first pass, unless forced: old steps the new side does not
 * know (a live old record without a new one, a member only an old queue
 * holds) were written after the switch by someone else than stepq; the
 * rollback would delete them, so it refuses and names them (finding 9). */
static int survey_old_only(stepq *q)
{
    stepq__rc_result res = {0};
    int rc = stepq__reconcile(q, STEPQ_NEW, 1, "check", NULL, NULL, &res);

    if (rc == STEPQ_OK && res.unknown > 0) {
        sds list = sdsempty();
        for (size_t i = 0; list != NULL && i < res.nnames; i++)
            list = sdscatfmt(list, "%s%S", i ? ", " : "", res.names[i]);
        stepq__set_error(
            q, STEPQ_E_CONFLICT,
            "cannot roll back out of 'step': it would delete %lld live step(s) that only the old "
            "keys hold. Written after the switch by something other than stepq (the old "
            "application?): stop it, then 'stepq migrate cleanup --adopt' moves them to the new "
            "keys. Ended and pruned in 'step' since: roll back with --force. Nothing was changed. "
            "They are: %s%s",
            res.unknown, list ? list : "?", res.unknown > (long long)res.nnames ? ", ..." : "");
        sdsfree(list);
        rc = STEPQ_ERR;
    }
    stepq__rc_result_release(&res);
    return rc;
}

/* Pass 1 (before the move) marks the phase hash `reconciling`; pass 2
 * (after it) clears the mark once the old keys are equal to the new ones.
 * A failure in between leaves the mark, so nothing reads the old keys as
 * complete until a rollback runs pass 2 again. Old steps the new side does
 * not know are refused before pass 1 (unless forced: then deleted) and
 * kept by pass 2 (the move is made), audited with their names. */
static int reconcile_pass(stepq *q, int pass, int force, stepq_progress_fn fn, void *arg,
                          stepq__rc_result *res)
{
    redisReply *r;
    char now[24];

    snprintf(now, sizeof(now), "%lld", stepq__now_ms());
    if (pass == 1) {
        if (!force && survey_old_only(q) != STEPQ_OK)
            return STEPQ_ERR;
        if ((r = stepq__commandf(q, "HSET %s reconciling %s", q->k_phase, now)) == NULL)
            return STEPQ_ERR;
        freeReplyObject(r);
    }
    if (stepq__reconcile(q, STEPQ_NEW, 0, pass == 1 && force ? "delete" : "keep", fn, arg, res) !=
        STEPQ_OK)
        return STEPQ_ERR;
    if (res->unknown > 0 &&
        stepq__audit(q, json_pack("{s:s, s:i, s:s, s:I, s:o}", "action", "reconcile", "pass", pass,
                                  "old_only", pass == 1 ? "deleted" : "kept", "count",
                                  (json_int_t)res->unknown, "keys", rc_names(res))) != STEPQ_OK)
        return STEPQ_ERR;
    if (pass == 2) {
        if ((r = stepq__commandf(q, "HDEL %s reconciling", q->k_phase)) == NULL)
            return STEPQ_ERR;
        freeReplyObject(r);
    }
    return STEPQ_OK;
}

/* reconcile_pass without a result to report: what the move's guard runs
 * (phase_rules.c). */
int stepq__rollback_reconcile(stepq *q, int pass, int force)
{
    stepq__rc_result res = {0};
    int rc = reconcile_pass(q, pass, force, NULL, NULL, &res);

    stepq__rc_result_release(&res);
    return rc;
}

/* ---------------------------------------------------------------------------
 * Rollback
 * ------------------------------------------------------------------------- */

/* What a reconcile did, into the rollback's JSON: rewritten and deleted
 * old keys, and the old-only steps (`what`: kept or deleted) by name. */
static void rc_report(json_t *out, const stepq__rc_result *res, const char *what)
{
    json_object_set_new(out, "old_rewritten", json_integer(res->copied));
    json_object_set_new(out, "old_deleted", json_integer(res->deleted));
    if (res->unknown > 0) {
        json_object_set_new(out, what, json_integer(res->unknown));
        json_object_set_new(out, "old_only_keys", rc_names(res));
    }
}

static int reverse_verify(stepq *q, stepq_progress_fn fn, void *arg, json_t *out)
{
    stepq_verify_opts vo = {.reverse = 1};
    int clean = 0;
    char *report = NULL;

    if (stepq_verify(q, &vo, fn, arg, &clean, &report) != STEPQ_OK)
        return STEPQ_ERR;
    json_t *v = json_loads(report, 0, NULL);
    stepq_str_free(report);
    json_object_set_new(out, "verify_reverse", v ? v : json_null());
    if (clean)
        return STEPQ_OK;
    json_t *bad = json_object_get(v, "first_bad");
    stepq__set_error(
        q, STEPQ_E_CONFLICT,
        "cannot roll back to 'dual-write': verify --reverse found keys that differ "
        "(first: %s); reads would return to stale old keys. 'stepq migrate rollback "
        "--reconcile' first makes the old keys equal to the new ones (the keys read now); "
        "'stepq migrate verify --reverse' shows the differences",
        json_is_string(json_array_get(bad, 0)) ? json_string_value(json_array_get(bad, 0)) : "?");
    return STEPQ_ERR;
}

int stepq_rollback(stepq *q, const char *who, const char *reason, unsigned flags,
                   stepq_progress_fn fn, void *arg, char **ret_json)
{
    stepq_phase from;
    json_t *out = json_object();
    stepq__rc_result res = {0};

    stepq__clear_error(q);
    if (out == NULL)
        return stepq__ret_json(q, NULL, ret_json);
    if (stepq_phase_get(q, &from) != STEPQ_OK)
        goto fail;
    if (from == STEPQ_PHASE_JOB) {
        stepq__set_error(q, STEPQ_E_NOTFOUND, "the phase is 'job': nothing to roll back");
        goto fail;
    }
    int reconciling;
    if (stepq__reconciling(q, &reconciling) != STEPQ_OK)
        goto fail;
    if (reconciling && from != STEPQ_PHASE_STEP) {
        /* A rollback out of 'step' stopped after its move: finish it, and
         * move no further (the operator asked for one rollback). */
        if (reconcile_pass(q, 2, 0, fn, arg, &res) != STEPQ_OK)
            goto fail;
        json_object_set_new(out, "from", json_string(stepq_phase_name(from)));
        json_object_set_new(out, "to", json_string(stepq_phase_name(from)));
        json_object_set_new(out, "finished",
                            json_string("the reconcile of a rollback out of "
                                        "'step' that had stopped after its move"));
        rc_report(out, &res, "old_only_kept");
        stepq__rc_result_release(&res);
        return stepq__ret_json(q, out, ret_json);
    }
    stepq_phase to = (stepq_phase)(from - 1);
    json_object_set_new(out, "from", json_string(stepq_phase_name(from)));
    json_object_set_new(out, "to", json_string(stepq_phase_name(to)));
    /* Out of dual-read with --reconcile: the new keys are the ones read,
     * and every writer writes both sides, so the old ones are made equal to
     * them (live steps only the old keys hold are kept) before the check. */
    if (from == STEPQ_PHASE_DUAL_READ && (flags & STEPQ_MOVE_RECONCILE)) {
        if (stepq__reconcile(q, STEPQ_NEW, 0, "keep", fn, arg, &res) != STEPQ_OK)
            goto fail;
        rc_report(out, &res, "old_only_kept");
    }
    if (from == STEPQ_PHASE_DUAL_READ && !(flags & STEPQ_MOVE_FORCE) &&
        reverse_verify(q, fn, arg, out) != STEPQ_OK) {
        stepq__audit_refusal(q, from, to, who);
        goto fail;
    }
    /* Out of 'step': the move's own rules (a pinned process, say) first, so
     * that a move refused leaves no reconcile begun; then the old-only
     * survey and the first pass. */
    if (from == STEPQ_PHASE_STEP && !(flags & STEPQ_MOVE_FORCE)) {
        char why[STEPQ_ERRSTR_MAX];
        int ok;
        if (stepq__move_check(q, from, to, &ok, why, sizeof(why)) != STEPQ_OK)
            goto fail;
        if (!ok) {
            stepq__set_error(q, STEPQ_E_CONFLICT, "%s", why);
            stepq__audit_refusal(q, from, to, who);
            goto fail;
        }
    }
    if (from == STEPQ_PHASE_STEP &&
        reconcile_pass(q, 1, (flags & STEPQ_MOVE_FORCE) != 0, fn, arg, &res) != STEPQ_OK) {
        stepq__audit_refusal(q, from, to, who);
        goto fail;
    }
    if (stepq__phase_move(q, to, who, reason ? reason : "rollback", flags & STEPQ_MOVE_FORCE,
                          from == STEPQ_PHASE_STEP) != STEPQ_OK)
        goto fail;
    if (from == STEPQ_PHASE_STEP)
        rc_report(out, &res, "old_only_deleted");
    stepq__rc_result_release(&res);
    if (to == STEPQ_PHASE_JOB)
        json_object_set_new(out, "note",
                            json_string("writers stopped writing the new keys; they stay for a "
                                        "later retry (a new backfill starts over)"));
    return stepq__ret_json(q, out, ret_json);
fail:
    stepq__rc_result_release(&res);
    json_decref(out);
    return STEPQ_ERR;
}
