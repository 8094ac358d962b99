/*
 * load_legacy.c - fills a Redis database with the seed's legacy layout, fast
 * (pipelined), for the migration benchmarks. Every contender migrates data
 * from this one generator, so their figures compare like with like.
 *
 * N steps job:{id} (hashes of the ten fields stepq's submit writes), in the
 * states 10% pending, 2% active, 80% completed, 8% failed; completed and
 * failed step hashes expire in 7 days. 20% of the steps have a
 * job:{id}:progress hash. The queue collections: jobs:pending (zset, score =
 * priority), jobs:active, jobs:completed and jobs:failed (sets, the last two
 * with a 7-day TTL). 50 workers: worker:{w} (capabilities hash),
 * worker:{w}:heartbeat, workers:active, and worker:{w}:jobs holding the
 * worker's active steps. Ids are UUID-shaped and fixed by the index, so a
 * reload gives the same keys.
 *
 * usage: load_legacy URL N
 * prints: steps=N progress=P keys=K (old keys of the key map) seconds=S
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "benchutil.h"

#define WORKERS 50
#define PIPE    2000
#define TTL_S   "604800"

static const char *const prog = "load_legacy";
static const char *const types[] = {"render", "transcode", "email", "report", "index"};

static void step_id(char *buf, size_t len, long i)
{
    snprintf(buf, len, "0190%04lx-%04lx-7%03lx-8%03lx-%012lx", (unsigned long)i >> 16 & 0xffff,
             (unsigned long)i & 0xffff, (unsigned long)i % 4096, (unsigned long)(i * 7) % 4096,
             (unsigned long)i * 2654435761UL % 0xffffffffffffUL);
}

struct loader {
    redisContext *c;
    long pending;       /* commands appended, replies not read */
    char busy[WORKERS]; /* the worker has a worker:{w}:jobs set */
};

static void sent(struct loader *l)
{
    if (++l->pending >= PIPE) {
        bench_drain(prog, l->c, l->pending);
        l->pending = 0;
    }
}

static const char *status_of(long i)
{
    long b = i % 100;

    return b < 10 ? "pending" : b < 12 ? "active" : b < 92 ? "completed" : "failed";
}

static void one_step(struct loader *l, long i)
{
    char id[64], key[80], prio[8], att[8], created[24], updated[24], payload[192];
    const char *st = status_of(i);
    long long t0 = 1717000000000LL + i * 37;

    step_id(id, sizeof(id), i);
    snprintf(key, sizeof(key), "job:%s", id);
    snprintf(prio, sizeof(prio), "%ld", i % 10);
    snprintf(att, sizeof(att), "%d", strcmp(st, "pending") == 0 ? 0 : 1 + (int)(i % 3 == 0));
    snprintf(created, sizeof(created), "%lld", t0);
    snprintf(updated, sizeof(updated), "%lld", t0 + 1500 + i % 60000);
    snprintf(payload, sizeof(payload),
             "{\"input\":\"s3://bucket/in/%ld.bin\",\"output\":\"s3://bucket/out/%ld\","
             "\"options\":{\"quality\":%ld,\"retry\":true}}",
             i, i, i % 100);
    const char *argv[] = {"HSET",         key,     "id",         id,     "type",     types[i % 5],
                          "priority",     prio,    "status",     st,     "requires", "gpu,linux",
                          "max_attempts", "3",     "attempts",   att,    "payload",  payload,
                          "created_at",   created, "updated_at", updated};
    redisAppendCommandArgv(l->c, (int)(sizeof(argv) / sizeof(*argv)), argv, NULL);
    sent(l);
    if (strcmp(st, "completed") == 0 || strcmp(st, "failed") == 0) {
        redisAppendCommand(l->c, "EXPIRE %s " TTL_S, key);
        sent(l);
    }
    if (i % 5 == 0) {
        redisAppendCommand(l->c, "HSET job:%s:progress percent %ld message %s updated_at %s", id,
                           strcmp(st, "pending") == 0 ? 0L : i % 101, "frame batch done", updated);
        sent(l);
    }
    if (strcmp(st, "pending") == 0)
        redisAppendCommand(l->c, "ZADD jobs:pending %s %s", prio, id);
    else if (strcmp(st, "active") == 0)
        redisAppendCommand(l->c, "SADD jobs:active %s", id);
    else
        redisAppendCommand(l->c, "SADD jobs:%s %s", st, id);
    sent(l);
    if (strcmp(st, "active") == 0) {
        long w = i / 100 % WORKERS;
        redisAppendCommand(l->c, "SADD worker:w%02ld:jobs %s", w, id);
        sent(l);
        l->busy[w] = 1;
    }
}

static void workers(struct loader *l)
{
    for (long w = 0; w < WORKERS; w++) {
        redisAppendCommand(l->c, "HSET worker:w%02ld id w%02ld capabilities gpu,linux host node%ld",
                           w, w, w % 8);
        sent(l);
        redisAppendCommand(l->c, "SET worker:w%02ld:heartbeat 1717000000000", w);
        sent(l);
        redisAppendCommand(l->c, "SADD workers:active w%02ld", w);
        sent(l);
    }
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: load_legacy URL N\n");
        return 2;
    }
    char *end;
    long n = strtol(argv[2], &end, 10);
    if (*argv[2] == '\0' || *end != '\0' || n < 1 || n > 100000000) {
        fprintf(stderr, "load_legacy: invalid step count '%s'; use 1 to 100000000\n", argv[2]);
        return 2;
    }
    struct loader l = {bench_connect(prog, argv[1]), 0, {0}};
    double t0 = bench_now();
    workers(&l);
    for (long i = 0; i < n; i++)
        one_step(&l, i);
    redisAppendCommand(l.c, "EXPIRE jobs:completed " TTL_S);
    sent(&l);
    redisAppendCommand(l.c, "EXPIRE jobs:failed " TTL_S);
    sent(&l);
    bench_drain(prog, l.c, l.pending);
    long progress = (n + 4) / 5, sets = 0;
    for (int w = 0; w < WORKERS; w++)
        sets += l.busy[w];
    /* Old keys of the key map: step hashes, progress hashes, the four
     * collections (when non-empty), the workers' job sets. */
    long coll = (n > 0) + (n > 10) + (n > 12) + (n > 92);
    printf("steps=%ld progress=%ld keys=%ld seconds=%.2f\n", n, progress,
           n + progress + coll + sets, bench_now() - t0);
    redisFree(l.c);
    return 0;
}
