/*
 * status.c - live processes and the migration status: what an operator
 * reads before and after every phase move.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <jansson.h>

#include "stepq_private.h"

int stepq_proc_announce(stepq *q, const char *kind, long ttl_ms)
{
    char host[256] = "";

    stepq__clear_error(q);
    gethostname(host, sizeof(host) - 1);
    if (q->proc_id[0] == '\0') {
        char rnd[9];
        if (stepq__random_hex(rnd, 4) != STEPQ_OK)
            rnd[0] = '\0';
        snprintf(q->proc_id, sizeof(q->proc_id), "%.60s:%d:%s", host, (int)getpid(), rnd);
        snprintf(q->proc_kind, sizeof(q->proc_kind), "%s", kind ? kind : "client");
    }
    json_t *o = json_pack("{s:s, s:s, s:s, s:i, s:s, s:I, s:I}", "id", q->proc_id, "kind",
                          q->proc_kind, "host", host, "pid", (int)getpid(), "phase",
                          q->pin >= 0 ? stepq_phase_name((stepq_phase)q->pin) : "stored", "seen",
                          (json_int_t)stepq__now_ms(), "ttl", (json_int_t)ttl_ms);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (s == NULL) {
        stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        return STEPQ_ERR;
    }
    redisReply *r =
        stepq__commandf(q, "HSET %b %s %s", q->k_procs, sdslen(q->k_procs), q->proc_id, s);
    free(s);
    if (r == NULL)
        return STEPQ_ERR;
    freeReplyObject(r);
    return STEPQ_OK;
}

int stepq_proc_withdraw(stepq *q)
{
    if (q->proc_id[0] == '\0')
        return STEPQ_OK;
    redisReply *r = stepq__commandf(q, "HDEL %b %s", q->k_procs, sdslen(q->k_procs), q->proc_id);
    if (r == NULL)
        return STEPQ_ERR;
    freeReplyObject(r);
    q->proc_id[0] = '\0';
    return STEPQ_OK;
}

/* Live processes; entries whose announcement expired are removed. */
json_t *stepq__procs(stepq *q)
{
    redisReply *r = stepq__commandf(q, "HGETALL %b", q->k_procs, sdslen(q->k_procs));
    long long now = stepq__now_ms();
    json_t *a;

    if (r == NULL)
        return NULL;
    a = json_array();
    for (size_t i = 0; a && r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements; i += 2) {
        json_t *o = json_loadb(r->element[i + 1]->str, r->element[i + 1]->len, 0, NULL);
        json_int_t seen = json_integer_value(json_object_get(o, "seen"));
        json_int_t ttl = json_integer_value(json_object_get(o, "ttl"));
        if (o == NULL || now - seen > ttl) {
            redisReply *d = stepq__commandf(q, "HDEL %b %b", q->k_procs, sdslen(q->k_procs),
                                            r->element[i]->str, r->element[i]->len);
            if (d != NULL)
                freeReplyObject(d);
            json_decref(o);
            continue;
        }
        json_object_set_new(o, "age_ms", json_integer(now - seen));
        json_array_append_new(a, o);
    }
    freeReplyObject(r);
    return a;
}

/* Key counts per rule and side, from one SCAN of the namespace. */
struct counts {
    const stepq__keymap *km;
    long long n[STEPQ_RULES_MAX][2];
};

static int count_batch(stepq *q, const redisReply *keys, void *arg)
{
    struct counts *c = arg;
    enum stepq__side side;

    (void)q;
    for (size_t i = 0; i < keys->elements; i++) {
        int r = stepq__keymap_match(c->km, keys->element[i]->str, keys->element[i]->len, &side,
                                    NULL, NULL);
        if (r >= 0)
            c->n[r][side]++;
    }
    return STEPQ_OK;
}

json_t *stepq__key_counts(stepq *q)
{
    struct counts *c = stepq__calloc(1, sizeof(*c));
    sds match = sdscatfmt(sdsempty(), "%s*", q->km.ns);
    json_t *a = NULL;

    if (c == NULL || match == NULL) {
        stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        goto out;
    }
    c->km = &q->km;
    if (stepq__scan(q, match, 1000, count_batch, c) != STEPQ_OK)
        goto out;
    a = json_array();
    for (size_t r = 0; a && r < q->km.n; r++) {
        const stepq__rule *rule = &q->km.rules[r];
        if (rule->type == STEPQ_KT_CHANNEL)
            continue;
        json_t *o =
            json_pack("{s:s, s:s, s:s, s:s, s:I, s:I}", "rule", rule->name, "type",
                      stepq__keytype_name(rule->type), "old", rule->tpl[0], "new", rule->tpl[1],
                      "old_keys", (json_int_t)c->n[r][0], "new_keys", (json_int_t)c->n[r][1]);
        json_array_append_new(a, o);
    }
out:
    sdsfree(match);
    stepq__free(c);
    return a;
}

static json_t *hash_object(stepq *q, const char *key)
{
    redisReply *r = stepq__commandf(q, "HGETALL %b", key, strlen(key));
    json_t *o;

    if (r == NULL)
        return NULL;
    o = stepq__step_object(r, NULL);
    freeReplyObject(r);
    return o;
}

/* A hash of counters as a JSON object of integers (a value that is not a
 * whole number stays a string). */
json_t *stepq__hash_counters(stepq *q, const char *key)
{
    redisReply *r = stepq__commandf(q, "HGETALL %b", key, strlen(key));
    json_t *o;

    if (r == NULL)
        return NULL;
    o = json_object();
    for (size_t i = 0; o && r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements; i += 2) {
        const char *v = r->element[i + 1]->str;
        long long n;
        /* A number where the field holds one, else the text (q NULL: a
         * text field is no error here; its reader decides). */
        int num = stepq__parse_ll(NULL, v, r->element[i + 1]->len, "", &n) == STEPQ_OK;
        json_object_set_new(o, r->element[i]->str, num ? json_integer(n) : json_string(v));
    }
    freeReplyObject(r);
    return o;
}

/* The keys a restore left partly written (docs/backup.md, "A restore cut
 * short"): their number, the first few names, as src/keyname.c writes
 * them, and the hash that holds their marks (the namespace's: the way out
 * by hand names it). A mark outlives its restore only when that restore
 * was cut. */
static json_t *restore_marks(stepq *q)
{
    sds key = sdscatfmt(sdsempty(), "%sstepq:restoring", q->km.ns);
    char hash[STEPQ_RULE_MAX];
    json_t *o = NULL;
    redisReply *n = NULL, *r = NULL;

    if (key != NULL) {
        stepq__keyname_buf(hash, sizeof(hash), key, sdslen(key));
        o = json_pack("{s:I, s:[], s:s}", "keys", (json_int_t)0, "first", "hash", hash);
    }
    if (key == NULL || o == NULL) {
        stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        goto fail;
    }
    if ((n = stepq__commandf(q, "HLEN %b", key, sdslen(key))) == NULL)
        goto fail;
    long long marks = n->type == REDIS_REPLY_INTEGER ? n->integer : 0;
    json_object_set_new(o, "keys", json_integer(marks));
    if (marks > 0 && (r = stepq__commandf(q, "HSCAN %b 0 COUNT 10", key, sdslen(key))) == NULL)
        goto fail;
    if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[1]->type == REDIS_REPLY_ARRAY) {
        json_t *first = json_object_get(o, "first");
        for (size_t i = 0; i < r->element[1]->elements && i < 10; i += 2) {
            const redisReply *f = r->element[1]->element[i];
            char name[STEPQ_RULE_MAX];
            stepq__keyname_buf(name, sizeof(name), f->str, f->len);
            json_array_append_new(first, json_string(name));
        }
    }
    freeReplyObject(n);
    freeReplyObject(r);
    sdsfree(key);
    return o;
fail:
    freeReplyObject(n);
    freeReplyObject(r);
    sdsfree(key);
    json_decref(o);
    return NULL;
}

int stepq_status(stepq *q, char **ret_json)
{
    json_t *o = json_object(), *v;
    char *audit = NULL;

    stepq__clear_error(q);
    if (o == NULL)
        return stepq__ret_json(q, NULL, ret_json);
    if ((v = hash_object(q, q->k_phase)) == NULL)
        goto fail;
    if (json_object_get(v, "phase") == NULL)
        json_object_set_new(v, "phase", json_string("job"));
    json_object_set_new(v, "pin", json_string(q->pin >= 0 ? stepq_phase_name(q->pin) : "none"));
    json_object_set_new(o, "phase", v);
    if ((v = stepq__hash_counters(q, q->k_stats)) == NULL)
        goto fail;
    json_object_set_new(o, "counters", v);
    /* What the migration engine records (docs/migration-engine.md). */
    if ((v = stepq__hash_counters(q, q->k_backfill)) == NULL)
        goto fail;
    json_object_set_new(o, "backfill", v);
    if ((v = stepq__hash_counters(q, q->k_verify)) == NULL)
        goto fail;
    json_object_set_new(o, "verify", v);
    /* The backup record (backup/cleanup, by records.md) and the throttle. */
    for (int i = 0; i < 2; i++) {
        static const char *const rec[] = {"backup", "throttle"};
        sds k = sdscatfmt(sdsempty(), "%sstepq:%s", q->km.ns, rec[i]);
        v = k ? stepq__hash_counters(q, k) : NULL;
        sdsfree(k);
        if (v == NULL)
            goto fail;
        json_object_set_new(o, rec[i], v);
    }
    if ((v = restore_marks(q)) == NULL)
        goto fail;
    json_object_set_new(o, "restoring", v);
    if ((v = stepq__key_counts(q)) == NULL)
        goto fail;
    json_object_set_new(o, "keys", v);
    if ((v = stepq__procs(q)) == NULL)
        goto fail;
    json_object_set_new(o, "processes", v);
    if (stepq_audit_tail(q, 10, &audit) != STEPQ_OK)
        goto fail;
    json_object_set_new(o, "audit", json_loads(audit, 0, NULL));
    stepq_str_free(audit);
    return stepq__ret_json(q, o, ret_json);
fail:
    json_decref(o);
    return STEPQ_ERR;
}

/* The size of collection rule `r` on one side into *n (0 when absent or
 * not a collection). */
static int collection_size(stepq *q, int r, enum stepq__side side, long long *n)
{
    const stepq__rule *rule = &q->km.rules[r];
    const char *cmd = rule->type == STEPQ_KT_ZSET   ? "ZCARD"
                      : rule->type == STEPQ_KT_SET  ? "SCARD"
                      : rule->type == STEPQ_KT_LIST ? "LLEN"
                                                    : NULL;
    *n = 0;
    if (cmd == NULL)
        return STEPQ_OK;
    sds key = stepq__keymap_key(&q->km, (size_t)r, side, "");
    if (key == NULL) {
        stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        return STEPQ_ERR;
    }
    redisReply *rep = stepq__commandf(q, "%s %b", cmd, key, sdslen(key));
    sdsfree(key);
    if (rep == NULL)
        return STEPQ_ERR;
    if (rep->type == REDIS_REPLY_INTEGER)
        *n = rep->integer;
    freeReplyObject(rep);
    return STEPQ_OK;
}

int stepq_queue_depth(stepq *q, char **ret_json)
{
    static const struct {
        const char *name;
        enum stepq__role role;
    } states[] = {{"pending", STEPQ_ROLE_PENDING},
                  {"active", STEPQ_ROLE_ACTIVE},
                  {"completed", STEPQ_ROLE_COMPLETED},
                  {"failed", STEPQ_ROLE_FAILED}};
    json_t *o = json_object();

    stepq__clear_error(q);
    for (size_t i = 0; o != NULL && i < sizeof(states) / sizeof(*states); i++) {
        int r = q->km.role[states[i].role];
        long long old_n, new_n;
        if (r < 0)
            continue;
        if (collection_size(q, r, STEPQ_OLD, &old_n) != STEPQ_OK ||
            collection_size(q, r, STEPQ_NEW, &new_n) != STEPQ_OK) {
            json_decref(o);
            return STEPQ_ERR;
        }
        json_object_set_new(
            o, states[i].name,
            json_pack("{s:I, s:I}", "old", (json_int_t)old_n, "new", (json_int_t)new_n));
    }
    return stepq__ret_json(q, o, ret_json);
}
