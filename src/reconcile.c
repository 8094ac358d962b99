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
 * only the truth ('step', caught by the second pass after the move).
 */
#include <stdio.h>
#include <string.h>

#include "stepq_private.h"

#define RC_BATCH 100

struct rc_walk {
    enum stepq__side truth;
    stepq__pairs pairs;
    long long copied, deleted, done, strays;
    int dry;
    stepq_progress_fn fn;
    void *arg;
};

static int rc_reply(stepq *q, const redisReply *r, struct rc_walk *w)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_INTEGER || r->element[1]->type != REDIS_REPLY_INTEGER) {
        stepq__set_error(q, STEPQ_E_PROTOCOL, "unexpected reply from reconcile_batch");
        return STEPQ_ERR;
    }
    w->copied += r->element[0]->integer;
    w->deleted += r->element[1]->integer;
    return STEPQ_OK;
}

static int rc_run(stepq *q, struct rc_walk *w)
{
    size_t n = (w->pairs.n + RC_BATCH - 1) / RC_BATCH;
    redisReply **rep = stepq__calloc(n + 1, sizeof(*rep));
    const char *args[] = {w->dry ? "1" : "0"};
    int rc = STEPQ_ERR;

    if (rep == NULL) {
        stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        return STEPQ_ERR;
    }
    if (stepq__pairs_run(q, STEPQ_SCRIPT_RECONCILE_BATCH, &w->pairs, RC_BATCH, 0, NULL, 1, args, 0,
                         rep) == STEPQ_OK) {
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

int stepq__reconcile(stepq *q, enum stepq__side truth, int dry, stepq_progress_fn fn, void *arg,
                     long long *ret_copied, long long *ret_deleted)
{
    struct rc_walk w = {.truth = truth, .dry = dry, .fn = fn, .arg = arg};
    int rc = STEPQ_ERR;

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
    if (ret_copied != NULL)
        *ret_copied = w.copied;
    if (ret_deleted != NULL)
        *ret_deleted = w.deleted;
    rc = STEPQ_OK;
out:
    stepq__pairs_release(&w.pairs);
    return rc;
}

int stepq_reconcile_old(stepq *q, stepq_progress_fn fn, void *arg, long long *ret_copied,
                        long long *ret_deleted)
{
    stepq__clear_error(q);
    return stepq__reconcile(q, STEPQ_NEW, 0, fn, arg, ret_copied, ret_deleted);
}
