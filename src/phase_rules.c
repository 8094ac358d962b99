/*
 * phase_rules.c - the rules a phase move must meet before phase.c makes it
 * (design invariants 4 and 5): the preconditions read from the records the
 * engine keeps, the pin rule, and the guard around the move.
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
 *                       the move, and once more after it: the guard runs
 *                       the reconcile passes of rollback.c around the move
 *                       (stepq__rollback_reconcile), and while a run killed
 *                       between them has left `reconciling` in the phase
 *                       hash, every other move refuses.
 * No live process may be pinned to a phase that cannot run beside the new
 * one (pin_allows). A refused move is audited and changes nothing; a forced
 * one passes the rules and phase.c records the one it skipped.
 */
#include <stdio.h>
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

/* Is the move from -> to allowed by the preconditions and the pins? Writes
 * 1/0 into *ret_ok and, when 0, what is missing and what to run into why. */
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
 * The guard around a move (phase.c)
 * ------------------------------------------------------------------------- */

/* Checks a move before phase.c makes it: a refused move is audited and
 * changes nothing; a forced move past a rule gets the rule it skipped in
 * `skipped` (phase.c writes it into the move's audit entry); a move out of
 * 'step' reconciles the old keys first (rollback.c). */
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
        stepq__set_error(q, STEPQ_E_CONFLICT, "%s", why);
        stepq__audit_refusal(q, from, to, who);
        return STEPQ_ERR;
    }
    if (from == STEPQ_PHASE_STEP && to < from && !reconciled)
        return stepq__rollback_reconcile(q, 1, (flags & STEPQ_MOVE_FORCE) != 0);
    return STEPQ_OK;
}

void stepq__audit_refusal(stepq *q, stepq_phase from, stepq_phase to, const char *who)
{
    char keep[STEPQ_ERRSTR_MAX];

    if (q->err != STEPQ_E_CONFLICT)
        return;
    snprintf(keep, sizeof(keep), "%s", q->errstr);
    stepq__audit(q, json_pack("{s:s, s:s, s:s, s:s, s:s, s:b}", "action", "refused", "from",
                              stepq_phase_name(from), "to", stepq_phase_name(to), "who",
                              who ? who : "unknown", "rule", keep, "force", 0));
    stepq__set_error(q, STEPQ_E_CONFLICT, "%s", keep);
}

/* After a move out of 'step': writers that still ran in 'step' until the
 * move took effect wrote the new keys only; a second pass (rollback.c)
 * catches them. */
int stepq__move_done(stepq *q, stepq_phase from, stepq_phase to)
{
    if (from == STEPQ_PHASE_STEP && to < from)
        return stepq__rollback_reconcile(q, 2, 0);
    return STEPQ_OK;
}

int stepq_move_allowed(stepq *q, stepq_phase to, int *ret_ok, char *why, size_t len)
{
    stepq_phase from;

    stepq__clear_error(q);
    if ((unsigned)to >= STEPQ_PHASE_COUNT) {
        stepq__set_error(q, STEPQ_E_INVALID, "unknown phase #%d", (int)to);
        return STEPQ_ERR;
    }
    if (stepq_phase_get(q, &from) != STEPQ_OK)
        return STEPQ_ERR;
    return stepq__move_check(q, from, to, ret_ok, why, len);
}
