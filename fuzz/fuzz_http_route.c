/* fuzz_http_route.c - libFuzzer target: the request-line parser of `stepq
 * serve` (cmd/stepq/http_route.c). The first byte picks the method; the
 * rest is the raw target, split at its first '?' into path and query. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "http_route.h"
#include "stepq_private.h"

static const char *const methods[] = {"GET", "HEAD", "POST", "PUT", "DELETE", NULL};

static void check_error_text(const struct http_route *r)
{
    /* A refusal says why, in printable ASCII (it goes into a JSON body). */
    if (r->error[0] < 'a' || r->error[0] > 'z')
        __builtin_trap();
    for (const char *p = r->error; *p != '\0'; p++) {
        if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
            __builtin_trap();
    }
}

/* A route that parsed re-parses the same from its canonical form. */
static void check_reparse(const char *method, const struct http_route *r)
{
    struct http_route again;
    char path[96], query[64];
    int plen, qlen = 0;

    if (r->id == HTTP_ROUTE_STEP || r->id == HTTP_ROUTE_STEP_CANCEL) {
        if (!stepq__valid_id(r->step_id))
            __builtin_trap();
        plen = snprintf(path, sizeof(path), "/steps/%s%s", r->step_id,
                        r->id == HTTP_ROUTE_STEP_CANCEL ? "/cancel" : "");
    } else if (r->id == HTTP_ROUTE_STEPS) {
        plen = snprintf(path, sizeof(path), "/steps");
        if (r->limit < 1 || r->limit > HTTP_LIMIT_MAX)
            __builtin_trap();
        qlen = snprintf(query, sizeof(query), "state=%s&limit=%ld", r->state, r->limit);
    } else {
        return;
    }
    if (stepq__http_route_parse(method, path, (size_t)plen, query, (size_t)qlen, &again) != 0 ||
        again.id != r->id || again.op != r->op || strcmp(again.step_id, r->step_id) != 0 ||
        (r->op == HTTP_OP_LIST && (strcmp(again.state, r->state) != 0 || again.limit != r->limit)))
        __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct http_route r;
    const char *method, *path, *query = NULL, *qm;
    size_t pathlen, querylen = 0;
    int st;

    if (size < 1)
        return 0;
    method = methods[data[0] % (sizeof(methods) / sizeof(*methods))];
    path = (const char *)data + 1;
    pathlen = size - 1;
    qm = memchr(path, '?', pathlen);
    if (qm != NULL) {
        query = qm + 1;
        querylen = pathlen - (size_t)(qm - path) - 1;
        pathlen = (size_t)(qm - path);
    }
    st = stepq__http_route_parse(method, path, pathlen, query, querylen, &r);
    if (st != r.status)
        __builtin_trap();
    if (st != 0) {
        if (st != 400 && st != 404 && st != 405 && st != 414)
            __builtin_trap();
        /* The operation is known only where path and method matched (a
         * bad query of GET /steps still counts as a list in the metrics). */
        if (r.op != HTTP_OP_UNKNOWN &&
            (st != 400 || r.id != HTTP_ROUTE_STEPS || (r.method & r.allowed) == 0))
            __builtin_trap();
        check_error_text(&r);
        return 0;
    }
    /* Accepted: a route, an operation, a method the route takes. */
    if (r.id == HTTP_ROUTE_NONE || r.id >= HTTP_ROUTE_COUNT || r.op == HTTP_OP_UNKNOWN ||
        r.op >= HTTP_OP_COUNT || (r.method & r.allowed) == 0 || r.error[0] != '\0')
        __builtin_trap();
    if (r.mutating != (r.method == HTTP_M_POST))
        __builtin_trap();
    check_reparse(method, &r);
    return 0;
}
