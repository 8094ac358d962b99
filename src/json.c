/*
 * json.c - jansson glue: the JSON shape of a step, and handing JSON text
 * back to callers.
 */
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "stepq_private.h"

/* Fields that stepq writes as integers come back as JSON numbers; payload
 * and result come back as JSON when they hold JSON. Every other field (and
 * any of these that does not parse) stays a string, so nothing is lost. */
static const char *const int_fields[] = {
    "priority",   "attempts",   "max_attempts", "created_at",
    "updated_at", "claimed_at", "finished_at",  "percent",
};
static const char *const json_fields[] = {"payload", "result"};

static int in(const char *const *list, size_t n, const char *s, size_t len)
{
    for (size_t i = 0; i < n; i++) {
        if (strlen(list[i]) == len && memcmp(list[i], s, len) == 0)
            return 1;
    }
    return 0;
}

/* A JSON string of the bytes; bytes that are not valid UTF-8 (which jansson
 * refuses) become U+FFFD, so that one odd field cannot hide the step. */
static json_t *string_of(const char *s, size_t len)
{
    json_t *j = json_stringn(s, len);
    sds fixed;

    if (j != NULL)
        return j;
    fixed = stepq__utf8_repair(s, len);
    j = fixed ? json_stringn(fixed, sdslen(fixed)) : NULL;
    sdsfree(fixed);
    return j;
}

static json_t *value_of(const redisReply *f, const redisReply *v)
{
    if (in(int_fields, sizeof(int_fields) / sizeof(*int_fields), f->str, f->len) && v->len > 0 &&
        v->len < 20) {
        char buf[24], *end;
        memcpy(buf, v->str, v->len);
        buf[v->len] = '\0';
        long long n = strtoll(buf, &end, 10);
        if (*end == '\0')
            return json_integer(n);
    }
    if (in(json_fields, sizeof(json_fields) / sizeof(*json_fields), f->str, f->len)) {
        /* A legacy payload may hold \u0000 in its strings: still JSON. */
        json_t *j = json_loadb(v->str, v->len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        if (j != NULL)
            return j;
    }
    return string_of(v->str, v->len);
}

/* A flat [field, value, ...] reply as a JSON object (NULL on OOM). */
static json_t *object_of(const redisReply *flat)
{
    json_t *o = json_object();

    for (size_t i = 0; o != NULL && i + 1 < flat->elements; i += 2) {
        const redisReply *f = flat->element[i], *v = flat->element[i + 1];
        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        json_t *val = value_of(f, v);
        /* Field names may hold any byte; jansson keys are NUL-terminated. */
        sds k = stepq__utf8_repair(f->str, f->len);
        if (val == NULL || k == NULL || json_object_set_new(o, k, val) != 0) {
            sdsfree(k);
            json_decref(o);
            return NULL;
        }
        sdsfree(k);
    }
    return o;
}

json_t *stepq__step_object(const redisReply *fields, const redisReply *progress)
{
    json_t *o = object_of(fields);

    if (o == NULL)
        return NULL;
    if (progress != NULL) {
        json_t *p = object_of(progress);
        if (p == NULL || json_object_set_new(o, "progress", p) != 0) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

int stepq__ret_json(stepq *q, json_t *v, char **ret)
{
    char *s = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;

    json_decref(v);
    *ret = s ? stepq__strdup(s) : NULL;
    free(s);
    if (*ret == NULL) {
        stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        return STEPQ_ERR;
    }
    return STEPQ_OK;
}
