/*
 * registry.c - the namespaces stepq has written to, on one server or one
 * cluster: the set `{stepq}:namespaces` (docs/cluster.md, "Finding every
 * namespace").
 *
 * Why a registry and not a scan: a namespace that never moved its phase has
 * no `stepq:phase` key (the phase reads as 'job' when absent), and nothing
 * else of stepq's own is sure to exist in every namespace, so a scan for one
 * of stepq's records would miss exactly the queues that were never migrated;
 * a scan for the key map's patterns would be guessing key names. A scan also
 * walks every key of every master. The registry is written where a namespace
 * starts to matter (its first submit, a worker's registration, a phase move)
 * and read with one SMEMBERS. Its key has a hash tag of its own, so on a
 * cluster it lives in one slot like any namespace, and a handle of another
 * namespace reaches it through the MOVED its own master answers (cluster.c
 * sends that one command to the owner of the registry's slot).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "stepq_private.h"

/* Orders the replies of SMEMBERS by their bytes. */
static int reply_cmp(const void *a, const void *b)
{
    const redisReply *x = *(redisReply *const *)a, *y = *(redisReply *const *)b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->str, y->str, n);

    return c != 0 ? c : (x->len > y->len) - (x->len < y->len);
}

void stepq__ns_register(stepq *q)
{
    const char *argv[] = {"SADD", STEPQ_REGISTRY_KEY, q->km.ns};
    size_t lens[] = {4, sizeof(STEPQ_REGISTRY_KEY) - 1, strlen(q->km.ns)};

    if (q->ns_registered)
        return;
    /* Best effort: the caller's write succeeded and must be reported so.
     * A registration that failed is tried again at the next write. */
    char saved[STEPQ_ERRSTR_MAX];
    int saved_err = q->err;
    memcpy(saved, q->errstr, sizeof(saved));
    redisReply *r = stepq__command(q, 3, argv, lens);
    if (r != NULL)
        q->ns_registered = 1;
    freeReplyObject(r);
    q->err = saved_err;
    memcpy(q->errstr, saved, sizeof(saved));
}

int stepq_namespaces(stepq *q, char **ret_json)
{
    redisReply *r = stepq__commandf(q, "SMEMBERS %s", STEPQ_REGISTRY_KEY);
    json_t *arr;

    if (r == NULL)
        return STEPQ_ERR;
    int is_set = r->type == REDIS_REPLY_ARRAY;
    for (size_t i = 0; is_set && i < r->elements; i++)
        is_set = r->element[i]->type == REDIS_REPLY_STRING;
    if (!is_set) {
        freeReplyObject(r);
        stepq__set_error(q, STEPQ_E_PROTOCOL,
                         "'%s' is not a set; it is stepq's registry of namespaces: delete it "
                         "and let the namespaces register again at their next write",
                         STEPQ_REGISTRY_KEY);
        return STEPQ_ERR;
    }
    /* Sorted, so that a command over every namespace goes in a stable order. */
    qsort(r->element, r->elements, sizeof(*r->element), reply_cmp);
    arr = json_array();
    for (size_t i = 0; arr != NULL && i < r->elements; i++) {
        const redisReply *e = r->element[i];
        json_array_append_new(arr, json_stringn(e->str, e->len));
    }
    freeReplyObject(r);
    return stepq__ret_json(q, arr, ret_json);
}

void stepq_server(const stepq *q, char *buf, size_t len)
{
    const char *host;
    int port;

    if (len == 0)
        return;
    stepq__cluster_target(q, &host, &port);
    if (q->url.is_unix && q->cl == NULL)
        snprintf(buf, len, "%s", q->url.host);
    else
        snprintf(buf, len, "%s:%d", host, port);
}

/* The queue keys (both sides, every rule) and the live processes a status
 * document counts. -1 when it has another shape. */
static int status_counts(const char *json, long long *ret_keys, size_t *ret_procs)
{
    json_t *st = json_loads(json, 0, NULL), *v;
    size_t i;

    if (!json_is_object(st)) {
        json_decref(st);
        return -1;
    }
    *ret_keys = 0;
    json_array_foreach(json_object_get(st, "keys"), i, v)
    {
        *ret_keys += json_integer_value(json_object_get(v, "old_keys")) +
                     json_integer_value(json_object_get(v, "new_keys"));
    }
    *ret_procs = json_array_size(json_object_get(st, "processes"));
    json_decref(st);
    return 0;
}

/*
 * Takes the handle's namespace out of the registry, once nothing uses it:
 * no key of its queue on either side (the status's counts), no live stepq
 * process announced in it, no registered worker. stepq's own records
 * (phase, audit) are not queue keys: they stay, for the record. The checks
 * narrow, not close, the race with a process starting meanwhile; that one
 * registers again at its first write, as any handle does.
 */
int stepq_namespace_forget(stepq *q)
{
    char *json = NULL;
    long long keys;
    size_t procs, workers;

    if (stepq_status(q, &json) != STEPQ_OK)
        return STEPQ_ERR;
    int shape = status_counts(json, &keys, &procs);
    stepq_str_free(json);
    if (shape != 0) {
        stepq__set_error(q, STEPQ_E_PROTOCOL, "unexpected status document");
        return STEPQ_ERR;
    }
    if (keys > 0) {
        stepq__set_error(q, STEPQ_E_CONFLICT,
                         "namespace '%s' still holds %lld key%s of its queue ('stepq migrate "
                         "status' counts them per rule): it is a queue, not a leftover; delete "
                         "its keys first, then forget it",
                         q->km.ns, keys, keys == 1 ? "" : "s");
        return STEPQ_ERR;
    }
    if (procs > 0) {
        stepq__set_error(q, STEPQ_E_CONFLICT,
                         "%zu live stepq process%s announce%s itself in namespace '%s' ('stepq "
                         "migrate status' lists them); stop them first",
                         procs, procs == 1 ? "" : "es", procs == 1 ? "s" : "", q->km.ns);
        return STEPQ_ERR;
    }
    if (stepq_workers(q, &json) != STEPQ_OK)
        return STEPQ_ERR;
    json_t *w = json_loads(json, 0, NULL);
    stepq_str_free(json);
    workers = json_array_size(w);
    json_decref(w);
    if (workers > 0) {
        stepq__set_error(q, STEPQ_E_CONFLICT,
                         "%zu worker%s still registered in namespace '%s' ('stepq workers'); "
                         "stop them, or let 'stepq reap' remove the dead ones, then forget it",
                         workers, workers == 1 ? " is" : "s are", q->km.ns);
        return STEPQ_ERR;
    }
    const char *argv[] = {"SREM", STEPQ_REGISTRY_KEY, q->km.ns};
    size_t lens[] = {4, sizeof(STEPQ_REGISTRY_KEY) - 1, strlen(q->km.ns)};
    redisReply *r = stepq__command(q, 3, argv, lens);
    if (r == NULL)
        return STEPQ_ERR;
    int removed = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    freeReplyObject(r);
    if (!removed) {
        stepq__set_error(q, STEPQ_E_NOTFOUND,
                         "namespace '%s' is not in the registry ('stepq migrate status "
                         "--all-namespaces' lists those that are)",
                         q->km.ns);
        return STEPQ_ERR;
    }
    q->ns_registered = 0; /* a later write of this handle registers it again */
    return STEPQ_OK;
}
