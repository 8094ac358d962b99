/*
 * cleanup.c - `migrate cleanup`: deleting the old keys after the switch
 * (seed 4.3.5), only when it is safe, and only keys whose new twin exists.
 *
 * Before anything is deleted: the phase must be `step`; the backup file must
 * be valid, of the old side, of this key map and namespace, taken in phase
 * `step`, and hold every old key; no live process may be pinned to a phase
 * that reads old keys; and no old key may have been read after the switch.
 * The last two can be overridden (--force, audited); the others cannot.
 *
 * Who reads old keys: OBJECT IDLETIME tells when a key was last accessed,
 * without touching it (as SCAN, EXISTS and PEXPIRETIME do not). DUMP does
 * touch it, so a backup taken after the switch would hide earlier readers:
 * the backup therefore reads the idle times just before its DUMP and records
 * the latest access in stepq:backup (last_read_ms, last_read_key), and an
 * access during that backup's own run is not held against the old keys. The
 * check here reads the idle time of every old key, before anything else.
 *
 * Coverage: the backup's key names are kept as a set of their 64-bit xxh64
 * in bounded memory (src/nameset.c: sorted on a temporary file, a block
 * read a lookup), not the names themselves (docs/backup.md weighs this
 * against counts, digests and an in-memory set).
 *
 * Three passes: the check pass (one SCAN, the idle times, the coverage)
 * writes the old names it finds to an unlinked temporary file; the delete
 * pass reads them back, so it deletes only keys whose idle time was read,
 * without a second SCAN of both sides; a final SCAN over what is left
 * counts the old keys the check pass did not see, which are kept
 * (docs/backup.md, "One SCAN to check, the names on file to delete").
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <jansson.h>
#include <xxhash.h>

#include "stepq_private.h"
#include "backup.h"

/* The check pass's page: one OBJECT IDLETIME a key costs Redis far less
 * than a round trip, so its pages are large, or a slow link would set its
 * pace (at 2 ms, 500-key pages made it one round trip a page). */
#define CHECK_COUNT   5000
#define CLEAN_BATCH   100    /* key pairs per script call: under the EVAL argument cap */
#define READ_SLACK_MS 1500   /* OBJECT IDLETIME counts whole seconds */
#define BIG_MEMBERS   "1000" /* larger collections are decided in chunks */
/* Big collections whose names wait for the end of the delete pass before
 * the pipe is drained for them: every drain costs the pages in flight (the
 * seed layout has one per worker, 50 at 100,000 steps). */
#define BIGS_HELD 256

/*
 * The SCAN pattern of the old side: the namespace, then any first byte an
 * old template begins with, then anything ("[jw]*" for the built-in map:
 * job:{id}, jobs:..., worker:{id}:jobs). Every old key matches it; most
 * new keys (step:..., steps:...) do not, and Redis sends them back no more
 * (about 0.7 us a name spared, with its expiry lookup, and the client's
 * match of each). NULL (the whole namespace) when an old template begins
 * with its {id}. The names that pass are still matched against the map.
 */
static sds old_side_glob(const stepq__keymap *km)
{
    unsigned char seen[256] = {0};
    sds g = sdsempty();

    for (const char *p = km->ns; g != NULL && *p; p++)
        g = strchr("*?[]\\", *p) ? sdscatprintf(g, "\\%c", *p) : sdscatlen(g, p, 1);
    g = g != NULL ? sdscatlen(g, "[", 1) : NULL;
    for (size_t r = 0; g != NULL && r < km->n; r++) {
        unsigned char b = (unsigned char)km->rules[r].tpl[STEPQ_OLD][0];
        if (km->rules[r].plen[STEPQ_OLD] == 0 || b == '\0') {
            sdsfree(g);
            return NULL;
        }
        if (seen[b]++)
            continue;
        /* Escaped inside the class: Redis's glob reads "\x" as x there. */
        g = strchr("\\]^-[", b) ? sdscatprintf(g, "\\%c", b) : sdscatlen(g, &b, 1);
    }
    return g != NULL ? sdscatlen(g, "]*", 2) : NULL;
}

/* A key name's 64-bit hash, as the coverage set (src/nameset.c) keeps it. */
static uint64_t name_hash(const char *key, size_t len)
{
    return XXH64(key, len, 0);
}

/* ---------------------------------------------------------------------------
 * The run
 * ------------------------------------------------------------------------- */

struct cl_run {
    stepq *q;
    const stepq_cleanup_opts *o;
    stepq__nameset *set; /* the xxh64 of every key name in the backup */
    char path[256];
    long long since;            /* when the phase became `step` */
    long long started;          /* when redis-server started (0: unknown) */
    long long win_lo, win_hi;   /* the recorded backup's own run; lo > hi: none */
    int idle_unknown;           /* an LFU policy: no idle times */
    long long uncovered, reads; /* findings of the check pass */
    char uncovered_key[STEPQ_RULE_MAX], read_key[STEPQ_RULE_MAX]; /* src/keyname.c's form */
    long long read_at;
    sds forced; /* the refusals --force overrode, for the audit entry */
    stepq__pace pace;
    stepq_cleanup_result res;
    const char *dry, *adopt; /* "1" or "0", as the script takes them */
    sds tpl;                 /* the step templates and new pending key, for the script */
    stepq__windows own;      /* stepq's own touches of old keys: not a reader */
    stepq__walk walk;
    /* The check pass's old names, each a 4-byte length and its bytes, on an
     * unlinked temporary file: the delete pass reads them back in order
     * instead of scanning both sides again. `seen` holds their xxh64, for
     * the final pass (old keys the check pass did not see are kept). */
    FILE *names;
    stepq__nameset *seen;
    sds glob;           /* the SCAN pattern of the old side (NULL: the namespace's) */
    off_t acked;        /* the names up to here have their scripts answered */
    long long deadline; /* a cluster's retry budget (stepq__walk_retry) */
    sds *bigs;          /* collections too big for one script, decided on an empty pipe */
    size_t nbigs, capbigs;
};

/* The old keys of one SCAN page on their way (src/walk_pipe.c): the check
 * pass keeps their names for the report of a read. */
struct cl_page {
    struct cl_run *c;
    size_t n;
    redisReply *item;  /* each name as a string reply (str an sds) */
    redisReply **keys; /* pointers to them */
};

static int refuse(struct cl_run *c, const char *fmt, ...) STEPQ_PRINTF(2, 3);

/* A refusal --force may override: with FORCE, it is noted for the audit
 * entry and the run goes on; without, it is the error. */
static int refuse(struct cl_run *c, const char *fmt, ...)
{
    char msg[STEPQ_ERRSTR_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (c->o->flags & STEPQ_CLEANUP_FORCE) {
        c->forced = sdscatfmt(c->forced ? c->forced : sdsempty(), "%s%s",
                              c->forced && sdslen(c->forced) ? "; " : "", msg);
        return STEPQ_OK;
    }
    stepq__set_error(c->q, STEPQ_E_CONFLICT, "%s; use --force to delete anyway (audited)", msg);
    return STEPQ_ERR;
}

/* Field i of an HMGET reply as a number into *ret: -1 when the field is
 * absent; STEPQ_ERR (naming `what`) when it is not a whole number. */
static int hash_ll(stepq *q, const redisReply *r, size_t i, const char *what, long long *ret)
{
    *ret = -1;
    if (r->type != REDIS_REPLY_ARRAY || i >= r->elements || r->element[i]->type == REDIS_REPLY_NIL)
        return STEPQ_OK;
    return stepq__reply_ll(q, r->element[i], what, ret);
}

/* The phase must be `step`; reads when it became so. */
static int check_phase(struct cl_run *c)
{
    redisReply *r =
        stepq__commandf(c->q, "HMGET %b phase since", c->q->k_phase, sdslen(c->q->k_phase));

    if (r == NULL)
        return STEPQ_ERR;
    if (stepq__reply_shape(c->q, r, "..", "HMGET stepq:phase") != STEPQ_OK) {
        freeReplyObject(r);
        return STEPQ_ERR;
    }
    const char *ph = r->element[0]->type == REDIS_REPLY_STRING ? r->element[0]->str : "job";
    int rc = STEPQ_OK;
    if (strcmp(ph, "step") != 0) {
        stepq__set_error(c->q, STEPQ_E_CONFLICT,
                         "cleanup runs only in phase 'step', and the phase is '%s': old keys are "
                         "still read or written; finish the migration first ('stepq migrate "
                         "phase')",
                         ph);
        rc = STEPQ_ERR;
    }
    int bad = rc == STEPQ_OK && hash_ll(c->q, r, 1, "stepq:phase since", &c->since) != STEPQ_OK;
    freeReplyObject(r);
    if (bad)
        return STEPQ_ERR;
    if (rc == STEPQ_OK && c->since <= 0)
        rc = refuse(c,
                    "'%s' does not say since when the phase is 'step', so old-key reads "
                    "cannot be judged",
                    c->q->k_phase);
    char up[32];
    if (rc == STEPQ_OK && stepq__info_field(c->q, "uptime_in_seconds", up, sizeof(up)) != STEPQ_OK)
        return STEPQ_ERR;
    long long secs = 0;
    if (rc == STEPQ_OK && up[0] &&
        stepq__parse_ll(c->q, up, strlen(up), "INFO server uptime_in_seconds", &secs) != STEPQ_OK)
        return STEPQ_ERR;
    c->started = rc == STEPQ_OK && up[0] ? stepq__now_ms() - secs * 1000 : 0;
    return rc;
}

/* A refusal for old keys read after the switch. When redis-server started
 * after the switch, loading its data set every key's access time, so a read
 * since cannot be told from the load: the operator is told that instead of
 * being sent to look for a reader that may not exist. */
static int refuse_reads(struct cl_run *c, const char *key, long long at, long long n)
{
    if (c->started - READ_SLACK_MS > c->since)
        return refuse(c,
                      "redis-server restarted %lld s after the switch to 'step', and loading "
                      "marks every key as read; make sure nothing reads old keys ('stepq "
                      "migrate status')",
                      (c->started - c->since) / 1000);
    if (n == 0)
        return refuse(c,
                      "old key '%s' was read %lld s after the switch to 'step', before the "
                      "backup: something still reads old keys",
                      key, (at - c->since) / 1000);
    return refuse(c,
                  "old key '%s' was read %lld s ago, %lld s after the switch to 'step' (%lld "
                  "old keys read since): something still reads old keys",
                  key, (stepq__now_ms() - at) / 1000, (at - c->since) / 1000, n);
}

static int add_name(const stepq__bk_record *rec, void *arg)
{
    struct cl_run *c = arg;

    if (stepq__nameset_add(c->set, name_hash(rec->key, rec->keylen)) != 0) {
        stepq__set_error(c->q, STEPQ_E_OOM, "out of memory while reading the backup's keys");
        return 1;
    }
    return 0;
}

static int check_header(struct cl_run *c, const stepq__bk_info *info)
{
    sds rules = stepq__bk_rules_text(&c->q->km);
    const char *why = NULL;

    if (rules == NULL) {
        stepq__set_error(c->q, STEPQ_E_OOM, "out of memory");
        return STEPQ_ERR;
    }
    if (strcmp(info->side, "old") != 0)
        why = "holds the new keys; take one of the old keys ('stepq migrate backup --side old')";
    else if (strcmp(info->ns, c->q->km.ns) != 0 || strcmp(info->rules, rules) != 0)
        why = "was taken with another key map or namespace";
    else if (strcmp(info->phase, "step") != 0)
        why = "was taken before the switch to 'step', while old keys were still written; take "
              "a final backup now";
    sdsfree(rules);
    if (why == NULL)
        return STEPQ_OK;
    stepq__set_error(c->q, STEPQ_E_CONFLICT, "backup '%s' %s; nothing was deleted", c->path, why);
    return STEPQ_ERR;
}

/* The recorded backup (stepq:backup) speaks for this file only when their
 * checksums agree: then its own run is not held against the old keys, and
 * what it saw before its DUMP counts. */
static int check_backup_record(struct cl_run *c, const stepq__bk_info *info)
{
    redisReply *r = stepq__commandf(c->q,
                                    "HMGET %bstepq:backup checksum side started_at finished_at "
                                    "last_read_ms last_read_key",
                                    c->q->km.ns, strlen(c->q->km.ns));
    char sum[17];

    if (r == NULL)
        return STEPQ_ERR;
    snprintf(sum, sizeof(sum), "%016llx", (unsigned long long)info->checksum);
    c->win_lo = 1;
    c->win_hi = 0;
    int rc = STEPQ_OK;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 6 &&
        r->element[0]->type == REDIS_REPLY_STRING && strcmp(r->element[0]->str, sum) == 0) {
        long long lo, hi, last;
        if (hash_ll(c->q, r, 2, "stepq:backup started_at", &lo) != STEPQ_OK ||
            hash_ll(c->q, r, 3, "stepq:backup finished_at", &hi) != STEPQ_OK ||
            hash_ll(c->q, r, 4, "stepq:backup last_read_ms", &last) != STEPQ_OK) {
            freeReplyObject(r);
            return STEPQ_ERR;
        }
        c->win_lo = lo - READ_SLACK_MS;
        c->win_hi = hi + READ_SLACK_MS;
        const char *key = r->element[5]->type == REDIS_REPLY_STRING ? r->element[5]->str : "?";
        if (last == -1)
            c->idle_unknown = 1;
        else if (last - READ_SLACK_MS > c->since && !stepq__own_read(&c->own, last, READ_SLACK_MS))
            rc = refuse_reads(c, key, last, 0);
    }
    freeReplyObject(r);
    return rc;
}

static int check_backup(struct cl_run *c, const char *path)
{
    stepq__bk_info info;
    FILE *fp = stepq__bk_open(c->q, path);
    int rc;

    if (fp == NULL)
        return STEPQ_ERR;
    c->set = stepq__nameset_new();
    rc = c->set != NULL ? stepq__bk_check_names(c->q, fp, path, &info, add_name, c) : STEPQ_ERR;
    fclose(fp);
    if (c->set == NULL)
        stepq__set_error(c->q, STEPQ_E_OOM, "out of memory");
    if (rc == STEPQ_OK && stepq__nameset_seal(c->set) != 0) {
        stepq__set_error(c->q, STEPQ_E_IO,
                         "cannot sort the backup's key names in a temporary file: %s; check "
                         "the space in TMPDIR",
                         strerror(errno));
        rc = STEPQ_ERR;
    }
    if (c->set == NULL) {
        stepq__bk_info_release(&info);
        return STEPQ_ERR;
    }
    if (rc == STEPQ_OK)
        rc = check_header(c, &info);
    if (rc == STEPQ_OK)
        rc = check_backup_record(c, &info);
    stepq__bk_info_release(&info);
    return rc;
}

/* No live process may be pinned to a phase that reads old keys. */
static int check_procs(struct cl_run *c)
{
    json_t *a = stepq__procs(c->q), *p;
    size_t i;
    int rc = STEPQ_OK;

    if (a == NULL)
        return STEPQ_ERR;
    json_array_foreach(a, i, p)
    {
        const char *ph = json_string_value(json_object_get(p, "phase"));
        if (ph == NULL || strcmp(ph, "stored") == 0 || strcmp(ph, "step") == 0)
            continue;
        rc = refuse(c,
                    "live process '%s' (%s, pid %lld on %s) is pinned to phase '%s', which reads "
                    "old keys; stop it or unset its ENABLE_DUAL_WRITE_STEPS/PRIMARY_KEY_PATTERN",
                    json_string_value(json_object_get(p, "id")),
                    json_string_value(json_object_get(p, "kind")),
                    (long long)json_integer_value(json_object_get(p, "pid")),
                    json_string_value(json_object_get(p, "host")), ph);
        break;
    }
    json_decref(a);
    return rc;
}

static int lookup_failed(struct cl_run *c)
{
    stepq__set_error(c->q, STEPQ_E_IO, "cannot read the backup's key names back: %s",
                     strerror(errno));
    return STEPQ_ERR;
}

static void judge_idle(struct cl_run *c, const redisReply *idle, const redisReply *key)
{
    if (idle->type != REDIS_REPLY_INTEGER) {
        c->idle_unknown = 1;
        return;
    }
    long long at = stepq__now_ms() - idle->integer * 1000;
    if (at - READ_SLACK_MS <= c->since || (at >= c->win_lo && at <= c->win_hi) ||
        stepq__own_read(&c->own, at, READ_SLACK_MS))
        return;
    if (c->reads++ == 0 || at > c->read_at) {
        c->read_at = at;
        stepq__keyname_buf(c->read_key, sizeof(c->read_key), key->str, key->len);
    }
}

static void cl_page_free(struct cl_page *pg)
{
    for (size_t i = 0; i < pg->n; i++)
        sdsfree(pg->item[i].str);
    stepq__free(pg->item);
    stepq__free(pg->keys);
    stepq__free(pg);
}

/* The idle times of one page's old keys. */
static int check_reader(stepq *q, void *ctx, int abort)
{
    struct cl_page *pg = ctx;
    int rc = STEPQ_OK;

    for (size_t i = 0; !abort && i < pg->n; i++) {
        redisReply *r = stepq__read_raw(q);
        if (r == NULL) {
            rc = STEPQ_ERR;
            break;
        }
        judge_idle(pg->c, r, pg->keys[i]);
        freeReplyObject(r);
    }
    cl_page_free(pg);
    return rc;
}

/* Keeps an old name the check pass saw, for the delete pass (the file) and
 * the final pass (its hash). */
static int put_name(struct cl_run *c, const char *key, size_t len, uint64_t h)
{
    uint32_t n = (uint32_t)len;

    if (fwrite(&n, sizeof(n), 1, c->names) != 1 || fwrite(key, 1, len, c->names) != len) {
        stepq__set_error(c->q, STEPQ_E_IO,
                         "cannot write the old key names to a temporary file: %s; check the "
                         "space in TMPDIR; nothing was deleted",
                         strerror(errno));
        return STEPQ_ERR;
    }
    if (stepq__nameset_add(c->seen, h) != 0) {
        stepq__set_error(c->q, STEPQ_E_OOM, "out of memory while keeping the old key names");
        return STEPQ_ERR;
    }
    return STEPQ_OK;
}

/* The check pass over one SCAN page: coverage here, the idle times queued. */
static int check_batch(stepq *q, const redisReply *batch, const char *cursor, void *arg)
{
    struct cl_run *c = arg;
    struct cl_page *pg = stepq__calloc(1, sizeof(*pg));
    enum stepq__side side;

    (void)cursor;
    /* The next page's SCAN, queued just before this call, leaves now: sent
     * with this page's OBJECT IDLETIMEs it waited for the client to make
     * them all, and over a slow link Redis then waited a round trip for
     * the names that feed it. */
    if (stepq__walk_flush(q) != STEPQ_OK) {
        stepq__free(pg);
        return STEPQ_ERR;
    }
    if (pg == NULL || (pg->item = stepq__calloc(batch->elements + 1, sizeof(*pg->item))) == NULL ||
        (pg->keys = stepq__calloc(batch->elements + 1, sizeof(*pg->keys))) == NULL) {
        if (pg != NULL)
            stepq__free(pg->item);
        stepq__free(pg);
        stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        return STEPQ_ERR;
    }
    pg->c = c;
    if (stepq__ensure(q) != STEPQ_OK) {
        cl_page_free(pg);
        return STEPQ_ERR;
    }
    for (size_t i = 0; i < batch->elements; i++) {
        const redisReply *k = batch->element[i];
        if (stepq__keymap_match(&q->km, k->str, k->len, &side, NULL, NULL) < 0 || side != STEPQ_OLD)
            continue;
        uint64_t h = name_hash(k->str, k->len);
        int has = stepq__nameset_has(c->set, h);
        if (has < 0) {
            cl_page_free(pg);
            return lookup_failed(c);
        }
        if (put_name(c, k->str, k->len, h) != STEPQ_OK) {
            cl_page_free(pg);
            return STEPQ_ERR;
        }
        if (!has && c->uncovered++ == 0)
            stepq__keyname_buf(c->uncovered_key, sizeof(c->uncovered_key), k->str, k->len);
        redisReply *x = &pg->item[pg->n];
        x->type = REDIS_REPLY_STRING;
        x->str = sdsnewlen(k->str, k->len);
        x->len = k->len;
        /* By argv: formatting "%b" was a fifth of the check pass's time. */
        const char *argv[] = {"OBJECT", "IDLETIME", k->str};
        const size_t lens[] = {6, 8, k->len};
        if (x->str == NULL || redisAppendCommandArgv(q->rc, 3, argv, lens) != REDIS_OK) {
            sdsfree(x->str);
            cl_page_free(pg);
            stepq__set_error(q, STEPQ_E_OOM, "out of memory");
            return STEPQ_ERR;
        }
        pg->keys[pg->n++] = x;
    }
    c->res.old_keys += (long long)pg->n;
    if (pg->n == 0) {
        cl_page_free(pg);
        return STEPQ_OK;
    }
    if (stepq__window_push(q, &c->walk.win, check_reader, pg, (long)pg->n) != STEPQ_OK) {
        cl_page_free(pg);
        return STEPQ_ERR;
    }
    return STEPQ_OK;
}

static int check_keys(struct cl_run *c, sds match)
{
    (void)match;
    if ((c->names = tmpfile()) == NULL || (c->seen = stepq__nameset_new()) == NULL) {
        stepq__set_error(c->q, c->names ? STEPQ_E_OOM : STEPQ_E_IO,
                         "cannot keep the old key names: %s; check the space in TMPDIR",
                         c->names ? "out of memory" : strerror(errno));
        return STEPQ_ERR;
    }
    if (stepq__walk_run_match(c->q, &c->walk, c->glob, "0", CHECK_COUNT,
                              STEPQ_WALK_PAGES * CHECK_COUNT, check_batch, NULL, c) != STEPQ_OK)
        return STEPQ_ERR;
    if (fflush(c->names) != 0 || stepq__nameset_seal(c->seen) != 0) {
        stepq__set_error(c->q, STEPQ_E_IO,
                         "cannot write the old key names to a temporary file: %s; check the "
                         "space in TMPDIR; nothing was deleted",
                         strerror(errno));
        return STEPQ_ERR;
    }
    if (c->uncovered > 0) {
        stepq__set_error(c->q, STEPQ_E_CONFLICT,
                         "backup '%s' does not hold old key '%s' (%lld old keys missing from "
                         "it); take a new backup ('stepq migrate backup --side old'); nothing "
                         "was deleted",
                         c->path, c->uncovered_key, c->uncovered);
        return STEPQ_ERR;
    }
    if (c->reads > 0)
        return refuse_reads(c, c->read_key, c->read_at, c->reads);
    if (c->idle_unknown)
        return refuse(c, "redis does not track idle times (an LFU maxmemory-policy), so reads of "
                         "old keys cannot be ruled out");
    return STEPQ_OK;
}

/* Writes the audit entry of a forced run. */
static int audit_force(struct cl_run *c)
{
    char host[256] = "";

    gethostname(host, sizeof(host) - 1);
    json_t *o = json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:i, s:b}", "ts",
                          (json_int_t)stepq__now_ms(), "action", "cleanup-force", "from", "step",
                          "to", "step", "who", c->o->who ? c->o->who : "unknown", "reason",
                          c->forced, "host", host, "pid", (int)getpid(), "force", 1);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (s == NULL) {
        stepq__set_error(c->q, STEPQ_E_OOM, "out of memory");
        return STEPQ_ERR;
    }
    redisReply *r = stepq__commandf(c->q, "RPUSH %b %s", c->q->k_audit, sdslen(c->q->k_audit), s);
    free(s);
    if (r == NULL)
        return STEPQ_ERR;
    freeReplyObject(r);
    return STEPQ_OK;
}

/* ---------------------------------------------------------------------------
 * The delete pass
 * ------------------------------------------------------------------------- */

/* Reports an old key kept, with why. */
static void kept_key(struct cl_run *c, const char *key, size_t len, const char *why)
{
    c->res.kept++;
    if (c->o->kept != NULL)
        c->o->kept(key, len, why, c->o->arg);
}

/* Decides a collection too big for one call: its members are judged in
 * chunks (each chunk atomic, adopting with --adopt), and it is deleted when
 * none is unsafe. A member a writer adds between two chunks is not seen:
 * nothing but the old application writes old keys in 'step', and its writes
 * show in the idle times the check pass read. */
/* A big collection decided member by member: the SSCAN/ZSCAN pages and the
 * scripts over them on a window of their own (1 round trip a chunk, not 2:
 * the next page is asked for before this one's script is read). */
struct big_walk {
    struct cl_run *c;
    const char *key;
    size_t len;
    char type, cursor[32], first[STEPQ_RULE_MAX + 48];
    long long unsafe;
    int done;
    stepq__window win;
};

static int big_eval_reader(stepq *q, void *ctx, int abort)
{
    struct big_walk *g = ctx;

    if (abort)
        return STEPQ_OK;
    redisReply *r = stepq__read_reply(q);
    if (r == NULL)
        return STEPQ_ERR;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
        r->element[0]->type != REDIS_REPLY_INTEGER || r->element[1]->type != REDIS_REPLY_STRING ||
        r->element[2]->type != REDIS_REPLY_INTEGER) {
        freeReplyObject(r);
        stepq__set_error(q, STEPQ_E_PROTOCOL, "unexpected reply from cleanup_batch");
        return STEPQ_ERR;
    }
    if (g->unsafe == 0 && r->element[0]->integer > 0) {
        char id[STEPQ_RULE_MAX];
        stepq__keyname_buf(id, sizeof(id), r->element[1]->str, r->element[1]->len);
        snprintf(g->first, sizeof(g->first), "it holds step '%s' that the new side lacks", id);
    }
    g->unsafe += r->element[0]->integer;
    g->c->res.adopted += r->element[2]->integer;
    freeReplyObject(r);
    return STEPQ_OK;
}

static int big_send_scan(stepq *q, struct big_walk *g);

static int big_scan_reader(stepq *q, void *ctx, int abort)
{
    struct big_walk *g = ctx;
    struct cl_run *c = g->c;
    const char *args[4 + CLEAN_BATCH] = {"members", c->dry, c->adopt, c->tpl};
    size_t lens[4 + CLEAN_BATCH] = {7, 1, 1, sdslen(c->tpl)};

    if (abort)
        return STEPQ_OK;
    redisReply *page = stepq__read_reply(q);
    if (page == NULL)
        return STEPQ_ERR;
    if (page->type != REDIS_REPLY_ARRAY || page->elements != 2 ||
        page->element[0]->type != REDIS_REPLY_STRING || page->element[0]->len >= 32 ||
        page->element[1]->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(page);
        stepq__set_error(q, STEPQ_E_PROTOCOL, "unexpected SSCAN/ZSCAN reply");
        return STEPQ_ERR;
    }
    memcpy(g->cursor, page->element[0]->str, page->element[0]->len + 1);
    g->done = strcmp(g->cursor, "0") == 0;
    int rc = g->done ? STEPQ_OK : big_send_scan(q, g);
    /* COUNT is a hint: a page may hold more than one script's members. */
    const redisReply *m = page->element[1];
    size_t step = g->type == 'z' ? 2 : 1;
    for (size_t i = 0; rc == STEPQ_OK && i < m->elements;) {
        size_t n = 0;
        for (; i < m->elements && n < CLEAN_BATCH; i += step) {
            args[4 + n] = m->element[i]->str;
            lens[4 + n++] = m->element[i]->len;
        }
        if ((rc = stepq__append_eval_keys(q, STEPQ_SCRIPT_CLEANUP_BATCH, 1, &g->key, &g->len,
                                          (int)(4 + n), args, lens)) == STEPQ_OK)
            rc = stepq__window_push(q, &g->win, big_eval_reader, g, (long)n);
    }
    freeReplyObject(page);
    return rc;
}

/* A big collection's SSCAN page is stepq__member_count's (fifty scripts of
 * CLEAN_BATCH members): one round trip a page, since member cursors chain.
 * With ten scripts a page (about 4 ms of Redis) was shorter than a slow
 * link's round trip plus the client's share, and Redis waited for the next. */
static int big_send_scan(stepq *q, struct big_walk *g)
{
    char cnt[24];

    snprintf(cnt, sizeof(cnt), "%ld", stepq__member_count(CLEAN_BATCH, 0));
    if (stepq__queue_members(q, g->key, g->len, g->type, g->cursor, cnt) != STEPQ_OK)
        return STEPQ_ERR;
    return stepq__window_push(q, &g->win, big_scan_reader, g, 0);
}

static int decide_big(struct cl_run *c, const char *key, size_t len)
{
    struct big_walk g = {.c = c, .key = key, .len = len, .type = 's', .cursor = "0"};
    redisReply *t = stepq__commandf(c->q, "TYPE %b", key, len);

    if (t == NULL)
        return STEPQ_ERR;
    if (t->type == REDIS_REPLY_STATUS && strcmp(t->str, "zset") == 0)
        g.type = 'z';
    freeReplyObject(t);
    /* Started over from member 0 when the slot moved (walk.c), with the
     * verdict: judging a member twice is harmless, counting it twice not. */
    long long deadline = 0;
    int rc;
    for (;;) {
        rc = big_send_scan(c->q, &g);
        rc = rc == STEPQ_OK ? stepq__window_drain(c->q, &g.win)
                            : (stepq__window_abort(c->q, &g.win), rc);
        if (rc == STEPQ_OK || !stepq__members_retry(c->q, &deadline))
            break;
        memcpy(g.cursor, "0", 2);
        g.unsafe = 0, g.first[0] = '\0', g.done = 0;
    }
    stepq__window_release(&g.win);
    if (rc != STEPQ_OK)
        return STEPQ_ERR;
    long long unsafe = g.unsafe;
    const char *first = g.first;
    if (unsafe > 0) {
        kept_key(c, key, len, first);
        return STEPQ_OK;
    }
    if (*c->dry != '1') {
        redisReply *d = stepq__commandf(c->q, "UNLINK %b", key, len);
        if (d == NULL)
            return STEPQ_ERR;
        /* Gone already: deleted by someone else, or by this run before a
         * cluster's redo named it again. */
        int gone = d->type == REDIS_REPLY_INTEGER && d->integer == 0;
        freeReplyObject(d);
        if (gone) {
            c->res.gone++;
            return STEPQ_OK;
        }
    }
    c->res.deleted++;
    return STEPQ_OK;
}

static int is_strings(const redisReply *r)
{
    if (r->type != REDIS_REPLY_ARRAY)
        return 0;
    for (size_t i = 0; i < r->elements; i++) {
        if (r->element[i]->type != REDIS_REPLY_STRING)
            return 0;
    }
    return 1;
}

/* The collections too big for one script, on an empty pipe. */
static int delete_bigs(stepq *q, void *arg)
{
    struct cl_run *c = arg;
    int rc = STEPQ_OK;

    (void)q;
    for (size_t i = 0; i < c->nbigs; i++) {
        if (rc == STEPQ_OK)
            rc = decide_big(c, c->bigs[i], sdslen(c->bigs[i]));
        sdsfree(c->bigs[i]);
    }
    c->nbigs = 0;
    return rc;
}

static int delete_reply(struct cl_run *c, const redisReply *r)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 7 ||
        r->element[0]->type != REDIS_REPLY_INTEGER || r->element[1]->type != REDIS_REPLY_INTEGER ||
        r->element[2]->type != REDIS_REPLY_INTEGER || !is_strings(r->element[3]) ||
        !is_strings(r->element[4]) || r->element[3]->elements != r->element[4]->elements ||
        r->element[5]->type != REDIS_REPLY_INTEGER || !is_strings(r->element[6])) {
        stepq__set_error(c->q, STEPQ_E_PROTOCOL, "unexpected reply from cleanup_batch");
        return STEPQ_ERR;
    }
    c->res.deleted += r->element[0]->integer;
    c->res.gone += r->element[2]->integer;
    c->res.adopted += r->element[5]->integer;
    for (size_t i = 0; i < r->element[3]->elements; i++)
        kept_key(c, r->element[3]->element[i]->str, r->element[3]->element[i]->len,
                 r->element[4]->element[i]->str);
    /* decide_big waits for replies of its own: after the pipe has drained. */
    for (size_t i = 0; i < r->element[6]->elements; i++) {
        if (c->nbigs == c->capbigs) {
            size_t cap = c->capbigs ? c->capbigs * 2 : 8;
            sds *n = stepq__realloc(c->bigs, cap * sizeof(*n));
            if (n == NULL)
                goto oom;
            c->bigs = n;
            c->capbigs = cap;
        }
        const redisReply *k = r->element[6]->element[i];
        if ((c->bigs[c->nbigs] = sdsnewlen(k->str, k->len)) == NULL)
            goto oom;
        /* Each settle drains the pipe (a round trip and the pages behind
         * it lost); the names wait for the end of the walk unless many. */
        if (++c->nbigs >= BIGS_HELD)
            stepq__walk_idle(&c->walk);
    }
    return STEPQ_OK;
oom:
    stepq__set_error(c->q, STEPQ_E_OOM, "out of memory");
    return STEPQ_ERR;
}

/* What the script does with an old key of rule r: 'r' a step record, 'c' a
 * collection (decided member by member), 'o' any other per-id key. */
static char key_kind(const stepq__keymap *km, int r)
{
    if (r == km->role[STEPQ_ROLE_STEP])
        return 'r';
    if (km->rules[r].type == STEPQ_KT_SET || km->rules[r].type == STEPQ_KT_ZSET)
        return 'c';
    return 'o';
}

/* A chunk of names on its way: where its names end in the file, so that a
 * cluster's redo starts after the last chunk answered. */
struct cl_chunk {
    struct cl_run *c;
    off_t end;
};

/* The reply of one cleanup_batch script. */
static int delete_reader(stepq *q, void *ctx, int abort)
{
    struct cl_chunk *k = ctx;
    struct cl_run *c = k->c;
    off_t end = k->end;

    stepq__free(k);
    if (abort)
        return STEPQ_OK;
    redisReply *r = stepq__read_reply(q);
    if (r == NULL)
        return STEPQ_ERR;
    int rc = delete_reply(c, r);
    freeReplyObject(r);
    if (rc == STEPQ_OK) {
        c->acked = end;
        c->deadline = 0;
    }
    if (c->o->progress != NULL)
        c->o->progress(c->res.deleted + c->res.kept + c->res.gone + c->res.not_in_backup,
                       c->res.old_keys, NULL, NULL, c->o->arg);
    return rc;
}

/* Queues the deletion of one chunk of old keys (names the check pass saw,
 * so all in the backup), as the records say (lua/cleanup_batch.lua); its
 * reply is read in turn (delete_reader). */
static int delete_chunk(struct cl_run *c, sds *names, size_t n, off_t end)
{
    enum { FIXED_ARGS = 6 };
    const char *kv[CLEAN_BATCH * 2], *args[FIXED_ARGS + CLEAN_BATCH];
    size_t kl[CLEAN_BATCH * 2], al[FIXED_ARGS + CLEAN_BATCH];
    sds twins[CLEAN_BATCH];
    char kinds[CLEAN_BATCH + 1];
    size_t m = 0;
    int rc = STEPQ_ERR;
    enum stepq__side side;

    for (size_t i = 0; i < n; i++) {
        const char *id;
        size_t idlen;
        int rule = stepq__keymap_match(&c->q->km, names[i], sdslen(names[i]), &side, &id, &idlen);
        if (rule < 0 || side != STEPQ_OLD)
            continue; /* cannot be: the check pass kept only old keys */
        twins[m] = stepq__keymap_key_n(&c->q->km, (size_t)rule, STEPQ_NEW, id, idlen);
        if (twins[m] == NULL) {
            stepq__set_error(c->q, STEPQ_E_OOM, "out of memory");
            goto out;
        }
        kinds[m] = key_kind(&c->q->km, rule);
        kv[2 * m] = names[i];
        kl[2 * m] = sdslen(names[i]);
        kv[2 * m + 1] = twins[m];
        kl[2 * m + 1] = sdslen(twins[m]);
        args[FIXED_ARGS + m] = id; /* a slice of names[i], alive until queued */
        al[FIXED_ARGS + m] = idlen;
        m++;
    }
    kinds[m] = '\0';
    if (m == 0 || stepq__walk_pace(c->q, &c->walk, &c->pace, (long)m) != STEPQ_OK) {
        rc = m == 0 ? STEPQ_OK : STEPQ_ERR;
        goto out;
    }
    const char *fixed[FIXED_ARGS] = {"pairs", c->dry, c->adopt, c->tpl, kinds, BIG_MEMBERS};
    for (int i = 0; i < FIXED_ARGS; i++) {
        args[i] = fixed[i];
        al[i] = i == 3 ? sdslen(c->tpl) : strlen(fixed[i]);
    }
    struct cl_chunk *k = stepq__malloc(sizeof(*k));
    if (k == NULL) {
        stepq__set_error(c->q, STEPQ_E_OOM, "out of memory");
        goto out;
    }
    *k = (struct cl_chunk){c, end};
    if (stepq__append_eval_keys(c->q, STEPQ_SCRIPT_CLEANUP_BATCH, (int)(2 * m), kv, kl,
                                (int)(FIXED_ARGS + m), args, al) != STEPQ_OK ||
        stepq__window_push(c->q, &c->walk.win, delete_reader, k, (long)m) != STEPQ_OK) {
        stepq__free(k);
        goto out;
    }
    rc = STEPQ_OK;
out:
    while (m > 0)
        sdsfree(twins[--m]);
    return rc;
}

/* Reads the next chunk of names from the file and queues it; *eof at the
 * end of the file. */
static int send_chunk(struct cl_run *c, int *eof)
{
    sds names[CLEAN_BATCH];
    size_t n = 0;
    int rc = STEPQ_OK;

    while (n < CLEAN_BATCH) {
        uint32_t len;
        if (fread(&len, sizeof(len), 1, c->names) != 1) {
            *eof = 1;
            break;
        }
        if ((names[n] = sdsnewlen(NULL, len)) == NULL) {
            stepq__set_error(c->q, STEPQ_E_OOM, "out of memory");
            rc = STEPQ_ERR;
            break;
        }
        n++;
        if (len > 0 && fread(names[n - 1], 1, len, c->names) != len) {
            *eof = 1; /* cannot be: the file was written whole */
            n--;
            sdsfree(names[n]);
            break;
        }
    }
    if (rc == STEPQ_OK && ferror(c->names)) {
        stepq__set_error(c->q, STEPQ_E_IO, "cannot read the old key names back: %s",
                         strerror(errno));
        rc = STEPQ_ERR;
    }
    if (rc == STEPQ_OK && n > 0)
        rc = delete_chunk(c, names, n, ftello(c->names));
    while (n > 0)
        sdsfree(names[--n]);
    return rc;
}

/*
 * The delete pass: the check pass's names, read back from its file in
 * chunks of CLEAN_BATCH, each one script, several pages of them in flight
 * (as a walk's: stepq__walk_cap), no second SCAN of both sides. On a
 * cluster, a chunk that failed on a redirection or a lost connection is
 * sent again from the last chunk answered (every script is idempotent).
 */
static int delete_pass(struct cl_run *c)
{
    stepq *q = c->q;
    long cap = stepq__walk_cap(stepq__walk_count(CLEAN_BATCH, 0), 0);
    int eof = 0, rc = STEPQ_OK;

    memset(&c->walk, 0, sizeof(c->walk));
    c->acked = 0;
    if (fseeko(c->names, 0, SEEK_SET) != 0) {
        stepq__set_error(q, STEPQ_E_IO, "cannot read the old key names back: %s", strerror(errno));
        return STEPQ_ERR;
    }
    for (;;) {
        if (c->walk.want_idle) {
            c->walk.want_idle = 0;
            if ((rc = stepq__window_drain(q, &c->walk.win)) == STEPQ_OK)
                rc = delete_bigs(q, c);
        } else if (!eof && c->walk.win.keys < cap) {
            rc = send_chunk(c, &eof);
        } else if (c->walk.win.n > 0) {
            rc = stepq__window_next(q, &c->walk.win);
        } else {
            break;
        }
        if (rc == STEPQ_OK)
            continue;
        stepq__window_abort(q, &c->walk.win);
        if (!stepq__walk_retry(q, &c->deadline) || fseeko(c->names, c->acked, SEEK_SET) != 0)
            break;
        eof = 0;
        rc = STEPQ_OK;
        stepq__clear_error(q);
    }
    stepq__window_release(&c->walk.win);
    if (rc == STEPQ_OK) /* those left: the pass is over, the pipe empty */
        rc = delete_bigs(q, c);
    return rc;
}

/* The final pass over one SCAN page: an old key the check pass did not see
 * appeared after it (or was missed by it); it is kept and counted. */
static int final_batch(stepq *q, const redisReply *batch, const char *cursor, void *arg)
{
    struct cl_run *c = arg;
    enum stepq__side side;

    (void)cursor;
    if (stepq__walk_flush(q) != STEPQ_OK) /* the next SCAN: see check_batch */
        return STEPQ_ERR;
    for (size_t i = 0; i < batch->elements; i++) {
        const redisReply *k = batch->element[i];
        if (stepq__keymap_match(&q->km, k->str, k->len, &side, NULL, NULL) < 0 || side != STEPQ_OLD)
            continue;
        int has = stepq__nameset_has(c->seen, name_hash(k->str, k->len));
        if (has < 0)
            return lookup_failed(c);
        if (!has)
            c->res.not_in_backup++;
    }
    return STEPQ_OK;
}

/* The names cleanup_batch.lua needs, joined by NUL: the old and new step
 * templates, the new pending queue, the old and new progress templates
 * (empty parts when the map lacks a role). */
static sds script_templates(const stepq__keymap *km)
{
    int step = km->role[STEPQ_ROLE_STEP], pending = km->role[STEPQ_ROLE_PENDING];
    int prog = km->role[STEPQ_ROLE_PROGRESS];
    sds parts[5] = {
        step >= 0 ? stepq__keymap_key(km, (size_t)step, STEPQ_OLD, "{id}") : sdsempty(),
        step >= 0 ? stepq__keymap_key(km, (size_t)step, STEPQ_NEW, "{id}") : sdsempty(),
        pending >= 0 ? stepq__keymap_key(km, (size_t)pending, STEPQ_NEW, NULL) : sdsempty(),
        prog >= 0 ? stepq__keymap_key(km, (size_t)prog, STEPQ_OLD, "{id}") : sdsempty(),
        prog >= 0 ? stepq__keymap_key(km, (size_t)prog, STEPQ_NEW, "{id}") : sdsempty(),
    };
    sds s = sdsempty();

    for (int i = 0; i < 5; i++) {
        if (s != NULL && parts[i] != NULL)
            s = sdscatlen(s, parts[i], sdslen(parts[i]) + (i < 4));
        else {
            sdsfree(s);
            s = NULL;
        }
        sdsfree(parts[i]);
    }
    return s;
}

int stepq_cleanup(stepq *q, const char *backup_path, const stepq_cleanup_opts *opts,
                  stepq_cleanup_result *ret)
{
    stepq_cleanup_opts none = {0};
    struct cl_run *c = stepq__calloc(1, sizeof(*c));
    sds match = sdscatfmt(sdsempty(), "%s*", q->km.ns);
    int rc = STEPQ_ERR;

    stepq__clear_error(q);
    if (c == NULL || match == NULL) {
        stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        goto out;
    }
    c->q = q;
    c->o = opts ? opts : &none;
    c->dry = c->o->flags & STEPQ_CLEANUP_DRY_RUN ? "1" : "0";
    c->adopt = c->o->flags & STEPQ_CLEANUP_ADOPT ? "1" : "0";
    c->glob = old_side_glob(&q->km);
    if ((c->tpl = script_templates(&q->km)) == NULL) {
        stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        goto out;
    }
    snprintf(c->path, sizeof(c->path), "%s", backup_path);
    /* The idle times are read before anything here could touch a key. */
    if (check_phase(c) != STEPQ_OK || stepq__own_reads_load(q, &c->own) != STEPQ_OK ||
        check_backup(c, backup_path) != STEPQ_OK || check_procs(c) != STEPQ_OK ||
        check_keys(c, match) != STEPQ_OK)
        goto out;
    if (c->forced != NULL && !(c->o->flags & STEPQ_CLEANUP_DRY_RUN) && audit_force(c) != STEPQ_OK)
        goto out;
    stepq__pace_init(&c->pace, q, c->o->rate, 0, 0);
    /* The backup's names are done with: every name of the delete pass is
     * one the check pass found in it. */
    stepq__nameset_free(c->set);
    c->set = NULL;
    /* The delete pass reads the records and collections it keeps: a later
     * run must not take that for a reader, even if this one fails. */
    long long began = stepq__now_ms();
    rc = delete_pass(c);
    /* Then one SCAN, over what is left (mostly new keys), for old keys the
     * check pass did not see: they are kept and counted. */
    if (rc == STEPQ_OK)
        rc = stepq__walk_run_match(q, &c->walk, c->glob, "0", CHECK_COUNT,
                                   STEPQ_WALK_PAGES * CHECK_COUNT, final_batch, NULL, c);
    rc = stepq__own_reads_note(q, began, rc);
    if (rc != STEPQ_OK)
        goto out;
    if (ret != NULL)
        *ret = c->res;
out:
    if (c != NULL) {
        stepq__nameset_free(c->set);
        stepq__nameset_free(c->seen);
        if (c->names != NULL)
            fclose(c->names);
        for (size_t i = 0; i < c->nbigs; i++)
            sdsfree(c->bigs[i]);
        stepq__free(c->bigs);
        sdsfree(c->forced);
        sdsfree(c->tpl);
        sdsfree(c->glob);
    }
    stepq__free(c);
    sdsfree(match);
    return rc;
}
