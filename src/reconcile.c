/*
 * reconcile.c - making one side of the key map equal to the other, the
 * truth, pair by pair: the rollback out of 'step' (old from new: new is
 * what 'step' read and wrote) and the repair in 'dual-write' (new from old:
 * old is what 'dual-write' reads, and the new keys may hold what they held
 * before a rollback to 'job', issue 10).
 *
 * Per pair, atomically (lua/reconcile_batch.lua): the truth exists -> COPY
 * it over its twin (REPLACE, with its TTL); it does not -> DEL the twin, so
 * nothing deleted on the side of the truth comes back. Every per-id key of
 * either side gives its pair, so a twin whose truth is gone is found too;
 * SCAN may give a pair twice (both of its keys, or a key twice), and the
 * script is idempotent. The queue collections are taken by name first, each
 * one COPY: for a collection of millions of members that blocks Redis for
 * its size (docs/migration-engine.md, Limits).
 *
 * Safe while writers run in the phases it is used in: every writer's script
 * writes both sides of what it touches atomically (the dual phases), or
 * only the truth ('step', caught by the second pass after the move). Each
 * script checks the stored phase first, so a pass that outlives a move out
 * of those phases stops instead: old from new must not run in 'job' (it
 * would delete what writers there write to the old side alone), new from
 * old only in 'dual-write' (the one phase that reads old and writes both).
 */
#include <stdio.h>
#include <string.h>

#include "stepq_private.h"

#define RC_BATCH 100

struct rc_walk {
    enum stepq__side truth;
    const char *mode;
    sds tpl[2]; /* old and new step record templates */
    stepq__pairs pairs;
    long long done, strays;
    stepq__rc_result *res;
    int dry;
    stepq_progress_fn fn;
    void *arg;
};

/* {copied, deleted, unknown count, names...} */
static int rc_reply(stepq *q, const redisReply *r, struct rc_walk *w)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 3) {
        stepq__set_error(q, STEPQ_E_PROTOCOL, "unexpected reply from reconcile_batch");
        return STEPQ_ERR;
    }
    for (size_t i = 0; i < r->elements; i++) {
        if (r->element[i]->type != (i < 3 ? REDIS_REPLY_INTEGER : REDIS_REPLY_STRING)) {
            stepq__set_error(q, STEPQ_E_PROTOCOL, "unexpected reply from reconcile_batch");
            return STEPQ_ERR;
        }
    }
    w->res->copied += r->element[0]->integer;
    w->res->deleted += r->element[1]->integer;
    w->res->unknown += r->element[2]->integer;
    for (size_t i = 3; i + 1 < r->elements && w->res->nnames < STEPQ_RC_NAMES; i += 2) {
        sds key = sdsnewlen(r->element[i]->str, r->element[i]->len);
        sds mem = sdsnewlen(r->element[i + 1]->str, r->element[i + 1]->len);
        sds n = key && mem ? stepq__keyname_quote(sdsempty(), key, sdslen(key), '\'') : NULL;
        if (n != NULL && sdslen(mem) > 0)
            n = stepq__keyname_quote(sdscat(n, " member "), mem, sdslen(mem), '\'');
        sdsfree(key);
        sdsfree(mem);
        if (n == NULL) {
            stepq__set_error(q, STEPQ_E_OOM, "out of memory");
            return STEPQ_ERR;
        }
        w->res->names[w->res->nnames++] = n;
    }
    return STEPQ_OK;
}

/* Each pair's role for the script, in place of its type letter (the
 * script reads no types): a step record, a queue collection (a set or zset
 * of a fixed name), or anything else. */
static void rc_roles(const stepq *q, stepq__pairs *p)
{
    int step = q->km.role[STEPQ_ROLE_STEP];

    for (size_t k = 0; k < p->n; k++) {
        const stepq__rule *r = &q->km.rules[p->rule[k]];
        int coll = !r->per_id && (r->type == STEPQ_KT_SET || r->type == STEPQ_KT_ZSET);
        p->types[k] = p->rule[k] == step ? 'r' : coll ? 'c' : 'o';
    }
}

static int rc_run(stepq *q, struct rc_walk *w)
{
    size_t n = (w->pairs.n + RC_BATCH - 1) / RC_BATCH;
    redisReply **rep = stepq__calloc(n + 1, sizeof(*rep));
    const char *prefix[] = {q->k_phase};
    const char *args[] = {
        w->dry ? "1" : "0",
        w->truth == STEPQ_NEW ? ",step,step-primary,dual-read,dual-write," : ",dual-write,",
        w->truth == STEPQ_NEW ? "the rollback's reconcile of the old keys" : "the repair",
        w->mode,
        w->tpl[0],
        w->tpl[1]};
    int rc = STEPQ_ERR;

    if (rep == NULL) {
        stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        return STEPQ_ERR;
    }
    rc_roles(q, &w->pairs);
    if (stepq__pairs_run(q, STEPQ_SCRIPT_RECONCILE_BATCH, &w->pairs, RC_BATCH, 1, prefix, 6, args,
                         1, rep) == STEPQ_OK) {
        rc = STEPQ_OK;
        for (size_t i = 0; i < n; i++) {
            if (rc == STEPQ_OK && rc_reply(q, rep[i], w) != STEPQ_OK)
                rc = STEPQ_ERR;
            freeReplyObject(rep[i]);
        }
    }
    w->done += (long long)w->pairs.n;
    stepq__free(rep);
    stepq__pairs_clear(&w->pairs);
    if (w->fn != NULL)
        w->fn(w->done, 0, NULL, NULL, w->arg);
    return rc;
}

/* Every per-id key of either side gives the pair (truth, twin). */
static int rc_page(stepq *q, const redisReply *keys, const char *cursor, void *arg)
{
    struct rc_walk *w = arg;
    const char *id;
    size_t idlen;
    enum stepq__side side;

    (void)cursor;
    /* With the old side the truth (the repair), an old-looking key no rule
     * maps would be left behind: named, and the repair fails. */
    if (w->truth == STEPQ_OLD)
        w->strays += stepq__walk_strays(q, keys, w->fn, w->arg, w->done, 0);
    for (size_t i = 0; i < keys->elements; i++) {
        int r = stepq__keymap_match(&q->km, keys->element[i]->str, keys->element[i]->len, &side,
                                    &id, &idlen);
        if (r < 0 || !q->km.rules[r].per_id)
            continue;
        if (stepq__pairs_add_n(&w->pairs, &q->km, (size_t)r, w->truth, id, idlen) != STEPQ_OK) {
            stepq__set_error(q, STEPQ_E_OOM, "out of memory");
            return STEPQ_ERR;
        }
    }
    return w->pairs.n ? rc_run(q, w) : STEPQ_OK;
}

/* The old and the new step record templates (the script derives the
 * record of a collection's member from them). */
static int step_templates(const stepq__keymap *km, sds tpl[2])
{
    int step = km->role[STEPQ_ROLE_STEP];

    for (int s = 0; s < 2; s++)
        tpl[s] = step >= 0 ? stepq__keymap_key(km, (size_t)step, s ? STEPQ_NEW : STEPQ_OLD, "{id}")
                           : sdsnew("{id}");
    return tpl[0] && tpl[1] ? STEPQ_OK : STEPQ_ERR;
}

void stepq__rc_result_release(stepq__rc_result *res)
{
    for (size_t i = 0; i < res->nnames; i++)
        sdsfree(res->names[i]);
    memset(res, 0, sizeof(*res));
}

int stepq__reconcile(stepq *q, enum stepq__side truth, int dry, const char *mode,
                     stepq_progress_fn fn, void *arg, stepq__rc_result *res)
{
    struct rc_walk w = {.truth = truth, .mode = mode, .res = res, .dry = dry, .fn = fn, .arg = arg};
    int rc = STEPQ_ERR;

    if (step_templates(&q->km, w.tpl) != STEPQ_OK) {
        stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        goto out;
    }
    for (size_t r = 0; r < q->km.n; r++) {
        if (q->km.rules[r].per_id || q->km.rules[r].type == STEPQ_KT_CHANNEL)
            continue;
        if (stepq__pairs_add(&w.pairs, &q->km, r, truth, NULL) != STEPQ_OK) {
            stepq__set_error(q, STEPQ_E_OOM, "out of memory");
            goto out;
        }
    }
    if (rc_run(q, &w) != STEPQ_OK || stepq__walk_ns(q, "0", 500, rc_page, &w) != STEPQ_OK)
        goto out;
    if (w.strays > 0) {
        stepq__set_error(q, STEPQ_E_SERVER,
                         "%lld key(s) look like old keys but no rule of the key map maps them "
                         "(each is named above); rename or delete them, or map them in a rules "
                         "file, and run it again",
                         w.strays);
        goto out;
    }
    rc = STEPQ_OK;
out:
    sdsfree(w.tpl[0]);
    sdsfree(w.tpl[1]);
    stepq__pairs_release(&w.pairs);
    return rc;
}

int stepq_reconcile_old(stepq *q, stepq_progress_fn fn, void *arg, long long *ret_copied,
                        long long *ret_deleted)
{
    stepq__rc_result res = {0};

    stepq__clear_error(q);
    int rc = stepq__reconcile(q, STEPQ_NEW, 0, "keep", fn, arg, &res);
    if (rc == STEPQ_OK && ret_copied != NULL)
        *ret_copied = res.copied;
    if (rc == STEPQ_OK && ret_deleted != NULL)
        *ret_deleted = res.deleted;
    stepq__rc_result_release(&res);
    return rc;
}
