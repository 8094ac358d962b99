/*
 * status_doc.c - the one typed status document that `stepq migrate status
 * --json`, GET /health/redis-migration and the console's feed all print
 * (docs/http.md describes it field by field).
 *
 * stepq_status() returns Redis's records nearly as stored: hash fields come
 * back as text or whole numbers, flags as 0/1, the phase as an object. The
 * verdict (http_health_verdict) reads that raw form, so a rule added there
 * needs no change here; this file then turns the raw form into the typed
 * one: status, healthy and reasons first, the phase flat, numbers as
 * numbers, flags as booleans, and every time as milliseconds since the
 * epoch with an ISO 8601 twin named FIELD_iso.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http.h"
#include "status_doc.h"

long long status_wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

json_t *status_iso(long long ms)
{
    char buf[40];
    struct tm tm;
    time_t t = (time_t)(ms / 1000);

    if (ms <= 0 || gmtime_r(&t, &tm) == NULL)
        return json_null();
    size_t n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, sizeof(buf) - n, ".%03dZ", (int)(ms % 1000));
    return json_string(buf);
}

/* The fields that hold a time in ms since the epoch. */
static int is_time_field(const char *k)
{
    static const char *const t[] = {
        "since", "started_at", "finished_at",  "dual_write_since", "untrusted_since", "seen",
        "ts",    "checked_at", "last_read_ms", "heartbeat",        "reconciling"};

    for (size_t i = 0; i < sizeof(t) / sizeof(*t); i++) {
        if (strcmp(k, t[i]) == 0)
            return 1;
    }
    return 0;
}

/* The fields that are flags (stored 0/1). */
static int is_flag_field(const char *k)
{
    static const char *const f[] = {"clean", "reverse", "verified", "paused", "force"};

    for (size_t i = 0; i < sizeof(f) / sizeof(*f); i++) {
        if (strcmp(k, f[i]) == 0)
            return 1;
    }
    return 0;
}

/* A raw value as a number when it is one (text "12" or "2.5"), else itself:
 * a new reference. */
static json_t *typed_value(json_t *v)
{
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        char *end;
        if (*s != '\0') {
            long long n = strtoll(s, &end, 10);
            if (*end == '\0')
                return json_integer(n);
            double d = strtod(s, &end);
            if (*end == '\0')
                return json_real(d);
        }
    }
    return json_incref(v);
}

long long status_num(const json_t *v)
{
    if (json_is_integer(v))
        return json_integer_value(v);
    if (json_is_real(v))
        return (long long)json_real_value(v);
    if (json_is_true(v))
        return 1;
    return 0;
}

/* A record (a hash of stepq's) typed: numbers, flags as booleans, times with
 * their ISO twin. A new object. */
json_t *status_typed_record(const json_t *raw)
{
    json_t *o = json_object(), *v;
    const char *k;

    json_object_foreach((json_t *)raw, k, v)
    {
        json_t *t = typed_value(v);
        if (is_flag_field(k) && (json_is_integer(t) || json_is_boolean(t))) {
            json_t *b = json_boolean(status_num(t) != 0);
            json_decref(t);
            t = b;
        }
        json_object_set_new(o, k, t);
        if (is_time_field(k) && json_is_integer(t)) {
            char name[64];
            snprintf(name, sizeof(name), "%s_iso", k);
            json_object_set_new(o, name, status_iso(json_integer_value(t)));
        }
    }
    return o;
}

/* The phase record, flat at the top of the document. */
static void put_phase(json_t *doc, const json_t *raw_phase)
{
    json_t *ph = status_typed_record(raw_phase);
    const char *pin = json_string_value(json_object_get(raw_phase, "pin"));
    static const char *const times[] = {"dual_write_since", "untrusted_since", "reconciling"};

    json_object_set(doc, "phase", json_object_get(ph, "phase"));
    json_object_set_new(doc, "pin",
                        pin == NULL || strcmp(pin, "none") == 0 ? json_null() : json_string(pin));
    long long since = status_num(json_object_get(ph, "since"));
    json_object_set_new(doc, "phase_since", since > 0 ? json_integer(since) : json_null());
    json_object_set_new(doc, "phase_since_iso", status_iso(since));
    json_object_set_new(doc, "phase_seq", json_integer(status_num(json_object_get(ph, "seq"))));
    for (size_t i = 0; i < sizeof(times) / sizeof(*times); i++) {
        long long ms = status_num(json_object_get(ph, times[i]));
        char name[64];
        json_object_set_new(doc, times[i], ms > 0 ? json_integer(ms) : json_null());
        snprintf(name, sizeof(name), "%s_iso", times[i]);
        json_object_set_new(doc, name, status_iso(ms));
    }
    json_object_set_new(doc, "misses_at_since",
                        json_integer(status_num(json_object_get(ph, "misses_at_since"))));
    /* Fields added to the phase record later (a state of the engine's)
     * appear as phase_FIELD rather than vanish. */
    const char *k;
    json_t *v;
    json_object_foreach(ph, k, v)
    {
        static const char *const known[] = {"phase", "since", "since_iso",
                                            "seq",   "pin",   "misses_at_since"};
        int skip = 0;
        for (size_t i = 0; i < sizeof(times) / sizeof(*times); i++)
            skip |= strncmp(k, times[i], strlen(times[i])) == 0;
        for (size_t i = 0; i < sizeof(known) / sizeof(*known); i++)
            skip |= strcmp(k, known[i]) == 0;
        if (!skip) {
            char name[96];
            snprintf(name, sizeof(name), "phase_%s", k);
            json_object_set(doc, name, v);
        }
    }
    json_decref(ph);
}

/* The backfill record with its progress: percent of one unit (keys) for
 * done and total, capped at 100 and exactly 100 once done, the average
 * rate since it started and, while it runs, an estimate of the time left. */
static json_t *backfill_record(const json_t *raw, long long now)
{
    json_t *b = status_typed_record(raw);
    const char *state = json_string_value(json_object_get(b, "state"));
    long long done = status_num(json_object_get(b, "keys_done"));
    long long total = status_num(json_object_get(b, "keys_total"));
    long long started = status_num(json_object_get(b, "started_at"));
    long long finished = status_num(json_object_get(b, "finished_at"));
    int running = state != NULL && strcmp(state, "running") == 0;

    if (state == NULL)
        return b; /* never ran: an empty object */
    /* keys_total is an estimate taken before the walk: once the walk is
     * done, done is the total; before, the total is never below done. */
    json_object_set_new(b, "keys_total_estimate", json_integer(total));
    if (total < done || strcmp(state, "done") == 0)
        total = done;
    json_object_set_new(b, "keys_total", json_integer(total));
    double pct = strcmp(state, "done") == 0 ? 100.0 : total > 0 ? 100.0 * done / total : 0.0;
    json_object_set_new(b, "percent", json_real(pct > 100.0 ? 100.0 : pct));
    long long end = running ? now : finished;
    double rate = started > 0 && end > started ? done * 1000.0 / (double)(end - started) : 0.0;
    json_object_set_new(b, "rate_per_s", json_real(rate));
    json_object_set_new(b, "eta_ms",
                        running && rate > 0
                            ? json_integer((long long)((total - done) * 1000.0 / rate))
                            : json_null());
    return b;
}

/* The throttle: paused as a boolean (false when never set), rate as a
 * number or null (no override). */
json_t *status_throttle_record(const json_t *raw)
{
    json_t *t = status_typed_record(raw);

    if (!json_is_boolean(json_object_get(t, "paused")))
        json_object_set_new(t, "paused", json_false());
    if (!json_is_number(json_object_get(t, "rate")))
        json_object_set_new(t, "rate", json_null());
    return t;
}

/* A live process: its pin (null when it follows the stored phase). */
static json_t *process_record(const json_t *raw)
{
    json_t *p = status_typed_record(raw);
    const char *ph = json_string_value(json_object_get(p, "phase"));

    json_object_set_new(p, "pin",
                        ph == NULL || strcmp(ph, "stored") == 0 ? json_null() : json_string(ph));
    json_object_del(p, "phase");
    return p;
}

static json_t *map_array(const json_t *raw, json_t *(*fn)(const json_t *))
{
    json_t *a = json_array(), *v;
    size_t i;

    json_array_foreach(raw, i, v)
    {
        json_array_append_new(a, json_is_object(v) ? fn(v) : json_incref(v));
    }
    return a;
}

json_t *status_doc_from_raw(const json_t *raw, json_t *reasons, long long now)
{
    json_t *doc = json_object();
    int healthy = json_array_size(reasons) == 0;

    if (doc == NULL)
        return NULL;
    json_object_set_new(doc, "status", json_string(healthy ? "healthy" : "unhealthy"));
    json_object_set_new(doc, "healthy", json_boolean(healthy));
    json_object_set(doc, "reasons", reasons);
    put_phase(doc, json_object_get(raw, "phase"));
    json_object_set_new(doc, "checked_at", json_integer(now));
    json_object_set_new(doc, "checked_at_iso", status_iso(now));
    json_object_set_new(doc, "cache_ms", json_integer(HTTP_HEALTH_CACHE_MS));
    json_object_set(doc, "keys", json_object_get(raw, "keys"));
    /* Keys a cut restore left partly written (docs/backup.md). */
    json_object_set(doc, "restoring", json_object_get(raw, "restoring"));
    json_t *counters = status_typed_record(json_object_get(raw, "counters"));
    /* The counters the runbook watches are there from the start, at 0. */
    static const char *const watched[] = {"fallback_reads", "lazy_migrations", "primary_misses"};
    for (size_t i = 0; i < sizeof(watched) / sizeof(*watched); i++) {
        if (!json_is_number(json_object_get(counters, watched[i])))
            json_object_set_new(counters, watched[i], json_integer(0));
    }
    json_object_set_new(doc, "counters", counters);
    json_object_set_new(doc, "backfill", backfill_record(json_object_get(raw, "backfill"), now));
    json_object_set_new(doc, "verify", status_typed_record(json_object_get(raw, "verify")));
    json_object_set_new(doc, "backup", status_typed_record(json_object_get(raw, "backup")));
    json_object_set_new(doc, "throttle", status_throttle_record(json_object_get(raw, "throttle")));
    json_object_set_new(doc, "processes",
                        map_array(json_object_get(raw, "processes"), process_record));
    json_object_set_new(doc, "audit",
                        map_array(json_object_get(raw, "audit"), status_typed_record));
    return doc;
}

int status_doc_build(stepq *q, json_t **ret_doc)
{
    char *json = NULL;
    json_t *raw, *reasons, *doc;
    long long now = status_wall_ms();

    if (stepq_status(q, &json) != STEPQ_OK) {
        *ret_doc =
            json_pack("{s:s, s:b, s:[s], s:o, s:o, s:I, s:o}", "status", "unavailable", "healthy",
                      0, "reasons", stepq_errstr(q), "phase", json_null(), "pin", json_null(),
                      "checked_at", (json_int_t)now, "checked_at_iso", status_iso(now));
        return 503;
    }
    raw = json_loads(json, 0, NULL);
    stepq_str_free(json);
    reasons = raw ? http_health_verdict(raw) : NULL;
    doc = reasons ? status_doc_from_raw(raw, reasons, now) : NULL;
    json_decref(reasons);
    json_decref(raw);
    *ret_doc = doc;
    if (doc == NULL)
        return 500;
    return json_is_true(json_object_get(doc, "healthy")) ? 200 : 503;
}
