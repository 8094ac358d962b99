/*
 * backfill.c - copying the old keyspace to the new one while writers dual
 * write (docs/migration-engine.md). The walk has two stages, both
 * checkpointed in the record hash stepq:backfill after every batch:
 *
 *   fixed  the keys without an id (the queue collections): each merged in
 *          chunks read with SSCAN/ZSCAN, the member cursor checkpointed;
 *   scan   one SCAN of the namespace; each page's old per-id keys go to
 *          backfill_batch.lua in pipelined scripts of `batch` pairs.
 *
 * The scan checkpoint is the cursor that produced the page being applied:
 * it only ever names work that is durable, so after a kill -9 the next run
 * redoes at most one page, and every copy is idempotent (COPY without
 * REPLACE, members re-checked in the source), so the result is the same.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "stepq_private.h"

struct bf {
    stepq *q;
    stepq_backfill_opts o;
    stepq_progress_fn fn;
    void *arg;
    stepq_backfill_result res;
    stepq__pace pace;
    stepq__pairs pairs;
    char owner[33];
    char big[24];
    const char *dry;
    int member_ckpt; /* big collections checkpoint their member cursor */
    stepq__walk walk;
    /* Big collections found by the scan stage's scripts, merged in chunks
     * once the pipe is empty (bf_idle). */
    struct bf_big {
        sds src, dst;
        char type;
    } * bigs;
    size_t nbigs, capbigs;
};

/* One page of the scan stage in flight: its scripts' readers share it. */
struct bf_page {
    struct bf *b;
    stepq__pairs pairs;
    size_t left; /* scripts whose reply is still to read */
    struct bf_batch {
        struct bf_page *pg;
        size_t lo;
    } * bat;
};

static void report(struct bf *b, const char *key, const char *msg)
{
    if (b->fn != NULL)
        b->fn(b->res.keys_done, b->res.keys_total, key, msg, b->arg);
}

static int hset(stepq *q, const char *key, int n, const char **fv)
{
    const char *argv[24];

    argv[0] = "HSET";
    argv[1] = key;
    for (int i = 0; i < n; i++)
        argv[2 + i] = fv[i];
    redisReply *r = stepq__command(q, n + 2, argv, NULL);
    if (r == NULL)
        return STEPQ_ERR;
    freeReplyObject(r);
    return STEPQ_OK;
}

/* ---------------------------------------------------------------------------
 * Preflight: the phase, pinned processes, the memory the copy will add
 * ------------------------------------------------------------------------- */

/* A live process pinned to 'job' does not dual write: a copy taken now
 * would miss its updates. */
static int job_pinned_procs(stepq *q, long *ret)
{
    json_t *a = stepq__procs(q), *v;
    size_t i;

    if (a == NULL)
        return STEPQ_ERR;
    *ret = 0;
    json_array_foreach(a, i, v)
    {
        const char *ph = json_string_value(json_object_get(v, "phase"));
        if (ph != NULL && strcmp(ph, "job") == 0)
            (*ret)++;
    }
    json_decref(a);
    return STEPQ_OK;
}

/* The refusal for processes pinned to 'job' (they write the old keys only),
 * for the walk `what`. */
static void pinned_why(char *why, size_t len, const char *what, long pinned)
{
    snprintf(why, len,
             "cannot %s: %ld live process(es) are pinned to phase 'job' and do not dual-write; "
             "restart them with ENABLE_DUAL_WRITE_STEPS=true (see 'stepq migrate status')",
             what, pinned);
}

/* A number field of an INFO reply ("name:123\r\n"); absent: 0. */
static int info_field(stepq *q, const char *info, const char *name, long long *ret)
{
    const char *p = strstr(info, name);

    *ret = 0;
    if (p == NULL)
        return STEPQ_OK;
    p += strlen(name);
    return stepq__parse_ll(q, p, strcspn(p, "\r\n"), "INFO memory", ret);
}

/* Samples RANDOMKEY: the share of the database that is old per-id keys, and
 * the memory of those without a new twin yet. */
static int sample_keys(struct bf *b, long long dbsize, double *ret_old_share,
                       long long *ret_add_bytes)
{
    stepq *q = b->q;
    enum { N = 256 };
    enum stepq__side side;
    long old = 0, twinless = 0;
    long long bytes = 0;

    *ret_old_share = 0;
    *ret_add_bytes = 0;
    if (dbsize == 0)
        return STEPQ_OK;
    if (stepq__ensure(q) != STEPQ_OK)
        return STEPQ_ERR;
    for (int i = 0; i < N; i++)
        redisAppendCommand(q->rc, "RANDOMKEY");
    stepq__pairs p = {0};
    for (int i = 0; i < N; i++) {
        redisReply *r = stepq__read_reply(q);
        if (r == NULL) {
            stepq__pairs_release(&p);
            return STEPQ_ERR;
        }
        const char *id = NULL;
        size_t idlen = 0;
        int rule = r->type == REDIS_REPLY_STRING
                       ? stepq__keymap_match(&q->km, r->str, r->len, &side, &id, &idlen)
                       : -1;
        if (rule >= 0 && side == STEPQ_OLD && q->km.rules[rule].per_id) {
            old++;
            stepq__pairs_add_n(&p, &q->km, (size_t)rule, STEPQ_OLD, id, idlen);
        }
        freeReplyObject(r);
    }
    for (size_t i = 0; i < p.n; i++) {
        redisAppendCommand(q->rc, "MEMORY USAGE %b", p.keys[2 * i], sdslen(p.keys[2 * i]));
        redisAppendCommand(q->rc, "EXISTS %b", p.keys[2 * i + 1], sdslen(p.keys[2 * i + 1]));
    }
    for (size_t i = 0; i < p.n; i++) {
        redisReply *m = stepq__read_reply(q), *e = m ? stepq__read_reply(q) : NULL;
        if (m != NULL && e != NULL && m->type == REDIS_REPLY_INTEGER && e->integer == 0) {
            bytes += m->integer;
            twinless++;
        }
        freeReplyObject(m);
        freeReplyObject(e);
        if (q->rc == NULL) {
            stepq__pairs_release(&p);
            return STEPQ_ERR;
        }
    }
    stepq__pairs_release(&p);
    *ret_old_share = (double)old / N;
    if (twinless > 0)
        *ret_add_bytes = (long long)((double)dbsize * ((double)twinless / N) *
                                     ((double)bytes / (double)twinless));
    return STEPQ_OK;
}

/* The size (members, or 1 for a plain key) and memory of a fixed key,
 * counting the memory only when its twin is absent. */
static int fixed_size(struct bf *b, size_t r, long long *ret_units, long long *ret_bytes)
{
    stepq *q = b->q;
    sds src = stepq__keymap_key(&q->km, r, STEPQ_OLD, NULL);
    sds dst = stepq__keymap_key(&q->km, r, STEPQ_NEW, NULL);
    enum stepq__keytype t = q->km.rules[r].type;
    int rc = STEPQ_ERR;

    *ret_units = *ret_bytes = 0;
    redisReply *c = stepq__commandf(q, "%s %b",
                                    t == STEPQ_KT_SET    ? "SCARD"
                                    : t == STEPQ_KT_ZSET ? "ZCARD"
                                                         : "EXISTS",
                                    src, sdslen(src));
    if (c == NULL)
        goto out;
    *ret_units = c->type == REDIS_REPLY_INTEGER ? c->integer : 0;
    freeReplyObject(c);
    redisReply *e = stepq__commandf(q, "EXISTS %b", dst, sdslen(dst));
    if (e == NULL)
        goto out;
    int twin = e->integer == 1;
    freeReplyObject(e);
    if (!twin && *ret_units > 0) {
        redisReply *m = stepq__commandf(q, "MEMORY USAGE %b SAMPLES 5", src, sdslen(src));
        if (m == NULL)
            goto out;
        *ret_bytes = m->type == REDIS_REPLY_INTEGER ? m->integer : 0;
        freeReplyObject(m);
    }
    rc = STEPQ_OK;
out:
    sdsfree(src);
    sdsfree(dst);
    return rc;
}

/* Estimates the work (keys_total) and the memory the copy adds. With up to
 * 10000 keys in the database the per-id keys are counted exactly. */
static int estimate(struct bf *b, long long *ret_used, long long *ret_max)
{
    stepq *q = b->q;
    redisReply *r = stepq__commandf(q, "DBSIZE");
    long long dbsize, total = 0, bytes = 0;
    double share;

    if (r == NULL)
        return STEPQ_ERR;
    int ok = stepq__reply_ll(q, r, "DBSIZE", &dbsize) == STEPQ_OK;
    freeReplyObject(r);
    if (!ok)
        return STEPQ_ERR;
    if (sample_keys(b, dbsize, &share, &bytes) != STEPQ_OK)
        return STEPQ_ERR;
    if (dbsize <= 10000) {
        json_t *counts = stepq__key_counts(q), *v;
        size_t i;
        if (counts == NULL)
            return STEPQ_ERR;
        json_array_foreach(counts, i, v)
        {
            for (size_t k = 0; k < q->km.n; k++) {
                const char *name = json_string_value(json_object_get(v, "rule"));
                if (q->km.rules[k].per_id && name != NULL && strcmp(q->km.rules[k].name, name) == 0)
                    total += stepq__json_ll(v, "old_keys");
            }
        }
        json_decref(counts);
    } else {
        total = (long long)(share * (double)dbsize);
    }
    for (size_t k = 0; k < q->km.n; k++) {
        long long units, kb;
        if (q->km.rules[k].per_id || q->km.rules[k].type == STEPQ_KT_CHANNEL)
            continue;
        if (fixed_size(b, k, &units, &kb) != STEPQ_OK)
            return STEPQ_ERR;
        /* As keys_done will count it: one pair (there or not), and a
         * collection merged in chunks its members too. */
        total += 1 + (units > b->o.big ? units : 0);
        bytes += kb;
    }
    if ((r = stepq__commandf(q, "INFO memory")) == NULL)
        return STEPQ_ERR;
    ok = r->type == REDIS_REPLY_STRING &&
         info_field(q, r->str, "used_memory:", ret_used) == STEPQ_OK &&
         info_field(q, r->str, "maxmemory:", ret_max) == STEPQ_OK;
    if (!ok && r->type != REDIS_REPLY_STRING)
        stepq__set_error(q, STEPQ_E_PROTOCOL, "unexpected reply from INFO memory");
    freeReplyObject(r);
    if (!ok)
        return STEPQ_ERR;
    b->res.keys_total = total;
    b->res.memory_estimate = bytes;
    return STEPQ_OK;
}

/* Every reason to refuse, as one message (empty: none). */
static int preflight(struct bf *b, char *why, size_t len)
{
    stepq *q = b->q;
    stepq_phase ph;
    long pinned;
    long long used, max;

    why[0] = '\0';
    if (stepq_phase_get(q, &ph) != STEPQ_OK || job_pinned_procs(q, &pinned) != STEPQ_OK ||
        estimate(b, &used, &max) != STEPQ_OK)
        return STEPQ_ERR;
    if (b->o.memory_limit > 0)
        max = b->o.memory_limit;
    b->res.memory_used = used;
    b->res.memory_max = max;
    if (ph == STEPQ_PHASE_STEP)
        return STEPQ_OK; /* refused in walk(), forced or not */
    if (ph < STEPQ_PHASE_DUAL_WRITE)
        snprintf(why, len,
                 "cannot backfill in phase '%s': a copy taken before every writer dual-writes "
                 "can lose updates; run 'stepq migrate phase dual-write' first",
                 stepq_phase_name(ph));
    else if (pinned > 0)
        pinned_why(why, len, "backfill", pinned);
    else if (max > 0 && used + b->res.memory_estimate > max)
        snprintf(why, len,
                 "cannot backfill: the copy adds about %lld MiB to the %lld MiB in use, past "
                 "maxmemory %lld MiB; raise maxmemory or free memory, or run with --force",
                 b->res.memory_estimate >> 20, used >> 20, max >> 20);
    return STEPQ_OK;
}

/* ---------------------------------------------------------------------------
 * The record: start a run or resume an interrupted one
 * ------------------------------------------------------------------------- */

/*
 * Writes the server's run_id (INFO server; a new one at every start of
 * redis-server) to ret_id (41 bytes). A SCAN or SSCAN cursor is a position
 * in one server's hash tables, whose hash seed is drawn at random at start:
 * after a restart (an AOF or RDB reload) the same cursor names another
 * position, and resuming from it would skip keys that were never copied.
 */
static int server_id(stepq *q, char ret_id[41])
{
    redisReply *r = stepq__commandf(q, "INFO server");
    if (r == NULL)
        return STEPQ_ERR;
    const char *p = r->type == REDIS_REPLY_STRING ? strstr(r->str, "run_id:") : NULL;
    size_t n = p ? strcspn(p + 7, "\r\n") : 0;
    if (p == NULL || n == 0 || n > 40) {
        freeReplyObject(r);
        stepq__set_error(q, STEPQ_E_PROTOCOL, "INFO server has no run_id; is this redis-server?");
        return STEPQ_ERR;
    }
    memcpy(ret_id, p + 7, n);
    ret_id[n] = '\0';
    freeReplyObject(r);
    return STEPQ_OK;
}

/* Resumes a run: from its checkpoint on the same server, from the start of
 * both stages after a restart (every copy is idempotent, so redoing is safe). */
static int resume(struct bf *b, json_t *rec, const char *server)
{
    const char *was = json_string_value(json_object_get(rec, "server"));

    b->res.resumed = 1;
    b->res.keys_total = stepq__json_ll(rec, "keys_total");
    b->res.keys_done = stepq__json_ll(rec, "keys_done");
    if (was != NULL && strcmp(was, server) == 0) {
        const char *fv[] = {"owner", b->owner};
        return hset(b->q, b->q->k_backfill, 2, fv);
    }
    json_object_set_new(rec, "stage", json_string("fixed"));
    json_object_set_new(rec, "fixed_rule", json_integer(0));
    json_object_set_new(rec, "member_cursor", json_integer(0));
    json_object_set_new(rec, "cursor", json_integer(0));
    const char *fv[] = {"owner",      b->owner, "server",        server, "stage",  "fixed",
                        "fixed_rule", "0",      "member_cursor", "0",    "cursor", "0"};
    json_object_del(rec, "cursor_held");
    redisReply *r =
        stepq__commandf(b->q, "HDEL %b cursor_held", b->q->k_backfill, sdslen(b->q->k_backfill));
    if (r == NULL)
        return STEPQ_ERR;
    freeReplyObject(r);
    return hset(b->q, b->q->k_backfill, (int)(sizeof(fv) / sizeof(*fv)), fv);
}

static int start_or_resume(struct bf *b, json_t **ret_rec)
{
    stepq *q = b->q;
    json_t *rec = stepq__hash_counters(q, q->k_backfill);
    redisReply *ph = stepq__commandf(q, "HGET %b dual_write_since", q->k_phase, sdslen(q->k_phase));
    char run_id[37], now[24], total[24], phase[32], server[41];
    stepq_phase cur;

    if (rec == NULL || ph == NULL || stepq__random_hex(b->owner, 16) != STEPQ_OK ||
        stepq_phase_get(q, &cur) != STEPQ_OK || server_id(q, server) != STEPQ_OK) {
        json_decref(rec);
        freeReplyObject(ph);
        return STEPQ_ERR;
    }
    long long dws = 0;
    int bad = ph->type != REDIS_REPLY_NIL &&
              stepq__reply_ll(q, ph, "stepq:phase dual_write_since", &dws) != STEPQ_OK;
    freeReplyObject(ph);
    if (bad) {
        json_decref(rec);
        return STEPQ_ERR;
    }
    const char *state = json_string_value(json_object_get(rec, "state"));
    /* A run from before the latest move into dual-write cannot count. */
    if (!b->o.restart && state && strcmp(state, "running") == 0 &&
        stepq__json_ll(rec, "started_at") >= dws) {
        *ret_rec = rec;
        return resume(b, rec, server);
    }
    json_decref(rec);
    redisReply *d = stepq__commandf(q, "DEL %b", q->k_backfill, sdslen(q->k_backfill));
    if (d == NULL || stepq__uuid7(run_id) != STEPQ_OK)
        return STEPQ_ERR;
    freeReplyObject(d);
    snprintf(now, sizeof(now), "%lld", stepq__now_ms());
    snprintf(total, sizeof(total), "%lld", b->res.keys_total);
    snprintf(phase, sizeof(phase), "%s", stepq_phase_name(cur));
    const char *fv[] = {"state",      "running", "run_id",     run_id,   "started_at",     now,
                        "keys_total", total,     "owner",      b->owner, "phase_at_start", phase,
                        "stage",      "fixed",   "fixed_rule", "0",      "member_cursor",  "0",
                        "cursor",     "0",       "keys_done",  "0"};
    const char *sv[] = {"server", server};
    *ret_rec = json_object();
    if (hset(q, q->k_backfill, (int)(sizeof(fv) / sizeof(*fv)), fv) != STEPQ_OK)
        return STEPQ_ERR;
    return hset(q, q->k_backfill, 2, sv);
}

/* ---------------------------------------------------------------------------
 * The walk
 * ------------------------------------------------------------------------- */

/* Queues one backfill_members.lua over a page of members; with
 * `checkpoint`, it records `next` (where the chunk after it starts). */
static int members_append(struct bf *b, const char *src, const char *dst, char type,
                          const redisReply *m, size_t lo, size_t hi, int checkpoint,
                          const char *next)
{
    stepq *q = b->q;
    size_t step = type == 's' ? 1 : 2, nm = hi - lo;
    const char **args = stepq__calloc(nm + 8, sizeof(*args));
    int na = 0;

    if (args == NULL) {
        stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        return STEPQ_ERR;
    }
    args[na++] = b->owner;
    args[na++] = b->dry;
    args[na++] = type == 's' ? "set" : "zset";
    args[na++] = checkpoint ? "1" : "0";
    if (checkpoint) {
        args[na++] = "member_cursor";
        args[na++] = next;
    }
    for (size_t i = lo; i < hi; i++)
        args[na++] = m->element[i * step]->str;
    const char *keys[] = {q->k_backfill, q->k_phase, src, dst};
    int rc = stepq__append_eval(q, STEPQ_SCRIPT_BACKFILL_MEMBERS, 4, keys, na, args, NULL);
    stepq__free(args);
    return rc;
}

/* Reads the reply of one members_append of nm members. */
static int members_read(struct bf *b, long long nm)
{
    redisReply *x = stepq__read_reply(b->q);

    if (x == NULL)
        return STEPQ_ERR;
    if (stepq__reply_shape(b->q, x, "ii", "backfill_members.lua") != STEPQ_OK) {
        freeReplyObject(x);
        return STEPQ_ERR;
    }
    b->res.keys_done += nm;
    b->res.merged += x->element[0]->integer;
    freeReplyObject(x);
    report(b, NULL, NULL);
    return STEPQ_OK;
}

/* The replies of a page's chunk scripts still to read, oldest first. */
struct pending {
    long long *nm; /* members of each */
    size_t n, cap;
};

static int pending_add(stepq *q, struct pending *p, long long nm)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 16;
        long long *x = stepq__realloc(p->nm, cap * sizeof(*x));
        if (x == NULL) {
            stepq__set_error(q, STEPQ_E_OOM, "out of memory");
            return STEPQ_ERR;
        }
        p->nm = x;
        p->cap = cap;
    }
    p->nm[p->n++] = nm;
    return STEPQ_OK;
}

static int pending_read(struct bf *b, struct pending *p)
{
    int rc = STEPQ_OK;

    for (size_t i = 0; rc == STEPQ_OK && i < p->n; i++)
        rc = members_read(b, p->nm[i]);
    p->n = 0;
    return rc;
}

/* Merges a big set or zset in chunks from member cursor `from`; with
 * `checkpoint`, each chunk records where a resume starts. Pipelined: the
 * next SSCAN/ZSCAN page is asked for before a page's scripts are read, so a
 * page costs one round trip, not two; and a page holds fifty scripts of
 * `batch` members, at most 5000 (one with a latency bound:
 * stepq__member_count), since
 * the member cursors chain (each page's comes with the one before it) and
 * a page of one script made a merge one round trip a chunk (at 2 ms the
 * 100,000-step backfill spent most of its time there). Of a page's
 * scripts, only the last records the cursor after the page; the others
 * record the page's own, so a resume redoes the page (every chunk is
 * idempotent). Redis runs them in order, so a recorded member cursor only
 * ever covers chunks that were merged. */
static int merge_pages(struct bf *b, const char *src, const char *dst, char type, const char *from,
                       int checkpoint)
{
    stepq *q = b->q;
    char cursor[32], next[32], cnt[24];
    struct pending pend = {0};
    size_t batch = (size_t)b->o.batch, step = type == 's' ? 1 : 2;
    int rc = STEPQ_OK, more = 1;

    snprintf(cursor, sizeof(cursor), "%s", from);
    snprintf(cnt, sizeof(cnt), "%ld", stepq__member_count(b->o.batch, b->o.max_latency_ms));
    size_t slen = sdslen((sds)src);
    if (stepq__queue_members(q, src, slen, type, cursor, cnt) != STEPQ_OK)
        return STEPQ_ERR;
    while (rc == STEPQ_OK && more) {
        redisReply *r = stepq__read_members(q, next);
        if (r == NULL) {
            rc = STEPQ_ERR;
            break;
        }
        more = strcmp(next, "0") != 0;
        size_t nm = r->element[1]->elements / step;
        /* Pacing that talks to Redis wants an empty pipe. */
        int io = pend.n == 0 || stepq__pace_io_due(&b->pace);
        if (pend.n > 0 && io)
            rc = pending_read(b, &pend);
        if (rc == STEPQ_OK)
            rc = stepq__pace_wait_io(&b->pace, (long)nm, io);
        if (rc == STEPQ_OK && more)
            rc = stepq__queue_members(q, src, slen, type, next, cnt);
        /* The replies of the page before come first: read after these are
         * queued, so that Redis has this page's work meanwhile. */
        size_t before = pend.n;
        for (size_t lo = 0; rc == STEPQ_OK && lo < nm; lo += batch) {
            size_t hi = lo + batch < nm ? lo + batch : nm;
            rc = members_append(b, src, dst, type, r->element[1], lo, hi, checkpoint,
                                hi == nm ? next : cursor);
            if (rc == STEPQ_OK)
                rc = pending_add(q, &pend, (long long)(hi - lo));
        }
        if (nm == 0 && rc == STEPQ_OK) { /* an empty page still moves the checkpoint */
            rc = members_append(b, src, dst, type, r->element[1], 0, 0, checkpoint, next);
            if (rc == STEPQ_OK)
                rc = pending_add(q, &pend, 0);
        }
        freeReplyObject(r);
        for (size_t i = 0; rc == STEPQ_OK && i < before; i++)
            rc = members_read(b, pend.nm[i]);
        if (rc == STEPQ_OK) {
            memmove(pend.nm, pend.nm + before, (pend.n - before) * sizeof(*pend.nm));
            pend.n -= before;
        }
        memcpy(cursor, next, sizeof(cursor));
    }
    if (rc == STEPQ_OK)
        rc = pending_read(b, &pend);
    stepq__free(pend.nm);
    if (rc != STEPQ_OK && q->rc != NULL)
        stepq__drop(q); /* replies still on their way cannot be matched */
    return rc;
}

/* merge_pages, started over from member 0 when the slot moved (walk.c):
 * every chunk is idempotent, so members merged twice are harmless. */
static int merge_big(struct bf *b, const char *src, const char *dst, char type, const char *from,
                     int checkpoint)
{
    long long deadline = 0;
    int rc;

    while ((rc = merge_pages(b, src, dst, type, from, checkpoint)) != STEPQ_OK &&
           stepq__members_retry(b->q, &deadline))
        from = "0";
    return rc;
}

/* Keeps a big collection for bf_idle (copies of its names). */
static int defer_big(struct bf *b, const sds src, const sds dst, char type)
{
    if (b->nbigs == b->capbigs) {
        size_t cap = b->capbigs ? b->capbigs * 2 : 8;
        struct bf_big *n = stepq__realloc(b->bigs, cap * sizeof(*n));
        if (n == NULL)
            return STEPQ_ERR;
        b->bigs = n;
        b->capbigs = cap;
    }
    struct bf_big *x = &b->bigs[b->nbigs];
    x->src = sdsdup(src);
    x->dst = sdsdup(dst);
    x->type = type;
    if (x->src == NULL || x->dst == NULL) {
        sdsfree(x->src);
        sdsfree(x->dst);
        return STEPQ_ERR;
    }
    b->nbigs++;
    stepq__walk_idle(&b->walk);
    return STEPQ_OK;
}

/* Applies the reply of the script over pairs [lo, lo + batch) of p:
 * counters, errors, big ones (merged now, or with `defer` once the pipe is
 * empty). Frees the reply. */
static int apply_batch(struct bf *b, const stepq__pairs *p, size_t lo, redisReply *rep, int defer)
{
    size_t want = p->n - lo < (size_t)b->o.batch ? p->n - lo : (size_t)b->o.batch;
    int rc = STEPQ_OK;

    /* One status string per pair sent, or the reply is not ours. */
    int shape = rep->type == REDIS_REPLY_ARRAY && rep->elements == want;
    for (size_t i = 0; shape && i < want; i++)
        shape = rep->element[i]->type == REDIS_REPLY_STRING;
    if (!shape) {
        stepq__set_error(b->q, STEPQ_E_PROTOCOL,
                         "unexpected reply from backfill_batch.lua: expected %zu statuses", want);
        rc = STEPQ_ERR;
    }
    for (size_t i = 0; shape && i < want; i++) {
        size_t k = lo + i;
        const char *v = rep->element[i]->str;
        long long added;
        b->res.keys_done++;
        if (strcmp(v, "copied") == 0) {
            b->res.copied++;
        } else if (strcmp(v, "skipped") == 0 || strcmp(v, "merged:0") == 0) {
            b->res.skipped++;
        } else if (strncmp(v, "merged:", 7) == 0) {
            if (stepq__parse_ll(b->q, v + 7, rep->element[i]->len - 7,
                                "backfill_batch.lua (merged:N)", &added) != STEPQ_OK) {
                rc = STEPQ_ERR;
                break;
            }
            b->res.merged += added;
        } else if (strcmp(v, "gone") == 0) {
            b->res.gone++;
        } else if (strcmp(v, "big") == 0) {
            if (rc == STEPQ_OK && defer &&
                defer_big(b, p->keys[2 * k], p->keys[2 * k + 1], p->types[k]) != STEPQ_OK) {
                stepq__set_error(b->q, STEPQ_E_OOM, "out of memory");
                rc = STEPQ_ERR;
            } else if (rc == STEPQ_OK && !defer) {
                rc = merge_big(b, p->keys[2 * k], p->keys[2 * k + 1], p->types[k], "0",
                               b->member_ckpt);
            }
        } else {
            /* Named as verify names keys (src/keyname.c): a NUL or a
             * newline in the name would cut or break the line. */
            sds name = stepq__keyname_quote(sdsempty(), p->keys[2 * k], sdslen(p->keys[2 * k]), 0);
            b->res.errors++;
            report(b, name ? name : "?", strncmp(v, "error:", 6) == 0 ? v + 6 : v);
            sdsfree(name);
        }
    }
    freeReplyObject(rep);
    return rc;
}

/* Applies the replies of one set of batches of b->pairs. */
static int apply_replies(struct bf *b, redisReply **rep, size_t nrep)
{
    int rc = STEPQ_OK;

    for (size_t s = 0; s < nrep; s++) {
        int one = apply_batch(b, &b->pairs, s * (size_t)b->o.batch, rep[s], 0);
        if (rc == STEPQ_OK)
            rc = one;
    }
    report(b, NULL, NULL);
    return rc;
}

/* Runs the current pairs through backfill_batch.lua; `cursor` ("" none) is
 * recorded by the scripts as the checkpoint. */
static int run_pairs(struct bf *b, const char *cursor)
{
    stepq *q = b->q;
    size_t nrep = (b->pairs.n + (size_t)b->o.batch - 1) / (size_t)b->o.batch;
    redisReply **rep = stepq__calloc(nrep + 1, sizeof(*rep));
    const char *prefix[] = {q->k_backfill, q->k_phase};
    const char *args[] = {b->owner, b->dry, cursor, b->big};
    int rc = STEPQ_ERR;

    if (rep == NULL) {
        stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        return STEPQ_ERR;
    }
    if (stepq__pace_wait(&b->pace, (long)b->pairs.n) == STEPQ_OK &&
        stepq__pairs_run(q, STEPQ_SCRIPT_BACKFILL_BATCH, &b->pairs, b->o.batch, 2, prefix, 4, args,
                         1, rep) == STEPQ_OK)
        rc = apply_replies(b, rep, nrep);
    stepq__free(rep);
    stepq__pairs_clear(&b->pairs);
    return rc;
}

/* Stage 1: the fixed keys, from the checkpointed rule and member cursor. */
static int stage_fixed(struct bf *b, const json_t *rec)
{
    stepq *q = b->q;
    size_t first = (size_t)stepq__json_ll(rec, "fixed_rule");
    json_t *mc = json_object_get(rec, "member_cursor");
    char from[32];

    snprintf(from, sizeof(from), "%lld",
             json_is_integer(mc) ? (long long)json_integer_value(mc) : 0LL);
    for (size_t r = first; r < q->km.n; r++) {
        const stepq__rule *rule = &q->km.rules[r];
        char next[24];
        if (rule->per_id || rule->type == STEPQ_KT_CHANNEL)
            continue;
        int coll = rule->type == STEPQ_KT_SET || rule->type == STEPQ_KT_ZSET;
        if (stepq__pairs_add(&b->pairs, &q->km, r, STEPQ_OLD, NULL) != STEPQ_OK) {
            stepq__set_error(q, STEPQ_E_OOM, "out of memory");
            return STEPQ_ERR;
        }
        /* A collection partly merged before a kill goes on in chunks. */
        if (coll && r == first && strcmp(from, "0") != 0) {
            int rc = merge_big(b, b->pairs.keys[0], b->pairs.keys[1], b->pairs.types[0], from,
                               !b->o.dry_run);
            stepq__pairs_clear(&b->pairs);
            if (rc != STEPQ_OK)
                return STEPQ_ERR;
        } else {
            /* Small: one atomic script. Big: merged in chunks, each chunk
             * checkpointing the member cursor (member_ckpt). */
            b->member_ckpt = !b->o.dry_run;
            int rc = run_pairs(b, "");
            b->member_ckpt = 0;
            if (rc != STEPQ_OK)
                return STEPQ_ERR;
        }
        snprintf(next, sizeof(next), "%zu", r + 1);
        const char *fv[] = {"fixed_rule", next, "member_cursor", "0"};
        if (!b->o.dry_run && hset(q, q->k_backfill, 4, fv) != STEPQ_OK)
            return STEPQ_ERR;
        snprintf(from, sizeof(from), "0");
    }
    return STEPQ_OK;
}

static void page_free(struct bf_page *pg)
{
    stepq__pairs_release(&pg->pairs);
    stepq__free(pg->bat);
    stepq__free(pg);
}

/* The reply of one script of a page in flight. */
static int page_reader(stepq *q, void *ctx, int abort)
{
    struct bf_batch *x = ctx;
    struct bf_page *pg = x->pg;
    int rc = STEPQ_OK;

    if (!abort) {
        redisReply *r = stepq__read_reply(q);
        rc = r == NULL ? STEPQ_ERR : apply_batch(pg->b, &pg->pairs, x->lo, r, 1);
        report(pg->b, NULL, NULL);
    }
    if (--pg->left == 0)
        page_free(pg);
    return rc;
}

/* Once the pipe is empty: the big collections the scripts found, merged in
 * chunks; then the hold on the checkpoint is let go (backfill_batch.lua
 * keeps the cursor of the first page with a big collection in
 * `cursor_held` until then, so a kill before the merge redoes that page). */
static int bf_idle(stepq *q, void *arg)
{
    struct bf *b = arg;
    int rc = STEPQ_OK;

    for (size_t i = 0; i < b->nbigs; i++) {
        if (rc == STEPQ_OK)
            rc = merge_big(b, b->bigs[i].src, b->bigs[i].dst, b->bigs[i].type, "0", 0);
        sdsfree(b->bigs[i].src);
        sdsfree(b->bigs[i].dst);
    }
    int any = b->nbigs > 0;
    b->nbigs = 0;
    if (rc != STEPQ_OK || !any || b->o.dry_run)
        return rc;
    redisReply *r = stepq__commandf(q, "HDEL %b cursor_held", q->k_backfill, sdslen(q->k_backfill));
    if (r == NULL)
        return STEPQ_ERR;
    freeReplyObject(r);
    return STEPQ_OK;
}

/* A page of the scan stage: its old per-id keys in backfill_batch.lua
 * scripts of `batch` pairs, queued without waiting (walk_pipe.c); each
 * records `cursor`, the cursor that produced the page, as the checkpoint. */
static int scan_page(stepq *q, const redisReply *keys, const char *cursor, void *arg)
{
    struct bf *b = arg;
    const char *prefix[] = {q->k_backfill, q->k_phase};
    const char *args[] = {b->owner, b->dry, b->o.dry_run ? "" : cursor, b->big};

    /* A key that looks old but that no rule maps is never copied: named,
     * and counted as an error, so the run fails instead of leaving it. */
    b->res.errors +=
        stepq__walk_strays(q, keys, b->fn, b->arg, b->res.keys_done, b->res.keys_total);
    struct bf_page *pg = stepq__calloc(1, sizeof(*pg));
    if (pg == NULL || stepq__pairs_from_page(&pg->pairs, &q->km, keys, STEPQ_OLD) < 0) {
        if (pg != NULL)
            page_free(pg);
        stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        return STEPQ_ERR;
    }
    size_t batch = (size_t)b->o.batch, n = pg->pairs.n, nscripts = (n + batch - 1) / batch;
    if (n == 0 || (pg->bat = stepq__calloc(nscripts, sizeof(*pg->bat))) == NULL) {
        page_free(pg);
        if (n == 0)
            return STEPQ_OK;
        stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        return STEPQ_ERR;
    }
    pg->b = b;
    if (stepq__walk_pace(q, &b->walk, &b->pace, (long)n) != STEPQ_OK) {
        page_free(pg);
        return STEPQ_ERR;
    }
    for (size_t s = 0; s < nscripts; s++) {
        size_t lo = s * batch, hi = lo + batch < n ? lo + batch : n;
        pg->bat[s] = (struct bf_batch){pg, lo};
        if (stepq__pairs_append(q, STEPQ_SCRIPT_BACKFILL_BATCH, &pg->pairs, lo, hi, 2, prefix, 4,
                                args, 1) != STEPQ_OK) {
            if (pg->left == 0)
                page_free(pg);
            return STEPQ_ERR; /* the scripts queued are read by the walk's abort */
        }
        pg->left++;
        if (stepq__window_push(q, &b->walk.win, page_reader, &pg->bat[s], (long)(hi - lo)) !=
            STEPQ_OK) {
            pg->left--;
            if (pg->left == 0)
                page_free(pg);
            return STEPQ_ERR;
        }
    }
    return STEPQ_OK;
}

static int finish(struct bf *b)
{
    stepq *q = b->q;
    char now[24];
    const char *state = b->res.errors > 0 ? "failed" : "done";

    snprintf(now, sizeof(now), "%lld", stepq__now_ms());
    const char *fv[] = {"state", state, "finished_at", now, "stage", "done", "cursor", "0"};
    if (hset(q, q->k_backfill, 8, fv) != STEPQ_OK)
        return STEPQ_ERR;
    redisReply *r =
        stepq__commandf(q, "HDEL %b owner cursor_held", q->k_backfill, sdslen(q->k_backfill));
    if (r == NULL)
        return STEPQ_ERR;
    freeReplyObject(r);
    return STEPQ_OK;
}

/* In 'step' the old keys are frozen at the switch while the steps go on
 * moving on the new side: a copy of them brings back what ended there (a
 * completed step put back into the active set, and reaped into pending).
 * No --force overrides this. */
/* Refused forced or not, here and again in every script (lua/part/
 * backfill_guard.lua, for a run that outlives this check): the phase 'step',
 * where the old keys are frozen and stale, and an unfinished rollback out of
 * it, when the old keys miss what was written in 'step'. */
static int refuse_unsafe(stepq *q)
{
    stepq_phase ph;
    int reconciling;

    if (stepq_phase_get(q, &ph) != STEPQ_OK || stepq__reconciling(q, &reconciling) != STEPQ_OK)
        return STEPQ_ERR;
    if (ph == STEPQ_PHASE_STEP)
        stepq__set_error(q, STEPQ_E_CONFLICT,
                         "cannot backfill in phase 'step': the old keys stopped changing at the "
                         "switch and copying them would bring back steps that ended since; "
                         "'stepq migrate cleanup --adopt' takes over steps only the old side has");
    else if (reconciling)
        stepq__set_error(q, STEPQ_E_CONFLICT, "cannot backfill: %s", STEPQ__RECONCILING_ADVICE);
    return ph == STEPQ_PHASE_STEP || reconciling ? STEPQ_ERR : STEPQ_OK;
}

static int audit_forced(struct bf *b, const char *why)
{
    return stepq__audit(b->q,
                        json_pack("{s:s, s:s, s:s, s:b}", "action", "backfill", "who",
                                  b->o.who ? b->o.who : "unknown", "reason", why, "force", 1));
}

static int walk(struct bf *b)
{
    stepq *q = b->q;
    json_t *rec = NULL;
    char why[STEPQ_ERRSTR_MAX];
    int rc = STEPQ_ERR;

    if (refuse_unsafe(q) != STEPQ_OK || preflight(b, why, sizeof(why)) != STEPQ_OK)
        return STEPQ_ERR;
    if (why[0] != '\0' && !b->o.force && !b->o.dry_run) {
        stepq__set_error(q, STEPQ_E_CONFLICT, "%s", why);
        return STEPQ_ERR;
    }
    if (why[0] != '\0' && b->o.force && !b->o.dry_run && audit_forced(b, why) != STEPQ_OK)
        return STEPQ_ERR;
    /* A dry run goes on, and says what the real one would meet. */
    if (b->o.dry_run && !b->o.force)
        snprintf(b->res.refusal, sizeof(b->res.refusal), "%s", why);
    if (b->o.dry_run)
        rec = json_object();
    else if (start_or_resume(b, &rec) != STEPQ_OK)
        return STEPQ_ERR;
    report(b, NULL, NULL);
    const char *stage = json_string_value(json_object_get(rec, "stage"));
    if ((stage == NULL || strcmp(stage, "fixed") == 0) && stage_fixed(b, rec) != STEPQ_OK)
        goto out;
    const char *fv[] = {"stage", "scan"};
    if (!b->o.dry_run && hset(q, q->k_backfill, 2, fv) != STEPQ_OK)
        goto out;
    /* A page whose big collection was not merged yet holds the checkpoint
     * back (bf_idle): resume from there. */
    json_t *c = json_object_get(rec, "cursor_held");
    if (!json_is_integer(c))
        c = json_object_get(rec, "cursor");
    char from[32];
    snprintf(from, sizeof(from), "%lld", json_is_integer(c) ? (long long)json_integer_value(c) : 0);
    long count = stepq__walk_count(b->o.batch, b->o.max_latency_ms);
    if (stepq__walk_run(q, &b->walk, from, count, stepq__walk_cap(count, b->o.max_latency_ms),
                        scan_page, bf_idle, b) != STEPQ_OK)
        goto out;
    rc = b->o.dry_run ? STEPQ_OK : finish(b);
out:
    json_decref(rec);
    return rc;
}

/* ---------------------------------------------------------------------------
 * Repair: new := old, in 'dual-write' (src/reconcile.c)
 * ------------------------------------------------------------------------- */

static int repair_allowed(stepq *q)
{
    stepq_phase ph;
    const char *why = NULL;

    if (stepq_phase_get(q, &ph) != STEPQ_OK)
        return STEPQ_ERR;
    if (ph == STEPQ_PHASE_JOB)
        why = "writers do not write the new keys yet; run 'stepq migrate phase dual-write' first";
    else if (ph == STEPQ_PHASE_DUAL_READ || ph == STEPQ_PHASE_STEP_PRIMARY)
        why = "reads come from the new keys, so the old ones are not the truth; roll back to "
              "'dual-write' first ('stepq migrate rollback')";
    else if (ph == STEPQ_PHASE_STEP)
        why = "the old keys stopped changing at the switch and are stale";
    if (why == NULL)
        return STEPQ_OK;
    stepq__set_error(q, STEPQ_E_CONFLICT, "cannot repair in phase '%s': %s", stepq_phase_name(ph),
                     why);
    return STEPQ_ERR;
}

/* Runs the repair and records it as a finished backfill (it copies all a
 * backfill would and more), then clears the untrusted mark. */
static int repair(struct bf *b)
{
    stepq *q = b->q;
    char now[24], run_id[37];
    long pinned;

    if (repair_allowed(q) != STEPQ_OK || job_pinned_procs(q, &pinned) != STEPQ_OK)
        return STEPQ_ERR;
    if (pinned > 0 && !b->o.force) {
        char why[STEPQ_ERRSTR_MAX];
        pinned_why(why, sizeof(why), "repair", pinned);
        stepq__set_error(q, STEPQ_E_CONFLICT, "%s", why);
        return STEPQ_ERR;
    }
    long long started = stepq__now_ms();
    snprintf(now, sizeof(now), "%lld", started);
    const char *fv[] = {"state", "running", "mode", "repair", "run_id", run_id, "started_at", now};
    redisReply *d =
        b->o.dry_run ? NULL : stepq__commandf(q, "DEL %b", q->k_backfill, sdslen(q->k_backfill));
    if ((!b->o.dry_run && d == NULL) || stepq__uuid7(run_id) != STEPQ_OK ||
        (!b->o.dry_run && hset(q, q->k_backfill, 8, fv) != STEPQ_OK)) {
        freeReplyObject(d);
        return STEPQ_ERR;
    }
    freeReplyObject(d);
    stepq__rc_result rr = {0};
    int rc = stepq__reconcile(q, STEPQ_OLD, b->o.dry_run, "plain", b->fn, b->arg, &rr);
    b->res.copied = rr.copied;
    b->res.gone = rr.deleted;
    stepq__rc_result_release(&rr);
    if (rc != STEPQ_OK)
        return STEPQ_ERR;
    b->res.keys_done = b->res.copied + b->res.gone;
    if (b->o.dry_run || finish(b) != STEPQ_OK)
        return b->o.dry_run ? STEPQ_OK : STEPQ_ERR;
    const char *keys[] = {q->k_phase};
    const char *args[] = {now};
    redisReply *r = stepq__eval(q, STEPQ_SCRIPT_TRUST_NEW, 1, keys, 1, args, NULL);
    if (r == NULL)
        return STEPQ_ERR;
    int trusted = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    freeReplyObject(r);
    if (trusted)
        return STEPQ_OK;
    /* Not a silent success: the mark stays, and the move to dual-read with it. */
    stepq__set_error(q, STEPQ_E_CONFLICT,
                     "the repair finished, but the new keys stay untrusted: the phase left "
                     "'dual-write' during the repair, or dual writes (re)started after it began; "
                     "run 'stepq migrate backfill --repair' again in 'dual-write'");
    return STEPQ_ERR;
}

int stepq_backfill(stepq *q, const stepq_backfill_opts *opts, stepq_progress_fn fn, void *arg,
                   stepq_backfill_result *ret)
{
    stepq_backfill_opts none = {0};
    struct bf *b = stepq__calloc(1, sizeof(*b));
    int rc;

    stepq__clear_error(q);
    if (b == NULL) {
        stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        return STEPQ_ERR;
    }
    b->q = q;
    b->o = opts ? *opts : none;
    b->fn = fn;
    b->arg = arg;
    /* A script blocks Redis while it runs: with a latency bound the
     * batches default to 10 keys, which bench/run-migrate.sh measured to keep
     * a probe's p99 within 2x of idle where 100 did not. */
    if (b->o.batch == 0)
        b->o.batch = b->o.max_latency_ms > 0 ? 10 : 100;
    if (b->o.big == 0)
        b->o.big = 1000;
    if (b->o.batch < 1 || b->o.batch > 1000 || b->o.rate < 0 || b->o.big < 1) {
        stepq__set_error(q, STEPQ_E_INVALID,
                         "batch %ld is out of range; use 1 to 1000 keys (and a rate >= 0)",
                         b->o.batch);
        stepq__free(b);
        return STEPQ_ERR;
    }
    snprintf(b->big, sizeof(b->big), "%ld", b->o.big);
    b->dry = b->o.dry_run ? "1" : "0";
    stepq__pace_init(&b->pace, q, b->o.rate, b->o.max_latency_ms, b->o.max_replica_lag);
    if (stepq__ensure(q) != STEPQ_OK)
        rc = STEPQ_ERR;
    else
        rc = b->o.repair ? repair(b) : walk(b);
    if (rc == STEPQ_OK && b->res.errors > 0) {
        stepq__set_error(q, STEPQ_E_SERVER,
                         "%lld key(s) could not be copied (each is reported above); fix them and "
                         "run 'stepq migrate backfill' again",
                         b->res.errors);
        rc = STEPQ_ERR;
    }
    if (ret != NULL)
        *ret = b->res;
    stepq__pairs_release(&b->pairs);
    for (size_t i = 0; i < b->nbigs; i++) {
        sdsfree(b->bigs[i].src);
        sdsfree(b->bigs[i].dst);
    }
    stepq__free(b->bigs);
    stepq__free(b);
    return rc;
}
