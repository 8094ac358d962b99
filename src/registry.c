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
