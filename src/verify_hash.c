/*
 * verify_hash.c - hash pairs, read in MULTI/EXEC blocks and compared and
 * digested in the client.
 *
 * Hash pairs are most of a verify (step records and progress), and the
 * script spent most of their cost turning the two HGETALL replies into Lua
 * tables, then sorting and hashing in Lua (callgrind: the reply conversion
 * alone was a fifth of redis-server's instructions). So the hash pairs of a
 * page are first read in MULTI/EXEC blocks (HGETALL and PEXPIRETIME of both
 * keys: an atomic snapshot, as the script's, of `batch` pairs at most), and
 * compared here. A pair found equal, with its expiry within the tolerance,
 * gets its verdict and digest here, the digest computed as verify_batch.lua computes it (the
 * elements `len:len:fieldvalue`, sorted bytewise, SHA1; test_digest_pinned
 * holds both to the same value); any other pair (a key missing, empty or
 * not a hash, a difference, an expiry off) goes to the script, which gives
 * its verdict as before.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <nettle/sha1.h>

#include "verify.h"

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

/* Whether two HGETALL replies hold the same strings in the same order. */
static int same_order(const redisReply *a, const redisReply *b)
{
    for (size_t i = 0; i < a->elements; i++) {
        const redisReply *x = a->element[i], *y = b->element[i];
        if (y->type != REDIS_REPLY_STRING || x->len != y->len ||
            memcmp(x->str, y->str, x->len) != 0)
            return 0;
    }
    return 1;
}

/* Whether one pair's snapshot (HGETALL a, HGETALL b, PEXPIRETIME a, b) is an
 * equal pair; then its digest into d. */
static int hash_equal(const stepq__vf *v, redisReply *const *r, char d[64], int *oom)
{
    struct elem *ea, *eb = NULL;
    char *ba = hash_elements(r[0], &ea, oom), *bb = NULL;
    size_t n = r[0]->elements / 2;
    int eq = ba != NULL && r[1]->type == REDIS_REPLY_ARRAY && r[1]->elements == r[0]->elements &&
             r[2]->type == REDIS_REPLY_INTEGER && r[3]->type == REDIS_REPLY_INTEGER;

    /* COPY of a small (listpack) hash keeps its order: the same fields and
     * values in the same order are the same content (fields are unique), and
     * the twin need not be sorted. Any other order is compared sorted. */
    if (eq && !same_order(r[0], r[1]) && (bb = hash_elements(r[1], &eb, oom)) == NULL)
        eq = 0;
    for (size_t i = 0; eq && eb != NULL && i < n; i++)
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

/* Queues `cmd` with one key of len bytes (none when key is NULL). By
 * argv, not by format: formatting "%b" was a fifth of the client's time. */
static int append2(stepq *q, const char *cmd, const char *key, size_t len)
{
    const char *argv[2] = {cmd, key};
    size_t lens[2] = {strlen(cmd), len};

    return redisAppendCommandArgv(q->rc, key ? 2 : 1, argv, lens);
}

/* Queues the hash pairs of the current pairs as MULTI/EXEC blocks of at
 * most `batch` pairs each: an atomic block holds Redis no longer than a
 * script of the same batch would. */
static int append_hashes(stepq__vf *v, size_t per)
{
    stepq *q = v->q;
    size_t in = 0;
    int ok = REDIS_OK;

    for (size_t k = 0; k < v->cur->n && ok == REDIS_OK; k++) {
        if (v->cur->types[k] != 'h')
            continue;
        const sds a = v->cur->keys[2 * k], b = v->cur->keys[2 * k + 1];
        size_t la = sdslen(a), lb = sdslen(b);
        if (in == 0)
            ok = append2(q, "MULTI", NULL, 0);
        if (ok == REDIS_OK)
            ok = append2(q, "HGETALL", a, la) == REDIS_OK &&
                         append2(q, "HGETALL", b, lb) == REDIS_OK &&
                         append2(q, "PEXPIRETIME", a, la) == REDIS_OK &&
                         append2(q, "PEXPIRETIME", b, lb) == REDIS_OK
                     ? REDIS_OK
                     : REDIS_ERR;
        if (ok == REDIS_OK && ++in == per) {
            ok = append2(q, "EXEC", NULL, 0);
            in = 0;
        }
    }
    if (ok == REDIS_OK && in > 0)
        ok = append2(q, "EXEC", NULL, 0);
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

size_t stepq__verify_hashes_append(stepq__vf *v)
{
    size_t n = 0;

    for (size_t i = 0; i < v->cur->n; i++)
        n += v->cur->types[i] == 'h';
    if (n == 0)
        return 0;
    if (stepq__ensure(v->q) != STEPQ_OK || append_hashes(v, (size_t)v->o.batch) != STEPQ_OK)
        return (size_t)-1;
    return n;
}

int stepq__verify_hashes_read(stepq__vf *v, size_t n, stepq__verdict_fn each, char *done)
{
    stepq *q = v->q;
    size_t per = (size_t)v->o.batch, k = 0;
    int rc = STEPQ_OK, oom = 0;

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
            while (v->cur->types[k] != 'h')
                k++;
            char d[64];
            if (hash_equal(v, exec->element + 4 * j, d, &oom)) {
                uint64_t c = stepq__verify_share(v->cur->keys[2 * k], d);
                done[k] = 1;
                rc = each(v, k, STEPQ_V_EQUAL, c, c);
            } else if (oom) {
                stepq__set_error(q, STEPQ_E_OOM, "out of memory");
                rc = STEPQ_ERR;
            }
        }
        freeReplyObject(exec);
    }
    return rc;
}
