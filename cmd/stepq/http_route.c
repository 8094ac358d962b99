/*
 * http_route.c - the pure request-line parser of `stepq serve` (the
 * contract is in http_route.h). Bytes in, a struct out: no allocation, no
 * globals, no I/O.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "http_route.h"
#include "stepq_text.h"

#define SEGMENTS_MAX 6
#define SEGMENT_MAX  128 /* decoded; longer is no route of ours */

static const char *const op_names[HTTP_OP_COUNT] = {
    "unknown",          "submit",  "list",  "get",     "cancel", "workers",  "health",
    "health_migration", "metrics", "asset", "console", "phase",  "throttle",
};

const char *stepq__http_op_name(enum http_op op)
{
    return (unsigned)op < HTTP_OP_COUNT ? op_names[op] : "unknown";
}

long stepq__http_pct_decode(const char *src, size_t len, char *dst, size_t dstlen)
{
    size_t o = 0;

    if (dstlen == 0)
        return -1;
    for (size_t i = 0; i < len; i++) {
        char c = src[i];
        if (c == '%') {
            if (len - i < 3)
                return -1;
            int hi = stepq__hexval(src[i + 1]), lo = stepq__hexval(src[i + 2]);
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                return -1;
            c = (char)(hi * 16 + lo);
            i += 2;
        } else if (c == '\0') {
            return -1;
        }
        if (o + 1 >= dstlen)
            return -1;
        dst[o++] = c;
    }
    dst[o] = '\0';
    return (long)o;
}

static unsigned method_flag(const char *m)
{
    if (m == NULL)
        return HTTP_M_OTHER;
    if (strcmp(m, "GET") == 0)
        return HTTP_M_GET;
    if (strcmp(m, "HEAD") == 0)
        return HTTP_M_HEAD;
    if (strcmp(m, "POST") == 0)
        return HTTP_M_POST;
    return HTTP_M_OTHER;
}

static int fail(struct http_route *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Sets the status and the error; bytes of the client that are not printable
 * ASCII are shown as '?'. */
static int fail(struct http_route *r, int status, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(r->error, sizeof(r->error), fmt, ap);
    va_end(ap);
    for (char *p = r->error; *p != '\0'; p++) {
        if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
            *p = '?';
    }
    r->status = status;
    return status;
}

/* Splits the raw path into decoded segments; returns their count, or -1
 * (bad escape) or -2 (too many or too long: no route of ours). */
static int split_path(const char *path, size_t len, char seg[SEGMENTS_MAX][SEGMENT_MAX])
{
    size_t i = 1;
    int n = 0;

    while (i <= len) {
        size_t end = i;
        while (end < len && path[end] != '/')
            end++;
        if (n == SEGMENTS_MAX)
            return -2;
        if (stepq__http_pct_decode(path + i, end - i, seg[n], SEGMENT_MAX) < 0)
            return end - i >= SEGMENT_MAX ? -2 : -1;
        n++;
        i = end + 1;
    }
    return n;
}

/* The first bytes of the raw path, NUL-terminated, for error messages. */
static const char *path_head(char *buf, size_t buflen, const char *path, size_t len)
{
    size_t n = len < buflen - 1 ? len : buflen - 1;

    memcpy(buf, path, n);
    buf[n] = '\0';
    return buf;
}

/* Which route the segments name; the step id is copied when there is one. */
static int match(struct http_route *r, char seg[SEGMENTS_MAX][SEGMENT_MAX], int n, const char *path)
{
    if (n == 1 && strcmp(seg[0], "steps") == 0) {
        r->id = HTTP_ROUTE_STEPS;
        r->allowed = HTTP_M_GET | HTTP_M_HEAD | HTTP_M_POST;
    } else if ((n == 2 || (n == 3 && strcmp(seg[2], "cancel") == 0)) &&
               strcmp(seg[0], "steps") == 0) {
        r->id = n == 2 ? HTTP_ROUTE_STEP : HTTP_ROUTE_STEP_CANCEL;
        r->allowed = n == 2 ? HTTP_M_GET | HTTP_M_HEAD : HTTP_M_POST;
        if (!stepq__valid_id(seg[1]))
            return fail(r, 400,
                        "invalid step id '%.64s'; use 1 to 63 characters of A-Z a-z 0-9 _ . -",
                        seg[1]);
        snprintf(r->step_id, sizeof(r->step_id), "%s", seg[1]);
    } else if (n == 1 && strcmp(seg[0], "workers") == 0) {
        r->id = HTTP_ROUTE_WORKERS;
        r->allowed = HTTP_M_GET | HTTP_M_HEAD;
    } else if (n == 1 && strcmp(seg[0], "health") == 0) {
        r->id = HTTP_ROUTE_HEALTH;
        r->allowed = HTTP_M_GET | HTTP_M_HEAD;
    } else if (n == 2 && strcmp(seg[0], "health") == 0 && strcmp(seg[1], "redis-migration") == 0) {
        r->id = HTTP_ROUTE_HEALTH_MIGRATION;
        r->allowed = HTTP_M_GET | HTTP_M_HEAD;
    } else if (n == 1 && strcmp(seg[0], "metrics") == 0) {
        r->id = HTTP_ROUTE_METRICS;
        r->allowed = HTTP_M_GET | HTTP_M_HEAD;
    } else if (n == 1 && (seg[0][0] == '\0' || strcmp(seg[0], "console.js") == 0 ||
                          strcmp(seg[0], "console.css") == 0)) {
        r->id = HTTP_ROUTE_ASSET;
        r->allowed = HTTP_M_GET | HTTP_M_HEAD;
        snprintf(r->asset, sizeof(r->asset), "%.24s", seg[0][0] ? seg[0] : "index.html");
    } else if (n == 2 && strcmp(seg[0], "console") == 0 && strcmp(seg[1], "feed") == 0) {
        r->id = HTTP_ROUTE_CONSOLE_FEED;
        r->allowed = HTTP_M_GET | HTTP_M_HEAD;
    } else if (n == 2 && strcmp(seg[0], "migrate") == 0 &&
               (strcmp(seg[1], "phase") == 0 || strcmp(seg[1], "throttle") == 0)) {
        r->id = seg[1][0] == 'p' ? HTTP_ROUTE_MIGRATE_PHASE : HTTP_ROUTE_MIGRATE_THROTTLE;
        r->allowed = HTTP_M_POST;
    } else {
        return fail(r, 404, "no such path '%.64s'; see docs/http.md for the endpoints", path);
    }
    return 0;
}

static int query_param(struct http_route *r, const char *k, const char *v, unsigned *seen)
{
    if (strcmp(k, "state") == 0) {
        static const char *const states[] = {"pending", "active", "completed", "failed"};
        if (*seen & 1)
            return fail(r, 400, "query parameter '%.64s' is given twice; give it once", k);
        *seen |= 1;
        for (size_t i = 0; i < sizeof(states) / sizeof(*states); i++) {
            if (strcmp(v, states[i]) == 0) {
                memcpy(r->state, states[i], strlen(states[i]) + 1);
                return 0;
            }
        }
        return fail(r, 400, "invalid state '%.64s'; use pending, active, completed or failed", v);
    }
    if (strcmp(k, "limit") == 0) {
        if (*seen & 2)
            return fail(r, 400, "query parameter '%.64s' is given twice; give it once", k);
        *seen |= 2;
        if (stepq__parse_long(v, 1, HTTP_LIMIT_MAX, &r->limit) != STEPQ_OK)
            return fail(r, 400, "invalid limit '%.64s'; use a whole number from 1 to 10000", v);
        return 0;
    }
    return fail(r, 400, "unknown query parameter '%.64s'; GET /steps takes state and limit", k);
}

static int parse_query(struct http_route *r, const char *q, size_t len)
{
    char k[SEGMENT_MAX], v[SEGMENT_MAX];
    unsigned seen = 0;
    size_t i = 0;

    while (i < len) {
        size_t end = i, eq;
        while (end < len && q[end] != '&')
            end++;
        for (eq = i; eq < end && q[eq] != '='; eq++)
            ;
        if (end > i) {
            size_t vlen = eq < end ? end - eq - 1 : 0;
            if (stepq__http_pct_decode(q + i, eq - i, k, sizeof(k)) < 0 ||
                stepq__http_pct_decode(q + eq + (eq < end), vlen, v, sizeof(v)) < 0)
                return fail(r, 400,
                            "invalid query string%s; percent-encode it (%%XX, no %%00) and keep "
                            "each name and value under 128 bytes",
                            "");
            if (query_param(r, k, v, &seen) != 0)
                return r->status;
        }
        i = end + 1;
    }
    return 0;
}

int stepq__http_route_parse(const char *method, const char *path, size_t pathlen, const char *query,
                            size_t querylen, struct http_route *ret)
{
    char seg[SEGMENTS_MAX][SEGMENT_MAX], head[72];
    int n;

    memset(ret, 0, sizeof(*ret));
    ret->method = method_flag(method);
    ret->limit = HTTP_LIMIT_DEFAULT;
    snprintf(ret->state, sizeof(ret->state), "pending");
    if (pathlen > HTTP_PATH_MAX || querylen > HTTP_QUERY_MAX)
        return fail(ret, 414, "the request target is too long%s; keep it under 1024 bytes", "");
    if (path == NULL || pathlen == 0 || path[0] != '/')
        return fail(ret, 404, "no such path; paths start with '/'");
    n = split_path(path, pathlen, seg);
    if (n == -1)
        return fail(ret, 400, "invalid percent-encoding in the path%s; use %%XX, and no %%00", "");
    if (n < 0)
        return fail(ret, 404, "no such path '%.64s'; see docs/http.md for the endpoints",
                    path_head(head, sizeof(head), path, pathlen));
    int first = 0;
    if (n >= 1 && strcmp(seg[0], "q") == 0) {
        if (n < 3 || seg[1][0] == '\0' || strlen(seg[1]) >= sizeof(ret->ns))
            return fail(ret, 404,
                        "no such path '%.64s'; a queue's paths are /q/NAMESPACE/steps, ... "
                        "(the namespace percent-encoded, at most 63 bytes)",
                        path_head(head, sizeof(head), path, pathlen));
        ret->has_ns = 1;
        memcpy(ret->ns, seg[1], strlen(seg[1]) + 1); /* fits: checked above */
        first = 2;
    }
    if (match(ret, seg + first, n - first, path_head(head, sizeof(head), path, pathlen)) != 0)
        return ret->status;
    if (ret->has_ns && (ret->id == HTTP_ROUTE_METRICS || ret->id == HTTP_ROUTE_ASSET ||
                        ret->id == HTTP_ROUTE_CONSOLE_FEED)) {
        ret->id = HTTP_ROUTE_NONE;
        return fail(ret, 404,
                    "no such path '%.64s'; the console and /metrics are served once, without "
                    "/q/NAMESPACE",
                    path_head(head, sizeof(head), path, pathlen));
    }
    if ((ret->method & ret->allowed) == 0)
        return fail(ret, 405, "method '%.64s' is not allowed here; see the Allow header",
                    method ? method : "");
    switch (ret->id) {
    case HTTP_ROUTE_STEPS:
        ret->op = ret->method == HTTP_M_POST ? HTTP_OP_SUBMIT : HTTP_OP_LIST;
        ret->mutating = ret->method == HTTP_M_POST;
        if (ret->op == HTTP_OP_LIST && query != NULL && parse_query(ret, query, querylen) != 0)
            return ret->status;
        break;
    case HTTP_ROUTE_STEP:
        ret->op = HTTP_OP_GET;
        break;
    case HTTP_ROUTE_STEP_CANCEL:
        ret->op = HTTP_OP_CANCEL;
        ret->mutating = 1;
        break;
    case HTTP_ROUTE_WORKERS:
        ret->op = HTTP_OP_WORKERS;
        break;
    case HTTP_ROUTE_HEALTH:
        ret->op = HTTP_OP_HEALTH;
        break;
    case HTTP_ROUTE_HEALTH_MIGRATION:
        ret->op = HTTP_OP_HEALTH_MIGRATION;
        break;
    case HTTP_ROUTE_ASSET:
        ret->op = HTTP_OP_ASSET;
        break;
    case HTTP_ROUTE_CONSOLE_FEED:
        ret->op = HTTP_OP_CONSOLE;
        break;
    case HTTP_ROUTE_MIGRATE_PHASE:
    case HTTP_ROUTE_MIGRATE_THROTTLE:
        ret->op = ret->id == HTTP_ROUTE_MIGRATE_PHASE ? HTTP_OP_PHASE : HTTP_OP_THROTTLE;
        ret->mutating = 1;
        break;
    default:
        ret->op = HTTP_OP_METRICS;
        break;
    }
    return 0;
}
