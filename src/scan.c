/*
 * scan.c - walking the keyspace with SCAN, never KEYS.
 *
 * SCAN guarantees that a key present for the whole walk is returned at least
 * once, and may return a key more than once; callers therefore treat what
 * they see idempotently (count distinct work, or redo harmless work).
 */
#include <stdio.h>
#include <string.h>

#include "stepq_private.h"

int stepq__scan(stepq *q, const char *match, long count, stepq__scan_fn fn, void *arg)
{
    char cursor[32] = "0", cnt[24];

    snprintf(cnt, sizeof(cnt), "%ld", count > 0 ? count : 1000);
    do {
        const char *argv[] = {"SCAN", cursor, "MATCH", match, "COUNT", cnt};
        redisReply *r = stepq__command(q, 6, argv, NULL);
        if (r == NULL)
            return STEPQ_ERR;
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING || r->element[0]->len >= sizeof(cursor) ||
            r->element[1]->type != REDIS_REPLY_ARRAY) {
            freeReplyObject(r);
            stepq__set_error(q, STEPQ_E_PROTOCOL, "unexpected SCAN reply");
            return STEPQ_ERR;
        }
        memcpy(cursor, r->element[0]->str, r->element[0]->len + 1);
        int rc = fn(q, r->element[1], arg);
        freeReplyObject(r);
        if (rc != STEPQ_OK)
            return rc;
    } while (strcmp(cursor, "0") != 0);
    return STEPQ_OK;
}
