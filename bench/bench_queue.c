/*
 * bench_queue.c - the queue's lifecycle (submit, claim, complete) in steps/s,
 * stepq in phase job and dual-write beside a minimal baseline that sends the
 * same Redis commands with no phase logic, no scripts and no events.
 *
 * Every client is a process with its own connection. Each does, until its
 * share of steps is done: submit a batch of 50 steps, claim up to 50,
 * complete them: one round trip each (stepq_submit_many, stepq_claim,
 * stepq_complete_many; the baseline pipelines its commands the same way).
 * Both sides make the same round trips; only what runs inside Redis differs.
 *
 * The baseline claims with ZPOPMAX (atomic, but no capability match and
 * last-in-first-out within a priority): it is the floor of what any queue on
 * this layout must pay, not a queue with stepq's guarantees.
 *
 * usage: bench_queue URL STEPS
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <hiredis/hiredis.h>

#include "stepq.h"

#define BATCH 50

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const char *url;

static redisContext *raw(void)
{
    char path[512];
    int db = 0;
    redisContext *c;
    if (sscanf(url, "unix://%511[^?]?db=%d", path, &db) >= 1) {
        c = redisConnectUnix(path);
    } else {
        char host[256];
        int port = 6379;
        if (sscanf(url, "redis://%255[^:/]:%d/%d", host, &port, &db) < 1) {
            fprintf(stderr, "bench_queue takes redis://host:port/db or unix:///sock?db=N\n");
            exit(2);
        }
        c = redisConnect(host, port);
    }
    if (c == NULL || c->err) {
        fprintf(stderr, "cannot connect\n");
        exit(1);
    }
    freeReplyObject(redisCommand(c, "SELECT %d", db));
    return c;
}

static void drain(redisContext *c, int n)
{
    for (int i = 0; i < n; i++) {
        void *r;
        if (redisGetReply(c, &r) != REDIS_OK) {
            fprintf(stderr, "baseline: lost connection\n");
            exit(1);
        }
        freeReplyObject(r);
    }
}

/* ---- the baseline: plain commands, one round trip per operation ---- */
static void baseline_client(int n, int steps)
{
    redisContext *c = raw();
    char w[32];
    int done = 0, submitted = 0, seq = 0;

    snprintf(w, sizeof(w), "b%d", n);
    while (done < steps) {
        int batch = 0;
        for (; batch < BATCH && submitted < steps; batch++, submitted++) {
            char id[64];
            snprintf(id, sizeof(id), "%d-%d", n, seq++);
            redisAppendCommand(c, "MULTI");
            redisAppendCommand(c,
                               "HSET job:%s id %s type bench priority 1 status pending requires %s"
                               " max_attempts 3 attempts 0 payload {} created_at 1 updated_at 1",
                               id, id, "");
            redisAppendCommand(c, "ZADD jobs:pending 1 %s", id);
            redisAppendCommand(c, "EXEC");
        }
        drain(c, 4 * batch);
        redisReply *r = redisCommand(c, "ZPOPMAX jobs:pending %d", BATCH);
        size_t got = r->elements / 2;
        for (size_t i = 0; i < got; i++) {
            const char *id = r->element[2 * i]->str;
            redisAppendCommand(c, "HSET job:%s status active worker %s token t claimed_at 2", id,
                               w);
            redisAppendCommand(c, "HINCRBY job:%s attempts 1", id);
            redisAppendCommand(c, "SADD jobs:active %s", id);
            redisAppendCommand(c, "SADD worker:%s:jobs %s", w, id);
        }
        drain(c, (int)got * 4);
        for (size_t i = 0; i < got; i++) {
            const char *id = r->element[2 * i]->str;
            redisAppendCommand(c, "MULTI");
            redisAppendCommand(c, "HSET job:%s status completed result ok finished_at 3", id);
            redisAppendCommand(c, "SREM jobs:active %s", id);
            redisAppendCommand(c, "SREM worker:%s:jobs %s", w, id);
            redisAppendCommand(c, "SADD jobs:completed %s", id);
            redisAppendCommand(c, "PEXPIRE jobs:completed 604800000");
            redisAppendCommand(c, "PEXPIRE job:%s 604800000", id);
            redisAppendCommand(c, "EXEC");
        }
        drain(c, (int)got * 8);
        done += (int)got;
        freeReplyObject(r);
    }
    redisFree(c);
}

/* ---- stepq: the library's calls, one round trip each ---- */
static void stepq_client(int n, int steps)
{
    stepq_options o = {.ignore_env_pin = 1};
    stepq *q = stepq_connect(url, &o);
    char w[32];
    int done = 0, submitted = 0;

    if (stepq_err(q)) {
        fprintf(stderr, "stepq: %s\n", stepq_errstr(q));
        exit(1);
    }
    snprintf(w, sizeof(w), "s%d", n);
    while (done < steps) {
        int batch = steps - submitted < BATCH ? steps - submitted : BATCH;
        if (batch > 0) {
            stepq_submit_opts so[BATCH];
            char ids[BATCH][STEPQ_ID_MAX];
            for (int i = 0; i < batch; i++)
                so[i] = (stepq_submit_opts){.type = "bench", .priority = 1};
            if (stepq_submit_many(q, so, (size_t)batch, ids) != STEPQ_OK) {
                fprintf(stderr, "submit: %s\n", stepq_errstr(q));
                exit(1);
            }
            submitted += batch;
        }
        char *json;
        if (stepq_claim(q, w, NULL, 0, BATCH, &json) != STEPQ_OK)
            continue; /* another client took them: submit more */
        /* Pull "id" and "token" pairs out of the array. */
        static char sids[BATCH][64], toks[BATCH][64];
        stepq_ack acks[BATCH];
        size_t n_ack = 0;
        for (char *p = json; n_ack < BATCH && (p = strstr(p, "\"id\":\"")) != NULL;) {
            p += 6;
            snprintf(sids[n_ack], sizeof(sids[0]), "%.*s", (int)strcspn(p, "\""), p);
            char *t = strstr(p, "\"token\":\"") + 9;
            snprintf(toks[n_ack], sizeof(toks[0]), "%.*s", (int)strcspn(t, "\""), t);
            acks[n_ack] = (stepq_ack){.id = sids[n_ack], .token = toks[n_ack], .result = "ok"};
            n_ack++;
        }
        stepq_str_free(json);
        if (stepq_complete_many(q, acks, n_ack) != STEPQ_OK) {
            fprintf(stderr, "complete: %s\n", stepq_errstr(q));
            exit(1);
        }
        done += (int)n_ack;
    }
    stepq_free(q);
}

/* Redis's own CPU seconds (user + sys), from INFO cpu. */
static double redis_cpu(redisContext *c)
{
    redisReply *r = redisCommand(c, "INFO cpu");
    double u = 0, sy = 0;
    const char *p = strstr(r->str, "used_cpu_sys:");
    if (p)
        sy = strtod(p + 13, NULL);
    p = strstr(r->str, "used_cpu_user:");
    if (p)
        u = strtod(p + 14, NULL);
    freeReplyObject(r);
    return u + sy;
}

static double last_cpu_us; /* Redis CPU per step of the last run */

static double run(void (*client)(int, int), const char *phase, int steps, int clients)
{
    redisContext *c = raw();
    freeReplyObject(redisCommand(c, "FLUSHDB"));
    if (phase != NULL)
        freeReplyObject(redisCommand(c, "HSET stepq:phase phase %s", phase));
    double cpu0 = redis_cpu(c);
    double t0 = now_s();
    pid_t pids[64];
    for (int i = 0; i < clients; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            client(i, steps / clients);
            _exit(0);
        }
    }
    int ok = 1;
    for (int i = 0; i < clients; i++) {
        int st;
        waitpid(pids[i], &st, 0);
        ok &= WIFEXITED(st) && WEXITSTATUS(st) == 0;
    }
    double el = now_s() - t0;
    last_cpu_us = (redis_cpu(c) - cpu0) * 1e6 / steps;
    redisReply *r = redisCommand(c, "SCARD %s", phase && strcmp(phase, "step") == 0
                                                      ? "steps:completed"
                                                      : "jobs:completed");
    long long completed = r->integer;
    freeReplyObject(r);
    redisFree(c);
    if (!ok || completed != (steps / clients) * clients) {
        fprintf(stderr, "run failed: %lld completed of %d\n", completed, steps);
        exit(1);
    }
    return (double)completed / el;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench_queue URL STEPS\n");
        return 2;
    }
    url = argv[1];
    int steps = atoi(argv[2]);
    int cl[2] = {1, 8};

    printf("%-34s %8s %12s %10s %14s\n", "lifecycle (submit+claim+complete)", "clients", "steps/s",
           "ratio", "redis us/step");
    for (int k = 0; k < 2; k++) {
        double base = run(baseline_client, NULL, steps, cl[k]), base_cpu = last_cpu_us;
        double job = run(stepq_client, "job", steps, cl[k]), job_cpu = last_cpu_us;
        double dual = run(stepq_client, "dual-write", steps, cl[k]), dual_cpu = last_cpu_us;
        printf("%-34s %8d %12.0f %10s %14.1f\n", "baseline (plain commands)", cl[k], base, "1.00",
               base_cpu);
        printf("%-34s %8d %12.0f %9.2fx %14.1f  (target >= 0.70 with 8 clients)\n",
               "stepq, phase job", cl[k], job, job / base, job_cpu);
        printf("%-34s %8d %12.0f %9.2fx %14.1f  time per step vs job (target <= 1.50)\n",
               "stepq, phase dual-write", cl[k], dual, job / dual, dual_cpu);
    }
    return 0;
}
