/*
 * walk.c - what the migration engine's walks share: one SCAN of the
 * namespace from a resumable cursor, pairs of key names (a key and its
 * twin), batches of atomic scripts sent pipelined, and the audit log.
 *
 * Why one SCAN of the namespace and not one per rule: SCAN with MATCH still
 * visits every key of the database and filters afterwards, so a walk per
 * rule would cost one full pass per rule. One pass, classifying each name
 * with stepq__keymap_match, costs one.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <jansson.h>

#include "stepq_private.h"

#define AUDIT_KEEP "10000"

/*
 * On a cluster a SCAN cursor belongs to one node (its hash seed is its
 * own), and a page read while the slot migrates lacks the keys already
 * moved. So before each page and after the last one the walk waits until
 * the slot is settled (stepq__cluster_settled) and starts over from cursor
 * 0 when the node that owns it changed (a reshard or a failover); every
 * page function is idempotent, so a page seen twice is harmless. A page
 * that failed on a lost connection or a redirection is redone the same way
 * (after wait_ms without success the error stands).
 */
int stepq__walk_settle(stepq *q, char owner[41], char cursor[32], int *ret_restarted)
{
    char now[41];

    *ret_restarted = 0;
    if (q->cl == NULL)
        return STEPQ_OK;
    if (stepq__cluster_settled(q, now) != STEPQ_OK)
        return STEPQ_ERR;
    if (owner[0] != '\0' && strcmp(owner, now) != 0) {
        memcpy(cursor, "0", 2);
        *ret_restarted = 1;
    }
    memcpy(owner, now, 41);
    return STEPQ_OK;
}

/* May a failed page be redone? Only on a cluster, for a lost connection
 * or a redirection (mapped to IO), and within the wait budget. */
int stepq__walk_retry(stepq *q, long long *deadline)
{
    if (q->cl == NULL || (q->err != STEPQ_E_IO && q->err != STEPQ_E_EOF))
        return 0;
    if (*deadline == 0)
        *deadline = stepq__now_ms() + stepq__cluster_wait_ms(q);
    if (stepq__now_ms() >= *deadline || stepq__nap(q, 100) != STEPQ_OK)
        return 0;
    return 1;
}

int stepq__members_retry(stepq *q, long long *deadline)
{
    char id[41];

    if (!stepq__walk_retry(q, deadline) || stepq__cluster_settled(q, id) != STEPQ_OK)
        return 0;
    (void)stepq__cluster_moved(q);
    return 1;
}

long stepq__page_count(long batch, long batches, long max_latency_ms)
{
    if (max_latency_ms > 0)
        return batch;
    return batch * batches < 5000 ? batch * batches : 5000;
}

long stepq__walk_count(long batch, long max_latency_ms)
{
    return stepq__page_count(batch, 10, max_latency_ms);
}

long stepq__member_count(long batch, long max_latency_ms)
{
    return stepq__page_count(batch, 50, max_latency_ms);
}

/*
 * A member cursor of SSCAN/ZSCAN, like a SCAN cursor, is a position in one
 * node's table. On a cluster, when the handle was redirected (ASK, MOVED)
 * or the slot's owner changed (a failover) since the previous page, the
 * cursor means nothing where the next page would be read: the page is
 * refused with an IO error, and the caller starts the collection over from
 * 0 (stepq__members_retry). Every caller's handling of a page is idempotent
 * (merge, compare, judge), so members seen twice are harmless; going on with
 * the old cursor skipped some (97 of 1601 in t_cluster_reshard_members).
 * A page whose own SSCAN meets the redirection fails and is redone from 0
 * anyway; the refusal is for a command sent alone between two pages (the
 * pacing's throttle read) that followed MOVED: the handle is connected to
 * the new owner then, and the old cursor would be read there without an
 * error (368 of 3000 members skipped in t_cluster_member_cursor).
 */
int stepq__queue_members(stepq *q, const char *key, size_t len, char type, const char *cursor,
                         const char *count)
{
    int moved = stepq__cluster_moved(q); /* a scan from 0 clears the mark */

    if (moved && strcmp(cursor, "0") != 0) {
        stepq__set_error(q, STEPQ_E_IO,
                         "the namespace's slot moved in the middle of a member scan");
        return STEPQ_ERR;
    }
    if (stepq__ensure(q) != STEPQ_OK)
        return STEPQ_ERR;
    if (redisAppendCommand(q->rc, "%s %b %s COUNT %s", type == 's' ? "SSCAN" : "ZSCAN", key, len,
                           cursor, count) != REDIS_OK) {
        stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        return STEPQ_ERR;
    }
    return STEPQ_OK;
}

redisReply *stepq__read_members(stepq *q, char cursor[32])
{
    redisReply *r = stepq__read_reply(q);

    if (r == NULL)
        return NULL;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[0]->len >= 32 ||
        r->element[1]->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        stepq__set_error(q, STEPQ_E_PROTOCOL, "unexpected SSCAN/ZSCAN reply");
        return NULL;
    }
    memcpy(cursor, r->element[0]->str, r->element[0]->len + 1);
    return r;
}

/* ---------------------------------------------------------------------------
 * Pairs
 * ------------------------------------------------------------------------- */

static char type_letter(enum stepq__keytype t)
{
    switch (t) {
    case STEPQ_KT_HASH:
        return 'h';
    case STEPQ_KT_SET:
        return 's';
    case STEPQ_KT_ZSET:
        return 'z';
    case STEPQ_KT_LIST:
        return 'l';
    default:
        return 't';
    }
}

/* Makes room for one more pair. */
static int pairs_grow(stepq__pairs *p)
{
    if (p->n < p->cap)
        return STEPQ_OK;
    size_t cap = p->cap ? p->cap * 2 : 128;
    sds *k = stepq__realloc(p->keys, cap * 2 * sizeof(*k));
    if (k == NULL)
        return STEPQ_ERR;
    p->keys = k;
    char *t = stepq__realloc(p->types, cap + 1);
    if (t == NULL)
        return STEPQ_ERR;
    p->types = t;
    int *rr = stepq__realloc(p->rule, cap * sizeof(*rr));
    if (rr == NULL)
        return STEPQ_ERR;
    p->rule = rr;
    p->cap = cap;
    return STEPQ_OK;
}

/* Adds the pair of rule r for the id of idlen bytes (NULL: a fixed key). */
static int pairs_add_id(stepq__pairs *p, const stepq__keymap *km, size_t r, enum stepq__side first,
                        const char *id, size_t idlen)
{
    if (pairs_grow(p) != STEPQ_OK)
        return STEPQ_ERR;
    sds a = stepq__keymap_key_n(km, r, first, id, idlen);
    sds b = stepq__keymap_key_n(km, r, first == STEPQ_OLD ? STEPQ_NEW : STEPQ_OLD, id, idlen);
    if (a == NULL || b == NULL) {
        sdsfree(a);
        sdsfree(b);
        return STEPQ_ERR;
    }
    p->keys[2 * p->n] = a;
    p->keys[2 * p->n + 1] = b;
    p->types[p->n] = type_letter(km->rules[r].type);
    p->rule[p->n] = (int)r;
    p->n++;
    p->types[p->n] = '\0';
    return STEPQ_OK;
}

int stepq__pairs_add_n(stepq__pairs *p, const stepq__keymap *km, size_t r, enum stepq__side first,
                       const char *id, size_t idlen)
{
    return pairs_add_id(p, km, r, first, id, idlen);
}

int stepq__pairs_add(stepq__pairs *p, const stepq__keymap *km, size_t r, enum stepq__side first,
                     const char *id)
{
    return pairs_add_id(p, km, r, first, id, id ? strlen(id) : 0);
}

void stepq__pairs_clear(stepq__pairs *p)
{
    for (size_t i = 0; i < 2 * p->n; i++)
        sdsfree(p->keys[i]);
    p->n = 0;
    if (p->types != NULL)
        p->types[0] = '\0';
}

void stepq__pairs_release(stepq__pairs *p)
{
    stepq__pairs_clear(p);
    stepq__free(p->keys);
    stepq__free(p->types);
    stepq__free(p->rule);
    memset(p, 0, sizeof(*p));
}

long stepq__pairs_from_page(stepq__pairs *p, const stepq__keymap *km, const redisReply *page,
                            enum stepq__side side)
{
    enum stepq__side s;
    long added = 0;

    for (size_t i = 0; i < page->elements; i++) {
        const redisReply *k = page->element[i];
        const char *id;
        size_t idlen;
        /* The id is a slice of the name, any bytes and any length (a NUL,
         * a ':', 300 bytes): the pair is built from it as it is. */
        int r = stepq__keymap_match(km, k->str, k->len, &s, &id, &idlen);
        if (r < 0 || s != side || !km->rules[r].per_id)
            continue;
        if (pairs_add_id(p, km, (size_t)r, side, id, idlen) != STEPQ_OK)
            return -1;
        added++;
    }
    return added;
}

long stepq__walk_strays(stepq *q, const redisReply *page, stepq_progress_fn fn, void *arg,
                        long long done, long long total)
{
    long n = 0;

    for (size_t i = 0; i < page->elements; i++) {
        const redisReply *k = page->element[i];
        int r = stepq__keymap_stray(&q->km, k->str, k->len);
        if (r < 0)
            continue;
        n++;
        if (fn == NULL)
            continue;
        sds name = stepq__keyname_quote(sdsempty(), k->str, k->len, 0);
        sds msg = sdscatprintf(sdsempty(),
                               "no rule of the key map maps it (it looks like rule '%s' with an "
                               "empty id); rename or delete it, or map it in a rules file",
                               q->km.rules[r].name);
        if (name != NULL && msg != NULL)
            fn(done, total, name, msg, arg);
        sdsfree(name);
        sdsfree(msg);
    }
    return n;
}

int stepq__pairs_append(stepq *q, enum stepq__script_id s, const stepq__pairs *p, size_t lo,
                        size_t hi, int nprefix, const char **prefix, int nargs, const char **args,
                        int with_types)
{
    const char *keys[2 * 1000 + 8];
    size_t lens[2 * 1000 + 8];
    const char *argv[16];
    char types[1001];
    int nk = 0, na = 0;

    if (hi - lo > 1000 || nprefix > 8 || nargs > 14) {
        stepq__set_error(q, STEPQ_E_INVALID, "batch over 1000 pairs");
        return STEPQ_ERR;
    }
    for (int i = 0; i < nprefix; i++) {
        lens[nk] = strlen(prefix[i]);
        keys[nk++] = prefix[i];
    }
    for (size_t i = 2 * lo; i < 2 * hi; i++) {
        lens[nk] = sdslen(p->keys[i]); /* a name may hold any byte */
        keys[nk++] = p->keys[i];
    }
    for (int i = 0; i < nargs; i++)
        argv[na++] = args[i];
    if (with_types) {
        memcpy(types, p->types + lo, hi - lo);
        types[hi - lo] = '\0';
        argv[na++] = types;
    }
    return stepq__append_eval_keys(q, s, nk, keys, lens, na, argv, NULL);
}

int stepq__pairs_run(stepq *q, enum stepq__script_id s, const stepq__pairs *p, long batch,
                     int nprefix, const char **prefix, int nargs, const char **args, int with_types,
                     redisReply **replies)
{
    size_t nscripts = (p->n + (size_t)batch - 1) / (size_t)batch;
    int rc = STEPQ_OK;

    if (batch > 1000) {
        stepq__set_error(q, STEPQ_E_INVALID, "batch over 1000 pairs");
        return STEPQ_ERR;
    }
    for (size_t b = 0; b < nscripts; b++) {
        size_t lo = b * (size_t)batch, hi = lo + (size_t)batch < p->n ? lo + (size_t)batch : p->n;
        if (stepq__pairs_append(q, s, p, lo, hi, nprefix, prefix, nargs, args, with_types) !=
            STEPQ_OK)
            return STEPQ_ERR;
    }
    /* Read every reply, even after an error, so the connection stays in step. */
    for (size_t b = 0; b < nscripts; b++) {
        replies[b] = stepq__read_reply(q);
        if (replies[b] == NULL) {
            if (q->rc == NULL) {
                for (size_t i = 0; i < b; i++)
                    freeReplyObject(replies[i]);
                return STEPQ_ERR;
            }
            rc = STEPQ_ERR;
        }
    }
    if (rc != STEPQ_OK) {
        char keep[STEPQ_ERRSTR_MAX];
        int kind = q->err;
        /* The first error wins; later ones may have overwritten it. */
        snprintf(keep, sizeof(keep), "%s", q->errstr);
        for (size_t b = 0; b < nscripts; b++)
            if (replies[b] != NULL)
                freeReplyObject(replies[b]);
        stepq__set_error(q, kind, "%s", keep);
    }
    return rc;
}

/* ---------------------------------------------------------------------------
 * Records
 * ------------------------------------------------------------------------- */

long long stepq__json_ll(const json_t *o, const char *field)
{
    json_t *v = json_object_get(o, field);

    if (json_is_integer(v))
        return (long long)json_integer_value(v);
    long long n;
    /* stepq__hash_counters made every whole number an integer: a string
     * here is text, which counts as absent (0), as a missing field does. */
    if (json_is_string(v) &&
        stepq__parse_ll(NULL, json_string_value(v), json_string_length(v), "", &n) == STEPQ_OK)
        return n;
    return 0;
}

int stepq__audit(stepq *q, json_t *o)
{
    char host[256] = "";

    if (o == NULL) {
        stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        return STEPQ_ERR;
    }
    gethostname(host, sizeof(host) - 1);
    json_object_set_new(o, "ts", json_integer(stepq__now_ms()));
    json_object_set_new(o, "host", json_string(host));
    json_object_set_new(o, "pid", json_integer((json_int_t)getpid()));
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (s == NULL) {
        stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        return STEPQ_ERR;
    }
    redisReply *r = stepq__commandf(q, "RPUSH %b %s", q->k_audit, sdslen(q->k_audit), s);
    free(s);
    if (r == NULL)
        return STEPQ_ERR;
    freeReplyObject(r);
    r = stepq__commandf(q, "LTRIM %b -" AUDIT_KEEP " -1", q->k_audit, sdslen(q->k_audit));
    if (r == NULL)
        return STEPQ_ERR;
    freeReplyObject(r);
    return STEPQ_OK;
}
