/*
 * http_health.c - GET /health/redis-migration: the migration status of
 * stepq_status() with a verdict, cached for HTTP_HEALTH_CACHE_MS across all
 * threads, because the status walks the keyspace with SCAN and a load
 * balancer polling every second must not make Redis do that every second.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http.h"
#include "status_doc.h"

/* A number that may be stored as a JSON integer, real or decimal string
 * (hash fields come back as text unless stepq knows them); dflt when
 * absent or not a number. */
static long long num(const json_t *v, long long dflt)
{
    if (json_is_integer(v))
        return json_integer_value(v);
    if (json_is_real(v))
        return (long long)json_real_value(v);
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        char *end;
        long long n = strtoll(s, &end, 10);
        if (*s != '\0' && *end == '\0')
            return n;
    }
    return dflt;
}

static void reason(json_t *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void reason(json_t *a, const char *fmt, ...)
{
    char msg[384];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_array_append_new(a, json_string(msg));
}

/* The engine's records. Each reason names a command that is allowed in the
 * phase it is given in and that clears it (tests/http/t_http_health.sh
 * follows each one): the reasons depend on the phase. */
static void verdict_engine(json_t *a, const json_t *st, const char *stored)
{
    const json_t *verify = json_object_get(st, "verify");
    const json_t *backfill = json_object_get(st, "backfill");
    const json_t *phase = json_object_get(st, "phase");
    const char *bstate = json_string_value(json_object_get(backfill, "state"));
    int dual_write = strcmp(stored, "dual-write") == 0;
    int dual_read = strcmp(stored, "dual-read") == 0;
    int reads_new = strcmp(stored, "dual-read") == 0 || strcmp(stored, "step-primary") == 0;

    /* Whatever the phase: the old keys are not whole until it finishes. */
    if (json_object_get(phase, "reconciling") != NULL)
        reason(a, "a rollback out of 'step' stopped before it finished reconciling the old keys "
                  "(they miss what was written in 'step'); run 'stepq migrate rollback' to "
                  "finish it");
    /* In 'job' nothing reads the new keys, and in 'step' the old ones are
     * frozen: a verify or backfill record there is history. */
    if (!dual_write && !reads_new)
        return;
    if (dual_write && num(json_object_get(phase, "untrusted_since"), 0) > 0)
        reason(a, "the new keys are untrusted since the rollback to 'job' (they kept what they "
                  "held then); run 'stepq migrate backfill --repair'");
    if (num(json_object_get(verify, "clean"), 1) == 0)
        reason(a,
               "the last verify found differences (different=%lld, missing=%lld, ttl_off=%lld); "
               "%s",
               num(json_object_get(verify, "different"), 0),
               num(json_object_get(verify, "missing"), 0),
               num(json_object_get(verify, "ttl_off"), 0),
               dual_write ? "run 'stepq migrate backfill --repair', then 'stepq migrate verify'"
               : dual_read
                   ? "run 'stepq migrate verify' again (differences under load converge); if "
                     "they stay, 'stepq migrate rollback --reconcile' makes the old keys equal "
                     "to the new ones (the keys read now) and moves back to 'dual-write'"
                   : "run 'stepq migrate verify' again (differences under load converge); if "
                     "they stay, 'stepq migrate rollback' to 'dual-read', then 'stepq migrate "
                     "rollback --reconcile'");
    if (num(json_object_get(backfill, "errors"), 0) > 0 ||
        (bstate != NULL && strcmp(bstate, "failed") == 0))
        reason(a,
               "the backfill failed (%lld errors); read its log and run 'stepq migrate "
               "backfill' again (it resumes)",
               num(json_object_get(backfill, "errors"), 0));
}

/* Reads that missed the new keys in step-primary count until a clean
 * forward verify that started after them. */
static void verdict_misses(json_t *a, const json_t *st)
{
    const json_t *phase = json_object_get(st, "phase");
    const json_t *verify = json_object_get(st, "verify");
    long long misses = num(json_object_get(json_object_get(st, "counters"), "primary_misses"), 0);
    long long since = num(json_object_get(phase, "misses_at_since"), 0);

    if (num(json_object_get(verify, "clean"), 0) == 1 &&
        num(json_object_get(verify, "reverse"), 0) == 0 &&
        num(json_object_get(verify, "started_at"), 0) >= num(json_object_get(phase, "since"), 0)) {
        long long answered = num(json_object_get(verify, "misses_at_start"), 0);
        if (answered > since)
            since = answered;
    }
    if (misses > since)
        reason(a,
               "%lld reads missed step:* keys since the move to step-primary; run 'stepq "
               "migrate backfill', then 'stepq migrate verify'",
               misses - since);
}

json_t *http_health_verdict(const json_t *st)
{
    const json_t *phase = json_object_get(st, "phase");
    const char *stored = json_string_value(json_object_get(phase, "phase"));
    json_t *a = json_array(), *p;
    size_t i;

    if (a == NULL)
        return NULL;
    stored = stored ? stored : "job";
    verdict_engine(a, st, stored);
    if (strcmp(stored, "step-primary") == 0)
        verdict_misses(a, st);
    json_array_foreach(json_object_get(st, "processes"), i, p)
    {
        const char *ph = json_string_value(json_object_get(p, "phase"));
        if (ph != NULL && strcmp(ph, "stored") != 0 && strcmp(ph, stored) != 0)
            reason(a,
                   "process '%.96s' (%.32s) is pinned to '%.16s' but the stored phase is "
                   "'%.16s'; unset ENABLE_DUAL_WRITE_STEPS and PRIMARY_KEY_PATTERN there and "
                   "restart it",
                   json_string_value(json_object_get(p, "id")),
                   json_string_value(json_object_get(p, "kind")), ph, stored);
    }
    return a;
}

int http_health_migration(struct http_server *s, size_t ns, stepq *q, json_t **ret_doc)
{
    struct http_health_cache *c = &s->health[ns];
    long long now = http_now_us() / 1000;
    int status;

    /* Threads that find the cache stale wait for the one refreshing it and
     * then share its result, so Redis sees one status walk at a time. */
    pthread_mutex_lock(&c->mu);
    if (c->doc == NULL || now - c->at_ms >= HTTP_HEALTH_CACHE_MS) {
        json_t *doc = NULL;
        int st = status_doc_build(q, &doc);
        if (doc != NULL) {
            c->status = st;
            json_decref(c->doc);
            c->doc = doc;
            c->at_ms = http_now_us() / 1000;
        }
    }
    status = c->status;
    *ret_doc = c->doc ? json_deep_copy(c->doc) : NULL;
    pthread_mutex_unlock(&c->mu);
    return *ret_doc ? status : 500;
}
