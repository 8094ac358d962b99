/*
 * http.h - what the files of `stepq serve` share: the server, one request,
 * one answer, the metrics and the health document.
 *
 *   http.c          MHD glue: per-thread handles, body capping, auth, dispatch
 *   http_route.c    the pure request-line parser (http_route.h)
 *   http_routes.c   the handlers: steps, workers, health
 *   http_health.c   the migration health document, its verdict and its cache
 *   http_metrics.c  counters, latency histograms, the Prometheus text
 *   http_console.c  the console: its embedded page, its feed, its actions
 *   status_doc.c    the typed status document (also `migrate status --json`)
 *   cmd_serve.c     flags, startup, signals, the announce thread
 */
#ifndef STEPQ_HTTP_H
#define STEPQ_HTTP_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <sys/socket.h>
#include <jansson.h>
#include <microhttpd.h>

#include "http_route.h"
#include "stepq.h"

#define HTTP_BODY_MAX         (1024 * 1024) /* larger bodies get 413 */
#define HTTP_JSON_DEPTH_MAX   64            /* deeper JSON bodies get 400 */
#define HTTP_HEALTH_CACHE_MS  2000          /* /health/redis-migration is cached this long */
#define HTTP_HEAD_MAX         (16 * 1024)   /* request heads larger get 431 (JSON) */
#define HTTP_TOKEN_MIN        16            /* shorter API tokens are refused at startup */
#define HTTP_CONN_MEMORY      (64 * 1024)   /* MHD's pool per connection (its own 431 past it) */
#define HTTP_HEAD_PRESSURE_MS 1000          /* the head deadline near the connection cap */
#define HTTP_SERVE_NS_MAX     64            /* namespaces one serve takes (CLI_NS_MAX) */

/* ---------------------------------------------------------------------------
 * Metrics (http_metrics.c)
 * ------------------------------------------------------------------------- */
#define HTTP_METRIC_CODES   12 /* the status codes we count, plus "other" */
#define HTTP_METRIC_BUCKETS 12 /* latency buckets, plus +Inf */

struct http_metrics {
    atomic_ullong requests[HTTP_OP_COUNT][HTTP_METRIC_CODES];
    atomic_ullong bucket[HTTP_OP_COUNT][HTTP_METRIC_BUCKETS + 1]; /* not cumulative */
    atomic_ullong sum_us[HTTP_OP_COUNT];
};

/* Counts one answered request of `op` with `status` that took `us`. */
void http_metrics_observe(struct http_metrics *m, enum http_op op, int status, long long us);

/* ---------------------------------------------------------------------------
 * The health cache (http_health.c)
 * ------------------------------------------------------------------------- */
struct http_health_cache {
    pthread_mutex_t mu;
    long long at_ms; /* when doc was built; 0: never */
    int status;      /* 200 or 503 */
    json_t *doc;     /* the /health/redis-migration document; read under mu */
};

/* ---------------------------------------------------------------------------
 * Connections (http_guard.c): each open connection, so that a request head
 * that takes longer than the deadline is cut, however its bytes trickle.
 * ------------------------------------------------------------------------- */
struct http_conn {
    struct http_conn *prev, *next;
    int fd;
    struct sockaddr_storage peer; /* to check the fd is still this connection's */
    socklen_t peerlen;
    long long head_since_ms; /* when the current request's head began */
    atomic_int head_done;    /* its head arrived (the access handler ran) */
    int cut;                 /* shut down by the guard */
};

struct http_guard {
    pthread_mutex_t mu;
    struct http_conn *conns;
    pthread_t tid;
    pthread_cond_t cv;
    int stop, running;
    long head_timeout_ms;
    unsigned max_conns;      /* the cap, for the pressure rule */
    atomic_ullong cut_total; /* heads cut at the deadline */
    atomic_int open;         /* connections open now */
};

/* The limits of `stepq serve` (flags). */
struct http_limits {
    unsigned max_connections; /* all addresses together */
    unsigned max_per_address;
    unsigned idle_timeout_s;
    long head_timeout_ms;
};

/* ---------------------------------------------------------------------------
 * The server
 * ------------------------------------------------------------------------- */
struct http_server {
    struct MHD_Daemon *daemon;
    /* The namespaces served: the first is the default, served on the old
     * paths too; each, by name, under /q/{namespace}/. nss[0] may be NULL
     * (no prefix). */
    const char *nss[HTTP_SERVE_NS_MAX];
    size_t nns;
    const char *token; /* the bearer token; NULL with --no-auth */
    size_t token_len;
    int auth_reads; /* --auth-reads: every GET needs the token too */
    struct http_limits limits;
    struct http_guard guard;
    const char *url;                       /* Redis URL for the per-thread handles */
    stepq_options opts[HTTP_SERVE_NS_MAX]; /* one per namespace */
    pthread_key_t qkey; /* each pool thread's own stepq handles, one per namespace */
    atomic_int in_flight;
    atomic_int draining;
    struct http_metrics metrics;
    struct http_health_cache health[HTTP_SERVE_NS_MAX]; /* per namespace */
};

/* One request, from its first access-handler call to its completion. */
struct http_req {
    struct http_route route;
    size_t ns; /* the index of its namespace in the server's */
    long long start_us;
    char *body; /* the upload, capped at HTTP_BODY_MAX, NUL-terminated */
    size_t len, cap;
    int too_big; /* the upload went past HTTP_BODY_MAX: answer 413 */
    int authed;  /* the request carried the server's token (or auth is off) */
    int status;  /* the status answered, for the metrics; 0: none yet */
};

/* What a handler answers. The glue sends it and frees body. */
struct http_answer {
    int status;
    char *body; /* malloc'd (free), NUL-terminated */
    const char *content_type;
    char location[288]; /* a Location header when not empty (a /q/{namespace}/ path fits) */
    int page;           /* the console's page: send its Content-Security-Policy */
};

/* The connection guard (http_guard.c): MHD's connection notifications,
 * the head-deadline thread, and marking a head as arrived or a request as
 * answered (the next head on a kept-alive connection starts then). */
void http_guard_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                       enum MHD_ConnectionNotificationCode toe);
int http_guard_start(struct http_server *s);
void http_guard_stop(struct http_server *s);
void http_guard_head_done(struct MHD_Connection *c);
void http_guard_request_done(struct MHD_Connection *c);

/* Starts the daemon on `addr` (a struct sockaddr_in or _in6) with `threads`
 * pool threads. Returns STEPQ_OK, or STEPQ_ERR after printing why. */
int http_server_start(struct http_server *s, const void *addr, int ipv6, int threads);
/* The port the daemon listens on (useful with port 0). */
int http_server_port(struct http_server *s);
/* Stops accepting, waits up to drain_ms for requests in flight, stops the
 * daemon. Returns the number of requests still in flight (0: clean). */
int http_server_drain(struct http_server *s, long drain_ms);
/* Frees what http_server_start and the requests left behind. */
void http_server_release(struct http_server *s);

/* Answers the request: sets ans from `q` (the calling thread's handle, may be
 * NULL when it could not be created). Called once per request, on the last
 * access-handler call. */
void http_dispatch(struct http_server *s, stepq *q, struct http_req *req, struct http_answer *ans);

/* Sets ans to {"error": msg} with `status`. */
void http_answer_error(struct http_answer *ans, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Sets ans to the JSON value v (a reference is stolen) with `status`. */
void http_answer_json(struct http_answer *ans, int status, json_t *v);
/* The HTTP status for a library error kind. */
int http_status_of(int err);

/* The /health/redis-migration document and status of namespace `ns` (an
 * index of s->nss; q is a handle of it), from the cache when it is fresh (a
 * new reference in *ret_doc). */
int http_health_migration(struct http_server *s, size_t ns, stepq *q, json_t **ret_doc);
/* The reasons the status document `st` is unhealthy, as a new JSON array of
 * strings (empty when healthy). Pure: reads only st. */
json_t *http_health_verdict(const json_t *st);
/* Appends the Prometheus text of everything to *out (an sds). */
int http_metrics_render(struct http_server *s, stepq *q, char **ret_text);

long long http_now_us(void);

#endif
