/*
 * backup.c - `migrate backup` and `migrate restore`: one side of the key
 * map to a file (backup_file.c's format) and back.
 *
 * The backup SCANs the namespace, keeps the keys of the chosen side, and for
 * each part of a page reads, atomically so that value and expiry agree,
 * per key OBJECT IDLETIME (which does not touch a key's access time), DUMP
 * and PEXPIRETIME: in a MULTI/EXEC block, or for the keys of collection
 * rules in backup_page.lua, which also decides which sets and zsets are
 * big enough to be read in chunks. DUMP does update the access time
 * (tests/integ/test_backup.c proves it), so the idle times read just before
 * it are the last evidence of who read the old keys; the backup records the
 * latest such access in stepq:backup for cleanup to judge (docs/backup.md).
 *
 * The restore validates the whole file first, then writes in a second pass.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include <jansson.h>

#include "stepq_private.h"
#include "backup.h"

/* A page's work must outlast a round trip plus the client's share of it
 * (writing the records): the next SCAN's reply waits behind the page
 * before, and only the work sent after it keeps Redis busy meanwhile. At
 * 1000 names (about 500 old keys once the new side exists, 3-5 ms of
 * DUMPs) a link of 2-4 ms left Redis idle between pages; at 2500 it keeps
 * busy up to about 7 ms. Each part (a block or a script) still DUMPs at
 * most PAGE_KEYS keys, so Redis is never held longer than before. */
#define SCAN_COUNT    2500
#define PAGE_KEYS     500
#define RESTORE_BATCH 1000
#define RESTORE_BYTES (2u << 20) /* a batch's payloads: a chunk is up to 1000 members */
#define BIG_DEFAULT   1000       /* as the backfill's --big */
#define MEMBER_COUNT  "4000"     /* members a SSCAN/ZSCAN page: fewer round trips */
#define CHUNK_MEMBERS 1000
#define CHUNK_BYTES   (4u << 20)

/* ---------------------------------------------------------------------------
 * Shared helpers
 * ------------------------------------------------------------------------- */

sds stepq__bk_rules_text(const stepq__keymap *km)
{
    sds s = sdsempty();

    for (size_t r = 0; r < km->n && s != NULL; r++) {
        const stepq__rule *rule = &km->rules[r];
        s = sdscatfmt(s, "%s %s %s %s\n", rule->name, stepq__keytype_name(rule->type), rule->tpl[0],
                      rule->tpl[1]);
    }
    return s;
}

FILE *stepq__bk_open(stepq *q, const char *path)
{
    FILE *fp = fopen(path, "rb");

    if (fp == NULL)
        stepq__set_error(q, errno == ENOENT ? STEPQ_E_NOTFOUND : STEPQ_E_IO,
                         "cannot open backup '%s': %s; check the path", path, strerror(errno));
    return fp;
}

static int bk_check(stepq *q, FILE *fp, const char *path, stepq__bk_info *info, stepq__bk_fn fn,
                    void *arg, int names_only)
{
    stepq__bk_src src = {.fp = fp, .names_only = names_only};
    char err[STEPQ_ERRSTR_MAX];

    rewind(fp);
    int rc = stepq__bk_parse(&src, info, fn, arg, err, sizeof(err));
    if (rc == -1)
        stepq__set_error(q, STEPQ_E_INVALID,
                         "backup '%s' is refused: %s; nothing was written (take a new backup)",
                         path, err);
    return rc == 0 ? STEPQ_OK : STEPQ_ERR;
}

int stepq__bk_check(stepq *q, FILE *fp, const char *path, stepq__bk_info *info, stepq__bk_fn fn,
                    void *arg)
{
    /* Without a callback nobody reads the payloads. */
    return bk_check(q, fp, path, info, fn, arg, fn == NULL);
}

int stepq__bk_check_names(stepq *q, FILE *fp, const char *path, stepq__bk_info *info,
                          stepq__bk_fn fn, void *arg)
{
    return bk_check(q, fp, path, info, fn, arg, 1);
}

/* ---------------------------------------------------------------------------
 * Backup
 * ------------------------------------------------------------------------- */

struct bk_run {
    stepq *q;
    enum stepq__side side;
    stepq__bk_writer *w;
    stepq__pace pace;
    const stepq_backup_opts *o;
    long long keys, vanished;
    long long last_read_ms; /* latest access seen before our DUMP; 0: none */
    char last_read_key[STEPQ_RULE_MAX];
    int idle_unknown;
    stepq__windows own; /* stepq's own earlier touches: not evidence of a reader */
    stepq__walk walk;
    char big[24]; /* sets and zsets above this many members are chunked */
    struct bk_big {
        sds key;
        char type; /* 's' or 'z' */
    } * bigs;
    size_t nbigs, capbigs;
};

/* One page's keys of the side backed up, on their way (src/walk_pipe.c):
 * the reply objects of the SCAN page are not kept, so their names are. */
struct bk_page {
    struct bk_run *b;
    size_t n;
    redisReply *item;  /* the name of each as a string reply (str an sds) */
    redisReply **keys; /* pointers to them, for dump_append and dump_read */
    int coll;          /* the keys' rules are sets or zsets: backup_page.lua, else a block */
};

static void note_idle(struct bk_run *b, const redisReply *idle, const redisReply *key)
{
    if (idle->type != REDIS_REPLY_INTEGER) {
        b->idle_unknown = 1; /* an LFU policy: idle time not tracked */
        return;
    }
    long long at = stepq__now_ms() - idle->integer * 1000;
    if (stepq__own_read(&b->own, at, 1500))
        return; /* an earlier backup's DUMP or a cleanup's look, not a reader */
    if (at > b->last_read_ms) {
        b->last_read_ms = at;
        stepq__keyname_buf(b->last_read_key, sizeof(b->last_read_key), key->str, key->len);
    }
}

/* Queues, inside MULTI/EXEC, OBJECT IDLETIME, DUMP and PEXPIRETIME of each
 * of the page's keys: what backup_page.lua does for a page without a
 * collection, whose keys need no check of type and size. A block is what
 * the script is (atomic, the idle time read before DUMP resets it) without
 * the script's cost: three redis.call()s a key, and each payload turned
 * into a Lua string and back, were about a third of a backup's Redis time
 * at 100,000 steps. */
static int dump_append_multi(struct bk_run *b, const redisReply *const *keys, size_t n)
{
    stepq *q = b->q;
    int ok = redisAppendCommand(q->rc, "MULTI") == REDIS_OK;

    for (size_t i = 0; ok && i < n; i++) {
        const char *idle[3] = {"OBJECT", "IDLETIME", keys[i]->str};
        const char *dump[2] = {"DUMP", keys[i]->str}, *exp[2] = {"PEXPIRETIME", keys[i]->str};
        size_t il[3] = {6, 8, keys[i]->len}, dl[2] = {4, keys[i]->len}, el[2] = {11, keys[i]->len};
        ok = redisAppendCommandArgv(q->rc, 3, idle, il) == REDIS_OK &&
             redisAppendCommandArgv(q->rc, 2, dump, dl) == REDIS_OK &&
             redisAppendCommandArgv(q->rc, 2, exp, el) == REDIS_OK;
    }
    if (!ok || redisAppendCommand(q->rc, "EXEC") != REDIS_OK) {
        stepq__set_error(q, STEPQ_E_OOM, "out of memory while queueing commands");
        stepq__drop(q); /* a partial pipeline must not stay in the output buffer */
        return STEPQ_ERR;
    }
    return STEPQ_OK;
}

/* Queues backup_page.lua over the part's keys (of collection rules). */
static int dump_append(struct bk_run *b, const redisReply *const *keys, size_t n)
{
    stepq *q = b->q;
    const char **k = stepq__calloc(n, sizeof(*k));
    size_t *kl = stepq__calloc(n, sizeof(*kl));
    const char *args[] = {b->big};
    int rc = STEPQ_ERR;

    if (k == NULL || kl == NULL) {
        stepq__set_error(q, STEPQ_E_OOM, "out of memory while queueing commands");
    } else {
        for (size_t i = 0; i < n; i++) {
            k[i] = keys[i]->str;
            kl[i] = keys[i]->len;
        }
        rc = stepq__append_eval_keys(q, STEPQ_SCRIPT_BACKUP_PAGE, (int)n, k, kl, 1, args, NULL);
    }
    stepq__free(k);
    stepq__free(kl);
    return rc;
}

/* Keeps a big set or zset for bk_idle, which reads it in chunks once the
 * pipe is empty. */
static int defer_big(struct bk_run *b, const redisReply *key, char type)
{
    if (b->nbigs == b->capbigs) {
        size_t cap = b->capbigs ? b->capbigs * 2 : 8;
        struct bk_big *n = stepq__realloc(b->bigs, cap * sizeof(*n));
        if (n == NULL)
            goto oom;
        b->bigs = n;
        b->capbigs = cap;
    }
    b->bigs[b->nbigs].key = sdsnewlen(key->str, key->len);
    b->bigs[b->nbigs].type = type;
    if (b->bigs[b->nbigs].key == NULL)
        goto oom;
    b->nbigs++;
    stepq__walk_idle(&b->walk);
    return STEPQ_OK;
oom:
    stepq__set_error(b->q, STEPQ_E_OOM, "out of memory");
    return STEPQ_ERR;
}

/* Writes the record of one key from its idle time, DUMP payload, absolute
 * expiry and kind ('s' or 'z': a big set or zset, chunked; 0: neither). */
static int dump_key(struct bk_run *b, const redisReply *key, const redisReply *idle,
                    const redisReply *d, const redisReply *t, char kind)
{
    if (t->type != REDIS_REPLY_INTEGER || t->integer == -2) {
        b->vanished++; /* gone between SCAN and DUMP: not an error */
        return STEPQ_OK;
    }
    note_idle(b, idle, key);
    if (kind != 0)
        return defer_big(b, key, kind);
    if (d->type != REDIS_REPLY_STRING) {
        b->vanished++;
        return STEPQ_OK;
    }
    if (stepq__bk_writer_add(b->w, key->str, key->len, d->str, d->len, t->integer) != 0) {
        stepq__set_error(b->q, STEPQ_E_IO, "cannot write the backup: %s",
                         stepq__bk_writer_errstr(b->w));
        return STEPQ_ERR;
    }
    b->keys++;
    return STEPQ_OK;
}

/* Writes the records of one backup_page.lua reply (four items a key), or
 * of one block's EXEC (three a key: no kind). */
static int dump_write(struct bk_run *b, const redisReply *const *keys, size_t n,
                      const redisReply *r, size_t per)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements != per * n) {
        stepq__set_error(b->q, STEPQ_E_PROTOCOL, "unexpected reply %s",
                         per == 4 ? "from backup_page.lua" : "to DUMP in MULTI/EXEC");
        return STEPQ_ERR;
    }
    for (size_t i = 0; i < n; i++) {
        redisReply *const *e = r->element + per * i;
        char kind = 0;
        if (per == 4 && e[3]->type != REDIS_REPLY_STRING) {
            b->vanished++;
            continue;
        }
        if (per == 4 && e[3]->len == 1)
            kind = e[3]->str[0];
        if (dump_key(b, keys[i], e[0], e[1], e[2], kind) != STEPQ_OK)
            return STEPQ_ERR;
    }
    return STEPQ_OK;
}

/* Reads the reply of dump_append (or the block of dump_append_multi) and
 * writes the records. */
static int dump_read(struct bk_run *b, const redisReply *const *keys, size_t n, int multi)
{
    redisReply *r = multi ? stepq__read_exec(b->q, 3 * n) : stepq__read_reply(b->q);

    if (r == NULL)
        return STEPQ_ERR;
    int rc = dump_write(b, keys, n, r, multi ? 3 : 4);
    freeReplyObject(r);
    return rc;
}

/* Writes one SSCAN/ZSCAN page of a big key as chunk records of at most
 * CHUNK_MEMBERS members and about CHUNK_BYTES bytes. */
static int chunk_write(struct bk_run *b, const char *key, char type, const redisReply *page)
{
    size_t step = type == 's' ? 1 : 2, nm = page->elements / step;
    const char **m = stepq__calloc(nm + 1, sizeof(*m)), **sc = stepq__calloc(nm + 1, sizeof(*sc));
    size_t *ml = stepq__calloc(nm + 1, sizeof(*ml)), *sl = stepq__calloc(nm + 1, sizeof(*sl));
    int rc = STEPQ_OK;

    if (m == NULL || sc == NULL || ml == NULL || sl == NULL) {
        stepq__set_error(b->q, STEPQ_E_OOM, "out of memory");
        rc = STEPQ_ERR;
    }
    for (size_t lo = 0; rc == STEPQ_OK && lo < nm;) {
        size_t n = 0, bytes = 0;
        while (lo + n < nm && n < CHUNK_MEMBERS && bytes < CHUNK_BYTES) {
            const redisReply *e = page->element[(lo + n) * step];
            m[n] = e->str;
            ml[n] = e->len;
            if (type == 'z') {
                sc[n] = page->element[(lo + n) * 2 + 1]->str;
                sl[n] = page->element[(lo + n) * 2 + 1]->len;
            }
            bytes += ml[n] + sl[n];
            n++;
        }
        if (stepq__bk_writer_chunk(b->w, key, sdslen((sds)key), type, n, m, ml, sc, sl) != 0) {
            stepq__set_error(b->q, STEPQ_E_IO, "cannot write the backup: %s",
                             stepq__bk_writer_errstr(b->w));
            rc = STEPQ_ERR;
        }
        lo += n;
    }
    stepq__free(m);
    stepq__free(sc);
    stepq__free(ml);
    stepq__free(sl);
    return rc;
}

/* Backs up one big set or zset in chunks: SSCAN/ZSCAN pages, the next
 * asked for before this one is written (one round trip a page), then its
 * expiry, written once, last. Its members are a union of pages: a member
 * added or removed meanwhile may or may not be in the backup
 * (docs/backup.md). */
static int backup_big(struct bk_run *b, const char *key, char type)
{
    stepq *q = b->q;
    char next[32];
    size_t klen = sdslen((sds)key);
    long long chunks = 0;
    int rc = STEPQ_OK, more = 1;

    if (stepq__queue_members(q, key, klen, type, "0", MEMBER_COUNT) != STEPQ_OK)
        return STEPQ_ERR;
    while (rc == STEPQ_OK && more) {
        redisReply *r = stepq__read_members(q, next);
        if (r == NULL)
            return STEPQ_ERR;
        more = strcmp(next, "0") != 0;
        long nm = (long)(r->element[1]->elements / (type == 's' ? 1 : 2));
        /* The pipe is empty here, as pacing that talks to Redis wants. */
        rc = stepq__pace_wait(&b->pace, nm);
        if (rc == STEPQ_OK && more)
            rc = stepq__queue_members(q, key, klen, type, next, MEMBER_COUNT);
        if (rc == STEPQ_OK && nm > 0) {
            rc = chunk_write(b, key, type, r->element[1]);
            chunks++;
        }
        freeReplyObject(r);
    }
    if (rc != STEPQ_OK) {
        stepq__drop(q); /* replies still on their way cannot be matched */
        return rc;
    }
    redisReply *t = stepq__commandf(q, "PEXPIRETIME %b", key, klen);
    if (t == NULL)
        return STEPQ_ERR;
    long long exp = t->type == REDIS_REPLY_INTEGER ? t->integer : -1;
    freeReplyObject(t);
    if (chunks == 0) { /* emptied and gone before its first page */
        b->vanished++;
        return STEPQ_OK;
    }
    /* Gone since its pages were read (exp -2): the backup keeps what it
     * read, without an expiry, like any key it read before it went. */
    if (stepq__bk_writer_cend(b->w, exp < -1 ? -1 : exp) != 0) {
        stepq__set_error(q, STEPQ_E_IO, "cannot write the backup: %s",
                         stepq__bk_writer_errstr(b->w));
        return STEPQ_ERR;
    }
    b->keys++;
    if (b->o->progress != NULL)
        b->o->progress(b->keys, 0, NULL, NULL, b->o->arg);
    return STEPQ_OK;
}

/* The walk's idle work: the big keys found so far, on an empty pipe. */
static int bk_idle(stepq *q, void *arg)
{
    struct bk_run *b = arg;
    int rc = STEPQ_OK;

    (void)q;
    for (size_t i = 0; i < b->nbigs; i++) {
        if (rc == STEPQ_OK)
            rc = backup_big(b, b->bigs[i].key, b->bigs[i].type);
        sdsfree(b->bigs[i].key);
    }
    b->nbigs = 0;
    return rc;
}

static void bk_page_free(struct bk_page *pg)
{
    for (size_t i = 0; i < pg->n; i++)
        sdsfree(pg->item[i].str);
    stepq__free(pg->item);
    stepq__free(pg->keys);
    stepq__free(pg);
}

/* The reply of one part: its block's EXEC, or its script's. */
static int bk_reader(stepq *q, void *ctx, int abort)
{
    struct bk_page *pg = ctx;
    struct bk_run *b = pg->b;
    int rc = abort ? STEPQ_OK : dump_read(b, (const redisReply *const *)pg->keys, pg->n, !pg->coll);

    (void)q;
    if (rc == STEPQ_OK && !abort && b->o->progress != NULL)
        b->o->progress(b->keys, 0, NULL, NULL, b->o->arg);
    bk_page_free(pg);
    return rc;
}

/* Queues one part: the keys of the side backed up in batch->element from
 * *from on, at most PAGE_KEYS of them and all of one kind (collection
 * rules or not), in a block or a script; none when none was left. */
static int backup_part(struct bk_run *b, const redisReply *batch, size_t *from)
{
    stepq *q = b->q;
    struct bk_page *pg = stepq__calloc(1, sizeof(*pg));
    size_t max = batch->elements - *from < PAGE_KEYS ? batch->elements - *from : PAGE_KEYS;
    enum stepq__side side;

    if (pg == NULL || (pg->keys = stepq__calloc(max + 1, sizeof(*pg->keys))) == NULL ||
        (pg->item = stepq__calloc(max + 1, sizeof(*pg->item))) == NULL) {
        if (pg != NULL) {
            stepq__free(pg->keys);
            stepq__free(pg->item);
        }
        stepq__free(pg);
        stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        return STEPQ_ERR;
    }
    pg->b = b;
    for (; *from < batch->elements && pg->n < max; (*from)++) {
        const redisReply *k = batch->element[*from];
        int rule = stepq__keymap_match(&q->km, k->str, k->len, &side, NULL, NULL);
        if (rule < 0 || side != b->side)
            continue;
        enum stepq__keytype t = q->km.rules[rule].type;
        int coll = t == STEPQ_KT_SET || t == STEPQ_KT_ZSET;
        /* A part is of one kind: the collections (a few) go to the script,
         * which checks their type and size; the rest in a block. */
        if (pg->n > 0 && coll != pg->coll)
            break;
        pg->coll = coll;
        redisReply *x = &pg->item[pg->n];
        x->type = REDIS_REPLY_STRING;
        if ((x->str = sdsnewlen(k->str, k->len)) == NULL) {
            bk_page_free(pg);
            stepq__set_error(q, STEPQ_E_OOM, "out of memory");
            return STEPQ_ERR;
        }
        x->len = k->len;
        pg->keys[pg->n++] = x;
    }
    if (pg->n == 0) {
        bk_page_free(pg);
        return STEPQ_OK;
    }
    if (stepq__walk_pace(q, &b->walk, &b->pace, (long)pg->n) != STEPQ_OK ||
        stepq__ensure(q) != STEPQ_OK ||
        (pg->coll ? dump_append(b, (const redisReply *const *)pg->keys, pg->n)
                  : dump_append_multi(b, (const redisReply *const *)pg->keys, pg->n)) != STEPQ_OK) {
        bk_page_free(pg);
        return STEPQ_ERR;
    }
    if (stepq__window_push(q, &b->walk.win, bk_reader, pg, (long)pg->n) != STEPQ_OK) {
        bk_page_free(pg);
        return STEPQ_ERR;
    }
    return STEPQ_OK;
}

static int backup_batch(stepq *q, const redisReply *batch, const char *cursor, void *arg)
{
    size_t from = 0;

    (void)q;
    (void)cursor;
    while (from < batch->elements) {
        if (backup_part(arg, batch, &from) != STEPQ_OK)
            return STEPQ_ERR;
    }
    return STEPQ_OK;
}

static int fill_header(stepq *q, stepq__bk_info *info, enum stepq__side side)
{
    stepq_phase ph;

    memset(info, 0, sizeof(*info));
    if (stepq__info_field(q, "redis_version", info->redis_version, sizeof(info->redis_version)) !=
            STEPQ_OK ||
        stepq_phase_get(q, &ph) != STEPQ_OK)
        return STEPQ_ERR;
    snprintf(info->side, sizeof(info->side), "%s", side == STEPQ_OLD ? "old" : "new");
    snprintf(info->phase, sizeof(info->phase), "%s", stepq_phase_name(ph));
    snprintf(info->ns, sizeof(info->ns), "%s", q->km.ns);
    info->created_ms = stepq__now_ms();
    sds rules = stepq__bk_rules_text(&q->km);
    info->rules = rules ? stepq__strdup(rules) : NULL;
    sdsfree(rules);
    if (info->rules == NULL) {
        stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        return STEPQ_ERR;
    }
    return STEPQ_OK;
}

/* Writes the whole stream to fp. */
static int backup_stream(struct bk_run *b, FILE *fp, stepq__bk_info *info,
                         unsigned long long *count, uint64_t *sum)
{
    stepq *q = b->q;
    sds match = sdscatfmt(sdsempty(), "%s*", q->km.ns);
    int rc = STEPQ_ERR;

    b->w = stepq__bk_writer_new(fp, info);
    if (b->w == NULL || match == NULL) {
        stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        goto out;
    }
    if (stepq__walk_run(q, &b->walk, "0", SCAN_COUNT, STEPQ_WALK_PAGES * SCAN_COUNT, backup_batch,
                        bk_idle, b) != STEPQ_OK)
        goto out;
    if (stepq__bk_writer_finish(b->w, count, sum) != 0 || fflush(fp) != 0 ||
        fsync(fileno(fp)) != 0) {
        stepq__set_error(q, STEPQ_E_IO, "cannot write the backup: %s",
                         stepq__bk_writer_errstr(b->w)[0] ? stepq__bk_writer_errstr(b->w)
                                                          : strerror(errno));
        goto out;
    }
    rc = STEPQ_OK;
out:
    for (size_t i = 0; i < b->nbigs; i++)
        sdsfree(b->bigs[i].key);
    stepq__free(b->bigs);
    b->bigs = NULL;
    b->nbigs = 0;
    stepq__bk_writer_free(b->w);
    b->w = NULL;
    sdsfree(match);
    return rc;
}

/* Reads the written file back with the validator: it must hold what we
 * wrote. */
static int backup_verify(stepq *q, const char *tmp, unsigned long long count, uint64_t sum)
{
    stepq__bk_info info;
    FILE *fp = stepq__bk_open(q, tmp);
    int rc;

    if (fp == NULL)
        return STEPQ_ERR;
    rc = stepq__bk_check(q, fp, tmp, &info, NULL, NULL);
    fclose(fp);
    if (rc == STEPQ_OK && (info.count != count || info.checksum != sum)) {
        stepq__set_error(q, STEPQ_E_IO,
                         "the backup read back from '%s' differs from what was written; check "
                         "the disk",
                         tmp);
        rc = STEPQ_ERR;
    }
    stepq__bk_info_release(&info);
    return rc;
}

static int backup_record(stepq *q, const char *path, const struct bk_run *b,
                         const stepq__bk_info *info, const stepq_backup_result *res)
{
    char abs[4096], keys[24], started[24], finished[24], last[24];
    sds key = sdscatfmt(sdsempty(), "%sstepq:backup", q->km.ns);

    if (realpath(path, abs) == NULL)
        snprintf(abs, sizeof(abs), "%s", path);
    snprintf(keys, sizeof(keys), "%lld", res->keys);
    snprintf(started, sizeof(started), "%lld", info->created_ms);
    snprintf(finished, sizeof(finished), "%lld", stepq__now_ms());
    snprintf(last, sizeof(last), "%lld", b->idle_unknown ? -1 : b->last_read_ms);
    const char *argv[] = {"HSET",          key,
                          "path",          abs,
                          "side",          info->side,
                          "keys",          keys,
                          "checksum",      res->checksum,
                          "started_at",    started,
                          "finished_at",   finished,
                          "verified",      "1",
                          "phase",         info->phase,
                          "last_read_ms",  last,
                          "last_read_key", b->last_read_key};
    redisReply *r = key ? stepq__command(q, sizeof(argv) / sizeof(*argv), argv, NULL) : NULL;
    sdsfree(key);
    if (r == NULL)
        return STEPQ_ERR;
    freeReplyObject(r);
    return STEPQ_OK;
}

int stepq_backup(stepq *q, const char *path, const stepq_backup_opts *opts,
                 stepq_backup_result *ret)
{
    stepq_backup_opts none = {0};
    struct bk_run b = {.q = q, .o = opts ? opts : &none, .last_read_ms = 0};
    stepq_backup_result res = {0};
    stepq__bk_info info = {0};
    unsigned long long count = 0;
    uint64_t sum = 0;
    sds tmp = sdscatfmt(sdsempty(), "%s.tmp", path);
    FILE *fp = NULL;
    int rc = STEPQ_ERR;

    stepq__clear_error(q);
    b.side = b.o->side_new ? STEPQ_NEW : STEPQ_OLD;
    if (b.o->big < 0) {
        stepq__set_error(q, STEPQ_E_INVALID, "big must be 1 or more (0: the default %d)",
                         BIG_DEFAULT);
        sdsfree(tmp);
        return STEPQ_ERR;
    }
    snprintf(b.big, sizeof(b.big), "%ld", b.o->big > 0 ? b.o->big : BIG_DEFAULT);
    stepq__pace_init(&b.pace, q, b.o->rate, 0, 0);
    if (tmp == NULL || fill_header(q, &info, b.side) != STEPQ_OK)
        goto out;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    fp = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (fp == NULL) {
        stepq__set_error(q, STEPQ_E_IO, "cannot create '%s': %s; check the directory", tmp,
                         strerror(errno));
        if (fd >= 0)
            close(fd);
        goto out;
    }
    long long began = stepq__now_ms();
    rc = stepq__own_reads_load(q, &b.own) == STEPQ_OK ? backup_stream(&b, fp, &info, &count, &sum)
                                                      : STEPQ_ERR;
    /* Its DUMPs touched the old keys, finished or not: a later backup or
     * cleanup must not take them for a reader. A failed run keeps its error. */
    if (b.side == STEPQ_OLD)
        rc = stepq__own_reads_note(q, began, rc);
    if (fclose(fp) != 0 && rc == STEPQ_OK) {
        stepq__set_error(q, STEPQ_E_IO, "cannot write '%s': %s", tmp, strerror(errno));
        rc = STEPQ_ERR;
    }
    if (rc == STEPQ_OK)
        rc = backup_verify(q, tmp, count, sum);
    if (rc == STEPQ_OK && rename(tmp, path) != 0) {
        stepq__set_error(q, STEPQ_E_IO, "cannot rename '%s' to '%s': %s", tmp, path,
                         strerror(errno));
        rc = STEPQ_ERR;
    }
    if (rc != STEPQ_OK) {
        unlink(tmp);
        goto out;
    }
    struct stat st;
    res.keys = b.keys;
    res.vanished = b.vanished;
    res.bytes = stat(path, &st) == 0 ? (long long)st.st_size : 0;
    snprintf(res.checksum, sizeof(res.checksum), "%016llx", (unsigned long long)sum);
    rc = backup_record(q, path, &b, &info, &res);
    if (rc == STEPQ_OK && ret != NULL)
        *ret = res;
out:
    stepq__bk_info_release(&info);
    sdsfree(tmp);
    return rc;
}

/* ---------------------------------------------------------------------------
 * Restore
 * ------------------------------------------------------------------------- */

struct rs_run {
    stepq *q;
    unsigned flags;
    int writing; /* 0: the checking pass, 1: the writing pass */
    long long now;
    sds names[RESTORE_BATCH];  /* the batch being queued */
    char kinds[RESTORE_BATCH]; /* what was queued for each (see rs_read) */
    size_t n, bytes;
    sds prev[RESTORE_BATCH]; /* the batch before it, its replies not yet read */
    char pkinds[RESTORE_BATCH];
    size_t nprev;
    int open;           /* the writing pass: a chunked key's first chunk was queued */
    char token[33];     /* this restore's mark on the chunked keys it creates */
    sds marks;          /* stepq:restoring */
    sds first_existing; /* the checking pass: the first key that exists */
    stepq_restore_result res;
    stepq_progress_fn fn;
    void *arg;
};

/* Reads the replies of one batch of n names and frees them. What each
 * name's command was (kinds): 'e' EXISTS (the checking pass), 'r' RESTORE,
 * 'c' a chunk of a big key, 'x' its end, 'X' the end of one whose expiry
 * has passed (restore_chunk.lua). Returns 0, or 1 to stop with the error
 * set. */
static int rs_read(struct rs_run *s, sds *names, const char *kinds, size_t *n)
{
    int stop = 0;

    /* An error already set (a defect found by the parser) is kept. */
    if (s->q->err != STEPQ_E_NONE)
        stop = 1;
    for (size_t i = 0; i < *n; i++) {
        redisReply *r = stop && s->q->rc == NULL ? NULL : stepq__read_raw(s->q);
        if (r == NULL) {
            stop = 1;
            continue; /* the names are still freed */
        }
        char k = kinds[i];
        if (k == 'e' && r->type == REDIS_REPLY_INTEGER && r->integer > 0) {
            s->res.existed++;
            if (s->first_existing == NULL)
                s->first_existing = sdsdup(names[i]);
        } else if (k == 'r' && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "BUSYKEY", 7) == 0) {
            s->res.existed++; /* appeared after the check, or twice in the file: kept */
        } else if (k != 'e' && r->type == REDIS_REPLY_ERROR && !stop) {
            stepq__set_error(s->q, STEPQ_E_SERVER, "redis refused to restore key '%s': %s",
                             names[i], r->str);
            stop = 1;
        } else if (k == 'r') {
            s->res.restored++;
        } else if (k == 'x' || k == 'X') {
            /* 0: the key existed at its first chunk and was kept as it is. */
            if (r->type == REDIS_REPLY_INTEGER && r->integer == 0)
                s->res.existed++;
            else if (k == 'x')
                s->res.restored++;
        }
        freeReplyObject(r);
    }
    for (size_t i = 0; i < *n; i++)
        sdsfree(names[i]);
    *n = 0;
    if (s->fn != NULL)
        s->fn(s->writing ? s->res.restored : s->res.records, 0, NULL, NULL, s->arg);
    return stop;
}

/* A batch is queued: the replies of the one before it are read (which
 * sends this one first), so one batch travels while the other is read. */
static int rs_flush(struct rs_run *s)
{
    int stop = s->nprev > 0 ? rs_read(s, s->prev, s->pkinds, &s->nprev) : 0;

    memcpy(s->prev, s->names, s->n * sizeof(*s->names));
    memcpy(s->pkinds, s->kinds, s->n);
    s->nprev = s->n;
    s->n = 0;
    s->bytes = 0;
    return stop;
}

/* Queues restore_chunk.lua for a chunk ('first' or 'next') or the end of
 * a big key. */
static int rs_append_chunk(struct rs_run *s, const stepq__bk_record *rec, const char *mode)
{
    size_t na = rec->kind == STEPQ_BK_REC_CHUNK ? 4 + rec->n * (rec->rtype == 'z' ? 2 : 1) : 3;
    const char **args = stepq__calloc(na, sizeof(*args));
    size_t *lens = stepq__calloc(na, sizeof(*lens));
    const char *keys[] = {rec->key, s->marks};
    size_t klens[] = {rec->keylen, sdslen(s->marks)};
    char exp[24];
    int rc = REDIS_ERR;

    if (args == NULL || lens == NULL)
        goto out;
    args[0] = mode;
    args[1] = s->token;
    if (rec->kind == STEPQ_BK_REC_CEND) {
        snprintf(exp, sizeof(exp), "%lld", rec->pexpireat);
        args[2] = exp;
    } else {
        args[2] = (s->flags & STEPQ_RESTORE_REPLACE) ? "1" : "0";
        args[3] = rec->rtype == 'z' ? "zset" : "set";
        for (size_t i = 0, a = 4; i < rec->n; i++) {
            if (rec->rtype == 'z') {
                args[a] = rec->scores[i];
                lens[a++] = rec->slens[i];
            }
            args[a] = rec->members[i];
            lens[a++] = rec->mlens[i];
        }
    }
    for (size_t i = 0; i < 4 && i < na; i++)
        lens[i] = strlen(args[i]);
    rc = stepq__append_eval_keys(s->q, STEPQ_SCRIPT_RESTORE_CHUNK, 2, keys, klens, (int)na, args,
                                 lens) == STEPQ_OK
             ? REDIS_OK
             : REDIS_ERR;
out:
    stepq__free(args);
    stepq__free(lens);
    return rc;
}

/* Queues what one record needs; returns its kind for rs_read, or 0 when
 * nothing is queued. */
static char rs_append(struct rs_run *s, const stepq__bk_record *rec, int expired, int *err)
{
    char ttl[24];

    *err = 0;
    if (!s->writing) {
        if (rec->kind == STEPQ_BK_REC_CHUNK || expired)
            return 0;
        *err = redisAppendCommand(s->q->rc, "EXISTS %b", rec->key, rec->keylen) != REDIS_OK;
        return 'e';
    }
    if (rec->kind == STEPQ_BK_REC_CHUNK) {
        const char *mode = s->open ? "next" : "first";
        s->open = 1;
        *err = rs_append_chunk(s, rec, mode) != REDIS_OK;
        return 'c';
    }
    if (rec->kind == STEPQ_BK_REC_CEND) {
        /* Sent even when the expiry has passed: the members are there, and
         * PEXPIREAT in the past deletes them. */
        s->open = 0;
        *err = rs_append_chunk(s, rec, "end") != REDIS_OK;
        return expired ? 'X' : 'x';
    }
    if (expired)
        return 0;
    snprintf(ttl, sizeof(ttl), "%lld", rec->pexpireat > 0 ? rec->pexpireat : 0);
    if (s->flags & STEPQ_RESTORE_REPLACE)
        *err = redisAppendCommand(s->q->rc, "RESTORE %b %s %b ABSTTL REPLACE", rec->key,
                                  rec->keylen, ttl, rec->dump, rec->dumplen) != REDIS_OK;
    else
        *err = redisAppendCommand(s->q->rc, "RESTORE %b %s %b ABSTTL", rec->key, rec->keylen, ttl,
                                  rec->dump, rec->dumplen) != REDIS_OK;
    return 'r';
}

static int rs_record(const stepq__bk_record *rec, void *arg)
{
    struct rs_run *s = arg;
    int err,
        expired = rec->kind != STEPQ_BK_REC_CHUNK && rec->pexpireat > 0 && rec->pexpireat <= s->now;

    /* A chunked key counts once, at its end. */
    if (!s->writing && rec->kind != STEPQ_BK_REC_CHUNK) {
        s->res.records++;
        s->res.expired += expired;
    }
    if (stepq__ensure(s->q) != STEPQ_OK)
        return 1;
    char kind = rs_append(s, rec, expired, &err);
    if (kind == 0 && !err)
        return 0;
    s->names[s->n] = err ? NULL : sdsnewlen(rec->key, rec->keylen);
    if (s->names[s->n] == NULL) {
        stepq__set_error(s->q, STEPQ_E_OOM, "out of memory");
        return 1;
    }
    s->kinds[s->n++] = kind;
    s->bytes += rec->dumplen + rec->keylen;
    for (size_t i = 0; rec->mlens != NULL && i < rec->n; i++)
        s->bytes += rec->mlens[i];
    if (s->n == RESTORE_BATCH || s->bytes >= RESTORE_BYTES)
        return rs_flush(s);
    return 0;
}

/* One pass over the file; the batch left at the end is flushed. */
static int rs_pass(struct rs_run *s, FILE *fp, const char *path, stepq__bk_info *info)
{
    int rc = s->writing ? stepq__bk_check(s->q, fp, path, info, rs_record, s)
                        : stepq__bk_check_names(s->q, fp, path, info, rs_record, s);

    /* The replies of what was sent must be read, even after a defect. */
    int stop = rs_read(s, s->prev, s->pkinds, &s->nprev);
    stop |= rs_read(s, s->names, s->kinds, &s->n);
    s->bytes = 0;
    if (rc == STEPQ_OK && stop)
        rc = STEPQ_ERR;
    return rc;
}

/* A backup from a newer Redis may hold DUMP payloads this one cannot read:
 * refuse before writing rather than fail halfway. */
static int rs_check_version(stepq *q, const stepq__bk_info *info)
{
    char have[32];
    int fa = 0, fb = 0, ha = 0, hb = 0;

    if (stepq__info_field(q, "redis_version", have, sizeof(have)) != STEPQ_OK)
        return STEPQ_ERR;
    sscanf(info->redis_version, "%d.%d", &fa, &fb);
    sscanf(have, "%d.%d", &ha, &hb);
    if (fa > ha || (fa == ha && fb > hb)) {
        stepq__set_error(q, STEPQ_E_CONFLICT,
                         "the backup was taken on redis %s, newer than this redis %s; restore it "
                         "into redis %d.%d or newer; nothing was written",
                         info->redis_version, have, fa, fb);
        return STEPQ_ERR;
    }
    return STEPQ_OK;
}

/* A backup is an old state: restored into a side the phase reads (or
 * falls back to), it brings back steps that ended since it was taken, and
 * with --replace it rewinds live ones. So the old keys are restored in
 * 'step' only (after a cleanup, before the rollback, whose reconcile
 * rewrites them from the new keys before anything reads them), the new
 * keys in 'job' and 'dual-write' only (and they are then untrusted until a
 * repair). --force passes, audited: a disaster recovery. */
static int rs_check_phase(stepq *q, const char *side, unsigned flags, const char *path)
{
    stepq_phase ph;
    int old = strcmp(side, "old") == 0;

    if (stepq_phase_get(q, &ph) != STEPQ_OK)
        return STEPQ_ERR;
    int ok = old ? ph == STEPQ_PHASE_STEP : ph <= STEPQ_PHASE_DUAL_WRITE;
    if (ok || (flags & STEPQ_RESTORE_FORCE)) {
        if (ok || (flags & STEPQ_RESTORE_DRY_RUN))
            return STEPQ_OK;
        return stepq__audit(q,
                            json_pack("{s:s, s:s, s:s, s:s, s:b, s:b}", "action", "restore", "side",
                                      side, "file", path, "phase", stepq_phase_name(ph), "replace",
                                      (flags & STEPQ_RESTORE_REPLACE) != 0, "force", 1));
    }
    if (old)
        stepq__set_error(q, STEPQ_E_CONFLICT,
                         "cannot restore the old keys in phase '%s': stepq reads them there, and "
                         "the backup would bring back steps that ended since it was taken; "
                         "restore them in phase 'step' (where 'stepq migrate rollback' rewrites "
                         "them from the new keys before anything reads them), or use --force for "
                         "a disaster recovery; nothing was written",
                         stepq_phase_name(ph));
    else
        stepq__set_error(q, STEPQ_E_CONFLICT,
                         "cannot restore the new keys in phase '%s': stepq reads them there, and "
                         "the backup would bring back steps that ended since it was taken; roll "
                         "back to 'dual-write' first ('stepq migrate rollback'), or use --force "
                         "for a disaster recovery; nothing was written",
                         stepq_phase_name(ph));
    return STEPQ_ERR;
}

/* After the writes: new keys restored hold what the backup held, so they
 * are untrusted until a repair (as after a rollback to 'job'); old keys
 * restored in 'step' are stepq's own write, not a reader for cleanup. */
static int rs_after(stepq *q, const char *side, long long began)
{
    if (strcmp(side, "old") == 0)
        return stepq__own_reads_add(q, began, stepq__now_ms());
    redisReply *r = stepq__commandf(q, "HSET %s untrusted_since %lld", q->k_phase, stepq__now_ms());
    if (r == NULL)
        return STEPQ_ERR;
    freeReplyObject(r);
    return STEPQ_OK;
}

/* A chunked key that a restore created and did not finish (killed
 * between its first chunk and its end) is still marked in stepq:restoring:
 * partial, without its expiry. Without --replace it would pass for a key
 * that existed before, so the restore refuses and names it. */
static int rs_check_partial(struct rs_run *s)
{
    redisReply *r = stepq__commandf(s->q, "HRANDFIELD %s", s->marks);

    if (r == NULL)
        return STEPQ_ERR;
    if (r->type == REDIS_REPLY_STRING && !(s->flags & STEPQ_RESTORE_REPLACE)) {
        stepq__set_error(s->q, STEPQ_E_CONFLICT,
                         "key '%s' was left partly written (some members, no expiry) by a "
                         "restore that did not finish; run the restore of the same backup "
                         "again with --replace (it rewrites every key the backup holds), or "
                         "delete the key and its mark (HDEL %s KEY); nothing was written",
                         r->str, s->marks);
        freeReplyObject(r);
        return STEPQ_ERR;
    }
    freeReplyObject(r);
    return STEPQ_OK;
}

int stepq_restore(stepq *q, const char *path, unsigned flags, stepq_progress_fn fn, void *arg,
                  stepq_restore_result *ret)
{
    struct rs_run *s = stepq__calloc(1, sizeof(*s));
    stepq__bk_info info = {0};
    FILE *fp = NULL;
    int rc = STEPQ_ERR;

    stepq__clear_error(q);
    if (s == NULL) {
        stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        return STEPQ_ERR;
    }
    *s = (struct rs_run){.q = q, .flags = flags, .now = stepq__now_ms(), .fn = fn, .arg = arg};
    s->marks = sdscatfmt(sdsempty(), "%sstepq:restoring", q->km.ns);
    if (s->marks == NULL || stepq__random_hex(s->token, 16) != STEPQ_OK) {
        stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        goto out;
    }
    if ((fp = stepq__bk_open(q, path)) == NULL)
        goto out;
    /* The same open file for both passes: a backup replaced meanwhile (by
     * rename) cannot slip in between the check and the writes. */
    if (rs_pass(s, fp, path, &info) != STEPQ_OK || rs_check_version(q, &info) != STEPQ_OK ||
        rs_check_phase(q, info.side, flags, path) != STEPQ_OK || rs_check_partial(s) != STEPQ_OK)
        goto out;
    if (s->first_existing != NULL && !(flags & STEPQ_RESTORE_REPLACE)) {
        stepq__set_error(q, STEPQ_E_CONFLICT,
                         "key '%s' already exists; use --replace to overwrite it (%lld of the "
                         "backup's keys exist), or delete them first; nothing was written",
                         s->first_existing, s->res.existed);
        goto out;
    }
    snprintf(s->res.side, sizeof(s->res.side), "%s", info.side);
    if (flags & STEPQ_RESTORE_DRY_RUN) {
        s->res.restored = s->res.records - s->res.expired;
        rc = STEPQ_OK;
        goto out;
    }
    stepq__bk_info_release(&info);
    s->writing = 1;
    s->res.existed = 0;
    long long began = stepq__now_ms();
    rc = rs_pass(s, fp, path, &info);
    if (rc == STEPQ_OK)
        rc = rs_after(q, s->res.side, began);
out:
    if (rc == STEPQ_OK && ret != NULL)
        *ret = s->res;
    for (size_t i = 0; i < s->n; i++)
        sdsfree(s->names[i]);
    for (size_t i = 0; i < s->nprev; i++)
        sdsfree(s->prev[i]);
    sdsfree(s->first_existing);
    sdsfree(s->marks);
    stepq__free(s);
    stepq__bk_info_release(&info);
    if (fp != NULL)
        fclose(fp);
    return rc;
}
