/*
 * bench_queue.c - the queue's lifecycle (submit, claim, complete) in steps/s,
 * stepq in phase job and dual-write beside two baselines that send plain
 * commands, with no scripts and no phase logic.
 *
 * Every client is a process with its own connection. Each does, until its
 * share of steps is done: submit a batch of 50 steps, claim up to 50,
 * complete them (stepq_submit_many, stepq_claim, stepq_complete_many: one
 * round trip each; the baselines pipeline their commands per batch).
 *
 * The baselines take steps with ZPOPMAX (atomic, so that clients do not
 * share steps, but with no capability match and no token check):
 *  - "same commands" sends what stepq's scripts send in phase job (the
 *    issue's baseline: the same Redis commands without phase logic): the
 *    writes, the events (PUBLISH), the claim's reads (the top score, a page
 *    of it, each candidate's HMGET of status, requirements and attempts, the
 *    next score; its ZPOPMAX stands for the script's ZREM of the page), the
 *    read of each claimed step for its worker (HGETALL), the token read
 *    before a complete (HMGET), the progress TTL, the heartbeat and the idle
 *    check;
 *  - "data only" sends only the writes of the data, no events and no reads,
 *    with short ids (the baseline of the first bench, kept for comparison):
 *    the floor of any queue on this layout, shown for reference.
 *
 * usage: bench_queue URL STEPS
 *        bench_queue URL STEPS CONTENDER CLIENTS   one run of one contender
 *        (same, data, job, dual-write), for bench/callgrind.sh
 *        bench_queue URL STEPS cluster NS[,NS...] CLIENTS   on a Redis Cluster
 *        (URL any node): CLIENTS stepq clients per namespace, STEPS in all,
 *        phase job; prints steps/s and the Redis CPU per step of each master
 *        (INFO cpu before and after) and of all of them (bench/run-cluster.sh).
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

/* ---- "same commands": what stepq's scripts send in phase job ---- */

/* An event as the scripts build it. */
static void event(redisContext *c, const char *type, const char *id, const char *extra, int seq)
{
    redisAppendCommand(c,
                       "PUBLISH job_events {\"type\":\"%s\",\"step\":\"%s\"%s,\"id\":"
                       "\"b.%d\",\"ts\":1795967405379,\"phase\":\"job\"}",
                       type, id, extra, seq);
}

static void same_commands_client(int n, int steps)
{
    redisContext *c = raw();
    char w[32], wjobs[48], extra[64];
    int done = 0, submitted = 0, seq = 0, ev = 0;

    snprintf(w, sizeof(w), "b%d", n);
    snprintf(wjobs, sizeof(wjobs), "worker:%s:jobs", w);
    snprintf(extra, sizeof(extra), ",\"worker\":\"%s\"", w);
    while (done < steps) {
        int batch = 0;
        const char *zadd[2 + 2 * BATCH];
        char ids[BATCH][64];
        zadd[0] = "ZADD";
        zadd[1] = "jobs:pending";
        for (; batch < BATCH && submitted < steps; batch++, submitted++) {
            char *id = ids[batch]; /* as long as stepq's UUIDv7 ids */
            snprintf(id, 64, "%08x-0000-7000-8000-%012x", (unsigned)n, (unsigned)seq++);
            redisAppendCommand(c,
                               "HSET job:%s id %s type bench priority 1 status pending requires %s"
                               " max_attempts 3 attempts 0 payload {} created_at 1 updated_at 1",
                               id, id, "");
            event(c, "submitted", id, ",\"step_type\":\"bench\",\"priority\":1", ev++);
            zadd[2 + 2 * batch] = "1";
            zadd[3 + 2 * batch] = id;
        }
        if (batch > 0) {
            redisAppendCommandArgv(c, 2 + 2 * batch, zadd, NULL);
            drain(c, 2 * batch + 1);
        }
        /* The claim's reads: the top score, a page of it, and each
         * candidate's status, requirements and attempts (capability match,
         * attempt count). ZPOPMAX stands for the ZREM of the claimed page:
         * the same removal, and atomic, so that clients do not share steps. */
        redisAppendCommand(c, "ZREVRANGE jobs:pending 0 0 WITHSCORES");
        redisAppendCommand(c, "ZRANGEBYSCORE jobs:pending 1 1 LIMIT 0 %d", BATCH);
        redisAppendCommand(c, "ZPOPMAX jobs:pending %d", BATCH);
        redisAppendCommand(c, "ZREVRANGEBYSCORE jobs:pending (1 -inf WITHSCORES LIMIT 0 1");
        redisReply *r;
        drain(c, 2);
        if (redisGetReply(c, (void **)&r) != REDIS_OK) {
            fprintf(stderr, "same commands: %s\n", c->errstr);
            exit(1);
        }
        drain(c, 1);
        size_t got = r->elements / 2;
        for (size_t i = 0; i < got; i++)
            redisAppendCommand(c, "HMGET job:%s status requires attempts", r->element[2 * i]->str);
        const char *active[2 + BATCH], *held[2 + BATCH];
        active[0] = held[0] = "SADD";
        active[1] = "jobs:active";
        held[1] = wjobs;
        for (size_t i = 0; i < got; i++) {
            const char *id = r->element[2 * i]->str;
            redisAppendCommand(c, "HGETALL job:%s", id);
            redisAppendCommand(c,
                               "HSET job:%s status active worker %s token t claimed_at 2"
                               " updated_at 2 attempts 1",
                               id, w);
            event(c, "claimed", id, extra, ev++);
            active[2 + i] = held[2 + i] = id;
        }
        if (got > 0) {
            redisAppendCommandArgv(c, 2 + (int)got, active, NULL);
            redisAppendCommandArgv(c, 2 + (int)got, held, NULL);
            redisAppendCommand(c, "SET worker:%s:heartbeat 2 PX 30000", w);
            redisAppendCommand(c, "SREM workers:idle %s", w);
            drain(c, 4 * (int)got + 4);
        }
        const char *unactive[2 + BATCH], *completed[2 + BATCH], *unheld[2 + BATCH];
        unactive[0] = unheld[0] = "SREM";
        completed[0] = "SADD";
        unactive[1] = "jobs:active";
        completed[1] = "jobs:completed";
        unheld[1] = wjobs;
        for (size_t i = 0; i < got; i++) {
            const char *id = r->element[2 * i]->str;
            redisAppendCommand(c, "HMGET job:%s status token worker", id);
            redisAppendCommand(
                c, "HSET job:%s status completed result ok updated_at 3 finished_at 3", id);
            redisAppendCommand(c, "PEXPIRE job:%s 604800000", id);
            redisAppendCommand(c, "PEXPIRE job:%s:progress 604800000", id);
            event(c, "completed", id, extra, ev++);
            unactive[2 + i] = completed[2 + i] = unheld[2 + i] = id;
        }
        if (got > 0) {
            redisAppendCommandArgv(c, 2 + (int)got, unactive, NULL);
            redisAppendCommandArgv(c, 2 + (int)got, completed, NULL);
            redisAppendCommandArgv(c, 2 + (int)got, unheld, NULL);
            redisAppendCommand(c, "SCARD %s", wjobs);
            redisAppendCommand(c, "PEXPIRE jobs:completed 604800000");
            drain(c, 5 * (int)got + 5);
        }
        done += (int)got;
        freeReplyObject(r);
    }
    redisFree(c);
}

/* ---- "data only": the writes of the data, pipelined per batch ---- */
static void data_only_client(int n, int steps)
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
static const char *client_ns[64]; /* client n's namespace (the cluster runs); NULL: none */

static void stepq_client(int n, int steps)
{
    stepq_options o = {.ignore_env_pin = 1, .namespace_ = client_ns[n]};
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
        if (stepq_claim(q, w, NULL, 0, BATCH, &json) != STEPQ_OK) {
            /* Other clients took them. With all of ours submitted, nothing
             * is left for us: the others complete what they took (looping
             * on would never end when they took more than their share). */
            if (submitted >= steps)
                break;
            continue; /* submit more */
        }
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

/* Runs client(i, steps / clients) in `clients` processes (at most 64);
 * returns 1 when every one exited 0. */
static int run_clients(void (*client)(int, int), int clients, int steps)
{
    pid_t pids[64];
    int ok = 1;

    for (int i = 0; i < clients; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            client(i, steps / clients);
            _exit(0);
        }
    }
    for (int i = 0; i < clients; i++) {
        int st;
        waitpid(pids[i], &st, 0);
        ok &= WIFEXITED(st) && WEXITSTATUS(st) == 0;
    }
    return ok;
}

static double run(void (*client)(int, int), const char *phase, int steps, int clients)
{
    redisContext *c = raw();
    freeReplyObject(redisCommand(c, "FLUSHDB"));
    if (phase != NULL)
        freeReplyObject(redisCommand(c, "HSET stepq:phase phase %s", phase));
    double cpu0 = redis_cpu(c);
    double t0 = now_s();
    int ok = run_clients(client, clients, steps);
    double el = now_s() - t0;
    last_cpu_us = (redis_cpu(c) - cpu0) * 1e6 / steps;
    redisReply *r = redisCommand(
        c, "SCARD %s", phase && strcmp(phase, "step") == 0 ? "steps:completed" : "jobs:completed");
    long long completed = r->integer;
    freeReplyObject(r);
    redisFree(c);
    if (!ok || completed != (steps / clients) * clients) {
        fprintf(stderr, "run failed: %lld completed of %d\n", completed, steps);
        exit(1);
    }
    return (double)completed / el;
}

/* ---- a cluster: namespaces on masters ---- */
#define MASTERS_MAX 16

struct master {
    char host[64];
    int port;
    redisContext *c;
    double cpu0;
};

/* The masters of the cluster the URL's node belongs to (CLUSTER NODES). */
static int find_masters(struct master *m)
{
    redisContext *c = raw();
    redisReply *r = redisCommand(c, "CLUSTER NODES");
    int n = 0;

    for (char *line = r && r->type == REDIS_REPLY_STRING ? r->str : NULL; line && *line;) {
        char *end = strchr(line, '\n'), addr[128], flags[128];
        if (sscanf(line, "%*s %127s %127s", addr, flags) == 2 && strstr(flags, "master") &&
            !strstr(flags, "fail") && n < MASTERS_MAX &&
            sscanf(addr, "%63[^:]:%d", m[n].host, &m[n].port) == 2) {
            m[n].c = redisConnect(m[n].host, m[n].port);
            if (m[n].c && !m[n].c->err)
                n++;
        }
        line = end ? end + 1 : NULL;
    }
    freeReplyObject(r);
    redisFree(c);
    return n;
}

/* One run: `per` clients per namespace, `steps` in all, after FLUSHALL of
 * every master; prints one line and returns the steps per second. */
static double run_cluster(const char *list, int per, int steps)
{
    struct master m[MASTERS_MAX];
    char buf[1024], *nss[16];
    int nns = 0, nm = find_masters(m), clients = 0;

    snprintf(buf, sizeof(buf), "%s", list);
    for (char *t = buf; t != NULL && nns < 16;) {
        char *comma = strchr(t, ',');
        if (comma != NULL)
            *comma = '\0';
        nss[nns++] = t;
        t = comma ? comma + 1 : NULL;
    }
    for (int i = 0; i < nm; i++) {
        freeReplyObject(redisCommand(m[i].c, "FLUSHALL"));
        m[i].cpu0 = redis_cpu(m[i].c);
    }
    for (int i = 0; i < nns; i++)
        for (int j = 0; j < per && clients < 64; j++)
            client_ns[clients++] = nss[i];
    double t0 = now_s();
    int ok = run_clients(stepq_client, clients, steps);
    double el = now_s() - t0, total_us = 0;
    long long completed = 0;
    printf("%-34s %8d %12s", list, clients, "");
    for (int i = 0; i < nm; i++) {
        double us = (redis_cpu(m[i].c) - m[i].cpu0) * 1e6;
        total_us += us;
        printf("  %d:%.1f", m[i].port, us / steps);
        for (int k = 0; k < nns; k++) {
            /* Only the owner answers with a number (the others: MOVED). */
            redisReply *r = redisCommand(m[i].c, "SCARD %sjobs:completed", nss[k]);
            completed += r && r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
            freeReplyObject(r);
        }
        redisFree(m[i].c);
    }
    printf("\n");
    if (!ok || completed != (steps / clients) * clients) {
        fprintf(stderr, "run failed: %lld completed of %d\n", completed, steps);
        exit(1);
    }
    double rate = (double)completed / el;
    printf("%-34s %8d %12.0f %14.1f  (redis us/step: all masters)\n", "  =", clients, rate,
           total_us / steps);
    fflush(stdout);
    return rate;
}

int main(int argc, char **argv)
{
    if (argc == 6 && strcmp(argv[3], "cluster") == 0) {
        url = argv[1];
        run_cluster(argv[4], atoi(argv[5]), atoi(argv[2]));
        return 0;
    }
    if (argc != 3 && argc != 5) {
        fprintf(stderr, "usage: bench_queue URL STEPS [same|data|job|dual-write CLIENTS]\n");
        return 2;
    }
    url = argv[1];
    int steps = atoi(argv[2]);
    int cl[2] = {1, 8};

    if (argc == 5) {
        const char *who = argv[3];
        int n = atoi(argv[4]);
        double v = strcmp(who, "same") == 0   ? run(same_commands_client, NULL, steps, n)
                   : strcmp(who, "data") == 0 ? run(data_only_client, NULL, steps, n)
                                              : run(stepq_client, who, steps, n);
        printf("%s, %d client(s): %.0f steps/s, redis %.1f us/step\n", who, n, v, last_cpu_us);
        return 0;
    }

    /* Each row is the best of `rounds` runs, the contenders taking turns
     * (baselines, job, dual-write, again...): on a shared machine a run
     * can lose a few seconds to another process, and interleaving gives
     * every contender the same chances. */
    const char *rep = getenv("BENCH_ROUNDS");
    int rounds = rep ? atoi(rep) : 3;
    if (rounds < 1)
        rounds = 1;
    printf("%-34s %8s %12s %10s %14s  (best of %d runs each)\n",
           "lifecycle (submit+claim+complete)", "clients", "steps/s", "ratio", "redis us/step",
           rounds);
    for (int k = 0; k < 2; k++) {
        double best[4] = {0}, cpu[4] = {0};
        for (int r = 0; r < rounds; r++) {
            double v[4];
            v[0] = run(same_commands_client, NULL, steps, cl[k]);
            double c0 = last_cpu_us;
            v[1] = run(data_only_client, NULL, steps, cl[k]);
            double c1 = last_cpu_us;
            v[2] = run(stepq_client, "job", steps, cl[k]);
            double c2 = last_cpu_us;
            v[3] = run(stepq_client, "dual-write", steps, cl[k]);
            double c3 = last_cpu_us, c[4] = {c0, c1, c2, c3};
            for (int i = 0; i < 4; i++) {
                if (v[i] > best[i]) {
                    best[i] = v[i];
                    cpu[i] = c[i];
                }
            }
        }
        double same = best[0], floor = best[1], job = best[2], dual = best[3];
        printf("%-34s %8d %12.0f %10s %14.1f\n", "baseline: same commands, plain", cl[k], same,
               "1.00", cpu[0]);
        printf("%-34s %8d %12.0f %9.2fx %14.1f  (reference: the data writes alone)\n",
               "baseline: data only", cl[k], floor, floor / same, cpu[1]);
        printf("%-34s %8d %12.0f %9.2fx %14.1f  (target >= 0.70 with 8 clients; %.2fx of data "
               "only)\n",
               "stepq, phase job", cl[k], job, job / same, cpu[2], job / floor);
        printf("%-34s %8d %12.0f %9.2fx %14.1f  time per step vs job (target <= 1.50)\n",
               "stepq, phase dual-write", cl[k], dual, job / dual, cpu[3]);
    }
    return 0;
}
