/*
 * pace.c - keeping a bulk walk (backfill, verify, cleanup) gentle on a live
 * Redis: a rate limit (token bucket), a pause switch and a rate override an
 * operator can flip while the walk runs (the throttle hash, re-read twice a
 * second), a latency probe that backs off while Redis answers slowly, and a
 * replica-lag check.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "stepq_private.h"

#define THROTTLE_EVERY_MS 500
#define PROBE_EVERY_MS    200
#define BACKOFF_MS        50

long long (*stepq__pace_clock)(void);

static long long mono_ms(void)
{
    struct timespec ts;

    if (stepq__pace_clock != NULL)
        return stepq__pace_clock();
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

void stepq__pace_init(stepq__pace *p, stepq *q, double rate, long max_latency_ms,
                      long max_replica_lag)
{
    memset(p, 0, sizeof(*p));
    p->q = q;
    p->base_rate = rate;
    p->rate = rate;
    p->max_latency_ms = max_latency_ms;
    p->max_replica_lag = max_replica_lag;
    p->last_ms = mono_ms();
}

/* Re-reads the throttle hash: `paused` (1/0) and `rate` (keys/s, 0 = none;
 * absent = the rate given on the command line). */
static int read_throttle(stepq__pace *p)
{
    redisReply *r = stepq__commandf(p->q, "HMGET %bstepq:throttle paused rate", p->q->km.ns,
                                    strlen(p->q->km.ns));

    if (r == NULL)
        return STEPQ_ERR;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
        p->paused =
            r->element[0]->type == REDIS_REPLY_STRING && strcmp(r->element[0]->str, "1") == 0;
        p->rate = p->base_rate;
        if (r->element[1]->type == REDIS_REPLY_STRING) {
            /* Written by 'stepq migrate throttle'; anything else is not ours. */
            char *end;
            double v = strtod(r->element[1]->str, &end);
            if (end == r->element[1]->str || *end != '\0' || !(v >= 0)) {
                stepq__set_error(p->q, STEPQ_E_PROTOCOL,
                                 "stepq:throttle rate is not a rate; set it again with 'stepq "
                                 "migrate throttle'");
                freeReplyObject(r);
                return STEPQ_ERR;
            }
            p->rate = v;
        }
    }
    freeReplyObject(r);
    return STEPQ_OK;
}

/* The round trip of a PING, in ms. */
static long probe_ms(stepq__pace *p)
{
    long long t0 = mono_ms();
    redisReply *r = stepq__commandf(p->q, "PING");

    if (r == NULL)
        return -1;
    freeReplyObject(r);
    return (long)(mono_ms() - t0);
}

/* The largest `lag=` (seconds since the replica's last ack) among online
 * replicas, 0 with none. */
static long replica_lag(stepq__pace *p)
{
    redisReply *r = stepq__commandf(p->q, "INFO replication");
    long worst = 0;

    if (r == NULL)
        return -1;
    for (const char *s = r->type == REDIS_REPLY_STRING ? r->str : NULL;
         s && (s = strstr(s, ",lag=")) != NULL; s += 5) {
        long long lag;
        if (stepq__parse_ll(p->q, s + 5, strcspn(s + 5, ",\r\n"), "INFO replication (lag)", &lag) !=
            STEPQ_OK) {
            worst = -1;
            break;
        }
        if (lag > worst)
            worst = (long)lag;
    }
    freeReplyObject(r);
    return worst;
}

/* Waits until the pause is lifted and Redis is responsive enough. */
static int wait_conditions(stepq__pace *p, long long now)
{
    for (;;) {
        if (now - p->throttle_ms >= THROTTLE_EVERY_MS || p->paused) {
            if (read_throttle(p) != STEPQ_OK)
                return STEPQ_ERR;
            p->throttle_ms = now;
        }
        int slow = 0;
        if (!p->paused && p->max_latency_ms > 0 && now - p->probe_ms >= PROBE_EVERY_MS) {
            long rtt = probe_ms(p);
            if (rtt < 0)
                return STEPQ_ERR;
            p->probe_ms = now;
            slow = rtt > p->max_latency_ms;
        }
        /* As often as the latency probe: a walk drains its pipeline first. */
        if (!p->paused && !slow && p->max_replica_lag > 0 && now - p->lag_ms >= PROBE_EVERY_MS) {
            long lag = replica_lag(p);
            if (lag < 0)
                return STEPQ_ERR;
            p->lag_ms = now;
            slow = lag > p->max_replica_lag;
        }
        if (!p->paused && !slow)
            return STEPQ_OK;
        p->backoffs++;
        nap_ms(p->paused ? THROTTLE_EVERY_MS : BACKOFF_MS);
        now = mono_ms();
        p->probe_ms = 0; /* probe again right after a back-off */
        p->lag_ms = 0;
    }
}

int stepq__pace_io_due(const stepq__pace *p)
{
    long long now = mono_ms();

    return p->paused || now - p->throttle_ms >= THROTTLE_EVERY_MS ||
           (p->max_latency_ms > 0 && now - p->probe_ms >= PROBE_EVERY_MS) ||
           (p->max_replica_lag > 0 && now - p->lag_ms >= PROBE_EVERY_MS);
}

int stepq__pace_wait(stepq__pace *p, long n)
{
    return stepq__pace_wait_io(p, n, 1);
}

int stepq__pace_wait_io(stepq__pace *p, long n, int io)
{
    long long now = mono_ms();

    /* Without io the checks wait for a later call: the caller's pipe holds
     * replies a command sent now would be read in place of (the clock
     * moves on between stepq__pace_io_due and here). */
    if (io && wait_conditions(p, now) != STEPQ_OK)
        return STEPQ_ERR;
    if (p->rate <= 0)
        return STEPQ_OK;
    /* Token bucket with a one-second burst: n keys cost n tokens. */
    now = mono_ms();
    p->tokens += (double)(now - p->last_ms) * p->rate / 1000.0;
    if (p->tokens > p->rate)
        p->tokens = p->rate;
    p->last_ms = now;
    p->tokens -= (double)n;
    if (p->tokens < 0) {
        long ms = (long)(-p->tokens * 1000.0 / p->rate) + 1;
        nap_ms(ms);
        p->tokens += (double)ms * p->rate / 1000.0;
        p->last_ms = mono_ms();
    }
    return STEPQ_OK;
}

/* ---------------------------------------------------------------------------
 * The operator's switch (stepq migrate throttle)
 * ------------------------------------------------------------------------- */

int stepq_throttle(stepq *q, int paused, double rate)
{
    sds key = sdscatfmt(sdsempty(), "%sstepq:throttle", q->km.ns);
    char p[4], rs[32];
    redisReply *r = NULL;
    int rc = STEPQ_ERR;

    stepq__clear_error(q);
    if (key == NULL) {
        stepq__set_error(q, STEPQ_E_OOM, "out of memory");
        return STEPQ_ERR;
    }
    /* Checked before anything is written: a bad rate changes nothing. */
    if (paused < -1 || paused > 1 || !(rate >= 0 || rate == -1 || rate == -2) || rate > 1e12) {
        stepq__set_error(q, STEPQ_E_INVALID,
                         "invalid throttle (paused %d, rate %g); paused is 1, 0 or -1 (leave "
                         "it), rate is keys/s >= 0, -1 (leave it) or -2 (clear the override)",
                         paused, rate);
        goto out;
    }
    if (paused >= 0) {
        snprintf(p, sizeof(p), "%d", paused);
        if ((r = stepq__commandf(q, "HSET %b paused %s", key, sdslen(key), p)) == NULL)
            goto out;
        freeReplyObject(r);
        r = NULL;
    }
    if (rate >= 0) {
        snprintf(rs, sizeof(rs), "%.3f", rate);
        r = stepq__commandf(q, "HSET %b rate %s", key, sdslen(key), rs);
    } else if (rate == -2) {
        r = stepq__commandf(q, "HDEL %b rate", key, sdslen(key));
    }
    if (rate != -1 && r == NULL)
        goto out;
    freeReplyObject(r);
    rc = STEPQ_OK;
out:
    sdsfree(key);
    return rc;
}

int stepq_throttle_paused(stepq *q, int *ret_paused)
{
    stepq__clear_error(q);
    redisReply *r = stepq__commandf(q, "HGET %sstepq:throttle paused", q->km.ns);

    if (r == NULL)
        return STEPQ_ERR;
    *ret_paused = r->type == REDIS_REPLY_STRING && strcmp(r->str, "1") == 0;
    freeReplyObject(r);
    return STEPQ_OK;
}
