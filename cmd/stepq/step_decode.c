/*
 * step_decode.c - the body of `POST /steps` decoded into submit options
 * (the contract is in step_decode.h). Bytes in, options out: no I/O, no
 * globals.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "step_decode.h"
#include "stepq_text.h"

static const char submit_fields[] = "type, priority, requires, payload and max_attempts";

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    /* jansson quotes the bytes near a defect, and '%.64s' may cut a
     * character: the message goes into a JSON answer, so keep it UTF-8. */
    stepq__utf8_scrub(err);
    return STEPQ_ERR;
}

/* Checks that the text nests at most `max` levels; on failure writes where
 * it went too deep (1-based line and column, as jansson reports them). */
static int depth_ok(const char *s, size_t n, int max, int *line, int *col)
{
    int depth = 0, in_str = 0;

    *line = 1;
    *col = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        (*col)++;
        if (c == '\n') {
            (*line)++;
            *col = 0;
        } else if (in_str) {
            if (c == '\\')
                i++, (*col)++;
            else if (c == '"')
                in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '[' || c == '{') {
            if (++depth > max)
                return 0;
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return 1;
}

/* `requires` may be "a,b" or ["a", "b"]; returns a malloc'd list, or NULL
 * with err set. */
static char *requires_list(const json_t *v, char *err, size_t errlen)
{
    size_t i, len = 0;
    json_t *e;
    char *out;

    if (json_is_string(v)) {
        out = strdup(json_string_value(v));
        goto out_checked;
    }
    if (!json_is_array(v))
        goto bad;
    json_array_foreach(v, i, e)
    {
        if (!json_is_string(e))
            goto bad;
        len += json_string_length(e) + 1;
    }
    out = calloc(1, len + 1);
    if (out == NULL)
        goto out_checked;
    len = 0;
    json_array_foreach(v, i, e)
    {
        if (i > 0)
            out[len++] = ',';
        memcpy(out + len, json_string_value(e), json_string_length(e));
        len += json_string_length(e);
    }
out_checked:
    if (out == NULL)
        fail(err, errlen, "out of memory; retry later");
    return out;
bad:
    fail(err, errlen, "field 'requires' must be a string \"a,b\" or an array of strings");
    return NULL;
}

/* Fills d from the body object; STEPQ_OK, or STEPQ_ERR with err set. */
static int submit_opts(json_t *obj, struct step_decoded *d, char *err, size_t errlen)
{
    stepq_submit_opts *o = &d->opts;
    const char *k;
    json_t *v;

    json_object_foreach(obj, k, v)
    {
        if (strcmp(k, "type") == 0 && json_is_string(v)) {
            if ((d->type = strdup(json_string_value(v))) == NULL)
                return fail(err, errlen, "out of memory; retry later");
            o->type = d->type;
        } else if (strcmp(k, "priority") == 0 && json_is_integer(v)) {
            json_int_t p = json_integer_value(v);
            if (p < 0 || p > 1000000)
                return fail(err, errlen,
                            "invalid priority '%lld'; use 0 to 1000000 (higher runs first)",
                            (long long)p);
            o->priority = (long)p;
        } else if (strcmp(k, "max_attempts") == 0 && json_is_integer(v)) {
            json_int_t m = json_integer_value(v);
            if (m < 1 || m > 1000)
                return fail(err, errlen, "invalid max_attempts '%lld'; use 1 to 1000",
                            (long long)m);
            o->max_attempts = (long)m;
        } else if (strcmp(k, "requires") == 0) {
            if ((d->requires = requires_list(v, err, errlen)) == NULL)
                return STEPQ_ERR;
            o->requires = d->requires;
        } else if (strcmp(k, "payload") == 0) {
            if ((d->payload = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY)) == NULL)
                return fail(err, errlen, "out of memory; retry later");
            o->payload = d->payload;
        } else if (strcmp(k, "type") == 0 || strcmp(k, "priority") == 0 ||
                   strcmp(k, "max_attempts") == 0) {
            return fail(err, errlen, "field '%s' must be a %s", k,
                        strcmp(k, "type") == 0 ? "string" : "whole number");
        } else {
            return fail(err, errlen, "unknown field '%.64s'; a step takes %s", k, submit_fields);
        }
    }
    return STEPQ_OK;
}

int stepq__step_decode(const char *body, size_t len, struct step_decoded *ret, char *err,
                       size_t errlen)
{
    json_error_t e;
    json_t *obj;
    int line, col, rc = STEPQ_ERR;

    memset(ret, 0, sizeof(*ret));
    if (body == NULL)
        body = "";
    if (!depth_ok(body, len, STEP_JSON_DEPTH_MAX, &line, &col))
        return fail(err, errlen,
                    "invalid JSON at line %d, column %d: nested deeper than %d levels; "
                    "flatten the payload",
                    line, col, STEP_JSON_DEPTH_MAX);
    obj = json_loadb(body, len, JSON_REJECT_DUPLICATES, &e);
    if (obj == NULL)
        return fail(err, errlen, "invalid JSON at line %d, column %d: %s; send one JSON object",
                    e.line, e.column, e.text);
    if (!json_is_object(obj))
        fail(err, errlen, "the body must be a JSON object with %s", submit_fields);
    else
        rc = submit_opts(obj, ret, err, errlen);
    json_decref(obj);
    if (rc != STEPQ_OK)
        stepq__step_decoded_release(ret);
    return rc;
}

void stepq__step_decoded_release(struct step_decoded *d)
{
    free(d->type);
    free(d->requires);
    free(d->payload);
    memset(d, 0, sizeof(*d));
}
