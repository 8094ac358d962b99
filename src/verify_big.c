/*
 * verify_big.c - big sets and zsets (above `big` members), compared member
 * by member: the members of the key verified are read in SSCAN/ZSCAN pages
 * (or a sample with SRANDMEMBER/ZRANDMEMBER) and each chunk is checked
 * against the twin by verify_members.lua, atomically per chunk; the last
 * chunk compares the sizes and the expiry too.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "verify.h"

#define MEMBERS_PER_SCRIPT 1000 /* SSCAN's COUNT is a hint: a page may be larger */

/* Runs verify_members on members [off, off + cnt) of one scanned page. */
static int members_script(stepq__vf *v, const char *a, const char *b, char type,
                          const redisReply *m, size_t step, size_t off, size_t cnt, int last,
                          long long *n, uint64_t *l1, uint64_t *l2, long long *nbad,
                          char *size_verdict)
{
    stepq *q = v->q;
    const char *args[MEMBERS_PER_SCRIPT + 3];
    const char *keys[] = {a, b};

    args[0] = type == 's' ? "set" : "zset";
    args[1] = v->tol;
    args[2] = last ? "1" : "0";
    for (size_t i = 0; i < cnt; i++)
        args[3 + i] = m->element[(off + i) * step]->str;
    redisReply *r = stepq__eval(q, STEPQ_SCRIPT_VERIFY_MEMBERS, 2, keys, (int)cnt + 3, args, NULL);
    if (r == NULL)
        return STEPQ_ERR;
    *n += strtoll(r->element[0]->str, NULL, 10);
    /* The script sums per member modulo 2^32; so must we, or the digest
     * would depend on how the members were split into chunks. */
    *l1 = (*l1 + strtoull(r->element[1]->str, NULL, 10)) & 0xffffffffULL;
    *l2 = (*l2 + strtoull(r->element[2]->str, NULL, 10)) & 0xffffffffULL;
    *nbad += (long long)r->elements - 4;
    if (last)
        snprintf(size_verdict, 16, "%s", r->element[3]->str);
    freeReplyObject(r);
    return STEPQ_OK;
}

/* Runs verify_members over a scanned page, at most MEMBERS_PER_SCRIPT
 * members a script; adds to *n and the lanes, counts bad members, and
 * writes the size verdict when `last`. */
static int members_chunk(stepq__vf *v, const char *a, const char *b, char type, const redisReply *m,
                         size_t step, int last, long long *n, uint64_t *l1, uint64_t *l2,
                         long long *nbad, char *size_verdict)
{
    size_t nm = m ? m->elements / step : 0, off = 0;

    do {
        size_t cnt = nm - off < MEMBERS_PER_SCRIPT ? nm - off : MEMBERS_PER_SCRIPT;
        if (members_script(v, a, b, type, m, step, off, cnt, last && off + cnt >= nm, n, l1, l2,
                           nbad, size_verdict) != STEPQ_OK)
            return STEPQ_ERR;
        off += cnt;
    } while (off < nm);
    return STEPQ_OK;
}

/* Compares a big set or zset; writes the verdict and the two shares. */
int stepq__verify_big(stepq__vf *v, const char *a, const char *b, char type,
                      enum stepq__verdict *ret, uint64_t *ca, uint64_t *cb)
{
    stepq *q = v->q;
    char cursor[32] = "0", cnt[24], sv[16] = "";
    long long n = 0, nbad = 0;
    uint64_t l1 = 0, l2 = 0;
    size_t step = type == 's' ? 1 : 2;

    snprintf(cnt, sizeof(cnt), "%ld", stepq__walk_count(v->o.batch, v->o.max_latency_ms));
    if (v->o.sample > 0) {
        /* A sample of the members, then the sizes and expiry. */
        redisReply *r = stepq__commandf(q, "%s %s %ld", type == 's' ? "SRANDMEMBER" : "ZRANDMEMBER",
                                        a, v->o.sample);
        if (r == NULL)
            return STEPQ_ERR;
        int rc = members_chunk(v, a, b, type, r, 1, 1, &n, &l1, &l2, &nbad, sv);
        freeReplyObject(r);
        if (rc != STEPQ_OK)
            return STEPQ_ERR;
    } else {
        do {
            redisReply *r = stepq__scan_members(q, a, type, cursor, cnt);
            if (r == NULL)
                return STEPQ_ERR;
            int last = strcmp(cursor, "0") == 0;
            int rc = stepq__pace_wait(&v->pace, (long)(r->element[1]->elements / step));
            if (rc == STEPQ_OK)
                rc = members_chunk(v, a, b, type, r->element[1], step, last, &n, &l1, &l2, &nbad,
                                   sv);
            freeReplyObject(r);
            if (rc != STEPQ_OK)
                return STEPQ_ERR;
        } while (strcmp(cursor, "0") != 0);
    }
    char dig[80];
    snprintf(dig, sizeof(dig), "%s:%lld:%016llx:chunked", type == 's' ? "set" : "zset", n,
             (unsigned long long)((l1 << 32) ^ l2));
    *ret = nbad > 0 || strcmp(sv, "different") == 0 ? STEPQ_V_DIFFERENT
           : strcmp(sv, "ttl") == 0                 ? STEPQ_V_TTL
                                                    : STEPQ_V_EQUAL;
    *ca = stepq__verify_share(a, dig);
    *cb = *ret == STEPQ_V_EQUAL ? *ca : stepq__verify_share(a, "differs");
    return STEPQ_OK;
}
