/*
 * own_reads.c - the times stepq itself touched the old keys after the
 * switch, so that cleanup's reader check does not take them for a reader.
 *
 * Cleanup asks "did anything read an old key after the switch to 'step'?"
 * from OBJECT IDLETIME, which every read and write of a key resets. Some of
 * stepq's own walks must touch old keys in 'step': a backup's DUMP, and
 * cleanup's decisions (HGET of a record, the members of a collection). Each
 * such run records its window [started, finished] in the list
 * stepq:own_reads (the newest OWN_READS_KEEP); an access inside any window,
 * widened by the slack of IDLETIME's whole seconds, is not held against the
 * old keys. A real reader that touched a key only inside one of those
 * windows is masked by it: the price of being able to back up twice.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stepq_private.h"

#define OWN_READS_KEEP 100

static sds own_reads_key(const stepq *q)
{
    return sdscatfmt(sdsempty(), "%sstepq:own_reads", q->km.ns);
}

int stepq__own_reads_add(stepq *q, long long lo, long long hi)
{
    char entry[48];
    sds key = own_reads_key(q);

    if (key == NULL) {
        stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        return STEPQ_ERR;
    }
    snprintf(entry, sizeof(entry), "%lld:%lld", lo, hi);
    redisReply *r = stepq__commandf(q, "RPUSH %b %s", key, sdslen(key), entry);
    if (r != NULL) {
        freeReplyObject(r);
        r = stepq__commandf(q, "LTRIM %b -%d -1", key, sdslen(key), OWN_READS_KEEP);
    }
    sdsfree(key);
    if (r == NULL)
        return STEPQ_ERR;
    freeReplyObject(r);
    return STEPQ_OK;
}

int stepq__own_reads_note(stepq *q, long long lo, int rc)
{
    if (rc == STEPQ_OK)
        return stepq__own_reads_add(q, lo, stepq__now_ms());
    if (q->rc != NULL) {
        int err = q->err;
        char keep[STEPQ_ERRSTR_MAX];
        snprintf(keep, sizeof(keep), "%s", q->errstr);
        stepq__own_reads_add(q, lo, stepq__now_ms());
        stepq__set_error(q, err, "%s", keep);
    }
    return STEPQ_ERR;
}

int stepq__own_reads_load(stepq *q, stepq__windows *w)
{
    sds key = own_reads_key(q);
    redisReply *r = key ? stepq__commandf(q, "LRANGE %b 0 -1", key, sdslen(key)) : NULL;

    memset(w, 0, sizeof(*w));
    sdsfree(key);
    if (r == NULL) {
        if (key == NULL)
            stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        return STEPQ_ERR;
    }
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        long long lo, hi;
        char tail;
        if (w->n == STEPQ_WINDOWS_MAX || r->element[i]->type != REDIS_REPLY_STRING ||
            sscanf(r->element[i]->str, "%lld:%lld%c", &lo, &hi, &tail) != 2)
            continue; /* not ours, or damaged: it only ever widens what is ignored */
        w->lo[w->n] = lo;
        w->hi[w->n++] = hi;
    }
    freeReplyObject(r);
    return STEPQ_OK;
}

int stepq__own_read(const stepq__windows *w, long long at, long long slack)
{
    for (size_t i = 0; i < w->n; i++) {
        if (at >= w->lo[i] - slack && at <= w->hi[i] + slack)
            return 1;
    }
    return 0;
}
