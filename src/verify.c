/*
 * verify.c - comparing every key of one side with its twin (the verify;
 * docs/migration-engine.md): the walk, the re-checks and the report. Hash
 * pairs are compared in verify_hash.c, big collections in verify_big.c;
 * verify.h is what the three share.
 *
 * Each pair is read atomically, so a write that lands between reading the
 * two keys cannot fake a difference: hash pairs in MULTI/EXEC blocks and
 * compared in the client (an equal pair is decided there, any other goes on
 * to the script), the others inside one script (verify_batch.lua); big sets
 * and zsets member by member in MULTI/EXEC chunks (verify_big.c). Under live
 * load a pair may still be caught mid-change (one side updated by a dual
 * write an instant before the other, a step that expired): mismatches are
 * kept and re-checked for a few rounds, and only what still differs is
 * reported.
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
#include <xxhash.h>

#include "verify.h"

static const char *const verdict_names[] = {"equal", "missing", "different", "ttl", "gone", "big"};

/* The verdict named s, or -1. */
static int parse_verdict(const char *s)
{
    for (int i = 0; i <= STEPQ_V_BIG; i++)
        if (strcmp(s, verdict_names[i]) == 0)
            return i;
    return -1;
}

uint64_t stepq__verify_share(const sds name, const char *digest)
{
    XXH64_state_t *st;
    uint64_t h;

    if (digest == NULL || *digest == '\0')
        return 0;
    st = XXH64_createState();
    if (st == NULL)
        return 0;
    XXH64_reset(st, 0);
    /* The name with a NUL after it, as when names were C strings: the
     * digests of names without a NUL byte are what they were. */
    XXH64_update(st, name, sdslen(name));
    XXH64_update(st, "", 1);
    XXH64_update(st, digest, strlen(digest));
    h = XXH64_digest(st);
    XXH64_freeState(st);
    return h;
}

/* Keeps a pair that differed (copies of its two names) for the re-checks. */
static int add_bad(stepq__vf *v, int rule, const sds a, const sds b, char type,
                   enum stepq__verdict verdict, uint64_t ca, uint64_t cb)
{
    if (v->nbad == v->capbad) {
        size_t cap = v->capbad ? v->capbad * 2 : 64;
        struct stepq__vbad *n = stepq__realloc(v->bad, cap * sizeof(*n));
        if (n == NULL)
            return STEPQ_ERR;
        v->bad = n;
        v->capbad = cap;
    }
    struct stepq__vbad *x = &v->bad[v->nbad];
    x->a = sdsdup(a);
    x->b = sdsdup(b);
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
 * Pairs
 * ------------------------------------------------------------------------- */

/*
 * A page of pairs on its way through the pipe (src/walk_pipe.c): its hash
 * pairs in MULTI/EXEC blocks first (one reader for them all), then the
 * pairs not decided there in verify_batch scripts (one reader each); the
 * big pairs the scripts find are compared member by member once the pipe
 * is empty (the page is held meanwhile).
 */
struct vf_page {
    stepq__vf *v;
    stepq__pairs pairs;
    stepq__verdict_fn each;
    size_t nhash;
    char *done;        /* decided in the client */
    size_t *at;        /* pair j of rest is pairs' at[j] */
    stepq__pairs rest; /* borrowed keys, their own arrays */
    size_t left;       /* readers still to run */
    struct vf_batch {
        struct vf_page *pg;
        size_t lo;
    } * bat;
    struct vf_big { /* a big pair: pairs' index, the type both keys had */
        size_t k;
        char type[8];
    } * bigs;
    size_t nbigs;
    struct vf_page *next; /* on v->held */
};

static void page_free(struct vf_page *pg)
{
    stepq__pairs_release(&pg->pairs);
    stepq__free(pg->done);
    stepq__free(pg->at);
    stepq__free(pg->rest.keys);
    stepq__free(pg->rest.types);
    stepq__free(pg->bat);
    stepq__free(pg->bigs);
    stepq__free(pg);
}

/* A page whose every reader ran: counted, or held for its big pairs. */
static void page_done(struct vf_page *pg)
{
    stepq__vf *v = pg->v;

    if (pg->nbigs > 0) {
        pg->next = v->held;
        v->held = pg;
        stepq__walk_idle(&v->walk);
        return;
    }
    v->done += (long long)pg->pairs.n;
    if (v->fn != NULL)
        v->fn(v->done, 0, NULL, NULL, v->arg);
    page_free(pg);
}

/* The reader's end: the page goes when its last reader has run. */
static int page_left(struct vf_page *pg, int rc)
{
    if (--pg->left == 0)
        page_done(pg);
    return rc;
}

/* Gives pair k of the page its verdict from its element of a verify_batch
 * reply: {verdict, digest of the key, digest of the twin}; a big
 * collection waits for an empty pipe. */
static int script_verdict(struct vf_page *pg, size_t k, const redisReply *e)
{
    stepq__vf *v = pg->v;
    const sds a = pg->pairs.keys[2 * k];
    int vd = -1;

    if (e->type == REDIS_REPLY_ARRAY && e->elements == 3 &&
        e->element[0]->type == REDIS_REPLY_STRING && e->element[1]->type == REDIS_REPLY_STRING &&
        e->element[2]->type == REDIS_REPLY_STRING)
        vd = parse_verdict(e->element[0]->str);
    if (vd < 0) {
        stepq__set_error(v->q, STEPQ_E_PROTOCOL,
                         "unexpected reply from script 'verify_batch'; " STEPQ_VERIFY_SERVER);
        return STEPQ_ERR;
    }
    /* A big pair's reply carries the type both keys have, not a digest. */
    if (vd == STEPQ_V_BIG) {
        struct vf_big *x = &pg->bigs[pg->nbigs++];
        x->k = k;
        snprintf(x->type, sizeof(x->type), "%s", e->element[1]->str);
        return STEPQ_OK;
    }
    uint64_t ca = stepq__verify_share(a, e->element[1]->str);
    uint64_t cb = stepq__verify_share(a, e->element[2]->str);
    v->cur = &pg->pairs;
    return pg->each(v, k, (enum stepq__verdict)vd, ca, cb);
}

/* The reply of one verify_batch script of a page. */
static int script_reader(stepq *q, void *ctx, int abort)
{
    struct vf_batch *x = ctx;
    struct vf_page *pg = x->pg;
    size_t batch = (size_t)pg->v->o.batch;
    size_t want = pg->rest.n - x->lo < batch ? pg->rest.n - x->lo : batch;
    int rc = STEPQ_OK;

    if (abort)
        return page_left(pg, STEPQ_OK);
    redisReply *r = stepq__read_reply(q);
    if (r == NULL)
        return page_left(pg, STEPQ_ERR);
    if (r->type != REDIS_REPLY_ARRAY || r->elements != want) {
        stepq__set_error(q, STEPQ_E_PROTOCOL,
                         "unexpected reply from script 'verify_batch': %zu verdicts for %zu "
                         "pairs; " STEPQ_VERIFY_SERVER,
                         r->elements, want);
        rc = STEPQ_ERR;
    }
    for (size_t i = 0; rc == STEPQ_OK && i < want; i++)
        rc = script_verdict(pg, pg->at[x->lo + i], r->element[i]);
    freeReplyObject(r);
    return page_left(pg, rc);
}

/* Queues the scripts for the pairs the client did not decide. */
static int send_scripts(stepq *q, stepq__window *w, struct vf_page *pg)
{
    stepq__vf *v = pg->v;
    const char *args[] = {v->big, v->tol};
    size_t batch = (size_t)v->o.batch;

    for (size_t k = 0; k < pg->pairs.n; k++) {
        if (pg->done[k])
            continue;
        pg->rest.keys[2 * pg->rest.n] = pg->pairs.keys[2 * k];
        pg->rest.keys[2 * pg->rest.n + 1] = pg->pairs.keys[2 * k + 1];
        pg->rest.types[pg->rest.n] = pg->pairs.types[k];
        pg->at[pg->rest.n++] = k;
    }
    for (size_t lo = 0; lo < pg->rest.n; lo += batch) {
        size_t hi = lo + batch < pg->rest.n ? lo + batch : pg->rest.n;
        struct vf_batch *x = &pg->bat[lo / batch];
        *x = (struct vf_batch){pg, lo};
        if (stepq__pairs_append(q, STEPQ_SCRIPT_VERIFY_BATCH, &pg->rest, lo, hi, 0, NULL, 2, args,
                                1) != STEPQ_OK)
            return STEPQ_ERR;
        pg->left++;
        if (stepq__window_push(q, w, script_reader, x, (long)(hi - lo)) != STEPQ_OK) {
            pg->left--;
            return STEPQ_ERR;
        }
    }
    return STEPQ_OK;
}

/* The window the page's readers go on: the walk's, or one of its own. */
static stepq__window *page_window(struct vf_page *pg)
{
    return &pg->v->walk.win;
}

/* The MULTI/EXEC blocks of a page's hash pairs; then its scripts go out. */
static int hash_reader(stepq *q, void *ctx, int abort)
{
    struct vf_page *pg = ctx;
    stepq__vf *v = pg->v;

    if (abort)
        return page_left(pg, STEPQ_OK);
    v->cur = &pg->pairs;
    int rc = stepq__verify_hashes_read(v, pg->nhash, pg->each, pg->done);
    if (rc == STEPQ_OK)
        rc = send_scripts(q, page_window(pg), pg);
    return page_left(pg, rc);
}

/* Sends a page of pairs (taken from *pairs, which is left empty): its hash
 * blocks, or straight its scripts when it has no hash pair. */
static int page_send(stepq__vf *v, stepq__pairs *pairs, stepq__verdict_fn each)
{
    stepq *q = v->q;
    struct vf_page *pg = stepq__calloc(1, sizeof(*pg));
    size_t n = pairs->n, batch = (size_t)v->o.batch;

    if (pg == NULL) {
        stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        return STEPQ_ERR;
    }
    pg->v = v;
    pg->pairs = *pairs;
    memset(pairs, 0, sizeof(*pairs));
    pg->each = each;
    pg->done = stepq__calloc(n + 1, 1);
    pg->at = stepq__calloc(n + 1, sizeof(*pg->at));
    pg->rest.keys = stepq__calloc(2 * n + 1, sizeof(*pg->rest.keys));
    pg->rest.types = stepq__calloc(n + 1, 1);
    pg->bat = stepq__calloc(n / batch + 2, sizeof(*pg->bat));
    pg->bigs = stepq__calloc(n + 1, sizeof(*pg->bigs));
    if (pg->done == NULL || pg->at == NULL || pg->rest.keys == NULL || pg->rest.types == NULL ||
        pg->bat == NULL || pg->bigs == NULL) {
        page_free(pg);
        stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        return STEPQ_ERR;
    }
    /* One reference of the sender's own, so that the page cannot go while
     * its readers are being pushed. */
    pg->left = 1;
    v->cur = &pg->pairs;
    size_t nh = stepq__verify_hashes_append(v);
    int rc = STEPQ_OK;
    if (nh == (size_t)-1) {
        rc = STEPQ_ERR;
    } else if (nh > 0) {
        pg->nhash = nh;
        pg->left++;
        if (stepq__window_push(q, page_window(pg), hash_reader, pg, (long)n) != STEPQ_OK) {
            pg->left--;
            rc = STEPQ_ERR;
        }
    } else {
        rc = send_scripts(q, page_window(pg), pg);
    }
    return page_left(pg, rc);
}

/* Compares the big pairs of the held pages, on an empty pipe. */
static int held_pages(stepq *q, void *arg)
{
    stepq__vf *v = arg;
    int rc = STEPQ_OK;

    (void)q;
    while (v->held != NULL) {
        struct vf_page *pg = v->held;
        v->held = pg->next;
        for (size_t i = 0; rc == STEPQ_OK && i < pg->nbigs; i++) {
            size_t k = pg->bigs[i].k;
            enum stepq__verdict verdict;
            uint64_t ca, cb;
            rc = stepq__verify_big(v, pg->pairs.keys[2 * k], pg->pairs.keys[2 * k + 1],
                                   pg->bigs[i].type, &verdict, &ca, &cb);
            v->cur = &pg->pairs;
            if (rc == STEPQ_OK)
                rc = pg->each(v, k, verdict, ca, cb);
        }
        pg->nbigs = 0;
        if (rc == STEPQ_OK)
            page_done(pg);
        else
            page_free(pg);
    }
    return rc;
}

/* Compares the current pairs (v->pairs, left empty) and waits for every
 * verdict: the fixed keys and the re-checks, outside the walk. */
static int compare_pairs(stepq__vf *v, stepq__verdict_fn each)
{
    if (v->pairs.n == 0)
        return STEPQ_OK;
    memset(&v->walk.win, 0, sizeof(v->walk.win));
    int rc = page_send(v, &v->pairs, each);
    if (rc != STEPQ_OK)
        stepq__window_abort(v->q, &v->walk.win);
    else
        rc = stepq__window_drain(v->q, &v->walk.win);
    if (rc == STEPQ_OK)
        rc = held_pages(v->q, v);
    stepq__window_release(&v->walk.win);
    return rc;
}

/* First pass: equal pairs count now; mismatches wait for the re-checks. */
static int first_verdict(stepq__vf *v, size_t k, enum stepq__verdict vd, uint64_t ca, uint64_t cb)
{
    int r = v->cur->rule[k];

    if (vd == STEPQ_V_GONE)
        return STEPQ_OK;
    v->dig[0] += ca;
    v->dig[1] += cb;
    if (vd == STEPQ_V_EQUAL) {
        v->per[r].equal++;
        return STEPQ_OK;
    }
    if (add_bad(v, r, v->cur->keys[2 * k], v->cur->keys[2 * k + 1], v->cur->types[k], vd, ca, cb) !=
        STEPQ_OK) {
        stepq__set_error(v->q, STEPQ_E_OOM, "out of memory");
        return STEPQ_ERR;
    }
    return STEPQ_OK;
}

/* A re-check replaces the pair's share of the digests. */
static int recheck_verdict(stepq__vf *v, size_t k, enum stepq__verdict vd, uint64_t ca, uint64_t cb)
{
    struct stepq__vbad *x = &v->bad[v->cur->rule[k]]; /* rule[] holds the index into bad[] here */

    if (vd == STEPQ_V_GONE)
        ca = cb = 0;
    v->dig[0] += ca - x->ca;
    v->dig[1] += cb - x->cb;
    x->ca = ca;
    x->cb = cb;
    x->v = vd;
    return STEPQ_OK;
}

static int recheck(stepq__vf *v)
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
            v->pairs.types[k] = v->bad[i].type;
            v->pairs.rule[k] = (int)i;
        }
        int rc = compare_pairs(v, recheck_verdict);
        stepq__pairs_clear(&v->pairs);
        if (rc != STEPQ_OK)
            return STEPQ_ERR;
        /* Keep only what still differs. */
        size_t w = 0;
        for (size_t i = 0; i < v->nbad; i++) {
            struct stepq__vbad *x = &v->bad[i];
            if (x->v == STEPQ_V_EQUAL || x->v == STEPQ_V_GONE) {
                if (x->v == STEPQ_V_EQUAL)
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

static int count_fixed(stepq__vf *v)
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
        /* A queue collection: absent is empty, compared both ways
         * (verify_batch.lua, S and Z). */
        if (v->pairs.types[k] == 's' || v->pairs.types[k] == 'z')
            v->pairs.types[k] = v->pairs.types[k] == 's' ? 'S' : 'Z';
        for (int s = 0; s < 2; s++) {
            sds key = v->pairs.keys[2 * k + (size_t)s];
            redisReply *e = stepq__commandf(q, "EXISTS %b", key, sdslen(key));
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
    stepq__vf *v = arg;
    enum stepq__side s;

    (void)cursor;
    for (size_t i = 0; i < keys->elements; i++) {
        int r = stepq__keymap_match(&q->km, keys->element[i]->str, keys->element[i]->len, &s, NULL,
                                    NULL);
        if (r >= 0 && q->km.rules[r].per_id)
            v->per[r].keys[s == v->side ? 0 : 1]++;
    }
    if (v->side == STEPQ_OLD)
        v->unmapped += stepq__walk_strays(q, keys, v->fn, v->arg, v->done, 0);
    if (stepq__pairs_from_page(&v->pairs, &q->km, keys, v->side) < 0) {
        stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        return STEPQ_ERR;
    }
    if (v->pairs.n == 0)
        return STEPQ_OK;
    if (v->in_walk)
        return stepq__walk_pace(q, &v->walk, &v->pace, (long)v->pairs.n) != STEPQ_OK
                   ? STEPQ_ERR
                   : page_send(v, &v->pairs, first_verdict);
    if (stepq__pace_wait(&v->pace, (long)v->pairs.n) != STEPQ_OK)
        return STEPQ_ERR;
    return compare_pairs(v, first_verdict);
}

static int cmp_sds(const void *a, const void *b)
{
    return sdscmp(*(const sds *)a, *(const sds *)b);
}

/* Sorts the n names and frees the duplicates; returns how many are left. */
static long dedupe(sds *got, long n)
{
    long w = 0;

    qsort(got, (size_t)n, sizeof(*got), cmp_sds);
    for (long i = 0; i < n; i++) {
        if (w > 0 && sdscmp(got[w - 1], got[i]) == 0)
            sdsfree(got[i]);
        else
            got[w++] = got[i];
    }
    return w;
}

/* Verifies the keys named in names[0..n) as if a SCAN page had given them. */
static int verify_names(stepq__vf *v, sds *names, long n)
{
    redisReply page = {.type = REDIS_REPLY_ARRAY, .elements = (size_t)n};
    redisReply *els = stepq__calloc((size_t)n + 1, sizeof(*els));
    redisReply **ptrs = stepq__calloc((size_t)n + 1, sizeof(*ptrs));
    int rc = STEPQ_ERR;

    if (els == NULL || ptrs == NULL) {
        stepq__set_error(v->q, STEPQ_E_OOM, "out of memory");
    } else {
        for (long i = 0; i < n; i++) {
            els[i].type = REDIS_REPLY_STRING;
            els[i].str = names[i];
            els[i].len = sdslen(names[i]);
            ptrs[i] = &els[i];
        }
        page.element = ptrs;
        rc = verify_page(v->q, &page, "0", v);
    }
    stepq__free(els);
    stepq__free(ptrs);
    return rc;
}

/* A sample: RANDOMKEY until `sample` distinct keys of the side verified
 * were found, or 20 times that many tries. */
static int verify_sample(stepq__vf *v)
{
    stepq *q = v->q;
    long want = v->o.sample, tries = 0, max = v->o.sample * 20;
    sds *got = stepq__calloc((size_t)want, sizeof(*got));
    long n = 0;
    int rc = STEPQ_ERR, oom = 0;

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
                           ? stepq__keymap_match(&q->km, r->str, r->len, &s, NULL, NULL)
                           : -1;
            if (rule >= 0 && s == v->side && q->km.rules[rule].per_id && n < want) {
                got[n] = sdsnewlen(r->str, r->len);
                oom |= got[n] == NULL;
                n += got[n] != NULL;
            }
            freeReplyObject(r);
        }
        if (oom) {
            stepq__set_error(q, STEPQ_E_OOM, "out of memory");
            goto out;
        }
        tries += round;
        n = dedupe(got, n); /* RANDOMKEY draws with replacement */
    }
    rc = verify_names(v, got, n);
out:
    for (long i = 0; i < n; i++)
        sdsfree(got[i]);
    stepq__free(got);
    return rc;
}

/* ---------------------------------------------------------------------------
 * The report: key names as src/keyname.c writes them
 * ------------------------------------------------------------------------- */

/* Appends t to s; NULL stays NULL (an OOM earlier in a chain). */
static sds cat(sds s, const char *t)
{
    return s ? sdscat(s, t) : NULL;
}

static sds cat_name(sds out, const sds n, char quote)
{
    return stepq__keyname_quote(out, n, sdslen(n), quote);
}

/* What the callback is told about a pair that still differs. */
static sds bad_message(const struct stepq__vbad *x)
{
    if (x->v == STEPQ_V_MISSING)
        return cat(cat_name(sdsnew("its twin "), x->b, '\''), " is missing");
    return cat_name(sdsnew(x->v == STEPQ_V_TTL ? "its expiry is off from its twin "
                                               : "different from its twin "),
                    x->b, '\'');
}

/* The report's line for a pair that still differs. */
static sds bad_line(const struct stepq__vbad *x)
{
    sds l = sdsnew(x->v == STEPQ_V_TTL ? "ttl off " : verdict_names[x->v]);

    l = cat_name(x->v == STEPQ_V_TTL ? l : cat(l, " "), x->a, '\'');
    return cat(cat_name(cat(l, " (twin "), x->b, '\''), ")");
}

/* Counts the pairs that still differ, per rule and verdict, names each one
 * to the callback, and returns the first `first_bad` lines of the report
 * (a new array), or NULL on OOM. */
static json_t *tell_bad(stepq__vf *v)
{
    json_t *first = json_array();

    for (size_t i = 0; first != NULL && i < v->nbad; i++) {
        struct stepq__vbad *x = &v->bad[i];
        struct stepq__vcount *c = &v->per[x->rule];
        if (x->v == STEPQ_V_MISSING)
            c->missing++;
        else if (x->v == STEPQ_V_TTL)
            c->ttl_off++;
        else
            c->different++;
        sds key = cat_name(sdsempty(), x->a, 0), msg = bad_message(x);
        sds line = (long)i < v->o.first_bad ? bad_line(x) : NULL;
        if (key == NULL || msg == NULL || ((long)i < v->o.first_bad && line == NULL) ||
            (line != NULL && json_array_append_new(first, json_string(line)) != 0)) {
            json_decref(first);
            first = NULL;
        } else if (v->fn != NULL) {
            v->fn(v->done, 0, key, msg, v->arg);
        }
        sdsfree(key);
        sdsfree(msg);
        sdsfree(line);
    }
    return first;
}

/* The report; `first` (consumed) holds the first offenders. */
static json_t *report_json(stepq__vf *v, long long finished_at, json_t *first)
{
    stepq *q = v->q;
    json_t *rules = json_array();
    struct stepq__vcount tot = {{0, 0}, 0, 0, 0, 0};
    int a = v->side == STEPQ_OLD ? 0 : 1; /* index of the old side in keys[] and dig[] */
    char dold[17], dnew[17];

    for (size_t r = 0; r < q->km.n; r++) {
        struct stepq__vcount *c = &v->per[r];
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
    return json_pack("{s:I, s:I, s:b, s:I, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:s, s:s, "
                     "s:o, s:o}",
                     "started_at", (json_int_t)v->started_at, "finished_at",
                     (json_int_t)finished_at, "reverse", v->o.reverse, "sample",
                     (json_int_t)v->o.sample, "clean", v->nbad == 0 && v->unmapped == 0, "old",
                     (json_int_t)tot.keys[0], "new", (json_int_t)tot.keys[1], "equal",
                     (json_int_t)tot.equal, "missing", (json_int_t)tot.missing, "different",
                     (json_int_t)tot.different, "ttl_off", (json_int_t)tot.ttl_off, "unmapped",
                     (json_int_t)v->unmapped, "digest_old", dold, "digest_new", dnew, "rules",
                     rules, "first_bad", first);
}

/* Records the report in stepq:verify (the flat fields of records.md). */
static int record(stepq *q, const json_t *rep, const char *misses)
{
    static const char *const fields[] = {"started_at", "finished_at", "reverse", "sample",
                                         "clean",      "old",         "new",     "equal",
                                         "missing",    "different",   "ttl_off", "unmapped",
                                         "digest_old", "digest_new"};
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
    const char *del[] = {"DEL", q->k_verify};
    redisReply *d = stepq__command(q, 2, del, NULL);
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
    stepq__vf *v = stepq__calloc(1, sizeof(*v));
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
    redisReply *m = stepq__commandf(q, "HGET %b primary_misses", q->k_stats, sdslen(q->k_stats));
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
    /* Pages of 25 batches (2500 names by default): the next SCAN's reply
     * waits behind the page before it, so only the page sent with it keeps
     * Redis busy during a round trip and the client's reading of the page
     * before (about 0.7 of Redis's time for the same pairs: the replies
     * parsed, sorted and hashed). At ten batches a link of 2-4 ms left
     * Redis idle between pages. */
    long count = stepq__page_count(v->o.batch, 25, v->o.max_latency_ms);
    v->in_walk = v->o.sample == 0;
    if (v->o.sample > 0
            ? verify_sample(v) != STEPQ_OK
            : stepq__walk_run(q, &v->walk, "0", count, stepq__walk_cap(count, v->o.max_latency_ms),
                              verify_page, held_pages, v) != STEPQ_OK)
        goto out;
    v->in_walk = 0;
    if (recheck(v) != STEPQ_OK)
        goto out;
    json_t *first = tell_bad(v);
    json_t *rep = first ? report_json(v, stepq__now_ms(), first) : NULL;
    if (rep == NULL) {
        stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        goto out;
    }
    if (record(q, rep, v->misses_at_start) != STEPQ_OK) {
        json_decref(rep);
        goto out;
    }
    if (ret_clean != NULL)
        *ret_clean = v->nbad == 0 && v->unmapped == 0;
    if (ret_json != NULL)
        rc = stepq__ret_json(q, rep, ret_json);
    else {
        json_decref(rep);
        rc = STEPQ_OK;
    }
out:
    /* Verify reads old keys (HGETALL, DUMP): in 'step' cleanup must not
     * take that for a reader (src/own_reads.c). */
    if (v->started_at > 0 && q->rc != NULL)
        rc = stepq__own_reads_note(q, v->started_at, rc);
    for (size_t i = 0; i < v->nbad; i++) {
        sdsfree(v->bad[i].a);
        sdsfree(v->bad[i].b);
    }
    stepq__free(v->bad);
    stepq__pairs_release(&v->pairs);
    while (v->held != NULL) {
        struct vf_page *pg = v->held;
        v->held = pg->next;
        page_free(pg);
    }
    stepq__free(v);
    return rc;
}
