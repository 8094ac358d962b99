/*
 * verify.c - comparing every key of one side with its twin (the verify;
 * docs/migration-engine.md). Each pair is read atomically, so a write that
 * lands between reading the two keys cannot fake a difference: hash pairs
 * in MULTI/EXEC blocks and compared here (an equal pair is decided here, any
 * other goes on to the script), the others inside one script
 * (verify_batch.lua); big sets and zsets are compared member by member in
 * chunks (verify_members.lua). Under live load a pair may still
 * be caught mid-change (one side updated by a dual write an instant before
 * the other, a step that expired): mismatches are kept and re-checked for a
 * few rounds, and only what still differs is reported.
 *
 * The digest of a side is the sum (mod 2^64) of XXH64(name of the key
 * verified, its content digest) over the keys compared: order-independent,
 * so a re-check replaces one key's share without a second walk.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <errno.h>
#include <jansson.h>
#include <nettle/sha1.h>
#include <xxhash.h>

#include "stepq_private.h"

enum verdict { V_EQUAL, V_MISSING, V_DIFFERENT, V_TTL, V_GONE, V_BIG };
static const char *const verdict_names[] = {"equal", "missing", "different", "ttl", "gone", "big"};

struct vcount {
    long long keys[2]; /* present on the side verified, and on the other */
    long long equal, missing, different, ttl_off;
};

struct vbad {
    int rule;
    sds a, b;
    char type;
    enum verdict v;
    uint64_t ca, cb; /* this pair's share of the two digests */
};

struct vf {
    stepq *q;
    stepq_verify_opts o;
    stepq_progress_fn fn;
    void *arg;
    enum stepq__side side;
    struct vcount per[STEPQ_RULES_MAX];
    uint64_t dig[2];
    struct vbad *bad;
    size_t nbad, capbad;
    stepq__pairs pairs;
    stepq__pace pace;
    long long done;
    char big[24], tol[24];
    long long tol_ms; /* tol as a number */
    long long started_at;
    char misses_at_start[24]; /* the stats' primary_misses when it began */
};

static enum verdict parse_verdict(const char *s)
{
    for (int i = 0; i <= V_BIG; i++)
        if (strcmp(s, verdict_names[i]) == 0)
            return (enum verdict)i;
    return V_DIFFERENT;
}

static uint64_t share(const char *name, const char *digest)
{
    XXH64_state_t *st;
    uint64_t h;

    if (digest == NULL || *digest == '\0')
        return 0;
    st = XXH64_createState();
    if (st == NULL)
        return 0;
    XXH64_reset(st, 0);
    XXH64_update(st, name, strlen(name) + 1);
    XXH64_update(st, digest, strlen(digest));
    h = XXH64_digest(st);
    XXH64_freeState(st);
    return h;
}

static int add_bad(struct vf *v, int rule, const char *a, const char *b, char type,
                   enum verdict verdict, uint64_t ca, uint64_t cb)
{
    if (v->nbad == v->capbad) {
        size_t cap = v->capbad ? v->capbad * 2 : 64;
        struct vbad *n = stepq__realloc(v->bad, cap * sizeof(*n));
        if (n == NULL)
            return STEPQ_ERR;
        v->bad = n;
        v->capbad = cap;
    }
    struct vbad *x = &v->bad[v->nbad];
    x->a = sdsnew(a);
    x->b = sdsnew(b);
    if (x->a == NULL || x->b == NULL) {
        sdsfree(x->a);
        sdsfree(x->b);
        return STEPQ_ERR;
    }
    x->rule = rule;
    x->type = type;
    x->v = verdict;
    x->ca = ca;
    x->cb = cb;
    v->nbad++;
    return STEPQ_OK;
}

static void nap(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* ---------------------------------------------------------------------------
 * Big collections: member by member
 * ------------------------------------------------------------------------- */

#define MEMBERS_PER_SCRIPT 1000 /* SSCAN's COUNT is a hint: a page may be larger */

/* Runs verify_members on members [off, off + cnt) of one scanned page. */
static int members_script(struct vf *v, const char *a, const char *b, char type,
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
static int members_chunk(struct vf *v, const char *a, const char *b, char type, const redisReply *m,
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
static int compare_big(struct vf *v, const char *a, const char *b, char type, enum verdict *ret,
                       uint64_t *ca, uint64_t *cb)
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
    *ret = nbad > 0 || strcmp(sv, "different") == 0 ? V_DIFFERENT
           : strcmp(sv, "ttl") == 0                 ? V_TTL
                                                    : V_EQUAL;
    *ca = share(a, dig);
    *cb = *ret == V_EQUAL ? *ca : share(a, "differs");
    return STEPQ_OK;
}

/* ---------------------------------------------------------------------------
 * Pairs
 * ------------------------------------------------------------------------- */

/* Compares the current pairs; calls `each` with every verdict. */
typedef int (*verdict_fn)(struct vf *v, size_t k, enum verdict verdict, uint64_t ca, uint64_t cb);

/* ---------------------------------------------------------------------------
 * Hash pairs, compared here
 *
 * Hash pairs are most of a verify (step records and progress), and the
 * script spent most of their cost turning the two HGETALL replies into Lua
 * tables, then sorting and hashing in Lua (callgrind: the reply conversion
 * alone was a fifth of redis-server's instructions). So the hash pairs of a
 * page are first read in MULTI/EXEC blocks (HGETALL and PEXPIRETIME of both
 * keys: an atomic snapshot, as the script's, of `batch` pairs at most), and
 * compared here. A pair
 * found equal, with its expiry within the tolerance, gets its verdict and
 * digest here, the digest computed as verify_batch.lua computes it (the
 * elements `len:len:fieldvalue`, sorted bytewise, SHA1; test_digest_pinned
 * holds both to the same value); any other pair (a key missing, empty or
 * not a hash, a difference, an expiry off) goes to the script, which gives
 * its verdict as before.
 * ------------------------------------------------------------------------- */

/* A hash's elements in the digest's form, `len(e):e` with e = `len(f):fv`,
 * all in one buffer: a pair costs two allocations, not one per field. */
struct elem {
    const char *p;
    size_t len;
};

/* Writes n in decimal at p (printf was a sixth of the client's time). */
static size_t put_dec(char *p, size_t n)
{
    char t[24];
    size_t i = sizeof(t);

    do {
        t[--i] = (char)('0' + n % 10);
        n /= 10;
    } while (n > 0);
    memcpy(p, t + i, sizeof(t) - i);
    return sizeof(t) - i;
}

static int cmp_elem(const void *a, const void *b)
{
    const struct elem *x = a, *y = b;
    int c = memcmp(x->p, y->p, x->len < y->len ? x->len : y->len);
    return c != 0 ? c : (x->len > y->len) - (x->len < y->len);
}

/* The elements of an HGETALL reply sorted bytewise (as the script's
 * table.sort orders them in the C locale), into *ret_el; returns their
 * buffer, or NULL when the reply is not a non-empty array of strings, or on
 * OOM (*oom set). The caller frees both. */
static char *hash_elements(const redisReply *r, struct elem **ret_el, int *oom)
{
    size_t n = r->elements / 2, total = 0;

    *ret_el = NULL;
    if (r->type != REDIS_REPLY_ARRAY || n == 0 || r->elements % 2 != 0)
        return NULL;
    for (size_t i = 0; i < r->elements; i++) {
        if (r->element[i]->type != REDIS_REPLY_STRING)
            return NULL;
        total += r->element[i]->len + 22; /* and a length with its colon */
    }
    char *buf = stepq__malloc(total), *p = buf;
    struct elem *el = stepq__calloc(n, sizeof(*el));
    if (buf == NULL || el == NULL) {
        stepq__free(buf);
        stepq__free(el);
        *oom = 1;
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        const redisReply *f = r->element[2 * i], *x = r->element[2 * i + 1];
        char pf[24];
        size_t nf = put_dec(pf, f->len);
        pf[nf++] = ':';
        el[i].p = p;
        p += put_dec(p, nf + f->len + x->len);
        *p++ = ':';
        memcpy(p, pf, nf);
        memcpy(p += nf, f->str, f->len);
        memcpy(p += f->len, x->str, x->len);
        p += x->len;
        el[i].len = (size_t)(p - el[i].p);
    }
    qsort(el, n, sizeof(*el), cmp_elem);
    *ret_el = el;
    return buf;
}

/* Whether one pair's snapshot (HGETALL a, HGETALL b, PEXPIRETIME a, b) is an
 * equal pair; then its digest into d. */
static int hash_equal(const struct vf *v, redisReply *const *r, char d[64], int *oom)
{
    struct elem *ea, *eb = NULL;
    char *ba = hash_elements(r[0], &ea, oom), *bb = NULL;
    size_t n = r[0]->elements / 2;
    int eq = ba != NULL && r[1]->elements == r[0]->elements && r[2]->type == REDIS_REPLY_INTEGER &&
             r[3]->type == REDIS_REPLY_INTEGER && (bb = hash_elements(r[1], &eb, oom)) != NULL;

    for (size_t i = 0; eq && i < n; i++)
        eq = ea[i].len == eb[i].len && memcmp(ea[i].p, eb[i].p, ea[i].len) == 0;
    if (eq) { /* as ttl_off in the script */
        long long xa = r[2]->integer, xb = r[3]->integer;
        eq = (xa == -1) == (xb == -1) && !(xa > 0 && llabs(xa - xb) > v->tol_ms);
    }
    if (eq) {
        struct sha1_ctx ctx;
        uint8_t sum[SHA1_DIGEST_SIZE];
        sha1_init(&ctx);
        for (size_t i = 0; i < n; i++)
            sha1_update(&ctx, ea[i].len, (const uint8_t *)ea[i].p);
        sha1_digest(&ctx, sizeof(sum), sum);
        int m = snprintf(d, 64, "hash:%zu:", n);
        for (int i = 0; i < 8; i++)
            m += snprintf(d + m, (size_t)(64 - m), "%02x", sum[i]);
    }
    stepq__free(ba);
    stepq__free(ea);
    stepq__free(bb);
    stepq__free(eb);
    return eq;
}

/* Queues the hash pairs of the current pairs as MULTI/EXEC blocks of at
 * most `batch` pairs each: an atomic block holds Redis no longer than a
 * script of the same batch would. */
static int append_hashes(struct vf *v, size_t per)
{
    stepq *q = v->q;
    size_t in = 0;
    int ok = REDIS_OK;

    for (size_t k = 0; k < v->pairs.n && ok == REDIS_OK; k++) {
        if (v->pairs.types[k] != 'h')
            continue;
        const char *a = v->pairs.keys[2 * k], *b = v->pairs.keys[2 * k + 1];
        if (in == 0)
            ok = redisAppendCommand(q->rc, "MULTI");
        if (ok == REDIS_OK)
            ok = redisAppendCommand(q->rc, "HGETALL %s", a) == REDIS_OK &&
                         redisAppendCommand(q->rc, "HGETALL %s", b) == REDIS_OK &&
                         redisAppendCommand(q->rc, "PEXPIRETIME %s", a) == REDIS_OK &&
                         redisAppendCommand(q->rc, "PEXPIRETIME %s", b) == REDIS_OK
                     ? REDIS_OK
                     : REDIS_ERR;
        if (ok == REDIS_OK && ++in == per) {
            ok = redisAppendCommand(q->rc, "EXEC");
            in = 0;
        }
    }
    if (ok == REDIS_OK && in > 0)
        ok = redisAppendCommand(q->rc, "EXEC");
    if (ok != REDIS_OK) {
        stepq__set_error(q, STEPQ_E_OOM, "out of memory while queueing commands");
        stepq__drop(q); /* a partial pipeline must not stay in the output buffer */
        return STEPQ_ERR;
    }
    return STEPQ_OK;
}

/* Reads one block of m pairs: its EXEC reply, or NULL with the error set. */
static redisReply *read_block(stepq *q, size_t m)
{
    redisReply *exec = stepq__read_exec(q, 4 * m);

    if (exec != NULL && (exec->type != REDIS_REPLY_ARRAY || exec->elements != 4 * m)) {
        stepq__set_error(q, STEPQ_E_PROTOCOL, "unexpected reply to HGETALL in MULTI/EXEC");
        freeReplyObject(exec);
        exec = NULL;
    }
    return exec;
}

/* Reads the hash pairs of the current pairs (MULTI/EXEC blocks) and gives
 * each one found equal its verdict; marks them in done[]. */
static int compare_hashes(struct vf *v, verdict_fn each, char *done)
{
    stepq *q = v->q;
    size_t n = 0, per = (size_t)v->o.batch, k = 0;
    int rc = STEPQ_OK, oom = 0;

    for (size_t i = 0; i < v->pairs.n; i++)
        n += v->pairs.types[i] == 'h';
    if (n == 0)
        return STEPQ_OK;
    if (stepq__ensure(q) != STEPQ_OK || append_hashes(v, per) != STEPQ_OK)
        return STEPQ_ERR;
    for (size_t first = 0; first < n; first += per) {
        size_t m = n - first < per ? n - first : per;
        redisReply *exec = read_block(q, m);
        if (exec == NULL) {
            if (q->rc == NULL)
                return STEPQ_ERR; /* lost: nothing more to read */
            rc = STEPQ_ERR;       /* read the other blocks, to stay in step */
            continue;
        }
        for (size_t j = 0; rc == STEPQ_OK && j < m; j++, k++) {
            while (v->pairs.types[k] != 'h')
                k++;
            char d[64];
            if (hash_equal(v, exec->element + 4 * j, d, &oom)) {
                uint64_t c = share(v->pairs.keys[2 * k], d);
                done[k] = 1;
                rc = each(v, k, V_EQUAL, c, c);
            } else if (oom) {
                stepq__set_error(q, STEPQ_E_OOM, "out of memory");
                rc = STEPQ_ERR;
            }
        }
        freeReplyObject(exec);
    }
    return rc;
}

static int compare_pairs(struct vf *v, verdict_fn each)
{
    stepq *q = v->q;
    const char *args[] = {v->big, v->tol};
    char *done = stepq__calloc(v->pairs.n + 1, 1);
    /* The pairs left to the script: borrowed keys, their own arrays. */
    stepq__pairs rest = {0};
    size_t *at = stepq__calloc(v->pairs.n + 1, sizeof(*at));
    rest.keys = stepq__calloc(2 * v->pairs.n + 1, sizeof(*rest.keys));
    rest.types = stepq__calloc(v->pairs.n + 1, 1);
    redisReply **rep = stepq__calloc(v->pairs.n / (size_t)v->o.batch + 2, sizeof(*rep));
    int rc = STEPQ_OK;

    if (done == NULL || at == NULL || rest.keys == NULL || rest.types == NULL || rep == NULL) {
        stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        rc = STEPQ_ERR;
    }
    if (rc == STEPQ_OK && (stepq__pace_wait(&v->pace, (long)v->pairs.n) != STEPQ_OK ||
                           compare_hashes(v, each, done) != STEPQ_OK))
        rc = STEPQ_ERR;
    for (size_t k = 0; rc == STEPQ_OK && k < v->pairs.n; k++) {
        if (done[k])
            continue;
        rest.keys[2 * rest.n] = v->pairs.keys[2 * k];
        rest.keys[2 * rest.n + 1] = v->pairs.keys[2 * k + 1];
        rest.types[rest.n] = v->pairs.types[k];
        at[rest.n++] = k;
    }
    size_t nrep = (rest.n + (size_t)v->o.batch - 1) / (size_t)v->o.batch;
    if (rc == STEPQ_OK && rest.n > 0 &&
        stepq__pairs_run(q, STEPQ_SCRIPT_VERIFY_BATCH, &rest, v->o.batch, 0, NULL, 2, args, 1,
                         rep) != STEPQ_OK)
        rc = STEPQ_ERR;
    for (size_t s = 0; rc == STEPQ_OK && s < nrep; s++) {
        for (size_t i = 0; rc == STEPQ_OK && i < rep[s]->elements; i++) {
            size_t k = at[s * (size_t)v->o.batch + i];
            const redisReply *e = rep[s]->element[i];
            const char *a = v->pairs.keys[2 * k], *b = v->pairs.keys[2 * k + 1];
            enum verdict vd = parse_verdict(e->element[0]->str);
            uint64_t ca = share(a, e->element[1]->str), cb = share(a, e->element[2]->str);
            if (vd == V_BIG)
                rc = compare_big(v, a, b, v->pairs.types[k], &vd, &ca, &cb);
            if (rc == STEPQ_OK)
                rc = each(v, k, vd, ca, cb);
        }
    }
    for (size_t s = 0; rep != NULL && s < nrep; s++)
        if (rep[s] != NULL)
            freeReplyObject(rep[s]);
    stepq__free(rep);
    stepq__free(rest.keys);
    stepq__free(rest.types);
    stepq__free(at);
    stepq__free(done);
    if (rc != STEPQ_OK)
        return STEPQ_ERR;
    v->done += (long long)v->pairs.n;
    if (v->fn != NULL)
        v->fn(v->done, 0, NULL, NULL, v->arg);
    return rc;
}

/* First pass: equal pairs count now; mismatches wait for the re-checks. */
static int first_verdict(struct vf *v, size_t k, enum verdict vd, uint64_t ca, uint64_t cb)
{
    int r = v->pairs.rule[k];

    if (vd == V_GONE)
        return STEPQ_OK;
    v->dig[0] += ca;
    v->dig[1] += cb;
    if (vd == V_EQUAL) {
        v->per[r].equal++;
        return STEPQ_OK;
    }
    if (add_bad(v, r, v->pairs.keys[2 * k], v->pairs.keys[2 * k + 1], v->pairs.types[k], vd, ca,
                cb) != STEPQ_OK) {
        stepq__set_error(v->q, STEPQ_E_OOM, "out of memory");
        return STEPQ_ERR;
    }
    return STEPQ_OK;
}

/* A re-check replaces the pair's share of the digests. */
static int recheck_verdict(struct vf *v, size_t k, enum verdict vd, uint64_t ca, uint64_t cb)
{
    struct vbad *x = &v->bad[v->pairs.rule[k]]; /* rule[] holds the index into bad[] here */

    if (vd == V_GONE)
        ca = cb = 0;
    v->dig[0] += ca - x->ca;
    v->dig[1] += cb - x->cb;
    x->ca = ca;
    x->cb = cb;
    x->v = vd;
    return STEPQ_OK;
}

static int recheck(struct vf *v)
{
    for (long round = 0; round < v->o.rounds && v->nbad > 0; round++) {
        nap(v->o.pause_ms);
        for (size_t i = 0; i < v->nbad; i++) {
            /* Reuse the pairs list; its rule[] carries the index into bad[]. */
            if (stepq__pairs_add(&v->pairs, &v->q->km, (size_t)v->bad[i].rule, v->side, "x") !=
                STEPQ_OK) {
                stepq__set_error(v->q, STEPQ_E_OOM, "out of memory");
                return STEPQ_ERR;
            }
            size_t k = v->pairs.n - 1;
            sdsfree(v->pairs.keys[2 * k]);
            sdsfree(v->pairs.keys[2 * k + 1]);
            v->pairs.keys[2 * k] = sdsdup(v->bad[i].a);
            v->pairs.keys[2 * k + 1] = sdsdup(v->bad[i].b);
            v->pairs.rule[k] = (int)i;
        }
        int rc = compare_pairs(v, recheck_verdict);
        stepq__pairs_clear(&v->pairs);
        if (rc != STEPQ_OK)
            return STEPQ_ERR;
        /* Keep only what still differs. */
        size_t w = 0;
        for (size_t i = 0; i < v->nbad; i++) {
            struct vbad *x = &v->bad[i];
            if (x->v == V_EQUAL || x->v == V_GONE) {
                if (x->v == V_EQUAL)
                    v->per[x->rule].equal++;
                sdsfree(x->a);
                sdsfree(x->b);
                continue;
            }
            v->bad[w++] = *x;
        }
        v->nbad = w;
    }
    return STEPQ_OK;
}

/* ---------------------------------------------------------------------------
 * Walks: the fixed keys, then all keys or a sample
 * ------------------------------------------------------------------------- */

static int count_fixed(struct vf *v)
{
    stepq *q = v->q;

    for (size_t r = 0; r < q->km.n; r++) {
        if (q->km.rules[r].per_id || q->km.rules[r].type == STEPQ_KT_CHANNEL)
            continue;
        if (stepq__pairs_add(&v->pairs, &q->km, r, v->side, NULL) != STEPQ_OK) {
            stepq__set_error(q, STEPQ_E_OOM, "out of memory");
            return STEPQ_ERR;
        }
        size_t k = v->pairs.n - 1;
        for (int s = 0; s < 2; s++) {
            redisReply *e = stepq__commandf(q, "EXISTS %s", v->pairs.keys[2 * k + (size_t)s]);
            if (e == NULL)
                return STEPQ_ERR;
            v->per[r].keys[s] += e->integer;
            freeReplyObject(e);
        }
    }
    int rc = compare_pairs(v, first_verdict);
    stepq__pairs_clear(&v->pairs);
    return rc;
}

static int verify_page(stepq *q, const redisReply *keys, const char *cursor, void *arg)
{
    struct vf *v = arg;
    enum stepq__side s;

    (void)cursor;
    for (size_t i = 0; i < keys->elements; i++) {
        int r =
            stepq__keymap_match(&q->km, keys->element[i]->str, keys->element[i]->len, &s, NULL, 0);
        if (r >= 0 && q->km.rules[r].per_id)
            v->per[r].keys[s == v->side ? 0 : 1]++;
    }
    if (stepq__pairs_from_page(&v->pairs, &q->km, keys, v->side) < 0) {
        stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        return STEPQ_ERR;
    }
    int rc = v->pairs.n ? compare_pairs(v, first_verdict) : STEPQ_OK;
    stepq__pairs_clear(&v->pairs);
    return rc;
}

static int cmp_sds(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A sample: RANDOMKEY until `sample` distinct keys of the side verified
 * were found, or 20 times that many tries. */
static int verify_sample(struct vf *v)
{
    stepq *q = v->q;
    long want = v->o.sample, tries = 0, max = v->o.sample * 20;
    sds *got = stepq__calloc((size_t)want, sizeof(*got));
    long n = 0;
    int rc = STEPQ_ERR;

    if (got == NULL) {
        stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        return STEPQ_ERR;
    }
    while (n < want && tries < max) {
        long round = max - tries < 256 ? max - tries : 256;
        if (stepq__ensure(q) != STEPQ_OK)
            goto out;
        for (long i = 0; i < round; i++)
            redisAppendCommand(q->rc, "RANDOMKEY");
        for (long i = 0; i < round; i++) {
            redisReply *r = stepq__read_reply(q);
            enum stepq__side s;
            if (r == NULL)
                goto out;
            int rule = r->type == REDIS_REPLY_STRING
                           ? stepq__keymap_match(&q->km, r->str, r->len, &s, NULL, 0)
                           : -1;
            if (rule >= 0 && s == v->side && q->km.rules[rule].per_id && n < want)
                got[n++] = sdsnewlen(r->str, r->len);
            freeReplyObject(r);
        }
        tries += round;
        /* Drop duplicates: RANDOMKEY draws with replacement. */
        qsort(got, (size_t)n, sizeof(*got), cmp_sds);
        long w = 0;
        for (long i = 0; i < n; i++) {
            if (w > 0 && got[i] != NULL && strcmp(got[w - 1], got[i]) == 0)
                sdsfree(got[i]);
            else
                got[w++] = got[i];
        }
        n = w;
    }
    redisReply page = {.type = REDIS_REPLY_ARRAY, .elements = (size_t)n};
    redisReply *els = stepq__calloc((size_t)n + 1, sizeof(*els));
    redisReply **ptrs = stepq__calloc((size_t)n + 1, sizeof(*ptrs));
    if (els == NULL || ptrs == NULL) {
        stepq__free(els);
        stepq__free(ptrs);
        stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        goto out;
    }
    for (long i = 0; i < n; i++) {
        els[i].type = REDIS_REPLY_STRING;
        els[i].str = got[i];
        els[i].len = sdslen(got[i]);
        ptrs[i] = &els[i];
    }
    page.element = ptrs;
    rc = verify_page(q, &page, "0", v);
    stepq__free(els);
    stepq__free(ptrs);
out:
    for (long i = 0; i < n; i++)
        sdsfree(got[i]);
    stepq__free(got);
    return rc;
}

/* ---------------------------------------------------------------------------
 * The report
 * ------------------------------------------------------------------------- */

static json_t *report_json(struct vf *v, long long finished_at)
{
    stepq *q = v->q;
    json_t *rules = json_array(), *first = json_array();
    struct vcount tot = {{0, 0}, 0, 0, 0, 0};
    int a = v->side == STEPQ_OLD ? 0 : 1; /* index of the old side in keys[] and dig[] */
    char dold[17], dnew[17];

    for (size_t i = 0; i < v->nbad; i++) {
        struct vbad *x = &v->bad[i];
        struct vcount *c = &v->per[x->rule];
        if (x->v == V_MISSING)
            c->missing++;
        else if (x->v == V_TTL)
            c->ttl_off++;
        else
            c->different++;
        if ((long)json_array_size(first) < v->o.first_bad) {
            char line[600];
            snprintf(line, sizeof(line), "%s '%s' (twin '%s')",
                     x->v == V_TTL ? "ttl off" : verdict_names[x->v], x->a, x->b);
            json_array_append_new(first, json_string(line));
        }
    }
    for (size_t r = 0; r < q->km.n; r++) {
        struct vcount *c = &v->per[r];
        if (q->km.rules[r].type == STEPQ_KT_CHANNEL)
            continue;
        json_array_append_new(
            rules,
            json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I}", "rule", q->km.rules[r].name, "old",
                      (json_int_t)c->keys[a ? 1 : 0], "new", (json_int_t)c->keys[a ? 0 : 1],
                      "equal", (json_int_t)c->equal, "missing", (json_int_t)c->missing, "different",
                      (json_int_t)c->different, "ttl_off", (json_int_t)c->ttl_off));
        tot.keys[0] += c->keys[a ? 1 : 0];
        tot.keys[1] += c->keys[a ? 0 : 1];
        tot.equal += c->equal;
        tot.missing += c->missing;
        tot.different += c->different;
        tot.ttl_off += c->ttl_off;
    }
    snprintf(dold, sizeof(dold), "%016llx", (unsigned long long)v->dig[a]);
    snprintf(dnew, sizeof(dnew), "%016llx", (unsigned long long)v->dig[1 - a]);
    return json_pack("{s:I, s:I, s:b, s:I, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:s, s:s, s:o, "
                     "s:o}",
                     "started_at", (json_int_t)v->started_at, "finished_at",
                     (json_int_t)finished_at, "reverse", v->o.reverse, "sample",
                     (json_int_t)v->o.sample, "clean", v->nbad == 0, "old", (json_int_t)tot.keys[0],
                     "new", (json_int_t)tot.keys[1], "equal", (json_int_t)tot.equal, "missing",
                     (json_int_t)tot.missing, "different", (json_int_t)tot.different, "ttl_off",
                     (json_int_t)tot.ttl_off, "digest_old", dold, "digest_new", dnew, "rules",
                     rules, "first_bad", first);
}

/* Records the report in stepq:verify (the flat fields of records.md). */
static int record(stepq *q, const json_t *rep, const char *misses)
{
    static const char *const fields[] = {
        "started_at", "finished_at", "reverse",   "sample",  "clean",      "old",       "new",
        "equal",      "missing",     "different", "ttl_off", "digest_old", "digest_new"};
    enum { NF = sizeof(fields) / sizeof(*fields) };
    const char *argv[2 + 2 * NF + 4];
    char vals[NF][32];
    int argc = 0;

    argv[argc++] = "HSET";
    argv[argc++] = q->k_verify;
    for (int i = 0; i < NF; i++) {
        json_t *x = json_object_get(rep, fields[i]);
        if (json_is_boolean(x))
            snprintf(vals[i], sizeof(vals[i]), "%d", json_is_true(x));
        else if (json_is_integer(x))
            snprintf(vals[i], sizeof(vals[i]), "%lld", (long long)json_integer_value(x));
        else
            snprintf(vals[i], sizeof(vals[i]), "%s", json_string_value(x));
        argv[argc++] = fields[i];
        argv[argc++] = vals[i];
    }
    sds first = sdsempty();
    size_t i;
    json_t *x;
    json_array_foreach(json_object_get(rep, "first_bad"), i, x)
    {
        first = sdscatfmt(first, "%s%s", i ? "; " : "", json_string_value(x));
    }
    argv[argc++] = "first_bad";
    argv[argc++] = first;
    argv[argc++] = "misses_at_start";
    argv[argc++] = misses;
    redisReply *d = stepq__commandf(q, "DEL %s", q->k_verify);
    redisReply *r = d ? stepq__command(q, argc, argv, NULL) : NULL;
    freeReplyObject(d);
    sdsfree(first);
    if (r == NULL)
        return STEPQ_ERR;
    freeReplyObject(r);
    return STEPQ_OK;
}

static int defaults(stepq *q, stepq_verify_opts *o)
{
    if (o->batch == 0)
        o->batch = 100;
    if (o->rounds == 0)
        o->rounds = 3;
    else if (o->rounds == -1)
        o->rounds = 0; /* asked for none */
    if (o->pause_ms == 0)
        o->pause_ms = 200;
    if (o->ttl_tolerance_ms == 0)
        o->ttl_tolerance_ms = 2000;
    if (o->big == 0)
        o->big = 10000;
    if (o->first_bad == 0)
        o->first_bad = 10;
    if (o->batch < 1 || o->batch > 1000 || o->sample < 0 || o->sample > 10000000 || o->rounds < 0 ||
        o->rounds > 100 || o->pause_ms < 0 || o->pause_ms > 60000 || o->ttl_tolerance_ms < 0 ||
        o->big < 1 || o->first_bad < 0 || o->first_bad > 1000 || o->rate < 0) {
        stepq__set_error(q, STEPQ_E_INVALID,
                         "verify options out of range; batch 1-1000, sample 0-10000000, rounds "
                         "0-100, pause 0-60000 ms");
        return STEPQ_ERR;
    }
    return STEPQ_OK;
}

int stepq_verify(stepq *q, const stepq_verify_opts *opts, stepq_progress_fn fn, void *arg,
                 int *ret_clean, char **ret_json)
{
    stepq_verify_opts none = {0};
    struct vf *v = stepq__calloc(1, sizeof(*v));
    int rc = STEPQ_ERR;

    stepq__clear_error(q);
    if (v == NULL) {
        stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        return STEPQ_ERR;
    }
    v->q = q;
    v->o = opts ? *opts : none;
    v->fn = fn;
    v->arg = arg;
    if (defaults(q, &v->o) != STEPQ_OK)
        goto out;
    v->side = v->o.reverse ? STEPQ_NEW : STEPQ_OLD;
    v->started_at = stepq__now_ms();
    /* A clean verify answers the step-primary misses before it (health). */
    redisReply *m = stepq__commandf(q, "HGET %s primary_misses", q->k_stats);
    if (m == NULL)
        goto out;
    snprintf(v->misses_at_start, sizeof(v->misses_at_start), "%s",
             m->type == REDIS_REPLY_STRING ? m->str : "0");
    freeReplyObject(m);
    snprintf(v->big, sizeof(v->big), "%ld", v->o.big);
    snprintf(v->tol, sizeof(v->tol), "%ld", v->o.ttl_tolerance_ms);
    v->tol_ms = v->o.ttl_tolerance_ms;
    stepq__pace_init(&v->pace, q, v->o.rate, v->o.max_latency_ms, 0);
    if (count_fixed(v) != STEPQ_OK)
        goto out;
    if (v->o.sample > 0 ? verify_sample(v) != STEPQ_OK
                        : stepq__walk_ns(q, "0", stepq__walk_count(v->o.batch, v->o.max_latency_ms),
                                         verify_page, v) != STEPQ_OK)
        goto out;
    if (recheck(v) != STEPQ_OK)
        goto out;
    json_t *rep = report_json(v, stepq__now_ms());
    if (rep == NULL) {
        stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        goto out;
    }
    if (record(q, rep, v->misses_at_start) != STEPQ_OK) {
        json_decref(rep);
        goto out;
    }
    if (ret_clean != NULL)
        *ret_clean = v->nbad == 0;
    if (ret_json != NULL)
        rc = stepq__ret_json(q, rep, ret_json);
    else {
        json_decref(rep);
        rc = STEPQ_OK;
    }
out:
    for (size_t i = 0; i < v->nbad; i++) {
        sdsfree(v->bad[i].a);
        sdsfree(v->bad[i].b);
    }
    stepq__free(v->bad);
    stepq__pairs_release(&v->pairs);
    stepq__free(v);
    return rc;
}
