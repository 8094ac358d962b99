/*
 * verify_big.c - big sets and zsets (above `big` members), compared member
 * by member: the members of the key verified are read in SSCAN/ZSCAN pages
 * (or a sample with SRANDMEMBER/ZRANDMEMBER) and each chunk is checked
 * against the twin in one MULTI/EXEC block (atomic, as a script would be):
 * the type of both keys, then one SMISMEMBER/ZMSCORE of the chunk's members
 * in each, and in the last block of the last page the sizes and expiries.
 * The client compares the answers and digests the members (the page it
 * read is kept until its blocks are read). A script did this before; its
 * conversion of every member to and from Lua and its SHA1 per member were
 * most of the cost of a big collection's compare.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <nettle/sha1.h>

#include "verify.h"

#define MEMBERS_PER_BLOCK 1000 /* SSCAN's COUNT is a hint: a page may be larger */

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

/* A page of members whose blocks are queued: the reply they came in (the
 * members are digested when the answers come back), a member every `step`
 * elements of `m`, and whether its last block compares sizes and expiry. */
struct page {
    redisReply *r; /* freed once its blocks are read; NULL: none */
    const redisReply *m;
    size_t step;
    int last;
};

/* The commands a block queues inside MULTI: the two TYPEs, the two member
 * reads when it has members, the two sizes and two expiries when last. */
static size_t block_len(size_t cnt, int last)
{
    return 2 + (cnt > 0 ? 2 : 0) + (last ? 4 : 0);
}

/* Runs `each` over the blocks of page p in order: MEMBERS_PER_BLOCK
 * members a block, one block (without members) for an empty page. */
static int page_blocks(struct big *g, const struct page *p,
                       int (*each)(struct big *, const struct page *, size_t, size_t, int))
{
    size_t nm = p->m ? p->m->elements / p->step : 0, off = 0;
    int rc = STEPQ_OK;

    do {
        size_t cnt = nm - off < MEMBERS_PER_BLOCK ? nm - off : MEMBERS_PER_BLOCK;
        int r = each(g, p, off, cnt, p->last && off + cnt >= nm);
        if (r != STEPQ_OK) {
            if (g->v->q->rc == NULL)
                return STEPQ_ERR; /* lost: nothing more to read */
            rc = STEPQ_ERR;       /* read the other blocks, to stay in step */
        }
        off += cnt;
    } while (off < nm);
    return rc;
}

/* Queues `cmd key` and, with members, members [off, off + cnt) of p. */
static int append_read(stepq *q, const char *cmd, const char *key, const struct page *p, size_t off,
                       size_t cnt)
{
    const char *argv[MEMBERS_PER_BLOCK + 2] = {cmd, key};
    size_t lens[MEMBERS_PER_BLOCK + 2] = {strlen(cmd), sdslen((const sds)key)};

    for (size_t i = 0; i < cnt; i++) {
        const redisReply *e = p->m->element[(off + i) * p->step];
        argv[2 + i] = e->str;
        lens[2 + i] = e->len;
    }
    return redisAppendCommandArgv(q->rc, (int)(2 + cnt), argv, lens);
}

/* Queues one block: members [off, off + cnt) of page p; with `last` the
 * sizes and expiries of both keys too. Members travel with their lengths,
 * so a member with a NUL byte is itself, not its prefix. */
static int block_append(struct big *g, const struct page *p, size_t off, size_t cnt, int last)
{
    stepq *q = g->v->q;
    const char *mread = g->type == 's' ? "SMISMEMBER" : "ZMSCORE";
    const char *card = g->type == 's' ? "SCARD" : "ZCARD";
    int ok = redisAppendCommand(q->rc, "MULTI") == REDIS_OK &&
             append_read(q, "TYPE", g->a, p, 0, 0) == REDIS_OK &&
             append_read(q, "TYPE", g->b, p, 0, 0) == REDIS_OK;

    if (ok && cnt > 0)
        ok = append_read(q, mread, g->a, p, off, cnt) == REDIS_OK &&
             append_read(q, mread, g->b, p, off, cnt) == REDIS_OK;
    if (ok && last)
        ok = append_read(q, card, g->a, p, 0, 0) == REDIS_OK &&
             append_read(q, card, g->b, p, 0, 0) == REDIS_OK &&
             append_read(q, "PEXPIRETIME", g->a, p, 0, 0) == REDIS_OK &&
             append_read(q, "PEXPIRETIME", g->b, p, 0, 0) == REDIS_OK;
    if (!ok || redisAppendCommand(q->rc, "EXEC") != REDIS_OK) {
        stepq__set_error(q, STEPQ_E_OOM, "out of memory while queueing commands");
        stepq__drop(q); /* a partial pipeline must not stay in the output buffer */
        return STEPQ_ERR;
    }
    return STEPQ_OK;
}

/* Adds member e (with its score s, a zset's, else NULL) to the digest's
 * lanes: the first and second 32 bits of the SHA1 of `e` (a set's) or
 * `len(e):e` and the score (a zset's), summed mod 2^32, so that the digest
 * does not depend on how the members were split into chunks. */
static void digest_member(struct big *g, const redisReply *e, const redisReply *s)
{
    struct sha1_ctx ctx;
    uint8_t h[SHA1_DIGEST_SIZE];
    char pre[32];

    sha1_init(&ctx);
    if (s != NULL) {
        int n = snprintf(pre, sizeof(pre), "%zu:", e->len);
        sha1_update(&ctx, (size_t)n, (const uint8_t *)pre);
    }
    sha1_update(&ctx, e->len, (const uint8_t *)e->str);
    if (s != NULL)
        sha1_update(&ctx, s->len, (const uint8_t *)s->str);
    sha1_digest(&ctx, sizeof(h), h);
    g->l1 =
        (g->l1 + ((uint64_t)h[0] << 24 | (uint64_t)h[1] << 16 | h[2] << 8 | h[3])) & 0xffffffffULL;
    g->l2 =
        (g->l2 + ((uint64_t)h[4] << 24 | (uint64_t)h[5] << 16 | h[6] << 8 | h[7])) & 0xffffffffULL;
}

/* Is reply x (an element of an SMISMEMBER or ZMSCORE answer) a member
 * present? *ok is cleared when x has neither shape. */
static int present(const struct big *g, const redisReply *x, int *ok)
{
    if (g->type == 's') {
        *ok &= x->type == REDIS_REPLY_INTEGER;
        return x->type == REDIS_REPLY_INTEGER && x->integer == 1;
    }
    *ok &= x->type == REDIS_REPLY_STRING || x->type == REDIS_REPLY_NIL;
    return x->type == REDIS_REPLY_STRING;
}

static int is_int(const redisReply *x)
{
    return x->type == REDIS_REPLY_INTEGER;
}

/* Reads one block (queued by block_append with the same arguments) and
 * adds what it found to g. A key that no longer has the type verify_batch
 * saw makes the pair different (the re-check decides), not an error. */
static int block_read(struct big *g, const struct page *p, size_t off, size_t cnt, int last)
{
    stepq *q = g->v->q;
    size_t len = block_len(cnt, last);
    redisReply *x = stepq__read_exec(q, len);
    const char *want = g->type == 's' ? "set" : "zset";
    int ok = x != NULL && x->type == REDIS_REPLY_ARRAY && x->elements == len;

    if (x == NULL)
        return STEPQ_ERR;
    if (ok &&
        (x->element[0]->type != REDIS_REPLY_STATUS || strcmp(x->element[0]->str, want) != 0 ||
         x->element[1]->type != REDIS_REPLY_STATUS || strcmp(x->element[1]->str, want) != 0)) {
        g->different = 1;
        freeReplyObject(x);
        return STEPQ_OK;
    }
    const redisReply *ina = ok && cnt > 0 ? x->element[2] : NULL,
                     *inb = ok && cnt > 0 ? x->element[3] : NULL;
    if (ina != NULL)
        ok = ina->type == REDIS_REPLY_ARRAY && inb->type == REDIS_REPLY_ARRAY &&
             ina->elements == cnt && inb->elements == cnt;
    for (size_t i = 0; ok && ina != NULL && i < cnt; i++) {
        const redisReply *ea = ina->element[i], *eb = inb->element[i];
        if (!present(g, ea, &ok))
            continue; /* it left the key verified meanwhile */
        g->n++;
        digest_member(g, p->m->element[(off + i) * p->step], g->type == 's' ? NULL : ea);
        if (!present(g, eb, &ok) ||
            (g->type == 'z' && (ea->len != eb->len || memcmp(ea->str, eb->str, ea->len) != 0)))
            g->nbad++;
    }
    if (ok && last) {
        redisReply **t = x->element + len - 4; /* sizes, then expiries */
        ok = is_int(t[0]) && is_int(t[1]) && is_int(t[2]) && is_int(t[3]);
        long long ea = ok ? t[2]->integer : 0, eb = ok ? t[3]->integer : 0;
        if (ok && t[0]->integer != t[1]->integer)
            g->different = 1;
        else if (ok && ((ea == -1) != (eb == -1) || (ea > 0 && llabs(ea - eb) > g->v->tol_ms)))
            g->ttl = 1;
    }
    freeReplyObject(x);
    if (!ok) {
        stepq__set_error(q, STEPQ_E_PROTOCOL,
                         "unexpected reply to %s in MULTI/EXEC; " STEPQ_VERIFY_SERVER,
                         g->type == 's' ? "SMISMEMBER" : "ZMSCORE");
        return STEPQ_ERR;
    }
    return STEPQ_OK;
}

/* Checks that every member of page p is a string. */
static int page_check(struct big *g, const struct page *p)
{
    if (p->m != NULL && p->m->type != REDIS_REPLY_ARRAY) {
        stepq__set_error(g->v->q, STEPQ_E_PROTOCOL, "unexpected reply to SRANDMEMBER/ZRANDMEMBER");
        return STEPQ_ERR;
    }
    for (size_t i = 0; p->m != NULL && i < p->m->elements; i++) {
        if (p->m->element[i]->type != REDIS_REPLY_STRING) {
            stepq__set_error(g->v->q, STEPQ_E_PROTOCOL, "unexpected member in SSCAN/ZSCAN reply");
            return STEPQ_ERR;
        }
    }
    return STEPQ_OK;
}

/* Reads the blocks of page p, then frees it. */
static int page_read(struct big *g, struct page *p)
{
    int rc = p->r != NULL ? page_blocks(g, p, block_read) : STEPQ_OK;

    freeReplyObject(p->r);
    p->r = NULL;
    return rc;
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
    struct page p = {r, r, 1, 1};
    if (page_check(g, &p) != STEPQ_OK || stepq__ensure(g->v->q) != STEPQ_OK ||
        page_blocks(g, &p, block_append) != STEPQ_OK) {
        freeReplyObject(r);
        return STEPQ_ERR;
    }
    return page_read(g, &p);
}

/* Every member, page by page (SSCAN/ZSCAN of the key verified), pipelined:
 * the next page is asked for before this page's blocks are read, so a page
 * costs one round trip; the block with the sizes and expiries is still the
 * last to run (Redis runs them in order). */
static int members_pages(struct big *g)
{
    stepq__vf *v = g->v;
    stepq *q = v->q;
    char cursor[32] = "0", cnt[24];
    size_t step = g->type == 's' ? 1 : 2;
    struct page prev = {0};
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
        struct page p = {r, r->element[1], step, 0};
        more = strcmp(cursor, "0") != 0;
        p.last = !more;
        /* Pacing that talks to Redis wants an empty pipe. */
        int io = prev.r == NULL || stepq__pace_io_due(&v->pace);
        if (io)
            rc = page_read(g, &prev);
        if (rc == STEPQ_OK)
            rc = stepq__pace_wait_io(&v->pace, (long)(p.m->elements / step), io);
        if (rc == STEPQ_OK && more)
            rc = stepq__queue_members(q, g->a, alen, g->type, cursor, cnt);
        if (rc == STEPQ_OK)
            rc = page_check(g, &p);
        if (rc == STEPQ_OK)
            rc = page_blocks(g, &p, block_append);
        if (rc == STEPQ_OK)
            rc = page_read(g, &prev);
        freeReplyObject(prev.r); /* after an error: replies not read */
        prev = p;
    }
    if (rc == STEPQ_OK)
        rc = page_read(g, &prev);
    freeReplyObject(prev.r);
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
