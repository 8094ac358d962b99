/*
 * reply.c - numbers out of replies, checked. A script's counter, a record's
 * timestamp or an INFO field that is not a whole number is a reply of
 * another shape (a damaged record, another server, a script changed on one
 * side only): it is an error that names where it came from, never a silent
 * 0 (what strtoll(s, NULL, 10) and atoll read from "abc" or "").
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "stepq_private.h"

int stepq__parse_ll(stepq *q, const char *s, size_t len, const char *what, long long *ret)
{
    char buf[24], *end;

    /* Digits only (a '-' first), as many as a long long holds: strtoll
     * alone would take spaces, a '+', or a prefix of "12abc". */
    size_t i = len > 0 && s[0] == '-';
    int ok = len > i && len < sizeof(buf);
    for (; ok && i < len; i++)
        ok = s[i] >= '0' && s[i] <= '9';
    if (ok) {
        memcpy(buf, s, len);
        buf[len] = '\0';
        errno = 0;
        long long v = strtoll(buf, &end, 10);
        if (errno == 0 && *end == '\0') {
            *ret = v;
            return STEPQ_OK;
        }
    }
    if (q != NULL) {
        char shown[STEPQ_RULE_MAX];
        stepq__keyname_buf(shown, sizeof(shown), s, len > 64 ? 64 : len);
        stepq__set_error(q, STEPQ_E_PROTOCOL,
                         "unexpected reply from %s: '%s' is not a whole number", what, shown);
    }
    return STEPQ_ERR;
}

int stepq__reply_ll(stepq *q, const redisReply *r, const char *what, long long *ret)
{
    if (r != NULL && r->type == REDIS_REPLY_INTEGER) {
        *ret = r->integer;
        return STEPQ_OK;
    }
    if (r != NULL && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS))
        return stepq__parse_ll(q, r->str, r->len, what, ret);
    if (q != NULL)
        stepq__set_error(q, STEPQ_E_PROTOCOL, "unexpected reply from %s: %s, not a number", what,
                         r == NULL                    ? "nothing"
                         : r->type == REDIS_REPLY_NIL ? "nil"
                                                      : "another type");
    return STEPQ_ERR;
}

int stepq__reply_shape(stepq *q, const redisReply *r, const char *types, const char *what)
{
    size_t n = strlen(types);

    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != n) {
        stepq__set_error(q, STEPQ_E_PROTOCOL, "unexpected reply from %s: expected %zu items", what,
                         n);
        return STEPQ_ERR;
    }
    for (size_t i = 0; i < n; i++) {
        int t = r->element[i]->type;
        int ok = types[i] == 'i'   ? t == REDIS_REPLY_INTEGER
                 : types[i] == 's' ? t == REDIS_REPLY_STRING
                 : types[i] == 'a' ? t == REDIS_REPLY_ARRAY
                                   : 1;
        if (!ok) {
            stepq__set_error(q, STEPQ_E_PROTOCOL, "unexpected reply from %s: item %zu is not %s",
                             what, i + 1,
                             types[i] == 'i'   ? "a number"
                             : types[i] == 's' ? "a string"
                                               : "an array");
            return STEPQ_ERR;
        }
    }
    return STEPQ_OK;
}
