/*
 * verify_big.c - big sets and zsets (above `big` members), compared member
 * by member: the members of the key verified are read in SSCAN/ZSCAN pages
 * (or a sample with SRANDMEMBER/ZRANDMEMBER) and each chunk is checked
 * against the twin by verify_members.lua, atomically per chunk; the last
 * chunk compares the sizes and the expiry too.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "verify.h"

#define MEMBERS_PER_SCRIPT 1000 /* SSCAN's COUNT is a hint: a page may be larger */

/* One big pair being compared: what the chunks found so far. */
struct big {
    stepq__vf *v;
    const char *a, *b; /* sds, borrowed: the key verified and its twin */
    char type;         /* 's' or 'z': the type both keys had in verify_batch */
    long long n;       /* members compared */
    long long nbad;    /* members that differ */
    uint64_t l1, l2;   /* the digest's two lanes, each mod 2^32 */
    int different;     /* a chunk found the sizes or a key's type different */
    int ttl;           /* the last chunk found the expiry off */
};

/* A whole decimal number in [0, max] from a string reply element. */
static int reply_num(const redisReply *e, long long max, long long *ret)
{
    char *end;
    long long x;

    if (e->type != REDIS_REPLY_STRING || e->len == 0 || e->len > 20)
        return STEPQ_ERR;
    errno = 0;
    x = strtoll(e->str, &end, 10);
    if (errno != 0 || end != e->str + e->len || x < 0 || x > max)
        return STEPQ_ERR;
    *ret = x;
    return STEPQ_OK;
}

/* Adds one verify_members reply to g: {n, lane1, lane2, verdict, bad
 * members...}. STEPQ_ERR with a STEPQ_E_PROTOCOL error when it has another
 * shape. */
static int members_add(struct big *g, const redisReply *r)
{
    long long n, l1, l2;
    const redisReply *sv = r->type == REDIS_REPLY_ARRAY && r->elements >= 4 ? r->element[3] : NULL;

    if (sv == NULL || sv->type != REDIS_REPLY_STRING || reply_num(r->element[0], LLONG_MAX, &n) ||
        reply_num(r->element[1], 0xffffffffLL, &l1) ||
        reply_num(r->element[2], 0xffffffffLL, &l2)) {
        stepq__set_error(g->v->q, STEPQ_E_PROTOCOL,
                         "unexpected reply from script 'verify_members'; " STEPQ_VERIFY_SERVER);
        return STEPQ_ERR;
    }
    g->n += n;
    /* The script sums per member modulo 2^32; so must we, or the digest
     * would depend on how the members were split into chunks. */
    g->l1 = (g->l1 + (uint64_t)l1) & 0xffffffffULL;
    g->l2 = (g->l2 + (uint64_t)l2) & 0xffffffffULL;
    g->nbad += (long long)r->elements - 4;
    g->different |= strcmp(sv->str, "different") == 0;
    g->ttl |= strcmp(sv->str, "ttl") == 0;
    return STEPQ_OK;
}

/* Runs verify_members on members [off, off + cnt) of one scanned page m
 * (a member every `step` elements): members travel with their lengths, so
 * a member with a NUL byte is itself, not its prefix. */
static int members_script(struct big *g, const redisReply *m, size_t step, size_t off, size_t cnt,
                          int last, size_t *queued)
{
    const char *args[MEMBERS_PER_SCRIPT + 3];
    size_t lens[MEMBERS_PER_SCRIPT + 3];
    const char *keys[] = {g->a, g->b};
    size_t klens[] = {sdslen((const sds)g->a), sdslen((const sds)g->b)};

    args[0] = g->type == 's' ? "set" : "zset";
    args[1] = g->v->tol;
    args[2] = last ? "1" : "0";
    for (int i = 0; i < 3; i++)
        lens[i] = strlen(args[i]);
    for (size_t i = 0; i < cnt; i++) {
        const redisReply *e = m->element[(off + i) * step];
        args[3 + i] = e->str;
        lens[3 + i] = e->len;
    }
    if (queued != NULL) { /* pipelined: the caller reads the reply */
        (*queued)++;
        return stepq__append_eval_keys(g->v->q, STEPQ_SCRIPT_VERIFY_MEMBERS, 2, keys, klens,
                                       (int)cnt + 3, args, lens);
    }
    redisReply *r = stepq__eval_keys(g->v->q, STEPQ_SCRIPT_VERIFY_MEMBERS, 2, keys, klens,
                                     (int)cnt + 3, args, lens);
    if (r == NULL)
        return STEPQ_ERR;
    int rc = members_add(g, r);
    freeReplyObject(r);
    return rc;
}

/* Runs verify_members over a page of members (m may be NULL: none), at
 * most MEMBERS_PER_SCRIPT members a script; the last script of the last
 * page compares the sizes and the expiry too. With `queued`, the scripts
 * are only queued and counted there. */
static int members_chunk(struct big *g, const redisReply *m, size_t step, int last, size_t *queued)
{
    size_t nm = m ? m->elements / step : 0, off = 0;

    if (m != NULL && m->type != REDIS_REPLY_ARRAY) {
        stepq__set_error(g->v->q, STEPQ_E_PROTOCOL, "unexpected reply to SRANDMEMBER/ZRANDMEMBER");
        return STEPQ_ERR;
    }
    for (size_t i = 0; i < nm * step; i++) {
        if (m->element[i]->type != REDIS_REPLY_STRING) {
            stepq__set_error(g->v->q, STEPQ_E_PROTOCOL, "unexpected member in SSCAN/ZSCAN reply");
            return STEPQ_ERR;
        }
    }
    do {
        size_t cnt = nm - off < MEMBERS_PER_SCRIPT ? nm - off : MEMBERS_PER_SCRIPT;
        if (members_script(g, m, step, off, cnt, last && off + cnt >= nm, queued) != STEPQ_OK)
            return STEPQ_ERR;
        off += cnt;
    } while (off < nm);
    return STEPQ_OK;
}

/* A sample of the members (SRANDMEMBER/ZRANDMEMBER), then the sizes and
 * the expiry. */
static int members_sample(struct big *g)
{
    char count[24];
    snprintf(count, sizeof(count), "%ld", g->v->o.sample);
    const char *argv[] = {g->type == 's' ? "SRANDMEMBER" : "ZRANDMEMBER", g->a, count};
    size_t lens[] = {strlen(argv[0]), sdslen((const sds)g->a), strlen(count)};

    redisReply *r = stepq__command(g->v->q, 3, argv, lens);
    if (r == NULL)
        return STEPQ_ERR;
    int rc = members_chunk(g, r, 1, 1, NULL);
    freeReplyObject(r);
    return rc;
}

/* Reads the replies of n queued verify_members scripts. */
static int members_read(struct big *g, size_t n)
{
    int rc = STEPQ_OK;

    for (size_t i = 0; i < n; i++) {
        redisReply *r = stepq__read_reply(g->v->q);
        if (r == NULL)
            return STEPQ_ERR;
        if (rc == STEPQ_OK)
            rc = members_add(g, r);
        freeReplyObject(r);
    }
    return rc;
}

/* Every member, page by page (SSCAN/ZSCAN of the key verified), pipelined:
 * the next page is asked for before this page's scripts are read, so a
 * page costs one round trip; the sizes-and-expiry script is still the
 * last to run (Redis runs them in order). */
static int members_pages(struct big *g)
{
    stepq__vf *v = g->v;
    stepq *q = v->q;
    char cursor[32] = "0", cnt[24];
    size_t step = g->type == 's' ? 1 : 2, pending = 0;
    int rc, more = 1;

    snprintf(cnt, sizeof(cnt), "%ld", stepq__member_count(v->o.batch, v->o.max_latency_ms));
    size_t alen = sdslen((const sds)g->a);
    rc = stepq__queue_members(q, g->a, alen, g->type, cursor, cnt);
    while (rc == STEPQ_OK && more) {
        redisReply *r = stepq__read_members(q, cursor);
        if (r == NULL) {
            rc = STEPQ_ERR;
            break;
        }
        more = strcmp(cursor, "0") != 0;
        /* Pacing that talks to Redis wants an empty pipe. */
        int io = pending == 0 || stepq__pace_io_due(&v->pace);
        if (pending > 0 && io) {
            rc = members_read(g, pending);
            pending = 0;
        }
        if (rc == STEPQ_OK)
            rc = stepq__pace_wait_io(&v->pace, (long)(r->element[1]->elements / step), io);
        if (rc == STEPQ_OK && more)
            rc = stepq__queue_members(q, g->a, alen, g->type, cursor, cnt);
        size_t queued = 0;
        if (rc == STEPQ_OK)
            rc = members_chunk(g, r->element[1], step, !more, &queued);
        freeReplyObject(r);
        if (rc == STEPQ_OK)
            rc = members_read(g, pending);
        pending = queued;
    }
    if (rc == STEPQ_OK)
        rc = members_read(g, pending);
    if (rc != STEPQ_OK && q->rc != NULL)
        stepq__drop(q); /* replies still on their way cannot be matched */
    return rc;
}

/* members_pages, started over from member 0 when the slot moved (walk.c),
 * with its sums: a member read twice must not count twice. */
static int members_all(struct big *g)
{
    long long deadline = 0;
    int rc;

    while ((rc = members_pages(g)) != STEPQ_OK && stepq__members_retry(g->v->q, &deadline))
        g->n = 0, g->l1 = 0, g->l2 = 0, g->nbad = 0, g->different = 0, g->ttl = 0;
    return rc;
}

int stepq__verify_big(stepq__vf *v, const sds a, const sds b, const char *type,
                      enum stepq__verdict *ret, uint64_t *ca, uint64_t *cb)
{
    struct big g = {v, a, b, 0, 0, 0, 0, 0, 0, 0};
    char dig[80];

    if (strcmp(type, "set") == 0 || strcmp(type, "zset") == 0)
        g.type = type[0] == 's' ? 's' : 'z';
    if (g.type == 0) {
        stepq__set_error(
            v->q, STEPQ_E_PROTOCOL,
            "unexpected reply from script 'verify_batch': 'big' for a '%s'; " STEPQ_VERIFY_SERVER,
            type);
        return STEPQ_ERR;
    }
    if ((v->o.sample > 0 ? members_sample(&g) : members_all(&g)) != STEPQ_OK)
        return STEPQ_ERR;
    snprintf(dig, sizeof(dig), "%s:%lld:%016llx:chunked", type, g.n,
             (unsigned long long)((g.l1 << 32) ^ g.l2));
    *ret = g.nbad > 0 || g.different ? STEPQ_V_DIFFERENT : g.ttl ? STEPQ_V_TTL : STEPQ_V_EQUAL;
    *ca = stepq__verify_share(a, dig);
    *cb = *ret == STEPQ_V_EQUAL ? *ca : stepq__verify_share(a, "differs");
    return STEPQ_OK;
}
