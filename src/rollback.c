/*
 * rollback.c - the rules a phase move must meet (design invariants 4 and 5),
 * what a move back needs done, `stepq migrate rollback`, the reconcile of
 * the old keys from the new ones, and the throttle switch.
 *
 * The preconditions read the records the engine keeps (docs/records):
 *   into dual-read      a backfill that started after dual writes began and
 *                       finished, then a clean forward verify;
 *   into step-primary   a clean forward verify since the move into dual-read;
 *   into step           a verified backup of the old side, finished since
 *                       the move into step-primary (stepq:backup);
 *   back to dual-write  a clean `verify --reverse` since the move into
 *                       dual-read (reads go back to the old keys);
 *   back out of step    the old keys are made equal to the new ones before
 *                       the move, and once more after it (writers in 'step'
 *                       wrote only the new keys until the move took effect);
 *                       `reconciling` in the phase hash spans both passes,
 *                       so a run killed between them is seen (backfill and
 *                       every other move refuse) and finished by running
 *                       the rollback again.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "stepq_private.h"

/* ---------------------------------------------------------------------------
 * Preconditions
 * ------------------------------------------------------------------------- */

struct recs {
    json_t *phase, *backfill, *verify, *backup;
};

static void recs_free(struct recs *r)
{
    json_decref(r->phase);
    json_decref(r->backfill);
    json_decref(r->verify);
    json_decref(r->backup);
}

static int recs_load(stepq *q, struct recs *r)
{
    sds k_backup = sdscatfmt(sdsempty(), "%sstepq:backup", q->km.ns);

    memset(r, 0, sizeof(*r));
    if (k_backup == NULL) {
        stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        return STEPQ_ERR;
    }
    r->phase = stepq__hash_counters(q, q->k_phase);
    r->backfill = r->phase ? stepq__hash_counters(q, q->k_backfill) : NULL;
    r->verify = r->backfill ? stepq__hash_counters(q, q->k_verify) : NULL;
    r->backup = r->verify ? stepq__hash_counters(q, k_backup) : NULL;
    sdsfree(k_backup);
    if (r->backup == NULL) {
        recs_free(r);
        return STEPQ_ERR;
    }
    return STEPQ_OK;
}

static const char *str(const json_t *o, const char *f)
{
    const char *s = json_string_value(json_object_get(o, f));
    return s ? s : "";
}

/* A clean verify in direction `reverse` that started at or after `since`. */
static int clean_verify(const struct recs *r, int reverse, long long since)
{
    return stepq__json_ll(r->verify, "clean") == 1 &&
           stepq__json_ll(r->verify, "reverse") == reverse &&
           json_object_get(r->verify, "finished_at") != NULL &&
           stepq__json_ll(r->verify, "started_at") >= since;
}

static void check_dual_read(const struct recs *r, char *why, size_t len)
{
    long long dws = stepq__json_ll(r->phase, "dual_write_since");
    long long bstart = stepq__json_ll(r->backfill, "started_at");
    const char *state = str(r->backfill, "state");

    if (stepq__json_ll(r->phase, "untrusted_since") > 0)
        snprintf(why, len,
                 "cannot move to 'dual-read': the new keys are untrusted since the rollback to "
                 "'job' (they kept what they held then); run 'stepq migrate backfill --repair', "
                 "then 'stepq migrate verify'");
    else if (strcmp(state, "done") != 0 || dws == 0 || bstart < dws)
        snprintf(why, len,
                 "cannot move to 'dual-read': no finished backfill that started after dual "
                 "writes began (backfill state '%s'); run 'stepq migrate backfill'",
                 *state ? state : "none");
    else if (!clean_verify(r, 0, stepq__json_ll(r->backfill, "finished_at")))
        snprintf(why, len,
                 "cannot move to 'dual-read': no clean verify since the backfill finished; run "
                 "'stepq migrate verify' (differences that stay are replaced by 'stepq migrate "
                 "backfill --repair')");
}

/* The stored phases a process pinned to `pin` can run beside (design
 * invariant 5): a process pinned to 'job' writes no new key, so nothing may
 * read the new keys first; one pinned to 'step' writes no old key, so
 * nothing may read the old keys first; one pinned to dual-write or
 * step-primary writes both, but the latter reads the new keys first, which
 * 'job' does not write; and nothing but 'step' itself may run beside 'step',
 * whose old keys are frozen (a fallback read there finds steps that ended). */
static int pin_allows(stepq_phase pin, stepq_phase to)
{
    switch (pin) {
    case STEPQ_PHASE_JOB:
        return to <= STEPQ_PHASE_DUAL_WRITE;
    case STEPQ_PHASE_DUAL_WRITE:
        return to <= STEPQ_PHASE_STEP_PRIMARY;
    case STEPQ_PHASE_STEP_PRIMARY:
        return to >= STEPQ_PHASE_DUAL_WRITE && to <= STEPQ_PHASE_STEP_PRIMARY;
    case STEPQ_PHASE_STEP:
        return to >= STEPQ_PHASE_DUAL_READ;
    default:
        return 1;
    }
}

/* The first live process whose pin cannot run beside the phase `to`. */
static int check_pins(stepq *q, stepq_phase to, char *why, size_t len)
{
    json_t *a = stepq__procs(q), *p;
    size_t i;

    if (a == NULL)
        return STEPQ_ERR;
    json_array_foreach(a, i, p)
    {
        stepq_phase pin;
        const char *ph = json_string_value(json_object_get(p, "phase"));
        if (ph == NULL || stepq_phase_parse(ph, &pin, NULL, 0) != STEPQ_OK || pin_allows(pin, to))
            continue;
        snprintf(why, len,
                 "cannot move to '%s': live process '%s' (%s, pid %lld on %s) is pinned to "
                 "phase '%s' and would read keys that '%s' does not write, or write keys it "
                 "does not read; unset its ENABLE_DUAL_WRITE_STEPS/PRIMARY_KEY_PATTERN and "
                 "restart it (see 'stepq migrate status')",
                 stepq_phase_name(to), json_string_value(json_object_get(p, "id")),
                 json_string_value(json_object_get(p, "kind")),
                 (long long)json_integer_value(json_object_get(p, "pid")),
                 json_string_value(json_object_get(p, "host")), ph, stepq_phase_name(to));
        break;
    }
    json_decref(a);
    return STEPQ_OK;
}

int stepq__move_check(stepq *q, stepq_phase from, stepq_phase to, int *ret_ok, char *why,
                      size_t len)
{
    struct recs r;

    why[0] = '\0';
    if (recs_load(q, &r) != STEPQ_OK)
        return STEPQ_ERR;
    long long since = stepq__json_ll(r.phase, "since");
    if (json_object_get(r.phase, "reconciling") != NULL &&
        !(from == STEPQ_PHASE_STEP && to < from)) {
        snprintf(why, len, "cannot move to '%s': %s", stepq_phase_name(to),
                 STEPQ__RECONCILING_ADVICE);
    } else if (to == STEPQ_PHASE_DUAL_READ && from < to) {
        check_dual_read(&r, why, len);
    } else if (to == STEPQ_PHASE_STEP_PRIMARY && from < to) {
        if (!clean_verify(&r, 0, since))
            snprintf(why, len,
                     "cannot move to 'step-primary': no clean verify since the move into '%s'; "
                     "run 'stepq migrate verify'",
                     stepq_phase_name(from));
    } else if (to == STEPQ_PHASE_STEP && from < to) {
        if (strcmp(str(r.backup, "side"), "old") != 0 ||
            stepq__json_ll(r.backup, "verified") != 1 ||
            stepq__json_ll(r.backup, "finished_at") < since)
            snprintf(why, len,
                     "cannot move to 'step': no verified backup of the old keys since the move "
                     "into '%s'; run 'stepq migrate backup --out FILE'",
                     stepq_phase_name(from));
    } else if (to == STEPQ_PHASE_DUAL_WRITE && from > to) {
        if (!clean_verify(&r, 1, since))
            snprintf(why, len,
                     "cannot move back to 'dual-write': reads would return to the old keys, and "
                     "no clean 'verify --reverse' ran since the move into '%s'; run 'stepq "
                     "migrate rollback' (it runs one) or 'stepq migrate verify --reverse'",
                     stepq_phase_name(from));
    }
    recs_free(&r);
    if (why[0] == '\0' && check_pins(q, to, why, len) != STEPQ_OK)
        return STEPQ_ERR;
    *ret_ok = why[0] == '\0';
    return STEPQ_OK;
}

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

/* reconcile_pass without a result to report. */
static int reconcile_quiet(stepq *q, int pass, int force)
{
    stepq__rc_result res = {0};
    int rc = reconcile_pass(q, pass, force, NULL, NULL, &res);

    stepq__rc_result_release(&res);
    return rc;
}

/* Checks a move before phase.c makes it: a refused move is audited and
 * changes nothing; a forced move past a rule gets the rule it skipped in
 * `skipped` (phase.c writes it into the move's audit entry); a move out of
 * 'step' reconciles the old keys first. */
int stepq__move_guard(stepq *q, stepq_phase from, stepq_phase to, const char *who, unsigned flags,
                      int reconciled, char *skipped, size_t len)
{
    char why[STEPQ_ERRSTR_MAX];
    int ok;

    skipped[0] = '\0';
    if (from == STEPQ_PHASE_STEP && to == STEPQ_PHASE_JOB) {
        /* Not even forced: the reconcile's second pass must run while
         * writers write both sides, or it deletes what 'job' writes. */
        stepq__set_error(q, STEPQ_E_CONFLICT,
                         "cannot move from 'step' to 'job', even forced: the old keys are made "
                         "equal to the new ones after the move, which needs writers that write "
                         "both; roll back one phase at a time with 'stepq migrate rollback'");
        return STEPQ_ERR;
    }
    if (stepq__move_check(q, from, to, &ok, why, sizeof(why)) != STEPQ_OK)
        return STEPQ_ERR;
    if (!ok && (flags & STEPQ_MOVE_FORCE)) {
        snprintf(skipped, len, "%s", why);
    } else if (!ok) {
        json_t *e = json_pack("{s:s, s:s, s:s, s:s, s:s, s:b}", "action", "refused", "from",
                              stepq_phase_name(from), "to", stepq_phase_name(to), "who",
                              who ? who : "unknown", "rule", why, "force", 0);
        if (stepq__audit(q, e) != STEPQ_OK)
            return STEPQ_ERR;
        stepq__set_error(q, STEPQ_E_CONFLICT, "%s", why);
        return STEPQ_ERR;
    }
    if (from == STEPQ_PHASE_STEP && to < from && !reconciled)
        return reconcile_quiet(q, 1, (flags & STEPQ_MOVE_FORCE) != 0);
    return STEPQ_OK;
}

/* After a move out of 'step': writers that still ran in 'step' until the
 * move took effect wrote the new keys only; a second pass catches them. */
int stepq__move_done(stepq *q, stepq_phase from, stepq_phase to)
{
    if (from == STEPQ_PHASE_STEP && to < from)
        return reconcile_quiet(q, 2, 0);
    return STEPQ_OK;
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
        if (q->err == STEPQ_E_CONFLICT) {
            char keep[STEPQ_ERRSTR_MAX];
            snprintf(keep, sizeof(keep), "%s", q->errstr);
            stepq__audit(q, json_pack("{s:s, s:s, s:s, s:s, s:s, s:b}", "action", "refused", "from",
                                      stepq_phase_name(from), "to", stepq_phase_name(to), "who",
                                      who ? who : "unknown", "rule", keep, "force", 0));
            stepq__set_error(q, STEPQ_E_CONFLICT, "%s", keep);
        }
        goto fail;
    }
    if (from == STEPQ_PHASE_STEP &&
        reconcile_pass(q, 1, (flags & STEPQ_MOVE_FORCE) != 0, fn, arg, &res) != STEPQ_OK)
        goto fail;
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
