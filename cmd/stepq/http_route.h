/*
 * http_route.h - the pure request-line parser of `stepq serve`: method,
 * path and query bytes in, a route struct out. It allocates nothing, reads
 * no global state and never touches the network, so a fuzzer can call it
 * with any bytes.
 */
#ifndef STEPQ_HTTP_ROUTE_H
#define STEPQ_HTTP_ROUTE_H

#include <stddef.h>

#include "stepq.h"

enum http_route_id {
    HTTP_ROUTE_NONE = 0,         /* no such path (404) */
    HTTP_ROUTE_STEPS,            /* /steps: GET lists, POST submits */
    HTTP_ROUTE_STEP,             /* /steps/{id}: GET */
    HTTP_ROUTE_STEP_CANCEL,      /* /steps/{id}/cancel: POST */
    HTTP_ROUTE_WORKERS,          /* /workers: GET */
    HTTP_ROUTE_HEALTH,           /* /health: GET */
    HTTP_ROUTE_HEALTH_MIGRATION, /* /health/redis-migration: GET */
    HTTP_ROUTE_METRICS,          /* /metrics: GET */
    HTTP_ROUTE_ASSET,            /* /, /console.js, /console.css: GET (the console) */
    HTTP_ROUTE_CONSOLE_FEED,     /* /console/feed: GET */
    HTTP_ROUTE_MIGRATE_PHASE,    /* /migrate/phase: POST */
    HTTP_ROUTE_MIGRATE_THROTTLE, /* /migrate/throttle: POST */
    HTTP_ROUTE_COUNT
};

/* What a request does, as metrics label it (stepq__http_op_name). */
enum http_op {
    HTTP_OP_UNKNOWN = 0, /* no route, or a method the route does not take */
    HTTP_OP_SUBMIT,
    HTTP_OP_LIST,
    HTTP_OP_GET,
    HTTP_OP_CANCEL,
    HTTP_OP_WORKERS,
    HTTP_OP_HEALTH,
    HTTP_OP_HEALTH_MIGRATION,
    HTTP_OP_METRICS,
    HTTP_OP_ASSET,
    HTTP_OP_CONSOLE,
    HTTP_OP_PHASE,
    HTTP_OP_THROTTLE,
    HTTP_OP_COUNT
};

enum http_method_flags {
    HTTP_M_GET = 1 << 0,
    HTTP_M_HEAD = 1 << 1,
    HTTP_M_POST = 1 << 2,
    HTTP_M_OTHER = 1 << 3,
};

#define HTTP_LIMIT_DEFAULT 100
#define HTTP_LIMIT_MAX     10000
#define HTTP_PATH_MAX      1024 /* longer paths are refused before parsing */
#define HTTP_QUERY_MAX     1024
#define HTTP_NS_MAX        64 /* bytes of a namespace in /q/{namespace}/..., NUL included */

struct http_route {
    enum http_route_id id;
    enum http_op op;            /* HTTP_OP_UNKNOWN unless the path and method matched */
    int status;                 /* 0 when the request may go on; else 400, 404, 405 or 414 */
    unsigned method;            /* the HTTP_M_ flag of the method */
    unsigned allowed;           /* the methods the path takes (for the Allow header) */
    int mutating;               /* 1 for a route that changes data (needs the bearer token) */
    char step_id[STEPQ_ID_MAX]; /* HTTP_ROUTE_STEP, HTTP_ROUTE_STEP_CANCEL: decoded id */
    char state[16];             /* GET /steps: pending, active, completed or failed */
    char asset[32];             /* HTTP_ROUTE_ASSET: the file of web/ ("index.html" for /) */
    long limit;                 /* GET /steps: 1..HTTP_LIMIT_MAX */
    int has_ns;                 /* the path began with /q/{namespace}/ */
    char ns[HTTP_NS_MAX];       /* that namespace, decoded */
    char error[192];            /* when status != 0: what is wrong and what to do */
};

/*
 * Parses one request line. `method` is the method token (NUL-terminated;
 * NULL counts as unknown), `path` the raw, still percent-encoded path of
 * `pathlen` bytes (without the query), `query` the raw query string of
 * `querylen` bytes after the '?' (NULL or empty when none). Neither needs a
 * NUL terminator, and any byte is allowed.
 *
 * Fills *ret completely and returns ret->status: 0 when the route was found,
 * the method is allowed and the parameters are valid; otherwise the HTTP
 * status to answer with (404 unknown path, 405 method not allowed, 400 bad
 * percent-encoding, bad step id or bad query parameter, 414 path or query
 * too long) and ret->error says why, lowercase, naming the subject in single
 * quotes. ret->id and ret->allowed are set whenever the path matched, even
 * when the status is not 0.
 *
 * A path may begin with /q/{namespace}/ (the namespace percent-decoded,
 * 1 to 63 bytes, no NUL): then has_ns and ns are set and the rest is
 * matched as a path of its own, among the routes of one queue (steps,
 * workers, health, migrate); the console and /metrics have no such form.
 *
 * Rules: ids are percent-decoded and must then be 1 to 63 characters of
 * A-Z a-z 0-9 _ . - ; %00 and malformed escapes are refused. GET /steps takes
 * `state` (default pending) and `limit` (default 100, 1 to 10000), each at
 * most once; any other parameter there is refused. Other routes ignore
 * their query. HEAD is allowed wherever GET is.
 */
int stepq__http_route_parse(const char *method, const char *path, size_t pathlen, const char *query,
                            size_t querylen, struct http_route *ret);

/* The operation's name as metrics label it ("submit", "get", ..., "unknown"). */
const char *stepq__http_op_name(enum http_op op);

/* Decodes %XX escapes of src[0..len) into dst (at most dstlen - 1 bytes and a
 * NUL). Returns the decoded length, or -1 on a malformed escape, %00, or a
 * result that does not fit. '+' is left as it is. */
long stepq__http_pct_decode(const char *src, size_t len, char *dst, size_t dstlen);

#endif
