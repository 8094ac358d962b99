/*
 * http_metrics.c - GET /metrics in the Prometheus text format: request
 * counters and latency histograms kept in this process (atomics, so pool
 * threads never wait on each other to count), plus the migration gauges read
 * from the cached health document.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <hiredis/sds.h>

#include "http.h"

static const int codes[HTTP_METRIC_CODES - 1] = {200, 201, 400, 401, 404, 405,
                                                 409, 413, 414, 500, 503};
static const long long bucket_us[HTTP_METRIC_BUCKETS] = {
    1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 5000000,
};

void http_metrics_observe(struct http_metrics *m, enum http_op op, int status, long long us)
{
    size_t c = HTTP_METRIC_CODES - 1, b = HTTP_METRIC_BUCKETS;

    for (size_t i = 0; i < HTTP_METRIC_CODES - 1; i++) {
        if (codes[i] == status)
            c = i;
    }
    for (size_t i = HTTP_METRIC_BUCKETS; i > 0; i--) {
        if (us <= bucket_us[i - 1])
            b = i - 1;
    }
    if ((unsigned)op >= HTTP_OP_COUNT)
        op = HTTP_OP_UNKNOWN;
    atomic_fetch_add(&m->requests[op][c], 1);
    atomic_fetch_add(&m->bucket[op][b], 1);
    atomic_fetch_add(&m->sum_us[op], (unsigned long long)(us < 0 ? 0 : us));
}

static sds render_requests(sds out, struct http_metrics *m)
{
    out = sdscat(out, "# HELP stepq_http_requests_total HTTP requests answered, by operation "
                      "and status code.\n# TYPE stepq_http_requests_total counter\n");
    for (int op = 0; op < HTTP_OP_COUNT; op++) {
        for (int c = 0; c < HTTP_METRIC_CODES; c++) {
            unsigned long long n = atomic_load(&m->requests[op][c]);
            if (n == 0)
                continue;
            char code[8];
            if (c < HTTP_METRIC_CODES - 1)
                snprintf(code, sizeof(code), "%d", codes[c]);
            else
                snprintf(code, sizeof(code), "other");
            out = sdscatprintf(out, "stepq_http_requests_total{op=\"%s\",code=\"%s\"} %llu\n",
                               stepq__http_op_name((enum http_op)op), code, n);
        }
    }
    return out;
}

static sds render_latency(sds out, struct http_metrics *m)
{
    out = sdscat(out, "# HELP stepq_http_request_duration_seconds Time from the request's "
                      "headers to its answer, by operation.\n"
                      "# TYPE stepq_http_request_duration_seconds histogram\n");
    for (int op = 0; op < HTTP_OP_COUNT; op++) {
        const char *name = stepq__http_op_name((enum http_op)op);
        unsigned long long cum = 0;
        for (int b = 0; b <= HTTP_METRIC_BUCKETS; b++)
            cum += atomic_load(&m->bucket[op][b]);
        if (cum == 0)
            continue;
        cum = 0;
        for (int b = 0; b < HTTP_METRIC_BUCKETS; b++) {
            cum += atomic_load(&m->bucket[op][b]);
            out = sdscatprintf(out,
                               "stepq_http_request_duration_seconds_bucket{op=\"%s\",le=\"%g\"} "
                               "%llu\n",
                               name, (double)bucket_us[b] / 1e6, cum);
        }
        cum += atomic_load(&m->bucket[op][HTTP_METRIC_BUCKETS]);
        out = sdscatprintf(out,
                           "stepq_http_request_duration_seconds_bucket{op=\"%s\",le=\"+Inf\"} "
                           "%llu\n"
                           "stepq_http_request_duration_seconds_sum{op=\"%s\"} %.6f\n"
                           "stepq_http_request_duration_seconds_count{op=\"%s\"} %llu\n",
                           name, cum, name, (double)atomic_load(&m->sum_us[op]) / 1e6, name, cum);
    }
    return out;
}

/* A label value with \, " and newlines escaped, as the text format wants. */
static sds cat_label(sds out, const char *v)
{
    for (; v != NULL && *v != '\0'; v++) {
        if (*v == '\\' || *v == '"')
            out = sdscatprintf(out, "\\%c", *v);
        else if (*v == '\n')
            out = sdscat(out, "\\n");
        else
            out = sdscatlen(out, v, 1);
    }
    return out;
}

static sds gauge(sds out, const char *name, const char *type, const char *help, long long v)
{
    return sdscatprintf(out, "# HELP %s %s\n# TYPE %s %s\n%s %lld\n", name, help, name, type, name,
                        v);
}

static long long jint(const json_t *o, const char *k)
{
    const json_t *v = json_object_get(o, k);

    if (json_is_string(v))
        return strtoll(json_string_value(v), NULL, 10);
    return json_integer_value(v);
}

static sds render_keys(sds out, const json_t *keys)
{
    const json_t *k;
    size_t i;

    out = sdscat(out, "# HELP stepq_migration_keys Keys per rule of the key map and side "
                      "(old: job pattern, new: step pattern).\n"
                      "# TYPE stepq_migration_keys gauge\n");
    json_array_foreach(keys, i, k)
    {
        for (int side = 0; side < 2; side++) {
            out = sdscat(out, "stepq_migration_keys{rule=\"");
            out = cat_label(out, json_string_value(json_object_get(k, "rule")));
            out = sdscatprintf(out, "\",side=\"%s\"} %lld\n", side ? "new" : "old",
                               jint(k, side ? "new_keys" : "old_keys"));
        }
    }
    return out;
}

static sds render_migration(sds out, const json_t *doc)
{
    const json_t *counters = json_object_get(doc, "counters");
    const json_t *backfill = json_object_get(doc, "backfill");
    const json_t *verify = json_object_get(doc, "verify");
    const char *phase = json_string_value(json_object_get(doc, "phase"));

    out = sdscat(out, "# HELP stepq_migration_phase The stored migration phase (1 for the "
                      "current one).\n# TYPE stepq_migration_phase gauge\n");
    for (int p = 0; p < STEPQ_PHASE_COUNT; p++) {
        const char *name = stepq_phase_name((stepq_phase)p);
        out = sdscatprintf(out, "stepq_migration_phase{phase=\"%s\"} %d\n", name,
                           phase != NULL && strcmp(phase, name) == 0);
    }
    out = gauge(out, "stepq_migration_healthy", "gauge",
                "1 when /health/redis-migration answers 200.",
                json_is_true(json_object_get(doc, "healthy")));
    out = gauge(out, "stepq_migration_fallback_reads_total", "counter",
                "Reads that fell back to the old keys.", jint(counters, "fallback_reads"));
    out = gauge(out, "stepq_migration_lazy_migrations_total", "counter",
                "Old records copied to the new keys on read (dual-read).",
                jint(counters, "lazy_migrations"));
    out = gauge(out, "stepq_migration_primary_misses_total", "counter",
                "Reads in step-primary that found only the old key.",
                jint(counters, "primary_misses"));
    out = gauge(out, "stepq_backfill_keys_done", "gauge", "Keys the backfill has copied.",
                jint(backfill, "keys_done"));
    out = gauge(out, "stepq_backfill_keys_total", "gauge", "Keys the backfill has to copy.",
                jint(backfill, "keys_total"));
    out = gauge(out, "stepq_backfill_errors", "gauge", "Errors the backfill reported.",
                jint(backfill, "errors"));
    out = gauge(out, "stepq_verify_clean", "gauge",
                "1 when the last verify found no difference, 0 when it did, -1 before any.",
                json_object_get(verify, "clean") ? json_is_true(json_object_get(verify, "clean"))
                                                 : -1);
    out = gauge(out, "stepq_processes", "gauge", "Live stepq processes that announce themselves.",
                (long long)json_array_size(json_object_get(doc, "processes")));
    return render_keys(out, json_object_get(doc, "keys"));
}

int http_metrics_render(struct http_server *s, stepq *q, char **ret_text)
{
    json_t *doc = NULL;
    int st = http_health_migration(s, 0, q, &doc);
    const char *status = json_string_value(json_object_get(doc, "status"));
    int up = st != 500 && status != NULL && strcmp(status, "unavailable") != 0;
    sds out = sdsempty();

    out = render_requests(out, &s->metrics);
    out = render_latency(out, &s->metrics);
    out = gauge(out, "stepq_http_in_flight", "gauge", "Requests being answered now.",
                atomic_load(&s->in_flight));
    out = gauge(out, "stepq_http_connections", "gauge", "Connections open now.",
                atomic_load(&s->guard.open));
    out = gauge(out, "stepq_http_head_timeouts_total", "counter",
                "Connections cut because their request head took longer than --head-timeout.",
                (long long)atomic_load(&s->guard.cut_total));
    out = gauge(out, "stepq_redis_up", "gauge", "1 when Redis answered the last status walk.", up);
    if (up)
        out = render_migration(out, doc);
    json_decref(doc);
    *ret_text = out ? strdup(out) : NULL;
    sdsfree(out);
    return *ret_text ? STEPQ_OK : STEPQ_ERR;
}
