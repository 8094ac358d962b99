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
 * its size (docs/migration-engine.md, Limits). The pages go through the
 * walks' pipe (walk_pipe.c): several pages of scripts in flight, and on a
 * cluster one page at a time on a settled slot, a page redone after a
 * redirection (idempotent scripts make that safe).
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
    const char *prefix[1]; /* the scripts' KEYS before the pairs */
    const char *args[6];   /* and their ARGV before the roles */
    stepq__walk walk;
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
    int rc = STEPQ_ERR;

    if (rep == NULL) {
        stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        return STEPQ_ERR;
    }
    rc_roles(q, &w->pairs);
    if (stepq__pairs_run(q, STEPQ_SCRIPT_RECONCILE_BATCH, &w->pairs, RC_BATCH, 1, w->prefix, 6,
                         w->args, 1, rep) == STEPQ_OK) {
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

/* One reconcile_batch script in flight: its reply is read in turn. */
struct rc_batch {
    struct rc_walk *w;
    size_t n; /* pairs */
};

static int rc_reader(stepq *q, void *ctx, int abort)
{
    struct rc_batch *x = ctx;
    struct rc_walk *w = x->w;
    int rc = STEPQ_OK;

    if (!abort) {
        redisReply *r = stepq__read_reply(q);
        rc = r == NULL ? STEPQ_ERR : rc_reply(q, r, w);
        freeReplyObject(r);
        w->done += (long long)x->n;
        if (rc == STEPQ_OK && w->fn != NULL)
            w->fn(w->done, 0, NULL, NULL, w->arg);
    }
    stepq__free(x);
    return rc;
}

/* Every per-id key of either side gives the pair (truth, twin); the page's
 * scripts are queued on the walk's pipe without waiting (walk_pipe.c):
 * each script checks the phase and is idempotent, so a page redone (a
 * cluster's redirection, a rerun after a kill) changes nothing more. */
static int rc_page(stepq *q, const redisReply *keys, const char *cursor, void *arg)
{
    struct rc_walk *w = arg;
    const char *id;
    size_t idlen;
    enum stepq__side side;
    int rc = STEPQ_OK;

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
    rc_roles(q, &w->pairs);
    /* The command buffer holds its own copy of every name once queued. */
    for (size_t lo = 0; rc == STEPQ_OK && lo < w->pairs.n; lo += RC_BATCH) {
        size_t hi = lo + RC_BATCH < w->pairs.n ? lo + RC_BATCH : w->pairs.n;
        struct rc_batch *x = stepq__calloc(1, sizeof(*x));
        if (x == NULL) {
            stepq__set_error(q, STEPQ_E_OOM, "out of memory");
            rc = STEPQ_ERR;
            break;
        }
        *x = (struct rc_batch){w, hi - lo};
        rc = stepq__pairs_append(q, STEPQ_SCRIPT_RECONCILE_BATCH, &w->pairs, lo, hi, 1, w->prefix,
                                 6, w->args, 1);
        if (rc == STEPQ_OK)
            rc = stepq__window_push(q, &w->walk.win, rc_reader, x, (long)(hi - lo));
        if (rc != STEPQ_OK)
            stepq__free(x); /* the scripts queued before are read by the walk's abort */
    }
    stepq__pairs_clear(&w->pairs);
    return rc;
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
    w.prefix[0] = q->k_phase;
    w.args[0] = dry ? "1" : "0";
    w.args[1] = truth == STEPQ_NEW ? ",step,step-primary,dual-read,dual-write," : ",dual-write,";
    w.args[2] = truth == STEPQ_NEW ? "the rollback's reconcile of the old keys" : "the repair";
    w.args[3] = mode;
    w.args[4] = w.tpl[0];
    w.args[5] = w.tpl[1];
    /* The fixed keys by name first, then every page of the namespace with
     * at most STEPQ_WALK_PAGES pages of scripts in flight. */
    long count = stepq__walk_count(RC_BATCH, 0);
    if (rc_run(q, &w) != STEPQ_OK ||
        stepq__walk_run(q, &w.walk, "0", count, stepq__walk_cap(count, 0), rc_page, NULL, &w) !=
            STEPQ_OK)
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
