/*
 * http.c - the libmicrohttpd glue of `stepq serve`: one stepq handle per
 * pool thread, the capped upload buffer, bearer-token auth, and answering
 * each request exactly once.
 *
 * libmicrohttpd 0.9.75 calls the access handler several times per request:
 * first with no data (we set up the request and may refuse it at once: bad
 * route, bad token, a Content-Length over the cap), then once per chunk of
 * the upload (we append to a buffer capped at HTTP_BODY_MAX, discarding the
 * rest), and last with no data (we answer). The completion callback counts
 * the request in the metrics and frees it.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <microhttpd.h>

#include "http.h"
#include "stepq_text.h"

long long http_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---------------------------------------------------------------------------
 * Answers
 * ------------------------------------------------------------------------- */

void http_answer_json(struct http_answer *ans, int status, json_t *v)
{
    ans->body = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(v);
    ans->status = ans->body ? status : 500;
    ans->content_type = "application/json";
}

void http_answer_error(struct http_answer *ans, int status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    stepq__utf8_scrub(msg); /* json_pack refuses a message that quotes bad UTF-8 */
    http_answer_json(ans, status, json_pack("{s:s}", "error", msg));
}

int http_status_of(int err)
{
    switch (err) {
    case STEPQ_E_INVALID:
        return 400;
    case STEPQ_E_NOTFOUND:
        return 404;
    case STEPQ_E_CONFLICT:
        return 409;
    case STEPQ_E_IO:
    case STEPQ_E_EOF:
        return 503;
    default:
        return 500;
    }
}

static void add_allow(struct MHD_Response *resp, unsigned allowed)
{
    char allow[32];

    snprintf(allow, sizeof(allow), "%s%s%s", allowed & HTTP_M_GET ? "GET, HEAD" : "",
             (allowed & HTTP_M_GET) && (allowed & HTTP_M_POST) ? ", " : "",
             allowed & HTTP_M_POST ? "POST" : "");
    MHD_add_response_header(resp, "Allow", allow);
}

/* Queues ans on the connection and frees its body. */
static enum MHD_Result send_answer(struct http_server *s, struct MHD_Connection *c,
                                   struct http_req *req, struct http_answer *ans)
{
    static const char oom[] = "{\"error\":\"out of memory; retry later\"}";
    struct MHD_Response *resp;
    enum MHD_Result ret;

    if (ans->body == NULL) {
        ans->status = 500;
        resp =
            MHD_create_response_from_buffer(sizeof(oom) - 1, (void *)oom, MHD_RESPMEM_PERSISTENT);
    } else {
        resp = MHD_create_response_from_buffer(strlen(ans->body), ans->body, MHD_RESPMEM_MUST_FREE);
    }
    if (resp == NULL) {
        free(ans->body);
        return MHD_NO;
    }
    ans->body = NULL;
    MHD_add_response_header(resp, "Content-Type",
                            ans->content_type ? ans->content_type : "application/json");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    if (ans->page) {
        /* The console runs only its own files: no inline script, no other
         * origin, no framing (clickjacking its buttons). */
        MHD_add_response_header(resp, "Content-Security-Policy",
                                "default-src 'none'; script-src 'self'; style-src 'self'; "
                                "connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
                                "base-uri 'none'; form-action 'none'");
        MHD_add_response_header(resp, "X-Frame-Options", "DENY");
        MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
    }
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    if (ans->location[0] != '\0')
        MHD_add_response_header(resp, "Location", ans->location);
    if (ans->status == 405)
        add_allow(resp, req->route.allowed);
    if (ans->status == 401)
        MHD_add_response_header(resp, "WWW-Authenticate", "Bearer realm=\"stepq\"");
    if (atomic_load(&s->draining) || ans->status == 413)
        MHD_add_response_header(resp, "Connection", "close");
    req->status = ans->status;
    ret = MHD_queue_response(c, (unsigned)ans->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* ---------------------------------------------------------------------------
 * Auth: compare in constant time, so the time taken says nothing about how
 * much of a guess was right. The loop runs over the expected token only.
 * ------------------------------------------------------------------------- */

static int token_equal(const char *got, size_t glen, const char *want, size_t wlen)
{
    volatile unsigned char d = glen != wlen;

    for (size_t i = 0; i < wlen; i++)
        d |= (unsigned char)want[i] ^ (unsigned char)(i < glen ? got[i] : 0);
    return d == 0;
}

/* Returns 0 when the request may go on, else sets ans (when not NULL) to
 * a 401. */
static int check_auth(struct http_server *s, struct MHD_Connection *c, struct http_answer *ans)
{
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");

    if (s->token == NULL)
        return 0;
    if (ans == NULL && (h == NULL || strncasecmp(h, "Bearer ", 7) != 0))
        return -1;
    if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0) {
        http_answer_error(ans, 401,
                          "missing bearer token; send 'Authorization: Bearer TOKEN' with the "
                          "token the server has in STEPQ_API_TOKEN");
        return -1;
    }
    h += 7;
    while (*h == ' ')
        h++;
    size_t n = strlen(h);
    while (n > 0 && (h[n - 1] == ' ' || h[n - 1] == '\t'))
        n--;
    if (!token_equal(h, n, s->token, s->token_len) && ans == NULL)
        return -1;
    if (!token_equal(h, n, s->token, s->token_len)) {
        http_answer_error(ans, 401,
                          "invalid bearer token; use the token the server has in "
                          "STEPQ_API_TOKEN");
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------
 * The request line. MHD splits off the query and parses it into arguments;
 * we keep both raw (an identity unescape callback) and put the query back
 * together, so that all decoding and validation happens in one pure
 * function (stepq__http_route_parse).
 * ------------------------------------------------------------------------- */

static size_t raw_unescape(void *cls, struct MHD_Connection *c, char *s)
{
    (void)cls;
    (void)c;
    return strlen(s);
}

struct query_buf {
    char buf[HTTP_QUERY_MAX + 2];
    size_t len;
    int overflow;
};

static enum MHD_Result add_arg(void *cls, enum MHD_ValueKind kind, const char *k, const char *v)
{
    struct query_buf *q = cls;
    int n;

    (void)kind;
    n = snprintf(q->buf + q->len, sizeof(q->buf) - q->len, "%s%s%s%s", q->len ? "&" : "", k,
                 v ? "=" : "", v ? v : "");
    if (n < 0 || (size_t)n >= sizeof(q->buf) - q->len) {
        q->overflow = 1;
        return MHD_NO;
    }
    q->len += (size_t)n;
    return MHD_YES;
}

static void parse_request_line(struct MHD_Connection *c, const char *method, const char *url,
                               struct http_route *route)
{
    struct query_buf q = {.len = 0};

    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, add_arg, &q);
    stepq__http_route_parse(method, url, strlen(url), q.buf,
                            q.overflow ? HTTP_QUERY_MAX + 1 : q.len, route);
}

/* ---------------------------------------------------------------------------
 * The access handler
 * ------------------------------------------------------------------------- */

/* A pool thread's handles, one per namespace, each connected on first use. */
struct thread_handles {
    stepq *q[HTTP_SERVE_NS_MAX];
};

static void handles_free(void *p)
{
    struct thread_handles *h = p;

    for (size_t i = 0; i < HTTP_SERVE_NS_MAX; i++)
        stepq_free(h->q[i]);
    free(h);
}

/* The calling pool thread's handle of namespace `ns`; NULL on OOM. */
static stepq *thread_handle(struct http_server *s, size_t ns)
{
    struct thread_handles *h = pthread_getspecific(s->qkey);

    if (h == NULL) {
        h = calloc(1, sizeof(*h));
        if (h == NULL)
            return NULL;
        pthread_setspecific(s->qkey, h);
    }
    if (h->q[ns] == NULL)
        h->q[ns] = stepq_connect(s->url, &s->opts[ns]);
    return h->q[ns];
}

/* Which of the served namespaces the request names: 0 (the default) on the
 * old paths. Returns 1 after answering 404 when it is not served here. */
static int find_ns(struct http_server *s, struct http_req *req, struct http_answer *ans)
{
    if (!req->route.has_ns)
        return 0;
    for (size_t i = 0; i < s->nns; i++) {
        const char *ns = s->nss[i] ? s->nss[i] : "";
        if (strcmp(ns, req->route.ns) == 0) {
            req->ns = i;
            return 0;
        }
    }
    http_answer_error(ans, 404,
                      "namespace '%.63s' is not served here; start serve with --namespace for "
                      "it (docs/http.md)",
                      req->route.ns);
    return 1;
}

/* Appends an upload chunk, keeping at most HTTP_BODY_MAX bytes. */
static void append_body(struct http_req *req, const char *data, size_t n)
{
    if (req->too_big || n > HTTP_BODY_MAX - req->len) {
        req->too_big = 1;
        return;
    }
    if (req->len + n + 1 > req->cap) {
        size_t cap = req->cap ? req->cap : 4096;
        while (cap < req->len + n + 1)
            cap *= 2;
        char *b = realloc(req->body, cap);
        if (b == NULL) {
            req->too_big = 1;
            return;
        }
        req->body = b;
        req->cap = cap;
    }
    memcpy(req->body + req->len, data, n);
    req->len += n;
    req->body[req->len] = '\0';
}

/* Whether the request says Content-Type: application/json (parameters such
 * as charset allowed). */
static int json_content_type(struct MHD_Connection *c)
{
    const char *t = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    size_t n = sizeof("application/json") - 1;

    if (t == NULL)
        return 0;
    while (*t == ' ')
        t++;
    return strncasecmp(t, "application/json", n) == 0 &&
           (t[n] == '\0' || t[n] == ';' || t[n] == ' ');
}

static enum MHD_Result add_header_size(void *cls, enum MHD_ValueKind kind, const char *k,
                                       const char *v)
{
    (void)kind;
    *(size_t *)cls += strlen(k) + (v ? strlen(v) : 0) + 4; /* ": " and CRLF */
    return MHD_YES;
}

/* The bytes of the request head, about: the request line and the headers.
 * MHD answers a head past its memory pool (HTTP_CONN_MEMORY) with its own
 * 431 before we see it; below that, this one answers JSON. */
static size_t head_size(struct MHD_Connection *c)
{
    size_t n = 64; /* the request line, whose target is capped apart (414) */

    MHD_get_connection_values(c, MHD_HEADER_KIND, add_header_size, &n);
    return n;
}

/* The first call: returns 1 when the request is refused at once (ans set). */
static int first_call(struct http_server *s, struct MHD_Connection *c, struct http_req *req,
                      struct http_answer *ans)
{
    const char *cl;

    if (req->route.status != 0) {
        http_answer_error(ans, req->route.status, "%s", req->route.error);
        return 1;
    }
    if (head_size(c) > HTTP_HEAD_MAX) {
        http_answer_error(ans, 431,
                          "the request head is larger than %d KiB; send fewer or shorter "
                          "headers",
                          HTTP_HEAD_MAX / 1024);
        return 1;
    }
    if ((req->route.mutating || s->auth_reads) && check_auth(s, c, ans) != 0)
        return 1;
    if (find_ns(s, req, ans) != 0)
        return 1;
    /* A read without --auth-reads may still carry the token: then it may
     * see what only the token's holders see (claim tokens). */
    req->authed = s->token != NULL && check_auth(s, c, NULL) == 0;
    if (req->route.mutating && !json_content_type(c)) {
        /* A browser sends a cross-site form post without asking first, but
         * never with this type: refused even with --no-auth. */
        http_answer_error(ans, 415,
                          "a request that changes data must say 'Content-Type: "
                          "application/json'");
        return 1;
    }
    cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
    if (cl != NULL && strtoull(cl, NULL, 10) > HTTP_BODY_MAX) {
        http_answer_error(ans, 413, "the body is larger than 1 MiB; send a smaller one");
        return 1;
    }
    return 0;
}

static enum MHD_Result access_handler(void *cls, struct MHD_Connection *c, const char *url,
                                      const char *method, const char *version,
                                      const char *upload_data, size_t *upload_data_size,
                                      void **con_cls)
{
    struct http_server *s = cls;
    struct http_req *req = *con_cls;
    struct http_answer ans = {0};

    (void)version;
    if (req == NULL) {
        req = calloc(1, sizeof(*req));
        if (req == NULL)
            return MHD_NO;
        *con_cls = req;
        atomic_fetch_add(&s->in_flight, 1);
        req->start_us = http_now_us();
        http_guard_head_done(c);
        parse_request_line(c, method, url, &req->route);
        if (first_call(s, c, req, &ans))
            return send_answer(s, c, req, &ans);
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        append_body(req, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (req->status != 0)
        return MHD_YES; /* already answered on the first call */
    if (req->too_big)
        http_answer_error(&ans, 413, "the body is larger than 1 MiB; send a smaller one");
    else
        http_dispatch(s, thread_handle(s, req->ns), req, &ans);
    return send_answer(s, c, req, &ans);
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls,
                      enum MHD_RequestTerminationCode toe)
{
    struct http_server *s = cls;
    struct http_req *req = *con_cls;

    (void)toe;
    http_guard_request_done(c);
    if (req == NULL)
        return;
    if (req->status != 0)
        http_metrics_observe(&s->metrics, req->route.op, req->status,
                             http_now_us() - req->start_us);
    free(req->body);
    free(req);
    *con_cls = NULL;
    atomic_fetch_sub(&s->in_flight, 1);
}

/* ---------------------------------------------------------------------------
 * Lifecycle
 * ------------------------------------------------------------------------- */

/* libmicrohttpd's own messages (a connection closed while its head was
 * read, the limit reached): at most one a second, so that an attack cannot
 * fill the log; the ones left out are counted in the next. */
static void mhd_log(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    static atomic_llong last_s;
    static atomic_ullong dropped;
    long long now = http_now_us() / 1000000;
    long long prev = atomic_load(&last_s);

    (void)cls;
    if (now == prev || !atomic_compare_exchange_strong(&last_s, &prev, now)) {
        atomic_fetch_add(&dropped, 1);
        return;
    }
    unsigned long long n = atomic_exchange(&dropped, 0);
    if (n > 0)
        fprintf(stderr, "stepq serve: (%llu messages of libmicrohttpd left out)\n", n);
    fputs("stepq serve: libmicrohttpd: ", stderr);
    vfprintf(stderr, fmt, ap);
}

int http_server_start(struct http_server *s, const void *addr, int ipv6, int threads)
{
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG |
                     MHD_USE_AUTO | (ipv6 ? MHD_USE_IPv6 : 0);

    if (pthread_key_create(&s->qkey, handles_free) != 0) {
        fputs("stepq: serve: cannot create a thread key\n", stderr);
        return STEPQ_ERR;
    }
    for (size_t i = 0; i < HTTP_SERVE_NS_MAX; i++)
        pthread_mutex_init(&s->health[i].mu, NULL);
    if (http_guard_start(s) != STEPQ_OK) {
        fputs("stepq: serve: cannot start the connection guard thread\n", stderr);
        return STEPQ_ERR;
    }
    /* The limits against a client that holds connections (docs/http.md,
     * "Limits"): all addresses, one address, idle time; http_guard.c adds
     * the deadline for a whole request head. */
    s->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, access_handler, s, MHD_OPTION_SOCK_ADDR, addr,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)threads, MHD_OPTION_NOTIFY_COMPLETED, completed, s,
        MHD_OPTION_NOTIFY_CONNECTION, http_guard_notify, s, MHD_OPTION_UNESCAPE_CALLBACK,
        raw_unescape, NULL, MHD_OPTION_CONNECTION_TIMEOUT, s->limits.idle_timeout_s,
        MHD_OPTION_CONNECTION_LIMIT, s->limits.max_connections, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        s->limits.max_per_address, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_CONN_MEMORY,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_END);
    if (s->daemon == NULL) {
        fprintf(stderr, "stepq: serve: cannot listen: %s; is the address in use or not local?\n",
                errno ? strerror(errno) : "unknown error");
        return STEPQ_ERR;
    }
    return STEPQ_OK;
}

int http_server_port(struct http_server *s)
{
    const union MHD_DaemonInfo *i = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);

    return i ? i->port : 0;
}

int http_server_drain(struct http_server *s, long drain_ms)
{
    MHD_socket fd;
    long waited = 0;
    int left;

    atomic_store(&s->draining, 1);
    fd = MHD_quiesce_daemon(s->daemon);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
    /* A request counts from its headers to the end of its answer. */
    while ((left = atomic_load(&s->in_flight)) > 0 && waited < drain_ms) {
        usleep(10000);
        waited += 10;
    }
    MHD_stop_daemon(s->daemon);
    s->daemon = NULL;
    http_guard_stop(s);
    return left;
}

void http_server_release(struct http_server *s)
{
    if (s->daemon != NULL)
        MHD_stop_daemon(s->daemon);
    s->daemon = NULL;
    http_guard_stop(s);
    pthread_mutex_destroy(&s->guard.mu);
    pthread_cond_destroy(&s->guard.cv);
    for (size_t i = 0; i < HTTP_SERVE_NS_MAX; i++) {
        json_decref(s->health[i].doc);
        s->health[i].doc = NULL;
        pthread_mutex_destroy(&s->health[i].mu);
    }
    pthread_key_delete(s->qkey);
}
